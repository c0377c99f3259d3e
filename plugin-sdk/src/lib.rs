//! Write spf decoders and sinks as shared libraries.
//!
//! spf loads plugins with `dlopen` at run time. Rust trait objects do not cross a
//! shared-library boundary safely (no stable layout, two copies of `std`), so the
//! boundary is a small C ABI: `#[repr(C)]` data and `extern "C"` function pointers.
//! This crate defines that ABI (mirrored by `include/spf_plugin.h` for C authors)
//! and two macros that turn a safe Rust impl into the exported symbols:
//!
//! ```
//! use spf_plugin::{DecoderOutput, DecoderPlugin, Event, Error};
//!
//! struct Length;
//!
//! impl DecoderPlugin for Length {
//!     fn init(_config: &str) -> Result<Self, Error> {
//!         Ok(Length)
//!     }
//!
//!     fn decode(&mut self, event: &Event<'_>, out: &mut DecoderOutput<'_>) -> Result<(), Error> {
//!         let json = format!("{{\"length\":{{\"bytes\":{}}}}}", event.data.len());
//!         out.record(&json, &format!("{} bytes", event.data.len()));
//!         Ok(())
//!     }
//! }
//!
//! spf_plugin::export_decoder!("length", Length);
//! ```
//!
//! # The contract
//!
//! * spf reads the exported [`SpfPluginDeclaration`] (symbol
//!   `spf_plugin_declaration`) before calling anything. Its first six fields (magic,
//!   ABI major and minor, kind, name, version) keep their layout in every ABI
//!   version, so a host can always say what it refused; the vtables may change with
//!   the ABI major. After the ABI check the host compares the struct sizes the
//!   declaration carries with its own and refuses the plugin on any difference, so
//!   a plugin built against a different SDK layout is refused, not mis-called.
//! * Inputs (event views, config, NDJSON lines) are borrowed for the call only.
//!   Outputs go back through host callbacks that copy them. Each side frees only
//!   what it allocated.
//! * Calls are synchronous. One instance is never called from two threads at once,
//!   but successive calls may come from different threads.
//! * Every function the macros export runs the plugin's code under `catch_unwind`:
//!   a panic becomes [`SPF_PANIC`] plus a message, never an abort of spf. Do not build
//!   plugins with `panic = "abort"`: a panic would then kill spf.

use std::ffi::{c_char, c_void};

/// `"SPFP"`: tells an spf declaration from an unrelated symbol of the same name.
pub const SPF_PLUGIN_MAGIC: u32 = 0x5350_4650;
/// Must equal the host's major.
pub const SPF_ABI_MAJOR: u32 = 1;
/// The host's minor must be at least the plugin's: a minor adds fields at the end
/// of a struct, which an older host would not know to fill or call. A host lends
/// a plugin of an older minor the structs of that minor (the older layout is a
/// prefix of the newer one), so old plugins keep working unchanged.
///
/// Minor 1 added the connection view to [`SpfEventView`] (`side`, `role`,
/// `via`, `pos`, `peer_socket`, `cgroup`, `peer_comm`, `node`), the optional
/// [`SpfDecoderVtable::detect`] and [`SpfDecoderOut::exchange`].
pub const SPF_ABI_MINOR: u32 = 1;

pub const SPF_KIND_DECODER: u32 = 1;
pub const SPF_KIND_SINK: u32 = 2;

/// Return codes of plugin calls.
pub const SPF_OK: i32 = 0;
/// The plugin reported an error; `last_error` holds its message.
pub const SPF_ERROR: i32 = 1;
/// The plugin panicked; `last_error` holds the panic message.
pub const SPF_PANIC: i32 = 2;

pub const SPF_DIR_SEND: u32 = 0;
pub const SPF_DIR_RECV: u32 = 1;

pub const SPF_SOCK_STREAM: u32 = 0;
pub const SPF_SOCK_DGRAM: u32 = 1;
pub const SPF_SOCK_SEQPACKET: u32 = 2;

pub const SPF_ROLE_UNKNOWN: u32 = 0;
pub const SPF_ROLE_CLIENT: u32 = 1;
pub const SPF_ROLE_SERVER: u32 = 2;

/// `SpfEventView::via`: the syscall view (each event is one syscall).
pub const SPF_VIA_NONE: u32 = 0;
/// Connection view, the sender's own syscall held the bytes.
pub const SPF_VIA_SEND: u32 = 1;
/// Connection view, the receiver's syscall held them (no send did).
pub const SPF_VIA_RECV: u32 = 2;

/// The name of the exported [`SpfPluginDeclaration`].
pub const SPF_DECLARATION_SYMBOL: &str = "spf_plugin_declaration";

/// A borrowed byte string. `ptr` may be null when `len` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SpfBytes {
    pub ptr: *const u8,
    pub len: usize,
}

