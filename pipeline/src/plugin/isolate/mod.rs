//! `isolate = true`: a plugin that runs in a process of its own.
//!
//! spf starts itself again as `spf plugin-host` (the hidden entry point
//! [`host_main`]), hands it the plugin's library on a descriptor, and talks to
//! it through two pipes with the framing of [`frame`]. The process drops root
//! for an unprivileged user, keeps no capabilities, sets `no_new_privs`, loads
//! the plugin and then allows itself only the system calls of a plugin host
//! (its two pipes, memory, time). The library is never loaded into spf itself:
//! even the handshake happens in the child.
//!
//! Events stream to the process without waiting for each answer (up to
//! [`MAX_IN_FLIGHT`] calls); answers are taken as they come and at the latest
//! when the run catches up with its input ([`Decoder::flush`]). A process that
//! crashes, calls `exit`, breaks the protocol or does not answer a call within
//! the deadline becomes a `PLUGIN_ERROR` record on the event it was working on,
//! and a new process takes over (the calls it had not answered are handed to
//! the new one); more than `max_restarts` in a minute switch the plugin off
//! with `PLUGIN_DISABLED`. spf itself goes on.

mod child;
mod frame;
mod process;
mod sandbox;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use child::{HOST_ARG, host_main};
pub use process::prepare;

use super::decoder::{Anchors, event_view};
use super::load::{Kind, PluginInfo};
use super::output::{Emit, PLUGIN_DISABLED, PLUGIN_ERROR};
use super::sink::failed_calls_report;
use crate::config::BuildError;
use crate::event::Event;
use crate::limits::Budget;
use crate::record::Record;
use crate::stage::{Decoder, Out, Sink, SinkError, SinkReport};
use process::{Fault, Msg, Process};

/// Calls sent to a process and not yet answered, at most.
pub const MAX_IN_FLIGHT: usize = 256;
/// Bytes queued for a process before spf waits for it to take them.
const MAX_UNSENT: usize = 4 << 20;
/// Restarts counted over this window for `max_restarts`.
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// System calls spf makes, beyond what any pipeline makes, to start a plugin host
/// again once it has dropped its own privileges (a restart after a crash), and
/// that the new process makes until it installs its own, narrower filter: it
/// inherits spf's. Found by tracing restarts under spf's filter.
pub fn supervisor_syscalls() -> Vec<libc::c_long> {
    let mut calls = vec![
        // spf: a child process and its pipes, waiting for it, killing a hung one.
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_pipe2,
        libc::SYS_wait4,
        libc::SYS_waitid,
        libc::SYS_kill,
        libc::SYS_ppoll,
        // The child, from fork to exec: the library onto its descriptor, the exec.
        libc::SYS_dup3,
        libc::SYS_execve,
        // The plugin host starting (the dynamic linker, the C library and Rust's
        // runtime), then giving up what it may (prctl) and sealing itself.
        libc::SYS_set_tid_address,
        libc::SYS_newfstatat,
        libc::SYS_fstat,
        libc::SYS_prlimit64,
        libc::SYS_readlinkat,
        libc::SYS_close_range,
        libc::SYS_prctl,
        libc::SYS_seccomp,
        // Its allocator reading the machine's memory settings, as the first
        // host's did before spf dropped its privileges.
        libc::SYS_sysinfo,
    ];
    // The older numbers x86-64's C library still uses, and its TLS setup.
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        libc::SYS_open,
        libc::SYS_poll,
        libc::SYS_dup2,
        libc::SYS_readlink,
        libc::SYS_arch_prctl,
    ]);
    calls
}

/// The host keys of an isolated plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolateOptions {
    /// How long one call may take before the process is killed as hung.
    pub deadline: Duration,
    /// Restarts allowed within a minute; one more switches the plugin off.
    pub max_restarts: u32,
    /// Who the process runs as when spf runs as root.
    pub user: String,
}

impl Default for IsolateOptions {
    fn default() -> Self {
        IsolateOptions {
            deadline: Duration::from_millis(5000),
            max_restarts: 5,
            user: "nobody".into(),
        }
    }
}

