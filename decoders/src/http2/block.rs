//! Header blocks: HEADERS or PUSH_PROMISE with their CONTINUATION frames,
//! held until END_HEADERS (within the limits on CONTINUATIONs and held bytes),
//! decoded with the direction's HPACK table (within the header list limit),
//! and what the headers say about their stream and its exchange.

use std::sync::Arc;

use spf_pipeline::Event;

use super::conn::{Reported, Role, View};
use super::decoder::Ctx;
use super::frame::{self, Header, Priority};
use super::grpc;
use super::held::{Held, Refused};
use super::hpack::{HeaderList, HpackError, Outcome};
use super::record::{Body, FrameRecord, GrpcHead, kind_name};
use super::streams::{Pending, sender_receiver};

/// Why a direction's header blocks cannot be decoded.
const MIXED: &str = "both ends of this connection are in one process, whose sends (and receives) of the two ends cannot be told apart";

/// A header block being assembled from HEADERS/PUSH_PROMISE and CONTINUATION.
pub(crate) struct Block {
    pub stream_id: u32,
    /// The opening frame's header and fields, for its record.
    head: Header,
    pad: Option<u8>,
    priority: Option<Priority>,
    promised: Option<u32>,
    /// The event of the opening frame: its record's, and the exchange's start.
    event: Arc<Event>,
    /// The fragments so far, when the block spans frames (a block in one
    /// frame is decoded in place).
    fragment: Option<Held>,
    /// The CONTINUATION frames so far, shown after the opening one once the
    /// block is complete. At most `limits.continuation_frames`.
    conts: Vec<Cont>,
    /// Payload bytes of the block's frames.
    total: u64,
    /// Bytes of the events kept for the records above, taken from the budget.
    retained: usize,
    budget: Option<Arc<spf_pipeline::Budget>>,
    /// A limit was hit: the block is not decoded, its later CONTINUATIONs
    /// are shown as they come.
    discarding: bool,
}

struct Cont {
    length: u32,
    flags: u8,
    event: Arc<Event>,
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give(self.retained);
        }
    }
}

impl Block {
    /// Keeps `event` for a record, taking its bytes from the budget when it
    /// is not kept already.
    fn retain(&mut self, event: &Arc<Event>) -> Result<Arc<Event>, Refused> {
        let last = self.conts.last().map_or(&self.event, |c| &c.event);
        if Arc::ptr_eq(last, event) {
            return Ok(Arc::clone(event));
        }
        let n = event.data.len();
        if let Some(b) = &self.budget {
            if !b.try_take(n) {
                return Err(Refused::Budget);
            }
            self.retained += n;
        }
        Ok(Arc::clone(event))
    }

    /// The block goes unfinished (its state is dropped).
    pub(crate) fn report_dropped(self, why: &str, ctx: &mut Ctx<'_, '_>) {
        if self.discarding {
            return;
        }
        ctx.error(
            None,
            format!(
                "{why}: header block of stream {} incomplete ({} bytes without END_HEADERS)",
                self.stream_id,
                self.fragment.as_ref().map_or(0, Held::len)
            ),
        );
    }

    /// Another frame came before END_HEADERS.
    pub(crate) fn report_interrupted(self, h: &Header, ctx: &mut Ctx<'_, '_>) {
        ctx.error(
            Some("PROTOCOL_ERROR"),
            format!(
                "header block of stream {} interrupted by a {} frame on stream {}",
                self.stream_id,
                kind_name(h.kind),
                h.stream_id
            ),
        );
    }

    /// The records of the block's frames: the opening one (with `headers`
    /// when decoded) and its CONTINUATIONs, each tied to its own event.
    fn emit(
        self,
        headers: Option<&HeaderList>,
        note: Option<&'static str>,
        grpc: Option<GrpcHead>,
        unannounced: Option<usize>,
        ctx: &mut Ctx<'_, '_>,
    ) {
        let first = FrameRecord {
            kind: self.head.kind,
            flags: self.head.flags,
            stream_id: self.head.stream_id,
            length: self.head.length,
            body: Body::Headers {
                pad: self.pad,
                priority: self.priority,
                promised: self.promised,
                headers: headers.map(HeaderList::pack),
                note,
                grpc,
                unannounced: unannounced.map(|n| n as u64),
            },
        };
        let mut c = Ctx {
            event: &self.event,
            name: ctx.name,
            s: ctx.s,
            out: ctx.out,
            siblings: ctx.siblings,
        };
        c.record(first);
        for k in &self.conts {
            let mut c = Ctx {
                event: &k.event,
                name: ctx.name,
                s: ctx.s,
                out: ctx.out,
                siblings: ctx.siblings,
            };
            c.record(continuation_record(self.stream_id, k.length, k.flags));
        }
    }
}

