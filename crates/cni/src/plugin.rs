//! The plugin side of the protocol: read stdin and `CNI_*`, negotiate the version, dispatch to
//! the plugin, and write exactly one result or error JSON on stdout.

use std::io::{Read, Write};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::args::{CmdArgs, Command, Invocation, NetworkArgs};
use crate::conf::{Attachment, NetConf, PrevResult};
use crate::error::{CniError, ErrorCode};
use crate::gojson;
use crate::names::NetworkName;
use crate::result::CniResult;
use crate::version::CniVersion;

/// A CNI plugin. Each verb receives validated arguments and the configuration parsed into
/// `NetConf<Self::Conf>`; the version handling and the output format are done by `run`.
pub trait Plugin {
    /// The plugin's own configuration keys (flattened beside the spec's well-known keys).
    type Conf: DeserializeOwned;

    fn add(&self, args: &CmdArgs, conf: &NetConf<Self::Conf>) -> Result<CniResult, CniError>;
    fn del(&self, args: &CmdArgs, conf: &NetConf<Self::Conf>) -> Result<(), CniError>;
    fn check(&self, args: &CmdArgs, conf: &NetConf<Self::Conf>) -> Result<(), CniError>;
    fn status(&self, args: &NetworkArgs, conf: &NetConf<Self::Conf>) -> Result<(), CniError>;
    fn gc(
        &self,
        args: &NetworkArgs,
        conf: &NetConf<Self::Conf>,
        valid: &[Attachment],
    ) -> Result<(), CniError>;
}

/// Runs `plugin` as this process: reads stdin and the environment, writes stdout, exits.
pub fn run<P: Plugin>(plugin: P) -> ! {
    let mut stdin = Vec::new();
    let code = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => dispatch(
            &plugin,
            |k| std::env::var(k).ok(),
            &stdin,
            &mut std::io::stdout().lock(),
        ),
        Err(e) => {
            let err = CniError::new(ErrorCode::Io, format!("read configuration from stdin: {e}"));
            write_json(
                &mut std::io::stdout().lock(),
                &err.to_json(CniVersion::LATEST),
            );
            1
        }
    };
    std::process::exit(code)
}

/// `run` without the process: returns the exit code. Tests drive plugins through this.
pub fn dispatch<P: Plugin>(
    plugin: &P,
    env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    out: &mut dyn Write,
) -> i32 {
    // Errors are written in the configuration's version when it has a usable one.
    let version = peek_version(stdin).unwrap_or(CniVersion::LATEST);
    match dispatch_inner(plugin, env, stdin) {
        Ok(Some(json)) => {
            write_json(out, &json);
            0
        }
        Ok(None) => 0,
        Err(err) => {
            write_json(out, &err.to_json(version));
            1
        }
    }
}

fn write_json(out: &mut dyn Write, value: &Value) {
    // Nothing sensible can be done if stdout is gone; the exit code still tells the runtime.
    let _ = serde_json::to_writer(&mut *out, value);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn peek_version(stdin: &[u8]) -> Option<CniVersion> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    CniVersion::try_from(gojson::get(v.as_object()?, "cniVersion")?.as_str()?).ok()
}

