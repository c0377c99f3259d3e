//! What one NATS message of spf holds, shared by the sink that writes it and
//! the source that reads it.
//!
//! The payload is NDJSON: one or more complete lines, exactly as the ndjson
//! sink writes them (each event's line stamped with its node); or, for raw
//! events published with `format = "spfcap"`, a binary capture (its magic,
//! then records, see `spf_pipeline::capture`). Either way a message saved to
//! a file replays with the `file` source, and a reader tells them apart by
//! the magic. Headers say where the message stands in its sender's sequence:
//!
//! * `Spf-Node`: the node's name;
//! * `Spf-Run`: one id per sink per run of spf (a restarted node starts a new
//!   sequence, and must not look like a repeat of the old one);
//! * `Spf-Seq`: 1, 2, 3, ... per (node, run, subject), no gaps: a gap is a
//!   message that never arrived;
//! * `Spf-Records`: how many records (lines) the message holds;
//! * `Spf-First`: the number of its first record in the (node, run, subject)
//!   numbering, so that a receiver that gives up on a missing message knows
//!   how many records it held;
//! * `Nats-Msg-Id`: node, run and sequence in one, so that JetStream itself
//!   drops a message published twice within its duplicate window.

pub const NODE: &str = "Spf-Node";
pub const RUN: &str = "Spf-Run";
pub const SEQ: &str = "Spf-Seq";
pub const RECORDS: &str = "Spf-Records";
pub const FIRST: &str = "Spf-First";

/// JetStream's own de-duplication header.
pub const MSG_ID: &str = "Nats-Msg-Id";

/// The `Nats-Msg-Id` of a message.
pub fn msg_id(node: &str, run: &str, kind: &str, seq: u64) -> String {
    format!("{node}/{run}/{kind}/{seq}")
}

/// Which records a subject carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Raw syscall events, replayable: what a central spf decodes.
    Events,
    /// What the node's decoder made: frames, messages, errors, conversation
    /// records.
    Records,
    /// Request/response pairs.
    Exchanges,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Events, Kind::Records, Kind::Exchanges];

    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Events => "events",
            Kind::Records => "records",
            Kind::Exchanges => "exchanges",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}
