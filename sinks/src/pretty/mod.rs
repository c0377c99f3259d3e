//! The human-readable rendering of the pretty stdout format.
//!
//! Exchanges lead: each is one access-log line. The records an exchange sums
//! up (frames, messages, their headers and bodies) show with `-v` and `-vv`,
//! as each says through [`Fields::verbosity`](spf_pipeline::Fields); records
//! of decoders that pair nothing into exchanges (raw bytes, most plugins),
//! errors and gaps always show.

pub mod clock;
mod exchange;

use std::sync::Arc;

use spf_pipeline::escape::{escape_bytes, escape_text};
use spf_pipeline::{Body, Decoded, Direction, Record};

use clock::Clock;

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const GREEN: &str = "\x1b[32m";

/// Renders records as text: an exchange as one line, any other record as a
/// header line with its content indented below.
#[derive(Debug)]
pub struct Pretty {
    pub color: bool,
    /// Raw bytes shown per record; 0 shows everything captured.
    pub max_bytes: usize,
    /// 0: exchanges and what no exchange sums up; 1 (`-v`): frames and
    /// headers too; 2 (`-vv`): bodies too.
    pub verbose: u8,
    pub clock: Clock,
    /// Decoders seen making exchanges. Their records that carry no verbosity
    /// of their own (a plugin's) are then the detail under those exchanges,
    /// shown from `-v` on. A handful of names at most: one per decoder.
    exchanging: Vec<Arc<str>>,
}

impl Pretty {
    pub fn new(color: bool, max_bytes: usize, verbose: u8, clock: Clock) -> Self {
        Pretty {
            color,
            max_bytes,
            verbose,
            clock,
            exchanging: Vec::new(),
        }
    }

    fn paint(&self, out: &mut Vec<u8>, code: &str, text: &[u8]) {
        if self.color {
            out.extend_from_slice(code.as_bytes());
            out.extend_from_slice(text);
            out.extend_from_slice(RESET.as_bytes());
        } else {
            out.extend_from_slice(text);
        }
    }

    fn time(&mut self, time_ns: u64, out: &mut Vec<u8>) {
        let mut t = Vec::with_capacity(32);
        self.clock.write(time_ns, &mut t);
        self.paint(out, DIM, &t);
    }

    /// The least verbosity at which `d` shows.
    fn level(&mut self, d: &Decoded) -> u8 {
        match &d.body {
            Body::Typed(f) => f.verbosity(),
            Body::Fields { .. } if self.exchanging.contains(&d.decoder) => 1,
            Body::Exchange(_) => {
                if !self.exchanging.contains(&d.decoder) {
                    self.exchanging.push(Arc::clone(&d.decoder));
                }
                0
            }
            Body::Raw | Body::Fields { .. } | Body::Error { .. } => 0,
        }
    }

    pub fn render(&mut self, record: &Record, out: &mut Vec<u8>) {
        match record {
            Record::Lost(l) => {
                self.time(l.time_ns, out);
                let line = format!(
                    " *** {} events lost: the kernel could not hand them over ***",
                    l.count
                );
                self.paint(out, YELLOW, line.as_bytes());
                out.push(b'\n');
            }
            Record::Decoded(d) => {
                if self.level(d) > self.verbose {
                    self.clock.observe(d.event.time_ns);
                    return;
                }
                if let Body::Exchange(x) = &d.body {
                    return self.exchange(&d.event, x, out);
                }
                self.header(d, out);
                self.content(d, out);
            }
        }
    }

    /// `time comm[pid] → peer path sock dir conn N [len bytes] decoder`.
    fn header(&mut self, d: &Decoded, out: &mut Vec<u8>) {
        let e = &d.event;
        self.time(e.time_ns, out);
        let arrow = match e.dir {
            Direction::Send => "→",
            Direction::Recv => "←",
        };
        let who = format!(
            " {} {arrow} {}",
            process(&e.comm, e.pid),
            process(&e.peer_comm, e.peer_pid)
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
    }

    /// The record's own lines, indented.
    fn content(&self, d: &Decoded, out: &mut Vec<u8>) {
        let e = &d.event;
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
                f.write_text(self.verbose, &mut text);
                self.lines(&text, out);
            }
            Body::Fields { text, .. } => self.lines(text, out),
            Body::Error { code, message } => {
                let line = match code {
                    Some(c) => format!("  error {c}: {message}"),
                    None => format!("  error: {message}"),
                };
                self.paint(out, RED, escape_text(&line).as_bytes());
                out.push(b'\n');
            }
            // Written by `exchange`.
            Body::Exchange(_) => {}
        }
    }

    fn lines(&self, text: &str, out: &mut Vec<u8>) {
        for line in text.lines() {
            out.extend_from_slice(b"  ");
            self.paint(out, CYAN, escape_text(line).as_bytes());
            out.push(b'\n');
        }
    }
}

/// A process as every line shows one: `comm[pid]`, `?` for a part not
/// known (a peer's name outside the connection view, a datagram's receiver).
fn process(comm: &str, pid: u32) -> String {
    let comm = if comm.is_empty() {
        "?".into()
    } else {
        escape_text(comm)
    };
    if pid == 0 {
        format!("{comm}[?]")
    } else {
        format!("{comm}[{pid}]")
    }
}

#[cfg(test)]
mod tests;
