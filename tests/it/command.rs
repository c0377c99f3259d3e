//! `spf run -- COMMAND`: one command and what it starts, nothing else.

use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use crate::capture::{bpf_ready, lock};
use crate::util::{spf, stderr_text};

/// A Python client that sends its first argument to the server socket named by
/// its second and reads the echo.
const CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[2])
s.sendall(sys.argv[1].encode())
s.shutdown(socket.SHUT_WR)
while s.recv(4096):
    pass
"#;

/// An echo server in this process for `n` connections at `dir/echo.sock`,
/// and the client script in `dir`: the socket, the script, and the server
/// thread, which returns what each connection sent.
fn echo_server(
    dir: &std::path::Path,
    n: usize,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    std::thread::JoinHandle<Vec<String>>,
) {
    let path = dir.join("echo.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..n {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(&got).unwrap();
            seen.push(String::from_utf8(got).unwrap());
        }
        seen
    });
    let script = dir.join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    (path, script, server)
}

#[test]
fn a_command_and_its_children_are_captured_and_nothing_else() {
    let _g = lock();
    if !bpf_ready("a_command_and_its_children_are_captured") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // An echo server in this process: not part of the command.
    let (path, script, server) = echo_server(dir.path(), 3);
    // A shell that starts two clients, one after the other, and fails with 3;
    // what it prints goes to spf's stderr, not among the records.
    let sh = format!(
        "echo the-command-speaks; python3 {s} first-child {p} && python3 {s} second-child {p}; exit 3",
        s = script.display(),
        p = path.display()
    );
    let mut child = spf()
        .args([
            "run",
            "--format",
            "ndjson",
            "--quiet",
            "--decoder",
            "raw",
            "--",
        ])
        .args(["sh", "-c", &sh])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Meanwhile a client outside the command talks to the same server.
    let mut other = UnixStream::connect(&path).unwrap();
    other.write_all(b"not-the-command").unwrap();
    other.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echo = Vec::new();
    other.read_to_end(&mut echo).unwrap();
    assert_eq!(echo, b"not-the-command");

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "spf did not end with its command"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let mut seen = server.join().unwrap();
    seen.sort();
    assert_eq!(seen, ["first-child", "not-the-command", "second-child"]);
    assert_eq!(
        status.code(),
        Some(3),
        "spf exits with the command's status: {err}"
    );

    assert!(err.contains("the-command-speaks"), "{err}");
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let sent: Vec<String> = records
        .iter()
        .filter(|r| r["decoder"] == "raw")
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    // Each child's request and the server's echo of it (seen by the child's
    // receive), each once; nothing of the other client's conversation.
    for want in ["first-child", "second-child"] {
        assert_eq!(
            sent.iter().filter(|t| *t == want).count(),
            2,
            "{want} once each way in {sent:?}"
        );
    }
    assert!(!out.contains("not-the-command"), "{out}");
    // The server (this process) is not followed: its echoes appear only as
    // the children received them. It made no syscall spf saw, and is named
    // all the same, by the name /proc gives its pid.
    let me = std::process::id();
    let my_name = std::fs::read_to_string(format!("/proc/{me}/comm")).unwrap();
    let my_name = my_name.trim_end();
    let mine: Vec<_> = records.iter().filter(|r| r["pid"] == me).collect();
    assert!(!mine.is_empty(), "{out}");
    for r in mine {
        assert_eq!(r["via"], "recv", "{r}");
        assert_eq!(r["comm"], my_name, "{r}");
    }
    let to_me: Vec<_> = records.iter().filter(|r| r["peer_pid"] == me).collect();
    assert!(!to_me.is_empty(), "{out}");
    for r in to_me {
        assert_eq!(r["peer_comm"], my_name, "{r}");
    }
}

#[test]
fn a_command_that_cannot_start_is_reported() {
    // Found missing before anything is attached: no root needed to say so.
    for cmd in ["/no/such/program", "no-such-command-anywhere"] {
        let o = spf().args(["run", "--", cmd]).output().unwrap();
        assert_eq!(o.status.code(), Some(127), "{}", stderr_text(&o));
        let err = stderr_text(&o);
        assert!(
            err.contains(&format!("cannot run `{cmd}`: no such file or command")),
            "{err}"
        );
        assert!(!err.contains("capturing"), "{err}");
    }
}

/// `--count` ends the capture before the command ends: spf waits for it and
/// exits with its status, rather than leaving it behind.
#[test]
fn a_command_outliving_the_capture_is_waited_for() {
    let _g = lock();
    if !bpf_ready("a_command_outliving_the_capture_is_waited_for") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, script, server) = echo_server(dir.path(), 1);
    // After its client the command waits for this test, on a FIFO.
    let fifo = dir.path().join("go.fifo");
    // Open to all: the command may run as the user who ran sudo.
    crate::util::mkfifo(&fifo, 0o666);
    // Should the test fail part-way, the command is let go all the same.
    struct Release(std::path::PathBuf);
    impl Release {
        /// Opens and closes the FIFO's writing end: done once its reader
        /// has it open (the open fails until then).
        fn go(&self) -> bool {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.0)
                .is_ok()
        }
    }
    impl Drop for Release {
        fn drop(&mut self) {
            self.go();
        }
    }
    let release = Release(fifo.clone());
    let sh = format!(
        "python3 {s} counted {p}; cat {f} >/dev/null; exit 5",
        s = script.display(),
        p = path.display(),
        f = fifo.display()
    );
    let mut child = spf()
        .args(["run", "--format", "ndjson", "--decoder", "raw"])
        .args(["--count", "1", "--", "sh", "-c", &sh])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (rx, reader) = crate::util::stderr_lines(&mut child);
    // The one record was written, the capture is over, the command still
    // waits: spf says it waits for it.
    let mut err = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l == "spf: capture ended; waiting for the command to exit" => break,
            Ok(l) => err.push(l),
            Err(e) => panic!("spf did not wait for its command ({e}): {err:?}"),
        }
    }
    server.join().unwrap();
    // Let the command end: spf ends with it, with its status.
    crate::util::wait_for(&mut child, "the command to open its FIFO", || {
        release.go().then_some(())
    });
    let status = crate::util::wait_stopped(&mut child);
    err.extend(rx.iter());
    reader.join().unwrap();
    assert_eq!(status.code(), Some(5), "{err:?}");
}
