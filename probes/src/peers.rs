//! The command names of processes at the other end of a socket that the
//! capture itself does not show: outside the filters (`spf run -- curl ...`
//! follows curl, not the daemon it talks to), or not sending anything. The
//! kernel hands over their pid (the peer's credentials); /proc has their
//! name, read once per pid and kept a short while, so that a record reads
//! `curl[12] → dockerd[34]` rather than `curl[12] → ?[34]`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a name read is trusted: a pid can be reused, a process can exec.
const KEEP: Duration = Duration::from_secs(5);
/// Pids remembered at most; beyond that the table starts over (forgetting
/// costs a /proc read, not a wrong answer).
const MAX_PIDS: usize = 4096;

pub(crate) struct PeerNames {
    /// Off where /proc's pids are not the kernel's (spf in a pid namespace
    /// of its own), and for converters fed with made-up events.
    enabled: bool,
    by_pid: HashMap<u32, (Arc<str>, Instant)>,
    /// The last answer: consecutive events mostly share their peer.
    last: Option<(u32, Arc<str>)>,
    /// The clock, read once per batch of events (see `new_batch`): `of` runs
    /// per event.
    now: Instant,
    empty: Arc<str>,
}

impl PeerNames {
    /// Names nothing.
    pub(crate) fn off() -> Self {
        PeerNames {
            enabled: false,
            by_pid: HashMap::new(),
            last: None,
            now: Instant::now(),
            empty: Arc::from(""),
        }
    }

    /// Names peers from this machine's /proc, if its pids are the ones the
    /// probe reports.
    pub(crate) fn live() -> Self {
        PeerNames {
            enabled: crate::config::in_initial_pid_namespace(),
            ..PeerNames::off()
        }
    }

    /// A new batch of events begins: the time names are judged by.
    pub(crate) fn new_batch(&mut self) {
        if self.enabled {
            self.now = Instant::now();
            // The last answer may be older than KEEP by now.
            self.last = None;
        }
    }

    /// The command name of `pid`, empty when not known (0, gone, or off).
    pub(crate) fn of(&mut self, pid: u32) -> Arc<str> {
        if !self.enabled || pid == 0 {
            return Arc::clone(&self.empty);
        }
        if let Some((p, name)) = &self.last {
            if *p == pid {
                return Arc::clone(name);
            }
        }
        let now = self.now;
        if let Some((name, at)) = self.by_pid.get(&pid) {
            if now.duration_since(*at) < KEEP {
                let name = Arc::clone(name);
                self.last = Some((pid, Arc::clone(&name)));
                return name;
            }
        }
        let name: Arc<str> = match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            Ok(s) => Arc::from(s.trim_end_matches('\n')),
            Err(_) => Arc::clone(&self.empty),
        };
        if self.by_pid.len() >= MAX_PIDS {
            self.by_pid.clear();
        }
        self.by_pid.insert(pid, (Arc::clone(&name), now));
        self.last = Some((pid, Arc::clone(&name)));
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_live_process_and_nothing_when_off_or_unknown() {
        let mut live = PeerNames::live();
        let own = std::fs::read_to_string("/proc/self/comm").unwrap();
        if crate::config::in_initial_pid_namespace() {
            assert_eq!(&*live.of(std::process::id()), own.trim_end());
            // Asked again: the same name, from the table.
            assert_eq!(&*live.of(std::process::id()), own.trim_end());
        }
        assert_eq!(&*live.of(0), "");
        // Past the largest pid the kernel gives (4194304): never a process.
        assert_eq!(&*live.of(u32::MAX), "");
        assert_eq!(&*PeerNames::off().of(std::process::id()), "");
    }
}
