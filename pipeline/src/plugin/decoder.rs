//! A decoder plugin behind the [`Decoder`] trait.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use spf_plugin::{
    SPF_DIR_RECV, SPF_DIR_SEND, SPF_ERROR, SPF_OK, SPF_SOCK_DGRAM, SPF_SOCK_SEQPACKET,
    SPF_SOCK_STREAM, SpfBytes, SpfDecoderOut, SpfDecoderVtable, SpfEventView,
};

use super::{PluginInfo, init_instance, last_error};
use crate::config::BuildError;
use crate::event::{Direction, Event, SockKind};
use crate::record::Record;
use crate::stage::{Decoder, Out};

/// Error code of records that stand for a failed plugin call.
pub const PLUGIN_ERROR: &str = "PLUGIN_ERROR";
/// Error code of records a plugin emitted in a shape spf cannot use.
pub const PLUGIN_OUTPUT: &str = "PLUGIN_OUTPUT";
/// Error code of the one record that says a plugin was switched off.
pub const PLUGIN_DISABLED: &str = "PLUGIN_DISABLED";

/// NDJSON fields that spf writes itself; a plugin's record may not set them.
const RESERVED: &[&str] = &[
    "ts_ns",
    "time",
    "pid",
    "tid",
    "comm",
    "peer_pid",
    "peer_comm",
    "path",
    "sock",
    "dir",
    "conn",
    "socket",
    "peer_socket",
    "role",
    "pos",
    "skip",
    "len",
    "captured",
    "truncated",
    "via",
    "cgroup",
    "node",
    "view",
    "decoder",
    "exchange",
    "error",
    "data_b64",
    "text",
    "lost",
];

pub struct PluginDecoder {
    info: PluginInfo,
    label: String,
    name: Arc<str>,
    vt: &'static SpfDecoderVtable,
    instance: *mut c_void,
    max_errors: u64,
    failures_in_a_row: u64,
    disabled: bool,
    /// The latest event, and the last event of every other connection seen, so
    /// that records a plugin emits when a connection closes carry that
    /// connection's metadata. The map is touched only when the connection changes
    /// from one event to the next, not on every event.
    last: Option<Arc<Event>>,
    earlier: FxHashMap<u64, Arc<Event>>,
}

// SAFETY: the ABI lets successive calls on one instance come from different
// threads, only never two at once, which `&mut self` on every call guarantees.
unsafe impl Send for PluginDecoder {}

