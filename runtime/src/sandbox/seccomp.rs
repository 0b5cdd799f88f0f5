//! The default seccomp policy: a deny list in the spirit of docker's profile.
//!
//! Docker's profile is an allow list of ~350 syscalls plus capability-conditional extras; its
//! effect for a default container is "everything but the dangerous few". A deny list of those
//! few, returning `EPERM`, has the same effect here, keeps new syscalls working, and is short
//! enough to read. Like docker's, parts of it lift when the matching capability is granted
//! (`--cap-add SYS_ADMIN` allows mount, unshare, …).
//!
//! The filters are compiled in the init before setup (allocation is fine there) and installed
//! as the very last step before `execve`, after `no_new_privs` and the capability drop, so the
//! filter never has to allow the runtime's own setup syscalls.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::sandbox::caps::{CapSet, Capability};

/// Errors of the `seccomp` module.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: unsupported architecture {arch}")]
    Arch {
        arch: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("build the seccomp condition for syscall {syscall}")]
    Condition {
        syscall: i64,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("compile the {which} seccomp filter")]
    Compile {
        which: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("install the {which} seccomp filter")]
    Install {
        which: &'static str,
        #[source]
        source: seccompiler::Error,
    },
}

/// What the filter must take into account.
#[derive(Debug, Clone, Copy)]
pub struct SeccompPolicy {
    /// The container's capabilities: granting one lifts the denials it guards.
    pub caps: CapSet,
    /// No device cgroup restricts device access (cgroup v2 without an eBPF device program, in
    /// phase 1): then creating block and character device nodes is refused here, since
    /// CAP_MKNOD plus an unrestricted device node would reach the host's disks.
    pub deny_device_nodes: bool,
}

