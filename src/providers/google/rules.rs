//! What Google refuses, checked before anything is sent: rel xor label, extended
//! properties, and the limit of 10 properties. Only what is certainly invalid; the API's
//! own 400 decides the rest.
//!
//! The 2 KB of "contact data" is not one of them: Google does not document how it counts
//! it, so the local count is an estimate, said in the plan as a warning and never a
//! reason not to send.

use super::writeback::{data_bytes, entry_data_bytes, update_entry};
use crate::model::schema::ContactRecord;
use crate::model::write::KEY_PROPERTY;
use crate::providers::Rules;

/// Extended properties Google allows on a contact.
pub const MAX_EXTENDED_PROPERTIES: usize = 10;
/// Bytes of contact data Google accepts (as it counts them, which the client can only
/// estimate).
pub const MAX_CONTACT_BYTES: usize = 2048;

/// Google's write rules.
pub struct GoogleRules;

impl Rules for GoogleRules {
    fn fields(&self, r: &ContactRecord) -> Vec<String> {
        let mut out = Vec::new();
        let mut one = |what: &str, i: usize, t: &Option<String>, l: &Option<String>| {
            let (t, l) = (
                t.as_deref().is_some_and(|s| !s.is_empty()),
                l.as_deref().is_some_and(|s| !s.is_empty()),
            );
            if t == l {
                out.push(format!("{what}[{i}] needs exactly one of type or label (Google refuses both or neither)"));
            }
        };
        for (i, e) in r.emails.iter().enumerate() {
            one("emails", i, &e.kind, &e.label);
        }
        for (i, e) in r.phones.iter().enumerate() {
            one("phones", i, &e.kind, &e.label);
        }
        for (i, e) in r.addresses.iter().enumerate() {
            one("addresses", i, &e.kind, &e.label);
        }
        for (i, e) in r.ims.iter().enumerate() {
            one("ims", i, &e.kind, &e.label);
        }
        for (i, e) in r.organizations.iter().enumerate() {
            one("organizations", i, &e.kind, &e.label);
        }
        for (i, p) in r.extended_properties.iter().enumerate() {
            if p.name.as_deref().is_none_or(str::is_empty) {
                out.push(format!("extended_properties[{i}] has no name"));
            }
            // The API documents the two as mutually exclusive; a property with neither is
            // left for the API to judge.
            if p.value.is_some() && p.xml.is_some() {
                out.push(format!(
                    "extended_properties[{i}] has both a value and xml (Google allows one)"
                ));
            }
        }
        out.extend(super::writeback::unwritable(r));
        out
    }

    /// The insert key counts towards the property limit on inserts (rows without an id)
    /// only; an update is measured beside the contact as it is held.
    fn limits(
        &self,
        r: &ContactRecord,
        held: Option<&ContactRecord>,
        _managed: &[String],
    ) -> Vec<String> {
        let mut out = Vec::new();
        let props = |r: &ContactRecord| {
            r.extended_properties
                .iter()
                .filter(|p| p.name.as_deref() != Some(KEY_PROPERTY))
                .count()
        };
        let key = usize::from(r.id.is_empty());
        let n = props(r) + key;
        if n > MAX_EXTENDED_PROPERTIES && held.is_none_or(|h| n > props(h)) {
            out.push(if key == 1 {
                format!("{n} extended properties (with the insert key); Google allows {MAX_EXTENDED_PROPERTIES}")
            } else {
                format!("{n} extended properties; Google allows {MAX_EXTENDED_PROPERTIES}")
            });
        }
        out
    }

    /// The size estimate: the record as an insert would send it, and (for an update) the
    /// entry as it will be sent, beside the contact as it is held. Google counts every
    /// element of the entry, the ones the schema does not model too.
    fn warnings(
        &self,
        r: &ContactRecord,
        held: Option<&ContactRecord>,
        managed: &[String],
    ) -> Vec<String> {
        let estimate = |bytes: usize, after: &str| {
            format!(
                "about {bytes} bytes of contact data{after} by the local estimate; Google allows {MAX_CONTACT_BYTES} as it counts them, and its answer decides"
            )
        };
        let bytes = data_bytes(r);
        if bytes > MAX_CONTACT_BYTES && held.is_none_or(|h| bytes > data_bytes(h)) {
            return vec![estimate(bytes, "")];
        }
        if let Some(raw) = held.and_then(|h| h.raw.as_deref())
            && let Ok(entry) = update_entry(raw, r, managed, None, held)
        {
            let bytes = entry_data_bytes(&entry);
            if bytes > MAX_CONTACT_BYTES && bytes > entry_data_bytes(raw) {
                return vec![estimate(bytes, " after the change")];
            }
        }
        Vec::new()
    }
}
