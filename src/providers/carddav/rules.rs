//! What a CardDAV write refuses before anything is sent: a contact with no name at all,
//! because RFC 6350 §6.2.1 requires `FN` in every vCard and without a display name, given
//! name or family name there is nothing to write in it (the write-back derives `FN` from
//! the name parts when `display_name` is blank); and a value a vCard cannot carry as it
//! is (see [`super::writeback::unwritable`]). Nothing else is certainly invalid: the
//! server's own 4xx decides the rest.

use crate::model::schema::ContactRecord;
use crate::providers::Rules;

/// CardDAV's write rules.
pub struct CardDavRules;

impl Rules for CardDavRules {
    fn fields(&self, r: &ContactRecord) -> Vec<String> {
        let blank = |v: &Option<String>| v.as_deref().is_none_or(|n| n.trim().is_empty());
        let mut out = Vec::new();
        if blank(&r.display_name) && blank(&r.given_name) && blank(&r.family_name) {
            out.push("display_name: a vCard needs FN (RFC 6350 §6.2.1); give the contact a display_name or a name".into());
        }
        // A value that would leave its property (a line break in a URI, a date that is
        // not one) is refused rather than written.
        out.extend(super::writeback::unwritable(r));
        out
    }
    fn limits(&self, _: &ContactRecord, _: Option<&ContactRecord>, _: &[String]) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vcard_needs_a_display_name() {
        let mut r = ContactRecord::default();
        assert_eq!(CardDavRules.fields(&r).len(), 1);
        r.display_name = Some("  ".into());
        assert!(CardDavRules.fields(&r)[0].contains("FN"));
        r.display_name = Some("Ada".into());
        assert!(CardDavRules.fields(&r).is_empty());
        r.display_name = None;
        r.family_name = Some("Lovelace".into());
        assert!(CardDavRules.fields(&r).is_empty());
    }

    /// A website with a line break or a birthday that is not a date is refused by the
    /// rules, naming the column.
    #[test]
    fn values_a_vcard_cannot_carry_are_refused() {
        let r = ContactRecord {
            display_name: Some("Ada".into()),
            birthday: Some("1815-12-10\r\nEND:VCARD".into()),
            websites: vec![crate::model::schema::Website {
                href: Some("https://x.example/\r\nEMAIL:injected@evil.example".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let why = CardDavRules.fields(&r);
        assert!(why.iter().any(|w| w.starts_with("birthday")), "{why:?}");
        assert!(
            why.iter().any(|w| w.starts_with("websites[0].href")),
            "{why:?}"
        );
    }
}
