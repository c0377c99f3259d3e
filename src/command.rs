//! `spf run [options] -- COMMAND [ARGS]`: capture one command and what it
//! starts, as ptcpdump and strace do.
//!
//! The command is forked first but held before it runs (the child waits on a
//! pipe before its exec), so that its pid can be given to the probe, which
//! follows it and every process it forks in the kernel. Once the probe is
//! attached the command is let go: not one byte it moves is missed. It runs as
//! the user who invoked `sudo` (`SUDO_USER`, with that user's groups), else as
//! spf's own user.
//!
//! spf's stdout carries its records (or pcapng): unless spf's stdout is the
//! terminal, where the two share the screen anyway, the command's stdout is
//! spf's stderr, so that `spf run ... -- curl ... | jq` reads records only.
//!
//! The fork is done by hand: `std::process::Command::spawn` waits for the exec,
//! which a held child has not done yet. spf is still single-threaded then (the
//! runtime starts later), and the child makes only async-signal-safe calls.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::process::ExitStatus;

use anyhow::{Context as _, Result, bail};

/// A forked command that has not run yet.
pub struct Held {
    pid: libc::pid_t,
    go: libc::c_int,
}

impl Held {
    /// Forks `argv`, held before its exec.
    pub fn spawn(argv: &[OsString]) -> Result<Held> {
        if argv.is_empty() {
            bail!("no command given after `--`");
        }

        // Everything the child needs is made before the fork.
        let args: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .context("a command argument holds a NUL byte")?;
        let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let user = sudo_user();
        let stdout_to_stderr = {
            use std::io::IsTerminal as _;
            !std::io::stdout().is_terminal()
        };
        // The child may not format or allocate: its message is made here.
        let failed = format!("spf: cannot run `{}`: ", argv[0].to_string_lossy());
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills two fds, both close-on-exec.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error()).context("cannot make a pipe");
        }
        let [wait, go] = fds;
        // SAFETY: fork in a single-threaded process; the child below makes only
        // async-signal-safe calls and leaves by exec or _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            // SAFETY: closing the fds just made.
            unsafe {
                libc::close(wait);
                libc::close(go);
            }
            return Err(std::io::Error::last_os_error()).context("cannot fork the command");
        }
        if pid == 0 {
            // SAFETY: the child: async-signal-safe calls only.
            unsafe {
                libc::close(go);
                let mut b = 0u8;
                loop {
                    let n = libc::read(wait, (&raw mut b).cast(), 1);
                    if n == 1 {
                        break;
                    }
                    // spf gave up (its end closed), or the pipe failed.
                    if n == 0 || *libc::__errno_location() != libc::EINTR {
                        libc::_exit(127);
                    }
                }
                if let Some((uid, gid, groups)) = &user
                    && (libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setgid(*gid) != 0
                        || libc::setuid(*uid) != 0)
                {
                    libc::_exit(126);
                }
                // A closed stderr leaves stdout as it was.
                if stdout_to_stderr {
                    libc::dup2(2, 1);
                }
                libc::execvp(ptrs[0], ptrs.as_ptr());
                let why: &[u8] = match *libc::__errno_location() {
                    libc::ENOENT => b"no such file or command\n",
                    libc::EACCES => b"permission denied\n",
                    libc::ENOEXEC => b"not an executable format\n",
                    libc::ENOTDIR => b"a part of its path is not a directory\n",
                    _ => b"exec failed\n",
                };
                libc::write(2, failed.as_ptr().cast(), failed.len());
                libc::write(2, why.as_ptr().cast(), why.len());
                libc::_exit(127);
            }
        }
        // SAFETY: the parent's copy of the child's end.
        unsafe { libc::close(wait) };
        Ok(Held { pid, go })
    }

    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Lets the command run.
    pub fn release(self) -> Result<Running> {
        let b = b"g";
        // SAFETY: writing one byte to our end of the pipe, then closing it.
        let n = unsafe { libc::write(self.go, b.as_ptr().cast(), 1) };
        let err = std::io::Error::last_os_error();
        // SAFETY: our fd, closed once.
        unsafe { libc::close(self.go) };
        let pid = self.pid;
        std::mem::forget(self);
        if n != 1 {
            return Err(err).context("cannot let the command run");
        }
        Ok(Running { pid })
    }
}

impl Drop for Held {
    /// A command never let go (spf could not start): closing the pipe ends it
    /// before it runs; then it is reaped.
    fn drop(&mut self) {
        // SAFETY: our fd; then waiting for our own child.
        unsafe {
            libc::close(self.go);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}

/// The command, running.
pub struct Running {
    pid: libc::pid_t,
}

impl Running {
    /// Waits until the command exits.
    pub fn wait(self) -> std::io::Result<ExitStatus> {
        use std::os::unix::process::ExitStatusExt as _;
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                return Ok(ExitStatus::from_raw(status));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// The user who ran `sudo spf ...` (uid, gid, groups), when spf runs as root
/// through sudo.
/// Whether `execvp` can find `cmd` as an executable file: a name with a
/// slash as it is, else in each directory of `PATH`. The exec may still fail
/// (the user it runs as, the file's format): the child then says why.
pub fn runnable(cmd: &std::ffi::OsStr) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if cmd.as_bytes().contains(&b'/') {
        return executable(std::path::Path::new(cmd));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).any(|d| executable(&d.join(cmd)))
}

fn sudo_user() -> Option<(u32, u32, Vec<libc::gid_t>)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::env::var("SUDO_USER").ok()?;
    let a = spf_pipeline::account::lookup(&name).ok()??;
    (!a.is_root()).then_some((a.uid, a.gid, a.groups))
}

/// spf's exit code for a command's exit status: its code, or 128 + the signal
/// that ended it, as shells report it.
pub fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => 128u8.saturating_add(s as u8),
        (None, None) => 1,
    }
}
