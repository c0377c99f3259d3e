//! Connection and socket ids of many nodes in one pipeline.
//!
//! On each node, `conn`, `socket` and `peer_socket` are that kernel's inode
//! numbers: two nodes can use the same ones for different connections. The
//! pipeline keys its state by them, so each node's ids are moved into a range
//! of their own: `node index << 40 | id`. The low 40 bits keep the node's own
//! value (socket inodes are 32-bit numbers) and order among a node's ids is
//! kept (the lower socket of a socketpair stays the lower one). An id that
//! does not fit in 40 bits gets a number of its own, above every node's range.

use std::sync::Arc;

use rustc_hash::FxHashMap;

const SHIFT: u32 = 40;
const LOW: u64 = (1 << SHIFT) - 1;
/// Nodes that get a range of their own; more than that share the last one
/// (said once on stderr).
pub const MAX_NODES: u64 = (1 << 16) - 1;
/// Ids of 40 bits and more remembered at most.
const MAX_WIDE: usize = 1 << 20;
/// Where numbers for wide ids start: above every node's range, below the
/// bit that marks pids in stream keys.
const WIDE_BASE: u64 = (MAX_NODES + 1) << SHIFT;

#[derive(Default)]
pub struct Ids {
    nodes: FxHashMap<Arc<str>, u64>,
    wide: FxHashMap<(u64, u64), u64>,
    next_wide: u64,
    /// True once nodes beyond [`MAX_NODES`] had to share a range.
    pub crowded: bool,
}

impl Ids {
    /// The index of a node's range (from 1).
    pub fn node(&mut self, node: &Arc<str>) -> u64 {
        if let Some(&i) = self.nodes.get(node) {
            return i;
        }
        let n = self.nodes.len() as u64 + 1;
        if n > MAX_NODES {
            self.crowded = true;
            return MAX_NODES;
        }
        self.nodes.insert(Arc::clone(node), n);
        n
    }

    /// A node's id as the pipeline sees it; 0 (unknown) stays 0.
    pub fn map(&mut self, node: u64, id: u64) -> u64 {
        if id == 0 {
            return 0;
        }
        if id <= LOW {
            return node << SHIFT | id;
        }
        if let Some(&w) = self.wide.get(&(node, id)) {
            return w;
        }
        if self.wide.len() >= MAX_WIDE {
            // Bounded like the pipeline's other per-connection tables: old
            // ones are forgotten all at once.
            self.wide.clear();
        }
        self.next_wide += 1;
        let w = WIDE_BASE + self.next_wide;
        self.wide.insert((node, id), w);
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_never_share_ids_and_keep_their_order() {
        let mut ids = Ids::default();
        let (a, b) = (ids.node(&"a".into()), ids.node(&"b".into()));
        assert_ne!(a, b);
        assert_eq!(ids.node(&"a".into()), a);
        assert_ne!(ids.map(a, 4242), ids.map(b, 4242));
        assert_eq!(ids.map(a, 4242) & LOW, 4242);
        assert!(ids.map(a, 10) < ids.map(a, 11));
        assert_eq!(ids.map(a, 0), 0);
        let w = ids.map(a, 1 << 45);
        assert_eq!(ids.map(a, 1 << 45), w);
        assert_ne!(ids.map(b, 1 << 45), w);
        assert!(w > ids.map(MAX_NODES, LOW) && w < 1 << 63);
    }
}
