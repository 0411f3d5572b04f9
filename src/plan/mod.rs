//! The reverse sink: a desired state (SQL over the lake, or a Parquet/CSV file) → a diff
//! against the landed `contacts` → validated operations → batched, conflict-safe writes.
//!
//! Only the contact columns present in the desired table are compared and written
//! ("managed" columns); everything else of a contact is left as it is. Rows without `id`
//! are inserts; `--mode update` refuses them; `--mode mirror` also deletes landed contacts
//! absent from the desired state (guarded by `--max-delete`).
//!
//! Inserts are idempotent across a crash and rerun: each carries a key derived from its
//! content, stamped on the created contact (Google: extended property `contacts-etl-key`;
//! Aurinko: `nativeProperties["contacts-etl-key"]`). `apply` syncs the source before
//! planning, so a contact created by an interrupted apply is seen and not created again.

pub mod apply;
pub mod desired;
mod diff;
pub mod photos;
pub(crate) mod record;
pub mod resolve;
pub mod review;
pub mod saved;

use std::collections::HashSet;

use arrow::array::RecordBatch;
use serde_json::Value;

use crate::error::{Context as _, Error, Kind, Result};
use crate::lake::Lake;
use crate::model::schema::{ContactRecord, contacts_schema};

pub use crate::model::write::{
    Action, KEY_PROPERTY, Op, OpKind, WRITABLE, key_property, merge_managed,
};
pub(crate) use diff::{as_json, field};
pub use diff::{diff, insert_key, validate};

/// Which operations a plan may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Inserts and updates.
    #[default]
    Upsert,
    /// Updates only.
    Update,
    /// Inserts, updates, and deletes of contacts absent from the desired state.
    Mirror,
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "upsert" => Ok(Mode::Upsert),
            "update" => Ok(Mode::Update),
            "mirror" => Ok(Mode::Mirror),
            o => Err(Error::config(format!(
                "--mode {o:?}: use upsert, update or mirror"
            ))),
        }
    }
}

/// A desired row that will not be sent, and why.
#[derive(Debug, Clone)]
pub struct Invalid {
    pub row: usize,
    pub account: String,
    pub id: Option<String>,
    pub reason: String,
}

/// The diff.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub source: String,
    pub ops: Vec<Op>,
    pub invalid: Vec<Invalid>,
    pub unchanged: usize,
    /// Inserts skipped because a contact with their key already exists.
    pub already_applied: usize,
    /// Contacts landed for the source (the base of `--max-delete P%`).
    pub landed: usize,
    pub managed: Vec<String>,
    /// The accounts the plan is limited to (`--account`); empty: every account.
    pub scope: Vec<String>,
    /// Desired rows of accounts outside the scope, left out of the diff.
    pub out_of_scope: usize,
    /// Mirror mode: configured accounts without desired rows and not named by `--account`,
    /// whose contacts are left alone rather than deleted.
    pub left_alone: Vec<String>,
    /// Rows that are sent, with what the API may answer that the client cannot decide:
    /// an estimate over a limit the API counts its own way, or an etag that is not the
    /// landed one (the API's 412 makes it a conflict; `--force` overwrites).
    pub warnings: Vec<Invalid>,
}

impl Plan {
    /// Operations of one kind.
    pub fn count(&self, k: OpKind) -> usize {
        self.ops.iter().filter(|o| o.kind() == k).count()
    }

    /// The printed plan: counts per operation, then up to `sample` operations of each
    /// kind (sorted, so the same on every run) with their field changes, and up to
    /// `sample` invalid rows. See [`review::render`].
    pub fn render(&self, sample: usize) -> String {
        review::render(self, sample)
    }
}

/// The end of a printed plan: how many operations the sample left out, then up to
/// `sample` invalid rows by row number and how many more there are (`no_id` stands for a
/// row without an id).
pub(crate) fn render_tail(
    s: &mut String,
    ops: usize,
    sample: usize,
    invalid: &[Invalid],
    no_id: &str,
) {
    if ops > sample {
        s.push_str(&format!("  … and {} more\n", ops - sample));
    }
    for inv in review::sample_invalid(invalid, sample) {
        s.push_str(&format!(
            "  INVALID row {} ({}/{}): {}\n",
            inv.row + 1,
            inv.account,
            inv.id.as_deref().unwrap_or(no_id),
            inv.reason
        ));
    }
    if invalid.len() > sample {
        s.push_str(&format!(
            "  … and {} more invalid row(s)\n",
            invalid.len() - sample
        ));
    }
}

