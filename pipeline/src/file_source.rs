//! `[source] type = "file"`: replay.
use crate::config::Registry;
pub(crate) fn register(_r: &mut Registry) {}
