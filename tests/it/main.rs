//! spf's one integration test binary: real processes, real sockets, real files.

mod capture;
mod util;

mod http2;
mod plugins;
mod probe;
mod replay;
