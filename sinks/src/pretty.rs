//! The human-readable rendering shared by the pretty stdout format.

use spf_pipeline::escape::{escape_bytes, escape_text};
use spf_pipeline::ndjson::rfc3339;
use spf_pipeline::runner::human_bytes;
use spf_pipeline::{Body, Direction, Exchange, Record};

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const GREEN: &str = "\x1b[32m";

/// Renders records as text: a header line per record, its content indented below.
#[derive(Debug, Clone, Copy)]
pub struct Pretty {
    pub color: bool,
    /// Raw bytes shown per record; 0 shows everything captured.
    pub max_bytes: usize,
}

impl Pretty {
    fn paint(&self, out: &mut Vec<u8>, code: &str, text: &[u8]) {
        if self.color {
            out.extend_from_slice(code.as_bytes());
            out.extend_from_slice(text);
            out.extend_from_slice(RESET.as_bytes());
        } else {
            out.extend_from_slice(text);
        }
    }

    pub fn render(&self, record: &Record, out: &mut Vec<u8>) {
        match record {
            Record::Lost(l) => {
                let mut t = Vec::new();
                rfc3339(l.time_ns, &mut t);
                let line = format!(
                    "{} *** {} events lost: the kernel could not hand them over ***",
                    time_of_day(&t),
                    l.count
                );
                self.paint(out, YELLOW, line.as_bytes());
                out.push(b'\n');
            }
            Record::Decoded(d) => {
                let e = &d.event;
                let mut t = Vec::new();
                rfc3339(e.time_ns, &mut t);
                self.paint(out, DIM, time_of_day(&t).as_bytes());
                let arrow = match e.dir {
                    Direction::Send => "→",
                    Direction::Recv => "←",
                };
                let who = format!(
                    " {}[{}] {arrow} {}",
                    escape_text(&e.comm),
                    e.pid,
                    peer(e.peer_pid)
                );
                self.paint(out, BOLD, who.as_bytes());
                let path = if e.path.is_empty() {
                    "(unnamed)"
                } else {
                    &*escape_text(&e.path)
                };
                let mut rest = format!(
                    " {path} {} {} conn {} [{} bytes]",
                    e.sock, e.dir, e.conn, e.len
                );
                if e.truncated {
                    rest.push_str(&format!(" (truncated, {} captured)", e.data.len()));
                }
                out.extend_from_slice(rest.as_bytes());
                out.push(b' ');
                self.paint(out, DIM, escape_text(&d.decoder).as_bytes());
                out.push(b'\n');
                match &d.body {
                    Body::Raw => {
                        let shown = if self.max_bytes == 0 {
                            &e.data[..]
                        } else {
                            &e.data[..e.data.len().min(self.max_bytes)]
                        };
                        let mut esc = Vec::with_capacity(shown.len() + 8);
                        esc.extend_from_slice(b"  \"");
                        escape_bytes(shown, false, &mut esc);
                        esc.push(b'"');
                        self.paint(out, GREEN, &esc);
                        if shown.len() < e.data.len() {
                            let more = format!(" … {} more bytes", e.data.len() - shown.len());
                            self.paint(out, DIM, more.as_bytes());
                        }
                        out.push(b'\n');
                    }
                    Body::Typed(f) => {
                        let mut text = String::new();
                        f.write_text(2, &mut text);
                        for line in text.lines() {
                            out.extend_from_slice(b"  ");
                            self.paint(out, CYAN, escape_text(line).as_bytes());
                            out.push(b'\n');
                        }
                    }
                    Body::Fields { text, .. } => {
                        for line in text.lines() {
                            out.extend_from_slice(b"  ");
                            self.paint(out, CYAN, escape_text(line).as_bytes());
                            out.push(b'\n');
                        }
                    }
                    Body::Exchange(x) => {
                        let line = format!("  {}", exchange_line(x));
                        let colour = if x.error.is_some() { RED } else { CYAN };
                        self.paint(out, colour, escape_text(&line).as_bytes());
                        out.push(b'\n');
                    }
                    Body::Error { code, message } => {
                        let line = match code {
                            Some(c) => format!("  error {c}: {message}"),
                            None => format!("  error: {message}"),
                        };
                        self.paint(out, RED, escape_text(&line).as_bytes());
                        out.push(b'\n');
                    }
                }
            }
        }
    }
}

/// One exchange as an access-log line: who called whom, what, how it ended,
/// how long it took and how much moved.
pub fn exchange_line(x: &Exchange) -> String {
    use std::fmt::Write as _;
    let mut s = format!(
        "{}[{}] → {}[{}] {}",
        x.client.comm, x.client.pid, x.server.comm, x.server.pid, x.protocol
    );
    if let Some(m) = &x.method {
        let _ = write!(s, " {m}");
    }
    if let Some(p) = &x.path {
        let _ = write!(s, " {p}");
    }
    match (x.status, x.grpc_status) {
        (_, Some(g)) => {
            let _ = write!(s, " grpc-status {g}");
            if let Some(m) = &x.grpc_message {
                let _ = write!(s, " ({m})");
            }
        }
        (Some(st), None) => {
            let _ = write!(s, " {st}");
        }
        (None, None) => {}
    }
    if let Some(l) = x.latency_ns {
        let _ = write!(s, " {}", human_duration(l));
    }
    let _ = write!(
        s,
        " {} → {}",
        human_bytes(x.request_bytes),
        human_bytes(x.response_bytes)
    );
    if let Some(e) = &x.error {
        let _ = write!(s, " error: {e}");
    }
    s
}

/// Nanoseconds as a short human duration (`850 µs`, `3.2 ms`, `1.50 s`).
pub fn human_duration(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

fn peer(pid: u32) -> String {
    if pid == 0 {
        "?".into()
    } else {
        pid.to_string()
    }
}

/// `HH:MM:SS.micros` out of an RFC 3339 time: the date rarely matters on a terminal.
fn time_of_day(rfc: &[u8]) -> String {
    let s = std::str::from_utf8(rfc).unwrap_or("");
    s.get(11..26).unwrap_or(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut out = Vec::new();
        Pretty {
            color: false,
            max_bytes: 0,
        }
        .render(&rec, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "00:00:01.000000 a\\u{202e}gpj.exe[42] \u{2192} ? /run/\\u{1b}[2Jx\\u{200b}.sock stream send conn 9 [0 bytes] t\n  name: \\u{2066}x\\u{2069}\\u{feff}\n  next \\u{85}line\n"
        );
    }
    use spf_pipeline::{Event, SockKind};
    use std::sync::Arc;

    #[test]
    fn raw_shows_escaped_bytes_and_truncation() {
        let ev = Arc::new(Event {
            ts_ns: 1,
            time_ns: 1_000_000_000,
            pid: 42,
            tid: 42,
            comm: "curl".into(),
            peer_pid: 7,
            path: "/run/x.sock".into(),
            sock: SockKind::Stream,
            dir: Direction::Send,
            conn: 9,
            len: 10,
            data: bytes::Bytes::from_static(b"GET\r\n\x01"),
            truncated: true,
            ..Event::default()
        });
        let mut out = Vec::new();
        Pretty {
            color: false,
            max_bytes: 0,
        }
        .render(&Record::raw(ev, "raw".into()), &mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            "00:00:01.000000 curl[42] → 7 /run/x.sock stream send conn 9 [10 bytes] (truncated, 6 captured) raw\n  \"GET\\r\\n\\x01\"\n"
        );
    }
}
