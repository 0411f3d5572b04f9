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
//! `drop`), commits like a sync (see [`crate::lake::state`]), holds the account's lease as
//! a sync does (one refuses, changing nothing, while a sync holds it) and is asked for on
//! a terminal first. The accounts are the lake's, not the pipeline's: an account removed from the
//! pipeline file can still be dropped, and no credential is read.

use std::io::IsTerminal;

use crate::config::Pipeline;
use crate::error::{Context as _, Error, Kind, Result};
use crate::lake::Lake;
use crate::lake::lease::Leased;
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
    // Not under a sync of the account: it would fail that sync's commit, or this one.
    let lease = match lake.take_lease(source, account, &run_id).await? {
        Leased::Held(l) => l,
        Leased::Busy(holder) => {
            return Err(Error::concurrent(format!(
                "{source}/{account}: another sync holds this account: {}; nothing changed. Run the {} again once it is done",
                holder.describe(),
                change.as_str()
            )));
        }
    };
    let done = match change {
        Change::Reset => lake.reset_account(source, account, &run_id).await?,
        Change::Drop => lake.drop_account(source, account, &run_id).await?,
    };
    lease.release().await;
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

/// `state show` as a table of 100 columns: see [`render_width`].
pub fn render(accounts: &[AccountRuns]) -> String {
    render_width(accounts, 100)
}

/// `state show` as a table within `width` columns. Names and run ids are never cut (a
/// name longer than its column stands on a line of its own above its row); the cursor
/// takes the room left and is cut with `…` (whole in `--format json`).
pub fn render_width(accounts: &[AccountRuns], width: usize) -> String {
    let names: Vec<String> = accounts
        .iter()
        .map(|a| format!("{}/{}", a.source, a.account))
        .collect();
    let name_w = human::name_column(&names, 40);
    let run_w = accounts
        .iter()
        .filter_map(|a| a.last.as_ref().map(|r| human::width_of(&r.run_id)))
        .chain([8])
        .max()
        .unwrap_or(8);
    // name, seq, cursor, run, mode (11), status (6), with a space between each.
    let cursor_w = width
        .saturating_sub(name_w + 4 + run_w + 11 + 6 + 5)
        .max(15);
    let line = |name: &str, seq: &str, cursor: &str, run: &str, mode: &str, status: &str| {
        let l = format!(
            "{} {seq:>4} {} {} {} {status}",
            human::pad(name, name_w),
            human::pad(&human::fit(cursor, cursor_w), cursor_w),
            human::pad(run, run_w),
            human::pad(&human::fit(mode, 11), 11),
        );
        format!("{}\n", l.trim_end())
    };
    let mut s = line(
        "SOURCE/ACCOUNT",
        "SEQ",
        "CURSOR",
        "LAST RUN",
        "MODE",
        "STATUS",
    );
    for (a, name) in accounts.iter().zip(&names) {
        let (run, mode, status) = match &a.last {
            Some(r) => (r.run_id.as_str(), r.mode.as_str(), r.status.as_str()),
            None => ("-", "-", "-"),
        };
        let shown = if human::width_of(name) > name_w {
            s.push_str(name);
            s.push('\n');
            ""
        } else {
            name.as_str()
        };
        s.push_str(&line(
            shown,
            &a.seq.to_string(),
            a.cursor.as_deref().unwrap_or("none: next full"),
            run,
            mode,
            status,
        ));
    }
    s
}

/// `state show --format json`: one object per account, every field whole.
pub fn render_json(accounts: &[AccountRuns]) -> Result<String> {
    let mut s = serde_json::to_string_pretty(accounts).context(Kind::Other, "state as JSON")?;
    s.push('\n');
    Ok(s)
}

/// Numbers, sizes, times and ages for people (the crate's [`crate::human`]).
pub use crate::human;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::state::RunRow;

    fn account(source: &str, account: &str, cursor: &str) -> AccountRuns {
        let run = RunRow {
            run_id: "20261206T235746.180Z-bcda40b7".into(),
            seq: Some(12),
            mode: "incremental".into(),
            status: "ok".into(),
            started_at_us: 0,
            finished_at_us: 0,
            upserted: 0,
            deleted: 0,
            bytes: 0,
            error: None,
            cursor: Some(cursor.into()),
        };
        AccountRuns {
            source: source.into(),
            account: account.into(),
            seq: 12,
            cursor: Some(cursor.into()),
            held: 5,
            last_ok: Some(run.clone()),
            last: Some(run),
            failures_since: 0,
            last_failure: None,
        }
    }

    #[test]
    fn state_show_cuts_cursors_never_names_or_runs() {
        let long_name = "a-very-long-account-name-that-no-column-holds.example.com";
        let cursor = format!("{{\"updated_min\":\"{}\"}}", "x".repeat(300));
        let accounts = [
            account("shared_contacts", "example.com", &cursor),
            account("shared_contacts", long_name, "short"),
        ];
        for width in [100, 200] {
            let text = render_width(&accounts, width);
            assert!(text.lines().all(|l| human::width_of(l) <= width), "{text}");
            assert!(text.contains("shared_contacts/example.com "), "{text}");
            assert!(
                text.lines()
                    .any(|l| l == format!("shared_contacts/{long_name}")),
                "{text}"
            );
            assert_eq!(
                text.matches("20261206T235746.180Z-bcda40b7").count(),
                2,
                "{text}"
            );
            assert!(
                text.contains("{\"updated_min\":\"x") && text.contains("x…"),
                "{text}"
            );
        }
        // The wider the terminal, the more of the cursor it shows.
        assert!(
            render_width(&accounts, 200).matches('x').count()
                > render_width(&accounts, 100).matches('x').count()
        );
    }
}
