//! Dropping privileges once the pipeline is built, as tcpdump does with `-Z`.
//!
//! spf needs root for one thing: loading and attaching the BPF probe. Everything
//! else it does for the rest of a run is read what the probe hands over, decode it
//! and write the results, and the decoding runs on bytes any local process
//! chooses. So once the probe is attached, the outputs are open and the plugins
//! are loaded, spf gives up what it no longer needs, before it starts a thread or
//! reads a byte of input:
//!
//! 1. (started as root) the capability bounding set and the ambient set are
//!    emptied (this needs CAP_SETPCAP, so it comes while spf still has it);
//! 2. (started as root) the supplementary groups become the user's, then the
//!    group, then the user (real, effective and saved IDs: no way back);
//! 3. every capability left is dropped, and the process is marked not dumpable
//!    (other processes of that user cannot ptrace it or read its memory);
//! 4. `no_new_privs`: no exec can give any of it back;
//! 5. a seccomp filter allows only the system calls a running pipeline makes;
//!    anything else fails with EPERM, which the code that made the call reports
//!    as an error, rather than killing the capture.
//!
//! `--user root` keeps root and its capabilities (steps 1 to 3 are skipped); a spf
//! started as another user skips the switch. Steps 4 and 5 always apply.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use spf_pipeline::account::{self, Account};

/// Who spf runs as once the pipeline is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Started as root: become this user.
    Switch(Account),
    /// Started as root and asked to stay root.
    KeepRoot,
    /// Not started as root: there is no one else to become.
    Unprivileged,
}

impl Identity {
    /// The identity for `user`, looked up now (before anything is built), so that
    /// a user that does not exist is reported as the config error it is.
    pub fn resolve(user: &str, explicit: bool) -> Result<Identity, String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if !root && !explicit {
            return Ok(Identity::Unprivileged);
        }
        let account = match account::lookup(user)? {
            Some(a) => a,
            None if explicit => {
                return Err(format!(
                    "no user `{user}` on this system; name an existing user (or `root` to keep root)"
                ));
            }
            None => {
                return Err(format!(
                    "spf drops root to the user `{user}` once the probe is attached, and there is no such user here; name another with --user or [run] user (or `root` to keep root)"
                ));
            }
        };
        Ok(if !root {
            Identity::Unprivileged
        } else if account.is_root() {
            Identity::KeepRoot
        } else {
            Identity::Switch(account)
        })
    }
}

/// Drops everything as the module docs say. `extra_syscalls` are the components'
/// own needs beyond [`ALLOWED`]. Must run while spf has one thread: capabilities
/// and the bounding set belong to each thread.
pub fn drop_privileges(identity: &Identity, extra_syscalls: &[libc::c_long]) -> Result<()> {
    // Built first: nothing after the switch should depend on a lookup or an
    // allocation that could fail.
    let filter = seccomp_filter(extra_syscalls)?;
    match identity {
        Identity::Switch(account) => {
            single_thread()?;
            empty_bounding_and_ambient_sets()?;
            switch_user(account)?;
            drop_capabilities()?;
            not_dumpable()?;
        }
        Identity::Unprivileged => {
            single_thread()?;
            // A file capability (setcap cap_bpf,cap_perfmon+ep) gave this process
            // what loading the probe needed; it has loaded it.
            empty_bounding_and_ambient_sets()?;
            drop_capabilities()?;
        }
        Identity::KeepRoot => {}
    }
    // SAFETY: prctl with these arguments only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setting no_new_privs");
    }
    // TSYNC: the filter covers every thread, those that come later included.
    seccompiler::apply_filter_all_threads(&filter)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("installing the seccomp filter")?;
    Ok(())
}

/// Capabilities and the bounding set are per thread; setting them from one
/// thread leaves any other as it was.
fn single_thread() -> Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .context("/proc/self/status has no thread count")?;
    if threads != 1 {
        bail!(
            "cannot drop privileges: {threads} threads are running (a plugin's init may have started one); \
             run with --user root to keep root"
        );
    }
    Ok(())
}

/// Highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// <linux/capability.h>: the capability that allows changing the bounding set.
const CAP_SETPCAP: u32 = 8;

fn empty_bounding_and_ambient_sets() -> Result<()> {
    // SAFETY: these prctl calls only read or shrink this thread's capability sets.
    unsafe {
        let can = libc::prctl(libc::PR_CAPBSET_READ, CAP_SETPCAP, 0, 0, 0) == 1
            && has_effective(CAP_SETPCAP);
        if can {
            for cap in 0..=last_cap() {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error()).with_context(|| {
                        format!("dropping capability {cap} from the bounding set")
                    });
                }
            }
        }
        // EINVAL: a kernel without ambient capabilities, which then has none.
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) != 0
            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
        {
            return Err(std::io::Error::last_os_error())
                .context("clearing the ambient capabilities");
        }
    }
    Ok(())
}

fn switch_user(a: &Account) -> Result<()> {
    // glibc applies each of these to every thread of the process.
    // SAFETY: plain credential calls with valid arguments.
    unsafe {
        if libc::setgroups(a.groups.len(), a.groups.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setting the groups of user `{}`", a.name));
        }
        if libc::setresgid(a.gid, a.gid, a.gid) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("switching to group {}", a.gid));
        }
        if libc::setresuid(a.uid, a.uid, a.uid) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("switching to user `{}` (uid {})", a.name, a.uid));
        }
        let (mut r, mut e, mut s) = (0, 0, 0);
        libc::getresuid(&mut r, &mut e, &mut s);
        let (mut gr, mut ge, mut gs) = (0, 0, 0);
        libc::getresgid(&mut gr, &mut ge, &mut gs);
        if [r, e, s] != [a.uid; 3] || [gr, ge, gs] != [a.gid; 3] {
            bail!("the switch to user `{}` did not take", a.name);
        }
        // With every ID changed, root must be out of reach.
        if a.uid != 0 && libc::setuid(0) == 0 {
            bail!(
                "still able to become root after switching to user `{}`",
                a.name
            );
        }
    }
    Ok(())
}

/// `struct __user_cap_header_struct` and `__user_cap_data_struct` (two of them for
/// version 3: capabilities 0–31 and 32–63).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

fn capget() -> Result<[CapData; 2]> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data have the layout the kernel expects for version 3.
    if unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading capabilities");
    }
    Ok(data)
}

fn has_effective(cap: u32) -> bool {
    capget().is_ok_and(|d| d[(cap / 32) as usize].effective & (1 << (cap % 32)) != 0)
}

fn drop_capabilities() -> Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: header and data have the layout the kernel expects for version 3.
    if unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("dropping capabilities");
    }
    let left = capget()?;
    if left
        .iter()
        .any(|d| d.effective | d.permitted | d.inheritable != 0)
    {
        bail!("capabilities are left after dropping them all");
    }
    Ok(())
}

fn not_dumpable() -> Result<()> {
    // SAFETY: prctl with these arguments only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("marking the process not dumpable");
    }
    Ok(())
}

