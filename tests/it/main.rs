//! spf's one integration test binary: real processes, real sockets, real files.

mod util;

mod replay;
mod probe;
mod http2;
mod plugins;
