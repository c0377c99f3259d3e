use std::sync::Arc;

use spf_pipeline::{Endpoint, Event, Exchange, Fields, Lost, SockKind};

use super::clock::TimeFormat;
use super::*;

fn pretty(verbose: u8) -> Pretty {
    Pretty::new(false, 0, verbose, Clock::new(TimeFormat::Utc))
}

fn render_all(p: &mut Pretty, records: &[Record]) -> String {
    let mut out = Vec::new();
    for r in records {
        p.render(r, &mut out);
    }
    String::from_utf8(out).unwrap()
}

fn event(time_ns: u64) -> Arc<Event> {
    Arc::new(Event {
        ts_ns: 1,
        time_ns,
        pid: 42,
        tid: 42,
        comm: "curl".into(),
        peer_pid: 7,
        path: "/run/x.sock".into(),
        sock: SockKind::Stream,
        dir: Direction::Send,
        conn: 9,
        len: 3,
        data: bytes::Bytes::from_static(b"GET"),
        ..Event::default()
    })
}

/// A decoder's frame: its first line always, more lines at higher verbosity.
#[derive(Debug)]
struct Frame {
    name: &'static str,
    least: u8,
}

impl Fields for Frame {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b",\"t\":{}");
    }

    fn write_text(&self, verbosity: u8, out: &mut String) {
        out.push_str(self.name);
        if verbosity >= 1 {
            out.push_str("\nheader: 1");
        }
        if verbosity >= 2 {
            out.push_str("\n| body");
        }
    }

    fn verbosity(&self) -> u8 {
        self.least
    }
}

fn typed(name: &'static str, least: u8) -> Record {
    Record::typed(
        event(1_000_000_000),
        "h".into(),
        Arc::new(Frame { name, least }),
    )
}

fn exchange(x: Exchange) -> Record {
    Record::exchange(event(3_000_000_000), "h".into(), x)
}

fn get() -> Exchange {
    Exchange {
        protocol: "http1".into(),
        method: Some("GET".into()),
        path: Some("/v1/info".into()),
        status: Some(200),
        request_bytes: 78,
        response_bytes: 2048,
        started_time_ns: 2_000_000_000,
        latency_ns: Some(1_250_000),
        client: Endpoint {
            pid: 42,
            comm: "curl".into(),
        },
        server: Endpoint {
            pid: 7,
            comm: "nginx".into(),
        },
        ..Exchange::default()
    }
}

#[test]
fn an_exchange_is_one_access_log_line() {
    let got = render_all(&mut pretty(0), &[exchange(get())]);
    assert_eq!(
        got,
        "1970-01-01T00:00:02.000000Z curl[42] → nginx[7] http1 GET /v1/info 200 1.2 ms 78 B → 2.0 KiB\n"
    );
    let grpc = Exchange {
        protocol: "grpc".into(),
        method: Some("POST".into()),
        path: Some("/echo.Echo/Say".into()),
        grpc_status: Some(5),
        grpc_message: Some("no \u{202e}such".into()),
        client: Endpoint {
            pid: 0,
            comm: "".into(),
        },
        ..get()
    };
    let ok = Exchange {
        grpc_status: Some(0),
        grpc_message: Some(String::new()),
        ..grpc.clone()
    };
    let got = render_all(&mut pretty(0), &[exchange(grpc), exchange(ok)]);
    assert_eq!(
        got,
        "1970-01-01T00:00:02.000000Z ?[?] → nginx[7] grpc POST /echo.Echo/Say 200 grpc-status 5 (no \\u{202e}such) 1.2 ms 78 B → 2.0 KiB\n\
         1970-01-01T00:00:02.000000Z ?[?] → nginx[7] grpc POST /echo.Echo/Say 200 grpc-status 0 1.2 ms 78 B → 2.0 KiB\n"
    );
    // No response: no status, no latency, the error said; the record's own
    // time when the decoder gave no start.
    let lone = Exchange {
        status: None,
        latency_ns: None,
        response_bytes: 0,
        started_time_ns: 0,
        error: Some("no response".into()),
        ..get()
    };
    let got = render_all(&mut pretty(2), &[exchange(lone)]);
    assert_eq!(
        got,
        "1970-01-01T00:00:03.000000Z curl[42] → nginx[7] http1 GET /v1/info 78 B → 0 B error: no response\n"
    );
}

#[test]
fn failed_exchanges_are_red_and_others_are_not() {
    let mut p = Pretty::new(true, 0, 0, Clock::new(TimeFormat::Utc));
    let failed = Exchange {
        status: Some(503),
        ..get()
    };
    let red = render_all(&mut p, &[exchange(failed)]);
    assert!(
        red.contains(&format!(
            "{RED} curl[42] → nginx[7] http1 GET /v1/info 503 1.2 ms"
        )),
        "{red:?}"
    );
    let ok = render_all(&mut p, &[exchange(get())]);
    assert!(!ok.contains(RED), "{ok:?}");
    assert!(ok.contains(&format!("{GREEN} 200{RESET}")), "{ok:?}");
}

