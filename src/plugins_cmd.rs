//! `spf plugins check PATH [--kind decoder|sink]`: load a plugin library and run
//! the handshake, without a config and without running anything.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use spf_pipeline::plugin::{self, Kind};

#[derive(Subcommand, Debug)]
pub enum PluginsCommand {
    /// Load a plugin library and check that this spf can use it: prints its kind,
    /// name, version and ABI, or why it is refused (exit 2).
    Check {
        /// The plugin's shared library, by its absolute path (as a config names it).
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Also require this kind of plugin.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum KindArg {
    Decoder,
    Sink,
}

pub fn run(cmd: PluginsCommand) -> Result<ExitCode> {
    match cmd {
        PluginsCommand::Check { path, kind } => {
            let want = kind.map(|k| match k {
                KindArg::Decoder => Kind::Decoder,
                KindArg::Sink => Kind::Sink,
            });
            // Relative paths are refused here as in a config: what is checked is
            // what a config can load.
            match plugin::check(&path, want) {
                Ok(info) => {
                    println!("ok: {}", info.path.display());
                    println!("  kind     {}", info.kind);
                    println!("  name     {}", info.name);
                    println!("  version  {}", info.version);
                    let (major, minor) = plugin::HOST_ABI;
                    println!(
                        "  abi      {}.{} (this spf speaks {major}.{minor})",
                        info.abi_major, info.abi_minor
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    spf_pipeline::diag!("spf: plugin refused: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}
