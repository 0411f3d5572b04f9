//! Target 4: saved plans (`plan::saved::read`, then what `apply PLAN` does with one:
//! `mode`, `touched`, `replan`), from real plans `plan::saved::write` wrote (mutated), and
//! from Parquet files of odd structure (wrong column types, nulls, missing columns, bad
//! footer metadata), some with a digest that matches their odd rows.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, LargeStringArray, ListBuilder, RecordBatch, StringArray,
    StringBuilder,
};
use arrow::datatypes::{Field, Schema};
use proptest::prelude::*;
use serde_json::json;
use sha2::Digest;

use contacts_etl::model::schema::ContactRecord;
use contacts_etl::plan::saved::{META_KEY, PlanMeta, fingerprint, read, write};
use contacts_etl::plan::{Action, Invalid, Landed, Mode, Op, Plan};

use crate::inputs::{mutated, odd_number, odd_text};
use crate::seeds::{records, shared};
use crate::{error_is_worded, fuzz};

/// Reads a plan file's bytes; an `Ok` plan gives its mode, its touched contacts and a
/// replan against `landed` without a panic, and the replan's operations are the plan's.
pub fn check(bytes: &[u8], landed: &Landed) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.parquet");
    std::fs::write(&path, bytes).unwrap();
    match read(&path) {
        Ok(saved) => {
            let _ = saved.mode();
            let _ = saved.touched();
            match saved.replan(landed) {
                Ok(plan) => {
                    for (i, op) in plan.ops.iter().enumerate() {
                        prop_assert_eq!(op.index, i);
                    }
                    Ok(())
                }
                Err(e) => error_is_worded(&e),
            }
        }
        Err(e) => error_is_worded(&e),
    }
}

/// The landed contacts every plan is replanned against: the emulator's, with ids.
fn landed() -> Landed {
    Landed::from_rows(records().clone())
}

/// A plan of real contacts: updates and deletes of landed ones, inserts, invalid rows.
fn plan_of(picks: &[(u8, usize, String)]) -> Plan {
    let rs = records();
    let mut plan = Plan {
        source: "s".into(),
        managed: vec!["display_name".into(), "notes".into()],
        landed: rs.len(),
        ..Default::default()
    };
    for (i, (kind, which, text)) in picks.iter().enumerate() {
        let landed = rs[which % rs.len()].clone();
        let mut desired = landed.clone();
        desired.notes = Some(text.clone());
        let account = landed.account.clone();
        let action = match kind % 4 {
            0 => Action::Insert {
                desired: ContactRecord {
                    id: String::new(),
                    ..desired
                },
            },
            1 => Action::Update {
                id: landed.id.clone(),
                etag: landed.etag.clone(),
                desired,
                landed: landed.clone(),
                changed: vec!["notes".into()],
            },
            2 => Action::Delete {
                id: landed.id.clone(),
                etag: landed.etag.clone(),
                landed: landed.clone(),
            },
            _ => {
                plan.invalid.push(Invalid {
                    row: *which,
                    account,
                    id: Some(landed.id.clone()),
                    reason: text.clone(),
                });
                continue;
            }
        };
        let key = match &action {
            Action::Insert { .. } => format!("cetl-{i:020x}"),
            _ => format!("{account}/{}", landed.id),
        };
        plan.ops.push(Op {
            index: plan.ops.len(),
            account,
            key,
            action,
        });
    }
    plan
}

/// The bytes `plan::saved::write` writes for a plan.
fn written(plan: &Plan) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.parquet");
    write(plan, Mode::Upsert, "file:///lake/", &path).unwrap();
    std::fs::read(path).unwrap()
}

fn seeds() -> Vec<Vec<u8>> {
    vec![
        written(&plan_of(&[(1, 0, "a".into()), (2, 1, "b".into())])),
        written(&plan_of(&[
            (0, 2, "new".into()),
            (3, 7, "bad row".into()),
            (1, 3, "é€𝄞".into()),
        ])),
        written(&Plan::default()),
    ]
}

