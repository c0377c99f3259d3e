//! Socket inode by bound name, from /proc/net/unix.
//!
//! A datagram sent with an address names its receiver only by path; the kernel
//! resolves that path inside the send, where the syscall tracepoints cannot see
//! it. The receiving socket's inode, which is the datagram "connection", is read
//! here instead.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a path that could not be found stays unfound before looking again.
const NEGATIVE_TTL: Duration = Duration::from_millis(500);

#[derive(Default)]
pub(crate) struct Resolver {
    by_name: HashMap<String, u64>,
    last_read: Option<Instant>,
}

impl Resolver {
    /// Inode of the socket bound to `name` (`/path` or `@abstract`).
    pub(crate) fn inode(&mut self, name: &str) -> Option<u64> {
        if let Some(i) = self.by_name.get(name) {
            return Some(*i);
        }
        let stale = self.last_read.is_none_or(|t| t.elapsed() >= NEGATIVE_TTL);
        if stale {
            self.reload();
        }
        self.by_name.get(name).copied()
    }

    fn reload(&mut self) {
        self.last_read = Some(Instant::now());
        if let Ok(text) = std::fs::read_to_string("/proc/net/unix") {
            self.by_name = parse(&text);
        }
    }
}

/// The (inode, name) of each named socket in /proc/net/unix:
/// `Num RefCount Protocol Flags Type St Inode Path`. The kernel pads the inode
/// to five columns (`%5lu`), so an inode below 10000 follows two or more
/// spaces; the path follows the inode after exactly one, and may hold spaces
/// itself.
fn rows(text: &str) -> impl Iterator<Item = (u64, &str)> {
    text.lines().skip(1).filter_map(|line| {
        let mut rest = line;
        let mut field = "";
        for _ in 0..7 {
            rest = rest.trim_start_matches(' ');
            let end = rest.find(' ').unwrap_or(rest.len());
            (field, rest) = rest.split_at(end);
        }
        let inode = field.parse::<u64>().ok()?;
        let path = rest.strip_prefix(' ')?.trim_end();
        (!path.is_empty()).then_some((inode, path))
    })
}

/// Parses /proc/net/unix into inode by name. A name listed for several
/// sockets (a path unlinked and bound again, or a listener's accepted
/// connections) maps to the highest inode: the newest, the one a send to that
/// path reaches.
fn parse(text: &str) -> HashMap<String, u64> {
    let mut map: HashMap<String, u64> = HashMap::new();
    for (inode, path) in rows(text) {
        map.entry(path.to_string())
            .and_modify(|i| *i = (*i).max(inode))
            .or_insert(inode);
    }
    map
}

/// Names (`/path` or `@abstract`) of the sockets these processes have bound
/// now: the sockets their fds hold, looked up in /proc/net/unix. Processes
/// that are gone or unreadable give none.
pub(crate) fn names_of_pids(pids: &[u32]) -> Vec<String> {
    let mut inodes = std::collections::HashSet::new();
    for pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in dir.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(ino) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
            {
                inodes.insert(ino);
            }
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    rows(&text)
        .filter(|(ino, _)| inodes.contains(ino))
        .map(|(_, p)| p.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_and_abstract() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
ffff8c1c0ad52800: 00000002 00000000 00010000 0001 01 21034 /run/systemd/private\n\
ffff8c1c0ad56000: 00000002 00000000 00000000 0002 01  5501 @/tmp/abs one\n\
ffff8c1c0ad55400: 00000003 00000000 00000000 0001 03  9000\n\
ffff8c1c0ad55402: 00000002 00000000 00000000 0002 01   812 /tmp/d/rx.sock\n\
ffff8c1c0ad55401: 00000003 00000000 00000000 0001 03 20000 /run/systemd/private\n";
        let m = parse(text);
        assert_eq!(m.get("/run/systemd/private"), Some(&21034));
        // Inodes below 10000 are padded: as a booted VM's sockets have them.
        assert_eq!(m.get("@/tmp/abs one"), Some(&5501));
        assert_eq!(m.get("/tmp/d/rx.sock"), Some(&812));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn finds_a_real_socket() {
        let dir = std::env::temp_dir().join(format!("spf-procnet-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("d.sock");
        let _ = std::fs::remove_file(&path);
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let mut r = Resolver::default();
        let ino = r.inode(path.to_str().unwrap());
        assert!(ino.is_some_and(|i| i > 0));
        let names = names_of_pids(&[std::process::id()]);
        assert!(
            names.iter().any(|n| n == path.to_str().unwrap()),
            "{names:?}"
        );
        drop(sock);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
