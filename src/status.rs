//! `status`: per source and account, what the lake holds and how its runs went — contacts
//! held, runs, the last success and its age (the age of the cursor the next sync continues
//! from), its changes and bytes, and the failures since — in a table that fits the
//! terminal (100 columns elsewhere; names never cut, errors cut with their cause first,
//! whole in `--format json`).

use crate::config::Pipeline;
use crate::error::{Context as _, Error, Kind, Result};
use crate::human;
use crate::lake::state::AccountRuns;

/// One account's line of `status`, as `--format json` prints it (times in RFC 3339 at
/// second precision, UTC).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccountStatus {
    /// The source's name.
    pub source: String,
    /// The account.
    pub account: String,
    /// Live rows in `contacts`.
    pub held: i64,
    /// The last completed run's number: how many runs completed.
    pub runs: i64,
    /// The last completed run's mode.
    pub last_mode: Option<String>,
    /// When the last completed run finished (the cursor's time).
    pub last_success: Option<String>,
    /// Seconds since then: the cursor's age.
    pub cursor_age_s: Option<i64>,
    /// Contacts the last completed run upserted.
    pub upserted: Option<i64>,
    /// Contacts the last completed run deleted.
    pub deleted: Option<i64>,
    /// Response bytes the last completed run read.
    pub bytes: Option<i64>,
    /// Failed runs since the last completed one.
    pub failures_since: i64,
    /// When the newest of those failed.
    pub last_failure: Option<String>,
    /// Its error, whole.
    pub last_error: Option<String>,
    /// Writes applies sent whose answer is not on record yet (`writeback_results` rows
    /// `sent`): the next apply or sync of the account resolves them.
    pub writes_sent: i64,
    /// Writes whose outcome could not be told (`unknown` rows): check them at the API.
    pub writes_unknown: i64,
}

/// What `status` shows: the lake and its accounts, as of `now_us`.
#[derive(Debug, Clone)]
pub struct Status {
    /// The lake's URL.
    pub lake: String,
    /// When the status was read (microseconds since the epoch, UTC).
    pub now_us: i64,
    /// One entry per account the lake knows, sorted.
    pub accounts: Vec<AccountStatus>,
}

/// Reads the status of the pipeline's lake.
pub async fn status(p: &Pipeline) -> Result<Status> {
    let lake = crate::sync::lake_of(p)?;
    let accounts = lake.account_runs().await?;
    let now_us = chrono::Utc::now().timestamp_micros();
    let open = open_writes(&lake).await?;
    let mut accounts: Vec<AccountStatus> = accounts.iter().map(|a| of_account(a, now_us)).collect();
    for a in &mut accounts {
        if let Some(&(sent, unknown)) = open.get(&(a.source.clone(), a.account.clone())) {
            (a.writes_sent, a.writes_unknown) = (sent, unknown);
        }
    }
    Ok(Status {
        lake: lake.url().to_string(),
        now_us,
        accounts,
    })
}

/// Per (source, account): `writeback_results` rows `sent` and `unknown`.
async fn open_writes(
    lake: &crate::lake::Lake,
) -> Result<std::collections::HashMap<(String, String), (i64, i64)>> {
    use crate::model::write::{SENT, UNKNOWN};
    use arrow::array::AsArray;
    let mut out = std::collections::HashMap::new();
    let filter = format!("result IN ('{SENT}', '{UNKNOWN}')");
    lake.for_each_batch(
        crate::lake::TableKind::WritebackResults,
        Some(&filter),
        |b| {
            let column = |name: &str| {
                b.column_by_name(name)
                    .and_then(|c| c.as_string_opt::<i32>().cloned())
                    .ok_or_else(|| {
                        Error::lake(format!("writeback_results has no string column {name}"))
                    })
            };
            let (sources, accounts, results) =
                (column("source")?, column("account")?, column("result")?);
            for i in 0..b.num_rows() {
                let key = (sources.value(i).to_string(), accounts.value(i).to_string());
                let e: &mut (i64, i64) = out.entry(key).or_default();
                if results.value(i) == SENT {
                    e.0 += 1;
                } else {
                    e.1 += 1;
                }
            }
            Ok(())
        },
    )
    .await?;
    Ok(out)
}

