use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::event::Role;

const CLIENT_SOCK: u64 = 11;
const SERVER_SOCK: u64 = 12;
const BASE: u64 = 1 << 62;

/// A syscall event on a connected stream: `dir` seen from `socket`'s process;
/// lane 0 carries client-to-server bytes.
fn ev(
    seq: u64,
    socket: u64,
    dir: Direction,
    pos: Option<u64>,
    len: u64,
    skip: u64,
    data: &[u8],
) -> SourceItem {
    let client = socket == CLIENT_SOCK;
    let (pid, comm, peer_pid) = if client {
        (100, "client", 200)
    } else {
        (200, "server", 100)
    };
    let from_client = client == (dir == Direction::Send);
    SourceItem::Event(Arc::new(Event {
        seq,
        ts_ns: seq * 1000,
        pid,
        tid: pid + 1,
        comm: comm.into(),
        peer_pid,
        sock: SockKind::Stream,
        dir,
        conn: CLIENT_SOCK,
        socket,
        peer_socket: if client { SERVER_SOCK } else { CLIENT_SOCK },
        role: if client { Role::Client } else { Role::Server },
        lane: u8::from(!from_client),
        pos: pos.map(|p| BASE + p),
        epoch: pos.map_or(0, |_| 7),
        skip,
        len,
        truncated: skip + (data.len() as u64) < len,
        data: bytes::Bytes::copy_from_slice(data),
        ..Event::default()
    }))
}

fn run(items: Vec<SourceItem>) -> Vec<Output> {
    let mut c = Connections::new();
    let mut out = Vec::new();
    let now = Instant::now();
    for i in items {
        c.push(i, now, &mut |o| out.push(o));
    }
    c.finish(&mut |o| out.push(o));
    out
}

/// Pushes one item at wall time `at`, collecting what the stage hands on.
fn push_at(c: &mut Connections, item: SourceItem, at: Instant, out: &mut Vec<Output>) {
    c.push(item, at, &mut |o| out.push(o));
}

fn events(out: &[Output]) -> Vec<Arc<Event>> {
    out.iter()
        .filter_map(|o| match o {
            Output::Item(SourceItem::Event(e)) => Some(Arc::clone(e)),
            _ => None,
        })
        .collect()
}

/// The bytes of one lane, in order, and the gaps in it as (offset, length).
fn lane_bytes(evs: &[Arc<Event>], lane: u8) -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut bytes = Vec::new();
    let mut gaps = Vec::new();
    for e in evs.iter().filter(|e| e.lane == lane) {
        assert_eq!(
            e.pos,
            Some(bytes.len() as u64 + gaps.iter().map(|g: &(u64, u64)| g.1).sum::<u64>())
        );
        bytes.extend_from_slice(&e.data);
        if e.truncated {
            gaps.push((
                e.pos.unwrap() + e.data.len() as u64,
                e.len - e.data.len() as u64,
            ));
        }
    }
    (bytes, gaps)
}

const REQ: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";

#[test]
fn each_byte_once_from_the_sender_with_the_receiver_named() {
    let n = REQ.len() as u64;
    let out = run(vec![
        ev(1, CLIENT_SOCK, Direction::Send, Some(0), n, 0, REQ),
        // The receive the send covers: no data, only who received.
        ev(2, SERVER_SOCK, Direction::Recv, Some(0), n, n, b""),
        ev(3, SERVER_SOCK, Direction::Send, Some(0), 5, 0, b"hello"),
        ev(4, CLIENT_SOCK, Direction::Recv, Some(0), 5, 5, b""),
    ]);
    let evs = events(&out);
    assert_eq!(evs.len(), 2, "{evs:#?}");
    let req = &evs[0];
    assert_eq!(&req.data[..], REQ);
    assert_eq!((req.pid, &*req.comm, req.peer_pid), (100, "client", 200));
    assert_eq!(req.dir, Direction::Send);
    assert_eq!(req.via, Some(Direction::Send));
    assert_eq!(req.role, Role::Client);
    assert_eq!(req.stream_key().side, 0);
    let resp = &evs[1];
    assert_eq!(&resp.data[..], b"hello");
    assert_eq!((resp.pid, resp.peer_pid), (200, 100));
    assert_eq!(&*resp.peer_comm, "client");
    assert_eq!(resp.stream_key().side, 1);
}

