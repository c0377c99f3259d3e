//! One direction's byte stream cut into frames: the connection preface, frames
//! reassembled across events, and finding a frame boundary again when decoding
//! joins a connection midway or after lost bytes.

use super::decoder::Ctx;
use super::frame::{self, Header};
use super::held::Held;
use super::record::kind_name;

/// Bytes held while looking for a frame boundary before older ones are dropped.
const RESYNC_WINDOW: usize = 1 << 20;
/// Frames claimed longer than this are not used to find a boundary.
const RESYNC_MAX_LEN: u32 = 256 * 1024;
/// Skipped bytes are reported at least this often while no boundary is found.
const SKIP_REPORT: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Mode {
    /// Nothing seen yet: the preface, a server's first SETTINGS, or neither.
    #[default]
    Start,
    Frames,
    /// Looking for a frame boundary (joined midway, or after lost bytes).
    Resync,
}

/// What [`Framer::step`] found at the start of the bytes it was given.
#[derive(Debug)]
pub(crate) enum Step {
    /// More bytes are needed; the first `n` bytes were consumed before that.
    Need(usize),
    /// `n` bytes were consumed (skipped, or discarded): go on.
    Consumed(usize),
    /// The connection preface, `n` bytes.
    Preface(usize),
    /// A whole frame of `n` bytes, header included.
    Frame(Header, usize),
    /// Decoding now starts at an unknown point of the connection: header
    /// tables hold entries nobody saw (nothing consumed).
    Joined,
    /// A connection preface after bytes that were not frames (an h2c
    /// upgrade): a new session with fresh state begins after `n` bytes.
    Session(usize),
    /// A frame longer than a connection may hold: its header (consumed)
    /// says so; its payload is being discarded.
    TooLong(Header),
    /// A frame longer than the maximum frame size: a FRAME_SIZE_ERROR, and
    /// decoding looks for a frame boundary again (nothing consumed).
    Oversized(Header),
}

pub(crate) struct Framer {
    pub buf: Held,
    pub mode: Mode,
    /// Largest frame this direction may send (the peer's SETTINGS_MAX_FRAME_SIZE).
    pub max_frame: u32,
    /// `max_frame` came from a SETTINGS frame seen in this capture.
    pub max_frame_seen: bool,
    /// Bytes dropped while looking for a frame boundary, not yet reported.
    pub skipped: u64,
    /// The resync began at the first byte of an event and has not moved since.
    pub fresh: bool,
    /// Bytes of a frame too long to hold, still to be discarded.
    pub discard: u64,
    /// Counts resets of the held bytes, so that bytes taken out to run over
    /// are not put back after the state they belonged to was dropped.
    pub epoch: u32,
}

impl Framer {
    pub(crate) fn new(buf: Held) -> Self {
        Framer {
            buf,
            mode: Mode::Start,
            max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
            max_frame_seen: false,
            skipped: 0,
            fresh: false,
            discard: 0,
            epoch: 0,
        }
    }

    /// Whatever comes next may begin anywhere in a frame.
    pub(crate) fn resync(&mut self, max_frame_size: u32) {
        self.mode = Mode::Resync;
        self.fresh = true;
        self.discard = 0;
        if !self.max_frame_seen {
            self.max_frame = max_frame_size;
        }
        self.drop_held();
    }

