//! The summary sink through the spf binary: its table against the exchange
//! records of the same replay, at exit, on SIGUSR1 and every N seconds.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::plugins::{example, redis_capture, toml_str};
use crate::pretty::{CALLS, GRPC_CALLS, exchanges, grpc_capture, http1_capture};
use crate::util::{read_ndjson, spf, stderr_text, write_file};

/// (count, errors) by (protocol, method, path), as a table says.
type Rows = BTreeMap<(String, String, String), (u64, u64)>;

/// The rows of the table titled `title` (the first such table in `text`).
fn table(text: &str, title: &str) -> Rows {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(title));
    assert!(lines.next().is_some(), "no `{title}` in:\n{text}");
    let mut rows = Rows::new();
    for line in lines {
        if line.starts_with("spf summary") || line.starts_with("errors:") {
            break;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        if w[0] == "PROTOCOL" {
            continue;
        }
        rows.insert(
            (w[0].into(), w[1].into(), w[2].into()),
            (w[3].parse().unwrap(), w[4].parse().unwrap()),
        );
    }
    rows
}

/// What the table must say of `exchanges`: an error is an exchange with
/// `error` set, an HTTP status of 500 or more (HTTP protocols), or a gRPC
/// status other than 0.
fn expected(exchanges: &[Value]) -> Rows {
    let mut rows = Rows::new();
    for x in exchanges {
        let s = |k: &str| x[k].as_str().unwrap_or("-").to_string();
        let http = matches!(x["protocol"].as_str(), Some("http1" | "http2" | "grpc"));
        let failed = !x["error"].is_null()
            || (http && x["status"].as_u64().is_some_and(|s| s >= 500))
            || x["grpc_status"].as_u64().is_some_and(|g| g != 0);
        let r = rows
            .entry((s("protocol"), s("method"), s("path")))
            .or_default();
        r.0 += 1;
        r.1 += u64::from(failed);
    }
    rows
}

#[test]
fn http1_table_at_exit_matches_the_exchanges() {
    let dir = tempfile::tempdir().unwrap();
    let cap = http1_capture(dir.path());
    let x = exchanges(&cap);
    let o = spf()
        .args(["run", "-q", "--replay"])
        .arg(&cap)
        .arg("--stats")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_text(&o));
    let err = stderr_text(&o);
    assert!(
        err.contains("spf summary (at exit): 5 exchanges, 1 error\n"),
        "{err}"
    );
    assert!(
        err.contains("\nerrors: 1 with HTTP status >= 500\n"),
        "{err}"
    );
    let want = expected(&x);
    assert_eq!(table(&err, "spf summary (at exit)"), want);
    // And what that is, by hand.
    assert_eq!(
        want.get(&("http1".into(), "GET".into(), "/small.json".into())),
        Some(&(2, 0))
    );
    assert_eq!(
        want.get(&("http1".into(), "GET".into(), "/fail".into())),
        Some(&(1, 1))
    );
    // stdout still carries the records.
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(out.lines().count(), CALLS.len());
}