#[test]
fn bytes_only_the_receiver_saw_come_from_its_receive() {
    // A server that writes its headers and sends the body with sendfile: the
    // receive skips the headers the send holds and carries the body.
    let body: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let mut whole = b"HDRS".to_vec();
    whole.extend_from_slice(&body);
    let out = run(vec![
        ev(1, SERVER_SOCK, Direction::Send, Some(0), 4, 0, b"HDRS"),
        ev(2, CLIENT_SOCK, Direction::Recv, Some(0), 1004, 4, &body),
    ]);
    let evs = events(&out);
    assert_eq!(lane_bytes(&evs, 1), (whole, vec![]));
    assert_eq!(evs[1].via, Some(Direction::Recv));
    // Seen from the sender: the server, named from its own send.
    assert_eq!((evs[1].pid, &*evs[1].comm), (200, "server"));
    assert_eq!((evs[1].peer_pid, &*evs[1].peer_comm), (100, "client"));
    assert_eq!(evs[1].socket, SERVER_SOCK);
}

#[test]
fn a_peer_never_seen_is_named_as_the_source_found_it() {
    // Only the client is captured (`spf run -- client`): the server makes no
    // syscall spf sees, and its name comes from the source (/proc) alone.
    let named = |item: SourceItem| match item {
        SourceItem::Event(e) => {
            let mut e = Arc::unwrap_or_clone(e);
            e.peer_comm = "dockerd".into();
            SourceItem::Event(Arc::new(e))
        }
        other => other,
    };
    let out = run(vec![
        named(ev(1, CLIENT_SOCK, Direction::Send, None, 3, 0, b"GET")),
        named(ev(2, CLIENT_SOCK, Direction::Recv, None, 2, 0, b"OK")),
    ]);
    let evs = events(&out);
    assert_eq!(evs.len(), 2, "{evs:#?}");
    assert_eq!((evs[0].peer_pid, &*evs[0].peer_comm), (200, "dockerd"));
    // The response, seen from its sender: the server, by that name.
    assert_eq!((evs[1].pid, &*evs[1].comm), (200, "dockerd"));
    assert_eq!((evs[1].peer_pid, &*evs[1].peer_comm), (100, "client"));
}

#[test]
fn a_receive_before_its_send_is_not_doubled() {
    let out = run(vec![
        ev(
            1,
            SERVER_SOCK,
            Direction::Recv,
            Some(0),
            10,
            0,
            b"0123456789",
        ),
        ev(
            2,
            CLIENT_SOCK,
            Direction::Send,
            Some(0),
            10,
            0,
            b"0123456789",
        ),
        ev(3, CLIENT_SOCK, Direction::Send, Some(10), 2, 0, b"ab"),
    ]);
    let evs = events(&out);
    assert_eq!(lane_bytes(&evs, 0), (b"0123456789ab".to_vec(), vec![]));
}

#[test]
fn a_receive_that_relies_on_a_later_send_waits_for_it() {
    let out = run(vec![
        ev(1, SERVER_SOCK, Direction::Recv, Some(0), 10, 4, b"456789"),
        ev(2, CLIENT_SOCK, Direction::Send, Some(0), 4, 0, b"0123"),
    ]);
    let evs = events(&out);
    assert_eq!(lane_bytes(&evs, 0), (b"0123456789".to_vec(), vec![]));
    assert_eq!(evs[0].via, Some(Direction::Send));
    assert_eq!(evs[1].via, Some(Direction::Recv));
}

#[test]
fn a_send_cut_by_snaplen_is_completed_by_the_receive() {
    let data: Vec<u8> = (0..100u8).collect();
    let out = run(vec![
        ev(
            1,
            CLIENT_SOCK,
            Direction::Send,
            Some(0),
            100,
            0,
            &data[..16],
        ),
        ev(2, SERVER_SOCK, Direction::Recv, Some(0), 60, 0, &data[..60]),
        ev(
            3,
            SERVER_SOCK,
            Direction::Recv,
            Some(60),
            40,
            0,
            &data[60..],
        ),
    ]);
    assert_eq!(lane_bytes(&events(&out), 0), (data, vec![]));
}

