//! `[source] type = "unix"`: the keys, their checks, and the settings handed to
//! the BPF program.

use serde::Deserialize;
use spf_pipeline::Source;
use spf_pipeline::View;
use spf_pipeline::config::{BuildContext, BuildError, Section, SourceConfig};

use crate::containers::{CgroupId, Names, cgroup_id, container_cgroups};
use crate::hooks::Hook;
use crate::skel::types;

/// Bytes captured per event unless `snaplen` says otherwise. Large enough
/// for the writes real peers make: gRPC and HTTP/2 stacks write 100-300 KiB
/// at once when a message is large, and a cut send is only made whole where
/// its receives are within snaplen too. The ring holds 32 such events.
pub const DEFAULT_SNAPLEN: u32 = 1024 * 1024;
/// Largest `snaplen` accepted.
pub const MAX_SNAPLEN: u32 = 16 * 1024 * 1024;
/// Ring buffer size unless `ring_size` says otherwise. The ring must hold what
/// arrives while the reader waits for a CPU: a 64 KiB bulk transfer captured on
/// both sides fills 16 MiB in about 3 ms, one scheduler slice on a busy machine,
/// and dropped events at that size; 32 MiB did not.
pub const DEFAULT_RING_SIZE: u64 = 32 * 1024 * 1024;
const MIN_RING_SIZE: u64 = 4096;
const MAX_RING_SIZE: u64 = 1 << 30;

// How the probe writes one event into the ring (src/bpf/parts/copy.h): data of up to
// INLINE_MAX bytes from one buffer goes in the event record itself, in the
// smallest of its size classes that holds it, after the fixed header and room
// for the path; more goes first in chunk records of up to CHUNK_MAX bytes (each
// of the smallest chunk class that holds its part), then a header record. Each
// record is reserved at its class's full size.
const INLINE_MAX: u64 = 4096;
const INLINE_CLASSES: [u64; 3] = [64, 512, 4096];
const CHUNK_MAX: u64 = 32768;
const CHUNK_CLASSES: [u64; 3] = [512, 4096, 32768];
/// Room for a named socket's path after the fixed header.
const PATH_ROOM: u64 = 112;

const PATH_MAX: usize = 108;
const MAX_PATHS: usize = 16;
const MAX_PIDS: usize = 64;
const MAX_COMMS: usize = 16;
const MAX_CGROUPS: usize = 16;
const COMM_LEN: usize = 16;

/// Which directions to capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectionFilter {
    #[default]
    Both,
    Send,
    Recv,
}

/// One `path` pattern: exact, or a prefix when written with a trailing `*`.
/// Abstract names are written `@name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFilter {
    /// sun_path bytes as the kernel keeps them (a leading NUL for abstract names).
    pub raw: Vec<u8>,
    pub prefix: bool,
}

impl PathFilter {
    pub fn parse(s: &str) -> Result<PathFilter, String> {
        let (body, prefix) = match s.strip_suffix('*') {
            Some(b) => (b, true),
            None => (s, false),
        };
        if body.contains('*') {
            return Err(format!(
                "`{s}`: `*` is only allowed at the end (a prefix match)"
            ));
        }
        // A relative name would be compared with the kernel's copy of what
        // bind() was given, which depends on the binder's working directory.
        if !body.is_empty() && !body.starts_with('/') && !body.starts_with('@') {
            return Err(format!(
                "`{s}`: must be absolute (or @name for an abstract socket)"
            ));
        }
        let raw: Vec<u8> = match body.strip_prefix('@') {
            Some(name) => std::iter::once(0u8).chain(name.bytes()).collect(),
            None => body.as_bytes().to_vec(),
        };
        if raw.is_empty() && !prefix {
            return Err(
                "an empty path matches nothing; use `*` to match every named socket".into(),
            );
        }
        if raw.len() > PATH_MAX {
            return Err(format!(
                "`{s}` is longer than a Unix socket path can be ({PATH_MAX} bytes)"
            ));
        }
        Ok(PathFilter { raw, prefix })
    }

