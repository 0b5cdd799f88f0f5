//! Published ports (`-p`), through the portmap plugin: answered from the host netns on
//! 127.0.0.1 and on the host's address, and from another namespace connected to the host;
//! a port already published is refused before anything is created. Until the portmap plugin
//! is built next to berth, `-p` must fail with one line naming it.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use common::{Env, assert_one_line_error, have_portmap};
use netns_fixtures::{TestNetns, test_subnet_v4};

#[test]
fn published_port_answers_from_host_and_outside() {
    let env = Env::new();
    if !have_portmap() {
        // Until the portmap plugin lands next to berth, publishing names what is missing,
        // on one line, before anything is created.
        let out = env.run(&["--rm", "-p", "8080:80", "busybox", "true"]);
        assert_eq!(out.code, 125, "{out:?}");
        assert_one_line_error(&out);
        assert!(
            out.stderr.contains("the portmap plugin is not installed"),
            "{out:?}"
        );
        env.assert_clean();
        return;
    }
    // A namespace "outside", linked to the test host by a veth with a test subnet.
    let outside = TestNetns::with_tag("out").unwrap();
    let net = test_subnet_v4();
    let (host_ip, out_ip) = (net.nth(1).unwrap(), net.nth(2).unwrap());
    env.host_sh(&format!(
        "ip link add vout type veth peer name eth0 netns {out} && \
         ip addr add {host_ip}/24 dev vout && ip link set vout up",
        out = outside.name()
    ));
    outside
        .ip(&["addr", "add", &format!("{out_ip}/24"), "dev", "eth0"])
        .unwrap();
    outside.ip(&["link", "set", "eth0", "up"]).unwrap();

    env.run_detached(&[
        "--name",
        "web",
        "-p",
        "8080:80",
        "-p",
        "9000-9001:90-91",
        "busybox",
        "sh",
        "-c",
        "mkdir /www && echo hello > /www/index.html && httpd -p 80 -h /www && \
         httpd -p 91 -h /www && exec sleep 60",
    ]);
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    for (ip, port) in [
        (local, 8080),
        (host_ip.into(), 8080),
        (host_ip.into(), 9001),
    ] {
        let body = env.host.run(|| http_get(ip, port)).unwrap();
        assert_eq!(body, "hello\n", "{ip}:{port}");
    }
    let body = outside.run(|| http_get(host_ip.into(), 8080)).unwrap();
    assert_eq!(body, "hello\n");
    let list = env.ps();
    assert!(
        list[0]["ports"][0]
            .as_str()
            .unwrap()
            .contains("8080->80/tcp")
    );

    // Already published: refused before anything is created.
    let out = env.run(&["--rm", "-p", "127.0.0.1:8080:80", "busybox", "true"]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    assert!(
        out.stderr.contains("already published by container web"),
        "{out:?}"
    );
    assert_eq!(env.ps().len(), 1);

    assert_eq!(env.berth(&["rm", "-f", "web"]).code, 0);
    env.host_sh("ip link del vout");
    env.assert_clean();
}

/// A firewall flush kills published ports and masquerading; `network reload` puts the rules
/// back from the CNI cache, with the container's address unchanged.
#[test]
fn network_reload_restores_rules_after_a_flush() {
    let env = Env::new();
    // Needs the portmap plugin next to berth (fails loudly if it was not built).
    netns_fixtures::bin("portmap");
    env.run_detached(&[
        "--name",
        "web",
        "-p",
        "8080:80",
        "busybox",
        "sh",
        "-c",
        "mkdir /www && echo hello > /www/index.html && httpd -p 80 -h /www && exec sleep 60",
    ]);
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(env.host.run(|| http_get(local, 8080)).unwrap(), "hello\n");
    let owned = || -> Vec<String> {
        let mut rules: Vec<String> = ["iptables-save", "ip6tables-save"]
            .iter()
            .flat_map(|tool| {
                env.host_sh(tool)
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|l| common::is_owned_rule(l))
            .collect();
        rules.sort();
        rules
    };
    let before = owned();
    assert!(!before.is_empty());
    let ip = env.ips("web", "berth");

    // Everything goes: iptables-nft's tables too (they are nf_tables tables).
    env.host_sh("nft flush ruleset");
    assert!(owned().is_empty());
    assert_eq!(env.host.run(|| try_get(local, 8080)).unwrap(), None);

    // Bad input first: one line, nothing touched.
    let out = env.berth(&["network", "reload", "no-such-net"]);
    assert_one_line_error(&out);
    assert!(
        out.stderr.contains("network no-such-net not found"),
        "{out:?}"
    );
    assert_eq!(env.host.run(|| try_get(local, 8080)).unwrap(), None);

    let out = env.berth(&["network", "reload"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "web\n"), "{out:?}");
    assert_eq!(env.host.run(|| http_get(local, 8080)).unwrap(), "hello\n");
    assert_eq!(owned(), before);
    assert_eq!(env.ips("web", "berth"), ip);
    // Every rule of the container (masquerade included) is back as it was; a second
    // reload, by name, finds them in place.
    let out = env.berth(&["network", "reload", "berth"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "web\n"), "{out:?}");
    assert_eq!(owned(), before);

    assert_eq!(env.berth(&["rm", "-f", "web"]).code, 0);
    env.assert_clean();
}

/// `GET /` from `ip:port` once: the body, or `None` if nothing answers.
fn try_get(ip: IpAddr, port: u16) -> Option<String> {
    let addr = SocketAddr::new(ip, port);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// The body of `GET /` from `ip:port`, over a socket opened in the calling thread's netns
/// (run it inside `TestNetns::run`); retried for a second while httpd starts.
fn http_get(ip: IpAddr, port: u16) -> String {
    let addr = SocketAddr::new(ip, port);
    let mut last = None;
    for _ in 0..20 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
                let mut response = String::new();
                s.read_to_string(&mut response).unwrap();
                return response
                    .split_once("\r\n\r\n")
                    .map(|(_, body)| body.to_owned())
                    .unwrap_or(response);
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("GET http://{addr}/: {last:?}");
}
