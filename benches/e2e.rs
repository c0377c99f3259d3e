//! End to end, as users run spf: the real `spf` binary capturing live (probe,
//! connection view, raw decoder, a real sink) while a workload runs, compared
//! with the same workload without spf in alternating slices.
//!
//!     sudo cargo bench --bench e2e
//!
//! Each pair is one slice without spf and one with it: spf is started before
//! the traced slice (the slice begins once spf says `spf: capturing`) and
//! stopped after it (Ctrl-C: drain and flush). A pair's ratio is the traced
//! slice's rate over the mean of the untraced slices before and after it. The
//! report gives the median and quartiles of the ratios, the events spf
//! reported dropped, and whether the sink's output held every byte the
//! workload moved, in order (checked byte for byte against the workload's
//! deterministic data).
//!
//! Workloads (all by default; name some as arguments to pick):
//! * `pingpong`: 64-byte request and reply over a named stream socket, two
//!   threads, both ends captured;
//! * `bulk`: 64 KiB writes one way over a named stream socket, the reader taking
//!   16 KiB at a time, both ends captured;
//! * `devnull`: 64-byte writes to /dev/null while spf captures every Unix socket
//!   (the cost for processes that never touch one); in the same run, pairs with
//!   an empty program on the syscall exit hook instead of spf give the floor
//!   that any probe on that hook has.
//!
//! * `ceiling` (only when named): the lossless-capture ceiling, a sender paced
//!   at rising rates (64 KiB and 64-byte messages) into an ndjson file and into
//!   the binary capture (or the one SPF_E2E_SINK names), up to the first rate
//!   that loses anything; SPF_E2E_RATES=R1,R2,... tries those MB/s of 64 KiB
//!   messages instead.
//!
//! Settings: SPF_E2E_PAIRS (10), SPF_E2E_SECS (1.0), SPF_E2E_SINK: `file` (an
//! ndjson file sink, the default), `capture` (the binary capture, a `.spfcap`
//! file) or `null` (NDJSON to stdout, redirected to /dev/null), SPF_E2E_HOOK:
//! the probe's hooks, `auto` (the default), `kernel` or `syscall` (`[source]
//! hook`), SPF_E2E_VIEW: `connection` (the default)
//! or `syscalls`, SPF_E2E_NICE: run spf under `nice -n N`, SPF_E2E_DIR: where
//! spf's output files go (the temporary directory by default; /dev/shm leaves
//! the disk out), SPF_E2E_SPIN=1: keep every CPU busy with a `nice 19` spinner
//! through all slices, traced and untraced (on a VM, a transfer between two
//! CPUs that go idle runs at the speed of the hypervisor's wakeups: 3.5-4.4
//! GB/s here, 11-12 GB/s with the spinner; spf running keeps the CPUs awake
//! as the spinner does, and its slices then look faster than the untraced).
//! Needs root.
//!
//! In the kernel matrix's VM (Debian 12's 6.1, which allows kernel hooks),
//! with the bench built on the host first:
//!
//!     cargo bench --bench e2e --no-run
//!     scripts/kernel-test --run 'for h in syscall kernel; do SPF_E2E_HOOK=$h \
//!         target/release/deps/e2e-* pingpong devnull; done'

use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spf_pipeline::ndjson::{Interner, Parsed, parse_line};
use spf_pipeline::{Direction, SourceItem};

const CHUNK: usize = 64 << 10;
const MSG: usize = 64;
/// The number of the message that ends a ping-pong slice.
const END: u64 = u64::MAX;

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn inode(fd: i32) -> u64 {
    // SAFETY: fstat into a zeroed buffer on an open fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
    st.st_ino
}

