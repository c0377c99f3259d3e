//! `spf run` and `spf validate`.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use spf_pipeline::config::{self, Config, ConfigErrors, Registry};
use spf_pipeline::runner::{self, Pipeline, RunOptions};
use spf_pipeline::stage::tokio_stop::StopFlag;

use crate::cli::{DirectionArg, HookArg, OutFormat, RunArgs, TimeArg, ViewArg};
use crate::{command, privileges};

/// Every component type this build knows.
pub fn registry() -> Registry {
    let mut reg = Registry::new();
    spf_decoders::register(&mut reg);
    spf_sinks::register(&mut reg);
    spf_probes::register(&mut reg);
    spf_nats::register(&mut reg);
    reg
}

const CONFIG_ERROR: u8 = 2;

fn report_config(errors: &ConfigErrors) -> ExitCode {
    let n = errors.0.len();
    for e in &errors.0 {
        spf_pipeline::diag!("spf: {e}");
    }
    if n > 1 {
        spf_pipeline::diag!("spf: {n} errors in the config");
    }
    ExitCode::from(CONFIG_ERROR)
}

pub fn validate(path: &Path) -> Result<ExitCode> {
    match config::load_file(&registry(), path) {
        Ok(cfg) => {
            // A closed stdout is no reason to fail a check that passed.
            let _ = writeln!(
                std::io::stdout(),
                "{}: ok (source {}, decoder {}, {} sink{})",
                path.display(),
                cfg.source_type,
                cfg.decoder_type,
                cfg.sinks.len(),
                if cfg.sinks.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(report_config(&e)),
    }
}

/// The quick flags, written as the config file they stand for, so that they go
/// through exactly the same validation and assembly as `-c`.
fn config_from_flags(args: &RunArgs, command_pid: Option<&u32>) -> String {
    let mut doc = toml::Table::new();
    let mut source = toml::Table::new();
    if let Some(replay) = &args.replay {
        source.insert("type".into(), "file".into());
        source.insert("path".into(), replay.display().to_string().into());
    } else {
        source.insert("type".into(), "unix".into());
        if !args.path.is_empty() {
            source.insert(
                "path".into(),
                toml::Value::Array(args.path.iter().map(|p| p.as_str().into()).collect()),
            );
        }
        if !args.pid.is_empty() {
            source.insert(
                "pid".into(),
                toml::Value::Array(args.pid.iter().map(|&p| i64::from(p).into()).collect()),
            );
        }
        if !args.comm.is_empty() {
            source.insert(
                "comm".into(),
                toml::Value::Array(args.comm.iter().map(|c| c.as_str().into()).collect()),
            );
        }
        let lists: [(&str, Vec<toml::Value>); 3] = [
            (
                "cgroup",
                args.cgroup.iter().map(|c| c.as_str().into()).collect(),
            ),
            (
                "container",
                args.container.iter().map(|c| c.as_str().into()).collect(),
            ),
            (
                "pid_tree",
                args.pid_tree
                    .iter()
                    .chain(command_pid)
                    .map(|&p| i64::from(p).into())
                    .collect(),
            ),
        ];
        for (key, values) in lists {
            if !values.is_empty() {
                source.insert(key.into(), toml::Value::Array(values));
            }
        }
        if let Some(d) = args.direction {
            let d = match d {
                DirectionArg::Both => "both",
                DirectionArg::Send => "send",
                DirectionArg::Recv => "recv",
            };
            source.insert("direction".into(), d.into());
        }
        if let Some(h) = args.hook {
            let h = match h {
                HookArg::Auto => "auto",
                HookArg::Syscall => "syscall",
                HookArg::Kernel => "kernel",
            };
            source.insert("hook".into(), h.into());
        }
        if let Some(s) = args.snaplen {
            source.insert(
                "snaplen".into(),
                i64::try_from(s).unwrap_or(i64::MAX).into(),
            );
        }
    }
    if let Some(v) = args.view {
        let v = match v {
            ViewArg::Connection => "connection",
            ViewArg::Syscalls => "syscalls",
        };
        source.insert("view".into(), v.into());
    }
    doc.insert("source".into(), source.into());
    // Without --decoder the registry's default decoder applies, as for a config
    // file without a [decoder] section.
    if let Some(d) = &args.decoder {
        let mut decoder = toml::Table::new();
        decoder.insert("type".into(), d.as_str().into());
        doc.insert("decoder".into(), decoder.into());
    }
    let mut sinks = Vec::new();
    // With `-w -` stdout carries pcapng instead of the records.
    if !pcapng_to_stdout(args) {
        let mut stdout = toml::Table::new();
        stdout.insert("type".into(), "stdout".into());
        let format = match args.format.unwrap_or(OutFormat::Pretty) {
            OutFormat::Pretty => "pretty",
            OutFormat::Ndjson => "ndjson",
        };
        stdout.insert("format".into(), format.into());
        if args.verbose > 0 {
            stdout.insert("verbose".into(), i64::from(args.verbose).into());
        }
        if let Some(t) = args.time {
            let t = match t {
                TimeArg::Date => "date",
                TimeArg::Local => "local",
                TimeArg::Utc => "utc",
                TimeArg::Relative => "relative",
            };
            stdout.insert("time".into(), t.into());
        }
        sinks.push(toml::Value::Table(stdout));
    }
    if let Some(out) = &args.output {
        let mut f = toml::Table::new();
        // `.spfcap`: the binary capture, the events only; else NDJSON with
        // every event and every record.
        if out.extension().is_some_and(|e| e == "spfcap") {
            f.insert("type".into(), "capture".into());
        } else {
            f.insert("type".into(), "ndjson".into());
            f.insert("events".into(), true.into());
        }
        f.insert("path".into(), out.display().to_string().into());
        sinks.push(toml::Value::Table(f));
    }
    if let Some(out) = &args.write {
        let mut f = toml::Table::new();
        f.insert("type".into(), "pcapng".into());
        f.insert("path".into(), out.display().to_string().into());
        sinks.push(toml::Value::Table(f));
    }
    if args.stats || args.stats_every.is_some() {
        let mut summary = toml::Table::new();
        summary.insert("type".into(), "summary".into());
        if let Some(secs) = args.stats_every {
            summary.insert(
                "interval".into(),
                i64::try_from(secs).unwrap_or(i64::MAX).into(),
            );
        }
        sinks.push(toml::Value::Table(summary));
    }
    doc.insert("sink".into(), toml::Value::Array(sinks));
    toml::to_string(&doc).unwrap_or_default()
}

fn pcapng_to_stdout(args: &RunArgs) -> bool {
    args.write.as_deref() == Some(Path::new("-"))
}

/// The sinks `config_from_flags` writes, in its order, each as the flag
/// that made it: `--output` or `-w` for a file, empty for stdout (the
/// summary, last, writes no file).
fn flag_sinks(args: &RunArgs) -> impl Iterator<Item = &'static str> {
    [
        (!pcapng_to_stdout(args), ""),
        (args.output.is_some(), "--output"),
        (args.write.is_some(), "-w"),
    ]
    .into_iter()
    .filter(|p| p.0)
    .map(|p| p.1)
}

/// The flag that made sink `i` of the config, for a sink that writes a file.
fn sink_flag(i: usize, args: &RunArgs) -> Option<&'static str> {
    flag_sinks(args).nth(i).filter(|f| !f.is_empty())
}