/// The desired state as records plus the columns it manages.
#[derive(Debug, Clone)]
pub struct Desired {
    pub rows: Vec<ContactRecord>,
    pub columns: HashSet<String>,
}

/// Desired rows [`load_desired`] read and did not keep.
#[derive(Debug, Default)]
pub struct LeftOut {
    /// Rows of other sources, by source (the caller refuses them by name).
    pub others: std::collections::BTreeMap<String, usize>,
    /// Rows of this source outside the plan's scope (`keep` said no).
    pub out_of_scope: usize,
}

/// The most rows one plan holds, unless `CONTACTS_ETL_MAX_PLAN_ROWS` says otherwise: the
/// desired rows in its scope, the landed contacts a mirror compares with, and its
/// operations and invalid rows (saved or not). A plan is held in memory whole, to be
/// shown, saved and applied as reviewed; past this it is refused (exit 2) before it
/// takes the machine, with how to plan in parts. Measured (debug build): a plan of
/// 250,000 inserts from a CSV peaks at about 0.8 GB; 250,000 covers a Google domain's
/// documented 200,000 contacts.
pub const MAX_PLAN_ROWS: usize = 250_000;

/// The bound on a plan's rows: [`MAX_PLAN_ROWS`], or `CONTACTS_ETL_MAX_PLAN_ROWS` (a
/// machine with the memory may raise it; a number of rows).
pub fn max_plan_rows() -> Result<usize> {
    match std::env::var("CONTACTS_ETL_MAX_PLAN_ROWS") {
        Err(_) => Ok(MAX_PLAN_ROWS),
        Ok(v) => v.trim().parse().map_err(|_| {
            Error::config(format!(
                "CONTACTS_ETL_MAX_PLAN_ROWS={v:?}: wanted a number of rows (default {MAX_PLAN_ROWS})"
            ))
        }),
    }
}

/// The refusal of a plan past [`max_plan_rows`]: `what` (e.g. "the desired state holds")
/// more than `max`, and how to plan in parts.
pub fn too_many_rows(what: &str, source: &str, max: usize) -> Error {
    Error::config(format!(
        "{what} more than {max} rows for source {source}, more than one plan holds (a plan is kept in memory to be shown, saved and applied as reviewed). Plan it in parts: filter the desired query with WHERE (e.g. WHERE account = '…', or a range of ids), split the file by account, or plan some accounts at a time with --account; CONTACTS_ETL_MAX_PLAN_ROWS raises the bound where there is the memory"
    ))
}

