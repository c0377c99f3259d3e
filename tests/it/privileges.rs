//! Integration tests: the privilege drop. A root spf continues as `nobody` (or
//! the user named) once its pipeline is built, without capabilities, with
//! `no_new_privs` and a seccomp filter; a decoder running after the drop can
//! neither open a root-only file nor make a system call outside the filter, and
//! gets an error for it rather than killing the capture.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use spf_pipeline::account::{self, Account};

use crate::plugins::{compile_c, config, is_root, redis_capture, toml_str};
use crate::util::{read_ndjson, spf, stderr_text, write_file};

fn nobody() -> Account {
    account::lookup("nobody")
        .unwrap()
        .expect("the user `nobody` exists")
}

/// A decoder that, for every event, tries to open `secret` for reading and to
/// make a TCP socket, and reports its uid and what each attempt gave.
fn sandbox_probe_plugin(secret: &Path) -> String {
    format!(
        r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "spf_plugin.h"

static int32_t p_init(const uint8_t *c, size_t n, void **instance) {{
    (void)c; (void)n;
    static int one;
    *instance = &one;
    return SPF_OK;
}}

static const char *outcome(int rc, int err) {{
    if (rc >= 0) return "ok";
    switch (err) {{
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    default: return "other";
    }}
}}

static int32_t p_decode(void *instance, const SpfEventView *ev, const SpfDecoderOut *out) {{
    (void)instance; (void)ev;
    int fd = open({secret:?}, O_RDONLY);
    const char *opened = outcome(fd, errno);
    if (fd >= 0) close(fd);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    const char *sock = outcome(s, errno);
    if (s >= 0) close(s);
    char json[200];
    int n = snprintf(json, sizeof json,
                     "{{\"sandbox\":{{\"uid\":%u,\"open\":\"%s\",\"socket\":\"%s\"}}}}",
                     (unsigned)geteuid(), opened, sock);
    out->record(out->ctx, (const uint8_t *)json, (size_t)n, (const uint8_t *)json, (size_t)n);
    return SPF_OK;
}}

static const uint8_t *p_last_error(void *instance, size_t *len) {{
    (void)instance;
    *len = 0;
    return (const uint8_t *)"";
}}

static void p_destroy(void *instance) {{ (void)instance; }}

static const SpfDecoderVtable vt = {{
    .init = p_init, .decode = p_decode, .last_error = p_last_error, .destroy = p_destroy,
}};

const SpfPluginDeclaration spf_plugin_declaration = {{
    .magic = SPF_PLUGIN_MAGIC, .abi_major = SPF_ABI_MAJOR, .abi_minor = SPF_ABI_MINOR,
    .kind = SPF_KIND_DECODER, .name = "sandbox-probe", .version = "1.0.0",
    .decoder = &vt, .sink = NULL,
    .declaration_size = sizeof(SpfPluginDeclaration),
    .event_view_size = sizeof(SpfEventView),
    .decoder_out_size = sizeof(SpfDecoderOut),
    .decoder_vtable_size = sizeof(SpfDecoderVtable),
    .sink_vtable_size = sizeof(SpfSinkVtable),
}};
"#,
        secret = secret.display().to_string()
    )
}

/// Every record's `sandbox` object.
fn sandbox_of(out: &Path) -> Vec<Value> {
    read_ndjson(out)
        .into_iter()
        .map(|r| r["sandbox"].clone())
        .collect()
}

