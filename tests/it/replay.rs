//! Integration tests: the pipeline core, driven through the `spf` binary on replayed
//! input (no root needed).

use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::util::*;

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("data_b64 is base64")
}

/// Replays a byte dump into a raw NDJSON capture and returns (capture path, bytes).
fn capture_of_bytes(
    dir: &std::path::Path,
    n: usize,
    chunk: usize,
) -> (std::path::PathBuf, Vec<u8>) {
    let data = test_bytes(n, 42);
    let dump = write_file(dir, "dump.bin", &data);
    let out = dir.join("capture.ndjson");
    let cfg = write_file(
        dir,
        "bytes.toml",
        format!(
            "[source]\ntype = \"file\"\npath = \"{}\"\nformat = \"bytes\"\nchunk = {chunk}\n\n\
             [decoder]\ntype = \"raw\"\n\n[[sink]]\ntype = \"ndjson\"\npath = \"{}\"\n",
            dump.display(),
            out.display()
        ),
    );
    let o = spf_output(&["run", "-q", "-c", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "spf failed: {}", stderr_text(&o));
    (out, data)
}

#[test]
fn raw_replay_is_lossless_and_stable() {
    let dir = tempfile::tempdir().unwrap();
    let (capture, data) = capture_of_bytes(dir.path(), 100_000, 777);
    let lines = read_ndjson(&capture);
    assert_eq!(lines.len(), 100_000usize.div_ceil(777));
    let mut back = Vec::new();
    for l in &lines {
        assert_eq!(l["decoder"], "raw");
        assert_eq!(l["truncated"], false);
        let bytes = b64(l["data_b64"].as_str().unwrap());
        assert_eq!(l["captured"].as_u64().unwrap(), bytes.len() as u64);
        assert_eq!(l["len"].as_u64().unwrap(), bytes.len() as u64);
        back.extend_from_slice(&bytes);
    }
    assert_eq!(
        back, data,
        "data_b64 must give back exactly the input bytes"
    );

    // Replaying the capture through raw again, syscall by syscall, gives the
    // same records, byte for byte.
    let again = dir.path().join("again.ndjson");
    let o = spf_output(&[
        "run",
        "-q",
        "--view",
        "syscalls",
        "--replay",
        capture.to_str().unwrap(),
        "--format",
        "ndjson",
        "--output",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    let first = std::fs::read(&capture).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), first);
    // The stdout sink wrote the same NDJSON.
    assert_eq!(o.stdout, first);
}

#[test]
fn fixture_capture_replays_events_and_lost_markers() {
    // A hand-checked capture: raw events of two connections, a lost marker, a record
    // of another decoder (skipped: derived data), and a blank line.
    let dir = tempfile::tempdir().unwrap();
    let fixture = concat!(
        r#"{"ts_ns":100,"time":"2026-11-26T10:00:00.000000100Z","pid":10,"tid":11,"comm":"client","peer_pid":20,"path":"/run/a.sock","sock":"stream","dir":"send","conn":5,"len":5,"captured":5,"truncated":false,"decoder":"raw","data_b64":"aGVsbG8=","text":"hello"}"#,
        "\n",
        r#"{"ts_ns":150,"time":"2026-11-26T10:00:00.000000150Z","lost":3}"#,
        "\n",
        "\n",
        r#"{"ts_ns":160,"time":"2026-11-26T10:00:00.000000160Z","pid":20,"tid":20,"comm":"server","peer_pid":10,"path":"/run/a.sock","sock":"stream","dir":"recv","conn":5,"len":9,"captured":5,"truncated":true,"decoder":"http2","http2":{"type":"PING"}}"#,
        "\n",
        r#"{"ts_ns":200,"time":"2026-11-26T10:00:00.000000200Z","pid":20,"tid":21,"comm":"server","peer_pid":10,"path":"@abstract","sock":"seqpacket","dir":"recv","conn":6,"len":9,"captured":3,"truncated":true,"decoder":"raw","data_b64":"AP8K","text":"\\x00\\xff\\n"}"#,
        "\n",
    );
    let input = write_file(dir.path(), "fixture.ndjson", fixture);
    let o = spf_output(&[
        "run",
        "--replay",
        input.to_str().unwrap(),
        "--format",
        "ndjson",
    ]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    let out: Vec<serde_json::Value> = String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0]["comm"], "client");
    assert_eq!(out[0]["text"], "hello");
    assert_eq!(out[1]["lost"], 3);
    assert_eq!(out[2]["path"], "@abstract");
    assert_eq!(out[2]["sock"], "seqpacket");
    assert_eq!(out[2]["len"], 9);
    assert_eq!(out[2]["truncated"], true);
    assert_eq!(
        b64(out[2]["data_b64"].as_str().unwrap()),
        vec![0, 0xff, b'\n']
    );
    // The summary reports the drop, and the cut event apart from it.
    let err = stderr_text(&o);
    assert!(err.contains("dropped 3; truncated 1"), "{err}");
}

