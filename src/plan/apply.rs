//! `plan` and `apply` for one source of a pipeline.

use std::sync::Arc;

use std::collections::{HashMap, HashSet};

use arrow::array::{
    AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::protocol::SaveMode;

use super::resolve::Resolution;
use super::{Landed, Mode, OpKind, Plan, diff, load_desired};
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::http::Metrics;
use crate::lake::{Lake, TableKind, writeback_results_schema};
use crate::model::write::{OpResult, Outcome};
use crate::sync::{AccountReport, SyncOptions, lake_of, run_sync};

/// The `--max-delete` guard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxDelete {
    /// At most this many deletes.
    Count(usize),
    /// At most this share (0–100) of the landed contacts.
    Percent(f64),
}

impl std::str::FromStr for MaxDelete {
    type Err = Error;
    fn from_str(s: &str) -> Result<MaxDelete> {
        let bad = || {
            Error::config(format!(
                "--max-delete {s:?}: use a count (e.g. 50) or a percentage (e.g. 5%)"
            ))
        };
        match s.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(MaxDelete::Percent)
                .ok_or_else(bad),
            None => s.trim().parse().map(MaxDelete::Count).map_err(|_| bad()),
        }
    }
}

/// What `apply` is asked to do.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub source: String,
    pub desired: String,
    pub mode: Mode,
    pub max_delete: Option<MaxDelete>,
    pub force: bool,
}

/// What `apply` did.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    pub apply_id: String,
    pub plan: Plan,
    pub results: Vec<OpResult>,
    /// What earlier applies sent and never recorded, resolved before this one wrote.
    pub resolved: Resolution,
}

impl ApplyReport {
    /// Rows that did not apply (failed, conflict), invalid rows, and writes of earlier
    /// applies whose outcome is unknown.
    pub fn failures(&self) -> usize {
        failures(&self.results, self.plan.invalid.len()) + self.resolved.unknown.len()
    }

    /// The printed summary.
    pub fn summary(&self) -> String {
        summarize(
            &format!("apply {}", self.apply_id),
            &self.results,
            self.plan.invalid.len(),
            |r| {
                let op = &self.plan.ops[r.index];
                let id = op.id().or(r.id.as_deref()).unwrap_or("(new)");
                format!("{} {}/{id}", op.kind().as_str(), op.account)
            },
            "Conflicts were changed by someone else since the desired state was computed; rerun after a sync, or use --force to overwrite.",
        ) + &self.resolved.summary_line()
    }
}

/// Operations that did not apply (failed, conflict) plus invalid rows.
pub(crate) fn failures(results: &[OpResult], invalid: usize) -> usize {
    results.iter().filter(|r| r.outcome != Outcome::Ok).count() + invalid
}

/// The summary of an apply: counts per result, the first 20 rows that did not apply
/// (`what` names each one's operation and contact), and `conflict_hint` when any conflicted.
pub(crate) fn summarize(
    title: &str,
    results: &[OpResult],
    invalid: usize,
    what: impl Fn(&OpResult) -> String,
    conflict_hint: &str,
) -> String {
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    let mut out = format!(
        "{title}: {} ok, {} conflict(s), {} failed, {} refused by the API as invalid, {invalid} invalid row(s) not sent\n",
        count(Outcome::Ok),
        count(Outcome::Conflict),
        count(Outcome::Failed),
        count(Outcome::Invalid),
    );
    for r in results.iter().filter(|r| r.outcome != Outcome::Ok).take(20) {
        out.push_str(&format!(
            "  {} {}: {}\n",
            r.outcome.as_str().to_uppercase(),
            what(r),
            r.error.as_deref().unwrap_or("")
        ));
    }
    if count(Outcome::Conflict) > 0 {
        out.push_str(conflict_hint);
        out.push('\n');
    }
    out
}

/// Ids by account: looked up per landed row with borrowed strings, no allocation.
type WantedIds = HashMap<String, HashSet<String>>;

