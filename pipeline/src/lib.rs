//! The spine of spf: events, records, the stage traits, config and validation, the
//! reorder stage and the runner. No BPF and no C toolchain: builds and tests anywhere.

pub mod event;
pub mod record;
pub mod reorder;
pub mod runner;
pub mod stage;

pub use event::{Direction, Event, Flow, Lost, SockKind, SourceItem};
pub use record::{Body, Decoded, Record};
pub use stage::{
    Batch, BoxFuture, Decoder, Emitter, Sink, SinkError, Source, SourceError, SourceSummary,
};
pub mod config;
pub mod file_source;
pub mod ndjson;
pub mod plugin;
