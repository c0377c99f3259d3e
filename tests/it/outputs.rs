//! Integration tests: what spf refuses to write or read. Output files are never
//! reached through a symbolic link, never another user's, never shared by two
//! sinks or with the source; a config must be a small regular file or a FIFO.
//! Also what the exit summary counts and what the terminal is shown.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::plugins::is_root;
use crate::util::{spf, spf_output, stderr_text, write_file};

/// A one-event capture to replay.
fn capture(dir: &Path) -> std::path::PathBuf {
    write_file(
        dir,
        "cap.ndjson",
        concat!(
            r#"{"ts_ns":1,"time":"2026-11-26T10:00:00Z","pid":1,"tid":1,"comm":"w","peer_pid":2,"path":"/p","sock":"stream","dir":"send","conn":1,"len":2,"captured":2,"truncated":false,"decoder":"raw","data_b64":"aGk="}"#,
            "\n"
        ),
    )
}

fn replay_to(cap: &Path, output: &Path) -> Output {
    spf()
        .args(["run", "-q", "--replay"])
        .arg(cap)
        .arg("--output")
        .arg(output)
        .output()
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn assert_refused(o: &Output, needles: &[&str]) {
    let err = stderr_text(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in:\n{err}");
    }
}

#[test]
fn an_output_path_that_is_a_symbolic_link_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path());
    // What an attacker points the link at: a file spf must not touch.
    let victim = write_file(dir.path(), "victim", "keep me\n");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.path().join("out.ndjson");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let o = replay_to(&cap, &link);
    assert_refused(&o, &["--output", "refusing to write", "symbolic link"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
    assert_eq!(mode(&victim), 0o644);

    // A link to nowhere is not followed to create its target either, and a config
    // says where.
    let nowhere = dir.path().join("nowhere");
    let dangling = dir.path().join("dangling.ndjson");
    std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
    let cfg = write_file(
        dir.path(),
        "link.toml",
        format!(
            "[source]\ntype = \"file\"\npath = \"{}\"\n\n[[sink]]\ntype = \"ndjson\"\npath = \"{}\"\n",
            cap.display(),
            dangling.display()
        ),
    );
    for cmd in ["validate", "run"] {
        let o = spf_output(&[cmd, "-c", cfg.to_str().unwrap()]);
        assert_refused(
            &o,
            &[
                "link.toml:7:8: sink[0].path: refusing to write",
                "symbolic link",
            ],
        );
    }
    assert!(!nowhere.exists());
}

#[test]
fn an_existing_file_is_taken_over_only_if_it_is_ours() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path());
    // Our own world-readable file: written, and private from now on.
    let own = write_file(dir.path(), "own.ndjson", "old\n");
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = replay_to(&cap, &own);
    assert!(o.status.success(), "{}", stderr_text(&o));
    assert_eq!(mode(&own), 0o600);
    let text = std::fs::read_to_string(&own).unwrap();
    assert!(text.contains("aGk=") && !text.contains("old"), "{text}");

    if !is_root() {
        eprintln!("skipping the other user's file: chown needs root");
        return;
    }
    // Planted by another user, world-readable so they can read the capture.
    let nobody = spf_pipeline::account::lookup("nobody").unwrap().unwrap();
    let planted = write_file(dir.path(), "planted.ndjson", "theirs\n");
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::chown(&planted, Some(nobody.uid), None).unwrap();
    let o = replay_to(&cap, &planted);
    assert_refused(
        &o,
        &[
            "refusing to write",
            &format!("belongs to uid {}, not to uid 0", nobody.uid),
        ],
    );
    assert_eq!(std::fs::read_to_string(&planted).unwrap(), "theirs\n");
    assert_eq!(mode(&planted), 0o644);
    assert_eq!(std::fs::metadata(&planted).unwrap().uid(), nobody.uid);
}

#[test]
fn two_sinks_or_a_sink_and_the_source_cannot_share_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path());
    let same = |name: &str, a: &str, b: &str| {
        write_file(
            dir.path(),
            name,
            format!(
                "[source]\ntype = \"file\"\npath = \"{}\"\n\n[[sink]]\ntype = \"ndjson\"\npath = \"{a}\"\n\n[[sink]]\ntype = \"ndjson\"\npath = \"{b}\"\n",
                cap.display()
            ),
        )
    };
    // One path spelt two ways.
    let out = dir.path().join("out.ndjson");
    let cfg = same(
        "spelt.toml",
        &out.display().to_string(),
        &format!("{}/./out.ndjson", dir.path().display()),
    );
    // Through a directory that is a link to the other: one file once it exists.
    let alias = dir.path().join("alias");
    std::os::unix::fs::symlink(dir.path(), &alias).unwrap();
    let cfg_alias = same(
        "alias.toml",
        &out.display().to_string(),
        &alias.join("out.ndjson").display().to_string(),
    );
    for cfg in [&cfg, &cfg_alias] {
        for cmd in ["validate", "run"] {
            let o = spf_output(&[cmd, "-c", cfg.to_str().unwrap()]);
            assert_refused(&o, &[":11:8: sink[1].path:", "is also written by sink[0]"]);
        }
    }
    assert!(!out.exists(), "nothing may be written by a refused config");
    // From flags, each side is named by its flag, not by a sink number.
    let o = spf_output(&[
        "run",
        "--replay",
        cap.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-w",
        out.to_str().unwrap(),
    ]);
    assert_refused(&o, &["command line: -w:", "is also written by --output;"]);
    assert!(!out.exists(), "nothing may be written by refused flags");

    // A sink on the file the source reads.
    let o = replay_to(&cap, &cap);
    assert_refused(&o, &["--output", "is the file the source reads"]);
    assert!(std::fs::read_to_string(&cap).unwrap().contains("aGk="));
}