/// The landed state a plan compares with. Only the rows the plan can touch become
/// records: with `wanted`, the (account, id) pairs of the desired rows; without, all of
/// them (mirror mode deletes the rest). The insert keys and the count cover every row.
/// The table is streamed, so memory holds the wanted rows, not the account.
///
/// With `accounts`, only those accounts' contacts are read (and counted).
async fn landed_for(
    lake: &Lake,
    source: &str,
    wanted: Option<&WantedIds>,
    accounts: Option<&HashSet<String>>,
) -> Result<Landed> {
    let mut landed = Landed::default();
    let max = super::max_plan_rows()?;
    let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
    let mut filter = format!("source = {}", quote(source));
    if let Some(accounts) = accounts {
        let mut list: Vec<String> = accounts.iter().map(|a| quote(a)).collect();
        list.sort();
        if list.is_empty() {
            return Ok(landed);
        }
        filter.push_str(&format!(" AND account IN ({})", list.join(", ")));
    }
    lake.for_each_batch(TableKind::Contacts, Some(&filter), |batch| {
        landed.count += batch.num_rows();
        super::landed_keys(&batch, &mut landed.keys);
        let batch = match wanted {
            Some(w) => {
                let column = |name: &str| {
                    batch
                        .column_by_name(name)
                        .and_then(|c| c.as_string_opt::<i32>().cloned())
                        .ok_or_else(|| Error::lake(format!("contacts has no string column {name}")))
                };
                let (accounts, ids) = (column("account")?, column("id")?);
                let keep: BooleanArray = (0..batch.num_rows())
                    .map(|i| {
                        Some(
                            w.get(accounts.value(i))
                                .is_some_and(|of_account| of_account.contains(ids.value(i))),
                        )
                    })
                    .collect();
                arrow::compute::filter_record_batch(&batch, &keep)?
            }
            None => batch,
        };
        landed
            .rows
            .extend(crate::model::schema::batches_to_records(&[batch])?);
        // A mirror compares with every landed contact of its accounts: they are held too.
        if landed.rows.len() > max {
            return Err(super::too_many_rows(
                "a mirror compares with every contact of its accounts, and they hold",
                source,
                max,
            ));
        }
        Ok(())
    })
    .await?;
    Ok(landed)
}

/// Computes the plan. Writes nothing anywhere and advances nothing.
pub async fn plan(p: &Pipeline, source: &str, desired: &str, mode: Mode) -> Result<Plan> {
    plan_scoped(p, source, desired, mode, &[]).await
}

/// The accounts a source is configured with: its default account (Google: the domain)
/// and its listed accounts. A source that lists none finds them on the server (CardDAV
/// discovery); its accounts are then those the lake holds contacts of, which are the
/// only ones a plan can diff.
async fn configured_accounts(p: &Pipeline, source: &str) -> Result<Vec<String>> {
    let listed = crate::providers::profile(p.source(source)?, &p.dir())?.accounts;
    if !listed.is_empty() {
        return Ok(listed);
    }
    let held = lake_of(p)?.held_contacts().await?;
    Ok(held
        .into_keys()
        .filter(|(s, _)| s == source)
        .map(|(_, a)| a)
        .collect())
}

/// Refuses an `--account` the source is not configured with (exit 2), naming those it is.
pub async fn check_accounts(p: &Pipeline, source: &str, accounts: &[String]) -> Result<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let configured = configured_accounts(p, source).await?;
    let unknown: Vec<String> = accounts
        .iter()
        .filter(|a| !configured.contains(a))
        .map(|a| format!("{a:?}"))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::config(format!(
        "--account {}: source {source} has no such account; its accounts: {}",
        unknown.join(", "),
        configured.join(", ")
    )))
}

/// [`plan`], limited to `accounts` (`--account`; empty: every account): only their
/// desired rows and landed contacts are diffed.
///
/// In mirror mode an account is deleted from only when it is in scope: named by
/// `--account`, or (without `--account`) present in the desired state. The contacts of a
/// configured account with no desired row are left alone ([`Plan::left_alone`]).
pub async fn plan_scoped(
    p: &Pipeline,
    source: &str,
    desired: &str,
    mode: Mode,
    accounts: &[String],
) -> Result<Plan> {
    let profile = crate::providers::profile(p.source(source)?, &p.dir())?;
    check_accounts(p, source, accounts).await?;
    let lake = lake_of(p)?;
    let account_of = |d: &crate::model::schema::ContactRecord| match d.account.as_str() {
        "" => profile.default_account.clone().unwrap_or_default(),
        a => a.to_string(),
    };
    let explicit: HashSet<String> = accounts.iter().cloned().collect();
    // Rows outside the named accounts are counted, not kept: a desired state too big for
    // one plan can be planned an account at a time.
    let in_scope = |d: &crate::model::schema::ContactRecord| {
        explicit.is_empty() || explicit.contains(&account_of(d))
    };
    let (desired, left_out) = load_desired(&lake, desired, source, &in_scope).await?;
    // Rows of another source are a desired state written for the wrong plan (a query that
    // forgot its `WHERE source = …`), not contacts to insert or ids gone missing.
    if !left_out.others.is_empty() {
        let list: Vec<String> = left_out
            .others
            .iter()
            .map(|(s, n)| format!("{n} of source {s:?}"))
            .collect();
        return Err(Error::config(format!(
            "the desired state holds rows of other sources ({}); this plan is for source {source:?}: keep only its rows (e.g. WHERE source = '{source}')",
            list.join(", ")
        )));
    }
    if mode == Mode::Mirror && desired.rows.is_empty() && left_out.out_of_scope == 0 {
        return Err(Error::config(format!(
            "the desired state is empty: in mirror mode it would delete every contact of source {source:?}. Refusing; check the desired query or file"
        )));
    }
    let out_of_scope = left_out.out_of_scope;
    // The landed accounts the plan reads: those named; in mirror mode without names, those
    // of the desired state (an account absent from it is not deleted whole by accident).
    let mut left_alone = Vec::new();
    let scope: Option<HashSet<String>> = if !explicit.is_empty() {
        Some(explicit.clone())
    } else if mode == Mode::Mirror {
        let present: HashSet<String> = desired.rows.iter().map(account_of).collect();
        left_alone = configured_accounts(p, source)
            .await?
            .into_iter()
            .filter(|a| !present.contains(a))
            .collect();
        Some(present)
    } else {
        None
    };
    // Mirror mode deletes what the desired state lacks, so it needs every landed row.
    let wanted: Option<WantedIds> = (mode != Mode::Mirror).then(|| {
        let mut w = WantedIds::new();
        for d in desired.rows.iter().filter(|d| !d.id.is_empty()) {
            w.entry(account_of(d)).or_default().insert(d.id.clone());
        }
        w
    });
    let landed = landed_for(&lake, source, wanted.as_ref(), scope.as_ref()).await?;
    check_matches(&lake, source, &desired.rows, &landed, &account_of).await?;
    let mut plan = diff(
        source,
        profile.rules,
        profile.default_account.as_deref(),
        desired,
        &landed,
        mode,
    );
    let max = super::max_plan_rows()?;
    if plan.ops.len() + plan.invalid.len() > max {
        return Err(super::too_many_rows("the plan holds", source, max));
    }
    let mut named: Vec<String> = explicit.into_iter().collect();
    named.sort();
    plan.scope = named;
    plan.out_of_scope = out_of_scope;
    plan.left_alone = left_alone;
    Ok(plan)
}