#[test]
fn a_send_whose_start_its_receives_copied_first_is_joined_once() {
    let data: Vec<u8> = (0..100u8).collect();
    // The receives ran before the send's hook: they copied its first 60
    // bytes, and the send holds the rest (skip 60).
    let recv_first = vec![
        ev(1, SERVER_SOCK, Direction::Recv, Some(0), 30, 0, &data[..30]),
        ev(
            2,
            SERVER_SOCK,
            Direction::Recv,
            Some(30),
            30,
            0,
            &data[30..60],
        ),
        ev(
            3,
            CLIENT_SOCK,
            Direction::Send,
            Some(0),
            100,
            60,
            &data[60..],
        ),
        ev(4, SERVER_SOCK, Direction::Recv, Some(60), 40, 40, b""),
    ];
    let out = run(recv_first.clone());
    assert_eq!(lane_bytes(&events(&out), 0), (data.clone(), vec![]));
    // Handed over in another order (the send's record reserved first):
    // the same stream.
    let mut send_first = recv_first;
    send_first.swap(0, 2);
    let out = run(send_first);
    assert_eq!(lane_bytes(&events(&out), 0), (data, vec![]));
}

#[test]
fn units_no_event_holds_become_a_gap() {
    let out = run(vec![
        ev(1, CLIENT_SOCK, Direction::Send, Some(0), 3, 0, b"abc"),
        ev(2, CLIENT_SOCK, Direction::Send, Some(10), 3, 0, b"xyz"),
        // Cut by snaplen, and the receiver is not captured.
        ev(3, CLIENT_SOCK, Direction::Send, Some(13), 5, 0, b"12"),
    ]);
    let evs = events(&out);
    assert_eq!(
        lane_bytes(&evs, 0),
        (b"abcxyz12".to_vec(), vec![(3, 7), (15, 3)])
    );
}

#[test]
fn a_wait_for_missing_bytes_ends_after_the_grace_time() {
    let mut c = Connections::new();
    let mut out = Vec::new();
    let now = Instant::now();
    for i in [
        ev(1, CLIENT_SOCK, Direction::Send, Some(0), 3, 0, b"abc"),
        ev(2, CLIENT_SOCK, Direction::Send, Some(10), 3, 0, b"xyz"),
    ] {
        c.push(i, now, &mut |o| out.push(o));
    }
    assert_eq!(events(&out).len(), 1, "the piece after the gap waits");
    c.tick(now + GAP_GRACE / 2, &mut |o| out.push(o));
    assert_eq!(events(&out).len(), 1);
    c.tick(now + GAP_GRACE * 2, &mut |o| out.push(o));
    let evs = events(&out);
    assert_eq!(lane_bytes(&evs, 0), (b"abcxyz".to_vec(), vec![(3, 7)]));
}

/// `item` with `rpos` (relative to the counts' base) in the epoch that `ev`
/// gives positioned events: a receive made before the source had aligned
/// the two ends' counts carries it without `pos`; events after, both.
fn with_rpos(item: SourceItem, rpos: u64) -> SourceItem {
    let SourceItem::Event(mut e) = item else {
        unreachable!()
    };
    let m = Arc::get_mut(&mut e).unwrap();
    m.rpos = Some(BASE + rpos);
    m.epoch = 7;
    SourceItem::Event(e)
}

#[test]
fn a_receive_before_alignment_is_placed_once_the_offset_is_known() {
    let out = run(vec![
        // At the connection's first sight the client's receive returned
        // before the server's send was counted: no position yet.
        with_rpos(ev(1, CLIENT_SOCK, Direction::Recv, None, 5, 0, b"hello"), 0),
        ev(2, SERVER_SOCK, Direction::Send, Some(0), 5, 0, b"hello"),
        ev(3, SERVER_SOCK, Direction::Send, Some(5), 3, 0, b"abc"),
        // Aligned: both counts, offset 0.
        with_rpos(ev(4, CLIENT_SOCK, Direction::Recv, Some(5), 3, 3, b""), 5),
    ]);
    let evs = events(&out);
    assert_eq!(lane_bytes(&evs, 1), (b"helloabc".to_vec(), vec![]));
}

#[test]
fn bytes_from_before_the_capture_stay_ahead_of_the_first_send() {
    let out = run(vec![
        // Three bytes queued before the capture started, then the first
        // send the source counted: the receiver's count is 3 ahead.
        with_rpos(ev(1, CLIENT_SOCK, Direction::Recv, None, 3, 0, b"old"), 0),
        ev(2, SERVER_SOCK, Direction::Send, Some(0), 5, 0, b"hello"),
        with_rpos(ev(3, CLIENT_SOCK, Direction::Recv, Some(0), 5, 5, b""), 3),
    ]);
    let evs = events(&out);
    assert_eq!(lane_bytes(&evs, 1).0, b"oldhello");
    assert_eq!(evs[0].via, Some(Direction::Recv));
    assert_eq!(evs[1].via, Some(Direction::Send));
}

