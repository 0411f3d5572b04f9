//! The unified contact schema.
//!
//! `schemas/contacts.v1.json` is the source of truth: this module parses it into an Arrow
//! [`SchemaRef`] (descriptions become field metadata) and renders an Arrow schema back to the
//! same JSON, so `contacts-etl schema` and the file can be compared byte for byte.
//!
//! [`ContactRecord`] is a serde struct with exactly the schema's columns. Typed builders
//! turn records, or anything else that implements `builders::Row`, into a `RecordBatch`
//! (see [`records_to_batch`]).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub(crate) mod builders;

use crate::error::{Context, Error, Kind, Result};

/// The schema file as shipped, compiled into the binary.
pub const CONTACTS_SCHEMA_JSON: &str = include_str!("../../schemas/contacts.v1.json");

/// Metadata key under which each field's one-line description is kept.
pub const DESCRIPTION_KEY: &str = "description";

static CONTACTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(parse_schema_json(CONTACTS_SCHEMA_JSON).expect("schemas/contacts.v1.json is valid"))
});

/// The Arrow schema of the `contacts` and `contact_changes` tables.
pub fn contacts_schema() -> SchemaRef {
    CONTACTS_SCHEMA.clone()
}

/// Parses a schema document of the `contacts.v1.json` form into an Arrow schema.
pub fn parse_schema_json(text: &str) -> Result<Schema> {
    let doc: Value =
        serde_json::from_str(text).context(Kind::Config, "schema JSON does not parse")?;
    let fields = doc
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::config("schema JSON has no \"fields\" array"))?;
    let fields = fields.iter().map(parse_field).collect::<Result<Vec<_>>>()?;
    let mut meta = HashMap::new();
    for key in ["name", "description"] {
        if let Some(v) = doc.get(key).and_then(Value::as_str) {
            meta.insert(key.to_string(), v.to_string());
        }
    }
    if let Some(v) = doc.get("version") {
        meta.insert("version".to_string(), v.to_string());
    }
    Ok(Schema::new_with_metadata(fields, meta))
}

fn parse_field(v: &Value) -> Result<Field> {
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::config(format!("schema field without a name: {v}")))?;
    let nullable = v.get("nullable").and_then(Value::as_bool).unwrap_or(true);
    let ty = parse_type(
        v.get("type")
            .ok_or_else(|| Error::config(format!("schema field {name} has no type")))?,
    )?;
    let mut field = Field::new(name, ty, nullable);
    if let Some(d) = v.get(DESCRIPTION_KEY).and_then(Value::as_str) {
        field.set_metadata(HashMap::from([(
            DESCRIPTION_KEY.to_string(),
            d.to_string(),
        )]));
    }
    Ok(field)
}

fn parse_type(v: &Value) -> Result<DataType> {
    match v {
        Value::String(s) => match s.as_str() {
            "utf8" => Ok(DataType::Utf8),
            "bool" => Ok(DataType::Boolean),
            "int64" => Ok(DataType::Int64),
            "timestamp_us_utc" => Ok(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into()),
            )),
            other => Err(Error::config(format!("unknown schema type {other:?}"))),
        },
        Value::Object(o) if o.contains_key("list") => {
            let item = parse_type(&o["list"])?;
            Ok(DataType::List(Arc::new(Field::new("element", item, true))))
        }
        Value::Object(o) if o.contains_key("struct") => {
            let fields = o["struct"]
                .as_array()
                .ok_or_else(|| Error::config("\"struct\" must hold an array of fields"))?
                .iter()
                .map(parse_field)
                .collect::<Result<Vec<_>>>()?;
            Ok(DataType::Struct(Fields::from(fields)))
        }
        other => Err(Error::config(format!("unknown schema type {other}"))),
    }
}

/// Renders an Arrow schema in the `contacts.v1.json` form (pretty-printed, with a newline).
pub fn render_schema_json(schema: &Schema) -> Result<String> {
    let mut doc = Map::new();
    let meta = schema.metadata();
    if let Some(n) = meta.get("name") {
        doc.insert("name".into(), json!(n));
    }
    if let Some(v) = meta.get("version") {
        doc.insert(
            "version".into(),
            serde_json::from_str(v).unwrap_or(json!(v)),
        );
    }
    if let Some(d) = meta.get("description") {
        doc.insert("description".into(), json!(d));
    }
    let fields = schema
        .fields()
        .iter()
        .map(|f| render_field(f))
        .collect::<Result<Vec<_>>>()?;
    doc.insert("fields".into(), Value::Array(fields));
    let mut out = serde_json::to_string_pretty(&Value::Object(doc))
        .context(Kind::Other, "rendering the schema")?;
    out.push('\n');
    Ok(out)
}

fn render_field(f: &Field) -> Result<Value> {
    let mut m = Map::new();
    m.insert("name".into(), json!(f.name()));
    m.insert("type".into(), render_type(f.data_type())?);
    m.insert("nullable".into(), json!(f.is_nullable()));
    if let Some(d) = f.metadata().get(DESCRIPTION_KEY) {
        m.insert(DESCRIPTION_KEY.into(), json!(d));
    }
    Ok(Value::Object(m))
}

