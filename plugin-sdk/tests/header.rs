//! Keeps include/spf_plugin.h identical to the Rust definitions: every constant,
//! struct size, field offset and callback signature of the Rust side is written as
//! a C11 `_Static_assert` and compiled against the header. The signatures are
//! asserted on both sides (Rust by type ascription, C by `_Generic`), so a change
//! on either side without the other fails here.

use std::ffi::c_void;
use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use spf_plugin::*;

macro_rules! offsets {
    ($out:ident, $ty:ident: $($field:ident),+ $(,)?) => {{
        writeln!($out, "_Static_assert(sizeof({}) == {}, \"size of {}\");",
            stringify!($ty), size_of::<$ty>(), stringify!($ty)).unwrap();
        $(
            writeln!($out, "_Static_assert(offsetof({}, {}) == {}, \"offset of {}.{}\");",
                stringify!($ty), stringify!($field), offset_of!($ty, $field),
                stringify!($ty), stringify!($field)).unwrap();
        )+
    }};
}

macro_rules! signature {
    ($out:ident, $ty:ident . $field:ident : $rust:ty => $c:literal) => {{
        // The Rust half: fails to compile when the field's type changes.
        let _check = |v: &$ty| -> $rust { v.$field };
        writeln!(
            $out,
            "_Static_assert(_Generic(((const {ty} *)0)->{f}, {c}: 1, default: 0), \"type of {ty}.{f}\");",
            ty = stringify!($ty),
            f = stringify!($field),
            c = $c
        )
        .unwrap();
    }};
}

macro_rules! constant {
    ($out:ident, $name:ident) => {{
        writeln!(
            $out,
            "_Static_assert({n} == {v}, \"value of {n}\");",
            n = stringify!($name),
            v = $name
        )
        .unwrap();
    }};
}