#[test]
fn malformed_replay_lines_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(
        dir.path(),
        "bad.ndjson",
        "not json\n{\"decoder\":\"raw\",\"data_b64\":\"aGk=\"}\n{\"decoder\":\"raw\"}\n",
    );
    let o = spf_output(&[
        "run",
        "--replay",
        input.to_str().unwrap(),
        "--format",
        "ndjson",
    ]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    let err = stderr_text(&o);
    assert!(err.contains("bad.ndjson:1: skipped: not JSON"), "{err}");
    assert!(
        err.contains("bad.ndjson:3: skipped: invalid `data_b64`"),
        "{err}"
    );
    assert_eq!(String::from_utf8(o.stdout).unwrap().lines().count(), 1);
}

fn expect_config_error(toml: &str, key: &str, line: usize) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(dir.path(), "spf.toml", toml);
    for cmd in ["validate", "run"] {
        let o = spf_output(&[cmd, "-c", cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", stderr_text(&o));
        let err = stderr_text(&o);
        let want = format!("spf.toml:{line}:");
        assert!(
            err.contains(&want) && err.contains(key),
            "{cmd}: want {want} and {key} in: {err}"
        );
    }
}

#[test]
fn config_errors_name_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(dir.path(), "in.ndjson", "");
    let src = format!(
        "[source]\ntype = \"file\"\npath = \"{}\"\n",
        input.display()
    );
    // Unknown key.
    expect_config_error(
        &format!("{src}\n[reorder]\nwindow_ms = 5\nwindow = 9\n"),
        "reorder.window",
        7,
    );
    // Wrong type.
    expect_config_error(
        &format!("{src}\n[reorder]\nwindow_ms = \"soon\"\n"),
        "reorder.window_ms",
        6,
    );
    // Unknown decoder: the message lists the known ones.
    expect_config_error(
        &format!("{src}\n[decoder]\ntype = \"http9\"\n"),
        "decoder.type",
        6,
    );
    // Missing file.
    expect_config_error(
        "[source]\ntype = \"file\"\npath = \"/nonexistent/cap.ndjson\"\n",
        "source.path",
        3,
    );
    // A sink list entry with a bad value.
    expect_config_error(
        &format!("{src}\n[[sink]]\ntype = \"stdout\"\nformat = \"xml\"\n"),
        "sink[0].format",
        7,
    );
}

