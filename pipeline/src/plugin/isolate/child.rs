//! The isolated plugin's process: spf started again as `spf plugin-host`. It
//! drops its privileges, loads the plugin from the descriptor spf handed it,
//! locks itself down with seccomp and then serves calls read from its standard
//! input, answering on its standard output, until the input ends.

use std::ffi::c_void;
use std::path::Path;

use spf_plugin::{SPF_OK, SpfDecoderOut};

use super::frame::{self, Reader, Writer};
use super::sandbox;
use crate::plugin::load::{Kind, Vtable, load};

/// The argument that makes a process a plugin host.
pub const HOST_ARG: &str = "plugin-host";
/// The descriptor the plugin's library arrives on.
pub const LIBRARY_FD: i32 = 3;

const IN: i32 = 0;
const OUT: i32 = 1;

/// Runs the plugin host when this process was started as one (`argv[1]` is
/// [`HOST_ARG`]), and returns its exit code; `None` otherwise. Call it first
/// thing in `main` of any program that spawns isolated plugins.
pub fn host_main() -> Option<i32> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(HOST_ARG) {
        return None;
    }
    let (mut kind, mut user) = (None, String::from("nobody"));
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kind" => kind = args.next().as_deref().and_then(Kind::parse),
            "--user" => user = args.next().unwrap_or_default(),
            _ => {}
        }
    }
    let Some(kind) = kind else {
        crate::diag!("spf {HOST_ARG}: started without --kind; spf starts this itself");
        return Some(2);
    };
    Some(match serve(kind, &user) {
        Ok(()) => 0,
        Err(e) => {
            crate::diag!("spf {HOST_ARG}: {e}");
            1
        }
    })
}

/// Writes everything to fd `OUT`.
fn write_all(mut b: &[u8]) -> Result<(), String> {
    while !b.is_empty() {
        // SAFETY: writes from a live buffer.
        let n = unsafe { libc::write(OUT, b.as_ptr().cast(), b.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("writing to spf: {e}"));
        }
        b = &b[n as usize..];
    }
    Ok(())
}

/// Frames read from fd `IN`.
struct Input {
    buf: Vec<u8>,
    start: usize,
}

impl Input {
    /// The next whole frame as (kind, payload range in `buf`), flushing `out`
    /// before blocking for more input; `None` at the end of the input.
    fn next(&mut self, out: &mut Vec<u8>) -> Result<Option<(u8, std::ops::Range<usize>)>, String> {
        loop {
            match frame::split(&self.buf[self.start..], frame::MAX_TO_CHILD) {
                Ok(Some((kind, payload, used))) => {
                    let at = self.start;
                    self.start += used;
                    return Ok(Some((kind, at + payload.start..at + payload.end)));
                }
                Ok(None) => {}
                Err(len) => return Err(format!("spf sent a frame of {len} bytes")),
            }
            // About to wait for spf: everything answered so far goes out first.
            write_all(out)?;
            out.clear();
            self.buf.drain(..self.start);
            self.start = 0;
            let have = self.buf.len();
            self.buf.resize(have + (256 << 10), 0);
            // SAFETY: reads into the spare part of a live buffer.
            let n = unsafe { libc::read(IN, self.buf[have..].as_mut_ptr().cast(), 256 << 10) };
            if n < 0 {
                self.buf.truncate(have);
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("reading from spf: {e}"));
            }
            self.buf.truncate(have + n as usize);
            if n == 0 {
                return Ok(None);
            }
        }
    }
}

fn hello_refused(out: &mut Vec<u8>, message: &str) -> Result<(), String> {
    let mut w = Writer::begin(out, frame::HELLO);
    w.u8(0).bytes(message.as_bytes());
    w.end();
    write_all(out)
}

