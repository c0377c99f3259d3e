//! What the probe costs the traced processes. The probe is loaded once per
//! workload, with a consumer draining every event as the `unix` source would
//! feed a pipeline; the workload then runs in short slices, alternately with
//! the probe's hook attached and detached, and each pair of slices gives one
//! ratio. The machine's speed drifts over seconds (other guests, frequency),
//! so slices next to each other compare far better than runs far apart.
//!
//!     sudo cargo bench -p spf-probes --bench probe [-- pingpong|bulk|send|null]
//!
//! SPF_BENCH_PAIRS sets the pairs per workload (default 15), SPF_BENCH_SLICE
//! the seconds per slice (default 0.2), SPF_BENCH_RING_SIZE the ring buffer
//! (default: spf's default), SPF_BENCH_HOOK the hooks (`auto`, `kernel` or
//! `syscall`, as `[source] hook`; default auto). SPF_BENCH_FOLLOW follows this
//! process (`pid_tree`) and SPF_BENCH_CGROUP keeps its cgroup (`cgroup`): the
//! filters' cost, with every event still kept.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spf_pipeline::{Emitter, Source, SourceItem};
use spf_probes::{AttachSwitch, DirectionFilter, Hook, UnixConfig};

// As in the spf binary: the reader allocates each event's buffer on one thread
// and the consumer frees it on another.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t with one CPU set, applied to this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// 64-byte request, 64-byte reply, over one socketpair: round trips per second
/// and the bytes both ends moved (each round trip: two sends, two receives).
/// Both ends are pinned to one CPU: whether the scheduler puts them on one core
/// or two changes the rate twofold, which would drown what is measured.
fn ping_pong(d: Duration) -> (f64, u64) {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        pin_to_cpu0();
        let mut buf = [0u8; 64];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let pinger = std::thread::spawn(move || {
        pin_to_cpu0();
        let msg = [7u8; 64];
        let mut buf = [0u8; 64];
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < d {
            for _ in 0..256 {
                a.write_all(&msg).unwrap();
                a.read_exact(&mut buf).unwrap();
            }
            n += 256;
        }
        (n as f64 / start.elapsed().as_secs_f64(), n * 4 * 64)
    });
    let r = pinger.join().unwrap();
    echo.join().unwrap();
    r
}

