//! spf's one integration test binary: real processes, real sockets, real files.

mod capture;
mod command;
mod relay;
mod util;

mod conversation;
mod hooks;
mod http1;
mod http2;
mod http2_limits;
mod live;
mod nats;
mod outputs;
mod pcapng;
mod plugins;
mod pretty;
mod privileges;
mod probe;
mod recipes;
mod replay;
mod summary;
