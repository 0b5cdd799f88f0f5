//! `Netns` and sysctl behaviour that needs root and real namespaces.

use std::fs;

use berth_netlink::{Errno, Netlink, Netns, NetnsError, sysctl};
use netns_fixtures::{TestNetns, require_root};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn thread_netns_inode() -> Result<String, std::io::Error> {
    Ok(fs::read_link("/proc/thread-self/ns/net")?
        .to_string_lossy()
        .into_owned())
}

#[test]
fn run_enters_the_namespace_and_leaves_the_caller_alone() -> TestResult {
    require_root();
    let ns = TestNetns::new()?;
    let before = Netns::current()?;
    let before_link = thread_netns_inode()?;

    let inside = ns.run(thread_netns_inode)??;
    assert_eq!(inside, format!("net:[{}]", ns.netns().inode()));
    assert_ne!(inside, before_link);
    let inside_ns = ns.run(Netns::current)??;
    assert_eq!(&inside_ns, ns.netns());

    // The calling thread never moved.
    assert_eq!(Netns::current()?, before);
    assert_eq!(thread_netns_inode()?, before_link);
    assert_ne!(&before, ns.netns());
    Ok(())
}

#[test]
fn run_propagates_panics_and_still_leaves_the_caller_alone() -> TestResult {
    require_root();
    let ns = TestNetns::new()?;
    let before = Netns::current()?;
    let result = std::panic::catch_unwind(|| ns.run(|| panic!("inside the netns")));
    let panic = result.expect_err("panic propagated");
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"inside the netns"));
    assert_eq!(Netns::current()?, before);
    Ok(())
}

#[test]
fn equality_is_by_namespace_not_by_path() -> TestResult {
    require_root();
    let ns = TestNetns::new()?;
    let again = Netns::open(ns.path())?;
    assert_eq!(&again, ns.netns());
    assert_eq!(again.path(), Some(ns.path()));
    let via_proc = ns.run(|| Netns::open("/proc/thread-self/ns/net"))??;
    assert_eq!(&via_proc, ns.netns());
    assert_eq!(again.to_string(), ns.path().display().to_string());
    Ok(())
}

#[test]
fn vanished_namespace_is_not_found_and_unmounted_file_is_not_a_netns() -> TestResult {
    require_root();
    let ns = TestNetns::new()?;
    let path = ns.path().to_path_buf();
    let held = ns.netns().try_clone()?;
    drop(ns);

    let err = Netns::open(&path).expect_err("netns file removed");
    assert!(matches!(err, NetnsError::NotFound { .. }), "{err:?}");
    assert!(err.is_not_found());

    // A held descriptor keeps the namespace usable after its name is gone.
    let nl = Netlink::open_in(&held)?;
    assert!(nl.link_by_name("lo")?.is_some());

    // A leftover mount point without its mount is an ordinary empty file.
    let tmp = tempfile::NamedTempFile::new()?;
    let err = Netns::open(tmp.path()).expect_err("plain file");
    assert!(matches!(err, NetnsError::NotNetns { .. }), "{err:?}");
    Ok(())
}

#[test]
fn open_in_binds_the_socket_to_the_namespace() -> TestResult {
    require_root();
    let a = TestNetns::new()?;
    let b = TestNetns::new()?;
    // Created on this (host) thread's behalf, used from here: still talks to `a` / `b`.
    let la = Netlink::open_in(a.netns())?;
    let lb = Netlink::open_in(b.netns())?;
    let (x, y) = (
        netns_fixtures::unique_name("x"),
        netns_fixtures::unique_name("y"),
    );
    la.add_veth_pair(&berth_netlink::VethPair::new(&x, &y))?;
    assert!(la.link_by_name(&x)?.is_some());
    assert!(lb.link_by_name(&x)?.is_none());
    assert_eq!(la.netns(), a.path().to_str().ok_or("path")?);
    Ok(())
}

#[test]
fn sysctl_writes_land_in_the_namespace_of_the_thread() -> TestResult {
    require_root();
    let ns = TestNetns::new()?;
    let host_value = sysctl::read("net/ipv4/ip_forward")?;
    let key = "net/ipv4/ip_forward";
    // Write the opposite of the host's value inside: the host must not see it.
    let flipped = if host_value == "1" { "0" } else { "1" };
    ns.run(|| sysctl::write(key, flipped))??;
    assert_eq!(ns.run(|| sysctl::read(key))??, flipped);
    assert_eq!(sysctl::read(key)?, host_value, "host untouched");

    // Per-interface keys: the link exists only inside.
    let lo_key = "net/ipv6/conf/lo/disable_ipv6";
    assert!(ns.run(|| sysctl::read(lo_key))?.is_ok());
    let err = ns
        .run(|| sysctl::write("net/ipv4/conf/nosuchlink/forwarding", "1"))?
        .expect_err("missing interface");
    assert!(err.is_not_found(), "{err}");
    Ok(())
}