fn render_type(t: &DataType) -> Result<Value> {
    Ok(match t {
        DataType::Utf8 => json!("utf8"),
        DataType::Boolean => json!("bool"),
        DataType::Int64 => json!("int64"),
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC" => {
            json!("timestamp_us_utc")
        }
        DataType::List(item) => json!({ "list": render_type(item.data_type())? }),
        DataType::Struct(fields) => {
            let fs = fields
                .iter()
                .map(|f| render_field(f))
                .collect::<Result<Vec<_>>>()?;
            json!({ "struct": fs })
        }
        other => {
            return Err(Error::other(format!(
                "type {other} has no schema JSON form"
            )));
        }
    })
}

/// One e-mail address of a contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Email {
    pub address: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub label: Option<String>,
    pub primary: Option<bool>,
    pub display_name: Option<String>,
}

/// One phone number of a contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phone {
    pub number: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub label: Option<String>,
    pub primary: Option<bool>,
    pub uri: Option<String>,
}

/// One postal address of a contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Address {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub label: Option<String>,
    pub primary: Option<bool>,
    pub street: Option<String>,
    pub po_box: Option<String>,
    pub neighborhood: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postcode: Option<String>,
    pub country: Option<String>,
    pub formatted: Option<String>,
}

/// One instant-messaging address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Im {
    pub address: Option<String>,
    pub protocol: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub label: Option<String>,
    pub primary: Option<bool>,
}

/// One organization (employer) of a contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub name: Option<String>,
    pub title: Option<String>,
    pub department: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub label: Option<String>,
    pub primary: Option<bool>,
}

/// One web site.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Website {
    pub href: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub label: Option<String>,
    pub primary: Option<bool>,
}

/// One relation to another person.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Relation {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub label: Option<String>,
}

/// One dated event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub label: Option<String>,
    pub start: Option<String>,
}

/// The photo link of a contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Photo {
    pub href: Option<String>,
    pub etag: Option<String>,
}

/// One Google extended property: a value or an XML child.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtendedProperty {
    pub name: Option<String>,
    pub value: Option<String>,
    pub xml: Option<String>,
}

/// One contact in the unified schema: exactly the columns of `schemas/contacts.v1.json`.
///
/// Timestamps are microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactRecord {
    pub source: String,
    pub account: String,
    pub id: String,
    pub etag: Option<String>,
    pub updated: Option<i64>,
    pub deleted: bool,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub middle_name: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub nickname: Option<String>,
    pub file_as: Option<String>,
    pub emails: Vec<Email>,
    pub phones: Vec<Phone>,
    pub addresses: Vec<Address>,
    pub ims: Vec<Im>,
    pub organizations: Vec<Organization>,
    pub websites: Vec<Website>,
    pub relations: Vec<Relation>,
    pub events: Vec<Event>,
    pub notes: Option<String>,
    pub birthday: Option<String>,
    pub groups: Vec<String>,
    pub photo: Option<Photo>,
    pub extended_properties: Vec<ExtendedProperty>,
    pub native: Option<String>,
    pub raw: Option<String>,
    pub _run_id: String,
    pub _synced_at: i64,
}

/// Turns records into one `RecordBatch` of the contacts schema, column by column with
/// typed builders.
pub fn records_to_batch(records: &[ContactRecord]) -> Result<RecordBatch> {
    rows_to_batch(records)
}

/// Turns rows of any [`builders::Row`] kind into one `RecordBatch` of the contacts schema.
pub(crate) fn rows_to_batch<R: builders::Row>(records: &[R]) -> Result<RecordBatch> {
    let schema = contacts_schema();
    let columns = builders::build(&schema, records)?;
    RecordBatch::try_new_with_options(
        schema,
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(records.len())),
    )
    .context(Kind::Other, "converting contacts to Arrow")
}