impl SpfBytes {
    pub const EMPTY: SpfBytes = SpfBytes {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub fn from_slice(s: &[u8]) -> Self {
        SpfBytes {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// `ptr` must point to `len` readable bytes for `'a` (or `len` must be 0).
    pub unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            &[]
        } else {
            // SAFETY: the caller guarantees ptr/len describe a live buffer.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// One event, lent to the plugin for one `decode` call. `comm` and `path` are
/// UTF-8; `data` holds the captured bytes (fewer than `len` when `truncated`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SpfEventView {
    pub seq: u64,
    pub ts_ns: u64,
    pub time_ns: u64,
    pub conn: u64,
    /// The socket the syscall used (its inode), 0 when unknown: tells the two ends
    /// of one connection apart when both are captured.
    pub socket: u64,
    pub len: u64,
    pub pid: u32,
    pub tid: u32,
    pub peer_pid: u32,
    /// `SPF_DIR_*`
    pub dir: u32,
    /// `SPF_SOCK_*`
    pub sock: u32,
    /// 1 when `data` holds fewer bytes than `len`.
    pub truncated: u32,
    pub comm: SpfBytes,
    pub path: SpfBytes,
    pub data: SpfBytes,
    // ABI 1.1: the connection view. Plugins of minor 0 are lent the struct up to
    // here.
    /// Which of the connection's two byte streams the bytes belong to: in the
    /// connection view 0 for bytes from the client (roles unknown: from the lower
    /// socket inode), 1 for bytes from the server; in the syscall view 0 for what
    /// this end sent, 1 for what it received. Key per-stream state by
    /// `(conn, side)` in the connection view.
    pub side: u32,
    /// `SPF_ROLE_*`: which end of the connection the sender (`pid`) is.
    pub role: u32,
    /// `SPF_VIA_*`: `SPF_VIA_NONE` in the syscall view.
    pub via: u32,
    /// 1 when `pos` is known.
    pub has_pos: u32,
    /// Where `data` begins in this direction's stream.
    pub pos: u64,
    /// The socket at the other end (its inode), 0 when unknown.
    pub peer_socket: u64,
    /// The cgroup id of `pid`, 0 when unknown.
    pub cgroup: u64,
    /// The command name at the other end, empty when unknown.
    pub peer_comm: SpfBytes,
    /// The machine the event was captured on, empty for this one.
    pub node: SpfBytes,
}

/// Host callbacks a decoder hands its output to. Both copy what they are given
/// before returning; a non-zero return means the host rejected the output (it then
/// records an error itself), which the plugin may ignore.
#[repr(C)]
pub struct SpfDecoderOut {
    pub ctx: *mut c_void,
    /// One record: `json` is a JSON object whose keys become top-level NDJSON fields
    /// (by convention one object named after the plugin); `text` is the human
    /// rendering (may be empty).
    pub record: unsafe extern "C" fn(
        ctx: *mut c_void,
        json: *const u8,
        json_len: usize,
        text: *const u8,
        text_len: usize,
    ) -> i32,
    /// An error record about the input (malformed protocol data). `code` may be
    /// empty.
    pub error: unsafe extern "C" fn(
        ctx: *mut c_void,
        code: *const u8,
        code_len: usize,
        message: *const u8,
        message_len: usize,
    ) -> i32,
    /// ABI 1.1: one request/response exchange, as a JSON object with the keys of
    /// [`Exchange`] (`protocol` required; see [`Exchange::to_json`]). The host
    /// checks it and writes an `exchange` record, or an error record naming
    /// what was wrong. Only lent to plugins of minor 1 or later.
    pub exchange: unsafe extern "C" fn(ctx: *mut c_void, json: *const u8, json_len: usize) -> i32,
}

/// A decoder's functions. Entries marked optional may be null.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SpfDecoderVtable {
    /// Creates an instance from its config (a JSON object, UTF-8, not
    /// NUL-terminated). On failure returns non-zero and leaves the message for
    /// `last_error(NULL)` on the same thread.
    pub init: Option<
        unsafe extern "C" fn(
            config: *const u8,
            config_len: usize,
            instance: *mut *mut c_void,
        ) -> i32,
    >,
    pub decode: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            event: *const SpfEventView,
            out: *const SpfDecoderOut,
        ) -> i32,
    >,
    /// Optional: `count` events were lost; drop state that needs every byte.
    pub lost: Option<
        unsafe extern "C" fn(instance: *mut c_void, count: u64, out: *const SpfDecoderOut) -> i32,
    >,
    /// Optional: a connection ended.
    pub closed: Option<
        unsafe extern "C" fn(instance: *mut c_void, conn: u64, out: *const SpfDecoderOut) -> i32,
    >,
    /// Optional: the input ended.
    pub finish:
        Option<unsafe extern "C" fn(instance: *mut c_void, out: *const SpfDecoderOut) -> i32>,
    /// The message of the last failed call on `instance` (or of the last failed
    /// `init` on this thread when `instance` is null). Owned by the plugin, valid
    /// until the next call into it.
    pub last_error:
        Option<unsafe extern "C" fn(instance: *mut c_void, len: *mut usize) -> *const u8>,
    pub destroy: Option<unsafe extern "C" fn(instance: *mut c_void)>,
    /// Optional (ABI 1.1): how sure the plugin is, from 0 (not its protocol) to
    /// 100 (certain), that a connection whose first bytes in one direction are
    /// `data` speaks its protocol; `event` is the event they came with (its
    /// `side` and `role` say who sent them). The `auto` decoder asks every
    /// candidate and picks the surest. Must not keep state about the bytes:
    /// the same bytes are handed to `decode` if the plugin is picked.
    pub detect: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            data: *const u8,
            data_len: usize,
            event: *const SpfEventView,
        ) -> u32,
    >,
}

