//! `[limits]`: how much memory the bytes of the traced processes may make spf
//! hold. spf runs as root and decodes what any local process writes to a watched
//! socket, so every allocation that input drives has a bound here. Hitting one
//! gives an error record naming the limit and drops the state it guarded (a
//! stream, a connection), never the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;

use crate::event::View;

/// The configured limits. Defaults suit real traffic with a wide margin; each is
/// a key of `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Decoded size of one header list (HTTP/2 header block, HTTP/1 header
    /// section), counted as RFC 9113's SETTINGS_MAX_HEADER_LIST_SIZE does: each
    /// name and value plus 32 bytes per field.
    pub header_list_size: usize,
    /// Fields in one HTTP/1 header or trailer section.
    pub header_fields: usize,
    /// Longest line of an HTTP/1 message head (request, status or header
    /// line) and of a chunk-size line with its extensions.
    pub line_length: usize,
    /// Bytes of one header compression table (HTTP/2's HPACK dynamic table, per
    /// direction of a connection) kept in memory. A peer may use a larger table;
    /// its oldest entries are then shown as placeholders.
    pub header_table_size: usize,
    /// CONTINUATION frames after one HEADERS or PUSH_PROMISE.
    pub continuation_frames: usize,
    /// Streams (HTTP/2) or outstanding requests (HTTP/1) tracked per connection.
    pub streams_per_connection: usize,
    /// One message reassembled in full (a gRPC message, a body to decompress).
    pub message_size: usize,
    /// Decompressed size of one body (gzip/deflate), and of one gRPC message.
    pub decompressed_size: usize,
    /// Fields shown of one protobuf message, and its nesting depth.
    pub protobuf_fields: usize,
    pub protobuf_depth: usize,
    /// Bytes one connection's decoder may hold while waiting for more (a frame,
    /// a header section, a line) before it drops them with an error.
    pub connection_buffer: usize,
    /// Connections whose decoding state is kept; past it the longest idle go.
    pub connections: usize,
    /// All decoder state together (buffers, tables, pending messages), across
    /// every connection and plugin: past it, the connection asking for more
    /// loses its state.
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_list_size: 256 << 10,
            header_fields: 4096,
            line_length: 64 << 10,
            header_table_size: 1 << 20,
            continuation_frames: 256,
            streams_per_connection: 1024,
            message_size: 16 << 20,
            decompressed_size: 16 << 20,
            protobuf_fields: 4096,
            protobuf_depth: 32,
            connection_buffer: 16 << 20,
            connections: 8192,
            memory: 128 << 20,
        }
    }
}

/// The deepest protobuf nesting `limits.protobuf_depth` may allow: the
/// schema-less view parses nested messages by recursion.
pub const MAX_PROTOBUF_DEPTH: usize = 64;

impl Limits {
    /// The limits at which 0 would refuse all traffic (every line too long,
    /// no connection or byte kept), with their keys. The others have a
    /// meaning at 0: no CONTINUATION frame, no header table kept, no
    /// protobuf field shown.
    pub fn needing_one(&self) -> [(&'static str, usize); 9] {
        [
            ("header_list_size", self.header_list_size),
            ("header_fields", self.header_fields),
            ("line_length", self.line_length),
            ("streams_per_connection", self.streams_per_connection),
            ("message_size", self.message_size),
            ("decompressed_size", self.decompressed_size),
            ("connection_buffer", self.connection_buffer),
            ("connections", self.connections),
            ("memory", self.memory),
        ]
    }
}

/// The global memory budget for decoder state, shared by every decoder of a
/// run. Decoders take bytes before they hold them and give them back when they
/// let go.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Takes `n` bytes of the budget; false (and nothing taken) when that would
    /// go past the limit.
    pub fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(n).filter(|&t| t <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `n` bytes taken earlier.
    pub fn give(&self, n: usize) {
        // Saturating: a decoder giving back more than it took is a bug, but not
        // one worth wrapping the counter over.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// What building a stage may need besides its own table.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub limits: Limits,
    pub budget: Arc<Budget>,
    /// The machine's name as records carry it (`node`); empty for the local
    /// machine when no name was configured.
    pub node: Arc<str>,
    /// How the run shows traffic: a source can prepare for the connection
    /// view (e.g. count stream positions in the kernel).
    pub view: View,
    /// What the source captures, as its config says (e.g. `unix sockets
    /// (path=/run/x.sock)`), for outputs that record how they were made.
    pub source: String,
    /// The `[decoder]` type of the run (`raw`, `http2`, `plugin`, ...): tells a
    /// sink whether decoded records can name a connection's protocol.
    pub decoder: String,
}

impl Default for BuildContext {
    fn default() -> Self {
        BuildContext::new(Limits::default())
    }
}

impl BuildContext {
    pub fn new(limits: Limits) -> Self {
        let budget = Budget::new(limits.memory);
        BuildContext {
            limits,
            budget,
            node: Arc::from(""),
            view: View::default(),
            source: String::new(),
            decoder: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_past_its_limit_and_takes_back() {
        let b = Budget::new(100);
        assert!(b.try_take(60));
        assert!(!b.try_take(41));
        assert_eq!(b.used(), 60);
        assert!(b.try_take(40));
        assert!(!b.try_take(1));
        b.give(50);
        assert_eq!(b.used(), 50);
        b.give(500);
        assert_eq!(b.used(), 0);
        assert!(!b.try_take(usize::MAX));
    }
}
