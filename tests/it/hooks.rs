//! What the kernel-function hooks see that the syscall exit hook does not:
//! io_uring, sendfile and splice into and out of Unix sockets, nginx sending a
//! file with `sendfile on`. Each test asserts what the hooks in use must give:
//! every byte exactly on the kernel hooks, none of those bytes (the documented
//! limit) on the syscall hook. And `hook = "kernel"` where the kernel refuses
//! kernel hooks: one clear line, exit 1.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use spf_pipeline::{Direction, Event};
use spf_probes::{DirectionFilter, PathFilter, UnixConfig};

use crate::capture::{Captured, lock, start};
use crate::util::test_bytes;

fn ino(fd: RawFd) -> u64 {
    // SAFETY: fstat into a zeroed stat buffer on an open fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
    st.st_ino
}

/// The captured bytes of the events of socket `socket` in direction `dir`,
/// each checked whole.
fn bytes_of(c: &Captured, socket: u64, dir: Direction) -> Vec<u8> {
    let mut out = Vec::new();
    for e in c
        .events
        .iter()
        .filter(|e| e.socket == socket && e.dir == dir)
    {
        assert!(
            !e.truncated && e.len as usize == e.data.len(),
            "cut event: len {} captured {}",
            e.len,
            e.data.len()
        );
        out.extend_from_slice(&e.data);
    }
    out
}

fn events_of(c: &Captured, socket: u64, dir: Direction) -> Vec<&Arc<Event>> {
    c.events
        .iter()
        .filter(|e| e.socket == socket && e.dir == dir)
        .collect()
}

/// Only this process's traffic, every syscall (no positions).
fn own_pid() -> UnixConfig {
    UnixConfig {
        pids: vec![std::process::id()],
        snaplen: 1 << 20,
        ring_size: 64 << 20,
        ..UnixConfig::default()
    }
}

/// A minimal io_uring over raw syscalls: one submission at a time, waited for.
mod uring {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicU32, Ordering};

    pub const OP_SENDMSG: u8 = 9;
    pub const OP_RECVMSG: u8 = 10;
    pub const OP_SEND: u8 = 26;
    pub const OP_RECV: u8 = 27;

    #[repr(C)]
    #[derive(Default)]
    struct SqOffsets {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        flags: u32,
        dropped: u32,
        array: u32,
        resv1: u32,
        user_addr: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct CqOffsets {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        overflow: u32,
        cqes: u32,
        flags: u32,
        resv1: u32,
        user_addr: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct Params {
        sq_entries: u32,
        cq_entries: u32,
        flags: u32,
        sq_thread_cpu: u32,
        sq_thread_idle: u32,
        features: u32,
        wq_fd: u32,
        resv: [u32; 3],
        sq_off: SqOffsets,
        cq_off: CqOffsets,
    }

    /// A mapping, unmapped when dropped.
    struct Map(*mut u8, usize);

    impl Map {
        fn new(fd: &OwnedFd, len: usize, offset: i64) -> std::io::Result<Map> {
            // SAFETY: mapping the ring the kernel made for `fd`.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    fd.as_raw_fd(),
                    offset,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Map(p.cast(), len))
        }

        fn at<T>(&self, off: u32) -> *mut T {
            assert!(off as usize + std::mem::size_of::<T>() <= self.1);
            // SAFETY: within the mapping (checked).
            unsafe { self.0.add(off as usize).cast() }
        }
    }

    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: unmapping what new() mapped.
            unsafe { libc::munmap(self.0.cast(), self.1) };
        }
    }

    pub struct Ring {
        fd: OwnedFd,
        p: Params,
        sq: Map,
        cq: Map,
        sqes: Map,
    }

    impl Ring {
        pub fn new() -> std::io::Result<Ring> {
            let mut p = Params::default();
            // SAFETY: io_uring_setup with a zeroed params struct.
            let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, &mut p) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: the kernel just handed over this descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            let sq = Map::new(&fd, (p.sq_off.array + p.sq_entries * 4) as usize, 0)?;
            let cq = Map::new(
                &fd,
                (p.cq_off.cqes + p.cq_entries * 16) as usize,
                0x800_0000,
            )?;
            let sqes = Map::new(&fd, (p.sq_entries * 64) as usize, 0x1000_0000)?;
            Ok(Ring {
                fd,
                p,
                sq,
                cq,
                sqes,
            })
        }

        /// Submits one operation and waits for its result (bytes moved, or
        /// -errno).
        pub fn run(&mut self, op: u8, fd: i32, addr: u64, len: u32) -> i32 {
            let o = &self.p.sq_off;
            // SAFETY: the ring's fields, at the offsets the kernel gave; only
            // this thread submits.
            unsafe {
                let tail = &*self.sq.at::<AtomicU32>(o.tail);
                let mask = *self.sq.at::<u32>(o.ring_mask);
                let t = tail.load(Ordering::Acquire);
                let idx = t & mask;
                let sqe = self.sqes.at::<u8>(idx * 64);
                std::ptr::write_bytes(sqe, 0, 64);
                *sqe = op;
                *sqe.add(4).cast::<i32>() = fd;
                *sqe.add(16).cast::<u64>() = addr;
                *sqe.add(24).cast::<u32>() = len;
                *sqe.add(32).cast::<u64>() = 7;
                *self.sq.at::<u32>(o.array + idx * 4) = idx;
                tail.store(t + 1, Ordering::Release);
            }
            // SAFETY: io_uring_enter: submit one, wait for one completion.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_enter,
                    self.fd.as_raw_fd(),
                    1u32,
                    1u32,
                    1u32,
                    std::ptr::null::<u8>(),
                    0usize,
                )
            };
            assert!(
                r >= 0,
                "io_uring_enter: {}",
                std::io::Error::last_os_error()
            );
            let c = &self.p.cq_off;
            // SAFETY: as above, for the completion ring.
            unsafe {
                let head = &*self.cq.at::<AtomicU32>(c.head);
                let tail = &*self.cq.at::<AtomicU32>(c.tail);
                let mask = *self.cq.at::<u32>(c.ring_mask);
                let h = head.load(Ordering::Acquire);
                assert_ne!(h, tail.load(Ordering::Acquire), "no completion");
                let cqe = self.cq.at::<u8>(c.cqes + (h & mask) * 16);
                assert_eq!(*cqe.cast::<u64>(), 7);
                let res = *cqe.add(8).cast::<i32>();
                head.store(h + 1, Ordering::Release);
                res
            }
        }
    }
}

