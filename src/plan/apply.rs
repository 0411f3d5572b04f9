//! `plan` and `apply` for one source of a pipeline: the plan of a desired state against
//! the landed contacts ([`plan`], [`plan_scoped`]), and the [`Apply`] builder that writes
//! a plan of contacts or photos on record ([`builder`], [`writes`]).

mod builder;
mod writes;

use std::collections::{HashMap, HashSet};

use arrow::array::{AsArray, BooleanArray};

pub use builder::{Apply, ApplyReport, FromDesired, FromPhotos, FromSaved, Prepared};
pub use writes::{request_stop, stop_requested};

use super::{Landed, Mode, Plan, diff, load_desired};
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::lake::{Lake, TableKind};
use crate::sync::{AccountReport, SyncOptions, lake_of, run_sync};

pub use super::resolve::SENT;

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
    if let Some(why) = profile.read_only {
        return Err(Error::config(format!("source {source}: {why}")));
    }
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
    if let Some(&(id, row, _)) = missing_rows.first()
        && missing_rows.len() == with_id
    {
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

/// Logs a phase's time at debug level (where an apply spends its time); returns the next
/// phase's start.
fn phase(source: &str, name: &str, t: std::time::Instant) -> std::time::Instant {
    tracing::debug!(source = %source, ms = t.elapsed().as_millis() as u64, "{name}");
    std::time::Instant::now()
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
