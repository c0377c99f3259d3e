//! The stateful part: byte streams reassembled into frames per connection and
//! direction, header blocks decoded with per-direction HPACK state, gRPC messages
//! reassembled per stream, and records made of it all.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use spf_pipeline::{Decoder, Direction, Event, Out, Record};

use super::frame::{self, Header, Payload};
use super::grpc;
use super::hpack;
use super::{DataMode, Http2Config};

/// Largest gRPC message reassembled; gRPC's own default limit is 4 MiB.
const GRPC_MAX_MESSAGE: usize = 16 << 20;
/// Largest header block (HEADERS plus CONTINUATION) held while it is assembled.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Bytes held while looking for a frame boundary before older ones are dropped.
const RESYNC_WINDOW: usize = 1 << 20;
/// Frames claimed longer than this are not used to find a boundary.
const RESYNC_MAX_LEN: u32 = 256 * 1024;
/// Skipped bytes are reported at least this often while no boundary is found.
const SKIP_REPORT: u64 = 64 * 1024;
/// Connection views kept before the longest idle ones are dropped.
pub(crate) const MAX_VIEWS: usize = 8192;
/// Streams remembered per connection (path, gRPC) before the oldest are dropped.
/// They are not dropped when a stream ends: when both ends of a connection are
/// captured, the receiving end's view decodes the stream's last frames after
/// the sending end's view saw it end.
const MAX_STREAMS: usize = 4096;

/// The `http2` decoder.
pub struct Http2 {
    name: Arc<str>,
    cfg: Http2Config,
    /// One view per connection and per process seen using it. When both ends of
    /// a connection are captured, every byte shows up twice (one end's send and
    /// the other's recv); keying by process keeps the two byte streams of each
    /// (connection, direction) apart.
    views: HashMap<(u64, u64), View>,
    /// What is known of each stream (path, gRPC), per connection: shared by
    /// the views of both ends, since only one end may be captured per direction.
    conns: HashMap<u64, Streams>,
}

type Streams = HashMap<u32, StreamInfo>;

impl Http2 {
    /// Connections (per process) currently tracked.
    pub fn view_count(&self) -> usize {
        self.views.len()
    }

    pub fn new(cfg: Http2Config) -> Self {
        Http2 {
            name: Arc::from("http2"),
            cfg,
            views: HashMap::new(),
            conns: HashMap::new(),
        }
    }
}

#[derive(Default)]
struct View {
    /// Index 0: bytes this process sent; 1: bytes it received.
    flows: [Flow; 2],
    /// Sequence number of the latest event, to drop the longest idle first.
    last_seq: u64,
}

#[derive(Default)]
struct StreamInfo {
    path: Option<String>,
    grpc: bool,
    /// Some content-type of this stream was decoded (not a placeholder).
    content_type_known: bool,
    /// gRPC was inferred from the DATA itself, the content-type being unknown.
    inferred: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Mode {
    /// Nothing seen yet: the preface, a server's first SETTINGS, or neither.
    #[default]
    Start,
    Frames,
    /// Looking for a frame boundary (joined midway, or after lost bytes).
    Resync,
}

struct Flow {
    buf: Vec<u8>,
    mode: Mode,
    hpack: hpack::Decoder,
    /// Largest frame this direction may send (the peer's SETTINGS_MAX_FRAME_SIZE).
    max_frame: u32,
    /// `max_frame` came from a SETTINGS frame seen in this capture.
    max_frame_seen: bool,
    block: Option<Block>,
    grpc: HashMap<u32, grpc::Messages>,
    /// Reused for each header block's fields.
    scratch: Vec<hpack::Field>,
    /// Whether this direction's HEADERS carry requests or responses.
    role: Option<Role>,
    /// Requests and responses were both seen: two byte streams are interleaved.
    mixed: bool,
    /// Bytes dropped while looking for a frame boundary, not yet reported.
    skipped: u64,
    /// The resync began at the first byte of an event and has not moved since.
    fresh: bool,
    last_event: Option<Arc<Event>>,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            buf: Vec::new(),
            mode: Mode::Start,
            hpack: hpack::Decoder::new(),
            max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
            max_frame_seen: false,
            block: None,
            grpc: HashMap::new(),
            scratch: Vec::new(),
            role: None,
            mixed: false,
            skipped: 0,
            fresh: false,
            last_event: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Requests,
    Responses,
}

/// Why a direction's header blocks cannot be decoded.
const MIXED: &str = "both ends of this connection are in one process, whose sends (and receives) of the two ends cannot be told apart";

/// A header block being assembled from HEADERS/PUSH_PROMISE and CONTINUATION.
struct Block {
    stream_id: u32,
    kind: u8,
    end_stream: bool,
    fragment: Vec<u8>,
    /// The opening frame's record, completed once the block is decoded.
    first: Map<String, Value>,
    first_text: String,
    promised: Option<u32>,
    /// Records of the CONTINUATION frames so far, emitted after the opening one.
    continuations: Vec<(Map<String, Value>, String)>,
}

/// Where records go, with what they are tied to.
struct Ctx<'a, 'b> {
    event: &'a Arc<Event>,
    streams: &'a mut Streams,
    name: &'a Arc<str>,
    cfg: &'a Http2Config,
    out: &'a mut Out<'b>,
}

impl Ctx<'_, '_> {
    fn record(&mut self, http2: Map<String, Value>, text: String) {
        let mut json = Map::with_capacity(1);
        json.insert("http2".into(), Value::Object(http2));
        self.out.push(Record::fields(
            Arc::clone(self.event),
            Arc::clone(self.name),
            json,
            text,
        ));
    }

