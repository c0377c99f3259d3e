//! Loading and attaching the BPF program, with errors that say what to do.

use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::{Mutex, Once};

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore as _, OpenObject, PrintLevel};
use spf_pipeline::config::BuildError;

use crate::config::UnixConfig;
use crate::hooks::{Hook, HookChoice};
use crate::skel::{SpfSkel, SpfSkelBuilder};

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// The last lines libbpf printed: the verifier's log ends up here.
static LOG: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
const LOG_LINES: usize = 400;

fn libbpf_print(_level: PrintLevel, msg: String) {
    let mut log = LOG.lock().unwrap_or_else(|p| p.into_inner());
    for line in msg.lines() {
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line.to_string());
    }
}

fn take_log() -> Vec<String> {
    let mut log = LOG.lock().unwrap_or_else(|p| p.into_inner());
    log.drain(..).collect()
}

/// Why BPF cannot be used here, if it cannot: not root or missing capabilities,
/// or no kernel BTF. `None` says nothing stands in the way that can be seen
/// without trying.
pub fn bpf_unavailable_reason() -> Option<String> {
    if !Path::new(BTF_PATH).exists() {
        return Some(format!(
            "the kernel has no BTF ({BTF_PATH} is missing); spf needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        ));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let caps = effective_caps();
        const CAP_SYS_ADMIN: u32 = 21;
        const CAP_PERFMON: u32 = 38;
        const CAP_BPF: u32 = 39;
        let has = |c: u32| caps & (1u64 << c) != 0;
        if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
            return Some(
                "loading the BPF probe needs root: run spf with sudo, or give it CAP_BPF and CAP_PERFMON \
                 (setcap cap_bpf,cap_perfmon+ep spf)"
                    .to_string(),
            );
        }
    }
    None
}

fn effective_caps() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// The loaded and attached probe. Detaches when dropped.
pub(crate) struct Probe {
    pub(crate) skel: SpfSkel<'static>,
    /// Which hooks capture, and why.
    pub(crate) hook: HookChoice,
    /// `/proc/self/fdinfo/N` of each attached program, opened while loading:
    /// the kernel's count of skipped runs, read without `bpf()` and without
    /// privileges, so that it still works after spf has dropped them (the
    /// directory itself is out of reach then).
    fdinfo: Vec<std::fs::File>,
}

/// Applies `$f` to each kernel-function hook program of a skeleton's
/// `progs`/`links`, by name.
macro_rules! kernel_progs {
    ($f:ident) => {
        $f!(spf_k_stream_send);
        $f!(spf_k_stream_recv);
        $f!(spf_k_dgram_send);
        $f!(spf_k_dgram_recv);
        $f!(spf_k_seqpacket_send);
        $f!(spf_k_seqpacket_recv);
        $f!(spf_k_sendpage);
        $f!(spf_k_splice_read);
        $f!(spf_k_connect);
        $f!(spf_k_socketpair);
    };
}

/// Kernel functions only some kernels have, with the program on each: loaded
/// where the kernel has the function.
const OPTIONAL_FUNCTIONS: [&str; 2] = ["unix_stream_sendpage", "unix_stream_splice_read"];

impl Probe {
    pub(crate) fn load(cfg: &UnixConfig) -> Result<Probe, BuildError> {
        if let Some(reason) = bpf_unavailable_reason() {
            return Err(BuildError::new(reason));
        }
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            libbpf_rs::set_print(Some((PrintLevel::Info, libbpf_print)));
        });
        let probe = match cfg.hook {
            Hook::Syscall => Probe::load_with(cfg, false)?,
            Hook::Kernel => {
                if let Err(why) = crate::hooks::kernel_hooks_usable() {
                    return Err(BuildError::new(format!(
                        "hook \"kernel\": this kernel ({}) does not let spf use kernel hooks: {why}; \
                         hook \"auto\" uses the syscall exit hook here",
                        crate::features::kernel_release()
                    )));
                }
                Probe::load_with(cfg, true)?
            }
            Hook::Auto => match crate::hooks::kernel_hooks_usable() {
                Ok(()) => match Probe::load_with(cfg, true) {
                    Ok(p) => p,
                    // A kernel that attaches fexit programs but refuses
                    // these: the syscall hook still captures everything it
                    // did before kernel hooks existed.
                    Err(e) => Probe::load_with(cfg, false)
                        .map(|p| p.because(format!("the kernel hooks did not load: {e}")))?,
                },
                Err(why) => Probe::load_with(cfg, false)
                    .map(|p| p.because(format!("kernel hooks refused here: {why}")))?,
            },
        };
        // SPF_BPF_LOG is the probe's verbose mode: which hooks, and why.
        if std::env::var_os("SPF_BPF_LOG").is_some() {
            spf_pipeline::diag!("spf: hook: {}", probe.hook);
        }
        Ok(probe)
    }

    fn because(mut self, why: String) -> Probe {
        self.hook.why = why;
        self
    }

    /// Loads and attaches the probe with the kernel-function hooks
    /// (`kernel`) or the syscall exit hook.
    fn load_with(cfg: &UnixConfig, kernel: bool) -> Result<Probe, BuildError> {
        let _ = take_log();
        // The skeleton borrows this storage for its whole life; one small box
        // per probe loaded is the price of not being self-referential.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = SpfSkelBuilder::default()
            .open(storage)
            .map_err(|e| BuildError::new(format!("cannot open the BPF program: {e}")))?;

        let rodata = open.maps.rodata_data.as_deref_mut().ok_or_else(|| {
            BuildError::new("the BPF program has no settings section (build problem)")
        })?;
        rodata.spf_cfg = cfg.to_bpf();
        let ring = u32::try_from(cfg.ring_size)
            .map_err(|_| BuildError::new(format!("ring_size {} is too large", cfg.ring_size)))?;
        open.maps.spf_ring.set_max_entries(ring).map_err(|e| {
            BuildError::new(format!("cannot size the ring buffer to {ring} bytes: {e}"))
        })?;

        // One path or the other, never both: the kernel hooks make the
        // syscall hook, which every syscall on the machine pays for, needless.
        open.progs.spf_sys_exit.set_autoload(!kernel);
        macro_rules! autoload {
            ($p:ident) => {
                open.progs.$p.set_autoload(kernel);
            };
        }
        kernel_progs!(autoload);
        if kernel {
            let [sendpage, splice_read] = OPTIONAL_FUNCTIONS.map(crate::hooks::kernel_has_function);
            open.progs.spf_k_sendpage.set_autoload(sendpage);
            open.progs.spf_k_splice_read.set_autoload(splice_read);
        }
        open.progs.spf_empty_exit.set_autoload(false);
        // Following processes through forks costs every fork on the machine a
        // program run: only when asked.
        if cfg.follow.is_empty() {
            open.progs.spf_fork.set_autoload(false);
            open.progs.spf_exit.set_autoload(false);
        }
        let mut skel = open.load().map_err(|e| load_error(&e))?;
        if !cfg.pids.is_empty() {
            seed_pid_names(&skel, &cfg.pids);
        }
        for pid in &cfg.follow {
            skel.maps
                .spf_tracked
                .update(&pid.to_ne_bytes(), &[1u8], libbpf_rs::MapFlags::ANY)
                .map_err(|e| BuildError::new(format!("cannot follow pid {pid}: {e}")))?;
        }
        skel.attach().map_err(|e| {
            BuildError::new(if kernel {
                format!("cannot attach the kernel hooks (fexit on the AF_UNIX functions): {e}")
            } else {
                format!(
                    "cannot attach the probe to the syscall exit tracepoint (tp_btf/sys_exit): {e}; \
                     spf needs a kernel with BTF-enabled raw tracepoints and bpf_loop (Linux 5.17 or later)"
                )
            })
        })?;
        let _ = take_log();
        if !kernel && !cfg.include_self {
            teach_socket_files();
        }
        let fdinfo = capture_fds(&skel)
            .into_iter()
            .filter_map(|fd| std::fs::File::open(format!("/proc/self/fdinfo/{fd}")).ok())
            .collect();
        Ok(Probe {
            skel,
            hook: HookChoice {
                kernel,
                why: if kernel {
                    String::new()
                } else {
                    format!("hook = \"{}\"", Hook::Syscall.name())
                },
            },
            fdinfo,
        })
    }

    /// Events the kernel could not hand over, ever: ring buffer reservations
    /// that failed, plus runs of the program the kernel skipped. The kernel
    /// skips a run when the program is already running on that CPU (the
    /// tracepoint fired again before it returned); it cannot tell whether the
    /// skipped syscall moved socket data, so each skip counts as a possible
    /// loss rather than none.
    pub(crate) fn lost(&self) -> u64 {
        self.bss_word(|b| &b.spf_lost) + self.skipped_runs()
    }

    /// A word the programs keep in `.bss`, as they last wrote it.
    fn bss_word(&self, field: impl FnOnce(&crate::skel::types::bss) -> &u64) -> u64 {
        self.skel.maps.bss_data.as_deref().map_or(0, |bss| {
            // SAFETY: the programs write these words concurrently; a volatile
            // read of an aligned u64 sees either the old or the new value.
            unsafe { std::ptr::read_volatile(field(bss)) }
        })
    }

    /// Takes the capture hooks out of the skeleton into a switch (see
    /// [`AttachSwitch`]).
    pub(crate) fn attach_switch(&mut self) -> std::io::Result<AttachSwitch> {
        use std::os::fd::AsFd;
        // A second switch would attach the programs a second time: every
        // event twice.
        let mut links = Vec::new();
        let mut progs = Vec::new();
        let skel = &mut self.skel;
        if let Some(l) = skel.links.spf_sys_exit.take() {
            links.push(l);
            progs.push(skel.progs.spf_sys_exit.as_fd().try_clone_to_owned()?);
        }
        macro_rules! take {
            ($p:ident) => {
                if let Some(l) = skel.links.$p.take() {
                    links.push(l);
                    progs.push(skel.progs.$p.as_fd().try_clone_to_owned()?);
                }
            };
        }
        kernel_progs!(take);
        if links.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the probe's hooks were handed out already",
            ));
        }
        // The switch holds links of its own making: one kind of link to
        // drop and make again.
        drop(links);
        let mut switch = AttachSwitch {
            progs,
            links: Vec::new(),
        };
        switch.on()?;
        Ok(switch)
    }

    fn skipped_runs(&self) -> u64 {
        use std::os::unix::fs::FileExt as _;
        let mut total = 0;
        for f in &self.fdinfo {
            // Reading from offset 0 has the kernel write the file anew. It is
            // a few hundred bytes.
            let mut buf = [0u8; 1024];
            let n = f.read_at(&mut buf, 0).unwrap_or(0);
            total += recursion_misses(&buf[..n]);
        }
        total
    }
}

