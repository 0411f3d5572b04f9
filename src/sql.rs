//! SQL over the lake with DataFusion.
//!
//! ```no_run
//! # async fn demo() -> contacts_etl::Result<()> {
//! let lake = contacts_etl::lake::Lake::new(url::Url::parse("file:///tmp/contacts-lake/").unwrap(), Default::default());
//! let ctx = contacts_etl::sql::session(&lake).await?;
//! let df = ctx.sql("SELECT account, count(*) FROM contacts GROUP BY account").await?;
//! df.show().await?;
//! # Ok(()) }
//! ```
//!
//! Registered: the tables `contacts`, `contact_changes`, `sync_runs`, `writeback_results`,
//! and the views `contact_emails` and `contact_phones` (one row per e-mail / phone).

use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;

use crate::error::{Context, Error, Kind, Result};
use crate::lake::{Lake, TableKind};

/// Which state of the lake a session sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum AsOf {
    /// The latest version of every table.
    #[default]
    Latest,
    /// Every table as it was right after this sync run (or apply).
    Run(String),
}

/// A DataFusion session with every existing lake table and the convenience views.
pub async fn session(lake: &Lake) -> Result<SessionContext> {
    session_as_of(lake, &AsOf::Latest).await
}

/// Like [`session`], with the tables as of a run.
///
/// A single table at a Delta version is reachable from any session too: quote
/// `"contacts@v3"` in the SQL (see [`query_as_of`]).
///
/// A run is named by its whole id or a prefix of it that only one run has; an id that
/// names no run of `sync_runs` or `writeback_results`, or a prefix that several runs share,
/// is an error ([`Error::Config`]) that lists the runs it could mean.
pub async fn session_as_of(lake: &Lake, as_of: &AsOf) -> Result<SessionContext> {
    let run = match as_of {
        AsOf::Latest => None,
        AsOf::Run(r) => Some(resolve_run(lake, r, "--as-of-run").await?),
    };
    // A quoted file path reads that file ('plan.parquet' from `plan --out`, an export);
    // the information schema answers SHOW TABLES.
    let ctx = crate::lake::session_context().enable_url_table();
    for kind in TableKind::ALL {
        let t = match &run {
            None => lake.open(kind).await?,
            Some(r) => lake.open_as_of_run(kind, r).await?,
        };
        if let Some(t) = t {
            ctx.register_table(kind.name(), lake.provider(kind, &t).await?)?;
        }
    }
    if ctx.table_exist("contacts")? {
        for (name, sql) in [
            (
                "contact_emails",
                "SELECT source, account, id, display_name, e['address'] AS address, e['type'] AS type, e['label'] AS label, e['primary'] AS \"primary\" FROM (SELECT source, account, id, display_name, unnest(emails) AS e FROM contacts)",
            ),
            (
                "contact_phones",
                "SELECT source, account, id, display_name, p['number'] AS number, p['type'] AS type, p['label'] AS label, p['primary'] AS \"primary\" FROM (SELECT source, account, id, display_name, unnest(phones) AS p FROM contacts)",
            ),
        ] {
            let df = ctx.sql(sql).await?;
            ctx.register_table(name, df.into_view())?;
        }
    }
    Ok(ctx)
}

/// Runs one SQL statement over the lake and collects the result.
///
/// The SQL only reads: a statement that would change a table, a file or the session
/// (INSERT, COPY, CREATE, DROP, SET, …) is refused ([`Error::Config`]) and nothing runs.
pub async fn query(lake: &Lake, sql: &str) -> Result<Vec<arrow::array::RecordBatch>> {
    query_as_of(lake, sql, &AsOf::Latest).await
}

/// Runs SQL over the lake as of a run. Quoted names `"TABLE@vN"` (a Delta version) and
/// `"TABLE@RUN_ID"` (as of a run) name one table at that point, e.g.
/// `SELECT count(*) FROM "contacts@v2"`.
pub async fn query_as_of(
    lake: &Lake,
    sql: &str,
    as_of: &AsOf,
) -> Result<Vec<arrow::array::RecordBatch>> {
    let df = dataframe_as_of(lake, sql, as_of).await?;
    df.collect().await.context(Kind::Sql, "running the query")
}

