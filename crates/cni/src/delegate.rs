//! Delegation from a main plugin to its IPAM plugin: the same configuration bytes and
//! environment, through the same exec code the invoker uses.

use crate::args::{CmdArgs, Command, NetworkArgs};
use crate::error::CniError;
use crate::exec::{CniEnv, exec_plugin, find_plugin};
use crate::result::CniResult;

fn attachment_env(command: Command, args: &CmdArgs) -> CniEnv<'_> {
    CniEnv {
        command,
        container_id: Some(&args.container_id),
        netns: args.netns_opt(),
        ifname: Some(&args.ifname),
        args: &args.args,
        path: &args.path,
    }
}

/// ADD through the IPAM plugin `kind`; returns its result (addresses, routes, dns).
pub fn delegate_add(kind: &str, args: &CmdArgs) -> Result<CniResult, CniError> {
    let bin = find_plugin(kind, &args.path)?;
    let out = exec_plugin(&bin, &attachment_env(Command::Add, args), &args.stdin)?;
    let value: serde_json::Value = serde_json::from_slice(&out)?;
    CniResult::from_value(&value)
}

pub fn delegate_del(kind: &str, args: &CmdArgs) -> Result<(), CniError> {
    let bin = find_plugin(kind, &args.path)?;
    exec_plugin(&bin, &attachment_env(Command::Del, args), &args.stdin).map(drop)
}

pub fn delegate_check(kind: &str, args: &CmdArgs) -> Result<(), CniError> {
    let bin = find_plugin(kind, &args.path)?;
    exec_plugin(&bin, &attachment_env(Command::Check, args), &args.stdin).map(drop)
}

fn network_call(kind: &str, command: Command, args: &NetworkArgs) -> Result<(), CniError> {
    let bin = find_plugin(kind, &args.path)?;
    let cni_args = Default::default();
    let env = CniEnv {
        command,
        container_id: None,
        netns: None,
        ifname: None,
        args: &cni_args,
        path: &args.path,
    };
    exec_plugin(&bin, &env, &args.stdin).map(drop)
}

pub fn delegate_status(kind: &str, args: &NetworkArgs) -> Result<(), CniError> {
    network_call(kind, Command::Status, args)
}

/// GC through the IPAM plugin; the stdin already carries `cni.dev/valid-attachments`.
pub fn delegate_gc(kind: &str, args: &NetworkArgs) -> Result<(), CniError> {
    network_call(kind, Command::Gc, args)
}
