//! The image verbs as the `berth` binary parses them (clap, podman's flag names) and what
//! they print. Output goes to stdout (ids, names, tables, JSON); progress goes to stderr: a
//! redrawn display on a terminal, plain lines elsewhere, nothing with `-q`.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use berth_image::progress::{Plain, Progress, Quiet, Terminal, human};
use berth_image::save::SaveFormat;
use berth_image::{Platform, Reference};
use clap::{Args, Subcommand};

use super::{ImageCommandError, PullSpec, RegistryFlags, registry};
use crate::state::{Store, clock};

/// `pull`'s flags (also `image pull`).
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// Print only the digest the reference resolved to.
    #[arg(short, long)]
    pub quiet: bool,
    /// The platform to pull from a multi-platform image: os/arch[/variant] (default: the
    /// host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Retries of a failed download (default 3).
    #[arg(long, value_name = "N")]
    pub retry: Option<u32>,
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// The image: [REGISTRY/]NAME[:TAG|@DIGEST].
    pub name: String,
}

/// `push`'s flags (also `image push`).
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// Print only the digest of the pushed manifest.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// The stored image (a reference or an id).
    pub source: String,
    /// Where to push it (default: SOURCE, which must then be a reference).
    pub destination: Option<String>,
}

/// `images` / `image ls`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show the digest each repository knows the image by.
    #[arg(long)]
    pub digests: bool,
    /// Print only the image ids.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `rmi` / `image rm`.
#[derive(Debug, Clone, Args)]
pub struct RemoveArgs {
    /// Remove an image with several names by its id (all of its names go).
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true, value_name = "IMAGE")]
    pub names: Vec<String>,
}

/// `save` / `image save`.
#[derive(Debug, Clone, Args)]
pub struct SaveArgs {
    /// The archive to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// docker-archive (what `docker load` reads) or oci-archive.
    #[arg(long, value_name = "FORMAT", default_value = "docker-archive")]
    pub format: String,
    #[arg(required = true, value_name = "IMAGE")]
    pub names: Vec<String>,
}

/// `load` / `image load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The archive to read: docker-archive or OCI archive (.tar, .tar.gz).
    #[arg(short, long, value_name = "FILE")]
    pub input: PathBuf,
    /// Print nothing.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `login`.
#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    #[arg(short, long, value_name = "USER")]
    pub username: Option<String>,
    #[arg(short, long, value_name = "PASS")]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// host[:port] (default: docker.io).
    pub server: Option<String>,
}

/// `logout`.
#[derive(Debug, Clone, Args)]
pub struct LogoutArgs {
    /// Remove every login of the auth file.
    #[arg(short, long)]
    pub all: bool,
    /// The auth file (default: podman's).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// host[:port] (default: docker.io).
    pub server: Option<String>,
}

/// The image verbs at the top level, docker's way (`berth pull`, `berth images`, …).
#[derive(Debug, Clone, Subcommand)]
pub enum ImageVerb {
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// Push an image to a registry.
    Push(PushArgs),
    /// Give an image another name: SOURCE TARGET.
    Tag { source: String, target: String },
    /// Remove images not used by any container.
    Rmi(RemoveArgs),
    /// List images.
    Images(ListArgs),
    /// Write images to a tar archive.
    Save(SaveArgs),
    /// Read images from a tar archive (docker-archive or OCI), with their names.
    Load(LoadArgs),
    /// Log in to a registry (the credentials are checked, then stored in the auth file).
    Login(LoginArgs),
    /// Remove a registry's stored credentials.
    Logout(LogoutArgs),
}