/// Runs SQL over the lake as [`query`] does, its answer a stream of batches: a reader
/// that keeps only what it needs of each batch holds no more than that.
pub async fn query_stream(
    lake: &Lake,
    sql: &str,
) -> Result<datafusion::execution::SendableRecordBatchStream> {
    let df = dataframe_as_of(lake, sql, &AsOf::Latest).await?;
    df.execute_stream()
        .await
        .context(Kind::Sql, "running the query")
}

/// The read-only SQL `sql` over the lake as of `as_of`, planned, not yet run.
async fn dataframe_as_of(
    lake: &Lake,
    sql: &str,
    as_of: &AsOf,
) -> Result<datafusion::dataframe::DataFrame> {
    let ctx = session_as_of(lake, as_of).await?;
    for quoted in sql.split('"').skip(1).step_by(2) {
        let Some((name, at)) = quoted.split_once('@') else {
            continue;
        };
        let kind = TableKind::from_name(name).ok_or_else(|| Error::sql(format!("\"{quoted}\": no table {name}; tables: contacts, contact_changes, sync_runs, writeback_results")))?;
        let t = match at.strip_prefix('v').and_then(|v| v.parse::<i64>().ok()) {
            Some(v) => lake.open_version(kind, v).await?.ok_or_else(|| {
                Error::sql(format!("\"{quoted}\": the table has no version {v} yet"))
            })?,
            None => {
                let run = resolve_run(lake, at, &format!("\"{quoted}\"")).await?;
                lake.open_as_of_run(kind, &run).await?.ok_or_else(|| {
                    Error::sql(format!(
                        "\"{quoted}\": the table {name} did not exist yet after run {run}"
                    ))
                })?
            }
        };
        ctx.register_table(quoted, lake.provider(kind, &t).await?)?;
    }
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state
        .sql_to_statement(sql, &dialect)
        .context(Kind::Sql, "reading the SQL")?;
    let tables = state
        .resolve_table_references(&statement)
        .context(Kind::Sql, "reading the SQL")?;
    let plan = match state.statement_to_plan(statement).await {
        Ok(plan) => plan,
        Err(e) => {
            // A table the lake does not have is said with the tables it has: looked up
            // here, as DataFusion says it only in its message's words.
            let missing: Vec<String> = tables
                .iter()
                .filter(|t| !ctx.table_exist((*t).clone()).unwrap_or(false))
                .map(|t| t.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(no_such_table(&ctx, &missing));
            }
            return Err(Error::with_source(Kind::Sql, "planning the query", e));
        }
    };
    read_only().verify_plan(&plan).map_err(|e| {
        Error::config(format!(
            "refused: this SQL would change something ({}); SQL given to `query`, `plan` and `--desired` only reads: SELECT, WITH, SHOW, DESCRIBE or EXPLAIN",
            e.strip_backtrace().trim_start_matches("Error during planning: ")
        ))
    })?;
    ctx.execute_logical_plan(plan)
        .await
        .context(Kind::Sql, "planning the query")
}

/// What user SQL may do: read. DDL (CREATE, DROP), DML (INSERT, UPDATE, DELETE, COPY) and
/// session statements (SET, PREPARE, transactions) are refused after planning, before
/// anything runs; SHOW and DESCRIBE plan as reads and pass.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// The whole id of the run `id` names: the run itself, or the one run whose id starts with
/// `id`. The runs are those of `sync_runs` (`run_id`) and `writeback_results` (`apply_id`).
/// An id no run has, or a prefix several runs share, is a configuration error that shows
/// the runs (`what` names the argument in the message).
pub async fn resolve_run(lake: &Lake, id: &str, what: &str) -> Result<String> {
    let mut runs: Vec<String> = Vec::new();
    for (kind, column) in [
        (TableKind::SyncRuns, "run_id"),
        (TableKind::WritebackResults, "apply_id"),
    ] {
        let Some(t) = lake.open(kind).await? else {
            continue;
        };
        let ctx = crate::lake::session_context();
        crate::lake::checksum::expect_table(&t);
        ctx.register_table("t", t.table_provider().await?)?;
        let batches = ctx
            .sql(&format!("SELECT DISTINCT {column} FROM t"))
            .await?
            .collect()
            .await?;
        for b in &batches {
            let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
            let col = col
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .ok_or_else(|| Error::sql(format!("{column} is not text")))?;
            runs.extend(col.iter().flatten().map(str::to_string));
        }
    }
    runs.sort();
    runs.dedup();
    if runs.iter().any(|r| r == id) {
        return Ok(id.to_string());
    }
    let matching: Vec<&String> = runs
        .iter()
        .filter(|r| !id.is_empty() && r.starts_with(id))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] if runs.is_empty() => Err(Error::config(format!(
            "{what}: no run {id:?}; the lake has no runs yet (run sync first)"
        ))),
        [] => {
            let latest: Vec<&str> = runs.iter().rev().take(5).map(String::as_str).collect();
            Err(Error::config(format!(
                "{what}: no run {id:?}; {} run(s) in sync_runs and writeback_results, the latest: {} (SELECT DISTINCT run_id FROM sync_runs lists them all)",
                runs.len(),
                latest.join(", ")
            )))
        }
        many => {
            let shown: Vec<&str> = many.iter().take(5).map(|r| r.as_str()).collect();
            Err(Error::config(format!(
                "{what}: {id:?} is the start of {} runs' ids: {}{}; give the whole run id",
                many.len(),
                shown.join(", "),
                if many.len() > 5 { ", …" } else { "" }
            )))
        }
    }
}

