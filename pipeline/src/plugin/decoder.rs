//! A decoder plugin behind the [`Decoder`] trait.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use spf_plugin::{
    SPF_DIR_RECV, SPF_DIR_SEND, SPF_ERROR, SPF_OK, SPF_ROLE_CLIENT, SPF_ROLE_SERVER,
    SPF_ROLE_UNKNOWN, SPF_SOCK_DGRAM, SPF_SOCK_SEQPACKET, SPF_SOCK_STREAM, SPF_VIA_NONE,
    SPF_VIA_RECV, SPF_VIA_SEND, SpfBytes, SpfDecoderOut, SpfDecoderVtable, SpfEventView,
};

use super::output::{Emit, PLUGIN_DISABLED, PLUGIN_ERROR};
use super::{PluginInfo, init_instance, last_error};
use crate::config::BuildError;
use crate::event::{Direction, Event, Role, SockKind};
use crate::limits::Budget;
use crate::record::Record;
use crate::stage::{Decoder, Out};

pub struct PluginDecoder {
    info: PluginInfo,
    label: String,
    name: Arc<str>,
    vt: &'static SpfDecoderVtable,
    instance: *mut c_void,
    max_errors: u64,
    failures_in_a_row: u64,
    disabled: bool,
    anchors: Anchors,
}