/// The bytes of chunk `k` of a stream: its number, then a fixed pattern, so
/// that any byte's place in the stream can be checked.
fn fill(k: u64, buf: &mut [u8]) {
    buf[..8].copy_from_slice(&k.to_le_bytes());
    for (i, b) in buf[8..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
}

/// What one slice of a workload did.
#[derive(Debug, Default, Clone, Copy)]
struct Slice {
    /// Operations (round trips, writes) done.
    ops: u64,
    /// Bytes moved, and the number of the first chunk (or message) of the
    /// slice, per direction of the connection (client to server, back).
    bytes: [u64; 2],
    first: [u64; 2],
    secs: f64,
}

/// What spf is told to capture, and what its output is checked against.
trait Captured {
    fn name(&self) -> &'static str;
    /// spf's arguments to capture this workload.
    fn filter(&self) -> Vec<String>;
    /// The connection and its two sockets (client, server), if it has one.
    fn conn(&self) -> Option<(u64, u64, u64)>;
    /// Size of one unit of the deterministic data.
    fn unit(&self) -> usize;
}

/// A workload the alternating slices run.
trait Workload: Captured {
    /// Runs for about `secs` and leaves nothing in flight.
    fn slice(&mut self, secs: f64) -> Slice;
}

/// Pins the calling thread to one CPU, or lets it run on all again.
fn pin(cpu: Option<usize>) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        match cpu {
            Some(c) => libc::CPU_SET(c, &mut set),
            // Every CPU the machine has: the thread's own mask (which
            // available_parallelism reads) is the pinned one by now.
            None => {
                let n = libc::sysconf(libc::_SC_NPROCESSORS_CONF).max(1) as usize;
                for c in 0..n {
                    libc::CPU_SET(c, &mut set);
                }
            }
        }
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

/// A named stream socket with a client and a server end, each driven by a
/// thread of its own through a slice.
struct Pair {
    dir: tempfile::TempDir,
    client: UnixStream,
    server: UnixStream,
    next: [u64; 2],
}

impl Pair {
    fn new() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let client = UnixStream::connect(&path).unwrap();
        let (server, _) = listener.accept().unwrap();
        Pair {
            dir,
            client,
            server,
            next: [0, 0],
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("bench.sock")
    }

    fn ids(&self) -> (u64, u64, u64) {
        let (c, s) = (
            inode(self.client.as_raw_fd()),
            inode(self.server.as_raw_fd()),
        );
        (c.min(s), c, s)
    }
}

struct PingPong(Pair);

impl Captured for PingPong {
    fn name(&self) -> &'static str {
        "pingpong"
    }

    fn filter(&self) -> Vec<String> {
        vec!["--path".into(), self.0.path().display().to_string()]
    }

    fn conn(&self) -> Option<(u64, u64, u64)> {
        Some(self.0.ids())
    }

    fn unit(&self) -> usize {
        MSG
    }
}

