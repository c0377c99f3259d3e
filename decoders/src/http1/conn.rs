//! One connection's HTTP/1 state: its two byte streams, each parsed into
//! messages, the requests still waiting for a response, and the pairing that
//! makes exchanges.
//!
//! Each stream (a "half") is in one phase: between messages (`Idle`), reading
//! a body, looking for the next message start after junk or a gap
//! (`Resync`), or holding the bytes that follow an upgrade request until the
//! response says whether the protocol changes (`Held`). Bytes are parsed where
//! they lie in the event; only what is left over at the end of an event (an
//! unfinished head or chunk-size line) is copied and kept.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use spf_pipeline::{Budget, Direction, Endpoint, Event, Exchange, Fields, Out, Record, Role};

use super::body::{Body, BodyLimits, Framing, Step};
use super::detect::{self, Found};
use super::inflate::{self, Inflater};
use super::parse::{self, Encoding, Head, HeadLimits, Kind, Scan, Start};
use super::record::{BodyRecord, HeadRecord, Note};

/// Why bytes were skipped, as records say it.
pub const MIDSTREAM: &str = "joined mid-stream: no message start before them";
pub const AFTER_ERROR: &str = "after an error, up to the next message start";
pub const AFTER_GAP: &str = "after bytes that were not captured";
pub const AFTER_LOSS: &str = "after lost events";
pub const IN_BODY: &str = "not captured, inside a body";
const NO_START: &str = "no message start found in them";

/// What the decoder's configuration and the limits allow.
#[derive(Debug, Clone)]
pub struct Settings {
    pub show_data: bool,
    pub head: HeadLimits,
    pub line: usize,
    pub pending_max: usize,
    pub buffer_max: usize,
    pub decompressed_max: usize,
}

impl Settings {
    fn body(&self) -> BodyLimits {
        BodyLimits {
            line: self.line,
            head: self.head,
        }
    }
}

/// Shared names, so that records do not allocate them.
#[derive(Debug)]
pub struct Names {
    pub http1: Arc<str>,
    pub raw: Arc<str>,
}

/// What processing needs besides the connection.
pub struct Cx<'a, 'b> {
    pub out: &'a mut Out<'b>,
    pub names: &'a Names,
    pub set: &'a Settings,
    pub budget: &'a Budget,
}

impl Cx<'_, '_> {
    fn typed(&mut self, ev: &Arc<Event>, f: impl Fields + 'static) {
        self.out.push(Record::typed(
            Arc::clone(ev),
            Arc::clone(&self.names.http1),
            Arc::new(f),
        ));
    }

    fn error(&mut self, ev: &Arc<Event>, code: &str, message: String) {
        self.out.push(Record::error(
            Arc::clone(ev),
            Arc::clone(&self.names.http1),
            Some(code.to_string()),
            message,
        ));
    }
}

/// Where a connection's bytes go after a protocol switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Http2,
    Raw,
}

impl Target {
    pub const fn as_str(self) -> &'static str {
        match self {
            Target::Http2 => "http2",
            Target::Raw => "raw",
        }
    }
}

/// A protocol switch: what the connection speaks now, and the bytes already
/// captured that belong to it, each with the event it came in.
pub struct Switch {
    pub protocol: String,
    pub to: Target,
    pub pieces: Vec<(Arc<Event>, Bytes)>,
    /// For h2c: the request the switch answered, HTTP/2's stream 1.
    pub request: Option<crate::http2::Upgraded>,
}

/// The process that sent an event's bytes.
pub fn sender(e: &Event) -> Endpoint {
    if e.via.is_some() || e.dir == Direction::Send {
        Endpoint {
            pid: e.pid,
            comm: Arc::clone(&e.comm),
        }
    } else {
        Endpoint {
            pid: e.peer_pid,
            comm: Arc::clone(&e.peer_comm),
        }
    }
}

fn receiver(e: &Event) -> Endpoint {
    if e.via.is_some() || e.dir == Direction::Send {
        Endpoint {
            pid: e.peer_pid,
            comm: Arc::clone(&e.peer_comm),
        }
    } else {
        Endpoint {
            pid: e.pid,
            comm: Arc::clone(&e.comm),
        }
    }
}

/// What the source knows about which end sent an event: a client sends
/// requests, a server responses.
fn role_hint(e: &Event) -> Option<Kind> {
    let sender_role = if e.via.is_some() || e.dir == Direction::Send {
        e.role
    } else {
        match e.role {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
            Role::Unknown => Role::Unknown,
        }
    };
    match sender_role {
        Role::Client => Some(Kind::Request),
        Role::Server => Some(Kind::Response),
        Role::Unknown => None,
    }
}

/// Bytes of an event that follow its captured data and were not captured.
pub fn missing(e: &Event) -> u64 {
    if e.truncated {
        e.len.saturating_sub(e.skip + e.data.len() as u64)
    } else {
        0
    }
}

/// A request waiting for its response.
#[derive(Debug)]
struct Pending {
    index: u64,
    method: String,
    target: String,
    authority: Option<String>,
    head: bool,
    connect: bool,
    /// The protocol an Upgrade field asked for.
    upgrade: Option<String>,
    started_ns: u64,
    started_time_ns: u64,
    request_bytes: u64,
    /// Bytes of interim (1xx) responses already seen for it.
    interim_bytes: u64,
    client: Endpoint,
    server: Endpoint,
}

