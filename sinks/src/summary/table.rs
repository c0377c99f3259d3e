//! Exchanges summed up per protocol, method and path, and printed as an
//! aligned table.

use std::collections::HashMap;
use std::fmt::Write as _;

use spf_pipeline::Exchange;
use spf_pipeline::escape::escape_text;
use spf_pipeline::runner::human_bytes;

use super::histogram::Histogram;
use crate::exchange::{Failure, failure, human_duration};

/// Longest method or path kept in a key, in bytes: a path is whatever a
/// client sent, and a key is held for the whole run.
const MAX_PART: usize = 256;
/// Widest path shown in the table, in characters.
const PATH_COLUMN: usize = 60;

/// What is known of one row's exchanges.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub count: u64,
    /// Failed exchanges by [`Failure`]: error set, HTTP status >= 500,
    /// gRPC status != 0.
    pub failed: [u64; 3],
    /// Latencies of the exchanges that got a response.
    pub latency: Histogram,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

impl Stats {
    fn add(&mut self, x: &Exchange) {
        self.count = self.count.saturating_add(1);
        if let Some(f) = failure(x) {
            let i = f as usize;
            self.failed[i] = self.failed[i].saturating_add(1);
        }
        if let Some(l) = x.latency_ns {
            self.latency.record(l);
        }
        self.request_bytes = self.request_bytes.saturating_add(x.request_bytes);
        self.response_bytes = self.response_bytes.saturating_add(x.response_bytes);
    }

    fn merge(&mut self, o: &Stats) {
        self.count = self.count.saturating_add(o.count);
        for (a, b) in self.failed.iter_mut().zip(o.failed) {
            *a = a.saturating_add(b);
        }
        self.latency.merge(&o.latency);
        self.request_bytes = self.request_bytes.saturating_add(o.request_bytes);
        self.response_bytes = self.response_bytes.saturating_add(o.response_bytes);
    }

    pub fn errors(&self) -> u64 {
        self.failed.iter().fold(0, |a, b| a.saturating_add(*b))
    }
}

