//! `berth lab`: network labs from containerlab topology files (parsed by `berth-topology`),
//! deployed as privileged Berth containers joined by veth pairs and Linux bridges.
//!
//! The top layer of the runtime: it drives the commands (`run -d`, `stop`, `start`,
//! `rm -f`, `exec`, `network create`) as a person would, and wires links with
//! `berth-netlink`; nothing below imports it.
//!
//! - [`source`]: `-t FILE` or `--name LAB`;
//! - [`state`]: the lab's plan and progress under `<root>/labs/<lab>`;
//! - [`deploy`]: `deploy` and its mirror `destroy`;
//! - [`exec`]: commands in nodes through `berth exec` (`exec:` and `lab exec`);
//! - [`wire`]: veth pairs, bridges, link up/down;
//! - [`netns_names`]: `/run/netns/clab-<lab>-<node>` for `ip netns exec`;
//! - [`inspect`], [`node`] (exec, stop/start, link), [`render`] (save, graph);
//! - [`capture`]: a pcap stream of one interface;
//! - [`impair`]: link impairments (the topology's at deploy, `lab impair` at run time);
//! - [`cli`]: the verbs' flags and output.

pub mod capture;
pub mod cli;
pub mod deploy;
pub mod exec;
pub mod impair;
pub mod inspect;
pub mod netns_names;
pub mod node;
pub mod render;
pub mod source;
pub mod state;
pub mod wire;
