//! Host tests on plugins built in memory with the SDK's own shims: the same vtables
//! the export macros put in a shared library, minus `dlopen`. Loading real
//! libraries is covered by the integration tests.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use spf_plugin::__private::{DecoderShim, SinkShim};
use spf_plugin::{
    DecoderOutput, DecoderPlugin, Error, SPF_ABI_MAJOR, SPF_ABI_MINOR, SPF_KIND_DECODER,
    SPF_KIND_SINK, SPF_PLUGIN_MAGIC, SinkPlugin, SpfDecoderVtable, SpfPluginDeclaration,
    SpfSinkVtable,
};

use super::load::{Vtable, handshake, vet_file};
use super::*;
use crate::event::{Direction, Event, SockKind};
use crate::record::{Body, Record};
use crate::stage::Out;

/// Echoes each event's length; fails or panics on request, driven by the data.
struct Probe {
    prefix: String,
}

impl DecoderPlugin for Probe {
    fn init(config: &str) -> Result<Self, Error> {
        if config.contains("\"refuse\"") {
            return Err("config says refuse".into());
        }
        Ok(Probe {
            prefix: if config.contains("\"loud\"") {
                "LOUD ".into()
            } else {
                String::new()
            },
        })
    }

    fn decode(
        &mut self,
        event: &spf_plugin::Event<'_>,
        out: &mut DecoderOutput<'_>,
    ) -> Result<(), Error> {
        match event.data {
            b"panic" => panic!("asked to panic on seq {}", event.seq),
            b"fail" => return Err(format!("asked to fail on seq {}", event.seq).into()),
            b"badjson" => {
                out.record("{not json", "");
            }
            b"array" => {
                out.record("[1,2]", "");
            }
            b"reserved" => {
                out.record("{\"pid\":1}", "");
            }
            b"proto" => out.error(Some("BAD_FRAME"), "frame makes no sense"),
            b"exchange" => {
                out.exchange(&spf_plugin::Exchange {
                    protocol: "probe",
                    method: Some("PING"),
                    started_ns: event.ts_ns,
                    latency_ns: Some(5),
                    ..Default::default()
                });
                let view = format!(
                    "{} {:?} {:?} {:?} {}",
                    event.side, event.role, event.via, event.pos, event.peer_comm
                );
                out.record(&format!("{{\"probe\":{{\"view\":\"{view}\"}}}}"), "");
            }
            b"badexchange" => {
                out.exchange(&spf_plugin::Exchange {
                    protocol: "Not A Name",
                    ..Default::default()
                });
            }
            _ => {
                let json = format!(
                    "{{\"probe\":{{\"bytes\":{},\"conn\":{}}}}}",
                    event.data.len(),
                    event.conn
                );
                out.record(
                    &json,
                    &format!(
                        "{}{} bytes from {}",
                        self.prefix,
                        event.data.len(),
                        event.comm
                    ),
                );
            }
        }
        Ok(())
    }

    fn closed(&mut self, conn: u64, out: &mut DecoderOutput<'_>) -> Result<(), Error> {
        out.record(&format!("{{\"probe\":{{\"closed\":{conn}}}}}"), "closed");
        Ok(())
    }

    fn detect(&mut self, data: &[u8], event: &spf_plugin::Event<'_>) -> u8 {
        match data {
            b"PROBE" if event.side == 1 => 60,
            b"PROBE" => 77,
            b"panic" => panic!("detect panics"),
            _ => 0,
        }
    }
}

static PROBE_VT: SpfDecoderVtable = DecoderShim::<Probe>::VTABLE;

