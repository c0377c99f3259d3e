//! spf's side of one isolated plugin process: starting it (spf's own binary
//! again, as `plugin-host`), the handshake, and moving frames both ways through
//! non-blocking pipes with a deadline, so that a plugin that hangs or dies is
//! noticed and never blocks spf.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::child::{HOST_ARG, LIBRARY_FD};
use super::frame::{self, Reader, Writer};
use crate::plugin::load::Kind;

/// What the process said about the plugin it loaded.
#[derive(Debug, Clone)]
pub struct Hello {
    pub abi_major: u32,
    pub abi_minor: u32,
    pub name: String,
    pub version: String,
}

/// How a process stopped answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// It ended (crash, `exit`, a signal): the description of its status.
    Ended(String),
    /// It did not answer in time and was killed.
    Hung(Duration),
    /// It sent something that breaks the protocol, and was killed.
    Protocol(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Ended(s) => write!(f, "{s}"),
            Fault::Hung(d) => write!(
                f,
                "did not answer within {} ms and was killed",
                d.as_millis()
            ),
            Fault::Protocol(s) => write!(f, "broke the protocol ({s}) and was killed"),
        }
    }
}

/// One message from the process, borrowed from its read buffer.
pub enum Msg<'a> {
    Record {
        json: &'a [u8],
        text: &'a [u8],
    },
    Error {
        code: &'a [u8],
        message: &'a [u8],
    },
    Exchange {
        json: &'a [u8],
    },
    Done {
        rc: i32,
        value: u32,
        message: &'a [u8],
    },
}

