//! Target 1: the Atom feed decoder (`providers::google::decode::decode_feed`).

use proptest::prelude::*;

use contacts_etl::model::schema::ContactRecord;
use contacts_etl::providers::google::decode::decode_feed;
use contacts_etl::providers::google::writeback::insert_entry;

use crate::inputs::{mutated, odd_datetime, odd_number, odd_text};
use crate::seeds::{ctx, records, served, shared};
use crate::{error_is_worded, fuzz};

/// Decodes a page; an `Ok` page's batch reads back as records, one per entry row.
pub fn check(body: &[u8]) -> Result<(), TestCaseError> {
    match decode_feed(body, &ctx(), "page") {
        Ok(page) => {
            let records = page.records().map_err(|e| {
                TestCaseError::fail(format!("a decoded page does not read back: {e}"))
            })?;
            prop_assert_eq!(records.len(), page.batch.num_rows());
            for r in &records {
                prop_assert!(!r.id.is_empty(), "an entry landed without id");
            }
            Ok(())
        }
        Err(e) => error_is_worded(&e),
    }
}

/// An element of a generated feed.
#[derive(Debug, Clone)]
struct X {
    name: String,
    attrs: Vec<(String, String)>,
    text: Option<String>,
    kids: Vec<X>,
}

/// The names a feed's elements have (with the prefixes the root binds, and some it does
/// not).
const NAMES: &[&str] = &[
    "id",
    "updated",
    "title",
    "content",
    "link",
    "category",
    "author",
    "app:edited",
    "gd:name",
    "gd:fullName",
    "gd:givenName",
    "gd:familyName",
    "gd:additionalName",
    "gd:namePrefix",
    "gd:nameSuffix",
    "gd:email",
    "gd:phoneNumber",
    "gd:im",
    "gd:structuredPostalAddress",
    "gd:formattedAddress",
    "gd:street",
    "gd:city",
    "gd:region",
    "gd:postcode",
    "gd:country",
    "gd:pobox",
    "gd:neighborhood",
    "gd:postalAddress",
    "gd:organization",
    "gd:orgName",
    "gd:orgTitle",
    "gd:orgDepartment",
    "gd:when",
    "gd:deleted",
    "gd:extendedProperty",
    "gContact:nickname",
    "gContact:fileAs",
    "gContact:birthday",
    "gContact:event",
    "gContact:relation",
    "gContact:website",
    "gContact:groupMembershipInfo",
    "gContact:userDefinedField",
    "openSearch:totalResults",
    "openSearch:startIndex",
    "x:unknown",
    "undeclared:thing",
    "entry",
    "feed",
];

const ATTRS: &[&str] = &[
    "rel",
    "label",
    "primary",
    "address",
    "protocol",
    "href",
    "startTime",
    "name",
    "value",
    "uri",
    "type",
    "when",
    "deleted",
    "gd:etag",
    "displayName",
    "key",
    "xmlns",
    "xmlns:gd",
    "xmlns:x",
    "xml:lang",
    "startIndex",
];

/// Escapes text for XML, except sometimes (a raw `<` or `&` is an input too).
fn esc(s: &str, raw: bool) -> String {
    if raw {
        return s.to_string();
    }
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
}

fn render(x: &X, raw: bool, out: &mut String) {
    out.push('<');
    out.push_str(&x.name);
    for (k, v) in &x.attrs {
        out.push_str(&format!(" {k}=\"{}\"", esc(v, false)));
    }
    if x.text.is_none() && x.kids.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    if let Some(t) = &x.text {
        out.push_str(&esc(t, raw));
    }
    for k in &x.kids {
        render(k, raw, out);
    }
    out.push_str(&format!("</{}>", x.name));
}

/// An attribute value: a rel URL, a boolean, a date, a number or odd text.
fn attr_value() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "http://schemas.google.com/g/2005#work",
                "http://schemas.google.com/g/2005#home",
                "http://schemas.google.com/contacts/2008/rel#photo",
                "http://schemas.google.com/contacts/2008/rel#edit-photo",
                "next",
                "self",
                "edit",
                "true",
                "false",
                "http://www.w3.org/2005/Atom",
                "http://schemas.google.com/g/2005",
            ][..]
        )
        .prop_map(str::to_string),
        odd_datetime(),
        odd_number(),
        odd_text(),
    ]
}

