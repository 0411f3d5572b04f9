//! `state show|reset|drop`: one account's state in the lake, seen and changed without SQL,
//! as `meltano state` and `dlt pipeline drop` do it.
//!
//! - `show`: per account, the cursor the next sync continues from, the run number (`seq`)
//!   and the last run with its status.
//! - `reset`: the cursor is cleared, so the next sync of the account is a full extract that
//!   deletes what the API no longer has. The contacts stay.
//! - `drop`: the account's contacts leave `contacts` (each logged in `contact_changes` as a
//!   delete of the drop's run) and its cursor is cleared: for an account removed from the
//!   pipeline.
//!
//! A reset and a drop are runs: each has a run id and a `sync_runs` row (mode `reset` or
//! `drop`), commits like a sync (see [`crate::lake::state`]) and is asked for on a terminal
//! first. The accounts are the lake's, not the pipeline's: an account removed from the
//! pipeline file can still be dropped, and no credential is read.

use std::io::IsTerminal;

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::state::{AccountRuns, StateChange};

/// A change to one account's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Clear the cursor: the next sync is a full extract with delete reconciliation.
    Reset,
    /// Remove the account's contacts and clear its cursor.
    Drop,
}

impl Change {
    /// `reset` or `drop`, as `sync_runs.mode` records it.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Reset => "reset",
            Change::Drop => "drop",
        }
    }
}

/// The accounts the pipeline's lake knows, optionally only those of `source` and/or
/// `account`. A source or account the lake does not know is a configuration error that
/// names those it does.
pub async fn show(
    p: &Pipeline,
    source: Option<&str>,
    account: Option<&str>,
) -> Result<Vec<AccountRuns>> {
    let lake = crate::sync::lake_of(p)?;
    let all = lake.account_runs().await?;
    check_known(&lake, &all, source, account)?;
    Ok(all
        .into_iter()
        .filter(|a| source.is_none_or(|s| a.source == s))
        .filter(|a| account.is_none_or(|x| a.account == x))
        .collect())
}

/// Checks that `source` and `account` (when given) name something the lake holds.
fn check_known(
    lake: &Lake,
    all: &[AccountRuns],
    source: Option<&str>,
    account: Option<&str>,
) -> Result<()> {
    let held: Vec<String> = all
        .iter()
        .map(|a| format!("{}/{}", a.source, a.account))
        .collect();
    if all.is_empty() {
        return Err(Error::config(format!(
            "the lake at {} holds no account yet: run `contacts-etl sync` first",
            lake.url()
        )));
    }
    if let Some(s) = source
        && !all.iter().any(|a| a.source == s)
    {
        let mut sources: Vec<&str> = all.iter().map(|a| a.source.as_str()).collect();
        sources.dedup();
        return Err(Error::config(format!(
            "--source {s:?}: the lake at {} holds no such source; sources: {}",
            lake.url(),
            sources.join(", ")
        )));
    }
    if let Some(a) = account
        && !all
            .iter()
            .any(|x| x.account == a && source.is_none_or(|s| x.source == s))
    {
        return Err(Error::config(format!(
            "--account {a:?}: the lake at {} holds no such account{}; accounts: {}",
            lake.url(),
            source
                .map(|s| format!(" of source {s:?}"))
                .unwrap_or_default(),
            held.join(", ")
        )));
    }
    Ok(())
}

/// Resets or drops one account (see the module docs), after `confirm` agreed to the
/// description of what will happen; `None` when it did not. An account the lake does not
/// hold is a configuration error, checked before `confirm` is asked.
pub async fn change(
    p: &Pipeline,
    change: Change,
    source: &str,
    account: &str,
    confirm: impl FnOnce(&str) -> Result<bool>,
) -> Result<Option<StateChange>> {
    let lake = crate::sync::lake_of(p)?;
    let all = lake.account_runs().await?;
    check_known(&lake, &all, Some(source), Some(account))?;
    let target = all
        .iter()
        .find(|a| a.source == source && a.account == account)
        .expect("checked above");
    if !confirm(&describe(p, change, target))? {
        return Ok(None);
    }
    let run_id = crate::sync::new_run_id();
    let done = match change {
        Change::Reset => lake.reset_account(source, account, &run_id).await?,
        Change::Drop => lake.drop_account(source, account, &run_id).await?,
    };
    tracing::info!(
        run_id = %done.run_id,
        source,
        account,
        mode = change.as_str(),
        seq = done.seq,
        deleted = done.deleted,
        photos_removed = done.photos_removed,
        "account state changed"
    );
    Ok(Some(done))
}

/// What a change will do, in the words the confirmation shows.
fn describe(p: &Pipeline, change: Change, a: &AccountRuns) -> String {
    let name = format!("{}/{}", a.source, a.account);
    let held = human::count(a.held);
    match change {
        Change::Reset => format!(
            "Reset {name}: its cursor (run {}) is cleared. The next sync extracts all of its contacts again ({held} held now) and deletes those the API no longer has.",
            a.seq
        ),
        Change::Drop => format!(
            "Drop {name}: its {held} contacts leave the contacts table (each logged as a delete in contact_changes) and its cursor is cleared.{}",
            if p.sources.iter().any(|s| s.name == a.source) {
                " If the pipeline file still lists the account, the next sync brings it back with a full extract."
            } else {
                ""
            }
        ),
    }
}

