//! `contacts-etl demo`: the whole loop on built-in emulators and a local lake.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::Pipeline;
use crate::emulator::{Emulator, EmulatorConfig};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::plan::Mode;
use crate::plan::apply::{Apply, MaxDelete};
use crate::sync::{SyncOptions, run_sync};

/// Aurinko accounts in the demo.
pub const DEMO_ACCOUNTS: usize = 3;

/// Writes the demo pipeline file for an emulator at `url`, with the emulator's test
/// tokens in token files under `dir/secrets/` (as a mounted secret would be).
pub fn write_pipeline(dir: &Path, url: &str, domain: &str) -> Result<PathBuf> {
    let token = EmulatorConfig::default().token;
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets)?;
    std::fs::write(secrets.join("google.token"), &token)?;
    for i in 0..DEMO_ACCOUNTS {
        std::fs::write(
            secrets.join(format!("aurinko-{}.token", 101 + i)),
            format!("{token}-{}", 101 + i),
        )?;
    }
    let accounts: Vec<String> = (0..DEMO_ACCOUNTS)
        .map(|i| {
            format!(
                "{{ id = \"{id}\", token_file = \"secrets/aurinko-{id}.token\" }}",
                id = 101 + i
            )
        })
        .collect();
    let text = format!(
        r#"# Written by `contacts-etl demo`: the built-in emulators and a local lake.
[lake]
url = "lake"

[[sources]]
name = "shared_contacts"
provider = "google"
domain = "{domain}"
base_url = "{url}"
auth = {{ kind = "bearer", token_file = "secrets/google.token" }}
page_size = 500
concurrency = 4

[[sources]]
name = "crm_contacts"
provider = "aurinko"
base_url = "{url}"
accounts = [{}]
concurrency = 3
"#,
        accounts.join(", ")
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Prints a line of the demo on stdout. A reader that went away (`demo | head`) ends the
/// demo through the error path, which the command line ends quietly on.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?;
    }};
}

/// Runs the demo in `dir` with about `contacts` Google contacts (and a third of that per
/// Aurinko account), printing each step. Returns an error if the lake does not match.
pub async fn run(dir: &Path, contacts: usize) -> Result<()> {
    let t0 = Instant::now();
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let lake_dir = dir.join("lake");
    if lake_dir.exists() {
        std::fs::remove_dir_all(&lake_dir)?;
    }
    let (emu, path) = start(&dir, contacts).await?;
    let pipeline = crate::providers::load_pipeline(&path)?;
    sync_step(&pipeline, 2, "Full sync").await?;
    change_the_apis(&emu)?;
    sync_step(&pipeline, 4, "Incremental sync").await?;
    let lake = crate::sync::lake_of(&pipeline)?;
    let mismatches = mismatches(&lake, &emu).await?;
    if let Some(first) = mismatches.first() {
        return Err(Error::other(format!(
            "the lake does not match the APIs ({} differences), first: {first}",
            mismatches.len(),
        )));
    }
    say!("5. Checked: every landed contact equals the API's, field by field (0 differences)");
    sql_step(&lake).await?;
    clean_up(&pipeline, &lake, &emu).await?;
    sync_step(&pipeline, 10, "Rerun (idempotent)").await?;
    say!(
        "\nDone in {:.1}s. The lake is at {}",
        t0.elapsed().as_secs_f64(),
        lake_dir.display()
    );
    say!(
        "Next, try:\n  contacts-etl status {p}\n  contacts-etl query {p} \"SELECT op, result, count(*) FROM writeback_results GROUP BY 1, 2\"\n  contacts-etl query {p} \"SELECT * FROM contact_changes LIMIT 5\"\n  contacts-etl emulator --port 0 --env-file emulator.env   # then . ./emulator.env and sync pipelines/emulator.toml",
        p = path.display()
    );
    emu.shutdown().await;
    Ok(())
}