impl Workload for PingPong {
    fn slice(&mut self, secs: f64) -> Slice {
        let p = &mut self.0;
        let first = p.next;
        let mut server = p.server.try_clone().unwrap();
        let k0 = first[1];
        // The server answers until the client says the slice is over.
        let answer = std::thread::spawn(move || {
            pin(Some(0));
            let mut req = [0u8; MSG];
            let mut resp = [0u8; MSG];
            let mut k = k0;
            loop {
                if server.read_exact(&mut req).is_err() {
                    break;
                }
                if req[8] == 0xff {
                    break;
                }
                fill(k, &mut resp);
                server.write_all(&resp).unwrap();
                k += 1;
            }
            k
        });
        // Both ends on one CPU: on a small VM, a wakeup across CPUs costs
        // tens of microseconds of the hypervisor's, which would make the
        // round trip measure the hypervisor rather than the socket (and
        // anything keeping the other CPU awake look like a speed-up). spf
        // runs wherever the scheduler puts it.
        pin(Some(0));
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(secs);
        let mut req = [0u8; MSG];
        let mut resp = [0u8; MSG];
        let mut k = first[0];
        while Instant::now() < deadline {
            for _ in 0..64 {
                fill(k, &mut req);
                p.client.write_all(&req).unwrap();
                p.client.read_exact(&mut resp).unwrap();
                k += 1;
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        // The end of the slice: a message the server does not answer (numbered
        // END, which the check passes over).
        let mut end = [0u8; MSG];
        fill(END, &mut end);
        end[8] = 0xff;
        p.client.write_all(&end).unwrap();
        let served = answer.join().unwrap();
        pin(None);
        let n = k - first[0];
        p.next = [k, served];
        Slice {
            ops: n,
            bytes: [n * MSG as u64, (served - first[1]) * MSG as u64],
            first,
            secs: elapsed,
        }
    }
}

struct Bulk(Pair);

impl Captured for Bulk {
    fn name(&self) -> &'static str {
        "bulk"
    }

    fn filter(&self) -> Vec<String> {
        vec!["--path".into(), self.0.path().display().to_string()]
    }

    fn conn(&self) -> Option<(u64, u64, u64)> {
        Some(self.0.ids())
    }

    fn unit(&self) -> usize {
        CHUNK
    }
}

impl Workload for Bulk {
    fn slice(&mut self, secs: f64) -> Slice {
        let p = &mut self.0;
        let first = p.next;
        let mut client = p.client.try_clone().unwrap();
        // The writer: 64 KiB writes until the slice's time is up.
        let k0 = first[0];
        let writer = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs_f64(secs);
            let mut chunk = vec![0u8; CHUNK];
            let mut k = k0;
            while Instant::now() < deadline {
                fill(k, &mut chunk);
                client.write_all(&chunk).unwrap();
                k += 1;
            }
            k
        });
        // The reader, 16 KiB at a time, until it has every byte written: a
        // read timeout lets it look whether the writer is done.
        let start = Instant::now();
        p.server
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut buf = vec![0u8; 16 << 10];
        let mut got = 0u64;
        let k = loop {
            if writer.is_finished() {
                let k = writer.join().unwrap();
                let total = (k - k0) * CHUNK as u64;
                while got < total {
                    let want = buf.len().min((total - got) as usize);
                    p.server.read_exact(&mut buf[..want]).unwrap();
                    got += want as u64;
                }
                break k;
            }
            match p.server.read(&mut buf) {
                Ok(n) => got += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("bulk read: {e}"),
            }
        };
        let elapsed = start.elapsed().as_secs_f64();
        p.next = [k, first[1]];
        Slice {
            ops: got,
            bytes: [got, 0],
            first,
            secs: elapsed,
        }
    }
}

struct DevNull(std::fs::File);

impl Captured for DevNull {
    fn name(&self) -> &'static str {
        "devnull"
    }

    fn filter(&self) -> Vec<String> {
        // Every Unix socket on the machine.
        Vec::new()
    }

    fn conn(&self) -> Option<(u64, u64, u64)> {
        None
    }

    fn unit(&self) -> usize {
        MSG
    }
}

impl Workload for DevNull {
    fn slice(&mut self, secs: f64) -> Slice {
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(secs);
        let buf = [7u8; MSG];
        let mut n = 0u64;
        while Instant::now() < deadline {
            for _ in 0..256 {
                self.0.write_all(&buf).unwrap();
            }
            n += 256;
        }
        Slice {
            ops: n,
            secs: start.elapsed().as_secs_f64(),
            ..Slice::default()
        }
    }
}

/// A running spf.
struct Spf {
    child: Child,
    out: Option<PathBuf>,
    err: PathBuf,
}

/// The spf binary, under `nice -n SPF_E2E_NICE` when that is set (`nice`
/// execs spf: the child's pid is spf's).
fn spf_command() -> Command {
    match std::env::var("SPF_E2E_NICE") {
        Ok(n) => {
            let mut c = Command::new("nice");
            c.args(["-n", &n, env!("CARGO_BIN_EXE_spf")]);
            c
        }
        Err(_) => Command::new(env!("CARGO_BIN_EXE_spf")),
    }
}