/// A sink's functions. Entries marked optional may be null.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SpfSinkVtable {
    pub init: Option<
        unsafe extern "C" fn(
            config: *const u8,
            config_len: usize,
            instance: *mut *mut c_void,
        ) -> i32,
    >,
    /// One record as one NDJSON line: a complete JSON object, without the newline.
    pub write: Option<
        unsafe extern "C" fn(instance: *mut c_void, line: *const u8, line_len: usize) -> i32,
    >,
    /// Optional: push buffered output out. Called at least once a second and at
    /// shutdown, before `destroy`.
    pub flush: Option<unsafe extern "C" fn(instance: *mut c_void) -> i32>,
    pub last_error:
        Option<unsafe extern "C" fn(instance: *mut c_void, len: *mut usize) -> *const u8>,
    pub destroy: Option<unsafe extern "C" fn(instance: *mut c_void)>,
}

/// What a plugin exports as `spf_plugin_declaration`.
#[repr(C)]
#[derive(Debug)]
pub struct SpfPluginDeclaration {
    pub magic: u32,
    pub abi_major: u32,
    pub abi_minor: u32,
    /// `SPF_KIND_*`
    pub kind: u32,
    /// NUL-terminated; lowercase letters, digits, `-` and `_`.
    pub name: *const c_char,
    /// NUL-terminated, e.g. `1.2.0`.
    pub version: *const c_char,
    /// Set for decoders, null for sinks.
    pub decoder: *const SpfDecoderVtable,
    /// Set for sinks, null for decoders.
    pub sink: *const SpfSinkVtable,
    /// `size_of` each struct that crosses the boundary, as the plugin was built.
    /// The host refuses a plugin whose sizes differ from its own before calling
    /// anything: a struct that grew or shrank under an unchanged ABI number (a
    /// pre-release SDK, a hand-edited header) would otherwise be read past its end.
    /// Set by the export macros; C plugins set them with `sizeof`.
    pub declaration_size: u32,
    pub event_view_size: u32,
    pub decoder_out_size: u32,
    pub decoder_vtable_size: u32,
    pub sink_vtable_size: u32,
}

impl SpfPluginDeclaration {
    /// The struct sizes of this SDK, in declaration order, each with the name
    /// messages use for it.
    pub const SIZES: [(&'static str, u32); 5] = [
        (
            "SpfPluginDeclaration",
            size_of::<SpfPluginDeclaration>() as u32,
        ),
        ("SpfEventView", size_of::<SpfEventView>() as u32),
        ("SpfDecoderOut", size_of::<SpfDecoderOut>() as u32),
        ("SpfDecoderVtable", size_of::<SpfDecoderVtable>() as u32),
        ("SpfSinkVtable", size_of::<SpfSinkVtable>() as u32),
    ];

    /// The sizes this declaration carries, in the order of [`Self::SIZES`].
    pub const fn sizes(&self) -> [u32; 5] {
        [
            self.declaration_size,
            self.event_view_size,
            self.decoder_out_size,
            self.decoder_vtable_size,
            self.sink_vtable_size,
        ]
    }
}

// SAFETY: a declaration is immutable static data (pointers to string literals and
// static vtables), so sharing it between threads is sound.
unsafe impl Sync for SpfPluginDeclaration {}

/// The error a plugin returns; anything that implements `std::error::Error`, or a
/// `String`/`&str` via `.into()`, converts into it with `?`.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Which way the bytes went, seen from the process that made the syscall. spf's
/// pipeline uses this very type: it is defined once, here, for both sides of the
/// plugin boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Send,
    Recv,
}

impl Direction {
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Send => "send",
            Direction::Recv => "recv",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "send" => Some(Direction::Send),
            "recv" => Some(Direction::Recv),
            _ => None,
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The AF_UNIX socket type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SockKind {
    Stream,
    Dgram,
    Seqpacket,
}

impl SockKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            SockKind::Stream => "stream",
            SockKind::Dgram => "dgram",
            SockKind::Seqpacket => "seqpacket",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stream" => Some(SockKind::Stream),
            "dgram" => Some(SockKind::Dgram),
            "seqpacket" => Some(SockKind::Seqpacket),
            _ => None,
        }
    }
}

