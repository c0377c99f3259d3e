//! How spf reaches a NATS server: addresses, authentication and TLS, the same
//! keys for the sink and the source.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use spf_pipeline::config::Section;

/// The connection keys of a `nats` sink or source table.
///
/// Flattened into both tables, so unknown keys are found by
/// [`unknown_keys`] rather than by serde (which cannot deny unknown fields
/// together with a flattened struct).
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectConfig {
    /// One server URL, or several of one cluster (`nats://host:4222`,
    /// `tls://host:4222`).
    #[serde(default = "default_servers", deserialize_with = "one_or_many")]
    pub servers: Vec<String>,
    /// A credentials file (`.creds`: a user JWT and its NKey seed).
    pub credentials: Option<PathBuf>,
    /// A file holding an NKey seed (`SU...`).
    pub nkey: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Require TLS even for `nats://` URLs.
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CAs that sign the server's certificate.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, for servers that verify clients.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How long connecting (at start) may take.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

fn default_servers() -> Vec<String> {
    vec!["nats://127.0.0.1:4222".into()]
}

fn default_connect_timeout_ms() -> u64 {
    5000
}

/// A string or a list of strings.
pub(crate) fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        // Said in the config error: what `servers` takes.
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("`servers`: a server URL (\"nats://host:4222\") or a list of them")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(vec![s.to_string()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            let mut v = Vec::new();
            while let Some(s) = a.next_element::<String>()? {
                v.push(s);
            }
            Ok(v)
        }
    }
    d.deserialize_any(V)
}

/// The keys of [`ConnectConfig`].
pub const CONNECT_KEYS: &[&str] = &[
    "servers",
    "credentials",
    "nkey",
    "user",
    "password",
    "token",
    "tls",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "connect_timeout_ms",
];

/// Records an error for every key of the section that is neither a
/// connection key nor one of `own`. False when there was one.
pub fn unknown_keys(s: &mut Section<'_>, own: &[&str]) -> bool {
    let Some(serde_json::Value::Object(map)) = s.to_json() else {
        return true;
    };
    let mut ok = true;
    for k in map.keys() {
        if !CONNECT_KEYS.contains(&k.as_str()) && !own.contains(&k.as_str()) {
            let mut all: Vec<&str> = own.iter().chain(CONNECT_KEYS).copied().collect();
            all.sort_unstable();
            s.error(
                k,
                format!("unknown field `{k}`, expected one of: {}", all.join(", ")),
            );
            ok = false;
        }
    }
    ok
}

impl ConnectConfig {
    /// Checks what can be checked before running: files exist, keys that go
    /// together are given together. Records each problem on `s`.
    pub fn validate(&self, s: &mut Section<'_>) -> bool {
        let mut ok = true;
        if self.servers.is_empty() {
            s.error("servers", "needs at least one server URL");
            ok = false;
        }
        for url in &self.servers {
            if url.parse::<async_nats::ServerAddr>().is_err() {
                s.error("servers", format!("`{url}` is not a NATS server URL"));
                ok = false;
            }
        }
        let files = [
            ("credentials", &self.credentials),
            ("nkey", &self.nkey),
            ("tls_ca", &self.tls_ca),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
        ];
        for (key, path) in files {
            if let Some(p) = path
                && let Err(e) = std::fs::metadata(p)
            {
                s.error(key, format!("cannot read `{}`: {e}", p.display()));
                ok = false;
            }
        }
        let methods = [
            self.credentials.is_some(),
            self.nkey.is_some(),
            self.user.is_some(),
            self.token.is_some(),
        ];
        if methods.iter().filter(|&&m| m).count() > 1 {
            s.error(
                "",
                "choose one way to authenticate: credentials, nkey, user/password or token",
            );
            ok = false;
        }
        if self.user.is_some() != self.password.is_some() {
            s.error(
                if self.user.is_some() {
                    "password"
                } else {
                    "user"
                },
                "user and password go together",
            );
            ok = false;
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            s.error(
                if self.tls_cert.is_some() {
                    "tls_key"
                } else {
                    "tls_cert"
                },
                "tls_cert and tls_key go together",
            );
            ok = false;
        }
        if self.connect_timeout_ms == 0 {
            s.error("connect_timeout_ms", "must be more than 0");
            ok = false;
        }
        ok
    }

    /// Where the server is, for messages.
    pub fn describe(&self) -> String {
        self.servers.join(",")
    }

    /// The client options: authentication, TLS, and reconnecting for ever
    /// (a fleet node outlives any one server restart).
    async fn options(&self, name: &str) -> Result<async_nats::ConnectOptions, String> {
        let mut o = match &self.credentials {
            Some(p) => async_nats::ConnectOptions::with_credentials_file(p)
                .await
                .map_err(|e| format!("credentials file `{}`: {e}", p.display()))?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(p) = &self.nkey {
            o = o.nkey(read_seed(p)?);
        }
        if let (Some(u), Some(pw)) = (&self.user, &self.password) {
            o = o.user_and_password(u.clone(), pw.clone());
        }
        if let Some(t) = &self.token {
            o = o.token(t.clone());
        }
        if self.tls {
            o = o.require_tls(true);
        }
        if let Some(ca) = &self.tls_ca {
            o = o.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(c), Some(k)) = (&self.tls_cert, &self.tls_key) {
            o = o
                .add_client_certificate(c.clone(), k.clone())
                .require_tls(true);
        }
        Ok(o.name(name)
            .connection_timeout(Duration::from_millis(self.connect_timeout_ms))
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay))
    }