fn start_spf(filter: &[String], sink: &str, hook: &str, dir: &Path) -> Spf {
    let err = dir.join("spf.err");
    let mut cmd = spf_command();
    let view = std::env::var("SPF_E2E_VIEW").unwrap_or_else(|_| "connection".into());
    cmd.arg("run")
        .args(filter)
        .args(["--decoder", "raw", "--hook", hook, "--view", &view]);
    let out = if sink == "file" || sink == "capture" {
        let cfg = dir.join("e2e.toml");
        let (kind, out) = if sink == "file" {
            ("ndjson", dir.join("out.ndjson"))
        } else {
            ("capture", dir.join("out.spfcap"))
        };
        let _ = std::fs::remove_file(&out);
        let mut toml = format!("[source]\ntype = \"unix\"\nhook = {hook:?}\nview = {view:?}\n");
        let mut args = filter.iter();
        while let Some(a) = args.next() {
            if a == "--path" {
                toml += &format!("path = {:?}\n", args.next().unwrap());
            }
        }
        toml += &format!(
            "[decoder]\ntype = \"raw\"\n[[sink]]\ntype = {kind:?}\npath = {:?}\n",
            out.display().to_string()
        );
        std::fs::write(&cfg, toml).unwrap();
        cmd = spf_command();
        cmd.args(["run", "-c"]).arg(&cfg);
        cmd.stdout(Stdio::null());
        Some(out)
    } else {
        cmd.args(["--format", "ndjson"]).stdout(Stdio::null());
        None
    };
    let child = cmd
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawn spf");
    let spf = Spf { child, out, err };
    // Capturing once spf says so (`spf: capturing`), as a user would wait:
    // probe attached, Ctrl-C handled, the reader about to start.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&spf.err)
        .unwrap_or_default()
        .contains("spf: capturing (")
    {
        assert!(
            Instant::now() < deadline,
            "spf did not start capturing within 60 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    spf
}

/// Stops spf as Ctrl-C does; returns the events it reported dropped, the
/// hooks its summary says captured, and its output.
fn stop_spf(mut spf: Spf) -> (u64, String, Option<PathBuf>) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(spf.child.id() as i32, libc::SIGINT) };
    let status = spf.child.wait().unwrap();
    let err = std::fs::read_to_string(&spf.err).unwrap_or_default();
    assert!(status.success(), "spf failed: {err}");
    let dropped = err
        .rsplit("dropped ")
        .next()
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let capture = err
        .rsplit("capture: ")
        .next()
        .filter(|_| err.contains("capture: "))
        .map(|c| c.trim().to_string())
        .unwrap_or_default();
    (dropped, capture, spf.out)
}

/// The byte at `offset` of a stream whose first unit is number `first`.
fn expected_byte(unit: usize, first: u64, offset: u64) -> u8 {
    let k = first + offset / unit as u64;
    let i = (offset % unit as u64) as usize;
    if i < 8 {
        k.to_le_bytes()[i]
    } else {
        ((i - 8) as u8).wrapping_mul(31).wrapping_add(7)
    }
}