#[test]
fn a_receive_before_alignment_goes_out_at_once_and_the_sends_after_it_wait() {
    let mut c = Connections::new();
    let mut out = Vec::new();
    let now = Instant::now();
    push_at(
        &mut c,
        with_rpos(ev(1, CLIENT_SOCK, Direction::Recv, None, 5, 0, b"hello"), 0),
        now,
        &mut out,
    );
    // In the receiver's order, before anything the other direction says.
    let evs = events(&out);
    assert_eq!(evs.len(), 1);
    assert_eq!(
        (&evs[0].data[..], evs[0].via),
        (&b"hello"[..], Some(Direction::Recv))
    );
    push_at(
        &mut c,
        ev(2, SERVER_SOCK, Direction::Send, Some(0), 5, 0, b"hello"),
        now,
        &mut out,
    );
    assert_eq!(events(&out).len(), 1, "the send waits for the offset");
    // No offset comes: after the grace time the send goes out as it did
    // before alignment existed (its bytes a second time).
    c.tick(now + GAP_GRACE * 2, &mut |o| out.push(o));
    assert_eq!(events(&out).len(), 2);
    // Its epoch waits no more.
    push_at(
        &mut c,
        ev(3, SERVER_SOCK, Direction::Send, Some(5), 2, 0, b"ok"),
        now + GAP_GRACE * 2,
        &mut out,
    );
    assert_eq!(events(&out).len(), 3);
}

#[test]
fn a_response_does_not_overtake_the_early_receive_of_its_request() {
    let out = run(vec![
        // The server took the request before the client's send was counted.
        with_rpos(ev(1, SERVER_SOCK, Direction::Recv, None, 3, 0, b"GET"), 0),
        ev(2, CLIENT_SOCK, Direction::Send, Some(0), 3, 0, b"GET"),
        // Its response, while the client's send waits for the offset.
        ev(3, SERVER_SOCK, Direction::Send, Some(0), 2, 0, b"OK"),
        ev(4, CLIENT_SOCK, Direction::Recv, Some(0), 2, 2, b""),
        ev(5, CLIENT_SOCK, Direction::Send, Some(3), 4, 0, b"GET2"),
        // The server's next receive: both positions, offset 0.
        with_rpos(ev(6, SERVER_SOCK, Direction::Recv, Some(3), 4, 4, b""), 3),
    ]);
    let evs = events(&out);
    let order: Vec<&[u8]> = evs.iter().map(|e| &e.data[..]).collect();
    assert_eq!(order, [&b"GET"[..], b"OK", b"GET2"]);
    assert_eq!(lane_bytes(&evs, 0).0, b"GETGET2");
}

#[test]
fn what_waits_for_alignment_is_bounded() {
    let mut c = Connections::new();
    let mut out = Vec::new();
    let now = Instant::now();
    push_at(
        &mut c,
        with_rpos(ev(1, CLIENT_SOCK, Direction::Recv, None, 1, 0, b"x"), 0),
        now,
        &mut out,
    );
    let chunk = vec![7u8; 1 << 20];
    let n = MAX_HELD_BYTES / chunk.len() + 2;
    for i in 0..n as u64 {
        let at = i * chunk.len() as u64;
        let item = ev(
            i + 2,
            SERVER_SOCK,
            Direction::Send,
            Some(at),
            chunk.len() as u64,
            0,
            &chunk,
        );
        c.push(item, now, &mut |o| out.push(o));
    }
    assert!(events(&out).len() > 1, "held past the bound");
    c.finish(&mut |o| out.push(o));
    let got: Vec<u8> = events(&out).iter().flat_map(|e| e.data.to_vec()).collect();
    let mut want = b"x".to_vec();
    want.extend(std::iter::repeat_n(7u8, n * chunk.len()));
    assert!(got == want, "each byte once");
}

