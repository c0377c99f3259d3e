//! One connection state: both directions of a connection (connection view)
//! or of one end (syscall view), each cut into frames with its own HPACK
//! table, the streams they share, and each frame dispatched to what decodes it.
//! SETTINGS one side sends bound what the other side sends.

use std::sync::Arc;

use bytes::Bytes;
use spf_pipeline::{Event, Out};

use super::block::Block;
use super::decoder::{Ctx, Settings};
use super::frame::{self, Header, Payload};
use super::framing::{Framer, Step};
use super::held::{Held, Refused};
use super::hpack;
use super::record::{Body, FrameRecord, kind_name};
use super::streams::Streams;

/// Events with more captured bytes than this are not kept whole for the
/// records made after them (at close, after a loss): a copy without the
/// bytes is, so that idle connections do not pin big buffers.
const KEEP_EVENT_BYTES: usize = 1024;

/// Whether a direction's HEADERS carry requests or responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Requests,
    Responses,
}

/// One direction.
pub(crate) struct Flow {
    pub framer: Framer,
    pub hpack: hpack::Decoder,
    pub block: Option<Block>,
    pub role: Option<Role>,
    /// Requests and responses were both seen: two byte streams are interleaved.
    pub mixed: bool,
    /// The latest event of this direction, for records made after it.
    pub last_event: Option<Arc<Event>>,
}

impl Flow {
    fn new(s: &Settings) -> Self {
        let mut hpack = hpack::Decoder::new();
        hpack.set_memory(s.limits.header_table_size, Some(Arc::clone(&s.budget)));
        Flow {
            framer: Framer::new(Held::new(Arc::clone(&s.budget))),
            hpack,
            block: None,
            role: None,
            mixed: false,
            last_event: None,
        }
    }

    /// A connection preface after other bytes: a new session.
    fn new_session(&mut self) {
        self.hpack.reset();
        self.block = None;
        self.role = None;
        self.mixed = false;
    }
}

pub(crate) struct View {
    pub end: u64,
    /// Side 0 and side 1 (see `StreamKey::side`).
    pub flows: [Flow; 2],
    pub streams: Streams,
    /// Sequence number of the latest event, to drop the longest idle first.
    pub last_seq: u64,
    /// Limits already reported for this state (bits of [`Reported`]), so
    /// that a flood reports each once.
    pub reported: u8,
    /// The latest request path, method and authority, shared by the streams
    /// that repeat them (calls repeat the same few).
    pub last_path: Option<Arc<str>>,
    pub last_method: Option<Arc<str>>,
    pub last_authority: Option<Arc<str>>,
}

/// `b` as shared text: the one in `last` when it is the same, else a new one
/// kept there.
pub(crate) fn shared(last: &mut Option<Arc<str>>, b: &[u8]) -> Arc<str> {
    match last {
        Some(l) if l.as_bytes() == b => Arc::clone(l),
        _ => {
            let l: Arc<str> = Arc::from(super::record::lossy(b));
            *last = Some(Arc::clone(&l));
            l
        }
    }
}

/// Limits reported once per connection state.
#[derive(Clone, Copy)]
pub(crate) enum Reported {
    TableMemory = 1,
    Budget = 2,
}

impl View {
    pub(crate) fn new(end: u64, s: &Settings) -> Self {
        View {
            end,
            flows: [Flow::new(s), Flow::new(s)],
            streams: Streams::new(Arc::clone(&s.budget)),
            last_seq: 0,
            reported: 0,
            last_path: None,
            last_method: None,
            last_authority: None,
        }
    }

    /// Sets `what` as reported; true the first time.
    pub(crate) fn first_report(&mut self, what: Reported) -> bool {
        let bit = what as u8;
        let first = self.reported & bit == 0;
        self.reported |= bit;
        first
    }

    /// Decodes the bytes of `ctx.event`, which belong to `side`.
    pub(crate) fn event(&mut self, side: usize, ctx: &mut Ctx<'_, '_>) {
        let e: &Arc<Event> = ctx.event;
        self.flows[side].last_event = Some(keepable(e));
        self.feed(side, &e.data, ctx);
        if e.truncated {
            let missing = e.len.saturating_sub(e.data.len() as u64 + e.skip);
            let note = format!("{missing} bytes of this write were not captured");
            self.gap(side, &note, ctx);
        }
    }