/// Refuses a desired state written for another plan (exit 2), with the likely fix: rows
/// whose ids name contacts of another source (a query without `WHERE source = …` that
/// left the `source` column out), or rows with ids of which none is a contact of this
/// source. Rows whose contact is merely gone stay invalid rows of the plan.
async fn check_matches(
    lake: &Lake,
    source: &str,
    rows: &[crate::model::schema::ContactRecord],
    landed: &Landed,
    account_of: impl Fn(&crate::model::schema::ContactRecord) -> String,
) -> Result<()> {
    let held: HashSet<(&str, &str)> = landed
        .rows
        .iter()
        .map(|r| (r.account.as_str(), r.id.as_str()))
        .collect();
    // Rows without an account are the plan's invalid rows (it says to add the column).
    let named =
        |d: &crate::model::schema::ContactRecord| !d.id.is_empty() && !account_of(d).is_empty();
    let with_id = rows.iter().filter(|d| named(d)).count();
    // Id, row number and account as given (empty: none) of each row whose contact this
    // source does not hold.
    let missing_rows: Vec<(&str, usize, &str)> = rows
        .iter()
        .enumerate()
        .filter(|(_, d)| named(d) && !held.contains(&(account_of(d).as_str(), d.id.as_str())))
        .map(|(i, d)| (d.id.as_str(), i + 1, d.account.as_str()))
        .collect();
    // The first row of each id. Another source's contact is matched by its id, and by its
    // account too where the row gives one (ids of two sources may coincide).
    let missing: HashMap<&str, (usize, &str)> = missing_rows
        .iter()
        .rev()
        .map(|&(id, row, account)| (id, (row, account)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
    // Per other source: how many rows name its contacts, and the first of them.
    let mut elsewhere: std::collections::BTreeMap<String, (usize, usize, String)> =
        Default::default();
    lake.for_each_batch(
        TableKind::Contacts,
        Some(&format!("source <> {}", quote(source))),
        |batch| {
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_string_opt::<i32>().cloned())
                    .ok_or_else(|| Error::lake(format!("contacts has no string column {name}")))
            };
            let (sources, accounts, ids) = (column("source")?, column("account")?, column("id")?);
            for i in 0..batch.num_rows() {
                if let Some(&(row, account)) = missing.get(ids.value(i))
                    && (account.is_empty() || account == accounts.value(i))
                {
                    let e = elsewhere.entry(sources.value(i).to_string()).or_insert((
                        0,
                        row,
                        String::new(),
                    ));
                    e.0 += 1;
                    if row <= e.1 {
                        e.1 = row;
                        e.2 = format!("{}/{}", accounts.value(i), ids.value(i));
                    }
                }
            }
            Ok(())
        },
    )
    .await?;
    if !elsewhere.is_empty() {
        let list: Vec<String> = elsewhere
            .iter()
            .map(|(s, (n, row, key))| format!("{n} of source {s:?} (e.g. row {row}: {key})"))
            .collect();
        return Err(Error::config(format!(
            "the desired state names contacts of other sources: {}; this plan is for source {source:?}: keep only its rows (add WHERE source = '{source}' to the desired query)",
            list.join(", ")
        )));
    }
    if missing_rows.len() == with_id {
        let (id, row, _) = missing_rows[0];
        return Err(Error::config(format!(
            "none of the desired state's {with_id} row(s) with an id is a contact of source {source:?} (e.g. row {row}: id {id:?}): check the ids and the account column (a desired state for another source? add WHERE source = '{source}')"
        )));
    }
    Ok(())
}