fn flag_for_key<'a>(key: &'a str, args: &RunArgs) -> &'a str {
    let replay = args.replay.is_some();
    let base = key.split('.').take(2).collect::<Vec<_>>().join(".");
    if let Some(i) = base
        .strip_prefix("sink[")
        .and_then(|r| r.strip_suffix("].path"))
        .and_then(|i| i.parse::<usize>().ok())
        && let Some(flag) = sink_flag(i, args)
    {
        return flag;
    }
    match base.as_str() {
        "source.path" if replay => "--replay",
        "source.path" => "--path",
        "source.pid" => "--pid",
        "source.comm" => "--comm",
        "source.snaplen" => "--snaplen",
        "source.cgroup" => "--cgroup",
        "source.container" => "--container",
        "source.pid_tree" => "--pid-tree",
        "source.direction" => "--direction",
        "source.view" => "--view",
        "source.hook" => "--hook",
        "decoder.type" | "decoder" => "--decoder",
        _ if base.starts_with("sink[") => match key.rsplit('.').next() {
            Some("verbose") => "-v",
            Some("time") => "--time",
            Some("interval") => "--stats-every",
            _ => key,
        },
        _ => key,
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    // SIGUSR1 asks for the summary so far, with or without a summary sink;
    // left to its default it would end spf unflushed. Handled from the
    // start: a held command's fork would die of it too (its exec then
    // restores the default for the command).
    spf_pipeline::signal::install().map_err(|e| anyhow::anyhow!(e))?;
    if pcapng_to_stdout(&args) && args.format.is_some() {
        spf_pipeline::diag!("spf: --format: with `-w -` stdout carries pcapng, not records");
        return Ok(ExitCode::from(CONFIG_ERROR));
    }
    let reg = registry();
    // A command to capture is forked first, held before it runs, so that the
    // probe follows it from its first instruction (see command.rs).
    let held = if args.command.is_empty() {
        None
    } else if !command::runnable(&args.command[0]) {
        // Said before the probe is loaded, not after a capture of nothing;
        // 127 as a shell says it.
        spf_pipeline::diag!(
            "spf: cannot run `{}`: no such file or command (or not executable)",
            args.command[0].to_string_lossy()
        );
        return Ok(ExitCode::from(127));
    } else {
        Some(command::Held::spawn(&args.command)?)
    };
    let command_pid = held.as_ref().map(command::Held::pid);
    let loaded = match &args.config {
        Some(path) => config::load_file(&reg, path),
        None => config::parse(
            &reg,
            "command line",
            &config_from_flags(&args, command_pid.as_ref()),
        ),
    };
    let mut cfg = match loaded {
        Ok(c) => c,
        Err(mut e) if args.config.is_none() => {
            // Positions in the generated config mean nothing to the user: name the
            // flag instead.
            for err in &mut e.0 {
                err.line = 0;
                err.key = flag_for_key(&err.key, &args).to_string();
                // A message naming another sink names its flag too.
                for (i, flag) in flag_sinks(&args).enumerate() {
                    if !flag.is_empty() {
                        err.message = err.message.replace(&format!("sink[{i}]"), flag);
                    }
                }
            }
            return Ok(report_config(&e));
        }
        Err(e) => return Ok(report_config(&e)),
    };
    if let Some(n) = args.count {
        cfg.run.count = Some(n);
    }
    if let Some(c) = args.follow {
        cfg.run.conn = Some(c);
    }
    if args.config.is_none()
        && args.replay.is_none()
        && args.path.is_empty()
        && args.pid.is_empty()
        && args.comm.is_empty()
        && args.cgroup.is_empty()
        && args.container.is_empty()
        && args.pid_tree.is_empty()
        && held.is_none()
        && !args.quiet
    {
        spf_pipeline::diag!(
            "spf: no --path, --pid or --comm: capturing every Unix socket on this machine"
        );
    }
    // The user to become once the pipeline is built: looked up now, so that a
    // missing one is a config error before anything is loaded.
    let (user, explicit, key) = match (&args.user, &cfg.run.user) {
        (Some(u), _) => (u.as_str(), true, "--user"),
        (None, Some(u)) => (u.as_str(), true, "run.user"),
        (None, None) => (cfg.run.user_name(), false, "run.user"),
    };
    let identity = match privileges::Identity::resolve(user, explicit) {
        Ok(i) => i,
        Err(e) => {
            spf_pipeline::diag!("spf: {key}: {e}");
            return Ok(ExitCode::from(CONFIG_ERROR));
        }
    };
    run_config(&cfg, args.quiet, &identity, held)
}

