//! The http2 decoder on arbitrary bytes: split into events at points the input
//! chooses, both directions, with losses and truncated events mixed in. Any
//! panic is a bug; errors must come out as records.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use spf_decoders::http2::{Http2, Http2Config};
use spf_pipeline::{Decoder, Direction, Event, SockKind};

fn event(seq: u64, dir: Direction, pid: u32, data: &[u8], truncated: bool) -> Arc<Event> {
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
    })
}

fuzz_target!(|input: &[u8]| {
    let mut d = Http2::new(Http2Config::default());
    let mut out = Vec::new();
    // The first bytes steer: whether to start with a preface, then for each
    // event a control byte (size, direction, loss, truncation).
    let (mut rest, with_preface) = match input.split_first() {
        Some((&c, r)) => (r, c & 1 == 1),
        None => return,
    };
    let mut seq = 0u64;
    if with_preface {
        d.decode(&event(seq, Direction::Send, 1, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false), &mut spf_pipeline::Out::collect(&mut out));
        seq += 1;
    }
    while let Some((&ctl, r)) = rest.split_first() {
        let n = (ctl as usize >> 3).min(r.len()) * 3 + 1;
        let n = n.min(r.len());
        let (chunk, next) = r.split_at(n);
        rest = next;
        let dir = if ctl & 1 == 0 { Direction::Send } else { Direction::Recv };
        let pid = 1 + ((ctl >> 2) & 1) as u32;
        d.decode(&event(seq, dir, pid, chunk, ctl & 0x7 == 0x6), &mut spf_pipeline::Out::collect(&mut out));
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
});
