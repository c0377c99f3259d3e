//! Config: TOML in, runtime stages out.
//!
//! Like Vector, each component kind has a config type that builds the runtime
//! object. Unlike a plain `toml::from_str`, every error in the file is collected and
//! reported at once, each with its key path and line:column, because fixing a config
//! one error per run is miserable.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::event::View;
pub use crate::limits::{BuildContext, Limits};
use crate::stage::{Decoder, Sink, Source};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the config came from (a file name, or `command line`).
    pub origin: String,
    /// 1-based; 0 when the error has no position (e.g. a missing section).
    pub line: usize,
    pub column: usize,
    /// Key path such as `sink[1].format`; empty for syntax errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every error found in one config, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A failure while turning a valid config into running stages (opening a file,
/// loading a BPF program, ...). One line that says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct BuildError {
    msg: String,
    /// The config's values were refused (a plugin's `init` turned its keys
    /// down), rather than the machine (a file, the kernel): a config error
    /// like those found while reading it.
    pub in_config: bool,
}

impl BuildError {
    pub fn new(msg: impl Into<String>) -> Self {
        BuildError {
            msg: msg.into(),
            in_config: false,
        }
    }

    /// A failure caused by the config's values.
    pub fn in_config(msg: impl Into<String>) -> Self {
        BuildError {
            msg: msg.into(),
            in_config: true,
        }
    }
}

pub trait SourceConfig: Send + Sync + fmt::Debug {
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Source>, BuildError>;
    /// The file the source reads, if any: a sink must not write to it.
    fn input_path(&self) -> Option<&Path> {
        None
    }
    /// True when building needs root (the BPF probe), so `spf` can say so early.
    fn needs_root(&self) -> bool {
        false
    }
    /// See [`SinkConfig::extra_syscalls`].
    fn extra_syscalls(&self) -> Vec<libc::c_long> {
        Vec::new()
    }
    /// What the source captures (its filter), in a few words for outputs that
    /// record it; empty when there is nothing to say.
    fn describe(&self) -> String {
        String::new()
    }
}

pub trait DecoderConfig: Send + Sync + fmt::Debug {
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Decoder>, BuildError>;
    /// See [`SinkConfig::extra_syscalls`].
    fn extra_syscalls(&self) -> Vec<libc::c_long> {
        Vec::new()
    }
}

pub trait SinkConfig: Send + Sync + fmt::Debug {
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Sink>, BuildError>;
    /// The file the sink writes, if any: no other sink, and not the source, may
    /// use the same file.
    fn output_path(&self) -> Option<&Path> {
        None
    }
    /// System calls (`libc::SYS_*`) the built component makes while the pipeline
    /// runs, beyond the set spf allows every pipeline once it has dropped its
    /// privileges (reading and writing open descriptors, memory, threads, time,
    /// opening files; no sockets). A sink that connects to a server, for example,
    /// lists `SYS_socket` and `SYS_connect` here. Anything not allowed fails with
    /// EPERM. Setup done in `build` is not restricted: it runs before the drop.
    fn extra_syscalls(&self) -> Vec<libc::c_long> {
        Vec::new()
    }
}

/// Reads one component's table (without its `type` key) into its config type.
pub type Factory<T> = fn(&mut Section<'_>) -> Option<Box<T>>;

/// The component types a config may name, by kind, and which decoder and sink a
/// config gets when it names none.
#[derive(Default)]
pub struct Registry {
    sources: BTreeMap<&'static str, Factory<dyn SourceConfig>>,
    decoders: BTreeMap<&'static str, Factory<dyn DecoderConfig>>,
    sinks: BTreeMap<&'static str, Factory<dyn SinkConfig>>,
    default_decoder: Option<&'static str>,
    default_sink: Option<&'static str>,
}

impl Registry {
    /// A registry with the components this crate provides (the `file` source and
    /// the `plugin` decoder and sink).
    pub fn new() -> Self {
        let mut r = Registry::default();
        crate::file_source::register(&mut r);
        crate::plugin::register(&mut r);
        r
    }

    pub fn source(&mut self, name: &'static str, f: Factory<dyn SourceConfig>) -> &mut Self {
        self.sources.insert(name, f);
        self
    }

    pub fn decoder(&mut self, name: &'static str, f: Factory<dyn DecoderConfig>) -> &mut Self {
        self.decoders.insert(name, f);
        self
    }

    pub fn sink(&mut self, name: &'static str, f: Factory<dyn SinkConfig>) -> &mut Self {
        self.sinks.insert(name, f);
        self
    }

    /// The decoder of a config without a `[decoder]` section.
    pub fn default_decoder(&mut self, name: &'static str) -> &mut Self {
        self.default_decoder = Some(name);
        self
    }

    /// The sink of a config without a `[[sink]]`.
    pub fn default_sink(&mut self, name: &'static str) -> &mut Self {
        self.default_sink = Some(name);
        self
    }

    pub fn source_types(&self) -> Vec<&'static str> {
        self.sources.keys().copied().collect()
    }

    pub fn decoder_types(&self) -> Vec<&'static str> {
        self.decoders.keys().copied().collect()
    }

    pub fn sink_types(&self) -> Vec<&'static str> {
        self.sinks.keys().copied().collect()
    }
}

