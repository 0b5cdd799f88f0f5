//! Judging one plugin run by the CNI protocol, and what counts as a leak.

use serde_json::Value;

use super::proc::{Exit, Run};
use super::snapshot::{CONTAINERS, FILES, FIREWALL};

/// What is wrong with a run, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    Ok,
    /// A signal, a panic (exit 101) or an exit code other than 0 and 1.
    Crash(String),
    Hang,
    /// Exit 0 without a valid result, or exit 1 without a CNI error object on stdout.
    BadOutput(String),
    /// It tried to write outside the directories it was given (the sandbox refused it).
    Escape(String),
}

/// `command` is what CNI_COMMAND held (`None`: unset).
pub fn judge(run: &Run, command: Option<&str>) -> Protocol {
    match run.exit {
        Exit::Hung => return Protocol::Hang,
        Exit::Signal(sig) => return Protocol::Crash(format!("killed by signal {sig}")),
        Exit::Injected => return Protocol::Ok,
        Exit::Code(0 | 1) => {}
        Exit::Code(code) => {
            let why = if code == 101 {
                "panicked (exit 101)"
            } else {
                "exit code"
            };
            return Protocol::Crash(format!("{why} {code}: {}", first_line(&run.stderr)));
        }
    }
    let stderr = String::from_utf8_lossy(&run.stderr);
    if stderr.contains("panicked at") {
        return Protocol::Crash(format!("panic: {}", first_line(&run.stderr)));
    }
    if stderr.contains("Read-only file system")
        || run
            .stdout
            .windows(21)
            .any(|w| w == b"Read-only file system")
    {
        return Protocol::Escape(super::snapshot::clip(
            &String::from_utf8_lossy(&run.stdout),
            300,
        ));
    }
    if run.exit == Exit::Code(1) {
        return match serde_json::from_slice::<Value>(&run.stdout) {
            Ok(v) if v["code"].is_u64() && v["msg"].is_string() => Protocol::Ok,
            Ok(v) => Protocol::BadOutput(format!(
                "exit 1, stdout is not a CNI error: {}",
                clip_json(&v)
            )),
            Err(e) => Protocol::BadOutput(format!("exit 1, stdout is not JSON ({e})")),
        };
    }
    match command {
        Some("ADD") => match serde_json::from_slice::<Value>(&run.stdout) {
            Ok(v) => match result_shape(&v) {
                Ok(()) => Protocol::Ok,
                Err(why) => Protocol::BadOutput(format!("ADD result: {why}: {}", clip_json(&v))),
            },
            Err(e) => Protocol::BadOutput(format!("ADD succeeded, stdout is not JSON ({e})")),
        },
        Some("VERSION") => match serde_json::from_slice::<Value>(&run.stdout) {
            Ok(v) if v["supportedVersions"].is_array() => Protocol::Ok,
            _ => Protocol::BadOutput("VERSION: no supportedVersions".into()),
        },
        Some("DEL" | "CHECK" | "STATUS" | "GC") => {
            if run.stdout.iter().all(u8::is_ascii_whitespace) {
                Protocol::Ok
            } else {
                Protocol::BadOutput(format!(
                    "success with output: {}",
                    super::snapshot::clip(&String::from_utf8_lossy(&run.stdout), 200)
                ))
            }
        }
        // A command the plugin should have refused, yet it succeeded.
        other => Protocol::BadOutput(format!("CNI_COMMAND {other:?} accepted")),
    }
}

fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .find(|l| l.contains("panicked") || l.contains("error") || !l.trim().is_empty())
        .unwrap_or("");
    super::snapshot::clip(line, 300)
}

fn clip_json(v: &Value) -> String {
    super::snapshot::clip(&v.to_string(), 300)
}

/// The parts of a result every version has; the values must parse.
fn result_shape(v: &Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("not an object")?;
    if !obj.get("cniVersion").is_some_and(Value::is_string) {
        return Err("no cniVersion".into());
    }
    for ip in obj
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let addr = ip["address"].as_str().ok_or("ip without address")?;
        let (host, prefix) = addr.split_once('/').ok_or("address without prefix")?;
        host.parse::<std::net::IpAddr>()
            .map_err(|e| format!("address {addr}: {e}"))?;
        prefix
            .parse::<u8>()
            .map_err(|e| format!("prefix {addr}: {e}"))?;
    }
    if let Some(ifs) = obj.get("interfaces") {
        let ifs = ifs.as_array().ok_or("interfaces is not an array")?;
        if ifs.iter().any(|i| !i["name"].is_string()) {
            return Err("interface without name".into());
        }
    }
    if let Some(routes) = obj.get("routes") {
        let routes = routes.as_array().ok_or("routes is not an array")?;
        if routes.iter().any(|r| !r["dst"].is_string()) {
            return Err("route without dst".into());
        }
    }
    Ok(())
}

/// What a case may change without it being a finding.
#[derive(Debug, Clone, Default)]
pub struct Allowances {
    /// The case's CNI_CONTAINERID, to recognise its firewall entries.
    pub container_id: String,
    /// GC may remove what belongs to attachments it is not told are valid (a mutated
    /// network name can be the bystanders').
    pub gc: bool,
    /// loopback's DEL takes lo down (as the reference's); the harness puts it back up.
    pub loopback: bool,
}

impl Allowances {
    /// `true` if the change is not a finding.
    pub fn accept(&self, section: &str, line: &str, added: bool) -> bool {
        if self.gc && !added && !line.contains(".tmp") {
            return true;
        }
        match section {
            FIREWALL => added && !self.attachment_rule(line),
            FILES => {
                // The host-local key index is derived data, rebuilt by the next call; the
                // round-robin hint may move (it is a hint); both are not reservations. A
                // temporary file is never acceptable.
                !line.contains(".tmp")
                    && (line.contains(".berth-keys/") || line.contains("/last_reserved_ip."))
            }
            CONTAINERS => self.loopback && (line.contains(" lo ") || line.contains(": lo:")),
            _ => false,
        }
    }

    /// Whether a firewall line belongs to one attachment (a leak if it stays), as opposed to
    /// the shared skeleton (chains, maps, base rules) that berth-firewall never deletes, or
    /// to a network's isolation, which DEL keeps by design (GC removes it).
    fn attachment_rule(&self, line: &str) -> bool {
        if line.contains("ISO") || line.contains("isolation") {
            return false;
        }
        let id = self.container_id.as_str();
        if id.len() >= 3 && line.contains(id) {
            return true;
        }
        const OWNED: [&str; 7] = [
            "BERTH-DN-",
            "BERTH-MASQ-",
            "BERTH-FWD-",
            "hpc-",
            "-A BERTH-HP-",
            "-A BERTH-MQ-",
            "-A BERTH-FA-",
        ];
        if OWNED.iter().any(|o| line.contains(o)) {
            return true;
        }
        // nft set and map elements are per attachment; their headers are not.
        if let Some(rest) = line.split_once(" / ").map(|(_, r)| r)
            && (rest.starts_with("map ") || rest.starts_with("set "))
            && let Some((_, body)) = rest.split_once(": ")
        {
            const HEADER: [&str; 11] = [
                "map ",
                "set ",
                "type ",
                "typeof ",
                "flags ",
                "size ",
                "policy ",
                "timeout ",
                "gc-interval ",
                "comment ",
                "auto-merge",
            ];
            return !HEADER.iter().any(|h| body.starts_with(h));
        }
        false
    }
}