impl std::fmt::Display for SockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which end of a connection a process is: the one that connected (`Client`) or
/// the one that accepted (`Server`). `Unknown` where the kernel cannot tell (a
/// socketpair, a datagram socket, a capture without roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    #[default]
    Unknown,
    Client,
    Server,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Client => "client",
            Role::Server => "server",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "unknown" => Some(Role::Unknown),
            "client" => Some(Role::Client),
            "server" => Some(Role::Server),
            _ => None,
        }
    }

    /// The role of the other end.
    pub const fn other(self) -> Self {
        match self {
            Role::Unknown => Role::Unknown,
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event, borrowed for one `decode` call.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub seq: u64,
    /// Kernel clock, nanoseconds.
    pub ts_ns: u64,
    /// Wall clock, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The same for both directions and both ends of one connection.
    pub conn: u64,
    /// The socket the syscall used (its inode), 0 when unknown. With both ends of
    /// a connection captured, one end's sends are the other's receives: key
    /// per-stream state by `(conn, socket, dir)`.
    pub socket: u64,
    /// Bytes the syscall really moved.
    pub len: u64,
    pub pid: u32,
    pub tid: u32,
    pub peer_pid: u32,
    pub dir: Direction,
    pub sock: SockKind,
    /// True when `data` holds fewer bytes than `len`: the stream has a gap.
    pub truncated: bool,
    pub comm: &'a str,
    pub path: &'a str,
    pub data: &'a [u8],
    /// Which of the connection's two byte streams the bytes belong to, 0 or 1.
    /// Connection view: 0 from the client (roles unknown: from the lower socket
    /// inode), 1 from the server, so `(conn, side)` keys one direction of one
    /// connection. Syscall view: 0 for what this end (`socket`) sent, 1 for what
    /// it received.
    pub side: u8,
    /// Which end of the connection the sender (`pid`) is.
    pub role: Role,
    /// Connection view only: whose syscall captured the bytes (`Send`: the
    /// sender's, `Recv`: the receiver's). `None` in the syscall view.
    pub via: Option<Direction>,
    /// Where `data` begins in this direction's stream, when known.
    pub pos: Option<u64>,
    /// The socket at the other end (its inode), 0 when unknown.
    pub peer_socket: u64,
    /// The cgroup id of `pid`, 0 when unknown.
    pub cgroup: u64,
    /// The command name of the process at the other end, empty when unknown.
    pub peer_comm: &'a str,
    /// The machine the event was captured on, empty for this one.
    pub node: &'a str,
}

impl Default for Event<'_> {
    fn default() -> Self {
        Event {
            seq: 0,
            ts_ns: 0,
            time_ns: 0,
            conn: 0,
            socket: 0,
            len: 0,
            pid: 0,
            tid: 0,
            peer_pid: 0,
            dir: Direction::Send,
            sock: SockKind::Stream,
            truncated: false,
            comm: "",
            path: "",
            data: &[],
            side: 0,
            role: Role::Unknown,
            via: None,
            pos: None,
            peer_socket: 0,
            cgroup: 0,
            peer_comm: "",
            node: "",
        }
    }
}

impl<'a> Event<'a> {
    /// # Safety
    /// Every pointer in `view` must be valid for `'a`.
    pub unsafe fn from_view(view: &'a SpfEventView) -> Self {
        // SAFETY: forwarded from the caller.
        let (comm, path, data, peer_comm, node) = unsafe {
            (
                view.comm.as_slice(),
                view.path.as_slice(),
                view.data.as_slice(),
                view.peer_comm.as_slice(),
                view.node.as_slice(),
            )
        };
        Event {
            seq: view.seq,
            ts_ns: view.ts_ns,
            time_ns: view.time_ns,
            conn: view.conn,
            socket: view.socket,
            len: view.len,
            pid: view.pid,
            tid: view.tid,
            peer_pid: view.peer_pid,
            dir: if view.dir == SPF_DIR_RECV {
                Direction::Recv
            } else {
                Direction::Send
            },
            sock: match view.sock {
                SPF_SOCK_DGRAM => SockKind::Dgram,
                SPF_SOCK_SEQPACKET => SockKind::Seqpacket,
                _ => SockKind::Stream,
            },
            truncated: view.truncated != 0,
            comm: std::str::from_utf8(comm).unwrap_or(""),
            path: std::str::from_utf8(path).unwrap_or(""),
            data,
            side: u8::from(view.side != 0),
            role: match view.role {
                SPF_ROLE_CLIENT => Role::Client,
                SPF_ROLE_SERVER => Role::Server,
                _ => Role::Unknown,
            },
            via: match view.via {
                SPF_VIA_SEND => Some(Direction::Send),
                SPF_VIA_RECV => Some(Direction::Recv),
                _ => None,
            },
            pos: (view.has_pos != 0).then_some(view.pos),
            peer_socket: view.peer_socket,
            cgroup: view.cgroup,
            peer_comm: std::str::from_utf8(peer_comm).unwrap_or(""),
            node: std::str::from_utf8(node).unwrap_or(""),
        }
    }
}

/// One end of an [`Exchange`]: a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Endpoint<'a> {
    pub pid: u32,
    pub comm: &'a str,
}