/// Longest `[reorder] window_ms`.
const MAX_WINDOW_MS: u64 = 60_000;

/// `[reorder]`: how long to wait for late events before handing events on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReorderConfig {
    /// Kernel-time window in milliseconds; 0 passes events through as they come.
    pub window_ms: u64,
    /// Hard cap on buffered events; past it the oldest are handed on early.
    pub max_events: usize,
    /// Hard cap on buffered payload bytes, for the same reason: with large
    /// payloads an event count alone would not bound memory.
    pub max_bytes: usize,
}

impl Default for ReorderConfig {
    fn default() -> Self {
        ReorderConfig {
            window_ms: 20,
            max_events: 65_536,
            max_bytes: 64 << 20,
        }
    }
}

/// `[run]`: how the process itself runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The user spf switches to once the pipeline is built, when it starts as
    /// root; `root` keeps root. `None`: [`crate::account::DEFAULT_USER`].
    pub user: Option<String>,
    /// Stop after this many records (`-c N`), as tcpdump's `-c`.
    pub count: Option<u64>,
    /// Only this connection (`--follow CONN`): its events, both directions.
    pub conn: Option<u64>,
}

impl RunConfig {
    /// The user to switch to: the one named, or the default.
    pub fn user_name(&self) -> &str {
        self.user.as_deref().unwrap_or(crate::account::DEFAULT_USER)
    }
}

/// A whole, validated config.
#[derive(Debug)]
pub struct Config {
    pub source: Box<dyn SourceConfig>,
    pub source_type: String,
    /// `[source] view`: syscalls as they happened, or connections (the default).
    pub view: View,
    pub reorder: ReorderConfig,
    pub limits: Limits,
    pub run: RunConfig,
    pub decoder: Box<dyn DecoderConfig>,
    pub decoder_type: String,
    pub sinks: Vec<Box<dyn SinkConfig>>,
}

impl Config {
    /// Every system call the components declared beyond the common set (see
    /// [`SinkConfig::extra_syscalls`]), sorted, without repeats.
    pub fn extra_syscalls(&self) -> Vec<libc::c_long> {
        let mut all = self.source.extra_syscalls();
        all.extend(self.decoder.extra_syscalls());
        for s in &self.sinks {
            all.extend(s.extra_syscalls());
        }
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// One component's table, handed to its factory.
pub struct Section<'a> {
    key: String,
    value: Spanned<DeValue<'a>>,
    span: std::ops::Range<usize>,
    errors: Errors<'a>,
}

impl Section<'_> {
    /// The key path of this section, e.g. `sink[1]`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Deserializes the section into `T`, recording every error with its position.
    pub fn parse<T: DeserializeOwned>(&mut self) -> Option<T> {
        parse_collect(&self.value, &self.key, &mut self.errors)
    }

    /// The section as JSON (how plugins receive their config).
    pub fn to_json(&mut self) -> Option<serde_json::Value> {
        self.parse::<serde_json::Value>()
    }

    /// Records an error about `field` of this section (or the section itself when
    /// `field` is empty), positioned at that field's value when it exists.
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        let (key, span) = match self.value.get_ref().as_table().and_then(|t| t.get(field)) {
            Some(v) if !field.is_empty() => (format!("{}.{}", self.key, field), v.span()),
            _ if field.is_empty() => (self.key.clone(), self.span.clone()),
            _ => (format!("{}.{}", self.key, field), self.span.clone()),
        };
        self.errors.push(span.start, key, message.into());
    }

    /// Removes a key from the section before parsing, returning its string value
    /// (used for keys that select what to parse, like a plugin's `path`).
    pub fn take_str(&mut self, field: &str) -> Option<Result<String, ()>> {
        let table = match self.value.get_mut() {
            DeValue::Table(t) => t,
            _ => return None,
        };
        let v = table.remove(field)?;
        match v.get_ref().as_str() {
            Some(s) => Some(Ok(s.to_string())),
            None => {
                let found = v.get_ref().type_str();
                self.errors.push(
                    v.span().start,
                    format!("{}.{}", self.key, field),
                    format!("expected a string, found {found}"),
                );
                Some(Err(()))
            }
        }
    }
}