/// Real plans of any few operations, written and read back: they read, and replan to the
/// same operations while nothing moved.
#[test]
fn fuzz_saved_plan_written_plans_read_back() {
    let ops = proptest::collection::vec((any::<u8>(), 0usize..100_000, odd_text()), 0..6);
    fuzz(
        "saved_plan_written",
        ops,
        |p| format!("{p:?}").into_bytes(),
        |picks| {
            let plan = plan_of(&picks);
            let bytes = written(&plan);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("plan.parquet");
            std::fs::write(&path, &bytes).unwrap();
            let saved = read(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let again = saved
                .replan(&landed())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(again.ops.len(), plan.ops.len());
            prop_assert_eq!(again.invalid.len(), plan.invalid.len());
            for (a, b) in again.ops.iter().zip(&plan.ops) {
                prop_assert_eq!(&a.key, &b.key);
                prop_assert_eq!(a.kind(), b.kind());
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_saved_plan_mutated_files() {
    let landed = landed();
    fuzz(
        "saved_plan_mutated",
        mutated(shared(seeds())),
        Vec::clone,
        |b| check(&b, &landed),
    );
}

/// One column of an odd plan file: its name, and how it is laid.
#[derive(Debug, Clone)]
enum Col {
    /// Text as the layout wants it.
    Text,
    /// Large text (another type of text).
    LargeText,
    /// Whole numbers where text belongs.
    Numbers,
    /// A list of text (the `changed` column's type).
    ListOfText,
    /// A list of numbers.
    ListOfNumbers,
    /// Left out.
    Missing,
}

fn col() -> impl Strategy<Value = Col> {
    prop_oneof![
        12 => Just(Col::Text),
        1 => Just(Col::LargeText),
        1 => Just(Col::Numbers),
        1 => Just(Col::ListOfText),
        1 => Just(Col::ListOfNumbers),
        1 => Just(Col::Missing),
    ]
}

/// The plan layout's columns.
const COLUMNS: &[&str] = &[
    "op_index",
    "kind",
    "source",
    "account",
    "id",
    "key",
    "etag",
    "landed_etag",
    "landed_fingerprint",
    "who",
    "changed",
    "before",
    "after",
    "desired",
    "row",
    "reason",
];

/// One odd row: a value (or null) per column, as text.
type OddRow = Vec<Option<String>>;

/// A value of a plan column: what a real plan holds there mostly, else odd.
fn cell(column: &'static str) -> impl Strategy<Value = Option<String>> {
    let rs = records();
    let (ids, etags): (Vec<String>, Vec<String>) = rs
        .iter()
        .map(|r| (r.id.clone(), r.etag.clone().unwrap_or_default()))
        .unzip();
    let fps: Vec<String> = rs.iter().map(fingerprint).collect();
    let desired: Vec<String> = rs
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    let account = rs[0].account.clone();
    let keys: Vec<String> = ids.iter().map(|i| format!("{account}/{i}")).collect();
    let real: Vec<String> = match column {
        "kind" => ["insert", "update", "delete", "invalid", "bogus", ""]
            .map(String::from)
            .to_vec(),
        "source" => vec!["s".into()],
        "account" => vec![account],
        "id" => ids,
        "key" => [keys, vec!["cetl-0000000000000000000a".into()]].concat(),
        "etag" | "landed_etag" => etags,
        "landed_fingerprint" => fps,
        "desired" => [desired, vec!["{}".into(), "{\"id\":5}".into(), "[".into()]].concat(),
        "changed" => ["notes", "display_name", "nope", ""]
            .map(String::from)
            .to_vec(),
        "row" | "op_index" => [
            "0",
            "1",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
        ]
        .map(String::from)
        .to_vec(),
        _ => vec!["x".into()],
    };
    prop_oneof![
        6 => proptest::sample::select(real).prop_map(Some),
        1 => Just(None),
        1 => odd_text().prop_map(Some),
        1 => odd_number().prop_map(Some),
    ]
}

/// The description a plan file's footer carries: whole and right, or damaged.
#[derive(Debug, Clone)]
enum Meta {
    /// The real description with the digest of these rows (so `replan` is reached).
    Right,
    /// The real description, a digest of something else.
    WrongDigest,
    /// Another layout version.
    Version(u32),
    /// No digest.
    NoDigest,
    /// Text that is not a description.
    Junk(String),
    /// No description at all.
    Missing,
    /// The description with a number field at the edge of its type.
    HugeCounts(String),
}

fn meta() -> impl Strategy<Value = Meta> {
    prop_oneof![
        6 => Just(Meta::Right),
        1 => Just(Meta::WrongDigest),
        1 => any::<u32>().prop_map(Meta::Version),
        1 => Just(Meta::NoDigest),
        1 => prop_oneof![odd_text(), Just("{\"version\":1}".to_string()), Just("null".to_string())]
            .prop_map(Meta::Junk),
        1 => Just(Meta::Missing),
        1 => odd_number().prop_map(Meta::HugeCounts),
    ]
}

/// An odd plan file: per column a layout, rows of plan-like values, a footer description.
#[derive(Debug, Clone)]
pub struct OddPlan {
    cols: Vec<Col>,
    rows: Vec<OddRow>,
    meta: Meta,
}

fn odd_plan() -> impl Strategy<Value = OddPlan> {
    let row: Vec<_> = COLUMNS.iter().map(|c| cell(c)).collect();
    (
        proptest::collection::vec(col(), COLUMNS.len()),
        proptest::collection::vec(row, 0..6),
        meta(),
    )
        .prop_map(|(cols, rows, meta)| OddPlan { cols, rows, meta })
}

/// A column of values laid as `c` (`None`: left out).
fn array(c: &Col, values: &[Option<String>], name: &str) -> Option<(Field, ArrayRef)> {
    let number = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<i64>().ok());
    let list = |text: bool| -> ArrayRef {
        if text {
            let mut b = ListBuilder::new(StringBuilder::new());
            for v in values {
                match v {
                    Some(s) => {
                        b.values().append_value(s);
                        b.append(true);
                    }
                    None => b.append(false),
                }
            }
            Arc::new(b.finish())
        } else {
            let mut b = ListBuilder::new(arrow::array::Int32Builder::new());
            for v in values {
                b.values()
                    .append_value(v.as_ref().map_or(0, |s| s.len() as i32));
                b.append(v.is_some());
            }
            Arc::new(b.finish())
        }
    };
    let a: ArrayRef = match c {
        Col::Missing => return None,
        Col::Text if name == "changed" => list(true),
        Col::Text if name == "op_index" || name == "row" => {
            Arc::new(values.iter().map(number).collect::<Int64Array>())
        }
        Col::Text => Arc::new(values.iter().cloned().collect::<StringArray>()),
        Col::LargeText => Arc::new(values.iter().cloned().collect::<LargeStringArray>()),
        Col::Numbers => Arc::new(
            values
                .iter()
                .map(|v| number(v).map(|n| n as i32))
                .collect::<Int32Array>(),
        ),
        Col::ListOfText => list(true),
        Col::ListOfNumbers => list(false),
    };
    Some((Field::new(name, a.data_type().clone(), true), a))
}

/// The digest `read` computes of a description and rows (the layout's own rule: the
/// description without its digest, then each row as JSON, a line each).
fn digest_of(meta: &PlanMeta, rows: &[serde_json::Value]) -> String {
    let mut h = sha2::Sha256::new();
    let m = PlanMeta {
        digest: None,
        ..meta.clone()
    };
    h.update(serde_json::to_string(&m).unwrap().as_bytes());
    for r in rows {
        h.update(b"\n");
        h.update(r.to_string().as_bytes());
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// A row as `read` reads it back (text columns; `changed` a list; `row` a number).
fn row_json(r: &OddRow) -> serde_json::Value {
    let t = |name: &str| r[COLUMNS.iter().position(|c| *c == name).unwrap()].clone();
    json!({
        "kind": t("kind").unwrap_or_default(),
        "source": t("source").unwrap_or_default(),
        "account": t("account").unwrap_or_default(),
        "id": t("id"),
        "key": t("key"),
        "etag": t("etag"),
        "landed_etag": t("landed_etag"),
        "landed_fingerprint": t("landed_fingerprint"),
        "who": t("who"),
        "changed": t("changed").map(|c| vec![c]).unwrap_or_default(),
        "before": t("before"),
        "after": t("after"),
        "desired": t("desired"),
        "row": t("row").and_then(|s| s.parse::<i64>().ok()),
        "reason": t("reason"),
    })
}

/// The Parquet file of an odd plan.
pub fn odd_file(p: &OddPlan) -> Vec<u8> {
    let mut fields = Vec::new();
    let mut arrays = Vec::new();
    for (i, (c, name)) in p.cols.iter().zip(COLUMNS).enumerate() {
        let values: Vec<Option<String>> = p.rows.iter().map(|r| r[i].clone()).collect();
        if let Some((f, a)) = array(c, &values, name) {
            fields.push(f);
            arrays.push(a);
        }
    }
    let batch = if fields.is_empty() {
        RecordBatch::new_empty(Arc::new(Schema::empty()))
    } else {
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
    };
    let mut meta = PlanMeta {
        version: 1,
        source: "s".into(),
        mode: "upsert".into(),
        lake: "file:///lake/".into(),
        managed: vec!["notes".into()],
        scope: vec![],
        landed: 3,
        unchanged: 0,
        already_applied: 0,
        created: "2026-01-01T00:00:00Z".into(),
        digest: None,
    };
    let rows: Vec<serde_json::Value> = p.rows.iter().map(row_json).collect();
    let text = match &p.meta {
        Meta::Right => {
            meta.digest = Some(digest_of(&meta, &rows));
            Some(serde_json::to_string(&meta).unwrap())
        }
        Meta::WrongDigest => {
            meta.digest = Some(digest_of(&meta, &[]));
            Some(serde_json::to_string(&meta).unwrap())
        }
        Meta::Version(v) => {
            meta.version = *v;
            meta.digest = Some(digest_of(&meta, &rows));
            Some(serde_json::to_string(&meta).unwrap())
        }
        Meta::NoDigest => Some(serde_json::to_string(&meta).unwrap()),
        Meta::Junk(j) => Some(j.clone()),
        Meta::Missing => None,
        Meta::HugeCounts(n) => {
            meta.digest = Some(digest_of(&meta, &rows));
            Some(serde_json::to_string(&meta).unwrap().replacen(
                "\"landed\":3",
                &format!("\"landed\":{n}"),
                1,
            ))
        }
    };
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(text.map(|t| {
            vec![parquet::file::metadata::KeyValue::new(
                META_KEY.to_string(),
                t,
            )]
        }))
        .build();
    let mut buf = Vec::new();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    buf
}

#[test]
fn fuzz_saved_plan_odd_files() {
    let landed = landed();
    fuzz("saved_plan_odd", odd_plan(), odd_file, |p| {
        check(&odd_file(&p), &landed)
    });
}

/// The odd files' digest is the reader's: a file of right columns and description reads.
#[test]
fn saved_plan_odd_file_with_right_columns_reads() {
    let p = OddPlan {
        cols: vec![Col::Text; COLUMNS.len()],
        rows: vec![COLUMNS.iter().map(|c| Some(format!("v-{c}"))).collect()],
        meta: Meta::Right,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.parquet");
    std::fs::write(&path, odd_file(&p)).unwrap();
    read(&path).unwrap_or_else(|e| panic!("{e}"));
}

/// Issue 34 named the `changed` column's unchecked downcast: a plan whose `changed` holds
/// lists of numbers (its digest right) is refused naming the column, and so is one whose
/// `changed` is text, not a list. (Already fixed before the fuzzing: this holds it.)
#[test]
fn saved_plan_changed_column_of_another_type_is_refused_naming_it() {
    for changed in [Col::ListOfNumbers, Col::LargeText, Col::Numbers] {
        let mut cols = vec![Col::Text; COLUMNS.len()];
        cols[COLUMNS.iter().position(|c| *c == "changed").unwrap()] = changed.clone();
        let p = OddPlan {
            cols,
            rows: vec![COLUMNS.iter().map(|c| Some(format!("v-{c}"))).collect()],
            meta: Meta::Right,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.parquet");
        std::fs::write(&path, odd_file(&p)).unwrap();
        let e = match read(&path) {
            Ok(_) => panic!("{changed:?}: read"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("column changed: wanted a list of text"),
            "{changed:?}: {e}"
        );
    }
}