/// Loads the desired state: a `.parquet`, `.csv` or `.json` file (as `query --output`
/// writes them), or else SQL over the lake. Each contact column is checked against the
/// contact schema's type ([`desired`]): a value of another kind is an error, never
/// converted.
///
/// The input is read a batch at a time and only the rows the plan keeps become records:
/// rows of source `source` that `keep` accepts (the plan's scope). Rows of other sources
/// and rows out of scope are only counted ([`LeftOut`]). More rows kept than
/// [`max_plan_rows`] is an error (exit 2) as soon as it is met.
pub async fn load_desired(
    lake: &Lake,
    spec: &str,
    source: &str,
    keep: &dyn Fn(&ContactRecord) -> bool,
) -> Result<(Desired, LeftOut)> {
    let max = max_plan_rows()?;
    let path = std::path::Path::new(spec);
    let file = |ext: &str| spec.ends_with(ext) && path.exists();
    let mut reader = DesiredReader {
        source,
        keep,
        max,
        from_text: file(".csv"),
        rows: Vec::new(),
        columns: HashSet::new(),
        read: 0,
        left_out: LeftOut::default(),
    };
    let in_file = |e: Error| e.context(format!("--desired {spec}"));
    let open =
        || std::fs::File::open(path).with_context(Kind::Config, || format!("--desired {spec}"));
    if file(".parquet") {
        // A damaged file can panic the Parquet reader: `caught` makes that an error.
        let file = open()?;
        let batches = crate::arrow_util::caught(
            || {
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
                    .with_batch_size(desired::BATCH_ROWS)
                    .build()
            },
            parquet::errors::ParquetError::General,
        )
        .map_err(|e| in_file(e.into()))?;
        for b in crate::arrow_util::CaughtBatches::new(batches) {
            reader.take(b.map_err(|e| in_file(e.into()))?)?;
        }
    } else if file(".csv") {
        check_csv(open()?).map_err(in_file)?;
        for b in desired::read_csv(path).map_err(in_file)? {
            reader.take(b?).map_err(in_file)?;
        }
    } else if file(".json") {
        desired::read_json(std::io::BufReader::new(open()?), &mut |b| reader.take(b))
            .map_err(in_file)?;
    } else if spec.ends_with(".parquet") || spec.ends_with(".csv") || spec.ends_with(".json") {
        return Err(Error::config(format!("--desired {spec}: no such file")));
    } else {
        use futures::StreamExt;
        let mut batches = crate::sql::query_stream(lake, spec).await?;
        while let Some(b) = batches.next().await {
            reader.take(b.context(Kind::Sql, "running the desired query")?)?;
        }
    }
    if reader.read > 0 && !reader.columns.contains("id") {
        return Err(Error::config(
            "the desired state needs an `id` column (null for new contacts)",
        ));
    }
    Ok((
        Desired {
            rows: reader.rows,
            columns: reader.columns,
        },
        reader.left_out,
    ))
}

/// Reads desired batches into the records a plan keeps (see [`load_desired`]).
struct DesiredReader<'a> {
    source: &'a str,
    keep: &'a dyn Fn(&ContactRecord) -> bool,
    max: usize,
    /// A CSV: every cell is text, read as its column's type.
    from_text: bool,
    rows: Vec<ContactRecord>,
    /// The columns of every batch read.
    columns: HashSet<String>,
    /// Rows read so far (the row number of the next batch's first row, from 0).
    read: usize,
    left_out: LeftOut,
}

impl DesiredReader<'_> {
    /// One batch: its columns checked, its rows made records of the contact schema, those
    /// of the plan kept.
    fn take(&mut self, b: RecordBatch) -> Result<()> {
        let schema = contacts_schema();
        let mut unknown: Vec<&str> = b
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|c| schema.field_with_name(c).is_err())
            .collect();
        if !unknown.is_empty() {
            unknown.sort();
            let writable = WRITABLE.join(", ");
            return Err(Error::config(format!(
                "the desired state has unknown column(s) {}; it may have `id`, `account`, `etag` and the columns to write: {writable} (see `contacts-etl schema`)",
                unknown.join(", ")
            )));
        }
        self.columns
            .extend(b.schema_ref().fields().iter().map(|f| f.name().clone()));
        let n = b.num_rows();
        let source = self.source;
        let mut cols = Vec::new();
        for f in schema.fields() {
            // Only the contact columns decide: lineage and lake-only columns are filled in
            // (whatever a user's table holds there, nulls included), identity columns may
            // be absent or null.
            let given = match f.name().as_str() {
                "_run_id" | "_synced_at" | "deleted" => None,
                _ => b.column_by_name(f.name()),
            };
            let col = match given {
                Some(c) if self.from_text => desired::from_text(c, f, self.read)?,
                Some(c) => desired::conform_column(c, f, self.read)?,
                None => filler(f, n, source),
            };
            // Non-nullable identity columns: nulls (a null id: a new contact) become "",
            // a null source is the plan's source.
            let col = if !f.is_nullable() && col.null_count() > 0 {
                let fill = if f.name() == "source" { source } else { "" };
                let s = arrow::array::AsArray::as_string::<i32>(&col);
                std::sync::Arc::new(arrow::array::StringArray::from_iter_values(
                    s.iter().map(|v| v.unwrap_or(fill).to_string()),
                )) as _
            } else {
                col
            };
            cols.push(col);
        }
        let nb = RecordBatch::try_new_with_options(
            schema.clone(),
            cols,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        self.read += n;
        for r in crate::model::schema::batches_to_records(&[nb])? {
            if r.source != source {
                *self.left_out.others.entry(r.source).or_default() += 1;
            } else if !(self.keep)(&r) {
                self.left_out.out_of_scope += 1;
            } else if self.rows.len() == self.max {
                return Err(too_many_rows("the desired state holds", source, self.max));
            } else {
                self.rows.push(r);
            }
        }
        Ok(())
    }
}