/// Step 1: the emulators up, and the pipeline file for them written in `dir`.
async fn start(dir: &Path, contacts: usize) -> Result<(Emulator, PathBuf)> {
    let cfg = EmulatorConfig {
        google_contacts: contacts,
        aurinko_accounts: DEMO_ACCOUNTS,
        aurinko_contacts: (contacts / 3).max(1),
        aurinko_page_size: 250,
        ..Default::default()
    };
    let emu = Emulator::start(cfg).await?;
    say!(
        "1. Emulators up at {} — Google domain {} with {} shared contacts, {} Aurinko accounts with {} contacts each",
        emu.url(),
        emu.config().google_domain,
        contacts,
        DEMO_ACCOUNTS,
        (contacts / 3).max(1)
    );
    let path = write_pipeline(dir, emu.url(), &emu.config().google_domain)?;
    say!("   pipeline file: {}", path.display());
    Ok((emu, path))
}

/// Step `n`: a sync of every source, its counts and time said.
async fn sync_step(pipeline: &Pipeline, n: u32, what: &str) -> Result<()> {
    let t = Instant::now();
    let r = run_sync(pipeline, &SyncOptions::default()).await?;
    fail_on(&r)?;
    let up: i64 = r.accounts.iter().map(|a| a.upserted).sum();
    let del: i64 = r.accounts.iter().map(|a| a.deleted).sum();
    let pages: u64 = r.accounts.iter().map(|a| a.pages).sum();
    say!(
        "{n}. {what}: {} accounts, {up} upserted, {del} deleted, {pages} pages in {:.2}s",
        r.accounts.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Step 3: contacts inserted, updated and deleted at both APIs.
fn change_the_apis(emu: &Emulator) -> Result<()> {
    let g = emu.mutate_google(25, 25, 10);
    let a = emu.mutate_aurinko(None, 10, 10, 5);
    say!(
        "3. Changed the APIs: Google +{} ~{} -{}, Aurinko +{} ~{} -{}",
        g.inserted.len(),
        g.updated.len(),
        g.deleted.len(),
        a.inserted.len(),
        a.updated.len(),
        a.deleted.len()
    );
    Ok(())
}

/// Every difference between the lake's contacts and the emulators' truth.
async fn mismatches(lake: &Lake, emu: &Emulator) -> Result<Vec<String>> {
    let mut mismatches = crate::model::verify::diff(
        &lake
            .contacts_of("shared_contacts", &emu.config().google_domain)
            .await?,
        &emu.google_truth().contacts,
    );
    for acct in emu.aurinko_accounts() {
        let truth = emu
            .aurinko_truth(&acct)
            .ok_or_else(|| Error::other(format!("the emulator has no account {acct}")))?;
        mismatches.extend(crate::model::verify::diff(
            &lake.contacts_of("crm_contacts", &acct).await?,
            &truth.contacts,
        ));
    }
    Ok(mismatches)
}

/// Step 6: two queries over the lake, printed as tables.
async fn sql_step(lake: &Lake) -> Result<()> {
    let sql = "SELECT source, account, count(*) AS contacts, sum(cardinality(emails)) AS emails FROM contacts GROUP BY source, account ORDER BY source, account";
    let batches = crate::sql::query(lake, sql).await?;
    say!("6. SQL: {sql}\n{}", crate::sql::render(&batches, "table")?);
    let sql2 = "SELECT lower(split_part(address, '@', 2)) AS domain, count(*) AS n FROM contact_emails GROUP BY 1 ORDER BY n DESC, domain LIMIT 5";
    let batches = crate::sql::query(lake, sql2).await?;
    say!("   SQL: {sql2}\n{}", crate::sql::render(&batches, "table")?);
    Ok(())
}

/// Steps 7 to 9: a clean-up written back to both APIs (File As = "Family, Given"), then
/// the lake checked against them: equal, and every contact cleaned but the invalid ones.
async fn clean_up(pipeline: &Pipeline, lake: &Lake, emu: &Emulator) -> Result<()> {
    let t = Instant::now();
    let mut invalid = 0;
    // One numbered step per source.
    for (n, source) in [(7, "shared_contacts"), (8, "crm_contacts")] {
        invalid += write_back(pipeline, n, source).await?;
    }
    let g = emu.stats().get("google.batch").copied().unwrap_or(0);
    say!(
        "   ({g} Google batch request(s); {:.2}s)",
        t.elapsed().as_secs_f64()
    );
    let left = crate::sql::query(lake, "SELECT count(*) AS n FROM contacts WHERE family_name IS NOT NULL AND given_name IS NOT NULL AND file_as IS DISTINCT FROM concat(family_name, ', ', given_name)").await?;
    let left = match left.first() {
        Some(b) => arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64)?,
        None => return Err(Error::other("a count over the lake returned no row")),
    };
    // Cast to Int64 just above: the downcast holds.
    let left = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(&left).value(0);
    let mismatches = mismatches(lake, emu).await?;
    if !mismatches.is_empty() || left as usize > invalid {
        return Err(Error::other(format!(
            "after the write-back the lake does not match: {} differences, {left} contacts not cleaned",
            mismatches.len()
        )));
    }
    say!(
        "9. Synced again: the lake equals both APIs (0 differences); {left} contact(s) left as they were because they were invalid"
    );
    Ok(())
}

/// Step `n`: the clean-up planned and applied to `source`; returns the rows left as
/// they were because they are invalid (locally, or refused by the API).
async fn write_back(pipeline: &Pipeline, n: u32, source: &str) -> Result<usize> {
    use crate::model::write::Outcome;
    let desired = format!(
        "SELECT account, id, etag, concat(family_name, ', ', given_name) AS file_as FROM contacts \
         WHERE source = '{source}' AND family_name IS NOT NULL AND given_name IS NOT NULL"
    );
    let plan = crate::plan::apply::plan(pipeline, source, &desired, Mode::Update).await?;
    say!(
        "{n}. Plan for {source}: {} update(s), {} unchanged, {} invalid",
        plan.count(crate::plan::OpKind::Update),
        plan.unchanged,
        plan.invalid.len()
    );
    for inv in plan.invalid.iter().take(2) {
        say!(
            "   invalid {}/{}: {}",
            inv.account,
            inv.id.as_deref().unwrap_or(""),
            inv.reason
        );
    }
    let report = Apply::desired(pipeline, source, desired)
        .with_mode(Mode::Update)
        .with_max_delete(Some(MaxDelete::Count(0)))
        .await?;
    let count = |o: Outcome| report.results.iter().filter(|r| r.outcome == o).count();
    let ok = count(Outcome::Ok);
    // What only the API can decide (Google's count of contact data) it refuses, with
    // its reason: like an invalid row, not a failure of the write-back.
    let refused = count(Outcome::Invalid);
    let failed = report.results.len() - ok - refused;
    say!(
        "   Applied to {source}: {ok} written, {refused} refused by the API as invalid, {failed} failed, recorded in writeback_results"
    );
    for r in report
        .results
        .iter()
        .filter(|r| r.outcome == Outcome::Invalid)
        .take(2)
    {
        say!(
            "   refused {}: {}",
            r.id.as_deref().unwrap_or(""),
            r.error.as_deref().unwrap_or("")
        );
    }
    if failed > 0 {
        return Err(Error::other(report.summary()));
    }
    Ok(report.plan.invalid.len() + refused)
}

/// The first account of a sync that failed, as an error.
fn fail_on(r: &crate::sync::SyncReport) -> Result<()> {
    if let Some(f) = r.failed().first() {
        return Err(Error::other(format!(
            "{}/{} failed: {}",
            f.source,
            f.account,
            f.error.as_deref().unwrap_or("")
        )));
    }
    Ok(())
}
