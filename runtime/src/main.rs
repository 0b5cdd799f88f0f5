//! `berth`: the command line. A thin front end over `berth_runtime`; errors are printed once,
//! on one line, as `berth: <context>: <cause>: …`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use berth_runtime::config::RunRequest;
use berth_runtime::container::{self, ContainerSummary};
use berth_runtime::image::ImageStore;
use berth_runtime::names::ImageName;
use berth_runtime::state::Store;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Run isolated containers (phase 1: foreground, no networking yet)"
)]
struct Cli {
    /// Persistent state: images, container records and writable layers.
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command in a new container, in the foreground.
    Run(Box<RunArgs>),
    /// List containers.
    Ps {
        /// Show all containers (default: running only).
        #[arg(short, long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove containers.
    Rm {
        /// Kill running containers first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "NAME|ID")]
        containers: Vec<String>,
    },
    /// Show a container's record as JSON.
    Inspect {
        #[arg(value_name = "NAME|ID")]
        container: String,
    },
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// The container's init (internal: started by `berth run`).
    #[command(hide = true)]
    Init {
        #[arg(long)]
        config_fd: i32,
        #[arg(long)]
        sync_fd: i32,
    },
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

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
struct RunArgs {
    /// Print help (`-h` is --hostname, as in docker).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
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
    /// Network mode: only `none` until CNI support arrives.
    #[arg(long, value_name = "MODE")]
    network: Option<String>,
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
    /// The image, then the command and its arguments (default: the image's command).
    #[arg(
        required = true,
        trailing_var_arg = true,
        num_args = 1..,
        value_name = "IMAGE [COMMAND [ARG...]]"
    )]
    image_and_command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Init { config_fd, sync_fd } = cli.command {
        berth_runtime::init::main(config_fd, sync_fd);
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

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}

fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    let store = Store::open(&cli.root, &cli.runroot).map_err(|e| Failure {
        error: e.into(),
        code: 125,
    })?;
    match cli.command {
        Command::Run(args) => run(&store, *args),
        Command::Ps { all, json } => {
            let list = container::list(&store, all)?;
            if json {
                print_json(&list)?;
            } else {
                print_ps(&list);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rm { force, containers } => {
            let mut failed = None;
            for query in &containers {
                match container::remove(&store, query, force) {
                    Ok(_) => println!("{query}"),
                    Err(e) => {
                        // Keep going with the others, like docker; report each failure.
                        eprintln!(
                            "berth: {:#}",
                            anyhow::Error::from(e).context(format!("remove container {query}"))
                        );
                        failed = Some(ExitCode::FAILURE);
                    }
                }
            }
            Ok(failed.unwrap_or(ExitCode::SUCCESS))
        }
        Command::Inspect { container } => {
            let inspection = container::inspect(&store, &container)
                .with_context(|| format!("inspect {container}"))?;
            print_json(&inspection)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Image(command) => image(&store, command),
        Command::Init { .. } => unreachable!("handled in main"),
    }
}

fn run(store: &Store, args: RunArgs) -> Result<ExitCode, Failure> {
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
        network: args.network,
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
    };
    match container::run(store, request) {
        Ok(outcome) => {
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
            Err(Failure {
                error: e.into(),
                code: u8::try_from(code).unwrap_or(125),
            })
        }
    }
}

fn image(store: &Store, command: ImageCommand) -> Result<ExitCode, Failure> {
    let images = ImageStore::new(store.images_dir());
    match command {
        ImageCommand::Import { tarball, name } => {
            let name = ImageName::try_from(name.as_str())?;
            let image = images
                .import(&tarball, &name)
                .with_context(|| format!("import image {name}"))?;
            println!("{}", image.name);
        }
        ImageCommand::Ls { json } => {
            let list = images.list()?;
            if json {
                print_json(&list)?;
            } else {
                println!("{:<24} {:<22} {:>10}  SOURCE", "NAME", "CREATED", "SIZE");
                for i in &list {
                    println!(
                        "{:<24} {:<22} {:>10}  {}",
                        i.image.name.as_str(),
                        berth_runtime::clock::ago(&i.image.created),
                        human_size(i.size),
                        i.image.source
                    );
                }
            }
        }
        ImageCommand::Rm { names } => {
            for name in names {
                let removed = container::remove_image(store, &name)
                    .with_context(|| format!("remove image {name}"))?;
                println!("{removed}");
            }
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
        "{:<12}  {:<10}  {:<24}  {:<18}  {:<30}  NAMES",
        "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS"
    );
    for c in list {
        let mut command = c.command.join(" ");
        if command.chars().count() > 22 {
            command = command.chars().take(21).collect::<String>() + "…";
        }
        println!(
            "{:<12}  {:<10}  {:<24}  {:<18}  {:<30}  {}",
            c.id.short(),
            c.image.as_str(),
            format!("\"{command}\""),
            berth_runtime::clock::ago(&c.created),
            c.status_text,
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
