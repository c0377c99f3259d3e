//! What one connection state knows of each stream: its path and gRPC-ness
//! (for the records of its frames), its gRPC messages being reassembled, and
//! the exchange (request and response) it carries until it completes.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use spf_pipeline::{Budget, Endpoint, Event, Exchange};

use super::grpc;

/// One stream.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub path: Option<Arc<str>>,
    pub grpc: bool,
    /// Some content-type of this stream was decoded (not a placeholder).
    pub content_type_known: bool,
    /// gRPC was inferred from the DATA itself, the content-type being unknown.
    pub inferred: bool,
    /// Sides (bit 0, bit 1) that ended the stream with END_STREAM.
    pub ended: u8,
    /// gRPC messages being reassembled, per side.
    pub messages: [Option<grpc::Messages>; 2],
    pub exchange: Option<Box<Pending>>,
    /// Memory taken from the budget for this entry.
    cost: usize,
}

/// An exchange whose response has not completed.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The side the request came from; the response comes from the other.
    pub req_side: usize,
    pub grpc: bool,
    pub method: Option<Arc<str>>,
    pub path: Option<Arc<str>>,
    pub authority: Option<Arc<str>>,
    pub status: Option<u32>,
    pub grpc_status: Option<u32>,
    pub grpc_message: Option<String>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub started_ns: u64,
    pub started_time_ns: u64,
    /// Kernel time of the latest response frame.
    pub last_response_ns: Option<u64>,
    pub client: Endpoint,
    pub server: Endpoint,
    /// The server's endpoint came from a response event (not guessed from
    /// the request's peer).
    pub server_seen: bool,
}

/// The process that wrote an event's bytes, and the one that read them. In
/// the connection view the event is the sender's; in the syscall view a
/// receive is the receiver's.
pub(crate) fn sender_receiver(e: &Event) -> (Endpoint, Endpoint) {
    let me = Endpoint {
        pid: e.pid,
        comm: Arc::clone(&e.comm),
    };
    let peer = Endpoint {
        pid: e.peer_pid,
        comm: Arc::clone(&e.peer_comm),
    };
    if e.via.is_some() || e.dir == spf_pipeline::Direction::Send {
        (me, peer)
    } else {
        (peer, me)
    }
}

impl Pending {
    /// Records a response frame of `len` payload bytes seen at `event`.
    pub(crate) fn response_frame(&mut self, event: &Event, len: u32) {
        self.response_bytes += u64::from(len);
        self.last_response_ns = Some(event.ts_ns);
        if !self.server_seen {
            let (server, client) = sender_receiver(event);
            self.server = server;
            self.server_seen = true;
            self.client.fill_comm(&client);
        }
    }

    /// The exchange as a record body, with `error` when it did not complete
    /// normally and `latency_ns` up to `end_ns` when set, else up to the last
    /// response frame.
    pub(crate) fn finish(
        self,
        protocols: &Protocols,
        error: Option<String>,
        end_ns: Option<u64>,
    ) -> Exchange {
        let end = end_ns.or(self.last_response_ns);
        Exchange {
            protocol: Arc::clone(if self.grpc {
                &protocols.grpc
            } else {
                &protocols.http2
            }),
            method: self.method,
            path: self.path,
            authority: self.authority,
            status: self.status,
            grpc_status: self.grpc_status,
            grpc_message: self.grpc_message,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            started_ns: self.started_ns,
            started_time_ns: self.started_time_ns,
            latency_ns: end.map(|e| e.saturating_sub(self.started_ns)),
            error,
            client: self.client,
            server: self.server,
        }
    }

    /// Why it ends without its response's last frame.
    pub(crate) fn unanswered(&self) -> &'static str {
        if self.last_response_ns.is_some() {
            "response incomplete"
        } else {
            "no response"
        }
    }
}

/// The exchange protocol names, shared by every record.
#[derive(Debug)]
pub(crate) struct Protocols {
    pub http2: Arc<str>,
    pub grpc: Arc<str>,
}

impl Default for Protocols {
    fn default() -> Self {
        Protocols {
            http2: Arc::from("http2"),
            grpc: Arc::from("grpc"),
        }
    }
}

/// The streams of one connection state, bounded in number and taken from
/// the memory budget.
#[derive(Debug)]
pub(crate) struct Streams {
    /// Stream ids are chosen by the peers, but at most
    /// `limits.streams_per_connection` are held, which bounds what colliding
    /// ids could cost a fast hash.
    map: FxHashMap<u32, Stream>,
    budget: Arc<Budget>,
}

/// What an entry costs besides its strings: the entry, the map's slot and
/// an exchange's allocation, roughly.
const ENTRY_COST: usize = 256;

/// Why a stream could not be tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The memory budget is spent.
    Budget,
}

impl Drop for Streams {
    fn drop(&mut self) {
        let cost: usize = self.map.values().map(|s| s.cost).sum();
        self.budget.give(cost);
    }
}

impl Streams {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        Streams {
            map: FxHashMap::default(),
            budget,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&self, id: u32) -> Option<&Stream> {
        self.map.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut Stream> {
        self.map.get_mut(&id)
    }

    /// The stream, added if new. The caller makes room first (see
    /// [`Streams::oldest`]) when [`Streams::len`] reached its limit.
    pub(crate) fn entry(&mut self, id: u32) -> Result<&mut Stream, Full> {
        if !self.map.contains_key(&id) {
            if !self.budget.try_take(ENTRY_COST) {
                return Err(Full::Budget);
            }
            self.map.insert(
                id,
                Stream {
                    cost: ENTRY_COST,
                    ..Stream::default()
                },
            );
        }
        Ok(self.map.get_mut(&id).expect("inserted above"))
    }

    /// Takes `n` more bytes (strings kept by the stream) from the budget.
    pub(crate) fn charge(&mut self, id: u32, n: usize) -> Result<(), Full> {
        let Some(s) = self.map.get_mut(&id) else {
            return Ok(());
        };
        if !self.budget.try_take(n) {
            return Err(Full::Budget);
        }
        s.cost += n;
        Ok(())
    }

    pub(crate) fn remove(&mut self, id: u32) -> Option<Stream> {
        let s = self.map.remove(&id)?;
        self.budget.give(s.cost);
        Some(s)
    }

    /// The lowest `n` stream ids: the oldest streams, as ids only grow.
    pub(crate) fn oldest(&self, n: usize) -> Vec<u32> {
        let mut ids: Vec<u32> = self.map.keys().copied().collect();
        ids.sort_unstable();
        ids.truncate(n);
        ids
    }

    /// Every stream id, lowest first.
    pub(crate) fn ids(&self) -> Vec<u32> {
        self.oldest(usize::MAX)
    }

    /// Drops every stream's gRPC messages of `side` (bytes were lost there,
    /// or the state goes); returns the streams that held part of one, and
    /// how many bytes, lowest stream first.
    pub(crate) fn drop_messages(&mut self, side: usize) -> Vec<(u32, usize)> {
        let mut partial = Vec::new();
        for (id, s) in &mut self.map {
            if let Some(m) = s.messages[side].take()
                && m.pending() > 0
            {
                partial.push((*id, m.pending()));
            }
        }
        partial.sort_unstable();
        partial
    }
}