/// Runs `spf validate` on `toml`, expects exit 2, and returns what it printed.
fn validate_errors(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(dir.path(), "spf.toml", toml);
    let o = spf_output(&["validate", "-c", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    stderr_text(&o)
}

#[test]
fn all_config_errors_are_reported_at_once() {
    let err = validate_errors(
        "[source]\ntype = \"nope\"\n\n[decoder]\ntype = \"raw\"\nextra = 1\n\n[[sink]]\ntype = \"stdout\"\ncolor = \"pink\"\n\n[unknown]\n",
    );
    for want in [
        "spf.toml:2:8: source.type: unknown source type `nope`",
        "decoder.extra",
        "sink[0].color",
        "unknown: unknown section",
        "4 errors",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
    assert!(err.contains("known types: file"), "{err}");
}

#[test]
fn reference_config_is_valid() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/spf.toml");
    let o = spf_output(&["validate", "-c", cfg]);
    assert!(
        o.status.success(),
        "spf.toml must stay valid: {}",
        stderr_text(&o)
    );
}

#[test]
fn head_closing_the_pipe_is_a_quiet_success() {
    let dir = tempfile::tempdir().unwrap();
    let (capture, _) = capture_of_bytes(dir.path(), 4_000_000, 64);
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' run --replay '{}' --format ndjson 2>'{}' | head -1",
            env!("CARGO_BIN_EXE_spf"),
            capture.display(),
            dir.path().join("err").display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "pipeline failed: {:?}", out.status);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    let err = std::fs::read_to_string(dir.path().join("err")).unwrap();
    assert_eq!(err, "", "no error text expected");
}

#[test]
fn a_closed_stderr_is_no_panic() {
    // Diagnostics on a stderr whose reader has gone: `2>&1 | head -1` on an input
    // that is nothing but unreadable lines. spf's own status (1: nothing could be
    // read) must come through, not a panic's 101.
    let dir = tempfile::tempdir().unwrap();
    let junk = write_file(dir.path(), "junk.ndjson", "junk\n".repeat(10_000));
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' run --replay '{}' 2>&1 | head -1; exit ${{PIPESTATUS[0]}}",
            env!("CARGO_BIN_EXE_spf"),
            junk.display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "spf's status: {:?}", out.status);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("spf: ") && text.contains("skipped"),
        "{text}"
    );
}

/// Starts spf replaying a new FIFO in `dir` into `dir/out.ndjson` with the given
/// reorder window; returns the child, the FIFO's writing end and the output path.
fn spf_on_fifo(
    dir: &std::path::Path,
    window_ms: u64,
    stderr: std::process::Stdio,
) -> (std::process::Child, std::fs::File, std::path::PathBuf) {
    let fifo = dir.join("in.fifo");
    mkfifo(&fifo, 0o600);
    let out = dir.join("out.ndjson");
    let cfg = write_file(
        dir,
        "fifo.toml",
        format!(
            "[source]\ntype = \"file\"\npath = \"{}\"\n\n[reorder]\nwindow_ms = {window_ms}\n\n\
             [decoder]\ntype = \"raw\"\n\n[[sink]]\ntype = \"ndjson\"\npath = \"{}\"\n",
            fifo.display(),
            out.display()
        ),
    );
    let mut child = spf()
        .args(["run", "-q", "-c", cfg.to_str().unwrap()])
        .stderr(stderr)
        .spawn()
        .unwrap();
    // Opened without blocking, and again until spf has it open for reading: a
    // blocking open would wait for ever should spf exit first.
    let w = wait_for(&mut child, "spf to open its input", || {
        use std::os::unix::fs::OpenOptionsExt as _;
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
        {
            Ok(w) => Some(w),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => None,
            Err(e) => panic!("opening the FIFO: {e}"),
        }
    });
    // Writes block again: the test writes more than the FIFO holds.
    // SAFETY: an open fd; F_SETFL with flags taken from it.
    unsafe {
        let fl = libc::fcntl(w.as_raw_fd(), libc::F_GETFL);
        assert_eq!(
            libc::fcntl(w.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK),
            0
        );
    }
    (child, w, out)
}

/// Waits until spf has read everything written to the FIFO `w` (nothing is
/// left in it), or panics should it exit first.
fn wait_until_read(child: &mut std::process::Child, w: &std::fs::File) {
    wait_for(child, "spf to read the FIFO empty", || {
        let mut left: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int; the fd is open.
        assert_eq!(
            unsafe { libc::ioctl(w.as_raw_fd(), libc::FIONREAD, &mut left) },
            0
        );
        (left == 0).then_some(())
    })
}