    fn error(&mut self, code: Option<&str>, message: String) {
        self.out.push(Record::error(
            Arc::clone(self.event),
            Arc::clone(self.name),
            code.map(str::to_string),
            message,
        ));
    }
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Send => 0,
        Direction::Recv => 1,
    }
}

impl Decoder for Http2 {
    fn name(&self) -> &str {
        &self.name
    }

    fn decode(&mut self, event: &Arc<Event>, out: &mut Out<'_>) {
        // One view per socket: when both ends of a connection are captured, each
        // end's bytes are decoded on their own. Sources that do not know the
        // socket fall back to the process.
        let end = if event.socket != 0 {
            event.socket
        } else {
            u64::from(event.pid) | 1 << 63
        };
        let key = (event.conn, end);
        if self.views.len() >= MAX_VIEWS && !self.views.contains_key(&key) {
            self.evict_idle(out);
        }
        let view = self.views.entry(key).or_default();
        view.last_seq = event.seq;
        let idx = dir_index(event.dir);
        let mut ctx = Ctx {
            event,
            streams: self.conns.entry(event.conn).or_default(),
            name: &self.name,
            cfg: &self.cfg,
            out,
        };
        view.flows[idx].last_event = Some(Arc::clone(event));
        view.feed(idx, &event.data, &mut ctx);
        if event.truncated {
            let missing = event.len.saturating_sub(event.data.len() as u64);
            let note = format!("{missing} bytes of this write were not captured");
            view.gap(idx, &note, &mut ctx);
        }
    }

    fn lost(&mut self, count: u64, out: &mut Out<'_>) {
        let note = format!("{count} events were lost");
        for view in self.views.values_mut() {
            for idx in 0..2 {
                let Some(event) = view.flows[idx].last_event.clone() else {
                    // No bytes seen on this flow: whatever comes next may not be
                    // its beginning.
                    let f = &mut view.flows[idx];
                    f.mode = Mode::Resync;
                    f.fresh = true;
                    f.hpack.join_midway();
                    if !f.max_frame_seen {
                        f.max_frame = self.cfg.max_frame_size;
                    }
                    continue;
                };
                let mut scratch = Streams::new();
                let mut ctx = Ctx {
                    event: &event,
                    streams: &mut scratch,
                    name: &self.name,
                    cfg: &self.cfg,
                    out,
                };
                view.gap(idx, &note, &mut ctx);
            }
        }
    }

    fn closed(&mut self, conn: u64, out: &mut Out<'_>) {
        let keys: Vec<(u64, u64)> = self.views.keys().filter(|k| k.0 == conn).copied().collect();
        for k in keys {
            if let Some(mut view) = self.views.remove(&k) {
                view.flush(&self.name, &self.cfg, "connection closed", out);
            }
        }
        self.conns.remove(&conn);
    }

    fn finish(&mut self, out: &mut Out<'_>) {
        let mut keys: Vec<(u64, u64)> = self.views.keys().copied().collect();
        keys.sort_unstable();
        for k in keys {
            if let Some(mut view) = self.views.remove(&k) {
                view.flush(&self.name, &self.cfg, "input ended", out);
            }
        }
        self.conns.clear();
    }
}

impl Http2 {
    /// Sources may never say that a connection closed: past MAX_VIEWS, the
    /// longest idle quarter of the connections is forgotten. If one of them
    /// speaks again, it is decoded as a connection joined midway (placeholders
    /// for what its tables held), never with stale state.
    fn evict_idle(&mut self, out: &mut Out<'_>) {
        let mut by_age: Vec<(u64, (u64, u64))> =
            self.views.iter().map(|(k, v)| (v.last_seq, *k)).collect();
        by_age.sort_unstable();
        for (_, k) in by_age.into_iter().take(MAX_VIEWS / 4) {
            if let Some(mut view) = self.views.remove(&k) {
                view.flush(&self.name, &self.cfg, "connection idle, state dropped", out);
            }
        }
        let live: std::collections::HashSet<u64> = self.views.keys().map(|k| k.0).collect();
        self.conns.retain(|c, _| live.contains(c));
    }
}

