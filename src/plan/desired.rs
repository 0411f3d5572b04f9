//! A desired state's columns in the contact schema's types: checked, not coerced.
//!
//! A typed column (SQL, Parquet, JSON) must hold the kind of value its contact column
//! holds. Only representations of the same kind are normalised: the string types to
//! `Utf8`, whole numbers to `Int64`, any timestamp to microseconds UTC, a column of nulls
//! to the wanted type, a list of any list type, and a struct that names some of its
//! fields in any order (the rest null). Anything else is refused in words, with "CAST it
//! if you mean it": a number is not a name.
//!
//! CSV has no types: every cell is text, read as its column's type (lists and structs as
//! the JSON text `query --output x.csv` writes), and a cell that does not read names its
//! row.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, RecordBatch, StructArray,
    new_null_array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde_json::{Map, Value};

use crate::error::{Context as _, Error, Kind, Result};
use crate::model::schema::contacts_schema;

/// The hint every type error ends with.
const HINT: &str = "CAST it if you mean it";

/// A type in words: "text", "a whole number", "a list of {address, type, …}".
pub fn words(t: &DataType) -> String {
    use DataType::*;
    match t {
        Null => "null".into(),
        Utf8 | LargeUtf8 | Utf8View => "text".into(),
        Boolean => "true/false".into(),
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => "a whole number".into(),
        Float16 | Float32 | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..)
        | Decimal256(..) => "a decimal number".into(),
        Timestamp(..) => "a timestamp".into(),
        Date32 | Date64 => "a date".into(),
        Time32(_) | Time64(_) | Duration(_) | Interval(_) => "a time or duration".into(),
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => "binary data".into(),
        List(f) | LargeList(f) | FixedSizeList(f, _) | ListView(f) | LargeListView(f) => {
            format!("a list of {}", words(f.data_type()))
        }
        Struct(fs) => format!(
            "{{{}}}",
            fs.iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Dictionary(_, v) => words(v),
        Map(..) => "a map".into(),
        other => other.to_string(),
    }
}

/// Where a value does not fit: the path inside the column (`emails[].primary`; empty:
/// the column itself), what was found and what was wanted, in words.
struct Misfit {
    path: String,
    found: String,
    wanted: String,
}

impl Misfit {
    fn new(path: &str, found: String, wanted: &DataType) -> Misfit {
        Misfit {
            path: path.to_string(),
            found,
            wanted: words(wanted),
        }
    }
}

/// The error of a column whose values do not fit: column, row when one is named, where
/// inside the value, the types found and wanted, and the hint.
fn refuse(column: &str, row: Option<usize>, m: Misfit) -> Error {
    let at = if m.path.is_empty() {
        String::new()
    } else {
        format!(" at {column}{}", m.path)
    };
    Error::config(format!(
        "desired column `{column}`{}{at}: found {}, wanted {}. {HINT}",
        row.map(|r| format!(" (row {r})")).unwrap_or_default(),
        m.found,
        m.wanted
    ))
}

/// One value of `c` as text, cut short, to show what a row holds.
fn show(c: &dyn Array, i: usize) -> String {
    let f = arrow::util::display::ArrayFormatter::try_new(c, &Default::default());
    let s = f.map(|f| f.value(i).to_string()).unwrap_or_default();
    super::review::truncate(&s, 40)
}

/// A typed desired column in the type of its contact column `f`, or the error that says
/// why not (`first_row`: the row of the column's first value in the desired state, from
/// 0). See the module documentation for what is normalised.
pub fn conform_column(c: &ArrayRef, f: &Field, first_row: usize) -> Result<ArrayRef> {
    conform(c, f.data_type(), "").map_err(|m| {
        // A column of the wrong type is shown by its first value; a value that did not
        // convert is named by its own row.
        let row = (0..c.len()).find(|&i| c.is_valid(i));
        let m = match row {
            Some(i) if m.path.is_empty() => Misfit {
                found: format!("{} (e.g. {})", m.found, show(c.as_ref(), i)),
                ..m
            },
            _ => m,
        };
        refuse(f.name(), row.map(|i| first_row + i + 1), m)
    })
}

