//! HPACK (RFC 7541) header block decoding with a dynamic table that may start
//! partly unknown (see [`table`]), bounded in what a block may expand to.

pub mod huffman;
pub mod list;
pub mod table;

use std::fmt;
use std::sync::Arc;

use spf_pipeline::Budget;

pub use list::{FIELD_OVERHEAD, FieldRef, HeaderList, Packed};
pub use table::{Entry, Lookup, Table, TableEvents};

/// A header block the decoder could not decode (a COMPRESSION_ERROR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HpackError {
    IndexZero,
    BadIndex(usize),
    IntegerOverflow,
    Truncated,
    Huffman(huffman::HuffmanError),
    SizeUpdateNotFirst,
}

impl fmt::Display for HpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HpackError::IndexZero => f.write_str("index 0 is not a valid header table index"),
            HpackError::BadIndex(i) => write!(f, "index {i} is past the end of the header table"),
            HpackError::IntegerOverflow => f.write_str("integer too large"),
            HpackError::Truncated => f.write_str("header block ends inside a field"),
            HpackError::Huffman(huffman::HuffmanError::Eos) => {
                f.write_str("Huffman string contains EOS")
            }
            HpackError::Huffman(huffman::HuffmanError::BadPadding) => {
                f.write_str("Huffman string has invalid padding")
            }
            HpackError::SizeUpdateNotFirst => {
                f.write_str("dynamic table size update after the first header field")
            }
        }
    }
}

impl std::error::Error for HpackError {}

/// What decoding a block noticed besides its fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// A dynamic table size update above every SETTINGS_HEADER_TABLE_SIZE
    /// seen (or above the default 4096 when none was seen): the largest such
    /// size. The peers agreed on it somewhere spf did not see, so it is applied.
    pub unannounced_size: Option<usize>,
    /// The list grew past the limit given to [`Decoder::decode`]: the list is
    /// left empty, and the rest of the block was only parsed for the table's
    /// sake, without expanding any field.
    pub over_limit: bool,
}

/// Decodes the header blocks of one direction of one connection.
#[derive(Debug)]
pub struct Decoder {
    table: Table,
    /// The largest SETTINGS_HEADER_TABLE_SIZE the decoding side announced, or
    /// the default while none was seen.
    announced: usize,
    /// Strings of fields decoded past the list limit, only to insert them.
    scratch: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

/// Largest integer accepted; HPACK values beyond this are never legitimate here.
const MAX_INT: u64 = u32::MAX as u64;

/// Largest list limit: lists stay well within what [`Packed`] can index.
const MAX_LIST: usize = (u32::MAX / 2) as usize;

/// Scratch space kept between blocks (it is only used past the list limit);
/// more is released after a big block, so that idle connections hold little.
const KEEP_SCRATCH: usize = 4096;

impl Decoder {
    /// A decoder at the start of a connection.
    pub fn new() -> Self {
        Decoder {
            table: Table::new(),
            announced: table::DEFAULT_MAX,
            scratch: Vec::new(),
        }
    }

    /// A decoder whose table starts with maximum size `max` (as if the peers had
    /// agreed on it), e.g. the RFC 7541 examples that use 256.
    pub fn with_max_size(max: usize) -> Self {
        let mut d = Decoder::new();
        d.announced = max.max(table::DEFAULT_MAX);
        d.table.resize(max);
        d
    }

    /// A decoder for a connection already running: earlier entries are unknown.
    pub fn unknown() -> Self {
        let mut d = Decoder::new();
        d.table.forget();
        d
    }

    /// Bounds the bytes the table holds and takes them from `budget`. Call
    /// before decoding.
    pub fn set_memory(&mut self, mem_cap: usize, budget: Option<Arc<Budget>>) {
        self.table.set_memory(mem_cap, budget);
    }

    /// Starts over as at the beginning of a connection (a connection preface).
    pub fn reset(&mut self) {
        self.table.reset();
        self.announced = table::DEFAULT_MAX;
    }