/// The share of a source's contacts a mirror apply may delete when `--max-delete` is not
/// given: a desired state that lost most of its rows must not empty the source.
pub const DEFAULT_MIRROR_MAX_DELETE: f64 = 10.0;

/// Refuses a plan that deletes more than `--max-delete` allows, before anything is sent.
pub(crate) fn check_max_delete(
    deletes: usize,
    landed: usize,
    what: &str,
    max: Option<MaxDelete>,
) -> Result<()> {
    let limit = match max {
        None => return Ok(()),
        Some(MaxDelete::Count(n)) => n as f64,
        Some(MaxDelete::Percent(p)) => landed as f64 * p / 100.0,
    };
    if deletes as f64 > limit {
        return Err(Error::config(format!(
            "refusing to start: the plan deletes {deletes} of {landed} {what}, more than --max-delete allows ({limit:.0}; mirror mode's default is {DEFAULT_MIRROR_MAX_DELETE}%). Check the desired state, or raise --max-delete (e.g. --max-delete 100%)"
        )));
    }
    Ok(())
}

/// Syncs one source (only `accounts`, when given); returns the report of the first
/// account that failed, if any.
async fn sync_source(
    p: &Pipeline,
    source: &str,
    accounts: &[String],
    progress: bool,
) -> Result<Option<AccountReport>> {
    let sync_opts = SyncOptions {
        sources: vec![source.to_string()],
        accounts: accounts.to_vec(),
        progress,
        ..Default::default()
    };
    let r = run_sync(p, &sync_opts).await?;
    Ok(r.failed().first().map(|f| (*f).clone()))
}

/// Syncs one source (only `accounts`, when given) so a plan is computed against the API's
/// current state; with `progress`, its bars are drawn as a sync draws them.
pub(crate) async fn sync_first(
    p: &Pipeline,
    source: &str,
    accounts: &[String],
    progress: bool,
) -> Result<()> {
    if let Some(f) = sync_source(p, source, accounts, progress).await? {
        return Err(Error::other(format!(
            "apply needs a current lake, but syncing {}/{} failed: {}",
            f.source,
            f.account,
            f.error.as_deref().unwrap_or("")
        )));
    }
    Ok(())
}

/// Syncs one source after writing, so the lake shows what was written.
pub(crate) async fn sync_after(
    p: &Pipeline,
    source: &str,
    accounts: &[String],
    progress: bool,
) -> Result<()> {
    if let Some(f) = sync_source(p, source, accounts, progress).await? {
        tracing::warn!(account = %f.account, error = f.error.as_deref().unwrap_or(""), "the sync after apply failed; the next sync will catch up");
    }
    Ok(())
}

/// How an apply is driven, beyond what [`ApplyOptions`] says to apply.
#[derive(Debug, Clone, Default)]
pub struct ApplyControls {
    /// Only these accounts' rows are diffed and written (`--account`); empty: every one.
    pub accounts: Vec<String>,
    /// Draw a progress bar of the writes on stderr (the command line sets it on a
    /// terminal).
    pub progress: bool,
    /// Operations of each kind the plan's log event carries as a sample (`--log-format
    /// json`); 0: its counts only.
    pub log_sample: usize,
    /// Log the result as one info event, `apply finished` (`--log-format json`, where it
    /// stands for the printed summary); else it is logged at debug level.
    pub summary_event: bool,
}

/// A saved plan to apply (`apply --plan FILE`).
#[derive(Debug, Clone)]
pub struct SavedApply {
    /// The file `plan --out` wrote.
    pub file: std::path::PathBuf,
    /// The source the caller expects the plan to be for (`--source`), if any.
    pub source: Option<String>,
    pub max_delete: Option<MaxDelete>,
    pub force: bool,
}

/// Syncs the source, plans, checks `--max-delete`, applies, records one
/// `writeback_results` row per operation (and per invalid row), and syncs again.
pub async fn apply(p: &Pipeline, opts: &ApplyOptions) -> Result<ApplyReport> {
    apply_with(p, opts, |_| {}).await
}

/// [`apply`], showing the plan to `before_writes` once it is final (after the sync, the
/// plan and the `--max-delete` check) and before anything is written: what is reviewed is
/// what runs. The plan's counts are also logged then, at info level.
pub async fn apply_with(
    p: &Pipeline,
    opts: &ApplyOptions,
    before_writes: impl FnOnce(&Plan),
) -> Result<ApplyReport> {
    apply_controlled(p, opts, &ApplyControls::default(), async |plan: &Plan| {
        before_writes(plan);
        Ok(())
    })
    .await
}

