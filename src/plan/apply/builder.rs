//! The [`Apply`] builder: what to apply (a desired state, a saved plan, or desired
//! photos), then options, then `.await` → an [`ApplyReport`]. [`Apply::prepare`] stops
//! before the first write with a [`Prepared`] apply whose plan can be shown and
//! approved; awaiting that writes it.

use std::collections::HashSet;
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;

use super::super::photos::{PhotoOpKind, PhotoPlan, plan_photos};
use super::super::resolve::Resolution;
use super::super::{Mode, OpKind, Plan};
use super::writes::{Run, Writable, write};
use super::{
    DEFAULT_MIRROR_MAX_DELETE, MaxDelete, check_accounts, check_max_delete, configured_accounts,
    landed_for, phase, plan_scoped, sync_first, working,
};
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::model::write::{OpResult, Outcome};
use crate::providers::Source;
use crate::sync::lake_of;

/// An apply to run: built by [`Apply::desired`], [`Apply::saved`] or [`Apply::photos`],
/// set with the `with_*` options, then awaited. It syncs the source, plans (or re-checks
/// a saved plan), refuses a plan over `--max-delete`, writes group by group with every
/// write on record in `writeback_results` before it goes out and its result after, and
/// syncs again.
///
/// ```no_run
/// # async fn demo(p: &contacts_etl::config::Pipeline) -> contacts_etl::Result<()> {
/// use contacts_etl::plan::{Mode, apply::Apply};
/// let report = Apply::desired(p, "shared", "SELECT account, id, etag, notes FROM contacts")
///     .with_mode(Mode::Update)
///     .await?;
/// print!("{}", report.summary());
/// # Ok(()) }
/// ```
#[must_use = "an apply does nothing until it is awaited"]
pub struct Apply<'a, I> {
    pipeline: &'a Pipeline,
    input: I,
    options: Options,
}

/// What an [`Apply`] of a desired state applies.
pub struct FromDesired {
    source: String,
    desired: String,
}

/// What an [`Apply`] of a saved plan applies.
pub struct FromSaved {
    file: PathBuf,
    source: Option<String>,
}

/// What an [`Apply`] of desired photos applies.
pub struct FromPhotos {
    source: String,
    photos: String,
}

/// How an apply runs, whatever it applies.
#[derive(Debug, Clone, Default)]
struct Options {
    mode: Mode,
    accounts: Vec<String>,
    max_delete: Option<MaxDelete>,
    force: bool,
    progress: bool,
    log_sample: usize,
    summary_event: bool,
}

impl<'a> Apply<'a, FromDesired> {
    /// Applies `desired` (SQL over the lake, or a .parquet/.csv/.json file) to `source`.
    pub fn desired(p: &'a Pipeline, source: impl Into<String>, desired: impl Into<String>) -> Self {
        Apply::new(
            p,
            FromDesired {
                source: source.into(),
                desired: desired.into(),
            },
        )
    }
}

impl<'a> Apply<'a, FromSaved> {
    /// Applies a plan saved by `plan --out` exactly: its mode and accounts are the
    /// plan's ([`Apply::with_mode`] is not used; [`Apply::with_accounts`] is refused).
    pub fn saved(p: &'a Pipeline, file: impl Into<PathBuf>) -> Self {
        Apply::new(
            p,
            FromSaved {
                file: file.into(),
                source: None,
            },
        )
    }

    /// The source the caller expects the saved plan to be for (`--source`): a plan for
    /// another one is refused.
    pub fn with_source(mut self, source: Option<String>) -> Self {
        self.input.source = source;
        self
    }
}

impl<'a> Apply<'a, FromPhotos> {
    /// Applies desired photos (a folder, a `.parquet` file, or SQL) to `source`.
    pub fn photos(p: &'a Pipeline, source: impl Into<String>, photos: impl Into<String>) -> Self {
        Apply::new(
            p,
            FromPhotos {
                source: source.into(),
                photos: photos.into(),
            },
        )
    }
}