/// The error for a query naming `tables`, which the lake does not have: the tables it has.
fn no_such_table(ctx: &SessionContext, tables: &[String]) -> Error {
    let mut names: Vec<String> = ctx
        .catalog("datafusion")
        .and_then(|c| c.schema("public"))
        .map(|s| s.table_names())
        .unwrap_or_default();
    names.sort();
    Error::not_found(format!(
        "table '{}' not found. Tables here: {}",
        tables.join("', '"),
        if names.is_empty() {
            "none yet; run sync first".into()
        } else {
            names.join(", ")
        }
    ))
}

/// Renders batches as `table`, `csv` or `json` (JSON lines) text.
pub fn render(batches: &[arrow::array::RecordBatch], format: &str) -> Result<String> {
    match format {
        "table" => render_table(batches, None),
        "csv" => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for b in batches {
                    w.write(&flatten_for_text(b)?)?;
                }
            }
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        "json" => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        other => Err(Error::config(format!(
            "unknown format {other:?}: use table, csv, json or parquet"
        ))),
    }
}

/// A result as a text table (`query`'s default) whose lines fit `width` columns: the
/// widest columns are narrowed first and their cells cut with `…`; `None` keeps every
/// value whole. Line breaks in values show as spaces. An empty result is `(0 rows)`.
pub fn render_table(batches: &[arrow::array::RecordBatch], width: Option<usize>) -> Result<String> {
    use crate::human::{fit, pad, width_of};
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let Some(schema) = batches.first().map(|b| b.schema()).filter(|_| rows > 0) else {
        return Ok("(0 rows)\n".into());
    };
    let header: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| fit(f.name(), usize::MAX))
        .collect();
    let cells = table_cells(batches)?;
    let whole: Vec<usize> = (0..header.len())
        .map(|c| {
            cells
                .iter()
                .map(|r| width_of(&r[c]))
                .chain([width_of(&header[c])])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let widths = match width {
        Some(w) => fit_columns(&whole, w),
        None => whole,
    };
    let rule = format!(
        "+{}+\n",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let line = |r: &[String]| {
        let mut s = String::from("|");
        for (v, w) in r.iter().zip(&widths) {
            s.push_str(&format!(" {} |", pad(&fit(v, *w), *w)));
        }
        s.push('\n');
        s
    };
    let mut out = rule.clone();
    out.push_str(&line(&header));
    out.push_str(&rule);
    for r in &cells {
        out.push_str(&line(r));
    }
    out.push_str(&rule);
    Ok(out)
}

/// Every cell of the result as text (null as an empty cell), row by row.
fn table_cells(batches: &[arrow::array::RecordBatch]) -> Result<Vec<Vec<String>>> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for i in 0..b.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| crate::human::fit(&f.value(i).to_string(), usize::MAX))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// Column widths that fit `total` columns of table (with its `| ` and ` |` borders): the
/// widest columns give way first, none below 6 (or its whole width, if less); a table
/// that cannot fit even so keeps those widths.
fn fit_columns(whole: &[usize], total: usize) -> Vec<usize> {
    let border = 3 * whole.len() + 1;
    let room = total.saturating_sub(border);
    if whole.iter().sum::<usize>() <= room {
        return whole.to_vec();
    }
    // The largest cap such that the capped widths fit, then the room left goes to the
    // capped columns, left to right.
    let floor = |w: usize| w.min(6);
    let mut cap = whole.iter().copied().max().unwrap_or(0);
    while cap > 6
        && whole
            .iter()
            .map(|&w| w.min(cap).max(floor(w)))
            .sum::<usize>()
            > room
    {
        cap -= 1;
    }
    let mut widths: Vec<usize> = whole.iter().map(|&w| w.min(cap).max(floor(w))).collect();
    let mut left = room.saturating_sub(widths.iter().sum());
    for (w, &full) in widths.iter_mut().zip(whole) {
        let more = (full - *w).min(left);
        *w += more;
        left -= more;
    }
    widths
}

/// CSV cannot hold lists or structs: render those columns as JSON text.
fn flatten_for_text(b: &arrow::array::RecordBatch) -> Result<arrow::array::RecordBatch> {
    use arrow::datatypes::DataType;
    let mut fields = Vec::new();
    let mut cols = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        match f.data_type() {
            DataType::List(_)
            | DataType::LargeList(_)
            | DataType::Struct(_)
            | DataType::Map(..) => {
                let one = arrow::array::RecordBatch::try_from_iter(vec![("v", c.clone())])?;
                let mut buf = Vec::new();
                {
                    let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
                    w.write(&one)?;
                    w.finish()?;
                }
                let vals: Vec<Option<String>> = String::from_utf8_lossy(&buf)
                    .lines()
                    .map(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .ok()
                            .and_then(|v| v.get("v").map(|x| x.to_string()))
                    })
                    .collect();
                fields.push(arrow::datatypes::Field::new(f.name(), DataType::Utf8, true));
                cols.push(std::sync::Arc::new(arrow::array::StringArray::from(vals))
                    as arrow::array::ArrayRef);
            }
            _ => {
                fields.push(f.as_ref().clone());
                cols.push(c.clone());
            }
        }
    }
    Ok(arrow::array::RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        cols,
    )?)
}

