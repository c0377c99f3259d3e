//! The command name of the process at a socket's other end, where its own
//! events do not say it (the filter left it out): read from /proc.
//!
//! The kernel gives each event the peer's pid (its peer credentials), not its
//! name. Without this, a capture of `--comm curl` shows the server it talks to
//! as `?[pid]`.

use std::sync::Arc;

use rustc_hash::FxHashMap;

/// A name read this long ago is read again: the pid may belong to another
/// process by now.
const FRESH_NS: u64 = 10_000_000_000;
/// /proc reads per batch of events, at most: a storm of new peers must not
/// stall the reader, whose ring fills meanwhile. The rest stay unnamed until
/// a later batch.
const READS_PER_BATCH: u32 = 16;
/// Names kept, at most.
const MAX_NAMES: usize = 4096;

pub(crate) struct PeerNames {
    /// Off where /proc does not number processes as the kernel's events do
    /// (spf in a pid namespace of its own).
    enabled: bool,
    /// Looked up for every event: a cheap hash.
    names: FxHashMap<u32, (Arc<str>, u64)>,
    reads_left: u32,
    empty: Arc<str>,
}

impl PeerNames {
    pub(crate) fn new(enabled: bool) -> Self {
        PeerNames {
            enabled,
            names: FxHashMap::default(),
            reads_left: READS_PER_BATCH,
            empty: Arc::from(""),
        }
    }

    /// A new batch of events: a new allowance of reads.
    pub(crate) fn new_batch(&mut self) {
        self.reads_left = READS_PER_BATCH;
    }

    /// The name of process `pid` as of kernel time `now_ns`; empty when
    /// unknown (pid 0, a process gone, /proc hidden, no reads left).
    pub(crate) fn of(&mut self, pid: u32, now_ns: u64) -> Arc<str> {
        if !self.enabled || pid == 0 {
            return self.empty.clone();
        }
        if let Some((name, at)) = self.names.get(&pid)
            && now_ns.saturating_sub(*at) < FRESH_NS
        {
            return name.clone();
        }
        if self.reads_left == 0 {
            return self.empty.clone();
        }
        self.reads_left -= 1;
        let name: Arc<str> = match std::fs::read(format!("/proc/{pid}/comm")) {
            Ok(raw) => {
                let raw = raw.strip_suffix(b"\n").unwrap_or(&raw);
                Arc::from(String::from_utf8_lossy(raw).as_ref())
            }
            // Remembered as unknown too, so that it is not asked again at once.
            Err(_) => self.empty.clone(),
        };
        if self.names.len() >= MAX_NAMES {
            self.names.clear();
        }
        self.names.insert(pid, (name.clone(), now_ns));
        name
    }
}

/// Whether spf runs in the initial pid namespace, where /proc's pids are the
/// kernel's. False when that cannot be told.
pub(crate) fn in_initial_pid_namespace() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid")
        .is_ok_and(|m| m.ino() == crate::config::PROC_PID_INIT_INO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_named_and_the_reads_are_bounded() {
        let own = std::fs::read_to_string("/proc/self/comm").unwrap();
        let mut n = PeerNames::new(true);
        assert_eq!(&*n.of(std::process::id(), 1), own.trim_end());
        assert_eq!(&*n.of(0, 1), "");
        // Cached: no read left is needed.
        n.reads_left = 0;
        assert_eq!(&*n.of(std::process::id(), 2), own.trim_end());
        // Stale and no read left: unknown, not the old name.
        assert_eq!(&*n.of(std::process::id(), 2 + FRESH_NS), "");
        n.new_batch();
        assert_eq!(&*n.of(std::process::id(), 2 + FRESH_NS), own.trim_end());
        // Off: nothing is read.
        assert_eq!(&*PeerNames::new(false).of(std::process::id(), 1), "");
    }
}