impl<'a, I> Apply<'a, I> {
    fn new(pipeline: &'a Pipeline, input: I) -> Self {
        Apply {
            pipeline,
            input,
            options: Options::default(),
        }
    }

    /// Which operations the plan may contain (default: upsert).
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.options.mode = mode;
        self
    }

    /// Only these accounts are synced, diffed and written (`--account`); empty: every one.
    pub fn with_accounts(mut self, accounts: Vec<String>) -> Self {
        self.options.accounts = accounts;
        self
    }

    /// Refuse to start when the plan deletes more than this (`--max-delete`). Without it,
    /// a mirror of contacts may delete [`DEFAULT_MIRROR_MAX_DELETE`] % of them.
    pub fn with_max_delete(mut self, max: Option<MaxDelete>) -> Self {
        self.options.max_delete = max;
        self
    }

    /// Overwrite what someone else changed since it was read (412 conflicts).
    pub fn with_force(mut self, force: bool) -> Self {
        self.options.force = force;
        self
    }

    /// Draw the sync's bars, a spinner while planning and a bar of the writes on stderr
    /// (the command line sets it on a terminal).
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.options.progress = progress;
        self
    }

    /// Operations of each kind the plan's log event carries as a sample (`--log-format
    /// json`); 0, the default: its counts only.
    pub fn with_log_sample(mut self, n: usize) -> Self {
        self.options.log_sample = n;
        self
    }

    /// Log the result as one info event, `apply finished` (`--log-format json`, where it
    /// stands for the printed summary); else it is logged at debug level.
    pub fn with_summary_event(mut self, on: bool) -> Self {
        self.options.summary_event = on;
        self
    }
}

/// An apply whose plan is final (synced, planned, within `--max-delete`) and of which
/// nothing is written yet: what is shown and approved is what `.await` writes.
#[must_use = "nothing is written until the prepared apply is awaited"]
pub struct Prepared<'a, P> {
    pipeline: &'a Pipeline,
    source: Box<dyn Source>,
    plan: P,
    apply_id: String,
    options: Options,
}

impl<P> Prepared<'_, P> {
    /// The plan that awaiting this writes.
    pub fn plan(&self) -> &P {
        &self.plan
    }

    /// The id this apply's rows will have in `writeback_results`.
    pub fn apply_id(&self) -> &str {
        &self.apply_id
    }
}

/// What an apply did: its plan, one result per operation sent, and what earlier applies
/// sent and never recorded, resolved before this one wrote.
#[derive(Debug, Clone)]
pub struct ApplyReport<P = Plan> {
    /// The id of its rows in `writeback_results`.
    pub apply_id: String,
    /// The plan written.
    pub plan: P,
    /// One result per operation sent (`index` is the operation's).
    pub results: Vec<OpResult>,
    /// What earlier applies sent and never recorded, resolved before this one wrote.
    pub resolved: Resolution,
}

impl ApplyReport<Plan> {
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
            |r| match self.plan.ops.get(r.index) {
                Some(op) => {
                    let id = op.id().or(r.id.as_deref()).unwrap_or("(new)");
                    format!("{} {}/{id}", op.kind().as_str(), op.account)
                }
                None => format!("operation {}", r.index),
            },
            "Conflicts were changed by someone else since the desired state was computed; rerun after a sync, or use --force to overwrite.",
        ) + &self.resolved.summary_line()
    }
}

impl ApplyReport<PhotoPlan> {
    /// Operations that did not apply (failed, conflict), invalid rows, and writes of
    /// earlier applies whose outcome is unknown.
    pub fn failures(&self) -> usize {
        failures(&self.results, self.plan.invalid.len()) + self.resolved.unknown.len()
    }

