//! spf: sniff Unix domain socket traffic with eBPF and decode it.
//!
//! `main` stays thin: parse arguments, dispatch, print errors with context, map
//! them onto exit codes (0 success, 1 runtime failure, 2 usage or config error).

mod cli;
mod command;
mod demo;
mod plugins_cmd;
mod privileges;
mod run;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // `spf plugin-host`: the process an isolated plugin runs in (spf starts it
    // itself; it is no command for users).
    if let Some(code) = spf_pipeline::plugin::isolate::host_main() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            spf_pipeline::diag!("spf: {e:#}");
            ExitCode::from(1)
        }
    }
}

// Events are allocated on the source's thread and freed on the pipeline's; glibc's
// allocator serialises that pattern, mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
