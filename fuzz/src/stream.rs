//! Fuzz input as a script of socket traffic, fed to a decoder.
//!
//! ```text
//! input = flags step*
//! flags   bit 0: first send the target's prelude (e.g. the HTTP/2 client
//!         preface) on connection 1, from end 0
//!         bit 1: the connection view (else the syscall view)
//!         bit 2: tight limits (see [`limits`]), so that short inputs hit them
//! step  = ctl [len_lo len_hi] payload
//! ctl     bit 0: syscall view: the syscall's direction (0 send, 1 recv);
//!                connection view: whose syscall captured the bytes (0 the
//!                sender's, 1 the receiver's)
//!         bit 1: syscall view: which end made the syscall; connection view:
//!                which end sent the bytes (0 the client, 1 the server)
//!         bit 2: connection (1 or 2)
//!         bit 3: truncated (the syscall moved more bytes than were captured)
//!         bits 4-7: size class k
//!           k = 0:      no event: the connection closed (bit 3 clear), or one
//!                       event was lost (bit 3 set)
//!           k = 1..=14: a payload of SIZES[k] bytes (fewer if the input ends)
//!           k = 15:     the payload length follows (two bytes, little endian)
//! ```
//!
//! Small size classes cut frames across events at every point; the explicit
//! length lets a seed made from a real capture keep its events whole
//! ([`encode`] writes the format; `examples/stream_seed.rs` uses it).

use serde::de::IgnoredAny;
use spf_pipeline::ndjson;
use spf_pipeline::{BuildContext, Decoder, Direction, Limits, Out, Record, View};
use spf_sinks::pretty::Pretty;
use spf_sinks::pretty::clock::{Clock, TimeFormat};

use crate::{EventSpec, event};

const SIZES: [usize; 15] = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610];
const EXPLICIT: u8 = 15;
/// Bytes a truncated event claims beyond what was captured.
const MISSING: u64 = 100;

/// One step of a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    Event {
        /// 1 or 2.
        conn: u64,
        /// 0 or 1.
        end: u8,
        dir: Direction,
        data: &'a [u8],
        truncated: bool,
    },
    Lost,
    Closed {
        conn: u64,
    },
}

/// Reads the steps of a script (the input after its flags byte).
pub fn steps(mut rest: &[u8]) -> impl Iterator<Item = Step<'_>> {
    std::iter::from_fn(move || {
        let (&ctl, r) = rest.split_first()?;
        rest = r;
        let conn = 1 + u64::from((ctl >> 2) & 1);
        let flag = ctl & 8 != 0;
        let n = match ctl >> 4 {
            0 if flag => return Some(Step::Lost),
            0 => return Some(Step::Closed { conn }),
            EXPLICIT => {
                let n = match rest {
                    [lo, hi, r @ ..] => {
                        rest = r;
                        usize::from(u16::from_le_bytes([*lo, *hi]))
                    }
                    // A length cut short: an empty event ends the script.
                    _ => {
                        rest = &[];
                        0
                    }
                };
                n.min(rest.len())
            }
            k => SIZES[usize::from(k)].min(rest.len()),
        };
        let (data, r) = rest.split_at(n);
        rest = r;
        Some(Step::Event {
            conn,
            end: (ctl >> 1) & 1,
            dir: if ctl & 1 == 0 {
                Direction::Send
            } else {
                Direction::Recv
            },
            data,
            truncated: flag,
        })
    })
}