/// Runs spf with `args`, failing the test if it takes longer than `limit`.
fn output_within(args: &[&str], limit: Duration) -> Output {
    let mut child = spf()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("spf {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_config_must_be_a_small_regular_file_or_a_fifo() {
    for cmd in ["validate", "run"] {
        let o = output_within(&[cmd, "-c", "/dev/zero"], Duration::from_secs(10));
        assert_refused(
            &o,
            &["/dev/zero: cannot read config: it is a character device"],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let big = write_file(dir.path(), "big.toml", "#".repeat((1 << 20) + 1));
    let o = output_within(
        &["validate", "-c", big.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_refused(&o, &["larger than 1 MiB"]);
    let o = output_within(
        &["validate", "-c", dir.path().to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_refused(&o, &["it is a directory"]);

    // A FIFO (`-c <(...)`) is read like a file.
    let cap = capture(dir.path());
    let fifo = dir.path().join("cfg.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let text = format!("[source]\ntype = \"file\"\npath = \"{}\"\n", cap.display());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(&fifo, text).unwrap())
    };
    let o = output_within(
        &["validate", "-c", fifo.to_str().unwrap()],
        Duration::from_secs(10),
    );
    writer.join().unwrap();
    assert!(o.status.success(), "{}", stderr_text(&o));
}

#[test]
fn summary_counts_saturate_and_truncated_events_are_not_drops() {
    let dir = tempfile::tempdir().unwrap();
    let max = u64::MAX;
    let input = write_file(
        dir.path(),
        "lost.ndjson",
        format!(
            "{{\"ts_ns\":1,\"time\":\"2026-11-26T10:00:00Z\",\"lost\":{max}}}\n\
             {{\"ts_ns\":2,\"time\":\"2026-11-26T10:00:00Z\",\"lost\":3}}\n\
             {}\n{}\n",
            r#"{"ts_ns":3,"time":"2026-11-26T10:00:00Z","pid":1,"tid":1,"comm":"w","peer_pid":2,"path":"/p","sock":"stream","dir":"send","conn":1,"len":9,"captured":2,"truncated":true,"decoder":"raw","data_b64":"aGk="}"#,
            r#"{"ts_ns":4,"time":"2026-11-26T10:00:00Z","pid":1,"tid":1,"comm":"w","peer_pid":2,"path":"/p","sock":"stream","dir":"send","conn":1,"len":2,"captured":2,"truncated":false,"decoder":"raw","data_b64":"aGk="}"#
        ),
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
    assert!(
        err.contains(&format!("dropped {max}; truncated 1")),
        "a loss of 2^64-1 plus 3 is not 2, and the cut event is no drop: {err}"
    );
}

#[test]
fn names_cannot_reorder_or_hide_text_on_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // A process name with a right-to-left override and a path with a zero-width
    // space and an escape sequence, as a traced process can choose them.
    let line = serde_json::json!({
        "ts_ns": 1, "time": "2026-11-26T10:00:00Z", "pid": 1, "tid": 1,
        "comm": "evil\u{202e}fdp.exe", "peer_pid": 2, "path": "/run/a\u{200b}\u{1b}[2J.sock",
        "sock": "stream", "dir": "send", "conn": 1, "len": 2, "captured": 2,
        "truncated": false, "decoder": "raw", "data_b64": "aGk="
    });
    let input = write_file(dir.path(), "names.ndjson", format!("{line}\n"));
    let o = spf_output(&[
        "run",
        "-q",
        "--replay",
        input.to_str().unwrap(),
        "--format",
        "pretty",
    ]);
    assert!(o.status.success(), "{}", stderr_text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("evil\\u{202e}fdp.exe"), "{out}");
    assert!(out.contains("/run/a\\u{200b}\\u{1b}[2J.sock"), "{out}");
    assert!(
        !out.contains('\u{202e}') && !out.contains('\u{200b}') && !out.contains('\u{1b}'),
        "{out:?}"
    );
}

#[test]
fn a_ring_too_small_for_one_event_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(
        dir.path(),
        "ring.toml",
        "[source]\ntype = \"unix\"\nsnaplen = 1048576\nring_size = 1048576\n",
    );
    let o = spf_output(&["validate", "-c", cfg.to_str().unwrap()]);
    assert_refused(
        &o,
        &[
            "ring.toml:4:13: source.ring_size",
            "cannot hold one event of snaplen = 1048576",
            "at least 2097152",
        ],
    );
}
