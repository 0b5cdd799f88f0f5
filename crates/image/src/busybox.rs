//! The offline default image: `busybox`, built on first use from the host's static busybox
//! (Debian: busybox-static), so that `berth run busybox …` works with no registry and no
//! network. A dynamically linked busybox is refused: it would need the host's libraries.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::meta::{DEFAULT_PATH, Image};
use crate::name::ImageName;
use crate::time;

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
    #[error("build image {name}: {step} {path}")]
    Build {
        name: ImageName,
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The name of the default image.
pub const DEFAULT_IMAGE: &str = "busybox";

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

    /// Builds the image's root filesystem at `rootfs` (which must not exist):
    /// `/bin/busybox`, one symlink per applet in `/bin` (and in `/sbin` for the applets
    /// busybox installs there), a minimal `/etc`, and the usual mount points. Returns the
    /// image's metadata.
    pub fn install(&self, name: &ImageName, rootfs: &Path) -> Result<Image, BusyboxError> {
        let step = |step: &'static str, path: &Path| {
            let name = name.clone();
            let path = path.to_path_buf();
            move |source| BusyboxError::Build {
                name,
                step,
                path,
                source,
            }
        };
        let dirs: [(&str, u32); 14] = [
            ("", 0o755),
            ("bin", 0o755),
            ("sbin", 0o755),
            ("etc", 0o755),
            ("root", 0o700),
            ("home", 0o755),
            ("tmp", 0o1777),
            ("var", 0o755),
            ("mnt", 0o755),
            ("proc", 0o555),
            ("sys", 0o555),
            ("dev", 0o755),
            ("usr", 0o755),
            ("usr/bin", 0o755),
        ];
        for (dir, mode) in dirs {
            let path = rootfs.join(dir);
            fs::create_dir(&path).map_err(step("create", &path))?;
            // Set explicitly: the umask would clear the sticky and write bits of /tmp.
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(step("chmod", &path))?;
        }
        let target = rootfs.join("bin/busybox");
        fs::copy(&self.path, &target).map_err(step("copy busybox to", &target))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
            .map_err(step("chmod", &target))?;

        for line in self.applets.lines() {
            let Some(applet) = Path::new(line.trim()).file_name() else {
                continue;
            };
            if applet == "busybox" {
                continue;
            }
            let mut links = vec![rootfs.join("bin").join(applet)];
            if line.starts_with("sbin/") || line.starts_with("usr/sbin/") {
                links.push(rootfs.join("sbin").join(applet));
            }
            for link in links {
                match symlink("/bin/busybox", &link) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(step("symlink", &link)(e)),
                }
            }
        }

        let files: [(&str, &str); 6] = [
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
            ),
            (
                "etc/group",
                "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\nwheel:x:10:\nnogroup:x:65534:\n",
            ),
            // Placeholders: the runtime bind-mounts generated ones over them.
            ("etc/hosts", ""),
            ("etc/resolv.conf", ""),
            ("etc/hostname", ""),
            ("etc/shadow", "root:*:::::::\nnobody:*:::::::\n"),
        ];
        for (file, content) in files {
            let path = rootfs.join(file);
            fs::write(&path, content).map_err(step("write", &path))?;
        }
        fs::set_permissions(rootfs.join("etc/shadow"), fs::Permissions::from_mode(0o600))
            .map_err(step("chmod", &rootfs.join("etc/shadow")))?;

        Ok(Image {
            name: name.clone(),
            created: time::now_rfc3339(),
            cmd: vec!["sh".into()],
            entrypoint: Vec::new(),
            env: vec![format!("PATH={DEFAULT_PATH}")],
            workdir: None,
            source: format!("host:{}", self.path.display()),
        })
    }
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