/// One request paired with its response (or with why none came), as
/// [`DecoderOutput::exchange`] hands it to spf, which writes it as an
/// `exchange` record like those of its own HTTP and gRPC decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Exchange<'a> {
    /// The protocol, e.g. `resp`: lowercase letters, digits, `-` and `_`.
    pub protocol: &'a str,
    pub method: Option<&'a str>,
    /// What the request was about (a path, a key, a topic).
    pub path: Option<&'a str>,
    pub authority: Option<&'a str>,
    /// The protocol's status code, where it has one.
    pub status: Option<u32>,
    pub grpc_status: Option<u32>,
    pub grpc_message: Option<&'a str>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Kernel time (the events' `ts_ns`) of the request's first byte.
    pub started_ns: u64,
    /// Wall-clock time (the events' `time_ns`) of the request's first byte.
    pub started_time_ns: u64,
    /// From the request's first byte to the response's last; `None` when no
    /// response came.
    pub latency_ns: Option<u64>,
    /// Why the exchange did not complete normally, e.g. `no response`.
    pub error: Option<&'a str>,
    /// The processes at each end; spf fills in what it knows from the event
    /// the exchange is emitted with when these are `None`.
    pub client: Option<Endpoint<'a>>,
    pub server: Option<Endpoint<'a>>,
}

impl Exchange<'_> {
    /// The JSON object [`SpfDecoderOut::exchange`] takes: every key of this
    /// struct, `null` or absent for `None`.
    pub fn to_json(&self) -> String {
        let mut j = JsonObject::new();
        j.str("protocol", Some(self.protocol));
        j.str("method", self.method);
        j.str("path", self.path);
        j.str("authority", self.authority);
        j.num("status", self.status.map(u64::from));
        j.num("grpc_status", self.grpc_status.map(u64::from));
        j.str("grpc_message", self.grpc_message);
        j.num("request_bytes", Some(self.request_bytes));
        j.num("response_bytes", Some(self.response_bytes));
        j.num("started_ns", Some(self.started_ns));
        j.num("started_time_ns", Some(self.started_time_ns));
        j.num("latency_ns", self.latency_ns);
        j.str("error", self.error);
        for (key, end) in [("client", self.client), ("server", self.server)] {
            if let Some(e) = end {
                j.raw_key(key);
                let mut inner = JsonObject::new();
                inner.num("pid", Some(u64::from(e.pid)));
                inner.str("comm", Some(e.comm));
                j.out.push_str(&inner.finish());
            }
        }
        j.finish()
    }
}

/// A tiny JSON object writer: the SDK has no dependencies, and an exchange
/// needs only strings and numbers.
struct JsonObject {
    out: String,
}

impl JsonObject {
    fn new() -> Self {
        JsonObject {
            out: String::from("{"),
        }
    }

    fn raw_key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        json_string(key, &mut self.out);
        self.out.push(':');
    }

    fn str(&mut self, key: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.raw_key(key);
            json_string(v, &mut self.out);
        }
    }

    fn num(&mut self, key: &str, v: Option<u64>) {
        if let Some(v) = v {
            self.raw_key(key);
            self.out.push_str(&v.to_string());
        }
    }

    fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Appends `s` as a JSON string: quotes, backslashes and control characters
/// escaped (RFC 8259), everything else as it is.
pub fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 15] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Where a decoder puts its records; the host copies each one at once.
pub struct DecoderOutput<'a> {
    raw: &'a SpfDecoderOut,
}

impl<'a> DecoderOutput<'a> {
    /// # Safety
    /// `raw` must be the host's callbacks for the current call.
    pub unsafe fn from_raw(raw: &'a SpfDecoderOut) -> Self {
        DecoderOutput { raw }
    }

    /// Emits one record. `json` must be a JSON object; its keys become top-level
    /// NDJSON fields, so put everything under one key named after the plugin (e.g.
    /// `{"resp":{...}}`). `text` is the line(s) the pretty output shows. Returns
    /// false when the host rejected the record (it reports why itself).
    pub fn record(&mut self, json: &str, text: &str) -> bool {
        // SAFETY: the host's callback copies both buffers before returning.
        unsafe {
            (self.raw.record)(
                self.raw.ctx,
                json.as_ptr(),
                json.len(),
                text.as_ptr(),
                text.len(),
            ) == SPF_OK
        }
    }

    /// Emits one exchange: a request paired with its response. Returns false
    /// when the host rejected it (it reports why itself, as an error record).
    pub fn exchange(&mut self, exchange: &Exchange<'_>) -> bool {
        let json = exchange.to_json();
        // SAFETY: the host's callback copies the buffer before returning; an
        // SDK plugin declares minor 1, so the host lends it this callback.
        unsafe { (self.raw.exchange)(self.raw.ctx, json.as_ptr(), json.len()) == SPF_OK }
    }

    /// Emits an error record about the input, e.g. malformed protocol data. `code`
    /// names the protocol's error where there is one.
    pub fn error(&mut self, code: Option<&str>, message: &str) {
        let code = code.unwrap_or("");
        // SAFETY: as in `record`.
        unsafe {
            (self.raw.error)(
                self.raw.ctx,
                code.as_ptr(),
                code.len(),
                message.as_ptr(),
                message.len(),
            );
        }
    }
}

