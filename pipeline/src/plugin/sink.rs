//! A sink plugin behind the [`Sink`] trait.

use std::ffi::c_void;

use spf_plugin::{SPF_OK, SPF_PANIC, SpfSinkVtable};

use super::{PluginInfo, init_instance, last_error};
use crate::config::BuildError;
use crate::record::Record;
use crate::stage::{Sink, SinkError, SinkReport};

pub struct PluginSink {
    info: PluginInfo,
    label: String,
    vt: &'static SpfSinkVtable,
    instance: *mut c_void,
    line: Vec<u8>,
    max_errors: u64,
    failures_in_a_row: u64,
    failures: u64,
    disabled: bool,
    events: bool,
}

// SAFETY: as for the decoder: calls on one instance never overlap (`&mut self`).
unsafe impl Send for PluginSink {}

impl PluginSink {
    pub(crate) fn new(
        info: PluginInfo,
        vt: &'static SpfSinkVtable,
        config: &str,
        max_errors: u64,
        events: bool,
    ) -> Result<Self, BuildError> {
        let label = info.label();
        let instance = init_instance(&label, vt.init, vt.last_error, config)?;
        Ok(PluginSink {
            info,
            label,
            vt,
            instance,
            line: Vec::with_capacity(1024),
            max_errors,
            failures_in_a_row: 0,
            failures: 0,
            disabled: false,
            events,
        })
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Failed calls so far (each also reported on stderr).
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// A failing sink plugin must not stop the run (a `SinkError` would), so its
    /// failures are reported on stderr and counted instead, until it is switched off.
    fn outcome(&mut self, what: &str, rc: i32) {
        if rc == SPF_OK {
            self.failures_in_a_row = 0;
            return;
        }
        self.failures += 1;
        self.failures_in_a_row += 1;
        // SAFETY: the instance is live; its message is copied at once.
        let msg = unsafe { last_error(self.vt.last_error, self.instance) };
        let verb = if rc == SPF_PANIC {
            "panicked"
        } else {
            "failed"
        };
        crate::diag!("spf: {} {verb} in {what}: {msg}", self.label);
        if self.max_errors > 0 && self.failures_in_a_row >= self.max_errors {
            self.disabled = true;
            crate::diag!(
                "spf: {} failed {} calls in a row and is disabled for the rest of this run; the other sinks go on (raise or zero `max_errors` in its config to change this)",
                self.label,
                self.failures_in_a_row
            );
        }
    }
}

impl Drop for PluginSink {
    fn drop(&mut self) {
        if let Some(destroy) = self.vt.destroy {
            // SAFETY: made by init, destroyed once.
            unsafe { destroy(self.instance) };
        }
    }
}

impl Sink for PluginSink {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn wants_events(&self) -> bool {
        self.events
    }

    fn write(&mut self, record: &Record) -> Result<(), SinkError> {
        if self.disabled {
            return Ok(());
        }
        let Some(write) = self.vt.write else {
            return Ok(());
        };
        self.line.clear();
        crate::ndjson::encode(record, &mut self.line);
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
        }
        // SAFETY: the line is lent for the call.
        let rc = unsafe { write(self.instance, self.line.as_ptr(), self.line.len()) };
        self.outcome("write", rc);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.disabled {
            return Ok(());
        }
        let Some(flush) = self.vt.flush else {
            return Ok(());
        };
        // SAFETY: the instance is live.
        let rc = unsafe { flush(self.instance) };
        self.outcome("flush", rc);
        Ok(())
    }

    fn report(&mut self) -> SinkReport {
        failed_calls_report(&self.label, self.failures)
    }
}

/// A sink plugin's failed calls, said again in the run's summary: each was
/// reported on stderr as it happened, but a run that ends with "errors 0"
/// after them reads as a good one (and what the plugin wrote may be empty).
pub(crate) fn failed_calls_report(label: &str, failures: u64) -> SinkReport {
    SinkReport {
        undelivered: 0,
        note: (failures > 0).then(|| {
            format!(
                "{label}: {failures} failed call{} (see above)",
                if failures == 1 { "" } else { "s" }
            )
        }),
    }
}
