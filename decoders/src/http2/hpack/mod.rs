//! HPACK (RFC 7541) header block decoding with a dynamic table that may start
//! partly unknown (see [`table`]).

pub mod huffman;
pub mod table;

use std::fmt;

pub use table::{Entry, Lookup, Table};

/// One decoded header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    /// Sent as "never indexed" (RFC 7541 6.2.3): the sender marked it sensitive.
    pub sensitive: bool,
    /// The name, the value, or both are placeholders for a table entry inserted
    /// before decoding began.
    pub unknown: bool,
}

/// A header block the decoder could not decode (a COMPRESSION_ERROR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HpackError {
    IndexZero,
    BadIndex(usize),
    IntegerOverflow,
    Truncated,
    Huffman(huffman::HuffmanError),
    SizeUpdateNotFirst,
    SizeUpdateTooLarge { size: usize, limit: usize },
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
            HpackError::SizeUpdateTooLarge { size, limit } => write!(
                f,
                "dynamic table size update to {size} exceeds SETTINGS_HEADER_TABLE_SIZE {limit}"
            ),
        }
    }
}

impl std::error::Error for HpackError {}

/// Decodes the header blocks of one direction of one connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    table: Table,
    /// The largest SETTINGS_HEADER_TABLE_SIZE the decoding side announced (at least
    /// the default); `None` while unknown, when decoding began mid-stream.
    settings_limit: Option<usize>,
    /// SETTINGS_HEADER_TABLE_SIZE was seen (so `settings_limit` is known).
    settings_seen: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

/// Largest integer accepted; HPACK values beyond this are never legitimate here.
const MAX_INT: u64 = u32::MAX as u64;

impl Decoder {
    /// A decoder at the start of a connection.
    pub fn new() -> Self {
        Decoder {
            table: Table::new(),
            settings_limit: Some(table::DEFAULT_MAX),
            settings_seen: false,
        }
    }

    /// A decoder whose table starts with maximum size `max` (as if the peers had
    /// agreed on it), e.g. the RFC 7541 examples that use 256.
    pub fn with_max_size(max: usize) -> Self {
        let mut d = Decoder::new();
        d.settings_limit = Some(max.max(table::DEFAULT_MAX));
        d.table.resize(max);
        d
    }

    /// A decoder for a connection already running: earlier entries are unknown.
    pub fn unknown() -> Self {
        Decoder {
            table: Table::unknown(),
            settings_limit: None,
            settings_seen: false,
        }
    }

    /// Marks the table as no longer trustworthy (lost bytes, decoding error).
    pub fn forget(&mut self) {
        self.table.forget();
    }

    /// Decoding joins a connection already running: the table is unknown, and so
    /// is the settings limit unless SETTINGS were seen since.
    pub fn join_midway(&mut self) {
        self.table.forget();
        if !self.settings_seen {
            self.settings_limit = None;
        }
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The decoding side sent SETTINGS_HEADER_TABLE_SIZE = `size`.
    pub fn settings_table_size(&mut self, size: u32) {
        let size = size as usize;
        let limit = self
            .settings_limit
            .unwrap_or(0)
            .max(size)
            .max(table::DEFAULT_MAX);
        self.settings_limit = Some(limit);
        self.settings_seen = true;
        self.table.set_bound(limit);
    }

    /// Decodes one complete header block, appending fields to `out`. On error the
    /// fields decoded so far stay in `out` and the table must be forgotten by the
    /// caller (its state past the error is unknown).
    pub fn decode(&mut self, block: &[u8], out: &mut Vec<Field>) -> Result<(), HpackError> {
        let mut p = 0usize;
        let mut first = true;
        while p < block.len() {
            let b = block[p];
            if b & 0x80 != 0 {
                let idx = int(block, &mut p, 7)? as usize;
                out.push(self.indexed(idx)?);
            } else if b & 0x40 != 0 {
                let idx = int(block, &mut p, 6)? as usize;
                let f = self.literal(block, &mut p, idx, false)?;
                let name = if f.unknown {
                    None
                } else {
                    Some(f.name.clone().into_boxed_slice())
                };
                self.table.insert(Entry {
                    name,
                    value: f.value.clone().into_boxed_slice(),
                });
                out.push(f);
            } else if b & 0x20 != 0 {
                if !first {
                    return Err(HpackError::SizeUpdateNotFirst);
                }
                let size = int(block, &mut p, 5)? as usize;
                if let Some(limit) = self.settings_limit
                    && size > limit
                {
                    return Err(HpackError::SizeUpdateTooLarge { size, limit });
                }
                self.table.resize(size);
                continue;
            } else {
                let sensitive = b & 0x10 != 0;
                let idx = int(block, &mut p, 4)? as usize;
                let f = self.literal(block, &mut p, idx, sensitive)?;
                out.push(f);
            }
            first = false;
        }
        Ok(())
    }

    fn indexed(&self, idx: usize) -> Result<Field, HpackError> {
        match self.table.get(idx) {
            Lookup::Static(n, v) => Ok(Field {
                name: n.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
                sensitive: false,
                unknown: false,
            }),
            Lookup::Dynamic(e) => Ok(match &e.name {
                Some(n) => Field {
                    name: n.to_vec(),
                    value: e.value.to_vec(),
                    sensitive: false,
                    unknown: false,
                },
                None => Field {
                    name: placeholder(idx),
                    value: e.value.to_vec(),
                    sensitive: false,
                    unknown: true,
                },
            }),
            Lookup::Unknown => Ok(Field {
                name: placeholder(idx),
                value: b"<unknown>".to_vec(),
                sensitive: false,
                unknown: true,
            }),
            Lookup::Invalid if idx == 0 => Err(HpackError::IndexZero),
            Lookup::Invalid => Err(HpackError::BadIndex(idx)),
        }
    }

    fn literal(
        &self,
        block: &[u8],
        p: &mut usize,
        idx: usize,
        sensitive: bool,
    ) -> Result<Field, HpackError> {
        let (name, unknown) = if idx == 0 {
            (string(block, p)?, false)
        } else {
            match self.table.get(idx) {
                Lookup::Static(n, _) => (n.as_bytes().to_vec(), false),
                Lookup::Dynamic(e) => match &e.name {
                    Some(n) => (n.to_vec(), false),
                    None => (placeholder(idx), true),
                },
                Lookup::Unknown => (placeholder(idx), true),
                Lookup::Invalid => return Err(HpackError::BadIndex(idx)),
            }
        };
        let value = string(block, p)?;
        Ok(Field {
            name,
            value,
            sensitive,
            unknown,
        })
    }
}

fn placeholder(idx: usize) -> Vec<u8> {
    format!("<unknown index {idx}>").into_bytes()
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

/// Decodes a string literal (RFC 7541 5.2).
fn string(block: &[u8], p: &mut usize) -> Result<Vec<u8>, HpackError> {
    let huff = *block.get(*p).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = int(block, p, 7)? as usize;
    let end = p.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = block.get(*p..end).ok_or(HpackError::Truncated)?;
    *p = end;
    if huff {
        let mut out = Vec::new();
        huffman::decode(raw, &mut out).map_err(HpackError::Huffman)?;
        Ok(out)
    } else {
        Ok(raw.to_vec())
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
