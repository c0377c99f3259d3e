//! What an isolated plugin's process gives up before the plugin's code runs:
//! root (it becomes an unprivileged user), every capability, the right to gain
//! privileges again (`no_new_privs`), core dumps, and, once the plugin is
//! loaded, every system call but the few a plugin host needs.

use std::collections::BTreeMap;
use std::ffi::CString;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Becomes `user` (when root), with no capabilities, no way back, no core dumps.
pub fn drop_privileges(user: &str) -> Result<(), String> {
    // SAFETY: plain credential and prctl calls with valid arguments; the process
    // has one thread here, so they apply to all of it.
    unsafe {
        let core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &core);
        if libc::geteuid() == 0 {
            let name = CString::new(user).map_err(|_| "a user name holds no NUL".to_string())?;
            let pw = libc::getpwnam(name.as_ptr());
            if pw.is_null() {
                return Err(format!("no user `{user}` to run the isolated plugin as"));
            }
            let (uid, gid) = ((*pw).pw_uid, (*pw).pw_gid);
            if uid == 0 {
                return Err(format!("user `{user}` is root"));
            }
            // Emptied while root can still do it: no exec could bring back any
            // of them anyway (no_new_privs), but nothing should be left.
            let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .unwrap_or(63);
            for cap in 0..=last {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            if libc::setgroups(1, &gid) != 0 {
                return Err(os_error("setting the groups"));
            }
            if libc::setresgid(gid, gid, gid) != 0 {
                return Err(os_error("switching group"));
            }
            // Changing every uid away from 0 clears the permitted and effective
            // capabilities.
            if libc::setresuid(uid, uid, uid) != 0 {
                return Err(os_error("switching user"));
            }
            if libc::setuid(0) == 0 {
                return Err("still able to become root".into());
            }
            // The switch made the process non-dumpable, which also closes its
            // own /proc/self/fd to it: the library is loaded through there.
            // `seal` makes it non-dumpable again before any input is read.
            libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(os_error("setting no_new_privs"));
        }
        // Credentials changed: the death signal was reset. spf going away must
        // take this process with it even while the plugin loops.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    Ok(())
}

/// System calls a plugin host makes once the plugin is loaded and running:
/// memory, its two pipes (restricted below), time, random numbers for hash
/// seeds, ending itself (abort included). No files, no sockets, no processes,
/// no threads.
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_getrandom,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_sigaltstack,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

fn seccomp_err(e: impl std::fmt::Display) -> String {
    format!("building the seccomp filter: {e}")
}

/// The filter: [`ALLOWED`], `read` of fd `input`, `write` to fd `output` and
/// stderr, `tgkill` of this process only (abort); everything else fails with
/// EPERM.
pub fn filter(input: i32, output: i32) -> Result<BpfProgram, String> {
    let fd = |v: i32| {
        SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v as u64)
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(seccomp_err)
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &nr in ALLOWED {
        rules.insert(nr, Vec::new());
    }
    rules.insert(libc::SYS_read, vec![fd(input)?]);
    rules.insert(libc::SYS_write, vec![fd(output)?, fd(2)?]);
    // SAFETY: getpid has no preconditions.
    rules.insert(libc::SYS_tgkill, vec![fd(unsafe { libc::getpid() })?]);
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(seccomp_err)?;
    SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(seccomp_err)?
    .try_into()
    .map_err(|e: seccompiler::BackendError| seccomp_err(e))
}

/// Installs `prog` on this (single-threaded) process, after making it
/// non-dumpable: no other process of its user can read its memory (the
/// traffic it will decode) or trace it.
pub fn apply(prog: &BpfProgram) -> Result<(), String> {
    // SAFETY: prctl with these arguments only sets a flag on this process.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(os_error("making the process non-dumpable"));
    }
    seccompiler::apply_filter(prog).map_err(|e| format!("installing the seccomp filter: {e}"))
}