struct Collect {
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

static SINK_LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl SinkPlugin for Collect {
    fn init(_config: &str) -> Result<Self, Error> {
        Ok(Collect {
            lines: Arc::new(std::sync::Mutex::new(Vec::new())),
        })
    }

    fn write(&mut self, line: &str) -> Result<(), Error> {
        if line.contains("\"decoder\":\"boom\"") {
            panic!("sink panics on boom");
        }
        self.lines.lock().unwrap().push(line.to_string());
        SINK_LINES.lock().unwrap().push(line.to_string());
        Ok(())
    }
}

static COLLECT_VT: SpfSinkVtable = SinkShim::<Collect>::VTABLE;

/// A declaration of ABI `major.minor` with the struct sizes of that minor (this
/// SDK's where the host knows no other).
fn decl(major: u32, minor: u32, kind: u32, name: &'static [u8]) -> &'static SpfPluginDeclaration {
    let sizes = super::sizes_of_minor(minor).unwrap_or(SpfPluginDeclaration::SIZES.map(|(_, s)| s));
    Box::leak(Box::new(SpfPluginDeclaration {
        magic: SPF_PLUGIN_MAGIC,
        abi_major: major,
        abi_minor: minor,
        kind,
        name: name.as_ptr().cast(),
        version: c"9.8.7".as_ptr(),
        decoder: &PROBE_VT,
        sink: &COLLECT_VT,
        declaration_size: sizes[0],
        event_view_size: sizes[1],
        decoder_out_size: sizes[2],
        decoder_vtable_size: sizes[3],
        sink_vtable_size: sizes[4],
    }))
}

fn path() -> &'static Path {
    Path::new("/opt/spf/libprobe.so")
}

fn event(seq: u64, conn: u64, data: &'static [u8]) -> Arc<Event> {
    Arc::new(Event {
        seq,
        ts_ns: seq * 10,
        time_ns: 1_700_000_000_000_000_000 + seq,
        pid: 42,
        tid: 43,
        comm: Arc::from("client"),
        peer_pid: 7,
        path: Arc::from("/run/x.sock"),
        sock: SockKind::Stream,
        dir: Direction::Send,
        conn,
        socket: 0,
        len: data.len() as u64,
        data: bytes::Bytes::from_static(data),
        truncated: false,
        ..Event::default()
    })
}

fn decoder(max_errors: u64, config: &str) -> PluginDecoder {
    let loaded = handshake(
        path(),
        decl(SPF_ABI_MAJOR, SPF_ABI_MINOR, SPF_KIND_DECODER, b"probe\0"),
        None,
        None,
    )
    .unwrap();
    let Vtable::Decoder(vt) = loaded.vtable else {
        panic!("not a decoder")
    };
    PluginDecoder::new(
        loaded.info,
        vt,
        config,
        max_errors,
        crate::limits::Budget::new(1 << 20),
    )
    .unwrap()
}

fn error_of(r: &Record) -> (Option<String>, String) {
    match r {
        Record::Decoded(d) => match &d.body {
            Body::Error { code, message } => (code.clone(), message.clone()),
            other => panic!("not an error record: {other:?}"),
        },
        other => panic!("not a decoded record: {other:?}"),
    }
}

#[test]
fn handshake_reads_declaration() {
    let l = handshake(
        path(),
        decl(SPF_ABI_MAJOR, 0, SPF_KIND_DECODER, b"probe\0"),
        None,
        Some(Kind::Decoder),
    )
    .unwrap();
    assert_eq!(l.info.name, "probe");
    assert_eq!(l.info.version, "9.8.7");
    assert_eq!(l.info.kind, Kind::Decoder);
    assert_eq!((l.info.abi_major, l.info.abi_minor), (SPF_ABI_MAJOR, 0));
    let l = handshake(
        path(),
        decl(SPF_ABI_MAJOR, 0, SPF_KIND_SINK, b"collect\0"),
        None,
        Some(Kind::Sink),
    )
    .unwrap();
    assert!(matches!(l.vtable, Vtable::Sink(_)));
}

#[test]
fn handshake_refuses_other_major_naming_both_versions() {
    let e = handshake(
        path(),
        decl(SPF_ABI_MAJOR + 1, 4, SPF_KIND_DECODER, b"probe\0"),
        None,
        None,
    )
    .unwrap_err();
    assert!(matches!(e, LoadError::AbiMajor { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("`probe` 9.8.7"), "{msg}");
    assert!(
        msg.contains(&format!("ABI {}.4", SPF_ABI_MAJOR + 1)),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("ABI {SPF_ABI_MAJOR}.{SPF_ABI_MINOR}")),
        "{msg}"
    );
    assert!(msg.contains("rebuild"), "{msg}");
}

#[test]
fn handshake_refuses_newer_minor() {
    let e = handshake(
        path(),
        decl(
            SPF_ABI_MAJOR,
            SPF_ABI_MINOR + 1,
            SPF_KIND_DECODER,
            b"probe\0",
        ),
        None,
        None,
    )
    .unwrap_err();
    assert!(matches!(e, LoadError::AbiMinor { .. }), "{e:?}");
    assert!(e.to_string().contains("upgrade spf"), "{e}");
}

#[test]
fn handshake_refuses_wrong_kind_bad_magic_bad_name() {
    let e = handshake(
        path(),
        decl(SPF_ABI_MAJOR, 0, SPF_KIND_SINK, b"collect\0"),
        None,
        Some(Kind::Decoder),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("is a sink plugin, not a decoder plugin")
            && msg.contains("in a [[sink]] section, not in [decoder]"),
        "{msg}"
    );

    let bad: &'static mut SpfPluginDeclaration = Box::leak(Box::new(SpfPluginDeclaration {
        magic: 0xdead_beef,
        ..*decl(SPF_ABI_MAJOR, 0, SPF_KIND_DECODER, b"probe\0")
    }));
    assert!(matches!(
        handshake(path(), bad, None, None),
        Err(LoadError::BadMagic {
            magic: 0xdead_beef,
            ..
        })
    ));

    let e = handshake(
        path(),
        decl(SPF_ABI_MAJOR, 0, SPF_KIND_DECODER, b"Bad Name\0"),
        None,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(e, LoadError::Malformed { .. }) && e.to_string().contains("Bad Name"),
        "{e}"
    );

    let e = handshake(path(), decl(SPF_ABI_MAJOR, 0, 7, b"probe\0"), None, None).unwrap_err();
    assert!(e.to_string().contains("kind 7"), "{e}");

    let no_decode: &'static SpfDecoderVtable = Box::leak(Box::new(SpfDecoderVtable {
        decode: None,
        ..PROBE_VT
    }));
    let d: &'static SpfPluginDeclaration = Box::leak(Box::new(SpfPluginDeclaration {
        decoder: no_decode,
        ..*decl(SPF_ABI_MAJOR, 0, SPF_KIND_DECODER, b"probe\0")
    }));
    let e = handshake(path(), d, None, None).unwrap_err();
    assert!(e.to_string().contains("`decode` is null"), "{e}");
}