impl Pending {
    fn held_bytes(&self) -> usize {
        self.method.len() + self.target.len() + self.authority.as_ref().map_or(0, String::len)
    }
}

/// A response being received, and the request it answers.
#[derive(Debug)]
struct Answer {
    request: Pending,
    status: u16,
    response_bytes: u64,
    server: Endpoint,
}

/// The message whose body is being read.
#[derive(Debug)]
struct Msg {
    kind: Kind,
    index: Option<u64>,
    /// Body bytes so far.
    offset: u64,
    /// Extensions of the chunk whose data comes next.
    ext: Option<Bytes>,
    textual: bool,
    inflater: Option<Box<Inflater>>,
    answer: Option<Box<Answer>>,
    expect_continue: bool,
    /// A final response to this request came before any of its body: the
    /// client may never send it.
    answered: bool,
}

#[derive(Debug)]
enum Phase {
    Idle,
    Resync,
    Body(Body),
    Held,
}

#[derive(Debug)]
struct Half {
    /// Bytes left over from earlier events, not yet decoded.
    buf: Vec<u8>,
    phase: Phase,
    /// What this stream carries, once a message showed it.
    role: Option<Kind>,
    /// Where the scan for the end of the head being received resumes.
    scanned: usize,
    /// The head being tried follows a guessed message start: if it does not
    /// parse, it was no start after all (no error, keep looking).
    probing: bool,
    skipped: u64,
    skip_reason: &'static str,
    /// A message or an error was seen: from now on bad bytes are errors,
    /// not the tail of something that began before the capture.
    seen: bool,
    /// Kernel and wall time of the event with the first byte of the message
    /// being assembled.
    since: Option<(u64, u64)>,
    /// While resynchronising: the bytes kept begin at the start of a line.
    at_line_start: bool,
    last: Option<Arc<Event>>,
    msg: Option<Msg>,
}

impl Default for Half {
    fn default() -> Self {
        Half {
            buf: Vec::new(),
            phase: Phase::Idle,
            role: None,
            scanned: 0,
            probing: false,
            skipped: 0,
            skip_reason: MIDSTREAM,
            seen: false,
            since: None,
            at_line_start: false,
            last: None,
            msg: None,
        }
    }
}

impl Half {
    /// Looks for the next message start; `reason` is why, unless bytes are
    /// being skipped already (call it before counting the new ones).
    fn resync(&mut self, reason: &'static str) {
        self.phase = Phase::Resync;
        self.scanned = 0;
        self.probing = false;
        self.since = None;
        self.at_line_start = false;
        if self.skipped == 0 {
            self.skip_reason = reason;
        }
    }

    fn held(&self) -> usize {
        self.buf.capacity()
            + self
                .msg
                .as_ref()
                .and_then(|m| m.inflater.as_ref())
                .map_or(0, |_| inflate::STATE_BYTES)
    }
}

/// What the rest of a run should do after a head.
enum After {
    Continue,
    Switch(Switch),
}

/// One connection (or, in the syscall view, one end of one).
#[derive(Debug, Default)]
pub struct Conn {
    halves: [Half; 2],
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    next_index: u64,
    /// Sequence number of the latest event, to drop the longest idle first.
    pub last_seq: u64,
    /// Bytes of the memory budget this connection holds.
    pub accounted: usize,
}

impl Conn {
    /// Memory this connection's state holds.
    pub fn usage(&self) -> usize {
        self.halves[0].held() + self.halves[1].held() + self.pending_bytes
    }

    /// Decodes the bytes of `ev`, which go on stream `side`.
    pub fn feed(&mut self, side: usize, ev: &Arc<Event>, cx: &mut Cx<'_, '_>) -> Option<Switch> {
        self.halves[side].last = Some(Arc::clone(ev));
        let half = &mut self.halves[side];
        let input = if half.buf.is_empty() {
            ev.data.clone()
        } else if half.buf.len() + ev.data.len() > cx.set.buffer_max {
            cx.error(
                ev,
                "LIMIT",
                format!(
                    "{} bytes held waiting for the rest of a message: more than limits.connection_buffer ({})",
                    half.buf.len() + ev.data.len(),
                    cx.set.buffer_max
                ),
            );
            let dropped = half.buf.len() as u64;
            self.drop_half(side, cx);
            let half = &mut self.halves[side];
            half.resync(AFTER_ERROR);
            half.skipped += dropped;
            ev.data.clone()
        } else {
            half.buf.extend_from_slice(&ev.data);
            Bytes::from(std::mem::take(&mut half.buf))
        };
        // Nothing held went in front of the event's bytes: the input
        // begins where a write began.
        let at_write = input.len() == ev.data.len();
        let (pos, switch) = self.run(side, &input, at_write, ev, cx);
        if switch.is_some() {
            return switch;
        }
        let half = &mut self.halves[side];
        if pos < input.len() {
            half.buf = input[pos..].to_vec();
            if matches!(half.phase, Phase::Idle) && half.since.is_none() {
                half.since = Some((ev.ts_ns, ev.time_ns));
            }
        }
        let gap = missing(ev);
        if gap > 0 {
            self.gap(side, gap, ev, cx);
        }
        None
    }

