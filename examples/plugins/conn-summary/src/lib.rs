//! An spf sink plugin that summarises traffic per connection: who talked, over
//! which path, how many events, bytes and records each way, and how many were
//! errors. The summary is a JSON file, rewritten (atomically) at every flush that
//! saw new records and once more at shutdown:
//!
//! ```json
//! {"connections":[{"conn":7,"path":"/run/redis.sock","pids":[311,312],
//!   "comms":["redis-cli","redis-server"],"first_time":"...","last_time":"...",
//!   "send":{"events":3,"bytes":120},"recv":{"events":3,"bytes":96},
//!   "records":12,"errors":0,"decoders":["resp"]}],"lost":0,"records":12}
//! ```
//!
//! Events and bytes are counted from the records' event metadata, once per event.
//! A sink only sees events that produced a record, so for exact counts set spf's
//! `events = true` on this sink: it then also receives every event as a raw
//! record, which counts towards events and bytes but not towards `records`.
//!
//! Config keys:
//! - `output` (required): absolute path of the summary file.
//! - `raw_decoder` (default false): set it when the run's decoder is `raw`, so
//!   that raw records count as records.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;

use serde_json::{Map, Value, json};
use spf_plugin::{Error, SinkPlugin};

#[derive(Default)]
struct Flow {
    events: u64,
    bytes: u64,
    /// Kernel time of the last event counted: one event's records arrive one after
    /// another with the same `ts_ns`, and its bytes must count once.
    last_ts: Option<u64>,
}

#[derive(Default)]
struct Conn {
    path: String,
    pids: BTreeSet<u64>,
    comms: BTreeSet<String>,
    first_time: String,
    last_time: String,
    send: Flow,
    recv: Flow,
    records: u64,
    errors: u64,
    decoders: BTreeSet<String>,
    /// Raw records of syscalls came for this connection: they alone count as
    /// events.
    saw_syscalls: bool,
}

pub struct ConnSummary {
    output: PathBuf,
    conns: BTreeMap<u64, Conn>,
    lost: u64,
    records: u64,
    /// The run's decoder is `raw` itself, so raw records are its records too.
    raw_decoder: bool,
    dirty: bool,
}

impl SinkPlugin for ConnSummary {
    fn init(config: &str) -> Result<Self, Error> {
        let config: Map<String, Value> = serde_json::from_str(config)?;
        let mut output = None;
        let mut raw_decoder = false;
        for (k, v) in &config {
            match k.as_str() {
                "output" => {
                    output = Some(v.as_str().ok_or("output must be a string (a file path)")?)
                }
                "raw_decoder" => {
                    raw_decoder = v.as_bool().ok_or("raw_decoder must be true or false")?
                }
                other => {
                    return Err(
                        format!("unknown key `{other}`; known keys: output, raw_decoder").into(),
                    );
                }
            }
        }
        let output =
            PathBuf::from(output.ok_or("missing `output`: the absolute path of the summary file")?);
        if !output.is_absolute() {
            return Err(format!("output `{}` must be an absolute path", output.display()).into());
        }
        let s = ConnSummary {
            output,
            conns: BTreeMap::new(),
            lost: 0,
            records: 0,
            raw_decoder,
            dirty: true,
        };
        // Fail now, with the reason, rather than at the first flush.
        s.write_file()?;
        Ok(s)
    }

