//! The smallest useful spf decoder plugin: one record per event holding the
//! event's bytes as text, `{"echo":{"text":"..."}}`.
//!
//! It can also misbehave on purpose, to see what spf does with a plugin that
//! fails (its error records name the plugin; the run goes on):
//! - `panic_every = N`: panic on every Nth event (0: never, the default);
//! - `fail_every = N`: return an error on every Nth event (0: never).

use serde_json::{Map, Value};
use spf_plugin::{DecoderOutput, DecoderPlugin, Error, Event};

pub struct Echo {
    seen: u64,
    panic_every: u64,
    fail_every: u64,
    json: Vec<u8>,
}

impl DecoderPlugin for Echo {
    fn init(config: &str) -> Result<Self, Error> {
        let config: Map<String, Value> = serde_json::from_str(config)?;
        let mut echo = Echo {
            seen: 0,
            panic_every: 0,
            fail_every: 0,
            json: Vec::new(),
        };
        for (k, v) in &config {
            let n = || {
                v.as_u64()
                    .ok_or_else(|| format!("{k} must be a non-negative integer"))
            };
            match k.as_str() {
                "panic_every" => echo.panic_every = n()?,
                "fail_every" => echo.fail_every = n()?,
                other => {
                    return Err(format!(
                        "unknown key `{other}`; known keys: panic_every, fail_every"
                    )
                    .into());
                }
            }
        }
        Ok(echo)
    }

    fn decode(&mut self, event: &Event<'_>, out: &mut DecoderOutput<'_>) -> Result<(), Error> {
        self.seen += 1;
        if self.panic_every > 0 && self.seen % self.panic_every == 0 {
            panic!(
                "echo panics on event {} as configured (panic_every = {})",
                self.seen, self.panic_every
            );
        }
        if self.fail_every > 0 && self.seen % self.fail_every == 0 {
            return Err(format!(
                "echo fails on event {} as configured (fail_every = {})",
                self.seen, self.fail_every
            )
            .into());
        }
        let text = String::from_utf8_lossy(event.data);
        // Reuse one buffer: this plugin is also the benchmark's pass-through.
        self.json.clear();
        self.json.extend_from_slice(b"{\"echo\":{\"text\":");
        serde_json::to_writer(&mut self.json, &text)?;
        self.json.extend_from_slice(b"}}");
        // Serialized from a &str, so the buffer is UTF-8.
        out.record(std::str::from_utf8(&self.json)?, &text);
        Ok(())
    }
}

spf_plugin::export_decoder!("echo", Echo);
