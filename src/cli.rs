//! Command-line interface.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  # Watch containerd's gRPC traffic, decoded, as it happens
  sudo spf run --path /run/containerd/containerd.sock --decoder http2

  # What clients send on sockets under /run, as NDJSON for jq
  sudo spf run --path '/run/*' --format ndjson | jq 'select(.role == \"client\")'

  # Capture now (raw events, replayable), decode later without root
  sudo spf run --path /var/run/docker.sock --output capture.ndjson
  spf run --replay capture.ndjson --decoder http1

  # Into Wireshark: a pcapng file, or a pipe into tshark
  sudo spf run --path /run/containerd/containerd.sock -w capture.pcapng
  sudo spf run --path /run/containerd/containerd.sock -w - | tshark -r -

  # The full pipeline from a config file; check it first
  spf validate -c spf.toml
  sudo spf run -c spf.toml

  # One command and what it starts, nothing else; spf exits with its status
  sudo spf run -- curl --unix-socket /var/run/docker.sock http://localhost/version

  # A fleet: nodes publish to NATS JetStream, one spf decodes them all
  # (configs in docs/fleet.md)
  sudo spf run -c node.toml      # [[sink]] type = \"nats\"
  spf run -c central.toml        # [source] type = \"nats\"";

#[derive(Parser, Debug)]
#[command(
    name = "spf",
    version,
    about = "Sniff Unix domain socket traffic with eBPF and decode it",
    long_about = "spf captures every byte sent and received on the Unix domain sockets you \
choose, using eBPF, and runs it through a pipeline: source -> reorder -> decoder -> sinks. \
The pipeline comes from a TOML file (-c spf.toml) or from the quick flags of `spf run`.",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a capture (or replay) pipeline until its input ends or Ctrl-C.
    #[command(after_help = EXAMPLES)]
    Run(Box<RunArgs>),
    /// Check a config file and report every error in it, without running anything.
    Validate {
        /// The config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Inspect plugin libraries (decoders and sinks loaded from shared libraries).
    #[command(subcommand)]
    Plugins(crate::plugins_cmd::PluginsCommand),
    /// Show spf at work: a real gRPC server and client talk over a temporary Unix
    /// socket, captured with the eBPF probe and decoded as HTTP/2 (needs root).
    Demo(crate::demo::DemoArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Read the pipeline from this TOML file (see spf.toml for a commented
    /// example). The file then says what the flags that shape the pipeline
    /// would (what to capture or replay, decoder, outputs, view, pretty
    /// view's settings): those flags are refused beside it.
    #[arg(short, long, value_name = "FILE", conflicts_with_all = ["path", "pid", "comm", "replay", "decoder", "format", "output", "write", "snaplen", "direction", "view", "hook"])]
    pub config: Option<PathBuf>,

    /// Capture sockets with this path: exact, prefix with a trailing `*`, or an
    /// abstract name as `@name`. Repeatable. A name through a linked directory
    /// (`/var/run/docker.sock`) also matches the real one (`/run/docker.sock`):
    /// sockets keep the name they were bound with. Without --path, --pid or
    /// --comm every Unix socket is captured.
    #[arg(long, value_name = "PATH")]
    pub path: Vec<String>,

    /// Capture only traffic of this process (either end). Repeatable. Pids are
    /// the host's, also when spf runs in a container with pids of its own.
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,

    /// Capture only traffic of processes with this command name. Repeatable.
    #[arg(long, value_name = "COMM")]
    pub comm: Vec<String>,

    /// Bytes captured per syscall (default 1048576, 1 MiB).
    #[arg(long, value_name = "BYTES")]
    pub snaplen: Option<u64>,

    /// Which syscalls to capture: both ends' sends and receives (the default),
    /// only sends (half the work; under the syscall hook what sendfile and
    /// splice move shows as bytes not captured), or only receives.
    #[arg(long, value_enum, value_name = "WHICH")]
    pub direction: Option<DirectionArg>,

    /// How to show the traffic: `connection` (the default) joins the two ends
    /// of each connection, each byte once, seen from its sender; `syscalls`
    /// shows every syscall of every captured process as it happened (with
    /// both ends captured, each byte twice: one end's send, the other's
    /// receive).
    #[arg(long, value_enum, value_name = "VIEW")]
    pub view: Option<ViewArg>,

    /// Which kernel hooks capture: `auto` (the default) uses hooks on the
    /// kernel's AF_UNIX send and receive functions where the kernel allows
    /// them (they also see sendfile, splice and io_uring, and cost nothing to
    /// other processes), else the syscall exit hook; `syscall` and `kernel`
    /// force one (`kernel` fails where it cannot load).
    #[arg(long, value_enum, value_name = "HOOK")]
    pub hook: Option<HookArg>,

    /// Replay a capture written with --output (or an ndjson sink) instead of
    /// capturing live; `-` reads stdin. Needs no root. The capture filters (--path, --pid,
    /// --comm) do not apply to it: --follow CONN picks a connection.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["path", "pid", "comm", "snaplen", "direction", "hook"])]
    pub replay: Option<PathBuf>,

    /// How to decode the bytes: auto (the default: each connection by what its
    /// first bytes speak), http1, http2 (HTTP/2 and gRPC) or raw (escaped
    /// bytes). Plugin decoders need a config file (-c).
    #[arg(long, value_name = "DECODER", value_parser = decoder_name)]
    pub decoder: Option<String>,

    /// How to print records on stdout.
    #[arg(long, value_enum)]
    pub format: Option<OutFormat>,

    /// Also write a replayable capture to this file, created with mode 0600:
    /// NDJSON (every raw event plus the decoded records), or, for a name ending
    /// in `.spfcap`, the compact binary format (the events only; several times
    /// faster to write, for high rates). `--replay` reads both. For pcapng,
    /// use `-w`.
    #[arg(long, short, value_name = "FILE", value_parser = capture_path)]
    pub output: Option<PathBuf>,

    /// Also write the capture as pcapng for Wireshark, tshark or tcpdump (every
    /// connection a synthetic TCP flow), created with mode 0600. `-w -` writes it
    /// to stdout instead of the records: `spf run -w - | tshark -r -`.
    #[arg(long = "write", short = 'w', value_name = "FILE")]
    pub write: Option<PathBuf>,

    /// No live status line, no `spf: capturing` line at the start and no
    /// summary at exit; warnings and errors still show.
    #[arg(long, short)]
    pub quiet: bool,

    /// Pretty output: besides one line per exchange, show the frames and
    /// messages with their headers (-v), and their bodies too (-vv).
    #[arg(short, action = clap::ArgAction::Count, conflicts_with = "config")]
    pub verbose: u8,

    /// Pretty output: how times are shown. `date` (the default): date and
    /// time of day in the local time zone; `local`: time of day only; `utc`:
    /// RFC 3339 in UTC; `relative`: seconds since the first record.
    #[arg(long, value_enum, value_name = "FORMAT", conflicts_with = "config")]
    pub time: Option<TimeArg>,

    /// Sum up the exchanges per method and path (count, errors, latency
    /// percentiles, bytes) and print the table on stderr at exit and on
    /// SIGUSR1.
    #[arg(long, conflicts_with = "config")]
    pub stats: bool,

    /// With --stats: also print the table every SECS seconds.
    #[arg(long, value_name = "SECS", conflicts_with = "config")]
    pub stats_every: Option<u64>,

    /// Once the probe is attached and the outputs are open, continue as this user
    /// (default `nobody`, or `[run] user` of the config); `root` keeps root.
    /// Applies when spf starts as root.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Capture only processes in this cgroup (v2 path, as /proc/PID/cgroup
    /// shows it) or below it. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<String>,

    /// Capture only this container (Docker, containerd, Podman, CRI-O): a name,
    /// a full id, or an id prefix of at least 12 digits. Repeatable.
    #[arg(long, value_name = "ID|NAME")]
    pub container: Vec<String>,

    /// Capture only this process and every process it starts from now on.
    /// Repeatable. Pids as for --pid.
    #[arg(long, value_name = "PID")]
    pub pid_tree: Vec<u32>,

    /// Stop after this many records (as tcpdump's -c; `-c` names the config).
    /// Every record counts, also those the pretty view shows only with -v.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Show only this connection (its `conn` id), both directions, as
    /// Wireshark's "Follow stream".
    #[arg(long, value_name = "CONN")]
    pub follow: Option<u64>,

    /// A command to start and capture, with every process it starts: spf stops
    /// when it exits and exits with its status (when the capture ends first,
    /// as with --count, spf waits for it; Ctrl-C does not). Its stdout goes to
    /// spf's stderr unless spf's stdout is a terminal: spf's stdout carries the
    /// records. Give it after `--`:
    /// `spf run -- curl --unix-socket /run/app.sock http://x/`.
    #[arg(last = true, value_name = "COMMAND", conflicts_with_all = ["config", "replay"])]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectionArg {
    Both,
    Send,
    Recv,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookArg {
    Auto,
    Syscall,
    Kernel,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewArg {
    Connection,
    Syscalls,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeArg {
    Date,
    Local,
    Utc,
    Relative,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFormat {
    /// An access log: one line per exchange (and per record no exchange sums
    /// up); frames and headers with -v, bodies with -vv; coloured on a terminal.
    Pretty,
    /// One JSON object per line.
    Ndjson,
}

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(args) => crate::run::run(*args),
        Command::Validate { config } => crate::run::validate(&config),
        Command::Plugins(cmd) => crate::plugins_cmd::run(cmd),
        Command::Demo(args) => crate::demo::run(args),
    }
}

/// `--output`'s file: not a name that promises pcap, which `-w` writes.
/// `--decoder`: any name the registry knows (checked with the rest of the
/// config), but `plugin`, whose library no flag can name.
fn decoder_name(s: &str) -> Result<String, String> {
    if s == "plugin" {
        return Err(
            "a plugin decoder needs a config file, which names its library: `[decoder]` with `type = \"plugin\"` and `path = \"/path/to/libNAME.so\"`, run with `spf run -c FILE` (see docs/plugins.md)".into(),
        );
    }
    Ok(s.to_string())
}

fn capture_path(s: &str) -> Result<PathBuf, String> {
    if s == "-" {
        return Err(
            "stdout carries the records: `--format ndjson` writes them there as NDJSON (replayable with `--decoder raw`), `-w -` writes pcapng instead".into(),
        );
    }
    let path = PathBuf::from(s);
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("pcapng") || e.eq_ignore_ascii_case("pcap") => {
            Err(format!(
                "--output writes a capture for `spf run --replay` (NDJSON, or .spfcap); write pcapng with -w {s}"
            ))
        }
        _ => Ok(path),
    }
}