impl View {
    /// Reports whatever is held back when a connection's state goes away.
    fn flush(&mut self, name: &Arc<str>, cfg: &Http2Config, why: &str, out: &mut Out<'_>) {
        for idx in 0..2 {
            let Some(event) = self.flows[idx].last_event.clone() else {
                continue;
            };
            let mut scratch = Streams::new();
            let mut ctx = Ctx {
                event: &event,
                streams: &mut scratch,
                name,
                cfg,
                out,
            };
            self.drop_partial(idx, why, &mut ctx);
        }
    }

    /// Reports and drops a partial frame, header block, or skipped bytes.
    fn drop_partial(&mut self, idx: usize, why: &str, ctx: &mut Ctx<'_, '_>) {
        let f = &mut self.flows[idx];
        if let Some(b) = f.block.take() {
            ctx.error(
                None,
                format!(
                    "{why}: header block of stream {} incomplete ({} bytes without END_HEADERS)",
                    b.stream_id,
                    b.fragment.len()
                ),
            );
        }
        match f.mode {
            Mode::Frames if !f.buf.is_empty() => {
                let msg = match Header::parse(&f.buf) {
                    Some(h) => format!(
                        "{why}: {} frame on stream {} cut short ({} of {} bytes)",
                        kind_name(h.kind),
                        h.stream_id,
                        f.buf.len(),
                        h.length as usize + frame::HEADER_LEN
                    ),
                    None => format!("{why}: {} bytes of a frame header dropped", f.buf.len()),
                };
                ctx.error(None, msg);
            }
            Mode::Start | Mode::Resync if !f.buf.is_empty() || f.skipped > 0 => {
                let n = f.skipped + f.buf.len() as u64;
                ctx.error(
                    None,
                    format!("{why}: {n} bytes dropped that held no HTTP/2 frame boundary"),
                );
            }
            _ => {}
        }
        f.buf.clear();
        f.skipped = 0;
        for (sid, m) in f.grpc.drain() {
            if m.pending() > 0 {
                ctx.error(
                    None,
                    format!(
                        "{why}: gRPC message on stream {sid} incomplete ({} bytes)",
                        m.pending()
                    ),
                );
            }
        }
    }

    /// Bytes are missing after what this flow has seen: nothing held can be
    /// completed, and the HPACK table may have changed unseen.
    fn gap(&mut self, idx: usize, why: &str, ctx: &mut Ctx<'_, '_>) {
        if self.flows[idx].mode == Mode::Start && self.flows[idx].buf.is_empty() {
            // Nothing seen yet on this flow: it may have started unseen.
            let f = &mut self.flows[idx];
            f.mode = Mode::Resync;
            f.fresh = true;
            f.hpack.join_midway();
            if !f.max_frame_seen {
                f.max_frame = ctx.cfg.max_frame_size;
            }
            return;
        }
        self.drop_partial(idx, why, ctx);
        let f = &mut self.flows[idx];
        f.mode = Mode::Resync;
        f.fresh = true;
        f.hpack.forget();
    }

    fn feed(&mut self, idx: usize, data: &[u8], ctx: &mut Ctx<'_, '_>) {
        let f = &mut self.flows[idx];
        if f.buf.is_empty() {
            let n = self.run(idx, data, ctx);
            self.flows[idx].buf.extend_from_slice(&data[n..]);
            return;
        }
        let mut data = data;
        if f.mode == Mode::Frames {
            // Complete the held frame from the new bytes, then go on without copying.
            if f.buf.len() < frame::HEADER_LEN {
                let take = (frame::HEADER_LEN - f.buf.len()).min(data.len());
                f.buf.extend_from_slice(&data[..take]);
                data = &data[take..];
            }
            if let Some(h) = Header::parse(&f.buf)
                && h.length <= f.max_frame
            {
                let total = frame::HEADER_LEN + h.length as usize;
                let take = total.saturating_sub(f.buf.len()).min(data.len());
                f.buf.extend_from_slice(&data[..take]);
                data = &data[take..];
                if f.buf.len() < total {
                    return;
                }
            } else if f.buf.len() < frame::HEADER_LEN {
                return;
            }
        }
        // Either one whole frame (or an oversized header) is held, or the flow is
        // still looking for where frames begin: run over the held bytes first.
        if !data.is_empty() && f.mode != Mode::Frames {
            f.buf.extend_from_slice(data);
            data = &[];
        }
        let held = std::mem::take(&mut self.flows[idx].buf);
        let n = self.run(idx, &held, ctx);
        let mut held = held;
        held.drain(..n);
        let f = &mut self.flows[idx];
        if held.is_empty() {
            held.clear();
            f.buf = held;
            if !data.is_empty() {
                let n = self.run(idx, data, ctx);
                self.flows[idx].buf.extend_from_slice(&data[n..]);
            }
        } else {
            held.extend_from_slice(data);
            f.buf = held;
        }
    }