/// Loads and handshakes the plugin at `path` in a plugin host, never in spf:
/// what `spf validate` and the config do for an isolated plugin.
pub fn check(path: &Path, kind: Kind, opts: &IsolateOptions) -> Result<PluginInfo, String> {
    // The host checks the file as spf would (and as ELF data) before loading it.
    let meta = std::fs::metadata(path).map_err(|e| {
        super::LoadError::Unreadable {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
        .to_string()
    })?;
    super::load::vet_file(path, &meta, super::load::is_root()).map_err(|e| e.to_string())?;
    let (p, hello) = Process::start(path, kind, &opts.user, opts.deadline.max(CHECK_DEADLINE))
        .map_err(|e| {
            e.replace(
                &format!("/proc/self/fd/{}", child::LIBRARY_FD),
                &path.display().to_string(),
            )
        })?;
    p.close(Duration::from_millis(500));
    Ok(info(path, kind, &hello))
}

/// Time a plugin host has to load a plugin and say hello.
const CHECK_DEADLINE: Duration = Duration::from_secs(10);

fn info(path: &Path, kind: Kind, h: &process::Hello) -> PluginInfo {
    PluginInfo {
        path: path.to_path_buf(),
        kind,
        name: h.name.clone(),
        version: h.version.clone(),
        abi_major: h.abi_major,
        abi_minor: h.abi_minor,
    }
}

/// One isolated plugin's process, restarted when it fails.
struct Supervisor {
    lib: PathBuf,
    kind: Kind,
    config: String,
    opts: IsolateOptions,
    label: String,
    proc: Option<Process>,
    restarts: VecDeque<Instant>,
}

impl Supervisor {
    /// Starts a process and initialises the plugin in it.
    fn start(&mut self) -> Result<(), BuildError> {
        let (mut p, _) = Process::start(&self.lib, self.kind, &self.opts.user, CHECK_DEADLINE)
            .map_err(BuildError::new)?;
        let config = self.config.clone();
        p.send(frame::INIT, |w| {
            w.bytes(config.as_bytes());
        });
        let until = Instant::now() + CHECK_DEADLINE;
        let mut result = None;
        while result.is_none() {
            p.wait_io(until, CHECK_DEADLINE)
                .map_err(|f| BuildError::new(f.to_string()))?;
            p.messages(&mut |m| {
                if let Msg::Done { rc, message, .. } = m {
                    result = Some((rc, String::from_utf8_lossy(message).into_owned()));
                    return false;
                }
                true
            })
            .map_err(|f| BuildError::new(f.to_string()))?;
        }
        match result {
            Some((spf_plugin::SPF_OK, _)) => {
                self.proc = Some(p);
                Ok(())
            }
            Some((rc, msg)) => Err(BuildError::in_config(format!(
                "{}: init failed: {}; check the plugin's keys in the config",
                self.label,
                if msg.is_empty() {
                    format!("error code {rc}")
                } else {
                    msg
                }
            ))),
            None => Err(BuildError::new("no answer to init")),
        }
    }

    /// After a fault: a new process, unless too many were needed lately.
    fn restart(&mut self) -> Result<(), String> {
        self.proc = None;
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= self.opts.max_restarts as usize {
            return Err(format!(
                "it failed {} times within a minute (max_restarts = {})",
                self.restarts.len() + 1,
                self.opts.max_restarts
            ));
        }
        self.restarts.push_back(now);
        self.start().map_err(|e| e.to_string())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.close(Duration::from_secs(1));
        }
    }
}

/// A call sent and not yet answered.
enum Call {
    Decode(Arc<Event>),
    Lost(u64, Arc<Event>),
    Closed(u64, Arc<Event>),
    Finish(Arc<Event>),
    Detect(Arc<Event>, Vec<u8>),
}

impl Call {
    fn anchor(&self) -> &Arc<Event> {
        match self {
            Call::Decode(e)
            | Call::Lost(_, e)
            | Call::Closed(_, e)
            | Call::Finish(e)
            | Call::Detect(e, _) => e,
        }
    }