fn serve(kind: Kind, user: &str) -> Result<(), String> {
    // Nothing of spf's but the pipes and the library reaches the plugin.
    // SAFETY: closes descriptors this process does not use.
    unsafe { libc::syscall(libc::SYS_close_range, LIBRARY_FD + 1, u32::MAX, 0) };
    let mut out = Vec::with_capacity(64 << 10);
    if let Err(e) = sandbox::drop_privileges(user) {
        return hello_refused(&mut out, &e);
    }
    let lib = format!("/proc/self/fd/{LIBRARY_FD}");
    let loaded = match load(Path::new(&lib), Some(kind)) {
        Ok(l) => l,
        Err(e) => return hello_refused(&mut out, &e.to_string()),
    };
    let info = &loaded.info;
    let mut w = Writer::begin(&mut out, frame::HELLO);
    w.u8(1)
        .u32(info.abi_major)
        .u32(info.abi_minor)
        .bytes(info.name.as_bytes())
        .bytes(info.version.as_bytes());
    w.end();
    // The library stays mapped; its descriptor is of no further use.
    // SAFETY: closing a descriptor this process owns.
    unsafe { libc::close(LIBRARY_FD) };
    let filter = sandbox::filter(IN, OUT)?;
    let mut input = Input {
        buf: Vec::with_capacity(512 << 10),
        start: 0,
    };
    // Reads and buffers allocate before the filter: the first read happens
    // with the HELLO going out.
    sandbox::apply(&filter)?;
    let Some((k, config)) = input.next(&mut out)? else {
        return Ok(());
    };
    if k != frame::INIT {
        return Err("spf did not start with INIT".into());
    }
    let config = Reader::new(&input.buf[config])
        .bytes()
        .map_err(|e| e.to_string())?
        .to_vec();
    match loaded.vtable {
        Vtable::Decoder(vt) => {
            let (init, last_error) = (vt.init, vt.last_error);
            let Some(inst) = init_call(init, last_error, &config, &mut out) else {
                return finish_input(&mut input, &mut out);
            };
            serve_decoder(vt, inst, &mut input, &mut out)
        }
        Vtable::Sink(vt) => {
            let Some(inst) = init_call(vt.init, vt.last_error, &config, &mut out) else {
                return finish_input(&mut input, &mut out);
            };
            serve_sink(vt, inst, &mut input, &mut out)
        }
    }
}

/// After a failed init: waits for spf to close the input.
fn finish_input(input: &mut Input, out: &mut Vec<u8>) -> Result<(), String> {
    while input.next(out)?.is_some() {}
    Ok(())
}

type LastErrorFn = Option<unsafe extern "C" fn(*mut c_void, *mut usize) -> *const u8>;

fn done(out: &mut Vec<u8>, rc: i32, value: u32, last_error: LastErrorFn, inst: *mut c_void) {
    let msg = if rc == SPF_OK {
        String::new()
    } else {
        // SAFETY: `inst` is null after a failed init, else live.
        unsafe { crate::plugin::last_error(last_error, inst) }
    };
    let mut w = Writer::begin(out, frame::DONE);
    w.i32(rc).u32(value).bytes(msg.as_bytes());
    w.end();
}

fn init_call(
    init: Option<crate::plugin::InitFn>,
    last_error: LastErrorFn,
    config: &[u8],
    out: &mut Vec<u8>,
) -> Option<*mut c_void> {
    let Some(init) = init else {
        done(out, spf_plugin::SPF_ERROR, 0, None, std::ptr::null_mut());
        return None;
    };
    let mut inst: *mut c_void = std::ptr::null_mut();
    // SAFETY: the config is lent for the call; `inst` is a valid out-pointer.
    let rc = unsafe { init(config.as_ptr(), config.len(), &mut inst) };
    let rc = if rc == SPF_OK && inst.is_null() {
        spf_plugin::SPF_ERROR
    } else {
        rc
    };
    done(out, rc, 0, last_error, std::ptr::null_mut());
    (rc == SPF_OK).then_some(inst)
}

unsafe extern "C" fn on_record(
    ctx: *mut c_void,
    json: *const u8,
    json_len: usize,
    text: *const u8,
    text_len: usize,
) -> i32 {
    // SAFETY: ctx is the output buffer of the call in progress; the plugin lends
    // both buffers for the call.
    unsafe {
        let out = &mut *ctx.cast::<Vec<u8>>();
        let mut w = Writer::begin(out, frame::RECORD);
        w.bytes(bytes(json, json_len)).bytes(bytes(text, text_len));
        w.end();
    }
    SPF_OK
}

unsafe extern "C" fn on_error(
    ctx: *mut c_void,
    code: *const u8,
    code_len: usize,
    message: *const u8,
    message_len: usize,
) -> i32 {
    // SAFETY: as in `on_record`.
    unsafe {
        let out = &mut *ctx.cast::<Vec<u8>>();
        let mut w = Writer::begin(out, frame::ERROR);
        w.bytes(bytes(code, code_len))
            .bytes(bytes(message, message_len));
        w.end();
    }
    SPF_OK
}

