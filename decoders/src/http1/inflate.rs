//! gzip (RFC 1952) and deflate bodies decompressed piece by piece as they
//! arrive, never producing more than a set total: a few compressed bytes can
//! stand for gigabytes.
//!
//! `Content-Encoding: deflate` means the zlib format (RFC 9110 §8.4.1.2), but
//! some servers send raw deflate; the first two bytes tell which.

use flate2::{Decompress, FlushDecompress, Status};

use super::parse::Encoding;

/// Memory an inflater holds (its window and tables), for the budget.
pub const STATE_BYTES: usize = 48 << 10;

/// Longest gzip header accepted (its optional name and comment included).
const MAX_GZIP_HEADER: usize = 4096;

#[derive(Debug)]
enum Stage {
    /// Collecting the gzip header (or the two bytes that tell zlib from raw
    /// deflate).
    Header(Vec<u8>),
    Stream,
    /// The compressed stream ended; what follows (a gzip trailer) is not shown.
    Done,
}

#[derive(Debug)]
pub struct Inflater {
    encoding: Encoding,
    stage: Stage,
    z: Option<Decompress>,
    produced: usize,
    limit: usize,
}

/// What decompressing one piece gave.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Piece {
    pub data: Vec<u8>,
    /// The output reached the limit: no more is produced for this body.
    pub capped: bool,
}