struct Errors<'a> {
    origin: String,
    text: &'a str,
    list: Vec<(usize, ConfigError)>,
}

impl Errors<'_> {
    fn push(&mut self, offset: usize, key: String, message: String) {
        let (line, column) = line_col(self.text, offset);
        self.list.push((
            offset,
            ConfigError {
                origin: self.origin.clone(),
                line,
                column,
                key,
                message,
            },
        ));
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

const TOP_KEYS: &[&str] = &["source", "reorder", "limits", "decoder", "sink", "run"];

/// Largest config file read. Real configs are a few KiB; the limit keeps a wrong
/// path (a device, a huge file) from taking the machine's memory.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a config file.
pub fn load_file(registry: &Registry, path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = read_config(path).map_err(|message| {
        ConfigErrors(vec![ConfigError {
            origin: origin.clone(),
            line: 0,
            column: 0,
            key: String::new(),
            message,
        }])
    })?;
    parse(registry, &origin, &text)
}

/// The text of a config file: a regular file or a FIFO (`-c <(...)`), at most
/// [`MAX_CONFIG_BYTES`], UTF-8. The type is checked on the opened file, before
/// anything is read from it.
fn read_config(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    use std::os::unix::fs::FileTypeExt as _;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read config: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read config: {e}"))?;
    let ft = meta.file_type();
    if !(ft.is_file() || ft.is_fifo()) {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(format!(
            "cannot read config: it is {what}; give a regular file or a FIFO"
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read config: {e}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "cannot read config: it is larger than {} MiB",
            MAX_CONFIG_BYTES >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "cannot read config: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Parses and validates a config text. `origin` names it in error messages.
pub fn parse(registry: &Registry, origin: &str, text: &str) -> Result<Config, ConfigErrors> {
    // The recoverable parser reports every syntax error, not just the first.
    let (root, syntax) = DeTable::parse_recoverable(text);
    let mut errors = Errors {
        origin: origin.to_string(),
        text,
        list: Vec::new(),
    };
    for e in syntax {
        let at = e.span().map_or(0, |s| s.start);
        let mut message = e.message().to_string();
        // The parser's message does not say which key; its span does.
        if message == "duplicate key"
            && let Some(key) = e.span().and_then(|s| text.get(s))
            && !key.contains('\n')
        {
            message = format!("duplicate key `{}`", key.trim());
        }
        errors.push(at, String::new(), message);
    }
    if !errors.list.is_empty() {
        return Err(finish(errors));
    }
    let root_span = root.span();
    let root = root.into_inner();

    for (k, v) in root.iter() {
        if !TOP_KEYS.contains(&k.get_ref().as_ref()) {
            errors.push(
                k.span().start.min(v.span().start),
                k.get_ref().to_string(),
                format!("unknown section, expected one of: {}", TOP_KEYS.join(", ")),
            );
        }
    }

    let mut view = Some(View::default());
    let source = match root.get("source") {
        None => {
            errors.push(
                root_span.start,
                "source".into(),
                format!(
                    "missing [source] section; add one with type = one of: {}",
                    registry.source_types().join(", ")
                ),
            );
            None
        }
        Some(v) => {
            // `view` belongs to the pipeline, not to the source type: every
            // source's events can be seen either way.
            let (v, parsed) = take_view(&mut errors, v);
            view = parsed;
            component(&mut errors, "source", &v, &registry.sources, "source")
        }
    };

    let reorder = match root.get("reorder") {
        None => Some(ReorderConfig::default()),
        Some(v) => parse_collect::<ReorderConfig>(v, "reorder", &mut errors).filter(|r| {
            let mut ok = true;
            if r.window_ms > MAX_WINDOW_MS {
                errors.push(
                    key_at(v, "window_ms"),
                    "reorder.window_ms".into(),
                    format!(
                        "at most {MAX_WINDOW_MS} (a minute): every event is held that long before it is shown"
                    ),
                );
                ok = false;
            }
            for (key, n) in [("max_events", r.max_events), ("max_bytes", r.max_bytes)] {
                if n == 0 {
                    errors.push(
                        key_at(v, key),
                        format!("reorder.{key}"),
                        "must be at least 1 (to hand events on as they come, set window_ms = 0)"
                            .into(),
                    );
                    ok = false;
                }
            }
            ok
        }),
    };

    let limits = match root.get("limits") {
        None => Some(Limits::default()),
        Some(v) => parse_collect::<Limits>(v, "limits", &mut errors).filter(|l| {
            let mut ok = true;
            for (key, n) in l.needing_one() {
                if n == 0 {
                    errors.push(
                        key_at(v, key),
                        format!("limits.{key}"),
                        "must be at least 1 (0 would refuse all traffic)".into(),
                    );
                    ok = false;
                }
            }
            // Nesting is parsed by recursion: its depth bounds the stack.
            if l.protobuf_depth > crate::limits::MAX_PROTOBUF_DEPTH {
                errors.push(
                    key_at(v, "protobuf_depth"),
                    "limits.protobuf_depth".into(),
                    format!("at most {}", crate::limits::MAX_PROTOBUF_DEPTH),
                );
                ok = false;
            }
            ok
        }),
    };

    let run = match root.get("run") {
        None => Some(RunConfig::default()),
        Some(v) => parse_collect::<RunConfig>(v, "run", &mut errors).filter(|run| {
            let at = |key: &str| key_at(v, key);
            let mut ok = true;
            if run.count == Some(0) {
                errors.push(
                    at("count"),
                    "run.count".into(),
                    "must be at least 1 (0 would stop before the first record)".into(),
                );
                ok = false;
            }
            if let Some(name) = &run.user {
                let problem = match crate::account::lookup(name) {
                    Ok(Some(_)) => None,
                    Ok(None) => Some(format!(
                        "no user `{name}` on this system; name an existing user (or `root` to keep root)"
                    )),
                    Err(e) => Some(e),
                };
                if let Some(problem) = problem {
                    errors.push(at("user"), "run.user".into(), problem);
                    ok = false;
                }
            }
            ok
        }),
    };

    let decoder = match root.get("decoder") {
        None => registry.default_decoder.and_then(|name| {
            let f = registry.decoders.get(name)?;
            let empty = Spanned::new(0..0, DeValue::Table(DeTable::default()));
            with_section(&mut errors, "decoder".into(), empty, f).map(|d| (name.to_string(), d))
        }),
        Some(v) => component(&mut errors, "decoder", v, &registry.decoders, "decoder"),
    };
    if root.get("decoder").is_none() && registry.default_decoder.is_none() {
        errors.push(
            root_span.start,
            "decoder".into(),
            format!(
                "missing [decoder] section; add one with type = one of: {}",
                registry.decoder_types().join(", ")
            ),
        );
    }

    // Each sink with its index in the file, for messages.
    let mut sinks: Vec<(usize, Box<dyn SinkConfig>)> = Vec::new();
    match root.get("sink") {
        None => {
            if let Some(f) = registry.default_sink.and_then(|n| registry.sinks.get(n)) {
                let empty = Spanned::new(0..0, DeValue::Table(DeTable::default()));
                if let Some(s) = with_section(&mut errors, "sink".into(), empty, f) {
                    sinks.push((0, s));
                }
            }
        }
        Some(v) => match v.get_ref() {
            DeValue::Array(arr) => {
                if arr.is_empty() {
                    errors.push(
                        v.span().start,
                        "sink".into(),
                        "needs at least one [[sink]]".into(),
                    );
                }
                for (i, item) in arr.iter().enumerate() {
                    if let Some((_, s)) = component(
                        &mut errors,
                        &format!("sink[{i}]"),
                        item,
                        &registry.sinks,
                        "sink",
                    ) {
                        sinks.push((i, s));
                    }
                }
            }
            other => errors.push(
                v.span().start,
                "sink".into(),
                format!(
                    "expected a list of tables ([[sink]]), found {}",
                    other.type_str()
                ),
            ),
        },
    }

    // Two writers on one file interleave into garbage, and a sink that truncates
    // the file the source reads destroys the input before a line of it is read.
    let path_at = |i: usize| match root.get("sink").map(|v| v.get_ref()) {
        Some(DeValue::Array(arr)) => arr
            .get(i)
            .and_then(|v| v.get_ref().as_table()?.get("path").map(|p| p.span().start))
            .unwrap_or(root_span.start),
        _ => root_span.start,
    };
    let input = source
        .as_ref()
        .and_then(|(_, src)| src.input_path())
        .map(FileId::of);
    let mut outputs: Vec<(usize, FileId)> = Vec::new();
    for (i, s) in &sinks {
        let Some(out) = s.output_path() else { continue };
        let id = FileId::of(out);
        if let Some(input) = &input
            && id.same(input)
        {
            errors.push(
                path_at(*i),
                format!("sink[{i}].path"),
                format!("`{}` is the file the source reads", out.display()),
            );
        } else if let Some((first, _)) = outputs.iter().find(|(_, o)| o.same(&id)) {
            errors.push(
                path_at(*i),
                format!("sink[{i}].path"),
                format!(
                    "`{}` is also written by sink[{first}]; two sinks cannot share a file",
                    out.display()
                ),
            );
        }
        outputs.push((*i, id));
    }
    let sinks: Vec<Box<dyn SinkConfig>> = sinks.into_iter().map(|(_, s)| s).collect();

    if !errors.list.is_empty() {
        return Err(finish(errors));
    }
    let (
        Some((source_type, source)),
        Some(view),
        Some(reorder),
        Some(limits),
        Some(run),
        Some((decoder_type, decoder)),
    ) = (source, view, reorder, limits, run, decoder)
    else {
        // Every `None` above pushed an error, so this is unreachable in practice;
        // keep a message rather than a panic all the same.
        return Err(ConfigErrors(vec![ConfigError {
            origin: origin.to_string(),
            line: 0,
            column: 0,
            key: String::new(),
            message: "incomplete config".into(),
        }]));
    };
    Ok(Config {
        source,
        source_type,
        view,
        reorder,
        limits,
        run,
        decoder,
        decoder_type,
        sinks,
    })
}

/// Takes `view` out of the `[source]` table; `None` (with an error recorded)
/// when it is not a view's name.
fn take_view<'t>(
    errors: &mut Errors<'t>,
    v: &Spanned<DeValue<'t>>,
) -> (Spanned<DeValue<'t>>, Option<View>) {
    let mut v = v.clone();
    let DeValue::Table(t) = v.get_mut() else {
        return (v, Some(View::default()));
    };
    let Some(raw) = t.remove("view") else {
        return (v, Some(View::default()));
    };
    let view = match raw.get_ref().as_str() {
        Some("connection") => Some(View::Connection),
        Some("syscalls") => Some(View::Syscalls),
        Some(other) => {
            errors.push(
                raw.span().start,
                "source.view".into(),
                format!("unknown view `{other}`, expected `connection` or `syscalls`"),
            );
            None
        }
        None => {
            errors.push(
                raw.span().start,
                "source.view".into(),
                format!("expected a string, found {}", raw.get_ref().type_str()),
            );
            None
        }
    };
    (v, view)
}

/// What makes two paths one file: the same inode when the file exists, else the
/// same name once the directory is resolved (`out.ndjson`, `./out.ndjson` and
/// `/here/out.ndjson` are one file to be).
struct FileId {
    inode: Option<(u64, u64)>,
    name: std::path::PathBuf,
}

impl FileId {
    fn of(path: &Path) -> FileId {
        use std::os::unix::fs::MetadataExt as _;
        let inode = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = match (std::fs::canonicalize(dir), path.file_name()) {
            (Ok(d), Some(f)) => d.join(f),
            _ => std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
        };
        FileId { inode, name }
    }

    fn same(&self, other: &FileId) -> bool {
        self.name == other.name || (self.inode.is_some() && self.inode == other.inode)
    }
}

fn finish(errors: Errors<'_>) -> ConfigErrors {
    let mut list = errors.list;
    list.sort_by_key(|(off, _)| *off);
    ConfigErrors(list.into_iter().map(|(_, e)| e).collect())
}

/// serde names the Rust type it wanted (`expected u64`); a config's reader
/// knows TOML's.
fn plain_types(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, toml) in [
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
    ] {
        out = out.replace(rust, toml);
    }
    out
}

/// Where `key` of the table `section` is written, for errors about its value;
/// the section itself where the key is not written there.
fn key_at(section: &Spanned<DeValue<'_>>, key: &str) -> usize {
    section
        .get_ref()
        .as_table()
        .and_then(|t| t.get(key))
        .map_or(section.span().start, |v| v.span().start)
}

/// Deserializes `value` into `T`, recording every error it can find: serde stops at
/// the first, so after each error the offending key is taken out and the rest is
/// tried again.
fn parse_collect<T: DeserializeOwned>(
    value: &Spanned<DeValue<'_>>,
    prefix: &str,
    errors: &mut Errors<'_>,
) -> Option<T> {
    let mut value = value.clone();
    let mut removed: Vec<String> = Vec::new();
    // Bounded: each round removes one key.
    for _ in 0..64 {
        let de = ValueDeserializer::from(value.clone());
        let mut track = serde_path_to_error::Track::new();
        let err = match T::deserialize(serde_path_to_error::Deserializer::new(de, &mut track)) {
            Ok(v) if removed.is_empty() => return Some(v),
            Ok(_) => return None,
            Err(e) => e,
        };
        let message = err.message().to_string();
        // A key taken out to look further now reads as missing: not the user's error.
        if removed
            .iter()
            .any(|r| message.starts_with("missing field") && message.contains(&format!("`{r}`")))
        {
            return None;
        }
        let track = track.path();
        let path = track.to_string();
        let key = if path == "." || path.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{path}")
        };
        let at = err.span().unwrap_or_else(|| value.span()).start;
        errors.push(at, key, plain_types(&message));
        // The first segment as serde saw it: a quoted key may itself hold dots.
        let first = match track.iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) => key.clone(),
            _ => String::new(),
        };
        let taken = match value.get_mut() {
            DeValue::Table(t) if !first.is_empty() => t.remove(first.as_str()).is_some(),
            _ => false,
        };
        if !taken {
            return None;
        }
        removed.push(first);
    }
    None
}