    /// The same pattern through the real directories, when one on its way
    /// is a symbolic link (`/var/run` is `/run` on most systems), or the
    /// socket's name is one: the kernel keeps the name bind() was given, so
    /// a server that bound `/run/docker.sock` is not matched by
    /// `/var/run/docker.sock` otherwise. None when nothing resolves
    /// differently, for abstract names, and when the directory does not
    /// exist (yet).
    fn resolved(&self) -> Option<PathFilter> {
        use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
        if self.raw.first() != Some(&b'/') {
            return None;
        }
        let whole = std::path::Path::new(std::ffi::OsStr::from_bytes(&self.raw));
        let real = match std::fs::canonicalize(whole) {
            // An exact name that exists: the socket itself may be a link.
            Ok(r) if !self.prefix => r.into_os_string().into_vec(),
            _ => {
                // The directory part, up to the last `/` (a prefix's rest
                // may be part of a name).
                let cut = self.raw.iter().rposition(|&b| b == b'/')?;
                let (dir, rest) = self.raw.split_at(cut);
                let dir = if dir.is_empty() { b"/".as_slice() } else { dir };
                let mut r = std::fs::canonicalize(std::ffi::OsStr::from_bytes(dir))
                    .ok()?
                    .into_os_string()
                    .into_vec();
                if r.last() == Some(&b'/') {
                    r.pop();
                }
                r.extend_from_slice(rest);
                r
            }
        };
        (real != self.raw && real.len() <= PATH_MAX).then_some(PathFilter {
            raw: real,
            prefix: self.prefix,
        })
    }
}

/// A key that takes one value as well as a list: `path = "x"` or
/// `path = ["x", "y"]`. The message names what the key wants.
macro_rules! one_or_many {
    ($name:ident, $t:ty, $expecting:literal) => {
        #[derive(Debug, Clone, Deserialize)]
        #[serde(untagged, expecting = $expecting)]
        enum $name {
            One($t),
            Many(Vec<$t>),
        }

        impl $name {
            fn into_vec(v: Option<$name>) -> Vec<$t> {
                match v {
                    None => Vec::new(),
                    Some($name::One(x)) => vec![x],
                    Some($name::Many(v)) => v,
                }
            }
        }
    };
}

one_or_many!(Paths, String, "a path or a list of paths");
one_or_many!(Pids, u32, "a pid (a whole number from 1) or a list of pids");
one_or_many!(Comms, String, "a process name or a list of them");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    path: Option<Paths>,
    #[serde(default)]
    pid: Option<Pids>,
    #[serde(default)]
    comm: Option<Comms>,
    #[serde(default)]
    direction: DirectionFilter,
    #[serde(default)]
    snaplen: Option<u64>,
    #[serde(default)]
    ring_size: Option<u64>,
    #[serde(default)]
    pid_tree: Option<Pids>,
    #[serde(default)]
    cgroup: Option<Paths>,
    #[serde(default)]
    container: Option<Comms>,
    #[serde(default)]
    hook: Hook,
}

/// A validated `unix` source config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixConfig {
    pub paths: Vec<PathFilter>,
    /// Matches a process at either end of the socket.
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub direction: DirectionFilter,
    pub snaplen: u32,
    pub ring_size: u64,
    /// Capture spf's own traffic too. Off from config files, since spf's own
    /// output could feed back into the capture; tests that drive the source
    /// in-process turn it on.
    pub include_self: bool,
    /// Count stream positions in the kernel and leave out of a receive what
    /// the sender's capture holds: set for the connection view with both
    /// directions captured (never from the source's own table).
    pub positions: bool,
    /// `pid_tree`: keep only these processes and every process they start
    /// from now on (followed through forks in the kernel).
    pub follow: Vec<u32>,
    /// Keep only processes in these cgroups or below them (`cgroup` and the
    /// cgroups of `container`).
    pub cgroups: Vec<CgroupId>,
    /// Which hooks capture: the kernel-function hooks where they work, or the
    /// syscall exit hook (see hooks.rs).
    pub hook: Hook,
}

impl Default for UnixConfig {
    fn default() -> Self {
        UnixConfig {
            paths: Vec::new(),
            pids: Vec::new(),
            comms: Vec::new(),
            direction: DirectionFilter::Both,
            snaplen: DEFAULT_SNAPLEN,
            ring_size: DEFAULT_RING_SIZE,
            include_self: false,
            positions: false,
            follow: Vec::new(),
            cgroups: Vec::new(),
            hook: Hook::Auto,
        }
    }
}

