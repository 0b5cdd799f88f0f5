//! `berth`: the command line. A thin front end over `berth_runtime`; errors are printed once,
//! on one line, as `berth: <context>: <cause>: …`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use anyhow::Context;
use berth_image::ImageName;
use berth_netlink::error_chain;
use berth_runtime::commands::attach::{self, AttachEnd, Since};
use berth_runtime::commands::exec::ExecRequest;
use berth_runtime::commands::ps::{self, ContainerSummary};
use berth_runtime::commands::{image, logs, monitor, prune, rm, run, start, stop};
use berth_runtime::lifecycle::request::RunRequest;
use berth_runtime::network::definition::NetworkRequest;
use berth_runtime::network::{self, DefaultNetwork, Networks, reload};
use berth_runtime::state::Store;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Run isolated containers, networked through Berth's CNI plugins"
)]
struct Cli {
    /// Persistent state: images, container records and writable layers, networks.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/var/lib/berth"
    )]
    root: PathBuf,
    /// Runtime state: network namespace files.
    #[arg(long, global = true, value_name = "DIR", default_value = "/run/berth")]
    runroot: PathBuf,
    /// Where CNI plugins are (repeatable; default: $BERTH_CNI_PATH, else the directory of
    /// berth, then /usr/libexec/berth/cni).
    #[arg(long, global = true, value_name = "DIR")]
    cni_plugin_dir: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command in a new container (in the foreground, or detached with -d).
    Run(Box<RunArgs>),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// List containers.
    Ps {
        /// Show all containers (default: running only).
        #[arg(short, long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start stopped containers again (same id, name, writable layer), under a monitor.
    Start {
        /// Attach to the container's output and exit with its code (one container only).
        #[arg(short, long)]
        attach: bool,
        /// With -a: pass stdin to a container run with -i.
        #[arg(short, long)]
        interactive: bool,
        #[arg(required = true, value_name = "NAME|ID")]
        containers: Vec<String>,
    },
    /// Stop containers (SIGTERM, SIGKILL after the timeout), then start them again.
    Restart {
        /// Seconds to wait before SIGKILL.
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        #[arg(required = true, value_name = "NAME|ID")]
        containers: Vec<String>,
    },
    /// Follow a running container's output until it exits, and exit with its code.
    ///
    /// Feeds its stdin if it was run with -i. Ctrl-C detaches and leaves it running.
    Attach {
        /// Do not pass stdin.
        #[arg(long)]
        no_stdin: bool,
        #[arg(value_name = "NAME|ID")]
        container: String,
    },
    /// Stop containers: SIGTERM, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        #[arg(required = true, value_name = "NAME|ID")]
        containers: Vec<String>,
    },
    /// Send a signal to containers (default SIGKILL).
    Kill {
        /// Signal name or number (KILL, SIGTERM, 15, ...).
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true, value_name = "NAME|ID")]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill running containers first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "NAME|ID")]
        containers: Vec<String>,
    },
    /// Print a container's output (every run, detached or in the foreground).
    Logs {
        /// Keep printing new output until the container stops.
        #[arg(short, long)]
        follow: bool,
        /// Prefix each line with its timestamp.
        #[arg(short, long)]
        timestamps: bool,
        #[arg(value_name = "NAME|ID")]
        container: String,
    },
    /// Show a container's record as JSON.
    Inspect {
        #[arg(value_name = "NAME|ID")]
        container: String,
    },
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// System-wide maintenance.
    #[command(subcommand)]
    System(SystemCommand),
    /// The container's init (internal: started by `berth run`).
    #[command(hide = true)]
    Init {
        #[arg(long)]
        config_fd: i32,
        #[arg(long)]
        sync_fd: i32,
    },
    /// A process joining a container (internal: started by `berth exec`).
    #[command(hide = true, name = "exec-init")]
    ExecInit {
        #[arg(long)]
        config_fd: i32,
        #[arg(long)]
        sync_fd: i32,
    },
    /// The supervisor of a detached container (internal: started by `berth run -d`).
    #[command(hide = true)]
    Monitor { id: String },
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Import a rootfs tarball, a `docker save` archive or an OCI layout (.tar or .tar.gz).
    Import { tarball: PathBuf, name: String },
    /// List images.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove images not used by any container.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum NetworkCommand {
    /// Create a network (a conflist in <root>/networks).
    Create(NetworkCreateArgs),
    /// List networks.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a network: its summary, conflist and containers, as JSON.
    Inspect { name: String },
    /// Remove networks no container uses.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Put back the firewall rules (masquerade, published ports, isolation) of every
    /// running container, e.g. after the firewall was flushed or reloaded.
    Reload {
        /// Only these networks (default: all).
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct NetworkCreateArgs {
    /// bridge (default) or veth (a routed point-to-point link per container).
    #[arg(short, long)]
    driver: Option<String>,
    /// Subnet in CIDR form (at most one IPv4 and one IPv6; default: a free 10.211.x.0/24).
    #[arg(long)]
    subnet: Vec<String>,
    /// Gateway address (default: the subnet's first address).
    #[arg(long)]
    gateway: Option<String>,
    /// Add IPv6 (a ULA /64 derived from the name unless an IPv6 --subnet is given).
    #[arg(long)]
    ipv6: bool,
    /// No masquerading and no default route.
    #[arg(long)]
    internal: bool,
    /// MTU of the container interfaces.
    #[arg(long)]
    mtu: Option<u32>,
    /// Isolate this network's bridge from other isolated networks (firewall plugin).
    #[arg(long)]
    isolate: bool,
    /// Bridge name (default: br-<12 hex digits of the name's hash>).
    #[arg(long)]
    bridge: Option<String>,
    name: String,
}

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// Remove stopped containers and what a crashed berth left; CNI garbage collection.
    Prune {
        /// Accepted for docker compatibility: berth never asks.
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
struct RunArgs {
    /// Print help (`-h` is --hostname, as in docker).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Run in the background under a monitor; print the container id.
    #[arg(short, long)]
    detach: bool,
    /// Container name (default: generated).
    #[arg(long)]
    name: Option<String>,
    /// Hostname (default: the short container id).
    #[arg(long, short = 'h')]
    hostname: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the caller's value).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// Bind-mount a host directory: HOST:CONTAINER[:ro|rw].
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    volumes: Vec<String>,
    /// Network: a name (repeatable: eth0, eth1, ...), `none` or `host` (default: berth).
    #[arg(long = "network", alias = "net", value_name = "NAME|none|host")]
    networks: Vec<String>,
    /// Publish ports: [IP:]HOST:CONTAINER[/tcp|udp], ranges as 8080-8081:80-81.
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:CTR[/PROTO]")]
    publish: Vec<String>,
    /// IP address on the first network.
    #[arg(long)]
    ip: Option<String>,
    /// MAC address on the first network.
    #[arg(long)]
    mac_address: Option<String>,
    /// Memory limit (e.g. 64m, 1g); no swap on top.
    #[arg(long, short = 'm')]
    memory: Option<String>,
    /// CPU limit in CPUs (e.g. 0.5).
    #[arg(long)]
    cpus: Option<String>,
    /// Maximum number of processes (0 or -1: unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Add a capability (NET_ADMIN, CAP_NET_ADMIN or ALL).
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability (or ALL).
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Cgroup parent, relative to each hierarchy's root (default: berth).
    #[arg(long, value_name = "PATH")]
    cgroup_parent: Option<String>,
    /// Keep stdin open (pass it to the container).
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// User namespace: host (default: the container's root is host root) or auto (a free
    /// range of 65536 host ids from $BERTH_USERNS_BASE, default 100000).
    #[arg(long, value_name = "host|auto")]
    userns: Option<String>,
    /// Map container uids to host uids in a user namespace (repeatable; must map 0).
    #[arg(long, value_name = "CONTAINER:HOST:COUNT")]
    uidmap: Vec<String>,
    /// Map container gids to host gids (repeatable; default: like --uidmap).
    #[arg(long, value_name = "CONTAINER:HOST:COUNT")]
    gidmap: Vec<String>,
    /// The image, then the command and its arguments (default: the image's command).
    #[arg(
        required = true,
        trailing_var_arg = true,
        num_args = 1..,
        value_name = "IMAGE [COMMAND [ARG...]]"
    )]
    image_and_command: Vec<String>,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// Keep stdin open (pass it to the process).
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the caller's value).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory (default: the container's).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// The container, then the command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        num_args = 2..,
        value_name = "CONTAINER COMMAND [ARG...]"
    )]
    container_and_command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Init { config_fd, sync_fd } => {
            berth_runtime::sandbox::init::main(config_fd, sync_fd)
        }
        Command::ExecInit { config_fd, sync_fd } => {
            berth_runtime::sandbox::init::exec_main(config_fd, sync_fd)
        }
        _ => {}
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("berth: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

/// An error and the exit code it maps to.
struct Failure {
    error: anyhow::Error,
    code: u8,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure {
            error: error.into(),
            code: 1,
        }
    }
}

