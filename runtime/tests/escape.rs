//! The host's `berth` binary is out of a container's reach (issue 11, finding 6: the
//! precondition of CVE-2019-5736). The processes `berth` starts inside a container (the init,
//! PID 1 until it execs the command, and the helper of `berth exec`) run a sealed in-memory copy
//! of the binary, so their `/proc/<pid>/exe` leads to that copy, never to the file on the host.
//!
//! Each test makes the re-executed binary stay inside the container as long as it likes, the
//! way the CVE's exploit did: an image whose `/x` is the script `#!/proc/self/exe --root`. The
//! kernel runs a script's interpreter as resolved by the process that execs it, so when the
//! init (or the exec helper) execs `/x init --config-fd 0 --sync-fd 1`, the container gets a
//! process running whatever `/proc/self/exe` was for `berth` (`--root` swallows the script's
//! name), and that process waits on stdin for a configuration that never comes. A probe inside
//! the container then stats, reads and tries to write every `/proc/*/exe` it can see.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BERTH, Env};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The command that makes a `berth` process wait inside the container (see the module doc).
const STAY: [&str; 6] = ["/x", "init", "--config-fd", "0", "--sync-fd", "1"];

/// Run inside the container: one `exe <pid> <dev:ino> <link>` line per visible process, plus
/// `wrote <pid>` for each executable it managed to write (the container's own busybox is left
/// alone: it is the container's to break).
const PROBE: &str = r#"
for e in /proc/[0-9]*/exe; do
  p=${e#/proc/}; p=${p%/exe}
  l=$(readlink "$e" 2>/dev/null) || continue
  id=$(stat -L -c %d:%i "$e" 2>/dev/null) || id=unreadable
  echo "exe $p $id $l"
  [ "$l" = /bin/busybox ] && continue
  if (echo x >> "$e") 2>/dev/null; then echo "wrote $p"; fi
done
"#;

/// `dev:ino` of the host's binary, as `stat -c %d:%i` prints it.
fn host_binary_id() -> String {
    let meta = fs::metadata(BERTH).unwrap();
    format!("{}:{}", meta.dev(), meta.ino())
}

fn tar_entry<W: Write>(tar: &mut tar::Builder<W>, path: &str, kind: tar::EntryType, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o755);
    tar.append_data(&mut header, path, data).unwrap();
}

/// Imports the image `escape`: static busybox (`sh`, `stat`, `readlink`, `sleep`, `true`),
/// the libraries `berth` is linked against (so the re-executed binary can start), and `/x`.
fn import_escape_image(env: &Env) {
    let tarball = env.tmp.path().join("escape.tar");
    let mut tar = tar::Builder::new(fs::File::create(&tarball).unwrap());
    let mut dirs = std::collections::BTreeSet::new();
    let mut add_dirs = |tar: &mut tar::Builder<fs::File>, path: &str| {
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !prefix.is_empty() {
                if dirs.insert(prefix.clone()) {
                    tar_entry(tar, &format!("{prefix}/"), tar::EntryType::Directory, &[]);
                }
                prefix.push('/');
            }
            prefix.push_str(part);
        }
    };
    add_dirs(&mut tar, "bin/busybox");
    tar_entry(
        &mut tar,
        "bin/busybox",
        tar::EntryType::Regular,
        &fs::read("/bin/busybox").unwrap(),
    );
    for applet in ["sh", "stat", "readlink", "sleep", "true", "cat"] {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        tar.append_link(&mut header, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    // `ldd` names the loader and every library by the path the binary will look for.
    let ldd = Command::new("ldd").arg(BERTH).output().unwrap();
    for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
        if word.starts_with('/') && Path::new(word).is_file() {
            let rel = word.trim_start_matches('/');
            add_dirs(&mut tar, rel);
            tar_entry(
                &mut tar,
                rel,
                tar::EntryType::Regular,
                &fs::read(word).unwrap(),
            );
        }
    }
    tar_entry(
        &mut tar,
        "x",
        tar::EntryType::Regular,
        b"#!/proc/self/exe --root\n",
    );
    tar.finish().unwrap();
    drop(tar);
    let out = env.berth(&["image", "import", tarball.to_str().unwrap(), "escape"]);
    assert_eq!(out.code, 0, "{out:?}");
}

/// What the probe saw.
struct Probe {
    /// (pid, dev:ino, link) of every visible process.
    exes: Vec<(String, String, String)>,
    wrote: Vec<String>,
    raw: String,
}

impl Probe {
    fn run(env: &Env, container: &str) -> Probe {
        let out = env.berth(&["exec", container, "sh", "-c", PROBE]);
        assert_eq!(out.code, 0, "{out:?}");
        let mut probe = Probe {
            exes: Vec::new(),
            wrote: Vec::new(),
            raw: out.stdout.clone(),
        };
        for line in out.stdout.lines() {
            let words: Vec<&str> = line.splitn(4, ' ').collect();
            match words.as_slice() {
                ["exe", pid, id, link] => {
                    probe
                        .exes
                        .push(((*pid).into(), (*id).into(), (*link).into()))
                }
                ["wrote", pid] => probe.wrote.push((*pid).into()),
                _ => panic!("unexpected probe output: {line}"),
            }
        }
        probe
    }