    /// Bytes were lost somewhere: every direction starts over.
    pub(crate) fn lost(&mut self, note: &str, name: &Arc<str>, s: &Settings, out: &mut Out<'_>) {
        for side in 0..2 {
            match self.flows[side].last_event.clone() {
                Some(event) => {
                    let mut ctx = Ctx {
                        event: &event,
                        name,
                        s,
                        out,
                        siblings: [&[], &[]],
                    };
                    self.gap(side, note, &mut ctx);
                }
                None => {
                    // No bytes seen on this direction: whatever comes next
                    // may not be its beginning.
                    let f = &mut self.flows[side];
                    f.framer.resync(s.cfg.max_frame_size);
                    f.hpack.forget();
                }
            }
        }
    }

    /// The bytes after what was decoded so far are missing.
    pub(crate) fn gap(&mut self, side: usize, why: &str, ctx: &mut Ctx<'_, '_>) {
        let f = &mut self.flows[side];
        if f.framer.mode == super::framing::Mode::Start && f.framer.buf.is_empty() {
            // Nothing decoded yet: the connection may have begun unseen.
            f.framer.resync(ctx.s.cfg.max_frame_size);
            f.hpack.forget();
            return;
        }
        self.drop_partial(side, why, ctx);
        let f = &mut self.flows[side];
        f.framer.resync(ctx.s.cfg.max_frame_size);
        f.hpack.forget();
    }

    /// Reports what is held back when the state goes away, and every
    /// exchange still waiting for its response.
    pub(crate) fn flush(
        &mut self,
        name: &Arc<str>,
        s: &Settings,
        limit: Option<&str>,
        why: &str,
        out: &mut Out<'_>,
    ) {
        let Some(last) = self.last_event() else {
            return;
        };
        if let Some(l) = limit {
            let mut ctx = Ctx {
                event: &last,
                name,
                s,
                out,
                siblings: [&[], &[]],
            };
            ctx.limit(l.to_string());
        }
        for side in 0..2 {
            let Some(event) = self.flows[side].last_event.clone() else {
                continue;
            };
            let mut ctx = Ctx {
                event: &event,
                name,
                s,
                out,
                siblings: [&[], &[]],
            };
            self.drop_partial(side, why, &mut ctx);
        }
        let mut ctx = Ctx {
            event: &last,
            name,
            s,
            out,
            siblings: [&[], &[]],
        };
        self.end_exchanges(None, &mut ctx);
    }

    /// The later of the two directions' latest events.
    fn last_event(&self) -> Option<Arc<Event>> {
        let [a, b] = [&self.flows[0].last_event, &self.flows[1].last_event];
        match (a, b) {
            (Some(a), Some(b)) => Some(Arc::clone(if a.seq >= b.seq { a } else { b })),
            (a, b) => a.clone().or_else(|| b.clone()),
        }
    }

    /// Emits every pending exchange (lowest stream first) as unanswered and
    /// forgets the streams, as the connection (or its state) ends. `limit`
    /// names the limit that ended them, if one did.
    pub(crate) fn end_exchanges(&mut self, limit: Option<&str>, ctx: &mut Ctx<'_, '_>) {
        for id in self.streams.ids() {
            if let Some(mut st) = self.streams.remove(id)
                && let Some(p) = st.exchange.take()
                && self.answerable(&p)
            {
                let why = limit.unwrap_or(p.unanswered()).to_string();
                ctx.exchange(p.finish(&ctx.s.protocols, Some(why), None));
            }
        }
    }

    /// Whether this state could have seen the exchange's response: not when
    /// no byte ever came the other way (the syscall view of one end whose
    /// receives are not captured). Such exchanges end without a record
    /// rather than as unanswered.
    pub(crate) fn answerable(&self, p: &super::streams::Pending) -> bool {
        self.flows[1 - p.req_side].last_event.is_some()
    }