/// [`apply_with`], scoped and shown as `controls` say; `before_writes` may refuse (its
/// error ends the apply before the first write, e.g. a person answered no). It is async so
/// that a question waiting for its answer does not block the runtime (Ctrl-C still stops).
pub async fn apply_controlled(
    p: &Pipeline,
    opts: &ApplyOptions,
    controls: &ApplyControls,
    before_writes: impl AsyncFnOnce(&Plan) -> Result<()>,
) -> Result<ApplyReport> {
    let writer_source = writer_of(p, &opts.source)?;
    check_accounts(p, &opts.source, &controls.accounts).await?;
    // Bring the lake up to date first: the diff is against the API's current state, and
    // contacts created by an interrupted earlier apply are seen (by their key) and skipped.
    let t = std::time::Instant::now();
    sync_first(p, &opts.source, &controls.accounts, controls.progress).await?;
    let t = phase(&opts.source, "synced before planning", t);
    let spinner = working(
        controls.progress,
        "planning: the desired state against the lake",
    );
    let plan = plan_scoped(
        p,
        &opts.source,
        &opts.desired,
        opts.mode,
        &controls.accounts,
    )
    .await;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let plan = plan?;
    phase(&opts.source, "planned", t);
    execute(
        p,
        writer_source.as_ref(),
        plan,
        opts.mode,
        opts.max_delete,
        opts.force,
        controls,
        before_writes,
    )
    .await
}

/// Applies a saved plan exactly: syncs the accounts it touches, checks that every contact
/// it updates or deletes is still as the plan saw it (same etag, same values) and that no
/// insert's key has landed meanwhile, and writes its operations without diffing again.
/// Anything moved refuses the whole apply (exit 2), naming the contacts.
pub async fn apply_saved(
    p: &Pipeline,
    saved: &SavedApply,
    controls: &ApplyControls,
    before_writes: impl AsyncFnOnce(&Plan) -> Result<()>,
) -> Result<ApplyReport> {
    let file = super::saved::read(&saved.file)?;
    let source = file.meta.source.clone();
    if let Some(s) = saved.source.as_deref().filter(|s| *s != source) {
        return Err(Error::config(format!(
            "--plan {}: the plan is for source {source:?}, not {s:?}",
            saved.file.display()
        )));
    }
    let lake_url = p.lake_url()?.to_string();
    if file.meta.lake != lake_url {
        return Err(Error::config(format!(
            "--plan {}: the plan was made against the lake {}, and this pipeline's lake is {lake_url}",
            saved.file.display(),
            file.meta.lake
        )));
    }
    if !controls.accounts.is_empty() {
        return Err(Error::config(
            "--account does not go with --plan: a saved plan is applied whole (scope it when planning)",
        ));
    }
    let mode = file.mode()?;
    let writer_source = writer_of(p, &source)?;
    let t = std::time::Instant::now();
    sync_first(p, &source, &file.meta.scope, controls.progress).await?;
    let t = phase(&source, "synced before checking the saved plan", t);
    let spinner = working(
        controls.progress,
        "checking the saved plan against the lake",
    );
    let lake = lake_of(p)?;
    let scope: Option<HashSet<String>> =
        (!file.meta.scope.is_empty()).then(|| file.meta.scope.iter().cloned().collect());
    let landed = landed_for(&lake, &source, Some(&file.touched()), scope.as_ref()).await?;
    let plan = file.replan(&landed)?;
    // Every write stays inside an account of the source the plan is for.
    let configured = configured_accounts(p, &source).await?;
    let mut foreign: Vec<&str> = plan
        .ops
        .iter()
        .map(|o| o.account.as_str())
        .filter(|a| !configured.iter().any(|c| c == a))
        .collect();
    foreign.sort();
    foreign.dedup();
    if !foreign.is_empty() {
        return Err(Error::config(format!(
            "--plan {}: operations for account(s) {} that source {source} does not have (its accounts: {}); nothing was written",
            saved.file.display(),
            foreign.join(", "),
            configured.join(", ")
        )));
    }
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    phase(&source, "checked the saved plan", t);
    let controls = ApplyControls {
        accounts: file.meta.scope.clone(),
        ..controls.clone()
    };
    execute(
        p,
        writer_source.as_ref(),
        plan,
        mode,
        saved.max_delete,
        saved.force,
        &controls,
        before_writes,
    )
    .await
}

/// The source `name` built (its credentials read: a missing one is an error before any
/// request), if its provider can write back.
fn writer_of(p: &Pipeline, name: &str) -> Result<Box<dyn crate::providers::Source>> {
    let source = crate::providers::build(p.source(name)?, &p.dir())?;
    if source.write_back().is_none() {
        return Err(Error::config(format!(
            "source {name}: its provider cannot write back"
        )));
    }
    Ok(source)
}