    /// Marks the table as no longer trustworthy (lost bytes, decoding error,
    /// joining a connection already running).
    pub fn forget(&mut self) {
        self.table.forget();
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Why the table dropped entries since the last call.
    pub fn take_events(&mut self) -> TableEvents {
        self.table.take_events()
    }

    /// The decoding side sent SETTINGS_HEADER_TABLE_SIZE = `size`.
    pub fn settings_table_size(&mut self, size: u32) {
        self.announced = self.announced.max(size as usize);
    }

    /// Decodes one complete header block, appending its fields to `out`
    /// until their size (as SETTINGS_MAX_HEADER_LIST_SIZE counts it) would
    /// pass `max_list`: then `out` is emptied and the rest of the block is
    /// parsed without expanding fields, only to keep the table right (a
    /// 1-byte index can name a 4 KiB entry; expanding them all is what a
    /// decompression bomb asks for).
    ///
    /// On error the fields decoded so far stay in `out` and the table must be
    /// forgotten by the caller (its state past the error is unknown).
    pub fn decode(
        &mut self,
        block: &[u8],
        out: &mut HeaderList,
        max_list: usize,
    ) -> Result<Outcome, HpackError> {
        let max_list = max_list.min(MAX_LIST);
        let mut outcome = Outcome::default();
        let mut p = 0usize;
        let mut first = true;
        let result = loop {
            if p >= block.len() {
                break Ok(());
            }
            let b = block[p];
            let step = if b & 0x80 != 0 {
                int(block, &mut p, 7).and_then(|idx| {
                    if outcome.over_limit {
                        // Still an error when it is one, but nothing to expand.
                        self.check_index(idx as usize)
                    } else {
                        self.indexed(idx as usize, out)
                    }
                })
            } else if b & 0x40 != 0 {
                int(block, &mut p, 6).and_then(|idx| {
                    self.literal(block, &mut p, idx as usize, false, true, out, &outcome)
                })
            } else if b & 0x20 != 0 {
                if !first {
                    break Err(HpackError::SizeUpdateNotFirst);
                }
                match int(block, &mut p, 5) {
                    Ok(size) => {
                        let size = size as usize;
                        if size > self.announced {
                            outcome.unannounced_size =
                                Some(outcome.unannounced_size.unwrap_or(0).max(size));
                        }
                        self.table.resize(size);
                        continue;
                    }
                    Err(e) => break Err(e),
                }
            } else {
                let sensitive = b & 0x10 != 0;
                int(block, &mut p, 4).and_then(|idx| {
                    self.literal(block, &mut p, idx as usize, sensitive, false, out, &outcome)
                })
            };
            if let Err(e) = step {
                break Err(e);
            }
            first = false;
            if !outcome.over_limit && out.size() > max_list {
                outcome.over_limit = true;
                out.clear();
            }
        };
        if self.scratch.capacity() > KEEP_SCRATCH {
            self.scratch = Vec::new();
        }
        result.map(|()| outcome)
    }

    fn check_index(&self, idx: usize) -> Result<(), HpackError> {
        match self.table.get(idx) {
            Lookup::Invalid if idx == 0 => Err(HpackError::IndexZero),
            Lookup::Invalid => Err(HpackError::BadIndex(idx)),
            _ => Ok(()),
        }
    }

    fn indexed(&self, idx: usize, out: &mut HeaderList) -> Result<(), HpackError> {
        match self.table.get(idx) {
            Lookup::Static(n, v) => out.push(n.as_bytes(), v.as_bytes(), false, false),
            Lookup::Dynamic(e) => match &e.name {
                Some(n) => out.push(n, &e.value, false, false),
                None => {
                    let start = out.begin();
                    placeholder(idx, out.buf());
                    let name_end = out.buf().len();
                    out.buf().extend_from_slice(&e.value);
                    out.end(start, name_end, false, true);
                }
            },
            Lookup::Unknown => {
                let start = out.begin();
                placeholder(idx, out.buf());
                let name_end = out.buf().len();
                out.buf().extend_from_slice(b"<unknown>");
                out.end(start, name_end, false, true);
            }
            Lookup::Invalid if idx == 0 => return Err(HpackError::IndexZero),
            Lookup::Invalid => return Err(HpackError::BadIndex(idx)),
        }
        Ok(())
    }

    /// A literal field (RFC 7541 6.2) whose name is index `idx` (0: a literal
    /// name follows), inserted into the table when `insert`. Past the list
    /// limit its strings go to scratch space, and only if it is to be inserted.
    #[allow(clippy::too_many_arguments)]
    fn literal(
        &mut self,
        block: &[u8],
        p: &mut usize,
        idx: usize,
        sensitive: bool,
        insert: bool,
        out: &mut HeaderList,
        outcome: &Outcome,
    ) -> Result<(), HpackError> {
        if outcome.over_limit {
            let mut buf = std::mem::take(&mut self.scratch);
            buf.clear();
            let r = self.literal_into(block, p, idx, insert, &mut buf);
            if let Ok((name_end, unknown)) = r
                && insert
            {
                let name = (!unknown).then(|| &buf[..name_end]);
                self.table.insert(name, &buf[name_end..]);
            }
            self.scratch = buf;
            return r.map(|_| ());
        }
        let start = out.begin();
        match self.literal_into(block, p, idx, true, out.buf()) {
            Ok((name_end, unknown)) => {
                let name_end = start + name_end;
                if insert {
                    // The name was copied out of the table into the list, so
                    // the insertion may evict the entry it came from.
                    let (n, v) = out.pending(start, name_end);
                    self.table.insert((!unknown).then_some(n), v);
                }
                out.end(start, name_end, sensitive, unknown);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Appends a literal's name and value to `buf` (the strings only when
    /// `keep`, else only parsed); returns where the name ends, relative to
    /// where it began, and whether the name is unknown.
    fn literal_into(
        &self,
        block: &[u8],
        p: &mut usize,
        idx: usize,
        keep: bool,
        buf: &mut Vec<u8>,
    ) -> Result<(usize, bool), HpackError> {
        let start = buf.len();
        let unknown = if idx == 0 {
            string(block, p, keep.then_some(&mut *buf))?;
            false
        } else {
            match self.table.get(idx) {
                Lookup::Static(n, _) => {
                    if keep {
                        buf.extend_from_slice(n.as_bytes());
                    }
                    false
                }
                Lookup::Dynamic(e) => match &e.name {
                    Some(n) => {
                        if keep {
                            buf.extend_from_slice(n);
                        }
                        false
                    }
                    None => {
                        if keep {
                            placeholder(idx, buf);
                        }
                        true
                    }
                },
                Lookup::Unknown => {
                    if keep {
                        placeholder(idx, buf);
                    }
                    true
                }
                Lookup::Invalid => return Err(HpackError::BadIndex(idx)),
            }
        };
        let name_end = buf.len() - start;
        string(block, p, keep.then_some(buf))?;
        Ok((name_end, unknown))
    }
}

fn placeholder(idx: usize, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let _ = write!(out, "<unknown index {idx}>");
}

/// Decodes an HPACK integer with an `n`-bit prefix (RFC 7541 5.1).
fn int(block: &[u8], p: &mut usize, n: u32) -> Result<u64, HpackError> {
    let mask = (1u8 << n) - 1;
    let first = *block.get(*p).ok_or(HpackError::Truncated)? & mask;
    *p += 1;
    if first < mask {
        return Ok(first as u64);
    }
    let mut v = mask as u64;
    let mut shift = 0u32;
    loop {
        let b = *block.get(*p).ok_or(HpackError::Truncated)?;
        *p += 1;
        v += ((b & 0x7f) as u64) << shift;
        if v > MAX_INT {
            return Err(HpackError::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
    }
}

/// Decodes a string literal (RFC 7541 5.2), appending it to `out` when there
/// is one (else only checking it).
fn string(block: &[u8], p: &mut usize, out: Option<&mut Vec<u8>>) -> Result<(), HpackError> {
    let huff = *block.get(*p).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = int(block, p, 7)? as usize;
    let end = p.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = block.get(*p..end).ok_or(HpackError::Truncated)?;
    *p = end;
    match (huff, out) {
        (true, Some(out)) => huffman::decode(raw, out).map_err(HpackError::Huffman),
        (true, None) => huffman::check(raw).map_err(HpackError::Huffman),
        (false, Some(out)) => {
            out.extend_from_slice(raw);
            Ok(())
        }
        (false, None) => Ok(()),
    }
}

/// Minimal HPACK encoding, for tests and benchmarks that need header blocks.
pub mod encode {
    use super::huffman;

    pub fn int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
        let mask = (1usize << n) - 1;
        if v < mask {
            out.push(first | v as u8);
            return;
        }
        out.push(first | mask as u8);
        v -= mask;
        while v >= 128 {
            out.push((v % 128 + 128) as u8);
            v /= 128;
        }
        out.push(v as u8);
    }

    pub fn string(out: &mut Vec<u8>, s: &[u8], huff: bool) {
        if huff {
            let mut h = Vec::new();
            huffman::encode(s, &mut h);
            int(out, 0x80, 7, h.len());
            out.extend_from_slice(&h);
        } else {
            int(out, 0, 7, s.len());
            out.extend_from_slice(s);
        }
    }

    /// Literal with incremental indexing and a new name.
    pub fn literal_indexed(out: &mut Vec<u8>, name: &[u8], value: &[u8], huff: bool) {
        out.push(0x40);
        string(out, name, huff);
        string(out, value, huff);
    }

    /// Literal with incremental indexing, name from index `idx`.
    pub fn literal_indexed_name(out: &mut Vec<u8>, idx: usize, value: &[u8], huff: bool) {
        int(out, 0x40, 6, idx);
        string(out, value, huff);
    }

    /// Literal without indexing, name from index `idx` (0: literal name follows).
    pub fn literal_plain(out: &mut Vec<u8>, idx: usize, name: &[u8], value: &[u8], huff: bool) {
        int(out, 0x00, 4, idx);
        if idx == 0 {
            string(out, name, huff);
        }
        string(out, value, huff);
    }

    pub fn indexed(out: &mut Vec<u8>, idx: usize) {
        int(out, 0x80, 7, idx);
    }

    pub fn size_update(out: &mut Vec<u8>, size: usize) {
        int(out, 0x20, 5, size);
    }
}

#[cfg(test)]
mod tests;