unsafe extern "C" fn on_exchange(ctx: *mut c_void, json: *const u8, json_len: usize) -> i32 {
    // SAFETY: as in `on_record`.
    unsafe {
        let out = &mut *ctx.cast::<Vec<u8>>();
        let mut w = Writer::begin(out, frame::EXCHANGE);
        w.bytes(bytes(json, json_len));
        w.end();
    }
    SPF_OK
}

/// # Safety
/// `ptr` must point to `len` readable bytes (or `len` be 0).
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    // SAFETY: forwarded from the caller.
    unsafe { spf_plugin::SpfBytes { ptr, len }.as_slice() }
}

fn serve_decoder(
    vt: &spf_plugin::SpfDecoderVtable,
    inst: *mut c_void,
    input: &mut Input,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    while let Some((k, payload)) = input.next(out)? {
        // The plugin's records go straight into the output buffer; the
        // callbacks struct points at it for this call only.
        let cb = SpfDecoderOut {
            ctx: (out as *mut Vec<u8>).cast(),
            record: on_record,
            error: on_error,
            exchange: on_exchange,
        };
        let mut r = Reader::new(&input.buf[payload]);
        let mut value = 0;
        // SAFETY (every call): the instance is live, the view points into the
        // frame being served and the callbacks into `out`, all for the call.
        let rc = match k {
            frame::DECODE => {
                let view = r.view().map_err(|e| e.to_string())?;
                match vt.decode {
                    Some(f) => unsafe { f(inst, &view, &cb) },
                    None => SPF_OK,
                }
            }
            frame::DETECT => {
                let view = r.view().map_err(|e| e.to_string())?;
                if let Some(f) = vt.detect {
                    // SAFETY: as above.
                    let data = unsafe { view.data.as_slice() };
                    value = unsafe { f(inst, data.as_ptr(), data.len(), &view) };
                }
                SPF_OK
            }
            frame::LOST => {
                let n = r.u64().map_err(|e| e.to_string())?;
                match vt.lost {
                    Some(f) => unsafe { f(inst, n, &cb) },
                    None => SPF_OK,
                }
            }
            frame::CLOSED => {
                let conn = r.u64().map_err(|e| e.to_string())?;
                match vt.closed {
                    Some(f) => unsafe { f(inst, conn, &cb) },
                    None => SPF_OK,
                }
            }
            frame::FINISH => match vt.finish {
                Some(f) => unsafe { f(inst, &cb) },
                None => SPF_OK,
            },
            other => return Err(format!("a decoder got a frame of type {other}")),
        };
        done(out, rc, value, vt.last_error, inst);
        answer(out)?;
    }
    if let Some(destroy) = vt.destroy {
        // SAFETY: made by init, destroyed once.
        unsafe { destroy(inst) };
    }
    write_all(out)
}

/// Sends a call's answer before the next call starts: should the plugin die
/// on that one, spf has every answer before it and knows which call it died
/// on.
fn answer(out: &mut Vec<u8>) -> Result<(), String> {
    write_all(out)?;
    out.clear();
    Ok(())
}

fn serve_sink(
    vt: &spf_plugin::SpfSinkVtable,
    inst: *mut c_void,
    input: &mut Input,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    while let Some((k, payload)) = input.next(out)? {
        let mut r = Reader::new(&input.buf[payload]);
        // SAFETY (every call): the instance is live; the line is lent for it.
        let rc = match k {
            frame::WRITE => {
                let line = r.bytes().map_err(|e| e.to_string())?;
                match vt.write {
                    Some(f) => unsafe { f(inst, line.as_ptr(), line.len()) },
                    None => SPF_OK,
                }
            }
            frame::FLUSH => match vt.flush {
                Some(f) => unsafe { f(inst) },
                None => SPF_OK,
            },
            other => return Err(format!("a sink got a frame of type {other}")),
        };
        done(out, rc, 0, vt.last_error, inst);
        answer(out)?;
    }
    if let Some(destroy) = vt.destroy {
        // SAFETY: made by init, destroyed once.
        unsafe { destroy(inst) };
    }
    write_all(out)
}
