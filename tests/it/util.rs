//! Small helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

/// The spf binary under test.
pub fn spf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spf"))
}

/// Runs spf with `args` and returns its output.
pub fn spf_output(args: &[&str]) -> Output {
    spf().args(args).output().expect("spawning spf")
}

/// Waits for `child` to exit after it was told to stop (SIGINT): a test
/// fails, rather than hangs, should it never do so. Killed after 60 s.
pub fn wait_stopped(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("spf did not exit within 60 s of being told to stop");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `ready` every 10 ms until it gives a value, which it returns: a
/// test fails, rather than hangs, should `child` exit first (`what` says what
/// was awaited) or 60 s pass.
pub fn wait_for<T>(child: &mut Child, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = ready() {
            return v;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("spf exited with {status} while waiting for {what}");
        }
        assert!(Instant::now() < deadline, "no {what} within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("writing test file");
    p
}

/// Every line of an NDJSON file, parsed; panics on a line that is not JSON.
pub fn read_ndjson(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).expect("reading ndjson output");
    parse_ndjson(&text, &path.display().to_string())
}

/// Every line of NDJSON text from `what`, parsed; panics on a line that is
/// not JSON.
pub fn parse_ndjson(text: &str, what: &str) -> Vec<serde_json::Value> {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{what}:{}: not JSON ({e}): {l}", i + 1))
        })
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift), covering every byte value.
pub fn test_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i < 256 { i as u8 } else { (x >> 24) as u8 }
        })
        .collect()
}

pub fn stderr_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether tests that need BPF must run: as root, unless told otherwise. Under
/// `SPF_REQUIRE_BPF=1` a missing capability fails the test instead of skipping it.
pub fn bpf_available(test: &str) -> bool {
    let required = std::env::var("SPF_REQUIRE_BPF").is_ok_and(|v| v == "1");
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    assert!(
        !required,
        "{test}: SPF_REQUIRE_BPF=1 but not running as root"
    );
    eprintln!("skipping {test}: needs root for BPF (set SPF_REQUIRE_BPF=1 to fail instead)");
    false
}

/// Reads `child`'s piped stderr line by line on a thread, so that a test can
/// wait for a line with a deadline: the lines, and the reading thread.
pub fn stderr_lines(
    child: &mut Child,
) -> (
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    use std::io::BufRead as _;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (rx, reader)
}

/// Makes a FIFO at `path` with permissions `mode`.
pub fn mkfifo(path: &Path, mode: libc::mode_t) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), mode) }, 0);
}