/// A decoder: turns events into records, keeping whatever per-connection state it
/// needs. Malformed input should become [`DecoderOutput::error`] records; returning
/// `Err` (or panicking) costs the event and is reported by spf as a plugin failure.
pub trait DecoderPlugin: Send + Sized + 'static {
    /// `config` is the plugin's TOML table as a JSON object (without `type`, `path`
    /// and the host's own keys).
    fn init(config: &str) -> Result<Self, Error>;

    fn decode(&mut self, event: &Event<'_>, out: &mut DecoderOutput<'_>) -> Result<(), Error>;

    /// `count` events were lost: state that needs every byte can no longer be trusted.
    fn lost(&mut self, _count: u64, _out: &mut DecoderOutput<'_>) -> Result<(), Error> {
        Ok(())
    }

    /// A connection ended; its state can go.
    fn closed(&mut self, _conn: u64, _out: &mut DecoderOutput<'_>) -> Result<(), Error> {
        Ok(())
    }

    /// The input ended; emit whatever is still held back.
    fn finish(&mut self, _out: &mut DecoderOutput<'_>) -> Result<(), Error> {
        Ok(())
    }

    /// How sure the plugin is, from 0 (not its protocol) to 100 (certain), that
    /// a connection whose first bytes in one direction are `data` speaks its
    /// protocol (`event.side`/`event.role` say who sent them). Asked by the
    /// `auto` decoder before any `decode` of that connection; keep no state
    /// here. Values above 100 count as 100, a panic as 0.
    fn detect(&mut self, _data: &[u8], _event: &Event<'_>) -> u8 {
        0
    }
}

/// A sink: receives every record as one NDJSON line. `Drop` runs at shutdown,
/// after the last `flush`.
pub trait SinkPlugin: Send + Sized + 'static {
    fn init(config: &str) -> Result<Self, Error>;

    /// One record: a complete JSON object, without the trailing newline.
    fn write(&mut self, line: &str) -> Result<(), Error>;

    fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// Exports a [`DecoderPlugin`] as an spf plugin: `export_decoder!("name", Type);`.
/// The version is the crate's `CARGO_PKG_VERSION`. Use it once per library.
#[macro_export]
macro_rules! export_decoder {
    ($name:literal, $ty:ty) => {
        $crate::__spf_declaration!(
            $name,
            $crate::SPF_KIND_DECODER,
            &<$crate::__private::DecoderShim<$ty>>::VTABLE,
            ::core::ptr::null()
        );
    };
}

/// Exports a [`SinkPlugin`] as an spf plugin: `export_sink!("name", Type);`.
#[macro_export]
macro_rules! export_sink {
    ($name:literal, $ty:ty) => {
        $crate::__spf_declaration!(
            $name,
            $crate::SPF_KIND_SINK,
            ::core::ptr::null(),
            &<$crate::__private::SinkShim<$ty>>::VTABLE
        );
    };
}

/// The declaration both export macros write: one kind, one vtable.
#[doc(hidden)]
#[macro_export]
macro_rules! __spf_declaration {
    ($name:literal, $kind:expr, $decoder:expr, $sink:expr) => {
        const _: () = assert!(
            $crate::__private::valid_name($name),
            "plugin names use lowercase letters, digits, '-' and '_' (1 to 64 of them)"
        );

        #[allow(non_upper_case_globals)]
        #[unsafe(no_mangle)]
        pub static spf_plugin_declaration: $crate::SpfPluginDeclaration =
            $crate::SpfPluginDeclaration {
                magic: $crate::SPF_PLUGIN_MAGIC,
                abi_major: $crate::SPF_ABI_MAJOR,
                abi_minor: $crate::SPF_ABI_MINOR,
                kind: $kind,
                name: concat!($name, "\0").as_ptr().cast(),
                version: concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast(),
                decoder: $decoder,
                sink: $sink,
                declaration_size: ::core::mem::size_of::<$crate::SpfPluginDeclaration>() as u32,
                event_view_size: ::core::mem::size_of::<$crate::SpfEventView>() as u32,
                decoder_out_size: ::core::mem::size_of::<$crate::SpfDecoderOut>() as u32,
                decoder_vtable_size: ::core::mem::size_of::<$crate::SpfDecoderVtable>() as u32,
                sink_vtable_size: ::core::mem::size_of::<$crate::SpfSinkVtable>() as u32,
            };
    };
}