/// io_uring's SEND, RECV, SENDMSG and RECVMSG on a stream socketpair: on
/// the kernel hooks each is an event with exactly its bytes, in both
/// directions; the syscall hook sees none of them.
#[test]
fn io_uring_send_recv_sendmsg_recvmsg() {
    let _g = lock();
    let (a, b) = UnixStream::pair().unwrap();
    let (ia, ib) = (ino(a.as_raw_fd()), ino(b.as_raw_fd()));
    let mut ring = match uring::Ring::new() {
        Ok(r) => r,
        Err(e) => panic!("io_uring_setup: {e} (io_uring disabled on this kernel?)"),
    };
    let Some(cap) = start("io_uring_send_recv_sendmsg_recvmsg", own_pid()) else {
        return;
    };
    let ping = test_bytes(3000, 31);
    let n = ring.run(
        uring::OP_SEND,
        a.as_raw_fd(),
        ping.as_ptr() as u64,
        ping.len() as u32,
    );
    assert_eq!(n, ping.len() as i32);
    let mut got = vec![0u8; ping.len()];
    let n = ring.run(
        uring::OP_RECV,
        b.as_raw_fd(),
        got.as_mut_ptr() as u64,
        got.len() as u32,
    );
    assert_eq!(n, ping.len() as i32);
    assert_eq!(got, ping);
    // A message of three iovecs back.
    let parts = [test_bytes(100, 32), test_bytes(5000, 33), test_bytes(7, 34)];
    let pong: Vec<u8> = parts.concat();
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: a zeroed msghdr is valid; its iovecs outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut _;
    msg.msg_iovlen = iov.len();
    let n = ring.run(uring::OP_SENDMSG, b.as_raw_fd(), &msg as *const _ as u64, 0);
    assert_eq!(n, pong.len() as i32);
    let mut back = vec![0u8; pong.len()];
    let (first, rest) = back.split_at_mut(1000);
    let riov = [
        libc::iovec {
            iov_base: first.as_mut_ptr().cast(),
            iov_len: first.len(),
        },
        libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        },
    ];
    // SAFETY: as above.
    let mut rmsg: libc::msghdr = unsafe { std::mem::zeroed() };
    rmsg.msg_iov = riov.as_ptr() as *mut _;
    rmsg.msg_iovlen = riov.len();
    // Every byte is queued: one receive takes them all.
    let n = ring.run(
        uring::OP_RECVMSG,
        a.as_raw_fd(),
        &rmsg as *const _ as u64,
        0,
    );
    assert_eq!(n, pong.len() as i32);
    assert_eq!(back, pong);
    let c = cap.finish();
    c.assert_no_loss();
    if c.hook.kernel {
        assert_eq!(bytes_of(&c, ia, Direction::Send), ping, "a's SEND");
        assert_eq!(bytes_of(&c, ib, Direction::Recv), ping, "b's RECV");
        assert_eq!(bytes_of(&c, ib, Direction::Send), pong, "b's SENDMSG");
        assert_eq!(bytes_of(&c, ia, Direction::Recv), pong, "a's RECVMSG");
        for e in c.events.iter().filter(|e| e.socket == ia || e.socket == ib) {
            assert_eq!(e.pid, std::process::id());
            assert_eq!(e.conn, ia.min(ib));
        }
    } else {
        // The documented limit of the syscall exit hook.
        let seen: Vec<&Arc<Event>> = c
            .events
            .iter()
            .filter(|e| e.socket == ia || e.socket == ib)
            .collect();
        assert!(
            seen.is_empty(),
            "the syscall hook saw io_uring traffic ({})",
            c.hook
        );
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the kernel just handed these over.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A file sent into a stream socket with sendfile, and read out of the other
/// end with splice into a pipe: on the kernel hooks the sender's event and
/// the receiver's hold the file's bytes exactly (the pages sendfile and splice
/// move are read); the syscall hook has no event for either.
#[test]
fn sendfile_into_and_splice_out_of_a_socket() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let data = test_bytes(200_000, 35);
    let path = dir.path().join("file.bin");
    std::fs::write(&path, &data).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    // Room for the whole file in the socket: sendfile needs no reader.
    let big: libc::c_int = 4 << 20;
    for s in [&a, &b] {
        for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
            // SAFETY: setsockopt with an int.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&big as *const libc::c_int).cast(),
                    4,
                )
            };
        }
    }
    let (ia, ib) = (ino(a.as_raw_fd()), ino(b.as_raw_fd()));
    let Some(cap) = start("sendfile_into_and_splice_out_of_a_socket", own_pid()) else {
        return;
    };
    let reader = std::thread::spawn(move || {
        let (r, w) = pipe();
        let mut got = Vec::new();
        while got.len() < 200_000 {
            // SAFETY: splice from the socket into the pipe, then read it.
            let n = unsafe {
                libc::splice(
                    b.as_raw_fd(),
                    std::ptr::null_mut(),
                    w.as_raw_fd(),
                    std::ptr::null_mut(),
                    65536,
                    0,
                )
            };
            assert!(n > 0, "splice: {}", std::io::Error::last_os_error());
            let mut buf = vec![0u8; n as usize];
            let mut off = 0;
            while off < buf.len() {
                // SAFETY: reading into a live buffer.
                let r = unsafe {
                    libc::read(
                        r.as_raw_fd(),
                        buf[off..].as_mut_ptr().cast(),
                        buf.len() - off,
                    )
                };
                assert!(r > 0);
                off += r as usize;
            }
            got.extend_from_slice(&buf);
        }
        got
    });
    let mut sent = 0usize;
    while sent < data.len() {
        // SAFETY: sendfile from the file into the socket.
        let n = unsafe {
            libc::sendfile(
                a.as_raw_fd(),
                file.as_raw_fd(),
                std::ptr::null_mut(),
                data.len() - sent,
            )
        };
        assert!(n > 0, "sendfile: {}", std::io::Error::last_os_error());
        sent += n as usize;
    }
    let got = reader.join().unwrap();
    assert_eq!(got, data);
    let c = cap.finish();
    c.assert_no_loss();
    if c.hook.kernel {
        assert_eq!(bytes_of(&c, ia, Direction::Send), data, "sendfile's pages");
        assert_eq!(bytes_of(&c, ib, Direction::Recv), data, "splice's pages");
    } else {
        // The syscall hook reads neither: each call is an event of the
        // length it moved, without data.
        for (sock, dir) in [(ia, Direction::Send), (ib, Direction::Recv)] {
            let evs = events_of(&c, sock, dir);
            assert!(
                evs.iter().all(|e| e.truncated && e.data.is_empty()),
                "{dir:?}: {}",
                c.hook
            );
            let moved: u64 = evs.iter().map(|e| e.len).sum();
            assert_eq!(moved, data.len() as u64, "{dir:?}: {}", c.hook);
        }
    }
}

