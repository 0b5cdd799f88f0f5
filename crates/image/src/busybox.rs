//! The offline default image: `busybox`, built on first use from the host's static busybox
//! (Debian: busybox-static) as a one-layer image, so that `berth run busybox …` works with no
//! registry and no network. A dynamically linked busybox is refused: it would need the host's
//! libraries.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::meta::DEFAULT_PATH;
use crate::oci::RunConfig;

/// Errors of the `busybox` module.
#[derive(Debug, thiserror::Error)]
pub enum BusyboxError {
    #[error("no busybox found on the host (looked at {looked}): install busybox-static")]
    NoBusybox { looked: String },
    #[error(
        "{path} is dynamically linked: the busybox image needs a static one (install busybox-static)"
    )]
    DynamicBusybox { path: PathBuf },
    #[error("run {program} --list-full")]
    ListApplets {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("build the busybox image: {step}")]
    Build {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The default image: built offline from the host's busybox when the store lacks it.
pub const DEFAULT_IMAGE: &str = "docker.io/library/busybox:latest";

/// The host's static busybox and the applets it provides (`busybox --list-full`).
#[derive(Debug)]
pub struct HostBusybox {
    path: PathBuf,
    applets: String,
}

impl HostBusybox {
    /// Finds the host's busybox and checks it can run in a container on its own.
    pub fn probe() -> Result<HostBusybox, BusyboxError> {
        const CANDIDATES: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];
        let path = CANDIDATES
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or_else(|| BusyboxError::NoBusybox {
                looked: CANDIDATES.join(", "),
            })?;
        if is_dynamic_elf(path).map_err(|source| BusyboxError::Read {
            path: path.to_path_buf(),
            source,
        })? {
            return Err(BusyboxError::DynamicBusybox {
                path: path.to_path_buf(),
            });
        }
        let list = Command::new(path)
            .arg("--list-full")
            .output()
            .map_err(|source| BusyboxError::ListApplets {
                program: path.to_path_buf(),
                source,
            })?;
        let applets = String::from_utf8_lossy(&list.stdout).into_owned();
        Ok(HostBusybox {
            path: path.to_path_buf(),
            applets,
        })
    }

    /// Where the busybox binary came from (the image's source).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The image's one layer, as an uncompressed tar stream: `/bin/busybox`, one symlink per
    /// applet in `/bin` (and in `/sbin` for the applets busybox installs there), a minimal
    /// `/etc`, and the usual mount points. A few MB: built in memory.
    pub fn layer(&self) -> Result<Vec<u8>, BusyboxError> {
        let read_err = |source| BusyboxError::Read {
            path: self.path.clone(),
            source,
        };
        let binary = fs::read(&self.path).map_err(read_err)?;
        let mut tar = tar::Builder::new(Vec::with_capacity(binary.len() + (1 << 20)));
        let dirs: [(&str, u32); 13] = [
            ("bin/", 0o755),
            ("sbin/", 0o755),
            ("etc/", 0o755),
            ("root/", 0o700),
            ("home/", 0o755),
            ("tmp/", 0o1777),
            ("var/", 0o755),
            ("mnt/", 0o755),
            ("proc/", 0o555),
            ("sys/", 0o555),
            ("dev/", 0o755),
            ("usr/", 0o755),
            ("usr/bin/", 0o755),
        ];
        let build_err = |source| BusyboxError::Build {
            step: "write the layer",
            source,
        };
        for (dir, mode) in dirs {
            let mut h = header(tar::EntryType::Directory, mode, 0);
            tar.append_data(&mut h, dir, io::empty())
                .map_err(build_err)?;
        }
        let mut h = header(tar::EntryType::Regular, 0o755, binary.len() as u64);
        tar.append_data(&mut h, "bin/busybox", binary.as_slice())
            .map_err(build_err)?;

        let mut linked = std::collections::BTreeSet::new();
        for line in self.applets.lines() {
            let Some(applet) = Path::new(line.trim()).file_name() else {
                continue;
            };
            if applet == "busybox" {
                continue;
            }
            let mut links = vec![Path::new("bin").join(applet)];
            if line.starts_with("sbin/") || line.starts_with("usr/sbin/") {
                links.push(Path::new("sbin").join(applet));
            }
            for link in links {
                if linked.insert(link.clone()) {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    tar.append_link(&mut h, &link, "/bin/busybox")
                        .map_err(build_err)?;
                }
            }
        }

        let files: [(&str, &str, u32); 6] = [
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
                0o644,
            ),
            (
                "etc/group",
                "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\nwheel:x:10:\nnogroup:x:65534:\n",
                0o644,
            ),
            // Placeholders: the runtime bind-mounts generated ones over them.
            ("etc/hosts", "", 0o644),
            ("etc/resolv.conf", "", 0o644),
            ("etc/hostname", "", 0o644),
            ("etc/shadow", "root:*:::::::\nnobody:*:::::::\n", 0o600),
        ];
        for (file, content, mode) in files {
            let mut h = header(tar::EntryType::Regular, mode, content.len() as u64);
            tar.append_data(&mut h, file, content.as_bytes())
                .map_err(build_err)?;
        }
        tar.into_inner().map_err(build_err)
    }

    /// What a container runs by default: `sh`, with docker's `PATH`.
    pub fn run_config(&self) -> RunConfig {
        RunConfig {
            cmd: Some(vec!["sh".into()]),
            env: Some(vec![format!("PATH={DEFAULT_PATH}")]),
            ..RunConfig::default()
        }
    }
}

/// A root-owned entry with mtime 0: the layer is the same for the same busybox.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// Whether the ELF file at `path` names a program interpreter (`PT_INTERP`): dynamically
/// linked. Static and static-pie binaries have none.
fn is_dynamic_elf(path: &Path) -> io::Result<bool> {
    const PT_INTERP: u32 = 3;
    let mut bytes = Vec::new();
    File::open(path)?.take(64 * 1024).read_to_end(&mut bytes)?;
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // Only 64-bit little-endian ELF is inspected; anything else is assumed static.
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Ok(false);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Ok(false);
    };
    let phoff = usize::try_from(phoff).unwrap_or(usize::MAX);
    Ok((0..usize::from(phnum)).any(|i| {
        phoff
            .checked_add(i * usize::from(phentsize))
            .and_then(u32_at)
            == Some(PT_INTERP)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_busybox_is_static() {
        // The host tools this suite relies on: busybox-static, and a dynamic /bin/ls.
        assert!(!is_dynamic_elf(Path::new("/bin/busybox")).unwrap());
        assert!(is_dynamic_elf(Path::new("/bin/ls")).unwrap());
    }
}
