//! The plugin host: decoders and sinks loaded at run time from shared libraries.
//!
//! ```toml
//! [decoder]
//! type = "plugin"
//! path = "/usr/local/lib/spf/libspf_resp.so"   # absolute
//! max_errors = 100                             # optional, host key
//! max_message = 1048576                        # every other key goes to the plugin
//! ```
//!
//! ```toml
//! [[sink]]
//! type = "plugin"
//! path = "/usr/local/lib/spf/libspf_conn_summary.so"
//! events = true        # optional, host key: also receive every event as a raw record
//! output = "/var/log/spf/connections.json"
//! ```
//!
//! The ABI lives in the `spf-plugin` crate. Loading happens while the config is
//! read, so `spf validate` refuses a bad plugin exactly like `spf run` does; `init`
//! runs when the pipeline is built.
//!
//! Faults stay inside: a decoder call that fails or panics costs that event (an
//! error record with code `PLUGIN_ERROR` naming the plugin), a sink call that fails
//! is reported on stderr, and `max_errors` failed calls in a row (default 100; 0 for
//! no limit) switch the plugin off for the rest of the run.

mod abi;
mod decoder;
mod elf;
pub mod isolate;
mod load;
mod output;
mod sink;

use std::ffi::c_void;
use std::path::Path;

pub use abi::sizes_of_minor;
pub use decoder::PluginDecoder;
pub use elf::{DECLARATION_SYMBOL, ElfProblem, check as check_elf_data};
pub use load::{Kind, LoadError, Loaded, PluginInfo, check, check_elf, load};
pub use output::{PLUGIN_DISABLED, PLUGIN_ERROR, PLUGIN_OUTPUT};
pub use sink::PluginSink;

use crate::config::{BuildContext, BuildError, DecoderConfig, Registry, Section, SinkConfig};
use crate::stage::{Decoder, Sink};
use load::Vtable;

/// The plugin ABI this spf speaks (major, minor).
pub const HOST_ABI: (u32, u32) = (spf_plugin::SPF_ABI_MAJOR, spf_plugin::SPF_ABI_MINOR);

/// The size of each struct that crosses the plugin boundary in this spf, by its C
/// name; a plugin must declare the same ones.
pub const HOST_STRUCT_SIZES: [(&str, u32); 5] = spf_plugin::SpfPluginDeclaration::SIZES;

/// Failed calls in a row after which a plugin is switched off.
pub const DEFAULT_MAX_ERRORS: u64 = 100;

/// Keys of a plugin's section that spf reads itself rather than handing on.
const HOST_KEYS: &[&str] = &[
    "path",
    "max_errors",
    "events",
    "isolate",
    "deadline_ms",
    "max_restarts",
];

/// Registers `type = "plugin"` for decoders and sinks.
pub fn register(r: &mut Registry) {
    r.decoder("plugin", decoder_factory);
    r.sink("plugin", sink_factory);
}

/// A `[decoder] type = "plugin"` section, loaded and handshaken.
#[derive(Debug)]
pub struct PluginDecoderConfig {
    pub info: PluginInfo,
    vt: &'static spf_plugin::SpfDecoderVtable,
    /// The plugin's own keys as a JSON object.
    pub config: String,
    pub max_errors: u64,
}

impl PluginDecoderConfig {
    /// Loads the decoder plugin at `path` (for tools and benchmarks that build a
    /// decoder without a config file).
    pub fn open(
        path: &Path,
        config: &serde_json::Value,
        max_errors: u64,
    ) -> Result<Self, LoadError> {
        let loaded = load(path, Some(Kind::Decoder))?;
        let Vtable::Decoder(vt) = loaded.vtable else {
            unreachable!("load checked the kind")
        };
        Ok(PluginDecoderConfig {
            info: loaded.info,
            vt,
            config: config.to_string(),
            max_errors,
        })
    }

    pub fn build_plugin(&self, ctx: &BuildContext) -> Result<PluginDecoder, BuildError> {
        PluginDecoder::new(
            self.info.clone(),
            self.vt,
            &self.config,
            self.max_errors,
            ctx.budget.clone(),
        )
    }
}

impl DecoderConfig for PluginDecoderConfig {
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Decoder>, BuildError> {
        Ok(Box::new(self.build_plugin(ctx)?))
    }
}

/// A `[[sink]] type = "plugin"` section, loaded and handshaken.
#[derive(Debug)]
pub struct PluginSinkConfig {
    pub info: PluginInfo,
    vt: &'static spf_plugin::SpfSinkVtable,
    pub config: String,
    pub max_errors: u64,
    /// `events = true`: also receive every event as a raw record.
    pub events: bool,
}

impl PluginSinkConfig {
    pub fn open(
        path: &Path,
        config: &serde_json::Value,
        max_errors: u64,
        events: bool,
    ) -> Result<Self, LoadError> {
        let loaded = load(path, Some(Kind::Sink))?;
        let Vtable::Sink(vt) = loaded.vtable else {
            unreachable!("load checked the kind")
        };
        Ok(PluginSinkConfig {
            info: loaded.info,
            vt,
            config: config.to_string(),
            max_errors,
            events,
        })
    }

