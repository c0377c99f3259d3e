//! What a decoder plugin hands back, checked and turned into records: the same
//! rules whether the plugin runs in spf or in an isolated child process.

use std::sync::Arc;

use serde::Deserialize;

use crate::event::{Event, Role};
use crate::record::{Endpoint, Exchange, Record};
use crate::stage::Out;

/// Error code of records that stand for a failed plugin call.
pub const PLUGIN_ERROR: &str = "PLUGIN_ERROR";
/// Error code of records a plugin emitted in a shape spf cannot use.
pub const PLUGIN_OUTPUT: &str = "PLUGIN_OUTPUT";
/// Error code of the one record that says a plugin was switched off.
pub const PLUGIN_DISABLED: &str = "PLUGIN_DISABLED";

/// Longest JSON (record or exchange) taken from a plugin in one call.
pub const MAX_OUTPUT_JSON: usize = 16 << 20;

/// NDJSON fields that spf writes itself; a plugin's record may not set them.
const RESERVED: &[&str] = &[
    "ts_ns",
    "time",
    "pid",
    "tid",
    "comm",
    "peer_pid",
    "peer_comm",
    "path",
    "sock",
    "dir",
    "conn",
    "socket",
    "peer_socket",
    "role",
    "pos",
    "skip",
    "len",
    "captured",
    "truncated",
    "via",
    "cgroup",
    "node",
    "view",
    "decoder",
    "exchange",
    "error",
    "data_b64",
    "text",
    "lost",
];

/// Where one plugin call's output goes: records tied to `event`, named after
/// the plugin.
pub(crate) struct Emit<'a, 'b> {
    pub event: &'a Arc<Event>,
    pub decoder: &'a Arc<str>,
    pub label: &'a str,
    pub out: &'a mut Out<'b>,
    /// Some output of this call was rejected.
    pub rejected: bool,
}

impl Emit<'_, '_> {
    /// Writes a `PLUGIN_OUTPUT` error record; the call then counts as failed.
    fn reject(&mut self, message: String) -> bool {
        self.rejected = true;
        self.out.push(Record::error(
            self.event.clone(),
            self.decoder.clone(),
            Some(PLUGIN_OUTPUT.into()),
            format!("{} {message}", self.label),
        ));
        false
    }

    /// A record: `json` must be a JSON object without spf's own fields.
    pub fn record(&mut self, json: &[u8], text: &[u8]) -> bool {
        if json.len() > MAX_OUTPUT_JSON {
            return self.reject(format!(
                "emitted a record of {} bytes, more than the {MAX_OUTPUT_JSON} spf takes",
                json.len()
            ));
        }
        let map = match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(json) {
            Ok(m) => m,
            Err(e) => {
                // Say what was wrong: valid JSON of another shape, or no JSON.
                return match serde_json::from_slice::<serde_json::Value>(json) {
                    Ok(other) => self.reject(format!(
                        "emitted a record that is not a JSON object but {}",
                        json_kind(&other)
                    )),
                    Err(_) => self.reject(format!("emitted a record that is not valid JSON: {e}")),
                };
            }
        };
        if let Some(k) = map.keys().find(|k| RESERVED.contains(&k.as_str())) {
            return self.reject(format!(
                "emitted a record with field `{k}`, which spf sets itself; put the plugin's fields under one key named after it"
            ));
        }
        let text = String::from_utf8_lossy(text).into_owned();
        self.out.push(Record::fields(
            self.event.clone(),
            self.decoder.clone(),
            map,
            text,
        ));
        true
    }

    /// An error record about the input.
    pub fn error(&mut self, code: &[u8], message: &[u8]) -> bool {
        let code = (!code.is_empty()).then(|| String::from_utf8_lossy(code).into_owned());
        self.out.push(Record::error(
            self.event.clone(),
            self.decoder.clone(),
            code,
            String::from_utf8_lossy(message).into_owned(),
        ));
        true
    }