/// A plugin built against a header whose structs differ is refused before any of
/// its functions is read, naming the struct and both sizes.
#[test]
fn handshake_refuses_other_struct_sizes() {
    let host_view = std::mem::size_of::<spf_plugin::SpfEventView>() as u32;
    let grown: &'static SpfPluginDeclaration = Box::leak(Box::new(SpfPluginDeclaration {
        event_view_size: host_view + 8,
        // Would be refused as malformed if the vtable were looked at first.
        decoder: std::ptr::null(),
        ..*decl(SPF_ABI_MAJOR, SPF_ABI_MINOR, SPF_KIND_DECODER, b"probe\0")
    }));
    let e = handshake(path(), grown, None, Some(Kind::Decoder)).unwrap_err();
    assert!(
        matches!(
            e,
            LoadError::Layout {
                structure: "SpfEventView",
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    for want in [
        "plugin `probe` 9.8.7",
        "SpfEventView",
        &format!("{} bytes in the plugin", host_view + 8),
        &format!(
            "{host_view} bytes in ABI {SPF_ABI_MAJOR}.{SPF_ABI_MINOR}, which the plugin declares"
        ),
        "rebuild the plugin against the spf-plugin SDK of this spf",
    ] {
        assert!(msg.contains(want), "{want:?} missing from {msg}");
    }

    let sink: &'static SpfPluginDeclaration = Box::leak(Box::new(SpfPluginDeclaration {
        sink_vtable_size: 0,
        ..*decl(SPF_ABI_MAJOR, 0, SPF_KIND_SINK, b"collect\0")
    }));
    let e = handshake(path(), sink, None, None).unwrap_err();
    assert!(e.to_string().contains("SpfSinkVtable: 0 bytes"), "{e}");

    // Built with this SDK's header but declaring minor 0: the sizes it is
    // held to are those of ABI 1.0, and the message says so.
    let older: &'static SpfPluginDeclaration = Box::leak(Box::new(SpfPluginDeclaration {
        abi_minor: 0,
        ..*decl(SPF_ABI_MAJOR, SPF_ABI_MINOR, SPF_KIND_DECODER, b"probe\0")
    }));
    let e = handshake(path(), older, None, None)
        .unwrap_err()
        .to_string();
    let want_10 = crate::plugin::abi::sizes_of_minor(0).unwrap()[1];
    assert!(
        e.contains(&format!(
            "SpfEventView: {host_view} bytes in the plugin, {want_10} bytes in ABI {SPF_ABI_MAJOR}.0, which the plugin declares"
        )),
        "{e}"
    );

    // One too short for the header (a 4-byte object holding the magic) is
    // refused before its name pointer is followed.
    let e = handshake(
        path(),
        decl(SPF_ABI_MAJOR, 0, SPF_KIND_DECODER, b"probe\0"),
        Some(4),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("an object of 4 bytes, too small"), "{e}");

    // A declaration object too short to hold the sizes is refused on its own size,
    // without reading past it.
    let short = std::mem::size_of::<SpfPluginDeclaration>() as u64 - 20;
    let e = handshake(
        path(),
        decl(SPF_ABI_MAJOR, 0, SPF_KIND_DECODER, b"probe\0"),
        Some(short),
        None,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "SpfPluginDeclaration: {short} bytes in the plugin"
        )),
        "{e}"
    );

    // The other major is reported as such, whatever its sizes.
    let future: &'static SpfPluginDeclaration = Box::leak(Box::new(SpfPluginDeclaration {
        event_view_size: 1,
        ..*decl(SPF_ABI_MAJOR + 1, 0, SPF_KIND_DECODER, b"probe\0")
    }));
    assert!(matches!(
        handshake(path(), future, Some(48), None),
        Err(LoadError::AbiMajor { .. })
    ));
}