#[test]
fn a_decoder_after_the_drop_cannot_open_a_root_only_file() {
    if !is_root() {
        eprintln!("skipping: only a root spf drops privileges");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Only the secret itself stands in the way: its directories are open.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = write_file(dir.path(), "secret", "root only\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let lib = compile_c(dir.path(), "sandbox_probe", &sandbox_probe_plugin(&secret));
    let (cfg, out) = config(
        dir.path(),
        &redis_capture(),
        &format!("type = \"plugin\"\npath = {}", toml_str(&lib)),
        "",
    );
    let events = read_ndjson(&redis_capture()).len();

    // The default: nobody, and the filter.
    let o = spf().args(["run", "-q", "-c"]).arg(&cfg).output().unwrap();
    assert!(o.status.success(), "{}", stderr_text(&o));
    let seen = sandbox_of(&out);
    assert_eq!(seen.len(), events);
    for s in &seen {
        assert_eq!(s["uid"], nobody().uid, "{s}");
        assert_eq!(s["open"], "EACCES", "{s}");
        // Outside the filter: an error for the caller, and the run goes on.
        assert_eq!(s["socket"], "EPERM", "{s}");
    }

    // `--user root` keeps root; the filter stays.
    let o = spf()
        .args(["run", "-q", "--user", "root", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_text(&o));
    let seen = sandbox_of(&out);
    assert_eq!(seen.len(), events);
    for s in &seen {
        assert_eq!(
            (&s["uid"], &s["open"], &s["socket"]),
            (&0.into(), &"ok".into(), &"EPERM".into()),
            "{s}"
        );
    }

    // The same from the config file.
    let text = std::fs::read_to_string(&cfg).unwrap() + "\n[run]\nuser = \"root\"\n";
    let cfg_root = write_file(dir.path(), "root.toml", text);
    let o = spf()
        .args(["run", "-q", "-c"])
        .arg(&cfg_root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_text(&o));
    assert!(sandbox_of(&out).iter().all(|s| s["open"] == "ok"));
}

/// `/proc/PID/status` of a running spf, once `done` holds for it.
fn wait_for_status(pid: u32, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "spf never got to {what}:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map_or("", str::trim)
}

/// A live capture runs through the drop: once the probe is attached spf is
/// `nobody` with no capability in any set, and still captures and writes.
#[test]
fn a_live_capture_runs_as_nobody_without_capabilities() {
    if !crate::util::bpf_available("a_live_capture_runs_as_nobody_without_capabilities") {
        return;
    }
    let _g = crate::capture::lock();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("drop.sock");
    let out = dir.path().join("live.ndjson");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut child = spf()
        .args(["run", "-q", "--format", "ndjson", "--path"])
        .arg(&sock)
        .arg("--output")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let n = nobody();
    let status = wait_for_status(pid, "the seccomp filter", |s| field(s, "Seccomp") == "2");
    let ids = format!("{0}\t{0}\t{0}\t{0}", n.uid);
    assert_eq!(field(&status, "Uid"), ids, "{status}");
    assert_eq!(
        field(&status, "Gid"),
        format!("{0}\t{0}\t{0}\t{0}", n.gid),
        "{status}"
    );
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(&status, caps), "0000000000000000", "{caps}: {status}");
    }
    assert_eq!(field(&status, "NoNewPrivs"), "1", "{status}");

    // Traffic after the drop is captured and written.
    let talk = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = [0u8; 19];
        s.read_exact(&mut got).unwrap();
        s.write_all(b"heard you").unwrap();
        got
    });
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.write_all(b"said after the drop").unwrap();
    let mut reply = [0u8; 9];
    c.read_exact(&mut reply).unwrap();
    assert_eq!(&talk.join().unwrap(), b"said after the drop");
    let want = ["c2FpZCBhZnRlciB0aGUgZHJvcA==", "aGVhcmQgeW91"];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !want.iter().all(|w| {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains(w)
    }) {
        assert!(
            Instant::now() < deadline,
            "the capture never reached {}",
            out.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = crate::util::wait_stopped(&mut child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status:?}: {err}");
    // The two sends, as the syscalls that made them (the file also holds the
    // connection view's records of them, marked `via`).
    let records = read_ndjson(&out);
    let sends: Vec<_> = records
        .iter()
        .filter(|r| r["dir"] == "send" && r.get("via").is_none())
        .map(|r| r["data_b64"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(sends, want, "{records:?}");
}

/// Started as another user, spf has no one to become, but still shuts the rest.
#[test]
fn an_unprivileged_spf_still_gets_no_new_privs_and_the_filter() {
    if !is_root()
        || std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("skipping: needs root and setpriv to start spf as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let fifo = dir.path().join("in.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o666)).unwrap();
    let n = nobody();
    let child = std::process::Command::new("setpriv")
        .arg(format!("--reuid={}", n.uid))
        .arg(format!("--regid={}", n.gid))
        .arg("--clear-groups")
        .arg(env!("CARGO_BIN_EXE_spf"))
        .args(["run", "-q", "--format", "ndjson", "--replay"])
        .arg(&fifo)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Opening the FIFO lets spf's open of it return; then it drops and reads.
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let status = wait_for_status(child.id(), "the seccomp filter", |s| {
        field(s, "Seccomp") == "2"
    });
    assert_eq!(field(&status, "NoNewPrivs"), "1", "{status}");
    assert_eq!(field(&status, "CapEff"), "0000000000000000", "{status}");
    assert!(
        field(&status, "Uid").starts_with(&n.uid.to_string()),
        "{status}"
    );
    writeln!(
        w,
        r#"{{"ts_ns":1,"time":"2026-11-26T10:00:00Z","pid":1,"tid":1,"comm":"w","peer_pid":2,"path":"/p","sock":"stream","dir":"send","conn":1,"len":2,"captured":2,"truncated":false,"decoder":"raw","data_b64":"aGk="}}"#
    )
    .unwrap();
    drop(w);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["data_b64"], "aGk=");
}

#[test]
fn a_user_that_does_not_exist_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let capture = redis_capture();
    let o = spf()
        .args(["run", "-q", "--user", "no-such-user-spf", "--replay"])
        .arg(&capture)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr_text(&o));
    assert!(
        stderr_text(&o).contains("--user: no user `no-such-user-spf` on this system"),
        "{}",
        stderr_text(&o)
    );
    let cfg = |name: &str, run: &str| -> PathBuf {
        write_file(
            dir.path(),
            name,
            format!(
                "[source]\ntype = \"file\"\npath = {}\n\n[run]\n{run}\n",
                toml_str(&capture)
            ),
        )
    };
    for cmd in ["validate", "run"] {
        let o = spf()
            .args([cmd, "-c"])
            .arg(cfg("missing.toml", "user = \"no-such-user-spf\""))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr_text(&o));
        assert!(
            stderr_text(&o).contains("missing.toml:6:8: run.user: no user `no-such-user-spf`"),
            "{}",
            stderr_text(&o)
        );
        let o = spf()
            .args([cmd, "-c"])
            .arg(cfg("unknown.toml", "group = \"wheel\""))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr_text(&o));
        assert!(
            stderr_text(&o).contains("unknown.toml:6:1: run.group: unknown field `group`"),
            "{}",
            stderr_text(&o)
        );
    }
}