    pub(crate) fn drop_held(&mut self) {
        self.buf.release();
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// Looks at the start of `rest` (bytes of this direction, in order).
    pub(crate) fn step(&mut self, rest: &[u8], ctx: &mut Ctx<'_, '_>) -> Step {
        if self.discard > 0 {
            let n = (self.discard.min(rest.len() as u64)) as usize;
            self.discard -= n as u64;
            return if n == rest.len() {
                Step::Need(n)
            } else {
                Step::Consumed(n)
            };
        }
        match self.mode {
            Mode::Start => self.start(rest, ctx),
            Mode::Resync => self.find_boundary(rest, ctx),
            Mode::Frames => {
                let Some(h) = Header::parse(rest) else {
                    return Step::Need(0);
                };
                if h.length > self.max_frame {
                    self.mode = Mode::Resync;
                    self.fresh = false;
                    return Step::Oversized(h);
                }
                let total = frame::HEADER_LEN + h.length as usize;
                if total > ctx.s.limits.connection_buffer {
                    self.discard = h.length.into();
                    return Step::TooLong(h);
                }
                if rest.len() < total {
                    return Step::Need(0);
                }
                Step::Frame(h, total)
            }
        }
    }

    fn start(&mut self, rest: &[u8], ctx: &mut Ctx<'_, '_>) -> Step {
        if rest.is_empty() {
            return Step::Need(0);
        }
        let n = rest.len().min(frame::PREFACE.len());
        if rest[..n] == frame::PREFACE[..n] {
            if n < frame::PREFACE.len() {
                return Step::Need(0);
            }
            self.mode = Mode::Frames;
            self.max_frame = self.max_frame.min(ctx.s.cfg.max_frame_size);
            return Step::Preface(n);
        }
        if rest.len() < frame::HEADER_LEN {
            return Step::Need(0);
        }
        let plausible_settings = Header::parse(rest).is_some_and(|h| {
            h.kind == frame::SETTINGS && !h.has(frame::ACK) && h.plausible(self.max_frame)
        });
        if plausible_settings {
            // A server's connection preface: its first SETTINGS frame.
            self.mode = Mode::Frames;
            self.max_frame = self.max_frame.min(ctx.s.cfg.max_frame_size);
            return Step::Consumed(0);
        }
        self.mode = Mode::Resync;
        self.fresh = true;
        if !self.max_frame_seen {
            self.max_frame = ctx.s.cfg.max_frame_size;
        }
        Step::Joined
    }

    fn find_boundary(&mut self, rest: &[u8], ctx: &mut Ctx<'_, '_>) -> Step {
        let limit = self.max_frame.min(RESYNC_MAX_LEN);
        // A connection preface starts a session with fresh state (an HTTP/1.1
        // connection upgraded to h2c sends one after its request), unless
        // frames were found before it.
        if let Some(pos) = find(rest, frame::PREFACE)
            && !matches!(scan(&rest[..pos], limit, self.fresh), Scan::Lock(_))
        {
            self.skipped += pos as u64;
            if self.skipped > 0 {
                let n = std::mem::take(&mut self.skipped);
                ctx.error(
                    None,
                    format!(
                        "skipped {n} bytes that are not HTTP/2 frames before a connection preface"
                    ),
                );
            }
            self.mode = Mode::Start;
            self.max_frame = frame::DEFAULT_MAX_FRAME_SIZE.min(ctx.s.cfg.max_frame_size);
            self.max_frame_seen = false;
            self.fresh = false;
            return Step::Session(pos);
        }
        match scan(rest, limit, self.fresh) {
            Scan::Lock(off) => {
                self.skipped += off as u64;
                self.mode = Mode::Frames;
                self.fresh = false;
                if self.skipped > 0 {
                    let n = std::mem::take(&mut self.skipped);
                    ctx.error(
                        None,
                        format!("skipped {n} bytes before finding an HTTP/2 frame boundary"),
                    );
                }
                Step::Consumed(off)
            }
            Scan::Wait(mut keep) => {
                let window = RESYNC_WINDOW.min(ctx.s.limits.connection_buffer);
                if rest.len() - keep > window {
                    keep = rest.len().saturating_sub(frame::HEADER_LEN - 1);
                }
                // Keep the start of a preface that the next bytes may complete.
                keep = keep.min(preface_tail(rest));
                if keep > 0 {
                    self.fresh = false;
                }
                self.skipped += keep as u64;
                if self.skipped >= SKIP_REPORT {
                    let n = std::mem::take(&mut self.skipped);
                    ctx.error(
                        None,
                        format!("skipped {n} bytes: no HTTP/2 frame boundary found yet"),
                    );
                }
                Step::Need(keep)
            }
        }
    }

    /// Reports and drops a partial frame or skipped bytes (the state goes
    /// away, or bytes after it were lost).
    pub(crate) fn drop_partial(&mut self, why: &str, ctx: &mut Ctx<'_, '_>) {
        let held = self.buf.as_slice();
        match self.mode {
            Mode::Frames if self.discard > 0 => {
                ctx.error(
                    None,
                    format!(
                        "{why}: {} bytes of an oversized frame were still to come",
                        self.discard
                    ),
                );
            }
            Mode::Frames if !held.is_empty() => {
                let msg = match Header::parse(held) {
                    Some(h) => format!(
                        "{why}: {} frame on stream {} cut short ({} of {} bytes)",
                        kind_name(h.kind),
                        h.stream_id,
                        held.len(),
                        h.length as usize + frame::HEADER_LEN
                    ),
                    None => format!("{why}: {} bytes of a frame header dropped", held.len()),
                };
                ctx.error(None, msg);
            }
            Mode::Start | Mode::Resync if !held.is_empty() || self.skipped > 0 => {
                let n = self.skipped + held.len() as u64;
                self.skipped = 0;
                ctx.error(
                    None,
                    format!("{why}: {n} bytes dropped that held no HTTP/2 frame boundary"),
                );
            }
            _ => {}
        }
        self.discard = 0;
        self.drop_held();
    }
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).find(|&i| hay[i] == needle[0] && hay[i..].starts_with(needle))
}

/// Where a proper prefix of the connection preface begins at the end of `buf`
/// (`buf.len()` when none does).
fn preface_tail(buf: &[u8]) -> usize {
    let n = buf.len().min(frame::PREFACE.len() - 1);
    (buf.len() - n..buf.len())
        .find(|&i| frame::PREFACE.starts_with(&buf[i..]))
        .unwrap_or(buf.len())
}

enum Scan {
    /// Frames begin at this offset.
    Lock(usize),
    /// No boundary proven yet: bytes before this offset can go.
    Wait(usize),
}

/// Looks for a frame boundary: a plausible header followed by further plausible
/// headers where its length says they are. Three in a row, or two that end
/// exactly where the captured bytes end (writes usually end on a frame), prove a
/// boundary; one whole frame suffices when it fills a fresh write exactly.
fn scan(buf: &[u8], limit: u32, fresh: bool) -> Scan {
    let mut first_pending = None;
    let last = buf.len().saturating_sub(frame::HEADER_LEN - 1);
    for off in 0..last {
        let Some(h) = Header::parse(&buf[off..]) else {
            break;
        };
        if !h.plausible(limit) {
            continue;
        }
        let mut q = off;
        let mut n = 0;
        let mut aligned = false;
        let mut pending = false;
        loop {
            if q == buf.len() {
                aligned = true;
                break;
            }
            let Some(h) = Header::parse(&buf[q..]) else {
                pending = true;
                break;
            };
            if !h.plausible(limit) {
                break;
            }
            n += 1;
            q += frame::HEADER_LEN + h.length as usize;
            if n >= 3 {
                return Scan::Lock(off);
            }
            if q > buf.len() {
                pending = true;
                break;
            }
        }
        if aligned && (n >= 2 || (n == 1 && off == 0 && fresh)) {
            return Scan::Lock(off);
        }
        if pending && first_pending.is_none() {
            first_pending = Some(off);
        }
    }
    Scan::Wait(first_pending.unwrap_or(last))
}