#[test]
fn decode_passes_event_and_copies_output() {
    let mut d = decoder(100, "{\"mode\":\"loud\"}");
    let mut out = Vec::new();
    let e = event(1, 5, b"hello");
    d.decode(&e, &mut crate::stage::Out::collect(&mut out));
    assert_eq!(out.len(), 1);
    let Record::Decoded(r) = &out[0] else {
        panic!()
    };
    assert_eq!(&*r.decoder, "probe");
    assert!(Arc::ptr_eq(&r.event, &e));
    match &r.body {
        Body::Fields { json, text } => {
            assert_eq!(json["probe"]["bytes"], 5);
            assert_eq!(json["probe"]["conn"], 5);
            assert_eq!(text, "LOUD 5 bytes from client");
        }
        other => panic!("{other:?}"),
    }
    out.clear();
    d.decode(
        &event(2, 5, b"proto"),
        &mut crate::stage::Out::collect(&mut out),
    );
    assert_eq!(
        error_of(&out[0]),
        (Some("BAD_FRAME".into()), "frame makes no sense".into())
    );
}

#[test]
fn init_error_is_reported_with_the_plugin_message() {
    let loaded = handshake(
        path(),
        decl(SPF_ABI_MAJOR, 0, SPF_KIND_DECODER, b"probe\0"),
        None,
        None,
    )
    .unwrap();
    let Vtable::Decoder(vt) = loaded.vtable else {
        panic!()
    };
    let e = PluginDecoder::new(
        loaded.info,
        vt,
        "{\"mode\":\"refuse\"}",
        100,
        crate::limits::Budget::new(1 << 20),
    )
    .err()
    .unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("`probe`") && msg.contains("init failed: config says refuse"),
        "{msg}"
    );
}