fn continuation_record(stream_id: u32, length: u32, flags: u8) -> FrameRecord {
    FrameRecord {
        kind: frame::CONTINUATION,
        flags,
        stream_id,
        length,
        body: Body::Continuation,
    }
}

/// What a header list says that matters beyond showing it, borrowed from it.
#[derive(Default)]
struct Facts<'a> {
    method: Option<&'a [u8]>,
    path: Option<&'a [u8]>,
    authority: Option<&'a [u8]>,
    status: Option<u32>,
    content_type_known: bool,
    content_type_grpc: bool,
    grpc_status: Option<u32>,
    grpc_message: Option<&'a [u8]>,
    any_unknown: bool,
}

fn number(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

impl<'a> Facts<'a> {
    fn of(list: &'a HeaderList) -> Facts<'a> {
        let mut f = Facts::default();
        for h in list.iter() {
            if h.unknown {
                f.any_unknown = true;
                continue;
            }
            match h.name {
                b":method" => f.method = Some(h.value),
                b":path" => f.path = Some(h.value),
                b":authority" => f.authority = Some(h.value),
                b":status" => f.status = number(h.value),
                b"content-type" => {
                    f.content_type_known = true;
                    f.content_type_grpc = h.value.starts_with(b"application/grpc");
                }
                b"grpc-status" => f.grpc_status = number(h.value),
                b"grpc-message" => f.grpc_message = Some(h.value),
                _ => {}
            }
        }
        f
    }
}

impl View {
    /// HEADERS or PUSH_PROMISE: a header block begins.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open_block(
        &mut self,
        side: usize,
        h: &Header,
        pad: Option<u8>,
        priority: Option<Priority>,
        promised: Option<u32>,
        fragment: &[u8],
        ctx: &mut Ctx<'_, '_>,
    ) {
        let mut block = Block {
            stream_id: h.stream_id,
            head: *h,
            pad,
            priority,
            promised,
            event: Arc::clone(ctx.event),
            fragment: None,
            conts: Vec::new(),
            total: h.length.into(),
            retained: 0,
            budget: None,
            discarding: false,
        };
        if h.has(frame::END_HEADERS) {
            // The common case: the whole block in one frame, decoded in place.
            self.decode_block(side, block, fragment, ctx);
            return;
        }
        if !ctx.s.budget.try_take(ctx.event.data.len()) {
            self.drop_state(ctx);
            return;
        }
        block.retained = ctx.event.data.len();
        block.budget = Some(Arc::clone(&ctx.s.budget));
        let held = block.fragment.insert(Held::new(Arc::clone(&ctx.s.budget)));
        if let Err(r) = held.extend(fragment, ctx.s.limits.connection_buffer) {
            self.block_refused(side, block, r, ctx);
            return;
        }
        self.flows[side].block = Some(block);
    }

    /// CONTINUATION: more of the block, or its end.
    pub(crate) fn continuation(
        &mut self,
        side: usize,
        h: &Header,
        fragment: &[u8],
        ctx: &mut Ctx<'_, '_>,
    ) {
        let Some(mut block) = self.flows[side].block.take() else {
            ctx.error(
                Some("PROTOCOL_ERROR"),
                format!(
                    "CONTINUATION frame on stream {} without a header block",
                    h.stream_id
                ),
            );
            return;
        };
        block.total += u64::from(h.length);
        let end = h.has(frame::END_HEADERS);
        if block.discarding {
            // Shown as it comes, nothing kept.
            ctx.record(continuation_record(h.stream_id, h.length, h.flags));
            if !end {
                self.flows[side].block = Some(block);
            }
            return;
        }
        if block.conts.len() >= ctx.s.limits.continuation_frames {
            ctx.limit(format!(
                "more than limits.continuation_frames ({}) CONTINUATION frames in the header block of stream {} on connection {}: block dropped",
                ctx.s.limits.continuation_frames,
                h.stream_id,
                ctx.conn()
            ));
            self.give_up_block(side, block, Some(h), end, ctx);
            return;
        }
        let event = match block.retain(ctx.event) {
            Ok(e) => e,
            Err(r) => {
                self.block_refused(side, block, r, ctx);
                return;
            }
        };
        let held = block
            .fragment
            .get_or_insert_with(|| Held::new(Arc::clone(&ctx.s.budget)));
        if let Err(r) = held.extend(fragment, ctx.s.limits.connection_buffer) {
            self.block_refused(side, block, r, ctx);
            return;
        }
        block.conts.push(Cont {
            length: h.length,
            flags: h.flags,
            event,
        });
        if end {
            let fragment = block.fragment.as_mut().map(Held::take).unwrap_or_default();
            self.decode_block(side, block, &fragment, ctx);
        } else {
            self.flows[side].block = Some(block);
        }
    }

    fn block_refused(&mut self, side: usize, block: Block, r: Refused, ctx: &mut Ctx<'_, '_>) {
        match r {
            Refused::Budget => {
                drop(block);
                self.drop_state(ctx);
            }
            Refused::Limit => {
                ctx.limit(format!(
                    "header block of stream {} larger than limits.connection_buffer ({}) on connection {}: block dropped",
                    block.stream_id,
                    ctx.s.limits.connection_buffer,
                    ctx.conn()
                ));
                self.give_up_block(side, block, None, false, ctx);
            }
        }
    }

    /// A limit stopped the block: its table changes are lost, its records
    /// come out now (without headers), and its later CONTINUATIONs (the
    /// current one, `cont`, included) are shown as they come.
    fn give_up_block(
        &mut self,
        side: usize,
        mut block: Block,
        cont: Option<&Header>,
        end: bool,
        ctx: &mut Ctx<'_, '_>,
    ) {
        self.flows[side].hpack.forget();
        self.drop_stream(block.stream_id, "header block dropped", ctx);
        block.fragment = None;
        let conts = std::mem::take(&mut block.conts);
        let stream_id = block.stream_id;
        let keep = Block {
            stream_id,
            head: block.head,
            pad: None,
            priority: None,
            promised: None,
            event: Arc::clone(&block.event),
            fragment: None,
            conts: Vec::new(),
            total: block.total,
            retained: 0,
            budget: None,
            discarding: true,
        };
        block.conts = conts;
        block.emit(None, Some("a limit was hit"), None, None, ctx);
        if let Some(h) = cont {
            ctx.record(continuation_record(h.stream_id, h.length, h.flags));
        }
        if !end {
            self.flows[side].block = Some(keep);
        }
    }

    /// Forgets a stream whose state a limit dropped; its exchange, if any,
    /// ends with `why`. True when the stream held state worth reporting (an
    /// exchange or part of a gRPC message).
    pub(crate) fn drop_stream(&mut self, id: u32, why: &str, ctx: &mut Ctx<'_, '_>) -> bool {
        let Some(mut st) = self.streams.remove(id) else {
            return false;
        };
        let partial = st.messages.iter().flatten().any(|m| m.pending() > 0);
        match st.exchange.take() {
            Some(p) if self.answerable(&p) => {
                ctx.exchange(p.finish(&ctx.s.protocols, Some(why.to_string()), None));
                true
            }
            _ => partial,
        }
    }

    /// A whole block: decodes it and emits the opening frame's record (with
    /// the headers) and its CONTINUATION records.
    fn decode_block(&mut self, side: usize, block: Block, fragment: &[u8], ctx: &mut Ctx<'_, '_>) {
        if self.flows[side].mixed {
            block.emit(None, Some(MIXED), None, None, ctx);
            return;
        }
        // One list for the whole decoder: blocks are decoded one at a time.
        let s = ctx.s;
        let mut list = s.list.borrow_mut();
        list.clear();
        let max = ctx.s.limits.header_list_size;
        let result = self.flows[side].hpack.decode(fragment, &mut list, max);
        self.table_events(side, ctx);
        let kind = block.head.kind;
        let stream_id = block.stream_id;
        match result {
            Err(e) => {
                self.compression_error(side, kind, stream_id, &e, &list, ctx);
                block.emit(None, Some("COMPRESSION_ERROR"), None, None, ctx);
            }
            Ok(Outcome {
                over_limit: true,
                unannounced_size,
            }) => {
                ctx.limit(format!(
                    "header list of stream {stream_id} larger than limits.header_list_size ({max}) on connection {}: not shown",
                    ctx.conn()
                ));
                self.drop_stream(
                    stream_id,
                    "header list larger than limits.header_list_size",
                    ctx,
                );
                block.emit(None, Some("a limit was hit"), None, unannounced_size, ctx);
            }
            Ok(Outcome {
                over_limit: false,
                unannounced_size,
            }) => self.headers(side, block, &list, unannounced_size, ctx),
        }
        list.shrink(64 * 1024);
    }

    /// Reports what the HPACK table dropped for memory, once per state.
    fn table_events(&mut self, side: usize, ctx: &mut Ctx<'_, '_>) {
        let ev = self.flows[side].hpack.take_events();
        if ev.trimmed && self.first_report(Reported::TableMemory) {
            ctx.limit(format!(
                "header table larger than limits.header_table_size ({}) on connection {}: its oldest entries are shown as placeholders",
                ctx.s.limits.header_table_size,
                ctx.conn()
            ));
        }
        if ev.refused && self.first_report(Reported::Budget) {
            ctx.limit(format!(
                "decoder memory (limits.memory, {} bytes) is used up: the header table of connection {} was emptied",
                ctx.s.limits.memory,
                ctx.conn()
            ));
        }
    }

    fn compression_error(
        &mut self,
        side: usize,
        kind: u8,
        stream_id: u32,
        e: &HpackError,
        list: &HeaderList,
        ctx: &mut Ctx<'_, '_>,
    ) {
        self.flows[side].hpack.forget();
        let mut msg = format!("{} frame on stream {stream_id}: {e}", kind_name(kind));
        if !list.is_empty() {
            msg.push_str("; decoded before the error:");
            for f in list.iter() {
                msg.push(' ');
                super::record::lossy_text(f.name, &mut msg);
                msg.push_str(": ");
                super::record::lossy_text(f.value, &mut msg);
                msg.push(';');
            }
        }
        ctx.error(Some("COMPRESSION_ERROR"), msg);
    }

    /// A decoded header list: checks the direction's role, learns about the
    /// stream, advances its exchange, and emits the records.
    fn headers(
        &mut self,
        side: usize,
        block: Block,
        list: &HeaderList,
        unannounced: Option<usize>,
        ctx: &mut Ctx<'_, '_>,
    ) {
        let kind = block.head.kind;
        let stream_id = block.stream_id;
        let facts = Facts::of(list);
        if kind == frame::HEADERS && self.check_role(side, stream_id, &facts, ctx) {
            block.emit(None, Some(MIXED), None, None, ctx);
            return;
        }
        let target = block.promised.unwrap_or(stream_id);
        let end_stream = kind == frame::HEADERS && block.head.has(frame::END_STREAM);
        let grpc_head = self.learn(side, &block, target, &facts, ctx);
        block.emit(Some(list), None, grpc_head, unannounced, ctx);
        if end_stream {
            self.end_stream(side, stream_id, ctx);
        }
    }

    /// Only clients send :method in HEADERS and only servers :status. A
    /// direction that carries both holds two byte streams, each with its
    /// own HPACK table: nothing decoded from it can be trusted. True when
    /// this block shows that.
    fn check_role(
        &mut self,
        side: usize,
        stream_id: u32,
        facts: &Facts<'_>,
        ctx: &mut Ctx<'_, '_>,
    ) -> bool {
        let role = if facts.method.is_some() {
            Some(Role::Requests)
        } else if facts.status.is_some() {
            Some(Role::Responses)
        } else {
            None
        };
        let f = &mut self.flows[side];
        match (f.role, role) {
            (Some(a), Some(b)) if a != b => {
                f.mixed = true;
                f.hpack.forget();
                ctx.error(
                    None,
                    format!(
                        "HEADERS frame on stream {stream_id}: requests and responses in one direction: {MIXED}; header blocks of this direction are no longer decoded"
                    ),
                );
                true
            }
            (None, Some(b)) => {
                f.role = Some(b);
                false
            }
            _ => false,
        }
    }

    /// Updates stream `target` with what its headers say, and its exchange;
    /// returns the `grpc` object of the record.
    fn learn(
        &mut self,
        side: usize,
        block: &Block,
        target: u32,
        facts: &Facts<'_>,
        ctx: &mut Ctx<'_, '_>,
    ) -> Option<GrpcHead> {
        let is_headers = block.head.kind == frame::HEADERS;
        let request = is_headers && facts.method.is_some();
        // Streams are kept only for what needs them later: a path, gRPC, an
        // exchange to pair. A request is one even when its path is a table
        // entry from before spf attached: paired, with the path left out.
        let worth = facts.path.is_some()
            || facts.content_type_grpc
            || facts.grpc_status.is_some()
            || (request && ctx.s.cfg.exchanges)
            || self.streams.get(target).is_some();
        if !worth {
            return None;
        }
        if !self.room_for(target, ctx) {
            return None;
        }
        let path_len = facts.path.map_or(0, <[u8]>::len);
        let new = self.streams.get(target).is_none();
        let st = match self.streams.entry(target) {
            Ok(st) => st,
            Err(_) => {
                self.drop_state(ctx);
                return None;
            }
        };
        if new && block.promised.is_some() {
            // A pushed stream: its client never sends on it.
            st.ended |= 1 << (1 - side);
        }
        if let Some(p) = facts.path {
            st.path = Some(super::conn::shared(&mut self.last_path, p));
        }
        // A block decoded without placeholders and without a content-type
        // also settles it: there is none.
        if facts.content_type_known || !facts.any_unknown {
            st.content_type_known = true;
            st.inferred = false;
        }
        if facts.content_type_grpc {
            st.grpc = true;
        }
        let mut cost = path_len;
        if request && ctx.s.cfg.exchanges && st.exchange.is_none() && st.ended & (1 << side) == 0 {
            let (client, server) = sender_receiver(&block.event);
            cost += facts.method.map_or(0, <[u8]>::len) + facts.authority.map_or(0, <[u8]>::len);
            st.exchange = Some(Box::new(Pending {
                req_side: side,
                grpc: facts.content_type_grpc,
                method: facts
                    .method
                    .map(|m| super::conn::shared(&mut self.last_method, m)),
                path: st.path.clone(),
                authority: facts
                    .authority
                    .map(|a| super::conn::shared(&mut self.last_authority, a)),
                status: None,
                grpc_status: None,
                grpc_message: None,
                request_bytes: block.total,
                response_bytes: 0,
                started_ns: block.event.ts_ns,
                started_time_ns: block.event.time_ns,
                last_response_ns: None,
                client,
                server,
                server_seen: false,
            }));
        } else if is_headers && let Some(p) = st.exchange.as_deref_mut() {
            if p.req_side == side {
                // The request's trailers.
                p.request_bytes += block.total;
            } else {
                p.response_frame(ctx.event, 0);
                p.response_bytes += block.total;
                if let Some(s) = facts.status
                    && (s >= 200 || p.status.is_none())
                {
                    p.status = Some(s);
                }
                if facts.grpc_status.is_some() {
                    p.grpc_status = facts.grpc_status;
                    p.grpc_message = facts.grpc_message.map(grpc::percent_decode);
                }
                if facts.content_type_grpc {
                    p.grpc = true;
                }
            }
        }
        let grpc = ctx.s.cfg.grpc && is_headers && (st.grpc || facts.grpc_status.is_some());
        let head = grpc.then(|| GrpcHead {
            method: st.path.clone().or_else(|| ctx.sibling_path(target)),
            status: facts.grpc_status,
            message: facts
                .grpc_message
                .map(|m| grpc::percent_decode(m).into_boxed_str()),
        });
        if cost > 0 && self.streams.charge(target, cost).is_err() {
            self.drop_state(ctx);
        }
        head
    }

    /// Makes room for stream `id` when the state holds as many streams as
    /// `limits.streams_per_connection` allows: the oldest quarter goes, their
    /// exchanges ending unanswered. False when there is no room at all.
    pub(crate) fn room_for(&mut self, id: u32, ctx: &mut Ctx<'_, '_>) -> bool {
        let max = ctx.s.limits.streams_per_connection;
        if self.streams.get(id).is_some() || self.streams.len() < max {
            return true;
        }
        if max == 0 {
            return false;
        }
        let oldest = self.streams.oldest((max / 4).max(1));
        let n = oldest.len();
        let mut lost = false;
        for old in oldest {
            lost |= self.drop_stream(old, "no response", ctx);
        }
        // What is known of a stream only to show its frames better (its
        // path, gRPC) goes silently; state that cannot be had back is reported.
        if lost {
            ctx.limit(format!(
                "more than limits.streams_per_connection ({max}) streams on connection {}: the state of the oldest {n} is dropped",
                ctx.conn()
            ));
        }
        true
    }
}