/// One byte through a socket pair of spf's own, read back: the syscall exit
/// hook learns from it what every socket file's operations are (see
/// `spf_sock_fops` in spf.bpf.c), and from nothing else. spf's own traffic is
/// not captured (the probe skips its process after the lookup), so the byte
/// appears nowhere. Without it (a failure here) the probe tells sockets by
/// their inodes, a little slower.
fn teach_socket_files() {
    use std::io::{Read, Write};
    if let Ok((mut a, mut b)) = std::os::unix::net::UnixStream::pair() {
        let mut byte = [0u8];
        if a.write_all(&byte).is_ok() {
            let _ = b.read(&mut byte);
        }
    }
}

/// The descriptors of the capture programs attached in `skel`: the syscall
/// hook, or the kernel hooks.
fn capture_fds(skel: &SpfSkel<'_>) -> Vec<i32> {
    use std::os::fd::{AsFd, AsRawFd};
    let mut fds = Vec::new();
    if skel.links.spf_sys_exit.is_some() {
        fds.push(skel.progs.spf_sys_exit.as_fd().as_raw_fd());
    }
    macro_rules! fd {
        ($p:ident) => {
            if skel.links.$p.is_some() {
                fds.push(skel.progs.$p.as_fd().as_raw_fd());
            }
        };
    }
    kernel_progs!(fd);
    fds
}

