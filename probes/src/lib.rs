//! The eBPF probe and the `unix` source: every byte sent and received on AF_UNIX
//! sockets, as [`spf_pipeline::Event`]s.
//!
//! The BPF program (`src/bpf/spf.bpf.c`) hooks AF_UNIX's send and receive
//! functions where the kernel allows it, the syscall exit tracepoint elsewhere; the record
//! layouts and the settings live in one C header (`src/bpf/spf.h`) and reach Rust
//! through the skeleton that `build.rs` generates.

mod config;
pub mod containers;
mod features;
mod hooks;
mod peers;
mod pool;
mod probe;
mod proc_net;
mod source;

mod skel {
    #![allow(
        clippy::all,
        clippy::pedantic,
        non_camel_case_types,
        dead_code,
        unused_imports,
        missing_docs
    )]
    #![allow(unsafe_op_in_unsafe_fn)]
    include!(concat!(env!("OUT_DIR"), "/spf.skel.rs"));
}

pub use config::{
    DEFAULT_RING_SIZE, DEFAULT_SNAPLEN, DirectionFilter, MAX_SNAPLEN, PathFilter, UnixConfig,
};
pub use hooks::{Hook, HookChoice};
pub use probe::{AttachSwitch, EmptyHook, bpf_unavailable_reason};

/// The newest kernel feature the probe needs that this kernel lacks, as a
/// one-line error naming the Linux release that brought it; None when nothing
/// is known to be missing. Probing loads small test programs: it needs the
/// same privileges as the probe.
pub fn missing_kernel_feature() -> Option<String> {
    features::missing()
}
pub use source::UnixSource;

/// Whether the kernel-function hooks load and attach on this kernel, or why
/// not (one line, e.g. "fexit on unix_stream_sendmsg refused at load: EPERM").
/// Needs the same privileges as the probe.
pub fn kernel_hooks_usable() -> Result<(), String> {
    hooks::kernel_hooks_usable()
}

use spf_pipeline::config::Registry;

/// Registers the `unix` source type.
pub fn register(reg: &mut Registry) {
    reg.source("unix", config::factory);
}