    /// An exchange, as the JSON object of `SpfDecoderOut::exchange`.
    pub fn exchange(&mut self, json: &[u8]) -> bool {
        match parse_exchange(json, self.event) {
            Ok(x) => {
                self.out.push(Record::exchange(
                    self.event.clone(),
                    self.decoder.clone(),
                    x,
                ));
                true
            }
            Err(e) => self.reject(format!("emitted an exchange spf cannot use: {e}")),
        }
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Longest string field of an exchange.
const MAX_EXCHANGE_STRING: usize = 64 << 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginExchange {
    protocol: String,
    method: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    status: Option<u32>,
    grpc_status: Option<u32>,
    grpc_message: Option<String>,
    #[serde(default)]
    request_bytes: u64,
    #[serde(default)]
    response_bytes: u64,
    #[serde(default)]
    started_ns: u64,
    #[serde(default)]
    started_time_ns: u64,
    latency_ns: Option<u64>,
    error: Option<String>,
    client: Option<PluginEndpoint>,
    server: Option<PluginEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginEndpoint {
    pid: u32,
    #[serde(default)]
    comm: String,
}

/// Checks a plugin's exchange JSON and makes it an [`Exchange`]; endpoints the
/// plugin left out are taken from `event` where its role tells them.
pub(crate) fn parse_exchange(json: &[u8], event: &Event) -> Result<Exchange, String> {
    if json.len() > MAX_OUTPUT_JSON {
        return Err(format!("{} bytes of JSON", json.len()));
    }
    let x: PluginExchange = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    if !spf_plugin::valid_name_bytes(x.protocol.as_bytes()) {
        return Err(format!(
            "`protocol` {:?} must be 1 to 64 lowercase letters, digits, `-` or `_`",
            x.protocol
        ));
    }
    for (key, v) in [
        ("method", &x.method),
        ("path", &x.path),
        ("authority", &x.authority),
        ("grpc_message", &x.grpc_message),
        ("error", &x.error),
    ] {
        if let Some(v) = v
            && v.len() > MAX_EXCHANGE_STRING
        {
            return Err(format!(
                "`{key}` is {} bytes long, more than {MAX_EXCHANGE_STRING}",
                v.len()
            ));
        }
    }
    let endpoint = |e: PluginEndpoint| -> Result<Endpoint, String> {
        if e.comm.len() > 64 {
            return Err(format!(
                "an endpoint's `comm` is {} bytes long",
                e.comm.len()
            ));
        }
        Ok(Endpoint {
            pid: e.pid,
            comm: Arc::from(e.comm),
        })
    };
    let sender = Endpoint {
        pid: event.pid,
        comm: event.comm.clone(),
    };
    let receiver = Endpoint {
        pid: event.peer_pid,
        comm: event.peer_comm.clone(),
    };
    let (client_default, server_default) = match event.role {
        Role::Client => (sender, receiver),
        Role::Server => (receiver, sender),
        Role::Unknown => (Endpoint::default(), Endpoint::default()),
    };
    Ok(Exchange {
        protocol: Arc::from(x.protocol),
        method: x.method.map(Arc::from),
        path: x.path.map(Arc::from),
        authority: x.authority.map(Arc::from),
        status: x.status,
        grpc_status: x.grpc_status,
        grpc_message: x.grpc_message,
        request_bytes: x.request_bytes,
        response_bytes: x.response_bytes,
        started_ns: x.started_ns,
        started_time_ns: x.started_time_ns,
        latency_ns: x.latency_ns,
        error: x.error,
        client: x
            .client
            .map(endpoint)
            .transpose()?
            .unwrap_or(client_default),
        server: x
            .server
            .map(endpoint)
            .transpose()?
            .unwrap_or(server_default),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges_from_the_sdk_are_taken_and_bad_ones_named() {
        let sdk = spf_plugin::Exchange {
            protocol: "resp",
            method: Some("GET \"quoted\"\n"),
            path: Some("key"),
            status: Some(0),
            request_bytes: 20,
            response_bytes: 7,
            started_ns: 5,
            started_time_ns: 6,
            latency_ns: Some(100),
            server: Some(spf_plugin::Endpoint {
                pid: 9,
                comm: "redis-server",
            }),
            ..Default::default()
        };
        let event = Event {
            pid: 3,
            comm: Arc::from("cli"),
            peer_pid: 9,
            role: Role::Client,
            ..Event::default()
        };
        let x = parse_exchange(sdk.to_json().as_bytes(), &event).unwrap();
        assert_eq!(x.protocol.as_ref(), "resp");
        assert_eq!(x.method.as_deref(), Some("GET \"quoted\"\n"));
        assert_eq!(x.latency_ns, Some(100));
        assert_eq!((x.request_bytes, x.response_bytes), (20, 7));
        assert_eq!((x.client.pid, x.client.comm.as_ref()), (3, "cli"));
        assert_eq!((x.server.pid, x.server.comm.as_ref()), (9, "redis-server"));

        for (json, needle) in [
            (r#"{"method":"GET"}"#, "missing field `protocol`"),
            (r#"{"protocol":"Bad Name"}"#, "`protocol`"),
            (r#"{"protocol":"x","status":-1}"#, "invalid value"),
            (r#"{"protocol":"x","colour":1}"#, "unknown field `colour`"),
            (r#"[1]"#, "invalid type"),
            (r#"{"protocol":"x""#, "EOF"),
        ] {
            let e = parse_exchange(json.as_bytes(), &event).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }
}