#[test]
fn verbosity_adds_frames_then_bodies() {
    let records = [
        typed("HEADERS", 1),
        typed("DATA", 2),
        typed("note", 0),
        exchange(get()),
        Record::error(event(4_000_000_000), "h".into(), Some("BAD".into()), "x"),
        Record::Lost(Lost {
            ts_ns: 5,
            time_ns: 5_000_000_000,
            count: 3,
        }),
    ];
    let lines = |v: u8| -> Vec<String> {
        render_all(&mut pretty(v), &records)
            .lines()
            .map(|l| match l.strip_prefix("  ") {
                // Content lines as they are, the time off the others.
                Some(_) => l.to_string(),
                None => l.split_once(' ').map_or(l, |(_, rest)| rest).to_string(),
            })
            .collect()
    };
    let header = "curl[42] → ?[7] /run/x.sock stream send conn 9 [3 bytes] h";
    let exchange = "curl[42] → nginx[7] http1 GET /v1/info 200 1.2 ms 78 B → 2.0 KiB";
    let error = "  error BAD: x";
    let lost = "*** 3 events lost: the kernel could not hand them over ***";
    assert_eq!(
        lines(0),
        [header, "  note", exchange, header, error, lost],
        "exchanges, what no exchange sums up, errors and gaps"
    );
    assert_eq!(
        lines(1),
        [
            header,
            "  HEADERS",
            "  header: 1",
            header,
            "  note",
            "  header: 1",
            exchange,
            header,
            error,
            lost
        ]
    );
    let all = lines(2);
    assert_eq!(
        all[..6],
        [
            header,
            "  HEADERS",
            "  header: 1",
            "  | body",
            header,
            "  DATA"
        ]
    );
    assert_eq!(all.len(), 6 + 2 + 4 + 1 + 2 + 1, "{all:#?}");
}

#[test]
fn plugin_records_are_detail_once_their_decoder_makes_exchanges() {
    let fields = |text: &str| {
        Record::fields(
            event(1_000_000_000),
            "resp".into(),
            serde_json::Map::new(),
            text.into(),
        )
    };
    let x = Record::exchange(event(2_000_000_000), "resp".into(), get());
    let other = Record::fields(
        event(1_000_000_000),
        "length".into(),
        serde_json::Map::new(),
        "3 bytes".into(),
    );
    let records = [fields("SET a"), x, fields("GET a"), other];
    let quiet = render_all(&mut pretty(0), &records);
    assert!(
        quiet.contains("SET a") && !quiet.contains("GET a"),
        "{quiet}"
    );
    assert!(
        quiet.contains("3 bytes"),
        "a decoder without exchanges: {quiet}"
    );
    let loud = render_all(&mut pretty(1), &records);
    assert!(loud.contains("SET a") && loud.contains("GET a"), "{loud}");
}

#[test]
fn relative_time_counts_from_the_first_record_shown_or_not() {
    let mut p = Pretty::new(false, 0, 0, Clock::new(TimeFormat::Relative));
    let got = render_all(&mut p, &[typed("HEADERS", 1), exchange(get())]);
    assert_eq!(
        got,
        "1.000000 curl[42] → nginx[7] http1 GET /v1/info 200 1.2 ms 78 B → 2.0 KiB\n"
    );
}

#[test]
fn names_paths_and_fields_are_escaped() {
    let ev = Arc::new(Event {
        ts_ns: 1,
        time_ns: 1_000_000_000,
        pid: 42,
        tid: 42,
        comm: "a\u{202e}gpj.exe".into(),
        path: "/run/\x1b[2Jx\u{200b}.sock".into(),
        sock: SockKind::Stream,
        dir: Direction::Send,
        conn: 9,
        ..Event::default()
    });
    let rec = Record::fields(
        ev,
        "t".into(),
        serde_json::Map::new(),
        "name: \u{2066}x\u{2069}\u{feff}\nnext \u{85}line".into(),
    );
    let s = render_all(&mut pretty(0), &[rec]);
    assert_eq!(
        s,
        "1970-01-01T00:00:01.000000Z a\\u{202e}gpj.exe[42] \u{2192} ?[?] /run/\\u{1b}[2Jx\\u{200b}.sock stream send conn 9 [0 bytes] t\n  name: \\u{2066}x\\u{2069}\\u{feff}\n  next \\u{85}line\n"
    );
    let x = Exchange {
        method: Some("G\x1bET".into()),
        path: Some("/\u{202e}x".into()),
        error: Some("bad\u{7}".into()),
        client: Endpoint {
            pid: 1,
            comm: "c\u{200b}".into(),
        },
        ..get()
    };
    let s = render_all(&mut pretty(0), &[exchange(x)]);
    assert!(
        s.contains("c\\u{200b}[1] → nginx[7] http1 G\\u{1b}ET /\\u{202e}x 200")
            && s.ends_with("error: bad\\u{7}\n"),
        "{s}"
    );
}

#[test]
fn raw_shows_escaped_bytes_and_truncation() {
    let ev = Arc::new(Event {
        len: 10,
        data: bytes::Bytes::from_static(b"GET\r\n\x01"),
        truncated: true,
        ..(*event(1_000_000_000)).clone()
    });
    let s = render_all(
        &mut pretty(0),
        &[Record::raw(Arc::clone(&ev), "raw".into())],
    );
    assert_eq!(
        s,
        "1970-01-01T00:00:01.000000Z curl[42] → ?[7] /run/x.sock stream send conn 9 [10 bytes] (truncated, 6 captured) raw\n  \"GET\\r\\n\\x01\"\n"
    );
    // The connection view knows the other end's name, and may not know
    // the sender's.
    let ev = Arc::new(Event {
        comm: "".into(),
        peer_comm: "ngin\u{202e}x".into(),
        ..(*ev).clone()
    });
    let s = render_all(&mut pretty(0), &[Record::raw(ev, "raw".into())]);
    assert!(s.contains(" ?[42] → ngin\\u{202e}x[7] /run/x.sock "), "{s}");
}
