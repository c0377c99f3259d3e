//! The time at the start of each pretty line, in the form `time = ...` asks for.

use serde::Deserialize;
use spf_pipeline::ndjson::rfc3339;

/// `time = "date" | "local" | "utc" | "relative"` (`--time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TimeFormat {
    /// Date and time of day in the local time zone, with microseconds:
    /// `2026-11-26 12:11:11.082151`.
    #[default]
    Date,
    /// Time of day in the local time zone: `12:11:11.082151`.
    Local,
    /// RFC 3339 in UTC: `2026-11-26T11:11:11.082151Z`.
    Utc,
    /// Seconds since the first record: `1.250000`.
    Relative,
}

impl TimeFormat {
    fn is_local(self) -> bool {
        matches!(self, TimeFormat::Date | TimeFormat::Local)
    }
}

unsafe extern "C" {
    /// POSIX: reads `TZ` (or `/etc/localtime`) into the C library's zone state.
    fn tzset();
}

/// Loads the local time zone now, while spf may still read any file: after
/// the privilege drop `/etc/localtime` may be out of reach, and `localtime_r`
/// (unlike `localtime`) does not look again once the zone is loaded.
pub fn load_zone() {
    // SAFETY: tzset takes no arguments; it sets the C library's zone state,
    // which only the C library's own time functions read.
    unsafe { tzset() }
}

/// Formats record times, remembering what the formats need across records.
#[derive(Debug)]
pub struct Clock {
    format: TimeFormat,
    /// The second last formatted in local time and its text up to the
    /// fraction: records come in bursts, the C library is asked once a second.
    cached: Option<(u64, String)>,
    /// `relative`: the time of the first record.
    first: Option<u64>,
}

impl Clock {
    /// A clock for `format`. For the local formats the zone must have been
    /// loaded ([`load_zone`]).
    pub fn new(format: TimeFormat) -> Self {
        Clock {
            format,
            cached: None,
            first: None,
        }
    }

    /// Appends `time_ns` (nanoseconds since the epoch) as the format says.
    pub fn write(&mut self, time_ns: u64, out: &mut Vec<u8>) {
        let secs = time_ns / 1_000_000_000;
        let micros = time_ns % 1_000_000_000 / 1_000;
        match self.format {
            TimeFormat::Utc => {
                let mut t = Vec::with_capacity(30);
                rfc3339(time_ns, &mut t);
                // `...SS.nnnnnnnnnZ` cut to microseconds.
                out.extend_from_slice(&t[..26]);
                out.push(b'Z');
            }
            TimeFormat::Relative => {
                let first = *self.first.get_or_insert(time_ns);
                let (sign, d) = if time_ns >= first {
                    ("", time_ns - first)
                } else {
                    ("-", first - time_ns)
                };
                out.extend_from_slice(
                    format!(
                        "{sign}{}.{:06}",
                        d / 1_000_000_000,
                        d % 1_000_000_000 / 1_000
                    )
                    .as_bytes(),
                );
            }
            TimeFormat::Date | TimeFormat::Local => {
                if self.cached.as_ref().is_none_or(|(s, _)| *s != secs) {
                    let prefix = local_prefix(secs, self.format == TimeFormat::Date);
                    self.cached = Some((secs, prefix));
                }
                if let Some((_, prefix)) = &self.cached {
                    out.extend_from_slice(prefix.as_bytes());
                }
                out.extend_from_slice(format!("{micros:06}").as_bytes());
            }
        }
    }

    /// Takes note of a record not shown: `relative` counts from the first
    /// record, shown or not.
    pub fn observe(&mut self, time_ns: u64) {
        self.first.get_or_insert(time_ns);
    }

    /// Whether the format reads the local time zone.
    pub fn is_local(&self) -> bool {
        self.format.is_local()
    }
}

/// `YYYY-MM-DD HH:MM:SS.` (with `date`) or `HH:MM:SS.` of `secs` in the local
/// time zone (in UTC for a time the C library cannot convert, which a
/// timestamp of this era never is).
fn local_prefix(secs: u64, date: bool) -> String {
    // SAFETY: an all-zero `tm` is a valid value for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t = libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX);
    // SAFETY: both pointers are valid for the call; localtime_r is the
    // reentrant form and keeps nothing of them.
    let ok = !unsafe { libc::localtime_r(&t, &mut tm) }.is_null();
    if !ok {
        let mut u = Vec::with_capacity(30);
        rfc3339(secs.saturating_mul(1_000_000_000), &mut u);
        let s = String::from_utf8_lossy(&u[..20]).replace('T', " ");
        return if date { s } else { s[11..].to_string() };
    }
    let time = format!("{:02}:{:02}:{:02}.", tm.tm_hour, tm.tm_min, tm.tm_sec);
    if date {
        format!(
            "{:04}-{:02}-{:02} {time}",
            i64::from(tm.tm_year) + 1900,
            tm.tm_mon + 1,
            tm.tm_mday
        )
    } else {
        time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(clock: &mut Clock, time_ns: u64) -> String {
        let mut out = Vec::new();
        clock.write(time_ns, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// 2026-11-26T11:11:11.082151785Z
    const T: u64 = 1_795_691_471_082_151_785;

    #[test]
    fn utc_and_relative_need_no_zone() {
        let mut c = Clock::new(TimeFormat::Utc);
        assert_eq!(show(&mut c, T), "2026-11-26T11:11:11.082151Z");
        let mut c = Clock::new(TimeFormat::Relative);
        assert_eq!(show(&mut c, T), "0.000000");
        assert_eq!(show(&mut c, T + 1_250_000_999), "1.250000");
        assert_eq!(show(&mut c, T + 3_600_000_000_000), "3600.000000");
        // An exchange's start may come before the first record given.
        assert_eq!(show(&mut c, T - 2_500), "-0.000002");
    }

    /// The zone used by [`local_formats_follow_tz`]: five hours and a half
    /// east of UTC, given as a POSIX rule so that no zone file is needed.
    const ZONE: &str = "XST-5:30";

    /// Local times in a fixed zone. `TZ` is the process's own: set for this
    /// test only, in a child process running [`local_formats_in_the_zone`].
    #[test]
    fn local_formats_follow_tz() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "pretty::clock::tests::local_formats_in_the_zone",
                "--ignored",
                "--test-threads=1",
            ])
            .env("TZ", ZONE)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run by local_formats_follow_tz, with TZ set"]
    fn local_formats_in_the_zone() {
        assert_eq!(std::env::var("TZ").as_deref(), Ok(ZONE));
        load_zone();
        let mut c = Clock::new(TimeFormat::Date);
        assert!(c.is_local());
        assert_eq!(show(&mut c, T), "2026-11-26 16:41:11.082151");
        // The same second again (from the cache), then the next day.
        assert_eq!(show(&mut c, T + 900_000_000), "2026-11-26 16:41:11.982151");
        assert_eq!(
            show(&mut c, T + 8 * 3_600_000_000_000),
            "2026-11-27 00:41:11.082151"
        );
        let mut c = Clock::new(TimeFormat::Local);
        assert_eq!(show(&mut c, T), "16:41:11.082151");
        // UTC stays UTC whatever the zone.
        assert_eq!(
            show(&mut Clock::new(TimeFormat::Utc), T),
            "2026-11-26T11:11:11.082151Z"
        );
    }
}