fn assertions() -> String {
    let mut c =
        String::from("#include <stddef.h>\n#include <stdint.h>\n#include \"spf_plugin.h\"\n");
    constant!(c, SPF_PLUGIN_MAGIC);
    constant!(c, SPF_ABI_MAJOR);
    constant!(c, SPF_ABI_MINOR);
    constant!(c, SPF_KIND_DECODER);
    constant!(c, SPF_KIND_SINK);
    constant!(c, SPF_OK);
    constant!(c, SPF_ERROR);
    constant!(c, SPF_PANIC);
    constant!(c, SPF_DIR_SEND);
    constant!(c, SPF_DIR_RECV);
    constant!(c, SPF_SOCK_STREAM);
    constant!(c, SPF_SOCK_DGRAM);
    constant!(c, SPF_SOCK_SEQPACKET);
    constant!(c, SPF_ROLE_UNKNOWN);
    constant!(c, SPF_ROLE_CLIENT);
    constant!(c, SPF_ROLE_SERVER);
    constant!(c, SPF_VIA_NONE);
    constant!(c, SPF_VIA_SEND);
    constant!(c, SPF_VIA_RECV);

    offsets!(c, SpfBytes: ptr, len);
    offsets!(c, SpfEventView: seq, ts_ns, time_ns, conn, socket, len, pid, tid, peer_pid, dir, sock, truncated, comm, path, data,
        side, role, via, has_pos, pos, peer_socket, cgroup, peer_comm, node);
    offsets!(c, SpfDecoderOut: ctx, record, error, exchange);
    offsets!(c, SpfDecoderVtable: init, decode, lost, closed, finish, last_error, destroy, detect);
    offsets!(c, SpfSinkVtable: init, write, flush, last_error, destroy);
    offsets!(c, SpfPluginDeclaration: magic, abi_major, abi_minor, kind, name, version, decoder, sink,
        declaration_size, event_view_size, decoder_out_size, decoder_vtable_size, sink_vtable_size);

    signature!(c, SpfBytes.ptr: *const u8 => "const uint8_t *");
    signature!(c, SpfBytes.len: usize => "size_t");
    signature!(c, SpfEventView.seq: u64 => "uint64_t");
    signature!(c, SpfEventView.ts_ns: u64 => "uint64_t");
    signature!(c, SpfEventView.time_ns: u64 => "uint64_t");
    signature!(c, SpfEventView.conn: u64 => "uint64_t");
    signature!(c, SpfEventView.socket: u64 => "uint64_t");
    signature!(c, SpfEventView.len: u64 => "uint64_t");
    signature!(c, SpfEventView.pid: u32 => "uint32_t");
    signature!(c, SpfEventView.tid: u32 => "uint32_t");
    signature!(c, SpfEventView.peer_pid: u32 => "uint32_t");
    signature!(c, SpfEventView.dir: u32 => "uint32_t");
    signature!(c, SpfEventView.sock: u32 => "uint32_t");
    signature!(c, SpfEventView.truncated: u32 => "uint32_t");
    signature!(c, SpfEventView.comm: SpfBytes => "SpfBytes");
    signature!(c, SpfEventView.path: SpfBytes => "SpfBytes");
    signature!(c, SpfEventView.data: SpfBytes => "SpfBytes");
    signature!(c, SpfEventView.side: u32 => "uint32_t");
    signature!(c, SpfEventView.role: u32 => "uint32_t");
    signature!(c, SpfEventView.via: u32 => "uint32_t");
    signature!(c, SpfEventView.has_pos: u32 => "uint32_t");
    signature!(c, SpfEventView.pos: u64 => "uint64_t");
    signature!(c, SpfEventView.peer_socket: u64 => "uint64_t");
    signature!(c, SpfEventView.cgroup: u64 => "uint64_t");
    signature!(c, SpfEventView.peer_comm: SpfBytes => "SpfBytes");
    signature!(c, SpfEventView.node: SpfBytes => "SpfBytes");

    signature!(c, SpfDecoderOut.ctx: *mut c_void => "void *");
    signature!(c, SpfDecoderOut.record:
        unsafe extern "C" fn(*mut c_void, *const u8, usize, *const u8, usize) -> i32
        => "int32_t (*)(void *, const uint8_t *, size_t, const uint8_t *, size_t)");
    signature!(c, SpfDecoderOut.error:
        unsafe extern "C" fn(*mut c_void, *const u8, usize, *const u8, usize) -> i32
        => "int32_t (*)(void *, const uint8_t *, size_t, const uint8_t *, size_t)");
    signature!(c, SpfDecoderOut.exchange:
        unsafe extern "C" fn(*mut c_void, *const u8, usize) -> i32
        => "int32_t (*)(void *, const uint8_t *, size_t)");

    type Init = Option<unsafe extern "C" fn(*const u8, usize, *mut *mut c_void) -> i32>;
    type LastError = Option<unsafe extern "C" fn(*mut c_void, *mut usize) -> *const u8>;
    type Destroy = Option<unsafe extern "C" fn(*mut c_void)>;
    const INIT_C: &str = "int32_t (*)(const uint8_t *, size_t, void **)";
    const LAST_ERROR_C: &str = "const uint8_t *(*)(void *, size_t *)";
    const DESTROY_C: &str = "void (*)(void *)";

    // `literal` is required by the macro, so these three go through format!.
    let _check =
        |v: &SpfDecoderVtable| -> (Init, LastError, Destroy) { (v.init, v.last_error, v.destroy) };
    let _check =
        |v: &SpfSinkVtable| -> (Init, LastError, Destroy) { (v.init, v.last_error, v.destroy) };
    for ty in ["SpfDecoderVtable", "SpfSinkVtable"] {
        for (f, sig) in [
            ("init", INIT_C),
            ("last_error", LAST_ERROR_C),
            ("destroy", DESTROY_C),
        ] {
            writeln!(
                c,
                "_Static_assert(_Generic(((const {ty} *)0)->{f}, {sig}: 1, default: 0), \"type of {ty}.{f}\");"
            )
            .unwrap();
        }
    }
    signature!(c, SpfDecoderVtable.decode:
        Option<unsafe extern "C" fn(*mut c_void, *const SpfEventView, *const SpfDecoderOut) -> i32>
        => "int32_t (*)(void *, const SpfEventView *, const SpfDecoderOut *)");
    signature!(c, SpfDecoderVtable.lost:
        Option<unsafe extern "C" fn(*mut c_void, u64, *const SpfDecoderOut) -> i32>
        => "int32_t (*)(void *, uint64_t, const SpfDecoderOut *)");
    signature!(c, SpfDecoderVtable.closed:
        Option<unsafe extern "C" fn(*mut c_void, u64, *const SpfDecoderOut) -> i32>
        => "int32_t (*)(void *, uint64_t, const SpfDecoderOut *)");
    signature!(c, SpfDecoderVtable.finish:
        Option<unsafe extern "C" fn(*mut c_void, *const SpfDecoderOut) -> i32>
        => "int32_t (*)(void *, const SpfDecoderOut *)");
    signature!(c, SpfDecoderVtable.detect:
        Option<unsafe extern "C" fn(*mut c_void, *const u8, usize, *const SpfEventView) -> u32>
        => "uint32_t (*)(void *, const uint8_t *, size_t, const SpfEventView *)");
    signature!(c, SpfSinkVtable.write:
        Option<unsafe extern "C" fn(*mut c_void, *const u8, usize) -> i32>
        => "int32_t (*)(void *, const uint8_t *, size_t)");
    signature!(c, SpfSinkVtable.flush:
        Option<unsafe extern "C" fn(*mut c_void) -> i32>
        => "int32_t (*)(void *)");

    // The table the host compares against names real types with their C sizes.
    for (ty, size) in SpfPluginDeclaration::SIZES {
        writeln!(
            c,
            "_Static_assert(sizeof({ty}) == {size}, \"SIZES entry of {ty}\");"
        )
        .unwrap();
    }

    signature!(c, SpfPluginDeclaration.magic: u32 => "uint32_t");
    signature!(c, SpfPluginDeclaration.abi_major: u32 => "uint32_t");
    signature!(c, SpfPluginDeclaration.abi_minor: u32 => "uint32_t");
    signature!(c, SpfPluginDeclaration.kind: u32 => "uint32_t");
    signature!(c, SpfPluginDeclaration.name: *const std::ffi::c_char => "const char *");
    signature!(c, SpfPluginDeclaration.version: *const std::ffi::c_char => "const char *");
    signature!(c, SpfPluginDeclaration.decoder: *const SpfDecoderVtable => "const SpfDecoderVtable *");
    signature!(c, SpfPluginDeclaration.sink: *const SpfSinkVtable => "const SpfSinkVtable *");
    signature!(c, SpfPluginDeclaration.declaration_size: u32 => "uint32_t");
    signature!(c, SpfPluginDeclaration.event_view_size: u32 => "uint32_t");
    signature!(c, SpfPluginDeclaration.decoder_out_size: u32 => "uint32_t");
    signature!(c, SpfPluginDeclaration.decoder_vtable_size: u32 => "uint32_t");
    signature!(c, SpfPluginDeclaration.sink_vtable_size: u32 => "uint32_t");
    c
}

