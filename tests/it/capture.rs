//! Live captures with the real BPF probe, shared by the tests that need one.
//!
//! BPF programs see the whole machine, and the other tests of this binary run in
//! threads of this same process, so every test filters tightly (a unique path, a
//! connection's socket inodes, a thread name) and one lock keeps live captures
//! from overlapping.

use std::sync::{Arc, Mutex, MutexGuard};

use spf_pipeline::{Direction, Emitter, Event, Lost, Source, SourceItem, SourceSummary};
use spf_probes::{Hook, HookChoice, UnixConfig};

static PROBE_LOCK: Mutex<()> = Mutex::new(());

pub fn lock() -> MutexGuard<'static, ()> {
    PROBE_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn required() -> bool {
    std::env::var("SPF_REQUIRE_BPF").is_ok_and(|v| v == "1")
}

/// The hooks the tests capture with: `SPF_TEST_HOOK=kernel` or `syscall`
/// runs the whole suite on one path (the kernel matrix runs it on both); unset
/// or `auto`, the probe chooses.
pub fn test_hook() -> Hook {
    match std::env::var("SPF_TEST_HOOK").as_deref() {
        Ok("kernel") => Hook::Kernel,
        Ok("syscall") => Hook::Syscall,
        Ok("auto") | Err(_) => Hook::Auto,
        Ok(other) => panic!("SPF_TEST_HOOK={other}: expected kernel, syscall or auto"),
    }
}

/// `--hook` for the tests that run the spf binary, as [`test_hook`] says.
pub fn hook_args() -> Vec<&'static str> {
    match test_hook() {
        Hook::Auto => Vec::new(),
        h => vec!["--hook", h.name()],
    }
}

/// A running capture: the source on its own runtime, a task collecting what it
/// hands over.
pub struct Capture {
    /// Which hooks capture, and why.
    pub hook: HookChoice,
    rt: tokio::runtime::Runtime,
    source: tokio::task::JoinHandle<Result<SourceSummary, spf_pipeline::SourceError>>,
    collect: tokio::task::JoinHandle<Vec<SourceItem>>,
    stop: spf_pipeline::stage::tokio_stop::StopFlag,
}

pub struct Captured {
    pub hook: HookChoice,
    pub events: Vec<Arc<Event>>,
    pub lost: Vec<Lost>,
    /// (conn, ts_ns) of every connection reported closed.
    pub closed: Vec<(u64, u64)>,
    pub summary: SourceSummary,
}

/// Whether BPF tests can run here; if not, says why, or fails the test when the
/// environment requires BPF (`SPF_REQUIRE_BPF=1`).
pub fn bpf_ready(name: &str) -> bool {
    if !crate::util::bpf_available(name) {
        return false;
    }
    if let Some(reason) = spf_probes::bpf_unavailable_reason() {
        assert!(
            !required(),
            "{name}: BPF required (SPF_REQUIRE_BPF=1) but unavailable: {reason}"
        );
        eprintln!("skipping {name}: {reason}");
        return false;
    }
    true
}

/// Starts a capture of `cfg` (this process's own traffic included), or returns
/// None (after saying why) where BPF cannot run and the environment does not
/// require it.
pub fn start(name: &str, mut cfg: UnixConfig) -> Option<Capture> {
    cfg.include_self = true;
    if cfg.hook == Hook::Auto {
        cfg.hook = test_hook();
    }
    if !bpf_ready(name) {
        return None;
    }
    let source = match cfg.build_source() {
        Ok(s) => s,
        Err(e) => {
            assert!(
                !required(),
                "{name}: BPF required (SPF_REQUIRE_BPF=1) but the probe failed: {e}"
            );
            eprintln!("skipping {name}: {e}");
            return None;
        }
    };
    let hook = source.hook().clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (emitter, mut rx, stop) = Emitter::channel(64);
    let source = rt.spawn(Box::new(source).run(emitter));
    let collect = rt.spawn(async move {
        let mut all = Vec::new();
        while let Some(batch) = rx.recv().await {
            all.extend(batch);
        }
        all
    });
    Some(Capture {
        hook,
        rt,
        source,
        collect,
        stop,
    })
}

impl Capture {
    /// Stops the source. Every syscall made before this call has already passed
    /// its tracepoint, so the source's last drain sees all of it.
    pub fn finish(self) -> Captured {
        self.stop.set();
        let summary = self
            .rt
            .block_on(self.source)
            .expect("source task")
            .expect("source result");
        let items = self.rt.block_on(self.collect).expect("collector task");
        let mut events = Vec::new();
        let mut lost = Vec::new();
        let mut closed = Vec::new();
        let mut last_seq = 0;
        for it in items {
            match it {
                SourceItem::Event(e) => {
                    assert!(
                        e.seq > last_seq,
                        "seq must strictly increase: {} after {last_seq}",
                        e.seq
                    );
                    last_seq = e.seq;
                    events.push(e);
                }
                SourceItem::Lost(l) => lost.push(l),
                SourceItem::Closed { conn, ts_ns } => closed.push((conn, ts_ns)),
            }
        }
        Captured {
            hook: self.hook,
            events,
            lost,
            closed,
            summary,
        }
    }
}

impl Captured {
    pub fn of_conn(&self, conn: u64) -> Vec<&Arc<Event>> {
        self.events.iter().filter(|e| e.conn == conn).collect()
    }

    pub fn assert_no_loss(&self) {
        assert!(self.lost.is_empty(), "lost: {:?}", self.lost);
        assert_eq!(self.summary.lost, 0);
    }
}

impl Captured {
    /// The events of one connection in one direction.
    pub fn of_conn_dir(&self, conn: u64, dir: Direction) -> Vec<&Arc<Event>> {
        self.events
            .iter()
            .filter(|e| e.conn == conn && e.dir == dir)
            .collect()
    }

    /// The events of one direction, whatever the connection.
    pub fn of_dir(&self, dir: Direction) -> Vec<&Arc<Event>> {
        self.events.iter().filter(|e| e.dir == dir).collect()
    }
}
