//! Integration tests: plugins. Every plugin here is a real shared library built by
//! the test (the example crates with cargo, the C ones with the system compiler),
//! loaded by the real spf binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use spf_pipeline::plugin::{HOST_ABI, HOST_STRUCT_SIZES};

use crate::util::{read_ndjson, spf, stderr_text, write_file};

pub(crate) fn root_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the example plugin crates once per test run. They get their own target
/// directory so that the build never waits on the lock of the `cargo test` that
/// runs this binary.
pub(crate) fn example_plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = root_dir().join("target").join("plugin-tests");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(root_dir())
            .args([
                "build",
                "-p",
                "spf-plugin-resp",
                "-p",
                "spf-plugin-conn-summary",
                "-p",
                "spf-plugin-echo",
                "--target-dir",
            ])
            .arg(&target)
            .output()
            .expect("running cargo to build the example plugins");
        assert!(
            out.status.success(),
            "building the example plugins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("debug")
    })
}

/// Copies a library into `dir` with mode 0755: how a plugin is installed, and
/// what a root spf accepts (a root-owned file nobody else can write, in a
/// directory nobody else can write).
pub(crate) fn install(lib: &Path, dir: &Path) -> PathBuf {
    let to = dir.join(lib.file_name().unwrap());
    std::fs::copy(lib, &to).unwrap_or_else(|e| panic!("copying {}: {e}", lib.display()));
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

pub(crate) fn example(name: &str, dir: &Path) -> PathBuf {
    install(&example_plugins().join(format!("lib{name}.so")), dir)
}

/// Compiles C source into a shared library in `dir`, against the SDK's header.
pub(crate) fn compile_c(dir: &Path, name: &str, source: &str) -> PathBuf {
    let src = write_file(dir, &format!("{name}.c"), source);
    compile_c_file(dir, name, &src)
}

pub(crate) fn compile_c_file(dir: &Path, name: &str, src: &Path) -> PathBuf {
    compile_c_with(dir, name, src, &root_dir().join("plugin-sdk/include"))
}

/// Compiles C source into a shared library in `dir`, against the header in `include`.
pub(crate) fn compile_c_with(dir: &Path, name: &str, src: &Path, include: &Path) -> PathBuf {
    let lib = dir.join(format!("lib{name}.so"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args([
            "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-I",
        ])
        .arg(include)
        .arg("-o")
        .arg(&lib)
        .arg(src)
        .output()
        .unwrap_or_else(|e| panic!("running the C compiler `{cc}`: {e}"));
    assert!(
        out.status.success(),
        "compiling {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o755)).unwrap();
    lib
}

pub(crate) fn redis_capture() -> PathBuf {
    root_dir().join("examples/plugins/resp/testdata/redis.ndjson")
}

pub(crate) fn toml_str(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap()
}

/// A replay of `capture` through the decoder section `decoder` into an ndjson
/// file, plus any extra sink sections.
pub(crate) fn config(
    dir: &Path,
    capture: &Path,
    decoder: &str,
    extra_sinks: &str,
) -> (PathBuf, PathBuf) {
    let out = dir.join("out.ndjson");
    let text = format!(
        "[source]\ntype = \"file\"\npath = {}\nformat = \"ndjson\"\n\n[decoder]\n{decoder}\n\n[[sink]]\ntype = \"ndjson\"\npath = {}\n{extra_sinks}",
        toml_str(capture),
        toml_str(&out)
    );
    (write_file(dir, "spf.toml", text), out)
}

pub(crate) fn run(config: &Path) -> Output {
    spf()
        .args(["run", "-q", "-c"])
        .arg(config)
        .output()
        .expect("spawning spf")
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A directory the user a root spf switches to (`nobody`) can write: what a
/// plugin that writes files after the start needs.
pub(crate) fn writable_dir_for_the_run(parent: &Path, name: &str) -> PathBuf {
    let d = parent.join(name);
    std::fs::create_dir(&d).unwrap();
    if is_root() {
        let nobody = spf_pipeline::account::lookup("nobody")
            .unwrap()
            .expect("the user `nobody` exists");
        std::os::unix::fs::chown(&d, Some(nobody.uid), Some(nobody.gid)).unwrap();
    }
    d
}

fn resp_of(records: &[Value]) -> Vec<&Value> {
    records.iter().filter_map(|r| r.get("resp")).collect()
}

#[test]
fn resp_plugin_decodes_a_real_redis_capture() {
    let dir = tempfile::tempdir().unwrap();
    let resp = example("spf_resp", dir.path());
    let summary_lib = example("spf_conn_summary", dir.path());
    // The sink writes its file while running, so as the user spf continues as.
    let summary = writable_dir_for_the_run(dir.path(), "summary").join("summary.json");
    let (cfg, out) = config(
        dir.path(),
        &redis_capture(),
        &format!("type = \"plugin\"\npath = {}", toml_str(&resp)),
        &format!(
            "\n[[sink]]\ntype = \"plugin\"\npath = {}\nevents = true\noutput = {}\n",
            toml_str(&summary_lib),
            toml_str(&summary)
        ),
    );
    let o = run(&cfg);
    assert!(o.status.success(), "spf failed: {}", stderr_text(&o));

    let records = read_ndjson(&out);
    let errors: Vec<_> = records
        .iter()
        .filter(|r| r.get("error").is_some())
        .collect();
    assert!(errors.is_empty(), "error records: {errors:#?}");
    assert!(
        records.iter().all(|r| r["decoder"] == "resp"),
        "{records:#?}"
    );
    let resp = resp_of(&records);
    let has = |want: Value| resp.iter().any(|r| **r == want);

    // One connection per redis-cli run; see capture_redis.py for the script.
    assert!(has(
        serde_json::json!({"role":"request","command":"SET","args":["greeting","hello world"]})
    ));
    assert!(has(
        serde_json::json!({"role":"reply","type":"simple","value":"OK"})
    ));
    // Read by the relay 5 bytes at a time: split across many events.
    let conn3: Vec<_> = records
        .iter()
        .filter(|r| r["conn"] == 3)
        .filter_map(|r| r.get("resp"))
        .collect();
    assert_eq!(
        conn3,
        vec![
            &serde_json::json!({"role":"request","command":"GET","args":["greeting"]}),
            &serde_json::json!({"role":"reply","type":"bulk","value":"hello world"}),
        ]
    );
    assert!(has(
        serde_json::json!({"role":"reply","type":"array","value":["a","b","c"]})
    ));
    // RESP3 (redis-cli -3), read 3 bytes at a time.
    assert!(has(
        serde_json::json!({"role":"reply","type":"map","value":[["name","ada"],["lang","en"]]})
    ));
    assert!(has(
        serde_json::json!({"role":"reply","type":"bulk","value":null})
    ));
    assert!(resp.iter().any(|r| {
        r["type"] == "error"
            && r["value"]["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("ERR unknown command 'NOSUCHCOMMAND'"))
    }));
    let big = resp
        .iter()
        .find(|r| r["role"] == "reply" && r["value"].as_str().is_some_and(|v| v.len() == 30_000))
        .expect("the 30000-byte GET reply");
    assert!(big["value"].as_str().unwrap().bytes().all(|b| b == b'x'));
    // The pipelined connection: four requests in one write, replies in order.
    let conn12: Vec<_> = records
        .iter()
        .filter(|r| r["conn"] == 12)
        .map(|r| &r["resp"])
        .collect();
    let commands: Vec<_> = conn12
        .iter()
        .filter_map(|r| r["command"].as_str())
        .collect();
    assert_eq!(commands, ["SET", "INCR", "MGET", "DEL", "ECHO"]);
    assert!(conn12.contains(
        &&serde_json::json!({"role":"reply","type":"array","value":["2","hello world"]})
    ));
    assert!(has(
        serde_json::json!({"role":"request","command":"PING","args":[],"inline":true})
    ));

    // The sink plugin saw every record and (events = true) every event.
    let s: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["records"], records.len());
    let conns = s["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 13);
    let capture = read_ndjson(&redis_capture());
    let total: u64 = capture.iter().map(|e| e["len"].as_u64().unwrap()).sum();
    let summed: u64 = conns
        .iter()
        .map(|c| c["send"]["bytes"].as_u64().unwrap() + c["recv"]["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(summed, total);
    let events: u64 = conns
        .iter()
        .map(|c| c["send"]["events"].as_u64().unwrap() + c["recv"]["events"].as_u64().unwrap())
        .sum();
    assert_eq!(events, capture.len() as u64);
    assert!(
        conns
            .iter()
            .all(|c| c["decoders"] == serde_json::json!(["resp"]))
    );
}

#[test]
fn panicking_plugin_costs_only_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let echo = example("spf_echo", dir.path());
    let (cfg, out) = config(
        dir.path(),
        &redis_capture(),
        &format!(
            "type = \"plugin\"\npath = {}\npanic_every = 3",
            toml_str(&echo)
        ),
        "",
    );
    let o = run(&cfg);
    assert!(o.status.success(), "spf failed: {}", stderr_text(&o));
    let records = read_ndjson(&out);
    let n = read_ndjson(&redis_capture()).len();
    assert_eq!(records.len(), n, "one record per event");
    for (i, r) in records.iter().enumerate() {
        if (i + 1) % 3 == 0 {
            assert_eq!(r["error"]["code"], "PLUGIN_ERROR", "{r}");
            let msg = r["error"]["message"].as_str().unwrap();
            assert!(msg.contains("plugin `echo` 0.1.0"), "{msg}");
            assert!(msg.contains("panicked"), "{msg}");
            assert!(
                msg.contains(&format!("echo panics on event {}", i + 1)),
                "{msg}"
            );
        } else {
            assert!(r["echo"]["text"].is_string(), "event {i} not decoded: {r}");
        }
    }
    // The plugin's own panic output is kept out of spf's stderr: the records say it.
    assert!(!stderr_text(&o).contains("panicked"), "{}", stderr_text(&o));
}

#[test]
fn plugin_failing_in_a_row_is_disabled_with_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let echo = example("spf_echo", dir.path());
    let (cfg, out) = config(
        dir.path(),
        &redis_capture(),
        &format!(
            "type = \"plugin\"\npath = {}\nfail_every = 1\nmax_errors = 5",
            toml_str(&echo)
        ),
        "",
    );
    let o = run(&cfg);
    assert!(o.status.success(), "spf failed: {}", stderr_text(&o));
    let records = read_ndjson(&out);
    let codes: Vec<_> = records
        .iter()
        .map(|r| r["error"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["PLUGIN_ERROR"; 5]
            .into_iter()
            .chain(["PLUGIN_DISABLED"])
            .collect::<Vec<_>>()
    );
    let msg = records[5]["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("plugin `echo`")
            && msg.contains("5 calls in a row")
            && msg.contains("disabled"),
        "{msg}"
    );
}

const C_NO_DECLARATION: &str = r#"
int spf_something_else(int x) { return x + 1; }
"#;

const C_WRONG_MAJOR: &str = r#"
#include <stddef.h>
#include "spf_plugin.h"
const SpfPluginDeclaration spf_plugin_declaration = {
    .magic = SPF_PLUGIN_MAGIC,
    .abi_major = SPF_ABI_MAJOR + 1,
    .abi_minor = 0,
    .kind = SPF_KIND_DECODER,
    .name = "future",
    .version = "3.1.4",
    .decoder = NULL,
    .sink = NULL,
};
"#;

/// A plugin that needs a newer minor than this spf speaks.
const C_NEWER_MINOR: &str = r#"
#include <stddef.h>
#include "spf_plugin.h"
static const uint8_t *last_error(void *i, size_t *n) { (void)i; *n = 0; return NULL; }
static int32_t init(const uint8_t *c, size_t n, void **i) { (void)c; (void)n; (void)i; return SPF_ERROR; }
static int32_t decode(void *i, const SpfEventView *e, const SpfDecoderOut *o) { (void)i; (void)e; (void)o; return SPF_OK; }
static void destroy(void *i) { (void)i; }
static const SpfDecoderVtable vt = { .init = init, .decode = decode, .last_error = last_error, .destroy = destroy };
const SpfPluginDeclaration spf_plugin_declaration = {
    .magic = SPF_PLUGIN_MAGIC,
    .abi_major = SPF_ABI_MAJOR,
    .abi_minor = SPF_ABI_MINOR + 1,
    .kind = SPF_KIND_DECODER,
    .name = "newer",
    .version = "0.9.0",
    .decoder = &vt,
    .sink = NULL,
};
"#;

fn expect_refused(cfg: &Path, needles: &[&str]) {
    for cmd in ["validate", "run"] {
        let o = spf().arg(cmd).arg("-c").arg(cfg).output().unwrap();
        let err = stderr_text(&o);
        assert_eq!(o.status.code(), Some(2), "spf {cmd}: {err}");
        for n in needles {
            assert!(err.contains(n), "spf {cmd}: expected {n:?} in:\n{err}");
        }
        // Positioned at the offending key.
        assert!(
            err.contains("decoder.path") || err.contains("sink[1].path"),
            "{err}"
        );
    }
}

fn check(path: &Path, kind: Option<&str>) -> Output {
    let mut c = spf();
    c.args(["plugins", "check"]).arg(path);
    if let Some(k) = kind {
        c.args(["--kind", k]);
    }
    c.output().unwrap()
}

#[test]
fn bad_plugins_are_refused_each_with_its_own_message() {
    let dir = tempfile::tempdir().unwrap();
    let capture = redis_capture();
    let decoder_cfg = |name: &str, lib: &Path| {
        let sub = dir.path().join(name);
        std::fs::create_dir(&sub).unwrap();
        config(
            &sub,
            &capture,
            &format!("type = \"plugin\"\npath = {}", toml_str(lib)),
            "",
        )
        .0
    };

    let wrong = compile_c(dir.path(), "future", C_WRONG_MAJOR);
    let (host_major, host_minor) = HOST_ABI;
    let major = format!("ABI {}.0", host_major + 1);
    let host = format!("ABI {host_major}.{host_minor}");
    let needles = [
        "plugin `future` 3.1.4",
        major.as_str(),
        host.as_str(),
        "rebuild the plugin",
    ];
    expect_refused(&decoder_cfg("major", &wrong), &needles);
    let o = check(&wrong, None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        needles.iter().all(|n| stderr_text(&o).contains(n)),
        "{}",
        stderr_text(&o)
    );

    let none = compile_c(dir.path(), "nodecl", C_NO_DECLARATION);
    let needles = [
        "is a shared library but not an spf plugin",
        "spf_plugin_declaration",
    ];
    expect_refused(&decoder_cfg("nodecl", &none), &needles);
    assert_eq!(check(&none, None).status.code(), Some(2));

    // The name exported as a function: found, and refused for what it is.
    let func = compile_c(
        dir.path(),
        "declfunc",
        "int spf_plugin_declaration(void) { return 0x53504650; }\n",
    );
    let needles = ["exports `spf_plugin_declaration`, but not as a data object"];
    expect_refused(&decoder_cfg("declfunc", &func), &needles);
    let o = check(&func, None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_text(&o).contains(needles[0]), "{}", stderr_text(&o));

    let newer = compile_c(dir.path(), "newer", C_NEWER_MINOR);
    let needs = format!("needs plugin ABI {host_major}.{}", host_minor + 1);
    let needles = [
        "plugin `newer` 0.9.0",
        needs.as_str(),
        host.as_str(),
        "upgrade spf",
    ];
    expect_refused(&decoder_cfg("minor", &newer), &needles);
    assert_eq!(check(&newer, None).status.code(), Some(2));

    // A real system library is no plugin either.
    let libc_path = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.exists());
    if let Some(libc_path) = libc_path {
        let o = check(libc_path, None);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            stderr_text(&o).contains("not an spf plugin"),
            "{}",
            stderr_text(&o)
        );
    }

    let text = write_file(dir.path(), "libtext.so", "this is not ELF\n");
    std::fs::set_permissions(&text, std::fs::Permissions::from_mode(0o755)).unwrap();
    expect_refused(
        &decoder_cfg("text", &text),
        &["libtext.so is not a shared library spf can load"],
    );

    expect_refused(
        &decoder_cfg("relative", Path::new("libspf_resp.so")),
        &["is not absolute"],
    );

    // A decoder plugin where a sink is wanted.
    let resp = example("spf_resp", dir.path());
    let sub = dir.path().join("kind");
    std::fs::create_dir(&sub).unwrap();
    let (cfg, _) = config(
        &sub,
        &capture,
        "type = \"raw\"",
        &format!(
            "\n[[sink]]\ntype = \"plugin\"\npath = {}\n",
            toml_str(&resp)
        ),
    );
    expect_refused(
        &cfg,
        &[
            "plugin `resp` 0.1.0",
            "is a decoder plugin, not a sink plugin",
            "[decoder]",
        ],
    );
    let o = check(&resp, Some("sink"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_text(&o).contains("is a decoder plugin, not a sink plugin"));

    if !is_root() {
        eprintln!(
            "skipping the world-writable plugin case: spf refuses those only when running as root"
        );
        return;
    }
    let writable = dir.path().join("writable");
    std::fs::create_dir(&writable).unwrap();
    let lib = example("spf_resp", &writable);
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o666)).unwrap();
    let needles = [
        "refusing plugin",
        "writable by group or others (mode 0666)",
        "chmod go-w",
    ];
    expect_refused(&decoder_cfg("writable-cfg", &lib), &needles);
    let o = check(&lib, None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_text(&o).contains("mode 0666"));
}

fn host_size(structure: &str) -> usize {
    HOST_STRUCT_SIZES
        .iter()
        .find(|(name, _)| *name == structure)
        .map(|(_, size)| *size as usize)
        .unwrap_or_else(|| panic!("no struct {structure} in {HOST_STRUCT_SIZES:?}"))
}

/// Copies the SDK header into `dir/include` with `edit` applied: a header from
/// another SDK build that kept the same ABI number.
fn edited_header(dir: &Path, edit: impl FnOnce(&str) -> String) -> PathBuf {
    let header = std::fs::read_to_string(root_dir().join("plugin-sdk/include/spf_plugin.h"))
        .expect("reading spf_plugin.h");
    let edited = edit(&header);
    assert_ne!(edited, header, "the header edit matched nothing");
    let include = dir.join("include");
    std::fs::create_dir_all(&include).unwrap();
    write_file(&include, "spf_plugin.h", edited);
    include
}

/// What a user hit: the C example built against a header where `SpfEventView`
/// gained a field while the ABI number stayed the same. spf must refuse it at
/// config time instead of handing it a view shorter than it reads.
#[test]
fn plugin_built_with_other_struct_sizes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let include = edited_header(dir.path(), |h| {
        h.replacen(
            "} SpfEventView;",
            "    uint64_t added_in_a_prerelease;\n} SpfEventView;",
            1,
        )
    });
    let lib = compile_c_with(
        dir.path(),
        "spf_length",
        &root_dir().join("examples/plugins/c/spf_length.c"),
        &include,
    );
    let host = host_size("SpfEventView");
    let plugin_bytes = format!("{} bytes in the plugin", host + 8);
    // The C example declares the ABI of the header it was built with.
    let host_bytes = format!(
        "{host} bytes in ABI {}.{}, which the plugin declares",
        HOST_ABI.0, HOST_ABI.1
    );
    let needles = [
        "plugin `length` 1.0.0",
        "SpfEventView",
        plugin_bytes.as_str(),
        host_bytes.as_str(),
        "rebuild the plugin against the spf-plugin SDK of this spf",
    ];
    let (cfg, out) = config(
        dir.path(),
        &redis_capture(),
        &format!("type = \"plugin\"\npath = {}", toml_str(&lib)),
        "",
    );
    expect_refused(&cfg, &needles);
    assert!(!out.exists(), "spf ran the pipeline with a refused plugin");
    let o = check(&lib, None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr_text(&o));
    let err = stderr_text(&o);
    assert!(needles.iter().all(|n| err.contains(n)), "{err}");

    // A plugin from before the sizes existed: its declaration object is shorter
    // than spf's, which the symbol table tells without reading past it.
    let old = dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    let include = edited_header(&old, |h| {
        let start = h.find("    /* sizeof each struct").unwrap();
        let end = h.find("} SpfPluginDeclaration;").unwrap();
        format!("{}{}", &h[..start], &h[end..])
    });
    let src = write_file(&old, "old.c", C_BEFORE_SIZES);
    let lib = compile_c_with(&old, "old", &src, &include);
    let ours = host_size("SpfPluginDeclaration");
    // Four u32 and four pointers.
    let old_size = 4 * 4 + 4 * std::mem::size_of::<usize>();
    let o = check(&lib, None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr_text(&o));
    let err = stderr_text(&o);
    assert!(
        err.contains("plugin `old` 0.1.0")
            && err.contains(&format!(
                "SpfPluginDeclaration: {old_size} bytes in the plugin"
            ))
            && err.contains(&format!("{ours} bytes in this spf"))
            && err.contains("rebuild the plugin against the spf-plugin SDK of this spf"),
        "{err}"
    );
}

/// A decoder declared the way the SDK did before the declaration carried sizes.
const C_BEFORE_SIZES: &str = r#"
#include <stddef.h>
#include "spf_plugin.h"
static const uint8_t *last_error(void *i, size_t *n) { (void)i; *n = 0; return NULL; }
static int32_t init(const uint8_t *c, size_t n, void **i) { (void)c; (void)n; (void)i; return SPF_ERROR; }
static int32_t decode(void *i, const SpfEventView *e, const SpfDecoderOut *o) { (void)i; (void)e; (void)o; return SPF_OK; }
static void destroy(void *i) { (void)i; }
static const SpfDecoderVtable vt = { .init = init, .decode = decode, .last_error = last_error, .destroy = destroy };
const SpfPluginDeclaration spf_plugin_declaration = {
    .magic = SPF_PLUGIN_MAGIC,
    .abi_major = SPF_ABI_MAJOR,
    .abi_minor = SPF_ABI_MINOR,
    .kind = SPF_KIND_DECODER,
    .name = "old",
    .version = "0.1.0",
    .decoder = &vt,
    .sink = NULL,
};
"#;

#[test]
fn plugins_check_reports_kind_name_versions() {
    let dir = tempfile::tempdir().unwrap();
    let summary = example("spf_conn_summary", dir.path());
    let o = check(&summary, Some("sink"));
    assert!(o.status.success(), "{}", stderr_text(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for want in [
        "kind     sink",
        "name     conn-summary",
        "version  0.1.0",
        &format!("abi      {}.{}", HOST_ABI.0, HOST_ABI.1),
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }

    // A relative path is refused on the command line as in a config, even
    // where it names the same file.
    let o = spf()
        .current_dir(dir.path())
        .args(["plugins", "check", "libspf_conn_summary.so"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr_text(&o));
    assert!(
        stderr_text(&o).contains("plugin path `libspf_conn_summary.so` is not absolute"),
        "{}",
        stderr_text(&o)
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn c_plugin_built_from_the_header_works() {
    let dir = tempfile::tempdir().unwrap();
    let lib = compile_c_file(
        dir.path(),
        "spf_length",
        &root_dir().join("examples/plugins/c/spf_length.c"),
    );
    let (cfg, out) = config(
        dir.path(),
        &redis_capture(),
        &format!("type = \"plugin\"\npath = {}", toml_str(&lib)),
        "",
    );
    let o = run(&cfg);
    assert!(o.status.success(), "spf failed: {}", stderr_text(&o));
    let records = read_ndjson(&out);
    let capture = read_ndjson(&redis_capture());
    assert_eq!(records.len(), capture.len());
    let mut total = 0;
    for (r, e) in records.iter().zip(&capture) {
        total += e["len"].as_u64().unwrap();
        assert_eq!(r["decoder"], "length");
        assert_eq!(r["conn"], e["conn"]);
        assert_eq!(r["length"]["bytes"], e["len"]);
        assert_eq!(r["length"]["total"], total);
    }

    // Its init error reaches the user through last_error(NULL).
    let (cfg, _) = config(
        dir.path(),
        &redis_capture(),
        &format!(
            "type = \"plugin\"\npath = {}\ncolour = \"red\"",
            toml_str(&lib)
        ),
        "",
    );
    let o = run(&cfg);
    // A config error, as those found while reading it.
    assert_eq!(o.status.code(), Some(2), "{}", stderr_text(&o));
    let err = stderr_text(&o);
    assert!(
        err.contains("plugin `length` 1.0.0")
            && err.contains("init failed: length takes no config keys"),
        "{err}"
    );
}

/// A plugin built against the ABI 1.0 header (a copy of the header as 1.0
/// shipped it) keeps working under this spf, which speaks 1.1: accepted, lent
/// the 1.0 layout, and decoding as before, in spf and isolated.
#[test]
fn abi_1_0_plugin_runs_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let lib = compile_c_with(
        dir.path(),
        "spf_length",
        &root_dir().join("examples/plugins/c/spf_length.c"),
        &root_dir().join("tests/data/abi-1.0"),
    );
    let o = check(&lib, Some("decoder"));
    assert!(o.status.success(), "{}", stderr_text(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!(
            "abi      1.0 (this spf speaks {}.{})",
            HOST_ABI.0, HOST_ABI.1
        )),
        "{text}"
    );
    assert!(HOST_ABI.1 >= 1);
    let capture = read_ndjson(&redis_capture());
    for isolate in ["false", "true"] {
        let sub = dir.path().join(isolate);
        std::fs::create_dir(&sub).unwrap();
        let (cfg, out) = config(
            &sub,
            &redis_capture(),
            &format!(
                "type = \"plugin\"\npath = {}\nisolate = {isolate}",
                toml_str(&lib)
            ),
            "",
        );
        let o = run(&cfg);
        assert!(o.status.success(), "spf failed: {}", stderr_text(&o));
        let records = read_ndjson(&out);
        assert_eq!(records.len(), capture.len(), "isolate = {isolate}");
        let mut total = 0;
        for (r, e) in records.iter().zip(&capture) {
            total += e["len"].as_u64().unwrap();
            assert_eq!(r["length"]["bytes"], e["len"]);
            assert_eq!(r["length"]["total"], total);
        }
    }
}

/// A plugin host's argv[0] is spf, so `kill -USR1 $(pidof spf)` reaches it:
/// it ignores SIGUSR1, whose default would end it (and count as a crash).
#[test]
fn an_isolated_plugin_host_ignores_sigusr1() {
    let dir = tempfile::tempdir().unwrap();
    let resp = example("spf_resp", dir.path());
    let text = format!(
        "[source]\ntype = \"file\"\npath = \"-\"\n\n[decoder]\ntype = \"plugin\"\npath = {}\nisolate = true\n",
        toml_str(&resp)
    );
    let cfg = write_file(dir.path(), "spf.toml", text);
    // stdin stays open while the test looks: spf waits on it, the host runs.
    let mut child = spf()
        .args(["run", "-q", "-c"])
        .arg(&cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let spf_pid = child.id();
    let host = crate::util::wait_for(&mut child, "the plugin host", || {
        let tasks = std::fs::read_dir(format!("/proc/{spf_pid}/task")).ok()?;
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| {
                c.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .find(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == b"plugin-host"))
            })
    });
    let status = std::fs::read_to_string(format!("/proc/{host}/status")).unwrap();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap();
    drop(child.stdin.take());
    let st = crate::util::wait_stopped(&mut child);
    assert!(st.success(), "{st}");
    assert_ne!(
        ignored & (1 << (libc::SIGUSR1 - 1)),
        0,
        "SigIgn {ignored:x}"
    );
}

/// The RESP plugin in its own process gives exactly the records it gives in
/// spf, exchanges included.
#[test]
fn isolated_resp_plugin_gives_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    let resp = example("spf_resp", dir.path());
    let mut outputs = Vec::new();
    for isolate in ["false", "true"] {
        let sub = dir.path().join(isolate);
        std::fs::create_dir(&sub).unwrap();
        let (cfg, out) = config(
            &sub,
            &redis_capture(),
            &format!(
                "type = \"plugin\"\npath = {}\nisolate = {isolate}",
                toml_str(&resp)
            ),
            "",
        );
        let o = run(&cfg);
        assert!(o.status.success(), "spf failed: {}", stderr_text(&o));
        outputs.push(std::fs::read_to_string(&out).unwrap());
    }
    assert_eq!(outputs[0], outputs[1]);
    let records: Vec<Value> = outputs[1]
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let exchanges: Vec<&Value> = records.iter().filter_map(|r| r.get("exchange")).collect();
    // Every command of the capture was answered, in order, each timed.
    assert!(exchanges.len() >= 15, "{exchanges:#?}");
    for x in &exchanges {
        assert!(x["protocol"] == "resp" && x["method"].is_string(), "{x}");
        assert!(
            x["latency_ns"].as_u64().is_some_and(|l| l > 0) || x["error"] == "no response",
            "{x}"
        );
    }
    let conn12: Vec<&str> = records
        .iter()
        .filter(|r| r["conn"] == 12)
        .filter_map(|r| r["exchange"]["method"].as_str())
        .collect();
    assert_eq!(conn12, ["SET", "INCR", "MGET", "DEL", "ECHO"]);
    let failed = exchanges
        .iter()
        .find(|x| x["method"] == "NOSUCHCOMMAND")
        .expect("the failing command's exchange");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .starts_with("ERR unknown command")
    );
}

/// A decoder that misbehaves on request: its event's bytes say how.
const C_CRASHY: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "spf_plugin.h"
static int32_t init(const uint8_t *c, size_t n, void **i) { (void)c; (void)n; *i = (void *)1; return SPF_OK; }
static const uint8_t *last_error(void *i, size_t *n) { (void)i; *n = 0; return (const uint8_t *)""; }
static void destroy(void *i) { (void)i; }
static int is(const SpfEventView *e, const char *word) {
    size_t n = strlen(word);
    return e->data.len >= n && memcmp(e->data.ptr, word, n) == 0;
}
static int32_t decode(void *i, const SpfEventView *e, const SpfDecoderOut *o) {
    (void)i;
    char json[512];
    if (is(e, "abort")) abort();
    if (is(e, "segv")) { volatile int *p = NULL; *p = 1; }
    if (is(e, "exit")) exit(3);
    if (is(e, "loop")) { for (;;) { } }
    if (is(e, "open:")) {
        char path[256] = {0};
        size_t n = e->data.len - 5 < 255 ? e->data.len - 5 : 255;
        memcpy(path, e->data.ptr + 5, n);
        char got[64] = {0};
        int fd = open(path, O_RDONLY);
        int err = fd < 0 ? errno : 0;
        if (fd >= 0) { ssize_t r = read(fd, got, sizeof got - 1); (void)r; close(fd); }
        for (char *c = got; *c; c++) if (*c == '"' || *c == '\\' || *c < 0x20) *c = '_';
        snprintf(json, sizeof json, "{\"crashy\":{\"errno\":%d,\"read\":\"%s\"}}", err, got);
    } else {
        snprintf(json, sizeof json, "{\"crashy\":{\"bytes\":%zu}}", e->data.len);
    }
    return o->record(o->ctx, (const uint8_t *)json, strlen(json), (const uint8_t *)"", 0);
}
static const SpfDecoderVtable vt = { .init = init, .decode = decode, .last_error = last_error, .destroy = destroy };
const SpfPluginDeclaration spf_plugin_declaration = {
    .magic = SPF_PLUGIN_MAGIC, .abi_major = SPF_ABI_MAJOR, .abi_minor = SPF_ABI_MINOR,
    .kind = SPF_KIND_DECODER, .name = "crashy", .version = "0.0.1", .decoder = &vt, .sink = NULL,
    .declaration_size = sizeof(SpfPluginDeclaration), .event_view_size = sizeof(SpfEventView),
    .decoder_out_size = sizeof(SpfDecoderOut), .decoder_vtable_size = sizeof(SpfDecoderVtable),
    .sink_vtable_size = sizeof(SpfSinkVtable),
};
"#;

/// A replay capture of one event per connection, carrying `payloads`.
fn capture_of(dir: &Path, payloads: &[&str]) -> PathBuf {
    use base64::Engine as _;
    let mut text = String::new();
    for (i, p) in payloads.iter().enumerate() {
        let line = serde_json::json!({
            "ts_ns": 1_000_000 + i as u64 * 1000,
            "time": "2026-01-01T00:00:00Z",
            "pid": 100, "tid": 100, "comm": "client", "peer_pid": 200,
            "path": "/run/test.sock", "sock": "stream", "dir": "send",
            "conn": i as u64 + 1, "len": p.len(), "captured": p.len(), "truncated": false,
            "decoder": "raw",
            "data_b64": base64::engine::general_purpose::STANDARD.encode(p),
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    write_file(dir, "capture.ndjson", text)
}

/// An isolated plugin that aborts, segfaults, calls `exit` and loops forever:
/// each costs the event it was on (a PLUGIN_ERROR record saying what
/// happened), a new process takes over, and the connections after it are
/// decoded. spf itself runs to the end.
#[test]
fn isolated_plugin_crashes_are_reported_and_survived() {
    let dir = tempfile::tempdir().unwrap();
    let lib = compile_c(dir.path(), "crashy", C_CRASHY);
    let capture = capture_of(
        dir.path(),
        &[
            "ok1", "abort", "ok3", "segv", "ok5", "exit", "ok7", "loop", "ok9",
        ],
    );
    let (cfg, out) = config(
        dir.path(),
        &capture,
        &format!(
            "type = \"plugin\"\npath = {}\nisolate = true\ndeadline_ms = 500\nmax_restarts = 10",
            toml_str(&lib)
        ),
        "",
    );
    let o = run(&cfg);
    assert!(o.status.success(), "spf failed: {}", stderr_text(&o));
    let records = read_ndjson(&out);
    let by_conn = |c: u64| -> Vec<&Value> { records.iter().filter(|r| r["conn"] == c).collect() };
    for ok in [1, 3, 5, 7, 9] {
        let r = by_conn(ok);
        assert_eq!(r.len(), 1, "conn {ok}: {records:#?}");
        assert_eq!(r[0]["crashy"]["bytes"], 3, "conn {ok}: {records:#?}");
    }
    for (conn, what) in [
        (2, "killed by signal 6 (SIGABRT)"),
        (4, "killed by signal 11 (SIGSEGV)"),
        (6, "exited with status 3"),
        (8, "did not answer within 500 ms and was killed"),
    ] {
        let r = by_conn(conn);
        assert_eq!(r.len(), 1, "conn {conn}: {records:#?}");
        assert_eq!(r[0]["error"]["code"], "PLUGIN_ERROR", "{}", r[0]);
        let msg = r[0]["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("plugin `crashy` 0.0.1")
                && msg.contains("(isolated)")
                && msg.contains(what),
            "conn {conn}: {msg}"
        );
    }

    // More failures in a minute than max_restarts allows switch it off, with
    // one record, and the run still ends well.
    let sub = dir.path().join("limit");
    std::fs::create_dir(&sub).unwrap();
    let capture = capture_of(&sub, &["abort", "abort", "ok3", "ok4"]);
    let (cfg, out) = config(
        &sub,
        &capture,
        &format!(
            "type = \"plugin\"\npath = {}\nisolate = true\nmax_restarts = 1",
            toml_str(&lib)
        ),
        "",
    );
    let o = run(&cfg);
    assert!(o.status.success(), "spf failed: {}", stderr_text(&o));
    let codes: Vec<String> = read_ndjson(&out)
        .iter()
        .map(|r| r["error"]["code"].as_str().unwrap_or("-").to_string())
        .collect();
    assert_eq!(codes, ["PLUGIN_ERROR", "PLUGIN_ERROR", "PLUGIN_DISABLED"]);
}

/// An isolated plugin runs as an unprivileged user under seccomp: a file only
/// root may read stays out of its reach even when spf itself keeps root
/// (`[run] user = "root"`), while the same plugin in that spf reads it, which
/// shows the test can tell.
#[test]
fn isolated_plugin_cannot_open_a_root_only_file() {
    if !is_root() {
        eprintln!("skipping: needs root to make a root-only file and drop privileges");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = write_file(dir.path(), "secret.txt", "TOPSECRET");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let lib = compile_c(dir.path(), "crashy", C_CRASHY);
    let capture = capture_of(dir.path(), &[&format!("open:{}", secret.display())]);
    let mut seen = Vec::new();
    for isolate in ["false", "true"] {
        let sub = dir.path().join(isolate);
        std::fs::create_dir(&sub).unwrap();
        let (cfg, out) = config(
            &sub,
            &capture,
            &format!(
                "type = \"plugin\"\npath = {}\nisolate = {isolate}",
                toml_str(&lib)
            ),
            "\n[run]\nuser = \"root\"\n",
        );
        let o = run(&cfg);
        assert!(o.status.success(), "spf failed: {}", stderr_text(&o));
        let r = read_ndjson(&out);
        assert_eq!(r.len(), 1, "{r:#?}");
        seen.push(r[0]["crashy"].clone());
    }
    assert_eq!(seen[0]["read"], "TOPSECRET", "in spf, as root: {}", seen[0]);
    assert_eq!(seen[1]["read"], "", "isolated: {}", seen[1]);
    assert_ne!(seen[1]["errno"], 0, "isolated: {}", seen[1]);
}

/// A library that is no plugin, with an ELF constructor that leaves a mark.
fn constructor_library(marker: &Path) -> String {
    format!(
        r#"
#include <stdio.h>
__attribute__((constructor)) static void leave_a_mark(void) {{
    FILE *f = fopen({marker:?}, "w");
    if (f) {{
        fputs("the constructor ran\n", f);
        fclose(f);
    }}
}}
int not_a_plugin(void) {{ return 42; }}
"#,
        marker = marker.display().to_string()
    )
}

/// Writes `data` as an installed library (mode 0755) named lib`name`.so.
fn write_lib(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(format!("lib{name}.so"));
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// `plugins check`, `validate` and `run` each refuse `lib` with exit 2 (not a
/// signal) and every one of `needles` in the message.
fn refused_everywhere(dir: &Path, lib: &Path, needles: &[&str]) {
    use std::os::unix::process::ExitStatusExt as _;
    let sub = tempfile::tempdir_in(dir).unwrap();
    let (cfg, _) = config(
        sub.path(),
        &redis_capture(),
        &format!("type = \"plugin\"\npath = {}", toml_str(lib)),
        "",
    );
    let runs = [
        (
            "plugins check",
            spf().args(["plugins", "check"]).arg(lib).output(),
        ),
        (
            "validate",
            spf().args(["validate", "-c"]).arg(&cfg).output(),
        ),
        ("run", spf().args(["run", "-q", "-c"]).arg(&cfg).output()),
    ];
    for (what, o) in runs {
        let o = o.unwrap();
        let err = stderr_text(&o);
        assert_eq!(
            o.status.signal(),
            None,
            "spf {what} died of a signal: {err}"
        );
        assert_eq!(o.status.code(), Some(2), "spf {what}: {err}");
        for n in needles {
            assert!(err.contains(n), "spf {what}: expected {n:?} in:\n{err}");
        }
        assert!(
            err.contains(&lib.display().to_string()),
            "spf {what}: {err}"
        );
    }
}

/// Each of these crashed spf with SIGBUS in dlopen, or ran code of a library
/// that is no plugin, before spf checked the file as ELF data.
#[test]
fn broken_foreign_and_non_plugin_libraries_never_reach_the_dynamic_linker() {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(example("spf_resp", dir.path())).unwrap();
    let u16_at = |d: &[u8], at: usize| u16::from_le_bytes([d[at], d[at + 1]]) as usize;
    let u64_at = |d: &[u8], at: usize| u64::from_le_bytes(d[at..at + 8].try_into().unwrap());
    let malformed = "spf loads only complete, well-formed ELF shared libraries";

    // The program headers, to find the code.
    let (phoff, phentsize, phnum) = (
        u64_at(&real, 32) as usize,
        u16_at(&real, 54),
        u16_at(&real, 56),
    );
    let loads: Vec<usize> = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&ph| u32::from_le_bytes(real[ph..ph + 4].try_into().unwrap()) == 1)
        .collect();
    let code = *loads
        .iter()
        .find(|&&ph| u32::from_le_bytes(real[ph + 4..ph + 8].try_into().unwrap()) & 1 != 0)
        .expect("an executable PT_LOAD segment");
    let mid_code = (u64_at(&real, code + 8) + u64_at(&real, code + 32) / 2) as usize;

    // Cut short: in the program headers, in the middle of the code (dlopen maps
    // the whole segment, and touching the missing half was a SIGBUS), one byte
    // before the end.
    for (name, cut) in [
        ("cut-headers", 100),
        ("cut-code", mid_code),
        ("cut-end", real.len() - 1),
    ] {
        let lib = write_lib(dir.path(), name, &real[..cut]);
        refused_everywhere(
            dir.path(),
            &lib,
            &["is not a shared library spf can load", malformed],
        );
    }

    // Corrupt: the first loadable segment claims twice the file (what a cut
    // file looks like to the loader), and program headers that point nowhere.
    let load = loads[0];
    let mut corrupt = real.clone();
    corrupt[load + 32..load + 40].copy_from_slice(&(2 * real.len() as u64).to_le_bytes());
    let lib = write_lib(dir.path(), "corrupt-segment", &corrupt);
    refused_everywhere(dir.path(), &lib, &["segment lies past the end", malformed]);
    let mut corrupt = real.clone();
    corrupt[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    let lib = write_lib(dir.path(), "corrupt-phoff", &corrupt);
    refused_everywhere(dir.path(), &lib, &["program headers", malformed]);

    // Another architecture: e_machine says aarch64 (or x86-64 on aarch64).
    let mut foreign = real.clone();
    let other: u16 = if cfg!(target_arch = "aarch64") {
        62
    } else {
        183
    };
    foreign[18..20].copy_from_slice(&other.to_le_bytes());
    let lib = write_lib(dir.path(), "foreign", &foreign);
    let other_name = if other == 62 { "x86_64" } else { "aarch64" };
    refused_everywhere(
        dir.path(),
        &lib,
        &[
            &format!("was built for {other_name}"),
            &format!("this spf runs on {}", std::env::consts::ARCH),
        ],
    );

    // A library that is no plugin: its constructor must never run.
    let marker = dir.path().join("constructor-ran");
    let lib = compile_c(dir.path(), "constructor", &constructor_library(&marker));
    refused_everywhere(
        dir.path(),
        &lib,
        &[
            "is a shared library but not an spf plugin",
            "spf_plugin_declaration",
        ],
    );
    assert!(!marker.exists(), "the non-plugin's constructor ran");
    // The mark is real: loading the library the ordinary way leaves it.
    if let Ok(py) = Command::new("python3")
        .arg("-c")
        .arg("import ctypes, sys; ctypes.CDLL(sys.argv[1])")
        .arg(&lib)
        .status()
    {
        assert!(py.success());
        assert!(
            marker.exists(),
            "loading the library did not run its constructor"
        );
    }
}

#[test]
fn a_plugin_decoder_named_by_flag_is_sent_to_a_config_file() {
    // No flag can name the library: say how to, rather than ask for a
    // `path` key no command line has.
    let o = spf()
        .args(["run", "--replay", "/dev/null", "--decoder", "plugin"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr_text(&o);
    assert!(
        err.contains("a plugin decoder needs a config file") && err.contains("spf run -c FILE"),
        "{err}"
    );
}