    /// Decodes what `side` holds (bytes held back after an upgrade request
    /// that the response did not take up).
    fn resume(&mut self, side: usize, cx: &mut Cx<'_, '_>) -> Option<Switch> {
        let half = &mut self.halves[side];
        let ev = half.last.clone()?;
        if half.buf.is_empty() {
            return None;
        }
        let input = Bytes::from(std::mem::take(&mut half.buf));
        let (pos, switch) = self.run(side, &input, false, &ev, cx);
        if switch.is_some() {
            return switch;
        }
        if pos < input.len() {
            self.halves[side].buf = input[pos..].to_vec();
        }
        None
    }

    /// Decodes `input` (the bytes that continue stream `side`) as far as it
    /// can; returns where it stopped, or the protocol switch it ended with.
    /// `at_write`: `input` begins where an event's bytes begin.
    fn run(
        &mut self,
        side: usize,
        input: &Bytes,
        at_write: bool,
        ev: &Arc<Event>,
        cx: &mut Cx<'_, '_>,
    ) -> (usize, Option<Switch>) {
        let mut pos = 0;
        let mut resume_other = false;
        loop {
            let half = &mut self.halves[side];
            match &mut half.phase {
                Phase::Held => break,
                Phase::Resync => {
                    let want = half.role.or_else(|| role_hint(ev));
                    let starts_line = half.at_line_start;
                    match detect::find_start(&input[pos..], want, cx.set.line, starts_line) {
                        Found::At(p, _) => {
                            // A start where a write begins, right after bytes
                            // that were not captured (a head cut by snaplen),
                            // is no guess: senders write a message from its
                            // start. Anywhere else it may be inside a body.
                            let certain = at_write && pos + p == 0 && half.skip_reason == AFTER_GAP;
                            half.skipped += p as u64;
                            pos += p;
                            half.phase = Phase::Idle;
                            half.probing = !certain;
                        }
                        Found::NotYet { keep_from } => {
                            half.skipped += keep_from as u64;
                            pos += keep_from;
                            if keep_from > 0 {
                                half.at_line_start = input[pos - 1] == b'\n';
                            }
                            break;
                        }
                    }
                }
                Phase::Idle => {
                    let lead = input[pos..]
                        .iter()
                        .take_while(|&&b| b == b'\r' || b == b'\n')
                        .count();
                    if lead > 0 {
                        pos += lead;
                        half.scanned = 0;
                    }
                    if pos == input.len() {
                        break;
                    }
                    let bytes = &input[pos..];
                    match parse::scan(bytes, half.scanned, cx.set.line) {
                        Scan::Incomplete(at) => {
                            let bad = if at > 0 {
                                check_start(parse::first_line(bytes)).err()
                            } else if !detect::could_start(bytes) {
                                Some("no request or status line".to_string())
                            } else {
                                None
                            };
                            if let Some(why) = bad {
                                pos = self.bad(side, pos, "BAD_START_LINE", why, ev, cx);
                            } else if bytes.len() > cx.set.head.list_size {
                                let why = format!(
                                    "header section larger than limits.header_list_size ({})",
                                    cx.set.head.list_size
                                );
                                pos = self.bad(side, pos, "LIMIT", why, ev, cx);
                            } else {
                                self.halves[side].scanned = at;
                                break;
                            }
                        }
                        Scan::LineTooLong => {
                            let why =
                                format!("line longer than limits.line_length ({})", cx.set.line);
                            pos = self.bad(side, pos, "LIMIT", why, ev, cx);
                        }
                        Scan::Complete(n) => {
                            half.scanned = 0;
                            if let Err(why) = check_start(parse::first_line(bytes)) {
                                pos = self.bad(side, pos, "BAD_START_LINE", why, ev, cx);
                                continue;
                            }
                            // A valid, plausible start line: what is wrong
                            // after it is this message's fault, not a sign of
                            // having joined midway, and is reported even as
                            // the stream's first bytes.
                            half.seen = true;
                            match parse::head(&bytes[..n], cx.set.head) {
                                Ok(h) => {
                                    let head = input.slice(pos..pos + n);
                                    pos += n;
                                    match self.on_head(side, h, head, input, pos, ev, cx) {
                                        Ok((After::Continue, resume)) => resume_other |= resume,
                                        Ok((After::Switch(s), _)) => return (input.len(), Some(s)),
                                        Err((code, why)) => {
                                            pos = self.bad(side, pos - n, code, why, ev, cx);
                                        }
                                    }
                                }
                                Err(e) => pos = self.bad(side, pos, e.code, e.message, ev, cx),
                            }
                        }
                    }
                }
                Phase::Body(b) => {
                    let mut body = *b;
                    let Some(msg) = half.msg.as_ref() else {
                        half.phase = Phase::Idle;
                        continue;
                    };
                    let (kind, index) = (msg.kind, msg.index);
                    if kind == Kind::Request
                        && msg.offset == 0
                        && msg.answered
                        && msg.expect_continue
                        && starts_message(&input[pos..])
                    {
                        // The server answered before the body came, and the
                        // client went on without sending it.
                        self.end_message(side, ev, cx);
                        continue;
                    }
                    let step = body.next(&input[pos..], cx.set.body());
                    if let Phase::Body(b) = &mut half.phase {
                        *b = body;
                    }
                    match step {
                        Ok(Step::Data { len }) => {
                            self.body_piece(side, input.slice(pos..pos + len), ev, cx);
                            pos += len;
                            if body.is_done() {
                                self.end_message(side, ev, cx);
                            }
                        }
                        Ok(Step::Chunk { len, ext, .. }) => {
                            if let Some(m) = self.halves[side].msg.as_mut() {
                                m.ext = ext.map(|r| input.slice(pos + r.start..pos + r.end));
                            }
                            self.count_wire(side, len);
                            pos += len;
                        }
                        Ok(Step::Framing { len }) => {
                            self.count_wire(side, len);
                            pos += len;
                        }
                        Ok(Step::Trailers { len }) => {
                            cx.typed(
                                ev,
                                HeadRecord {
                                    kind,
                                    trailers: true,
                                    index,
                                    head: input.slice(pos..pos + len),
                                    framing: Framing::None,
                                    content_length: None,
                                },
                            );
                            self.count_wire(side, len);
                            pos += len;
                            self.end_message(side, ev, cx);
                        }
                        Ok(Step::End { len }) => {
                            self.count_wire(side, len);
                            pos += len;
                            self.end_message(side, ev, cx);
                        }
                        Ok(Step::NeedMore) => break,
                        Err(e) => {
                            cx.error(ev, e.code, format!("{} body: {}", kind.as_str(), e.message));
                            self.abort_message(side, "response body malformed", ev, cx);
                            self.halves[side].seen = true;
                            self.halves[side].resync(AFTER_ERROR);
                        }
                    }
                }
            }
        }
        if resume_other && let Some(s) = self.resume(1 - side, cx) {
            return (input.len(), Some(s));
        }
        (pos, None)
    }

