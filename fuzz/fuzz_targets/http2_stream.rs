//! The http2 decoder on arbitrary bytes: split into events at points the input
//! chooses, both directions, with losses and truncated events mixed in. Any
//! panic is a bug; errors must come out as records.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use spf_decoders::http2::{Http2, Http2Config};
use spf_pipeline::{BuildContext, Decoder, Direction, Event, Limits, Role, SockKind};

/// An event of either view: the syscall view keyed by pid (no socket), or
/// the connection view, seen from the sender (`pid` 1 the client, 2 the server).
fn event(seq: u64, dir: Direction, pid: u32, data: &[u8], truncated: bool, connection: bool) -> Arc<Event> {
    let (dir, role, via) = if connection {
        let role = if dir == Direction::Send { Role::Client } else { Role::Server };
        (Direction::Send, role, Some(Direction::Send))
    } else {
        (dir, Role::Unknown, None)
    };
    Arc::new(Event {
        seq,
        ts_ns: seq,
        time_ns: seq,
        pid,
        tid: pid,
        comm: Arc::from("fuzz"),
        peer_pid: 0,
        path: Arc::from("/fuzz.sock"),
        sock: SockKind::Stream,
        dir,
        conn: 1 + (seq % 2),
        len: data.len() as u64 + if truncated { 100 } else { 0 },
        data: bytes::Bytes::copy_from_slice(data),
        truncated,
        role,
        via,
        socket: if connection { u64::from(pid) + 10 } else { 0 },
        peer_socket: if connection { 13 - u64::from(pid) } else { 0 },
        ..Event::default()
    })
}

fuzz_target!(|input: &[u8]| {
    let mut out = Vec::new();
    // The first byte steers: whether to start with a preface, which view,
    // and tight limits; then for each event a control byte (size, direction,
    // loss, truncation).
    let (mut rest, with_preface, connection, tight) = match input.split_first() {
        Some((&c, r)) => (r, c & 1 == 1, c & 2 == 2, c & 4 == 4),
        None => return,
    };
    let limits = if tight {
        Limits {
            header_list_size: 256,
            header_table_size: 512,
            continuation_frames: 2,
            streams_per_connection: 4,
            message_size: 64,
            protobuf_fields: 16,
            protobuf_depth: 4,
            connection_buffer: 1024,
            connections: 2,
            memory: 8192,
            ..Limits::default()
        }
    } else {
        Limits::default()
    };
    let ctx = BuildContext::new(limits);
    let mut d = Http2::with_context(Http2Config::default(), &ctx);
    let mut seq = 0u64;
    if with_preface {
        d.decode(&event(seq, Direction::Send, 1, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false, connection), &mut spf_pipeline::Out::collect(&mut out));
        seq += 1;
    }
    while let Some((&ctl, r)) = rest.split_first() {
        let n = (ctl as usize >> 3).min(r.len()) * 3 + 1;
        let n = n.min(r.len());
        let (chunk, next) = r.split_at(n);
        rest = next;
        let dir = if ctl & 1 == 0 { Direction::Send } else { Direction::Recv };
        let pid = 1 + ((ctl >> 2) & 1) as u32;
        d.decode(&event(seq, dir, pid, chunk, ctl & 0x7 == 0x6, connection), &mut spf_pipeline::Out::collect(&mut out));
        seq += 1;
        if ctl == 0xff {
            d.lost(1, &mut spf_pipeline::Out::collect(&mut out));
        }
        if ctl == 0xfe {
            d.closed(1, &mut spf_pipeline::Out::collect(&mut out));
        }
        if out.len() > 4096 {
            out.clear();
        }
    }
    d.finish(&mut spf_pipeline::Out::collect(&mut out));
    drop(d);
    // Everything the decoder took of the memory budget came back.
    assert_eq!(ctx.budget.used(), 0);
});