#[test]
fn failures_and_panics_cost_one_event_each() {
    let mut d = decoder(100, "{}");
    let mut out = Vec::new();
    for (i, data) in [&b"a"[..], b"panic", b"bb", b"fail", b"ccc"]
        .into_iter()
        .enumerate()
    {
        let data: &'static [u8] = data;
        d.decode(
            &event(i as u64, 1, data),
            &mut crate::stage::Out::collect(&mut out),
        );
    }
    assert_eq!(out.len(), 5);
    let (code, msg) = error_of(&out[1]);
    assert_eq!(code.as_deref(), Some(PLUGIN_ERROR));
    assert!(
        msg.contains("plugin `probe`")
            && msg.contains("panicked")
            && msg.contains("asked to panic on seq 1"),
        "{msg}"
    );
    assert!(msg.contains("tests.rs:"), "panic location missing: {msg}");
    let (code, msg) = error_of(&out[3]);
    assert_eq!(code.as_deref(), Some(PLUGIN_ERROR));
    assert!(msg.contains("failed: asked to fail on seq 3"), "{msg}");
    for i in [0, 2, 4] {
        assert!(matches!(&out[i], Record::Decoded(r) if matches!(r.body, Body::Fields { .. })));
    }
}

#[test]
fn bad_output_is_an_error_record() {
    let mut d = decoder(100, "{}");
    let mut out = Vec::new();
    d.decode(
        &event(1, 1, b"badjson"),
        &mut crate::stage::Out::collect(&mut out),
    );
    d.decode(
        &event(2, 1, b"array"),
        &mut crate::stage::Out::collect(&mut out),
    );
    d.decode(
        &event(3, 1, b"reserved"),
        &mut crate::stage::Out::collect(&mut out),
    );
    let msgs: Vec<_> = out.iter().map(error_of).collect();
    assert!(
        msgs.iter()
            .all(|(c, _)| c.as_deref() == Some(PLUGIN_OUTPUT)),
        "{msgs:?}"
    );
    assert!(msgs[0].1.contains("not valid JSON"), "{msgs:?}");
    assert!(
        msgs[1].1.contains("not a JSON object but an array"),
        "{msgs:?}"
    );
    assert!(msgs[2].1.contains("field `pid`"), "{msgs:?}");

    // Rejected output counts towards switching the plugin off.
    let mut d = decoder(2, "{}");
    let mut out = Vec::new();
    d.decode(
        &event(1, 1, b"badjson"),
        &mut crate::stage::Out::collect(&mut out),
    );
    d.decode(
        &event(2, 1, b"array"),
        &mut crate::stage::Out::collect(&mut out),
    );
    let codes: Vec<_> = out.iter().map(|r| error_of(r).0.unwrap()).collect();
    assert_eq!(codes, [PLUGIN_OUTPUT, PLUGIN_OUTPUT, PLUGIN_DISABLED]);
}