    /// Bytes at `pos` do not start a valid message: report it (unless they
    /// were a guess, or the stream's first bytes) and look further from the
    /// next byte. Returns where to go on.
    fn bad(
        &mut self,
        side: usize,
        pos: usize,
        code: &str,
        why: String,
        ev: &Arc<Event>,
        cx: &mut Cx<'_, '_>,
    ) -> usize {
        let half = &mut self.halves[side];
        let quiet = half.probing || !half.seen;
        let reason = if half.seen { AFTER_ERROR } else { MIDSTREAM };
        if !quiet || (code == "LIMIT" && !half.probing) {
            let what = match half.role {
                Some(k) => k.as_str(),
                None => "message",
            };
            cx.error(ev, code, format!("{what} head: {why}"));
            half.seen = true;
        }
        half.resync(reason);
        half.skipped += 1;
        pos + 1
    }

    #[allow(clippy::too_many_arguments)]
    fn on_head(
        &mut self,
        side: usize,
        h: Head,
        head: Bytes,
        input: &Bytes,
        pos: usize,
        ev: &Arc<Event>,
        cx: &mut Cx<'_, '_>,
    ) -> Result<(After, bool), (&'static str, String)> {
        let kind = h.kind.unwrap_or(Kind::Request);
        let half = &mut self.halves[side];
        if let Some(role) = half.role
            && role != kind
        {
            return Err((
                "WRONG_DIRECTION",
                format!(
                    "a {} where this stream carried {}s",
                    kind.as_str(),
                    role.as_str()
                ),
            ));
        }
        half.role = Some(kind);
        half.seen = true;
        half.probing = false;
        if half.skipped > 0 {
            let note = Note::Skipped {
                kind: Some(kind),
                bytes: std::mem::take(&mut half.skipped),
                reason: half.skip_reason,
            };
            cx.typed(ev, note);
        }
        let started = half.since.take().unwrap_or((ev.ts_ns, ev.time_ns));
        match kind {
            Kind::Request => self
                .on_request(side, h, head, started, ev, cx)
                .map(|a| (a, false)),
            Kind::Response => Ok(self.on_response(side, h, head, input, pos, ev, cx)),
        }
    }