/// `berth image …`.
#[derive(Debug, Clone, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// Push an image to a registry.
    Push(PushArgs),
    /// Give an image another name: SOURCE TARGET.
    Tag { source: String, target: String },
    /// Remove images not used by any container.
    Rm(RemoveArgs),
    /// List images.
    Ls(ListArgs),
    /// Show images as docker's `image inspect` does (JSON).
    Inspect {
        #[arg(required = true, value_name = "IMAGE")]
        names: Vec<String>,
    },
    /// Remove images without a name (with -a: every image no container uses), then the
    /// layers and blobs no image needs.
    Prune {
        #[arg(short, long)]
        all: bool,
        /// Accepted for docker compatibility: berth never asks.
        #[arg(short, long)]
        force: bool,
    },
    /// Write images to a tar archive.
    Save(SaveArgs),
    /// Read images from a tar archive (docker-archive or OCI), with their names.
    Load(LoadArgs),
    /// Import a rootfs tarball, a `docker save` archive or an OCI layout (.tar or .tar.gz)
    /// under NAME.
    Import { tarball: PathBuf, name: String },
}

/// A failed image verb: the error, already with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct VerbError {
    what: String,
    #[source]
    source: Box<ImageCommandError>,
}

fn context(what: impl Into<String>) -> impl FnOnce(ImageCommandError) -> VerbError {
    let what = what.into();
    move |source| VerbError {
        what,
        source: Box::new(source),
    }
}

fn parse_reference(text: &str) -> Result<Reference, VerbError> {
    Reference::parse(text).map_err(|e| context(format!("image {text:?}"))(e.into()))
}

fn parse_platform(text: Option<&str>) -> Result<Option<Platform>, VerbError> {
    text.map(|p| Platform::parse(p).map_err(|e| context("--platform")(e.into())))
        .transpose()
}

/// Where pull progress goes: a terminal display or plain lines on stderr, or nothing.
pub fn progress_sink(quiet: bool) -> Box<dyn Progress> {
    if quiet {
        Box::new(Quiet)
    } else if io::stderr().is_terminal() {
        Box::new(Terminal::new(io::stderr()))
    } else {
        Box::new(Plain::new(io::stderr()))
    }
}

/// Runs a top-level image verb (`login` and `logout` included).
pub fn dispatch_verb(
    store: &Store,
    registries_config: Option<&Path>,
    verb: ImageVerb,
) -> Result<(), VerbError> {
    match verb {
        ImageVerb::Login(args) => {
            let server = args.server.as_deref().unwrap_or("docker.io");
            let config = registry::registries_config(registries_config)
                .map_err(|e| context("read the registries config")(e.into()))?;
            let file = super::login(
                server,
                args.username.as_deref(),
                args.password.as_deref(),
                args.password_stdin,
                &args.registry,
                config,
            )
            .map_err(context(format!("log in to {server}")))?;
            eprintln!("(credentials stored in {file})");
            println!("Login Succeeded!");
            Ok(())
        }
        ImageVerb::Logout(args) => {
            let flags = RegistryFlags {
                authfile: args.authfile.clone(),
                ..RegistryFlags::default()
            };
            let server = args.server.as_deref();
            let done = super::logout(server, args.all, &flags).map_err(context(format!(
                "log out of {}",
                server.unwrap_or("docker.io")
            )))?;
            if args.all {
                println!("Removed login credentials for all registries ({done})");
            } else {
                println!("Removed login credentials for {done}");
            }
            Ok(())
        }
        ImageVerb::Pull(a) => dispatch(store, registries_config, ImageCommand::Pull(a)),
        ImageVerb::Push(a) => dispatch(store, registries_config, ImageCommand::Push(a)),
        ImageVerb::Tag { source, target } => dispatch(
            store,
            registries_config,
            ImageCommand::Tag { source, target },
        ),
        ImageVerb::Rmi(a) => dispatch(store, registries_config, ImageCommand::Rm(a)),
        ImageVerb::Images(a) => dispatch(store, registries_config, ImageCommand::Ls(a)),
        ImageVerb::Save(a) => dispatch(store, registries_config, ImageCommand::Save(a)),
        ImageVerb::Load(a) => dispatch(store, registries_config, ImageCommand::Load(a)),
    }
}

