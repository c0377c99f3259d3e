//! The `http2` decoder: one state per connection (connection view) or per
//! connection end (syscall view), found by [`Event::stream_key`], each with
//! both directions of its bytes; bounded in number, and in memory by the run's
//! budget.

use std::cell::RefCell;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use spf_pipeline::{
    Budget, BuildContext, Decoder, Endpoint, Event, Exchange, Limits, Out, Record, StreamKey,
};

use super::Http2Config;
use super::conn::View;
use super::hpack::HeaderList;
use super::protobuf;
use super::record::FrameRecord;
use super::streams::{Pending, Protocols, sender_receiver};
use crate::evict;

/// The `http2` decoder.
pub struct Http2 {
    name: Arc<str>,
    s: Settings,
    /// Keyed by connection id, which the kernel chooses, not the traced
    /// processes: a fast hash is safe here.
    conns: FxHashMap<u64, Conn>,
    /// Connection states in all `conns` (several per connection in the
    /// syscall view, one per end).
    views: usize,
}

/// What every connection state decodes with.
pub(crate) struct Settings {
    pub cfg: Http2Config,
    pub limits: Limits,
    pub budget: Arc<Budget>,
    pub proto: protobuf::Limits,
    pub protocols: Protocols,
    /// The fields of the header block being decoded, reused for every block
    /// of every connection.
    pub list: RefCell<HeaderList>,
}

/// The states of one connection: one in the connection view; one per end
/// seen in the syscall view, where both ends of a connection may be captured
/// (each decodes its own copy of the bytes).
struct Conn {
    views: Vec<View>,
}

/// Where records go, with what they are tied to.
pub(crate) struct Ctx<'a, 'b> {
    pub event: &'a Arc<Event>,
    pub name: &'a Arc<str>,
    pub s: &'a Settings,
    pub out: &'a mut Out<'b>,
    /// The other states of the same connection (syscall view: the other
    /// end's), which may know a stream this one joined without its request.
    pub siblings: [&'a [View]; 2],
}

impl Ctx<'_, '_> {
    pub(crate) fn record(&mut self, r: FrameRecord) {
        self.out.push(Record::typed(
            Arc::clone(self.event),
            Arc::clone(self.name),
            Arc::new(r),
        ));
    }

    pub(crate) fn error(&mut self, code: Option<&str>, message: String) {
        self.out.push(Record::error(
            Arc::clone(self.event),
            Arc::clone(self.name),
            code.map(str::to_string),
            message,
        ));
    }

    /// A limit was hit: `message` names it.
    pub(crate) fn limit(&mut self, message: String) {
        self.error(Some("LIMIT"), message);
    }

    pub(crate) fn exchange(&mut self, x: Exchange) {
        self.out.push(Record::exchange(
            Arc::clone(self.event),
            Arc::clone(self.name),
            x,
        ));
    }

    /// The path of stream `id` as another state of this connection knows it.
    pub(crate) fn sibling_path(&self, id: u32) -> Option<Arc<str>> {
        self.siblings
            .iter()
            .flat_map(|s| s.iter())
            .find_map(|v| v.streams.get(id)?.path.clone())
    }

    pub(crate) fn conn(&self) -> u64 {
        self.event.conn
    }
}

/// The HTTP/1 request an h2c upgrade answered (see [`Http2::upgraded`]).
pub struct Upgraded {
    /// An event of the request's side of the connection.
    pub event: Arc<Event>,
    pub method: String,
    pub path: String,
    pub authority: Option<String>,
    pub request_bytes: u64,
    pub started_ns: u64,
    pub started_time_ns: u64,
    pub client: Endpoint,
}

impl Http2 {
    /// A decoder with the default limits and a budget of its own.
    pub fn new(cfg: Http2Config) -> Self {
        Http2::with_context(cfg, &BuildContext::default())
    }

    /// A decoder with the run's limits and memory budget.
    pub fn with_context(cfg: Http2Config, ctx: &BuildContext) -> Self {
        let limits = ctx.limits.clone();
        Http2 {
            name: Arc::from("http2"),
            s: Settings {
                proto: protobuf::Limits {
                    fields: limits.protobuf_fields,
                    depth: limits.protobuf_depth,
                },
                cfg,
                limits,
                budget: Arc::clone(&ctx.budget),
                protocols: Protocols::default(),
                list: RefCell::new(HeaderList::new()),
            },
            conns: FxHashMap::default(),
            views: 0,
        }
    }

    /// Whether `key`'s end of its connection has a state.
    fn knows(&self, key: &StreamKey) -> bool {
        self.conns
            .get(&key.conn)
            .is_some_and(|c| c.views.iter().any(|v| v.end == key.end))
    }