    fn on_request(
        &mut self,
        side: usize,
        h: Head,
        head: Bytes,
        started: (u64, u64),
        ev: &Arc<Event>,
        cx: &mut Cx<'_, '_>,
    ) -> Result<After, (&'static str, String)> {
        let framing = if h.transfer_encoding {
            if !h.chunked {
                return Err((
                    "BAD_TRANSFER_ENCODING",
                    "Transfer-Encoding of a request does not end in chunked".into(),
                ));
            }
            Framing::Chunked
        } else {
            match h.content_length {
                Some(0) | None => Framing::None,
                Some(n) => Framing::Length(n),
            }
        };
        if self.pending.len() >= cx.set.pending_max {
            cx.error(
                ev,
                "LIMIT",
                format!(
                    "more requests waiting for a response than limits.streams_per_connection ({})",
                    cx.set.pending_max
                ),
            );
            self.drop_pending("dropped: limits.streams_per_connection", ev, cx);
        }
        let Some(Start::Request { method, target, .. }) = h.start.clone() else {
            return Err(("BAD_START_LINE", "not a request line".into()));
        };
        let method_b = &head[method];
        let index = self.next_index;
        self.next_index += 1;
        let p = Pending {
            index,
            method: String::from_utf8_lossy(method_b).into_owned(),
            target: String::from_utf8_lossy(&head[target]).into_owned(),
            authority: h
                .host
                .clone()
                .map(|r| String::from_utf8_lossy(&head[r]).into_owned()),
            head: method_b == b"HEAD",
            connect: method_b == b"CONNECT",
            upgrade: h
                .upgrade
                .clone()
                .map(|r| String::from_utf8_lossy(&head[r]).into_owned()),
            started_ns: started.0,
            started_time_ns: started.1,
            request_bytes: head.len() as u64,
            interim_bytes: 0,
            client: sender(ev),
            server: receiver(ev),
        };
        self.pending_bytes += p.held_bytes();
        self.pending.push_back(p);
        cx.typed(
            ev,
            HeadRecord {
                kind: Kind::Request,
                trailers: false,
                index: Some(index),
                head,
                framing,
                content_length: h.content_length,
            },
        );
        self.start_body(side, Kind::Request, Some(index), framing, &h, None, ev, cx);
        Ok(After::Continue)
    }

    /// Returns what to do next, and whether the other stream (held after an
    /// upgrade request that was declined) should be decoded again.
    #[allow(clippy::too_many_arguments)]
    fn on_response(
        &mut self,
        side: usize,
        h: Head,
        head: Bytes,
        input: &Bytes,
        pos: usize,
        ev: &Arc<Event>,
        cx: &mut Cx<'_, '_>,
    ) -> (After, bool) {
        let status = h.status().unwrap_or(0);
        let index = self.pending.front().map(|p| p.index);
        if (100..200).contains(&status) && status != 101 {
            // Interim: the final response is still to come.
            if let Some(p) = self.pending.front_mut() {
                p.interim_bytes += head.len() as u64;
            }
            cx.typed(
                ev,
                HeadRecord {
                    kind: Kind::Response,
                    trailers: false,
                    index,
                    head,
                    framing: Framing::None,
                    content_length: h.content_length,
                },
            );
            return (After::Continue, false);
        }
        let request = self.pending.pop_front();
        if let Some(p) = &request {
            self.pending_bytes -= p.held_bytes();
        }
        let (is_head, connect, asked) = request.as_ref().map_or((false, false, None), |p| {
            (p.head, p.connect, p.upgrade.clone())
        });
        let held_other = matches!(self.halves[1 - side].phase, Phase::Held);
        // A protocol switch: 101, a tunnel after CONNECT, or a hijacked
        // stream (Docker answers attach/exec without an Upgrade this way).
        let switch_to = if status == 101 {
            let proto = h
                .upgrade
                .clone()
                .map(|r| String::from_utf8_lossy(&head[r]).into_owned())
                .or(asked)
                .unwrap_or_else(|| "an unnamed protocol".into());
            Some(proto)
        } else if connect && (200..300).contains(&status) {
            Some("a CONNECT tunnel".into())
        } else if h.docker_stream
            && status == 200
            && h.content_length.is_none()
            && !h.transfer_encoding
        {
            Some("a hijacked raw stream".into())
        } else {
            None
        };
        let framing = if switch_to.is_some() || is_head || status == 204 || status == 304 {
            Framing::None
        } else if h.transfer_encoding {
            if h.chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            }
        } else {
            match h.content_length {
                Some(0) => Framing::None,
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        };
        let head_len = head.len() as u64;
        cx.typed(
            ev,
            HeadRecord {
                kind: Kind::Response,
                trailers: false,
                index,
                head,
                framing,
                content_length: h.content_length,
            },
        );
        let answer = request.map(|mut r| {
            // A request taken from the server's receive before the client's
            // own send was seen names its sender by pid alone; the response
            // names its receiver with the comm learned since.
            r.client.fill_comm(&receiver(ev));
            Box::new(Answer {
                response_bytes: r.interim_bytes + head_len,
                request: r,
                status,
                server: sender(ev),
            })
        });
        // A final response to a request whose body has not begun: the client
        // may not send that body at all (Expect: 100-continue).
        if let Some(m) = self.halves[1 - side].msg.as_mut()
            && m.kind == Kind::Request
            && m.index == index
        {
            m.answered = true;
        }
        if let Some(protocol) = switch_to {
            let to = if protocol.eq_ignore_ascii_case("h2c") {
                Target::Http2
            } else {
                Target::Raw
            };
            let request = match (&answer, &self.halves[1 - side].last) {
                (Some(a), Some(req_ev)) if matches!(to, Target::Http2) => {
                    let r = &a.request;
                    Some(crate::http2::Upgraded {
                        event: Arc::clone(req_ev),
                        method: r.method.clone(),
                        path: r.target.clone(),
                        authority: r.authority.clone(),
                        request_bytes: r.request_bytes,
                        started_ns: r.started_ns,
                        started_time_ns: r.started_time_ns,
                        client: r.client.clone(),
                    })
                }
                _ => None,
            };
            if let Some(a) = answer {
                complete(*a, ev, None, cx);
            }
            let mut pieces = Vec::new();
            let other = &mut self.halves[1 - side];
            if !other.buf.is_empty()
                && let Some(oev) = other.last.clone()
            {
                pieces.push((oev, Bytes::from(std::mem::take(&mut other.buf))));
            }
            if pos < input.len() {
                pieces.push((Arc::clone(ev), input.slice(pos..)));
            }
            return (
                After::Switch(Switch {
                    protocol,
                    to,
                    pieces,
                    request,
                }),
                false,
            );
        }
        if held_other {
            // The upgrade was not taken: the request stream goes on as HTTP/1.
            self.halves[1 - side].phase = Phase::Idle;
        }
        self.start_body(side, Kind::Response, index, framing, &h, answer, ev, cx);
        (After::Continue, held_other)
    }

