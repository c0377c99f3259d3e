//! Integration tests: http2.