    pub fn build_plugin(&self) -> Result<PluginSink, BuildError> {
        PluginSink::new(
            self.info.clone(),
            self.vt,
            &self.config,
            self.max_errors,
            self.events,
        )
    }
}

impl SinkConfig for PluginSinkConfig {
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Sink>, BuildError> {
        Ok(Box::new(self.build_plugin()?))
    }
}

fn decoder_factory(s: &mut Section<'_>) -> Option<Box<dyn DecoderConfig>> {
    let section = read_section(s, Kind::Decoder)?;
    if section.events {
        s.error(
            "events",
            "only a [[sink]] plugin takes `events`; a decoder sees every event anyway",
        );
        return None;
    }
    match section.plugin {
        Plugin::Isolated(info, opts) => Some(Box::new(IsolatedDecoderConfig {
            info,
            opts,
            config: section.config,
            max_errors: section.max_errors,
        })),
        Plugin::Loaded(loaded) => match loaded.vtable {
            Vtable::Decoder(vt) => Some(Box::new(PluginDecoderConfig {
                info: loaded.info,
                vt,
                config: section.config,
                max_errors: section.max_errors,
            })),
            Vtable::Sink(_) => None,
        },
    }
}

fn sink_factory(s: &mut Section<'_>) -> Option<Box<dyn SinkConfig>> {
    let section = read_section(s, Kind::Sink)?;
    match section.plugin {
        Plugin::Isolated(info, opts) => Some(Box::new(IsolatedSinkConfig {
            info,
            opts,
            config: section.config,
            max_errors: section.max_errors,
            events: section.events,
        })),
        Plugin::Loaded(loaded) => match loaded.vtable {
            Vtable::Sink(vt) => Some(Box::new(PluginSinkConfig {
                info: loaded.info,
                vt,
                config: section.config,
                max_errors: section.max_errors,
                events: section.events,
            })),
            Vtable::Decoder(_) => None,
        },
    }
}

/// A `[decoder] type = "plugin"` section with `isolate = true`, handshaken in a
/// plugin host.
#[derive(Debug)]
pub struct IsolatedDecoderConfig {
    pub info: PluginInfo,
    pub opts: isolate::IsolateOptions,
    pub config: String,
    pub max_errors: u64,
}

impl IsolatedDecoderConfig {
    /// Checks the decoder plugin at `path` in a plugin host (for tools and
    /// benchmarks that build a decoder without a config file).
    pub fn open(
        path: &Path,
        config: &serde_json::Value,
        max_errors: u64,
        opts: isolate::IsolateOptions,
    ) -> Result<Self, String> {
        let info = isolate::check(path, Kind::Decoder, &opts)?;
        Ok(IsolatedDecoderConfig {
            info,
            opts,
            config: config.to_string(),
            max_errors,
        })
    }

    pub fn build_plugin(&self, ctx: &BuildContext) -> Result<isolate::IsolatedDecoder, BuildError> {
        isolate::IsolatedDecoder::new(
            self.info.clone(),
            &self.config,
            self.max_errors,
            self.opts.clone(),
            ctx.budget.clone(),
        )
    }
}

impl DecoderConfig for IsolatedDecoderConfig {
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Decoder>, BuildError> {
        Ok(Box::new(self.build_plugin(ctx)?))
    }

    fn extra_syscalls(&self) -> Vec<libc::c_long> {
        isolate::supervisor_syscalls()
    }
}

/// A `[[sink]] type = "plugin"` section with `isolate = true`.
#[derive(Debug)]
pub struct IsolatedSinkConfig {
    pub info: PluginInfo,
    pub opts: isolate::IsolateOptions,
    pub config: String,
    pub max_errors: u64,
    pub events: bool,
}

impl SinkConfig for IsolatedSinkConfig {
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Sink>, BuildError> {
        Ok(Box::new(isolate::IsolatedSink::new(
            self.info.clone(),
            &self.config,
            self.max_errors,
            self.events,
            self.opts.clone(),
        )?))
    }

    fn extra_syscalls(&self) -> Vec<libc::c_long> {
        isolate::supervisor_syscalls()
    }
}

/// A plugin section, split into the host's keys and the plugin's.
struct PluginSection {
    plugin: Plugin,
    /// The plugin's own keys as a JSON object.
    config: String,
    max_errors: u64,
    events: bool,
}

enum Plugin {
    /// Loaded into spf.
    Loaded(Loaded),
    /// Checked in a plugin host; runs in one.
    Isolated(PluginInfo, isolate::IsolateOptions),
}

/// Reads an optional non-negative integer host key.
fn host_u64(
    s: &mut Section<'_>,
    map: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    what: &str,
) -> Result<Option<u64>, ()> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) => Ok(Some(n)),
            None => {
                s.error(key, format!("expected a non-negative integer: {what}"));
                Err(())
            }
        },
    }
}