/// The `recursion_misses` count of a BPF program's fdinfo text (0 when the
/// kernel does not report it).
fn recursion_misses(fdinfo: &[u8]) -> u64 {
    std::str::from_utf8(fdinfo)
        .unwrap_or("")
        .lines()
        .find_map(|l| l.strip_prefix("recursion_misses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Detaches the probe's hooks and attaches them again while the program stays
/// loaded. Benchmarks use it to measure with and without the probe in quick
/// alternation: a machine's speed drifts over seconds, and loading the program
/// anew for every switch (the verifier alone takes a while) would make each
/// pair of measurements seconds apart.
#[doc(hidden)]
pub struct AttachSwitch {
    progs: Vec<std::os::fd::OwnedFd>,
    /// The links while attached: closing them detaches the programs.
    links: Vec<std::os::fd::OwnedFd>,
}

impl AttachSwitch {
    /// Attaches the hooks if they are not.
    pub fn on(&mut self) -> std::io::Result<()> {
        use std::os::fd::{AsRawFd, FromRawFd};
        if !self.links.is_empty() {
            return Ok(());
        }
        for prog in &self.progs {
            // A tp_btf or fexit program carries its target from load time:
            // no name.
            // SAFETY: plain syscall wrapper; a null name is allowed for these.
            let fd = unsafe {
                libbpf_rs::libbpf_sys::bpf_raw_tracepoint_open(std::ptr::null(), prog.as_raw_fd())
            };
            if fd < 0 {
                self.links.clear();
                return Err(std::io::Error::from_raw_os_error(-fd));
            }
            // SAFETY: the kernel just handed over this descriptor.
            self.links
                .push(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        }
        Ok(())
    }

    /// Detaches the hooks if they are attached.
    pub fn off(&mut self) {
        self.links.clear();
    }
}

/// The syscall exit tracepoint with a program that does nothing attached: the
/// floor of what any probe on that hook costs every syscall on the machine.
/// Benchmarks measure spf against it; detached when dropped.
#[doc(hidden)]
pub struct EmptyHook {
    _skel: SpfSkel<'static>,
}

impl EmptyHook {
    pub fn attach() -> Result<EmptyHook, BuildError> {
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = SpfSkelBuilder::default()
            .open(storage)
            .map_err(|e| BuildError::new(format!("cannot open the BPF program: {e}")))?;
        open.progs.spf_sys_exit.set_autoload(false);
        open.progs.spf_fork.set_autoload(false);
        open.progs.spf_exit.set_autoload(false);
        macro_rules! off {
            ($p:ident) => {
                open.progs.$p.set_autoload(false);
            };
        }
        kernel_progs!(off);
        let mut skel = open.load().map_err(|e| load_error(&e))?;
        skel.attach()
            .map_err(|e| BuildError::new(format!("cannot attach the empty hook: {e}")))?;
        Ok(EmptyHook { _skel: skel })
    }
}

/// Datagrams sent to a name the listed processes have bound are theirs; the
/// probe learns such names as those processes receive, and this gives it the
/// names bound before it started, so the first datagram to them counts too.
fn seed_pid_names(skel: &SpfSkel<'_>, pids: &[u32]) {
    for name in crate::proc_net::names_of_pids(pids) {
        let raw: Vec<u8> = match name.strip_prefix('@') {
            Some(n) => std::iter::once(0u8).chain(n.bytes()).collect(),
            None => name.into_bytes(),
        };
        let mut key = crate::skel::types::spf_name_key::default();
        let n = raw.len().min(key.bytes.len());
        key.bytes[..n].copy_from_slice(&raw[..n]);
        key.len = n as u32;
        // SAFETY: the key is a plain C struct; its bytes are what the map holds.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&key as *const crate::skel::types::spf_name_key).cast::<u8>(),
                std::mem::size_of_val(&key),
            )
        };
        // A full map or a failed update only means the first datagrams to
        // that name are missed until the process receives on it.
        let _ = skel
            .maps
            .spf_pid_names
            .update(bytes, &[1], libbpf_rs::MapFlags::ANY);
    }
}

fn load_error(e: &libbpf_rs::Error) -> BuildError {
    let log = take_log();
    // The whole log is far too long for a one-line error, but is what a bug
    // report needs.
    if std::env::var_os("SPF_BPF_LOG").is_some() {
        for l in &log {
            spf_pipeline::diag!("{l}");
        }
    }
    let errno = e.kind();
    let text = e.to_string();
    // A missing feature is the cause whatever the verifier made of it.
    if let Some(missing) = crate::features::missing() {
        return BuildError::new(missing);
    }
    if let Some(m) = kfunc_test_refused(&log) {
        return BuildError::new(m);
    }
    if let Some(summary) = verifier_summary(&log) {
        return BuildError::new(summary);
    }
    if matches!(errno, libbpf_rs::ErrorKind::PermissionDenied) {
        return BuildError::new(format!(
            "loading the BPF probe was refused ({text}): run spf as root, or give it CAP_BPF and CAP_PERFMON; \
             a lockdown or seccomp policy can also forbid BPF"
        ));
    }
    let last = log
        .iter()
        .rev()
        .find(|l| l.contains("libbpf:"))
        .cloned()
        .unwrap_or_default();
    BuildError::new(format!(
        "cannot load the BPF probe: {text}{}{}",
        if last.is_empty() { "" } else { "; " },
        last.trim()
    ))
}

/// Linux 6.2 and 6.3 have bpf_rdonly_cast, but their verifier refuses the
/// instruction with which the program tests for it (an ld_imm64 of a kernel
/// function, allowed from 6.4): the program cannot load there at all.
fn kfunc_test_refused(log: &[String]) -> Option<String> {
    log.iter()
        .any(|l| l.contains("in ldimm64 isn't KIND_VAR"))
        .then(|| {
            format!(
                "this kernel ({}) cannot load spf's probe: its verifier refuses the test for \
                 bpf_rdonly_cast (allowed from Linux 6.4); spf runs on Linux {} to 6.1 and on 6.4 or later",
                crate::features::kernel_release(),
                crate::features::KERNEL_FLOOR
            )
        })
}

/// The verifier's verdict as one line, if the log holds a rejected program's
/// load log: the program's name and the log's last lines, which say why.
fn verifier_summary(log: &[String]) -> Option<String> {
    // The verifier's own words sit between these markers. libbpf prints the
    // whole load log as one message; a long one pushes its first lines, and
    // the BEGIN marker with them, out of the kept tail.
    let end = log
        .iter()
        .rposition(|l| l.contains("-- END PROG LOAD LOG --"))?;
    let start = log[..end]
        .iter()
        .rposition(|l| l.contains("-- BEGIN PROG LOAD LOG --"));
    let body: Vec<&str> = log[start.map_or(0, |s| s + 1)..end]
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with("processed "))
        .collect();
    if body.is_empty() {
        return None;
    }
    let tail = body[body.len().saturating_sub(4)..].join(" | ");
    // libbpf names the program before the log and again after it.
    let prog = log
        .iter()
        .rev()
        .find_map(|l| l.split("prog '").nth(1).and_then(|r| r.split('\'').next()))
        .unwrap_or("?");
    Some(format!(
        "the kernel's verifier rejected the BPF program `{prog}`: {tail}; this kernel is not supported by this \
         build of spf, please report it with `uname -r`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_rejection_becomes_one_line() {
        let log: Vec<String> = [
            "libbpf: prog 'spf_sys_exit': BPF program load failed: Permission denied",
            "libbpf: prog 'spf_sys_exit': -- BEGIN PROG LOAD LOG --",
            "0: R1=ctx() R10=fp0",
            "; int BPF_PROG(spf_sys_exit, struct pt_regs *regs, long ret)",
            "12: (79) r2 = *(u64 *)(r1 +8)",
            "R2 invalid mem access 'scalar'",
            "processed 13 insns (limit 1000000) max_states_per_insn 0",
            "-- END PROG LOAD LOG --",
            "libbpf: failed to load object 'spf_bpf'",
        ]
        .map(String::from)
        .to_vec();
        let s = verifier_summary(&log).unwrap();
        assert!(
            s.starts_with("the kernel's verifier rejected the BPF program `spf_sys_exit`"),
            "{s}"
        );
        assert!(s.contains("R2 invalid mem access 'scalar'"), "{s}");
        assert!(!s.contains("processed 13"), "{s}");
        assert!(!s.contains('\n'));
        assert!(verifier_summary(&log[..2]).is_none());
    }

    #[test]
    fn recursion_misses_are_read_from_fdinfo() {
        let text = b"pos:\t0\nflags:\t02000002\nprog_type:\t26\nrun_cnt:\t0\nrecursion_misses:\t17\nverified_insns:\t900\n";
        assert_eq!(recursion_misses(text), 17);
        assert_eq!(recursion_misses(b"pos:\t0\n"), 0);
    }

    #[test]
    fn a_load_log_longer_than_the_kept_tail_is_still_summarised() {
        // What 6.1 printed before KREAD was fixed, its first lines (and the
        // BEGIN marker) pushed out of the kept tail.
        let log: Vec<String> = [
            "1555: (15) if r1 == 0x0 goto pc+7     ; frame1: R1_w=0",
            "; KREAD(struct unix_sock, st->sk, addr))",
            "1563: <invalid CO-RE relocation>",
            "failed to resolve CO-RE relocation <byte_off> [93] struct call.sk (0:1 @ offset 8)",
            "processed 89754 insns (limit 1000000) max_states_per_insn 5",
            "-- END PROG LOAD LOG --",
            "libbpf: prog 'spf_sys_exit': failed to load: -EINVAL",
            "libbpf: failed to load object 'spf_bpf'",
        ]
        .map(String::from)
        .to_vec();
        let s = verifier_summary(&log).unwrap();
        assert!(
            s.starts_with("the kernel's verifier rejected the BPF program `spf_sys_exit`"),
            "{s}"
        );
        assert!(s.contains("struct call.sk"), "{s}");
        assert!(!s.contains("processed"), "{s}");
    }

    #[test]
    fn the_kfunc_test_refused_by_6_2_and_6_3_names_the_kernels_that_work() {
        let log: Vec<String> = [
            "libbpf: prog 'spf_sys_exit': -- BEGIN PROG LOAD LOG --",
            "pseudo btf_id 61234 in ldimm64 isn't KIND_VAR.",
            "verification time 12 usec",
            "-- END PROG LOAD LOG --",
        ]
        .map(String::from)
        .to_vec();
        let m = kfunc_test_refused(&log).unwrap();
        assert!(m.contains("Linux 5.17 to 6.1 and on 6.4 or later"), "{m}");
        assert!(!m.contains('\n'));
        assert!(kfunc_test_refused(&log[2..]).is_none());
    }

    /// The syscall exit hook knows socket files by their operations as soon
    /// as a capture that leaves spf's own traffic out is attached, where the
    /// kernel lets it read files by plain loads (bpf_rdonly_cast; before
    /// that, the inode tells and there is nothing to learn).
    #[test]
    fn the_syscall_hook_knows_socket_files_once_attached() {
        if let Some(why) = bpf_unavailable_reason() {
            assert!(
                std::env::var("SPF_REQUIRE_BPF").as_deref() != Ok("1"),
                "BPF required (SPF_REQUIRE_BPF=1) but unavailable: {why}"
            );
            spf_pipeline::diag!("skipping: {why}");
            return;
        }
        let cfg = UnixConfig {
            hook: Hook::Syscall,
            ..UnixConfig::default()
        };
        let probe = Probe::load(&cfg).expect("loading the probe");
        let plain_loads = std::fs::read("/sys/kernel/btf/vmlinux")
            .expect("the kernel's BTF")
            .windows(16)
            .any(|w| w == b"bpf_rdonly_cast\0");
        assert_eq!(probe.bss_word(|b| &b.spf_sock_fops) != 0, plain_loads);
    }

    #[test]
    fn capability_mask_is_read() {
        // Root has every capability, an unprivileged process none of these.
        let caps = effective_caps();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_ne!(caps & (1 << 21), 0, "root without CAP_SYS_ADMIN: {caps:x}");
        }
    }
}