impl Inflater {
    /// For a body in `encoding` (gzip or deflate), producing at most `limit`
    /// bytes in all.
    pub fn new(encoding: Encoding, limit: usize) -> Self {
        Inflater {
            encoding,
            stage: Stage::Header(Vec::new()),
            z: None,
            produced: 0,
            limit,
        }
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Decompresses the next piece of the body.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<Piece, String> {
        if let Stage::Header(h) = &mut self.stage {
            let take = input.len().min(MAX_GZIP_HEADER - h.len());
            h.extend_from_slice(&input[..take]);
            let (z, header) = match self.encoding {
                Encoding::Gzip => match gzip_header_len(h)? {
                    Some(n) => (Decompress::new(false), n),
                    // Short of the limit, everything offered was gathered.
                    None if h.len() < MAX_GZIP_HEADER => return Ok(Piece::default()),
                    None => return Err("gzip header too long".into()),
                },
                _ if h.len() < 2 => return Ok(Piece::default()),
                _ => {
                    let zlib =
                        h[0] & 0x0f == 8 && (u16::from(h[0]) << 8 | u16::from(h[1])) % 31 == 0;
                    (Decompress::new(zlib), 0)
                }
            };
            // The header's bytes are in `h`; hand the rest of what was
            // gathered on, then whatever of `input` was not gathered.
            let gathered = std::mem::take(h);
            self.z = Some(z);
            self.stage = Stage::Stream;
            let mut first = self.inflate(&gathered[header..])?;
            if !first.capped && take < input.len() {
                input = &input[take..];
                let more = self.inflate(input)?;
                first.data.extend_from_slice(&more.data);
                first.capped = more.capped;
            }
            return Ok(first);
        }
        self.inflate(input)
    }

    fn inflate(&mut self, mut input: &[u8]) -> Result<Piece, String> {
        let mut piece = Piece::default();
        let (Stage::Stream, Some(z)) = (&self.stage, self.z.as_mut()) else {
            return Ok(piece);
        };
        while self.produced + piece.data.len() < self.limit {
            let room = (self.limit - self.produced - piece.data.len())
                .min((input.len() * 4).max(16 << 10))
                .min(1 << 20);
            piece.data.reserve(room);
            let (in0, out0) = (z.total_in(), z.total_out());
            let status = z
                .decompress_vec(input, &mut piece.data, FlushDecompress::None)
                .map_err(|e| format!("{} data does not decompress: {e}", self.encoding.as_str()))?;
            let consumed = (z.total_in() - in0) as usize;
            let made = (z.total_out() - out0) as usize;
            input = &input[consumed..];
            if status == Status::StreamEnd {
                self.stage = Stage::Done;
                break;
            }
            if consumed == 0 && made == 0 {
                break;
            }
        }
        if self.produced + piece.data.len() >= self.limit {
            piece.data.truncate(self.limit - self.produced);
            piece.capped = true;
            self.stage = Stage::Done;
        }
        self.produced += piece.data.len();
        Ok(piece)
    }
}

/// The length of the gzip header at the start of `h`, once it is all there.
fn gzip_header_len(h: &[u8]) -> Result<Option<usize>, String> {
    if h.len() < 10 {
        if h.iter().zip([0x1f, 0x8b, 8]).any(|(a, b)| *a != b) {
            return Err("not gzip data (bad magic bytes)".into());
        }
        return Ok(None);
    }
    if h[..3] != [0x1f, 0x8b, 8] {
        return Err("not gzip data (bad magic bytes)".into());
    }
    let flags = h[3];
    let mut at = 10;
    if flags & 4 != 0 {
        let Some(x) = h.get(at..at + 2) else {
            return Ok(None);
        };
        at += 2 + usize::from(u16::from_le_bytes([x[0], x[1]]));
    }
    for bit in [8, 16] {
        if flags & bit != 0 {
            match h.get(at..).and_then(|r| r.iter().position(|&b| b == 0)) {
                Some(p) => at += p + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 2 != 0 {
        at += 2;
    }
    Ok((h.len() >= at).then_some(at))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn all(enc: Encoding, wire: &[u8], step: usize, limit: usize) -> (Vec<u8>, bool) {
        let mut i = Inflater::new(enc, limit);
        let mut out = Vec::new();
        let mut capped = false;
        for piece in wire.chunks(step) {
            let p = i.feed(piece).unwrap();
            out.extend_from_slice(&p.data);
            capped |= p.capped;
        }
        (out, capped)
    }

    #[test]
    fn gzip_zlib_and_raw_deflate_in_any_pieces() {
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        for step in [1, 5, 11, 4096, 1 << 20] {
            assert_eq!(
                all(Encoding::Gzip, &gzip(&text), step, 1 << 30),
                (text.clone(), false)
            );
            assert_eq!(
                all(Encoding::Deflate, &zlib(&text), step, 1 << 30),
                (text.clone(), false)
            );
            assert_eq!(
                all(Encoding::Deflate, &raw_deflate(&text), step, 1 << 30),
                (text.clone(), false)
            );
        }
    }

    #[test]
    fn gzip_header_with_name_and_extra() {
        let mut e = flate2::GzBuilder::new()
            .filename("body.json")
            .comment("made by a test")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::fast());
        e.write_all(b"{\"a\":1}").unwrap();
        let wire = e.finish().unwrap();
        for step in [1, 3, 100] {
            assert_eq!(all(Encoding::Gzip, &wire, step, 1000).0, b"{\"a\":1}");
        }
    }

    #[test]
    fn output_is_bounded_however_well_it_compresses() {
        let bomb = gzip(&vec![0u8; 50 << 20]);
        assert!(bomb.len() < 100 << 10);
        let (out, capped) = all(Encoding::Gzip, &bomb, 64 << 10, 1 << 20);
        assert_eq!(out.len(), 1 << 20);
        assert!(capped);
    }

    #[test]
    fn corrupt_data_is_an_error() {
        let mut i = Inflater::new(Encoding::Gzip, 1000);
        assert!(i.feed(b"not gzip at all").is_err());
        let mut wire = gzip(b"hello hello hello");
        wire[12] ^= 0xff;
        wire[13] ^= 0xff;
        let mut i = Inflater::new(Encoding::Gzip, 1000);
        let r = i.feed(&wire);
        assert!(r.is_err() || r.unwrap().data != b"hello hello hello");
    }
}