/// Writes batches as one Parquet file to a local path or an object-store URL.
pub async fn write_parquet(
    lake: &Lake,
    batches: &[arrow::array::RecordBatch],
    dest: &str,
) -> Result<u64> {
    use object_store::ObjectStoreExt;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| Error::sql("the query returned no columns"))?;
    let mut buf = Vec::new();
    {
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None)?;
        for b in batches {
            w.write(b)?;
        }
        w.close()?;
    }
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    if dest.contains("://") {
        let url =
            url::Url::parse(dest).with_context(Kind::Config, || format!("--output {dest:?}"))?;
        let (store, path) = object_store::parse_url_opts(
            &url,
            lake.storage_options()
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
        )?;
        store.put(&path, buf.into()).await?;
    } else {
        let path = std::path::Path::new(dest);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(Kind::Config, || {
                format!("--output {dest}: cannot create {}", dir.display())
            })?;
        }
        std::fs::write(path, buf).with_context(Kind::Config, || format!("--output {dest}"))?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(notes: &[Option<&str>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
            Field::new("notes", DataType::Utf8, true),
        ]));
        let ids: Vec<String> = (0..notes.len()).map(|i| format!("id-{i}")).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(Int64Array::from_iter_values(0..notes.len() as i64)),
                Arc::new(StringArray::from(notes.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn tables_fit_their_width_cutting_the_widest_cells() {
        let long = "x".repeat(5000);
        let b = batch(&[Some(&long), Some("line one\nline two"), None]);
        let text = render_table(std::slice::from_ref(&b), Some(60)).unwrap();
        for l in text.lines() {
            assert_eq!(crate::human::width_of(l), 60, "{text}");
        }
        // The short columns stay whole; the long value is cut with an ellipsis.
        assert!(text.contains("| id-0 | 0 | xxxx"), "{text}");
        assert!(text.contains("x… |"), "{text}");
        assert!(text.contains("line one line two"), "{text}");
        // Whole, the value is all there, on one line.
        let whole = render_table(&[b], None).unwrap();
        assert!(
            whole.contains(&long) && whole.lines().count() == 7,
            "{whole}"
        );
    }

    #[test]
    fn an_empty_result_says_so() {
        assert_eq!(render_table(&[], Some(80)).unwrap(), "(0 rows)\n");
        assert_eq!(render_table(&[batch(&[])], None).unwrap(), "(0 rows)\n");
    }
}
