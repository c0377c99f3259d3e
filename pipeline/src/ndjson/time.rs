//! RFC 3339 times: written into every record, read back from a capture.

/// Formats nanoseconds since the Unix epoch as RFC 3339 UTC with nanoseconds.
pub fn rfc3339(time_ns: u64, out: &mut Vec<u8>) {
    let secs = time_ns / 1_000_000_000;
    let nanos = time_ns % 1_000_000_000;
    // Records come in bursts within one second; the calendar arithmetic is done
    // once per second and thread.
    thread_local! {
        static LAST: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((u64::MAX, [0; 20])) };
    }
    let prefix = LAST.with(|last| {
        let (s, p) = last.get();
        if s == secs {
            return p;
        }
        let p = date_time_prefix(secs);
        last.set((secs, p));
        p
    });
    let mut buf = [0u8; 30];
    buf[..20].copy_from_slice(&prefix);
    put_padded(nanos, 9, &mut buf[20..29]);
    buf[29] = b'Z';
    out.extend_from_slice(&buf);
}

/// `YYYY-MM-DDTHH:MM:SS.` for seconds since the epoch.
fn date_time_prefix(secs: u64) -> [u8; 20] {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let mut buf = [0u8; 20];
    let fields: [(u64, usize); 6] = [
        (y as u64, 4),
        (m as u64, 2),
        (d as u64, 2),
        (rem / 3600, 2),
        (rem % 3600 / 60, 2),
        (rem % 60, 2),
    ];
    let seps = [b'-', b'-', b'T', b':', b':', b'.'];
    let mut i = 0;
    for ((v, w), sep) in fields.iter().zip(seps) {
        put_padded(*v, *w, &mut buf[i..i + w]);
        i += w;
        buf[i] = sep;
        i += 1;
    }
    buf
}

fn put_padded(mut v: u64, width: usize, dst: &mut [u8]) {
    for j in (0..width).rev() {
        dst[j] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

// Howard Hinnant's civil-from-days: exact for the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses the `time` field as written by [`rfc3339`] (also accepts fewer fraction
/// digits and a missing fraction).
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || *b.last()? != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut nanos = 0u64;
    if b[19] == b'.' {
        let frac = s.get(20..s.len() - 1)?;
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        nanos = frac.parse::<u64>().ok()? * 10u64.pow(9 - frac.len() as u32);
    } else if b.len() != 20 {
        return None;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d == 0
        || d > month_days[mo as usize - 1]
        || h > 23
        || mi > 59
        || se > 60
    {
        return None;
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    // Times past what nanoseconds in a u64 can hold (the year 2554) are refused,
    // not wrapped.
    u64::try_from(days)
        .ok()?
        .checked_mul(86_400)?
        .checked_add(h * 3600 + mi * 60 + se)?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos)
}