/// nginx sends a file with `sendfile on`; only nginx's sends are captured.
/// On the kernel hooks they hold the response's headers and the file, every
/// byte; the syscall hook reads the headers only (the body never passes a
/// data syscall) and says how many bytes of body went by uncaptured.
#[test]
fn nginx_sendfile_is_captured_at_the_sender() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, sock) = crate::http1::nginx(dir.path());
    let body = test_bytes(300_000, 36);
    crate::http1::www(dir.path(), "big.bin", &body);
    let s = sock.to_str().unwrap().to_string();
    let cfg = UnixConfig {
        paths: vec![PathFilter::parse(&s).unwrap()],
        comms: vec!["nginx".into()],
        direction: DirectionFilter::Send,
        snaplen: 1 << 20,
        ring_size: 64 << 20,
        ..UnixConfig::default()
    };
    let Some(cap) = start("nginx_sendfile_is_captured_at_the_sender", cfg) else {
        return;
    };
    let got = crate::http1::curl(&["--unix-socket", &s, "http://localhost/big.bin"]);
    assert_eq!(got, body);
    let c = cap.finish();
    c.assert_no_loss();
    assert!(
        c.events
            .iter()
            .all(|e| &*e.comm == "nginx" && e.dir == Direction::Send)
    );
    let mut sent = Vec::new();
    let mut uncaptured = 0;
    for e in &c.events {
        if !c.hook.kernel && e.truncated && e.data.is_empty() {
            // A sendfile the syscall hook cannot read, after the headers.
            assert!(!sent.is_empty(), "{}", c.hook);
            uncaptured += e.len as usize;
            continue;
        }
        assert!(
            !e.truncated,
            "cut event: len {} captured {}",
            e.len,
            e.data.len()
        );
        sent.extend_from_slice(&e.data);
    }
    let head_end = sent
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the response's headers")
        + 4;
    assert!(sent.starts_with(b"HTTP/1.1 200 OK\r\n"));
    if c.hook.kernel {
        assert_eq!(sent.len() - head_end, body.len());
        assert!(sent[head_end..] == body[..], "the sendfile body differs");
    } else {
        assert_eq!(sent.len(), head_end, "{}", c.hook);
        assert_eq!(uncaptured, body.len(), "{}", c.hook);
    }
}