/// `c` in the type `wanted` where it holds the same kind of values.
fn conform(c: &ArrayRef, wanted: &DataType, path: &str) -> std::result::Result<ArrayRef, Misfit> {
    use DataType::*;
    let found = c.data_type();
    if found == wanted {
        return Ok(c.clone());
    }
    let misfit = || Misfit::new(path, words(found), wanted);
    let cast = |c: &ArrayRef| arrow::compute::cast(c, wanted).map_err(|_| misfit());
    let is_text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    match (found, wanted) {
        (Null, _) => Ok(new_null_array(wanted, c.len())),
        (t, Utf8) if is_text(t) => cast(c),
        (Dictionary(_, v), Utf8) if is_text(v) => cast(c),
        (Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32, Int64) => cast(c),
        (Timestamp(..), Timestamp(TimeUnit::Microsecond, _)) => cast(c),
        (LargeList(f) | FixedSizeList(f, _), List(_)) => {
            let as_list = DataType::List(Arc::new(Field::new("item", f.data_type().clone(), true)));
            let l = arrow::compute::cast(c, &as_list).map_err(|_| misfit())?;
            conform(&l, wanted, path)
        }
        (List(_), List(wf)) => {
            let l = c.as_list::<i32>();
            let values = conform(l.values(), wf.data_type(), &format!("{path}[]"))?;
            let out =
                ListArray::try_new(wf.clone(), l.offsets().clone(), values, l.nulls().cloned())
                    .map_err(|_| misfit())?;
            Ok(Arc::new(out))
        }
        (Struct(fs), Struct(wfs)) => {
            let s = c.as_struct();
            if let Some(extra) = fs.iter().find(|f| wfs.find(f.name()).is_none()) {
                return Err(Misfit::new(
                    path,
                    format!("a field `{}`", extra.name()),
                    wanted,
                ));
            }
            let children = wfs
                .iter()
                .map(|wf| match s.column_by_name(wf.name()) {
                    Some(child) => conform(child, wf.data_type(), &format!("{path}.{}", wf.name())),
                    None => Ok(new_null_array(wf.data_type(), s.len())),
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let out = StructArray::try_new(wfs.clone(), children, s.nulls().cloned())
                .map_err(|_| misfit())?;
            Ok(Arc::new(out))
        }
        _ => Err(misfit()),
    }
}

/// A CSV column (text) read as its contact column `f`'s type: text as it is, `true` /
/// `false`, whole numbers, timestamps, and lists and structs as JSON text. The first cell
/// that does not read names its row.
pub fn from_text(c: &ArrayRef, f: &Field, first_row: usize) -> Result<ArrayRef> {
    let wanted = f.data_type();
    let text = arrow::compute::cast(c, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let bad = |i: usize, found: String| {
        refuse(
            f.name(),
            Some(first_row + i + 1),
            Misfit::new("", found, wanted),
        )
    };
    let quoted = |s: &str| format!("the text {:?}", super::review::truncate(s, 40));
    match wanted {
        DataType::Utf8 => Ok(Arc::new(text.clone())),
        DataType::Boolean => {
            let mut out = Vec::with_capacity(text.len());
            for (i, v) in text.iter().enumerate() {
                out.push(match v.map(|s| s.trim().to_ascii_lowercase()) {
                    None => None,
                    Some(s) if s == "true" => Some(true),
                    Some(s) if s == "false" => Some(false),
                    Some(_) => return Err(bad(i, quoted(v.unwrap_or_default()))),
                });
            }
            Ok(Arc::new(BooleanArray::from(out)))
        }
        DataType::Int64 => {
            let mut out = Vec::with_capacity(text.len());
            for (i, v) in text.iter().enumerate() {
                out.push(match v {
                    None => None,
                    Some(s) => Some(s.trim().parse::<i64>().map_err(|_| bad(i, quoted(s)))?),
                });
            }
            Ok(Arc::new(Int64Array::from(out)))
        }
        DataType::Timestamp(..) => {
            let out = arrow::compute::cast(&(Arc::new(text.clone()) as ArrayRef), wanted)
                .unwrap_or_else(|_| new_null_array(wanted, text.len()));
            match (0..text.len()).find(|&i| text.is_valid(i) && out.is_null(i)) {
                Some(i) => Err(bad(i, quoted(text.value(i)))),
                None => Ok(out),
            }
        }
        DataType::List(_) | DataType::Struct(_) => {
            let mut rows = Vec::with_capacity(text.len());
            for (i, v) in text.iter().enumerate() {
                let value = match v {
                    None => Value::Null,
                    Some(s) => serde_json::from_str::<Value>(s)
                        .map_err(|_| bad(i, format!("{} (not JSON)", quoted(s))))?,
                };
                check_json(&value, wanted, "")
                    .map_err(|m| refuse(f.name(), Some(first_row + i + 1), m))?;
                let mut row = Map::new();
                row.insert("v".into(), value);
                rows.push(row);
            }
            let field = Field::new("v", wanted.clone(), true);
            let batch = decode_json(Arc::new(Schema::new(vec![field])), &rows)?;
            Ok(batch.column(0).clone())
        }
        other => Err(Error::config(format!(
            "desired column `{}`: a CSV cannot give {}",
            f.name(),
            words(other)
        ))),
    }
}

/// A JSON value in words.
fn json_words(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "true/false".into(),
        Value::Number(n) if n.is_i64() || n.is_u64() => format!("a whole number ({n})"),
        Value::Number(n) => format!("a decimal number ({n})"),
        Value::String(s) => format!("the text {:?}", super::review::truncate(s, 40)),
        Value::Array(_) => "a list".into(),
        Value::Object(o) => format!(
            "{{{}}}",
            o.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Whether a JSON value is of the type `t` (null always is); where not, where and what.
fn check_json(v: &Value, t: &DataType, path: &str) -> std::result::Result<(), Misfit> {
    let misfit = || Misfit::new(path, json_words(v), t);
    match (v, t) {
        (Value::Null, _) | (Value::String(_), DataType::Utf8) => Ok(()),
        (Value::Bool(_), DataType::Boolean) => Ok(()),
        (Value::Number(n), DataType::Int64) if n.is_i64() => Ok(()),
        (Value::String(s), DataType::Timestamp(..)) => {
            arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(s)
                .map(|_| ())
                .map_err(|_| misfit())
        }
        (Value::Array(items), DataType::List(f)) => items
            .iter()
            .try_for_each(|i| check_json(i, f.data_type(), &format!("{path}[]"))),
        (Value::Object(o), DataType::Struct(fs)) => {
            o.iter().try_for_each(|(k, v)| match fs.find(k) {
                Some((_, f)) => check_json(v, f.data_type(), &format!("{path}.{k}")),
                None => Err(Misfit::new(path, format!("a field `{k}`"), t)),
            })
        }
        _ => Err(misfit()),
    }
}

/// Rows of JSON objects as one batch of `schema` (values already checked).
fn decode_json(schema: Arc<Schema>, rows: &[Map<String, Value>]) -> Result<RecordBatch> {
    let mut d = arrow::json::ReaderBuilder::new(schema.clone()).build_decoder()?;
    d.serialize(rows)?;
    Ok(d.flush()?.unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

/// Rows of a desired state read and handed on at a time (a batch of them): a reader
/// holds one batch, not the file.
pub const BATCH_ROWS: usize = 1024;

/// A desired-state JSON file, read from `input` and handed to `sink` [`BATCH_ROWS`] rows
/// at a time: JSON lines (as `query --output x.json` writes) or one array of objects.
/// Each key is a column; a key of the contact schema is checked against its type (the
/// first value that does not fit names its row), any other is kept as a column of nulls
/// for the caller to refuse by name.
pub fn read_json(
    mut input: impl std::io::BufRead,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let mut rows = JsonRows {
        rows: Vec::new(),
        names: Vec::new(),
        first_row: 0,
        sink,
    };
    // The first byte that is not white space tells an array from JSON lines.
    let array = loop {
        let buf = input.fill_buf()?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => break buf[i] == b'[',
            None if buf.is_empty() => return Ok(()),
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    };
    if array {
        read_json_array(input, &mut rows)?;
    } else {
        let mut line = String::new();
        let mut n = 0usize;
        loop {
            line.clear();
            if input.read_line(&mut line)? == 0 {
                break;
            }
            n += 1;
            if line.trim().is_empty() {
                continue;
            }
            let v = serde_json::from_str::<Value>(&line)
                .with_context(Kind::Config, || format!("line {n}: not JSON"))?;
            rows.push(v, &format!(" (line {n})"))?;
        }
    }
    rows.flush()
}

/// One array of JSON objects, element by element, into `rows`.
fn read_json_array(input: impl std::io::Read, rows: &mut JsonRows<'_>) -> Result<()> {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    struct Each<'r, 'a> {
        rows: &'r mut JsonRows<'a>,
        failed: &'r mut Option<Error>,
    }
    impl<'de> Visitor<'de> for Each<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
            while let Some(v) = seq.next_element::<Value>()? {
                if let Err(e) = self.rows.push(v, "") {
                    *self.failed = Some(e);
                    return Err(serde::de::Error::custom("stopped"));
                }
            }
            Ok(())
        }
    }
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_reader(input);
    let read = de
        .deserialize_seq(Each {
            rows,
            failed: &mut failed,
        })
        .and_then(|()| de.end());
    if let Some(e) = failed {
        return Err(e);
    }
    read.context(Kind::Config, "not a JSON array of objects")
}

/// JSON rows gathered into batches for a sink.
struct JsonRows<'a> {
    rows: Vec<Map<String, Value>>,
    /// The keys of the gathered rows, in the order met.
    names: Vec<String>,
    /// The row number (from 0) of the first gathered row.
    first_row: usize,
    sink: &'a mut dyn FnMut(RecordBatch) -> Result<()>,
}

impl JsonRows<'_> {
    /// Checks one row (`at`: where it is, for messages) and gathers it; a full batch goes
    /// to the sink.
    fn push(&mut self, v: Value, at: &str) -> Result<()> {
        let row = self.first_row + self.rows.len();
        let Value::Object(o) = v else {
            return Err(Error::config(format!(
                "row {}{at}: not a JSON object",
                row + 1
            )));
        };
        let schema = contacts_schema();
        for (k, v) in &o {
            if !self.names.contains(k) {
                // More keys than the schema has columns are unknown ones: refused before
                // a batch that wide is built (the caller names the unknown ones otherwise).
                if self.names.len() == schema.fields().len() {
                    return Err(Error::config(format!(
                        "row {}{at}: more keys than the {} contact columns (see `contacts-etl schema`)",
                        row + 1,
                        schema.fields().len()
                    )));
                }
                self.names.push(k.clone());
            }
            if let Ok(f) = schema.field_with_name(k) {
                check_json(v, f.data_type(), "").map_err(|m| refuse(k, Some(row + 1), m))?;
            }
        }
        self.rows.push(o);
        if self.rows.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// The gathered rows as one batch to the sink: each key a column (a key the contact
    /// schema does not have, a column of nulls).
    fn flush(&mut self) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let (rows, names) = (
            std::mem::take(&mut self.rows),
            std::mem::take(&mut self.names),
        );
        self.first_row += rows.len();
        let schema = contacts_schema();
        let known: Vec<Field> = names
            .iter()
            .filter_map(|n| schema.field_with_name(n).ok())
            .map(|f| f.clone().with_nullable(true))
            .collect();
        let batch = decode_json(Arc::new(Schema::new(known)), &rows)?;
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for n in &names {
            match batch.column_by_name(n) {
                Some(c) => {
                    fields.push(batch.schema().field_with_name(n)?.clone());
                    columns.push(c.clone());
                }
                None => {
                    fields.push(Field::new(n, DataType::Null, true));
                    columns.push(new_null_array(&DataType::Null, rows.len()));
                }
            }
        }
        (self.sink)(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}

/// A desired-state CSV file (already checked by `check_csv`) with every column as text,
/// read [`BATCH_ROWS`] rows at a time.
pub fn read_csv(
    path: &std::path::Path,
) -> Result<impl Iterator<Item = std::result::Result<RecordBatch, arrow::error::ArrowError>>> {
    let open = || std::fs::File::open(path).map(std::io::BufReader::new);
    let (inferred, _) = arrow::csv::reader::Format::default()
        .with_header(true)
        .infer_schema(open()?, Some(1))?;
    let all_text = Schema::new(
        inferred
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    );
    Ok(arrow::csv::ReaderBuilder::new(Arc::new(all_text))
        .with_header(true)
        .with_batch_size(BATCH_ROWS)
        .build_buffered(open()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Int32Array, Int64Array, LargeStringArray, StringArray};

    /// The batches `read_json` hands on for `text`.
    fn json(text: &str) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        read_json(text.as_bytes(), &mut |b| {
            out.push(b);
            Ok(())
        })?;
        Ok(out)
    }

    fn field(name: &str) -> Field {
        contacts_schema().field_with_name(name).unwrap().clone()
    }

    async fn sql_batch(sql: &str) -> RecordBatch {
        let ctx = datafusion::prelude::SessionContext::new();
        let b = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        b.into_iter().next().unwrap()
    }

    /// A number or a flag where text is wanted is refused, in words, with the row and a
    /// value; so is text where a flag is wanted.
    #[test]
    fn a_column_of_another_kind_is_refused_in_words() {
        let c: ArrayRef = Arc::new(Int64Array::from(vec![None, Some(42)]));
        let e = conform_column(&c, &field("given_name"), 10)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`given_name`")
                && e.contains("row 12")
                && e.contains("found a whole number (e.g. 42)")
                && e.contains("wanted text")
                && e.contains("CAST it if you mean it"),
            "{e}"
        );
        let c: ArrayRef = Arc::new(BooleanArray::from(vec![true]));
        let e = conform_column(&c, &field("family_name"), 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("found true/false") && e.contains("wanted text"),
            "{e}"
        );
        let c: ArrayRef = Arc::new(StringArray::from(vec!["x@y.z"]));
        let e = conform_column(&c, &field("emails"), 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("wanted a list of {address, type, label, primary, display_name}")
                && !e.contains("metadata")
                && !e.contains("Utf8"),
            "{e}"
        );
    }

    /// Representations of the same kind are normalised: other string and int types,
    /// a column of nulls.
    #[test]
    fn the_same_kind_in_another_representation_is_accepted() {
        let c: ArrayRef = Arc::new(LargeStringArray::from(vec!["Ann"]));
        let out = conform_column(&c, &field("given_name"), 0).unwrap();
        assert_eq!(out.as_string::<i32>().value(0), "Ann");
        let c: ArrayRef = Arc::new(arrow::array::StringViewArray::from(vec!["Ann"]));
        assert!(conform_column(&c, &field("given_name"), 0).is_ok());
        let c: ArrayRef = Arc::new(arrow::array::NullArray::new(2));
        let out = conform_column(&c, &field("emails"), 0).unwrap();
        assert_eq!(out.null_count(), 2);
        assert_eq!(out.data_type(), field("emails").data_type());
        let int = Field::new("n", DataType::Int64, true);
        let c: ArrayRef = Arc::new(Int32Array::from(vec![7]));
        let out = conform_column(&c, &int, 0).unwrap();
        assert_eq!(
            out.as_primitive::<arrow::datatypes::Int64Type>().value(0),
            7
        );
    }

    /// In SQL a list item may name some of its struct's fields, in any order; a field the
    /// struct does not have, or a field of another kind, is refused naming where.
    #[tokio::test]
    async fn a_struct_item_may_name_some_fields_in_any_order() {
        let b =
            sql_batch("SELECT [named_struct('type', 'work', 'address', 'a@b.c')] AS emails").await;
        let out = conform_column(b.column(0), &field("emails"), 0).unwrap();
        assert_eq!(out.data_type(), field("emails").data_type());
        let items = out.as_list::<i32>().value(0);
        let s = items.as_struct();
        assert_eq!(
            s.column_by_name("address")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "a@b.c"
        );
        assert_eq!(
            s.column_by_name("type")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "work"
        );
        assert!(s.column_by_name("label").unwrap().is_null(0));
        let b = sql_batch("SELECT [named_struct('address', 'a@b.c', 'mail', 'x')] AS emails").await;
        let e = conform_column(b.column(0), &field("emails"), 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a field `mail`") && e.contains("emails[]"),
            "{e}"
        );
        let b = sql_batch("SELECT [named_struct('address', 'a@b.c', 'primary', 'yes')] AS emails")
            .await;
        let e = conform_column(b.column(0), &field("emails"), 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("emails[].primary")
                && e.contains("found text")
                && e.contains("wanted true/false"),
            "{e}"
        );
    }

    /// CSV cells read as their column's type, lists and structs from JSON text; a cell
    /// that does not read names its row.
    #[test]
    fn csv_text_reads_as_the_column_type_and_names_the_bad_row() {
        let c: ArrayRef = Arc::new(StringArray::from(vec![
            Some(r#"[{"address":"a@b.c","type":"work"}]"#),
            None,
        ]));
        let out = from_text(&c, &field("emails"), 0).unwrap();
        assert_eq!(out.data_type(), field("emails").data_type());
        assert!(out.is_null(1));
        let c: ArrayRef = Arc::new(StringArray::from(vec![Some("42")]));
        assert_eq!(
            from_text(&c, &field("given_name"), 0)
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "42"
        );
        let col: ArrayRef = Arc::new(StringArray::from(vec![
            Some("2024-01-01T00:00:00Z"),
            None,
            Some("not a time"),
        ]));
        let e = from_text(&col, &field("updated"), 10)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`updated`") && e.contains("row 13") && e.contains("not a time"),
            "{e}"
        );
        let c: ArrayRef = Arc::new(StringArray::from(vec![
            Some("[]"),
            Some(r#"[{"address":"a@b.c","primary":"yes"}]"#),
        ]));
        let e = from_text(&c, &field("emails"), 0).unwrap_err().to_string();
        assert!(e.contains("row 2") && e.contains("emails[].primary"), "{e}");
    }

    /// JSON lines are checked value by value against the schema.
    #[test]
    fn json_values_are_checked_against_the_schema() {
        let b = json(
            "{\"id\":\"a\",\"given_name\":\"Ann\",\"emails\":[{\"type\":\"work\",\"address\":\"a@b.c\"}]}\n{\"id\":\"b\",\"zzz\":1}\n",
        )
        .unwrap();
        let b = &b[0];
        assert_eq!(b.num_rows(), 2);
        assert_eq!(
            b.schema().field_with_name("emails").unwrap().data_type(),
            field("emails").data_type()
        );
        assert_eq!(
            b.schema().field_with_name("zzz").unwrap().data_type(),
            &DataType::Null
        );
        let e = json("{\"id\":\"a\"}\n{\"id\":\"b\",\"given_name\":42}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`given_name` (row 2)") && e.contains("a whole number (42)"),
            "{e}"
        );
    }

    /// JSON lines, a JSON array and a CSV are handed on BATCH_ROWS rows at a time, row
    /// numbers counting on across batches: a reader never holds the file's rows at once.
    #[test]
    fn desired_files_are_read_a_batch_at_a_time() {
        let rows = 2 * BATCH_ROWS + 452;
        let want = vec![BATCH_ROWS, BATCH_ROWS, 452];
        let sizes = |b: Vec<RecordBatch>| b.iter().map(|b| b.num_rows()).collect::<Vec<_>>();
        let lines: String = (0..rows).map(|i| format!("{{\"id\":\"{i}\"}}\n")).collect();
        assert_eq!(sizes(json(&lines).unwrap()), want);
        let array = format!(
            " [{}]",
            (0..rows)
                .map(|i| format!("{{\"id\":\"{i}\"}}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(sizes(json(&array).unwrap()), want);
        let bad = lines.replace("{\"id\":\"2000\"}", "{\"id\":2000}");
        let e = json(&bad).unwrap_err().to_string();
        assert!(e.contains("`id` (row 2001)"), "{e}");
        let path = std::env::temp_dir().join(format!("desired-{}.csv", std::process::id()));
        let csv: String = std::iter::once("id,notes\n".to_string())
            .chain((0..rows).map(|i| format!("{i},n\n")))
            .collect();
        std::fs::write(&path, csv).unwrap();
        let read = read_csv(&path)
            .unwrap()
            .collect::<std::result::Result<Vec<_>, _>>();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(sizes(read.unwrap()), want);
    }
}