impl UnixConfig {
    /// Checks every value, returning (field, message) for each problem.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        if self.paths.len() > MAX_PATHS {
            errs.push((
                "path",
                format!("at most {MAX_PATHS} paths, found {}", self.paths.len()),
            ));
        }
        if self.pids.len() > MAX_PIDS {
            errs.push((
                "pid",
                format!("at most {MAX_PIDS} pids, found {}", self.pids.len()),
            ));
        }
        if self.pids.contains(&0) {
            errs.push(("pid", "pid 0 is no process".to_string()));
        }
        for &p in &self.follow {
            if p == 0 || !std::path::Path::new(&format!("/proc/{p}")).exists() {
                errs.push(("pid_tree", format!("no process {p}")));
            }
        }
        if self.comms.len() > MAX_COMMS {
            errs.push((
                "comm",
                format!("at most {MAX_COMMS} names, found {}", self.comms.len()),
            ));
        }
        for c in &self.comms {
            if c.is_empty() || c.len() >= COMM_LEN {
                errs.push((
                    "comm",
                    format!(
                        "`{c}`: a process name (comm) has 1 to {} bytes",
                        COMM_LEN - 1
                    ),
                ));
            }
        }
        if self.snaplen == 0 || self.snaplen > MAX_SNAPLEN {
            errs.push((
                "snaplen",
                format!("must be between 1 and {MAX_SNAPLEN} bytes"),
            ));
        }
        if !self.ring_size.is_power_of_two()
            || !(MIN_RING_SIZE..=MAX_RING_SIZE).contains(&self.ring_size)
        {
            errs.push((
                "ring_size",
                format!(
                    "must be a power of two between {MIN_RING_SIZE} and {MAX_RING_SIZE} bytes, e.g. {DEFAULT_RING_SIZE}"
                ),
            ));
        } else if (1..=MAX_SNAPLEN).contains(&self.snaplen) {
            // The kernel refuses a reservation that would bring what the ring
            // holds to its size, so the records need less than all of it.
            let need = Self::ring_bytes_for_event(self.snaplen);
            if need >= self.ring_size {
                let fits = (need + 1).next_power_of_two().max(MIN_RING_SIZE);
                errs.push((
                    "ring_size",
                    format!(
                        "a ring of {} bytes cannot hold one event of snaplen = {} bytes (its records take {need} bytes of ring); set ring_size to at least {fits} or lower snaplen",
                        self.ring_size, self.snaplen
                    ),
                ));
            }
        }
        errs
    }

    /// The snaplen used when none is set: DEFAULT_SNAPLEN, or for a ring set
    /// too small for it the largest power of two that fits, rather than an
    /// error about a key the user did not write.
    pub fn default_snaplen(ring_size: u64) -> u32 {
        let mut s = DEFAULT_SNAPLEN;
        while s > 64 && Self::ring_bytes_for_event(s) >= ring_size {
            s /= 2;
        }
        s
    }

    /// Ring buffer bytes that one event of `snaplen` captured bytes, read from
    /// one buffer of a named socket, takes: every record the probe writes for
    /// it, each with the kernel's record header, rounded up to 8 bytes as the
    /// kernel does. The probe writes them all before the reader can run, so a
    /// ring must have room for all of them at once.
    pub fn ring_bytes_for_event(snaplen: u32) -> u64 {
        let record = |body: u64| {
            (body + u64::from(libbpf_rs::libbpf_sys::BPF_RINGBUF_HDR_SZ)).next_multiple_of(8)
        };
        let class = |n: u64, classes: &[u64; 3]| {
            classes
                .iter()
                .copied()
                .find(|&c| n <= c)
                .unwrap_or(classes[2])
        };
        let fixed = std::mem::offset_of!(types::spf_event, path) as u64;
        let chunk_header = std::mem::size_of::<types::spf_chunk>() as u64;
        let snaplen = u64::from(snaplen);
        if snaplen <= INLINE_MAX {
            return record(fixed + PATH_ROOM + class(snaplen, &INLINE_CLASSES));
        }
        let full = snaplen / CHUNK_MAX;
        let rest = snaplen % CHUNK_MAX;
        let mut total = full * record(chunk_header + CHUNK_MAX);
        if rest > 0 {
            total += record(chunk_header + class(rest, &CHUNK_CLASSES));
        }
        total + record(fixed + PATH_ROOM)
    }

    /// Loads and attaches the probe, returning the source that reads it.
    pub fn build_source(&self) -> Result<crate::UnixSource, BuildError> {
        if let Some((field, msg)) = self.validate().into_iter().next() {
            return Err(BuildError::new(format!("unix source: {field}: {msg}")));
        }
        crate::UnixSource::new(self.clone())
    }

    /// The settings as the BPF program's rodata.
    pub(crate) fn to_bpf(&self) -> types::spf_config {
        let mut c = types::spf_config {
            snaplen: self.snaplen,
            dir_mask: match self.direction {
                DirectionFilter::Both => 3,
                DirectionFilter::Send => 1,
                DirectionFilter::Recv => 2,
            },
            exclude_tgid: if self.include_self {
                0
            } else {
                std::process::id()
            },
            // A sixteenth full: early enough that the reader starts draining
            // long before the ring fills, rarely enough to batch many records.
            wake_bytes: u32::try_from(self.ring_size / 16).unwrap_or(u32::MAX),
            positions: u32::from(self.positions),
            ..Default::default()
        };
        if !self.include_self {
            if let Some((dev, ino)) = own_pid_namespace() {
                c.self_ns_dev = dev;
                c.self_ns_ino = ino;
            }
        }
        for (slot, pid) in c.pids.iter_mut().zip(&self.pids) {
            *slot = *pid;
        }
        c.n_pids = self.pids.len().min(MAX_PIDS) as u32;
        for (slot, comm) in c.comms.iter_mut().zip(&self.comms) {
            for (d, s) in slot.iter_mut().zip(comm.bytes().take(COMM_LEN - 1)) {
                *d = s as i8;
            }
        }
        c.n_comms = self.comms.len().min(MAX_COMMS) as u32;
        for (slot, p) in c.paths.iter_mut().zip(&self.paths) {
            slot.bytes[..p.raw.len()].copy_from_slice(&p.raw);
            slot.len = p.raw.len() as u32;
            slot.prefix = u32::from(p.prefix);
        }
        c.n_paths = self.paths.len().min(MAX_PATHS) as u32;
        for (slot, g) in c.cgroups.iter_mut().zip(&self.cgroups) {
            slot.id = g.id;
            slot.level = g.level;
        }
        c.n_cgroups = self.cgroups.len().min(MAX_CGROUPS) as u32;
        c.follow = u32::from(!self.follow.is_empty());
        c
    }

    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.paths.is_empty() {
            let p: Vec<String> = self
                .paths
                .iter()
                .map(|f| {
                    let mut s = match f.raw.split_first() {
                        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
                        _ => String::from_utf8_lossy(&f.raw).into_owned(),
                    };
                    if f.prefix {
                        s.push('*');
                    }
                    s
                })
                .collect();
            parts.push(format!("path={}", p.join(",")));
        }
        if !self.pids.is_empty() {
            let p: Vec<String> = self.pids.iter().map(u32::to_string).collect();
            parts.push(format!("pid={}", p.join(",")));
        }
        if !self.follow.is_empty() {
            let p: Vec<String> = self.follow.iter().map(u32::to_string).collect();
            parts.push(format!("pid_tree={}", p.join(",")));
        }
        if !self.cgroups.is_empty() {
            parts.push(format!("cgroups={}", self.cgroups.len()));
        }
        if !self.comms.is_empty() {
            parts.push(format!("comm={}", self.comms.join(",")));
        }
        if self.direction != DirectionFilter::Both {
            parts.push(format!("direction={:?}", self.direction).to_lowercase());
        }
        if self.hook != Hook::Auto {
            parts.push(format!("hook={}", self.hook.name()));
        }
        if parts.is_empty() {
            "unix sockets (all)".to_string()
        } else {
            format!("unix sockets ({})", parts.join(" "))
        }
    }
}

