//! The `berth lab` verbs: their flags (clap, parsed by the binary) and their output.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use berth_topology::NodeInterface;

use crate::commands::image::PullPolicy;
use crate::lab::capture::{self, CaptureError};
use crate::lab::deploy::{self, DeployError, DeployOptions};
use crate::lab::exec::ExecOutput;
use crate::lab::impair::{self, ImpairVerb, LabImpairError};
use crate::lab::inspect::{self, InspectError, LabView};
use crate::lab::node::{self, NodeError};
use crate::lab::render::{self, GraphFormat, RenderError};
use crate::lab::source::{SourceArgs, SourceError};
use crate::lab::state::{self, LabState, LabStateError};
use crate::network::Networks;
use crate::sandbox::sealed::{self, SealedError};
use crate::state::Store;

/// Errors of the lab verbs, each naming the verb's input.
#[derive(Debug, thiserror::Error)]
pub enum LabCliError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    State(#[from] LabStateError),
    #[error("deploy lab {lab}")]
    Deploy {
        lab: String,
        #[source]
        source: Box<DeployError>,
    },
    #[error("destroy lab {lab}: {}", deploy::join(errors))]
    Destroy {
        lab: String,
        errors: Vec<DeployError>,
    },
    #[error("inspect lab")]
    Inspect(#[from] InspectError),
    #[error(transparent)]
    Node(Box<NodeError>),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("capture on {at}")]
    Capture {
        at: String,
        #[source]
        source: CaptureError,
    },
    #[error("create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid NODE:INTERFACE {text:?}")]
    Endpoint {
        text: String,
        #[source]
        source: berth_topology::NameError,
    },
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write to stdout")]
    Stdout(#[source] io::Error),
    #[error("serialize JSON")]
    Json(#[source] serde_json::Error),
    #[error(transparent)]
    Impair(#[from] LabImpairError),
    #[error("lab {verb}")]
    Sealed {
        verb: &'static str,
        #[source]
        source: SealedError,
    },
}

impl From<NodeError> for LabCliError {
    fn from(e: NodeError) -> LabCliError {
        LabCliError::Node(Box::new(e))
    }
}

/// `berth lab …`.
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Deploy a lab from a containerlab topology file: nodes, links, exec commands.
    Deploy {
        #[command(flatten)]
        source: SourceArgs,
        /// Destroy a deployed lab of the same name first.
        #[arg(long)]
        reconfigure: bool,
        /// Cgroup parent of the nodes (default: berth).
        #[arg(long, value_name = "PATH")]
        cgroup_parent: Option<String>,
        /// Nodes started at once.
        #[arg(long, default_value_t = 8, value_name = "N")]
        max_workers: usize,
        /// Pull node images: missing (when not in the store), always, never.
        #[arg(long, value_enum, default_value = "missing", value_name = "POLICY")]
        pull: PullPolicy,
    },
    /// Remove a lab: its containers, links, bridges, namespace names.
    Destroy {
        #[command(flatten)]
        source: SourceArgs,
        /// Also when the lab's state is missing: remove what the file describes.
        #[arg(long)]
        cleanup: bool,
    },
    /// Show the nodes of a lab (or, with --all, the deployed labs).
    Inspect {
        #[command(flatten)]
        source: SourceArgs,
        /// List every deployed lab.
        #[arg(short, long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in nodes (all linux nodes unless --node or --label choose).
    Exec {
        #[command(flatten)]
        source: SourceArgs,
        /// A node (repeatable).
        #[arg(long = "node", value_name = "NODE")]
        nodes: Vec<String>,
        /// Nodes with this label: KEY=VALUE or KEY (repeatable).
        #[arg(long = "label", value_name = "KEY[=VALUE]")]
        labels: Vec<String>,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, num_args = 1.., value_name = "CMD")]
        command: Vec<String>,
    },
    /// Stop a node: its links go away at both ends until it starts again.
    Stop {
        #[command(flatten)]
        source: SourceArgs,
        node: String,
    },
    /// Start a stopped node: links re-created, peers' addresses back, exec commands run.
    Start {
        #[command(flatten)]
        source: SourceArgs,
        node: String,
    },
    /// Set a link down or up at both ends.
    Link {
        #[command(flatten)]
        source: SourceArgs,
        /// One end of the link: NODE:INTERFACE.
        endpoint: String,
        state: LinkState,
    },
    /// Write the packets of one interface as pcap (to stdout for `| wireshark -k -i -`).
    Capture {
        #[command(flatten)]
        source: SourceArgs,
        /// The interface: NODE:INTERFACE.
        endpoint: String,
        /// Write to this file instead of stdout.
        #[arg(short = 'w', value_name = "FILE.pcap")]
        write: Option<PathBuf>,
        /// Stop after this many packets.
        #[arg(short = 'c', value_name = "N")]
        count: Option<u64>,
    },
    /// Print the lab as a topology file (management addresses filled in).
    Save {
        #[command(flatten)]
        source: SourceArgs,
        /// Write here instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Draw the lab: dot, mermaid, json, or svg/png through Graphviz.
    Graph {
        #[command(flatten)]
        source: SourceArgs,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
        /// Write here instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    #[command(flatten)]
    Impair(ImpairVerb),
}

/// `link … up|down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkState {
    Up,
    Down,
}

/// Runs a lab verb; the exit code (non-zero when a command in a node failed).
pub fn dispatch(
    store: &Store,
    networks: &Networks,
    registries_config: Option<&Path>,
    command: LabCommand,
) -> Result<u8, LabCliError> {
    let root = store.root();
    // Verbs that start processes inside nodes run from one sealed copy of this binary
    // (crate::sandbox::sealed), which the node monitors, inits and `exec:` helpers they
    // start then share instead of copying the binary once each (12 MB, about a quarter of
    // a 10-node deploy's CPU time). Re-executed, the process comes back here.
    let starts_nodes = match &command {
        LabCommand::Deploy { .. } => Some("deploy"),
        LabCommand::Start { .. } => Some("start"),
        LabCommand::Exec { .. } => Some("exec"),
        _ => None,
    };
    if let Some(verb) = starts_nodes {
        sealed::reexec_sealed().map_err(|source| LabCliError::Sealed { verb, source })?;
    }
    // Verbs that change a lab, one at a time (not the delay line, which runs for the life of
    // an impairment, nor the read-only verbs).
    let _lock = match &command {
        LabCommand::Deploy { .. }
        | LabCommand::Destroy { .. }
        | LabCommand::Stop { .. }
        | LabCommand::Start { .. }
        | LabCommand::Impair(ImpairVerb::Impair { .. }) => Some(state::lock(root)?),
        _ => None,
    };
    match command {
        LabCommand::Impair(verb) => Ok(impair::dispatch(store, verb)?),
        LabCommand::Deploy {
            source,
            reconfigure,
            cgroup_parent,
            max_workers,
            pull,
        } => {
            let loaded = source.load(root)?;
            for w in &loaded.warnings {
                eprintln!("berth: {w}");
            }
            let lab = loaded.topology.name.to_string();
            let options = DeployOptions {
                reconfigure,
                cgroup_parent,
                registries_config: registries_config.map(Path::to_path_buf),
                parallel: max_workers,
                pull,
            };
            let deployed =
                deploy::deploy(store, networks, &loaded, &options).map_err(|source| {
                    LabCliError::Deploy {
                        lab,
                        source: Box::new(source),
                    }
                })?;
            let failed = print_exec(&deployed.exec, true);
            print_table(&inspect::inspect(store, &loaded)?)?;
            if let Some(line) = crate::timing::report() {
                eprintln!("berth: timing: {line}");
            }
            Ok(u8::from(failed))
        }
        LabCommand::Destroy { source, cleanup } => {
            let lab = source.lab_name(root)?;
            let state = match LabState::load_if_exists(root, &lab)? {
                Some(state) => state,
                // Without a state, --cleanup removes what the file would have made.
                None if cleanup => cleanup_state(store, &source)?,
                None => LabState::load(root, &lab)?,
            };
            deploy::destroy(store, networks, &state)
                .map_err(|errors| LabCliError::Destroy { lab, errors })?;
            Ok(0)
        }
        LabCommand::Inspect { source, all, json } => {
            if all {
                let labs = inspect::list(store)?;
                if json {
                    print_json(&labs)?;
                } else {
                    println!("{:<24} {:<6} {:<9} FILE", "LAB", "NODES", "COMPLETE");
                    for l in labs {
                        println!(
                            "{:<24} {:<6} {:<9} {}",
                            l.name,
                            l.nodes,
                            if l.complete { "yes" } else { "no" },
                            l.file
                                .map_or_else(|| "-".into(), |f| f.display().to_string())
                        );
                    }
                }
                return Ok(0);
            }
            let view = inspect::inspect(store, &source.load(root)?)?;
            if json {
                print_json(&view)?;
            } else {
                print_table(&view)?;
            }
            Ok(0)
        }
        LabCommand::Exec {
            source,
            nodes,
            labels,
            command,
        } => {
            let loaded = source.load(root)?;
            let selected = node::select(&loaded.topology, &nodes, &labels)?;
            let outputs = node::exec(store, &selected, &command);
            Ok(u8::from(print_exec(&outputs, false)))
        }
        LabCommand::Stop { source, node } => {
            node::stop(store, networks, &source.load(root)?, &node)?;
            println!("{node}");
            Ok(0)
        }
        LabCommand::Start { source, node } => {
            let outputs = node::start(store, networks, &source.load(root)?, &node)?;
            let failed = print_exec(&outputs, true);
            println!("{node}");
            Ok(u8::from(failed))
        }
        LabCommand::Link {
            source,
            endpoint,
            state,
        } => {
            let at = NodeInterface::try_from(endpoint.as_str()).map_err(|source| {
                LabCliError::Endpoint {
                    text: endpoint.clone(),
                    source,
                }
            })?;
            node::set_link(store, &source.load(root)?, &at, state == LinkState::Up)?;
            Ok(0)
        }
        LabCommand::Capture {
            source,
            endpoint,
            write,
            count,
        } => {
            let at = NodeInterface::try_from(endpoint.as_str()).map_err(|source| {
                LabCliError::Endpoint {
                    text: endpoint.clone(),
                    source,
                }
            })?;
            let loaded = source.load(root)?;
            let mut out: Box<dyn Write> = match &write {
                Some(path) => Box::new(io::BufWriter::new(std::fs::File::create(path).map_err(
                    |source| LabCliError::Create {
                        path: path.clone(),
                        source,
                    },
                )?)),
                None => Box::new(io::stdout().lock()),
            };
            // Said on stderr once packets can arrive, as tcpdump's "listening on".
            // A closed stderr must not end the capture (eprintln would panic).
            let mut ready = || {
                let _ = writeln!(
                    io::stderr(),
                    "listening on {at}, link-type EN10MB (Ethernet)"
                );
            };
            let n = capture::capture(store, &loaded, &at, count, &mut out, &mut ready).map_err(
                |source| LabCliError::Capture {
                    at: at.to_string(),
                    source,
                },
            )?;
            let _ = writeln!(io::stderr(), "{n} packets captured");
            Ok(0)
        }
        LabCommand::Save { source, output } => {
            let loaded = source.load(root)?;
            write_out(
                output.as_deref(),
                render::save(store, &loaded.topology).as_bytes(),
            )?;
            Ok(0)
        }
        LabCommand::Graph {
            source,
            format,
            output,
        } => {
            let loaded = source.load(root)?;
            let t = render::in_force(store, &loaded.topology);
            write_out(output.as_deref(), &render::graph(&t, format)?)?;
            Ok(0)
        }
    }
}

/// `destroy --cleanup` of a lab without state: every name the file implies.
fn cleanup_state(store: &Store, source: &SourceArgs) -> Result<LabState, LabCliError> {
    let loaded = source.load(store.root())?;
    let t = &loaded.topology;
    let containers: Vec<String> = t
        .nodes
        .values()
        .filter(|n| n.kind == berth_topology::Kind::Linux)
        .filter_map(|n| t.container_name(&n.name).ok())
        .map(|c| c.to_string())
        .collect();
    Ok(LabState {
        name: t.name.to_string(),
        netns_names: containers.clone(),
        containers,
        ..LabState::default()
    })
}

/// Prints each command's output under a header naming node and command; failures also on
/// stderr. `deploy`: only failures and non-empty output. Returns whether any failed.
fn print_exec(outputs: &[ExecOutput], quiet: bool) -> bool {
    let mut failed = false;
    let mut out = io::stdout().lock();
    for o in outputs {
        let command = o.command.join(" ");
        if !(quiet && o.code == 0 && o.stdout.is_empty() && o.stderr.is_empty()) {
            let _ = writeln!(out, "--- {} ({}): {command}", o.node, o.container);
            let _ = out.write_all(o.stdout.as_bytes());
            let _ = out.write_all(o.stderr.as_bytes());
        }
        if o.code != 0 {
            failed = true;
            eprintln!("berth: node {}: {command:?} exited with {}", o.node, o.code);
        }
    }
    let _ = out.flush();
    failed
}

/// The aligned table of `inspect` (and after `deploy`).
fn print_table(view: &LabView) -> Result<(), LabCliError> {
    let rows: Vec<[String; 7]> = view
        .nodes
        .iter()
        .map(|n| {
            let addrs = |v6: bool| {
                let list: Vec<String> = n
                    .interfaces
                    .iter()
                    .flat_map(|(ifname, addrs)| {
                        addrs
                            .iter()
                            .filter(move |a| a.contains(':') == v6)
                            .map(move |a| format!("{ifname}:{a}"))
                    })
                    .collect();
                if list.is_empty() {
                    "-".to_owned()
                } else {
                    list.join(",")
                }
            };
            [
                n.node.clone(),
                n.name.clone(),
                n.kind.clone(),
                n.image.clone().unwrap_or_else(|| "-".into()),
                n.state.clone(),
                n.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                format!("{}  {}", addrs(false), addrs(true)),
            ]
        })
        .collect();
    let header = [
        "NODE",
        "NAME",
        "KIND",
        "IMAGE",
        "STATE",
        "PID",
        "IPv4  IPv6",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = io::stdout().lock();
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        s
    };
    writeln!(out, "{}", line(&header)).map_err(LabCliError::Stdout)?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells)).map_err(LabCliError::Stdout)?;
    }
    Ok(())
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), LabCliError> {
    let mut text = serde_json::to_string_pretty(value).map_err(LabCliError::Json)?;
    text.push('\n');
    write_out(None, text.as_bytes())
}

/// To `path` (written whole), or stdout.
fn write_out(path: Option<&Path>, bytes: &[u8]) -> Result<(), LabCliError> {
    match path {
        Some(path) => std::fs::write(path, bytes).map_err(|source| LabCliError::Write {
            path: path.to_owned(),
            source,
        }),
        None => {
            let mut out = io::stdout().lock();
            match out.write_all(bytes).and_then(|()| out.flush()) {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                other => other.map_err(LabCliError::Stdout),
            }
        }
    }
}