#[test]
fn plugin_failing_in_a_row_is_disabled_once() {
    let mut d = decoder(3, "{}");
    let mut out = Vec::new();
    // Failures that are not in a row do not add up.
    for data in [&b"fail"[..], b"fail", b"ok", b"fail", b"fail"] {
        let data: &'static [u8] = data;
        d.decode(
            &event(0, 1, data),
            &mut crate::stage::Out::collect(&mut out),
        );
    }
    assert!(
        !out.iter()
            .any(|r| error_of_opt(r).is_some_and(|c| c == PLUGIN_DISABLED))
    );
    out.clear();
    d.decode(
        &event(9, 1, b"panic"),
        &mut crate::stage::Out::collect(&mut out),
    );
    assert_eq!(out.len(), 2);
    let (code, msg) = error_of(&out[1]);
    assert_eq!(code.as_deref(), Some(PLUGIN_DISABLED));
    assert!(
        msg.contains("`probe`") && msg.contains("3 calls in a row") && msg.contains("max_errors"),
        "{msg}"
    );
    out.clear();
    d.decode(
        &event(10, 1, b"fine"),
        &mut crate::stage::Out::collect(&mut out),
    );
    d.finish(&mut crate::stage::Out::collect(&mut out));
    assert!(out.is_empty(), "a disabled plugin is not called: {out:?}");
}

fn error_of_opt(r: &Record) -> Option<String> {
    match r {
        Record::Decoded(d) => match &d.body {
            Body::Error { code, .. } => code.clone(),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn closed_records_carry_that_connection() {
    let mut d = decoder(100, "{}");
    let mut out = Vec::new();
    let a = event(1, 10, b"x");
    let b = event(2, 20, b"y");
    let c = event(3, 10, b"z");
    let e = event(4, 30, b"w");
    for ev in [&a, &b, &c, &e] {
        d.decode(ev, &mut crate::stage::Out::collect(&mut out));
    }
    out.clear();
    let anchored = |d: &mut PluginDecoder, conn: u64| {
        let mut out = Vec::new();
        d.closed(conn, &mut crate::stage::Out::collect(&mut out));
        let Record::Decoded(r) = &out[0] else {
            panic!()
        };
        r.event.clone()
    };
    // The metadata of the latest event of each connection, whether or not it is
    // the latest overall, without its bytes.
    for (conn, ev) in [(10, &c), (20, &b), (30, &e)] {
        let got = anchored(&mut d, conn);
        assert_eq!((got.seq, got.conn, got.pid), (ev.seq, ev.conn, ev.pid));
        assert!(got.data.is_empty() && got.len == 0);
    }
    // A connection never seen: only its id is known.
    let got = anchored(&mut d, 99);
    assert_eq!((got.conn, got.pid, &*got.path), (99, 0, ""));
}

#[test]
fn sink_gets_ndjson_lines_and_survives_panics() {
    let loaded = handshake(
        path(),
        decl(SPF_ABI_MAJOR, 0, SPF_KIND_SINK, b"collect\0"),
        None,
        Some(Kind::Sink),
    )
    .unwrap();
    let Vtable::Sink(vt) = loaded.vtable else {
        panic!()
    };
    let mut s = PluginSink::new(loaded.info, vt, "{}", 100, false).unwrap();
    let e = event(1, 77, b"ping");
    s.write(&Record::raw(e.clone(), Arc::from("raw"))).unwrap();
    s.write(&Record::raw(e.clone(), Arc::from("boom"))).unwrap();
    s.write(&Record::raw(e, Arc::from("raw2"))).unwrap();
    s.flush().unwrap();
    assert_eq!(s.failures(), 1);
    // Said again at the end of the run, in the summary.
    let note = s.report().note.unwrap_or_default();
    assert!(note.ends_with(": 1 failed call (see above)"), "{note}");
    let lines: Vec<String> = SINK_LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("\"conn\":77"))
        .cloned()
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        assert!(!l.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["data_b64"], "cGluZw==");
    }
}

#[test]
fn vet_file_rules() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("libx.so");
    std::fs::write(&f, b"not elf").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();

    let vet = |p: &Path, root: bool| vet_file(p, &std::fs::metadata(p).unwrap(), root);
    let e = load(Path::new("libx.so"), None).unwrap_err();
    assert!(
        matches!(e, LoadError::NotAbsolute(_)) && e.to_string().contains("absolute"),
        "{e}"
    );
    let e = load(&dir.path().join("missing.so"), None).unwrap_err();
    assert!(matches!(e, LoadError::Unreadable { .. }), "{e}");
    let e = load(dir.path(), None).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    // Not ELF: refused as data, before the dynamic linker sees it.
    let e = load(&f, None).unwrap_err();
    assert!(
        matches!(e, LoadError::NotLibrary { .. }) && e.to_string().contains("not an ELF file"),
        "{e}"
    );

    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    // Not root: a user may load a file they can write.
    vet(&f, false).unwrap();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping the root-only ownership checks: not running as root");
        return;
    }
    let e = vet(&f, true).unwrap_err();
    assert!(
        e.to_string()
            .contains("writable by group or others (mode 0666)"),
        "{e}"
    );
    assert!(e.to_string().contains("chmod go-w"), "{e}");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    vet(&f, true).unwrap();

    std::os::unix::fs::chown(&f, Some(1000), None).unwrap();
    let e = vet(&f, true).unwrap_err();
    assert!(e.to_string().contains("owned by uid 1000"), "{e}");
    std::os::unix::fs::chown(&f, Some(0), None).unwrap();

    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = vet(&f, true).unwrap_err();
    assert!(
        e.to_string().contains("its directory") && e.to_string().contains("0777"),
        "{e}"
    );
    // Sticky, like /tmp: others cannot rename our file away.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    vet(&f, true).unwrap();
}