    /// The printed summary.
    pub fn summary(&self) -> String {
        summarize(
            &format!("photo apply {}", self.apply_id),
            &self.results,
            self.plan.invalid.len(),
            |r| match self.plan.ops.get(r.index) {
                Some(op) => format!("{} {}/{}", op.kind().as_str(), op.account, op.id),
                None => format!("operation {}", r.index),
            },
            "Conflicts are photos changed by someone else since their etag was read; rerun after a sync, or use --force to overwrite.",
        ) + &self.resolved.summary_line()
    }
}

/// Operations that did not apply (failed, conflict) plus invalid rows.
fn failures(results: &[OpResult], invalid: usize) -> usize {
    results.iter().filter(|r| r.outcome != Outcome::Ok).count() + invalid
}

/// The summary of an apply: counts per result, the first 20 rows that did not apply
/// (`what` names each one's operation and contact), and `conflict_hint` when any conflicted.
fn summarize(
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

impl<'a> Apply<'a, FromDesired> {
    /// Syncs the source and plans: the apply, ready to write, with nothing written.
    pub async fn prepare(self) -> Result<Prepared<'a, Plan>> {
        let (p, o) = (self.pipeline, &self.options);
        let source = &self.input.source;
        let writer = writer_of(p, source)?;
        check_accounts(p, source, &o.accounts).await?;
        // Bring the lake up to date first: the diff is against the API's current state,
        // and contacts created by an interrupted earlier apply are seen (by their key)
        // and skipped.
        let t = std::time::Instant::now();
        sync_first(p, source, &o.accounts, o.progress).await?;
        let t = phase(source, "synced before planning", t);
        let spinner = working(o.progress, "planning: the desired state against the lake");
        let plan = plan_scoped(p, source, &self.input.desired, o.mode, &o.accounts).await;
        if let Some(s) = spinner {
            s.finish_and_clear();
        }
        let plan = plan?;
        phase(source, "planned", t);
        finish_contacts(p, writer, plan, self.options)
    }
}

impl<'a> Apply<'a, FromSaved> {
    /// Reads the saved plan, syncs the accounts it touches and checks that every contact
    /// it updates or deletes is still as the plan saw it (same etag, same values) and
    /// that no insert's key has landed meanwhile: the apply, ready to write its
    /// operations without diffing again. Anything moved refuses the whole apply (exit 2),
    /// naming the contacts.
    pub async fn prepare(self) -> Result<Prepared<'a, Plan>> {
        let p = self.pipeline;
        let shown = self.input.file.display().to_string();
        let file = super::super::saved::read(&self.input.file)?;
        let source = file.meta.source.clone();
        check_saved(
            p,
            &file.meta,
            &shown,
            self.input.source.as_deref(),
            &self.options,
        )?;
        let mut options = self.options;
        options.mode = file.mode()?;
        options.accounts = file.meta.scope.clone();
        let writer = writer_of(p, &source)?;
        let t = std::time::Instant::now();
        sync_first(p, &source, &file.meta.scope, options.progress).await?;
        let t = phase(&source, "synced before checking the saved plan", t);
        let spinner = working(options.progress, "checking the saved plan against the lake");
        let lake = lake_of(p)?;
        let scope: Option<HashSet<String>> =
            (!file.meta.scope.is_empty()).then(|| file.meta.scope.iter().cloned().collect());
        let landed = landed_for(&lake, &source, Some(&file.touched()), scope.as_ref()).await?;
        let plan = file.replan(&landed)?;
        check_own_accounts(p, &plan, &shown).await?;
        if let Some(s) = spinner {
            s.finish_and_clear();
        }
        phase(&source, "checked the saved plan", t);
        finish_contacts(p, writer, plan, options)
    }
}

