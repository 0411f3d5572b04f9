//! Plans people can review, as Terraform shows them: per changed field, its value before
//! and after; who each insert and delete is; a sample that is the same on every run and
//! shows every kind of operation; and the question a person answers before contacts are
//! deleted.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

use super::{Invalid, Op, OpKind, Plan, as_json, field};
use crate::error::{Error, Result};
use crate::model::schema::ContactRecord;

/// The widest value a printed plan shows; longer ones end in `…`.
pub const VALUE_WIDTH: usize = 60;

/// `s` cut to `width` characters, with `…` where it was cut.
pub fn truncate(s: &str, width: usize) -> String {
    match s.char_indices().nth(width) {
        None => s.to_string(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

/// A value as the plan prints it: compact JSON (strings quoted, `null` for none), cut to
/// [`VALUE_WIDTH`].
pub fn show(v: &Value) -> String {
    truncate(&v.to_string(), VALUE_WIDTH)
}

/// Who a contact is, for people: its display name and first e-mail address
/// (`Ann Lee <ann@example.org>`), either one, or nothing.
pub fn who(r: &ContactRecord) -> String {
    let name = r
        .display_name
        .clone()
        .or_else(|| {
            let parts: Vec<&str> = [&r.given_name, &r.family_name]
                .iter()
                .filter_map(|p| p.as_deref())
                .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        })
        .map(|n| truncate(&n, 40));
    let email = r.emails.iter().find_map(|e| e.address.clone());
    match (name, email) {
        (Some(n), Some(e)) => format!("{n} <{e}>"),
        (Some(n), None) => n,
        (None, Some(e)) => format!("<{e}>"),
        (None, None) => String::new(),
    }
}

/// One field an operation changes: its value before (null for an insert) and after.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub field: String,
    pub before: Value,
    pub after: Value,
}

/// What an operation changes, field by field: an update's changed fields; an insert's
/// managed fields that have a value; nothing for a delete (the whole contact goes).
pub fn changes(op: &Op, managed: &[String]) -> Vec<FieldChange> {
    match &op.action {
        super::Action::Update {
            desired,
            landed,
            changed,
            ..
        } => {
            let (d, l) = (as_json(desired), as_json(landed));
            changed
                .iter()
                .map(|c| FieldChange {
                    field: c.clone(),
                    before: field(&l, c),
                    after: field(&d, c),
                })
                .collect()
        }
        super::Action::Insert { desired } => {
            let d = as_json(desired);
            managed
                .iter()
                .map(|c| FieldChange {
                    field: c.clone(),
                    before: Value::Null,
                    after: field(&d, c),
                })
                .filter(|c| !is_empty(&c.after))
                .collect()
        }
        super::Action::Delete { .. } => Vec::new(),
    }
}

fn is_empty(v: &Value) -> bool {
    v.is_null() || v.as_array().is_some_and(Vec::is_empty)
}

/// The contact an operation is about: the desired one for inserts, the landed one else.
fn contact(op: &Op) -> Option<&ContactRecord> {
    match op.kind() {
        OpKind::Insert => op.desired(),
        _ => op.landed(),
    }
}

/// The order of the sample: inserts, updates, deletes; within a kind by account, then id
/// (inserts, which have none, by who they are, then key). The same plan gives the same
/// sample on every run, whatever order the desired rows came in.
fn sort_key(op: &Op) -> (u8, &str, String, &str) {
    let kind = match op.kind() {
        OpKind::Insert => 0,
        OpKind::Update => 1,
        OpKind::Delete => 2,
    };
    let second = match op.id() {
        Some(id) => id.to_string(),
        None => contact(op).map(who).unwrap_or_default(),
    };
    (kind, op.account.as_str(), second, op.key.as_str())
}

/// Up to `n` operations of each kind, in the order of [`sort_key`].
pub fn sample(plan: &Plan, n: usize) -> Vec<&Op> {
    let mut all: Vec<(_, &Op)> = plan.ops.iter().map(|o| (sort_key(o), o)).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut taken = [0usize; 3];
    all.into_iter()
        .filter(|(k, _)| {
            let t = &mut taken[k.0 as usize];
            *t += 1;
            *t <= n
        })
        .map(|(_, o)| o)
        .collect()
}

/// Up to `n` invalid rows, by row number.
pub fn sample_invalid(invalid: &[Invalid], n: usize) -> Vec<&Invalid> {
    let mut v: Vec<&Invalid> = invalid.iter().collect();
    v.sort_by_key(|i| i.row);
    v.truncate(n);
    v
}

/// The sign Terraform puts before each kind.
fn sign(k: OpKind) -> char {
    match k {
        OpKind::Insert => '+',
        OpKind::Update => '~',
        OpKind::Delete => '-',
    }
}

/// The printed plan: counts, scope, then up to `n` operations of each kind with their
/// field changes, up to `n` warnings and `n` invalid rows, and how many each kind left
/// out.
pub fn render(plan: &Plan, n: usize) -> String {
    let mut s = format!(
        "plan for source {}: {} insert(s), {} update(s), {} delete(s), {} unchanged, {} invalid{}\nmanaged columns: {}\n",
        plan.source,
        plan.count(OpKind::Insert),
        plan.count(OpKind::Update),
        plan.count(OpKind::Delete),
        plan.unchanged,
        plan.invalid.len(),
        if plan.already_applied > 0 {
            format!(", {} insert(s) already applied", plan.already_applied)
        } else {
            String::new()
        },
        plan.managed.join(", ")
    );
    if !plan.scope.is_empty() {
        s.push_str(&format!("accounts: {}\n", plan.scope.join(", ")));
    }
    if plan.out_of_scope > 0 {
        s.push_str(&format!(
            "desired rows of other accounts, left out: {}\n",
            plan.out_of_scope
        ));
    }
    if !plan.left_alone.is_empty() {
        s.push_str(&format!(
            "accounts without desired rows, not mirrored (name them with --account to delete their contacts): {}\n",
            plan.left_alone.join(", ")
        ));
    }
    for op in sample(plan, n) {
        let id = op.id().unwrap_or("(new)");
        let name = contact(op).map(who).unwrap_or_default();
        s.push_str(&format!(
            "  {} {:<6} {}/{id}  {name}\n",
            sign(op.kind()),
            op.kind().as_str(),
            op.account
        ));
        for c in changes(op, &plan.managed) {
            match op.kind() {
                OpKind::Insert => s.push_str(&format!("      {}: {}\n", c.field, show(&c.after))),
                _ => s.push_str(&format!(
                    "      {}: {} → {}\n",
                    c.field,
                    show(&c.before),
                    show(&c.after)
                )),
            }
        }
    }
    for k in [OpKind::Insert, OpKind::Update, OpKind::Delete] {
        let count = plan.count(k);
        if count > n {
            s.push_str(&format!("  … and {} more {}(s)\n", count - n, k.as_str()));
        }
    }
    for w in sample_invalid(&plan.warnings, n) {
        s.push_str(&format!(
            "  WARNING row {} ({}/{}): {}\n",
            w.row + 1,
            w.account,
            w.id.as_deref().unwrap_or("(new)"),
            w.reason
        ));
    }
    if plan.warnings.len() > n {
        s.push_str(&format!(
            "  … and {} more warning(s)\n",
            plan.warnings.len() - n
        ));
    }
    super::render_tail(&mut s, 0, n, &plan.invalid, "(new)");
    s
}

/// The plan as one JSON value for a log event: counts per kind, the scope, and the same
/// sample the printed plan shows (with field changes, values cut as printed).
pub fn to_json(plan: &Plan, n: usize) -> Value {
    let ops: Vec<Value> = sample(plan, n)
        .into_iter()
        .map(|op| {
            let changes: serde_json::Map<String, Value> = changes(op, &plan.managed)
                .into_iter()
                .map(|c| {
                    let v = match op.kind() {
                        OpKind::Insert => json!({ "after": show(&c.after) }),
                        _ => json!({ "before": show(&c.before), "after": show(&c.after) }),
                    };
                    (c.field, v)
                })
                .collect();
            json!({
                "op": op.kind().as_str(),
                "account": op.account,
                "id": op.id(),
                "who": contact(op).map(who),
                "changes": changes,
            })
        })
        .collect();
    let invalid: Vec<Value> = sample_invalid(&plan.invalid, n)
        .into_iter()
        .map(|i| json!({ "row": i.row + 1, "account": i.account, "id": i.id, "reason": i.reason }))
        .collect();
    let warnings: Vec<Value> = sample_invalid(&plan.warnings, n)
        .into_iter()
        .map(|i| json!({ "row": i.row + 1, "account": i.account, "id": i.id, "warning": i.reason }))
        .collect();
    json!({
        "source": plan.source,
        "inserts": plan.count(OpKind::Insert),
        "updates": plan.count(OpKind::Update),
        "deletes": plan.count(OpKind::Delete),
        "unchanged": plan.unchanged,
        "invalid": plan.invalid.len(),
        "already_applied": plan.already_applied,
        "managed": plan.managed,
        "accounts": plan.scope,
        "sample": ops,
        "invalid_sample": invalid,
        "warnings": plan.warnings.len(),
        "warning_sample": warnings,
    })
}

/// How `apply` may go ahead with a plan that deletes contacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// `--yes`: no question.
    Given,
    /// A person is at a terminal: ask.
    Ask,
    /// No terminal and no `--yes`: deletes are refused.
    NoTerminal,
}

/// Lets `apply` go ahead with `plan`, or refuses (a configuration error: exit 2, nothing
/// written). A plan without deletes needs no approval. With deletes: `--yes` approves;
/// at a terminal the question goes to `output` and the answer comes from `input` (only
/// `y` or `yes` approves); without a terminal the apply is refused.
pub fn approve_deletes(
    plan: &Plan,
    approval: Approval,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> Result<()> {
    approve(
        plan.count(OpKind::Delete),
        "contact(s)",
        &plan.source,
        approval,
        input,
        output,
    )
}

/// [`approve_deletes`] for a plan that deletes `deletes` things (`what`: "contact(s)",
/// "photo(s)") of `source` (what a question asked on another thread needs of the plan).
pub fn approve(
    deletes: usize,
    what: &str,
    source: &str,
    approval: Approval,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> Result<()> {
    if deletes == 0 || approval == Approval::Given {
        return Ok(());
    }
    if approval == Approval::NoTerminal {
        return Err(Error::config(format!(
            "refusing to start: the plan deletes {deletes} {what} of source {source}, and apply asks before deleting, but there is no terminal to ask on. Review the plan, then pass --yes (schedulers and scripts do)"
        )));
    }
    write!(
        output,
        "Delete {deletes} {what} of source {source} (and apply the rest of the plan)? [y/N] "
    )?;
    output.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Error::config(
            "apply cancelled: nothing was written (answer y to go ahead, or pass --yes)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::schema::Email;
    use crate::plan::{Action, Desired, Landed, Mode, diff};
    use crate::providers::google::rules::GoogleRules;

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

    /// A plan with `n` of each kind: updates of the notes, inserts, deletes, invalid rows;
    /// the desired rows in the order given.
    fn plan_of(n: usize, reversed: bool) -> Plan {
        let landed: Vec<ContactRecord> = (0..2 * n)
            .map(|i| {
                let mut r = rec(&format!("id{i:03}"), &format!("Person {i}"));
                r.notes = Some(format!("old {i}"));
                r
            })
            .collect();
        let mut desired: Vec<ContactRecord> = (0..n)
            .map(|i| {
                let mut r = rec(&format!("id{i:03}"), &format!("Person {i}"));
                r.notes = Some(format!("new {i} {}", "x".repeat(100)));
                r
            })
            .collect();
        for i in 0..n {
            let mut r = rec("", &format!("New {i}"));
            r.emails[0].address = Some(format!("new{i}@x.org"));
            r.notes = Some("hello".into());
            desired.push(r);
            let mut bad = rec("", &format!("Bad {i}"));
            bad.emails[0].address = Some("no-at-sign".into());
            desired.push(bad);
        }
        if reversed {
            desired.reverse();
        }
        let desired = Desired {
            rows: desired,
            columns: ["id", "account", "display_name", "emails", "notes"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        diff(
            "s",
            &GoogleRules,
            Some("example.com"),
            desired,
            &Landed::from_rows(landed),
            Mode::Mirror,
        )
    }

    #[test]
    fn the_sample_is_stable_shows_every_kind_and_respects_n() {
        let (a, b) = (plan_of(6, false), plan_of(6, true));
        assert_eq!(
            (
                a.count(OpKind::Insert),
                a.count(OpKind::Update),
                a.count(OpKind::Delete),
                a.invalid.len()
            ),
            (6, 6, 6, 6)
        );
        // Whatever order the desired rows came in, the same text.
        let text = render(&a, 2);
        // (Invalid rows are named by their row number, which the order changes.)
        let ops_of = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.contains("INVALID"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(ops_of(&text), ops_of(&render(&b, 2)));
        let count = |what: &str| text.lines().filter(|l| l.contains(what)).count();
        assert_eq!(count("+ insert"), 2, "{text}");
        assert_eq!(count("~ update"), 2, "{text}");
        assert_eq!(count("- delete"), 2, "{text}");
        assert_eq!(count("INVALID"), 2, "{text}");
        for k in ["insert", "update", "delete"] {
            assert!(text.contains(&format!("… and 4 more {k}(s)")), "{text}");
        }
        assert!(text.contains("… and 4 more invalid row(s)"), "{text}");
        // The first updates and deletes by id; inserts by who they are.
        assert!(text.contains("~ update example.com/id000  Person 0 <id000@x.org>"));
        assert!(text.contains("~ update example.com/id001"));
        assert!(text.contains("- delete example.com/id006  Person 6 <id006@x.org>"));
        assert!(text.contains("+ insert example.com/(new)  New 0 <new0@x.org>"));
        // Values before → after, the long one cut.
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("notes: \"old 0\""))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            line.contains("→ \"new 0 xxx") && line.ends_with('…'),
            "{line}"
        );
        assert!(line.chars().count() < 2 * VALUE_WIDTH + 30, "{line}");
        assert!(text.contains("      notes: \"hello\""), "{text}");
        // n = 0: counts only.
        let bare = render(&a, 0);
        assert!(
            !bare.contains("~ update") && !bare.contains("INVALID"),
            "{bare}"
        );
        assert!(bare.contains("… and 6 more invalid row(s)"), "{bare}");
    }

    #[test]
    fn the_json_event_holds_counts_and_the_same_sample() {
        let p = plan_of(3, false);
        let v = to_json(&p, 1);
        assert_eq!(
            (
                v["inserts"].as_u64(),
                v["updates"].as_u64(),
                v["deletes"].as_u64(),
                v["invalid"].as_u64()
            ),
            (Some(3), Some(3), Some(3), Some(3))
        );
        let ops = v["sample"].as_array().unwrap();
        let kinds: Vec<&str> = ops.iter().map(|o| o["op"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["insert", "update", "delete"]);
        assert_eq!(ops[1]["id"], "id000");
        assert_eq!(ops[1]["changes"]["notes"]["before"], "\"old 0\"");
        assert_eq!(v["invalid_sample"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn deletes_need_a_yes_at_a_terminal_or_flag() {
        let p = plan_of(2, false);
        let ask = |answer: &str, approval: Approval| {
            let mut out = Vec::new();
            let r = approve_deletes(
                &p,
                approval,
                &mut std::io::Cursor::new(answer.as_bytes().to_vec()),
                &mut out,
            );
            (r, String::from_utf8(out).unwrap())
        };
        let (r, asked) = ask("y\n", Approval::Ask);
        assert!(r.is_ok());
        assert!(asked.contains("Delete 2 contact(s) of source s") && asked.ends_with("[y/N] "));
        assert!(ask("YES\n", Approval::Ask).0.is_ok());
        for no in ["\n", "n\n", "no\n", "", "yes please\n"] {
            let (r, _) = ask(no, Approval::Ask);
            let e = r.unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("cancelled"), "{e}");
        }
        let (r, asked) = ask("y\n", Approval::NoTerminal);
        let e = r.unwrap_err();
        assert!(asked.is_empty());
        assert!(e.to_string().contains("--yes") && e.exit_code() == 2, "{e}");
        let (r, asked) = ask("", Approval::Given);
        assert!(r.is_ok() && asked.is_empty());
        // Without deletes nobody is asked.
        let mut no_deletes = p.clone();
        no_deletes
            .ops
            .retain(|o| !matches!(o.action, Action::Delete { .. }));
        let mut out = Vec::new();
        approve_deletes(
            &no_deletes,
            Approval::NoTerminal,
            &mut std::io::Cursor::new(Vec::new()),
            &mut out,
        )
        .unwrap();
        assert!(out.is_empty());
    }
}