/// spf's pid namespace (the device and inode of /proc/self/ns/pid) when it is
/// not the initial one, where the probe cannot know spf by the kernel's tgid
/// (see is_self in the probe). The kernel gives the initial namespace a fixed
/// inode number (PROC_PID_INIT_INO). None also when /proc says nothing: spf's
/// pid is then taken as the kernel's, as it was before namespaces counted.
/// Whether spf runs in the initial pid namespace, where /proc's pids are the
/// kernel's own (the ones the probe reports).
pub(crate) fn in_initial_pid_namespace() -> bool {
    own_pid_namespace().is_none()
}

fn own_pid_namespace() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;
    let m = std::fs::metadata("/proc/self/ns/pid").ok()?;
    // The helper compares the kernel's own device number (major << 20 |
    // minor), which stat's encoding matches only for small numbers.
    let dev = (u64::from(libc::major(m.dev())) << 20) | u64::from(libc::minor(m.dev()));
    (m.ino() != PROC_PID_INIT_INO).then_some((dev, m.ino()))
}

impl SourceConfig for UnixConfig {
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Source>, BuildError> {
        let mut cfg = self.clone();
        // The connection view keeps each byte once: with both directions
        // captured, the kernel counts stream positions and leaves out of a
        // receive what the sender's capture holds.
        cfg.positions = ctx.view == View::Connection && cfg.direction == DirectionFilter::Both;
        Ok(Box::new(cfg.build_source()?))
    }