#[test]
fn grpc_table_counts_failed_calls_by_grpc_status() {
    let dir = tempfile::tempdir().unwrap();
    let cap = grpc_capture(dir.path());
    let x = exchanges(&cap);
    let o = spf()
        .args(["run", "-q", "--replay"])
        .arg(&cap)
        .args(["--stats", "--format", "ndjson"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_text(&o));
    let err = stderr_text(&o);
    let want = expected(&x);
    assert_eq!(table(&err, "spf summary (at exit)"), want, "{err}");
    for (path, status) in GRPC_CALLS {
        assert_eq!(
            want.get(&("grpc".into(), "POST".into(), path.into())),
            Some(&(1, u64::from(status != 0))),
            "{err}"
        );
    }
    assert!(
        err.contains("spf summary (at exit): 3 exchanges, 1 error\n"),
        "{err}"
    );
    assert!(err.contains("\nerrors: 1 with gRPC status != 0\n"), "{err}");
}

#[test]
fn resp_table_in_a_file_matches_the_exchanges() {
    let dir = tempfile::tempdir().unwrap();
    let resp = example("spf_resp", dir.path());
    let records = dir.path().join("out.ndjson");
    let tables = dir.path().join("summary.txt");
    let cfg = write_file(
        dir.path(),
        "spf.toml",
        format!(
            "[source]\ntype = \"file\"\npath = {}\n[decoder]\ntype = \"plugin\"\npath = {}\n\
             [[sink]]\ntype = \"ndjson\"\npath = {}\n\
             [[sink]]\ntype = \"summary\"\npath = {}\n",
            toml_str(&redis_capture()),
            toml_str(&resp),
            toml_str(&records),
            toml_str(&tables)
        ),
    );
    let o = spf().args(["run", "-q", "-c"]).arg(&cfg).output().unwrap();
    assert!(o.status.success(), "{}", stderr_text(&o));
    assert!(
        !stderr_text(&o).contains("spf summary"),
        "the table went to the file"
    );
    let x: Vec<Value> = read_ndjson(&records)
        .into_iter()
        .filter_map(|r| r.get("exchange").cloned())
        .collect();
    let text = std::fs::read_to_string(&tables).unwrap();
    let want = expected(&x);
    assert_eq!(table(&text, "spf summary (at exit)"), want, "{text}");
    let errors: u64 = want.values().map(|r| r.1).sum();
    assert!(errors >= 1, "the unknown command failed: {text}");
    assert!(
        want.contains_key(&("resp".into(), "NOSUCHCOMMAND".into(), "-".into())),
        "{text}"
    );
    assert!(text.contains(&format!(
        "spf summary (at exit): {} exchanges, {errors} error",
        x.len()
    )));
}

/// spf replaying from a FIFO the test writes, so that it keeps running
/// until the test closes the FIFO; its stdout and stderr go to files.
struct Fed {
    child: Child,
    fifo: File,
    out: PathBuf,
    err: PathBuf,
}

/// Opens `fifo` for writing once spf opened it for reading (without
/// hanging should spf fail first), then blocks on writes as usual.
fn open_fifo(fifo: &Path, child: &mut Child) -> File {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(f) => {
                // SAFETY: clearing O_NONBLOCK on a descriptor we own.
                unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, 0) };
                return f;
            }
            // ENXIO: no reader yet.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => panic!("opening the FIFO: {e}"),
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("spf exited before reading: {st}");
        }
        assert!(Instant::now() < deadline, "spf never opened the FIFO");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Fed {
    fn start(dir: &Path, args: &[&str]) -> Fed {
        let fifo = dir.join("feed");
        crate::util::mkfifo(&fifo, 0o600);
        let out = dir.join("out.txt");
        let err = dir.join("err.txt");
        let mut child = spf()
            .args(["run", "-q", "--replay"])
            .arg(&fifo)
            .args(args)
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let fifo = open_fifo(&fifo, &mut child);
        Fed {
            child,
            fifo,
            out,
            err,
        }
    }

    /// Polls (with a deadline) until `done(stdout, stderr)`.
    fn wait(&mut self, what: &str, done: impl Fn(&str, &str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = std::fs::read_to_string(&self.out).unwrap_or_default();
            let err = std::fs::read_to_string(&self.err).unwrap_or_default();
            if done(&out, &err) {
                return err;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("spf exited ({st}) before {what}:\n{out}\n{err}");
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 30 s:\n{out}\n{err}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes the FIFO: the input ends, spf exits; returns its stderr.
    fn end(self) -> String {
        let Fed {
            mut child,
            fifo,
            err,
            ..
        } = self;
        drop(fifo);
        let st = child.wait().unwrap();
        let err = std::fs::read_to_string(&err).unwrap();
        assert!(st.success(), "spf failed ({st}): {err}");
        err
    }
}

fn all_exchanges_shown(out: &str, _: &str) -> bool {
    out.lines().filter(|l| l.contains("] http1 ")).count() == CALLS.len()
}

#[test]
fn sigusr1_prints_the_table_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let cap = http1_capture(dir.path());
    let want = expected(&exchanges(&cap));
    let mut fed = Fed::start(dir.path(), &["--stats"]);
    fed.fifo.write_all(&std::fs::read(&cap).unwrap()).unwrap();
    fed.wait("the exchanges on stdout", all_exchanges_shown);
    assert!(
        !std::fs::read_to_string(&fed.err)
            .unwrap()
            .contains("spf summary"),
        "no table before it is asked for"
    );
    // SAFETY: signalling the child we started.
    assert_eq!(
        unsafe { libc::kill(fed.child.id() as i32, libc::SIGUSR1) },
        0
    );
    let err = fed.wait("the table on SIGUSR1", |_, err| {
        err.contains("spf summary (on SIGUSR1)")
    });
    assert_eq!(table(&err, "spf summary (on SIGUSR1)"), want, "{err}");
    // Still running, and it ends as usual, with the table at exit.
    assert!(fed.child.try_wait().unwrap().is_none());
    let err = fed.end();
    assert_eq!(table(&err, "spf summary (at exit)"), want, "{err}");
}

#[test]
fn stats_every_prints_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let cap = http1_capture(dir.path());
    let want = expected(&exchanges(&cap));
    let mut fed = Fed::start(dir.path(), &["--stats-every", "1"]);
    fed.fifo.write_all(&std::fs::read(&cap).unwrap()).unwrap();
    fed.wait("the exchanges on stdout", all_exchanges_shown);
    let err = fed.wait("two periodic tables", |_, err| {
        err.matches("spf summary (every 1 s): 5 exchanges").count() >= 2
    });
    assert_eq!(table(&err, "spf summary (every 1 s): 5"), want, "{err}");
    let err = fed.end();
    assert!(
        err.contains("spf summary (at exit): 5 exchanges, 1 error"),
        "{err}"
    );
}

/// A raw event of a connection of its own, as a capture line.
fn raw_line(conn: u64) -> String {
    format!(
        "{{\"ts_ns\":{},\"time\":\"2026-11-26T10:00:00Z\",\"pid\":1,\"tid\":1,\"comm\":\"w\",\"peer_pid\":2,\"path\":\"/p\",\"sock\":\"stream\",\"dir\":\"send\",\"conn\":{conn},\"len\":2,\"captured\":2,\"truncated\":false,\"decoder\":\"raw\",\"data_b64\":\"aGk=\"}}\n",
        conn * 1000
    )
}

/// `spf run --stats | head -1`: once the reader of stdout is gone, the
/// summary does not keep the run going; it still prints its table.
#[test]
fn the_summary_alone_does_not_keep_a_run_going() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("feed");
    crate::util::mkfifo(&fifo, 0o600);
    let err = dir.path().join("err.txt");
    let mut child = spf()
        .args(["run", "-q", "--replay"])
        .arg(&fifo)
        .args(["--stats", "--decoder", "raw"])
        .stdout(Stdio::piped())
        .stderr(File::create(&err).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut feed = open_fifo(&fifo, &mut child);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    feed.write_all(raw_line(1).as_bytes()).unwrap();
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("w[1] → ?[2] /p"), "{first}");
    drop(stdout);
    // More input, so that spf writes and finds the reader gone; the FIFO
    // stays open all along.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = 2;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "spf kept running without a reader"
        );
        // Fails once spf is gone, which the next look sees.
        let _ = feed.write_all(raw_line(conn).as_bytes());
        conn += 1;
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    let err = std::fs::read_to_string(&err).unwrap();
    assert!(err.contains("spf summary (at exit): 0 exchanges"), "{err}");
}
