//! The HPACK Huffman code (RFC 7541 Appendix B), decoded four bits at a time.
//!
//! The code is canonical, so the bit length of each symbol is all the spec data
//! needed; codes are rebuilt from the lengths. Decoding walks a state machine whose
//! states are the inner nodes of the code tree: each nibble moves to the next state
//! and emits at most one symbol (no code is shorter than five bits).

use std::sync::OnceLock;

/// Bit length of the code of each symbol 0..=255 (RFC 7541 Appendix B). EOS (256) is 30.
const LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];
const EOS: u16 = 256;
const EOS_LEN: u8 = 30;

/// Why a Huffman string is invalid (RFC 7541 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HuffmanError {
    /// The EOS symbol appeared in the string.
    Eos,
    /// Padding longer than 7 bits or not all ones.
    BadPadding,
}

/// One transition: next state, symbol emitted (if `FLAG_SYM`), and flags.
#[derive(Clone, Copy, Default)]
struct Step {
    next: u8,
    sym: u8,
    flags: u8,
}

const FLAG_SYM: u8 = 1;
const FLAG_FAIL: u8 = 2;
/// The state reached is a valid place to end: the bits since the last symbol are
/// a prefix of EOS (all ones) no longer than seven bits.
const FLAG_ACCEPT: u8 = 4;

struct Machine {
    steps: Vec<[Step; 16]>,
    accept_root: bool,
}

/// The code of each symbol, rebuilt from the canonical lengths.
pub(crate) fn codes() -> [(u32, u8); 257] {
    let mut syms: Vec<(u8, u16)> = (0..256u16).map(|s| (LENGTHS[s as usize], s)).collect();
    syms.push((EOS_LEN, EOS));
    syms.sort_unstable();
    let mut out = [(0u32, 0u8); 257];
    let mut code: u32 = 0;
    let mut prev_len = syms[0].0;
    for (i, &(len, sym)) in syms.iter().enumerate() {
        if i > 0 {
            code = (code + 1) << (len - prev_len);
        }
        prev_len = len;
        out[sym as usize] = (code, len);
    }
    out
}

fn machine() -> &'static Machine {
    static M: OnceLock<Machine> = OnceLock::new();
    M.get_or_init(build)
}

fn build() -> Machine {
    // Binary tree: node 0 is the root; children[n] = [left, right], where a value
    // >= LEAF marks a leaf holding symbol value - LEAF.
    const LEAF: u32 = 1 << 16;
    let mut children: Vec<[u32; 2]> = vec![[0, 0]];
    for (sym, &(code, len)) in codes().iter().enumerate() {
        let mut node = 0usize;
        for i in (0..len).rev() {
            let bit = ((code >> i) & 1) as usize;
            if i == 0 {
                children[node][bit] = LEAF + sym as u32;
            } else {
                if children[node][bit] == 0 {
                    children.push([0, 0]);
                    children[node][bit] = (children.len() - 1) as u32;
                }
                node = children[node][bit] as usize;
            }
        }
    }
    // Inner nodes reachable by at most 7 one-bits from the root are the valid
    // places to end a string (padding is a prefix of EOS).
    let mut accept = vec![false; children.len()];
    accept[0] = true;
    let mut n = 0usize;
    for _ in 0..7 {
        let c = children[n][1];
        if c >= LEAF {
            break;
        }
        n = c as usize;
        accept[n] = true;
    }
    assert!(
        children.len() <= 256,
        "Huffman tree has more inner nodes than states"
    );
    let mut steps = vec![[Step::default(); 16]; children.len()];
    for (state, row) in steps.iter_mut().enumerate() {
        for (nib, step) in row.iter_mut().enumerate() {
            let mut node = state;
            let mut out = Step::default();
            for i in (0..4).rev() {
                let bit = (nib >> i) & 1;
                let c = children[node][bit];
                if c >= LEAF {
                    let sym = c - LEAF;
                    if sym == EOS as u32 {
                        out.flags |= FLAG_FAIL;
                        break;
                    }
                    out.flags |= FLAG_SYM;
                    out.sym = sym as u8;
                    node = 0;
                } else {
                    node = c as usize;
                }
            }
            out.next = node as u8;
            if accept[node] {
                out.flags |= FLAG_ACCEPT;
            }
            *step = out;
        }
    }
    Machine {
        steps,
        accept_root: true,
    }
}

/// Decodes `src`, appending the symbols to `out`.
pub fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    out.reserve(src.len() * 8 / 5);
    walk(src, |b| out.push(b))
}

/// Checks that `src` is a valid Huffman string without keeping what it says.
pub fn check(src: &[u8]) -> Result<(), HuffmanError> {
    walk(src, |_| {})
}

fn walk(src: &[u8], mut emit: impl FnMut(u8)) -> Result<(), HuffmanError> {
    let m = machine();
    let mut state = 0usize;
    let mut accept = m.accept_root;
    for &b in src {
        for nib in [b >> 4, b & 0x0f] {
            let step = m.steps[state][nib as usize];
            if step.flags & FLAG_FAIL != 0 {
                return Err(HuffmanError::Eos);
            }
            if step.flags & FLAG_SYM != 0 {
                emit(step.sym);
            }
            state = step.next as usize;
            accept = step.flags & FLAG_ACCEPT != 0;
        }
    }
    if accept {
        Ok(())
    } else {
        Err(HuffmanError::BadPadding)
    }
}

/// Encodes `src` (used by tests and benchmarks to build HPACK input).
pub fn encode(src: &[u8], out: &mut Vec<u8>) {
    let table = codes();
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in src {
        let (code, len) = table[b as usize];
        acc = (acc << len) | code as u64;
        bits += len as u32;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        acc = (acc << pad) | ((1u64 << pad) - 1);
        out.push(acc as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_codes_match_the_rfc_table() {
        let c = codes();
        // Spot checks against RFC 7541 Appendix B.
        assert_eq!(c[0], (0x1ff8, 13));
        assert_eq!(c[b'0' as usize], (0x0, 5));
        assert_eq!(c[b' ' as usize], (0x14, 6));
        assert_eq!(c[b'a' as usize], (0x3, 5));
        assert_eq!(c[b'z' as usize], (0x7b, 7));
        assert_eq!(c[255], (0x3ffffee, 26));
        assert_eq!(c[256], (0x3fffffff, 30));
    }

    #[test]
    fn round_trips_every_byte() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let mut enc = Vec::new();
        encode(&all, &mut enc);
        let mut dec = Vec::new();
        decode(&enc, &mut dec).unwrap();
        assert_eq!(dec, all);
    }

    #[test]
    fn rejects_bad_padding_and_eos() {
        let mut out = Vec::new();
        // "a" is 00011, padded with zeros instead of ones.
        assert_eq!(
            decode(&[0b0001_1000], &mut out),
            Err(HuffmanError::BadPadding)
        );
        // A whole byte of ones after a complete symbol is padding longer than 7 bits.
        out.clear();
        assert_eq!(
            decode(&[0b0001_1111, 0xff], &mut out),
            Err(HuffmanError::BadPadding)
        );
        // Thirty one-bits: EOS.
        out.clear();
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(HuffmanError::Eos)
        );
    }
}
