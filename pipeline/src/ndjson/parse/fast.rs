//! A fast path for the exact shape [`encode`] writes for raw records: fields in
//! encoder order, no escapes in strings. Anything else returns `None` and goes
//! through serde, which accepts any valid JSON; both give the same event.

use super::*;

struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn lit(&mut self, s: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + s.len())? == s {
            self.i += s.len();
            Some(())
        } else {
            None
        }
    }

    fn uint(&mut self) -> Option<u64> {
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(&c) = self.b.get(self.i) {
            if !c.is_ascii_digit() {
                break;
            }
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        // JSON forbids leading zeros; leave such input to serde's verdict.
        let n = self.i - start;
        if n == 0 || (n > 1 && self.b[start] == b'0') {
            return None;
        }
        Some(v)
    }

    /// A string without escapes or control characters, as raw bytes.
    fn plain_str(&mut self) -> Option<&'a [u8]> {
        self.lit(b"\"")?;
        let start = self.i;
        let len = memchr::memchr2(b'"', b'\\', &self.b[start..])?;
        if self.b[start + len] != b'"' || self.b[start..start + len].iter().any(|&c| c < 0x20) {
            return None;
        }
        self.i = start + len + 1;
        Some(&self.b[start..start + len])
    }

    /// Like `plain_str`, without the control-character scan: base64 decoding
    /// rejects every byte outside its alphabet anyway, and payloads are long.
    fn b64_str(&mut self) -> Option<&'a [u8]> {
        self.lit(b"\"")?;
        let start = self.i;
        let len = memchr::memchr2(b'"', b'\\', &self.b[start..])?;
        if self.b[start + len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        Some(&self.b[start..start + len])
    }

    fn text_str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.plain_str()?).ok()
    }

    /// Skips a string that may hold escapes (the `text` preview), checking
    /// that the escapes are valid JSON.
    fn skip_str(&mut self) -> Option<()> {
        self.lit(b"\"")?;
        loop {
            let rel = memchr::memchr2(b'"', b'\\', &self.b[self.i..])?;
            if self.b[self.i..self.i + rel].iter().any(|&c| c < 0x20) {
                return None;
            }
            self.i += rel;
            if self.b[self.i] == b'"' {
                self.i += 1;
                return Some(());
            }
            match *self.b.get(self.i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                b'u' => {
                    let hex = self.b.get(self.i + 2..self.i + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    self.i += 6;
                }
                _ => return None,
            }
        }
    }
}

pub(super) fn cached_time(t: &str, last: &mut Option<([u8; 19], u64)>) -> Option<u64> {
    let b = t.as_bytes();
    // Only the `.fraction` + `Z` form: the seconds part must end where the
    // fraction starts for the cached value to apply.
    if b.len() == 30
        && b[19] == b'.'
        && b[29] == b'Z'
        && let Some((prefix, secs)) = last
        && b[..19] == prefix[..]
    {
        let frac = &b[20..29];
        if !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let nanos = frac.iter().fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
        return secs.checked_mul(1_000_000_000)?.checked_add(nanos);
    }
    let ns = parse_rfc3339(t)?;
    if b.len() >= 19 {
        let mut prefix = [0u8; 19];
        prefix.copy_from_slice(&b[..19]);
        *last = Some((prefix, ns / 1_000_000_000));
    }
    Some(ns)
}