#[test]
fn without_positions_the_senders_events_win() {
    let out = run(vec![
        ev(1, CLIENT_SOCK, Direction::Send, None, 3, 0, b"abc"),
        ev(2, SERVER_SOCK, Direction::Recv, None, 3, 0, b"abc"),
        ev(3, SERVER_SOCK, Direction::Send, None, 2, 0, b"ok"),
        ev(4, CLIENT_SOCK, Direction::Recv, None, 2, 0, b"ok"),
    ]);
    let evs = events(&out);
    let data: Vec<(&[u8], Option<Direction>)> = evs.iter().map(|e| (&e.data[..], e.via)).collect();
    assert_eq!(
        data,
        [
            (&b"abc"[..], Some(Direction::Send)),
            (&b"ok"[..], Some(Direction::Send))
        ]
    );
}

#[test]
fn a_capture_without_lanes_is_split_by_socket() {
    // Written before events had lanes or peers: only socket and direction.
    let old = |seq, socket, dir, data: &[u8]| {
        let SourceItem::Event(e) = ev(seq, socket, dir, None, data.len() as u64, 0, data) else {
            unreachable!()
        };
        SourceItem::Event(Arc::new(Event {
            lane: 0,
            peer_socket: 0,
            role: Role::Unknown,
            ..(*e).clone()
        }))
    };
    let out = run(vec![
        old(1, CLIENT_SOCK, Direction::Send, b"req"),
        old(2, SERVER_SOCK, Direction::Recv, b"req"),
        old(3, SERVER_SOCK, Direction::Send, b"resp"),
        old(4, CLIENT_SOCK, Direction::Recv, b"resp"),
    ]);
    let evs = events(&out);
    let got: Vec<(&[u8], u32)> = evs.iter().map(|e| (&e.data[..], e.pid)).collect();
    assert_eq!(got, [(&b"req"[..], 100), (&b"resp"[..], 200)]);
}

#[test]
fn datagrams_seen_at_both_ends_are_kept_once() {
    let dg = |seq, dir, data: &[u8]| {
        SourceItem::Event(Arc::new(Event {
            seq,
            ts_ns: seq * 1000,
            sock: SockKind::Dgram,
            dir,
            conn: 77,
            socket: if dir == Direction::Send { 5 } else { 77 },
            len: data.len() as u64,
            data: bytes::Bytes::copy_from_slice(data),
            ..Event::default()
        }))
    };
    let out = run(vec![
        dg(1, Direction::Send, b"one"),
        dg(2, Direction::Recv, b"one"),
        // The receiver reads before the sender's record is in.
        dg(3, Direction::Recv, b"two"),
        dg(4, Direction::Send, b"two"),
        dg(5, Direction::Send, b"three"),
    ]);
    let got: Vec<Vec<u8>> = events(&out).iter().map(|e| e.data.to_vec()).collect();
    assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
}

/// As the syscall hook saw a Python datagram server (socket 77) and a client
/// that sends three datagrams on a connected socket (5, whose peer the probe
/// knows) and four with sendto on an unbound one (6, whose peer it does
/// not); `early` has the server's first receive come before the sendtos.
fn mixed_datagram_senders(early: bool) -> Vec<SourceItem> {
    let dg = |ts, dir, socket, peer_socket, pid, len: usize| {
        SourceItem::Event(Arc::new(Event {
            seq: ts,
            ts_ns: ts,
            sock: SockKind::Dgram,
            dir,
            conn: 77,
            socket,
            peer_socket,
            pid,
            len: len as u64,
            data: bytes::Bytes::from(vec![b'a' + (len % 26) as u8; len]),
            ..Event::default()
        }))
    };
    let (send, recv) = (Direction::Send, Direction::Recv);
    let mut items = vec![
        dg(1, send, 5, 77, 300, 11),
        dg(2, send, 5, 77, 300, 11),
        dg(3, send, 5, 77, 300, 11),
    ];
    if early {
        items.push(dg(4, recv, 77, 0, 200, 11));
    }
    for (ts, len) in [(5, 1000), (6, 2000), (7, 3000), (8, 4000)] {
        items.push(dg(ts, send, 6, 0, 300, len));
    }
    items.push(dg(9, send, 5, 77, 300, 4));
    if !early {
        items.push(dg(10, recv, 77, 0, 200, 11));
    }
    for (ts, len) in [(11, 11), (12, 11), (13, 1000), (14, 2000), (15, 3000)] {
        items.push(dg(ts, recv, 77, 0, 200, len));
    }
    items.push(dg(16, recv, 77, 0, 200, 4000));
    items.push(dg(17, recv, 77, 0, 200, 4));
    items
}