    fn write(&mut self, line: &str) -> Result<(), Error> {
        let r: Map<String, Value> = serde_json::from_str(line)?;
        self.dirty = true;
        if let Some(n) = r.get("lost").and_then(Value::as_u64) {
            self.records += 1;
            self.lost += n;
            return Ok(());
        }
        let conn = r
            .get("conn")
            .and_then(Value::as_u64)
            .ok_or("record without `conn`")?;
        let c = self.conns.entry(conn).or_default();
        let str_of = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
        // With spf's `events = true` every event also arrives as a raw record: it
        // counts as an event, not as one of the decoder's records.
        if str_of("decoder") != "raw" || self.raw_decoder {
            self.records += 1;
            c.records += 1;
            c.decoders.insert(str_of("decoder").to_string());
            if r.contains_key("error") {
                c.errors += 1;
            }
        }
        if c.path.is_empty() {
            c.path = str_of("path").to_string();
        }
        for k in ["pid", "peer_pid"] {
            if let Some(p) = r.get(k).and_then(Value::as_u64).filter(|&p| p != 0) {
                c.pids.insert(p);
            }
        }
        if !str_of("comm").is_empty() {
            c.comms.insert(str_of("comm").to_string());
        }
        let time = str_of("time");
        if c.first_time.is_empty() || time < c.first_time.as_str() {
            c.first_time = time.to_string();
        }
        if time > c.last_time.as_str() {
            c.last_time = time.to_string();
        }
        // Raw records of syscalls (from `events = true`) are the events; in
        // the connection view a decoder's record stands for the bytes of one of
        // them again, seen from the sender, so once raw records come it no
        // longer counts as an event.
        let syscall = str_of("decoder") == "raw" && !r.contains_key("via");
        c.saw_syscalls |= syscall;
        if c.saw_syscalls && !syscall {
            return Ok(());
        }
        let flow = if str_of("dir") == "recv" {
            &mut c.recv
        } else {
            &mut c.send
        };
        let ts = r.get("ts_ns").and_then(Value::as_u64);
        if ts.is_none() || ts != flow.last_ts {
            flow.events += 1;
            flow.bytes += r.get("len").and_then(Value::as_u64).unwrap_or(0);
            flow.last_ts = ts;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        if self.dirty {
            self.write_file()?;
            self.dirty = false;
        }
        Ok(())
    }
}

impl Drop for ConnSummary {
    fn drop(&mut self) {
        if self.dirty
            && let Err(e) = self.write_file()
        {
            eprintln!("conn-summary: cannot write {}: {e}", self.output.display());
        }
    }
}

impl ConnSummary {
    fn summary(&self) -> Value {
        let conns: Vec<Value> = self
            .conns
            .iter()
            .map(|(id, c)| {
                json!({
                    "conn": id,
                    "path": c.path,
                    "pids": c.pids,
                    "comms": c.comms,
                    "first_time": c.first_time,
                    "last_time": c.last_time,
                    "send": {"events": c.send.events, "bytes": c.send.bytes},
                    "recv": {"events": c.recv.events, "bytes": c.recv.bytes},
                    "records": c.records,
                    "errors": c.errors,
                    "decoders": c.decoders,
                })
            })
            .collect();
        json!({"connections": conns, "lost": self.lost, "records": self.records})
    }

    /// Writes next to the target and renames, so a reader never sees half a file.
    fn write_file(&self) -> std::io::Result<()> {
        let mut tmp = self.output.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut f, &self.summary())?;
        f.write_all(b"\n")?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.output)
    }
}

spf_plugin::export_sink!("conn-summary", ConnSummary);

#[cfg(test)]
mod tests {
    use super::*;

    fn line(conn: u64, dir: &str, ts: u64, len: u64, decoder: &str, error: bool) -> String {
        let mut v = json!({
            "ts_ns": ts, "time": format!("2026-01-01T00:00:{:02}.000000000Z", ts),
            "pid": 10, "peer_pid": 20, "comm": "cli", "path": "/run/x.sock",
            "dir": dir, "conn": conn, "len": len, "decoder": decoder,
        });
        if error {
            v["error"] = json!({"code": null, "message": "bad"});
        }
        v.to_string()
    }

    #[test]
    fn counts_each_event_once_and_raw_records_as_events() {
        let dir = std::env::temp_dir().join(format!("conn-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("summary.json");
        let cfg = json!({ "output": out.display().to_string() }).to_string();
        let mut s = ConnSummary::init(&cfg).unwrap();
        // Event 1 (raw line from `events = true`, then two records), event 2 (raw
        // only: no record), event 3 on the other direction with an error
        // record.
        for l in [
            line(7, "send", 1, 100, "raw", false),
            line(7, "send", 1, 100, "resp", false),
            line(7, "send", 1, 100, "resp", false),
            line(7, "send", 2, 50, "raw", false),
            line(7, "recv", 3, 9, "raw", false),
            line(7, "recv", 3, 9, "resp", true),
            json!({"ts_ns": 4, "time": "2026-01-01T00:00:04.000000000Z", "lost": 3}).to_string(),
        ] {
            s.write(&l).unwrap();
        }
        s.flush().unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let c = &v["connections"][0];
        assert_eq!(c["send"], json!({"events": 2, "bytes": 150}));
        assert_eq!(c["recv"], json!({"events": 1, "bytes": 9}));
        assert_eq!(c["records"], 3);
        assert_eq!(c["errors"], 1);
        assert_eq!(c["decoders"], json!(["resp"]));
        assert_eq!(c["pids"], json!([10, 20]));
        assert_eq!(v["lost"], 3);
        assert_eq!(v["records"], 4);
        assert!(s.write("not json").is_err());
        assert!(ConnSummary::init("{\"output\":\"relative.json\"}").is_err());
        assert!(ConnSummary::init("{\"outptu\":\"/x\"}").is_err());
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
