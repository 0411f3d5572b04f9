//! Target 5: desired-state files (`plan::desired::read_json`, `read_csv`, `from_text`,
//! `conform_column`), read as `plan --desired FILE` reads them (`plan::load_desired`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use contacts_etl::lake::Lake;
use contacts_etl::model::schema::{ContactRecord, contacts_schema, records_to_batch};
use contacts_etl::plan::desired::{conform_column, from_text, read_csv, read_json};
use contacts_etl::plan::load_desired;

use crate::inputs::{mutated, odd_datetime, odd_number, odd_text};
use crate::seeds::{records, shared};
use crate::{error_is_worded, fuzz};

/// Reads a desired file as `plan --desired` does; the rows it keeps are of the plan's
/// source, at most as many as the file has lines (JSON, CSV) or rows (Parquet).
pub fn check(bytes: &[u8], ext: &str) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("desired.{ext}"));
    std::fs::write(&path, bytes).unwrap();
    let lake = Lake::new(
        url::Url::from_directory_path(dir.path().join("lake")).unwrap(),
        HashMap::new(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let spec = path.to_str().unwrap();
    match rt.block_on(load_desired(&lake, spec, "s", &|_| true)) {
        Ok((d, _)) => {
            prop_assert!(d.rows.iter().all(|r| r.source == "s"));
            Ok(())
        }
        Err(e) => error_is_worded(&e),
    }?;
    // The readers on their own, as a library user calls them.
    match ext {
        "json" => {
            let mut sink = |b: RecordBatch| {
                for (f, c) in b.schema().fields().iter().zip(b.columns()) {
                    if let Ok(want) = contacts_schema().field_with_name(f.name()) {
                        conform_column(c, want, 0)?;
                    }
                }
                Ok(())
            };
            if let Err(e) = read_json(bytes, &mut sink) {
                error_is_worded(&e)?;
            }
        }
        "csv" => match read_csv(&path) {
            Ok(batches) => {
                for b in batches {
                    let Ok(b) = b else { break };
                    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
                        if let Ok(want) = contacts_schema().field_with_name(f.name())
                            && let Err(e) = from_text(c, want, 0)
                        {
                            error_is_worded(&e)?;
                        }
                    }
                }
            }
            Err(e) => error_is_worded(&e)?,
        },
        _ => {}
    }
    Ok(())
}

/// The emulator's contacts as a user's desired rows: without the page text and lineage.
fn desired_rows() -> Vec<ContactRecord> {
    records()
        .iter()
        .map(|r| ContactRecord {
            raw: None,
            native: None,
            source: "s".into(),
            ..r.clone()
        })
        .collect()
}

/// JSON lines (as `query --output x.json` writes) and one array, of real contacts.
fn json_seeds() -> Vec<Vec<u8>> {
    let rows: Vec<Value> = desired_rows()
        .iter()
        .take(4)
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap();
            let o = v.as_object_mut().unwrap();
            o.retain(|k, _| !k.starts_with('_') && k != "deleted");
            // Timestamps as `query --output x.json` writes them.
            if let Some(us) = o.get("updated").and_then(Value::as_i64) {
                let t = chrono::DateTime::from_timestamp_micros(us).unwrap();
                o.insert("updated".into(), Value::String(t.to_rfc3339()));
            }
            v
        })
        .collect();
    let lines: String = rows.iter().map(|r| format!("{r}\n")).collect();
    vec![
        lines.into_bytes(),
        serde_json::to_vec_pretty(&rows).unwrap(),
        b"{\"id\":null,\"display_name\":\"New\",\"birthday\":\"1970-01-01\",\"updated\":\"2024-01-01T00:00:00Z\"}\n".to_vec(),
    ]
}

/// A CSV cell, quoted when it needs to be.
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The columns a CSV of desired contacts has: text, lists and structs as JSON text.
const CSV_COLUMNS: &[&str] = &[
    "id",
    "account",
    "display_name",
    "given_name",
    "family_name",
    "emails",
    "phones",
    "addresses",
    "organizations",
    "birthday",
    "groups",
    "updated",
    "notes",
];