/// Rules shared by the SDK macros and the host's handshake.
pub const fn valid_name_bytes(b: &[u8]) -> bool {
    if b.is_empty() || b.len() > 64 {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

#[doc(hidden)]
pub mod __private {
    use std::any::Any;
    use std::cell::{Cell, RefCell};
    use std::ffi::c_void;
    use std::marker::PhantomData;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Once;

    use super::*;

    pub const fn valid_name(name: &str) -> bool {
        valid_name_bytes(name.as_bytes())
    }

    /// What the host's `instance` pointer points to.
    struct Instance<T> {
        plugin: T,
        /// The message `last_error` hands out; kept here so that the pointer stays
        /// valid until the next call.
        error: Vec<u8>,
    }

    thread_local! {
        static INIT_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        static IN_CALL: Cell<bool> = const { Cell::new(false) };
        static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    /// The panic hook of the plugin's own copy of std: inside a call from spf it
    /// keeps the message (with its location) for `last_error` instead of printing,
    /// because spf reports it as a record; elsewhere (threads the plugin started) it
    /// defers to the previous hook.
    fn install_panic_hook() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if IN_CALL.with(|c| c.get()) {
                    let msg = payload_str(info.payload());
                    let text = match info.location() {
                        Some(l) => format!("{msg} (at {}:{})", l.file(), l.line()),
                        None => msg.to_string(),
                    };
                    PANIC_MESSAGE.with(|p| *p.borrow_mut() = Some(text));
                } else {
                    previous(info);
                }
            }));
        });
    }

    fn payload_str(p: &(dyn Any + Send)) -> &str {
        if let Some(s) = p.downcast_ref::<&str>() {
            s
        } else if let Some(s) = p.downcast_ref::<String>() {
            s
        } else {
            "(non-string panic payload)"
        }
    }

    /// Runs `f` as one plugin call: catches a panic, and returns the code plus the
    /// message to keep.
    fn guarded<R>(f: impl FnOnce() -> Result<R, Error>) -> Result<R, (i32, Vec<u8>)> {
        IN_CALL.with(|c| c.set(true));
        let r = catch_unwind(AssertUnwindSafe(f));
        IN_CALL.with(|c| c.set(false));
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err((SPF_ERROR, e.to_string().into_bytes())),
            Err(payload) => {
                let msg = PANIC_MESSAGE
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_else(|| payload_str(&*payload).to_string());
                // A payload whose Drop panics would unwind into the host; leaking
                // it is the safe choice for a value that is about to go anyway.
                std::mem::forget(payload);
                Err((SPF_PANIC, msg.into_bytes()))
            }
        }
    }

    unsafe fn init<T>(
        config: *const u8,
        config_len: usize,
        instance: *mut *mut c_void,
        make: fn(&str) -> Result<T, Error>,
    ) -> i32 {
        install_panic_hook();
        // SAFETY: the host lends config_len bytes at config for this call.
        let bytes = unsafe {
            SpfBytes {
                ptr: config,
                len: config_len,
            }
            .as_slice()
        };
        let r = guarded(|| {
            let text =
                std::str::from_utf8(bytes).map_err(|e| format!("config is not UTF-8: {e}"))?;
            make(if text.is_empty() { "{}" } else { text })
        });
        match r {
            Ok(plugin) => {
                let boxed = Box::new(Instance {
                    plugin,
                    error: Vec::new(),
                });
                // SAFETY: the host passes a valid out-pointer.
                unsafe { *instance = Box::into_raw(boxed).cast() };
                SPF_OK
            }
            Err((code, msg)) => {
                INIT_ERROR.with(|e| *e.borrow_mut() = msg);
                code
            }
        }
    }

    unsafe fn call<T>(instance: *mut c_void, f: impl FnOnce(&mut T) -> Result<(), Error>) -> i32 {
        if instance.is_null() {
            return SPF_ERROR;
        }
        // SAFETY: the host passes back the pointer `init` made, never from two
        // threads at once.
        let inst = unsafe { &mut *instance.cast::<Instance<T>>() };
        match guarded(|| f(&mut inst.plugin)) {
            Ok(()) => SPF_OK,
            Err((code, msg)) => {
                inst.error = msg;
                code
            }
        }
    }

    unsafe fn last_error<T>(instance: *mut c_void, len: *mut usize) -> *const u8 {
        let (ptr, n) = if instance.is_null() {
            INIT_ERROR.with(|e| {
                let e = e.borrow();
                (e.as_ptr(), e.len())
            })
        } else {
            // SAFETY: as in `call`.
            let inst = unsafe { &*instance.cast::<Instance<T>>() };
            (inst.error.as_ptr(), inst.error.len())
        };
        if !len.is_null() {
            // SAFETY: the host passes a valid out-pointer or null.
            unsafe { *len = n };
        }
        ptr
    }

    unsafe fn destroy<T>(instance: *mut c_void) {
        if instance.is_null() {
            return;
        }
        // SAFETY: made by Box::into_raw in `init`; the host destroys it once.
        let inst = unsafe { Box::from_raw(instance.cast::<Instance<T>>()) };
        // Drop may run user code (a sink writing its last summary): keep its panic
        // inside the plugin too.
        let _ = guarded(move || {
            drop(inst);
            Ok(())
        });
    }

    pub struct DecoderShim<T>(PhantomData<T>);

    impl<T: DecoderPlugin> DecoderShim<T> {
        /// Calls `f` on the instance with the host's output callbacks for this
        /// call, refusing a null callback table.
        ///
        /// # Safety
        /// `instance` and `out` as the host passes them to a vtable function.
        unsafe fn with_out(
            instance: *mut c_void,
            out: *const SpfDecoderOut,
            f: impl FnOnce(&mut T, &mut DecoderOutput<'_>) -> Result<(), Error>,
        ) -> i32 {
            if out.is_null() {
                return SPF_ERROR;
            }
            // SAFETY: the host lends the callbacks for this call.
            let mut out = unsafe { DecoderOutput::from_raw(&*out) };
            // SAFETY: forwarded from the host.
            unsafe { call::<T>(instance, |p| f(p, &mut out)) }
        }

        pub const VTABLE: SpfDecoderVtable = SpfDecoderVtable {
            init: Some(Self::init),
            decode: Some(Self::decode),
            lost: Some(Self::lost),
            closed: Some(Self::closed),
            finish: Some(Self::finish),
            last_error: Some(last_error_shim::<T>),
            destroy: Some(destroy_shim::<T>),
            detect: Some(Self::detect),
        };

        unsafe extern "C" fn init(
            config: *const u8,
            config_len: usize,
            instance: *mut *mut c_void,
        ) -> i32 {
            // SAFETY: forwarded from the host.
            unsafe { init::<T>(config, config_len, instance, T::init) }
        }

        unsafe extern "C" fn detect(
            instance: *mut c_void,
            data: *const u8,
            data_len: usize,
            event: *const SpfEventView,
        ) -> u32 {
            if event.is_null() || instance.is_null() {
                return 0;
            }
            // SAFETY: the host lends the view and the bytes for this call.
            let (event, data) = unsafe {
                (
                    Event::from_view(&*event),
                    SpfBytes {
                        ptr: data,
                        len: data_len,
                    }
                    .as_slice(),
                )
            };
            let mut sure = 0u8;
            // SAFETY: as in `call`; a failure or panic is "not mine".
            let rc = unsafe {
                call::<T>(instance, |p| {
                    sure = p.detect(data, &event);
                    Ok(())
                })
            };
            if rc == SPF_OK {
                u32::from(sure.min(100))
            } else {
                0
            }
        }

        unsafe extern "C" fn decode(
            instance: *mut c_void,
            event: *const SpfEventView,
            out: *const SpfDecoderOut,
        ) -> i32 {
            if event.is_null() {
                return SPF_ERROR;
            }
            // SAFETY: the host lends the view for this call.
            let event = unsafe { Event::from_view(&*event) };
            // SAFETY: forwarded from the host.
            unsafe { Self::with_out(instance, out, |p, out| p.decode(&event, out)) }
        }

        unsafe extern "C" fn lost(
            instance: *mut c_void,
            count: u64,
            out: *const SpfDecoderOut,
        ) -> i32 {
            // SAFETY: forwarded from the host.
            unsafe { Self::with_out(instance, out, |p, out| p.lost(count, out)) }
        }

        unsafe extern "C" fn closed(
            instance: *mut c_void,
            conn: u64,
            out: *const SpfDecoderOut,
        ) -> i32 {
            // SAFETY: forwarded from the host.
            unsafe { Self::with_out(instance, out, |p, out| p.closed(conn, out)) }
        }

        unsafe extern "C" fn finish(instance: *mut c_void, out: *const SpfDecoderOut) -> i32 {
            // SAFETY: forwarded from the host.
            unsafe { Self::with_out(instance, out, |p, out| p.finish(out)) }
        }
    }

    pub struct SinkShim<T>(PhantomData<T>);

    impl<T: SinkPlugin> SinkShim<T> {
        pub const VTABLE: SpfSinkVtable = SpfSinkVtable {
            init: Some(Self::init),
            write: Some(Self::write),
            flush: Some(Self::flush),
            last_error: Some(last_error_shim::<T>),
            destroy: Some(destroy_shim::<T>),
        };

        unsafe extern "C" fn init(
            config: *const u8,
            config_len: usize,
            instance: *mut *mut c_void,
        ) -> i32 {
            // SAFETY: forwarded from the host.
            unsafe { init::<T>(config, config_len, instance, T::init) }
        }

        unsafe extern "C" fn write(instance: *mut c_void, line: *const u8, line_len: usize) -> i32 {
            // SAFETY: the host lends the line for this call.
            let bytes = unsafe {
                SpfBytes {
                    ptr: line,
                    len: line_len,
                }
                .as_slice()
            };
            // SAFETY: forwarded from the host.
            unsafe {
                call::<T>(instance, |p| {
                    let line = std::str::from_utf8(bytes)
                        .map_err(|e| format!("line is not UTF-8: {e}"))?;
                    p.write(line)
                })
            }
        }

        unsafe extern "C" fn flush(instance: *mut c_void) -> i32 {
            // SAFETY: forwarded from the host.
            unsafe { call::<T>(instance, |p| p.flush()) }
        }
    }

    unsafe extern "C" fn last_error_shim<T>(instance: *mut c_void, len: *mut usize) -> *const u8 {
        // SAFETY: forwarded from the host.
        unsafe { last_error::<T>(instance, len) }
    }

    unsafe extern "C" fn destroy_shim<T>(instance: *mut c_void) {
        // SAFETY: forwarded from the host.
        unsafe { destroy::<T>(instance) }
    }
}