    /// Begins the body of the message just parsed (or ends the message at
    /// once when it has none).
    #[allow(clippy::too_many_arguments)]
    fn start_body(
        &mut self,
        side: usize,
        kind: Kind,
        index: Option<u64>,
        framing: Framing,
        h: &Head,
        answer: Option<Box<Answer>>,
        ev: &Arc<Event>,
        cx: &mut Cx<'_, '_>,
    ) {
        let inflater = if framing != Framing::None
            && cx.set.show_data
            && matches!(h.encoding, Encoding::Gzip | Encoding::Deflate)
        {
            if cx.budget.try_take(inflate::STATE_BYTES) {
                Some(Box::new(Inflater::new(h.encoding, cx.set.decompressed_max)))
            } else {
                cx.error(
                    ev,
                    "LIMIT",
                    format!(
                        "decoder state over limits.memory ({} bytes): {} body shown compressed",
                        cx.budget.limit(),
                        h.encoding.as_str()
                    ),
                );
                None
            }
        } else {
            None
        };
        let half = &mut self.halves[side];
        half.msg = Some(Msg {
            kind,
            index,
            offset: 0,
            ext: None,
            textual: h.textual,
            inflater,
            answer,
            expect_continue: h.expect_continue,
            answered: false,
        });
        if framing == Framing::None {
            self.end_message(side, ev, cx);
        } else {
            self.halves[side].phase = Phase::Body(Body::new(framing));
        }
    }

    fn body_piece(&mut self, side: usize, data: Bytes, ev: &Arc<Event>, cx: &mut Cx<'_, '_>) {
        let len = data.len() as u64;
        self.count_wire(side, data.len());
        let Some(msg) = self.halves[side].msg.as_mut() else {
            return;
        };
        let decoded = match msg.inflater.as_mut().map(|i| (i.encoding(), i.feed(&data))) {
            None => None,
            Some((enc, Ok(p))) => {
                if p.capped {
                    cx.error(
                        ev,
                        "LIMIT",
                        format!(
                            "{} body decompresses to more than limits.decompressed_size ({}): the rest is shown compressed",
                            msg.kind.as_str(),
                            cx.set.decompressed_max
                        ),
                    );
                    drop_inflater(msg, cx.budget);
                }
                Some((enc, p.data))
            }
            Some((enc, Err(e))) => {
                cx.error(
                    ev,
                    "BAD_ENCODING",
                    format!(
                        "{} body (Content-Encoding {}): {e}",
                        msg.kind.as_str(),
                        enc.as_str()
                    ),
                );
                drop_inflater(msg, cx.budget);
                None
            }
        };
        let rec = BodyRecord {
            kind: msg.kind,
            index: msg.index,
            offset: msg.offset,
            data: if cx.set.show_data { data } else { Bytes::new() },
            length: len,
            show_data: cx.set.show_data,
            ext: msg.ext.take(),
            textual: msg.textual,
            decoded,
        };
        msg.offset += len;
        cx.typed(ev, rec);
    }

    /// Counts bytes of the current message on the wire.
    fn count_wire(&mut self, side: usize, n: usize) {
        let Some(msg) = self.halves[side].msg.as_mut() else {
            return;
        };
        match (&mut msg.answer, msg.kind) {
            (Some(a), _) => a.response_bytes += n as u64,
            (None, Kind::Request) => {
                if let Some(p) = self
                    .pending
                    .iter_mut()
                    .rev()
                    .find(|p| Some(p.index) == msg.index)
                {
                    p.request_bytes += n as u64;
                }
            }
            _ => {}
        }
    }

    fn end_message(&mut self, side: usize, ev: &Arc<Event>, cx: &mut Cx<'_, '_>) {
        let half = &mut self.halves[side];
        half.phase = Phase::Idle;
        let Some(mut msg) = half.msg.take() else {
            return;
        };
        drop_inflater(&mut msg, cx.budget);
        if let Some(a) = msg.answer.take() {
            complete(*a, ev, None, cx);
        }
        if msg.kind == Kind::Request
            && let Some(p) = self
                .pending
                .iter()
                .rev()
                .find(|p| Some(p.index) == msg.index)
            && (p.upgrade.is_some() || p.connect)
        {
            // What follows depends on the answer: the same protocol, or
            // another one from the byte after this request.
            self.halves[side].phase = Phase::Held;
        }
    }