/// 64 KiB writes, 64 KiB reads: MB/s through one socketpair.
fn bulk(d: Duration) -> (f64, u64) {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            match b.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
        total
    });
    let chunk = vec![0x42u8; 64 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < d {
        for _ in 0..16 {
            a.write_all(&chunk).unwrap();
            sent += chunk.len() as u64;
        }
    }
    drop(a);
    let got = reader.join().unwrap();
    assert_eq!(got, sent);
    (sent as f64 / 1e6 / start.elapsed().as_secs_f64(), sent)
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// 64-byte writes to /dev/null: writes per second of this thread's CPU time.
/// CPU time rather than wall time because on a small shared machine other
/// processes take the CPU away for stretches that dwarf the effect measured;
/// the loop never blocks, so without them the two are the same.
fn dev_null(d: Duration) -> f64 {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    let mut f = std::io::BufWriter::with_capacity(0, f);
    let msg = [1u8; 64];
    let start = Instant::now();
    let cpu0 = thread_cpu();
    let mut n = 0u64;
    while start.elapsed() < d {
        for _ in 0..4096 {
            f.write_all(&msg).unwrap();
        }
        n += 4096;
    }
    n as f64 / (thread_cpu() - cpu0).as_secs_f64().max(1e-9)
}

/// The probe, loaded with no filter but `direction`, a consumer that takes
/// every event, and the switch for its hook.
struct Running {
    rt: tokio::runtime::Runtime,
    stop: spf_pipeline::stage::tokio_stop::StopFlag,
    source: tokio::task::JoinHandle<Result<spf_pipeline::SourceSummary, spf_pipeline::SourceError>>,
    consumer: tokio::task::JoinHandle<()>,
    switch: AttachSwitch,
    bytes: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
}

impl Running {
    fn start(direction: DirectionFilter) -> Result<Running, String> {
        let cfg = UnixConfig {
            include_self: true,
            direction,
            ring_size: env_or("SPF_BENCH_RING_SIZE", spf_probes::DEFAULT_RING_SIZE),
            hook: bench_hook(),
            follow: if std::env::var_os("SPF_BENCH_FOLLOW").is_some() {
                // This process: every event still passes, through the
                // followed-process filter (and its fork/exit programs).
                vec![std::process::id()]
            } else {
                Vec::new()
            },
            cgroups: if std::env::var_os("SPF_BENCH_CGROUP").is_some() {
                // This process's own cgroup: every event passes the filter.
                let path = spf_probes::containers::cgroup_path_of(std::process::id())
                    .expect("the bench's cgroup (v2)");
                vec![spf_probes::containers::cgroup_id(&path).expect("its id")]
            } else {
                Vec::new()
            },
            ..UnixConfig::default()
        };
        let mut src = cfg.build_source().map_err(|e| e.to_string())?;
        println!("  capture: {}", src.hook());
        let mut switch = src.attach_switch().map_err(|e| e.to_string())?;
        switch.off();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (em, mut rx, stop) = Emitter::channel(256);
        let source = rt.spawn(Box::new(src).run(em));
        let bytes = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let (b, l) = (bytes.clone(), lost.clone());
        let consumer = rt.spawn(async move {
            while let Some(batch) = rx.recv().await {
                for it in batch {
                    match it {
                        SourceItem::Event(ev) => {
                            b.fetch_add(ev.data.len() as u64, Ordering::Relaxed);
                        }
                        SourceItem::Lost(x) => {
                            l.fetch_add(x.count, Ordering::Relaxed);
                        }
                        SourceItem::Closed { .. } => {}
                    }
                }
            }
        });
        Ok(Running {
            rt,
            stop,
            source,
            consumer,
            switch,
            bytes,
            lost,
        })
    }

    fn captured(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Waits until the consumer has `want` more bytes than `from`, or a
    /// little while; then once more for the reader to notice losses.
    fn settle(&self, from: u64, want: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.captured() - from < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(30));
    }

    fn stop(mut self) -> u64 {
        self.switch.off();
        self.stop.set();
        let summary = self.rt.block_on(self.source).unwrap().unwrap();
        self.rt.block_on(self.consumer).unwrap();
        summary.lost
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One workload's pairs: rates without and with the probe, bytes the
/// consumer got and bytes it should have got, events lost.
#[derive(Default)]
struct Pairs {
    without: Vec<f64>,
    with: Vec<f64>,
    captured: u64,
    expected: u64,
    lost: u64,
}

impl Pairs {
    fn ratios(&self) -> Vec<f64> {
        self.without
            .iter()
            .zip(&self.with)
            .map(|(a, b)| b / a)
            .collect()
    }
}

/// Runs `work` in `pairs` pairs of slices, the hook detached for one and
/// attached for the other, which one first alternating. `work` returns
/// (rate, bytes the probe should capture from it).
fn alternate(
    direction: DirectionFilter,
    pairs: usize,
    slice: Duration,
    work: &dyn Fn(Duration) -> (f64, u64),
) -> Result<Pairs, String> {
    let mut running = Running::start(direction)?;
    // A first slice of each kind warms caches and the allocator.
    work(slice / 4);
    running.switch.on().map_err(|e| e.to_string())?;
    let b0 = running.captured();
    let (_, want) = work(slice / 4);
    running.settle(b0, want);
    running.switch.off();
    if std::env::var_os("SPF_BENCH_VERBOSE").is_some() {
        println!(
            "  warm-up: captured {:.4}, lost {}",
            (running.captured() - b0) as f64 / want.max(1) as f64,
            running.lost()
        );
    }
    let mut p = Pairs::default();
    for i in 0..pairs {
        for on in [i % 2 == 0, i % 2 == 1] {
            if on {
                running.switch.on().map_err(|e| e.to_string())?;
                let (b0, l0) = (running.captured(), running.lost());
                let (rate, want) = work(slice);
                running.settle(b0, want);
                running.switch.off();
                if std::env::var_os("SPF_BENCH_VERBOSE").is_some() {
                    println!(
                        "  slice {i}: captured {:.4}, lost {}",
                        (running.captured() - b0) as f64 / want.max(1) as f64,
                        running.lost() - l0
                    );
                }
                p.captured += running.captured() - b0;
                p.expected += want;
                p.with.push(rate);
            } else {
                p.without.push(work(slice).0);
            }
        }
    }
    // Every loss since the probe was loaded, warm-up included.
    p.lost = running.stop();
    Ok(p)
}

fn bench_hook() -> Hook {
    match std::env::var("SPF_BENCH_HOOK").as_deref() {
        Ok("kernel") => Hook::Kernel,
        Ok("syscall") => Hook::Syscall,
        _ => Hook::Auto,
    }
}

fn main() {
    let pairs: usize = env_or("SPF_BENCH_PAIRS", 15);
    let slice = Duration::from_secs_f64(env_or("SPF_BENCH_SLICE", 0.2));
    // Quick looks at some workloads: `cargo bench ... -- null bulk`.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |w: &str| only.is_empty() || only.iter().any(|o| o == w);
    if let Some(reason) = spf_probes::bpf_unavailable_reason() {
        println!("probe unavailable: {reason}");
        return;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "probe benchmark: kernel {}, hook {:?}, {pairs} pairs of {:.2} s slices per workload (hook detached / attached)",
        release.trim(),
        bench_hook(),
        slice.as_secs_f64()
    );
    type Work = (
        &'static str,
        &'static str,
        DirectionFilter,
        fn(Duration) -> (f64, u64),
    );
    let works: [Work; 4] = [
        (
            "pingpong",
            "(a) 64 B ping-pong, round trips/s",
            DirectionFilter::Both,
            ping_pong,
        ),
        (
            "bulk",
            "(b) 64 KiB bulk, MB/s, both sides",
            DirectionFilter::Both,
            |d| {
                let (rate, sent) = bulk(d);
                (rate, 2 * sent)
            },
        ),
        (
            "send",
            "(b) 64 KiB bulk, MB/s, send side",
            DirectionFilter::Send,
            bulk,
        ),
        (
            "null",
            "(c) 64 B writes to /dev/null, writes/s",
            DirectionFilter::Both,
            |d| (dev_null(d), 0),
        ),
    ];
    let mut rows = Vec::new();
    for (key, name, dir, work) in works {
        if !want(key) {
            continue;
        }
        let p = match alternate(dir, pairs, slice, &work) {
            Ok(p) => p,
            Err(e) => {
                println!("{name}: probe failed to start: {e}");
                return;
            }
        };
        let r = p.ratios();
        let mut sorted = r.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "{name}: ratios {}",
            sorted
                .iter()
                .map(|x| format!("{x:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        rows.push((
            name,
            p,
            median(r),
            sorted[sorted.len() / 4],
            sorted[sorted.len() * 3 / 4],
        ));
    }
    println!();
    println!(
        "{:<40} {:>12} {:>12} {:>7} {:>13} {:>10} {:>8}",
        "workload", "median w/o", "median with", "ratio", "ratio q1-q3", "captured", "lost"
    );
    for (name, p, ratio, q1, q3) in rows {
        let captured = if p.expected == 0 {
            "-".to_string()
        } else {
            format!("{:.4}", p.captured as f64 / p.expected as f64)
        };
        println!(
            "{:<40} {:>12.1} {:>12.1} {:>7.3} {:>6.3}-{:<6.3} {:>10} {:>8}",
            name,
            median(p.without.clone()),
            median(p.with.clone()),
            ratio,
            q1,
            q3,
            captured,
            p.lost
        );
    }
}
