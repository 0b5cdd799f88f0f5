//! The fixtures themselves: namespaces appear and disappear as promised, children run inside.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use netns_fixtures::{CniCall, HostAndContainer, RUN_NETNS, TestNetns, require_root};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn mounted(path: &std::path::Path) -> bool {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let path = path.to_string_lossy();
    table
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(path.as_ref()))
}

#[test]
fn test_netns_is_created_like_ip_netns_add_and_removed_on_drop() -> TestResult {
    require_root();
    let ns = TestNetns::new()?;
    let path = ns.path().to_path_buf();
    assert!(ns.name().starts_with("bt") && ns.name().len() <= 15);
    assert_eq!(path, PathBuf::from(RUN_NETNS).join(ns.name()));
    assert!(mounted(&path));

    // iproute2 sees it, and `ip netns exec` would work with it.
    let list = Command::new("ip").args(["netns", "list"]).output()?;
    assert!(String::from_utf8_lossy(&list.stdout).contains(ns.name()));

    // lo is up, and nothing else is there.
    let links = ns.netlink().links()?;
    assert_eq!(links.len(), 1);
    assert!(links[0].name == "lo" && links[0].up);

    drop(ns);
    assert!(!path.exists(), "{} left behind", path.display());
    assert!(!mounted(&path), "{} still mounted", path.display());
    Ok(())
}

#[test]
fn cleanup_runs_when_the_test_panics() {
    require_root();
    let seen = Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let ns = TestNetns::new().expect("create netns");
        *seen.lock().expect("lock") = Some(ns.path().to_path_buf());
        panic!("test body fails");
    });
    assert!(result.is_err());
    let path = seen.lock().expect("lock").take().expect("path recorded");
    assert!(!path.exists(), "{} survived the panic", path.display());
    assert!(!mounted(&path));
}

#[test]
fn children_run_inside_the_namespace() -> TestResult {
    require_root();
    let ns = TestNetns::new()?;
    let expected = format!("net:[{}]", ns.netns().inode());

    let out = ns.output(Command::new("readlink").arg("/proc/self/ns/net"))?;
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);

    let child = ns.spawn(
        Command::new("readlink")
            .arg("/proc/self/ns/net")
            .stdout(Stdio::piped()),
    )?;
    let out = child.wait_with_output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);

    let links = ns.ip(&["-o", "link", "show"])?;
    assert_eq!(links.lines().count(), 1, "{links}");
    let err = ns.ip(&["link", "show", "nosuchlink"]).expect_err("fails");
    assert!(err.to_string().contains("nosuchlink"), "{err}");
    Ok(())
}

#[test]
fn host_and_container_are_two_fresh_namespaces_with_a_tempdir() -> TestResult {
    require_root();
    let env = HostAndContainer::new()?;
    assert_ne!(env.host.netns(), env.ctr.netns());
    assert!(env.host.name().ends_with("-h") && env.ctr.name().ends_with("-c"));
    for dir in [env.data_dir(), env.cache_dir()] {
        assert!(dir.is_dir() && fs::read_dir(&dir)?.next().is_none());
    }
    let (tmp, host, ctr) = (
        env.tmp.path().to_path_buf(),
        env.host.path().to_path_buf(),
        env.ctr.path().to_path_buf(),
    );
    drop(env);
    assert!(!tmp.exists() && !host.exists() && !ctr.exists());
    Ok(())
}

/// `/bin/sh` stands in for a plugin: its stdin is a script reporting what the plugin would
/// see (netns, environment), as JSON.
#[test]
fn cni_call_runs_in_the_host_namespace_with_a_clean_environment() -> TestResult {
    require_root();
    let env = HostAndContainer::new()?;
    let script = r#"
printf '{"netns":"%s","command":"%s","containerId":"%s","cniNetns":"%s","ifname":"%s","args":"%s","cniPath":"%s","home":"%s","hasPath":%s}' \
  "$(readlink /proc/self/ns/net)" "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" \
  "$CNI_ARGS" "$CNI_PATH" "${HOME-unset}" "$([ -n "$PATH" ] && echo true || echo false)"
echo "to stderr" >&2
"#;
    let out = CniCall::new("/bin/sh")
        .command("ADD")
        .container_id("ctr1")
        .netns(env.ctr.path())
        .ifname("eth0")
        .args("IgnoreUnknown=1")
        .path(&[
            std::path::Path::new("/opt/cni/bin"),
            std::path::Path::new("/x"),
        ])
        .stdin(script)
        .run_in(&env.host)?;
    let json = out.expect_success();
    assert_eq!(json["netns"], format!("net:[{}]", env.host.netns().inode()));
    assert_eq!(json["command"], "ADD");
    assert_eq!(json["containerId"], "ctr1");
    assert_eq!(json["cniNetns"], env.ctr.path().to_string_lossy().as_ref());
    assert_eq!(json["ifname"], "eth0");
    assert_eq!(json["args"], "IgnoreUnknown=1");
    assert_eq!(json["cniPath"], "/opt/cni/bin:/x");
    assert_eq!(json["home"], "unset", "environment starts empty");
    assert_eq!(json["hasPath"], true);
    assert_eq!(out.stderr.trim(), "to stderr");

    let failed = CniCall::new("/bin/sh")
        .stdin("echo '{\"code\": 7, \"msg\": \"bad\"}'; exit 1")
        .run_in(&env.host)?;
    assert!(!failed.success());
    assert_eq!(failed.json()?["code"], 7);
    Ok(())
}
