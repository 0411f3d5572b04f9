//! Google writes: batch feeds of at most 100 operations. An update is the landed `raw`
//! entry with only the changed elements replaced (every element the schema does not model
//! survives) and the etag the change was based on; a delete carries the etag too; an
//! insert carries the plan's idempotency key as an extended property. Results are matched
//! by `batch:id`, else `atom:id`, else position; after `batch:interrupted` the unprocessed
//! tail is sent again.

mod batch;
mod merge;
mod render;

pub use batch::{BatchResult, parse_batch_response};
pub use merge::{atom_id, update_entry};
pub use render::{data_bytes, entry_data_bytes, insert_entry, unwritable};

use super::GoogleSource;

const ATOM: &str = "http://www.w3.org/2005/Atom";
const GD: &str = "http://schemas.google.com/g/2005";
const GCONTACT: &str = "http://schemas.google.com/contact/2008";
const BATCH: &str = "http://schemas.google.com/gdata/batch";
/// Operations per batch request (the API's limit).
pub const BATCH_SIZE: usize = 100;
const MAX_RESUBMITS: usize = 5;

#[cfg(test)]
mod tests {
    use super::batch::refused;
    use super::*;
    use crate::model::schema::ContactRecord;
    use crate::model::write::{Action, Op, Outcome, WRITABLE, merge_managed};
    use quick_xml::events::Event;

    const RAW: &str = r#"<entry xmlns="http://www.w3.org/2005/Atom" xmlns:gd="http://schemas.google.com/g/2005" xmlns:gContact="http://schemas.google.com/contact/2008" gd:etag="&quot;old.&quot;"><id>http://www.google.com/m8/feeds/contacts/example.com/base/abc</id><content type="text">old notes</content><gd:email rel="http://schemas.google.com/g/2005#work" address="a@x.org"/><gContact:userDefinedField key="k" value="kept &amp; sound"/><x:unknown xmlns:x="urn:x">stays</x:unknown></entry>"#;

    /// A changed list keeps the items that did not change as they came: attributes and
    /// children the schema does not model survive; only the changed item is rendered anew.
    #[test]
    fn an_update_of_a_list_keeps_unchanged_items_whole() {
        let raw = r#"<entry xmlns="http://www.w3.org/2005/Atom" xmlns:gd="http://schemas.google.com/g/2005"><id>http://x/base/abc</id><gd:structuredPostalAddress rel="http://schemas.google.com/g/2005#work" mailClass="http://schemas.google.com/g/2005#letters"><gd:agent>c/o Desk</gd:agent><gd:city>Paris</gd:city></gd:structuredPostalAddress><gd:structuredPostalAddress rel="http://schemas.google.com/g/2005#home"><gd:housename>Rose</gd:housename><gd:city>Lyon</gd:city></gd:structuredPostalAddress></entry>"#;
        let ctx = super::super::decode::RecordContext {
            source: "s".into(),
            account: "a".into(),
            run_id: "r".into(),
            synced_at_us: 0,
        };
        let feed = format!(
            r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:gd="http://schemas.google.com/g/2005">{}</feed>"#,
            raw.replacen("<entry xmlns=\"http://www.w3.org/2005/Atom\" xmlns:gd=\"http://schemas.google.com/g/2005\">", "<entry>", 1)
                .replace("<id>http://x/base/abc</id>", "<id>http://x/base/abc</id><updated>2020-01-01T00:00:00Z</updated>")
        );
        let landed = super::super::decode::decode_feed(feed.as_bytes(), &ctx, "p")
            .unwrap()
            .records()
            .unwrap()
            .remove(0);
        assert_eq!(landed.addresses.len(), 2);
        let mut merged = landed.clone();
        merged.addresses[1].city = Some("Nice".into());
        let out = update_entry(raw, &merged, &["addresses".into()], None, Some(&landed)).unwrap();
        assert!(
            out.contains("<gd:agent>c/o Desk</gd:agent>") && out.contains("mailClass="),
            "the unchanged item is kept whole: {out}"
        );
        assert!(out.contains("Nice") && !out.contains("Lyon"), "{out}");
    }

