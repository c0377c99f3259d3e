//! `[[sink]] type = "summary"`: which calls, how often, how slow, which
//! failed. Sums up exchange records per protocol, method and path (for gRPC,
//! `/service/method`) and prints an aligned table at exit, on SIGUSR1, and
//! every `interval` seconds; counts run from the start.
//!
//! The table goes to stderr (stdout carries the records) or to `path`. The
//! sink holds no more than `max_keys` rows, each with a fixed-size latency
//! histogram, whatever the traffic.

mod histogram;
use spf_pipeline::signal;
mod table;

use std::fs::File;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;
use spf_pipeline::config::{BuildContext, BuildError, Registry, Section, SinkConfig};
use spf_pipeline::{Body, Record, Sink, SinkError};

pub use histogram::Histogram;
pub use table::{Stats, Table};

pub fn register(reg: &mut Registry) {
    reg.sink("summary", |s: &mut Section<'_>| {
        let cfg = s.parse::<SummaryConfig>()?;
        // Every problem of the section is reported, not the first only.
        let mut ok = true;
        if !(1..=MAX_KEYS).contains(&cfg.max_keys) {
            s.error("max_keys", format!("must be 1 to {MAX_KEYS}"));
            ok = false;
        }
        if cfg.interval > MAX_INTERVAL {
            s.error(
                "interval",
                format!(
                    "at most {MAX_INTERVAL} seconds (a day); 0 prints only at exit and on SIGUSR1"
                ),
            );
            ok = false;
        }
        if let Some(path) = &cfg.path {
            if let Err(e) = crate::ndjson::check_path(path) {
                s.error("path", e);
                ok = false;
            }
        } else if cfg.append {
            s.error("append", "only with a path: the summary goes to stderr");
            ok = false;
        }
        ok.then(|| Box::new(cfg) as Box<dyn SinkConfig>)
    });
}

const MAX_KEYS: usize = 100_000;
const MAX_INTERVAL: u64 = 86_400;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryConfig {
    /// Seconds between tables while running; 0: only at exit and on SIGUSR1.
    #[serde(default)]
    pub interval: u64,
    /// The file the tables go to, instead of stderr.
    pub path: Option<PathBuf>,
    /// Add to the file instead of replacing it.
    #[serde(default)]
    pub append: bool,
    /// Rows kept at most; exchanges of further keys go to one `(other)` row.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_max_keys() -> usize {
    1000
}

impl SinkConfig for SummaryConfig {
    fn output_path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Sink>, BuildError> {
        let out = match &self.path {
            Some(p) => Output::File(
                spf_pipeline::output::open_output(p, self.append)?,
                p.display().to_string(),
            ),
            None => Output::Stderr,
        };
        signal::install().map_err(BuildError::new)?;
        let interval = (self.interval > 0).then(|| Duration::from_secs(self.interval));
        Ok(Box::new(Summary {
            table: Table::new(self.max_keys),
            out,
            interval,
            next: interval.map(|i| Instant::now() + i),
            // From 0, as the runner: a SIGUSR1 that came while the
            // pipeline was built (spf handles it from its start) is answered.
            signals: 0,
        }))
    }
}

enum Output {
    Stderr,
    File(File, String),
}

pub struct Summary {
    table: Table,
    out: Output,
    interval: Option<Duration>,
    /// When the next periodic table is due.
    next: Option<Instant>,
    /// SIGUSR1 received as of the last look.
    signals: u64,
}

impl Summary {
    fn print(&mut self, when: &str) -> Result<(), SinkError> {
        let text = self.table.render(when);
        match &mut self.out {
            Output::Stderr => {
                let mut err = std::io::stderr().lock();
                // The live status line may be on the terminal's last line.
                let clear = if err.is_terminal() { "\r\x1b[K" } else { "" };
                err.write_all(format!("{clear}{text}").as_bytes())
                    .and_then(|()| err.flush())
                    .map_err(|e| SinkError::io("writing the summary to stderr", e))
            }
            Output::File(f, name) => f
                .write_all(text.as_bytes())
                .map_err(|e| SinkError::io(format!("writing the summary to `{name}`"), e)),
        }
    }
}

impl Sink for Summary {
    fn describe(&self) -> String {
        match &self.out {
            Output::Stderr => "summary".into(),
            Output::File(_, name) => format!("summary {name}"),
        }
    }

    fn write(&mut self, record: &Record) -> Result<(), SinkError> {
        if let Record::Decoded(d) = record
            && let Body::Exchange(x) = &d.body
        {
            self.table.add(x);
        }
        Ok(())
    }