/// Runs a validated config to completion and prints the summary. The pipeline is
/// built (probe attached, outputs open, plugins loaded) before the runtime starts
/// a thread, and privileges are dropped in between. SIGUSR1 is handled by
/// then (see run).
fn run_config(
    cfg: &Config,
    quiet: bool,
    identity: &privileges::Identity,
    command: Option<command::Held>,
) -> Result<ExitCode> {
    // On failure from here on, a held command is dropped: it ends before it
    // ever ran.
    let pipeline = match Pipeline::build(cfg) {
        Ok(p) => p,
        // A value of the config refused (a plugin's init): exit as for the
        // errors found while reading it.
        Err(e) if e.in_config => {
            spf_pipeline::diag!("spf: {e}");
            return Ok(ExitCode::from(CONFIG_ERROR));
        }
        Err(e) => return Err(anyhow::anyhow!("{e}")),
    };
    let capturing = pipeline.capture();
    let mut syscalls = cfg.extra_syscalls();
    if command.is_some() {
        // Waiting for the command, on a thread of its own.
        syscalls.extend([libc::SYS_wait4, libc::SYS_waitid]);
    }
    privileges::drop_privileges(identity, &syscalls)?;
    let command = command.map(command::Held::release).transpose()?;
    // SIGINT and SIGTERM wait, blocked, until their handler listens: one
    // that came between the handler's installation and its listener's
    // registration was lost (the process showed the signal caught, and
    // went on). The runtime's threads inherit the block for good; this
    // thread unblocks them once the handler listens, and receives them.
    let stop_signals = StopSignals::block();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = rt.block_on(async {
        let stop = StopFlag::default();
        let signalled = spawn_signal_handler(stop.clone(), quiet)?;
        stop_signals.unblock();
        // A live capture runs from here, and Ctrl-C is handled: say so, for
        // whoever waits to start their traffic.
        if !quiet && let Some(how) = &capturing {
            spf_pipeline::diag!("spf: capturing ({how}); Ctrl-C stops and flushes");
        }
        // The command's end is the capture's end: its exit status is spf's.
        let exited = command.map(|c| {
            let stop = stop.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let status = c.wait();
                // The status first: the runner, stopped, finds it there.
                let _ = tx.send(status);
                stop.set();
            });
            rx
        });
        let outcome = runner::run(pipeline, RunOptions::from_config(cfg, !quiet), stop).await;
        // After `| head` closed the output, leave quietly, as other Unix tools do.
        if !quiet && !outcome.summary.output_closed {
            // stderr may be closed too; the summary is not worth failing over.
            let _ = writeln!(std::io::stderr(), "spf: {}", outcome.summary);
        }
        outcome.result.map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(conn) = cfg.run.conn
            && outcome.summary.events == 0
            && !quiet
        {
            let _ = writeln!(
                std::io::stderr(),
                "spf: --follow {conn}: no event of that connection; ids are `conn N` on -v's lines and `conn` in NDJSON"
            );
        }
        if outcome.summary.events == 0 && outcome.summary.skipped > 0 {
            anyhow::bail!(
                "none of the input could be read ({} unreadable lines or records skipped)",
                outcome.summary.skipped
            );
        }
        let Some(mut exited) = exited else {
            return Ok(ExitCode::SUCCESS);
        };
        let status = match exited.try_recv() {
            Ok(status) => status,
            // Told to stop (Ctrl-C, SIGTERM): spf's own outcome; from a
            // terminal, Ctrl-C reached the command too.
            Err(_) if signalled.load(std::sync::atomic::Ordering::Relaxed) => {
                return Ok(ExitCode::SUCCESS);
            }
            // The capture ended first (--count, the output closed): the
            // command is not left behind, its status is still spf's. Ctrl-C
            // leaves while it waits.
            Err(_) => {
                if !quiet {
                    let _ = writeln!(
                        std::io::stderr(),
                        "spf: capture ended; waiting for the command to exit"
                    );
                }
                exited.await.context("waiting for the command")?
            }
        };
        let status = status.context("waiting for the command")?;
        Ok(ExitCode::from(command::exit_code(status)))
    });
    // A source thread may still be blocked on input (a quiet FIFO); everything it
    // handed over has been written, so do not wait for it.
    rt.shutdown_background();
    result
}