    /// Consumes what it can of `bytes`; returns how many bytes it consumed.
    fn run(&mut self, idx: usize, bytes: &[u8], ctx: &mut Ctx<'_, '_>) -> usize {
        let mut p = 0usize;
        loop {
            let rest = &bytes[p..];
            match self.flows[idx].mode {
                Mode::Start => {
                    if rest.is_empty() {
                        return p;
                    }
                    let n = rest.len().min(frame::PREFACE.len());
                    if rest[..n] == frame::PREFACE[..n] {
                        if n < frame::PREFACE.len() {
                            return p;
                        }
                        p += n;
                        // The flow's table is still the fresh one it began with,
                        // with any SETTINGS the peer already sent applied.
                        let f = &mut self.flows[idx];
                        f.mode = Mode::Frames;
                        f.max_frame = f.max_frame.min(ctx.cfg.max_frame_size);
                        let mut m = Map::new();
                        m.insert("type".into(), json!("PREFACE"));
                        m.insert("length".into(), json!(frame::PREFACE.len()));
                        ctx.record(m, "connection preface PRI * HTTP/2.0".into());
                        continue;
                    }
                    if rest.len() < frame::HEADER_LEN {
                        return p;
                    }
                    let f = &mut self.flows[idx];
                    let h = Header::parse(rest).unwrap_or(Header {
                        length: 0,
                        kind: 0xff,
                        flags: 0,
                        stream_id: 0,
                        reserved: false,
                    });
                    if h.kind == frame::SETTINGS && !h.has(frame::ACK) && h.plausible(f.max_frame) {
                        // A server's connection preface: its first SETTINGS frame.
                        f.mode = Mode::Frames;
                        f.max_frame = f.max_frame.min(ctx.cfg.max_frame_size);
                    } else {
                        f.mode = Mode::Resync;
                        f.fresh = p == 0;
                        f.hpack.join_midway();
                        if !f.max_frame_seen {
                            f.max_frame = ctx.cfg.max_frame_size;
                        }
                    }
                }
                Mode::Resync => {
                    let f = &mut self.flows[idx];
                    let limit = f.max_frame.min(RESYNC_MAX_LEN);
                    // A connection preface starts a session with fresh state (an
                    // HTTP/1.1 connection upgraded to h2c sends one after its
                    // request), unless frames were found before it.
                    if let Some(pos) = find(rest, frame::PREFACE)
                        && !matches!(scan(&rest[..pos], limit, f.fresh), Scan::Lock(_))
                    {
                        f.skipped += pos as u64;
                        p += pos;
                        if f.skipped > 0 {
                            let n = std::mem::take(&mut f.skipped);
                            ctx.error(
                                None,
                                format!("skipped {n} bytes that are not HTTP/2 frames before a connection preface"),
                            );
                        }
                        let max_frame = frame::DEFAULT_MAX_FRAME_SIZE.min(ctx.cfg.max_frame_size);
                        let f = &mut self.flows[idx];
                        f.mode = Mode::Start;
                        f.hpack = hpack::Decoder::new();
                        f.max_frame = max_frame;
                        f.max_frame_seen = false;
                        f.role = None;
                        f.mixed = false;
                        f.fresh = false;
                        continue;
                    }
                    match scan(rest, limit, f.fresh) {
                        Scan::Lock(off) => {
                            f.skipped += off as u64;
                            p += off;
                            f.mode = Mode::Frames;
                            f.fresh = false;
                            if f.skipped > 0 {
                                let n = std::mem::take(&mut f.skipped);
                                ctx.error(
                                    None,
                                    format!(
                                        "skipped {n} bytes before finding an HTTP/2 frame boundary"
                                    ),
                                );
                            }
                        }
                        Scan::Wait(mut keep) => {
                            if rest.len() - keep > RESYNC_WINDOW {
                                keep = rest.len().saturating_sub(frame::HEADER_LEN - 1);
                            }
                            // Keep the start of a preface that the next bytes may complete.
                            keep = keep.min(preface_tail(rest));
                            if keep > 0 {
                                f.fresh = false;
                            }
                            f.skipped += keep as u64;
                            p += keep;
                            if f.skipped >= SKIP_REPORT {
                                let n = std::mem::take(&mut f.skipped);
                                ctx.error(
                                    None,
                                    format!(
                                        "skipped {n} bytes: no HTTP/2 frame boundary found yet"
                                    ),
                                );
                            }
                            return p;
                        }
                    }
                }
                Mode::Frames => {
                    let Some(h) = Header::parse(rest) else {
                        return p;
                    };
                    let max = self.flows[idx].max_frame;
                    if h.length > max {
                        ctx.error(
                            Some("FRAME_SIZE_ERROR"),
                            format!(
                                "{} frame on stream {} of length {} exceeds the maximum frame size {max}",
                                kind_name(h.kind),
                                h.stream_id,
                                h.length
                            ),
                        );
                        let f = &mut self.flows[idx];
                        f.block = None;
                        f.grpc.clear();
                        f.hpack.forget();
                        f.mode = Mode::Resync;
                        f.fresh = false;
                        continue;
                    }
                    let total = frame::HEADER_LEN + h.length as usize;
                    if rest.len() < total {
                        return p;
                    }
                    self.frame(idx, h, &rest[frame::HEADER_LEN..total], ctx);
                    p += total;
                }
            }
        }
    }