/// The system calls a running pipeline makes, found by tracing real runs from
/// the moment the filter is installed (the live probe reading its ring buffer,
/// replays from a file and from a FIFO, the ndjson file sink, stdout in both
/// formats, plugin decoders and a plugin sink writing its file, Ctrl-C), plus
/// the few the same code needs elsewhere (noted). No new sockets, no exec, no
/// BPF, no ptrace, no credential or capability changes, no mounts.
const ALLOWED: &[libc::c_long] = &[
    // Memory (mremap: growing a large buffer in place).
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    // Threads: starting them (clone where clone3 is missing), waiting, exit.
    libc::SYS_clone3,
    libc::SYS_clone,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_gettid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // The probe's reader asks for short scheduler slices.
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_setattr,
    libc::SYS_getpriority,
    // Descriptors: the outputs and input opened before the drop; files opened
    // after it (the probe reads /proc/net/unix to find datagram peers, a plugin
    // sink writes its own file and renames it into place).
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_write,
    // The capture sink writes big payloads from where they are.
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_openat,
    libc::SYS_statx,
    libc::SYS_fcntl,
    libc::SYS_fdatasync,
    libc::SYS_renameat2,
    // The allocator looks for NUMA nodes in /sys.
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    // The runtime's event loop and wakeups.
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    // Time (the vDSO answers clock_gettime, unless it is not there), sleeping.
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    // Signals: Ctrl-C handling, thread stacks, and abort() where it is called;
    // restart_syscall resumes a sleep or wait a signal interrupted (refused, a
    // sleep that a child's exit interrupted would fail).
    libc::SYS_restart_syscall,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    // Hash seeds.
    libc::SYS_getrandom,
    // Asking who one is changes nothing, and a library (or plugin) that asks
    // should hear the truth, not -1 from EPERM taken for an ID.
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
];

/// The same operations under the older numbers that only x86-64 has, which its C
/// library still uses (rename, access, epoll_wait).
#[cfg(target_arch = "x86_64")]
const ALLOWED_X86_64: &[libc::c_long] = &[
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_access,
    libc::SYS_epoll_wait,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_X86_64: &[libc::c_long] = &[];

/// `ioctl` only for `isatty` (TCGETS), `prctl` only for thread names,
/// `socketpair` only for Unix sockets, `sendto` and `recvfrom` only without an
/// address (on a connected socket: the runtime's signal wakeups).
fn restricted_rules() -> Result<Vec<(libc::c_long, Vec<SeccompRule>)>> {
    let eq = |arg: u8, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let no_address = |arg: u8| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, 0)
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let rule = |c: SeccompCondition| SeccompRule::new(vec![c]).map_err(|e| anyhow::anyhow!("{e}"));
    Ok(vec![
        (libc::SYS_ioctl, vec![rule(eq(1, libc::TCGETS)?)?]),
        (
            libc::SYS_prctl,
            vec![
                rule(eq(0, libc::PR_SET_NAME as u64)?)?,
                rule(eq(0, libc::PR_GET_NAME as u64)?)?,
            ],
        ),
        (
            libc::SYS_socketpair,
            vec![rule(eq(0, libc::AF_UNIX as u64)?)?],
        ),
        (libc::SYS_sendto, vec![rule(no_address(4)?)?]),
        (libc::SYS_recvfrom, vec![rule(no_address(4)?)?]),
    ])
}

/// The filter: [`ALLOWED`], the restricted calls, and `extra` (unrestricted);
/// everything else returns EPERM.
fn seccomp_filter(extra: &[libc::c_long]) -> Result<BpfProgram> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &nr in ALLOWED.iter().chain(ALLOWED_X86_64).chain(extra) {
        rules.insert(nr, Vec::new());
    }
    for (nr, r) in restricted_rules()? {
        // A component that asks for one of these outright gets it outright.
        rules.entry(nr).or_insert(r);
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("no seccomp support for this architecture")?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
    .context("building the seccomp filter")?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| anyhow::anyhow!("{e}"))
        .context("building the seccomp filter")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_builds() {
        let prog = seccomp_filter(&[libc::SYS_connect]).unwrap();
        assert!(!prog.is_empty());
    }

    #[test]
    fn users_resolve() {
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let e = Identity::resolve("no-such-user-spf-test", true).unwrap_err();
        assert!(e.contains("no user `no-such-user-spf-test`"), "{e}");
        let keep = Identity::resolve("root", true).unwrap();
        if root {
            assert_eq!(keep, Identity::KeepRoot);
            assert!(matches!(
                Identity::resolve("nobody", false).unwrap(),
                Identity::Switch(Account { uid, .. }) if uid != 0
            ));
        } else {
            assert_eq!(keep, Identity::Unprivileged);
        }
    }
}