/// Writes a script: the inverse of `flags` plus [`steps`]. Events longer than
/// a step can hold are split, the truncation mark going to the last part.
pub fn encode(flags: u8, script: &[Step<'_>]) -> Vec<u8> {
    let mut out = vec![flags];
    for step in script {
        match *step {
            Step::Lost => out.push(8),
            Step::Closed { conn } => out.push(conn_bit(conn)),
            Step::Event {
                conn,
                end,
                dir,
                data,
                truncated,
            } => {
                let mut parts: Vec<&[u8]> = data.chunks(usize::from(u16::MAX)).collect();
                if parts.is_empty() {
                    // A zero-length event (a read at end of stream) is kept.
                    parts.push(data);
                }
                let count = parts.len();
                for (i, part) in parts.into_iter().enumerate() {
                    let last = i + 1 == count;
                    let mut ctl = conn_bit(conn) | ((end & 1) << 1);
                    if dir == Direction::Recv {
                        ctl |= 1;
                    }
                    if truncated && last {
                        ctl |= 8;
                    }
                    match SIZES.iter().skip(1).position(|&s| s == part.len()) {
                        Some(i) => out.push(ctl | ((i as u8 + 1) << 4)),
                        None => {
                            out.push(ctl | (EXPLICIT << 4));
                            out.extend_from_slice(&(part.len() as u16).to_le_bytes());
                        }
                    }
                    out.extend_from_slice(part);
                }
            }
        }
    }
    out
}

fn conn_bit(conn: u64) -> u8 {
    if conn == 2 { 4 } else { 0 }
}

/// The limits a script's flags ask for: the defaults, or (bit 2) limits small
/// enough for inputs of a few hundred bytes to reach every one of them.
pub fn limits(flags: u8) -> Limits {
    // Assigned one by one so that a limit added later keeps its default here.
    let mut l = Limits::default();
    if flags & 4 != 0 {
        l.header_list_size = 256;
        l.header_fields = 32;
        l.line_length = 256;
        l.header_table_size = 512;
        l.continuation_frames = 2;
        l.streams_per_connection = 4;
        l.message_size = 64;
        l.decompressed_size = 4096;
        l.protobuf_fields = 16;
        l.protobuf_depth = 4;
        l.connection_buffer = 1024;
        l.connections = 2;
        l.memory = 8192;
    }
    l
}

/// Builds a decoder with `build` under the limits the input's flags ask for,
/// feeds it the script with [`drive`], and checks that once dropped it has
/// given back every byte of the memory budget it took.
pub fn run<D: Decoder>(input: &[u8], prelude: &[u8], build: impl FnOnce(&BuildContext) -> D) {
    let flags = input.first().copied().unwrap_or(0);
    let mut ctx = BuildContext::new(limits(flags));
    ctx.view = view(flags);
    let mut decoder = build(&ctx);
    drive(&mut decoder, prelude, input);
    drop(decoder);
    assert_eq!(
        ctx.budget.used(),
        0,
        "the decoder kept memory budget after it was dropped"
    );
}

fn view(flags: u8) -> View {
    if flags & 2 != 0 {
        View::Connection
    } else {
        View::Syscalls
    }
}

/// Feeds a script to `decoder`, `prelude` first when the flags ask for it,
/// and renders every record it makes both ways the sinks do. Records are
/// handed on in batches while the decoder works, as in a run.
pub fn drive(decoder: &mut dyn Decoder, prelude: &[u8], input: &[u8]) {
    let Some((&flags, script)) = input.split_first() else {
        return;
    };
    // The seed writer must say what the reader reads: checked here so that
    // every input the fuzzer tries checks it.
    let again = encode(flags, &steps(script).collect::<Vec<_>>());
    assert!(
        steps(&again[1..]).eq(steps(script)),
        "stream::encode disagrees with stream::steps"
    );
    let view = view(flags);
    let mut render = Render::new();
    let mut seq = 0u64;
    if flags & 1 == 1 && !prelude.is_empty() {
        let spec = EventSpec {
            seq,
            view,
            conn: 1,
            end: 0,
            dir: Direction::Send,
            data: prelude,
            missing: 0,
        };
        render.call(|out| decoder.decode(&event(&spec), out));
        seq += 1;
    }
    for step in steps(script) {
        match step {
            Step::Event {
                conn,
                end,
                dir,
                data,
                truncated,
            } => {
                let spec = EventSpec {
                    seq,
                    view,
                    conn,
                    end,
                    dir,
                    data,
                    missing: if truncated { MISSING } else { 0 },
                };
                render.call(|out| decoder.decode(&event(&spec), out));
                seq += 1;
            }
            Step::Lost => render.call(|out| decoder.lost(1, out)),
            Step::Closed { conn } => render.call(|out| decoder.closed(conn, out)),
        }
    }
    render.call(|out| decoder.finish(out));
}

/// Renders records as the ndjson and pretty sinks do, checking that each
/// NDJSON line is one line of valid JSON.
struct Render {
    records: Vec<Record>,
    buf: Vec<u8>,
    pretty: Pretty,
}

impl Render {
    fn new() -> Self {
        Render {
            records: Vec::new(),
            buf: Vec::new(),
            // The most the pretty view shows (-vv: frames, headers, bodies),
            // in UTC so that nothing depends on the machine's time zone.
            pretty: Pretty::new(true, 64, 2, Clock::new(TimeFormat::Utc)),
        }
    }

    /// Runs one decoder call, rendering the records it makes.
    fn call(&mut self, f: impl FnOnce(&mut Out<'_>)) {
        let mut records = std::mem::take(&mut self.records);
        {
            let mut drain = |batch: &mut Vec<Record>| {
                self.all(batch);
                batch.clear();
            };
            f(&mut Out::streaming(&mut records, &mut drain));
        }
        self.all(&records);
        records.clear();
        self.records = records;
    }

    fn all(&mut self, records: &[Record]) {
        for r in records {
            self.buf.clear();
            ndjson::encode(r, &mut self.buf);
            let line = self
                .buf
                .strip_suffix(b"\n")
                .expect("an NDJSON record ends with a newline");
            assert!(
                !line.contains(&b'\n'),
                "an NDJSON record spans lines: {}",
                String::from_utf8_lossy(line)
            );
            // Checked for syntax only: building the value would cost more
            // than decoding the input did.
            if let Err(e) = serde_json::from_slice::<IgnoredAny>(line) {
                panic!(
                    "an NDJSON record is not valid JSON ({e}): {}",
                    String::from_utf8_lossy(line)
                );
            }
            self.buf.clear();
            self.pretty.render(r, &mut self.buf);
        }
    }
}