fn of_account(a: &AccountRuns, now_us: i64) -> AccountStatus {
    let ok = a.last_ok.as_ref();
    AccountStatus {
        source: a.source.clone(),
        account: a.account.clone(),
        held: a.held,
        runs: a.seq,
        last_mode: ok.map(|r| r.mode.clone()),
        last_success: ok.map(|r| human::rfc3339_seconds(r.finished_at_us)),
        cursor_age_s: ok.map(|r| (now_us - r.finished_at_us).max(0) / 1_000_000),
        upserted: ok.map(|r| r.upserted),
        deleted: ok.map(|r| r.deleted),
        bytes: ok.map(|r| r.bytes),
        failures_since: a.failures_since,
        last_failure: a
            .last_failure
            .as_ref()
            .map(|r| human::rfc3339_seconds(r.finished_at_us)),
        last_error: a.last_failure.as_ref().and_then(|r| r.error.clone()),
        writes_sent: 0,
        writes_unknown: 0,
    }
}

/// The width of the text table where no terminal says otherwise.
pub const WIDTH: usize = 100;

/// The widest the name column grows before a longer name goes on a line of its own.
const NAME_WIDTH: usize = 28;

impl Status {
    /// The table in [`WIDTH`] columns: see [`Status::render_width`].
    pub fn render(&self) -> String {
        self.render_width(WIDTH)
    }

    /// The table: one line per account, then one line per account with failures, each
    /// within `width` columns. An account's name is never cut: one longer than its column
    /// stands on a line of its own above its figures. A failure line shows what happened
    /// first and where after it, and is cut at the width (whole in `--format json`).
    pub fn render_width(&self, width: usize) -> String {
        if self.accounts.is_empty() {
            return format!(
                "no runs yet: the lake at {} holds no account. Run `contacts-etl sync PIPELINE` first.\n",
                self.lake
            );
        }
        let names: Vec<String> = self
            .accounts
            .iter()
            .map(|a| format!("{}/{}", a.source, a.account))
            .collect();
        let name_w = human::name_column(&names, NAME_WIDTH);
        // Counts are never cut: their column is as wide as the widest.
        let changes: Vec<String> = self.accounts.iter().map(changes_of).collect();
        let changes_w = changes
            .iter()
            .map(|c| c.len())
            .chain([13])
            .max()
            .unwrap_or(13);
        let mut s = format!(
            "{} {:>9} {:>5}  {:<11}  {:<8}  {:<changes_w$} {:>8} {:>5}\n",
            human::pad("SOURCE/ACCOUNT", name_w),
            "HELD",
            "RUNS",
            "LAST MODE",
            "LAST OK",
            "CHANGES",
            "FETCHED",
            "FAILS"
        );
        for ((a, name), changes) in self.accounts.iter().zip(&names).zip(&changes) {
            let shown = if human::width_of(name) > name_w {
                s.push_str(name);
                s.push('\n');
                ""
            } else {
                name.as_str()
            };
            s.push_str(&self.figures(a, shown, name_w, (changes, changes_w)));
        }
        let failing: Vec<(&AccountStatus, &String)> = self
            .accounts
            .iter()
            .zip(&names)
            .filter(|(a, _)| a.failures_since > 0)
            .collect();
        if !failing.is_empty() {
            s.push_str("failures since the last success (whole errors: status --format json):\n");
            for (a, name) in failing {
                let error = a.last_error.as_deref().unwrap_or("");
                // The name is said at the start of the line; the message need not repeat it.
                let error = error
                    .strip_prefix(name.as_str())
                    .and_then(|e| e.strip_prefix(": "))
                    .unwrap_or(error);
                let head = format!("  {name} at {}: ", a.last_failure.as_deref().unwrap_or("-"));
                let room = width.saturating_sub(human::width_of(&head)).max(20);
                s.push_str(&head);
                s.push_str(&human::fit(&human::cause_first(error), room));
                s.push('\n');
            }
        }
        let open: Vec<&AccountStatus> = self
            .accounts
            .iter()
            .filter(|a| a.writes_sent + a.writes_unknown > 0)
            .collect();
        if !open.is_empty() {
            s.push_str("writes not on record (sent: the next apply or sync resolves them; unknown: check at the API):\n");
            for a in open {
                let line = format!(
                    "  {}/{}: {} sent, {} unknown",
                    a.source, a.account, a.writes_sent, a.writes_unknown
                );
                s.push_str(&human::fit(&line, WIDTH));
                s.push('\n');
            }
        }
        s.push_str(&format!(
            "lake {} at {}\n",
            human::fit(&self.lake, width.saturating_sub(30).max(20)),
            human::utc_seconds(self.now_us)
        ));
        s
    }