/// Splits a plugin section into the host's keys and the plugin's, and loads the
/// library (or, isolated, checks it in a plugin host). Every problem becomes a
/// config error positioned at its key.
fn read_section(s: &mut Section<'_>, kind: Kind) -> Option<PluginSection> {
    let mut json = s.to_json()?;
    let serde_json::Value::Object(map) = &mut json else {
        s.error("", "expected a table");
        return None;
    };
    let path = match map.get("path") {
        None => {
            s.error(
                "",
                format!(
                    "missing `path`: set path = the absolute path of the {kind} plugin's shared library (lib<name>.so)"
                ),
            );
            return None;
        }
        Some(serde_json::Value::String(p)) => p.clone(),
        Some(_) => {
            s.error(
                "path",
                "expected a string: the absolute path of the plugin's shared library",
            );
            return None;
        }
    };
    let max_errors = host_u64(
        s,
        map,
        "max_errors",
        "failed calls in a row before the plugin is switched off (0: never)",
    )
    .ok()?
    .unwrap_or(DEFAULT_MAX_ERRORS);
    let mut flag = |key: &str, what: &str| match map.get(key) {
        None => Some(false),
        Some(serde_json::Value::Bool(b)) => Some(*b),
        Some(_) => {
            s.error(key, format!("expected true or false: {what}"));
            None
        }
    };
    let events = flag(
        "events",
        "whether the sink also receives every event as a raw record",
    )?;
    let isolated = flag(
        "isolate",
        "whether the plugin runs in a process of its own, unprivileged and sandboxed",
    )?;
    let mut opts = isolate::IsolateOptions::default();
    if let Some(ms) = host_u64(
        s,
        map,
        "deadline_ms",
        "milliseconds an isolated plugin may take for one call before it is restarted",
    )
    .ok()?
    {
        opts.deadline = std::time::Duration::from_millis(ms.max(1));
    }
    if let Some(n) = host_u64(
        s,
        map,
        "max_restarts",
        "restarts of an isolated plugin allowed within a minute",
    )
    .ok()?
    {
        opts.max_restarts = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if !isolated {
        for key in ["deadline_ms", "max_restarts"] {
            if map.contains_key(key) {
                s.error(
                    key,
                    "only an isolated plugin (isolate = true) takes this key",
                );
                return None;
            }
        }
    }
    for k in HOST_KEYS {
        map.remove(*k);
    }
    let config = json.to_string();
    let plugin = if isolated {
        let path = Path::new(&path);
        if !path.is_absolute() {
            s.error(
                "path",
                LoadError::NotAbsolute(path.to_path_buf()).to_string(),
            );
            return None;
        }
        match isolate::check(path, kind, &opts) {
            Ok(info) => Plugin::Isolated(info, opts),
            Err(e) => {
                s.error("path", e);
                return None;
            }
        }
    } else {
        match load(Path::new(&path), Some(kind)) {
            Ok(loaded) => Plugin::Loaded(loaded),
            Err(e) => {
                s.error("path", e.to_string());
                return None;
            }
        }
    };
    Some(PluginSection {
        plugin,
        config,
        max_errors,
        events,
    })
}

/// Copies the plugin's last error message.
///
/// # Safety
/// `instance` must be null (after a failed `init`) or a live instance of the
/// plugin that `f` belongs to.
pub(crate) unsafe fn last_error(
    f: Option<unsafe extern "C" fn(*mut c_void, *mut usize) -> *const u8>,
    instance: *mut c_void,
) -> String {
    let Some(f) = f else { return String::new() };
    let mut len = 0usize;
    // SAFETY: forwarded from the caller; the message is copied before any further
    // call into the plugin.
    unsafe {
        let p = f(instance, &mut len);
        String::from_utf8_lossy(spf_plugin::SpfBytes { ptr: p, len }.as_slice()).into_owned()
    }
}

/// The signature of a plugin's `init`, the same for decoders and sinks.
pub(crate) type InitFn = unsafe extern "C" fn(*const u8, usize, *mut *mut c_void) -> i32;

/// Calls a plugin's `init` with its JSON config and returns the new instance, or the
/// plugin's own error message.
pub(crate) fn init_instance(
    label: &str,
    init: Option<InitFn>,
    last_err: Option<unsafe extern "C" fn(*mut c_void, *mut usize) -> *const u8>,
    config: &str,
) -> Result<*mut c_void, BuildError> {
    let init = init.ok_or_else(|| BuildError::new(format!("{label}: no init function")))?;
    let mut instance: *mut c_void = std::ptr::null_mut();
    // SAFETY: config is lent for the call; `instance` is a valid out-pointer.
    let rc = unsafe { init(config.as_ptr(), config.len(), &mut instance) };
    if rc != spf_plugin::SPF_OK || instance.is_null() {
        // SAFETY: last_error(NULL) reports the failed init on this thread.
        let msg = unsafe { last_error(last_err, std::ptr::null_mut()) };
        return Err(BuildError::in_config(format!(
            "{label}: init failed: {}; check the plugin's keys in the config",
            if msg.is_empty() {
                format!("error code {rc}")
            } else {
                msg
            }
        )));
    }
    Ok(instance)
}

#[cfg(test)]
mod tests;
