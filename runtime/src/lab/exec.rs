//! Commands in a lab's nodes: the `exec:` lists of the topology (after deploy and `start`)
//! and `berth lab exec`.
//!
//! Each command is a `berth exec` child, not a call: exec re-executes itself from a sealed
//! copy and joins the container's pid namespace, which this process must not do. Nodes run
//! at once; one node's commands run in order (a route needs its address first).

use std::process::{Command, Stdio};
use std::sync::Mutex;

use berth_topology::Node;

use crate::state::Store;

/// A node and its container.
#[derive(Debug, Clone)]
pub struct Target {
    pub node: String,
    pub container: String,
}

/// The result of one command in one node.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub node: String,
    pub container: String,
    pub command: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A node's `exec:` list as argv, split as containerlab does (shlex, no shell). A command
/// that cannot be split (an open quote) is passed whole, so it fails visibly in the node.
pub fn commands_of(node: &Node) -> Vec<Vec<String>> {
    node.exec
        .iter()
        .map(|c| berth_topology::command::split(c).unwrap_or_else(|_| vec![c.clone()]))
        .collect()
}

/// Runs `commands(target)` in each target; results in target order, then command order.
pub fn run(
    store: &Store,
    targets: &[Target],
    commands: impl Fn(&Target) -> Vec<Vec<String>> + Sync,
) -> Vec<ExecOutput> {
    let results: Mutex<Vec<(usize, usize, ExecOutput)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for (i, target) in targets.iter().enumerate() {
            let commands = commands(target);
            if commands.is_empty() {
                continue;
            }
            let results = &results;
            scope.spawn(move || {
                for (j, command) in commands.into_iter().enumerate() {
                    let output = one(store, target, command);
                    if let Ok(mut r) = results.lock() {
                        r.push((i, j, output));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, j, _)| (*i, *j));
    results.into_iter().map(|(_, _, o)| o).collect()
}

/// `berth exec CONTAINER COMMAND…` as a child of this very binary.
fn one(store: &Store, target: &Target, command: Vec<String>) -> ExecOutput {
    let output = Command::new("/proc/self/exe")
        .arg("--root")
        .arg(store.root())
        .arg("--runroot")
        .arg(store.runroot())
        .arg("exec")
        .arg(&target.container)
        .args(&command)
        .stdin(Stdio::null())
        .output();
    let (code, stdout, stderr) = match output {
        Ok(out) => (
            out.status.code().unwrap_or(125),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Err(e) => (125, String::new(), format!("berth: run berth exec: {e}\n")),
    };
    ExecOutput {
        node: target.node.clone(),
        container: target.container.clone(),
        command,
        code,
        stdout,
        stderr,
    }
}
