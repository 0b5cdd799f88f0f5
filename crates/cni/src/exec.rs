//! Running a plugin binary: shared by IPAM delegation (plugin side) and the invoker (runtime
//! side), so both find, call and interpret plugins the same way libcni does.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use crate::args::{CniArgs, Command};
use crate::error::{CniError, ErrorCode};
use crate::names::{ContainerId, IfName};

/// The `CNI_*` variables of one call.
#[derive(Debug, Clone)]
pub struct CniEnv<'a> {
    pub command: Command,
    pub container_id: Option<&'a ContainerId>,
    pub netns: Option<&'a Path>,
    pub ifname: Option<&'a IfName>,
    pub args: &'a CniArgs,
    pub path: &'a [PathBuf],
}

/// Finds the executable named `kind` on `path`. A `kind` with a `/` or `..` is refused, so a
/// configuration cannot make us run a binary outside the plugin directories.
pub fn find_plugin(kind: &str, path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if kind.is_empty() || kind.contains('/') || kind == "." || kind == ".." {
        return Err(CniError::invalid_config(format!(
            "invalid plugin type {kind:?}"
        )));
    }
    for dir in path {
        let candidate = dir.join(kind);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(CniError::new(
        ErrorCode::NotFound,
        format!("failed to find plugin {kind:?} in path {path:?}"),
    ))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The plugin is killed when the thread that runs it dies. Without this, an invoker killed
/// during ADD leaves the plugin running on its own: it can finish after the clean-up's DEL and
/// leave what it made behind. With it, the next DEL or GC sees everything the plugin got to.
/// (The spawning thread waits for the plugin, so it outlives it in every normal run.)
fn die_with_caller(cmd: &mut Process) {
    let caller = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and makes only async-signal-
    // safe calls (prctl, getppid, kill, getpid); it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The caller died between fork and prctl: nobody will send the signal.
            if u32::try_from(libc::getppid()).ok() != Some(caller) {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
}

/// Runs `binary` with `env` and `stdin`, returning its stdout on success. A failing plugin's
/// error JSON becomes our `CniError` unchanged (its code passes through); anything else it
/// prints is reported with code 999 and its stderr.
pub fn exec_plugin(binary: &Path, env: &CniEnv<'_>, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let mut cmd = Process::new(binary);
    cmd.env("CNI_COMMAND", env.command.as_str())
        .env("CNI_ARGS", env.args.to_env_string())
        .env(
            "CNI_PATH",
            std::env::join_paths(env.path).unwrap_or_default(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Variables a verb does not take are removed, so a value inherited from our own
    // environment (we may be a plugin ourselves) cannot leak into the call.
    match env.container_id {
        Some(id) => cmd.env("CNI_CONTAINERID", id.as_str()),
        None => cmd.env_remove("CNI_CONTAINERID"),
    };
    match env.netns {
        Some(ns) => cmd.env("CNI_NETNS", ns),
        None => cmd.env_remove("CNI_NETNS"),
    };
    match env.ifname {
        Some(ifname) => cmd.env("CNI_IFNAME", ifname.as_str()),
        None => cmd.env_remove("CNI_IFNAME"),
    };
    die_with_caller(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| {
        CniError::new(
            ErrorCode::Io,
            format!("start plugin {}: {e}", binary.display()),
        )
    })?;
    // Feed stdin from its own thread while this one collects stdout and stderr, so a plugin
    // that writes before it has read everything cannot deadlock us on full pipes.
    let pipe = child.stdin.take();
    let (write_result, out) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || match pipe {
            // A plugin that exits without reading gives EPIPE: not an error of ours.
            Some(mut pipe) => match pipe.write_all(stdin) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
                _ => Ok(()),
            },
            None => Ok(()),
        });
        let out = child.wait_with_output();
        (writer.join(), out)
    });
    let out = out.map_err(|e| {
        CniError::new(
            ErrorCode::Io,
            format!("wait for plugin {}: {e}", binary.display()),
        )
    })?;
    match write_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(CniError::new(
                ErrorCode::Io,
                format!("write config to plugin {}: {e}", binary.display()),
            ));
        }
        Err(_) => return Err(CniError::internal("stdin writer thread panicked")),
    }
    if out.status.success() {
        return Ok(out.stdout);
    }
    if let Ok(err) = serde_json::from_slice::<CniError>(&out.stdout) {
        return Err(err);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(CniError::new(
        ErrorCode::Internal,
        format!(
            "plugin {} failed ({}) without a CNI error",
            binary.display(),
            out.status
        ),
    )
    .with_details(stderr.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_path_tricks_in_type() {
        for kind in ["../bin/sh", "/bin/sh", "a/b", "..", ""] {
            let e = find_plugin(kind, &[PathBuf::from("/usr/bin")]).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidConfig, "{kind}");
        }
    }

    #[test]
    fn not_found_is_code_8() {
        let e = find_plugin("no-such-plugin-xyz", &[PathBuf::from("/nonexistent")]).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
    }

    #[test]
    fn passes_through_plugin_error_and_reports_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fails");
        std::fs::write(
            &script,
            "#!/bin/sh\ncat >/dev/null\necho '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"busy\"}'\nexit 1\n",
        )
        .unwrap();
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "#!/bin/sh\necho oops >&2\nexit 3\n").unwrap();
        for p in [&script, &garbage] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let args = CniArgs::default();
        let env = CniEnv {
            command: Command::Status,
            container_id: None,
            netns: None,
            ifname: None,
            args: &args,
            path: &[],
        };
        let e = exec_plugin(&script, &env, b"{}").unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (ErrorCode::TryAgainLater, "busy"));
        let e = exec_plugin(&garbage, &env, b"{}").unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        assert_eq!(e.details, "oops");
    }
}
