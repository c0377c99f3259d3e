//! What pretty output and the summary both say about an exchange: whether it
//! failed, and how long it took.

use spf_pipeline::Exchange;

/// Why an exchange counts as failed, in the order they are looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The decoder set `error`: no response came, the stream was reset, ...
    Error,
    /// An HTTP status of 500 or more (HTTP/1, HTTP/2 and gRPC only: other
    /// protocols' own status codes mean what those protocols say).
    Status,
    /// A gRPC status other than 0 (OK).
    Grpc,
}

/// The protocols whose `status` is an HTTP status.
fn speaks_http(protocol: &str) -> bool {
    matches!(protocol, "http1" | "http2" | "grpc")
}

/// Whether `x` failed, and why.
pub fn failure(x: &Exchange) -> Option<Failure> {
    if x.error.is_some() {
        Some(Failure::Error)
    } else if x.status.is_some_and(|s| s >= 500) && speaks_http(&x.protocol) {
        Some(Failure::Status)
    } else if x.grpc_status.is_some_and(|g| g != 0) {
        Some(Failure::Grpc)
    } else {
        None
    }
}

/// Nanoseconds as a short human duration (`850 ns`, `12.5 µs`, `3.2 ms`, `1.50 s`).
pub fn human_duration(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_exchanges_failed() {
        let x = |protocol: &str, status, grpc, error: Option<&str>| Exchange {
            protocol: protocol.into(),
            status,
            grpc_status: grpc,
            error: error.map(str::to_string),
            ..Exchange::default()
        };
        assert_eq!(failure(&x("http1", Some(200), None, None)), None);
        assert_eq!(failure(&x("http1", Some(404), None, None)), None);
        assert_eq!(
            failure(&x("http1", Some(503), None, None)),
            Some(Failure::Status)
        );
        assert_eq!(
            failure(&x("http1", None, None, Some("no response"))),
            Some(Failure::Error)
        );
        assert_eq!(failure(&x("grpc", Some(200), Some(0), None)), None);
        assert_eq!(
            failure(&x("grpc", Some(200), Some(5), None)),
            Some(Failure::Grpc)
        );
        // A plugin's own status codes are its own.
        assert_eq!(failure(&x("resp", Some(500), None, None)), None);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(850), "850 ns");
        assert_eq!(human_duration(12_500), "12.5 µs");
        assert_eq!(human_duration(3_210_000), "3.2 ms");
        assert_eq!(human_duration(1_500_000_000), "1.50 s");
    }
}