/// Checks the sink's output against what the workload moved in the traced
/// slice: per direction, the bytes of its connection from the sender's side,
/// in order, each once, compared byte for byte; gaps the output declares
/// (events spf could not capture) are counted, not compared. A binary
/// capture is checked through its NDJSON twin (`spf run --replay`), made
/// outside the measured time.
fn check(out: &Path, w: &dyn Captured, s: &Slice, dropped: u64) -> String {
    let Some((conn, client, server)) = w.conn() else {
        return "-".into();
    };
    let twin;
    let out = if out.extension().is_some_and(|e| e == "spfcap") {
        twin = out.with_extension("twin.ndjson");
        let _ = std::fs::remove_file(&twin);
        let st = Command::new(env!("CARGO_BIN_EXE_spf"))
            .args(["run", "-q", "--decoder", "raw", "--replay"])
            .arg(out)
            .arg("--output")
            .arg(&twin)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "replaying the capture failed");
        twin.as_path()
    } else {
        out
    };
    let f = std::fs::File::open(out).unwrap();
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut interner = Interner::default();
    let unit = w.unit();
    let mut offset = [0u64; 2];
    let mut missing = [0u64; 2];
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_until(&mut r, b'\n', &mut line).unwrap();
        if n == 0 {
            break;
        }
        let Ok(Parsed::Item(SourceItem::Event(e))) = parse_line(&line, 0, &mut interner) else {
            continue;
        };
        // The connection view's records carry `via`; a replay's output also
        // keeps the capture's own syscall events (without it), so that it
        // stays replayable: those are not what the view delivered.
        if e.conn != conn || e.dir != Direction::Send || e.via.is_none() {
            continue;
        }
        let side = if e.socket == client {
            0
        } else if e.socket == server {
            1
        } else {
            continue;
        };
        for (i, &b) in e.data.iter().enumerate() {
            let o = offset[side] + i as u64;
            // Past the slice's bytes only the ping-pong's end message may come.
            let want = if o >= s.bytes[side] {
                let end = &mut [0u8; MSG];
                fill(END, end);
                end[8] = 0xff;
                end[((o - s.bytes[side]) as usize).min(MSG - 1)]
            } else {
                expected_byte(unit, s.first[side], o)
            };
            if b != want {
                return format!("BAD: byte {o} of direction {side} differs");
            }
        }
        offset[side] += e.data.len() as u64;
        let gap = e.len.saturating_sub(e.data.len() as u64);
        missing[side] += gap;
        offset[side] += gap;
    }
    let end_extra = if w.name() == "pingpong" {
        MSG as u64
    } else {
        0
    };
    let want = [s.bytes[0] + end_extra, s.bytes[1]];
    let complete = offset == want;
    // A transfer's last bytes whose events were all dropped leave no later
    // byte to show a gap before: they are missing from the end, counted only
    // in spf's dropped events.
    let short = (0..2).all(|i| offset[i] <= want[i]);
    let tail = want[0] + want[1] - offset[0].min(want[0]) - offset[1].min(want[1]);
    let moved = s.bytes[0] + s.bytes[1];
    match (complete, missing) {
        (true, [0, 0]) => format!("ok ({moved} B)"),
        (true, m) => format!("gaps: {} of {moved} B not captured", m[0] + m[1]),
        (false, m) if short && dropped > 0 => format!(
            "gaps: {} of {moved} B not captured, the last {tail} B of them with the dropped events",
            m[0] + m[1] + tail
        ),
        (false, _) => format!("BAD: {offset:?} bytes where {want:?} were moved"),
    }
}

fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("e2e bench: needs root (the probe); skipped");
        return;
    }
    let pairs: usize = env_or("SPF_E2E_PAIRS", 10);
    let secs: f64 = env_or("SPF_E2E_SECS", 1.0);
    let sink = std::env::var("SPF_E2E_SINK").unwrap_or_else(|_| "file".into());
    let hook = std::env::var("SPF_E2E_HOOK").unwrap_or_else(|_| "auto".into());
    let spin = std::env::var("SPF_E2E_SPIN").as_deref() == Ok("1");
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all: Vec<Box<dyn Workload>> = vec![
        Box::new(PingPong(Pair::new())),
        Box::new(Bulk(Pair::new())),
        Box::new(DevNull(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .unwrap(),
        )),
    ];
    // spf's outputs: SPF_E2E_DIR (e.g. /dev/shm, to leave the disk out), or
    // the temporary directory.
    let dir = match std::env::var_os("SPF_E2E_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut release = String::new();
    if let Ok(r) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        release = r.trim().to_string();
    }
    println!(
        "e2e: kernel {release}, hook {hook}, {pairs} pairs of {secs} s slices, sink {sink}{}, load before: {}",
        if spin {
            ", every CPU kept busy by a nice-19 spinner"
        } else {
            ""
        },
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _spinners = spin.then(Spinners::start);
    if wanted.iter().any(|x| x == "ceiling") {
        // SPF_E2E_RATES: MB/s of 64 KiB messages to try instead, in order
        // (e.g. `1280,1280,1280` for one rate three times); the 64-byte
        // messages are then left out.
        let chosen: Option<Vec<u64>> = std::env::var("SPF_E2E_RATES")
            .ok()
            .map(|s| s.split(',').map(|r| r.trim().parse().unwrap()).collect());
        let mut runs = vec![(
            CHUNK,
            chosen
                .clone()
                .unwrap_or_else(|| vec![256, 512, 768, 1024, 1280, 1536, 2048, 2560, 3072]),
        )];
        if chosen.is_none() {
            // Thousands of 64-byte messages per second.
            runs.push((MSG, vec![100, 200, 300, 400, 500, 600, 800, 1000, 1200]));
        }
        let sinks: &[&str] = match std::env::var("SPF_E2E_SINK").as_deref() {
            Ok("capture") => &["capture"],
            Ok("file") => &["file"],
            _ => &["file", "capture"],
        };
        for (msg, rates) in runs {
            for sink in sinks {
                ceiling(msg, &rates, sink, &hook, secs, dir.path());
            }
        }
        return;
    }
    for mut w in all {
        if !wanted.is_empty() && !wanted.iter().any(|x| x == w.name()) {
            continue;
        }
        let mut ratios = Vec::new();
        // Unrelated syscalls: the same hook with an empty program, in the same
        // run, for the floor any probe on that hook has.
        let floor = w.conn().is_none() && hook != "kernel";
        let mut floor_ratios = Vec::new();
        let mut dropped = 0u64;
        let mut verdicts = Vec::new();
        let mut captured_by = String::new();
        let mut before = w.slice(secs);
        for _ in 0..pairs {
            let spf = start_spf(&w.filter(), &sink, &hook, dir.path());
            let traced = w.slice(secs);
            let (d, by, out) = stop_spf(spf);
            dropped += d;
            captured_by = by;
            if let (Some(out), Some(_)) = (out, w.conn()) {
                verdicts.push(check(&out, w.as_ref(), &traced, d));
            }
            let after = w.slice(secs);
            let rate = |s: &Slice| s.ops as f64 / s.secs;
            ratios.push(rate(&traced) / ((rate(&before) + rate(&after)) / 2.0));
            before = after;
            if floor {
                let empty = spf_probes::EmptyHook::attach().expect("attaching the empty hook");
                let traced = w.slice(secs);
                drop(empty);
                let after = w.slice(secs);
                floor_ratios.push(rate(&traced) / ((rate(&before) + rate(&after)) / 2.0));
                before = after;
            }
        }
        if !floor_ratios.is_empty() {
            let (q1, med, q3) = quartiles(floor_ratios);
            println!(
                "{:9} floor (an empty program on the syscall exit hook): ratio median {med:.3} (quartiles {q1:.3}-{q3:.3})",
                w.name()
            );
        }
        let (q1, med, q3) = quartiles(ratios);
        let bad = verdicts.iter().filter(|v| v.starts_with("BAD")).count();
        let gaps = verdicts.iter().filter(|v| v.starts_with("gaps")).count();
        println!(
            "{:9} ratio median {med:.3} (quartiles {q1:.3}-{q3:.3}), untraced {:.0} ops/s, dropped {dropped}, output {}",
            w.name(),
            before.ops as f64 / before.secs,
            if verdicts.is_empty() {
                "not checked (stdout, or no connection)".to_string()
            } else if bad == 0 && gaps == 0 {
                format!("complete and in order in all {} slices", verdicts.len())
            } else if bad == 0 {
                format!(
                    "in order; {gaps} of {} slices with gaps where events were dropped: {:?}",
                    verdicts.len(),
                    verdicts
                )
            } else {
                format!("{bad} of {} slices wrong: {:?}", verdicts.len(), verdicts)
            }
        );
        println!("{:9} capture: {captured_by}", "");
    }
}