pub(super) fn raw_event(line: &[u8], seq: u64, interner: &mut Interner) -> Option<SourceItem> {
    let mut c = Cur { b: line, i: 0 };
    c.lit(b"{\"ts_ns\":")?;
    let ts_ns = c.uint()?;
    c.lit(b",\"time\":")?;
    let time_ns = cached_time(c.text_str()?, &mut interner.last_second)?;
    c.lit(b",\"pid\":")?;
    let pid = u32::try_from(c.uint()?).ok()?;
    c.lit(b",\"tid\":")?;
    let tid = u32::try_from(c.uint()?).ok()?;
    c.lit(b",\"comm\":")?;
    let comm = c.text_str()?;
    c.lit(b",\"peer_pid\":")?;
    let peer_pid = u32::try_from(c.uint()?).ok()?;
    let peer_comm = match c.lit(b",\"peer_comm\":") {
        Some(()) => c.text_str()?,
        None => "",
    };
    c.lit(b",\"path\":")?;
    let path = c.text_str()?;
    c.lit(b",\"sock\":")?;
    let sock = SockKind::parse(c.text_str()?)?;
    c.lit(b",\"dir\":")?;
    let dir = Direction::parse(c.text_str()?)?;
    c.lit(b",\"conn\":")?;
    let conn = c.uint()?;
    // Captures written before the field existed lack it.
    let socket = match c.lit(b",\"socket\":") {
        Some(()) => c.uint()?,
        None => 0,
    };
    let opt_uint = |c: &mut Cur<'_>, key: &[u8]| -> Option<Option<u64>> {
        match c.lit(key) {
            Some(()) => Some(Some(c.uint()?)),
            None => Some(None),
        }
    };
    let peer_socket = opt_uint(&mut c, b",\"peer_socket\":")?.unwrap_or(0);
    let role = match c.lit(b",\"role\":") {
        Some(()) => Role::parse(c.text_str()?)?,
        None => Role::Unknown,
    };
    let lane = u8::try_from(opt_uint(&mut c, b",\"lane\":")?.unwrap_or(0)).ok()?;
    let pos = opt_uint(&mut c, b",\"pos\":")?;
    let rpos = opt_uint(&mut c, b",\"rpos\":")?;
    let epoch = u32::try_from(opt_uint(&mut c, b",\"epoch\":")?.unwrap_or(0)).ok()?;
    let skip = opt_uint(&mut c, b",\"skip\":")?.unwrap_or(0);
    c.lit(b",\"len\":")?;
    let len = c.uint()?;
    c.lit(b",\"captured\":")?;
    let captured = c.uint()?;
    c.lit(b",\"truncated\":")?;
    let truncated = if c.lit(b"true").is_some() {
        true
    } else {
        c.lit(b"false")?;
        false
    };
    let via = match c.lit(b",\"via\":") {
        Some(()) => Some(Direction::parse(c.text_str()?)?),
        None => None,
    };
    let cgroup = opt_uint(&mut c, b",\"cgroup\":")?.unwrap_or(0);
    let node = match c.lit(b",\"node\":") {
        Some(()) => c.text_str()?,
        None => "",
    };
    c.lit(b",\"decoder\":\"raw\",\"data_b64\":")?;
    let b64 = c.b64_str()?;
    if c.lit(b",\"text\":").is_some() {
        c.skip_str()?;
    }
    c.lit(b"}")?;
    if c.i != line.len() {
        return None;
    }
    let data = B64.decode_to_vec(b64).ok()?;
    if data.len() as u64 != captured || len < captured.checked_add(skip)? {
        return None;
    }
    let comm = Interner::get(&mut interner.last_comm, &mut interner.map, comm);
    let peer_comm = Interner::get(&mut interner.last_peer_comm, &mut interner.map, peer_comm);
    let path = Interner::get(&mut interner.last_path, &mut interner.map, path);
    let node = Interner::get(&mut interner.last_node, &mut interner.map, node);
    Some(SourceItem::Event(Arc::new(Event {
        seq,
        ts_ns,
        time_ns,
        pid,
        tid,
        comm,
        peer_pid,
        peer_comm,
        path,
        sock,
        dir,
        conn,
        socket,
        peer_socket,
        role,
        lane,
        pos,
        rpos,
        epoch,
        skip,
        len,
        data: data.into(),
        truncated,
        via,
        cgroup,
        // A line with a container goes through serde.
        container: None,
        node,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ndjson::tests::event;

    /// The fast path and serde must agree on every line the fast path accepts.
    #[test]
    fn fast_path_agrees_with_serde() {
        let mut lines = Vec::new();
        for (i, data) in [&b""[..], b"x", b"\x00\xff\"\\\n\t", &[0xe2, 0x82, 0xac][..]]
            .iter()
            .enumerate()
        {
            let mut e = (*event(data)).clone();
            e.truncated = i % 2 == 0;
            e.len = data.len() as u64 + i as u64;
            e.comm = if i == 3 {
                "caf\u{e9}".into()
            } else {
                "c".into()
            };
            e.path = "/run/p.sock".into();
            // A receive before alignment (rpos alone), and one after (both).
            if i == 1 {
                (e.rpos, e.epoch) = (Some(7), 3);
            } else if i == 2 {
                (e.pos, e.rpos, e.epoch) = (Some(1 << 62), Some((1 << 62) + 5), 9);
            }
            let mut out = Vec::new();
            encode(&Record::raw(Arc::new(e), "raw".into()), &mut out);
            out.pop();
            lines.push(out);
        }
        for line in &lines {
            let mut i = Interner::default();
            let fast = fast::raw_event(line, 3, &mut i).expect("fast path takes encoder output");
            let l: Line<'_> = serde_json::from_slice(line).unwrap();
            assert_eq!(l.decoder.as_deref(), Some("raw"));
            // Force the serde path by reordering the keys.
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            let mut keys: Vec<_> = v.as_object().unwrap().iter().collect();
            keys.reverse();
            let reordered = serde_json::to_vec(
                &keys
                    .into_iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<serde_json::Map<_, _>>(),
            )
            .unwrap();
            assert!(fast::raw_event(&reordered, 3, &mut i).is_none());
            let slow = parse_line(&reordered, 3, &mut i).unwrap();
            assert_eq!(Parsed::Item(fast), slow);
        }
        // Near misses fall back rather than being misread.
        let good = String::from_utf8(lines[1].clone()).unwrap();
        for bad in [
            good.replace("\"captured\":1", "\"captured\":2"),
            good.replace("\"pid\":10", "\"pid\":010"),
            format!("{good} "),
            good.replace("}", ",\"x\":1}"),
        ] {
            assert!(
                fast::raw_event(bad.as_bytes(), 0, &mut Interner::default()).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn cached_time_matches_full_parse() {
        let mut last = None;
        for t in [
            "2026-11-26T10:00:00.000000001Z",
            "2026-11-26T10:00:00.999999999Z",
            "2026-11-26T10:00:01.5Z",
            "2026-11-26T10:00:01.000000007Z",
            "2026-11-26T10:00:01Z",
            "2026-11-26T10:00:01.00000000xZ",
        ] {
            assert_eq!(fast::cached_time(t, &mut last), parse_rfc3339(t), "{t}");
        }
    }
}