/// Runs `berth image …`.
pub fn dispatch(
    store: &Store,
    registries_config: Option<&Path>,
    command: ImageCommand,
) -> Result<(), VerbError> {
    let config = || {
        registry::registries_config(registries_config)
            .map_err(|e| context("read the registries config")(e.into()))
    };
    match command {
        ImageCommand::Pull(args) => {
            let reference = parse_reference(&args.name)?;
            let spec = PullSpec {
                platform: parse_platform(args.platform.as_deref())?,
                retries: args.retry,
                flags: args.registry.clone(),
                config: Some(config()?),
            };
            let progress = progress_sink(args.quiet);
            let pulled = super::pull(store, &reference, &spec, progress.as_ref())
                .map_err(context(format!("pull {}", reference.familiar())))?;
            if args.quiet {
                println!("{}", pulled.digest);
            } else {
                println!("{reference}");
            }
            Ok(())
        }
        ImageCommand::Push(args) => {
            let destination = parse_reference(args.destination.as_ref().unwrap_or(&args.source))?;
            let what = format!("push {} to {}", args.source, destination.familiar());
            // A missing image fails before anything is printed.
            super::inspect(store, std::slice::from_ref(&args.source))
                .map_err(context(what.clone()))?;
            if !args.quiet {
                eprintln!("The push refers to repository [{}]", destination.name());
            }
            let quiet = args.quiet;
            let mut progress =
                |digest: &berth_image::Digest, status: berth_image::push::PushStatus| {
                    if !quiet {
                        eprintln!("{}: {}", digest.short(), status.text());
                    }
                };
            let pushed = super::push(
                store,
                &args.source,
                &destination,
                &args.registry,
                config()?,
                &mut progress,
            )
            .map_err(context(what))?;
            if quiet {
                println!("{}", pushed.digest);
            } else {
                println!(
                    "{}: digest: {} size: {}",
                    destination.tag().unwrap_or_default(),
                    pushed.digest,
                    pushed.size
                );
            }
            Ok(())
        }
        ImageCommand::Tag { source, target } => {
            let target_ref = parse_reference(&target)?;
            super::tag(store, &source, &target_ref)
                .map_err(context(format!("tag {source} as {target}")))?;
            Ok(())
        }
        ImageCommand::Rm(args) => {
            // docker's way: every name is tried, each failure reported; the first one is
            // the command's error after the others ran.
            let mut first = None;
            for name in &args.names {
                match super::remove(store, name, args.force) {
                    Ok(removed) => {
                        for reference in &removed.untagged {
                            println!("Untagged: {}", reference.familiar());
                        }
                        for id in &removed.deleted {
                            println!("Deleted: {id}");
                        }
                    }
                    Err(e) => {
                        let e = context(format!("remove image {name}"))(e);
                        if first.is_some() {
                            eprintln!("berth: {}", berth_image::error_chain(&e));
                        } else {
                            first = Some(e);
                        }
                    }
                }
            }
            first.map_or(Ok(()), Err)
        }
        ImageCommand::Ls(args) => list(store, &args),
        ImageCommand::Inspect { names } => {
            let found = super::inspect(store, &names).map_err(context("inspect images"))?;
            print_json(&found);
            Ok(())
        }
        ImageCommand::Prune { all, force: _ } => {
            let removed = super::prune(store, all).map_err(context("prune images"))?;
            for reference in &removed.untagged {
                println!("Untagged: {}", reference.familiar());
            }
            for id in &removed.deleted {
                println!("Deleted: {id}");
            }
            println!("Total reclaimed space: {}", human(removed.collected.freed));
            Ok(())
        }
        ImageCommand::Save(args) => {
            let format: SaveFormat = args
                .format
                .parse()
                .map_err(|e| context("save")(ImageCommandError::Save(e)))?;
            super::save(store, &args.names, format, &args.output)
                .map_err(context(format!("save to {}", args.output.display())))
        }
        ImageCommand::Load(args) => {
            let loaded = super::load(store, &args.input)
                .map_err(context(format!("load {}", args.input.display())))?;
            if !args.quiet {
                for image in &loaded {
                    if image.references.is_empty() {
                        println!("Loaded image ID: {}", image.id);
                    }
                    for r in &image.references {
                        println!("Loaded image: {}", r.familiar());
                    }
                }
            }
            Ok(())
        }
        ImageCommand::Import { tarball, name } => {
            let reference = parse_reference(&name)?;
            super::import(store, &tarball, &reference)
                .map_err(context(format!("import image {name}")))?;
            println!("{}", reference.familiar());
            Ok(())
        }
    }
}