    fn send(&self, p: &mut Process) {
        match self {
            Call::Decode(e) => {
                let v = event_view(e, &e.data);
                p.send(frame::DECODE, |w| {
                    w.view(&v);
                });
            }
            Call::Detect(e, data) => {
                let v = event_view(e, data);
                p.send(frame::DETECT, |w| {
                    w.view(&v);
                });
            }
            Call::Lost(n, _) => p.send(frame::LOST, |w| {
                w.u64(*n);
            }),
            Call::Closed(c, _) => p.send(frame::CLOSED, |w| {
                w.u64(*c);
            }),
            Call::Finish(_) => p.send(frame::FINISH, |_| {}),
        }
    }
}

/// A decoder plugin in its own process.
pub struct IsolatedDecoder {
    sup: Supervisor,
    info: PluginInfo,
    name: Arc<str>,
    in_flight: VecDeque<(Call, Instant)>,
    anchors: Anchors,
    max_errors: u64,
    failures_in_a_row: u64,
    disabled: bool,
    /// Records of answers taken while no `Out` was at hand (in `detect`),
    /// handed on at the next call that has one.
    held: Vec<Record>,
    /// The last `detect` answer.
    detected: Option<u32>,
}

impl IsolatedDecoder {
    pub(crate) fn new(
        info: PluginInfo,
        config: &str,
        max_errors: u64,
        opts: IsolateOptions,
        budget: Arc<Budget>,
    ) -> Result<Self, BuildError> {
        let label = format!("{} (isolated)", info.label());
        let mut sup = Supervisor {
            lib: info.path.clone(),
            kind: Kind::Decoder,
            config: config.to_string(),
            opts,
            label: label.clone(),
            proc: None,
            restarts: VecDeque::new(),
        };
        sup.start()?;
        Ok(IsolatedDecoder {
            name: Arc::from(info.name.as_str()),
            info,
            sup,
            in_flight: VecDeque::new(),
            anchors: Anchors::new(budget),
            max_errors,
            failures_in_a_row: 0,
            disabled: false,
            held: Vec::new(),
            detected: None,
        })
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Sends a call, then takes answers: all of them when `wait_all`, else as
    /// many as needed to keep within the in-flight bounds.
    fn call(&mut self, call: Call, out: &mut Out<'_>, wait_all: bool) {
        out.extend(self.held.drain(..));
        if self.disabled {
            return;
        }
        if let Some(p) = self.sup.proc.as_mut() {
            call.send(p);
            self.in_flight.push_back((call, Instant::now()));
        }
        let keep = if wait_all { 0 } else { MAX_IN_FLIGHT - 1 };
        self.settle(out, keep);
    }

    /// Takes answers until at most `keep` calls are in flight (and, with
    /// `keep` > 0, the queued bytes are within bounds), handling faults.
    fn settle(&mut self, out: &mut Out<'_>, keep: usize) {
        loop {
            let Some(p) = self.sup.proc.as_mut() else {
                return;
            };
            let busy = self.in_flight.len() > keep || (keep > 0 && p.unsent() > MAX_UNSENT);
            // Streaming: write and read only once there is enough to be worth
            // a system call.
            let worth =
                busy || p.unsent() >= (64 << 10) || self.in_flight.len() >= MAX_IN_FLIGHT / 2;
            if !worth {
                return;
            }
            let r = p.poll_now().and_then(|()| self.take_answers(out));
            let r = match r {
                Ok(()) if self.in_flight.len() > keep => {
                    let Some(p) = self.sup.proc.as_mut() else {
                        return;
                    };
                    let (_, sent) = self.in_flight.front().expect("calls in flight");
                    let deadline = self.sup.opts.deadline;
                    p.wait_io(*sent + deadline, deadline)
                        .and_then(|()| self.take_answers(out))
                }
                other => other,
            };
            match r {
                Ok(()) => {
                    let Some(p) = self.sup.proc.as_ref() else {
                        return;
                    };
                    if self.in_flight.len() <= keep && (keep == 0 || p.unsent() <= MAX_UNSENT) {
                        return;
                    }
                }
                Err(f) => self.fault(f, out),
            }
        }
    }

    /// Hands every answer read so far on to `out`.
    fn take_answers(&mut self, out: &mut Out<'_>) -> Result<(), Fault> {
        let Some(p) = self.sup.proc.as_mut() else {
            return Ok(());
        };
        let label = &self.sup.label;
        let name = &self.name;
        let in_flight = &mut self.in_flight;
        let mut failed: Vec<(Arc<Event>, String)> = Vec::new();
        let mut ok = 0u64;
        let mut detected = None;
        let mut stray = false;
        p.messages(&mut |m| {
            let Some((call, _)) = in_flight.front() else {
                stray = true;
                return false;
            };
            let mut emit = Emit {
                event: call.anchor(),
                decoder: name,
                label,
                out,
                rejected: false,
            };
            match m {
                Msg::Record { json, text } => {
                    emit.record(json, text);
                }
                Msg::Error { code, message } => {
                    emit.error(code, message);
                }
                Msg::Exchange { json } => {
                    emit.exchange(json);
                }
                Msg::Done { rc, value, message } => {
                    let (call, _) = in_flight.pop_front().expect("checked above");
                    if matches!(call, Call::Detect(..)) {
                        detected = Some(value);
                    }
                    if rc == spf_plugin::SPF_OK {
                        ok += 1;
                    } else {
                        let what = if rc == spf_plugin::SPF_PANIC {
                            "panicked"
                        } else {
                            "failed"
                        };
                        let detail = if message.is_empty() {
                            format!("error code {rc}")
                        } else {
                            String::from_utf8_lossy(message).into_owned()
                        };
                        failed.push((call.anchor().clone(), format!("{label} {what}: {detail}")));
                    }
                }
            }
            true
        })?;
        if stray {
            if let Some(p) = self.sup.proc.as_mut() {
                p.kill();
            }
            return Err(Fault::Protocol("an answer to no call".into()));
        }
        if detected.is_some() {
            self.detected = detected;
        }
        if ok > 0 && failed.is_empty() {
            self.failures_in_a_row = 0;
        }
        for (anchor, message) in failed {
            out.push(Record::error(
                anchor.clone(),
                self.name.clone(),
                Some(PLUGIN_ERROR.into()),
                message,
            ));
            self.failures_in_a_row += 1;
            if self.max_errors > 0 && self.failures_in_a_row >= self.max_errors && !self.disabled {
                self.disable(
                    &anchor,
                    format!("failed {} calls in a row", self.failures_in_a_row),
                    out,
                );
            }
        }
        Ok(())
    }

    fn disable(&mut self, anchor: &Arc<Event>, why: String, out: &mut Out<'_>) {
        self.disabled = true;
        out.push(Record::error(
            anchor.clone(),
            self.name.clone(),
            Some(PLUGIN_DISABLED.into()),
            format!(
                "{} {why} and is disabled for the rest of this run; later events are not decoded",
                self.sup.label
            ),
        ));
        self.in_flight.clear();
        if let Some(p) = self.sup.proc.take() {
            p.close(Duration::from_millis(200));
        }
    }

    /// The process failed: an error record on the call it was working on, a
    /// new process, and the calls it had not answered handed to the new one.
    fn fault(&mut self, f: Fault, out: &mut Out<'_>) {
        // Answers that came before the end are still in the read buffer: they
        // belong to the calls before the one it failed on.
        let _ = self.take_answers(out);
        let pid = self.sup.proc.as_ref().map_or(0, |p| p.pid);
        let Some((culprit, _)) = self.in_flight.pop_front() else {
            // Between calls: nothing was lost but the process.
            if let Err(why) = self.sup.restart() {
                let anchor = self.anchors.anchor(None);
                self.disable(&anchor, why, out);
            }
            return;
        };
        let anchor = culprit.anchor().clone();
        out.push(Record::error(
            anchor.clone(),
            self.name.clone(),
            Some(PLUGIN_ERROR.into()),
            format!(
                "{} process {pid} {f} while handling this {}; starting a new one",
                self.sup.label,
                match culprit {
                    Call::Decode(_) => "event",
                    Call::Detect(..) => "detection",
                    Call::Lost(..) => "loss",
                    Call::Closed(..) => "connection end",
                    Call::Finish(_) => "end of input",
                }
            ),
        ));
        let rest: Vec<Call> = self.in_flight.drain(..).map(|(c, _)| c).collect();
        match self.sup.restart() {
            Ok(()) => {
                let p = self.sup.proc.as_mut().expect("just started");
                let now = Instant::now();
                for c in rest {
                    c.send(p);
                    self.in_flight.push_back((c, now));
                }
            }
            Err(why) => self.disable(&anchor, why, out),
        }
    }
}

impl Decoder for IsolatedDecoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn decode(&mut self, event: &Arc<Event>, out: &mut Out<'_>) {
        if event.data.len() > frame::MAX_TO_CHILD - 4096 {
            out.push(Record::error(
                event.clone(),
                self.name.clone(),
                Some(PLUGIN_ERROR.into()),
                format!(
                    "{}: an event of {} bytes is more than an isolated plugin takes",
                    self.sup.label,
                    event.data.len()
                ),
            ));
            return;
        }
        self.anchors.seen(event);
        self.call(Call::Decode(event.clone()), out, false);
    }