/// Logs a phase's time at debug level (where an apply spends its time: B5 compares the
/// write phase with the server's own handling time); returns the next phase's start.
fn phase(source: &str, name: &str, t: std::time::Instant) -> std::time::Instant {
    tracing::debug!(source = %source, ms = t.elapsed().as_millis() as u64, "{name}");
    std::time::Instant::now()
}

/// The part every apply shares once its plan is final: the `--max-delete` check, the
/// plan's log event, `before_writes`, then the writes group by group with their results
/// recorded, the sync after, and the result's log event.
#[allow(clippy::too_many_arguments)]
async fn execute(
    p: &Pipeline,
    source: &dyn crate::providers::Source,
    plan: Plan,
    mode: Mode,
    max_delete: Option<MaxDelete>,
    force: bool,
    controls: &ApplyControls,
    before_writes: impl AsyncFnOnce(&Plan) -> Result<()>,
) -> Result<ApplyReport> {
    let writer = source
        .write_back()
        .ok_or_else(|| Error::config("this provider cannot write back"))?;
    let name = plan.source.clone();
    check_max_delete(
        plan.count(OpKind::Delete),
        plan.landed,
        "contacts",
        max_delete
            .or((mode == Mode::Mirror).then_some(MaxDelete::Percent(DEFAULT_MIRROR_MAX_DELETE))),
    )?;
    let apply_id = crate::sync::new_run_id();
    if controls.log_sample > 0 {
        tracing::info!(
            apply_id = %apply_id,
            source = %name,
            inserts = plan.count(OpKind::Insert),
            updates = plan.count(OpKind::Update),
            deletes = plan.count(OpKind::Delete),
            unchanged = plan.unchanged,
            invalid = plan.invalid.len(),
            plan = %super::review::to_json(&plan, controls.log_sample),
            "plan to apply"
        );
    } else {
        tracing::info!(
            apply_id = %apply_id,
            source = %name,
            inserts = plan.count(OpKind::Insert),
            updates = plan.count(OpKind::Update),
            deletes = plan.count(OpKind::Delete),
            unchanged = plan.unchanged,
            invalid = plan.invalid.len(),
            "plan to apply"
        );
    }
    before_writes(&plan).await?;
    let metrics = Metrics::default();
    let lake = lake_of(p)?;
    // Writes an earlier apply sent and never recorded (it was killed) are resolved
    // against what the sync before this apply read: the accounts it synced.
    let scope: Option<HashSet<String>> =
        (!controls.accounts.is_empty()).then(|| controls.accounts.iter().cloned().collect());
    let resolved = super::resolve::resolve_unrecorded(&lake, &name, scope.as_ref()).await?;
    resolved.log(&name);
    // Invalid rows first, then each group of writes as it ends: an apply stopped halfway
    // (Ctrl-C, a scheduler's SIGTERM, a crash) leaves the trail of what it did.
    record(&lake, &apply_id, &name, &plan, &[], true, None).await?;
    let mut results = Vec::with_capacity(plan.ops.len());
    let bar = (controls.progress && !plan.ops.is_empty()).then(|| write_bar(plan.ops.len()));
    // The two phases interleave; each is timed on its own (B5 reads the write phase).
    let (mut writing, mut recording) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let _writing = Writing::start();
    for group in plan.ops.chunks(RESULT_GROUP) {
        if stop_requested() {
            if let Some(b) = &bar {
                b.abandon();
            }
            return Err(stopped(&name, results.len(), plan.ops.len()));
        }
        // On record before it is sent: a process killed while the group is in flight
        // leaves these `sent` rows for the next apply to resolve.
        let r = std::time::Instant::now();
        record_rows(&lake, &apply_id, &name, &sent_rows(group)).await?;
        recording += r.elapsed();
        let w = std::time::Instant::now();
        let done = writer.apply(group, &plan.managed, force, &metrics).await?;
        writing += w.elapsed();
        let r = std::time::Instant::now();
        let first = group.first().map_or(0, |o| o.index);
        let replacing = first..first + group.len();
        record(
            &lake,
            &apply_id,
            &name,
            &plan,
            &done,
            false,
            Some(replacing),
        )
        .await?;
        recording += r.elapsed();
        if let Some(b) = &bar {
            b.inc(done.len() as u64);
        }
        results.extend(done);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    tracing::debug!(source = %name, ms = writing.as_millis() as u64, "wrote to the API");
    tracing::debug!(source = %name, ms = recording.as_millis() as u64, "recorded the results");
    let t = std::time::Instant::now();
    sync_after(p, &name, &controls.accounts, controls.progress).await?;
    phase(&name, "synced after writing", t);
    let report = ApplyReport {
        apply_id,
        plan,
        results,
        resolved,
    };
    let count = |o: Outcome| report.results.iter().filter(|r| r.outcome == o).count();
    macro_rules! finished {
        ($level:expr) => {
            tracing::event!(
                $level,
                apply_id = %report.apply_id,
                source = %name,
                ok = count(Outcome::Ok),
                conflicts = count(Outcome::Conflict),
                failed = count(Outcome::Failed),
                refused_by_api = count(Outcome::Invalid),
                invalid_rows = report.plan.invalid.len(),
                failures = report.failures(),
                "apply finished"
            )
        };
    }
    if controls.summary_event {
        finished!(tracing::Level::INFO);
    } else {
        finished!(tracing::Level::DEBUG);
    }
    Ok(report)
}

/// A spinner saying what an apply is doing between its sync and its writes (on a
/// terminal: `progress`), drawn with the sync's bars so log lines land above it.
pub(super) fn working(progress: bool, what: &str) -> Option<indicatif::ProgressBar> {
    progress.then(|| {
        let s = crate::sync::progress_bars().add(indicatif::ProgressBar::new_spinner());
        s.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        s.set_message(what.to_string());
        s.enable_steady_tick(std::time::Duration::from_millis(120));
        s
    })
}

/// The progress bar of an apply's writes (stderr), advanced as each group of operations
/// ends; its rate is a whole number (`2,487/s`).
pub(super) fn write_bar(total: usize) -> indicatif::ProgressBar {
    let bar = crate::sync::progress_bars().add(indicatif::ProgressBar::new(total as u64));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "writing {bar:30} {pos}/{len} operations ({rate}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .with_key(
            "rate",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&crate::human::rate(s.per_sec()));
            },
        ),
    );
    // The count moves per group of operations; the ticks keep the rate and ETA alive.
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// One `writeback_results` row.
#[derive(Debug, Clone)]
pub(crate) struct ResultRow {
    pub(crate) op_index: i64,
    pub(crate) account: String,
    pub(crate) op: String,
    pub(crate) key: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) http_status: Option<i64>,
    pub(crate) result: String,
    pub(crate) reason: Option<String>,
    pub(crate) new_etag: Option<String>,
    pub(crate) error: Option<String>,
}

