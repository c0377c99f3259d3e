//! What the probe costs the traced processes: each workload runs without spf,
//! then with the probe loaded and a consumer draining every event, in one run,
//! and the ratio is printed.
//!
//!     sudo cargo bench -p spf-probes --bench probe
//!
//! SPF_BENCH_SECS sets the seconds per measurement (default 3).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spf_pipeline::{Emitter, Source, SourceItem};
use spf_probes::{DirectionFilter, UnixConfig};

// As in the spf binary: the reader allocates each event's buffer on one thread
// and the consumer frees it on another.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn secs() -> Duration {
    let s = std::env::var("SPF_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(s)
}

fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t with one CPU set, applied to this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// 64-byte request, 64-byte reply, over one socketpair: round trips per second.
/// Both ends are pinned to one CPU: whether the scheduler puts them on one core
/// or two changes the rate twofold, which would drown what is measured.
fn ping_pong(d: Duration) -> f64 {
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
        n as f64 / start.elapsed().as_secs_f64()
    });
    let rate = pinger.join().unwrap();
    echo.join().unwrap();
    rate
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

/// The probe, loaded with no filter but `direction`, and a consumer that takes
/// every event.
struct Running {
    rt: tokio::runtime::Runtime,
    stop: spf_pipeline::stage::tokio_stop::StopFlag,
    source: tokio::task::JoinHandle<Result<spf_pipeline::SourceSummary, spf_pipeline::SourceError>>,
    consumer: tokio::task::JoinHandle<()>,
    bytes: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
}

