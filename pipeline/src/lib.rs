//! The spine of spf: events, records, the stage traits, config and validation, the
//! reorder stage and the runner. No BPF and no C toolchain: builds and tests anywhere.

/// One line to stderr, like `eprintln!`, except that a closed stderr
/// (`spf ... 2>&1 | head -1`) is no panic: a diagnostic nobody can read any more
/// is dropped, and spf goes on to flush its sinks and exit with its own status.
#[macro_export]
macro_rules! diag {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

pub mod connection;
pub mod escape;
pub mod event;
pub mod limits;
pub mod record;
pub mod reorder;
pub mod runner;
pub mod signal;
pub mod stage;
pub mod writer;

pub use event::{
    Container, Direction, Event, Flow, Lost, Role, SockKind, SourceItem, StreamKey, View,
};
pub use limits::{Budget, BuildContext, Limits};
pub use record::{Body, Decoded, Endpoint, Exchange, Fields, Record, RecordKind};
pub use stage::{
    Batch, BoxFuture, Decoder, Emitter, Out, Sink, SinkError, SinkReport, Source, SourceError,
    SourceSummary,
};
pub mod account;
pub mod capture;
pub mod config;
pub mod file_source;
pub mod ndjson;
pub mod output;
pub mod plugin;
