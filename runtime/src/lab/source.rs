//! Where a lab verb finds its topology: `-t FILE` (parsed as given) or `--name LAB` (the
//! copy kept with the deployed lab).

use std::path::{Path, PathBuf};

use berth_topology::{LoadError, Topology, Warning};

use crate::lab::state::{self, LabState, LabStateError};

/// Errors of the `source` module.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Already one line naming the file, line and column of each error.
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    State(#[from] LabStateError),
    #[error("give the lab's topology file (-t FILE) or its name (--name LAB)")]
    Neither,
    #[error("-t {file} is lab {in_file}, not {name}")]
    NameMismatch {
        file: PathBuf,
        in_file: String,
        name: String,
    },
}

/// The `-t FILE` / `--name LAB` pair every lab verb takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SourceArgs {
    /// The topology file (containerlab's format).
    #[arg(short = 't', long = "topo", value_name = "FILE")]
    pub topology: Option<PathBuf>,
    /// The lab's name (for a deployed lab: its topology was kept).
    #[arg(long, value_name = "LAB")]
    pub name: Option<String>,
}

/// A topology and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub topology: Topology,
    pub warnings: Vec<Warning>,
    /// The file as given (absolute), `None` for the kept copy.
    pub file: Option<PathBuf>,
}

impl Loaded {
    /// The directory relative binds are taken from.
    pub fn dir(&self) -> PathBuf {
        self.file
            .as_deref()
            .and_then(Path::parent)
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
    }
}

impl SourceArgs {
    /// Parses the file, or the kept copy of lab `--name`.
    pub fn load(&self, root: &Path) -> Result<Loaded, SourceError> {
        match (&self.topology, &self.name) {
            (Some(file), name) => {
                let parsed = berth_topology::parse_file(file)?;
                if let Some(name) = name {
                    if parsed.topology.name.as_str() != name {
                        return Err(SourceError::NameMismatch {
                            file: file.clone(),
                            in_file: parsed.topology.name.to_string(),
                            name: name.clone(),
                        });
                    }
                }
                Ok(Loaded {
                    topology: parsed.topology,
                    warnings: parsed.warnings,
                    file: Some(std::path::absolute(file).unwrap_or_else(|_| file.clone())),
                })
            }
            (None, Some(name)) => {
                // The state first: it says "not deployed" better than a missing copy.
                let state = LabState::load(root, name)?;
                let parsed = berth_topology::parse_file(&state::topology_path(root, name))?;
                Ok(Loaded {
                    topology: parsed.topology,
                    warnings: Vec::new(),
                    file: state.file,
                })
            }
            (None, None) => Err(SourceError::Neither),
        }
    }

    /// The lab's name without parsing more than needed (`destroy` of a lab whose file no
    /// longer parses still works with `--name`).
    pub fn lab_name(&self, root: &Path) -> Result<String, SourceError> {
        match &self.name {
            Some(name) => Ok(name.clone()),
            None => Ok(self.load(root)?.topology.name.to_string()),
        }
    }
}