    /// A connection upgraded to h2c: the HTTP/1 request that asked for it
    /// becomes stream 1, half closed by the client (RFC 7540 §3.2), whose
    /// response comes in HTTP/2 and completes the exchange.
    pub fn upgraded(&mut self, u: Upgraded) {
        if !self.s.cfg.exchanges {
            return;
        }
        let key = u.event.stream_key();
        // No room for one more state: the response is decoded without its
        // request, as for a connection joined midway.
        if !self.knows(&key) && self.views >= self.s.limits.connections {
            return;
        }
        let (conn, i) = view_of(&mut self.conns, &mut self.views, &self.s, &key);
        let view = &mut conn.views[i];
        let held = u.method.len() + u.path.len() + u.authority.as_ref().map_or(0, String::len);
        if view.streams.entry(1).is_err() || view.streams.charge(1, held).is_err() {
            return;
        }
        let Some(st) = view.streams.get_mut(1) else {
            return;
        };
        let path: Arc<str> = Arc::from(u.path);
        st.path = Some(Arc::clone(&path));
        st.ended |= 1 << key.side;
        let (_, server) = sender_receiver(&u.event);
        st.exchange = Some(Box::new(Pending {
            req_side: key.side,
            grpc: false,
            method: Some(Arc::from(u.method)),
            path: Some(path),
            authority: u.authority.map(Arc::from),
            status: None,
            grpc_status: None,
            grpc_message: None,
            request_bytes: u.request_bytes,
            response_bytes: 0,
            started_ns: u.started_ns,
            started_time_ns: u.started_time_ns,
            last_response_ns: None,
            client: u.client,
            server,
            server_seen: false,
        }));
    }

    /// Connection states currently tracked.
    pub fn view_count(&self) -> usize {
        self.views
    }

    /// Past `limits.connections`, the longest idle quarter of the connection
    /// states is forgotten. If one of them speaks again, it is decoded as a
    /// connection joined midway (placeholders for what its tables held),
    /// never with stale state.
    fn evict_idle(&mut self, out: &mut Out<'_>) {
        let states = self
            .conns
            .iter()
            .flat_map(|(c, conn)| conn.views.iter().map(|v| (v.last_seq, *c, v.end)));
        let limit = self.s.limits.connections;
        for (c, end) in evict::idlest(states, evict::how_many(limit)) {
            let Some(conn) = self.conns.get_mut(&c) else {
                continue;
            };
            let Some(i) = conn.views.iter().position(|v| v.end == end) else {
                continue;
            };
            let mut view = conn.views.swap_remove(i);
            if conn.views.is_empty() {
                self.conns.remove(&c);
            }
            self.views -= 1;
            let why = format!(
                "more than limits.connections ({limit}) connections tracked: the state of idle connection {c} is dropped"
            );
            view.flush(
                &self.name,
                &self.s,
                Some(&why),
                "connection idle, state dropped",
                out,
            );
        }
    }

    fn flush_conn(&mut self, conn: Conn, why: &str, out: &mut Out<'_>) {
        let mut views = conn.views;
        views.sort_by_key(|v| v.end);
        for mut v in views {
            self.views -= 1;
            v.flush(&self.name, &self.s, None, why, out);
        }
    }
}

/// The state of `key`'s end of its connection, made if new (the caller
/// checked for room): its connection and its index there. Over the decoder's
/// fields rather than the decoder, so that its settings stay at hand.
fn view_of<'a>(
    conns: &'a mut FxHashMap<u64, Conn>,
    views: &mut usize,
    s: &Settings,
    key: &StreamKey,
) -> (&'a mut Conn, usize) {
    let conn = conns.entry(key.conn).or_insert_with(|| Conn {
        views: Vec::with_capacity(1),
    });
    let i = match conn.views.iter().position(|v| v.end == key.end) {
        Some(i) => i,
        None => {
            conn.views.push(View::new(key.end, s));
            *views += 1;
            conn.views.len() - 1
        }
    };
    (conn, i)
}

impl Decoder for Http2 {
    fn name(&self) -> &str {
        &self.name
    }

    fn decode(&mut self, event: &Arc<Event>, out: &mut Out<'_>) {
        let key = event.stream_key();
        if !self.knows(&key) && self.views >= self.s.limits.connections {
            self.evict_idle(out);
        }
        let (conn, i) = view_of(&mut self.conns, &mut self.views, &self.s, &key);
        let (before, rest) = conn.views.split_at_mut(i);
        let (view, after) = rest.split_first_mut().expect("index found above");
        view.last_seq = event.seq;
        let mut ctx = Ctx {
            event,
            name: &self.name,
            s: &self.s,
            out,
            siblings: [before, after],
        };
        view.event(key.side, &mut ctx);
    }

    fn lost(&mut self, count: u64, out: &mut Out<'_>) {
        let note = format!("{count} events were lost");
        let mut keys: Vec<u64> = self.conns.keys().copied().collect();
        keys.sort_unstable();
        for c in keys {
            if let Some(conn) = self.conns.get_mut(&c) {
                for v in &mut conn.views {
                    v.lost(&note, &self.name, &self.s, out);
                }
            }
        }
    }

    fn closed(&mut self, conn: u64, out: &mut Out<'_>) {
        if let Some(c) = self.conns.remove(&conn) {
            self.flush_conn(c, "connection closed", out);
        }
    }

    fn finish(&mut self, out: &mut Out<'_>) {
        let mut keys: Vec<u64> = self.conns.keys().copied().collect();
        keys.sort_unstable();
        for k in keys {
            if let Some(c) = self.conns.remove(&k) {
                self.flush_conn(c, "input ended", out);
            }
        }
    }
}
