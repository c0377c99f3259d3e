//! `records = [...]`: which kinds of record a sink writes.

use serde::Deserialize;
use spf_pipeline::config::Section;
use spf_pipeline::{Record, RecordKind};

/// A set of [`RecordKind`]s, every kind unless a sink's config names fewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct Kinds(u8);

impl Default for Kinds {
    fn default() -> Self {
        Kinds::ALL
    }
}

impl Kinds {
    pub const ALL: Kinds = Kinds((1 << RecordKind::ALL.len()) - 1);

    fn bit(kind: RecordKind) -> u8 {
        1 << kind as u8
    }

    pub fn contains(self, kind: RecordKind) -> bool {
        self.0 & Kinds::bit(kind) != 0
    }

    /// Whether a sink with this set writes `record`.
    pub fn keeps(self, record: &Record) -> bool {
        self == Kinds::ALL || self.contains(record.kind())
    }
}

impl FromIterator<RecordKind> for Kinds {
    fn from_iter<I: IntoIterator<Item = RecordKind>>(iter: I) -> Self {
        Kinds(iter.into_iter().fold(0, |bits, k| bits | Kinds::bit(k)))
    }
}

impl TryFrom<Vec<String>> for Kinds {
    type Error = String;

    fn try_from(names: Vec<String>) -> Result<Self, String> {
        if names.is_empty() {
            return Err(format!(
                "names no kind of record; name at least one of: {}",
                known()
            ));
        }
        names
            .iter()
            .map(|n| {
                RecordKind::parse(n).ok_or_else(|| {
                    format!("unknown kind of record `{n}`, expected one of: {}", known())
                })
            })
            .collect()
    }
}

/// `events = true` writes events as raw records, a kind `records` must then
/// keep; false (with an error recorded in `s`) when it does not.
pub fn events_kept(s: &mut Section<'_>, events: bool, records: Kinds) -> bool {
    if events && !records.contains(RecordKind::Event) {
        s.error(
            "records",
            "leaves out `event`, which events = true writes: add it, or drop events = true",
        );
        return false;
    }
    true
}

fn known() -> String {
    RecordKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(default)]
        records: Kinds,
    }

    fn parse(text: &str) -> Result<Kinds, String> {
        toml::from_str::<T>(text)
            .map(|t| t.records)
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn names_parse_into_a_set_and_nothing_else_does() {
        assert_eq!(parse("").unwrap(), Kinds::ALL);
        let k = parse("records = [\"exchange\", \"error\", \"exchange\"]").unwrap();
        assert!(k.contains(RecordKind::Exchange) && k.contains(RecordKind::Error));
        assert!(!k.contains(RecordKind::Frame) && !k.contains(RecordKind::Lost));
        let e = parse("records = [\"exchanges\"]").unwrap_err();
        assert!(
            e.contains("unknown kind of record `exchanges`, expected one of: event, frame, exchange, error, lost"),
            "{e}"
        );
        let e = parse("records = []").unwrap_err();
        assert!(e.contains("name at least one"), "{e}");
        assert_eq!(RecordKind::ALL.into_iter().collect::<Kinds>(), Kinds::ALL);
    }
}