    fn lost(&mut self, count: u64, out: &mut Out<'_>) {
        let anchor = self.anchors.anchor(None);
        self.call(Call::Lost(count, anchor), out, false);
    }

    fn closed(&mut self, conn: u64, out: &mut Out<'_>) {
        let anchor = self.anchors.anchor(Some(conn));
        self.call(Call::Closed(conn, anchor), out, false);
    }

    fn finish(&mut self, out: &mut Out<'_>) {
        let anchor = self.anchors.anchor(None);
        self.call(Call::Finish(anchor), out, true);
        self.anchors.clear();
    }

    fn flush(&mut self, out: &mut Out<'_>) {
        out.extend(self.held.drain(..));
        self.settle(out, 0);
    }

    fn detect(&mut self, data: &[u8], event: &Event) -> u8 {
        let mut held = std::mem::take(&mut self.held);
        self.detected = None;
        {
            let mut out = Out::collect(&mut held);
            let anchor = Arc::new(event.clone());
            self.call(Call::Detect(anchor, data.to_vec()), &mut out, true);
        }
        self.held = held;
        self.detected.take().unwrap_or(0).min(100) as u8
    }
}

/// A sink plugin in its own process.
pub struct IsolatedSink {
    sup: Supervisor,
    info: PluginInfo,
    line: Vec<u8>,
    /// Lines sent and not yet answered (`None`: a flush).
    in_flight: VecDeque<(Option<Vec<u8>>, Instant)>,
    max_errors: u64,
    failures_in_a_row: u64,
    /// Failed calls in all, for the run's summary.
    failures: u64,
    disabled: bool,
    events: bool,
}