fn with_section<'t, T: ?Sized>(
    errors: &mut Errors<'t>,
    key: String,
    value: Spanned<DeValue<'t>>,
    f: impl FnOnce(&mut Section<'_>) -> Option<Box<T>>,
) -> Option<Box<T>> {
    let span = value.span();
    let mut section = Section {
        key,
        value,
        span,
        errors: Errors {
            origin: errors.origin.clone(),
            text: errors.text,
            list: Vec::new(),
        },
    };
    let out = f(&mut section);
    let failed = !section.errors.list.is_empty();
    errors.list.append(&mut section.errors.list);
    if failed { None } else { out }
}

fn component<'t, T: ?Sized>(
    errors: &mut Errors<'t>,
    key: &str,
    v: &Spanned<DeValue<'t>>,
    factories: &BTreeMap<&'static str, Factory<T>>,
    kind: &str,
) -> Option<(String, Box<T>)> {
    let known = || factories.keys().copied().collect::<Vec<_>>().join(", ");
    let DeValue::Table(table) = v.get_ref() else {
        errors.push(
            v.span().start,
            key.to_string(),
            format!("expected a table, found {}", v.get_ref().type_str()),
        );
        return None;
    };
    let mut table = table.clone();
    let Some(ty) = table.remove("type") else {
        errors.push(
            v.span().start,
            format!("{key}.type"),
            format!("missing; set type = one of: {}", known()),
        );
        return None;
    };
    let Some(name) = ty.get_ref().as_str() else {
        errors.push(
            ty.span().start,
            format!("{key}.type"),
            format!("expected a string, found {}", ty.get_ref().type_str()),
        );
        return None;
    };
    let Some(factory) = factories.get(name) else {
        errors.push(
            ty.span().start,
            format!("{key}.type"),
            format!("unknown {kind} type `{name}`; known types: {}", known()),
        );
        return None;
    };
    let name = name.to_string();
    let value = Spanned::new(v.span(), DeValue::Table(table));
    let mark = errors.list.len();
    let built = with_section(errors, key.to_string(), value, factory).map(|c| (name, c));
    // The component's own keys are all serde knows of: the keys every
    // component of this kind takes were taken out before.
    let shared = if kind == "source" {
        "`type`, `view`"
    } else {
        "`type`"
    };
    for (_, e) in &mut errors.list[mark..] {
        // Only the component's own keys: a nested table's are its own.
        let own_key = e
            .key
            .strip_prefix(key)
            .and_then(|k| k.strip_prefix('.'))
            .is_some_and(|k| !k.contains('.'));
        let m = &mut e.message;
        if !own_key || !m.starts_with("unknown field") {
            continue;
        }
        if m.contains(", expected one of ") {
            *m = format!("{m}, {shared}");
        } else if m.contains(", expected `") {
            *m = format!(
                "{}, {shared}",
                m.replacen(", expected `", ", expected one of `", 1)
            );
        } else if m.contains("there are no fields") {
            *m = m.replacen("there are no fields", &format!("expected only {shared}"), 1);
        }
    }
    built
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NullDecoder {}

    impl DecoderConfig for NullDecoder {
        fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Decoder>, BuildError> {
            Err(BuildError::new("not for running"))
        }
    }

    fn registry(default_decoder: bool) -> Registry {
        let mut r = Registry::new();
        r.decoder("null", |s| {
            s.parse::<NullDecoder>()
                .map(|d| Box::new(d) as Box<dyn DecoderConfig>)
        });
        if default_decoder {
            r.default_decoder("null");
        }
        r
    }

    const SOURCE: &str = "[source]\ntype = \"file\"\npath = \"/dev/null\"\n";

    #[test]
    fn unknown_keys_name_the_shared_keys_too() {
        let reg = registry(true);
        let errs = parse(
            &reg,
            "t",
            &format!("{SOURCE}pathh = 1\n[decoder]\ntype = \"null\"\nx = 1\n"),
        )
        .unwrap_err()
        .0;
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].message.ends_with(", `type`, `view`"), "{errs:?}");
        assert!(
            errs[0].message.contains("expected one of `path`"),
            "{errs:?}"
        );
        assert!(
            errs[1].message.ends_with("expected only `type`"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_duplicate_key_is_named() {
        let reg = registry(true);
        let errs = parse(&reg, "t", "[a]\nx = 1\n[a]\nx = 2\ny = 1\ny = 2\n")
            .unwrap_err()
            .0;
        let said: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, &*e.message)).collect();
        assert_eq!(
            said,
            [
                (3, "duplicate key `a`"),
                (4, "duplicate key `x`"),
                (6, "duplicate key `y`")
            ],
            "{errs:?}"
        );
    }

    #[test]
    fn view_and_limits_are_read_and_checked() {
        let reg = registry(true);
        let cfg = parse(&reg, "t", SOURCE).unwrap();
        assert_eq!(cfg.view, View::default());
        assert_eq!(cfg.limits, Limits::default());
        assert_eq!(cfg.decoder_type, "null");

        let text = format!("{SOURCE}view = \"syscalls\"\n[limits]\nmemory = 1000\n");
        let cfg = parse(&reg, "t", &text).unwrap();
        assert_eq!(cfg.view, View::Syscalls);
        assert_eq!(cfg.limits.memory, 1000);
        assert_eq!(
            cfg.limits.header_list_size,
            Limits::default().header_list_size
        );

        let text = format!("{SOURCE}view = \"frames\"\n[limits]\nmemroy = 1\n");
        let errs = parse(&reg, "t", &text).unwrap_err().0;
        let keys: Vec<_> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(keys, [("source.view", 4), ("limits.memroy", 6)], "{errs:?}");

        // Zero where it would refuse all traffic, a window of days: each
        // named at its line; a zero that means something passes.
        let text = format!(
            "{SOURCE}[limits]\nmemory = 0\nline_length = 0\nprotobuf_fields = 0\n[reorder]\nwindow_ms = 99999999999\nmax_events = 0\nmax_bytes = 0\n"
        );
        let errs = parse(&reg, "t", &text).unwrap_err().0;
        let keys: Vec<_> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            keys,
            [
                ("limits.memory", 5),
                ("limits.line_length", 6),
                ("reorder.window_ms", 9),
                ("reorder.max_events", 10),
                ("reorder.max_bytes", 11)
            ],
            "{errs:?}"
        );
        assert!(errs[1].message.contains("at least 1"), "{errs:?}");
        let text = format!("{SOURCE}[limits]\nprotobuf_fields = 0\n[reorder]\nwindow_ms = 60000\n");
        assert!(parse(&reg, "t", &text).is_ok());
        // Nesting is bounded: it is parsed by recursion.
        let deep = |d: usize| format!("{SOURCE}[limits]\nprotobuf_depth = {d}\n");
        let errs = parse(&reg, "t", &deep(65)).unwrap_err().0;
        assert_eq!(
            (errs[0].key.as_str(), errs[0].message.as_str()),
            ("limits.protobuf_depth", "at most 64"),
            "{errs:?}"
        );
        assert!(parse(&reg, "t", &deep(64)).is_ok());
    }

    #[test]
    fn default_decoder_comes_from_the_registry() {
        let errs = parse(&registry(false), "t", SOURCE).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "decoder");
        assert!(errs[0].message.contains("null"), "{}", errs[0].message);
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FileSink {
        path: std::path::PathBuf,
    }

    impl SinkConfig for FileSink {
        fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Sink>, BuildError> {
            Err(BuildError::new("not for running"))
        }
        fn output_path(&self) -> Option<&Path> {
            Some(&self.path)
        }
        fn extra_syscalls(&self) -> Vec<libc::c_long> {
            vec![libc::SYS_connect, libc::SYS_socket]
        }
    }

    fn with_file_sink() -> Registry {
        let mut r = registry(true);
        r.sink("file", |s| {
            s.parse::<FileSink>()
                .map(|d| Box::new(d) as Box<dyn SinkConfig>)
        });
        r
    }

    fn sinks(paths: &[&str]) -> String {
        let mut t = SOURCE.to_string();
        for p in paths {
            t.push_str(&format!("[[sink]]\ntype = \"file\"\npath = \"{p}\"\n"));
        }
        t
    }

    #[test]
    fn sinks_may_not_share_a_file_with_each_other_or_the_source() {
        let reg = with_file_sink();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let ok = parse(&reg, "t", &sinks(&[&format!("{d}/a"), &format!("{d}/b")])).unwrap();
        // Both sinks ask for the same calls: listed once, sorted.
        let mut want = vec![libc::SYS_socket, libc::SYS_connect];
        want.sort_unstable();
        assert_eq!(ok.extra_syscalls(), want);
        let text = sinks(&[&format!("{d}/a"), &format!("{d}/b"), &format!("{d}/./a")]);
        let errs = parse(&reg, "t", &text).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            (errs[0].key.as_str(), errs[0].line, errs[0].column),
            ("sink[2].path", 12, 8)
        );
        assert!(
            errs[0].message.contains("is also written by sink[0]"),
            "{}",
            errs[0].message
        );
        // One existing file under two names.
        std::fs::write(dir.path().join("real"), b"").unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("via")).unwrap();
        let text = sinks(&[&format!("{d}/real"), &format!("{d}/via/real")]);
        let errs = parse(&reg, "t", &text).unwrap_err().0;
        assert_eq!(errs[0].key, "sink[1].path", "{errs:?}");
        // The source's own file.
        let errs = parse(&reg, "t", &sinks(&["/dev/null"])).unwrap_err().0;
        assert!(
            errs[0].message.contains("is the file the source reads"),
            "{errs:?}"
        );
    }

    #[test]
    fn run_section_names_an_existing_user() {
        let reg = registry(true);
        let cfg = parse(&reg, "t", SOURCE).unwrap();
        assert_eq!(
            (cfg.run.user.as_deref(), cfg.run.user_name()),
            (None, "nobody")
        );
        let cfg = parse(&reg, "t", &format!("{SOURCE}[run]\nuser = \"root\"\n")).unwrap();
        assert_eq!(cfg.run.user_name(), "root");
        let errs = parse(
            &reg,
            "t",
            &format!("{SOURCE}[run]\nuser = \"no-such-user-spf\"\nuid = 0\n"),
        )
        .unwrap_err()
        .0;
        let keys: Vec<_> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(keys, [("run.uid", 6)], "{errs:?}");
        let errs = parse(
            &reg,
            "t",
            &format!("{SOURCE}[run]\nuser = \"no-such-user-spf\"\n"),
        )
        .unwrap_err()
        .0;
        assert_eq!(
            (errs[0].key.as_str(), errs[0].line),
            ("run.user", 5),
            "{errs:?}"
        );
        assert!(
            errs[0].message.contains("no user `no-such-user-spf`"),
            "{errs:?}"
        );
        // Types as TOML names them, not as Rust does.
        let errs = parse(&reg, "t", &format!("{SOURCE}[run]\ncount = -1\n"))
            .unwrap_err()
            .0;
        assert!(
            errs[0]
                .message
                .contains("expected a whole number, 0 or more"),
            "{errs:?}"
        );
        // Both of the section's errors at once, each at its line.
        let errs = parse(
            &reg,
            "t",
            &format!("{SOURCE}[run]\ncount = 0\nuser = \"no-such-user-spf\"\n"),
        )
        .unwrap_err()
        .0;
        let keys: Vec<_> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(keys, [("run.count", 5), ("run.user", 6)], "{errs:?}");
    }

    #[test]
    fn a_config_file_is_small_and_regular_or_a_fifo() {
        let reg = registry(true);
        let e = load_file(&reg, Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("it is a character device"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = load_file(&reg, dir.path()).unwrap_err().to_string();
        assert!(e.contains("it is a directory"), "{e}");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let e = load_file(&reg, &big).unwrap_err().to_string();
        assert!(e.contains("larger than 1 MiB"), "{e}");
        let just = dir.path().join("just.toml");
        let mut text = SOURCE.to_string().into_bytes();
        text.resize(MAX_CONFIG_BYTES as usize, b'\n');
        std::fs::write(&just, text).unwrap();
        load_file(&reg, &just).unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, b"# \xff\n").unwrap();
        let e = load_file(&reg, &bad).unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");
    }
}
