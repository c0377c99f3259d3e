//! The `http1` decoder: one [`Conn`] per connection (per connection end in the
//! syscall view), the memory budget they hold, and where a connection's bytes
//! go once it switched protocols.

use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::{FxHashMap, FxHashSet};
use spf_pipeline::config::BuildContext;
use spf_pipeline::{Budget, Decoder, Event, Out, Record};

use super::Http1Config;
use super::conn::{Conn, Cx, Names, Settings, Switch, Target, missing};
use super::detect;
use super::parse::HeadLimits;
use super::record::Note;
use crate::evict;
use crate::http2::Http2Config;

/// What a connection's bytes are decoded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Http1,
    /// Upgraded to h2c: everything goes to the HTTP/2 decoder.
    Http2,
    /// Switched to a protocol spf does not decode: raw records.
    Raw,
}

struct Entry {
    end: u64,
    conn: Conn,
    mode: Mode,
}

pub struct Http1 {
    names: Names,
    set: Settings,
    budget: Arc<Budget>,
    max_conns: usize,
    /// By connection id: one entry per end seen (one in the connection view).
    conns: FxHashMap<u64, Vec<Entry>>,
    count: usize,
    /// Decodes connections upgraded to h2c; built when the first one is.
    h2: Option<crate::http2::Http2>,
    h2_cfg: Http2Config,
    ctx: BuildContext,
    h2_conns: FxHashSet<u64>,
}

impl Http1 {
    /// A decoder with settings `cfg`; connections upgraded to h2c are decoded
    /// by an `http2` decoder with `h2_cfg`.
    pub fn new(cfg: &Http1Config, h2_cfg: Http2Config, ctx: &BuildContext) -> Self {
        let l = &ctx.limits;
        Http1 {
            names: Names {
                http1: Arc::from("http1"),
                raw: Arc::from("raw"),
            },
            set: Settings {
                show_data: cfg.data == super::DataMode::B64,
                head: HeadLimits {
                    list_size: l.header_list_size,
                    fields: l.header_fields,
                },
                line: l.line_length,
                pending_max: l.streams_per_connection.max(1),
                buffer_max: l.connection_buffer,
                decompressed_max: l.decompressed_size,
            },
            budget: Arc::clone(&ctx.budget),
            max_conns: l.connections.max(1),
            conns: FxHashMap::default(),
            count: 0,
            h2: None,
            h2_cfg,
            ctx: ctx.clone(),
            h2_conns: FxHashSet::default(),
        }
    }

    /// Connections (ends, in the syscall view) whose state is kept.
    pub fn connection_count(&self) -> usize {
        self.count
    }

    fn h2(&mut self) -> &mut crate::http2::Http2 {
        let cfg = &self.h2_cfg;
        let ctx = &self.ctx;
        self.h2
            .get_or_insert_with(|| crate::http2::Http2::with_context(cfg.clone(), ctx))
    }

    /// Past `limits.connections`, the longest idle quarter is dropped, as if
    /// those connections had closed.
    fn evict_idle(&mut self, out: &mut Out<'_>) {
        let states = self
            .conns
            .iter()
            .flat_map(|(c, v)| v.iter().map(move |e| (e.conn.last_seq, *c, e.end)));
        for (c, end) in evict::idlest(states, evict::how_many(self.max_conns)) {
            let Some(mut e) = evict::take_end(&mut self.conns, c, |e| e.end == end) else {
                continue;
            };
            self.count -= 1;
            self.drop_entry(&mut e, "connection idle, state dropped", out);
        }
    }

    fn drop_entry(&mut self, e: &mut Entry, why: &str, out: &mut Out<'_>) {
        if e.mode == Mode::Http1 {
            let mut cx = Cx {
                out,
                names: &self.names,
                set: &self.set,
                budget: &self.budget,
            };
            e.conn.end(why, &mut cx);
        }
        self.budget.give(e.conn.accounted);
        e.conn.accounted = 0;
    }

    /// Hands a connection to the decoder of the protocol it switched to,
    /// with the bytes already captured that belong to it.
    fn switch(&mut self, conn: u64, end: u64, sw: Switch, ev: &Arc<Event>, out: &mut Out<'_>) {
        out.push(Record::typed(
            Arc::clone(ev),
            Arc::clone(&self.names.http1),
            Arc::new(Note::Switched {
                protocol: sw.protocol,
                to: sw.to.as_str(),
            }),
        ));
        let mode = match sw.to {
            Target::Http2 => Mode::Http2,
            Target::Raw => Mode::Raw,
        };
        if let Some(e) = self
            .conns
            .get_mut(&conn)
            .and_then(|l| l.iter_mut().find(|e| e.end == end))
        {
            e.mode = mode;
            let mut old = std::mem::take(&mut e.conn);
            e.conn.last_seq = old.last_seq;
            let mut cx = Cx {
                out: &mut *out,
                names: &self.names,
                set: &self.set,
                budget: &self.budget,
            };
            old.end("protocol switched", &mut cx);
            self.budget.give(old.accounted);
        }
        if mode == Mode::Http2 {
            self.h2_conns.insert(conn);
            // The request that asked for the upgrade is HTTP/2's stream 1:
            // its response comes there.
            if let Some(request) = sw.request {
                self.h2().upgraded(request);
            }
        }
        for (pev, data) in sw.pieces {
            let e = piece_event(&pev, data);
            match mode {
                Mode::Http2 => self.h2().decode(&e, out),
                _ => out.push(Record::raw(e, Arc::clone(&self.names.raw))),
            }
        }
    }
}

