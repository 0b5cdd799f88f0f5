//! Addresses and routes against the real kernel, inside throwaway namespaces.

use std::net::IpAddr;

use berth_netlink::ipnetwork::IpNetwork;
use berth_netlink::{AddrOptions, AddrScope, Errno, IpFamily, Link, Route, RouteScope, VethPair};
use netns_fixtures::{TestNetns, require_root, test_subnet_v4, test_subnet_v6, unique_name};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A namespace with one veth end up (routes need a running link).
fn netns_with_link() -> Result<(TestNetns, Link), Box<dyn std::error::Error>> {
    let ns = TestNetns::new()?;
    let (a, b) = (unique_name("a"), unique_name("b"));
    let link = ns.netlink().add_veth_pair(&VethPair::new(&a, &b))?;
    let peer = ns.netlink().link_by_name(&b)?.ok_or("peer missing")?;
    ns.netlink().set_up(link.index)?;
    ns.netlink().set_up(peer.index)?;
    Ok((ns, link))
}

fn host(net: impl Into<IpNetwork>, n: u32) -> Result<IpNetwork, Box<dyn std::error::Error>> {
    let net = net.into();
    let ip = match net {
        IpNetwork::V4(v4) => IpAddr::V4(v4.nth(n).ok_or("subnet too small")?),
        IpNetwork::V6(v6) => IpAddr::V6((u128::from(v6.network()) + u128::from(n)).into()),
    };
    Ok(IpNetwork::new(ip, net.prefix())?)
}

#[test]
fn addresses_add_list_delete() -> TestResult {
    require_root();
    let (ns, link) = netns_with_link()?;
    let nl = ns.netlink();
    let v4 = host(test_subnet_v4(), 2)?;
    let v6 = host(test_subnet_v6(), 2)?;

    nl.add_addr(link.index, v4)?;
    nl.add_addr_with(link.index, v6, AddrOptions { nodad: true })?;

    let addrs = nl.addrs(Some(link.index))?;
    let a4 = addrs
        .iter()
        .find(|a| a.net == v4)
        .ok_or("v4 address missing")?;
    assert_eq!(a4.scope, AddrScope::Universe);
    let a6 = addrs
        .iter()
        .find(|a| a.net == v6)
        .ok_or("v6 address missing")?;
    assert!(a6.nodad && !a6.tentative, "{a6:?}");
    assert!(addrs.iter().all(|a| a.index == link.index));

    // The broadcast address was set, as `ip addr add ... brd +` would.
    let IpNetwork::V4(v4net) = v4 else {
        unreachable!()
    };
    let shown = ns.ip(&["-4", "-o", "addr", "show", "dev", &link.name])?;
    assert!(
        shown.contains(&format!("brd {}", v4net.broadcast())),
        "{shown}"
    );

    // All links: lo's 127.0.0.1 is there too.
    let all = nl.addrs(None)?;
    assert!(
        all.iter()
            .any(|a| a.net.ip() == IpAddr::from([127, 0, 0, 1]))
    );

    let err = nl.add_addr(link.index, v4).expect_err("duplicate");
    assert!(err.is_exists(), "{err}");

    nl.del_addr(link.index, v4)?;
    nl.del_addr(link.index, v6)?;
    let left = nl.addrs(Some(link.index))?;
    assert!(!left.iter().any(|a| a.net == v4 || a.net == v6), "{left:?}");
    let err = nl.del_addr(link.index, v4).expect_err("already gone");
    assert_eq!(err.errno(), Some(libc::EADDRNOTAVAIL), "{err}");
    Ok(())
}