/// The latest event, and the metadata of the last event of every other
/// connection seen, so that records a plugin emits when a connection closes
/// carry that connection's metadata. The map is touched only when the
/// connection changes from one event to the next, not on every event.
pub(crate) struct Anchors {
    last: Option<Arc<Event>>,
    earlier: FxHashMap<u64, Arc<Event>>,
    /// The run's memory budget: what `earlier` holds is taken from it.
    budget: Arc<Budget>,
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
        budget: Arc<Budget>,
    ) -> Result<Self, BuildError> {
        let label = info.label();
        let instance = init_instance(&label, vt.init, vt.last_error, config)?;
        Ok(PluginDecoder {
            anchors: Anchors::new(budget),
            name: Arc::from(info.name.as_str()),
            label,
            info,
            vt,
            instance,
            max_errors,
            failures_in_a_row: 0,
            disabled: false,
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
        let mut ctx = Emit {
            event,
            decoder: &self.name,
            label: &self.label,
            out,
            rejected: false,
        };
        // Minor 0 plugins read only the callbacks their layout has; the rest of
        // the struct is there for newer ones.
        let callbacks = SpfDecoderOut {
            ctx: (&raw mut ctx).cast(),
            record: on_record,
            error: on_error,
            exchange: on_exchange,
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
}

impl Anchors {
    pub fn new(budget: Arc<Budget>) -> Self {
        Anchors {
            last: None,
            earlier: FxHashMap::default(),
            budget,
        }
    }

    /// Notes `event` as the latest.
    pub fn seen(&mut self, event: &Arc<Event>) {
        if let Some(prev) = self.last.replace(event.clone())
            && prev.conn != event.conn
        {
            self.remember(&prev);
        }
    }

    /// Forgets everything (the input ended).
    pub fn clear(&mut self) {
        self.last = None;
        self.forget_all();
    }

    /// The event that records of a call without one (lost, closed, finish) are
    /// attached to.
    pub fn anchor(&mut self, conn: Option<u64>) -> Arc<Event> {
        match conn {
            Some(c) => {
                let earlier = self.forget(c);
                match (&self.last, earlier) {
                    (Some(l), _) if l.conn == c => identity(l),
                    (_, Some(e)) => e,
                    _ => Arc::new(Event {
                        conn: c,
                        ..Event::default()
                    }),
                }
            }
            None => self
                .last
                .clone()
                .unwrap_or_else(|| Arc::new(Event::default())),
        }
    }

    /// Keeps `prev`'s metadata for records about its connection, within the
    /// memory budget: past it (or past [`MAX_REMEMBERED`]) close records carry
    /// only the connection id.
    fn remember(&mut self, prev: &Event) {
        if self.earlier.len() >= MAX_REMEMBERED {
            self.forget_all();
        }
        if self.earlier.contains_key(&prev.conn) {
            // Replaced below: its share of the budget stays taken.
        } else if !self.budget.try_take(REMEMBERED_COST) {
            return;
        }
        // Only the metadata: records about a connection need no bytes.
        self.earlier.insert(prev.conn, identity(prev));
    }

    fn forget(&mut self, conn: u64) -> Option<Arc<Event>> {
        let e = self.earlier.remove(&conn)?;
        self.budget.give(REMEMBERED_COST);
        Some(e)
    }

    fn forget_all(&mut self) {
        self.budget.give(self.earlier.len() * REMEMBERED_COST);
        self.earlier.clear();
    }
}

impl Drop for Anchors {
    fn drop(&mut self) {
        self.forget_all();
    }
}

/// Connections whose last event is kept for their close records. Past this many
/// (a source that never reports closes) what is kept is dropped and close records
/// carry only the connection id. Kept events hold no bytes.
const MAX_REMEMBERED: usize = 1024;

/// What one remembered connection costs the memory budget: the event's
/// metadata and its slot in the map (its strings are shared with the source).
const REMEMBERED_COST: usize = size_of::<Event>() + 2 * size_of::<usize>() + 32;

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

/// The view of `event` lent to a plugin, with `data` as its bytes (the event's
/// own for `decode`; the first bytes of a connection for `detect`). Minor 0
/// plugins read its first part only, which is the 1.0 layout.
pub(crate) fn event_view(event: &Event, data: &[u8]) -> SpfEventView {
    SpfEventView {
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
        data: SpfBytes::from_slice(data),
        side: event.stream_key().side as u32,
        role: match event.role {
            Role::Unknown => SPF_ROLE_UNKNOWN,
            Role::Client => SPF_ROLE_CLIENT,
            Role::Server => SPF_ROLE_SERVER,
        },
        via: match event.via {
            None => SPF_VIA_NONE,
            Some(Direction::Send) => SPF_VIA_SEND,
            Some(Direction::Recv) => SPF_VIA_RECV,
        },
        has_pos: u32::from(event.pos.is_some()),
        pos: event.pos.unwrap_or(0),
        peer_socket: event.peer_socket,
        cgroup: event.cgroup,
        peer_comm: SpfBytes::from_slice(event.peer_comm.as_bytes()),
        node: SpfBytes::from_slice(event.node.as_bytes()),
    }
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
        self.anchors.seen(event);
        let view = event_view(event, &event.data);
        let Some(decode) = self.vt.decode else { return };
        // SAFETY: the view borrows `event`, which outlives the call.
        self.call(event, out, |inst, cb| unsafe { decode(inst, &view, cb) });
    }

    fn lost(&mut self, count: u64, out: &mut Out<'_>) {
        let Some(lost) = self.vt.lost.filter(|_| !self.disabled) else {
            return;
        };
        let anchor = self.anchors.anchor(None);
        // SAFETY: the callbacks live for the call.
        self.call(&anchor, out, |inst, cb| unsafe { lost(inst, count, cb) });
    }

    fn closed(&mut self, conn: u64, out: &mut Out<'_>) {
        let anchor = self.anchors.anchor(Some(conn));
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
        let anchor = self.anchors.anchor(None);
        // SAFETY: the callbacks live for the call.
        self.call(&anchor, out, |inst, cb| unsafe { finish(inst, cb) });
        self.anchors.clear();
    }

    fn detect(&mut self, data: &[u8], event: &Event) -> u8 {
        let Some(detect) = self.vt.detect.filter(|_| !self.disabled) else {
            return 0;
        };
        let view = event_view(event, data);
        // A panic is caught by the SDK's shim; C plugins must not unwind.
        // SAFETY: the view and the bytes are lent for the call.
        let sure = unsafe { detect(self.instance, data.as_ptr(), data.len(), &view) };
        sure.min(100) as u8
    }
}

/// # Safety
/// `ptr` must point to `len` readable bytes (or `len` be 0).
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    // SAFETY: forwarded from the caller.
    unsafe { SpfBytes { ptr, len }.as_slice() }
}

/// Runs a callback on the call's [`Emit`]; a panic (unwinding out of an extern
/// "C" function would abort) becomes a rejection.
///
/// # Safety
/// `ctx` is the `Emit` of the call in progress.
unsafe fn with_emit(ctx: *mut c_void, f: impl FnOnce(&mut Emit<'_, '_>) -> bool) -> i32 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded from the caller; only one callback runs at a time.
        let emit = unsafe { &mut *ctx.cast::<Emit<'_, '_>>() };
        if f(emit) { SPF_OK } else { SPF_ERROR }
    }))
    .unwrap_or(SPF_ERROR)
}

unsafe extern "C" fn on_record(
    ctx: *mut c_void,
    json: *const u8,
    json_len: usize,
    text: *const u8,
    text_len: usize,
) -> i32 {
    // SAFETY: the plugin lends both buffers for this call; they are copied
    // before returning.
    unsafe {
        with_emit(ctx, |e| {
            e.record(bytes(json, json_len), bytes(text, text_len))
        })
    }
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
        with_emit(ctx, |e| {
            e.error(bytes(code, code_len), bytes(message, message_len))
        })
    }
}

unsafe extern "C" fn on_exchange(ctx: *mut c_void, json: *const u8, json_len: usize) -> i32 {
    // SAFETY: as in `on_record`.
    unsafe { with_emit(ctx, |e| e.exchange(bytes(json, json_len))) }
}