fn element() -> impl Strategy<Value = X> {
    let leaf = (
        proptest::sample::select(NAMES),
        proptest::collection::vec((proptest::sample::select(ATTRS), attr_value()), 0..4),
        proptest::option::of(prop_oneof![odd_text(), odd_number(), odd_datetime()]),
    )
        .prop_map(|(n, a, t)| X {
            name: n.to_string(),
            attrs: a.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            text: t,
            kids: vec![],
        });
    leaf.prop_recursive(4, 48, 6, |inner| {
        (
            proptest::sample::select(NAMES),
            proptest::collection::vec((proptest::sample::select(ATTRS), attr_value()), 0..3),
            proptest::collection::vec(inner, 0..6),
        )
            .prop_map(|(n, a, kids)| X {
                name: n.to_string(),
                attrs: a.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                text: None,
                kids,
            })
    })
}

/// A feed from the grammar: namespace declarations (sometimes wrong), feed elements and
/// entries of known and unknown elements with odd values.
fn feed() -> impl Strategy<Value = Vec<u8>> {
    let decls = proptest::collection::vec(
        proptest::sample::select(
            &[
                " xmlns=\"http://www.w3.org/2005/Atom\"",
                " xmlns:gd=\"http://schemas.google.com/g/2005\"",
                " xmlns:gContact=\"http://schemas.google.com/contact/2008\"",
                " xmlns:openSearch=\"http://a9.com/-/spec/opensearch/1.1/\"",
                " xmlns:app=\"http://www.w3.org/2007/app\"",
                " xmlns:x=\"urn:x\"",
                " xmlns:gd=\"http://www.w3.org/2005/Atom\"",
                " xmlns=\"\"",
                " xmlns:gd=\"\"",
            ][..],
        ),
        0..8,
    );
    let entry = (
        proptest::option::of(odd_text()),
        proptest::collection::vec(element(), 0..10),
    )
        .prop_map(|(id, kids)| {
            let mut all = Vec::new();
            if let Some(id) = id {
                all.push(X {
                    name: "id".into(),
                    attrs: vec![],
                    text: Some(format!(
                        "http://www.google.com/m8/feeds/contacts/d/base/{id}"
                    )),
                    kids: vec![],
                });
            }
            all.extend(kids);
            X {
                name: "entry".into(),
                attrs: vec![],
                text: None,
                kids: all,
            }
        });
    (
        decls,
        proptest::collection::vec(element(), 0..4),
        proptest::collection::vec(entry, 0..5),
        any::<bool>(),
        0u8..8,
    )
        .prop_map(|(decls, head, entries, raw, prolog)| {
            let mut out = String::new();
            if prolog == 0 {
                out.push_str("<?xml version='1.0' encoding='UTF-8'?>");
            }
            out.push_str("<feed");
            for d in decls {
                out.push_str(d);
            }
            out.push('>');
            for x in head.iter().chain(&entries) {
                render(x, raw && prolog == 1, &mut out);
            }
            out.push_str("</feed>");
            out.into_bytes()
        })
}

/// A real entry the write-back renders for a record, inside a feed.
pub fn feed_of_inserts(rs: &[ContactRecord]) -> Vec<u8> {
    let managed: Vec<String> = contacts_etl::plan::WRITABLE
        .iter()
        .map(|c| c.to_string())
        .collect();
    let mut out = String::from(
        "<feed xmlns=\"http://www.w3.org/2005/Atom\" xmlns:gd=\"http://schemas.google.com/g/2005\" xmlns:gContact=\"http://schemas.google.com/contact/2008\" xmlns:openSearch=\"http://a9.com/-/spec/opensearch/1.1/\">",
    );
    for (i, r) in rs.iter().enumerate() {
        let e = insert_entry(r, &managed, &format!("cetl-{i:020}"));
        // The write-back's entry carries no id (the API gives one); a feed entry has one.
        out.push_str(&e.replacen(
            '>',
            &format!(">\n<id>http://www.google.com/m8/feeds/contacts/d/base/n{i}</id>"),
            1,
        ));
    }
    out.push_str("</feed>");
    out.into_bytes()
}

fn seeds() -> Vec<Vec<u8>> {
    let mut s = served().google.clone();
    s.push(feed_of_inserts(&records()[..3]));
    s
}

#[test]
fn fuzz_atom_mutated_pages() {
    fuzz("atom_mutated", mutated(shared(seeds())), Vec::clone, |b| {
        check(&b)
    });
}

#[test]
fn fuzz_atom_generated_feeds() {
    fuzz("atom_generated", feed(), Vec::clone, |b| check(&b));
}

/// The seeds themselves decode, so the mutations start from pages the decoder accepts.
#[test]
fn atom_seeds_decode() {
    for (i, s) in seeds().iter().enumerate() {
        let page = decode_feed(s, &ctx(), "seed").unwrap_or_else(|e| panic!("seed {i}: {e}"));
        assert!(page.batch.num_rows() > 0 || i == 3, "seed {i} has entries");
    }
}