#[test]
fn config_errors_point_at_the_plugin_section() {
    let reg = crate::config::Registry::new();
    let text = "[source]\ntype = \"file\"\npath = \"x.ndjson\"\n\n[decoder]\ntype = \"plugin\"\npath = \"librel.so\"\n";
    let errs = crate::config::parse(&reg, "t.toml", text)
        .unwrap_err()
        .to_string();
    assert!(
        errs.contains("t.toml:7:8: decoder.path: plugin path `librel.so` is not absolute"),
        "{errs}"
    );

    let text = "[source]\ntype = \"file\"\npath = \"x.ndjson\"\n\n[decoder]\ntype = \"plugin\"\n";
    let errs = crate::config::parse(&reg, "t.toml", text)
        .unwrap_err()
        .to_string();
    assert!(errs.contains("decoder: missing `path`"), "{errs}");

    let text = "[source]\ntype = \"file\"\npath = \"x.ndjson\"\n\n[[sink]]\ntype = \"plugin\"\npath = \"/nonexistent/libs.so\"\nmax_errors = -1\n";
    let errs = crate::config::parse(&reg, "t.toml", text)
        .unwrap_err()
        .to_string();
    assert!(
        errs.contains("sink[0].max_errors: expected a non-negative integer"),
        "{errs}"
    );
}

fn decoder_of_minor(minor: u32, budget: Arc<crate::limits::Budget>) -> PluginDecoder {
    let loaded = handshake(
        path(),
        decl(SPF_ABI_MAJOR, minor, SPF_KIND_DECODER, b"probe\0"),
        None,
        None,
    )
    .unwrap();
    let Vtable::Decoder(vt) = loaded.vtable else {
        panic!("not a decoder")
    };
    PluginDecoder::new(loaded.info, vt, "{}", 100, budget).unwrap()
}

/// ABI 1.1: `detect` answers for the plugin (clamped, a panic is "no"); a 1.0
/// plugin has no `detect`, even though its static here holds one past the
/// 1.0 layout's end.
#[test]
fn detect_is_called_for_minor_1_plugins_only() {
    let budget = crate::limits::Budget::new(1 << 20);
    let mut d = decoder_of_minor(SPF_ABI_MINOR, budget.clone());
    let client = Event {
        role: crate::event::Role::Client,
        via: Some(Direction::Send),
        ..(*event(1, 5, b"")).clone()
    };
    assert_eq!(crate::stage::Decoder::detect(&mut d, b"PROBE", &client), 77);
    let server = Event {
        role: crate::event::Role::Server,
        ..client.clone()
    };
    assert_eq!(crate::stage::Decoder::detect(&mut d, b"PROBE", &server), 60);
    assert_eq!(crate::stage::Decoder::detect(&mut d, b"other", &client), 0);
    assert_eq!(crate::stage::Decoder::detect(&mut d, b"panic", &client), 0);

    let mut old = decoder_of_minor(0, budget);
    assert_eq!(old.info().abi_minor, 0);
    assert_eq!(
        crate::stage::Decoder::detect(&mut old, b"PROBE", &client),
        0
    );
    // It still decodes.
    let mut out = Vec::new();
    old.decode(&event(2, 5, b"abc"), &mut Out::collect(&mut out));
    assert_eq!(out.len(), 1);
}