impl IsolatedSink {
    pub(crate) fn new(
        info: PluginInfo,
        config: &str,
        max_errors: u64,
        events: bool,
        opts: IsolateOptions,
    ) -> Result<Self, BuildError> {
        let label = format!("{} (isolated)", info.label());
        let mut sup = Supervisor {
            lib: info.path.clone(),
            kind: Kind::Sink,
            config: config.to_string(),
            opts,
            label,
            proc: None,
            restarts: VecDeque::new(),
        };
        sup.start()?;
        Ok(IsolatedSink {
            sup,
            info,
            line: Vec::with_capacity(1024),
            in_flight: VecDeque::new(),
            max_errors,
            failures_in_a_row: 0,
            failures: 0,
            disabled: false,
            events,
        })
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn settle(&mut self, keep: usize) {
        loop {
            let Some(p) = self.sup.proc.as_mut() else {
                return;
            };
            if self.in_flight.len() <= keep && p.unsent() < (64 << 10) && keep > 0 {
                return;
            }
            let mut r = p.poll_now().and_then(|()| self.take_answers());
            if r.is_ok() && self.in_flight.len() > keep {
                let (_, sent) = self.in_flight.front().expect("in flight");
                let deadline = self.sup.opts.deadline;
                let until = *sent + deadline;
                r = match self.sup.proc.as_mut() {
                    Some(p) => p
                        .wait_io(until, deadline)
                        .and_then(|()| self.take_answers()),
                    None => return,
                };
            }
            match r {
                Ok(()) if self.in_flight.len() <= keep => return,
                Ok(()) => {}
                Err(f) => self.fault(f),
            }
        }
    }

    fn take_answers(&mut self) -> Result<(), Fault> {
        let Some(p) = self.sup.proc.as_mut() else {
            return Ok(());
        };
        let mut results = Vec::new();
        let in_flight = &mut self.in_flight;
        p.messages(&mut |m| {
            if let Msg::Done { rc, message, .. } = m
                && in_flight.pop_front().is_some()
            {
                results.push((rc, String::from_utf8_lossy(message).into_owned()));
            }
            true
        })?;
        for (rc, msg) in results {
            if rc == spf_plugin::SPF_OK {
                self.failures_in_a_row = 0;
                continue;
            }
            self.failures_in_a_row += 1;
            self.failures += 1;
            let verb = if rc == spf_plugin::SPF_PANIC {
                "panicked"
            } else {
                "failed"
            };
            crate::diag!("spf: {} {verb}: {msg}", self.sup.label);
            if self.max_errors > 0 && self.failures_in_a_row >= self.max_errors && !self.disabled {
                self.disabled = true;
                crate::diag!(
                    "spf: {} failed {} calls in a row and is disabled for the rest of this run; the other sinks go on",
                    self.sup.label,
                    self.failures_in_a_row
                );
            }
        }
        Ok(())
    }

    fn fault(&mut self, f: Fault) {
        let _ = self.take_answers();
        let pid = self.sup.proc.as_ref().map_or(0, |p| p.pid);
        crate::diag!(
            "spf: {} process {pid} {f}; one record was not written; starting a new one",
            self.sup.label
        );
        self.in_flight.pop_front();
        let rest: Vec<_> = self.in_flight.drain(..).map(|(l, _)| l).collect();
        match self.sup.restart() {
            Ok(()) => {
                let p = self.sup.proc.as_mut().expect("just started");
                let now = Instant::now();
                for l in rest {
                    match &l {
                        Some(line) => p.send(frame::WRITE, |w| {
                            w.bytes(line);
                        }),
                        None => p.send(frame::FLUSH, |_| {}),
                    }
                    self.in_flight.push_back((l, now));
                }
            }
            Err(why) => {
                self.disabled = true;
                crate::diag!(
                    "spf: {} {why} and is disabled for the rest of this run; the other sinks go on",
                    self.sup.label
                );
            }
        }
    }
}

impl Sink for IsolatedSink {
    fn describe(&self) -> String {
        self.sup.label.clone()
    }

    fn wants_events(&self) -> bool {
        self.events
    }

    fn write(&mut self, record: &Record) -> Result<(), SinkError> {
        if self.disabled {
            return Ok(());
        }
        self.line.clear();
        crate::ndjson::encode(record, &mut self.line);
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
        }
        if let Some(p) = self.sup.proc.as_mut() {
            let line = &self.line;
            p.send(frame::WRITE, |w| {
                w.bytes(line);
            });
            self.in_flight
                .push_back((Some(self.line.clone()), Instant::now()));
        }
        self.settle(MAX_IN_FLIGHT - 1);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.disabled {
            return Ok(());
        }
        if let Some(p) = self.sup.proc.as_mut() {
            p.send(frame::FLUSH, |_| {});
            self.in_flight.push_back((None, Instant::now()));
        }
        self.settle(0);
        Ok(())
    }

    fn report(&mut self) -> SinkReport {
        failed_calls_report(&self.sup.label, self.failures)
    }
}
