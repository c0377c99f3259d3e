//! The real `spf run` binary capturing live, as users run it.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::capture::bpf_ready;
use crate::util::{parse_ndjson, read_ndjson, spf, test_bytes};

/// A running `spf run` whose NDJSON output goes to a file.
pub struct LiveSpf {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

/// Sets the calling thread's name, which is what the `comm` filter matches.
pub fn name_thread(name: &str) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME with a NUL-terminated name of at most 15 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
}

/// How a test shows that spf captures: traffic spf's filter keeps.
pub enum Canary<'a> {
    /// A thread with this name writes through a socketpair (for `--comm`).
    Thread(&'a str),
    /// A client writes to a listener bound at this path (for `--path`).
    Socket(&'a Path),
    /// As `Socket`, from a process moved into this cgroup directory first (for
    /// `--cgroup`).
    Contained(&'a Path, &'a Path),
}

impl LiveSpf {
    /// Starts `spf run --format ndjson --quiet ARGS` (the args must select
    /// threads named `comm`, e.g. `--comm COMM`) and returns once it captures:
    /// a thread named `comm` writes a canary through a socketpair until the
    /// output shows it. None (after saying why) where BPF cannot run and the
    /// environment does not require it.
    pub fn start(name: &str, dir: &Path, comm: &str, args: &[&str]) -> Option<LiveSpf> {
        Self::start_with(name, dir, args, Canary::Thread(comm))
    }

    /// As [`LiveSpf::start`], with the canary of choice.
    pub fn start_with(
        name: &str,
        dir: &Path,
        args: &[&str],
        canary: Canary<'_>,
    ) -> Option<LiveSpf> {
        if !bpf_ready(name) {
            return None;
        }
        let out = dir.join("live.ndjson");
        let err = dir.join("live.err");
        let child = spf()
            .args(["run", "--format", "ndjson", "--quiet"])
            .args(crate::capture::hook_args())
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning spf");
        let mut live = LiveSpf { child, out, err };
        let (comm, listener) = match canary {
            Canary::Thread(c) => (Some(c.to_string()), None),
            Canary::Socket(p) => (
                None,
                Some(std::os::unix::net::UnixListener::bind(p).unwrap()),
            ),
            Canary::Contained(sock, cgroup) => {
                return Self::wait_for_contained_canary(name, live, sock, cgroup);
            }
        };
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let canary = std::thread::spawn(move || {
            let (mut a, b) = match (&comm, &listener) {
                (Some(c), _) => {
                    name_thread(c);
                    UnixStream::pair().unwrap()
                }
                (None, Some(l)) => {
                    let a = UnixStream::connect(l.local_addr().unwrap().as_pathname().unwrap())
                        .unwrap();
                    let (b, _) = l.accept().unwrap();
                    (a, b)
                }
                (None, None) => unreachable!("one canary or the other"),
            };
            // The other end is read, so that the canary's writes never fill
            // the socket's buffer and block: under an emulated CPU, loading
            // the probe takes longer than that buffer lasts.
            let drain = std::thread::spawn(move || {
                let mut b = b;
                let mut sink = [0u8; 4096];
                while matches!(b.read(&mut sink), Ok(n) if n > 0) {}
            });
            // Until told the canary was seen (or the test gave up).
            while rx.try_recv() == Err(std::sync::mpsc::TryRecvError::Empty) {
                a.write_all(b"spf-canary").unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            // The end of the stream ends the drain.
            drop(a);
            drain.join().unwrap();
        });
        // Loading the probe is most of this: seconds on a real machine, a
        // minute or more under an emulated CPU (the kernel matrix's VM).
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let text = std::fs::read_to_string(&live.out).unwrap_or_default();
            if text.contains("spf-canary") {
                break;
            }
            if let Ok(Some(status)) = live.child.try_wait() {
                let _ = tx.send(());
                panic!("{name}: spf exited with {status}: {}", live.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "{name}: spf captured nothing within 180 s: {}",
                live.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = tx.send(());
        canary.join().unwrap();
        Some(live)
    }

    /// A python canary moved into `cgroup` writes on a socketpair until spf's
    /// output shows it.
    fn wait_for_contained_canary(
        name: &str,
        mut live: LiveSpf,
        sock: &Path,
        cgroup: &Path,
    ) -> Option<LiveSpf> {
        let stop = sock.with_extension("stop");
        let script = format!(
            "import os, socket, time\nsys_stop = {stop:?}\na, b = socket.socketpair()\n\
             while not os.path.exists(sys_stop):\n    a.sendall(b'spf-canary'); b.recv(100); time.sleep(0.02)\n",
            stop = stop.display().to_string()
        );
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .spawn()
            .expect("starting the canary");
        std::fs::write(cgroup.join("cgroup.procs"), child.id().to_string()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let seen = loop {
            if std::fs::read_to_string(&live.out)
                .unwrap_or_default()
                .contains("spf-canary")
            {
                break true;
            }
            if let Ok(Some(_)) = live.child.try_wait() {
                break false;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        std::fs::write(&stop, b"").unwrap();
        child.wait().unwrap();
        assert!(seen, "{name}: spf captured nothing: {}", live.stderr());
        Some(live)
    }

    /// The pid of the running spf.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Stops spf as Ctrl-C would and returns every record it wrote (the
    /// canary's included), with its stderr.
    pub fn stop(mut self) -> (Vec<Value>, String) {
        // SAFETY: signalling the child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "spf did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(10));
        };
        let err = self.stderr();
        assert!(status.success(), "spf failed ({status}): {err}");
        (read_ndjson(&self.out), err)
    }
}

/// These tests move socket traffic in this process (a flood, among others):
/// not while another test captures this process's own sockets, whose ring
/// it would fill.
fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    crate::capture::lock()
}

/// Reads `child`'s stderr line by line on a thread, and returns once spf has
/// said `spf: capturing (`: the lines after it, and the reading thread.
fn wait_until_capturing(
    child: &mut Child,
) -> (
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    let (rx, reader) = crate::util::stderr_lines(child);
    wait_for_line(&rx, "spf: capturing (");
    (rx, reader)
}

/// Waits for a stderr line from `rx` that starts with `prefix`, passing over
/// the others. The wait has a deadline, which is why the reading is on a
/// thread.
fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.starts_with(prefix) => return,
            Ok(_) => {}
            Err(e) => panic!("no `{prefix}` line: {e}"),
        }
    }
}

/// Starts `spf run` capturing socket `sock` as raw NDJSON records into
/// `stdout`, its stderr piped for [`wait_until_capturing`].
fn capture_raw(sock: &Path, stdout: Stdio) -> Child {
    spf()
        .args(["run", "--format", "ndjson", "--decoder", "raw", "--path"])
        .arg(sock)
        .args(crate::capture::hook_args())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawning spf")
}

/// Starts `spf run` capturing socket `sock` raw into the capture file `out`
/// (`--output`), its stderr piped for [`wait_until_capturing`].
fn capture_to_file(sock: &Path, out: &Path) -> Child {
    spf()
        .args(["run", "--decoder", "raw", "--path"])
        .arg(sock)
        .args(crate::capture::hook_args())
        .arg("--output")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawning spf")
}

/// Interrupts `child` as Ctrl-C does and waits for it: its exit status and
/// the stderr lines `wait_until_capturing` left.
fn interrupt(
    child: &mut Child,
    rx: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
) -> (std::process::ExitStatus, Vec<String>) {
    interrupt_pid(child.id(), child, rx, reader)
}

/// [`interrupt`] where spf is process `pid` under `child` (a wrapper such as
/// `unshare --fork`): the signal goes to spf, the wait to `child`.
fn interrupt_pid(
    pid: u32,
    child: &mut Child,
    rx: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
) -> (std::process::ExitStatus, Vec<String>) {
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let st = crate::util::wait_stopped(child);
    let rest: Vec<String> = rx.iter().collect();
    reader.join().unwrap();
    (st, rest)
}

/// The bytes of the records that say `dir: send`, in order.
fn sent_bytes(records: &[Value]) -> Vec<u8> {
    use base64::Engine as _;
    records
        .iter()
        .filter(|r| r["dir"] == "send")
        .flat_map(|r| {
            base64::engine::general_purpose::STANDARD
                .decode(r["data_b64"].as_str().unwrap_or(""))
                .unwrap()
        })
        .collect()
}

#[test]
fn the_capturing_line_means_bytes_are_captured_and_ctrl_c_is_handled() {
    let _g = exclusive();
    let name = "the_capturing_line_means_bytes_are_captured_and_ctrl_c_is_handled";
    if !bpf_ready(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ready.sock");
    // One write, no canary loop: the line promises it is captured.
    let msg = b"written right after the capturing line";
    let (st, rest, records) = one_write_captured(&sock, &sock, msg);
    // At once: Ctrl-C is handled (a flush and exit 0, not death by SIGINT).
    assert!(st.success(), "{st}: {rest:?}");
    assert!(rest.iter().any(|l| l.contains(" events, ")), "{rest:?}");
    // Only the client wrote: every byte sent is the message.
    let sent = sent_bytes(&records);
    assert_eq!(sent, msg);
}

/// A server bound at `bind`, spf started with `--path filter`; once it
/// captures, a client writes `msg` once, and spf is interrupted: its exit
/// status, its last stderr lines and its records.
fn one_write_captured(
    bind: &Path,
    filter: &Path,
    msg: &[u8],
) -> (std::process::ExitStatus, Vec<String>, Vec<Value>) {
    let listener = std::os::unix::net::UnixListener::bind(bind).unwrap();
    let out = bind.with_extension("ndjson");
    let mut child = capture_raw(filter, std::fs::File::create(&out).unwrap().into());
    let (rx, reader) = wait_until_capturing(&mut child);
    let mut a = UnixStream::connect(bind).unwrap();
    let (mut b, _) = listener.accept().unwrap();
    a.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    b.read_exact(&mut got).unwrap();
    drop((a, b));
    let (st, rest) = interrupt(&mut child, rx, reader);
    (st, rest, read_ndjson(&out))
}

/// A server binds through the real directory and spf is told the name
/// through a linked one (as `/var/run/docker.sock` names a socket bound as
/// `/run/docker.sock`): its bytes are captured.
#[test]
fn a_path_through_a_linked_directory_captures_the_real_socket() {
    let _g = exclusive();
    let name = "a_path_through_a_linked_directory_captures_the_real_socket";
    if !bpf_ready(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let msg = b"bound through the real directory";
    let (st, rest, records) = one_write_captured(&real.join("s.sock"), &link.join("s.sock"), msg);
    assert!(st.success(), "{st}: {rest:?}");
    assert_eq!(sent_bytes(&records), msg);
}

/// `timeout -s INT` signals spf and then its process group: the second
/// signal is the same interrupt, not a second Ctrl-C, and everything is still
/// flushed. spf is kept from finishing by its output, a pipe not yet read.
#[test]
fn an_interrupt_delivered_twice_still_flushes_everything() {
    let _g = exclusive();
    let name = "an_interrupt_delivered_twice_still_flushes_everything";
    if !bpf_ready(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("twice.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut child = capture_raw(&sock, Stdio::piped());
    let (rx, reader) = wait_until_capturing(&mut child);
    // Several times what a pipe holds, once encoded.
    let msg = test_bytes(256 * 1024, 3);
    let mut a = UnixStream::connect(&sock).unwrap();
    let (mut b, _) = listener.accept().unwrap();
    let writer = {
        let msg = msg.clone();
        // Writes within the default snaplen.
        std::thread::spawn(move || msg.chunks(16 * 1024).for_each(|c| a.write_all(c).unwrap()))
    };
    let mut got = vec![0u8; msg.len()];
    b.read_exact(&mut got).unwrap();
    writer.join().unwrap();
    drop(b);
    let pid = child.id() as i32;
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(pid, libc::SIGINT) };
    wait_for_line(&rx, "spf: stopping");
    // SAFETY: as above; spf cannot have exited, its output is not read yet.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let mut stdout = child.stdout.take().unwrap();
    let mut out = Vec::new();
    stdout.read_to_end(&mut out).unwrap();
    let st = child.wait().unwrap();
    let rest: Vec<String> = rx.iter().collect();
    reader.join().unwrap();
    assert!(st.success(), "{st}: {rest:?}");
    assert!(rest.iter().any(|l| l.contains(" events, ")), "{rest:?}");
    let out = String::from_utf8(out).unwrap();
    let got = sent_bytes(&parse_ndjson(&out, "spf's stdout"));
    assert!(
        got == msg,
        "{} bytes captured of {}: {rest:?}",
        got.len(),
        msg.len()
    );
}

/// A capture holds the end of a connection as well as its bytes, in either
/// format, so that a replay ends it as the live run did (decoders let go of
/// it, pcapng writes its FIN, plugins' `closed` runs).
#[test]
fn a_capture_keeps_the_end_of_a_connection_through_replays() {
    let _g = exclusive();
    let name = "a_capture_keeps_the_end_of_a_connection_through_replays";
    if !bpf_ready(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("end.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let live = dir.path().join("live.ndjson");
    let mut child = capture_to_file(&sock, &live);
    let (rx, reader) = wait_until_capturing(&mut child);
    let mut a = UnixStream::connect(&sock).unwrap();
    let (mut b, _) = listener.accept().unwrap();
    a.write_all(b"last words").unwrap();
    drop(a);
    // The server reads to the end: the read of nothing is the end spf sees.
    let mut got = Vec::new();
    b.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"last words");
    let (st, rest) = interrupt(&mut child, rx, reader);
    assert!(st.success(), "{st}: {rest:?}");

    // The live capture, then a binary copy of it, then an NDJSON copy of that.
    let binary = dir.path().join("copy.spfcap");
    let again = dir.path().join("again.ndjson");
    for (from, to) in [(&live, &binary), (&binary, &again)] {
        let o = spf()
            .args(["run", "-q", "--decoder", "raw", "--replay"])
            .arg(from)
            .arg("--output")
            .arg(to)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for file in [&live, &again] {
        let records = parse_ndjson(&std::fs::read_to_string(file).unwrap(), "a capture");
        let conns: std::collections::BTreeSet<u64> = records
            .iter()
            .filter(|r| r["decoder"] == "raw")
            .filter_map(|r| r["conn"].as_u64())
            .collect();
        let ends: Vec<&Value> = records.iter().filter(|r| r["closed"] == true).collect();
        assert!(!ends.is_empty(), "no end in {}", file.display());
        for e in ends {
            assert!(
                conns.contains(&e["conn"].as_u64().unwrap()),
                "{e}: {conns:?}"
            );
        }
    }
}

/// Big payloads go into a binary capture straight from their buffers
/// (`writev`), after spf has dropped its privileges and installed its syscall
/// filter: every byte must still reach the file.
#[test]
fn a_binary_capture_holds_big_writes_made_after_the_privilege_drop() {
    let _g = exclusive();
    let name = "a_binary_capture_holds_big_writes_made_after_the_privilege_drop";
    if !bpf_ready(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("big.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let cap = dir.path().join("big.spfcap");
    let mut child = capture_to_file(&sock, &cap);
    let (rx, reader) = wait_until_capturing(&mut child);
    // Sizes on both sides of what the sink copies (none above the default
    // snaplen), several megabytes in all.
    let msg: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let sizes = [60_000, 10, 40_000, 4096, 65_536];
    let mut a = UnixStream::connect(&sock).unwrap();
    let (mut b, _) = listener.accept().unwrap();
    let total = msg.len();
    let recv = std::thread::spawn(move || {
        let mut got = vec![0u8; total];
        b.read_exact(&mut got).unwrap();
        got
    });
    let mut at = 0;
    for n in sizes.iter().cycle() {
        let end = (at + n).min(msg.len());
        a.write_all(&msg[at..end]).unwrap();
        at = end;
        if at == msg.len() {
            break;
        }
    }
    assert_eq!(recv.join().unwrap(), msg);
    drop(a);
    let (st, rest) = interrupt(&mut child, rx, reader);
    assert!(st.success(), "{st}: {rest:?}");
    let o = spf()
        .args([
            "run",
            "-q",
            "--decoder",
            "raw",
            "--format",
            "ndjson",
            "--replay",
        ])
        .arg(&cap)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Each byte once, from its sender: only the client wrote.
    let sent = sent_bytes(&parse_ndjson(
        &String::from_utf8(o.stdout).unwrap(),
        "the replay",
    ));
    assert!(
        sent == msg,
        "{} bytes of {} came back",
        sent.len(),
        msg.len()
    );
}

#[test]
fn ctrl_c_ends_a_capture_that_a_flood_outpaces() {
    let _g = exclusive();
    let name = "ctrl_c_ends_a_capture_that_a_flood_outpaces";
    if !bpf_ready(name) {
        return;
    }
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("flood.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let out = dir.path().join("flood.ndjson");
    // A small ring that a flood keeps full: the reader never finds it
    // empty, which is where a drain that takes until empty never ends.
    let cfg = crate::util::write_file(
        dir.path(),
        "flood.toml",
        format!(
            "[source]\ntype = \"unix\"\npath = \"{}\"\nring_size = 1048576\n\
             [decoder]\ntype = \"raw\"\n[[sink]]\ntype = \"ndjson\"\npath = \"{}\"\n",
            sock.display(),
            out.display()
        ),
    );
    let mut child = spf()
        .args(["run", "-c"])
        .arg(&cfg)
        .args(crate::capture::hook_args())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawning spf");
    let (rx, reader) = wait_until_capturing(&mut child);
    // The flood: 64 KiB writes, read as fast as they come, until told.
    let flooding = Arc::new(AtomicBool::new(true));
    let mut a = UnixStream::connect(&sock).unwrap();
    let (mut b, _) = listener.accept().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while matches!(b.read(&mut buf), Ok(n) if n > 0) {}
    });
    let on = Arc::clone(&flooding);
    let flood = std::thread::spawn(move || {
        let chunk = vec![7u8; 64 << 10];
        while on.load(Ordering::Relaxed) {
            if a.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    // Under way: spf has written part of it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&out).map_or(0, |m| m.len()) < 4 << 20 {
        assert!(Instant::now() < deadline, "nothing of the flood written");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Interrupted while the flood goes on: spf ends, with its summary.
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    flooding.store(false, Ordering::Relaxed);
    flood.join().unwrap();
    drain.join().unwrap();
    let rest: Vec<String> = rx.iter().collect();
    reader.join().unwrap();
    let st = st.unwrap_or_else(|| panic!("spf did not end within 60 s of SIGINT: {rest:?}"));
    assert!(st.success(), "{st}: {rest:?}");
    assert!(rest.iter().any(|l| l.contains(" events, ")), "{rest:?}");
}

/// spf in a pid namespace of its own still leaves its own traffic out: the
/// probe sees the kernel's pids, spf knows its namespace's, and the probe asks
/// the namespace. spf's own traffic here is the byte its main thread (`spf`)
/// sends through a socket pair at start with the syscall hook (to teach the
/// probe what a socket file is), captured with spf's pid were the exclusion
/// to miss it.
#[test]
fn spf_in_a_pid_namespace_of_its_own_leaves_its_own_traffic_out() {
    let _g = exclusive();
    let name = "spf_in_a_pid_namespace_of_its_own_leaves_its_own_traffic_out";
    if !bpf_ready(name) {
        return;
    }
    let comm = "spf-own-ns";
    name_thread(comm);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ns.ndjson");
    let mut child = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", env!("CARGO_BIN_EXE_spf")])
        .args([
            "run",
            "--format",
            "ndjson",
            "--decoder",
            "raw",
            "--hook",
            "syscall",
        ])
        .args(["--comm", "spf", "--comm", comm])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawning unshare");
    // Should the test fail half-way, spf must not go on capturing.
    struct Kill(Option<u32>);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                // SAFETY: killing the unshare this test started (and with
                // --kill-child, spf under it).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
    let mut guard = Kill(Some(child.id()));
    let (rx, reader) = wait_until_capturing(&mut child);
    // unshare forked spf into the new namespace: its pid as the kernel
    // counts it is unshare's one child.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
        .expect("reading unshare's children");
    let spf_pid: u32 = children.trim().parse().expect("one child");
    let msg = test_bytes(300, 9);
    let (mut a, mut b) = UnixStream::pair().unwrap();
    a.write_all(&msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    b.read_exact(&mut got).unwrap();
    let (st, rest) = interrupt_pid(spf_pid, &mut child, rx, reader);
    guard.0 = None;
    assert!(st.success(), "{st}: {rest:?}");
    // Nothing lost: a dropped event could have been spf's own.
    assert!(rest.iter().any(|l| l.contains("; dropped 0;")), "{rest:?}");
    let records = read_ndjson(&out);
    let ours: Vec<Value> = records
        .iter()
        .filter(|r| r["comm"] == comm)
        .cloned()
        .collect();
    assert_eq!(sent_bytes(&ours), msg, "this test's bytes");
    let of_spf: Vec<&Value> = records.iter().filter(|r| r["pid"] == spf_pid).collect();
    assert!(of_spf.is_empty(), "spf captured itself: {of_spf:?}");
}

/// A datagram server read by one thread while another sends to it: three
/// datagrams from a connected socket, four with sendto from an unbound one.
/// Each shows once, from its sender, in the order sent.
#[test]
fn datagrams_of_connected_and_unbound_senders_show_once_each() {
    use std::os::unix::net::UnixDatagram;
    let _g = exclusive();
    let name = "datagrams_of_connected_and_unbound_senders_show_once_each";
    let dir = tempfile::tempdir().unwrap();
    let Some(live) = LiveSpf::start(
        name,
        dir.path(),
        "spf-dgram",
        &["--comm", "spf-dgram", "--decoder", "raw"],
    ) else {
        return;
    };
    let path = dir.path().join("dgram.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    let sizes = [11usize, 11, 11, 1000, 2000, 3000, 4000];
    let reader = std::thread::spawn(move || {
        name_thread("spf-dgram");
        let mut buf = vec![0u8; 8192];
        for want in sizes {
            assert_eq!(rx.recv(&mut buf).unwrap(), want);
        }
    });
    let sender_path = path.clone();
    std::thread::spawn(move || {
        name_thread("spf-dgram");
        let connected = UnixDatagram::unbound().unwrap();
        connected.connect(&sender_path).unwrap();
        let unbound = UnixDatagram::unbound().unwrap();
        for (i, &n) in sizes.iter().enumerate() {
            let msg = test_bytes(n, i as u64);
            if i < 3 {
                connected.send(&msg).unwrap();
            } else {
                unbound.send_to(&msg, &sender_path).unwrap();
            }
        }
    })
    .join()
    .unwrap();
    reader.join().unwrap();
    let (records, err) = live.stop();
    let me = std::process::id();
    let got: Vec<(u64, u64)> = records
        .iter()
        .filter(|r| r["sock"] == "dgram")
        .map(|r| (r["len"].as_u64().unwrap(), r["pid"].as_u64().unwrap()))
        .collect();
    let want: Vec<(u64, u64)> = sizes.iter().map(|&n| (n as u64, u64::from(me))).collect();
    assert_eq!(got, want, "{err}");
    let dgrams: Vec<Value> = records
        .into_iter()
        .filter(|r| r["sock"] == "dgram")
        .collect();
    let sent: Vec<u8> = (0..sizes.len())
        .flat_map(|i| test_bytes(sizes[i], i as u64))
        .collect();
    assert_eq!(sent_bytes(&dgrams), sent);
}