    /// One account's figures, `name` in a column of `name_w`, its changes in theirs.
    fn figures(
        &self,
        a: &AccountStatus,
        name: &str,
        name_w: usize,
        (changes, changes_w): (&str, usize),
    ) -> String {
        let ok_at = a.cursor_age_s.map(|age| self.now_us - age * 1_000_000);
        format!(
            "{} {:>9} {:>5}  {:<11}  {:<8}  {changes:<changes_w$} {:>8} {:>5}\n",
            human::pad(name, name_w),
            human::count(a.held),
            a.runs,
            human::fit(a.last_mode.as_deref().unwrap_or("-"), 11),
            ok_at.map_or("never".into(), |t| human::ago(t, self.now_us)),
            a.bytes.map_or("-".into(), human::bytes),
            a.failures_since,
        )
    }

    /// `--format json`: the accounts, every field whole.
    pub fn render_json(&self) -> Result<String> {
        let mut s =
            serde_json::to_string_pretty(&self.accounts).context(Kind::Other, "status as JSON")?;
        s.push('\n');
        Ok(s)
    }
}

/// An account's last changes, as `+upserted -deleted`.
fn changes_of(a: &AccountStatus) -> String {
    match (a.upserted, a.deleted) {
        (Some(u), Some(d)) => format!("+{} -{}", human::count(u), human::count(d)),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, error: Option<String>) -> AccountStatus {
        AccountStatus {
            source: "a_source_with_a_long_name".into(),
            account: name.into(),
            held: 1_234_567,
            runs: 12_345,
            last_mode: Some("incremental".into()),
            last_success: Some("2026-12-01T23:10:05Z".into()),
            cursor_age_s: Some(200),
            upserted: Some(123_456),
            deleted: Some(98_765),
            bytes: Some(987_654_321),
            failures_since: error.is_some() as i64,
            last_failure: error.as_ref().map(|_| "2026-12-01T23:12:00Z".into()),
            last_error: error,
            writes_sent: 3,
            writes_unknown: 1,
        }
    }

    #[test]
    fn the_table_fits_100_columns_whatever_it_holds() {
        let st = Status {
            lake: format!("s3://bucket/{}", "x".repeat(200)),
            now_us: 1_764_630_605_000_000,
            accounts: vec![
                account("an-account-with-a-name-longer-than-the-column", None),
                account(
                    "103",
                    Some(format!("HTTP 401: {}", "unauthorized ".repeat(40))),
                ),
            ],
        };
        let text = st.render();
        for line in text.lines() {
            assert!(
                line.chars().count() <= WIDTH,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        assert!(text.contains("1,234,567") && text.contains("3m ago") && text.contains("987.7 MB"));
        assert!(
            text.contains("+123,456 -98,765 "),
            "counts are never cut: {text}"
        );
        assert!(text.contains("at 2026-12-01T23:12:00Z: HTTP 401"), "{text}");
        assert!(text.contains("/103: 3 sent, 1 unknown"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&st.render_json().unwrap()).unwrap();
        assert_eq!(
            json[1]["last_error"].as_str().unwrap().len(),
            st.accounts[1].last_error.as_ref().unwrap().len(),
            "JSON keeps the whole error"
        );
    }

    #[test]
    fn names_are_never_cut_and_errors_show_their_cause_first() {
        let long = "an-account-with-a-name-longer-than-the-column";
        let st = Status {
            lake: "file:///lake/".into(),
            now_us: 1_764_630_605_000_000,
            accounts: vec![
                account(long, None),
                account(
                    "104",
                    Some(format!(
                        "a_source_with_a_long_name/104: crm account 104: /sync/updated page 17 of {}: the API refused the credentials (401 Token invalid); refresh the account token",
                        "the feed"
                    )),
                ),
            ],
        };
        for width in [80, 100, 200] {
            let text = st.render_width(width);
            assert!(
                text.lines()
                    .any(|l| l == format!("a_source_with_a_long_name/{long}")),
                "{text}"
            );
            // The figures take 89 columns here; from there on, every line fits.
            if width >= 89 {
                assert!(text.lines().all(|l| human::width_of(l) <= width), "{text}");
            }
            let failure = text
                .lines()
                .find(|l| l.contains("at 2026-12-01T23:12:00Z"))
                .unwrap();
            assert!(
                failure.starts_with(
                    "  a_source_with_a_long_name/104 at 2026-12-01T23:12:00Z: the API refused the"
                ),
                "{failure}"
            );
        }
    }
}