    /// Reports and drops a partial frame, header block, or skipped bytes.
    fn drop_partial(&mut self, side: usize, why: &str, ctx: &mut Ctx<'_, '_>) {
        let f = &mut self.flows[side];
        if let Some(b) = f.block.take() {
            b.report_dropped(why, ctx);
        }
        f.framer.drop_partial(why, ctx);
        // Message boundaries after this point are unknown.
        for (id, n) in self.streams.drop_messages(side) {
            ctx.error(
                None,
                format!("{why}: gRPC message on stream {id} incomplete ({n} bytes)"),
            );
        }
    }

    /// The memory budget refused what this state needed: it loses its
    /// state, and decodes on as if it had joined the connection midway.
    pub(crate) fn drop_state(&mut self, ctx: &mut Ctx<'_, '_>) {
        if self.first_report(Reported::Budget) {
            ctx.limit(format!(
                "decoder memory (limits.memory, {} bytes) is used up: the state of connection {} is dropped",
                ctx.s.limits.memory,
                ctx.conn()
            ));
        }
        for f in &mut self.flows {
            f.block = None;
            f.framer.resync(ctx.s.cfg.max_frame_size);
            f.hpack.forget();
        }
        self.end_exchanges(Some("no response"), ctx);
    }

    fn feed(&mut self, side: usize, data: &Bytes, ctx: &mut Ctx<'_, '_>) {
        let mut rest: &[u8] = data;
        let f = &mut self.flows[side].framer;
        if !f.buf.is_empty() {
            if f.mode == super::framing::Mode::Frames && f.discard == 0 {
                // Complete the held frame from the new bytes, then go on
                // without copying.
                if f.buf.len() < frame::HEADER_LEN {
                    let take = (frame::HEADER_LEN - f.buf.len()).min(rest.len());
                    if let Err(r) = f.buf.extend(&rest[..take], ctx.s.limits.connection_buffer) {
                        self.refused(side, r, ctx);
                        return;
                    }
                    rest = &rest[take..];
                }
                let Some(h) = Header::parse(f.buf.as_slice()) else {
                    return;
                };
                let total = frame::HEADER_LEN + h.length as usize;
                // A frame too long to decode or to hold is for the framer to
                // report, from its header alone.
                if h.length <= f.max_frame && total <= ctx.s.limits.connection_buffer {
                    // What is held may be more than this frame (bytes held
                    // while looking for where frames begin): then nothing
                    // is taken, and the held frames are decoded first.
                    let take = total.saturating_sub(f.buf.len()).min(rest.len());
                    if let Err(r) = f.buf.extend(&rest[..take], ctx.s.limits.connection_buffer) {
                        self.refused(side, r, ctx);
                        return;
                    }
                    rest = &rest[take..];
                    if f.buf.len() < total {
                        return;
                    }
                }
            } else {
                // Still looking for where frames begin: run over everything held.
                if let Err(r) = f.buf.extend(rest, ctx.s.limits.connection_buffer) {
                    self.refused(side, r, ctx);
                    return;
                }
                rest = &[];
            }
            let epoch = f.epoch;
            let held = f.buf.take();
            let n = self.run(side, &held, None, ctx);
            let f = &mut self.flows[side].framer;
            if f.epoch != epoch {
                // The state was dropped while decoding: the held bytes went with it.
                return;
            }
            let mut held = held;
            held.drain(..n);
            let empty = held.is_empty();
            f.buf.restore(held);
            if !empty {
                if let Err(r) = f.buf.extend(rest, ctx.s.limits.connection_buffer) {
                    self.refused(side, r, ctx);
                }
                return;
            }
            f.buf.clear();
        }
        if rest.is_empty() {
            return;
        }
        let epoch = self.flows[side].framer.epoch;
        let n = self.run(side, rest, Some(data), ctx);
        let f = &mut self.flows[side].framer;
        if f.epoch != epoch || n == rest.len() {
            return;
        }
        if let Err(r) = f.buf.extend(&rest[n..], ctx.s.limits.connection_buffer) {
            self.refused(side, r, ctx);
        }
    }

    /// Bytes could not be held.
    fn refused(&mut self, side: usize, r: Refused, ctx: &mut Ctx<'_, '_>) {
        match r {
            Refused::Budget => self.drop_state(ctx),
            Refused::Limit => {
                // Only bytes looking for a frame boundary can grow past the
                // buffer limit (a frame longer than it is discarded instead):
                // drop them and keep looking.
                ctx.limit(format!(
                    "more than limits.connection_buffer ({}) bytes held on connection {}: dropped",
                    ctx.s.limits.connection_buffer,
                    ctx.conn()
                ));
                let f = &mut self.flows[side];
                f.framer.resync(ctx.s.cfg.max_frame_size);
                f.hpack.forget();
                f.block = None;
            }
        }
    }