    /// Decodes one whole frame.
    fn frame(&mut self, idx: usize, h: Header, payload: &[u8], ctx: &mut Ctx<'_, '_>) {
        if let Some(b) = &self.flows[idx].block
            && (h.kind != frame::CONTINUATION || h.stream_id != b.stream_id)
        {
            let sid = b.stream_id;
            self.flows[idx].block = None;
            self.flows[idx].hpack.forget();
            ctx.error(
                Some("PROTOCOL_ERROR"),
                format!(
                    "header block of stream {sid} interrupted by a {} frame on stream {}",
                    kind_name(h.kind),
                    h.stream_id
                ),
            );
        }
        let parsed = match frame::parse_payload(&h, payload) {
            Ok(p) => p,
            Err(e) => {
                if matches!(
                    h.kind,
                    frame::HEADERS | frame::PUSH_PROMISE | frame::CONTINUATION
                ) {
                    // Its header block is lost, and with it any table changes.
                    self.flows[idx].block = None;
                    self.flows[idx].hpack.forget();
                }
                ctx.error(Some(e.code), e.message);
                return;
            }
        };
        let mut m = Map::with_capacity(8);
        let name = kind_name(h.kind);
        m.insert("type".into(), json!(name));
        if frame::type_name(h.kind).is_none() {
            m.insert("type_code".into(), json!(h.kind));
        }
        m.insert("stream_id".into(), json!(h.stream_id));
        let flags = frame::flag_names(h.kind, h.flags);
        m.insert(
            "flags".into(),
            Value::Array(flags.iter().map(|f| json!(f)).collect()),
        );
        m.insert("length".into(), json!(h.length));
        let mut text = String::with_capacity(256);
        let _ = write!(
            text,
            "{name} frame <length={}, flags=0x{:02x}, stream_id={}>",
            h.length, h.flags, h.stream_id
        );
        if !flags.is_empty() {
            text.push_str("\n  ; ");
            for (i, f) in flags.iter().enumerate() {
                if i > 0 {
                    text.push_str(" | ");
                }
                text.push_str(f);
            }
        }
        match parsed {
            Payload::Data { pad, data } => {
                if let Some(pad) = pad {
                    m.insert("pad_length".into(), json!(pad));
                    let _ = write!(text, "\n  (padlen={pad})");
                }
                if ctx.cfg.data == DataMode::B64 {
                    m.insert(
                        "data_b64".into(),
                        Value::String(base64::engine::general_purpose::STANDARD.encode(data)),
                    );
                }
                if ctx.cfg.grpc && looks_like_grpc(data) {
                    // Joined midway, the stream's content-type may be unknown
                    // (never seen, or a table entry from before): a DATA frame
                    // that is exactly one gRPC message is taken as gRPC, marked
                    // as inferred.
                    let info = ctx.streams.entry(h.stream_id).or_default();
                    if !info.grpc
                        && !info.content_type_known
                        && !self.flows[idx].grpc.contains_key(&h.stream_id)
                    {
                        info.grpc = true;
                        info.inferred = true;
                    }
                }
                let grpc = ctx.cfg.grpc && ctx.streams.get(&h.stream_id).is_some_and(|s| s.grpc);
                let mut grpc_err = None;
                if grpc {
                    let mut msgs = Vec::new();
                    let acc = self.flows[idx].grpc.entry(h.stream_id).or_default();
                    if let Err(e) = acc.push(data, GRPC_MAX_MESSAGE, &mut msgs) {
                        grpc_err = Some(e);
                        self.flows[idx].grpc.remove(&h.stream_id);
                        if let Some(s) = ctx.streams.get_mut(&h.stream_id) {
                            s.grpc = false;
                        }
                    }
                    let mut g = Map::new();
                    if let Some(info) = ctx.streams.get(&h.stream_id) {
                        if let Some(path) = &info.path {
                            g.insert("method".into(), json!(path));
                        }
                        if info.inferred {
                            g.insert("inferred".into(), json!(true));
                        }
                    }
                    let mut list = Vec::with_capacity(msgs.len());
                    for msg in &msgs {
                        text.push('\n');
                        list.push(grpc::render(msg, 2, &mut text));
                        if text.ends_with('\n') {
                            text.pop();
                        }
                    }
                    g.insert("messages".into(), Value::Array(list));
                    if let Some(acc) = self.flows[idx].grpc.get(&h.stream_id)
                        && acc.pending() > 0
                    {
                        let mut pend = Map::new();
                        pend.insert("have".into(), json!(acc.pending()));
                        if let Some(len) = acc.expected() {
                            pend.insert("need".into(), json!(len + 5));
                        }
                        let _ = write!(
                            text,
                            "\n  (partial gRPC message: {} bytes so far)",
                            acc.pending()
                        );
                        g.insert("partial".into(), Value::Object(pend));
                    }
                    m.insert("grpc".into(), Value::Object(g));
                } else if !data.is_empty() {
                    text.push_str("\n  | ");
                    preview(data, &mut text);
                }
                ctx.record(m, text);
                if let Some(e) = grpc_err {
                    ctx.error(None, format!("DATA frame on stream {}: {e}", h.stream_id));
                }
                if h.has(frame::END_STREAM) {
                    self.end_stream(idx, h.stream_id, ctx);
                }
            }
            Payload::Headers {
                pad,
                priority,
                fragment,
            } => {
                if let Some(pad) = pad {
                    m.insert("pad_length".into(), json!(pad));
                    let _ = write!(text, "\n  (padlen={pad})");
                }
                if let Some(pr) = priority {
                    priority_fields(&pr, &mut m, &mut text);
                }
                let block = Block {
                    stream_id: h.stream_id,
                    kind: h.kind,
                    end_stream: h.has(frame::END_STREAM),
                    fragment: fragment.to_vec(),
                    first: m,
                    first_text: text,
                    promised: None,
                    continuations: Vec::new(),
                };
                self.block(idx, block, h.has(frame::END_HEADERS), ctx);
            }
            Payload::PushPromise {
                pad,
                promised,
                fragment,
            } => {
                if let Some(pad) = pad {
                    m.insert("pad_length".into(), json!(pad));
                    let _ = write!(text, "\n  (padlen={pad})");
                }
                m.insert("promised_stream_id".into(), json!(promised));
                let _ = write!(text, "\n  (promised_stream_id={promised})");
                let block = Block {
                    stream_id: h.stream_id,
                    kind: h.kind,
                    end_stream: false,
                    fragment: fragment.to_vec(),
                    first: m,
                    first_text: text,
                    promised: Some(promised),
                    continuations: Vec::new(),
                };
                self.block(idx, block, h.has(frame::END_HEADERS), ctx);
            }
            Payload::Continuation { fragment } => {
                let Some(mut block) = self.flows[idx].block.take() else {
                    ctx.error(
                        Some("PROTOCOL_ERROR"),
                        format!(
                            "CONTINUATION frame on stream {} without a header block",
                            h.stream_id
                        ),
                    );
                    return;
                };
                block.fragment.extend_from_slice(fragment);
                block.continuations.push((m, text));
                self.block(idx, block, h.has(frame::END_HEADERS), ctx);
            }
            Payload::Priority(pr) => {
                priority_fields(&pr, &mut m, &mut text);
                ctx.record(m, text);
            }
            Payload::RstStream { code } => {
                let name = frame::error_name(code);
                let _ = write!(text, "\n  (error_code={name}(0x{code:02x}))");
                m.insert("error_code".into(), json!(name));
                ctx.record(m, text);
                // The stream's facts stay: with both ends captured, the other
                // end's view may still have frames of it to decode.
                self.flows[idx].grpc.remove(&h.stream_id);
            }
            Payload::Settings { params } => {
                let _ = write!(text, "\n  (niv={})", params.len());
                let mut list = Vec::with_capacity(params.len());
                for &(id, v) in &params {
                    let n = frame::setting_name(id);
                    let _ = write!(text, "\n  [{n}(0x{id:02x}):{v}]");
                    list.push(json!([n, v]));
                    // Settings one side sends bound what the other side sends.
                    let peer = &mut self.flows[1 - idx];
                    match id {
                        frame::SETTINGS_HEADER_TABLE_SIZE => peer.hpack.settings_table_size(v),
                        frame::SETTINGS_MAX_FRAME_SIZE => {
                            peer.max_frame = v.min(ctx.cfg.max_frame_size);
                            peer.max_frame_seen = true;
                        }
                        _ => {}
                    }
                }
                m.insert("settings".into(), Value::Array(list));
                ctx.record(m, text);
            }
            Payload::Ping { data } => {
                let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
                let _ = write!(text, "\n  (opaque_data={hex})");
                m.insert("opaque_data".into(), json!(hex));
                ctx.record(m, text);
            }
            Payload::GoAway {
                last_stream,
                code,
                debug,
            } => {
                let name = frame::error_name(code);
                let dbg = lossy(debug);
                let _ = write!(
                    text,
                    "\n  (last_stream_id={last_stream}, error_code={name}(0x{code:02x}), opaque_data(0)=[{dbg}])"
                );
                m.insert("last_stream_id".into(), json!(last_stream));
                m.insert("error_code".into(), json!(name));
                m.insert("debug_data".into(), json!(dbg));
                ctx.record(m, text);
            }
            Payload::WindowUpdate { increment } => {
                let _ = write!(text, "\n  (window_size_increment={increment})");
                m.insert("window_size_increment".into(), json!(increment));
                ctx.record(m, text);
            }
            Payload::Unknown => {
                ctx.record(m, text);
            }
        }
    }

