//! The HPACK static table and a dynamic table that may begin partly unknown.
//!
//! When decoding starts on a connection that was already running, the dynamic
//! table already held entries nobody saw inserted. The table is then "known
//! entries, newest first, followed by an unknown tail". New insertions go to the
//! front and eviction only ever removes from the back, so the order of the known
//! entries is always right: an index that falls within them is exact whatever
//! the unknown tail holds. An index past them is reported as unknown, never
//! guessed, until eviction proves the tail is gone.

use std::collections::VecDeque;
use std::sync::Arc;

use spf_pipeline::Budget;

/// RFC 7541 Appendix A.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Per-entry overhead counted in the table size (RFC 7541 4.1).
pub const ENTRY_OVERHEAD: usize = 32;

/// The default and initial maximum table size (SETTINGS_HEADER_TABLE_SIZE).
pub const DEFAULT_MAX: usize = 4096;

/// A dynamic table entry. `name` is `None` when the entry was inserted with a
/// name that referred to an unknown entry: its value is known, its name is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Option<Box<[u8]>>,
    pub value: Box<[u8]>,
}

impl Entry {
    /// The smallest size this entry can have (exact when the name is known).
    /// Also what it is counted as in memory: its bytes plus about what its
    /// two boxes and its slot cost.
    pub fn min_size(&self) -> usize {
        self.name.as_ref().map_or(0, |n| n.len()) + self.value.len() + ENTRY_OVERHEAD
    }
}

/// What an index refers to.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Static(&'static str, &'static str),
    Dynamic(&'a Entry),
    /// An entry whose content is not known: inserted before decoding began,
    /// or dropped to bound memory.
    Unknown,
    /// Past the end of a table whose whole content is known: a protocol error.
    Invalid,
}

/// Why entries were not kept, since [`Table::take_events`] last asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableEvents {
    /// Entries the peer still holds were dropped because the table grew past
    /// its memory cap: they show as placeholders from now on.
    pub trimmed: bool,
    /// The memory budget refused an entry: the table was emptied.
    pub refused: bool,
}

#[derive(Debug)]
pub struct Table {
    entries: VecDeque<Entry>,
    /// Sum of the known entries' (minimum) sizes: both what the protocol counts
    /// of them and what they hold in memory.
    size: usize,
    /// The encoder's current maximum size; `None` when decoding began mid-stream
    /// and no size update has been seen since.
    max: Option<usize>,
    /// Bytes of entries kept at most, whatever the maximum: past it the oldest
    /// go, and become unknown (the peer still has them).
    mem_cap: usize,
    /// True while older entries of unknown number and size may follow the known ones.
    unknown_tail: bool,
    /// The run's memory budget, and what this table took of it.
    budget: Option<Arc<Budget>>,
    taken: usize,
    events: TableEvents,
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give(self.taken);
        }
    }
}

/// Memory cap of a table when no limit was configured.
pub const DEFAULT_MEM_CAP: usize = 1 << 20;

impl Table {
    /// A table at the start of a connection: empty, default maximum.
    pub fn new() -> Self {
        Table {
            entries: VecDeque::new(),
            size: 0,
            max: Some(DEFAULT_MAX),
            mem_cap: DEFAULT_MEM_CAP,
            unknown_tail: false,
            budget: None,
            taken: 0,
            events: TableEvents::default(),
        }
    }

    /// A table whose earlier content is unknown: decoding attached mid-stream or
    /// lost bytes.
    pub fn unknown() -> Self {
        let mut t = Table::new();
        t.forget();
        t
    }

    /// Bounds the bytes the table keeps (`mem_cap`) and takes them from
    /// `budget` as entries come.
    pub fn set_memory(&mut self, mem_cap: usize, budget: Option<Arc<Budget>>) {
        // Given back to the budget it was taken from, before changing budgets.
        self.clear_known();
        self.mem_cap = mem_cap;
        self.budget = budget;
    }

    /// Empties the table as a fresh connection's, keeping its memory settings.
    pub fn reset(&mut self) {
        self.clear_known();
        self.max = Some(DEFAULT_MAX);
        self.unknown_tail = false;
        self.events = TableEvents::default();
    }

    /// Everything held so far can no longer be trusted.
    pub fn forget(&mut self) {
        self.clear_known();
        self.max = None;
        self.unknown_tail = true;
    }

    fn clear_known(&mut self) {
        self.entries.clear();
        self.entries.shrink_to(16);
        self.size = 0;
        if let Some(b) = &self.budget {
            b.give(self.taken);
        }
        self.taken = 0;
    }

