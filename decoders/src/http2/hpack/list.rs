//! A decoded header list kept in one byte buffer: names and values back to
//! back, with their lengths beside them, so that decoding a block allocates
//! nothing once the buffers have grown, and a record keeps the list in one
//! allocation ([`Packed`]).

/// Bytes RFC 9113 counts per field on top of its name and value (the same
/// overhead as an HPACK table entry): SETTINGS_MAX_HEADER_LIST_SIZE counts so.
pub const FIELD_OVERHEAD: usize = 32;

const SENSITIVE: u8 = 1;
const UNKNOWN: u8 = 2;

/// One field of a list, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRef<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    /// Sent as "never indexed" (RFC 7541 6.2.3): the sender marked it sensitive.
    pub sensitive: bool,
    /// The name, the value, or both are placeholders for a table entry whose
    /// content is not known (inserted before decoding began, or dropped).
    pub unknown: bool,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    name_len: usize,
    value_len: usize,
    flags: u8,
}

/// The header list of one block as it is decoded.
#[derive(Debug, Clone, Default)]
pub struct HeaderList {
    bytes: Vec<u8>,
    fields: Vec<Span>,
    /// Size as SETTINGS_MAX_HEADER_LIST_SIZE counts it.
    size: usize,
}

impl HeaderList {
    pub fn new() -> Self {
        HeaderList::default()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.fields.clear();
        self.size = 0;
    }

    /// Lets go of buffers grown by an unusually large list.
    pub fn shrink(&mut self, keep: usize) {
        if self.bytes.capacity() > keep {
            self.bytes = Vec::new();
        }
        if self.fields.capacity() * std::mem::size_of::<Span>() > keep {
            self.fields = Vec::new();
        }
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Names, values and 32 bytes per field.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn get(&self, i: usize) -> Option<FieldRef<'_>> {
        self.fields.get(i).map(|s| self.field(s))
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = FieldRef<'_>> + '_ {
        self.fields.iter().map(|s| self.field(s))
    }

    fn field(&self, s: &Span) -> FieldRef<'_> {
        let name_end = s.start + s.name_len;
        FieldRef {
            name: &self.bytes[s.start..name_end],
            value: &self.bytes[name_end..name_end + s.value_len],
            sensitive: s.flags & SENSITIVE != 0,
            unknown: s.flags & UNKNOWN != 0,
        }
    }

    /// Appends a field from its parts.
    pub fn push(&mut self, name: &[u8], value: &[u8], sensitive: bool, unknown: bool) {
        let start = self.begin();
        self.bytes.extend_from_slice(name);
        let name_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.end(start, name_end, sensitive, unknown);
    }

    /// Where the next field's bytes begin: callers append its name and value
    /// to [`HeaderList::buf`], then call [`HeaderList::end`].
    pub(crate) fn begin(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// The bytes appended since `start`, name up to `name_end`, make a field.
    pub(crate) fn end(&mut self, start: usize, name_end: usize, sensitive: bool, unknown: bool) {
        let flags = (u8::from(sensitive) * SENSITIVE) | (u8::from(unknown) * UNKNOWN);
        let name_len = name_end - start;
        let value_len = self.bytes.len() - name_end;
        self.size = self
            .size
            .saturating_add(name_len + value_len + FIELD_OVERHEAD);
        self.fields.push(Span {
            start,
            name_len,
            value_len,
            flags,
        });
    }

    /// Removes bytes appended after `start` that did not become a field.
    pub(crate) fn truncate(&mut self, start: usize) {
        self.bytes.truncate(start);
    }

    /// The name and value bytes of the field being built (from `start`).
    pub(crate) fn pending(&self, start: usize, name_end: usize) -> (&[u8], &[u8]) {
        (&self.bytes[start..name_end], &self.bytes[name_end..])
    }

    /// The list in one allocation, for a record to keep.
    pub fn pack(&self) -> Packed {
        let mut v = Vec::with_capacity(4 + self.fields.len() * 9 + self.bytes.len());
        v.extend_from_slice(&(self.fields.len() as u32).to_le_bytes());
        for s in &self.fields {
            v.extend_from_slice(&(s.name_len as u32).to_le_bytes());
            v.extend_from_slice(&(s.value_len as u32).to_le_bytes());
            v.push(s.flags);
        }
        for s in &self.fields {
            v.extend_from_slice(&self.bytes[s.start..s.start + s.name_len + s.value_len]);
        }
        Packed(v.into_boxed_slice())
    }
}

/// A header list packed into one allocation: the field count, each field's
/// name and value lengths and flags, then the names and values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed(Box<[u8]>);

impl Packed {
    pub fn len(&self) -> usize {
        u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> PackedIter<'_> {
        let n = self.len();
        PackedIter {
            packed: &self.0,
            i: 0,
            n,
            at: 4 + n * 9,
        }
    }
}

pub struct PackedIter<'a> {
    packed: &'a [u8],
    i: usize,
    n: usize,
    at: usize,
}

impl<'a> Iterator for PackedIter<'a> {
    type Item = FieldRef<'a>;

    fn next(&mut self) -> Option<FieldRef<'a>> {
        if self.i == self.n {
            return None;
        }
        let d = &self.packed[4 + self.i * 9..4 + self.i * 9 + 9];
        let name_len = u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as usize;
        let value_len = u32::from_le_bytes([d[4], d[5], d[6], d[7]]) as usize;
        let flags = d[8];
        let name = &self.packed[self.at..self.at + name_len];
        let value = &self.packed[self.at + name_len..self.at + name_len + value_len];
        self.at += name_len + value_len;
        self.i += 1;
        Some(FieldRef {
            name,
            value,
            sensitive: flags & SENSITIVE != 0,
            unknown: flags & UNKNOWN != 0,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.n - self.i, Some(self.n - self.i))
    }
}

impl ExactSizeIterator for PackedIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_keeps_every_field_and_flag() {
        let mut l = HeaderList::new();
        l.push(b":method", b"GET", false, false);
        l.push(b"<unknown index 70>", b"v", false, true);
        l.push(b"x-secret", b"", true, false);
        assert_eq!(l.size(), 7 + 3 + 18 + 1 + 8 + 3 * FIELD_OVERHEAD);
        let p = l.pack();
        let a: Vec<FieldRef<'_>> = l.iter().collect();
        let b: Vec<FieldRef<'_>> = p.iter().collect();
        assert_eq!(a, b);
        assert_eq!(p.iter().len(), 3);
        assert!(b[1].unknown && !b[1].sensitive && b[2].sensitive);
        assert!(HeaderList::new().pack().is_empty());
    }
}
