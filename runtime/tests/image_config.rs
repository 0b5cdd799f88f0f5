//! The image config honoured (issue 13, item 8): `User` resolved through the image's own
//! passwd and group files (numeric, by name, with supplementary groups), `-u` on `run` and
//! `exec`, the capabilities of a non-root user, `Env`, `WorkingDir`, `Entrypoint` + `Cmd` and
//! `--entrypoint`, `ExposedPorts` with `-P`, `StopSignal` (and `--stop-signal`) delivered by
//! `stop`, `Labels` merged with `--label`. The images are OCI layouts written here (busybox
//! and two users, from netns-fixtures' base layer) and imported with `berth image import`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, assert_one_line_error, have_portmap};
use netns_fixtures::images::{self, Compression, Format, OciLayout, media};
use serde_json::{Value, json};

/// Writes an OCI layout archive of one layer — netns-fixtures' base layer (busybox and its
/// applets, passwd and group with `app` and `nobody`, /tmp, /home/app) plus /app — with
/// `config` (the image config's `config`), and imports it as `name`.
fn import(env: &Env, name: &str, config: Value) {
    let mut layout = OciLayout::temp().unwrap();
    let layer = images::base_layer()
        .dir("app", 0o755)
        .write(&layout, Compression::None)
        .unwrap();
    let config = json!({"architecture": images::host_arch(), "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}});
    let config = layout.put_json(media::OCI_CONFIG, &config).unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.descriptor(Format::Oci).to_json()],
    });
    let manifest = layout.put_json(media::OCI_MANIFEST, &manifest).unwrap();
    layout.tag(name, &manifest).unwrap();
    let tarball = env.tmp.path().join(format!("{name}.tar"));
    images::write_oci_archive(layout.dir(), name, &tarball).unwrap();
    let out = env.berth(&["image", "import", tarball.to_str().unwrap(), name]);
    assert_eq!(out.code, 0, "{out:?}");
}

/// `app`: runs as nobody by number, with an environment, a working directory, an entrypoint
/// and a command, an exposed port, a stop signal and labels.
fn import_app(env: &Env) {
    import(
        env,
        "app",
        json!({
            "User": "65534",
            "Env": ["PATH=/bin", "APP_MODE=test"],
            "WorkingDir": "/app",
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo default as $(id -u) in $(pwd) mode $APP_MODE home $HOME"],
            "ExposedPorts": {"8080/tcp": {}},
            "StopSignal": "SIGUSR1",
            "Labels": {"org.berth.test": "app", "org.berth.kind": "image"}
        }),
    );
}