#[test]
fn routes_add_replace_list_delete() -> TestResult {
    require_root();
    let (ns, link) = netns_with_link()?;
    let nl = ns.netlink();
    let subnet = test_subnet_v4();
    let local = host(subnet, 2)?;
    nl.add_addr(link.index, local)?;
    let gw = subnet.nth(1).ok_or("gw")?;

    // Default route via a gateway on the connected subnet.
    let default = Route {
        oif: Some(link.index),
        ..Route::default_via(IpAddr::V4(gw))
    };
    nl.add_route(&default)?;

    // A link-scoped route with metric, mtu, advmss and preferred source, in another table.
    let dst = test_subnet_v4();
    let special = Route {
        oif: Some(link.index),
        table: Some(1000),
        metric: Some(50),
        scope: RouteScope::Link,
        mtu: Some(1300),
        advmss: Some(1260),
        src: Some(local.ip()),
        ..Route::new(IpNetwork::V4(dst))
    };
    nl.add_route(&special)?;

    let main = nl.routes(IpFamily::V4, None)?;
    let found = main
        .iter()
        .find(|r| r.dst.prefix() == 0)
        .ok_or("default route missing")?;
    assert_eq!(found.gateway, Some(IpAddr::V4(gw)));
    assert_eq!(found.oif, Some(link.index));
    assert!(main.iter().all(|r| r.table == Some(254)));
    // The kernel's connected route for the address.
    assert!(
        main.iter()
            .any(|r| r.dst == IpNetwork::V4(subnet) && r.scope == RouteScope::Link)
    );

    let table = nl.routes(IpFamily::V4, Some(1000))?;
    assert_eq!(table, vec![special.clone()], "exact round trip");
    let shown = ns.ip(&["route", "show", "table", "1000"])?;
    assert!(
        shown.contains("mtu 1300") && shown.contains("advmss 1260"),
        "{shown}"
    );

    let err = nl.add_route(&special).expect_err("duplicate");
    assert!(err.is_exists(), "{err}");
    let changed = Route {
        mtu: Some(1200),
        ..special.clone()
    };
    nl.replace_route(&changed)?;
    assert_eq!(nl.routes(IpFamily::V4, Some(1000))?, vec![changed.clone()]);

    // Delete matches without metrics; a second delete is ESRCH ("already gone").
    nl.del_route(&changed)?;
    assert!(nl.routes(IpFamily::V4, Some(1000))?.is_empty());
    let err = nl.del_route(&changed).expect_err("already gone");
    assert_eq!(err.errno(), Some(libc::ESRCH));
    assert!(err.is_not_found());

    nl.del_route(&default)?;
    assert!(
        !nl.routes(IpFamily::V4, None)?
            .iter()
            .any(|r| r.dst.prefix() == 0)
    );
    Ok(())
}

#[test]
fn ipv6_routes() -> TestResult {
    require_root();
    let (ns, link) = netns_with_link()?;
    let nl = ns.netlink();
    let subnet = test_subnet_v6();
    let local = host(subnet, 2)?;
    nl.add_addr_with(link.index, local, AddrOptions { nodad: true })?;
    let gw = host(subnet, 1)?.ip();
    let route = Route {
        oif: Some(link.index),
        metric: Some(1024),
        ..Route::new(IpNetwork::V6(test_subnet_v6()))
    };
    let via = Route {
        gateway: Some(gw),
        ..route.clone()
    };
    nl.add_route(&via)?;
    let routes = nl.routes(IpFamily::V6, None)?;
    let found = routes
        .iter()
        .find(|r| r.dst == via.dst)
        .ok_or("v6 route missing")?;
    assert_eq!(found.gateway, Some(gw));
    assert_eq!(found.metric, Some(1024));
    nl.del_route(&via)?;

    let mixed = Route {
        gateway: Some(IpAddr::from([198, 18, 0, 1])),
        ..route
    };
    assert!(nl.add_route(&mixed).is_err(), "mixed families are refused");
    Ok(())
}

#[test]
fn routes_need_a_reachable_gateway() -> TestResult {
    require_root();
    let (ns, link) = netns_with_link()?;
    let route = Route {
        oif: Some(link.index),
        ..Route::default_via(IpAddr::from([198, 19, 255, 1]))
    };
    let err = ns
        .netlink()
        .add_route(&route)
        .expect_err("unreachable gateway");
    assert_eq!(err.errno(), Some(libc::ENETUNREACH), "{err}");
    let msg = berth_netlink::error_chain(&err);
    assert!(
        msg.starts_with("add route 0.0.0.0/0 via 198.19.255.1"),
        "{msg}"
    );
    Ok(())
}