    /// Gives up on the message being received (its framing broke, or bytes
    /// of it were not captured).
    fn abort_message(&mut self, side: usize, why: &str, ev: &Arc<Event>, cx: &mut Cx<'_, '_>) {
        if let Some(mut msg) = self.halves[side].msg.take() {
            drop_inflater(&mut msg, cx.budget);
            if let Some(a) = msg.answer.take() {
                complete(*a, ev, Some(why.to_string()), cx);
            }
        }
    }

    /// Bytes of stream `side` were not captured after what was decoded.
    fn gap(&mut self, side: usize, n: u64, ev: &Arc<Event>, cx: &mut Cx<'_, '_>) {
        let half = &mut self.halves[side];
        match &mut half.phase {
            Phase::Body(b) if half.buf.is_empty() && b.data_left().is_some_and(|l| l >= n) => {
                b.skip_data(n);
                let done = b.is_done();
                let kind = half.msg.as_ref().map(|m| m.kind);
                if let Some(m) = half.msg.as_mut() {
                    m.offset += n;
                }
                self.count_wire(side, n as usize);
                cx.typed(
                    ev,
                    Note::Skipped {
                        kind,
                        bytes: n,
                        reason: IN_BODY,
                    },
                );
                if done {
                    self.end_message(side, ev, cx);
                }
            }
            Phase::Resync => half.skipped += n,
            Phase::Idle if half.buf.is_empty() && half.msg.is_none() => {
                // Between messages: whatever follows starts somewhere unknown.
                half.resync(AFTER_GAP);
                half.skipped += n;
            }
            _ => {
                let what = match (&half.phase, half.msg.as_ref().map(|m| m.kind)) {
                    (Phase::Body(_), Some(k)) => format!("{} body framing", k.as_str()),
                    (Phase::Held, _) => "bytes after an upgrade request".into(),
                    _ => "a message head".into(),
                };
                // A response head cut short (a small snaplen, a lost event)
                // still says how the request was answered, if its status
                // line came whole: on the response side, at a start that was
                // not guessed, and for a request that cannot switch protocols
                // (whose pairing on_response alone keeps).
                let seen = half.buf.len() as u64;
                let cut_status = match (&half.phase, &half.msg) {
                    (Phase::Idle, None) if !half.probing && half.role != Some(Kind::Request) => {
                        final_status(&half.buf)
                    }
                    _ => None,
                };
                cx.error(
                    ev,
                    "GAP",
                    format!("{n} bytes not captured in the middle of {what}"),
                );
                let plain = self
                    .pending
                    .front()
                    .is_some_and(|p| !p.connect && p.upgrade.is_none());
                if let Some(status) = cut_status
                    && plain
                    && !matches!(self.halves[1 - side].phase, Phase::Held)
                    && let Some(p) = self.pending.pop_front()
                {
                    self.pending_bytes -= p.held_bytes();
                    let a = Answer {
                        server: p.server.clone(),
                        response_bytes: p.interim_bytes + seen + n,
                        request: p,
                        status,
                    };
                    complete(a, ev, Some("response head not fully captured".into()), cx);
                }
                let half = &mut self.halves[side];
                let dropped = half.buf.len() as u64;
                self.drop_half(side, cx);
                let half = &mut self.halves[side];
                half.resync(AFTER_GAP);
                half.skipped += dropped + n;
                half.seen = true;
            }
        }
    }

    /// Forgets the partial state of stream `side`.
    fn drop_half(&mut self, side: usize, cx: &mut Cx<'_, '_>) {
        if let Some(ev) = self.halves[side].last.clone() {
            self.abort_message(side, "response not fully captured", &ev, cx);
        }
        let half = &mut self.halves[side];
        half.buf = Vec::new();
        half.msg = None;
        half.scanned = 0;
        half.phase = Phase::Idle;
    }

    /// Emits every waiting request as an exchange that got no response.
    fn drop_pending(&mut self, why: &str, ev: &Arc<Event>, cx: &mut Cx<'_, '_>) {
        for p in self.pending.drain(..) {
            let a = Answer {
                server: p.server.clone(),
                request: p,
                status: 0,
                response_bytes: 0,
            };
            complete(a, ev, Some(why.to_string()), cx);
        }
        self.pending_bytes = 0;
    }

    /// Events were lost somewhere: nothing partial can be trusted, and
    /// responses may no longer pair with the right requests.
    pub fn lost(&mut self, cx: &mut Cx<'_, '_>) {
        let Some(ev) = self.latest() else {
            return;
        };
        for side in 0..2 {
            // Whatever comes next may be the middle of a message.
            let dropped = self.halves[side].buf.len() as u64;
            self.drop_half(side, cx);
            let half = &mut self.halves[side];
            half.resync(AFTER_LOSS);
            half.skipped += dropped;
        }
        self.drop_pending("no response seen: events were lost", &ev, cx);
    }

    /// The latest event of either stream.
    fn latest(&self) -> Option<Arc<Event>> {
        match (&self.halves[0].last, &self.halves[1].last) {
            (Some(a), Some(b)) => Some(Arc::clone(if a.seq >= b.seq { a } else { b })),
            (a, b) => a.as_ref().or(b.as_ref()).cloned(),
        }
    }