/// `images`: docker's table (columns as wide as their widest cell), `-q` ids, or JSON.
fn list(store: &Store, args: &ListArgs) -> Result<(), VerbError> {
    let list = super::list(store).map_err(context("list images"))?;
    if args.json {
        print_json(&list);
        return Ok(());
    }
    if args.quiet {
        let mut seen = Vec::new();
        for i in &list {
            if !seen.contains(&i.id) {
                println!("{}", i.id.short());
                seen.push(i.id.clone());
            }
        }
        return Ok(());
    }
    let mut header = vec!["REPOSITORY", "TAG"];
    if args.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            let mut row = vec![i.repository.clone(), i.tag.clone()];
            if args.digests {
                row.push(
                    i.digest
                        .as_ref()
                        .map_or_else(|| "<none>".to_owned(), ToString::to_string),
                );
            }
            row.extend([
                i.id.short().to_owned(),
                i.created.as_deref().map_or_else(String::new, clock::ago),
                human(i.size),
            ]);
            row
        })
        .collect();
    print!("{}", table(&header, &rows));
    Ok(())
}

/// Left-aligned columns, three spaces apart, the last one unpadded (docker's tabwriter).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 3;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn print_json<T: serde::Serialize>(value: &T) {
    let mut out = io::stdout().lock();
    if serde_json::to_writer_pretty(&mut out, value).is_ok() {
        let _ = writeln!(out);
    }
}

/// `berth system df`: the image store's figures, with what a prune would reclaim.
pub fn disk_usage(store: &Store, json: bool) -> Result<(), VerbError> {
    let usage = super::disk_usage(store).map_err(context("disk usage of the image store"))?;
    if json {
        print_json(&usage);
        return Ok(());
    }
    let header = ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"];
    let rows = vec![
        vec![
            "Images".to_owned(),
            usage.images.to_string(),
            usage.active_images.to_string(),
            human(usage.layers_size + usage.blobs_size),
            human(
                usage.reclaimable + usage.unreferenced_layers_size + usage.unreferenced_blobs_size,
            ),
        ],
        vec![
            "Layers".to_owned(),
            usage.layers.to_string(),
            String::new(),
            human(usage.layers_size),
            format!(
                "{} ({} unreferenced)",
                human(usage.unreferenced_layers_size),
                usage.unreferenced_layers
            ),
        ],
        vec![
            "Blobs".to_owned(),
            usage.blobs.to_string(),
            String::new(),
            human(usage.blobs_size),
            format!(
                "{} ({} unreferenced)",
                human(usage.unreferenced_blobs_size),
                usage.unreferenced_blobs
            ),
        ],
        vec![
            "Partial downloads".to_owned(),
            usage.partial_downloads.to_string(),
            String::new(),
            human(usage.partial_size),
            human(usage.partial_size),
        ],
    ];
    print!("{}", table(&header, &rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_line_up() {
        let out = table(
            &["REPOSITORY", "TAG", "SIZE"],
            &[
                vec!["busybox".into(), "latest".into(), "1.2MB".into()],
                vec!["127.0.0.1:5000/ns/app".into(), "1".into(), "3kB".into()],
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        let col = |l: &str, word: &str| l.find(word).unwrap_or(usize::MAX);
        assert_eq!(col(lines[0], "TAG"), col(lines[1], "latest"));
        assert_eq!(col(lines[0], "TAG"), col(lines[2], "1 "));
        assert_eq!(col(lines[0], "SIZE"), col(lines[2], "3kB"));
    }
}