    /// Holds a header block until END_HEADERS, then decodes it and emits the
    /// opening frame's record (with the headers) and its CONTINUATION records.
    fn block(&mut self, idx: usize, block: Block, end_headers: bool, ctx: &mut Ctx<'_, '_>) {
        if !end_headers {
            if block.fragment.len() > MAX_HEADER_BLOCK {
                self.flows[idx].hpack.forget();
                ctx.error(
                    None,
                    format!(
                        "header block of stream {} exceeds {MAX_HEADER_BLOCK} bytes; dropped",
                        block.stream_id
                    ),
                );
                return;
            }
            self.flows[idx].block = Some(block);
            return;
        }
        let Block {
            stream_id,
            kind,
            end_stream,
            fragment,
            first: mut m,
            first_text: mut text,
            promised,
            continuations,
        } = block;
        if self.flows[idx].mixed {
            let _ = write!(text, "\n  (header block not decoded: {MIXED})");
            ctx.record(m, text);
            for (cm, ct) in continuations {
                ctx.record(cm, ct);
            }
            return;
        }
        let mut fields = std::mem::take(&mut self.flows[idx].scratch);
        fields.clear();
        if let Err(e) = self.flows[idx].hpack.decode(&fragment, &mut fields) {
            self.flows[idx].hpack.forget();
            let mut msg = format!("{} frame on stream {stream_id}: {e}", kind_name(kind));
            if !fields.is_empty() {
                msg.push_str("; decoded before the error:");
                for f in &fields {
                    let _ = write!(msg, " {}: {};", lossy(&f.name), lossy(&f.value));
                }
            }
            ctx.error(Some("COMPRESSION_ERROR"), msg);
            return;
        }
        if kind == frame::HEADERS {
            // Only clients send :method in HEADERS and only servers :status. A
            // direction that carries both holds two byte streams, each with
            // its own HPACK table: nothing decoded from it can be trusted.
            let role = fields.iter().find_map(|f| match f.name.as_slice() {
                _ if f.unknown => None,
                b":method" => Some(Role::Requests),
                b":status" => Some(Role::Responses),
                _ => None,
            });
            let f = &mut self.flows[idx];
            match (f.role, role) {
                (Some(a), Some(b)) if a != b => {
                    f.mixed = true;
                    f.hpack.forget();
                    f.scratch = fields;
                    ctx.error(
                        None,
                        format!(
                            "HEADERS frame on stream {stream_id}: requests and responses in one direction: {MIXED}; header blocks of this direction are no longer decoded"
                        ),
                    );
                    for (cm, ct) in continuations {
                        ctx.record(cm, ct);
                    }
                    return;
                }
                (None, Some(b)) => f.role = Some(b),
                _ => {}
            }
        }
        let mut list = Vec::with_capacity(fields.len());
        let mut path = None;
        let mut content_type_grpc = false;
        let mut content_type_known = false;
        let any_unknown = fields.iter().any(|f| f.unknown);
        let mut grpc_status = None;
        let mut grpc_message = None;
        for f in fields.drain(..) {
            if !f.unknown {
                match f.name.as_slice() {
                    b":path" => path = Some(lossy(&f.value)),
                    b"content-type" => {
                        content_type_known = true;
                        content_type_grpc = f.value.starts_with(b"application/grpc");
                    }
                    b"grpc-status" => {
                        grpc_status = std::str::from_utf8(&f.value)
                            .ok()
                            .and_then(|v| v.parse::<u32>().ok())
                    }
                    b"grpc-message" => grpc_message = Some(grpc::percent_decode(&f.value)),
                    _ => {}
                }
            }
            // Moved, not copied: header bytes are nearly always valid UTF-8.
            let n = lossy_owned(f.name);
            let v = lossy_owned(f.value);
            text.push_str("\n  ");
            text.push_str(&n);
            text.push_str(": ");
            text.push_str(&v);
            list.push(Value::Array(vec![Value::String(n), Value::String(v)]));
        }
        m.insert("headers".into(), Value::Array(list));
        self.flows[idx].scratch = fields;

        let target = promised.unwrap_or(stream_id);
        if ctx.streams.len() >= MAX_STREAMS && !ctx.streams.contains_key(&target) {
            let mut ids: Vec<u32> = ctx.streams.keys().copied().collect();
            ids.sort_unstable();
            for id in &ids[..ids.len() / 2] {
                ctx.streams.remove(id);
            }
        }
        let info = ctx.streams.entry(target).or_default();
        if let Some(p) = path {
            info.path = Some(p);
        }
        // A block decoded without placeholders and without a content-type also
        // settles it: there is none.
        if content_type_known || !any_unknown {
            info.content_type_known = true;
            info.inferred = false;
        }
        if content_type_grpc {
            info.grpc = true;
        }
        if ctx.cfg.grpc && (info.grpc || grpc_status.is_some()) && kind == frame::HEADERS {
            let mut g = Map::new();
            if let Some(p) = &info.path {
                g.insert("method".into(), json!(p));
            }
            if let Some(s) = grpc_status {
                g.insert("status".into(), json!(s));
                if let Some(n) = grpc::status_name(s) {
                    g.insert("status_name".into(), json!(n));
                }
                let _ = write!(
                    text,
                    "\n  ; gRPC status {s} {}",
                    grpc::status_name(s).unwrap_or("(unknown code)")
                );
            }
            if let Some(msg) = grpc_message {
                let _ = write!(text, ": {msg}");
                g.insert("message".into(), json!(msg));
            }
            m.insert("grpc".into(), Value::Object(g));
        }
        ctx.record(m, text);
        for (cm, ct) in continuations {
            ctx.record(cm, ct);
        }
        if end_stream {
            self.end_stream(idx, stream_id, ctx);
        }
    }

