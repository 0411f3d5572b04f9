//! Target 2: the Aurinko JSON decoders (`parse_page`, `decode_contacts`, `decode_deleted`).

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use contacts_etl::providers::aurinko::decode::{
    ContactJ, DeletedJ, decode_contacts, decode_deleted, parse_page,
};

use crate::inputs::{mutated, odd_datetime, odd_number, odd_text};
use crate::seeds::{ctx, served, shared};
use crate::{error_is_worded, fuzz};

/// Parses a body as both kinds of page and decodes it; an `Ok` batch reads back as
/// records, and every id it gives is not empty.
pub fn check(body: &[u8]) -> Result<(), TestCaseError> {
    match parse_page::<ContactJ>(body, "page") {
        Ok(page) => {
            let n = page.records.len();
            match decode_contacts(page.records, &ctx(), "page") {
                Ok(d) => {
                    prop_assert_eq!(d.batch.num_rows() + d.deleted.len(), n);
                    let rs = contacts_etl::model::schema::batches_to_records(&[d.batch])
                        .map_err(|e| TestCaseError::fail(format!("does not read back: {e}")))?;
                    prop_assert!(rs.iter().all(|r| !r.id.is_empty()));
                    prop_assert!(d.deleted.iter().all(|id| !id.is_empty()));
                }
                Err(e) => error_is_worded(&e)?,
            }
        }
        Err(e) => error_is_worded(&e)?,
    }
    match parse_page::<DeletedJ>(body, "page") {
        Ok(page) => match decode_deleted(page.records, "page") {
            Ok(ids) => prop_assert!(ids.iter().all(|id| !id.is_empty())),
            Err(e) => error_is_worded(&e)?,
        },
        Err(e) => error_is_worded(&e)?,
    }
    Ok(())
}

/// A JSON value of any shape, small.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        odd_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-z]{1,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A string field's value: text mostly, else any JSON (a number where text belongs).
fn text_or_any() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => odd_text().prop_map(Value::String),
        1 => any_json(),
    ]
}

/// An object with some of `fields`, each text or odd.
fn object_of(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    proptest::collection::vec((proptest::sample::select(fields), text_or_any()), 0..5)
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

fn list_of(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        5 => proptest::collection::vec(object_of(fields), 0..4).prop_map(Value::Array),
        1 => any_json(),
    ]
}

/// A Contact object of the OAS, its fields present or not, of the right type mostly.
fn contact() -> impl Strategy<Value = Value> {
    let parts = (
        proptest::option::of(prop_oneof![odd_text().prop_map(Value::String), any_json()]),
        proptest::option::of(text_or_any()),
        proptest::option::of(prop_oneof![
            odd_datetime().prop_map(Value::String),
            any_json()
        ]),
        proptest::option::of(object_of(&[
            "displayName",
            "givenName",
            "middleName",
            "familyName",
            "prefix",
            "suffix",
        ])),
        proptest::option::of(object_of(&["name", "jobTitle", "department"])),
        proptest::option::of(list_of(&["address", "name", "type"])),
        proptest::option::of(list_of(&["number", "type"])),
        proptest::option::of(list_of(&[
            "street",
            "streetLine2",
            "poBox",
            "city",
            "state",
            "postalCode",
            "country",
            "type",
        ])),
    );
    let more = (
        proptest::option::of(list_of(&["href", "type"])),
        proptest::option::of(list_of(&["name", "value", "type"])),
        proptest::option::of(text_or_any()),
        proptest::option::of(prop_oneof![
            proptest::collection::vec(text_or_any(), 0..4).prop_map(Value::Array),
            any_json()
        ]),
        proptest::option::of(any_json()),
        proptest::option::of(prop_oneof![any::<bool>().prop_map(Value::Bool), any_json()]),
        proptest::option::of(odd_number()),
    );
    (parts, more).prop_map(|(p, m)| {
        let mut o = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                o.insert(k.to_string(), v);
            }
        };
        put("id", p.0);
        put("etag", p.1);
        put("lastModifiedTime", p.2);
        put("name", p.3);
        put("company", p.4);
        put("emailAddresses", p.5);
        put("phoneNumbers", p.6);
        put("addresses", p.7);
        put("urls", m.0);
        put("relations", m.1);
        put("notes", m.2);
        put("keywords", m.3);
        put("nativeProperties", m.4);
        put("deleted", m.5);
        put("nickName", m.6.map(Value::String));
        Value::Object(o)
    })
}

/// A page: records, tokens, unknown fields, sometimes spaced or escaped oddly.
fn page() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(contact(), 0..6),
        proptest::option::of(text_or_any()),
        proptest::option::of(text_or_any()),
        proptest::option::of(any_json()),
        0u8..4,
    )
        .prop_map(|(records, next, delta, extra, style)| {
            let mut o = Map::new();
            if let Some(e) = extra {
                o.insert("length".into(), e);
            }
            o.insert("records".into(), Value::Array(records));
            if let Some(n) = next {
                o.insert("nextPageToken".into(), n);
            }
            if let Some(d) = delta {
                o.insert("nextDeltaToken".into(), d);
            }
            let v = Value::Object(o);
            match style {
                0 => serde_json::to_vec_pretty(&v).unwrap(),
                // Every non-ASCII character escaped, as some servers send them.
                1 => v
                    .to_string()
                    .chars()
                    .map(|c| {
                        if c.is_ascii() {
                            c.to_string()
                        } else {
                            c.encode_utf16(&mut [0; 2])
                                .iter()
                                .map(|u| format!("\\u{u:04x}"))
                                .collect()
                        }
                    })
                    .collect::<String>()
                    .into_bytes(),
                _ => v.to_string().into_bytes(),
            }
        })
}

#[test]
fn fuzz_aurinko_mutated_pages() {
    fuzz(
        "aurinko_mutated",
        mutated(shared(served().aurinko.clone())),
        Vec::clone,
        |b| check(&b),
    );
}

#[test]
fn fuzz_aurinko_generated_pages() {
    fuzz("aurinko_generated", page(), Vec::clone, |b| check(&b));
}

/// The seeds decode, so the mutations start from pages the decoder accepts.
#[test]
fn aurinko_seeds_decode() {
    for (i, s) in served().aurinko.iter().enumerate() {
        let page = parse_page::<ContactJ>(s, "seed").unwrap_or_else(|e| panic!("seed {i}: {e}"));
        decode_contacts(page.records, &ctx(), "seed").unwrap();
    }
}