impl PluginDecoder {
    /// Creates an instance: `config` is the JSON object handed to the plugin's
    /// `init`; `max_errors` failed calls in a row switch it off (0: never).
    pub(crate) fn new(
        info: PluginInfo,
        vt: &'static SpfDecoderVtable,
        config: &str,
        max_errors: u64,
    ) -> Result<Self, BuildError> {
        let label = info.label();
        let instance = init_instance(&label, vt.init, vt.last_error, config)?;
        Ok(PluginDecoder {
            name: Arc::from(info.name.as_str()),
            label,
            info,
            vt,
            instance,
            max_errors,
            failures_in_a_row: 0,
            disabled: false,
            last: None,
            earlier: FxHashMap::default(),
        })
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Calls into the plugin with a fresh output context; turns a failure into an
    /// error record on `event` and counts it.
    fn call(
        &mut self,
        event: &Arc<Event>,
        out: &mut Out<'_>,
        f: impl FnOnce(*mut c_void, *const SpfDecoderOut) -> i32,
    ) {
        let mut ctx = Ctx {
            event,
            decoder: &self.name,
            label: &self.label,
            out,
            rejected: false,
        };
        let callbacks = SpfDecoderOut {
            ctx: (&raw mut ctx).cast(),
            record: on_record,
            error: on_error,
        };
        let rc = f(self.instance, &callbacks);
        let rejected = ctx.rejected;
        if rc == SPF_OK {
            // Output spf had to reject is already an error record; it still counts
            // towards switching off a plugin that does nothing else.
            if rejected {
                self.failed(event, out);
            } else {
                self.failures_in_a_row = 0;
            }
            return;
        }
        // SAFETY: the instance is live; its message is copied at once.
        let msg = unsafe { last_error(self.vt.last_error, self.instance) };
        let what = if rc == spf_plugin::SPF_PANIC {
            "panicked"
        } else {
            "failed"
        };
        let detail = if msg.is_empty() {
            format!("error code {rc}")
        } else {
            msg
        };
        out.push(Record::error(
            event.clone(),
            self.name.clone(),
            Some(PLUGIN_ERROR.into()),
            format!("{} {what}: {detail}", self.label),
        ));
        self.failed(event, out);
    }

    /// Counts a failed call; switches the plugin off after `max_errors` in a row.
    fn failed(&mut self, event: &Arc<Event>, out: &mut Out<'_>) {
        self.failures_in_a_row += 1;
        if self.max_errors > 0 && self.failures_in_a_row >= self.max_errors {
            self.disabled = true;
            out.push(Record::error(
                event.clone(),
                self.name.clone(),
                Some(PLUGIN_DISABLED.into()),
                format!(
                    "{} failed {} calls in a row and is disabled for the rest of this run; later events are not decoded (raise or zero `max_errors` in its config to change this)",
                    self.label, self.failures_in_a_row
                ),
            ));
        }
    }

    /// The event that records of a call without one (lost, closed, finish) are
    /// attached to.
    fn anchor(&mut self, conn: Option<u64>) -> Arc<Event> {
        match conn {
            Some(c) => {
                let earlier = self.earlier.remove(&c);
                match (&self.last, earlier) {
                    (Some(l), _) if l.conn == c => identity(l),
                    (_, Some(e)) => identity(&e),
                    _ => Arc::new(Event {
                        conn: c,
                        ..unknown()
                    }),
                }
            }
            None => self.last.clone().unwrap_or_else(|| Arc::new(unknown())),
        }
    }
}

/// Connections whose last event is kept for their close records. Past this many
/// (a source that never reports closes) what is kept is dropped and close records
/// carry only the connection id. Kept events hold no bytes.
const MAX_REMEMBERED: usize = 1024;

/// An event's metadata without its bytes: what a record about the connection (not
/// about some bytes of it) is attached to.
fn identity(e: &Event) -> Arc<Event> {
    Arc::new(Event {
        len: 0,
        data: bytes::Bytes::new(),
        truncated: false,
        ..e.clone()
    })
}

fn unknown() -> Event {
    Event::default()
}

impl Drop for PluginDecoder {
    fn drop(&mut self) {
        if let Some(destroy) = self.vt.destroy {
            // SAFETY: made by init, destroyed once.
            unsafe { destroy(self.instance) };
        }
    }
}

impl Decoder for PluginDecoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn decode(&mut self, event: &Arc<Event>, out: &mut Out<'_>) {
        if self.disabled {
            return;
        }
        if let Some(prev) = self.last.replace(event.clone())
            && prev.conn != event.conn
        {
            if self.earlier.len() >= MAX_REMEMBERED {
                self.earlier.clear();
            }
            // Only the metadata: records about a connection need no bytes, and
            // keeping whole events would hold up to MAX_REMEMBERED snaplens.
            self.earlier.insert(prev.conn, identity(&prev));
        }
        let view = SpfEventView {
            seq: event.seq,
            ts_ns: event.ts_ns,
            time_ns: event.time_ns,
            conn: event.conn,
            socket: event.socket,
            len: event.len,
            pid: event.pid,
            tid: event.tid,
            peer_pid: event.peer_pid,
            dir: match event.dir {
                Direction::Send => SPF_DIR_SEND,
                Direction::Recv => SPF_DIR_RECV,
            },
            sock: match event.sock {
                SockKind::Stream => SPF_SOCK_STREAM,
                SockKind::Dgram => SPF_SOCK_DGRAM,
                SockKind::Seqpacket => SPF_SOCK_SEQPACKET,
            },
            truncated: u32::from(event.truncated),
            comm: SpfBytes::from_slice(event.comm.as_bytes()),
            path: SpfBytes::from_slice(event.path.as_bytes()),
            data: SpfBytes::from_slice(&event.data),
        };
        let Some(decode) = self.vt.decode else { return };
        // SAFETY: the view borrows `event`, which outlives the call.
        self.call(event, out, |inst, cb| unsafe { decode(inst, &view, cb) });
    }