/// A signal this soon after the first is the same interrupt delivered twice:
/// `timeout -s INT` signals spf and then its whole process group, and a
/// supervisor may signal the group as well as the process.
const SAME_INTERRUPT: std::time::Duration = std::time::Duration::from_secs(1);

/// First SIGINT/SIGTERM: stop cleanly (drain, flush). Another one, once
/// `SAME_INTERRUPT` has passed: leave now.
/// SIGINT and SIGTERM, blocked in the calling thread (and the threads it
/// starts) until `unblock`.
struct StopSignals(libc::sigset_t);

impl StopSignals {
    fn block() -> StopSignals {
        // SAFETY: a zeroed sigset_t is filled by sigemptyset before use;
        // pthread_sigmask changes only this thread's mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            StopSignals(set)
        }
    }

    /// Lets them in on this thread: one that came meanwhile is delivered now.
    fn unblock(&self) {
        // SAFETY: as in block.
        unsafe {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.0, std::ptr::null_mut());
        }
    }
}

/// Returns whether a signal began the stop.
fn spawn_signal_handler(
    stop: StopFlag,
    quiet: bool,
) -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let signalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let said = signalled.clone();
    tokio::spawn(async move {
        let mut first: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            match first {
                None => {
                    first = Some(std::time::Instant::now());
                    said.store(true, std::sync::atomic::Ordering::Relaxed);
                    stop.set();
                    if !quiet {
                        // Not eprintln: stderr may be a pipe whose reader the
                        // same Ctrl-C ended, and a panic here would end this
                        // task and with it every later interrupt.
                        // Over the live status line, where a terminal shows one.
                        use std::io::IsTerminal as _;
                        let clear = if std::io::stderr().is_terminal() {
                            "\r\x1b[K"
                        } else {
                            ""
                        };
                        let _ = writeln!(
                            std::io::stderr(),
                            "{clear}spf: stopping; interrupt again to leave without flushing"
                        );
                    }
                }
                Some(t) if t.elapsed() >= SAME_INTERRUPT => std::process::exit(130),
                Some(_) => {}
            }
        }
    });
    Ok(signalled)
}
