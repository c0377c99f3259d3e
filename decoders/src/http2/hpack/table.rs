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
    fn min_size(&self) -> usize {
        self.name.as_ref().map_or(0, |n| n.len()) + self.value.len() + ENTRY_OVERHEAD
    }
}

/// What an index refers to.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Static(&'static str, &'static str),
    Dynamic(&'a Entry),
    /// An entry inserted before decoding began.
    Unknown,
    /// Past the end of a table whose whole content is known: a protocol error.
    Invalid,
}

#[derive(Debug, Clone)]
pub struct Table {
    entries: VecDeque<Entry>,
    /// Sum of the known entries' (minimum) sizes.
    size: usize,
    /// The encoder's current maximum size; `None` when decoding began mid-stream
    /// and no size update has been seen since.
    max: Option<usize>,
    /// Upper bound for `max`, from SETTINGS_HEADER_TABLE_SIZE where seen; used to
    /// bound memory while `max` is unknown.
    bound: usize,
    /// True while older entries of unknown number and size may follow the known ones.
    unknown_tail: bool,
}

impl Default for Table {
    fn default() -> Self {
        Table::new()
    }
}

/// Memory bound for known entries while the real maximum is unknown.
const UNKNOWN_BOUND: usize = 64 * 1024;

/// Memory cap for a table whose maximum is known but very large.
const MEM_CAP: usize = 1 << 20;

impl Table {
    /// A table at the start of a connection: empty, default maximum.
    pub fn new() -> Self {
        Table {
            entries: VecDeque::new(),
            size: 0,
            max: Some(DEFAULT_MAX),
            bound: UNKNOWN_BOUND,
            unknown_tail: false,
        }
    }

    /// A table whose earlier content is unknown: decoding attached mid-stream or
    /// lost bytes.
    pub fn unknown() -> Self {
        let mut t = Table::new();
        t.forget();
        t
    }

    /// Everything held so far can no longer be trusted.
    pub fn forget(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.max = None;
        self.unknown_tail = true;
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

    /// SETTINGS_HEADER_TABLE_SIZE sent by the decoding side.
    pub fn set_bound(&mut self, bound: usize) {
        self.bound = bound.clamp(DEFAULT_MAX, UNKNOWN_BOUND * 16);
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

    /// Inserts an entry at the front, evicting from the back (RFC 7541 4.4).
    pub fn insert(&mut self, entry: Entry) {
        let sz = entry.min_size();
        if let Some(max) = self.max
            && sz > max
        {
            // An entry larger than the table empties it, unknown tail included.
            self.entries.clear();
            self.size = 0;
            self.unknown_tail = false;
            return;
        }
        self.size += sz;
        self.entries.push_front(entry);
        self.evict();
    }

    /// A dynamic table size update (RFC 7541 6.3).
    pub fn resize(&mut self, max: usize) {
        self.max = Some(max);
        if max == 0 {
            self.entries.clear();
            self.size = 0;
            self.unknown_tail = false;
            return;
        }
        self.evict();
    }

    fn evict(&mut self) {
        loop {
            let over_max = self.max.is_some_and(|m| self.size > m);
            // Without a known maximum, or with a huge one, entries are dropped for
            // memory only: that proves nothing about the unknown tail.
            let over_mem = self.size > self.max.map_or(self.bound, |_| MEM_CAP);
            if !over_max && !over_mem {
                break;
            }
            let Some(e) = self.entries.pop_back() else {
                break;
            };
            self.size -= e.min_size();
            if over_max {
                // Anything older than an evicted entry is gone too.
                self.unknown_tail = false;
            }
        }
        // With the real maximum known, an unknown entry (at least 32 bytes) can
        // only remain if it still fits beside the known ones.
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

    fn e(n: &str, v: &str) -> Entry {
        Entry {
            name: Some(n.as_bytes().into()),
            value: v.as_bytes().into(),
        }
    }

    #[test]
    fn unknown_tail_becomes_known_once_eviction_proves_it() {
        let mut t = Table::unknown();
        t.insert(e("a", "1"));
        assert!(matches!(t.get(62), Lookup::Dynamic(_)));
        assert_eq!(t.get(63), Lookup::Unknown);
        t.resize(100);
        // 34 + 32 > 100 is false: an unknown entry could still fit.
        assert_eq!(t.get(63), Lookup::Unknown);
        t.insert(e("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "2"));
        // 34 + 63 = 97; another 32 would not fit: the tail is gone.
        assert!(t.is_exact());
        assert_eq!(t.get(64), Lookup::Invalid);
    }

    #[test]
    fn known_entries_stay_exact_without_a_known_maximum() {
        let mut t = Table::unknown();
        for i in 0..10 {
            t.insert(e("k", &i.to_string()));
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
