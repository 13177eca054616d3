//! Where sealed segments are kept, and the key their data keys are wrapped under.

use std::collections::BTreeMap;

use crate::core::error::ActionError;
use crate::core::platform::Platform;

/// The bucket that holds every sealed segment: reached only through the auditor's actions.
pub(super) const RECORDINGS_BUCKET: &str = "datasandbox-recordings";
/// The key that wraps each segment's data key.
const KEY_ALIAS: &str = "alias/datasandbox/recordings";

pub(super) fn object_key(session_id: &str, segment: u64) -> String {
    format!("{session_id}/{segment:06}.dsrec")
}

/// What a segment's data key is bound to.
pub(super) fn key_context(session_id: &str, segment: u64) -> BTreeMap<String, String> {
    BTreeMap::from([("SessionId".to_owned(), session_id.to_owned()), ("Segment".to_owned(), segment.to_string())])
}

/// The recordings key, made on first use.
pub(super) async fn recordings_key(plane: &Platform) -> Result<crate::keys::KeyRow, ActionError> {
    if let Ok(key) = crate::keys::resolve_for_use(plane, KEY_ALIAS).await {
        return Ok(key);
    }
    let key = crate::keys::insert_key(plane, "Wraps the data key of each session recording segment").await?;
    if crate::keys::insert_alias_if_absent(plane, KEY_ALIAS, key.id()).await? {
        Ok(key)
    } else {
        crate::keys::resolve_for_use(plane, KEY_ALIAS).await
    }
}