    fn needs_root(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        UnixConfig::describe(self)
    }
}

pub(crate) fn factory(s: &mut Section<'_>) -> Option<Box<dyn SourceConfig>> {
    let raw: RawConfig = s.parse()?;
    match from_raw(raw) {
        Ok(cfg) => Some(Box::new(cfg)),
        Err(errs) => {
            for (field, msg) in errs {
                s.error(field, msg);
            }
            None
        }
    }
}

/// The checked config, or every problem as (field, message).
fn from_raw(raw: RawConfig) -> Result<UnixConfig, Vec<(&'static str, String)>> {
    let mut errs = Vec::new();
    let mut paths = Vec::new();
    for p in &Paths::into_vec(raw.path) {
        match PathFilter::parse(p) {
            // A directory's sockets are named with the directory's name and
            // more: an exact match would never match one.
            Ok(f)
                if !f.prefix
                    && f.raw.first() == Some(&b'/')
                    && std::fs::metadata(p).is_ok_and(|m| m.is_dir()) =>
            {
                errs.push((
                    "path",
                    format!(
                        "`{p}` is a directory: `{}/*` matches the sockets in it",
                        p.trim_end_matches('/')
                    ),
                ))
            }
            Ok(f) => paths.push(f),
            Err(e) => errs.push(("path", e)),
        }
    }
    // Each name also through the real directories, while the probe has room
    // for more patterns (the limit counts those given).
    for i in 0..paths.len() {
        if let Some(real) = paths[i].resolved()
            && !paths.contains(&real)
            && paths.len() < MAX_PATHS
        {
            paths.push(real);
        }
    }
    let mut cgroups = Vec::new();
    for p in Paths::into_vec(raw.cgroup) {
        match cgroup_id(&p) {
            Ok(c) => cgroups.push(c),
            Err(e) => errs.push(("cgroup", e)),
        }
    }
    let wanted = Comms::into_vec(raw.container);
    if !wanted.is_empty() {
        let names = Names::read();
        for want in &wanted {
            let found = container_cgroups(want, &names);
            if found.is_empty() {
                errs.push((
                    "container",
                    format!(
                        "no running container is `{want}` (give a name, a full id or an id prefix of at least 12 digits)"
                    ),
                ));
            }
            for path in found {
                match cgroup_id(&path) {
                    Ok(c) => cgroups.push(c),
                    Err(e) => errs.push(("container", e)),
                }
            }
        }
    }
    if cgroups.len() > MAX_CGROUPS {
        errs.push((
            "cgroup",
            format!("at most {MAX_CGROUPS} cgroups (containers count one each)"),
        ));
    }
    let cfg = UnixConfig {
        paths,
        pids: Pids::into_vec(raw.pid),
        comms: Comms::into_vec(raw.comm),
        direction: raw.direction,
        snaplen: match raw.snaplen {
            None => UnixConfig::default_snaplen(raw.ring_size.unwrap_or(DEFAULT_RING_SIZE)),
            Some(v) => u32::try_from(v).unwrap_or(u32::MAX),
        },
        ring_size: raw.ring_size.unwrap_or(DEFAULT_RING_SIZE),
        include_self: false,
        positions: false,
        follow: Pids::into_vec(raw.pid_tree),
        cgroups,
        hook: raw.hook,
    };
    errs.extend(cfg.validate());
    if errs.is_empty() { Ok(cfg) } else { Err(errs) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<String, String> {
        let mut reg = spf_pipeline::config::Registry::new();
        crate::register(&mut reg);
        // The decoder and sink defaults need those types registered; give
        // ones that exist in an empty registry only when they are absent.
        match spf_pipeline::config::parse(&reg, "t.toml", text) {
            Ok(c) => Ok(format!("{:?}", c.source)),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn path_filters() {
        assert_eq!(
            PathFilter::parse("/run/x.sock").unwrap(),
            PathFilter {
                raw: b"/run/x.sock".to_vec(),
                prefix: false
            }
        );
        assert_eq!(
            PathFilter::parse("/run/*").unwrap(),
            PathFilter {
                raw: b"/run/".to_vec(),
                prefix: true
            }
        );
        assert_eq!(
            PathFilter::parse("@bus").unwrap(),
            PathFilter {
                raw: b"\0bus".to_vec(),
                prefix: false
            }
        );
        assert_eq!(
            PathFilter::parse("@*").unwrap(),
            PathFilter {
                raw: b"\0".to_vec(),
                prefix: true
            }
        );
        assert!(PathFilter::parse("/a*b").is_err());
        assert!(PathFilter::parse("").is_err());
        assert!(PathFilter::parse(&format!("/{}", "x".repeat(108))).is_err());
        assert!(PathFilter::parse(&format!("/{}", "x".repeat(107))).is_ok());
        assert!(PathFilter::parse("*").is_ok());
        for rel in ["d.sock", "run/x.sock", "./x.sock", "x*"] {
            let e = PathFilter::parse(rel).unwrap_err();
            assert!(
                e.contains(rel) && e.contains("must be absolute (or @name"),
                "{e}"
            );
        }
        assert!(PathFilter::parse(&format!("@{}", "x".repeat(108))).is_err());
        assert!(PathFilter::parse(&format!("@{}", "x".repeat(107))).is_ok());
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = parse("[source]\ntype = \"unix\"\nring_size = 1000\n").unwrap_err();
        assert!(
            e.contains("source.ring_size") && e.contains("power of two"),
            "{e}"
        );
        let e = parse("[source]\ntype = \"unix\"\nbogus = 1\n").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e = parse("[source]\ntype = \"unix\"\ndirection = \"up\"\n").unwrap_err();
        assert!(e.contains("direction"), "{e}");
        let e = parse("[source]\ntype = \"unix\"\npath = \"/a*b\"\n").unwrap_err();
        assert!(
            e.contains("source.path") && e.contains("only allowed at the end"),
            "{e}"
        );
        let e = parse("[source]\ntype = \"unix\"\nsnaplen = 0\n").unwrap_err();
        assert!(e.contains("source.snaplen"), "{e}");
        let e =
            parse("[source]\ntype = \"unix\"\ncomm = [\"a-name-that-is-too-long\"]\n").unwrap_err();
        assert!(e.contains("source.comm"), "{e}");
    }

    #[test]
    fn relative_path_is_a_config_error_naming_the_entry() {
        let e =
            parse("[source]\ntype = \"unix\"\npath = [\"/ok.sock\", \"rel.sock\"]\n").unwrap_err();
        assert!(
            e.contains("source.path")
                && e.contains("`rel.sock`")
                && e.contains("must be absolute (or @name for an abstract socket)")
                && !e.contains("`/ok.sock`"),
            "{e}"
        );
        assert!(e.contains("t.toml:3:"), "{e}");
    }

    fn from_toml(text: &str) -> Result<UnixConfig, Vec<(&'static str, String)>> {
        from_raw(toml::from_str(text).expect("valid keys"))
    }

    #[test]
    fn a_path_through_a_linked_directory_also_matches_the_real_one() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = real.with_file_name("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let names = |c: &UnixConfig| -> Vec<(String, bool)> {
            c.paths
                .iter()
                .map(|f| (String::from_utf8(f.raw.clone()).unwrap(), f.prefix))
                .collect()
        };
        let (l, r) = (link.display(), real.display());
        let c = from_toml(&format!(
            "path = [\"{l}/s.sock\", \"{l}/p*\", \"{l}/*\", \"{r}/x\"]\n"
        ))
        .unwrap();
        assert_eq!(
            names(&c),
            [
                (format!("{l}/s.sock"), false),
                (format!("{l}/p"), true),
                (format!("{l}/"), true),
                (format!("{r}/x"), false),
                (format!("{r}/s.sock"), false),
                (format!("{r}/p"), true),
                (format!("{r}/"), true),
            ]
        );
        // A socket's own name may be the link.
        let sock = real.join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::os::unix::fs::symlink(&sock, real.join("alias.sock")).unwrap();
        let c = from_toml(&format!("path = \"{r}/alias.sock\"\n")).unwrap();
        assert_eq!(
            names(&c),
            [
                (format!("{r}/alias.sock"), false),
                (format!("{r}/s.sock"), false)
            ]
        );
        // A directory named without `*` would match no socket.
        let e = from_toml(&format!("path = \"{l}/\"\n")).unwrap_err();
        assert_eq!(
            e,
            [(
                "path",
                format!("`{l}/` is a directory: `{l}/*` matches the sockets in it")
            )]
        );
        // Aliases do not push a full list over the limit.
        let full: Vec<String> = (0..MAX_PATHS).map(|i| format!("\"{l}/{i}\"")).collect();
        let c = from_toml(&format!("path = [{}]\n", full.join(","))).unwrap();
        assert_eq!(c.paths.len(), MAX_PATHS);
    }

    #[test]
    fn pid_and_comm_take_one_value_or_a_list() {
        let one = from_toml("pid = 1234\ncomm = \"x\"\npath = \"/a.sock\"\n").unwrap();
        assert_eq!(
            (one.pids, one.comms, one.paths.len()),
            (vec![1234], vec!["x".to_string()], 1)
        );
        let many = from_toml("pid = [1, 2]\ncomm = [\"x\", \"y\"]\n").unwrap();
        assert_eq!(
            (many.pids, many.comms),
            (vec![1, 2], vec!["x".to_string(), "y".to_string()])
        );
        let none = from_toml("").unwrap();
        assert!(none.pids.is_empty() && none.comms.is_empty() && none.paths.is_empty());
        // A single value is checked like one in a list.
        let e = from_toml("pid = 0\ncomm = \"a-name-that-is-too-long\"\n").unwrap_err();
        let fields: Vec<&str> = e.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["pid", "comm"], "{e:?}");
        // A wrong type says what the key takes.
        for bad in ["\"12\"", "-5"] {
            let e = parse(&format!("[source]\ntype = \"unix\"\npid = {bad}\n")).unwrap_err();
            assert!(
                e.contains("source.pid")
                    && e.contains("a pid (a whole number from 1) or a list of pids"),
                "{e}"
            );
        }
        let e = parse("[source]\ntype = \"unix\"\ncomm = 5\n").unwrap_err();
        assert!(
            e.contains("source.comm") && e.contains("process name"),
            "{e}"
        );
    }

    /// Stand-ins for the default decoder and sink, which live in other crates:
    /// a config without [decoder] or [[sink]] needs them to parse at all.
    #[derive(Debug)]
    struct Unused;

    impl spf_pipeline::config::DecoderConfig for Unused {
        fn build(
            &self,
            _ctx: &spf_pipeline::config::BuildContext,
        ) -> Result<Box<dyn spf_pipeline::Decoder>, BuildError> {
            Err(BuildError::new("not built in this test"))
        }
    }

    impl spf_pipeline::config::SinkConfig for Unused {
        fn build(
            &self,
            _ctx: &spf_pipeline::config::BuildContext,
        ) -> Result<Box<dyn spf_pipeline::Sink>, BuildError> {
            Err(BuildError::new("not built in this test"))
        }
    }

    fn full_registry() -> spf_pipeline::config::Registry {
        let mut reg = spf_pipeline::config::Registry::new();
        crate::register(&mut reg);
        reg.decoder("raw", |_| Some(Box::new(Unused)));
        reg.sink("stdout", |_| Some(Box::new(Unused)));
        reg.default_decoder("raw").default_sink("stdout");
        reg
    }

    #[test]
    fn config_values() {
        let reg = full_registry();
        let text = "[source]\ntype = \"unix\"\npath = [\"/run/a.sock\", \"@x*\"]\npid = [7]\ncomm = [\"curl\"]\ndirection = \"send\"\nsnaplen = 1048576\nring_size = 67108864\n";
        let c = spf_pipeline::config::parse(&reg, "t.toml", text).expect("a valid config");
        assert_eq!(c.source_type, "unix");
        assert!(c.source.needs_root());
        let dbg = format!("{:?}", c.source);
        assert!(
            dbg.contains("snaplen: 1048576") && dbg.contains("ring_size: 67108864"),
            "{dbg}"
        );
        assert!(
            dbg.contains("pids: [7]") && dbg.contains("comms: [\"curl\"]"),
            "{dbg}"
        );
        assert!(dbg.contains("direction: Send"), "{dbg}");
        assert!(
            dbg.contains("prefix: true") && dbg.contains("prefix: false"),
            "{dbg}"
        );
    }

    #[test]
    fn hook_takes_auto_syscall_or_kernel() {
        assert_eq!(from_toml("").unwrap().hook, Hook::Auto);
        assert_eq!(from_toml("hook = \"syscall\"").unwrap().hook, Hook::Syscall);
        assert_eq!(from_toml("hook = \"kernel\"").unwrap().hook, Hook::Kernel);
        let e = parse("[source]\ntype = \"unix\"\nhook = \"kprobe\"\n").unwrap_err();
        assert!(
            e.contains("source.hook") && e.contains("auto") && e.contains("kernel"),
            "{e}"
        );
    }

    #[test]
    fn ring_bytes_for_one_event() {
        // The event header, 112 bytes of room for the path, the data's size
        // class, the kernel's 8-byte record header.
        let fixed = std::mem::offset_of!(types::spf_event, path) as u64;
        assert_eq!(fixed % 8, 0);
        let named = fixed + 112;
        assert_eq!(UnixConfig::ring_bytes_for_event(1), named + 64 + 8);
        assert_eq!(UnixConfig::ring_bytes_for_event(64), named + 64 + 8);
        assert_eq!(UnixConfig::ring_bytes_for_event(65), named + 512 + 8);
        assert_eq!(UnixConfig::ring_bytes_for_event(4096), named + 4096 + 8);
        // Past 4 KiB: 32 KiB chunk records (24-byte header), then the header.
        let chunk = 24 + 32768 + 8;
        let header = named + 8;
        assert_eq!(UnixConfig::ring_bytes_for_event(4097), chunk + header);
        assert_eq!(UnixConfig::ring_bytes_for_event(65536), 2 * chunk + header);
        assert_eq!(
            UnixConfig::ring_bytes_for_event(65537),
            2 * chunk + (24 + 512 + 8) + header
        );
        assert_eq!(
            UnixConfig::ring_bytes_for_event(MAX_SNAPLEN),
            512 * chunk + header
        );
        // Never smaller for a larger snaplen.
        let mut last = 0;
        for s in (1..=200_000).step_by(97) {
            let n = UnixConfig::ring_bytes_for_event(s);
            assert!(n >= last, "{s}");
            last = n;
        }
    }

    #[test]
    fn a_small_ring_lowers_the_default_snaplen() {
        assert_eq!(
            UnixConfig::default_snaplen(DEFAULT_RING_SIZE),
            DEFAULT_SNAPLEN
        );
        assert_eq!(UnixConfig::default_snaplen(2 << 20), DEFAULT_SNAPLEN);
        assert_eq!(UnixConfig::default_snaplen(1 << 20), 512 << 10);
        assert_eq!(UnixConfig::default_snaplen(131_072), 65_536);
        assert_eq!(UnixConfig::default_snaplen(4096), 512);
        let reg = full_registry();
        let cfg = spf_pipeline::config::parse(
            &reg,
            "t.toml",
            "[source]\ntype = \"unix\"\nring_size = 1048576\n",
        )
        .unwrap();
        assert!(format!("{:?}", cfg.source).contains("snaplen: 524288"));
    }

    #[test]
    fn a_ring_too_small_for_one_event_is_refused() {
        let reg = full_registry();
        let e = spf_pipeline::config::parse(
            &reg,
            "t.toml",
            "[source]\ntype = \"unix\"\nsnaplen = 65536\nring_size = 65536\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("t.toml:4:13: source.ring_size")
                && e.contains("snaplen = 65536")
                && e.contains("at least 131072"),
            "{e}"
        );
        // A snaplen set needs its ring.
        let e = spf_pipeline::config::parse(
            &reg,
            "t.toml",
            "[source]\ntype = \"unix\"\nsnaplen = 1048576\nring_size = 1048576\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("source.ring_size") && e.contains("at least 2097152"),
            "{e}"
        );
        for ok in [
            "ring_size = 2097152",
            "snaplen = 65536\nring_size = 131072",
            "snaplen = 64\nring_size = 4096",
            "snaplen = 16777216",
        ] {
            let text = format!("[source]\ntype = \"unix\"\n{ok}\n");
            if let Err(e) = spf_pipeline::config::parse(&reg, "t.toml", &text) {
                panic!("{ok}: {e}");
            }
        }
    }

    #[test]
    fn bpf_settings() {
        let cfg = UnixConfig {
            paths: vec![PathFilter::parse("@bus*").unwrap()],
            pids: vec![1, 2],
            comms: vec!["curl".into()],
            direction: DirectionFilter::Recv,
            include_self: true,
            ..UnixConfig::default()
        };
        let b = cfg.to_bpf();
        assert_eq!(
            (b.n_paths, b.n_pids, b.n_comms, b.dir_mask, b.exclude_tgid),
            (1, 2, 1, 2, 0)
        );
        assert_eq!(&b.paths[0].bytes[..4], b"\0bus");
        assert_eq!((b.paths[0].len, b.paths[0].prefix), (4, 1));
        assert_eq!(
            b.comms[0][..5],
            [b'c' as i8, b'u' as i8, b'r' as i8, b'l' as i8, 0]
        );
    }
}