#[test]
fn sigint_drains_and_flushes_everything_received() {
    let dir = tempfile::tempdir().unwrap();
    // A long reorder window: at SIGINT the events are still held in the reorder
    // buffer, so this checks that shutdown drains it.
    let (mut child, mut w, out) = spf_on_fifo(dir.path(), 60_000, std::process::Stdio::inherit());
    let n = 500;
    for i in 0..n {
        writeln!(
            w,
            r#"{{"ts_ns":{},"time":"2026-11-26T10:00:00Z","pid":1,"tid":1,"comm":"w","peer_pid":2,"path":"/p","sock":"stream","dir":"send","conn":1,"len":4,"captured":4,"truncated":false,"decoder":"raw","data_b64":"{}"}}"#,
            1000 - i,
            base64::engine::general_purpose::STANDARD.encode((i as u32).to_be_bytes())
        )
        .unwrap();
    }
    w.flush().unwrap();
    // The writer stays open: the source is blocked reading the FIFO when the
    // signal comes, with everything written read (and so received).
    wait_until_read(&mut child, &w);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "spf did not exit after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(w);
    assert!(status.success(), "exit status {status:?}");
    let lines = read_ndjson(&out);
    assert_eq!(lines.len(), n, "every event received must be written");
    // Same flow: arrival order kept even though timestamps go backwards.
    let firsts: Vec<u32> = lines
        .iter()
        .map(|l| u32::from_be_bytes(b64(l["data_b64"].as_str().unwrap()).try_into().unwrap()))
        .collect();
    assert_eq!(firsts, (0..n as u32).collect::<Vec<_>>());
}

/// SIGUSR1 without a summary sink: spf says how far it got and goes on (its
/// default action would end spf with nothing flushed), even under -q.
#[test]
fn sigusr1_shows_the_summary_so_far_and_spf_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut w, out) = spf_on_fifo(dir.path(), 60_000, std::process::Stdio::piped());
    let line = |i: u32| {
        format!(
            r#"{{"ts_ns":{i},"pid":1,"tid":1,"comm":"w","path":"/p","sock":"stream","dir":"send","conn":1,"len":1,"captured":1,"decoder":"raw","data_b64":"QQ=="}}"#
        )
    };
    for i in 0..3 {
        writeln!(w, "{}", line(i)).unwrap();
    }
    w.flush().unwrap();
    wait_until_read(&mut child, &w);
    let (rx, _reader) = stderr_lines(&mut child);
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) }, 0);
    let said = wait_for(&mut child, "spf's line on SIGUSR1", || rx.try_recv().ok());
    // How many events it counts depends on what the reorder window let
    // through by then.
    assert!(
        said.starts_with("spf (on SIGUSR1): ") && said.contains("; dropped 0;"),
        "{said}"
    );
    // Still running and still reading.
    writeln!(w, "{}", line(3)).unwrap();
    w.flush().unwrap();
    wait_until_read(&mut child, &w);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = wait_stopped(&mut child);
    drop(w);
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(read_ndjson(&out).len(), 4, "every event written");
}