/// The column a desired batch without contact column `f` gets (`n` rows): the plan's
/// source, empty identity, not deleted, no values.
fn filler(f: &arrow::datatypes::Field, n: usize, source: &str) -> arrow::array::ArrayRef {
    use std::sync::Arc;
    match f.name().as_str() {
        "source" => Arc::new(arrow::array::StringArray::from(vec![source; n])),
        "account" | "id" | "_run_id" => Arc::new(arrow::array::StringArray::from(vec![""; n])),
        "deleted" => Arc::new(arrow::array::BooleanArray::from(vec![false; n])),
        "_synced_at" => {
            Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![0; n]).with_timezone("UTC"))
        }
        _ => arrow::array::new_null_array(f.data_type(), n),
    }
}

/// Checks a desired-state CSV before it is read: every quote closes, and every record has
/// as many fields as the header. Errors name the line (a lenient reader would merge the
/// rows after an unclosed quote into one field, or pad a short row with nulls). The text
/// is read byte by byte, none of it kept.
fn check_csv(text: impl std::io::Read) -> Result<()> {
    use std::io::Read;
    let mut bytes = std::io::BufReader::new(text).bytes().peekable();
    let mut next = || {
        bytes
            .next()
            .transpose()
            .context(Kind::Config, "reading the file")
    };
    let (mut line, mut record_line) = (1usize, 1usize);
    let (mut fields, mut header) = (1usize, None::<usize>);
    let (mut quoted, mut quote_line, mut at_start, mut any) = (false, 0usize, true, false);
    // One byte of look-ahead: a doubled quote, or CR LF.
    let mut ahead: Option<u8> = None;
    loop {
        let b = match ahead.take() {
            Some(b) => b,
            None => match next()? {
                Some(b) => b,
                None => break,
            },
        };
        let mut peek = |want: u8| -> Result<bool> {
            ahead = next()?;
            Ok(if ahead == Some(want) {
                ahead = None;
                true
            } else {
                false
            })
        };
        if quoted {
            match b {
                b'"' if peek(b'"')? => {}
                b'"' => quoted = false,
                b'\n' => line += 1,
                _ => {}
            }
        } else {
            match b {
                b'"' if at_start => {
                    quoted = true;
                    quote_line = line;
                }
                b'"' => {
                    return Err(Error::config(format!(
                        "line {line}: a quote inside an unquoted field (quote the whole field and double the quote)"
                    )));
                }
                b',' => {
                    fields += 1;
                    // A header wider than the contact schema holds unknown or repeated
                    // columns only: refused before a reader builds batches that wide.
                    let max = contacts_schema().fields().len();
                    if header.is_none() && fields > max {
                        return Err(Error::config(format!(
                            "line {line}: the header has more fields than the {max} contact columns (see `contacts-etl schema`)"
                        )));
                    }
                    at_start = true;
                    continue;
                }
                b'\n' | b'\r' => {
                    if b == b'\r' {
                        peek(b'\n')?;
                    }
                    if any || fields > 1 {
                        match header {
                            None => header = Some(fields),
                            Some(h) if h != fields => {
                                return Err(Error::config(format!(
                                    "line {record_line}: {fields} field(s), but the header has {h}"
                                )));
                            }
                            _ => {}
                        }
                    }
                    line += 1;
                    record_line = line;
                    (fields, at_start, any) = (1, true, false);
                    continue;
                }
                _ => {}
            }
        }
        any = true;
        at_start = false;
    }
    if quoted {
        return Err(Error::config(format!(
            "line {quote_line}: a quoted field is never closed (an unbalanced quote)"
        )));
    }
    if (any || fields > 1)
        && let Some(h) = header
        && h != fields
    {
        return Err(Error::config(format!(
            "line {record_line}: {fields} field(s), but the header has {h}"
        )));
    }
    Ok(())
}