/// `app2`: runs as `app`, a name that only the image's /etc/passwd knows.
fn import_app2(env: &Env) {
    import(
        env,
        "app2",
        json!({"User": "app", "Env": ["PATH=/bin"], "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "id"]}),
    );
}

fn stdout_ok(env: &Env, args: &[&str]) -> String {
    let out = env.run(args);
    assert_eq!(out.code, 0, "{args:?}: {out:?}");
    out.stdout
}

#[test]
fn user_env_workdir_and_command_come_from_the_image() {
    let env = Env::new();
    import_app(&env);
    import_app2(&env);
    // Numeric User, not in passwd by name: nobody's entry gives gid and HOME.
    assert_eq!(
        stdout_ok(&env, &["--rm", "app"]),
        "default as 65534 in /app mode test home /nonexistent\n"
    );
    assert_eq!(
        stdout_ok(&env, &["--rm", "--entrypoint", "id", "app", "-u"]),
        "65534\n"
    );
    // A name, resolved through the image's files: uid, gid, supplementary groups, HOME.
    assert_eq!(
        stdout_ok(
            &env,
            &["--rm", "app2", "-c", "id -u; id -g; id -G; echo $HOME; pwd"]
        ),
        "1000\n1000\n1000 50 2000\n/home/app\n/\n"
    );
    // `-u` overrides: root, a uid passwd does not know (gid 0, HOME /), user:group.
    assert_eq!(
        stdout_ok(
            &env,
            &["--rm", "-u", "0", "app2", "-c", "id -u; echo $HOME"]
        ),
        "0\n/root\n"
    );
    assert_eq!(
        stdout_ok(
            &env,
            &[
                "--rm",
                "-u",
                "4242",
                "app2",
                "-c",
                "id -u; id -g; echo $HOME"
            ]
        ),
        "4242\n0\n/\n"
    );
    assert_eq!(
        stdout_ok(
            &env,
            &["--rm", "--user", "app:staff", "app2", "-c", "id -u; id -G"]
        ),
        "1000\n50\n"
    );
    // `-e HOME` wins over passwd.
    assert_eq!(
        stdout_ok(&env, &["--rm", "-e", "HOME=/x", "app2", "-c", "echo $HOME"]),
        "/x\n"
    );
    env.assert_clean();
}

#[test]
fn unknown_users_fail_on_one_line() {
    let env = Env::new();
    import_app2(&env);
    for (user, message) in [
        (
            "nosuchuser",
            "unable to find user nosuchuser: no matching entries in passwd file",
        ),
        (
            "app:nosuchgroup",
            "unable to find group nosuchgroup: no matching entries in group file",
        ),
        ("a:b:c", "expected USER[:GROUP]"),
    ] {
        let out = env.run(&["--rm", "-u", user, "app2", "-c", "true"]);
        assert_eq!(out.code, 125, "{user}: {out:?}");
        assert_one_line_error(&out);
        assert!(out.stderr.contains(message), "{user}: {out:?}");
    }
    // Detached: the monitor's start fails the same way, and `run -d` says so.
    let out = env.run(&["-d", "--rm", "-u", "ghost", "app2", "-c", "true"]);
    assert_eq!(out.code, 125, "{out:?}");
    assert!(out.stderr.contains("unable to find user ghost"), "{out:?}");
    env.assert_clean();
}

/// The `CapEff`, `CapPrm` and `CapBnd` lines of the container's /proc/self/status.
fn caps(env: &Env, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--rm"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-c", "grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status"]);
    stdout_ok(env, &all)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn a_non_root_user_has_no_capabilities() {
    let env = Env::new();
    import_app2(&env);
    let docker_default = "00000000a80425fb";
    assert_eq!(
        caps(&env, &["app2"]),
        [
            "CapPrm: 0000000000000000",
            "CapEff: 0000000000000000",
            format!("CapBnd: {docker_default}").as_str(),
            "CapAmb: 0000000000000000",
        ]
    );
    // Even with a capability added: it only reaches the bounding set (docker's rule).
    let with_admin = caps(&env, &["--cap-add", "NET_ADMIN", "app2"]);
    assert_eq!(with_admin[1], "CapEff: 0000000000000000");
    assert_eq!(with_admin[2], "CapBnd: 00000000a80435fb");
    // Root keeps the container's set.
    assert_eq!(
        caps(&env, &["-u", "root", "app2"])[..3],
        [
            format!("CapPrm: {docker_default}"),
            format!("CapEff: {docker_default}"),
            format!("CapBnd: {docker_default}"),
        ]
    );
    // And cannot regain them: no_new_privs stays, so a setuid root binary does not help.
    let out = env.run(&["--rm", "app2", "-c", "grep NoNewPrivs /proc/self/status"]);
    assert_eq!(out.stdout.split_whitespace().last(), Some("1"), "{out:?}");
    env.assert_clean();
}

#[test]
fn entrypoint_flag_follows_docker() {
    let env = Env::new();
    import_app(&env);
    // A command replaces the image's Cmd, after its entrypoint.
    assert_eq!(stdout_ok(&env, &["--rm", "app", "echo given"]), "given\n");
    // --entrypoint replaces the entrypoint and drops the image's Cmd.
    assert_eq!(
        stdout_ok(&env, &["--rm", "--entrypoint", "/bin/echo", "app"]),
        "\n"
    );
    assert_eq!(
        stdout_ok(&env, &["--rm", "--entrypoint", "echo", "app", "a", "b"]),
        "a b\n"
    );
    // --entrypoint "" clears it: the command alone runs; without one there is nothing.
    assert_eq!(
        stdout_ok(&env, &["--rm", "--entrypoint", "", "app", "pwd"]),
        "/app\n"
    );
    let out = env.run(&["--rm", "--entrypoint", "", "app"]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    assert!(out.stderr.contains("no command given"), "{out:?}");
    env.assert_clean();
}

#[test]
fn exec_runs_as_the_container_user_or_as_told() {
    let env = Env::new();
    import_app2(&env);
    env.run_detached(&["--name", "c", "app2", "-c", "sleep 60"]);
    env.wait_running("c");
    let exec = |args: &[&str]| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        let out = env.berth(&all);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        out.stdout
    };
    assert_eq!(
        exec(&["c", "sh", "-c", "id -u; id -G; echo $HOME"]),
        "1000\n1000 50 2000\n/home/app\n"
    );
    assert_eq!(
        exec(&["-u", "65534", "c", "id"]),
        "uid=65534(nobody) gid=65534(nogroup)\n"
    );
    assert_eq!(
        exec(&["--user", "0", "c", "sh", "-c", "id -u; echo $HOME"]),
        "0\n/root\n"
    );
    let out = env.berth(&["exec", "-u", "ghost", "c", "true"]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    assert!(out.stderr.contains("unable to find user ghost"), "{out:?}");
    let out = env.berth(&["rm", "-f", "c"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_clean();
}

#[test]
fn stop_sends_the_image_stop_signal() {
    let env = Env::new();
    import_app(&env);
    // PID 1 only gets signals it handles (one sent before the traps are set is lost): the
    // trap's exit code shows which one arrived.
    let script = "trap 'exit 41' USR1; trap 'exit 42' USR2; trap 'exit 43' TERM; \
                  touch /tmp/ready; while :; do sleep 0.1; done";
    let exit_after_stop = |name: &str, extra: &[&str]| {
        let mut args = vec!["--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["app", script]);
        env.run_detached(&args);
        env.wait_running(name);
        env.wait_for("the traps", || {
            env.berth(&["exec", name, "test", "-e", "/tmp/ready"]).code == 0
        });
        let out = env.berth(&["stop", "-t", "20", name]);
        assert_eq!(out.code, 0, "{out:?}");
        let doc = env.inspect(name);
        let out = env.berth(&["rm", name]);
        assert_eq!(out.code, 0, "{out:?}");
        (
            doc["config"]["stopSignal"].clone(),
            doc["state"]["exitCode"].clone(),
        )
    };
    assert_eq!(exit_after_stop("img", &[]), (json!("SIGUSR1"), json!(41)));
    assert_eq!(
        exit_after_stop("flag", &["--stop-signal", "usr2"]),
        (json!("SIGUSR2"), json!(42))
    );
    let out = env.run(&["--rm", "--stop-signal", "NOPE", "app", "true"]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    env.assert_clean();
}

#[test]
fn labels_merge_and_show_in_inspect() {
    let env = Env::new();
    import_app(&env);
    let out = env.run(&[
        "--name",
        "l",
        "--label",
        "org.berth.kind=run",
        "-l",
        "flag",
        "app",
        "true",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = env.inspect("l");
    assert_eq!(
        doc["config"]["labels"],
        json!({"org.berth.test": "app", "org.berth.kind": "run", "flag": ""})
    );
    assert_eq!(
        doc["config"]["exposedPorts"],
        json!([{"port": 8080, "protocol": "tcp"}])
    );
    // ps --filter label=KEY[=VALUE].
    let names = |filter: &str| {
        let out = env.berth(&["ps", "-a", "--json", "--filter", filter]);
        assert_eq!(out.code, 0, "{out:?}");
        let list: Value = serde_json::from_str(&out.stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("label=flag"), ["l"]);
    assert_eq!(names("label=org.berth.kind=run"), ["l"]);
    assert!(names("label=org.berth.kind=image").is_empty());
    let out = env.berth(&["ps", "-f", "status=running"]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    let out = env.berth(&["rm", "l"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = env.run(&["--rm", "-l", "=x", "app", "true"]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    env.assert_clean();
}

#[test]
fn publish_all_publishes_the_exposed_ports() {
    let env = Env::new();
    import_app(&env);
    if !have_portmap() {
        let out = env.run(&["--rm", "-P", "app", "true"]);
        assert_eq!(out.code, 125, "{out:?}");
        assert_one_line_error(&out);
        return;
    }
    env.run_detached(&["--name", "web", "-P", "-p", "9090:9090", "app", "sleep 60"]);
    env.wait_running("web");
    let doc = env.inspect("web");
    let ports = doc["config"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2, "{doc:#}");
    assert_eq!(ports[0]["hostPort"], 9090);
    assert_eq!(ports[1]["containerPort"], 8080);
    assert_eq!(ports[1]["protocol"], "tcp");
    let host_port = ports[1]["hostPort"].as_u64().unwrap();
    assert!(host_port > 0 && host_port != 9090, "{doc:#}");
    let ps = env.ps();
    let listed = ps[0]["ports"].as_array().unwrap();
    assert!(
        listed.contains(&json!(format!("0.0.0.0:{host_port}->8080/tcp"))),
        "{ps:#?}"
    );
    // -P with --network none has nothing to publish on.
    let out = env.run(&["--rm", "-P", "--network", "none", "app", "true"]);
    assert_eq!(out.code, 125, "{out:?}");
    assert_one_line_error(&out);
    let out = env.berth(&["rm", "-f", "web"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_clean();
}

#[test]
fn users_in_a_user_namespace_are_container_ids() {
    let env = Env::new();
    import_app2(&env);
    let out = env.run(&[
        "--rm",
        "--userns=auto",
        "app2",
        "-c",
        "id -u; id -G; cat /proc/self/uid_map",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..2], ["1000", "1000 50 2000"], "{out:?}");
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"],
        "{out:?}"
    );
    env.assert_clean();
}

/// The shared test images (netns-fixtures' catalog): `app` and `app2` written as OCI
/// archives and imported, then run as the issue asks.
#[test]
fn catalog_images_run_as_their_authors_meant() {
    use netns_fixtures::images::{APP_GID, APP_GROUPS, APP_UID, NOBODY};
    let env = Env::new();
    let mut layout = OciLayout::temp().unwrap();
    images::app(&mut layout).unwrap();
    images::app2(&mut layout).unwrap();
    for tag in ["app", "app2"] {
        let archive = env.tmp.path().join(format!("catalog-{tag}.tar"));
        images::write_oci_archive(layout.dir(), tag, &archive).unwrap();
        let name = format!("catalog/{tag}");
        let out = env.berth(&["image", "import", archive.to_str().unwrap(), &name]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    // User 65534 by number, its Env, WorkingDir, Entrypoint + Cmd.
    assert_eq!(
        stdout_ok(&env, &["--rm", "catalog/app"]),
        format!("app: uid={NOBODY} gid={NOBODY} cwd=/app mode=test\n")
    );
    assert_eq!(
        stdout_ok(&env, &["--rm", "catalog/app", "/app/run.sh"]),
        format!("run.sh: uid={NOBODY} gid={NOBODY} cwd=/app mode=test\n")
    );
    // User "app" by name, with its supplementary groups and HOME.
    let groups: Vec<String> = std::iter::once(APP_GID)
        .chain(APP_GROUPS)
        .map(|g| g.to_string())
        .collect();
    assert_eq!(
        stdout_ok(&env, &["--rm", "catalog/app2"]),
        format!(
            "app2: uid={APP_UID} gid={APP_GID} groups={} home=/home/app cwd=/home/app\n",
            groups.join(" ")
        )
    );
    assert_eq!(
        stdout_ok(&env, &["--rm", "-u", "0", "catalog/app", "id -u"]),
        "0\n"
    );
    let doc = {
        let out = env.run(&["--name", "labelled", "catalog/app2"]);
        assert_eq!(out.code, 0, "{out:?}");
        env.inspect("labelled")
    };
    assert_eq!(doc["config"]["labels"]["org.berth.test"], "app2");
    assert_eq!(doc["config"]["user"], "app");
    let out = env.berth(&["rm", "labelled"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.assert_clean();
}