impl ResultRow {
    /// The row recorded for a desired row that was not sent.
    pub(crate) fn invalid(op_index: usize, inv: &super::Invalid) -> ResultRow {
        ResultRow {
            op_index: op_index as i64,
            account: inv.account.clone(),
            op: "invalid".into(),
            key: None,
            id: inv.id.clone(),
            http_status: None,
            result: "invalid".into(),
            reason: Some(inv.reason.clone()),
            new_etag: None,
            error: Some(format!("desired row {}: {}", inv.row + 1, inv.reason)),
        }
    }
}

/// Applies of this process that are sending writes now.
static WRITING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Set by [`request_stop`]: applies send no further group.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks this process's applies to stop at the end of the group of writes in flight: the
/// API's answers to it are awaited and recorded, and no further group is sent, so that
/// every write the API received has its `writeback_results` row. Returns whether an
/// apply was writing (the caller then awaits it, with a bound, before it exits).
pub fn request_stop() -> bool {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
    WRITING.load(std::sync::atomic::Ordering::SeqCst) > 0
}

/// Whether [`request_stop`] was called.
pub fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::SeqCst)
}

/// Marks an apply as writing while it lives (see [`request_stop`]).
pub(crate) struct Writing;

impl Writing {
    pub(crate) fn start() -> Writing {
        WRITING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Writing
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        WRITING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The error of an apply stopped by [`request_stop`] after `done` of `total` operations.
pub(crate) fn stopped(source: &str, done: usize, total: usize) -> Error {
    Error::other(format!(
        "source {source}: the apply was stopped after {done} of {total} operations; each of them is recorded in writeback_results, the rest were not sent. Run the apply again to finish"
    ))
}

/// Operations written, and their results recorded in one commit, at a time: a group
/// costs one small `writeback_results` commit (10-20 ms) and holds ten Google batches.
const RESULT_GROUP: usize = 1000;

/// Appends the rows of `results` (operations of `plan`) to `writeback_results`, and with
/// `invalid` the rows of the plan's invalid desired rows.
async fn record(
    lake: &Lake,
    apply_id: &str,
    source: &str,
    plan: &Plan,
    results: &[OpResult],
    invalid: bool,
    replacing: Option<std::ops::Range<usize>>,
) -> Result<()> {
    let mut rows: Vec<ResultRow> = Vec::new();
    for r in results {
        let op = &plan.ops[r.index];
        rows.push(ResultRow {
            op_index: r.index as i64,
            account: op.account.clone(),
            op: op.kind().as_str().into(),
            key: Some(op.key.clone()),
            id: r.id.clone().or(op.id().map(str::to_string)),
            http_status: r.http_status.map(i64::from),
            result: r.outcome.as_str().into(),
            reason: r.reason.clone(),
            new_etag: r.new_etag.clone(),
            error: r.error.clone(),
        });
    }
    if invalid {
        for (i, inv) in plan.invalid.iter().enumerate() {
            rows.push(ResultRow::invalid(plan.ops.len() + i, inv));
        }
    }
    match replacing {
        Some(r) => {
            let predicate = format!(
                "apply_id = '{}' AND op_index >= {} AND op_index < {}",
                apply_id.replace('\'', "''"),
                r.start,
                r.end
            );
            replace_rows(lake, apply_id, source, &rows, &predicate).await
        }
        None => record_rows(lake, apply_id, source, &rows).await,
    }
}

pub use super::resolve::SENT;

/// The `sent` rows of a group of operations: what each is, and (in `reason`) the etag
/// its contact had when it was sent, which tells afterwards whether it was applied.
fn sent_rows(group: &[crate::model::write::Op]) -> Vec<ResultRow> {
    use crate::model::write::Action;
    group
        .iter()
        .map(|op| {
            let before = match &op.action {
                Action::Update { landed, .. } | Action::Delete { landed, .. } => {
                    landed.etag.clone()
                }
                Action::Insert { .. } => None,
            };
            ResultRow {
                op_index: op.index as i64,
                account: op.account.clone(),
                op: op.kind().as_str().into(),
                key: Some(op.key.clone()),
                id: op.id().map(str::to_string),
                http_status: None,
                result: SENT.into(),
                reason: Some(serde_json::json!({ "etag_before": before }).to_string()),
                new_etag: None,
                error: None,
            }
        })
        .collect()
}

/// Appends `writeback_results` rows of one apply.
pub(crate) async fn record_rows(
    lake: &Lake,
    apply_id: &str,
    source: &str,
    rows: &[ResultRow],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    commit_rows(lake, apply_id, source, rows, None).await
}

/// Replaces the `writeback_results` rows `predicate` selects (rows of one apply) with
/// `rows`, in one commit: the `sent` rows of a group become its results.
pub(crate) async fn replace_rows(
    lake: &Lake,
    apply_id: &str,
    source: &str,
    rows: &[ResultRow],
    predicate: &str,
) -> Result<()> {
    commit_rows(lake, apply_id, source, rows, Some(predicate)).await
}

/// One commit to `writeback_results`: `rows` appended, or replacing what `replacing`
/// selects.
async fn commit_rows(
    lake: &Lake,
    apply_id: &str,
    source: &str,
    rows: &[ResultRow],
    replacing: Option<&str>,
) -> Result<()> {
    let batch = result_batch(apply_id, source, rows)?;
    // Results have no txn to fence them, and neither an append nor a replace of one
    // apply's own rows conflicts with another writer's: any error is tried again.
    crate::lake::retry::retry(
        "writeback_results",
        |_: &Error| true,
        async |_| {
            let t = lake.open_or_create(TableKind::WritebackResults).await?;
            write_rows(t, apply_id, batch.clone(), replacing).await
        },
    )
    .await
    .map_err(|e| e.context("recording results in writeback_results"))
}

/// One attempt at a commit of `batch` (rows of one apply) to `writeback_results` as `t`
/// holds it: appended, or replacing what `replacing` selects. A commit on a table that
/// changed since `t` fails as a conflict.
pub(crate) async fn write_rows(
    t: deltalake::DeltaTable,
    apply_id: &str,
    batch: RecordBatch,
    replacing: Option<&str>,
) -> Result<()> {
    let props = deltalake::kernel::transaction::CommitProperties::default()
        .with_metadata([("app.run_id".to_string(), serde_json::json!(apply_id))]);
    let write = t.write(vec![batch]).with_commit_properties(props);
    let write = match replacing {
        Some(p) => write
            .with_save_mode(SaveMode::Overwrite)
            .with_replace_where(p.to_string()),
        None => write.with_save_mode(SaveMode::Append),
    };
    write.await.map(|_| ()).map_err(Error::from)
}

/// `rows` of one apply as a batch of `writeback_results`.
pub(crate) fn result_batch(
    apply_id: &str,
    source: &str,
    rows: &[ResultRow],
) -> Result<RecordBatch> {
    let now = chrono::Utc::now().timestamp_micros();
    let n = rows.len();
    let s = |f: fn(&ResultRow) -> Option<String>| {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
            as arrow::array::ArrayRef
    };
    let batch = RecordBatch::try_new(
        writeback_results_schema(),
        vec![
            Arc::new(StringArray::from(vec![apply_id; n])),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.op_index).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(vec![source; n])),
            s(|r| Some(r.account.clone())),
            s(|r| Some(r.op.clone())),
            s(|r| r.key.clone()),
            s(|r| r.id.clone()),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.http_status).collect::<Vec<_>>(),
            )),
            s(|r| Some(r.result.clone())),
            s(|r| r.reason.clone()),
            s(|r| r.new_etag.clone()),
            s(|r| r.error.clone()),
            Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        ],
    )?;
    Ok(batch)
}
