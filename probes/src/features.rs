//! The kernel features the probe cannot do without, and which of them the running
//! kernel lacks: when loading fails, the error names the kernel release that
//! brought the missing feature instead of a verifier message.
//!
//! Features are probed, not read off the version number: distributions backport
//! BPF features into older releases (RHEL 9's 5.14 has bpf_loop).

use libbpf_rs::libbpf_sys as sys;

/// The oldest upstream release that has everything the probe needs.
pub(crate) const KERNEL_FLOOR: &str = "5.17";

/// A required feature and the upstream release that added it.
struct Feature {
    name: &'static str,
    since: &'static str,
    present: fn() -> Option<bool>,
}

/// Newest first: the first one missing names the release that has them all.
const REQUIRED: &[Feature] = &[
    Feature {
        name: "the bpf_loop helper",
        since: "5.17",
        present: || helper(sys::BPF_FUNC_loop),
    },
    Feature {
        name: "the bpf_get_current_task_btf helper",
        since: "5.11",
        present: || helper(sys::BPF_FUNC_get_current_task_btf),
    },
    Feature {
        name: "BPF ring buffers",
        since: "5.8",
        present: || {
            // SAFETY: plain probe call; a null opts pointer is allowed.
            let r = unsafe {
                sys::libbpf_probe_bpf_map_type(sys::BPF_MAP_TYPE_RINGBUF, std::ptr::null())
            };
            answer(r)
        },
    },
];

/// Whether tracing programs may call `helper`; None when the probe itself
/// could not tell (then nothing is claimed).
fn helper(helper: sys::bpf_func_id) -> Option<bool> {
    // Raw tracepoint programs get the same tracing helpers as the probe's
    // BTF-enabled one, and libbpf can probe them without an attach target.
    // SAFETY: plain probe call; a null opts pointer is allowed.
    let r = unsafe {
        sys::libbpf_probe_bpf_helper(sys::BPF_PROG_TYPE_RAW_TRACEPOINT, helper, std::ptr::null())
    };
    answer(r)
}

/// libbpf's probes answer 1 (supported), 0 (not) or a negative errno.
fn answer(r: i32) -> Option<bool> {
    match r {
        1 => Some(true),
        0 => Some(false),
        _ => None,
    }
}

/// The newest required feature this kernel lacks, as a one-line error, or None
/// when nothing is known to be missing.
pub(crate) fn missing() -> Option<String> {
    let f = REQUIRED.iter().find(|f| (f.present)() == Some(false))?;
    Some(missing_message(f.name, f.since, &kernel_release()))
}

fn missing_message(name: &str, since: &str, release: &str) -> String {
    format!(
        "this kernel ({release}) lacks {name} (Linux {since}): spf's probe needs Linux {KERNEL_FLOOR} or later"
    )
}

/// The running kernel's release, as `uname -r` prints it.
pub(crate) fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct; its fields are NUL-terminated.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".to_string();
    }
    // SAFETY: `release` is a NUL-terminated array inside `u`.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_the_feature_and_both_releases() {
        let m = missing_message("the bpf_loop helper", "5.17", "5.15.0-91-generic");
        assert_eq!(
            m,
            "this kernel (5.15.0-91-generic) lacks the bpf_loop helper (Linux 5.17): \
             spf's probe needs Linux 5.17 or later"
        );
    }

    #[test]
    fn required_features_are_newest_first_and_the_floor_is_the_newest() {
        let v = |s: &str| -> Vec<u32> { s.split('.').map(|n| n.parse().unwrap()).collect() };
        assert_eq!(REQUIRED[0].since, KERNEL_FLOOR);
        for w in REQUIRED.windows(2) {
            assert!(
                v(w[0].since) > v(w[1].since),
                "{} before {}",
                w[0].since,
                w[1].since
            );
        }
    }

    #[test]
    fn release_is_read() {
        let r = kernel_release();
        assert!(r.chars().next().is_some_and(|c| c.is_ascii_digit()), "{r}");
    }
}
