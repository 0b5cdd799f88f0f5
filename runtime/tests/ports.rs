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