/// The landed side of a plan: the rows it may touch, every insert key stamped on a landed
/// contact, and how many contacts the source has.
#[derive(Debug, Default)]
pub struct Landed {
    pub rows: Vec<ContactRecord>,
    pub keys: HashSet<String>,
    pub count: usize,
}

impl Landed {
    /// All of `rows`, with their keys.
    pub fn from_rows(rows: Vec<ContactRecord>) -> Landed {
        Landed {
            keys: rows.iter().filter_map(landed_key).collect(),
            count: rows.len(),
            rows,
        }
    }
}

/// Adds the insert keys stamped on the contacts of `batch` (contacts schema) to `keys`:
/// the value of the Google extended property, or the Aurinko native property, read
/// straight from the columns so rows a plan does not touch never become records.
pub(crate) fn landed_keys(batch: &RecordBatch, keys: &mut HashSet<String>) {
    use arrow::array::{Array, AsArray};
    if let Some(list) = batch
        .column_by_name("extended_properties")
        .and_then(|c| c.as_list_opt::<i32>())
        && let Some(props) = list.values().as_struct_opt()
        && let (Some(names), Some(values)) = (
            props
                .column_by_name("name")
                .and_then(|c| c.as_string_opt::<i32>()),
            props
                .column_by_name("value")
                .and_then(|c| c.as_string_opt::<i32>()),
        )
    {
        let offsets = list.value_offsets();
        let range = offsets[0] as usize..offsets[list.len()] as usize;
        for j in range {
            if names.is_valid(j) && names.value(j) == KEY_PROPERTY && values.is_valid(j) {
                keys.insert(values.value(j).to_string());
            }
        }
    }
    if let Some(native) = batch
        .column_by_name("native")
        .and_then(|c| c.as_string_opt::<i32>())
    {
        for n in native.iter().flatten() {
            if n.contains(KEY_PROPERTY)
                && let Some(k) = serde_json::from_str::<Value>(n)
                    .ok()
                    .and_then(|v| v.get(KEY_PROPERTY)?.as_str().map(str::to_string))
            {
                keys.insert(k);
            }
        }
    }
}

pub(crate) fn landed_key(r: &ContactRecord) -> Option<String> {
    if let Some(p) = r
        .extended_properties
        .iter()
        .find(|p| p.name.as_deref() == Some(KEY_PROPERTY))
    {
        return p.value.clone();
    }
    r.native
        .as_deref()
        .and_then(|n| serde_json::from_str::<Value>(n).ok())
        .and_then(|v| {
            v.get(KEY_PROPERTY)
                .and_then(Value::as_str)
                .map(str::to_string)
        })
}

#[cfg(test)]
mod tests {
    use super::diff::same_value;
    use super::*;
    use crate::model::schema::{Email, ExtendedProperty};
    use crate::providers::Rules;
    use crate::providers::aurinko::rules::AurinkoRules;
    use crate::providers::google::rules::GoogleRules;

    const GOOGLE: &GoogleRules = &GoogleRules;
    const AURINKO: &AurinkoRules = &AurinkoRules;