/// An event holding `data`, the last bytes of `ev`'s (or of the bytes held
/// up to it): the same metadata, the position moved to where `data` begins.
fn piece_event(ev: &Arc<Event>, data: Bytes) -> Arc<Event> {
    if data.len() == ev.data.len() {
        return Arc::clone(ev);
    }
    let start_pos = ev
        .pos
        .and_then(|p| (p + ev.data.len() as u64).checked_sub(data.len() as u64));
    Arc::new(Event {
        pos: start_pos,
        skip: 0,
        len: data.len() as u64 + missing(ev),
        data,
        ..(**ev).clone()
    })
}

impl Decoder for Http1 {
    fn name(&self) -> &str {
        &self.names.http1
    }

    fn decode(&mut self, ev: &Arc<Event>, out: &mut Out<'_>) {
        let key = ev.stream_key();
        let known = self
            .conns
            .get(&key.conn)
            .is_some_and(|l| l.iter().any(|e| e.end == key.end));
        if !known {
            if self.count >= self.max_conns {
                self.evict_idle(out);
            }
            self.conns.entry(key.conn).or_default().push(Entry {
                end: key.end,
                conn: Conn::default(),
                mode: Mode::Http1,
            });
            self.count += 1;
        }
        let Some(e) = self
            .conns
            .get_mut(&key.conn)
            .and_then(|l| l.iter_mut().find(|e| e.end == key.end))
        else {
            return;
        };
        e.conn.last_seq = ev.seq;
        match e.mode {
            Mode::Http2 => return self.h2().decode(ev, out),
            Mode::Raw => return out.push(Record::raw(Arc::clone(ev), Arc::clone(&self.names.raw))),
            Mode::Http1 => {}
        }
        let mut cx = Cx {
            out,
            names: &self.names,
            set: &self.set,
            budget: &self.budget,
        };
        let switch = e.conn.feed(key.side, ev, &mut cx);
        // Hold the budget for what the connection keeps now.
        let now = e.conn.usage();
        if now > e.conn.accounted {
            if self.budget.try_take(now - e.conn.accounted) {
                e.conn.accounted = now;
            } else {
                cx.out.push(Record::error(
                    Arc::clone(ev),
                    Arc::clone(&self.names.http1),
                    Some("LIMIT".into()),
                    format!(
                        "decoder state over limits.memory ({} bytes): this connection's state is dropped",
                        self.budget.limit()
                    ),
                ));
                e.conn.reset(&mut cx);
                let now = e.conn.usage();
                self.budget.give(e.conn.accounted.saturating_sub(now));
                e.conn.accounted = e.conn.accounted.min(now);
            }
        } else {
            self.budget.give(e.conn.accounted - now);
            e.conn.accounted = now;
        }
        if let Some(sw) = switch {
            self.switch(key.conn, key.end, sw, ev, out);
        }
    }

    fn lost(&mut self, count: u64, out: &mut Out<'_>) {
        let mut cx = Cx {
            out: &mut *out,
            names: &self.names,
            set: &self.set,
            budget: &self.budget,
        };
        for e in self.conns.values_mut().flatten() {
            if e.mode == Mode::Http1 {
                e.conn.lost(&mut cx);
            }
        }
        if let Some(h2) = self.h2.as_mut() {
            h2.lost(count, out);
        }
    }

    fn closed(&mut self, conn: u64, out: &mut Out<'_>) {
        if let Some(list) = self.conns.remove(&conn) {
            self.count -= list.len();
            for mut e in list {
                self.drop_entry(&mut e, "connection closed", out);
            }
        }
        if self.h2_conns.remove(&conn)
            && let Some(h2) = self.h2.as_mut()
        {
            h2.closed(conn, out);
        }
    }

    fn finish(&mut self, out: &mut Out<'_>) {
        let mut keys: Vec<u64> = self.conns.keys().copied().collect();
        keys.sort_unstable();
        for c in keys {
            if let Some(list) = self.conns.remove(&c) {
                for mut e in list {
                    self.drop_entry(&mut e, "input ended", out);
                }
            }
        }
        self.count = 0;
        if let Some(h2) = self.h2.as_mut() {
            h2.finish(out);
        }
    }

    fn detect(&mut self, data: &[u8], _event: &Event) -> u8 {
        detect::confidence(data)
    }
}