/// Whether process `pid` has a handler for SIGINT.
fn catches_sigint(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
}

/// `spf run --hook kernel`: where kernel hooks cannot be used, one line that
/// says why and exit 1; where they can, the capture runs on them. `auto`
/// says in its summary which hooks captured and, on the syscall hook, why.
#[test]
fn hook_kernel_is_used_or_refused_in_one_line() {
    let _g = lock();
    if !crate::capture::bpf_ready("hook_kernel_is_used_or_refused_in_one_line") {
        return;
    }
    let usable = spf_probes::kernel_hooks_usable();
    // A filter nothing matches: the test is about the hooks, and the other
    // tests of this process (a flood under an emulated CPU) must not be
    // what the stop waits for.
    let run = |hook: &str| {
        let mut child = crate::util::spf()
            .args(["run", "--hook", hook, "--format", "ndjson"])
            .args(["--path", "/nonexistent/spf-hooks-test.sock"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawning spf");
        // Capturing once it holds a BPF link and catches SIGINT (its
        // handler drains and prints the summary), or exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let linked = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
                .map(|d| {
                    d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                        .any(|l| l.to_string_lossy() == "anon_inode:bpf_link")
                })
                .unwrap_or(false);
            if linked && catches_sigint(child.id()) {
                // SAFETY: signalling the child we started.
                unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "spf neither attached nor exited"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Stopping drains and prints the summary: bounded too, so that a stop
        // that never ends fails here, with what spf said, instead of hanging.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let o = child.wait_with_output().unwrap();
                panic!(
                    "spf did not stop within 120 s of SIGINT: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    };
    let o = run("kernel");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    match &usable {
        Err(why) => {
            assert_eq!(o.status.code(), Some(1), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                err.contains("hook \"kernel\"") && err.contains(why.as_str()),
                "{err}"
            );
        }
        Ok(()) => {
            assert!(o.status.success(), "{err}");
            assert!(err.contains("capture: kernel hooks (fexit"), "{err}");
        }
    }
    let o = run("auto");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    match &usable {
        Err(why) => assert!(
            err.contains(&format!(
                "capture: syscall exit hook (kernel hooks refused here: {why})"
            )),
            "{err}"
        ),
        Ok(()) => assert!(err.contains("capture: kernel hooks (fexit"), "{err}"),
    }
    let o = run("syscall");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("capture: syscall exit hook (hook = \"syscall\")"),
        "{err}"
    );
}