    fn rec(id: &str, name: &str) -> ContactRecord {
        ContactRecord {
            account: "example.com".into(),
            id: id.into(),
            etag: Some(format!("\"{id}\"")),
            display_name: Some(name.into()),
            emails: vec![Email {
                address: Some(format!("{id}@x.org")),
                kind: Some("work".into()),
                primary: Some(false),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// A list item without a primary flag is the same as one flagged not primary, and
    /// differs from the primary one.
    #[test]
    fn an_item_not_primary_equals_one_without_the_flag() {
        let with = |primary| ContactRecord {
            emails: vec![crate::model::schema::Email {
                address: Some("a@example.com".into()),
                primary,
                ..Default::default()
            }],
            ..Default::default()
        };
        let v = |p| field(&as_json(&with(p)), "emails");
        assert!(same_value(v(None), v(Some(false))));
        assert!(!same_value(v(None), v(Some(true))));
        assert!(!same_value(v(Some(false)), v(Some(true))));
    }

    #[test]
    fn diff_finds_inserts_updates_deletes_and_invalid_rows() {
        let landed = Landed::from_rows(vec![rec("a", "Ann"), rec("b", "Bob"), rec("c", "Cy")]);
        let mut bad = rec("", "New");
        bad.emails[0].label = Some("both".into());
        let desired = Desired {
            rows: vec![
                rec("a", "Ann"),
                rec("b", "Robert"),
                rec("", "Neu"),
                bad,
                rec("zz", "Ghost"),
            ],
            columns: ["id", "account", "display_name", "emails"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let p = diff(
            "s",
            GOOGLE,
            Some("example.com"),
            desired.clone(),
            &landed,
            Mode::Mirror,
        );
        assert_eq!(
            (
                p.count(OpKind::Insert),
                p.count(OpKind::Update),
                p.count(OpKind::Delete),
                p.unchanged
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(p.invalid.len(), 2, "{:?}", p.invalid);
        assert!(
            p.invalid
                .iter()
                .any(|i| i.reason.contains("exactly one of type or label"))
        );
        assert!(
            p.invalid
                .iter()
                .any(|i| i.reason.contains("no landed contact"))
        );
        let upd = p.ops.iter().find(|o| o.kind() == OpKind::Update).unwrap();
        let Action::Update { changed, etag, .. } = &upd.action else {
            unreachable!("found by its kind")
        };
        assert_eq!(changed, &vec!["display_name".to_string()]);
        assert_eq!(etag.as_deref(), Some("\"b\""));
        // Update mode refuses inserts and never deletes.
        let p = diff(
            "s",
            GOOGLE,
            Some("example.com"),
            desired.clone(),
            &landed,
            Mode::Update,
        );
        assert_eq!((p.count(OpKind::Insert), p.count(OpKind::Delete)), (0, 0));
    }

    /// A desired row based on another version than the landed one is sent under its own
    /// etag (the API's 412 makes it a conflict) with a warning that says so, whatever
    /// the local rules would say of the merged contact; a current one is judged by them.
    #[test]
    fn a_stale_row_is_a_conflict_before_any_local_rule() {
        let landed = Landed::from_rows(vec![rec("a", "Ann"), rec("b", "Bob")]);
        let mut stale = rec("a", "Ann");
        stale.etag = Some("\"older\"".into());
        stale.emails[0].label = Some("both".into());
        stale.notes = Some("x".repeat(3000));
        let mut current = rec("b", "Bob");
        current.emails[0].label = Some("both".into());
        let desired = Desired {
            rows: vec![stale, current],
            columns: ["id", "account", "etag", "emails", "notes"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let p = diff(
            "s",
            GOOGLE,
            Some("example.com"),
            desired.clone(),
            &landed,
            Mode::Update,
        );
        assert_eq!(p.count(OpKind::Update), 1, "{}", p.render(5));
        let Action::Update { id, etag, .. } = &p.ops[0].action else {
            unreachable!("one update")
        };
        assert_eq!((id.as_str(), etag.as_deref()), ("a", Some("\"older\"")));
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].reason.contains("412"), "{:?}", p.warnings);
        assert_eq!(p.invalid.len(), 1, "{:?}", p.invalid);
        assert_eq!(p.invalid[0].id.as_deref(), Some("b"));
        assert!(p.render(5).contains("WARNING row 1"), "{}", p.render(5));
    }

    #[test]
    fn an_insert_whose_key_already_landed_is_not_planned_again() {
        let desired = Desired {
            rows: vec![rec("", "Neu")],
            columns: ["id", "display_name", "emails"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let managed = vec!["display_name".to_string(), "emails".to_string()];
        let mut d = desired.rows[0].clone();
        d.account = "example.com".into();
        let key = insert_key("s", &d, &managed);
        let mut created = rec("n1", "Neu");
        created.extended_properties.push(key_property(&key));
        let p = diff(
            "s",
            GOOGLE,
            Some("example.com"),
            desired.clone(),
            &Landed::from_rows(vec![created.clone()]),
            Mode::Upsert,
        );
        assert_eq!((p.ops.len(), p.already_applied), (0, 1));
        // The keys read straight from Arrow columns are the records' keys: the Google
        // property and the Aurinko native property alike.
        let mut native = rec("n2", "Neu");
        native.native = Some(format!(r#"{{"x":1,"{KEY_PROPERTY}":"cetl-native"}}"#));
        let rows = vec![rec("plain", "P"), created, native];
        let batch = crate::model::schema::records_to_batch(&rows).unwrap();
        let mut keys = HashSet::new();
        landed_keys(&batch.slice(1, 2), &mut keys);
        assert_eq!(keys, Landed::from_rows(rows).keys);
        assert_eq!(keys.len(), 2);
    }

    /// The 10-property limit refuses; the 2 KB size is Google's own count, so the local
    /// estimate warns and never refuses.
    #[test]
    fn the_10_property_limit_refuses_and_the_2kb_estimate_only_warns() {
        let mut r = rec("", "Big");
        r.notes = Some("x".repeat(3000));
        assert_eq!(validate(&r, GOOGLE, &[], None), Vec::<String>::new());
        let w = GOOGLE.warnings(&r, None, &[]);
        assert!(
            w.len() == 1 && w[0].contains("2048") && w[0].contains("estimate"),
            "{w:?}"
        );
        let mut r = rec("", "Props");
        r.extended_properties = (0..10)
            .map(|i| ExtendedProperty {
                name: Some(format!("p{i}")),
                value: Some("v".into()),
                xml: None,
            })
            .collect();
        assert!(
            validate(&r, GOOGLE, &[], None)
                .iter()
                .any(|e| e.contains("extended properties"))
        );
        assert!(validate(&r, AURINKO, &[], None).is_empty());
    }

    fn check_bytes(text: &[u8]) -> std::result::Result<(), String> {
        check_csv(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_csv_check_finds_unclosed_quotes_and_ragged_rows() {
        assert!(check_bytes(b"id,notes\n1,\"a, \"\"b\"\"\nc\"\n2,x\n").is_ok());
        assert!(check_bytes(b"id,notes\r\n1,x\r\n\r\n").is_ok());
        let e = check_bytes(b"id,notes\n1,\"open\n2,x\n3,y\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("never closed"), "{e}");
        let e = check_bytes(b"id,notes\n1,x\n2,x,extra\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("3 field(s)"), "{e}");
        let e = check_bytes(b"id,notes\n1\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = check_bytes(b"id,notes\n1,ab\"c\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }

    /// An update is held to what it changes: a contact the API holds with 10 properties,
    /// over 2 KB, or with a rule already broken, is not refused for a change that does not
    /// make it worse (nor warned of, for the size); the insert key counts on inserts only.
    #[test]
    fn updates_are_not_refused_for_what_the_api_already_holds() {
        let mut held = rec("h", "Held");
        held.extended_properties = (0..10)
            .map(|i| ExtendedProperty {
                name: Some(format!("p{i}")),
                value: Some("v".into()),
                xml: None,
            })
            .collect();
        held.notes = Some("n".repeat(2500));
        held.emails[0].label = Some("also".into());
        let mut changed = held.clone();
        changed.notes = Some("m".repeat(2400));
        assert_eq!(
            validate(&changed, GOOGLE, &[], Some(&held)),
            Vec::<String>::new()
        );
        assert!(GOOGLE.warnings(&changed, Some(&held), &[]).is_empty());
        changed.notes = Some("m".repeat(2600));
        assert_eq!(
            validate(&changed, GOOGLE, &[], Some(&held)),
            Vec::<String>::new()
        );
        assert!(
            GOOGLE
                .warnings(&changed, Some(&held), &[])
                .iter()
                .any(|e| e.contains("2048"))
        );
        changed.notes = held.notes.clone();
        changed.extended_properties.push(key_property("x"));
        changed.extended_properties[10].name = Some("p10".into());
        assert!(
            validate(&changed, GOOGLE, &[], Some(&held))
                .iter()
                .any(|e| e.contains("11 extended properties"))
        );
        let mut insert = held.clone();
        insert.id.clear();
        insert.notes = None;
        insert.emails[0].label = None;
        assert!(
            validate(&insert, GOOGLE, &[], None)
                .iter()
                .any(|e| e.contains("with the insert key"))
        );
    }
}
