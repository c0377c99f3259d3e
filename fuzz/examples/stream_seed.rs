//! Turns a capture (NDJSON with raw records, as the ndjson sink writes with
//! `events = true`) into a seed for a stream target such as `http2_stream`:
//!
//!     cargo run --example stream_seed -- [--connection] capture.ndjson [MAX_BYTES] > seeds/http2_stream/NAME
//!
//! With `--connection` the seed is in the connection view: each event is
//! seen from the end that sent its bytes (known from the capture's roles), as
//! the connection stage would hand it on; use it on a capture made in the
//! connection view, which holds each byte once. The first two connections are
//! kept, each with its first two sockets; lost markers are kept; other lines
//! are left out. The seed stops before the event
//! that would take it past MAX_BYTES (default 4096: libFuzzer's default largest
//! input, so mutations of the seed can still grow).

use std::collections::HashMap;
use std::io::Write as _;

use spf_fuzz::stream::{Step, encode};
use spf_pipeline::ndjson::{Interner, Parsed, parse_line};
use spf_pipeline::{Direction, Event, Role, SourceItem};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let connection_view = args.next_if(|a| a == "--connection").is_some();
    let path = args
        .next()
        .ok_or("usage: stream_seed [--connection] CAPTURE.ndjson [MAX_BYTES]")?;
    let max: usize = args.next().map_or(Ok(4096), |s| s.parse())?;
    let text = std::fs::read(&path)?;

    let mut interner = Interner::default();
    let mut events: Vec<Option<std::sync::Arc<Event>>> = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        match parse_line(line, i as u64, &mut interner)
            .map_err(|e| format!("{path}:{}: {e}", i + 1))?
        {
            Parsed::Item(SourceItem::Event(e)) => events.push(Some(e)),
            Parsed::Item(SourceItem::Lost(_)) => events.push(None),
            Parsed::Item(SourceItem::Closed { .. }) | Parsed::Skip => {}
        }
    }

    let flags = if connection_view { 2 } else { 0 };
    // Capture ids become the script's: connections 1 and 2, ends 0 and 1.
    let mut conns: HashMap<u64, u64> = HashMap::new();
    let mut ends: HashMap<(u64, u64), u8> = HashMap::new();
    let mut script = Vec::new();
    let mut seed = encode(flags, &[]);
    let mut kept = 0;
    for e in &events {
        let step = match e {
            None => Step::Lost,
            Some(e) => {
                let next = conns.len() as u64 + 1;
                let conn = *conns.entry(e.conn).or_insert(next);
                let socket = if e.socket != 0 {
                    e.socket
                } else {
                    u64::from(e.pid)
                };
                let per_conn = ends.keys().filter(|(c, _)| *c == e.conn).count() as u8;
                let caller = match e.role {
                    Role::Client => 0,
                    Role::Server => 1,
                    Role::Unknown => *ends.entry((e.conn, socket)).or_insert(per_conn),
                };
                if conn > 2 || caller > 1 {
                    continue;
                }
                // Connection view: the end that sent the bytes, and whose
                // syscall captured them (`dir`); syscall view: the end that
                // made the syscall, and its direction.
                let end = match e.dir {
                    Direction::Recv if connection_view => 1 - caller,
                    _ => caller,
                };
                Step::Event {
                    conn,
                    end,
                    dir: e.dir,
                    data: &e.data,
                    truncated: e.truncated,
                }
            }
        };
        script.push(step);
        let longer = encode(flags, &script);
        if longer.len() > max {
            break;
        }
        seed = longer;
        kept = script.len();
    }
    std::io::stdout().write_all(&seed)?;
    eprintln!(
        "{kept} of {} events and losses, {} bytes",
        events.len(),
        seed.len()
    );
    Ok(())
}