fn compile(tag: &str, source: &str) -> std::process::Output {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let dir = std::env::temp_dir().join(format!("spf-plugin-header-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("check.c");
    std::fs::write(&file, source).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsyntax-only",
            "-I",
        ])
        .arg(&include)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}` (install gcc): {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn header_matches_rust_definitions() {
    let source = assertions();
    let out = compile("match", &source);
    assert!(
        out.status.success(),
        "include/spf_plugin.h disagrees with src/lib.rs:\n{}\n--- generated checks ---\n{source}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The check itself must be able to fail: a deliberately wrong offset is refused.
#[test]
fn header_check_detects_drift() {
    let mut source = assertions();
    source.push_str(&format!(
        "_Static_assert(offsetof(SpfEventView, data) == {}, \"drift\");\n",
        offset_of!(SpfEventView, data) + 8
    ));
    let out = compile("drift", &source);
    assert!(!out.status.success(), "a wrong offset compiled");
    assert!(String::from_utf8_lossy(&out.stderr).contains("drift"));
}

struct Nothing;

impl DecoderPlugin for Nothing {
    fn init(_config: &str) -> Result<Self, Error> {
        Ok(Nothing)
    }

    fn decode(&mut self, _event: &Event<'_>, _out: &mut DecoderOutput<'_>) -> Result<(), Error> {
        Ok(())
    }
}

spf_plugin::export_decoder!("nothing", Nothing);

/// The export macro fills in the sizes the host checks, from this SDK's layout.
#[test]
fn export_macro_declares_this_sdks_struct_sizes() {
    let declared = spf_plugin_declaration.sizes();
    let ours = SpfPluginDeclaration::SIZES.map(|(_, size)| size);
    assert_eq!(declared, ours);
    assert_eq!(
        declared[1] as usize,
        size_of::<SpfEventView>(),
        "event view size"
    );
    assert_eq!(
        declared[0] as usize,
        size_of::<SpfPluginDeclaration>(),
        "declaration size"
    );
}