fn dispatch_inner<P: Plugin>(
    plugin: &P,
    env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<Value>, CniError> {
    let invocation = CmdArgs::from_env(env)?;
    if let Invocation::Version = invocation {
        return Ok(Some(version_info(stdin)));
    }
    let prev = match &invocation {
        Invocation::Attachment(a) if a.command == Command::Del => PrevResult::Lenient,
        _ => PrevResult::Strict,
    };
    let conf: NetConf<P::Conf> = parse_conf_for(stdin, prev)?;
    let version = conf.cni_version;
    match invocation {
        Invocation::Version => Ok(Some(version_info(stdin))),
        Invocation::Attachment(mut args) => {
            args.stdin = stdin.to_vec();
            match args.command {
                Command::Add => Ok(Some(plugin.add(&args, &conf)?.to_value(version))),
                Command::Del => plugin.del(&args, &conf).map(|()| None),
                Command::Check => {
                    if !version.allows_check() {
                        return Err(not_allowed("CHECK", version));
                    }
                    plugin.check(&args, &conf).map(|()| None)
                }
                other => Err(CniError::internal(format!(
                    "{other} parsed as an attachment verb"
                ))),
            }
        }
        Invocation::Network(command, mut args) => {
            args.stdin = stdin.to_vec();
            if !version.allows_status_and_gc() {
                return Err(not_allowed(command.as_str(), version));
            }
            match command {
                Command::Status => plugin.status(&args, &conf).map(|()| None),
                Command::Gc => plugin
                    .gc(&args, &conf, conf.valid_attachments()?)
                    .map(|()| None),
                other => Err(CniError::internal(format!(
                    "{other} parsed as a network verb"
                ))),
            }
        }
    }
}

fn not_allowed(verb: &str, version: CniVersion) -> CniError {
    CniError::new(
        ErrorCode::IncompatibleVersion,
        format!("config version {version} does not allow {verb}"),
    )
}

/// Parses stdin in stages so each failure gets its own code: malformed JSON is 6, an unknown
/// or missing version is 1 or 7, a bad network name 7, and only then the plugin's own keys.
pub fn parse_conf<C: DeserializeOwned>(stdin: &[u8]) -> Result<NetConf<C>, CniError> {
    parse_conf_for(stdin, PrevResult::Strict)
}

/// [`parse_conf`] with a broken `prevResult` treated as `prev` (lenient for DEL).
pub fn parse_conf_for<C: DeserializeOwned>(
    stdin: &[u8],
    prev: PrevResult,
) -> Result<NetConf<C>, CniError> {
    let value: Value = serde_json::from_slice(stdin)?;
    let obj = value.as_object().ok_or_else(|| {
        CniError::new(
            ErrorCode::Decode,
            "network configuration is not a JSON object",
        )
    })?;
    match gojson::get(obj, "cniVersion") {
        Some(Value::String(v)) => {
            CniVersion::try_from(v.as_str())?;
        }
        Some(other) => {
            return Err(CniError::invalid_config(format!(
                "cniVersion must be a string, got {other}"
            )));
        }
        None => return Err(CniError::invalid_config("cniVersion is missing")),
    }
    match gojson::get(obj, "name") {
        Some(Value::String(n)) => {
            NetworkName::try_from(n.as_str())?;
        }
        _ => return Err(CniError::invalid_config("network name is missing")),
    }
    // `type` is not checked: the runtime found us by it, and the reference plugins accept
    // configurations without it (IPAM tests and hand-written calls often omit it).
    NetConf::from_value_for(&value, prev).map_err(CniError::from)
}

/// The answer to VERSION. `cniVersion` echoes the caller's version when we support it.
pub fn version_info(stdin: &[u8]) -> Value {
    let version = peek_version(stdin).unwrap_or(CniVersion::LATEST);
    serde_json::json!({
        "cniVersion": version.as_str(),
        "supportedVersions": CniVersion::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Interface, IpConfig};
    use serde::Deserialize;
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Debug, Deserialize)]
    struct Conf {
        #[serde(default)]
        fail: bool,
    }

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<String>>,
    }

    impl Plugin for Recorder {
        type Conf = Conf;
        fn add(&self, args: &CmdArgs, conf: &NetConf<Conf>) -> Result<CniResult, CniError> {
            self.calls.borrow_mut().push(format!("ADD {}", args.ifname));
            if conf.plugin.fail {
                return Err(CniError::new(ErrorCode::TryAgainLater, "asked to fail"));
            }
            Ok(CniResult {
                interfaces: vec![Interface {
                    name: args.ifname.to_string(),
                    mtu: Some(1500),
                    ..Interface::default()
                }],
                ips: vec![IpConfig {
                    address: "198.18.0.2/24".parse().unwrap(),
                    gateway: None,
                    interface: Some(0),
                }],
                ..CniResult::default()
            })
        }
        fn del(&self, _: &CmdArgs, _: &NetConf<Conf>) -> Result<(), CniError> {
            self.calls.borrow_mut().push("DEL".into());
            Ok(())
        }
        fn check(&self, _: &CmdArgs, _: &NetConf<Conf>) -> Result<(), CniError> {
            self.calls.borrow_mut().push("CHECK".into());
            Ok(())
        }
        fn status(&self, _: &NetworkArgs, _: &NetConf<Conf>) -> Result<(), CniError> {
            self.calls.borrow_mut().push("STATUS".into());
            Ok(())
        }
        fn gc(
            &self,
            _: &NetworkArgs,
            _: &NetConf<Conf>,
            valid: &[Attachment],
        ) -> Result<(), CniError> {
            self.calls.borrow_mut().push(format!("GC {}", valid.len()));
            Ok(())
        }
    }

    fn call(plugin: &Recorder, command: &str, stdin: &str) -> (i32, Value) {
        let env: HashMap<&str, &str> = HashMap::from([
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]);
        let mut out = Vec::new();
        let code = dispatch(
            plugin,
            |k| env.get(k).map(|v| v.to_string()),
            stdin.as_bytes(),
            &mut out,
        );
        let json = if out.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out).unwrap()
        };
        (code, json)
    }

    fn conf(version: &str) -> String {
        format!(r#"{{"cniVersion":"{version}","name":"n","type":"rec"}}"#)
    }

    /// DEL cleans up by the attachment's key: a prevResult it cannot parse must not make it
    /// fail (the spec's "DEL should not fail"); ADD and CHECK, which build on it, refuse it.
    #[test]
    fn a_broken_prev_result_fails_check_but_not_del() {
        let broken = r#"{"cniVersion":"1.0.0","name":"n","type":"rec","prevResult":{"ips":[{"address":"x"}]}}"#;
        let p = Recorder::default();
        assert_eq!(call(&p, "DEL", broken).0, 0);
        let (code, out) = call(&p, "CHECK", broken);
        assert_eq!(code, 1);
        assert_eq!(out["code"], 6, "{out}");
        assert_eq!(*p.calls.borrow(), ["DEL"]);
    }

    #[test]
    fn add_answers_in_the_configured_version() {
        for v in CniVersion::ALL {
            let p = Recorder::default();
            let (code, out) = call(&p, "ADD", &conf(v.as_str()));
            assert_eq!(code, 0);
            assert_eq!(out["cniVersion"], v.as_str());
            assert_eq!(
                out["interfaces"][0].get("mtu").is_some(),
                v == CniVersion::V1_1_0
            );
        }
    }

    #[test]
    fn error_codes_for_bad_input() {
        let p = Recorder::default();
        assert_eq!(call(&p, "ADD", "{not json").1["code"], 6);
        assert_eq!(call(&p, "ADD", &conf("0.2.0")).1["code"], 1);
        assert_eq!(call(&p, "ADD", r#"{"name":"n","type":"x"}"#).1["code"], 7);
        assert_eq!(
            call(
                &p,
                "ADD",
                r#"{"cniVersion":"1.0.0","name":"../x","type":"x"}"#
            )
            .1["code"],
            7
        );
        assert_eq!(
            call(
                &p,
                "ADD",
                r#"{"cniVersion":"1.0.0","name":"n","type":"x","fail":"yes"}"#
            )
            .1["code"],
            6
        );
        let (code, out) = call(
            &p,
            "ADD",
            r#"{"cniVersion":"1.0.0","name":"n","type":"x","fail":true}"#,
        );
        assert_eq!((code, out["code"].as_u64()), (1, Some(11)));
        assert_eq!(out["cniVersion"], "1.0.0");
        assert_eq!(call(&p, "CHECK", &conf("0.3.1")).1["code"], 1);
        assert_eq!(call(&p, "STATUS", &conf("1.0.0")).1["code"], 1);
        assert_eq!(call(&p, "GC", &conf("0.4.0")).1["code"], 1);
        assert_eq!(
            call(&p, "GC", &conf("1.1.0")).1["code"],
            7,
            "GC without a valid list"
        );
        assert_eq!(p.calls.borrow().as_slice(), ["ADD eth0"]);
    }

    #[test]
    fn verbs_dispatch_and_print_nothing_on_success() {
        let p = Recorder::default();
        assert_eq!(call(&p, "DEL", &conf("0.3.0")), (0, Value::Null));
        assert_eq!(call(&p, "CHECK", &conf("0.4.0")), (0, Value::Null));
        assert_eq!(call(&p, "STATUS", &conf("1.1.0")), (0, Value::Null));
        let gc = r#"{"cniVersion":"1.1.0","name":"n","type":"x",
            "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"eth0"}]}"#;
        assert_eq!(call(&p, "GC", gc), (0, Value::Null));
        assert_eq!(
            p.calls.borrow().as_slice(),
            ["DEL", "CHECK", "STATUS", "GC 2"]
        );
    }

    #[test]
    fn version_reports_all() {
        let p = Recorder::default();
        let (code, out) = call(&p, "VERSION", r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(code, 0);
        assert_eq!(out["cniVersion"], "0.4.0");
        assert_eq!(out["supportedVersions"].as_array().unwrap().len(), 5);
        let (_, out) = call(&p, "VERSION", "");
        assert_eq!(out["cniVersion"], "1.1.0");
    }
}