    /// Prints a table when SIGUSR1 came or the interval passed since the last.
    fn flush(&mut self) -> Result<(), SinkError> {
        let signals = signal::received();
        if signals != self.signals {
            self.signals = signals;
            return self.print("on SIGUSR1");
        }
        if let (Some(next), Some(interval)) = (self.next, self.interval) {
            let now = Instant::now();
            if now >= next {
                // A late flush does not make tables pile up.
                let after = next + interval;
                self.next = Some(if after > now { after } else { now + interval });
                return self.print(&format!("every {} s", interval.as_secs()));
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.print("at exit")
    }

    fn observer(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use spf_pipeline::{Endpoint, Event, Exchange};

    use super::*;

    fn exchange(path: &str, status: u32) -> Record {
        Record::exchange(
            Arc::new(Event::default()),
            "http1".into(),
            Exchange {
                protocol: "http1".into(),
                method: Some("GET".into()),
                path: Some(path.into()),
                status: Some(status),
                latency_ns: Some(2_000_000),
                client: Endpoint {
                    pid: 1,
                    comm: "curl".into(),
                },
                ..Exchange::default()
            },
        )
    }

    /// The only test of this binary that raises SIGUSR1, so that no other
    /// test's signal makes a table here.
    #[test]
    fn tables_on_sigusr1_every_interval_and_at_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.txt");
        let cfg = SummaryConfig {
            interval: 60,
            path: Some(path.clone()),
            append: false,
            max_keys: 10,
        };
        let mut sink = cfg.build(&BuildContext::default()).unwrap();
        let tables = || std::fs::read_to_string(&path).unwrap();
        sink.write(&exchange("/a", 200)).unwrap();
        sink.write(&exchange("/a", 502)).unwrap();
        sink.flush().unwrap();
        assert_eq!(tables(), "", "nothing asked for a table yet");

        // SAFETY: raise sends a signal to this very thread; the handler the
        // sink installed runs before it returns.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
        sink.flush().unwrap();
        let t = tables();
        assert!(
            t.starts_with("spf summary (on SIGUSR1): 2 exchanges, 1 error\n"),
            "{t}"
        );
        assert!(t.contains("http1     GET     /a        2       1"), "{t}");
        assert!(t.contains("\nerrors: 1 with HTTP status >= 500\n"), "{t}");
        sink.flush().unwrap();
        assert_eq!(tables(), t, "one table per signal");

        sink.write(&exchange("/b", 200)).unwrap();
        sink.close().unwrap();
        let t = tables();
        let titles: Vec<&str> = t.lines().filter(|l| l.starts_with("spf summary")).collect();
        assert_eq!(
            titles,
            [
                "spf summary (on SIGUSR1): 2 exchanges, 1 error",
                "spf summary (at exit): 3 exchanges, 1 error"
            ]
        );
    }

    #[test]
    fn a_due_interval_prints_once_and_sets_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.txt");
        let mut s = Summary {
            table: Table::new(10),
            out: Output::File(
                spf_pipeline::output::open_output(&path, false).unwrap(),
                "summary.txt".into(),
            ),
            interval: Some(Duration::from_secs(5)),
            // Long overdue: one table, not one per interval missed.
            next: Some(Instant::now() - Duration::from_secs(60)),
            signals: signal::received(),
        };
        s.write(&exchange("/a", 200)).unwrap();
        s.flush().unwrap();
        s.flush().unwrap();
        let t = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            t.lines()
                .filter(|l| l.starts_with("spf summary"))
                .collect::<Vec<_>>(),
            ["spf summary (every 5 s): 1 exchange, 0 errors"]
        );
        assert!(s.next.unwrap() > Instant::now() + Duration::from_secs(4));
    }

    fn check(toml: &str) -> Result<(), String> {
        let mut reg = Registry::new();
        register(&mut reg);
        spf_pipeline::config::parse(
            &reg,
            "t",
            &format!("[source]\ntype = \"file\"\npath = \"/dev/null\"\n[decoder]\ntype = \"plugin\"\npath = \"/x.so\"\n[[sink]]\ntype = \"summary\"\n{toml}"),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    #[test]
    fn config_is_checked() {
        let e = check("max_keys = 0").unwrap_err();
        assert!(e.contains("sink[0].max_keys: must be 1 to 100000"), "{e}");
        let e = check("interval = 100000").unwrap_err();
        assert!(e.contains("sink[0].interval: at most 86400 seconds"), "{e}");
        let e = check("append = true").unwrap_err();
        assert!(e.contains("sink[0].append: only with a path"), "{e}");
        let e = check("path = \"/no/such/dir/s.txt\"").unwrap_err();
        assert!(e.contains("directory `/no/such/dir` does not exist"), "{e}");
        let e = check("intervall = 1").unwrap_err();
        assert!(e.contains("unknown field `intervall`"), "{e}");
    }
}