/// Exchanges by (protocol, method, path), at most `max_keys` rows: the
/// exchanges of any further key are summed up in one `(other)` row.
#[derive(Debug)]
pub struct Table {
    /// Keyed by `protocol \0 method \0 path`, so that an exchange whose key
    /// is known costs no allocation.
    rows: HashMap<Box<str>, Stats>,
    other: Stats,
    max_keys: usize,
    key: String,
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Table {
    pub fn new(max_keys: usize) -> Self {
        Table {
            rows: HashMap::new(),
            other: Stats::default(),
            max_keys,
            key: String::new(),
        }
    }

    pub fn add(&mut self, x: &Exchange) {
        self.key.clear();
        self.key.push_str(cut(&x.protocol, MAX_PART));
        self.key.push('\0');
        self.key
            .push_str(cut(x.method.as_deref().unwrap_or(""), MAX_PART));
        self.key.push('\0');
        self.key
            .push_str(cut(x.path.as_deref().unwrap_or(""), MAX_PART));
        if let Some(s) = self.rows.get_mut(self.key.as_str()) {
            s.add(x);
        } else if self.rows.len() < self.max_keys {
            let mut s = Stats::default();
            s.add(x);
            self.rows.insert(self.key.as_str().into(), s);
        } else {
            self.other.add(x);
        }
    }

    /// Every row's figures summed.
    pub fn total(&self) -> Stats {
        let mut t = self.other.clone();
        for s in self.rows.values() {
            t.merge(s);
        }
        t
    }

    /// The table: a title line saying `when`, one row per key (most
    /// exchanges first), `(other)` last, and what counted as an error.
    pub fn render(&self, when: &str) -> String {
        let total = self.total();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "spf summary ({when}): {} exchange{}, {} error{}",
            total.count,
            if total.count == 1 { "" } else { "s" },
            total.errors(),
            if total.errors() == 1 { "" } else { "s" }
        );
        if total.count == 0 {
            return out;
        }
        let mut rows: Vec<(&str, &Stats)> = self.rows.iter().map(|(k, s)| (&**k, s)).collect();
        rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        let mut cells: Vec<[String; 10]> = vec![
            [
                "PROTOCOL", "METHOD", "PATH", "COUNT", "ERRORS", "P50", "P95", "P99", "REQUEST",
                "RESPONSE",
            ]
            .map(String::from),
        ];
        for (key, s) in rows {
            let mut parts = key.splitn(3, '\0');
            let mut part = || escape_text(parts.next().unwrap_or("")).into_owned();
            let (protocol, method, path) = (part(), part(), part());
            cells.push(row(protocol, method, shorten(&path), s));
        }
        if self.other.count > 0 {
            cells.push(row("(other)".into(), "".into(), "".into(), &self.other));
        }
        let widths: Vec<usize> = (0..10)
            .map(|c| {
                cells
                    .iter()
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for r in &cells {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                if c > 0 {
                    line.push_str("  ");
                }
                // Names to the left, figures to the right.
                if c < 3 {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                } else {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        if total.errors() > 0 {
            let why: Vec<String> = [
                (
                    Failure::Error,
                    "with an error (no response, reset, error reply, ...)",
                ),
                (Failure::Status, "with HTTP status >= 500"),
                (Failure::Grpc, "with gRPC status != 0"),
            ]
            .into_iter()
            .filter_map(|(f, what)| {
                let n = total.failed[f as usize];
                (n > 0).then(|| format!("{n} {what}"))
            })
            .collect();
            let _ = writeln!(out, "errors: {}", why.join(", "));
        }
        if self.other.count > 0 {
            let _ = writeln!(
                out,
                "(other): exchanges of keys beyond the first {} (max_keys)",
                self.max_keys
            );
        }
        out
    }
}

fn row(protocol: String, method: String, path: String, s: &Stats) -> [String; 10] {
    let q = |q: f64| s.latency.quantile(q).map_or("-".into(), human_duration);
    [
        protocol,
        if method.is_empty() {
            "-".into()
        } else {
            method
        },
        if path.is_empty() { "-".into() } else { path },
        s.count.to_string(),
        s.errors().to_string(),
        q(0.5),
        q(0.95),
        q(0.99),
        human_bytes(s.request_bytes),
        human_bytes(s.response_bytes),
    ]
}

/// A path cut to the column's width, with `…` where it was cut.
fn shorten(path: &str) -> String {
    if path.chars().count() <= PATH_COLUMN {
        return path.to_string();
    }
    let mut s: String = path.chars().take(PATH_COLUMN - 1).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(method: &str, path: &str, status: u32, latency_ms: u64) -> Exchange {
        Exchange {
            protocol: "http1".into(),
            method: Some(method.into()),
            path: Some(path.into()),
            status: Some(status),
            latency_ns: Some(latency_ms * 1_000_000),
            request_bytes: 100,
            response_bytes: 1000,
            ..Exchange::default()
        }
    }

    #[test]
    fn rows_count_errors_and_quantiles_in_an_aligned_table() {
        let mut t = Table::new(10);
        for ms in 1..=100 {
            t.add(&x("GET", "/a", 200, ms));
        }
        t.add(&x("POST", "/b", 503, 7));
        t.add(&Exchange {
            latency_ns: None,
            error: Some("no response".into()),
            ..x("POST", "/b", 0, 0)
        });
        t.add(&Exchange {
            protocol: "grpc".into(),
            grpc_status: Some(14),
            ..x("POST", "/pkg.Svc/Call", 200, 3)
        });
        let text = t.render("at exit");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "spf summary (at exit): 103 exchanges, 3 errors");
        assert_eq!(
            &lines[1..5],
            [
                "PROTOCOL  METHOD  PATH           COUNT  ERRORS      P50      P95      P99  REQUEST  RESPONSE",
                // Within 1/64 of 50, 95 and 99 ms.
                "http1     GET     /a               100       0  49.8 ms  95.4 ms  99.6 ms  9.8 KiB  97.7 KiB",
                "http1     POST    /b                 2       2   7.0 ms   7.0 ms   7.0 ms    200 B   2.0 KiB",
                "grpc      POST    /pkg.Svc/Call      1       1   3.0 ms   3.0 ms   3.0 ms    100 B    1000 B",
            ],
            "{text}"
        );
        assert_eq!(
            lines[5],
            "errors: 1 with an error (no response, reset, error reply, ...), 1 with HTTP status >= 500, 1 with gRPC status != 0"
        );
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn keys_beyond_the_limit_fold_into_other() {
        let mut t = Table::new(3);
        for i in 0..1000 {
            t.add(&x("GET", &format!("/item/{i}"), 200, 1));
        }
        // A known key still gets its own row.
        t.add(&x("GET", "/item/1", 500, 1));
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.other.count, 997);
        assert_eq!(t.total().count, 1001);
        let text = t.render("on SIGUSR1");
        let other = text.lines().find(|l| l.starts_with("(other)")).unwrap();
        let cols: Vec<&str> = other.split_whitespace().collect();
        assert_eq!(&cols[..5], ["(other)", "-", "-", "997", "0"], "{text}");
        assert!(text.contains("/item/1  "), "{text}");
        assert!(text.contains("beyond the first 3 (max_keys)"), "{text}");
    }

    #[test]
    fn keys_are_bounded_and_escaped() {
        let mut t = Table::new(10);
        let long = format!("/{}", "é".repeat(1000));
        t.add(&x("GET", &long, 200, 1));
        t.add(&x("GET", &format!("{long}x"), 200, 1));
        assert_eq!(t.rows.len(), 1, "cut to the same key");
        assert!(t.rows.keys().all(|k| k.len() <= 3 * MAX_PART + 2));
        t.add(&x("G\u{1b}ET", "/\u{202e}x", 200, 1));
        let text = t.render("at exit");
        assert!(
            text.contains("G\\u{1b}ET") && text.contains("/\\u{202e}x"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}') && !text.contains('\u{202e}'));
        assert!(text.contains(&format!("/{}…", "é".repeat(PATH_COLUMN - 2))));
    }

    #[test]
    fn nothing_yet_is_said_so() {
        assert_eq!(
            Table::new(1).render("every 5 s"),
            "spf summary (every 5 s): 0 exchanges, 0 errors\n"
        );
    }
}