    /// The connection ended (or its state is dropped): a body that runs until
    /// the close is complete; anything else partial is reported, and every
    /// request still waiting gets an exchange with no response.
    pub fn end(&mut self, why: &str, cx: &mut Cx<'_, '_>) {
        for side in 0..2 {
            let half = &mut self.halves[side];
            let Some(ev) = half.last.clone() else {
                continue;
            };
            let kind = half.role.map_or("message", Kind::as_str);
            match &half.phase {
                Phase::Body(b) if b.until_close() => self.end_message(side, &ev, cx),
                Phase::Body(_) => {
                    let offset = half.msg.as_ref().map_or(0, |m| m.offset);
                    cx.error(
                        &ev,
                        "INCOMPLETE",
                        format!("{why}: {kind} body incomplete ({offset} bytes received)"),
                    );
                    self.abort_message(side, &format!("{why} before the response ended"), &ev, cx);
                }
                Phase::Idle if !half.buf.is_empty() => {
                    cx.error(
                        &ev,
                        "INCOMPLETE",
                        format!("{why}: {kind} head incomplete ({} bytes)", half.buf.len()),
                    );
                }
                Phase::Resync if half.skipped + half.buf.len() as u64 > 0 => {
                    let bytes = half.skipped + half.buf.len() as u64;
                    let note = Note::Skipped {
                        kind: half.role,
                        bytes,
                        reason: NO_START,
                    };
                    cx.typed(&ev, note);
                }
                Phase::Held if !half.buf.is_empty() => {
                    cx.error(
                        &ev,
                        "INCOMPLETE",
                        format!(
                            "{why}: {} bytes after an upgrade request whose response never came",
                            half.buf.len()
                        ),
                    );
                }
                _ => {}
            }
            let half = &mut self.halves[side];
            half.buf = Vec::new();
            half.skipped = 0;
        }
        if let Some(ev) = self.latest() {
            self.drop_pending("no response", &ev, cx);
        }
    }

    /// Drops all state after a limit was hit; the connection is decoded again
    /// from the next message start.
    pub fn reset(&mut self, cx: &mut Cx<'_, '_>) {
        for side in 0..2 {
            let dropped = self.halves[side].buf.len() as u64;
            self.drop_half(side, cx);
            let half = &mut self.halves[side];
            half.resync(AFTER_ERROR);
            half.skipped += dropped;
            half.seen = true;
        }
        if let Some(ev) = self.latest() {
            self.drop_pending("dropped: limits.memory", &ev, cx);
        }
    }
}

/// Checks a start line: valid by the grammar, and plausible (an upper-case
/// method, a target that begins like one). The grammar allows any token as a
/// method, but a lower-case word where a request should begin is far more
/// often the end of a body longer than its head declared.
fn check_start(line: &[u8]) -> Result<(), String> {
    parse::start_line(line, 0)?;
    if detect::plausible(line).is_none() {
        let sp = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
        return Err(format!(
            "`{}` does not start a request: not an upper-case method (a body longer than declared?)",
            String::from_utf8_lossy(&line[..sp.min(32)])
        ));
    }
    Ok(())
}

/// The status of a final response whose status line `head` begins with,
/// whole: `HTTP/1.x NNN ...\r\n`. None for anything else, and for interim
/// (1xx) responses, which answer nothing yet.
pub(crate) fn final_status(head: &[u8]) -> Option<u16> {
    let line = head
        .split(|&b| b == b'\n')
        .next()
        .filter(|_| head.contains(&b'\n'))?;
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let status = std::str::from_utf8(code).ok()?.parse::<u16>().ok()?;
    (status >= 200).then_some(status)
}

/// Whether `b` begins with a whole plausible start line.
fn starts_message(b: &[u8]) -> bool {
    matches!(detect::find_start(b, None, b.len(), true), Found::At(0, _))
}

fn drop_inflater(msg: &mut Msg, budget: &Budget) {
    if msg.inflater.take().is_some() {
        budget.give(inflate::STATE_BYTES);
    }
}

/// Emits the exchange record of a request and its response (or of why it got
/// none).
fn complete(a: Answer, ev: &Arc<Event>, error: Option<String>, cx: &mut Cx<'_, '_>) {
    let answered = error.is_none() || a.status != 0;
    let r = a.request;
    let x = Exchange {
        protocol: Arc::clone(&cx.names.http1),
        method: Some(r.method.into()),
        path: Some(r.target.into()),
        authority: r.authority.map(Arc::from),
        status: (a.status != 0).then_some(u32::from(a.status)),
        grpc_status: None,
        grpc_message: None,
        request_bytes: r.request_bytes,
        response_bytes: a.response_bytes,
        started_ns: r.started_ns,
        started_time_ns: r.started_time_ns,
        latency_ns: answered.then(|| ev.ts_ns.saturating_sub(r.started_ns)),
        error,
        client: r.client,
        server: a.server,
    };
    cx.out.push(Record::exchange(
        Arc::clone(ev),
        Arc::clone(&cx.names.http1),
        x,
    ));
}