fn csv_seeds() -> Vec<Vec<u8>> {
    let mut out = CSV_COLUMNS.join(",");
    out.push('\n');
    for r in desired_rows().iter().take(4) {
        let v = serde_json::to_value(r).unwrap();
        let cells: Vec<String> = CSV_COLUMNS
            .iter()
            .map(|c| match &v[c] {
                Value::Null => String::new(),
                Value::String(s) => csv_cell(s),
                Value::Number(n) if *c == "updated" => {
                    let us = n.as_i64().unwrap_or(0);
                    chrono::DateTime::from_timestamp_micros(us)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                }
                other => csv_cell(&other.to_string()),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    vec![out.into_bytes(), b"id,display_name\n,New\n".to_vec()]
}

/// A value of a contact column in JSON: its own shape mostly, else another.
fn json_value(t: &DataType) -> BoxedStrategy<Value> {
    let odd = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        odd_text().prop_map(Value::String),
        Just(json!([])),
        Just(json!({})),
    ];
    let own: BoxedStrategy<Value> = match t {
        DataType::Utf8 => odd_text().prop_map(Value::String).boxed(),
        DataType::Boolean => any::<bool>().prop_map(Value::Bool).boxed(),
        DataType::Int64 => prop_oneof![
            any::<i64>().prop_map(|n| json!(n)),
            odd_number().prop_map(Value::String)
        ]
        .boxed(),
        DataType::Timestamp(..) => odd_datetime().prop_map(Value::String).boxed(),
        DataType::List(f) => proptest::collection::vec(json_value(f.data_type()), 0..3)
            .prop_map(Value::Array)
            .boxed(),
        DataType::Struct(fs) => {
            let fields: Vec<(String, DataType)> = fs
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect();
            let each: Vec<_> = fields
                .into_iter()
                .map(|(n, t)| {
                    proptest::option::of(json_value(&t)).prop_map(move |v| (n.clone(), v))
                })
                .collect();
            (each, proptest::option::of(("[a-z]{1,4}", odd_text())))
                .prop_map(|(kv, extra)| {
                    let mut o: Map<String, Value> = kv
                        .into_iter()
                        .filter_map(|(k, v)| v.map(|v| (k, v)))
                        .collect();
                    if let Some((k, v)) = extra {
                        o.insert(k, Value::String(v));
                    }
                    Value::Object(o)
                })
                .boxed()
        }
        _ => odd.clone().boxed(),
    };
    prop_oneof![8 => own, 1 => odd].boxed()
}

/// Rows of desired JSON from the schema: some contact columns (each of its type mostly),
/// sometimes an unknown key; as JSON lines or one array.
fn json_file() -> impl Strategy<Value = Vec<u8>> {
    let schema = contacts_schema();
    let columns: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| !f.name().starts_with('_') && f.name() != "raw")
        .map(|f| {
            let n = f.name().clone();
            proptest::option::of(json_value(f.data_type())).prop_map(move |v| (n.clone(), v))
        })
        .collect();
    let row = (columns, proptest::option::of("[a-z_]{1,8}")).prop_map(|(kv, unknown)| {
        let mut o: Map<String, Value> = kv
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        if let Some(u) = unknown {
            o.insert(u, Value::Null);
        }
        Value::Object(o)
    });
    (proptest::collection::vec(row, 0..5), any::<bool>()).prop_map(|(rows, array)| {
        if array {
            serde_json::to_vec(&rows).unwrap()
        } else {
            rows.iter()
                .map(|r| format!("{r}\n"))
                .collect::<String>()
                .into_bytes()
        }
    })
}

/// A desired CSV from the schema: a header of contact columns (and odd ones), rows of
/// odd cells, quoted or not.
fn csv_file() -> impl Strategy<Value = Vec<u8>> {
    let names: Vec<String> = contacts_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .chain(["", "x", "id "].map(String::from))
        .collect();
    let cell = prop_oneof![
        3 => odd_text(),
        1 => odd_number(),
        1 => odd_datetime(),
        1 => proptest::sample::select(&[
            "[]", "[{}]", "[{\"address\":\"a@b\",\"primary\":\"yes\"}]", "{\"x\":1}",
            "[1,2]", "[[[]]]", "true", "FALSE", "null", "[\"a\",null]",
        ][..])
        .prop_map(str::to_string),
    ];
    (
        proptest::collection::vec(proptest::sample::select(names), 1..6),
        proptest::collection::vec(proptest::collection::vec(cell, 0..7), 0..5),
        any::<bool>(),
    )
        .prop_map(|(header, rows, crlf)| {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut out = header
                .iter()
                .map(|h| csv_cell(h))
                .collect::<Vec<_>>()
                .join(",");
            for r in rows {
                out.push_str(nl);
                // As many cells as the header mostly (the reader checks the count first).
                let cells: Vec<String> = (0..header.len())
                    .map(|i| r.get(i).map(|c| csv_cell(c)).unwrap_or_default())
                    .collect();
                out.push_str(&cells.join(","));
            }
            out.push_str(nl);
            out.into_bytes()
        })
}

/// One column of a desired Parquet file: a real contact column in another type of its
/// kind (or not), some values nulled, or a column of nulls of any type.
#[derive(Debug, Clone)]
pub struct ParquetCol {
    name: usize,
    to: usize,
    nulls: Vec<bool>,
}

/// The types a column is cast to (where arrow can).
fn other_types() -> Vec<DataType> {
    let item = |t: DataType| Arc::new(Field::new("item", t, true));
    vec![
        DataType::Utf8,
        DataType::LargeUtf8,
        DataType::Utf8View,
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        DataType::Int32,
        DataType::UInt64,
        DataType::Float64,
        DataType::Boolean,
        DataType::Binary,
        DataType::Date32,
        DataType::Timestamp(TimeUnit::Nanosecond, None),
        DataType::Timestamp(TimeUnit::Second, Some("+02:00".into())),
        DataType::Null,
        DataType::List(item(DataType::Utf8)),
        DataType::LargeList(item(DataType::Utf8)),
        DataType::List(item(DataType::Int64)),
    ]
}

/// The Parquet file of a few real rows whose columns are recast as `cols` say.
pub fn parquet_file(cols: &[ParquetCol]) -> Vec<u8> {
    let batch = records_to_batch(&desired_rows()[..3]).unwrap();
    let schema = batch.schema();
    let types = other_types();
    let mut fields: Vec<Field> = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for c in cols {
        let i = c.name % schema.fields().len();
        let f = schema.field(i);
        if fields.iter().any(|g| g.name() == f.name()) {
            continue;
        }
        let mut a = batch.column(i).clone();
        // The contact's own type for half the draws, another for the rest.
        let k = c.to % (types.len() * 2);
        if k < types.len() {
            let t = &types[k];
            a = arrow::compute::cast(&a, t)
                .unwrap_or_else(|_| arrow::array::new_null_array(t, a.len()));
        } else if k.is_multiple_of(3) {
            // A list of structs as a large list, the same items.
            if let DataType::List(item) = a.data_type() {
                let t = DataType::LargeList(item.clone());
                a = arrow::compute::cast(&a, &t).unwrap_or(a);
            }
        }
        if !c.nulls.is_empty() {
            let mask: BooleanArray = (0..a.len())
                .map(|r| Some(c.nulls[r % c.nulls.len()]))
                .collect();
            if !matches!(a.data_type(), DataType::Null)
                && let Ok(n) = arrow::compute::nullif(&a, &mask)
            {
                a = n;
            }
        }
        fields.push(Field::new(f.name(), a.data_type().clone(), true));
        arrays.push(a);
    }
    let batch = if fields.is_empty() {
        RecordBatch::new_empty(Arc::new(Schema::empty()))
    } else {
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
    };
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    buf
}

fn parquet_cols() -> impl Strategy<Value = Vec<ParquetCol>> {
    proptest::collection::vec(
        (
            any::<usize>(),
            any::<usize>(),
            proptest::collection::vec(any::<bool>(), 0..3),
        )
            .prop_map(|(name, to, nulls)| ParquetCol { name, to, nulls }),
        0..8,
    )
}

#[test]
fn fuzz_desired_json_mutated() {
    fuzz(
        "desired_json_mutated",
        mutated(shared(json_seeds())),
        Vec::clone,
        |b| check(&b, "json"),
    );
}

#[test]
fn fuzz_desired_json_generated() {
    fuzz("desired_json_generated", json_file(), Vec::clone, |b| {
        check(&b, "json")
    });
}

#[test]
fn fuzz_desired_csv_mutated() {
    fuzz(
        "desired_csv_mutated",
        mutated(shared(csv_seeds())),
        Vec::clone,
        |b| check(&b, "csv"),
    );
}

#[test]
fn fuzz_desired_csv_generated() {
    fuzz("desired_csv_generated", csv_file(), Vec::clone, |b| {
        check(&b, "csv")
    });
}

#[test]
fn fuzz_desired_parquet_odd_columns() {
    fuzz(
        "desired_parquet_odd",
        parquet_cols(),
        |c| parquet_file(c),
        |c| check(&parquet_file(&c), "parquet"),
    );
}

#[test]
fn fuzz_desired_parquet_mutated() {
    let seeds = vec![
        parquet_file(&[]),
        parquet_file(
            &(0..12)
                .map(|i| ParquetCol {
                    name: i * 3,
                    to: usize::MAX,
                    nulls: vec![],
                })
                .collect::<Vec<_>>(),
        ),
    ];
    fuzz(
        "desired_parquet_mutated",
        mutated(shared(seeds)),
        Vec::clone,
        |b| check(&b, "parquet"),
    );
}

/// The seeds read, so the mutations start from files the readers accept.
#[test]
fn desired_seeds_read() {
    for s in json_seeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.json");
        std::fs::write(&path, &s).unwrap();
        let lake = Lake::new(url::Url::parse("file:///nowhere/").unwrap(), HashMap::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(load_desired(&lake, path.to_str().unwrap(), "s", &|_| true))
            .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&s)));
    }
    for s in csv_seeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, &s).unwrap();
        let lake = Lake::new(url::Url::parse("file:///nowhere/").unwrap(), HashMap::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(load_desired(&lake, path.to_str().unwrap(), "s", &|_| true))
            .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&s)));
    }
}
