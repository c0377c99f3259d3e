//! Which hooks capture: the kernel-function hooks (fexit programs on AF_UNIX's
//! send and receive functions) where the kernel lets them load and attach, else
//! the syscall exit hook; and why.

use std::ffi::CString;
use std::os::fd::{FromRawFd as _, OwnedFd};

use libbpf_rs::libbpf_sys as sys;
use serde::Deserialize;

/// `[source] hook`: which hooks the probe may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// The kernel-function hooks where they load and attach, else the syscall
    /// exit hook.
    #[default]
    Auto,
    /// The syscall exit hook, wherever kernel-function hooks would work.
    Syscall,
    /// The kernel-function hooks, or an error where they cannot be used.
    Kernel,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Auto => "auto",
            Hook::Syscall => "syscall",
            Hook::Kernel => "kernel",
        }
    }
}

/// The hooks a running probe uses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookChoice {
    /// True for the kernel-function hooks, false for the syscall exit hook.
    pub kernel: bool,
    /// Why the syscall exit hook is used (empty for the kernel hooks).
    pub why: String,
}

impl std::fmt::Display for HookChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kernel {
            write!(
                f,
                "kernel hooks (fexit on the AF_UNIX send and receive functions)"
            )
        } else {
            write!(f, "syscall exit hook ({})", self.why)
        }
    }
}

/// The function every kernel path hooks; the others are found the same way.
pub(crate) const PROBE_FUNCTION: &str = "unix_stream_sendmsg";

/// Kernel functions that only some kernels have: the programs on them are
/// loaded where the kernel's BTF names them. `unix_stream_sendpage` carries
/// sendfile and splice into a stream socket before Linux 6.5.
pub(crate) fn kernel_has_function(name: &str) -> bool {
    with_vmlinux_btf(|btf| find_func(btf, name).is_some()).unwrap_or(false)
}

/// Whether fexit programs on the AF_UNIX functions load and attach here: a
/// program that does nothing is loaded on `unix_stream_sendmsg` and attached,
/// then let go. The error says what refused, e.g. "fexit on unix_stream_sendmsg
/// refused at load: EPERM".
pub(crate) fn kernel_hooks_usable() -> Result<(), String> {
    let id = with_vmlinux_btf(|btf| find_func(btf, PROBE_FUNCTION))
        .ok_or_else(|| "the kernel's BTF cannot be read".to_string())?
        .ok_or_else(|| format!("the kernel has no function {PROBE_FUNCTION} in its BTF"))?;
    // r0 = 0; exit. Instructions are little-endian words on every target spf
    // builds for (x86-64, arm64).
    let insns: [u8; 16] = [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let opts = sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<sys::bpf_prog_load_opts>() as _,
        expected_attach_type: sys::BPF_TRACE_FEXIT,
        attach_btf_id: id,
        ..Default::default()
    };
    let mut opts = opts;
    let name = c"spf_hook_probe";
    let license = c"GPL";
    // SAFETY: the instructions and options outlive the call; libbpf copies
    // what it keeps.
    let fd = unsafe {
        sys::bpf_prog_load(
            sys::BPF_PROG_TYPE_TRACING,
            name.as_ptr(),
            license.as_ptr(),
            insns.as_ptr().cast(),
            2,
            &mut opts,
        )
    };
    if fd < 0 {
        return Err(format!(
            "fexit on {PROBE_FUNCTION} refused at load: {}",
            errno_name(-fd)
        ));
    }
    // SAFETY: the kernel just handed over this descriptor.
    let prog = unsafe { OwnedFd::from_raw_fd(fd) };
    // A tracing program carries its target from load time: no name.
    // SAFETY: plain syscall wrapper; a null name is allowed.
    let link = unsafe {
        sys::bpf_raw_tracepoint_open(std::ptr::null(), std::os::fd::AsRawFd::as_raw_fd(&prog))
    };
    if link < 0 {
        return Err(format!(
            "fexit on {PROBE_FUNCTION} refused at attach: {}",
            errno_name(-link)
        ));
    }
    // SAFETY: as above; dropping it detaches the do-nothing program.
    drop(unsafe { OwnedFd::from_raw_fd(link) });
    Ok(())
}

fn with_vmlinux_btf<T>(f: impl FnOnce(*const sys::btf) -> T) -> Option<T> {
    // SAFETY: libbpf reads /sys/kernel/btf/vmlinux; the result is freed below.
    let btf = unsafe { sys::btf__load_vmlinux_btf() };
    if btf.is_null() {
        return None;
    }
    let r = f(btf);
    // SAFETY: loaded above and no longer used.
    unsafe { sys::btf__free(btf) };
    Some(r)
}

fn find_func(btf: *const sys::btf, name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `btf` is a loaded BTF object; `name` is NUL-terminated.
    let id = unsafe { sys::btf__find_by_name_kind(btf, name.as_ptr(), sys::BTF_KIND_FUNC) };
    u32::try_from(id).ok().filter(|&id| id > 0)
}

/// The usual name of an errno the kernel answers BPF with.
fn errno_name(e: i32) -> String {
    match e {
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EBUSY => "EBUSY".into(),
        libc::E2BIG => "E2BIG".into(),
        libc::ENODEV => "ENODEV".into(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".into(),
        // The kernel's own ENOTSUPP, which BPF trampolines answer with where
        // the kernel cannot patch functions.
        524 => "ENOTSUPP".into(),
        _ => std::io::Error::from_raw_os_error(e).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_wording() {
        let k = HookChoice {
            kernel: true,
            why: String::new(),
        };
        assert_eq!(
            k.to_string(),
            "kernel hooks (fexit on the AF_UNIX send and receive functions)"
        );
        let s = HookChoice {
            kernel: false,
            why: "kernel hooks refused here: fexit on unix_stream_sendmsg refused at load: EPERM"
                .into(),
        };
        assert_eq!(
            s.to_string(),
            "syscall exit hook (kernel hooks refused here: fexit on unix_stream_sendmsg refused at load: EPERM)"
        );
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::EPERM), "EPERM");
        assert_eq!(errno_name(524), "ENOTSUPP");
        assert!(errno_name(libc::EIO).contains("error"));
    }
}
