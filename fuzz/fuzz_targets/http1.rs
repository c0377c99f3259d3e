//! The http1 decoder (and `auto`, which hands it connections) on arbitrary
//! bytes: both directions of a few connections, in either view, with gaps,
//! lost events and closes mixed in, under small limits so that they are hit.
//! Any panic is a bug; bad input must come out as records, and every byte of
//! the memory budget taken must be given back at the end.
//!
//! Input: one byte of settings (bit 0: `auto` rather than `http1`; bit 1: the
//! syscall view), then events, each a control byte, a length byte and that
//! many bytes of data. Control bit 0: which side sent it; bit 1: the
//! connection (1 or 2); bit 2: bytes missing after it; `0xff`: events were
//! lost; `0xfe`: connection 1 closed.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use spf_decoders::auto::AutoConfig;
use spf_decoders::http1::{Http1, Http1Config};
use spf_decoders::http2::Http2Config;
use spf_pipeline::{BuildContext, Decoder, Direction, Event, Limits, Out, Role, SockKind};

fn event(seq: u64, ctl: u8, syscalls: bool, data: &[u8]) -> Arc<Event> {
    let side = ctl & 1;
    let conn = 1 + u64::from((ctl >> 1) & 1);
    let gap = if ctl & 4 != 0 {
        u64::from(ctl >> 3) + 1
    } else {
        0
    };
    let (dir, via, role) = if syscalls {
        // One end's view: what it sent and what it received.
        let dir = if side == 0 {
            Direction::Send
        } else {
            Direction::Recv
        };
        (dir, None, Role::Client)
    } else {
        let role = if side == 0 {
            Role::Client
        } else {
            Role::Server
        };
        (Direction::Send, Some(Direction::Send), role)
    };
    Arc::new(Event {
        seq,
        ts_ns: seq,
        time_ns: seq,
        pid: 1 + u32::from(side),
        comm: Arc::from("fuzz"),
        sock: SockKind::Stream,
        dir,
        conn,
        socket: 2 * conn + u64::from(side),
        peer_socket: 2 * conn + 1 - u64::from(side),
        role,
        len: data.len() as u64 + gap,
        data: bytes::Bytes::copy_from_slice(data),
        truncated: gap > 0,
        via,
        ..Event::default()
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&settings, mut rest)) = input.split_first() else {
        return;
    };
    let limits = Limits {
        header_list_size: 2048,
        header_fields: 32,
        line_length: 256,
        streams_per_connection: 4,
        decompressed_size: 4096,
        connection_buffer: 8192,
        connections: 4,
        memory: 256 << 10,
        ..Limits::default()
    };
    let ctx = BuildContext::new(limits);
    let mut d: Box<dyn Decoder> = if settings & 1 == 1 {
        Box::new(AutoConfig::default().build_with(&ctx, Vec::new()).unwrap())
    } else {
        Box::new(Http1::new(
            &Http1Config::default(),
            Http2Config::default(),
            &ctx,
        ))
    };
    let syscalls = settings & 2 == 2;
    let mut recs = Vec::new();
    let mut seq = 0u64;
    while let [ctl, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (data, next) = tail.split_at(n);
        rest = next;
        seq += 1;
        let mut out = Out::collect(&mut recs);
        match ctl {
            0xff => d.lost(1, &mut out),
            0xfe => d.closed(1, &mut out),
            _ => d.decode(&event(seq, *ctl, syscalls, data), &mut out),
        }
        assert!(ctx.budget.used() <= 256 << 10);
        recs.clear();
    }
    d.finish(&mut Out::collect(&mut recs));
    assert_eq!(ctx.budget.used(), 0, "budget given back");
});