    #[cfg(feature = "emulator")]
    #[test]
    fn an_update_replaces_only_changed_elements() {
        let merged = ContactRecord {
            notes: Some("new <notes>".into()),
            emails: vec![crate::model::schema::Email {
                address: Some("a@x.org".into()),
                kind: Some("work".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = update_entry(RAW, &merged, &["notes".into()], Some("\"old.\""), None).unwrap();
        assert!(
            out.contains("new &lt;notes&gt;") && !out.contains("old notes"),
            "{out}"
        );
        assert!(
            out.contains("userDefinedField")
                && out.contains("kept &amp; sound")
                && out.contains("<x:unknown xmlns:x=\"urn:x\">stays</x:unknown>"),
            "{out}"
        );
        assert!(out.contains("gd:email"), "{out}");
        assert_eq!(out.matches("gd:etag").count(), 1, "{out}");
        // Still a valid standalone entry.
        crate::emulator::xml::parse(out.as_bytes()).unwrap();
        assert_eq!(
            atom_id(RAW).as_deref(),
            Some("http://www.google.com/m8/feeds/contacts/example.com/base/abc")
        );
    }

    #[test]
    fn batch_responses_parse_with_both_interrupted_spellings() {
        let body = br#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:batch="http://schemas.google.com/gdata/batch" xmlns:gd="http://schemas.google.com/g/2005">
<entry gd:etag="&quot;n.&quot;"><id>http://x/base/abc</id><batch:id>0</batch:id><batch:status code="200" reason="Success"/></entry>
<entry><title>Error</title><batch:status code="412" reason="Etags mismatch"/></entry>
<batch:interrupted reason="x" parsed="3" success="1" error="1"/></feed>"#;
        let (r, i) = parse_batch_response(body).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].batch_id.as_deref(), Some("0"));
        assert_eq!(r[0].atom_id.as_deref(), Some("abc"));
        assert_eq!(r[0].etag.as_deref(), Some("\"n.\""));
        assert_eq!(r[1].code, Some(412));
        assert!(i.unwrap().contains("failures=\"1\""));
    }

    /// The local names of the elements of an entry, or the parse error.
    fn element_names(xml: &str) -> std::result::Result<Vec<String>, String> {
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut out = Vec::new();
        loop {
            match reader.read_event().map_err(|e| format!("{e}: {xml}"))? {
                Event::Start(e) | Event::Empty(e) => {
                    out.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned())
                }
                Event::Eof => return Ok(out),
                _ => {}
            }
        }
    }

    /// Values meant to close their attribute or element and open another.
    const PAYLOADS: &[&str] = &[
        "x\"/><gd:email address=\"injected@evil.example\"/><x y=\"",
        "x'/><gd:email address='injected@evil.example'/><x y='",
        "x</gd:name></entry><entry><gd:email address=\"injected@evil.example\"/>",
        "x]]><gd:email address=\"injected@evil.example\"/>&amp;&#1;\r\n\t",
    ];

    /// A quote, `<`, `>`, `&`, CR or LF in any text of any writable column, in an insert or
    /// an update, stays inside its attribute or element: the entry parses and holds no
    /// added element.
    #[test]
    fn no_value_of_any_writable_column_leaves_its_element() {
        use crate::model::write::{WRITABLE, poisoned};
        let landed = ContactRecord {
            id: "abc".into(),
            notes: Some("old notes".into()),
            emails: vec![crate::model::schema::Email {
                address: Some("a@x.org".into()),
                kind: Some("work".into()),
                ..Default::default()
            }],
            raw: Some(RAW.into()),
            ..Default::default()
        };
        for column in WRITABLE {
            for payload in PAYLOADS {
                let r = poisoned(column, payload);
                let managed = vec![column.to_string()];
                let plain = insert_entry(
                    &ContactRecord {
                        id: "c1".into(),
                        display_name: Some("Ada".into()),
                        ..Default::default()
                    },
                    &managed,
                    "cetl-0123456789abcdef0123",
                );
                let entry = insert_entry(&r, &managed, "cetl-0123456789abcdef0123");
                let (want, got) = (element_names(&plain).unwrap(), element_names(&entry));
                let got = got.unwrap_or_else(|e| panic!("{column}: {e}"));
                let count = |v: &[String], n: &str| v.iter().filter(|x| *x == n).count();
                assert_eq!(count(&got, "entry"), 1, "{column}: {entry}");
                let emails = if *column == "emails" { 1 } else { 0 };
                assert_eq!(count(&got, "email"), emails, "{column}: {entry}");
                assert_eq!(
                    count(&got, "extendedProperty"),
                    count(&want, "extendedProperty")
                        + usize::from(*column == "extended_properties"),
                    "{column}: {entry}"
                );
                let mut merged = landed.clone();
                merge_managed(&mut merged, &r, &managed);
                let entry = update_entry(RAW, &merged, &managed, Some("e"), Some(&landed)).unwrap();
                let got = element_names(&entry).unwrap_or_else(|e| panic!("{column}: {e}"));
                assert_eq!(count(&got, "entry"), 1, "{column}: {entry}");
                let emails = if *column == "emails" {
                    1
                } else {
                    landed.emails.len()
                };
                assert_eq!(count(&got, "email"), emails, "{column}: {entry}");
                assert!(
                    !entry.contains("\r") && !entry.contains('\u{1}'),
                    "{column}: {entry}"
                );
            }
        }
    }

    /// A character XML forbids is found in every writable column, named by it.
    #[test]
    fn every_writable_column_is_checked() {
        for column in WRITABLE {
            let why = unwritable(&crate::model::write::poisoned(column, "x\u{1}y"));
            assert!(
                why.iter().any(|w| w.starts_with(column)),
                "{column}: {why:?}"
            );
        }
    }

    /// Text the XML forbids and extended-property XML that would leave its element are
    /// refused by the rules and by the write.
    #[test]
    fn unwritable_values_are_refused() {
        let mut r = ContactRecord {
            display_name: Some("Ada\u{1}".into()),
            ..Default::default()
        };
        assert!(
            unwritable(&r)[0].starts_with("display_name"),
            "{:?}",
            unwritable(&r)
        );
        r.display_name = Some("Ada\r\n<&>\"'".into());
        assert!(unwritable(&r).is_empty());
        for (xml, ok) in [
            ("<a:b xmlns:a=\"urn:a\">text &amp; more</a:b>", true),
            ("plain text", true),
            ("", true),
            (
                "</gd:extendedProperty><gd:email address=\"injected@evil.example\"/><gd:extendedProperty>",
                false,
            ),
            ("<a>", false),
            ("</a>", false),
            ("&nbsp;", false),
            ("<?xml version=\"1.0\"?><a/>", false),
            ("<!DOCTYPE a [<!ENTITY e \"x\">]><a/>", false),
        ] {
            r.extended_properties = vec![crate::model::schema::ExtendedProperty {
                name: Some("n".into()),
                value: None,
                xml: Some(xml.into()),
            }];
            assert_eq!(unwritable(&r).is_empty(), ok, "{xml}");
            let op = Op {
                index: 1,
                account: "example.com".into(),
                key: "cetl-0123456789abcdef0123".into(),
                action: Action::Insert { desired: r.clone() },
            };
            assert_eq!(refused(&op).is_none(), ok, "{xml}");
            if !ok {
                assert_eq!(refused(&op).unwrap().outcome, Outcome::Invalid);
            }
        }
    }
}