impl Running {
    fn start(direction: DirectionFilter) -> Result<Running, String> {
        let cfg = UnixConfig {
            include_self: true,
            direction,
            // SPF_BENCH_RING_SIZE: how the drops change with the ring (the
            // default ring is what the figures are for).
            ring_size: std::env::var("SPF_BENCH_RING_SIZE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(spf_probes::DEFAULT_RING_SIZE),
            ..UnixConfig::default()
        };
        let src = cfg.build_source().map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (em, mut rx, stop) = Emitter::channel(256);
        let source = rt.spawn(Box::new(src).run(em));
        let bytes = Arc::new(AtomicU64::new(0));
        let events = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let (b, e, l) = (bytes.clone(), events.clone(), lost.clone());
        let consumer = rt.spawn(async move {
            while let Some(batch) = rx.recv().await {
                for it in batch {
                    match it {
                        SourceItem::Event(ev) => {
                            b.fetch_add(ev.data.len() as u64, Ordering::Relaxed);
                            e.fetch_add(1, Ordering::Relaxed);
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
            bytes,
            events,
            lost,
        })
    }

    fn lost_now(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    fn counters(&self) -> (u64, u64) {
        (
            self.events.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    fn stop(self) -> u64 {
        self.stop.set();
        let summary = self.rt.block_on(self.source).unwrap().unwrap();
        self.rt.block_on(self.consumer).unwrap();
        summary.lost
    }
}

#[derive(Default, Clone, Copy)]
struct Figures {
    pp: f64,
    bulk: f64,
    /// Bulk with only the sending side captured, which holds every byte.
    bulk_send: f64,
    null: f64,
}

/// Runs the bulk transfer under `running` and waits until the consumer has
/// what it will get: (MB/s, bytes captured, bytes sent, events lost meanwhile).
fn bulk_captured(running: &Running, d: Duration, sides: u64) -> (f64, u64, u64, u64) {
    let (_, b0) = running.counters();
    let lost0 = running.lost_now();
    let (rate, sent) = bulk(d);
    let deadline = Instant::now() + Duration::from_secs(5);
    while running.counters().1 - b0 < sides * sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Losses are counted by the kernel and noticed on the reader's next
    // drain: give it one.
    std::thread::sleep(Duration::from_millis(50));
    let (_, b1) = running.counters();
    (rate, b1 - b0, sides * sent, running.lost_now() - lost0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let d = secs();
    let rounds: usize = std::env::var("SPF_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // Quick looks at one workload: `cargo bench ... -- null` (or pingpong, bulk).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |w: &str| only.is_empty() || only.iter().any(|o| o == w);
    let dur = |w: &str| if want(w) { d } else { Duration::ZERO };
    println!(
        "probe benchmark: {rounds} rounds of (without spf, with spf), {:.1} s per measurement",
        d.as_secs_f64()
    );

    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut capture_notes = Vec::new();
    for round in 0..rounds {
        let mut base = Figures {
            pp: ping_pong(dur("pingpong")),
            bulk: bulk(dur("bulk")).0,
            bulk_send: 0.0,
            null: dev_null(dur("null")),
        };
        let running = match Running::start(DirectionFilter::Both) {
            Ok(r) => r,
            Err(e) => {
                println!("probe unavailable, measured without spf only: {e}");
                println!(
                    "ping-pong {:.0} round trips/s, bulk {:.1} MB/s, /dev/null {:.0} writes/s",
                    base.pp, base.bulk, base.null
                );
                return;
            }
        };
        let pp = ping_pong(dur("pingpong"));
        let (bulk_rate, bulk_got, bulk_want, bulk_lost) = bulk_captured(&running, dur("bulk"), 2);
        let null = dev_null(dur("null"));
        let lost = running.stop();
        // The same transfer with only its sending side captured, next to its
        // own measurement without spf.
        base.bulk_send = bulk(dur("bulk")).0;
        let send_only = Running::start(DirectionFilter::Send).expect("probe loaded once already");
        let (send_rate, send_got, send_want, send_lost) = bulk_captured(&send_only, dur("bulk"), 1);
        send_only.stop();
        let f = Figures {
            pp,
            bulk: bulk_rate,
            bulk_send: send_rate,
            null,
        };
        println!(
            "round {round}: ping-pong {:.0} -> {:.0} ({:.3}), bulk {:.1} -> {:.1} MB/s ({:.3}), send-only {:.1} -> {:.1} MB/s ({:.3}), /dev/null {:.0} -> {:.0} ({:.3})",
            base.pp,
            f.pp,
            f.pp / base.pp,
            base.bulk,
            f.bulk,
            f.bulk / base.bulk,
            base.bulk_send,
            f.bulk_send,
            f.bulk_send / base.bulk_send,
            base.null,
            f.null,
            f.null / base.null
        );
        capture_notes.push(format!(
            "round {round}: bulk captured {bulk_got} of {bulk_want} bytes (send + recv), {bulk_lost} events lost during bulk, {lost} lost in the round; send-only captured {send_got} of {send_want} bytes, {send_lost} events lost"
        ));
        without.push(base);
        with.push(f);
    }
    for n in &capture_notes {
        println!("{n}");
    }
    let ratio = |g: fn(&Figures) -> f64| {
        median(
            without
                .iter()
                .zip(&with)
                .map(|(a, b)| g(b) / g(a))
                .collect(),
        )
    };
    let med = |v: &[Figures], g: fn(&Figures) -> f64| median(v.iter().map(g).collect());
    // Other processes only ever slow a measurement down, so the best of each
    // side is the other figure worth reading on a shared machine.
    let best = |v: &[Figures], g: fn(&Figures) -> f64| v.iter().map(g).fold(0.0, f64::max);
    type Row = (&'static str, fn(&Figures) -> f64);
    let rows: [Row; 4] = [
        ("(a) 64 B ping-pong, round trips/s", |f| f.pp),
        ("(b) 64 KiB bulk, MB/s", |f| f.bulk),
        ("(b) 64 KiB bulk, send side only, MB/s", |f| f.bulk_send),
        ("(c) 64 B writes to /dev/null, writes/s", |f| f.null),
    ];
    println!();
    println!(
        "{:<40} {:>12} {:>12} {:>8} {:>12} {:>12} {:>8}",
        "workload", "median w/o", "median with", "ratio", "best w/o", "best with", "ratio"
    );
    for (name, g) in rows {
        let (b0, b1) = (best(&without, g), best(&with, g));
        println!(
            "{:<40} {:>12.1} {:>12.1} {:>8.3} {:>12.1} {:>12.1} {:>8.3}",
            name,
            med(&without, g),
            med(&with, g),
            ratio(g),
            b0,
            b1,
            b1 / b0
        );
    }
}