/// The confirmation of the command line: `yes` agrees at once; on a terminal the question
/// is asked on stderr and answered on stdin; elsewhere a reset goes ahead and a drop, which
/// removes data, needs `yes`.
pub fn confirm_on_terminal(change: Change, yes: bool) -> impl FnOnce(&str) -> Result<bool> {
    move |what| {
        if yes {
            return Ok(true);
        }
        if !std::io::stdin().is_terminal() {
            return match change {
                Change::Reset => Ok(true),
                Change::Drop => Err(Error::config(format!(
                    "{what}\nstdin is not a terminal to confirm on: pass --yes to drop without asking"
                ))),
            };
        }
        eprint!("{what}\n{} it? [y/N] ", capitalised(change.as_str()));
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let agreed = matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes");
        if !agreed {
            eprintln!("nothing changed");
        }
        Ok(agreed)
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `state show` as a table of 99 columns (the full cursor is in `--format json`).
pub fn render(accounts: &[AccountRuns]) -> String {
    let mut s = format!(
        "{:<26} {:>4} {:<18} {:<29} {:<11} STATUS\n",
        "SOURCE/ACCOUNT", "SEQ", "CURSOR", "LAST RUN", "MODE"
    );
    for a in accounts {
        let (run, mode, status) = match &a.last {
            Some(r) => (r.run_id.as_str(), r.mode.as_str(), r.status.as_str()),
            None => ("-", "-", "-"),
        };
        let line = format!(
            "{:<26} {:>4} {:<18} {:<29} {:<11} {:<6}",
            human::fit(&format!("{}/{}", a.source, a.account), 26),
            a.seq,
            human::fit(a.cursor.as_deref().unwrap_or("none: next full"), 18),
            human::fit(run, 29),
            human::fit(mode, 11),
            human::fit(status, 6),
        );
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// `state show --format json`: one object per account, every field whole.
pub fn render_json(accounts: &[AccountRuns]) -> Result<String> {
    let mut s = serde_json::to_string_pretty(accounts)
        .map_err(|e| Error::other(format!("state as JSON: {e}")))?;
    s.push('\n');
    Ok(s)
}

/// Numbers, sizes, times and ages for people.
pub mod human {
    /// `n` with thousands separators: `60,000`.
    pub fn count(n: i64) -> String {
        let digits = n.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 { format!("-{out}") } else { out }
    }

    /// A byte count in B, KB, MB, GB (powers of 1000, one decimal).
    pub fn bytes(n: i64) -> String {
        let units = ["B", "KB", "MB", "GB", "TB"];
        let mut v = n as f64;
        let mut u = 0;
        while v >= 1000.0 && u + 1 < units.len() {
            v /= 1000.0;
            u += 1;
        }
        if u == 0 {
            format!("{n} B")
        } else {
            format!("{v:.1} {}", units[u])
        }
    }

    /// The time from `then_us` to `now_us` in its largest unit: `42s ago`, `3m ago`,
    /// `5h ago`, `2d ago`.
    pub fn ago(then_us: i64, now_us: i64) -> String {
        let s = (now_us - then_us).max(0) / 1_000_000;
        match s {
            0..=59 => format!("{s}s ago"),
            60..=3599 => format!("{}m ago", s / 60),
            3600..=86_399 => format!("{}h ago", s / 3600),
            _ => format!("{}d ago", s / 86_400),
        }
    }

    /// A UTC time at second precision: `2026-12-01 23:10:05Z`.
    pub fn utc_seconds(us: i64) -> String {
        chrono::DateTime::from_timestamp_micros(us)
            .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_else(|| us.to_string())
    }

    /// A UTC time at second precision in RFC 3339: `2026-12-01T23:10:05Z`.
    pub fn rfc3339_seconds(us: i64) -> String {
        chrono::DateTime::from_timestamp_micros(us)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| us.to_string())
    }

    /// `s` cut to `width` characters, ending in `…` when cut; one line.
    pub fn fit(s: &str, width: usize) -> String {
        let s = s.replace(['\n', '\r'], " ");
        if s.chars().count() <= width {
            return s;
        }
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn people_read_these() {
            assert_eq!(count(0), "0");
            assert_eq!(count(999), "999");
            assert_eq!(count(60_000), "60,000");
            assert_eq!(count(-1_234_567), "-1,234,567");
            assert_eq!(bytes(512), "512 B");
            assert_eq!(bytes(1_234_567), "1.2 MB");
            let m = 1_000_000;
            assert_eq!(ago(0, 42 * m), "42s ago");
            assert_eq!(ago(0, 185 * m), "3m ago");
            assert_eq!(ago(0, 7300 * m), "2h ago");
            assert_eq!(ago(0, 3 * 86_400 * m), "3d ago");
            assert_eq!(utc_seconds(1_764_630_605_123_456), "2025-12-01 23:10:05Z");
            assert_eq!(fit("abcdef", 4), "abc…");
            assert_eq!(fit("ab\ncd", 9), "ab cd");
        }
    }
}