#[test]
fn datagrams_of_connected_and_unbound_senders_are_each_kept_once() {
    let want: Vec<(u64, u32, u64, u64)> = [11, 11, 11]
        .into_iter()
        .map(|len| (len, 300, 5, 77))
        .chain([1000, 2000, 3000, 4000].map(|len| (len, 300, 6, 77)))
        .chain([(4, 300, 5, 77)])
        .collect();
    for early in [false, true] {
        let evs = events(&run(mixed_datagram_senders(early)));
        let got: Vec<(u64, u32, u64, u64)> = evs
            .iter()
            .map(|e| (e.len, e.pid, e.socket, e.peer_socket))
            .collect();
        // Each once, from its sender, to the server.
        assert_eq!(got, want, "early receive: {early}");
    }
    // A datagram queued before the capture: its receive has no send. It is
    // kept (its sender unknown), and takes the place of no other.
    let mut items = mixed_datagram_senders(true);
    let SourceItem::Event(first_recv) = items.remove(3) else {
        unreachable!()
    };
    let queued = Event {
        len: 7,
        data: bytes::Bytes::from_static(b"earlier"),
        ..(*first_recv).clone()
    };
    items.insert(0, SourceItem::Event(Arc::new(queued)));
    let evs = events(&run(items));
    let got: Vec<(u64, u32, u64, u64)> = evs
        .iter()
        .map(|e| (e.len, e.pid, e.socket, e.peer_socket))
        .collect();
    assert_eq!(got[0], (7, 0, 0, 77));
    assert_eq!(got[1..], want[..]);
}

#[test]
fn a_loss_is_placed_only_where_lanes_have_positions() {
    let lost = SourceItem::Lost(Lost {
        ts_ns: 5000,
        time_ns: 0,
        count: 3,
    });
    let positioned = run(vec![
        ev(1, CLIENT_SOCK, Direction::Send, Some(0), 1, 0, b"a"),
        lost.clone(),
    ]);
    assert!(matches!(positioned[1], Output::Item(SourceItem::Lost(_))));
    let unpositioned = run(vec![
        ev(1, CLIENT_SOCK, Direction::Send, None, 1, 0, b"a"),
        lost,
    ]);
    assert!(matches!(unpositioned[1], Output::LostUnplaced(_)));
}

#[test]
fn a_close_hands_on_what_was_held_then_the_close() {
    let out = run(vec![
        ev(1, CLIENT_SOCK, Direction::Send, Some(0), 1, 0, b"a"),
        ev(2, CLIENT_SOCK, Direction::Send, Some(5), 1, 0, b"f"),
        SourceItem::Closed {
            conn: CLIENT_SOCK,
            ts_ns: 3000,
        },
    ]);
    assert!(matches!(
        out.last(),
        Some(Output::Item(SourceItem::Closed { .. }))
    ));
    let evs = events(&out);
    assert_eq!(lane_bytes(&evs, 0), (b"af".to_vec(), vec![(1, 4)]));
}

#[test]
fn seqpacket_messages_are_matched_by_number() {
    let msg = |seq, socket, dir, pos, skip, data: &[u8]| {
        let SourceItem::Event(e) = ev(seq, socket, dir, Some(pos), data.len() as u64, skip, data)
        else {
            unreachable!()
        };
        SourceItem::Event(Arc::new(Event {
            sock: SockKind::Seqpacket,
            ..(*e).clone()
        }))
    };
    let out = run(vec![
        msg(1, CLIENT_SOCK, Direction::Send, 0, 0, b"m0"),
        // Covered by the send: no data.
        msg(2, SERVER_SOCK, Direction::Recv, 0, 2, b""),
        // A message the send side did not capture.
        msg(3, SERVER_SOCK, Direction::Recv, 1, 0, b"m1"),
        msg(4, CLIENT_SOCK, Direction::Send, 2, 0, b"m2"),
        msg(5, SERVER_SOCK, Direction::Recv, 2, 0, b"m2"),
    ]);
    let got: Vec<(Vec<u8>, Option<u64>)> = events(&out)
        .iter()
        .map(|e| (e.data.to_vec(), e.pos))
        .collect();
    assert_eq!(
        got,
        [
            (b"m0".to_vec(), Some(0)),
            (b"m1".to_vec(), Some(1)),
            (b"m2".to_vec(), Some(2))
        ]
    );
}

