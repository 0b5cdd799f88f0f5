//! `berth`: the command line. clap parses it straight into the library's requests
//! (`RunRequest`, `ExecRequest`, `NetworkRequest`); each command is one small function that
//! calls the library and prints. Errors are printed once, on one line, as
//! `berth: <context>: <cause>: …`; the exit code is the container's, docker's 125/126/127, or 1.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use berth_image::Reference;
use berth_netlink::error_chain;
use berth_runtime::commands::attach::{self, AttachEnd, Since};
use berth_runtime::commands::exec::{self, ExecRequest};
use berth_runtime::commands::image::cli::{ImageCommand, ImageVerb};
use berth_runtime::commands::image::{PullPolicy, PullSpec};
use berth_runtime::commands::ps::{self, ContainerSummary};
use berth_runtime::commands::{image, logs, monitor, network, prune, rm, run, start, stop};
use berth_runtime::lifecycle::request::RunRequest;
use berth_runtime::network::definition::NetworkRequest;
use berth_runtime::network::{DefaultNetwork, Networks, plugin_path, reload};
use berth_runtime::sandbox::init;
use berth_runtime::state::{Store, clock};
use berth_runtime::timing;
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
    /// Mirrors, insecure registries and CAs (default: $BERTH_REGISTRIES_CONFIG, else
    /// /etc/berth/registries.toml).
    #[arg(long, global = true, value_name = "FILE")]
    registries_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command in a new container (in the foreground, or detached with -d).
    Run(Box<RunArgs>),
    /// Run a command in a running container.
    Exec(ExecRequest),
    /// List containers.
    Ps {
        /// Show all containers (default: running only).
        #[arg(short, long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only containers with this label: label=KEY or label=KEY=VALUE (repeatable: all
        /// must hold).
        #[arg(short, long, value_name = "label=KEY[=VALUE]")]
        filter: Vec<String>,
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
    /// Stop containers (their stop signal, SIGKILL after the timeout), then start them again.
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
    /// Stop containers: their stop signal (the image's StopSignal, --stop-signal, default
    /// SIGTERM), then SIGKILL after the timeout.
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
    #[command(flatten)]
    ImageVerb(ImageVerb),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Network labs from containerlab topology files.
    #[command(subcommand)]
    Lab(berth_runtime::lab::cli::LabCommand),
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
enum NetworkCommand {
    /// Create a network (a conflist in <root>/networks).
    Create(NetworkRequest),
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

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// Remove stopped containers and what a crashed berth left; CNI garbage collection.
    Prune {
        /// Accepted for docker compatibility: berth never asks.
        #[arg(short, long)]
        force: bool,
    },
    /// Disk use of the image store: images, layers, blobs, and what a prune reclaims.
    Df {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `berth run`'s flags: the library's request, and `--help` without `-h` (which is
/// `--hostname`, as in docker).
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
struct RunArgs {
    /// Print help (`-h` is --hostname, as in docker).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Pull the image: missing (when not in the store), always, never.
    #[arg(long, value_enum, default_value = "missing", value_name = "POLICY")]
    pull: PullPolicy,
    /// The platform to pull: os/arch[/variant] (default: the host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    #[command(flatten)]
    request: RunRequest,
}

fn main() -> ExitCode {
    // Every container process starts as `berth init` or `berth exec-init` with exactly these
    // arguments (crate::sandbox::process): read by hand, without building the whole CLI.
    if let Some((exec, config_fd, sync_fd)) = init_arguments(std::env::args_os().skip(1)) {
        if exec {
            init::exec_main(config_fd, sync_fd)
        } else {
            init::main(config_fd, sync_fd)
        }
    }
    // Likewise the monitor of every detached container (crate::commands::monitor::launch).
    if let Some(monitor) = monitor_arguments(std::env::args_os().skip(1)) {
        return report(monitor.run());
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Init { config_fd, sync_fd } => init::main(config_fd, sync_fd),
        Command::ExecInit { config_fd, sync_fd } => init::exec_main(config_fd, sync_fd),
        _ => {}
    }
    report(dispatch(cli))
}

fn report(result: Result<ExitCode, Failure>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("berth: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

/// `--root R --runroot R [--cni-plugin-dir D]… monitor ID`, as `monitor::launch` starts it.
struct MonitorArguments {
    root: PathBuf,
    runroot: PathBuf,
    plugin_dirs: Vec<PathBuf>,
    id: String,
}

impl MonitorArguments {
    /// What `dispatch` does for `Command::Monitor`.
    fn run(self) -> Result<ExitCode, Failure> {
        let store = &Store::open(&self.root, &self.runroot).map_err(Failure::setup)?;
        let networks = &networks(store, &self.plugin_dirs)?;
        Ok(exit_code(monitor::main(store, networks, &self.id)))
    }
}

/// [`MonitorArguments`] in exactly the form `monitor::launch` writes; anything else is
/// clap's to parse.
fn monitor_arguments(
    mut args: impl Iterator<Item = std::ffi::OsString>,
) -> Option<MonitorArguments> {
    let mut value_of = |flag: &str| -> Option<PathBuf> {
        (args.next()? == flag).then_some(())?;
        args.next().map(PathBuf::from)
    };
    let root = value_of("--root")?;
    let runroot = value_of("--runroot")?;
    let mut plugin_dirs = Vec::new();
    loop {
        let arg = args.next()?;
        if arg == "monitor" {
            break;
        }
        (arg == "--cni-plugin-dir").then_some(())?;
        plugin_dirs.push(PathBuf::from(args.next()?));
    }
    let id = args.next()?.into_string().ok()?;
    args.next().is_none().then_some(MonitorArguments {
        root,
        runroot,
        plugin_dirs,
        id,
    })
}

/// `init|exec-init --config-fd N --sync-fd M`, as `sandbox::process` starts them: whether
/// it is `exec-init`, and the two descriptors. Anything else is clap's to parse.
fn init_arguments(mut args: impl Iterator<Item = std::ffi::OsString>) -> Option<(bool, i32, i32)> {
    let exec = match args.next()?.to_str()? {
        "init" => false,
        "exec-init" => true,
        _ => return None,
    };
    let mut fd = |flag: &str| -> Option<i32> {
        (args.next()?.to_str()? == flag).then_some(())?;
        args.next()?.to_str()?.parse().ok()
    };
    let config_fd = fd("--config-fd")?;
    let sync_fd = fd("--sync-fd")?;
    args.next().is_none().then_some((exec, config_fd, sync_fd))
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
    /// `berth` itself failed before any container was involved: docker's 125.
    fn setup(error: impl Into<anyhow::Error>) -> Failure {
        Failure::with_code(error, 125)
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
    let store = &Store::open(&cli.root, &cli.runroot).map_err(Failure::setup)?;
    let networks = &networks(store, &cli.cni_plugin_dir)?;
    match cli.command {
        Command::Run(args) => {
            pull_for_run(store, cli.registries_config.as_deref(), &args)?;
            run(store, networks, args.request)
        }
        Command::Exec(request) => exec(store, request),
        Command::Ps { all, json, filter } => ps(store, all, json, &filter),
        Command::Start {
            attach,
            interactive,
            containers,
        } => start(store, networks, &containers, attach, interactive),
        Command::Restart { time, containers } => for_each(&containers, "restart container", |q| {
            start::restart(store, networks, q, Duration::from_secs(time))
        }),
        Command::Attach {
            no_stdin,
            container,
        } => attach(store, &container, !no_stdin),
        Command::Stop { time, containers } => for_each(&containers, "stop container", |q| {
            stop::stop(store, networks, q, Duration::from_secs(time))
        }),
        Command::Kill { signal, containers } => kill(store, &signal, &containers),
        Command::Rm { force, containers } => for_each(&containers, "remove container", |q| {
            rm::remove(store, networks, q, force)
        }),
        Command::Logs {
            follow,
            timestamps,
            container,
        } => logs(store, &container, follow, timestamps),
        Command::Inspect { container } => inspect(store, &container),
        Command::ImageVerb(verb) => {
            image::cli::dispatch_verb(store, cli.registries_config.as_deref(), verb)
                .map_err(Failure::setup)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Image(command) => {
            image::cli::dispatch(store, cli.registries_config.as_deref(), command)
                .map_err(Failure::setup)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::System(SystemCommand::Df { json }) => {
            image::cli::disk_usage(store, json).map_err(Failure::setup)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Network(NetworkCommand::Create(request)) => {
            network_create(store, networks, request)
        }
        Command::Network(NetworkCommand::Ls { json }) => network_ls(store, networks, json),
        Command::Network(NetworkCommand::Inspect { name }) => {
            print_json(&network::inspect(store, networks, &name)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Network(NetworkCommand::Rm { names }) => {
            for_each(&names, "remove network", |n| networks.remove(store, n))
        }
        Command::Network(NetworkCommand::Reload { names }) => {
            network_reload(store, networks, &names)
        }
        Command::System(SystemCommand::Prune { force: _ }) => system_prune(store, networks),
        Command::Lab(command) => Ok(ExitCode::from(
            berth_runtime::lab::cli::dispatch(
                store,
                networks,
                cli.registries_config.as_deref(),
                command,
            )
            .map_err(Failure::setup)?,
        )),
        Command::Monitor { id } => Ok(exit_code(monitor::main(store, networks, &id))),
        Command::Init { .. } | Command::ExecInit { .. } => unreachable!("handled in main"),
    }
}

/// The networks of `store`, with the plugin search path and the default network's settings.
fn networks(store: &Store, flags: &[PathBuf]) -> Result<Networks, Failure> {
    let exe = berth_runtime::sandbox::sealed::original_exe();
    let path = plugin_path(
        flags,
        std::env::var_os("BERTH_CNI_PATH").as_deref(),
        exe.as_deref(),
    );
    let defaults = DefaultNetwork::from_env(|k| std::env::var(k).ok()).map_err(Failure::setup)?;
    Ok(Networks::new(store, path, defaults))
}

/// Runs `action` for each item, like docker: prints the item on success, reports each failure
/// on its own line (`berth: <what> <item>: …`), keeps going, and fails if any failed.
fn for_each<T, E: Into<anyhow::Error>>(
    items: &[String],
    what: &str,
    mut action: impl FnMut(&str) -> Result<T, E>,
) -> Result<ExitCode, Failure> {
    let mut failed = None;
    for item in items {
        match action(item) {
            Ok(_) => println!("{item}"),
            Err(e) => {
                eprintln!("berth: {:#}", e.into().context(format!("{what} {item}")));
                failed = Some(ExitCode::FAILURE);
            }
        }
    }
    Ok(failed.unwrap_or(ExitCode::SUCCESS))
}

fn run(store: &Store, networks: &Networks, request: RunRequest) -> Result<ExitCode, Failure> {
    if request.detach {
        let id = run::run_detached(store, networks, request).map_err(|e| {
            let code = e.exit_code();
            Failure::with_code(e, code)
        })?;
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let result = run::run(store, networks, request);
    if let Some(line) = timing::report() {
        eprintln!("berth: timing: {line}");
    }
    let outcome = result.map_err(|e| {
        let code = e.exit_code();
        Failure::with_code(e, code)
    })?;
    let short = outcome.id.short();
    if let Some(e) = outcome.log_error {
        let e = anyhow::Error::from(e).context(format!("container {short} (output not logged)"));
        eprintln!("berth: warning: {e:#}");
    }
    for warning in outcome.teardown {
        let e = anyhow::Error::from(warning).context(format!("clean up container {short}"));
        eprintln!("berth: warning: {e:#}");
    }
    Ok(exit_code(outcome.exit_code))
}

fn exec(store: &Store, request: ExecRequest) -> Result<ExitCode, Failure> {
    let container = request.container().to_owned();
    match exec::exec(store, request) {
        Ok(code) => Ok(exit_code(code)),
        Err(e) => {
            let code = e.exit_code();
            Err(Failure::with_code(
                anyhow::Error::from(e).context(format!("exec in {container}")),
                code,
            ))
        }
    }
}

fn ps(store: &Store, all: bool, json: bool, filters: &[String]) -> Result<ExitCode, Failure> {
    let filters = filters
        .iter()
        .map(|f| ps::Filter::parse(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::setup)?;
    let list = ps::list(store, all, &filters)?;
    if json {
        print_json(&list)?;
    } else {
        print_ps(&list);
    }
    Ok(ExitCode::SUCCESS)
}

/// `start [-a [-i]]`: without `-a`, each container started under its monitor; with `-a`, one
/// container, started and followed: its exit code is ours.
fn start(
    store: &Store,
    networks: &Networks,
    containers: &[String],
    attach: bool,
    stdin: bool,
) -> Result<ExitCode, Failure> {
    if !attach {
        if stdin {
            return Err(Failure::from(anyhow::anyhow!(
                "start -i (pass stdin) needs -a (attach)"
            )));
        }
        return for_each(containers, "start container", |q| {
            start::start(store, networks, q)
        });
    }
    let [query] = containers else {
        return Err(Failure::from(anyhow::anyhow!(
            "start -a attaches to one container, not {}",
            containers.len()
        )));
    };
    let started = start::start(store, networks, query).map_err(|e| {
        let code = e.exit_code();
        Failure::with_code(
            anyhow::Error::from(e).context(format!("start container {query}")),
            code,
        )
    })?;
    let since = Since::Offset(started.log_offset);
    let end = attach::attach(store, started.id.as_str(), since, stdin)
        .with_context(|| format!("attach {query}"))?;
    Ok(attach_exit(end))
}

fn attach(store: &Store, container: &str, stdin: bool) -> Result<ExitCode, Failure> {
    let end = attach::attach(store, container, Since::Now, stdin)
        .with_context(|| format!("attach {container}"))?;
    Ok(attach_exit(end))
}

/// The container's code, or success when the caller detached.
fn attach_exit(end: AttachEnd) -> ExitCode {
    match end {
        AttachEnd::Exited(code) => exit_code(code),
        AttachEnd::Detached => ExitCode::SUCCESS,
    }
}

fn kill(store: &Store, signal: &str, containers: &[String]) -> Result<ExitCode, Failure> {
    let signal = stop::parse_signal(signal).map_err(Failure::setup)?;
    for_each(containers, "kill container", |q| {
        stop::kill(store, q, signal)
    })
}

fn logs(
    store: &Store,
    container: &str,
    follow: bool,
    timestamps: bool,
) -> Result<ExitCode, Failure> {
    logs::show(store, container, follow, timestamps)
        .with_context(|| format!("logs of {container}"))?;
    Ok(ExitCode::SUCCESS)
}

fn inspect(store: &Store, container: &str) -> Result<ExitCode, Failure> {
    let inspection =
        ps::inspect(store, container).with_context(|| format!("inspect {container}"))?;
    print_json(&inspection)?;
    Ok(ExitCode::SUCCESS)
}

/// `run --pull`/`--platform`: the image pulled first if the policy says so (progress on
/// stderr, as docker shows it before the container starts).
fn pull_for_run(
    store: &Store,
    registries_config: Option<&Path>,
    args: &RunArgs,
) -> Result<(), Failure> {
    let Some(name) = args.request.image_and_command.first() else {
        return Ok(());
    };
    // A bad reference is reported by the run request's validation, like any bad flag.
    let Ok(reference) = Reference::parse(name) else {
        return Ok(());
    };
    let platform = args
        .platform
        .as_deref()
        .map(berth_image::Platform::parse)
        .transpose()
        .map_err(Failure::setup)?;
    let spec = PullSpec {
        platform,
        config: Some(
            image::registry::registries_config(registries_config).map_err(Failure::setup)?,
        ),
        ..PullSpec::default()
    };
    let progress = image::cli::progress_sink(false);
    image::ensure(store, &reference, args.pull, &spec, progress.as_ref()).map_err(|e| {
        Failure::setup(anyhow::Error::from(e).context(format!("pull {}", reference.familiar())))
    })?;
    Ok(())
}

fn network_create(
    store: &Store,
    networks: &Networks,
    request: NetworkRequest,
) -> Result<ExitCode, Failure> {
    let name = request.name.clone();
    let created = network::create(store, networks, request).map_err(|e| {
        Failure::setup(anyhow::Error::from(e).context(format!("create network {name}")))
    })?;
    println!("{}", created.summary.name);
    Ok(ExitCode::SUCCESS)
}

fn network_ls(store: &Store, networks: &Networks, json: bool) -> Result<ExitCode, Failure> {
    let list = network::list(store, networks).context("list networks")?;
    if json {
        print_json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
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
    Ok(ExitCode::SUCCESS)
}

fn network_reload(
    store: &Store,
    networks: &Networks,
    names: &[String],
) -> Result<ExitCode, Failure> {
    let done = reload::reload(store, networks, names).map_err(|e| {
        let on: String = names.iter().map(|n| format!(" {n}")).collect();
        anyhow::Error::from(e).context(format!("network reload{on}"))
    })?;
    for name in &done.containers {
        println!("{name}");
    }
    for error in &done.errors {
        eprintln!("berth: network reload: {}", error_chain(error));
    }
    Ok(if done.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn system_prune(store: &Store, networks: &Networks) -> Result<ExitCode, Failure> {
    let pruned = prune::prune(store, networks);
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
            clock::ago(&c.created),
            c.status_text,
            c.ports.join(", "),
            c.name
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test code: a panic is the failure report.
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("berth").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_land_in_the_request() {
        let Command::Run(args) = parse(&[
            "run",
            "--rm",
            "-h",
            "web",
            "-e",
            "A=1",
            "-p",
            "8080:80",
            "--mac-address",
            "02:42:ac:11:00:02",
            "--pids-limit",
            "-1",
            "busybox",
            "ls",
            "-l",
        ]) else {
            panic!("not run");
        };
        let r = args.request;
        assert!(r.auto_remove && !r.detach);
        assert_eq!(r.hostname.as_deref(), Some("web"));
        assert_eq!(r.env, ["A=1"]);
        assert_eq!(r.publish, ["8080:80"]);
        assert_eq!(r.mac.as_deref(), Some("02:42:ac:11:00:02"));
        assert_eq!(r.pids_limit, Some(-1));
        assert_eq!(r.image_and_command, ["busybox", "ls", "-l"]);
    }

    #[test]
    fn image_config_flags_land_in_the_requests() {
        let Command::Run(args) = parse(&[
            "run",
            "-u",
            "app:staff",
            "--entrypoint",
            "",
            "-P",
            "--stop-signal",
            "QUIT",
            "-l",
            "a=b",
            "--label",
            "c",
            "busybox",
            "-u",
        ]) else {
            panic!("not run");
        };
        let r = args.request;
        assert_eq!(r.user.as_deref(), Some("app:staff"));
        assert_eq!(r.entrypoint.as_deref(), Some(""));
        assert!(r.publish_all);
        assert_eq!(r.stop_signal.as_deref(), Some("QUIT"));
        assert_eq!(r.labels, ["a=b", "c"]);
        assert_eq!(r.image_and_command, ["busybox", "-u"]);
        let Command::Exec(request) = parse(&["exec", "-u", "65534", "box", "id"]) else {
            panic!("not exec");
        };
        assert_eq!(request.user.as_deref(), Some("65534"));
        assert_eq!(request.command(), ["id"]);
        let Command::Ps { filter, .. } = parse(&["ps", "-f", "label=a=b"]) else {
            panic!("not ps");
        };
        assert_eq!(filter, ["label=a=b"]);
    }

    #[test]
    fn words_after_the_image_are_the_command() {
        let Command::Run(args) = parse(&["run", "busybox", "--rm"]) else {
            panic!("not run");
        };
        assert!(!args.request.auto_remove);
        assert_eq!(args.request.image_and_command, ["busybox", "--rm"]);
    }

    #[test]
    fn exec_and_network_create_land_in_their_requests() {
        let Command::Exec(request) = parse(&["exec", "-it", "-w", "/tmp", "box", "sh", "-c", "x"])
        else {
            panic!("not exec");
        };
        assert!(request.interactive && request.tty);
        assert_eq!(request.workdir.as_deref(), Some("/tmp"));
        assert_eq!(request.container(), "box");
        assert_eq!(request.command(), ["sh", "-c", "x"]);
        let Command::Network(NetworkCommand::Create(request)) = parse(&[
            "network",
            "create",
            "--subnet",
            "10.9.0.0/24",
            "--subnet",
            "fd00::/64",
            "--isolate",
            "lab",
        ]) else {
            panic!("not network create");
        };
        assert_eq!(request.name, "lab");
        assert_eq!(request.subnets, ["10.9.0.0/24", "fd00::/64"]);
        assert!(request.isolate && !request.ipv6);
    }

    #[test]
    fn image_verbs_take_podmans_flags() {
        let Command::ImageVerb(ImageVerb::Pull(args)) = parse(&[
            "pull",
            "-q",
            "--platform",
            "linux/arm64",
            "--retry",
            "0",
            "--tls-verify=false",
            "--creds",
            "u:p",
            "h:5000/ns/app:1",
        ]) else {
            panic!("not pull");
        };
        assert!(args.quiet && !args.registry.tls_verify);
        assert_eq!(args.platform.as_deref(), Some("linux/arm64"));
        assert_eq!(
            (args.retry, args.registry.creds.as_deref()),
            (Some(0), Some("u:p"))
        );
        let Command::Image(ImageCommand::Push(args)) =
            parse(&["image", "push", "--tls-verify", "app", "h:5000/x:1"])
        else {
            panic!("not image push");
        };
        assert!(args.registry.tls_verify);
        assert_eq!(args.destination.as_deref(), Some("h:5000/x:1"));
        let Command::Run(args) = parse(&["run", "--pull=never", "--platform", "linux/amd64", "x"])
        else {
            panic!("not run");
        };
        assert_eq!(args.pull, PullPolicy::Never);
        let Command::Run(args) = parse(&["run", "x"]) else {
            panic!("not run");
        };
        assert_eq!(args.pull, PullPolicy::Missing);
        assert!(
            Cli::try_parse_from(["berth", "run", "--pull=sometimes", "x"]).is_err(),
            "an unknown policy is refused"
        );
    }

    #[test]
    fn init_arguments_are_read_by_hand_only_in_their_exact_form() {
        let args = |line: &str| {
            init_arguments(
                line.split_whitespace()
                    .map(std::ffi::OsString::from)
                    .collect::<Vec<_>>()
                    .into_iter(),
            )
        };
        assert_eq!(args("init --config-fd 3 --sync-fd 4"), Some((false, 3, 4)));
        assert_eq!(
            args("exec-init --config-fd 5 --sync-fd 6"),
            Some((true, 5, 6))
        );
        for other in [
            "init",
            "init --sync-fd 4 --config-fd 3",
            "init --config-fd x --sync-fd 4",
            "init --config-fd 3 --sync-fd 4 extra",
            "run --config-fd 3 --sync-fd 4",
            "--root /r init --config-fd 3 --sync-fd 4",
        ] {
            assert_eq!(args(other), None, "{other}");
        }
        // What is not read by hand still parses as before.
        assert!(
            Cli::try_parse_from(["berth", "init", "--config-fd", "3", "--sync-fd", "4"]).is_ok()
        );
    }

    #[test]
    fn monitor_arguments_are_read_by_hand_only_in_their_exact_form() {
        let args = |line: &str| {
            monitor_arguments(
                line.split_whitespace()
                    .map(std::ffi::OsString::from)
                    .collect::<Vec<_>>()
                    .into_iter(),
            )
            .map(|m| (m.root, m.runroot, m.plugin_dirs, m.id))
        };
        let p = PathBuf::from;
        assert_eq!(
            args("--root /r --runroot /rr monitor abc"),
            Some((p("/r"), p("/rr"), vec![], "abc".into()))
        );
        assert_eq!(
            args("--root /r --runroot /rr --cni-plugin-dir /a --cni-plugin-dir /b monitor abc"),
            Some((p("/r"), p("/rr"), vec![p("/a"), p("/b")], "abc".into()))
        );
        for other in [
            "monitor abc",
            "--runroot /rr --root /r monitor abc",
            "--root /r --runroot /rr monitor",
            "--root /r --runroot /rr monitor abc extra",
            "--root /r --runroot /rr --registries-config /f monitor abc",
            "--root /r --runroot /rr run abc",
        ] {
            assert!(args(other).is_none(), "{other}");
        }
        // What is not read by hand still parses as before.
        let launched = [
            "berth",
            "--root",
            "/r",
            "--runroot",
            "/rr",
            "monitor",
            "abc",
        ];
        assert!(Cli::try_parse_from(launched).is_ok());
    }
}