    /// Connects, or says in one line why not. The client then reconnects by
    /// itself whenever the connection drops.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, String> {
        let o = self.options(name).await?;
        let addrs: Vec<async_nats::ServerAddr> =
            self.servers.iter().filter_map(|u| u.parse().ok()).collect();
        // The client's own timeout covers one attempt; a refused connection
        // must not turn into retries for ever here.
        let deadline = Duration::from_millis(self.connect_timeout_ms.saturating_mul(2));
        match tokio::time::timeout(deadline, o.connect(addrs.as_slice())).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(format!("cannot connect to {}: {e}", self.describe())),
            Err(_) => Err(format!(
                "cannot connect to {}: no answer within {} ms",
                self.describe(),
                deadline.as_millis()
            )),
        }
    }
}

/// The pause before connection attempt `attempts` (from 1; the client asks
/// before every attempt, the very first one included). The first attempt
/// goes at once: a pause there delayed every start of spf by 100 ms. Then
/// the retries come fast, so a restarted server is back in use at once, and
/// later at most every 2 s.
fn reconnect_delay(attempts: usize) -> Duration {
    match attempts {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis((50u64 << (n - 1).min(6)).min(2000)),
    }
}

/// Reads an NKey seed file: the first line that looks like a seed (`S...`),
/// so that files with comments, as `nsc` writes them, work too.
fn read_seed(p: &Path) -> Result<String, String> {
    let text =
        std::fs::read_to_string(p).map_err(|e| format!("nkey seed file `{}`: {e}", p.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| {
            l.starts_with('S') && l.len() > 40 && l.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .map(str::to_string)
        .ok_or_else(|| format!("nkey seed file `{}`: no seed in it", p.display()))
}

/// System calls a client makes while the pipeline runs, beyond those spf
/// allows every pipeline once it dropped its privileges: reconnecting (a
/// socket, its options, a host name looked up again over DNS) and talking
/// over it.
pub const NETWORK_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_shutdown,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_lseek,
    libc::SYS_uname,
];

/// A runtime for one client, made while spf builds its pipeline.
///
/// spf builds the pipeline while it has one thread, then drops its
/// privileges (per thread, so with no other thread running), then starts
/// the run. So the client connects on a runtime driven by the building
/// thread itself, and is driven by a thread of the component's own only
/// once the run begins.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // A host name is looked up on a blocking thread: let it end at once
        // rather than idle past the privilege drop.
        .thread_keep_alive(Duration::from_millis(1))
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))
}

/// Runs `f` on `rt` from the building thread, and returns once every thread
/// that started meanwhile (a host name lookup) is gone again. Inside another
/// runtime (which cannot block), on a scoped thread instead.
pub fn block_on<F>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    let before = threads();
    let out = if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(f))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    } else {
        rt.block_on(f)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while threads() > before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    out
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}

/// Drops a runtime that no thread drives; where a task runs (the pipeline's),
/// which may not block on that, on a thread of its own.
pub fn drop_runtime(rt: tokio::runtime::Runtime) {
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = std::thread::Builder::new()
            .name("spf-nats-end".into())
            .spawn(move || drop(rt));
    } else {
        drop(rt);
    }
}

/// This machine's name, the default node name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // what fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// A node name as one subject token: NATS subjects split on `.`, and `*`, `>`
/// and white space have meanings of their own.
pub fn subject_token(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_become_one_subject_token() {
        assert_eq!(subject_token("web-1.prod.example"), "web-1_prod_example");
        assert_eq!(subject_token("a b*>"), "a_b__");
    }

    #[test]
    fn the_first_attempt_waits_for_nothing_and_retries_grow_to_2_s() {
        let d: Vec<u64> = (1..=9)
            .map(|a| reconnect_delay(a).as_millis() as u64)
            .collect();
        assert_eq!(d, [0, 100, 200, 400, 800, 1600, 2000, 2000, 2000]);
    }

    #[test]
    fn seed_files_may_hold_comments() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seed.nk");
        let seed = "SUAKYRHVIOREXV7EUZTBHUHL7NUMHPMAS7QMDU3GTVUWZ5CIJ5X5XFJXRM";
        std::fs::write(&p, format!("# a user seed\n{seed}\n")).unwrap();
        assert_eq!(read_seed(&p).unwrap(), seed);
        std::fs::write(&p, "nothing here\n").unwrap();
        assert!(read_seed(&p).unwrap_err().contains("no seed"));
    }
}