    fn lost(&mut self, count: u64, out: &mut Out<'_>) {
        let Some(lost) = self.vt.lost.filter(|_| !self.disabled) else {
            return;
        };
        let anchor = self.anchor(None);
        // SAFETY: the callbacks live for the call.
        self.call(&anchor, out, |inst, cb| unsafe { lost(inst, count, cb) });
    }

    fn closed(&mut self, conn: u64, out: &mut Out<'_>) {
        let anchor = self.anchor(Some(conn));
        let Some(closed) = self.vt.closed.filter(|_| !self.disabled) else {
            return;
        };
        // SAFETY: the callbacks live for the call.
        self.call(&anchor, out, |inst, cb| unsafe { closed(inst, conn, cb) });
    }

    fn finish(&mut self, out: &mut Out<'_>) {
        let Some(finish) = self.vt.finish.filter(|_| !self.disabled) else {
            return;
        };
        let anchor = self.anchor(None);
        // SAFETY: the callbacks live for the call.
        self.call(&anchor, out, |inst, cb| unsafe { finish(inst, cb) });
    }
}

/// What the output callbacks see through their `ctx` pointer.
struct Ctx<'a, 'b> {
    event: &'a Arc<Event>,
    decoder: &'a Arc<str>,
    label: &'a str,
    out: &'a mut Out<'b>,
    /// Some output of this call was rejected.
    rejected: bool,
}

impl Ctx<'_, '_> {
    fn reject(&mut self, message: String) -> i32 {
        self.rejected = true;
        self.out.push(Record::error(
            self.event.clone(),
            self.decoder.clone(),
            Some(PLUGIN_OUTPUT.into()),
            format!("{} {message}", self.label),
        ));
        SPF_ERROR
    }
}

/// # Safety
/// `ptr` must point to `len` readable bytes (or `len` be 0).
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    // SAFETY: forwarded from the caller.
    unsafe { SpfBytes { ptr, len }.as_slice() }
}

unsafe extern "C" fn on_record(
    ctx: *mut c_void,
    json: *const u8,
    json_len: usize,
    text: *const u8,
    text_len: usize,
) -> i32 {
    // Unwinding out of an extern "C" function aborts: keep any panic here.
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ctx is the `Ctx` of the call in progress; the plugin lends both
        // buffers for this call, and they are copied before returning.
        let (ctx, json, text) = unsafe { (&mut *ctx.cast::<Ctx<'_, '_>>(), bytes(json, json_len), bytes(text, text_len)) };
        let map = match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(json) {
            Ok(m) => m,
            Err(e) => {
                // Say what was wrong: valid JSON of another shape, or no JSON.
                return match serde_json::from_slice::<serde_json::Value>(json) {
                    Ok(other) => ctx.reject(format!(
                        "emitted a record that is not a JSON object but {}",
                        json_kind(&other)
                    )),
                    Err(_) => ctx.reject(format!("emitted a record that is not valid JSON: {e}")),
                };
            }
        };
        if let Some(k) = map.keys().find(|k| RESERVED.contains(&k.as_str())) {
            return ctx.reject(format!(
                "emitted a record with field `{k}`, which spf sets itself; put the plugin's fields under one key named after it"
            ));
        }
        let text = match std::str::from_utf8(text) {
            Ok(t) => t.to_owned(),
            Err(_) => String::from_utf8_lossy(text).into_owned(),
        };
        ctx.out.push(Record::fields(ctx.event.clone(), ctx.decoder.clone(), map, text));
        SPF_OK
    }))
    .unwrap_or(SPF_ERROR)
}

unsafe extern "C" fn on_error(
    ctx: *mut c_void,
    code: *const u8,
    code_len: usize,
    message: *const u8,
    message_len: usize,
) -> i32 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `on_record`.
        let (ctx, code, message) = unsafe {
            (
                &mut *ctx.cast::<Ctx<'_, '_>>(),
                bytes(code, code_len),
                bytes(message, message_len),
            )
        };
        let code = (!code.is_empty()).then(|| String::from_utf8_lossy(code).into_owned());
        ctx.out.push(Record::error(
            ctx.event.clone(),
            ctx.decoder.clone(),
            code,
            String::from_utf8_lossy(message).into_owned(),
        ));
        SPF_OK
    }))
    .unwrap_or(SPF_ERROR)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