/// Refuses a saved plan for another source than `expected` or another lake than the
/// pipeline's, and `--account` beside it (a saved plan is applied whole).
fn check_saved(
    p: &Pipeline,
    meta: &super::super::saved::PlanMeta,
    shown: &str,
    expected: Option<&str>,
    o: &Options,
) -> Result<()> {
    let source = &meta.source;
    if let Some(s) = expected.filter(|s| s != source) {
        return Err(Error::config(format!(
            "--plan {shown}: the plan is for source {source:?}, not {s:?}"
        )));
    }
    let lake_url = p.lake_url()?.to_string();
    if meta.lake != lake_url {
        return Err(Error::config(format!(
            "--plan {shown}: the plan was made against the lake {}, and this pipeline's lake is {lake_url}",
            meta.lake
        )));
    }
    if !o.accounts.is_empty() {
        return Err(Error::config(
            "--account does not go with --plan: a saved plan is applied whole (scope it when planning)",
        ));
    }
    Ok(())
}

/// Refuses a saved plan with a write outside the accounts of its source.
async fn check_own_accounts(p: &Pipeline, plan: &Plan, shown: &str) -> Result<()> {
    let source = &plan.source;
    let configured = configured_accounts(p, source).await?;
    let mut foreign: Vec<&str> = plan
        .ops
        .iter()
        .map(|o| o.account.as_str())
        .filter(|a| !configured.iter().any(|c| c == a))
        .collect();
    foreign.sort();
    foreign.dedup();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(Error::config(format!(
        "--plan {shown}: operations for account(s) {} that source {source} does not have (its accounts: {}); nothing was written",
        foreign.join(", "),
        configured.join(", ")
    )))
}

/// A contact plan made final: the `--max-delete` check (a mirror's default when none is
/// given) and the plan's log event, under a new apply id.
fn finish_contacts<'a>(
    pipeline: &'a Pipeline,
    source: Box<dyn Source>,
    plan: Plan,
    options: Options,
) -> Result<Prepared<'a, Plan>> {
    let default =
        (options.mode == Mode::Mirror).then_some(MaxDelete::Percent(DEFAULT_MIRROR_MAX_DELETE));
    check_max_delete(
        plan.count(OpKind::Delete),
        plan.landed,
        "contacts",
        options.max_delete.or(default),
    )?;
    let apply_id = crate::sync::new_run_id();
    log_plan(&apply_id, &plan, options.log_sample);
    Ok(Prepared {
        pipeline,
        source,
        plan,
        apply_id,
        options,
    })
}

/// The plan's info event, `plan to apply`: its counts, and with `sample` > 0 the plan
/// itself with that many operations of each kind.
fn log_plan(apply_id: &str, plan: &Plan, sample: usize) {
    let json = (sample > 0).then(|| super::super::review::to_json(plan, sample));
    tracing::info!(
        apply_id = %apply_id,
        source = %plan.source,
        inserts = plan.count(OpKind::Insert),
        updates = plan.count(OpKind::Update),
        deletes = plan.count(OpKind::Delete),
        unchanged = plan.unchanged,
        invalid = plan.invalid.len(),
        plan = json.map(tracing::field::display),
        "plan to apply"
    );
}

impl<'a> Apply<'a, FromPhotos> {
    /// Syncs the source and plans the photos: the apply, ready to write, with nothing
    /// written.
    pub async fn prepare(self) -> Result<Prepared<'a, PhotoPlan>> {
        let (p, o) = (self.pipeline, &self.options);
        let name = &self.input.source;
        let source = crate::providers::build(p.source(name)?, &p.dir())?;
        if source.photos().is_none() {
            return Err(Error::config(format!(
                "source {name}: its provider has no contact photos to write back"
            )));
        }
        sync_first(p, name, &[], o.progress).await?;
        let planning = working(o.progress, "planning the photos");
        let plan = plan_photos(p, name, &self.input.photos, o.mode).await?;
        if let Some(s) = planning {
            s.finish_and_clear();
        }
        check_max_delete(
            plan.count(PhotoOpKind::Delete),
            plan.landed,
            "photos",
            o.max_delete,
        )?;
        Ok(Prepared {
            pipeline: p,
            source,
            plan,
            apply_id: crate::sync::new_run_id(),
            options: self.options,
        })
    }
}