    /// Consumes what it can of `bytes` (a slice of `src` when given: frames
    /// wholly inside keep their payloads without a copy); returns how many
    /// bytes it consumed.
    fn run(
        &mut self,
        side: usize,
        bytes: &[u8],
        src: Option<&Bytes>,
        ctx: &mut Ctx<'_, '_>,
    ) -> usize {
        let mut p = 0usize;
        let epoch = self.flows[side].framer.epoch;
        loop {
            if self.flows[side].framer.epoch != epoch {
                // The state was dropped: the rest is decoded as joined midway.
                return p;
            }
            let rest = &bytes[p..];
            match self.flows[side].framer.step(rest, ctx) {
                Step::Need(n) => return p + n,
                Step::Consumed(n) => p += n,
                Step::Preface(n) => {
                    p += n;
                    ctx.record(FrameRecord {
                        kind: 0,
                        flags: 0,
                        stream_id: 0,
                        length: n as u32,
                        body: Body::Preface,
                    });
                }
                Step::Joined => self.flows[side].hpack.forget(),
                Step::Session(n) => {
                    p += n;
                    self.flows[side].new_session();
                }
                Step::Frame(h, n) => {
                    let payload = &rest[frame::HEADER_LEN..n];
                    self.frame(side, h, payload, src, ctx);
                    p += n;
                }
                Step::TooLong(h) => {
                    p += frame::HEADER_LEN;
                    ctx.limit(format!(
                        "{} frame on stream {} of {} bytes is larger than limits.connection_buffer ({}) on connection {}: skipped",
                        kind_name(h.kind),
                        h.stream_id,
                        h.length,
                        ctx.s.limits.connection_buffer,
                        ctx.conn()
                    ));
                    self.lose_frame(side, &h);
                }
                Step::Oversized(h) => {
                    let max = self.flows[side].framer.max_frame;
                    ctx.error(
                        Some("FRAME_SIZE_ERROR"),
                        format!(
                            "{} frame on stream {} of length {} exceeds the maximum frame size {max}",
                            kind_name(h.kind),
                            h.stream_id,
                            h.length
                        ),
                    );
                    let f = &mut self.flows[side];
                    f.block = None;
                    f.hpack.forget();
                    self.streams.drop_messages(side);
                }
            }
        }
    }

    /// A frame is not decoded: what it would have changed is unknown.
    fn lose_frame(&mut self, side: usize, h: &Header) {
        match h.kind {
            frame::HEADERS | frame::PUSH_PROMISE | frame::CONTINUATION => {
                let f = &mut self.flows[side];
                f.block = None;
                f.hpack.forget();
            }
            frame::DATA => {
                if let Some(s) = self.streams.get_mut(h.stream_id) {
                    s.messages[side] = None;
                    s.grpc = false;
                }
            }
            _ => {}
        }
    }