/// spf's own executable, opened once: started again through its descriptor, it
/// needs no path that the user spf runs as (after dropping root) could not
/// reach.
fn own_exe() -> Result<&'static File, String> {
    static EXE: OnceLock<Result<File, String>> = OnceLock::new();
    EXE.get_or_init(|| {
        let f = File::open("/proc/self/exe")
            .map_err(|e| format!("opening spf's own executable: {e}"))?;
        // Kept clear of the low numbers, which a child's descriptors are set
        // to before the exec (the library goes to LIBRARY_FD).
        // SAFETY: F_DUPFD_CLOEXEC of a descriptor this process owns.
        let high = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 64) };
        if high < 0 {
            return Err(format!(
                "opening spf's own executable: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: a new descriptor nothing else owns.
        Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(high) })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Opens spf's executable now, while every path is still reachable.
pub fn prepare() -> Result<(), String> {
    own_exe().map(|_| ())
}

pub struct Process {
    child: Child,
    /// `None` once closed: the process then sees the end of its input.
    to: Option<File>,
    from: File,
    /// Frames not yet written.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Bytes read and not yet taken as frames.
    rbuf: Vec<u8>,
    rpos: usize,
    pub pid: u32,
}

fn set_nonblocking(f: &File) {
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

impl Process {
    /// Starts a plugin host for the library `lib` and reads its HELLO.
    pub fn start(
        lib: &Path,
        kind: Kind,
        user: &str,
        deadline: Duration,
    ) -> Result<(Process, Hello), String> {
        let exe = own_exe()?;
        let library = File::open(lib).map_err(|e| format!("opening {}: {e}", lib.display()))?;
        let library: OwnedFd = library.into();
        let lib_fd = library.as_raw_fd();
        let mut cmd = Command::new(format!("/proc/self/fd/{}", exe.as_raw_fd()));
        cmd.arg0("spf")
            .args([HOST_ARG, "--kind", kind.as_str(), "--user", user])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: signal, dup2 and fcntl are async-signal-safe; it gives the child the
        // library on a known descriptor, without the close-on-exec flag.
        unsafe {
            cmd.pre_exec(move || {
                // `kill -USR1 $(pidof spf)` reaches the hosts too (their
                // argv[0] is spf): ignored, which the exec keeps, rather
                // than the default that would end them.
                libc::signal(libc::SIGUSR1, libc::SIG_IGN);
                // dup2 onto itself would keep the close-on-exec flag.
                let r = if lib_fd == LIBRARY_FD {
                    libc::fcntl(lib_fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(lib_fd, LIBRARY_FD)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting the plugin host: {e}"))?;
        drop(library);
        let to: File = child
            .stdin
            .take()
            .map(OwnedFd::from)
            .map(File::from)
            .ok_or("no stdin")?;
        let from: File = child
            .stdout
            .take()
            .map(OwnedFd::from)
            .map(File::from)
            .ok_or("no stdout")?;
        set_nonblocking(&to);
        set_nonblocking(&from);
        // Bigger pipes: fewer wakeups when events stream through.
        // SAFETY: fcntl on descriptors this process owns; failure is harmless.
        unsafe {
            libc::fcntl(to.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
            libc::fcntl(from.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
        }
        let pid = child.id();
        let mut p = Process {
            child,
            to: Some(to),
            from,
            wbuf: Vec::with_capacity(256 << 10),
            wpos: 0,
            rbuf: Vec::with_capacity(256 << 10),
            rpos: 0,
            pid,
        };
        let until = Instant::now() + deadline;
        let hello = loop {
            if let Some((kind, payload)) = p.frame().map_err(|f| f.to_string())? {
                if kind != frame::HELLO {
                    p.kill();
                    return Err(format!("the plugin host said {kind:#x} before HELLO"));
                }
                let mut r = Reader::new(&p.rbuf[payload]);
                let parsed = (|| -> Result<Result<Hello, String>, frame::Malformed> {
                    if r.u8()? == 0 {
                        return Ok(Err(String::from_utf8_lossy(r.bytes()?).into_owned()));
                    }
                    Ok(Ok(Hello {
                        abi_major: r.u32()?,
                        abi_minor: r.u32()?,
                        name: String::from_utf8_lossy(r.bytes()?).into_owned(),
                        version: String::from_utf8_lossy(r.bytes()?).into_owned(),
                    }))
                })();
                p.consume();
                match parsed {
                    Ok(Ok(h)) => break h,
                    Ok(Err(refusal)) => {
                        p.kill();
                        return Err(refusal);
                    }
                    Err(e) => {
                        p.kill();
                        return Err(e.to_string());
                    }
                }
            }
            if let Err(f) = p.wait_io(until, deadline) {
                return Err(format!("the plugin host {f}"));
            }
        };
        Ok((p, hello))
    }

    /// Queues a frame built by `f`.
    pub fn send(&mut self, kind: u8, f: impl FnOnce(&mut Writer<'_>)) {
        let mut w = Writer::begin(&mut self.wbuf, kind);
        f(&mut w);
        w.end();
    }

    /// Bytes queued and not yet written.
    pub fn unsent(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Writes what it can without blocking.
    pub fn write_some(&mut self) -> Result<(), Fault> {
        let Some(to) = self.to.as_mut() else {
            return Err(Fault::Ended("its input was closed".into()));
        };
        while self.wpos < self.wbuf.len() {
            match to.write(&self.wbuf[self.wpos..]) {
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(self.ended()),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > (1 << 20) {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }

    /// Reads what it can without blocking; false when nothing came.
    fn read_some(&mut self) -> Result<bool, Fault> {
        let mut any = false;
        loop {
            if self.rpos > 0 && self.rpos == self.rbuf.len() {
                self.rbuf.clear();
                self.rpos = 0;
            }
            let have = self.rbuf.len();
            self.rbuf.resize(have + (256 << 10), 0);
            match self.from.read(&mut self.rbuf[have..]) {
                Ok(0) => {
                    self.rbuf.truncate(have);
                    return Err(self.ended());
                }
                Ok(n) => {
                    self.rbuf.truncate(have + n);
                    any = true;
                    if n < (256 << 10) {
                        return Ok(any);
                    }
                }
                Err(e) => {
                    self.rbuf.truncate(have);
                    match e.kind() {
                        std::io::ErrorKind::WouldBlock => return Ok(any),
                        std::io::ErrorKind::Interrupted => {}
                        _ => return Err(self.ended()),
                    }
                }
            }
        }
    }

    /// The next whole frame read, as (kind, payload range in the read buffer);
    /// call [`Process::consume`] when done with it.
    fn frame(&mut self) -> Result<Option<(u8, std::ops::Range<usize>)>, Fault> {
        match frame::split(&self.rbuf[self.rpos..], frame::MAX_FROM_CHILD) {
            Ok(Some((kind, payload, _))) => Ok(Some((
                kind,
                self.rpos + payload.start..self.rpos + payload.end,
            ))),
            Ok(None) => {
                if self.rpos > 0 {
                    self.rbuf.drain(..self.rpos);
                    self.rpos = 0;
                }
                Ok(None)
            }
            Err(len) => {
                self.kill();
                Err(Fault::Protocol(format!(
                    "a frame of {len} bytes, more than {}",
                    frame::MAX_FROM_CHILD
                )))
            }
        }
    }

    fn consume(&mut self) {
        if let Ok(Some((_, _, used))) = frame::split(&self.rbuf[self.rpos..], frame::MAX_FROM_CHILD)
        {
            self.rpos += used;
        }
    }

    /// Hands every whole message read so far to `on`, stopping after a DONE
    /// when `on` returns false for it. Returns false when it stopped early.
    pub fn messages(&mut self, on: &mut dyn FnMut(Msg<'_>) -> bool) -> Result<bool, Fault> {
        loop {
            let Some((kind, payload)) = self.frame()? else {
                return Ok(true);
            };
            let mut r = Reader::new(&self.rbuf[payload]);
            let msg = match kind {
                frame::RECORD => r.bytes().and_then(|json| {
                    Ok(Msg::Record {
                        json,
                        text: r.bytes()?,
                    })
                }),
                frame::ERROR => r.bytes().and_then(|code| {
                    Ok(Msg::Error {
                        code,
                        message: r.bytes()?,
                    })
                }),
                frame::EXCHANGE => r.bytes().map(|json| Msg::Exchange { json }),
                frame::DONE => (|| {
                    Ok(Msg::Done {
                        rc: r.i32()?,
                        value: r.u32()?,
                        message: r.bytes()?,
                    })
                })(),
                _ => Err(frame::Malformed("unknown frame type")),
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    self.kill();
                    return Err(Fault::Protocol(e.to_string()));
                }
            };
            let go_on = on(msg);
            self.consume();
            if !go_on {
                return Ok(false);
            }
        }
    }

    /// Makes progress without blocking: writes what it can, reads what came.
    pub fn poll_now(&mut self) -> Result<(), Fault> {
        self.write_some()?;
        self.read_some()?;
        Ok(())
    }

    /// Waits until something can be read (writing meanwhile), or `until`
    /// passes: then the process is killed as hung (`allowed` is what it had).
    pub fn wait_io(&mut self, until: Instant, allowed: Duration) -> Result<(), Fault> {
        loop {
            self.write_some()?;
            let now = Instant::now();
            if now >= until {
                self.kill();
                return Err(Fault::Hung(allowed));
            }
            let ms = (until - now).as_millis().clamp(1, i32::MAX as u128) as i32;
            let mut fds = [
                libc::pollfd {
                    fd: self.from.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.to.as_ref().map_or(-1, |t| t.as_raw_fd()),
                    events: if self.unsent() > 0 { libc::POLLOUT } else { 0 },
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfd entries.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
            if n < 0 {
                continue;
            }
            if fds[0].revents != 0 && self.read_some()? {
                return Ok(());
            }
        }
    }

    /// Closes the input and waits (up to `grace`) for the process to end on its
    /// own; kills it after that.
    pub fn close(mut self, grace: Duration) {
        let until = Instant::now() + grace;
        while self.unsent() > 0 && Instant::now() < until {
            if self.write_some().is_err() || self.wait_io(until, grace).is_err() {
                break;
            }
            let _ = self.messages(&mut |_| true);
        }
        self.to = None;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// The process's end, waited for and described.
    fn ended(&mut self) -> Fault {
        // The pipe closed: the process is gone or going. Give it a moment to
        // be reaped, then make sure.
        let until = Instant::now() + Duration::from_millis(500);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(1)),
                _ => {
                    self.kill();
                    break self.child.wait().ok();
                }
            }
        };
        Fault::Ended(match status {
            Some(s) => describe(s),
            None => "ended".into(),
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn describe(s: std::process::ExitStatus) -> String {
    if let Some(code) = s.code() {
        return format!("exited with status {code}");
    }
    match s.signal() {
        Some(sig) => {
            let name = match sig {
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGSYS => " (SIGSYS)",
                libc::SIGILL => " (SIGILL)",
                libc::SIGFPE => " (SIGFPE)",
                _ => "",
            };
            format!("was killed by signal {sig}{name}")
        }
        None => format!("ended ({s})"),
    }
}