/// The source `name` built (its credentials read: a missing one is an error before any
/// request), if its provider can write back.
fn writer_of(p: &Pipeline, name: &str) -> Result<Box<dyn Source>> {
    if let Some(why) = crate::providers::profile(p.source(name)?, &p.dir())?.read_only {
        return Err(Error::config(format!("source {name}: {why}")));
    }
    let source = crate::providers::build(p.source(name)?, &p.dir())?;
    if source.write_back().is_none() {
        return Err(Error::config(format!(
            "source {name}: its provider cannot write back"
        )));
    }
    Ok(source)
}

/// Writes a prepared apply's plan on record and syncs again; logs `apply finished`.
async fn write_prepared<P: Writable>(prepared: Prepared<'_, P>) -> Result<ApplyReport<P>> {
    let o = &prepared.options;
    let run = Run {
        pipeline: prepared.pipeline,
        source: prepared.source.as_ref(),
        apply_id: &prepared.apply_id,
        accounts: &o.accounts,
        force: o.force,
        progress: o.progress,
    };
    let (results, resolved) = write(&run, &prepared.plan).await?;
    let invalid = prepared.plan.invalid().len();
    let failures = failures(&results, invalid) + resolved.unknown.len();
    log_finished(
        &prepared.apply_id,
        prepared.plan.source(),
        &results,
        invalid,
        failures,
        o.summary_event,
    );
    Ok(ApplyReport {
        apply_id: prepared.apply_id,
        plan: prepared.plan,
        results,
        resolved,
    })
}

/// The result's event, `apply finished`: at info level when it stands for the printed
/// summary (`summary_event`), else at debug level.
fn log_finished(
    apply_id: &str,
    source: &str,
    results: &[OpResult],
    invalid_rows: usize,
    failures: usize,
    summary_event: bool,
) {
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    macro_rules! finished {
        ($level:expr) => {
            tracing::event!(
                $level,
                apply_id = %apply_id,
                source = %source,
                ok = count(Outcome::Ok),
                conflicts = count(Outcome::Conflict),
                failed = count(Outcome::Failed),
                refused_by_api = count(Outcome::Invalid),
                invalid_rows,
                failures,
                "apply finished"
            )
        };
    }
    if summary_event {
        finished!(tracing::Level::INFO);
    } else {
        finished!(tracing::Level::DEBUG);
    }
}

/// The future an apply is: boxed, since its steps are async functions. It is not `Send`
/// because the syncs before and after the writes are not (the lake's commit futures):
/// await it where it was made (`block_on`, `#[tokio::main]`), as `sync::run_sync`.
type Running<'a, P> = Pin<Box<dyn Future<Output = Result<ApplyReport<P>>> + 'a>>;

impl<'a> IntoFuture for Prepared<'a, Plan> {
    type Output = Result<ApplyReport<Plan>>;
    type IntoFuture = Running<'a, Plan>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(write_prepared(self))
    }
}

impl<'a> IntoFuture for Prepared<'a, PhotoPlan> {
    type Output = Result<ApplyReport<PhotoPlan>>;
    type IntoFuture = Running<'a, PhotoPlan>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(write_prepared(self))
    }
}

impl<'a> IntoFuture for Apply<'a, FromDesired> {
    type Output = Result<ApplyReport<Plan>>;
    type IntoFuture = Running<'a, Plan>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { write_prepared(self.prepare().await?).await })
    }
}

impl<'a> IntoFuture for Apply<'a, FromSaved> {
    type Output = Result<ApplyReport<Plan>>;
    type IntoFuture = Running<'a, Plan>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { write_prepared(self.prepare().await?).await })
    }
}

impl<'a> IntoFuture for Apply<'a, FromPhotos> {
    type Output = Result<ApplyReport<PhotoPlan>>;
    type IntoFuture = Running<'a, PhotoPlan>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { write_prepared(self.prepare().await?).await })
    }
}
