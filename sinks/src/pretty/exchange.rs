//! One exchange as an access-log line: when it started, who called whom,
//! what, how it ended, how long it took and how much moved.
//!
//! `2026-11-26 12:11:11.082151 curl[4242] → nginx[17] http1 GET /v1/info 200 1.2 ms 78 B → 612 B`

use std::fmt::Write as _;

use spf_pipeline::escape::escape_text;
use spf_pipeline::runner::human_bytes;
use spf_pipeline::{Endpoint, Event, Exchange};

use super::{BOLD, GREEN, Pretty, RED, YELLOW};
use crate::exchange::{failure, human_duration};

impl Pretty {
    pub(super) fn exchange(&mut self, event: &Event, x: &Exchange, out: &mut Vec<u8>) {
        // The time the request began, as access logs show it; the record's
        // event (the response's end) where the decoder did not say.
        let start = if x.started_time_ns != 0 {
            x.started_time_ns
        } else {
            event.time_ns
        };
        self.time(start, out);
        let failed = failure(x).is_some();
        let who = format!(" {} → {}", endpoint(&x.client), endpoint(&x.server));
        let mut what = format!(" {}", escape_text(&x.protocol));
        for part in [&x.method, &x.path].into_iter().flatten() {
            let _ = write!(what, " {}", escape_text(part));
        }
        let mut status = String::new();
        if let Some(s) = x.status {
            let _ = write!(status, " {s}");
        }
        if let Some(g) = x.grpc_status {
            let _ = write!(status, " grpc-status {g}");
            if let Some(m) = x.grpc_message.as_deref().filter(|m| !m.is_empty()) {
                let _ = write!(status, " ({})", escape_text(m));
            }
        }
        let mut rest = String::new();
        if let Some(l) = x.latency_ns {
            let _ = write!(rest, " {}", human_duration(l));
        }
        let _ = write!(
            rest,
            " {} → {}",
            human_bytes(x.request_bytes),
            human_bytes(x.response_bytes)
        );
        if let Some(e) = &x.error {
            let _ = write!(rest, " error: {}", escape_text(e));
        }
        if failed {
            let line = format!("{who}{what}{status}{rest}");
            self.paint(out, RED, line.as_bytes());
        } else {
            self.paint(out, BOLD, who.as_bytes());
            out.extend_from_slice(what.as_bytes());
            let colour = match x.status {
                Some(400..) => YELLOW,
                _ => GREEN,
            };
            self.paint(out, colour, status.as_bytes());
            out.extend_from_slice(rest.as_bytes());
        }
        out.push(b'\n');
    }
}

fn endpoint(e: &Endpoint) -> String {
    super::process(&e.comm, e.pid)
}
