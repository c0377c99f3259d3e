//! `[[sink]] type = "pcapng"`: the capture as a pcapng file that Wireshark,
//! tshark and tcpdump read, every Unix socket connection a synthetic TCP flow
//! (datagrams: UDP) over IPv4, so that their protocol dissectors work on it.
//!
//! The sink takes every event as the decoder does (`Sink::event`: in the
//! connection view each byte once, seen from its sender) and turns its bytes
//! into packets ([`write`]); decoded records only tell it a connection's
//! protocol, for the server port. A Name Resolution Block names
//! each synthetic address (the socket path, or `comm[pid]`), and every packet
//! carries a comment naming its processes, path and socket kind.

mod addr;
mod block;
mod comment;
mod flow;
mod flows;
mod packet;
mod write;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use spf_pipeline::config::{BuildContext, BuildError, Registry, Section, SinkConfig};
use spf_pipeline::writer::FileWriter;
use spf_pipeline::{Body, Event, Record, Sink, SinkError};

use flows::{Flows, Ports};

pub use addr::{HTTP2_PORT, protocol_port};

pub fn register(reg: &mut Registry) {
    reg.sink("pcapng", |s: &mut Section<'_>| {
        let cfg = s.parse::<PcapngConfig>()?;
        if cfg.path.as_os_str().is_empty() {
            s.error("path", "must name a file, or `-` for stdout");
            return None;
        }
        if !cfg.is_stdout()
            && let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            s.error(
                "path",
                format!("directory `{}` does not exist", dir.display()),
            );
            return None;
        }
        // Refused here too, so that `spf validate` says so with the key's line;
        // opening the file decides again.
        if !cfg.is_stdout()
            && let Err(e) = spf_pipeline::output::check_output_path(&cfg.path)
        {
            s.error("path", e);
            return None;
        }
        Some(Box::new(cfg) as Box<dyn SinkConfig>)
    });
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcapngConfig {
    /// The file to write (opened by [`spf_pipeline::output::open_output`]:
    /// mode 0600, no symbolic links, only a regular file of the user spf runs
    /// as), or `-` for stdout.
    pub path: PathBuf,
    /// A comment on every packet naming its processes, path and socket kind.
    #[serde(default = "yes")]
    pub comments: bool,
}

fn yes() -> bool {
    true
}

impl PcapngConfig {
    fn is_stdout(&self) -> bool {
        self.path.as_os_str() == "-"
    }
}

impl SinkConfig for PcapngConfig {
    fn output_path(&self) -> Option<&Path> {
        (!self.is_stdout()).then_some(self.path.as_path())
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Sink>, BuildError> {
        let (file, shown, what) = if self.is_stdout() {
            if std::io::stdout().is_terminal() {
                return Err(BuildError::new(
                    "refusing to write pcapng to a terminal: redirect stdout to a file or pipe it, e.g. `| tshark -r -`",
                ));
            }
            (
                stdout_file()?,
                "stdout".to_string(),
                "writing stdout".to_string(),
            )
        } else {
            // Captures hold whatever the traced processes said, secrets included.
            let file = spf_pipeline::output::open_output(&self.path, false)?;
            let shown = self.path.display().to_string();
            let what = format!("writing `{shown}`");
            (file, shown, what)
        };
        let out = FileWriter::new(file, what)
            .map_err(|e| BuildError::new(format!("cannot start the writer thread: {e}")))?;
        Ok(Box::new(PcapngSink::new(
            out,
            shown,
            ports_for(&ctx.decoder),
            self.comments,
            ctx,
        )))
    }
}

/// Stdout as a file of its own, so that packets are not scanned for line ends
/// the way `std::io::Stdout` does.
fn stdout_file() -> Result<File, BuildError> {
    use std::os::fd::AsFd as _;
    let fd = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| BuildError::new(format!("cannot use stdout: {e}")))?;
    Ok(File::from(fd))
}

/// How server ports are chosen, from the run's decoder type.
fn ports_for(decoder: &str) -> Ports {
    match protocol_port(decoder) {
        Some(p) => Ports::Fixed(p),
        None if decoder.is_empty() || decoder == "raw" => Ports::PerPath,
        None => Ports::FromRecords,
    }
}

pub struct PcapngSink {
    /// The file, written on a thread of its own (see pipeline's writer.rs).
    out: FileWriter,
    shown: String,
    flows: Flows,
}

impl PcapngSink {
    fn new(
        mut out: FileWriter,
        shown: String,
        ports: Ports,
        comments: bool,
        ctx: &BuildContext,
    ) -> Self {
        let buf = out.buf();
        let app = concat!("spf ", env!("CARGO_PKG_VERSION"));
        block::section_header(
            buf,
            app,
            &format!(
                "Unix domain socket traffic captured by spf: every connection is a synthetic TCP flow \
                 (datagrams: UDP) over IPv4. Servers of named sockets are 10.0.0.0/10, one address per \
                 socket path; of unnamed sockets 10.64.0.0/10 plus the pid; clients 10.128.0.0/9 plus the \
                 pid (names: tshark -N n). HTTP/2 is on TCP port {HTTP2_PORT}; for a connection captured \
                 without its preface: tshark -d tcp.port=={HTTP2_PORT},http2"
            ),
        );
        block::interface(
            buf,
            "spf",
            &format!("{app}: Unix domain sockets as synthetic TCP/UDP over IPv4"),
            &ctx.source,
        );
        PcapngSink {
            out,
            shown,
            flows: Flows::new(ports, comments, ctx.limits.connections),
        }
    }
}

impl Sink for PcapngSink {
    fn describe(&self) -> String {
        format!("pcapng {}", self.shown)
    }

    fn event(&mut self, event: &Arc<Event>) -> Result<(), SinkError> {
        self.flows.event(event, self.out.buf());
        self.out.maybe_send()
    }

    fn write(&mut self, record: &Record) -> Result<(), SinkError> {
        match record {
            // The bytes came with the event; a record only names its
            // connection's protocol (a raw one: none known), an error none.
            Record::Decoded(d) => {
                if !matches!(d.body, Body::Error { .. }) {
                    self.flows.decoded(d.event.conn, &d.decoder, self.out.buf());
                }
            }
            Record::Lost(l) => self.flows.lost(l.count),
        }
        self.out.maybe_send()
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.flows.expire(Instant::now(), false, self.out.buf());
        self.out.flush()
    }

    fn closed(&mut self, conn: u64, ts_ns: u64) -> Result<(), SinkError> {
        self.flows.closed(conn, ts_ns, self.out.buf());
        self.out.maybe_send()
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.flows.expire(Instant::now(), true, self.out.buf());
        self.flows.statistics(self.out.buf());
        self.out.close()
    }
}
