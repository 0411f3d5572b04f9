//! The cursor of a `google_directory` account: the last `nextSyncToken` and the request
//! it belongs to. The API accepts a sync token only with every other parameter of the
//! call that made it, so the parameters (`readMask`, `sources[]`, `mergeSources[]`) are
//! part of the cursor: a cursor made by other parameters (the pipeline's
//! `directory_sources` changed, or a new version reads more fields) is not sent, and the
//! run is a full extract that reconciles deletes.

use serde::{Deserialize, Serialize};

/// The fields of a person the unified schema holds (the `readMask`).
pub const READ_MASK: &str = "addresses,biographies,birthdays,clientData,emailAddresses,events,externalIds,memberships,metadata,names,nicknames,organizations,phoneNumbers,photos,relations,urls,userDefined";

/// The request a sync token was made by, and the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// `readMask` as sent.
    pub read_mask: String,
    /// `sources[]` as sent, in order.
    pub sources: Vec<String>,
    /// `mergeSources[]` as sent, in order.
    #[serde(default)]
    pub merge_sources: Vec<String>,
    /// The last page's `nextSyncToken`.
    pub sync_token: String,
}

impl Cursor {
    /// The cursor as stored with the run's data.
    pub fn encode(&self) -> String {
        // A struct of strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The stored cursor's sync token, when it was made by the same request as
    /// `current` would send (its token is ignored); `None` for a cursor of another
    /// request or one that is not a cursor of this provider, which makes the run a full
    /// extract.
    pub fn token_for(stored: &str, current: &Cursor) -> Option<String> {
        let c: Cursor = serde_json::from_str(stored).ok()?;
        (c.read_mask == current.read_mask
            && c.sources == current.sources
            && c.merge_sources == current.merge_sources
            && !c.sync_token.is_empty())
        .then_some(c.sync_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(sources: &[&str], token: &str) -> Cursor {
        Cursor {
            read_mask: READ_MASK.into(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            merge_sources: vec![],
            sync_token: token.into(),
        }
    }

    /// A stored token is sent only with the parameters that made it.
    #[test]
    fn a_token_goes_only_with_its_own_request() {
        let both = cursor(&["A", "B"], "");
        let stored = cursor(&["A", "B"], "tok1").encode();
        assert_eq!(Cursor::token_for(&stored, &both).as_deref(), Some("tok1"));
        assert_eq!(Cursor::token_for(&stored, &cursor(&["A"], "")), None);
        assert_eq!(Cursor::token_for(&stored, &cursor(&["B", "A"], "")), None);
        let mut other_mask = both.clone();
        other_mask.read_mask = "names".into();
        assert_eq!(Cursor::token_for(&stored, &other_mask), None);
        for bad in ["", "tok1", "{}", "[1]", &cursor(&["A", "B"], "").encode()] {
            assert_eq!(Cursor::token_for(bad, &both), None, "{bad}");
        }
    }
}