/// One lowest-priority busy thread per CPU, until dropped: CPUs that never
/// go idle, whatever else runs.
struct Spinners {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Spinners {
    fn start() -> Spinners {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = (0..cpus)
            .map(|_| {
                let stop = std::sync::Arc::clone(&stop);
                std::thread::spawn(move || {
                    // SAFETY: setpriority on this thread (a tid is a pid
                    // for PRIO_PROCESS) has no memory effects.
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as u32, 19) };
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Spinners { stop, threads }
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A sender paced at `per_sec` messages of `msg` bytes a second (1 ms ticks)
/// for `secs`, over a named stream socket, with a reader taking everything.
fn paced(pair: &mut Pair, msg: usize, per_sec: u64, secs: f64) -> Slice {
    let first = pair.next;
    let mut client = pair.client.try_clone().unwrap();
    let k0 = first[0];
    let sender = std::thread::spawn(move || {
        let start = Instant::now();
        let end = Duration::from_secs_f64(secs);
        let mut buf = vec![0u8; msg];
        let mut k = k0;
        loop {
            let t = start.elapsed();
            if t >= end {
                break;
            }
            // Behind schedule: catch up at once; ahead: wait for the next tick
            // (pacing, not synchronisation).
            let due = (t.as_secs_f64() * per_sec as f64) as u64;
            while k - k0 < due {
                fill(k, &mut buf);
                client.write_all(&buf).unwrap();
                k += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        (k, start.elapsed().as_secs_f64())
    });
    pair.server
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0u64;
    let (k, elapsed) = loop {
        if sender.is_finished() {
            let (k, elapsed) = sender.join().unwrap();
            let total = (k - k0) * msg as u64;
            while got < total {
                let want = buf.len().min((total - got) as usize);
                pair.server.read_exact(&mut buf[..want]).unwrap();
                got += want as u64;
            }
            break (k, elapsed);
        }
        match pair.server.read(&mut buf) {
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("paced read: {e}"),
        }
    };
    pair.next = [k, first[1]];
    Slice {
        ops: k - k0,
        bytes: [got, 0],
        first,
        secs: elapsed,
    }
}

/// The ceiling of lossless capture: a paced sender at rising rates, spf
/// capturing its connection into `sink` (an ndjson file or the binary
/// capture), until the first rate at which spf drops events or the output
/// misses bytes.
fn ceiling(msg: usize, rates: &[u64], sink: &str, hook: &str, secs: f64, dir: &Path) {
    struct Paced {
        pair: Pair,
        msg: usize,
    }
    // Only captured: its slices are paced (`paced`), not alternated.
    impl Captured for Paced {
        fn name(&self) -> &'static str {
            "paced"
        }
        fn filter(&self) -> Vec<String> {
            vec!["--path".into(), self.pair.path().display().to_string()]
        }
        fn conn(&self) -> Option<(u64, u64, u64)> {
            Some(self.pair.ids())
        }
        fn unit(&self) -> usize {
            self.msg
        }
    }
    let mut w = Paced {
        pair: Pair::new(),
        msg,
    };
    let unit = |r: u64| {
        if msg == CHUNK {
            r * 1_000_000 / CHUNK as u64
        } else {
            r * 1000
        }
    };
    let mut best: Option<(u64, f64)> = None;
    for &r in rates {
        let per_sec = unit(r);
        let spf = start_spf(&w.filter(), sink, hook, dir);
        let s = paced(&mut w.pair, msg, per_sec, secs);
        let (dropped, _, out) = stop_spf(spf);
        let verdict = match out {
            Some(out) => check(&out, &w, &s, dropped),
            None => unreachable!(),
        };
        let achieved = s.bytes[0] as f64 / s.secs;
        println!(
            "ceiling {:>5} B messages into {:7}: asked {:>8} msg/s, moved {:>8.0} msg/s = {:>7.1} MB/s, dropped {dropped}, output {verdict}",
            msg,
            if sink == "file" { "ndjson" } else { "spfcap" },
            per_sec,
            s.ops as f64 / s.secs,
            achieved / 1e6,
        );
        if dropped > 0 || !verdict.starts_with("ok") {
            break;
        }
        best = Some((per_sec, achieved));
    }
    match best {
        Some((m, b)) => println!(
            "ceiling {:>5} B messages into {}: lossless up to {m} msg/s ({:.1} MB/s)",
            msg,
            if sink == "file" { "ndjson" } else { "spfcap" },
            b / 1e6
        ),
        None => println!("ceiling {msg:>5} B messages into {sink}: lost at the lowest rate"),
    }
}
