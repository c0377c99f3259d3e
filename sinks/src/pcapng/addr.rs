//! The synthetic address plan: which IPv4 address and port each end of a Unix
//! socket connection gets, so that Wireshark keeps connections apart, names
//! them, and picks the right dissector.
//!
//! - Servers of named sockets: 10.0.0.0/10, one address per socket path, in
//!   the order paths are first seen.
//! - Servers of unnamed sockets (socketpairs): 10.64.0.0/10 plus the pid.
//! - Clients: 10.128.0.0/9 plus the pid (pids are below 2^22).
//! - The server port: the protocol's well-known port where the protocol is
//!   known ([`protocol_port`]), else one fixed port per socket path in
//!   60002-62001, a range no Wireshark dissector claims.
//! - Client ports: 62002-65535, unique among open connections between the same
//!   two addresses.

use std::sync::Arc;

use rustc_hash::FxHashMap;

const NAMED_SERVERS: u32 = 0x0A00_0000;
const UNNAMED_SERVERS: u32 = 0x0A40_0000;
const CLIENTS: u32 = 0x0A80_0000;
/// Addresses in a /10.
const SPAN_10: u32 = 1 << 22;

pub const PATH_PORTS: std::ops::RangeInclusive<u16> = 60002..=62001;
pub const CLIENT_PORTS: std::ops::RangeInclusive<u16> = 62002..=65535;

/// HTTP/2's port. Wireshark hands HTTP/2 on 8080, one of HTTP's ports, to its
/// HTTP/2 dissector when the connection preface is there; a connection
/// captured without its preface needs `-d tcp.port==8080,http2`.
pub const HTTP2_PORT: u16 = 8080;

/// The TCP port Wireshark dissects a protocol on without settings, by the
/// name of the decoder that recognised it.
pub fn protocol_port(decoder: &str) -> Option<u16> {
    Some(match decoder {
        "http1" => 80,
        "http2" | "grpc" => HTTP2_PORT,
        "resp" | "redis" => 6379,
        "pgsql" | "postgres" | "postgresql" => 5432,
        _ => return None,
    })
}

pub fn client_addr(pid: u32) -> [u8; 4] {
    (CLIENTS | (pid & (2 * SPAN_10 - 1))).to_be_bytes()
}

pub fn unnamed_server_addr(pid: u32) -> [u8; 4] {
    (UNNAMED_SERVERS | (pid & (SPAN_10 - 1))).to_be_bytes()
}

/// FNV-1a: a stable hash, the same in every run, for per-path ports.
fn fnv(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The fixed port of a socket path's server.
pub fn path_port(path: &str) -> u16 {
    let n = u32::from(PATH_PORTS.end() - PATH_PORTS.start()) + 1;
    PATH_PORTS.start() + (fnv(path.as_bytes()) % n) as u16
}

/// Addresses of named sockets' servers, one per path.
#[derive(Default)]
pub struct Paths {
    index: FxHashMap<Arc<str>, u32>,
}

/// Paths that get an address of their own in the order they are seen; past
/// this many, a path's address comes from its hash in the rest of the /10
/// (the map stays bounded; two such paths may then share an address).
const INDEXED: u32 = 1 << 16;

impl Paths {
    pub fn addr(&mut self, path: &Arc<str>) -> [u8; 4] {
        let n = match self.index.get(path) {
            Some(&n) => n,
            None if (self.index.len() as u32) < INDEXED - 1 => {
                let n = self.index.len() as u32 + 1;
                self.index.insert(Arc::clone(path), n);
                n
            }
            None => INDEXED + fnv(path.as_bytes()) % (SPAN_10 - INDEXED),
        };
        (NAMED_SERVERS | n).to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_blocks_do_not_overlap() {
        assert_eq!(client_addr(4242), [10, 128, 0x10, 0x92]);
        assert_eq!(client_addr(4_194_303), [10, 191, 255, 255]);
        assert_eq!(unnamed_server_addr(4242), [10, 64, 0x10, 0x92]);
        let mut p = Paths::default();
        let a: Arc<str> = "/run/a.sock".into();
        let b: Arc<str> = "/run/b.sock".into();
        assert_eq!(p.addr(&a), [10, 0, 0, 1]);
        assert_eq!(p.addr(&b), [10, 0, 0, 2]);
        assert_eq!(p.addr(&a), [10, 0, 0, 1]);
    }

    #[test]
    fn path_ports_are_stable_and_in_range() {
        let port = path_port("/run/containerd/containerd.sock");
        assert_eq!(port, path_port("/run/containerd/containerd.sock"));
        assert!(PATH_PORTS.contains(&port));
        assert!(PATH_PORTS.contains(&path_port("")));
        assert_eq!(protocol_port("http1"), Some(80));
        assert_eq!(protocol_port("http2"), Some(8080));
        assert_eq!(protocol_port("resp"), Some(6379));
        assert_eq!(protocol_port("raw"), None);
    }
}