/// Exchanges from a plugin become exchange records; the connection view
/// reaches the plugin; a bad exchange is an error record naming the field.
#[test]
fn exchanges_and_the_connection_view_reach_spf_and_the_plugin() {
    let mut d = decoder_of_minor(SPF_ABI_MINOR, crate::limits::Budget::new(1 << 20));
    let ev = Arc::new(Event {
        role: crate::event::Role::Server,
        via: Some(Direction::Recv),
        pos: Some(42),
        peer_comm: Arc::from("cli"),
        ..(*event(3, 5, b"exchange")).clone()
    });
    let mut out = Vec::new();
    d.decode(&ev, &mut Out::collect(&mut out));
    assert_eq!(out.len(), 2, "{out:?}");
    let Record::Decoded(x) = &out[0] else {
        panic!("{out:?}")
    };
    let Body::Exchange(x) = &x.body else {
        panic!("{out:?}")
    };
    assert_eq!(x.protocol.as_ref(), "probe");
    assert_eq!(x.method.as_deref(), Some("PING"));
    assert_eq!(x.latency_ns, Some(5));
    // The sender is the server: it is the server's end of the exchange.
    assert_eq!((x.server.pid, x.server.comm.as_ref()), (42, "client"));
    assert_eq!((x.client.pid, x.client.comm.as_ref()), (7, "cli"));
    let Record::Decoded(r) = &out[1] else {
        panic!()
    };
    assert_eq!(
        r.body.json().unwrap_or_else(|| panic!("{r:?}"))["probe"]["view"],
        "1 Server Some(Recv) Some(42) cli"
    );

    out.clear();
    d.decode(&event(4, 5, b"badexchange"), &mut Out::collect(&mut out));
    let (code, msg) = error_of(&out[0]);
    assert_eq!(code.as_deref(), Some(PLUGIN_OUTPUT));
    assert!(
        msg.contains("exchange") && msg.contains("`protocol`"),
        "{msg}"
    );
}

/// What the host keeps about connections for their close records is taken
/// from the run's memory budget and given back; with none left, close records
/// carry only the connection id.
#[test]
fn remembered_connections_count_against_the_budget() {
    let budget = crate::limits::Budget::new(1 << 20);
    let mut d = decoder_of_minor(SPF_ABI_MINOR, budget.clone());
    let mut out = Vec::new();
    for conn in 1..=10 {
        d.decode(&event(conn, conn, b"x"), &mut Out::collect(&mut out));
    }
    let held = budget.used();
    assert!(held > 0, "nine connections remembered, none counted");
    d.closed(3, &mut Out::collect(&mut out));
    assert!(budget.used() < held);
    drop(d);
    assert_eq!(
        budget.used(),
        0,
        "dropping the decoder gives everything back"
    );

    let empty = crate::limits::Budget::new(0);
    let mut d = decoder_of_minor(SPF_ABI_MINOR, empty.clone());
    out.clear();
    d.decode(&event(1, 1, b"x"), &mut Out::collect(&mut out));
    d.decode(&event(2, 2, b"x"), &mut Out::collect(&mut out));
    out.clear();
    d.closed(1, &mut Out::collect(&mut out));
    let Record::Decoded(r) = &out[0] else {
        panic!()
    };
    assert_eq!((r.event.conn, r.event.pid), (1, 0), "only the id is left");
    assert_eq!(empty.used(), 0);
}
