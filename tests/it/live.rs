//! The real `spf run` binary capturing live, as users run it.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::capture::bpf_ready;
use crate::util::{read_ndjson, spf};

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

impl LiveSpf {
    /// Starts `spf run --format ndjson --quiet ARGS` (the args must select
    /// threads named `comm`, e.g. `--comm COMM`) and returns once it captures:
    /// a thread named `comm` writes a canary through a socketpair until the
    /// output shows it. None (after saying why) where BPF cannot run and the
    /// environment does not require it.
    pub fn start(name: &str, dir: &Path, comm: &str, args: &[&str]) -> Option<LiveSpf> {
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
        let comm = comm.to_string();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let canary = std::thread::spawn(move || {
            name_thread(&comm);
            let (mut a, _b) = UnixStream::pair().unwrap();
            // Until told the canary was seen (or the test gave up).
            while rx.try_recv() == Err(std::sync::mpsc::TryRecvError::Empty) {
                a.write_all(b"spf-canary").unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
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