    /// True when every entry the peer could reference is known.
    pub fn is_exact(&self) -> bool {
        !self.unknown_tail
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn max_size(&self) -> Option<usize> {
        self.max
    }

    /// What happened since the last call, and forgets it.
    pub fn take_events(&mut self) -> TableEvents {
        std::mem::take(&mut self.events)
    }

    /// Looks up a 1-based HPACK index.
    pub fn get(&self, index: usize) -> Lookup<'_> {
        if index == 0 {
            return Lookup::Invalid;
        }
        if index <= STATIC.len() {
            let (n, v) = STATIC[index - 1];
            return Lookup::Static(n, v);
        }
        let d = index - STATIC.len() - 1;
        match self.entries.get(d) {
            Some(e) => Lookup::Dynamic(e),
            None if self.unknown_tail => Lookup::Unknown,
            None => Lookup::Invalid,
        }
    }

    /// Inserts an entry of `name` (unknown: `None`) and `value` at the front,
    /// evicting from the back (RFC 7541 4.4).
    pub fn insert(&mut self, name: Option<&[u8]>, value: &[u8]) {
        let sz = name.map_or(0, <[u8]>::len) + value.len() + ENTRY_OVERHEAD;
        if let Some(max) = self.max
            && sz > max
        {
            // An entry larger than the table empties it, unknown tail included.
            self.clear_known();
            self.unknown_tail = false;
            return;
        }
        if sz > self.mem_cap {
            // Kept by the peer, too big to keep here: the newest entry is
            // unknown, so every older one must be too (indexes count from it).
            self.clear_known();
            self.unknown_tail = true;
            self.events.trimmed = true;
            return;
        }
        // Room first, as the RFC evicts before adding.
        self.evict(sz);
        if let Some(b) = &self.budget {
            if !b.try_take(sz) {
                self.clear_known();
                self.unknown_tail = true;
                self.events.refused = true;
                return;
            }
            self.taken += sz;
        }
        self.size += sz;
        self.entries.push_front(Entry {
            name: name.map(Into::into),
            value: value.into(),
        });
        self.check_tail();
    }

    /// A dynamic table size update (RFC 7541 6.3).
    pub fn resize(&mut self, max: usize) {
        self.max = Some(max);
        if max == 0 {
            self.clear_known();
            self.unknown_tail = false;
            return;
        }
        self.evict(0);
        self.check_tail();
    }

    /// Evicts until `room` more bytes fit both the maximum and the memory cap.
    fn evict(&mut self, room: usize) {
        loop {
            let over_max = self.max.is_some_and(|m| self.size + room > m);
            let over_mem = self.size + room > self.mem_cap;
            if !over_max && !over_mem {
                break;
            }
            let Some(e) = self.entries.pop_back() else {
                break;
            };
            let sz = e.min_size();
            self.size -= sz;
            if self.budget.is_some() {
                self.taken -= sz;
                if let Some(b) = &self.budget {
                    b.give(sz);
                }
            }
            if over_max {
                // The peer evicted it too, and anything older before it.
                self.unknown_tail = false;
            } else {
                // Dropped for memory only: the peer still has it.
                self.unknown_tail = true;
                self.events.trimmed = true;
            }
        }
    }

    /// With the real maximum known, an unknown entry (at least 32 bytes) can
    /// only remain if it still fits beside the known ones.
    fn check_tail(&mut self) {
        if let Some(max) = self.max
            && self.size + ENTRY_OVERHEAD > max
        {
            self.unknown_tail = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tail_becomes_known_once_eviction_proves_it() {
        let mut t = Table::unknown();
        t.insert(Some(b"a"), b"1");
        assert!(matches!(t.get(62), Lookup::Dynamic(_)));
        assert_eq!(t.get(63), Lookup::Unknown);
        t.resize(100);
        // 34 + 32 > 100 is false: an unknown entry could still fit.
        assert_eq!(t.get(63), Lookup::Unknown);
        t.insert(Some(b"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), b"2");
        // 34 + 63 = 97; another 32 would not fit: the tail is gone.
        assert!(t.is_exact());
        assert_eq!(t.get(64), Lookup::Invalid);
    }

    #[test]
    fn known_entries_stay_exact_without_a_known_maximum() {
        let mut t = Table::unknown();
        for i in 0..10 {
            t.insert(Some(b"k"), i.to_string().as_bytes());
        }
        for i in 0..10 {
            match t.get(62 + i) {
                Lookup::Dynamic(x) => assert_eq!(&*x.value, (9 - i).to_string().as_bytes()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(t.get(72), Lookup::Unknown);
    }
}