/// Compiled filters, installed in order by [`install`].
#[derive(Debug)]
pub struct CompiledFilters(Vec<(&'static str, BpfProgram)>);

/// Syscalls denied unless the container holds `cap` (`None`: always denied).
fn denials() -> Vec<(Option<Capability>, i64)> {
    use libc::*;
    let sys_admin = Some(Capability::SYS_ADMIN);
    let module = Some(Capability::SYS_MODULE);
    let boot = Some(Capability::SYS_BOOT);
    let time = Some(Capability::SYS_TIME);
    let pacct = Some(Capability::SYS_PACCT);
    let tty_config = Some(Capability::SYS_TTY_CONFIG);
    let syslog = Some(Capability::SYSLOG);
    let mut list = vec![
        // Filesystems: mounting is how most container escapes start.
        (sys_admin, SYS_mount),
        (sys_admin, SYS_umount2),
        (sys_admin, SYS_pivot_root),
        (sys_admin, SYS_move_mount),
        (sys_admin, SYS_open_tree),
        (sys_admin, SYS_fsopen),
        (sys_admin, SYS_fsconfig),
        (sys_admin, SYS_fsmount),
        (sys_admin, SYS_fspick),
        (sys_admin, SYS_mount_setattr),
        (sys_admin, SYS_swapon),
        (sys_admin, SYS_swapoff),
        (sys_admin, SYS_quotactl),
        (sys_admin, SYS_quotactl_fd),
        (sys_admin, SYS_name_to_handle_at),
        (sys_admin, SYS_open_by_handle_at),
        (sys_admin, SYS_fanotify_init),
        (sys_admin, SYS_lookup_dcookie),
        // Namespaces (clone's namespace flags are handled separately).
        (sys_admin, SYS_unshare),
        (sys_admin, SYS_setns),
        // Kernel-wide, not namespaced.
        (sys_admin, SYS_bpf),
        (sys_admin, SYS_perf_event_open),
        (module, SYS_init_module),
        (module, SYS_finit_module),
        (module, SYS_delete_module),
        (boot, SYS_reboot),
        (boot, SYS_kexec_load),
        (boot, SYS_kexec_file_load),
        (time, SYS_settimeofday),
        (time, SYS_clock_settime),
        (time, SYS_clock_adjtime),
        (time, SYS_adjtimex),
        (pacct, SYS_acct),
        (tty_config, SYS_vhangup),
        (syslog, SYS_syslog),
        // Keyrings are not namespaced; io_uring bypasses syscall filtering altogether.
        (None, SYS_keyctl),
        (None, SYS_add_key),
        (None, SYS_request_key),
        (None, SYS_userfaultfd),
        (None, SYS_io_uring_setup),
        (None, SYS_io_uring_enter),
        (None, SYS_io_uring_register),
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([
        (Some(Capability::SYS_RAWIO), SYS_iopl),
        (Some(Capability::SYS_RAWIO), SYS_ioperm),
        (None, SYS_uselib),
        (None, SYS__sysctl),
        (None, SYS_nfsservctl),
        (None, SYS_sysfs),
        (None, SYS_ustat),
    ]);
    list
}

/// The namespace flags refused in `clone(2)` without CAP_SYS_ADMIN (as docker's profile).
const CLONE_NS_FLAGS: [i32; 8] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
    0x80, // CLONE_NEWTIME
];

fn masked_eq(syscall: i64, arg: u8, mask: u64, value: u64) -> Result<SeccompRule, SeccompError> {
    let condition = SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(mask),
        value,
    )
    .map_err(|source| SeccompError::Condition { syscall, source })?;
    SeccompRule::new(vec![condition]).map_err(|source| SeccompError::Condition { syscall, source })
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    let arch = std::env::consts::ARCH;
    TargetArch::try_from(arch).map_err(|source| SeccompError::Arch { arch, source })
}

fn compile(
    which: &'static str,
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    on_match: SeccompAction,
    arch: TargetArch,
) -> Result<(&'static str, BpfProgram), SeccompError> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, on_match, arch)
        .map_err(|source| SeccompError::Compile { which, source })?;
    let program =
        BpfProgram::try_from(filter).map_err(|source| SeccompError::Compile { which, source })?;
    Ok((which, program))
}

/// Compiles the filters for `policy`.
pub fn compile_filters(policy: SeccompPolicy) -> Result<CompiledFilters, SeccompError> {
    let arch = target_arch()?;
    let mut deny: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (cap, syscall) in denials() {
        if cap.is_none_or(|cap| !policy.caps.contains(cap)) {
            // An empty rule list matches the syscall unconditionally.
            deny.insert(syscall, Vec::new());
        }
    }
    let admin = policy.caps.contains(Capability::SYS_ADMIN);
    if !admin {
        // clone(flags, …): flags is argument 0 on x86_64 and aarch64. Rules of one syscall
        // are OR-ed: any namespace bit set matches.
        let rules = CLONE_NS_FLAGS
            .iter()
            .map(|&flag| {
                let flag = u64::from(flag.unsigned_abs());
                masked_eq(libc::SYS_clone, 0, flag, flag)
            })
            .collect::<Result<Vec<_>, _>>()?;
        deny.insert(libc::SYS_clone, rules);
    }
    if policy.deny_device_nodes {
        let ifmt = u64::from(libc::S_IFMT);
        let kinds = [u64::from(libc::S_IFCHR), u64::from(libc::S_IFBLK)];
        // mknodat(dirfd, path, mode, dev): mode is argument 2.
        let rules = kinds
            .iter()
            .map(|&kind| masked_eq(libc::SYS_mknodat, 2, ifmt, kind))
            .collect::<Result<Vec<_>, _>>()?;
        deny.insert(libc::SYS_mknodat, rules);
        #[cfg(target_arch = "x86_64")]
        {
            let rules = kinds
                .iter()
                .map(|&kind| masked_eq(libc::SYS_mknod, 1, ifmt, kind))
                .collect::<Result<Vec<_>, _>>()?;
            deny.insert(libc::SYS_mknod, rules);
        }
    }

    let mut filters = vec![compile(
        "deny-list",
        deny,
        SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        arch,
    )?];
    if !admin {
        // clone3 passes its flags in memory a BPF filter cannot read. ENOSYS (not EPERM) makes
        // libc fall back to clone(2), whose flags the filter above checks. Docker does the same.
        let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
        filters.push(compile(
            "clone3",
            clone3,
            SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
            arch,
        )?);
    }
    #[cfg(target_arch = "x86_64")]
    filters.push(("x32", x32_guard()));
    Ok(CompiledFilters(filters))
}

/// On x86_64, x32-ABI syscalls carry the architecture value of x86_64 and their number plus
/// `__X32_SYSCALL_BIT`, so they would slip past a deny list keyed on native numbers. This
/// hand-written program refuses every number with that bit (libseccomp does the same).
#[cfg(target_arch = "x86_64")]
fn x32_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JGE_K: u16 = 0x35;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        // Load seccomp_data.nr (offset 0).
        ins(BPF_LD_W_ABS, 0, 0, 0),
        ins(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        ins(
            BPF_RET_K,
            0,
            0,
            SECCOMP_RET_ERRNO | libc::EPERM.unsigned_abs(),
        ),
        ins(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
}

/// Installs the filters on the calling thread. Requires `no_new_privs` (set by the caller)
/// since the process will not hold CAP_SYS_ADMIN. After this, only `execve` follows.
pub fn install(filters: &CompiledFilters) -> Result<(), SeccompError> {
    for (which, program) in &filters.0 {
        seccompiler::apply_filter(program)
            .map_err(|source| SeccompError::Install { which, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_compiles() {
        let filters = compile_filters(SeccompPolicy {
            caps: CapSet::docker_default(),
            deny_device_nodes: true,
        })
        .unwrap();
        let names: Vec<_> = filters.0.iter().map(|(n, _)| *n).collect();
        assert_eq!(names[..2], ["deny-list", "clone3"]);
    }

    #[test]
    fn sys_admin_lifts_mount_denials() {
        let strict = denials()
            .into_iter()
            .filter(|(cap, _)| cap.is_none_or(|c| !CapSet::docker_default().contains(c)))
            .count();
        let with_admin: CapSet = CapSet::docker_default()
            .iter()
            .chain([Capability::SYS_ADMIN])
            .collect();
        let lifted = denials()
            .into_iter()
            .filter(|(cap, _)| cap.is_none_or(|c| !with_admin.contains(c)))
            .count();
        assert!(lifted < strict);
        let filters = compile_filters(SeccompPolicy {
            caps: with_admin,
            deny_device_nodes: false,
        })
        .unwrap();
        assert!(filters.0.iter().all(|(n, _)| *n != "clone3"));
    }
}
