//! What a container goes through, the steps the commands share. A run, top-down:
//! 1. [`request`]: the flags of `berth run` ([`request::RunRequest`]), validated into a
//!    [`request::RunSpec`], combined with the image's defaults into the stored configuration;
//! 2. [`create`]: validate every flag, resolve the image (building `busybox` on first use),
//!    pick the id, check the cgroup controllers, load the networks and check they can honour
//!    `-p`/`--ip`/`--mac-address`; then, under the store lock, check the name and the host
//!    ports and write the record (`created`, supervised by the calling process). Everything
//!    that can refuse bad input happens before this point, so it leaves nothing behind.
//! 3. [`start`]: the overlay directories, the named netns (with `lo` up), the CNI attachments
//!    (eth0, eth1, … in `--network` order; written to the record before ADD), the name files
//!    (`/etc/hosts` of the peers updated too), the cgroup, then clone3 of the init, which
//!    joins the cgroup, receives its configuration and execs the command; the record says
//!    `running` with PID 1's pid and start time.
//! 4. supervision, by a command: in the foreground by `berth run` itself
//!    ([`crate::commands::run`]: signals forwarded, output shown and logged, pty relayed), or
//!    by the monitor of a detached container ([`crate::commands::monitor`]: output logged).
//! 5. [`release`]: record the exit, then release what the container holds (cgroup, CNI DEL,
//!    peers' hosts files, netns: also after a failed start), or with `--rm` remove the
//!    container altogether (`dispose`, see [`crate::commands::rm`]); `settle` does it for a
//!    supervisor that died.
//!
//! [`signal`]: signals to PID 1 and the waits `stop`, `rm -f` and `exec` build on.

pub mod create;
pub mod release;
pub mod request;
pub mod signal;
pub mod start;