    fn end_stream(&mut self, idx: usize, sid: u32, ctx: &mut Ctx<'_, '_>) {
        if let Some(acc) = self.flows[idx].grpc.remove(&sid)
            && acc.pending() > 0
        {
            ctx.error(
                None,
                format!(
                    "stream {sid} ended inside a gRPC message ({} bytes held)",
                    acc.pending()
                ),
            );
        }
    }
}

fn priority_fields(pr: &frame::Priority, m: &mut Map<String, Value>, text: &mut String) {
    m.insert(
        "priority".into(),
        json!({"exclusive": pr.exclusive, "depends_on": pr.depends_on, "weight": pr.weight}),
    );
    let _ = write!(
        text,
        "\n  (dep_stream_id={}, weight={}, exclusive={})",
        pr.depends_on, pr.weight, pr.exclusive as u8
    );
}

fn kind_name(kind: u8) -> &'static str {
    frame::type_name(kind).unwrap_or("UNKNOWN")
}

/// Bytes shown in the text rendering of a DATA frame.
const PREVIEW: usize = 96;

/// The start of a payload as one line: printable ASCII as is, the rest escaped.
fn preview(data: &[u8], out: &mut String) {
    for &b in &data[..data.len().min(PREVIEW)] {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\x");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
    if data.len() > PREVIEW {
        out.push('\u{2026}');
    }
}

fn lossy_owned(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| lossy(e.as_bytes()))
}