/// `ev` as seen on another machine: its own node name, its own clock.
fn on_node(item: SourceItem, node: &str, conn: u64, clock: u64) -> SourceItem {
    let SourceItem::Event(e) = item else {
        panic!("not an event");
    };
    let mut e = (*e).clone();
    e.node = node.into();
    e.ts_ns += clock;
    e.conn = conn;
    e.socket += conn;
    e.peer_socket += conn;
    SourceItem::Event(Arc::new(e))
}

#[test]
fn each_node_waits_for_missing_bytes_by_its_own_clock() {
    // Node b booted long after node a: its kernel times are far smaller.
    // Its lane waits for bytes as long as node a's would.
    let a = |i| on_node(i, "a", 1000, 1 << 50);
    let b = |i| on_node(i, "b", 2000, 0);
    let mut c = Connections::new();
    let mut out = Vec::new();
    let now = Instant::now();
    for i in [
        a(ev(1, CLIENT_SOCK, Direction::Send, Some(0), 3, 0, b"abc")),
        b(ev(2, CLIENT_SOCK, Direction::Send, Some(0), 3, 0, b"abc")),
        // Both send ahead of a receive that will fill the hole.
        b(ev(3, CLIENT_SOCK, Direction::Send, Some(10), 3, 0, b"xyz")),
        a(ev(4, CLIENT_SOCK, Direction::Send, Some(10), 3, 0, b"xyz")),
        b(ev(
            5,
            SERVER_SOCK,
            Direction::Recv,
            Some(3),
            7,
            0,
            b"defghij",
        )),
        a(ev(
            6,
            SERVER_SOCK,
            Direction::Recv,
            Some(3),
            7,
            0,
            b"defghij",
        )),
    ] {
        c.push(i, now, &mut |o| out.push(o));
    }
    c.finish(&mut |o| out.push(o));
    let evs = events(&out);
    for (node, conn) in [("a", 1000), ("b", 2000)] {
        let mine: Vec<Arc<Event>> = evs
            .iter()
            .filter(|e| e.conn == conn && &*e.node == node)
            .cloned()
            .collect();
        assert_eq!(
            lane_bytes(&mine, 0),
            (b"abcdefghijxyz".to_vec(), vec![]),
            "node {node}"
        );
    }
}

#[test]
fn a_pid_is_named_by_its_own_node() {
    let n = REQ.len() as u64;
    let named = |item, node, comm: &str| {
        let SourceItem::Event(e) = on_node(item, node, 0, 0) else {
            unreachable!()
        };
        let mut e = (*e).clone();
        e.comm = comm.into();
        SourceItem::Event(Arc::new(e))
    };
    // Node a's server (pid 200) is `nginx`, node b's pid 200 `redis`; each
    // client's send names its receiver by pid alone.
    let mut c = Connections::new();
    let mut out = Vec::new();
    let now = Instant::now();
    for i in [
        named(
            ev(1, SERVER_SOCK, Direction::Send, None, 2, 0, b"hi"),
            "a",
            "nginx",
        ),
        named(
            ev(2, SERVER_SOCK, Direction::Send, None, 2, 0, b"hi"),
            "b",
            "redis",
        ),
    ] {
        c.push(i, now, &mut |o| out.push(o));
    }
    let SourceItem::Event(a) = on_node(
        ev(3, CLIENT_SOCK, Direction::Send, None, n, 0, REQ),
        "a",
        7000,
        0,
    ) else {
        unreachable!()
    };
    let SourceItem::Event(b) = on_node(
        ev(4, CLIENT_SOCK, Direction::Send, None, n, 0, REQ),
        "b",
        8000,
        0,
    ) else {
        unreachable!()
    };
    for e in [a, b] {
        let mut e = (*e).clone();
        // Only the kernel's peer credentials name the receiver.
        e.peer_socket = 0;
        c.push(SourceItem::Event(Arc::new(e)), now, &mut |o| out.push(o));
    }
    c.finish(&mut |o| out.push(o));
    let names: Vec<(String, String)> = events(&out)
        .iter()
        .filter(|e| e.role == Role::Client)
        .map(|e| (e.node.to_string(), e.peer_comm.to_string()))
        .collect();
    assert_eq!(
        names,
        [
            ("a".to_string(), "nginx".to_string()),
            ("b".to_string(), "redis".to_string())
        ]
    );
}