    /// Decodes one whole frame.
    fn frame(
        &mut self,
        side: usize,
        h: Header,
        payload: &[u8],
        src: Option<&Bytes>,
        ctx: &mut Ctx<'_, '_>,
    ) {
        if self.flows[side]
            .block
            .as_ref()
            .is_some_and(|b| h.kind != frame::CONTINUATION || h.stream_id != b.stream_id)
        {
            let b = self.flows[side].block.take().expect("checked above");
            self.flows[side].hpack.forget();
            b.report_interrupted(&h, ctx);
        }
        let parsed = match frame::parse_payload(&h, payload) {
            Ok(p) => p,
            Err(e) => {
                if matches!(
                    h.kind,
                    frame::HEADERS | frame::PUSH_PROMISE | frame::CONTINUATION
                ) {
                    // Its header block is lost, and with it any table changes.
                    self.flows[side].block = None;
                    self.flows[side].hpack.forget();
                }
                ctx.error(Some(e.code), e.message);
                return;
            }
        };
        let record = |body| FrameRecord {
            kind: h.kind,
            flags: h.flags,
            stream_id: h.stream_id,
            length: h.length,
            body,
        };
        match parsed {
            Payload::Data { pad, data } => {
                let data = bytes_of(src, data);
                self.data(side, &h, pad, data, ctx);
            }
            Payload::Headers {
                pad,
                priority,
                fragment,
            } => self.open_block(side, &h, pad, priority, None, fragment, ctx),
            Payload::PushPromise {
                pad,
                promised,
                fragment,
            } => self.open_block(side, &h, pad, None, Some(promised), fragment, ctx),
            Payload::Continuation { fragment } => self.continuation(side, &h, fragment, ctx),
            Payload::Priority(pr) => ctx.record(record(Body::Priority(pr))),
            Payload::RstStream { code } => {
                ctx.record(record(Body::RstStream(code)));
                self.reset(h.stream_id, code, ctx);
            }
            Payload::Settings { params } => {
                for &(id, v) in &params {
                    // Settings one side sends bound what the other side sends.
                    let peer = &mut self.flows[1 - side];
                    match id {
                        frame::SETTINGS_HEADER_TABLE_SIZE => peer.hpack.settings_table_size(v),
                        frame::SETTINGS_MAX_FRAME_SIZE => {
                            peer.framer.max_frame = v.min(ctx.s.cfg.max_frame_size);
                            peer.framer.max_frame_seen = true;
                        }
                        _ => {}
                    }
                }
                ctx.record(record(Body::Settings(params)));
            }
            Payload::Ping { data } => ctx.record(record(Body::Ping(data))),
            Payload::GoAway {
                last_stream,
                code,
                debug,
            } => ctx.record(record(Body::GoAway {
                last_stream,
                code,
                debug: bytes_of(src, debug),
            })),
            Payload::WindowUpdate { increment } => {
                ctx.record(record(Body::WindowUpdate(increment)))
            }
            Payload::Unknown => ctx.record(record(Body::Unknown)),
        }
    }

    /// RST_STREAM: the stream is over; its exchange ends with the code.
    fn reset(&mut self, id: u32, code: u32, ctx: &mut Ctx<'_, '_>) {
        if let Some(mut st) = self.streams.remove(id)
            && let Some(p) = st.exchange.take()
        {
            let why = format!("RST_STREAM {}", frame::error_name(code));
            let at = ctx.event.ts_ns;
            ctx.exchange(p.finish(&ctx.s.protocols, Some(why), Some(at)));
        }
    }

    /// `side` ended stream `id` (END_STREAM): an exchange whose response
    /// this ends is complete; a stream both sides ended is forgotten.
    pub(crate) fn end_stream(&mut self, side: usize, id: u32, ctx: &mut Ctx<'_, '_>) {
        let Some(st) = self.streams.get_mut(id) else {
            return;
        };
        st.ended |= 1 << side;
        if let Some(m) = st.messages[side].take()
            && m.pending() > 0
        {
            ctx.error(
                None,
                format!(
                    "stream {id} ended inside a gRPC message ({} bytes held)",
                    m.pending()
                ),
            );
        }
        if st.exchange.as_ref().is_some_and(|p| p.req_side != side) {
            let p = st.exchange.take().expect("checked above");
            ctx.exchange(p.finish(&ctx.s.protocols, None, None));
        }
        if st.ended == 3 {
            self.streams.remove(id);
        }
    }
}

/// The payload as `Bytes`: a slice of the event's bytes when it lies within
/// them, else a copy (a frame reassembled from several events).
fn bytes_of(src: Option<&Bytes>, s: &[u8]) -> Bytes {
    if let Some(b) = src {
        let (start, end) = (b.as_ptr() as usize, b.as_ptr() as usize + b.len());
        let p = s.as_ptr() as usize;
        if p >= start && p + s.len() <= end {
            return b.slice_ref(s);
        }
    }
    Bytes::copy_from_slice(s)
}

/// What to keep of an event for records made after it.
fn keepable(e: &Arc<Event>) -> Arc<Event> {
    if e.data.len() <= KEEP_EVENT_BYTES {
        Arc::clone(e)
    } else {
        Arc::new(Event {
            data: Bytes::new(),
            ..(**e).clone()
        })
    }
}
