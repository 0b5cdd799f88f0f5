//! The state: where everything lives, the lock, container records (their schema, the store
//! that writes them) and logs.
//!
//! ```text
//! <root>/                      persistent (--root, default /var/lib/berth)
//!   berth.lock                 flock: held while records are created, changed or removed
//!   images/<name>/rootfs       image root filesystems (never written after creation)
//!   images/<name>/image.json
//!   containers/<id>/container.json   the record: config + state
//!   containers/<id>/upper,work       the overlay's writable layer (gone with the container)
//!   containers/<id>/merged           the overlay mount point (mounted only in the
//!                                    container's own mount namespace)
//!   containers/<id>/hosts, hostname, resolv.conf   bind-mounted on the container's /etc
//!   containers/<id>/ctr.log          stdout/stderr of every run of the container (CRI format)
//!   containers/<id>/stdin            FIFO: stdin of a `-i` container under a monitor
//!   networks/<name>.conflist   network definitions (the default `berth` is generated)
//!   cni/cache                  the CNI result cache (libcni layout)
//!   cni/networks/<name>/       host-local IPAM state of each network
//! <runroot>/                   runtime (--runroot, default /run/berth)
//!   netns/<id>                 the container's network namespace, bind-mounted
//! ```
//!
//! **A record recovery can always see.** A container exists exactly while its directory
//! `containers/<id>` does, and that directory never exists without its record, whatever
//! instruction a `berth` process is killed at:
//! - creation writes the record in a staging directory `containers/.new-<id>` and renames it
//!   into place ([`Store::create_all`]): the directory appears with its record, atomically;
//! - the record is rewritten through a temporary and a rename (`berth_fs::write_atomic`:
//!   `.container.json.<pid>.tmp`), and whoever next writes it sweeps a killed writer's
//!   temporaries;
//! - removal first marks the record [`Status::Removing`] and releases what the container holds
//!   on the host (see `crate::commands::rm`), then renames the directory to `containers/.rm-<id>`
//!   ([`Store::remove`]) and only then deletes it: up to the rename the record is there for
//!   `rm -f` and `system prune` to finish the job, after it nothing of the container is left
//!   but files;
//! - staging and doomed directories that a killed `berth` left are deleted by the next
//!   command that creates or removes containers ([`Store::sweep`]), under the store lock;
//! - a container directory without a readable record (left by an older `berth`, or damaged)
//!   is a *remnant* ([`Store::remnants`]): `ps -a` lists it as removing, `rm -f` and
//!   `system prune` release what can be found of it by its id and delete it.
//!
//! **Who cleans up.** Every record names its *supervisor*: the process that will record the
//! container's exit and release what it holds (the `berth run` in the foreground, the
//! monitor of a detached container). Attachments are written to the record *before* CNI ADD
//! runs and removed only after DEL succeeded, so when a supervisor dies (SIGKILL, a crash),
//! `rm -f` and `system prune` know exactly what to undo.

pub mod clock;
pub mod log;
pub mod schema;
mod store;

pub use schema::{
    AttachmentState, ContainerConfig, ContainerRecord, ContainerState, NetworkMode, Status,
};
pub use store::{MAX_NETWORK_HOPS, Scan, StateError, Store, StoreLock};