#[test]
fn capture_decoded_with_another_decoder_stays_replayable() {
    // Decode a byte dump with http2 (it is not HTTP/2, so error records come out)
    // while an ndjson sink with `events = true` keeps the raw events beside them.
    let dir = tempfile::tempdir().unwrap();
    let data = test_bytes(50_000, 7);
    let dump = write_file(dir.path(), "dump.bin", &data);
    let out = dir.path().join("decoded.ndjson");
    let cfg = write_file(
        dir.path(),
        "c.toml",
        format!(
            "[source]\ntype = \"file\"\npath = \"{}\"\nformat = \"bytes\"\nchunk = 1000\n\n\
             [decoder]\ntype = \"http2\"\n\n[[sink]]\ntype = \"ndjson\"\npath = \"{}\"\nevents = true\n",
            dump.display(),
            out.display()
        ),
    );
    let o = spf_output(&["run", "-q", "-c", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    let lines = read_ndjson(&out);
    assert!(
        lines.iter().any(|l| l["decoder"] == "http2"),
        "decoder records are there too"
    );
    // Replaying keeps only the raw events: exactly the dump's bytes, in order.
    let o = spf_output(&[
        "run",
        "-q",
        "--replay",
        out.to_str().unwrap(),
        "--format",
        "ndjson",
    ]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    let mut back = Vec::new();
    for l in String::from_utf8(o.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["decoder"], "raw");
        back.extend(b64(v["data_b64"].as_str().unwrap()));
    }
    assert_eq!(back, data);
}

#[test]
fn quick_flag_errors_name_the_flag() {
    let o = spf_output(&[
        "run",
        "--replay",
        "/nonexistent/cap.ndjson",
        "--decoder",
        "nope",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr_text(&o);
    assert!(
        err.contains("--replay: cannot open `/nonexistent/cap.ndjson`"),
        "{err}"
    );
    assert!(
        err.contains("--decoder: unknown decoder type `nope`; known types:"),
        "{err}"
    );
    // A directory is refused up front too, not once the run began.
    let dir = tempfile::tempdir().unwrap();
    let o = spf_output(&["run", "--replay", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr_text(&o));
    assert!(
        stderr_text(&o).contains("is a directory, not a capture"),
        "{}",
        stderr_text(&o)
    );
    // Usage errors are exit 2 as well.
    let o = spf_output(&["run", "--format", "xml"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn every_error_of_one_section_is_reported() {
    let err = validate_errors(
        "[source]\ntype = \"file\"\npathh = \"/x\"\nchunk = \"big\"\nformat = \"sideways\"\n",
    );
    for want in [
        "spf.toml:1:1: source: missing field `path`",
        "spf.toml:3:1: source.pathh: unknown field",
        "spf.toml:4:9: source.chunk: invalid type",
        "spf.toml:5:10: source.format: unknown variant `sideways`",
        "4 errors",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
    // Range checks: each key that fails is named, not the first only.
    let err = validate_errors(
        "[[sink]]\ntype = \"summary\"\nmax_keys = 0\ninterval = 100000\n\n\
         [[sink]]\ntype = \"ndjson\"\npath = \"/no/such/dir/x.ndjson\"\nevents = true\nrecords = [\"exchange\"]\n",
    );
    for want in [
        "spf.toml:3:12: sink[0].max_keys",
        "spf.toml:4:12: sink[0].interval",
        "sink[1].path",
        "sink[1].records",
        "5 errors", // and the missing [source]
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
}

#[test]
fn replay_refuses_to_overwrite_its_input_and_fails_on_unreadable_input() {
    let dir = tempfile::tempdir().unwrap();
    let (capture, _) = capture_of_bytes(dir.path(), 1000, 100);
    let before = std::fs::read(&capture).unwrap();
    let p = capture.to_str().unwrap();
    let o = spf_output(&["run", "--replay", p, "--output", p]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr_text(&o);
    assert!(
        err.contains("--output: `") && err.contains("is the file the source reads"),
        "{err}"
    );
    // The same through a config file.
    let cfg = write_file(
        dir.path(),
        "same.toml",
        format!(
            "[source]\ntype = \"file\"\npath = \"{p}\"\n\n[[sink]]\ntype = \"ndjson\"\npath = \"{p}\"\n"
        ),
    );
    let o = spf_output(&["run", "-c", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr_text(&o);
    assert!(err.contains("same.toml:7:8: sink[0].path:"), "{err}");
    assert_eq!(
        std::fs::read(&capture).unwrap(),
        before,
        "the input must be untouched"
    );

    let garbage = write_file(dir.path(), "garbage.ndjson", "hello\nworld\n");
    let o = spf_output(&["run", "--replay", garbage.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr_text(&o).contains("none of the input could be read"),
        "{}",
        stderr_text(&o)
    );
    // The output of an ndjson sink written without `events = true`: decoded
    // records, which a replay cannot turn back into traffic. Said, not a
    // silent run over nothing.
    let decoded = write_file(
        dir.path(),
        "decoded.ndjson",
        "{\"ts_ns\":1,\"decoder\":\"http1\",\"kind\":\"exchange\"}\n\
         {\"ts_ns\":2,\"decoder\":\"http1\",\"kind\":\"frame\"}\n",
    );
    let o = spf_output(&["run", "--replay", decoded.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr_text(&o));
    assert!(
        stderr_text(&o).contains("holds 2 decoded records but no raw events"),
        "{}",
        stderr_text(&o)
    );
}

#[test]
fn closed_stdout_does_not_cut_the_capture_file() {
    let dir = tempfile::tempdir().unwrap();
    let (capture, _) = capture_of_bytes(dir.path(), 2_000_000, 64);
    let copy = dir.path().join("copy.ndjson");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' run -q --view syscalls --replay '{}' --format ndjson --output '{}' | head -1",
            env!("CARGO_BIN_EXE_spf"),
            capture.display(),
            copy.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(&capture).unwrap(),
        "the file sink keeps every record after stdout closed"
    );
}

#[test]
fn sigint_keeps_complete_lines_ahead_of_a_partial_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut w, out) = spf_on_fifo(dir.path(), 0, std::process::Stdio::inherit());
    // One whole line, then the start of the next, which never completes.
    w.write_all(
        br#"{"ts_ns":1,"time":"2026-11-26T10:00:00Z","decoder":"raw","data_b64":"aGk="}
{"ts_ns":2,"#,
    )
    .unwrap();
    w.flush().unwrap();
    wait_until_read(&mut child, &w);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_stopped(&mut child);
    drop(w);
    assert!(status.success(), "{status:?}");
    let lines = read_ndjson(&out);
    assert_eq!(lines.len(), 1, "the complete line must be written");
    assert_eq!(lines[0]["data_b64"], "aGk=");
}

/// NDJSON records of a replay of the redis capture with `args` added.
fn replay_redis(args: &[&str]) -> Vec<serde_json::Value> {
    let capture = crate::plugins::redis_capture();
    let mut all = vec![
        "run",
        "-q",
        "--replay",
        capture.to_str().unwrap(),
        "--decoder",
        "raw",
        "--format",
        "ndjson",
    ];
    all.extend_from_slice(args);
    let o = spf_output(&all);
    assert!(o.status.success(), "{}", stderr_text(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn count_stops_after_that_many_records() {
    let all = replay_redis(&[]);
    assert!(all.len() > 20, "{}", all.len());
    let five = replay_redis(&["--count", "5"]);
    assert_eq!(five, all[..5]);
    // The config key does the same.
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(
        dir.path(),
        "count.toml",
        format!(
            "[run]\ncount = 3\n[source]\ntype = \"file\"\npath = {:?}\n[decoder]\ntype = \"raw\"\n[[sink]]\ntype = \"stdout\"\nformat = \"ndjson\"\n",
            crate::plugins::redis_capture().display().to_string()
        ),
    );
    let o = spf_output(&["run", "-q", "-c", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    assert_eq!(String::from_utf8(o.stdout).unwrap().lines().count(), 3);
    // Zero would read nothing and say nothing: an error instead.
    let capture = crate::plugins::redis_capture();
    let o = spf_output(&["run", "--replay", capture.to_str().unwrap(), "--count", "0"]);
    assert!(!o.status.success());
    assert!(stderr_text(&o).contains("--count"), "{}", stderr_text(&o));
}

#[test]
fn output_to_a_pcapng_name_points_to_w() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.pcapng");
    let capture = crate::plugins::redis_capture();
    let o = spf_output(&[
        "run",
        "--replay",
        capture.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr_text(&o));
    assert!(stderr_text(&o).contains("-w "), "{}", stderr_text(&o));
    assert!(
        !out.exists(),
        "nothing written under a name that promises pcapng"
    );
}

/// `-` is stdin for --replay; for --output it is refused (stdout carries
/// the records), where it used to create a file named `-`.
#[test]
fn replay_reads_stdin_and_output_refuses_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let capture = crate::plugins::redis_capture();
    let from_file = spf_output(&["run", "-q", "--replay", capture.to_str().unwrap()]);
    assert!(from_file.status.success(), "{}", stderr_text(&from_file));
    let o = spf()
        .args(["run", "-q", "--replay", "-"])
        .stdin(std::fs::File::open(&capture).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_text(&o));
    assert!(!o.stdout.is_empty());
    assert_eq!(o.stdout, from_file.stdout, "the same records from stdin");
    // stdin a socket (as a service manager or another program may hand
    // over), which cannot be opened again through /dev/stdin.
    let (mut w, r) = std::os::unix::net::UnixStream::pair().unwrap();
    let child = spf()
        .args(["run", "-q", "--replay", "-"])
        .stdin(std::os::fd::OwnedFd::from(r))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Written on a thread: the output is read meanwhile.
    let bytes = std::fs::read(&capture).unwrap();
    let writer = std::thread::spawn(move || w.write_all(&bytes));
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(o.status.success(), "{}", stderr_text(&o));
    assert_eq!(o.stdout, from_file.stdout, "the same records from a socket");
    let o = spf()
        .current_dir(dir.path())
        .args(["run", "--replay", capture.to_str().unwrap(), "-o", "-"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr_text(&o));
    assert!(
        stderr_text(&o).contains("--format ndjson"),
        "{}",
        stderr_text(&o)
    );
    assert!(!dir.path().join("-").exists(), "no file named `-`");
}

#[test]
fn follow_shows_one_connection_both_ways() {
    let all = replay_redis(&[]);
    let conn = all[0]["conn"].as_u64().unwrap();
    let want: Vec<_> = all.iter().filter(|r| r["conn"] == conn).cloned().collect();
    assert!(want.len() < all.len(), "the capture has other connections");
    let got = replay_redis(&["--follow", &conn.to_string()]);
    assert_eq!(got, want);
    // Both directions: the client's requests and the server's replies.
    assert!(
        got.iter()
            .any(|r| r["role"] == "client" || r["via"] == "recv")
    );
    assert!(got.iter().any(|r| r["via"] == "send"));
    // A connection the capture does not have is said so, not met with silence.
    let capture = crate::plugins::redis_capture();
    let o = spf_output(&[
        "run",
        "--replay",
        capture.to_str().unwrap(),
        "--follow",
        "18446744073709551615",
    ]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    assert!(
        stderr_text(&o).contains("--follow 18446744073709551615: no event of that connection"),
        "{}",
        stderr_text(&o)
    );
}

#[test]
fn a_binary_capture_replays_as_its_ndjson_twin() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("copy.spfcap");
    let nd = dir.path().join("copy.ndjson");
    let original = crate::plugins::redis_capture();
    for out in [&bin, &nd] {
        let o = spf_output(&[
            "run",
            "-q",
            "--replay",
            original.to_str().unwrap(),
            "--format",
            "ndjson",
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr_text(&o));
    }
    let bytes = std::fs::read(&bin).unwrap();
    assert!(bytes.starts_with(b"SPFCAP\0\x01"));
    assert!(
        bytes.len() * 2 < std::fs::metadata(&nd).unwrap().len() as usize,
        "the binary capture is the smaller: {} bytes",
        bytes.len()
    );
    // Replayed through any decoder, both give the very same records.
    for decoder in ["raw", "auto"] {
        let replay = |p: &std::path::Path| {
            let o = spf_output(&[
                "run",
                "-q",
                "--replay",
                p.to_str().unwrap(),
                "--decoder",
                decoder,
                "--format",
                "ndjson",
            ]);
            assert!(o.status.success(), "{}", stderr_text(&o));
            o.stdout
        };
        let a = replay(&bin);
        assert!(!a.is_empty());
        assert_eq!(a, replay(&nd), "decoder {decoder}");
    }
    // A cut file (its writer killed, its disk full) gives every record before
    // the cut, and says where it was cut.
    let replay_raw = || {
        spf_output(&[
            "run",
            "-q",
            "--replay",
            bin.to_str().unwrap(),
            "--decoder",
            "raw",
            "--format",
            "ndjson",
        ])
    };
    let lines = |o: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(String::from)
            .collect()
    };
    let whole = lines(&replay_raw());
    std::fs::write(&bin, &bytes[..bytes.len() - 3]).unwrap();
    let o = replay_raw();
    assert!(o.status.success(), "{}", stderr_text(&o));
    assert!(
        stderr_text(&o).contains("the capture ends inside it"),
        "{}",
        stderr_text(&o)
    );
    let cut = lines(&o);
    assert!(
        cut.len() + 1 >= whole.len() && cut.len() < whole.len(),
        "{} of {}",
        cut.len(),
        whole.len()
    );
    assert_eq!(cut[..], whole[..cut.len()]);
    // A zero-filled tail (what a crash can leave) is no record: an error that
    // says where, after every record before it.
    let mut tail = bytes.clone();
    tail.extend_from_slice(&[0u8; 64]);
    std::fs::write(&bin, &tail).unwrap();
    let o = replay_raw();
    assert_eq!(o.status.code(), Some(1), "{}", stderr_text(&o));
    assert!(stderr_text(&o).contains("record "), "{}", stderr_text(&o));
    assert_eq!(lines(&o), whole);
}