/// Bytes as text: UTF-8 as is, other bytes as `\xNN`.
pub(crate) fn lossy(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let mut out = String::with_capacity(b.len() + 8);
            for chunk in b.utf8_chunks() {
                out.push_str(chunk.valid());
                for &x in chunk.invalid() {
                    let _ = write!(out, "\\x{x:02x}");
                }
            }
            out
        }
    }
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).find(|&i| hay[i] == needle[0] && hay[i..].starts_with(needle))
}

/// Where a proper prefix of the connection preface begins at the end of `buf`
/// (`buf.len()` when none does).
fn preface_tail(buf: &[u8]) -> usize {
    let n = buf.len().min(frame::PREFACE.len() - 1);
    (buf.len() - n..buf.len())
        .find(|&i| frame::PREFACE.starts_with(&buf[i..]))
        .unwrap_or(buf.len())
}

/// One whole gRPC message, exactly: flag 0 or 1, then a length that matches.
fn looks_like_grpc(data: &[u8]) -> bool {
    data.len() >= 5
        && data[0] <= 1
        && u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize == data.len() - 5
}

enum Scan {
    /// Frames begin at this offset.
    Lock(usize),
    /// No boundary proven yet: bytes before this offset can go.
    Wait(usize),
}

/// Looks for a frame boundary: a plausible header followed by further plausible
/// headers where its length says they are. Three in a row, or two that end
/// exactly where the captured bytes end (writes usually end on a frame), prove a
/// boundary; one whole frame suffices when it fills a fresh write exactly.
fn scan(buf: &[u8], limit: u32, fresh: bool) -> Scan {
    let mut first_pending = None;
    let last = buf.len().saturating_sub(frame::HEADER_LEN - 1);
    for off in 0..last {
        let Some(h) = Header::parse(&buf[off..]) else {
            break;
        };
        if !h.plausible(limit) {
            continue;
        }
        let mut q = off;
        let mut n = 0;
        let mut aligned = false;
        let mut pending = false;
        loop {
            if q == buf.len() {
                aligned = true;
                break;
            }
            let Some(h) = Header::parse(&buf[q..]) else {
                pending = true;
                break;
            };
            if !h.plausible(limit) {
                break;
            }
            n += 1;
            q += frame::HEADER_LEN + h.length as usize;
            if n >= 3 {
                return Scan::Lock(off);
            }
            if q > buf.len() {
                pending = true;
                break;
            }
        }
        if aligned && (n >= 2 || (n == 1 && off == 0 && fresh)) {
            return Scan::Lock(off);
        }
        if pending && first_pending.is_none() {
            first_pending = Some(off);
        }
    }
    Scan::Wait(first_pending.unwrap_or(last))
}