    /// Processes not running the container's own busybox: what `berth` started.
    fn foreign(&self) -> Vec<&(String, String, String)> {
        self.exes.iter().filter(|e| e.2 != "/bin/busybox").collect()
    }

    /// The host binary is nowhere: not openable (stat follows the link by opening the
    /// target's path), not written; and something of berth's was there to look at.
    fn assert_host_binary_unreachable(&self, host_id: &str, what: &str) {
        assert!(
            !self.foreign().is_empty(),
            "{what}: the probe saw no process of berth's, the test proves nothing:\n{}",
            self.raw
        );
        let reached: Vec<_> = self.exes.iter().filter(|e| e.1 == host_id).collect();
        assert!(
            reached.is_empty(),
            "{what}: the host's berth binary ({host_id}) is reachable through {reached:?}\n{}",
            self.raw
        );
        assert!(
            self.wrote.is_empty(),
            "{what}: wrote executables of {:?}\n{}",
            self.wrote,
            self.raw
        );
    }
}

#[test]
fn host_binary_is_unreachable_from_a_container_during_run() {
    let env = Env::new();
    import_escape_image(&env);
    let host_id = host_binary_id();
    let before = fs::read(BERTH).unwrap();
    // PID 1 is the re-executed init's binary, waiting on the stdin the monitor holds open.
    let mut args = vec!["-i", "--name", "pid1", "escape"];
    args.extend(STAY);
    env.run_detached(&args);
    let probe = Probe::run(&env, "pid1");
    assert!(
        probe.foreign().iter().any(|e| e.0 == "1"),
        "PID 1 should be berth's re-executed binary:\n{}",
        probe.raw
    );
    probe.assert_host_binary_unreachable(&host_id, "run");
    assert_eq!(env.berth(&["rm", "-f", "pid1"]).code, 0);
    assert!(
        fs::read(BERTH).unwrap() == before,
        "the host binary changed"
    );
    env.assert_clean();
}

#[test]
fn host_binary_is_unreachable_from_a_container_during_exec() {
    let env = Env::new();
    import_escape_image(&env);
    let host_id = host_binary_id();
    let before = fs::read(BERTH).unwrap();
    // CAP_SYS_PTRACE: without it the kernel already hides the /proc/<pid>/exe of a process
    // with more capabilities than the reader (the helper before its lock-down); a container
    // given it sees every process, which is what this probe must cover.
    env.run_detached(&[
        "--cap-add",
        "SYS_PTRACE",
        "--name",
        "box",
        "escape",
        "sleep",
        "600",
    ]);

    // 1. What the exec helper re-executes: it stays while our stdin stays open.
    let mut args = vec!["exec", "-i", "box"];
    args.extend(STAY);
    let mut cmd = env.command(&args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut stay = env.host.spawn(&mut cmd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe = loop {
        let probe = Probe::run(&env, "box");
        // sleep, the probe's sh and the re-executed binary.
        if !probe.foreign().is_empty() || Instant::now() > deadline {
            break probe;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    probe.assert_host_binary_unreachable(&host_id, "exec (re-executed helper)");
    drop(stay.stdin.take());
    stay.wait().unwrap();

    // 2. The helper itself, caught alive before it becomes the command: stopped from the host
    // as soon as it exists, then probed from inside.
    let mut caught = None;
    for _ in 0..50 {
        let mut cmd = env.command(&["exec", "box", "true"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut exec = env.host.spawn(&mut cmd).unwrap();
        let pid = exec.id();
        let children = format!("/proc/{pid}/task/{pid}/children");
        let deadline = Instant::now() + Duration::from_secs(5);
        let helper = loop {
            let text = fs::read_to_string(&children).unwrap_or_default();
            if let Some(child) = text.split_whitespace().next() {
                break child.parse::<i32>().ok();
            }
            if Instant::now() > deadline {
                break None;
            }
        };
        let Some(helper) = helper else {
            exec.wait().unwrap();
            continue;
        };
        let _ = kill(Pid::from_raw(helper), Signal::SIGSTOP);
        let link = fs::read_link(format!("/proc/{helper}/exe")).unwrap_or_default();
        if link.to_string_lossy().contains("busybox") {
            // Too late: it already is the command.
            let _ = kill(Pid::from_raw(helper), Signal::SIGCONT);
            exec.wait().unwrap();
            continue;
        }
        caught = Some((exec, helper));
        break;
    }
    let (mut exec, helper) = caught.expect("never caught the exec helper before its exec");
    let probe = Probe::run(&env, "box");
    let _ = kill(Pid::from_raw(helper), Signal::SIGCONT);
    assert!(exec.wait().unwrap().success());
    probe.assert_host_binary_unreachable(&host_id, "exec (helper alive)");

    assert_eq!(env.berth(&["rm", "-f", "box"]).code, 0);
    assert!(
        fs::read(BERTH).unwrap() == before,
        "the host binary changed"
    );
    env.assert_clean();
}