impl Failure {
    fn setup(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            error: error.into(),
            code: 125,
        }
    }

    /// `error`, exiting with `code` (the container's, or docker's 125/126/127).
    fn with_code(error: impl Into<anyhow::Error>, code: i32) -> Failure {
        Failure {
            error: error.into(),
            code: u8::try_from(code).unwrap_or(125),
        }
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}

fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    let store = Store::open(&cli.root, &cli.runroot).map_err(Failure::setup)?;
    let exe = std::env::current_exe().ok();
    let path = network::plugin_path(
        &cli.cni_plugin_dir,
        std::env::var_os("BERTH_CNI_PATH").as_deref(),
        exe.as_deref(),
    );
    let defaults = DefaultNetwork::from_env(|k| std::env::var(k).ok()).map_err(Failure::setup)?;
    let networks = Networks::new(&store, path, defaults);
    match cli.command {
        Command::Run(args) => run(&store, &networks, *args),
        Command::Exec(args) => {
            let mut rest = args.container_and_command.into_iter();
            let request = ExecRequest {
                container: rest.next().unwrap_or_default(),
                command: rest.collect(),
                interactive: args.interactive,
                tty: args.tty,
                env: args.env,
                workdir: args.workdir,
            };
            let container = request.container.clone();
            match berth_runtime::commands::exec::exec(&store, request) {
                Ok(code) => Ok(exit_code(code)),
                Err(e) => {
                    let code = u8::try_from(e.exit_code()).unwrap_or(125);
                    Err(Failure {
                        error: anyhow::Error::from(e).context(format!("exec in {container}")),
                        code,
                    })
                }
            }
        }
        Command::Ps { all, json } => {
            let list = ps::list(&store, all)?;
            if json {
                print_json(&list)?;
            } else {
                print_ps(&list);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Start {
            attach: true,
            interactive,
            containers,
        } => start_attached(&store, &networks, &containers, interactive),
        Command::Start {
            attach: false,
            interactive,
            containers,
        } => {
            if interactive {
                return Err(Failure::from(anyhow::anyhow!(
                    "start -i (pass stdin) needs -a (attach)"
                )));
            }
            for_each(&containers, "start", |query| {
                start::start(&store, &networks, query)
            })
        }
        Command::Restart { time, containers } => for_each(&containers, "restart", |query| {
            start::restart(&store, &networks, query, Duration::from_secs(time))
        }),
        Command::Attach {
            no_stdin,
            container,
        } => match attach::attach(&store, &container, Since::Now, !no_stdin) {
            Ok(end) => Ok(attach_exit(end)),
            Err(e) => Err(Failure::from(
                anyhow::Error::from(e).context(format!("attach {container}")),
            )),
        },
        Command::Stop { time, containers } => for_each(&containers, "stop", |query| {
            stop::stop(&store, &networks, query, Duration::from_secs(time))
        }),
        Command::Kill { signal, containers } => {
            let signal = stop::parse_signal(&signal).map_err(Failure::setup)?;
            for_each(&containers, "kill", |query| {
                stop::kill(&store, query, signal)
            })
        }
        Command::Rm { force, containers } => for_each(&containers, "remove", |query| {
            rm::remove(&store, &networks, query, force)
        }),
        Command::Logs {
            follow,
            timestamps,
            container,
        } => {
            logs::show(&store, &container, follow, timestamps)
                .with_context(|| format!("logs of {container}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { container } => {
            let inspection =
                ps::inspect(&store, &container).with_context(|| format!("inspect {container}"))?;
            print_json(&inspection)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Image(command) => image(&store, command),
        Command::Network(command) => network_command(&store, &networks, command),
        Command::System(SystemCommand::Prune { force: _ }) => {
            let pruned = prune::prune(&store, &networks);
            for name in &pruned.removed {
                println!("{name}");
            }
            for error in &pruned.errors {
                eprintln!("berth: system prune: {}", error_chain(error));
            }
            Ok(if pruned.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Monitor { id } => Ok(exit_code(monitor::main(&store, &networks, &id))),
        Command::Init { .. } | Command::ExecInit { .. } => unreachable!("handled in main"),
    }
}

/// Runs `action` for each container, like docker: prints the query on success, reports each
/// failure on its own line, keeps going, and fails if any failed.
fn for_each<T, E: Into<anyhow::Error>>(
    containers: &[String],
    verb: &str,
    mut action: impl FnMut(&str) -> Result<T, E>,
) -> Result<ExitCode, Failure> {
    let mut failed = None;
    for query in containers {
        match action(query) {
            Ok(_) => println!("{query}"),
            Err(e) => {
                eprintln!(
                    "berth: {:#}",
                    e.into().context(format!("{verb} container {query}"))
                );
                failed = Some(ExitCode::FAILURE);
            }
        }
    }
    Ok(failed.unwrap_or(ExitCode::SUCCESS))
}

/// `start -a`: one container, started and followed; its exit code is ours.
fn start_attached(
    store: &Store,
    networks: &Networks,
    containers: &[String],
    stdin: bool,
) -> Result<ExitCode, Failure> {
    let [query] = containers else {
        return Err(Failure::from(anyhow::anyhow!(
            "start -a attaches to one container, not {}",
            containers.len()
        )));
    };
    let started = start::start(store, networks, query).map_err(|e| {
        let code = u8::try_from(e.exit_code()).unwrap_or(125);
        Failure {
            error: anyhow::Error::from(e).context(format!("start container {query}")),
            code,
        }
    })?;
    let end = attach::attach(
        store,
        started.id.as_str(),
        Since::Offset(started.log_offset),
        stdin,
    )
    .with_context(|| format!("attach {query}"))?;
    Ok(attach_exit(end))
}

/// The container's code, or success when the caller detached.
fn attach_exit(end: AttachEnd) -> ExitCode {
    match end {
        AttachEnd::Exited(code) => exit_code(code),
        AttachEnd::Detached => ExitCode::SUCCESS,
    }
}

fn run(store: &Store, networks: &Networks, args: RunArgs) -> Result<ExitCode, Failure> {
    let mut rest = args.image_and_command.into_iter();
    let image = rest.next().unwrap_or_default();
    let request = RunRequest {
        image,
        command: rest.collect(),
        name: args.name,
        hostname: args.hostname,
        env: args.env,
        workdir: args.workdir,
        volumes: args.volumes,
        networks: args.networks,
        publish: args.publish,
        ip: args.ip,
        mac: args.mac_address,
        memory: args.memory,
        cpus: args.cpus,
        pids_limit: args.pids_limit,
        read_only: args.read_only,
        cap_add: args.cap_add,
        cap_drop: args.cap_drop,
        cgroup_parent: args.cgroup_parent,
        interactive: args.interactive,
        tty: args.tty,
        auto_remove: args.rm,
        detach: args.detach,
        userns: args.userns,
        uidmap: args.uidmap,
        gidmap: args.gidmap,
    };
    if request.detach {
        let id = run::run_detached(store, networks, request).map_err(|e| {
            let code = e.exit_code();
            Failure::with_code(e, code)
        })?;
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let result = run::run(store, networks, request);
    if let Some(line) = berth_runtime::timing::report() {
        eprintln!("berth: timing: {line}");
    }
    match result {
        Ok(outcome) => {
            if let Some(e) = outcome.log_error {
                eprintln!(
                    "berth: warning: {:#}",
                    anyhow::Error::from(e).context(format!(
                        "container {} (output not logged)",
                        outcome.id.short()
                    ))
                );
            }
            for warning in outcome.teardown {
                eprintln!(
                    "berth: warning: {:#}",
                    anyhow::Error::from(warning)
                        .context(format!("clean up container {}", outcome.id.short()))
                );
            }
            Ok(exit_code(outcome.exit_code))
        }
        Err(e) => {
            let code = e.exit_code();
            Err(Failure::with_code(e, code))
        }
    }
}

fn image(store: &Store, command: ImageCommand) -> Result<ExitCode, Failure> {
    match command {
        ImageCommand::Import { tarball, name } => {
            let name = ImageName::try_from(name.as_str())?;
            let image = image::import(store, &tarball, &name)
                .with_context(|| format!("import image {name}"))?;
            println!("{}", image.name);
        }
        ImageCommand::Ls { json } => {
            let list = image::list(store)?;
            if json {
                print_json(&list)?;
            } else {
                println!("{:<24} {:<22} {:>10}  SOURCE", "NAME", "CREATED", "SIZE");
                for i in &list {
                    println!(
                        "{:<24} {:<22} {:>10}  {}",
                        i.image.name.as_str(),
                        berth_runtime::state::clock::ago(&i.image.created),
                        human_size(i.size),
                        i.image.source
                    );
                }
            }
        }
        ImageCommand::Rm { names } => {
            for name in names {
                let removed =
                    image::remove(store, &name).with_context(|| format!("remove image {name}"))?;
                println!("{removed}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn network_command(
    store: &Store,
    networks: &Networks,
    command: NetworkCommand,
) -> Result<ExitCode, Failure> {
    match command {
        NetworkCommand::Create(args) => {
            let name = args.name.clone();
            let spec = NetworkRequest {
                name: args.name,
                driver: args.driver,
                subnets: args.subnet,
                gateway: args.gateway,
                ipv6: args.ipv6,
                internal: args.internal,
                mtu: args.mtu,
                isolate: args.isolate,
                bridge: args.bridge,
            }
            .validate()
            .map_err(|e| {
                Failure::setup(anyhow::Error::from(e).context(format!("create network {name}")))
            })?;
            let created = networks.create(store, spec).map_err(|e| {
                Failure::setup(anyhow::Error::from(e).context(format!("create network {name}")))
            })?;
            println!("{}", created.summary.name);
        }
        NetworkCommand::Ls { json } => {
            let list: Vec<_> = networks
                .list_all(store)
                .context("list networks")?
                .into_iter()
                .map(|n| n.summary)
                .collect();
            if json {
                print_json(&list)?;
            } else {
                println!("{:<20} {:<8} {:<16} SUBNETS", "NAME", "DRIVER", "BRIDGE");
                for n in &list {
                    let subnets: Vec<String> = n.subnets.iter().map(ToString::to_string).collect();
                    println!(
                        "{:<20} {:<8} {:<16} {}",
                        n.name,
                        n.driver,
                        n.bridge.as_deref().unwrap_or("-"),
                        subnets.join(", ")
                    );
                }
            }
        }
        NetworkCommand::Inspect { name } => {
            let network = networks
                .load(store, &name)
                .with_context(|| format!("inspect network {name}"))?;
            let containers: Vec<_> = store
                .records()?
                .into_iter()
                .filter_map(|r| {
                    let a = r.state.attachments.iter().find(|a| a.network == name)?;
                    Some(serde_json::json!({
                        "name": r.name.as_str(),
                        "id": r.id.as_str(),
                        "ifname": a.ifname,
                        "ips": a.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "mac": a.mac,
                    }))
                })
                .collect();
            let conflist: serde_json::Value =
                serde_json::from_slice(&network.list.bytes).unwrap_or_default();
            let mut doc = serde_json::to_value(&network.summary).context("serialize network")?;
            if let Some(map) = doc.as_object_mut() {
                map.insert("containers".into(), containers.into());
                map.insert("conflist".into(), conflist);
            }
            print_json(&doc)?;
        }
        NetworkCommand::Reload { names } => {
            let done = reload::reload(store, networks, &names).map_err(|e| {
                let on: String = names.iter().map(|n| format!(" {n}")).collect();
                anyhow::Error::from(e).context(format!("network reload{on}"))
            })?;
            for name in &done.containers {
                println!("{name}");
            }
            for error in &done.errors {
                eprintln!("berth: network reload: {}", error_chain(error));
            }
            if !done.errors.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        NetworkCommand::Rm { names } => {
            let mut failed = None;
            for name in names {
                match networks.remove(store, &name) {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        eprintln!(
                            "berth: {:#}",
                            anyhow::Error::from(e).context(format!("remove network {name}"))
                        );
                        failed = Some(ExitCode::FAILURE);
                    }
                }
            }
            return Ok(failed.unwrap_or(ExitCode::SUCCESS));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let result = serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out));
    match result {
        // The reader stopped early (`| head`): not an error of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("write JSON to stdout"),
    }
}

fn print_ps(list: &[ContainerSummary]) {
    println!(
        "{:<12}  {:<10}  {:<24}  {:<18}  {:<30}  {:<24}  NAMES",
        "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS"
    );
    for c in list {
        let mut command = c.command.join(" ");
        if command.chars().count() > 22 {
            command = command.chars().take(21).collect::<String>() + "…";
        }
        println!(
            "{:<12}  {:<10}  {:<24}  {:<18}  {:<30}  {:<24}  {}",
            c.id.short(),
            c.image,
            format!("\"{command}\""),
            berth_runtime::state::clock::ago(&c.created),
            c.status_text,
            c.ports.join(", "),
            c.name
        );
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}