/// The same conversion through arrow-json's serde decoder: slower, but written against
/// serde's view of the records, so the tests hold the builders to it.
#[cfg(test)]
fn records_to_batch_serde(records: &[ContactRecord]) -> Result<RecordBatch> {
    let schema = contacts_schema();
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(records.len().max(1))
        .build_decoder()
        .context(Kind::Other, "building the Arrow decoder")?;
    decoder
        .serialize(records)
        .context(Kind::Other, "converting contacts to Arrow")?;
    Ok(decoder
        .flush()
        .context(Kind::Other, "converting contacts to Arrow")?
        .unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

/// Reads records back from batches of the contacts schema (any string encoding), column
/// by column.
pub fn batches_to_records(batches: &[RecordBatch]) -> Result<Vec<ContactRecord>> {
    let schema = contacts_schema();
    let mut out = Vec::new();
    for batch in batches {
        let batch = crate::arrow_util::normalize_batch(batch, &schema)?;
        out.extend(builders::read(&batch)?);
    }
    Ok(out)
}

/// The same through arrow-json and serde: slower, but written against serde's view of the
/// records, so the tests hold [`batches_to_records`] to it.
#[cfg(test)]
fn batches_to_records_serde(batches: &[RecordBatch]) -> Result<Vec<ContactRecord>> {
    let mut out = Vec::new();
    for batch in batches {
        let batch = crate::arrow_util::normalize_batch(batch, &contacts_schema())?;
        let mut buf = Vec::new();
        {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
            w.write(&batch).context(Kind::Other, "reading contacts")?;
            w.finish().context(Kind::Other, "reading contacts")?;
        }
        for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let mut v: Value =
                serde_json::from_slice(line).context(Kind::Other, "reading contacts")?;
            fix_timestamps(&mut v);
            out.push(serde_json::from_value(v).context(Kind::Other, "reading contacts")?);
        }
    }
    Ok(out)
}

/// arrow-json writes timestamps as strings; the record model holds microseconds.
#[cfg(test)]
fn fix_timestamps(v: &mut Value) {
    for key in ["updated", "_synced_at"] {
        if let Some(slot) = v.get_mut(key)
            && let Some(s) = slot.as_str()
        {
            let parsed = chrono::DateTime::parse_from_rfc3339(s)
                .or_else(|_| chrono::DateTime::parse_from_rfc3339(&format!("{s}Z")))
                .map(|d| d.timestamp_micros());
            if let Ok(us) = parsed {
                *slot = json!(us);
            }
        }
    }
    if let Some(obj) = v.as_object_mut() {
        for key in [
            "emails",
            "phones",
            "addresses",
            "ims",
            "organizations",
            "websites",
            "relations",
            "events",
            "groups",
            "extended_properties",
        ] {
            if obj.get(key).is_none_or(Value::is_null) {
                obj.insert(key.to_string(), json!([]));
            }
        }
        if obj.get("deleted").is_none_or(Value::is_null) {
            obj.insert("deleted".into(), json!(false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_file_round_trips_through_arrow() {
        let schema = contacts_schema();
        let rendered = render_schema_json(&schema).unwrap();
        assert_eq!(rendered, CONTACTS_SCHEMA_JSON);
    }

    #[test]
    fn every_field_has_a_description() {
        fn check(fields: &Fields) {
            for f in fields {
                assert!(
                    f.metadata().contains_key(DESCRIPTION_KEY),
                    "{} lacks a description",
                    f.name()
                );
                match f.data_type() {
                    DataType::Struct(fs) => check(fs),
                    DataType::List(item) => {
                        if let DataType::Struct(fs) = item.data_type() {
                            check(fs)
                        }
                    }
                    _ => {}
                }
            }
        }
        check(contacts_schema().fields());
    }

    #[test]
    fn records_convert_to_arrow_and_back() {
        let rec = ContactRecord {
            source: "s".into(),
            account: "a".into(),
            id: "1f".into(),
            etag: Some("\"x.\"".into()),
            updated: Some(1_700_000_000_123_000),
            display_name: Some("Zoë <&> 李".into()),
            emails: vec![Email {
                address: Some("z@x.org".into()),
                kind: Some("work".into()),
                primary: Some(true),
                ..Default::default()
            }],
            groups: vec!["g1".into()],
            photo: Some(Photo {
                href: Some("h".into()),
                etag: None,
            }),
            _run_id: "r".into(),
            _synced_at: 1_700_000_000_000_000,
            ..Default::default()
        };
        let batch = records_to_batch(std::slice::from_ref(&rec)).unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema(), contacts_schema());
        let back = batches_to_records(&[batch]).unwrap();
        assert_eq!(back, vec![rec]);
    }

    #[cfg(feature = "emulator")]
    #[tokio::test]
    async fn the_builders_equal_the_serde_conversion() {
        let emu = crate::emulator::Emulator::start(crate::emulator::EmulatorConfig {
            google_contacts: 400,
            aurinko_accounts: 1,
            aurinko_contacts: 400,
            ..Default::default()
        })
        .await
        .unwrap();
        let mut recs = emu.google_truth().contacts;
        recs.extend(emu.aurinko_truth("101").unwrap().contacts);
        recs.push(ContactRecord {
            id: "gone".into(),
            deleted: true,
            ..Default::default()
        });
        for chunk in [&recs[..], &recs[..0], &recs[recs.len() - 1..]] {
            let fast = records_to_batch(chunk).unwrap();
            let serde = records_to_batch_serde(chunk).unwrap();
            assert_eq!(fast.schema(), serde.schema());
            for (i, f) in fast.schema().fields().iter().enumerate() {
                assert_eq!(
                    fast.column(i).as_ref(),
                    serde.column(i).as_ref(),
                    "column {}",
                    f.name()
                );
            }
        }
        assert!(
            recs.iter()
                .any(|r| !r.emails.is_empty() && r.photo.is_some())
        );
        // And back: the column-by-column reader equals serde's, and the records survive.
        let batch = records_to_batch(&recs).unwrap();
        for b in [batch.clone(), batch.slice(7, 300), batch.slice(0, 0)] {
            let fast = batches_to_records(std::slice::from_ref(&b)).unwrap();
            assert_eq!(
                fast,
                batches_to_records_serde(std::slice::from_ref(&b)).unwrap()
            );
        }
        assert_eq!(batches_to_records(&[batch]).unwrap(), recs);
    }
}
