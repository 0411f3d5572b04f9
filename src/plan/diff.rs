//! The diff of a desired state against the landed contacts: which rows become inserts,
//! updates or deletes, which are invalid and why ([`validate`]), and the insert key that
//! makes an insert idempotent ([`insert_key`]).

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use sha2::Digest;

use super::{
    Action, Desired, Invalid, KEY_PROPERTY, Landed, Mode, Op, Plan, WRITABLE, merge_managed,
};
use crate::model::schema::ContactRecord;
use crate::providers::Rules;

/// A record as JSON, computed once per record and read by [`field`].
pub(crate) fn as_json(r: &ContactRecord) -> Value {
    serde_json::to_value(r).unwrap_or_default()
}

/// One column of a record (as JSON), without the stamped insert key.
pub(crate) fn field(v: &Value, name: &str) -> Value {
    let mut f = v.get(name).cloned().unwrap_or(Value::Null);
    // The stamped insert key is bookkeeping, not data.
    if name == "extended_properties"
        && let Some(a) = f.as_array_mut()
    {
        a.retain(|p| p.get("name").and_then(Value::as_str) != Some(KEY_PROPERTY));
    }
    f
}

/// Whether two values of a column mean the same to the API. A list item's `primary` of
/// `false` and of null do: an item is the primary one or it is not, and decoders land an
/// item without the flag either way (CardDAV: no `PREF`; Google: no `primary`
/// attribute). Without this, a desired state that leaves `primary` null would differ
/// from the landed `false` on every plan.
pub(super) fn same_value(mut a: Value, mut b: Value) -> bool {
    fn unflag(v: &mut Value) {
        if let Some(items) = v.as_array_mut() {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                if item.get("primary") == Some(&Value::Bool(false)) {
                    item.insert("primary".into(), Value::Null);
                }
            }
        }
    }
    unflag(&mut a);
    unflag(&mut b);
    a == b
}

/// The insert key of a desired row: a hash of the source, account and managed content.
pub fn insert_key(source: &str, r: &ContactRecord, managed: &[String]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(r.account.as_bytes());
    let v = as_json(r);
    for m in managed {
        h.update([0]);
        h.update(field(&v, m).to_string().as_bytes());
    }
    format!("cetl-{}", &hex::encode(h.finalize())[..20])
}

/// Validates a desired contact against the common rules and the provider's (`rules`);
/// returns the reasons.
///
/// Only what is certainly invalid is refused here; the API decides the rest (its 400 lands
/// in `writeback_results` as `invalid`). `held` is the contact as the API holds it, for an
/// update: a rule it already breaks (the API accepted it so) does not block a change, and
/// the provider's limits are not enforced against a change that does not make them worse.
pub fn validate(
    r: &ContactRecord,
    rules: &dyn Rules,
    managed: &[String],
    held: Option<&ContactRecord>,
) -> Vec<String> {
    let mut out = common_rules(r, managed);
    out.extend(rules.fields(r));
    if let Some(h) = held {
        let mut before = common_rules(h, managed);
        before.extend(rules.fields(h));
        out.retain(|p| !before.contains(p));
    }
    out.extend(rules.limits(r, held, managed));
    out
}

/// The rules every provider shares.
fn common_rules(r: &ContactRecord, managed: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let has = |c: &str| managed.iter().any(|m| m == c);
    for (i, e) in r.emails.iter().enumerate() {
        if e.address.as_deref().is_none_or(|a| !a.contains('@')) {
            out.push(format!(
                "emails[{i}].address {:?} is not an e-mail address",
                e.address.as_deref().unwrap_or("")
            ));
        }
    }
    for (i, p) in r.phones.iter().enumerate() {
        if p.number.as_deref().is_none_or(str::is_empty) {
            out.push(format!("phones[{i}] has no number"));
        }
    }
    if r.id.is_empty()
        && ![&r.display_name, &r.given_name, &r.family_name]
            .iter()
            .any(|v| v.is_some())
        && r.emails.is_empty()
        && (has("display_name") || has("emails"))
    {
        out.push("a new contact needs a name or an e-mail address".into());
    }
    out
}

/// Computes the plan for one source: each desired row judged and turned into an insert,
/// an update or an invalid row ([`Differ::row`]), then, in mirror mode, a delete for
/// every landed contact no desired row named.
pub fn diff(
    source: &str,
    rules: &dyn Rules,
    default_account: Option<&str>,
    desired: Desired,
    landed: &Landed,
    mode: Mode,
) -> Plan {
    let managed: Vec<String> = WRITABLE
        .iter()
        .filter(|c| desired.columns.contains(**c))
        .map(|c| c.to_string())
        .collect();
    let mut differ = Differ {
        source,
        rules,
        mode,
        by_id: landed
            .rows
            .iter()
            .map(|r| ((r.account.clone(), r.id.clone()), r))
            .collect(),
        keys: &landed.keys,
        plan: Plan {
            source: source.into(),
            landed: landed.count,
            managed: managed.clone(),
            ..Default::default()
        },
        managed,
        seen: HashSet::new(),
        insert_keys: HashSet::new(),
    };
    // The desired rows move into the operations: a plan holds each once.
    for (row, mut d) in desired.rows.into_iter().enumerate() {
        d.source = source.into();
        if d.account.is_empty() {
            d.account = default_account.unwrap_or_default().to_string();
        }
        differ.row(row, d);
    }
    if mode == Mode::Mirror {
        differ.deletes(&landed.rows);
    }
    differ.plan
}

/// The state of one diff: what it compares with, and the plan it builds.
struct Differ<'a> {
    source: &'a str,
    rules: &'a dyn Rules,
    mode: Mode,
    /// The columns the desired state has that write-back writes.
    managed: Vec<String>,
    /// The landed contacts by (account, id).
    by_id: HashMap<(String, String), &'a ContactRecord>,
    /// Every insert key stamped on a landed contact.
    keys: &'a HashSet<String>,
    plan: Plan,
    /// The landed contacts a desired row named (mirror mode deletes the rest).
    seen: HashSet<(String, String)>,
    /// The insert keys of this plan (a desired row twice is inserted once).
    insert_keys: HashSet<String>,
}

/// A desired row's verdict: to be sent with these warnings, or invalid for this reason.
type Verdict = std::result::Result<Vec<String>, String>;

impl<'a> Differ<'a> {
    /// One desired row (its account filled in): an operation, an invalid row, or
    /// nothing (unchanged, or an insert already applied).
    fn row(&mut self, row: usize, d: ContactRecord) {
        let about = |reason: String| Invalid {
            row,
            account: d.account.clone(),
            id: (!d.id.is_empty()).then(|| d.id.clone()),
            reason,
        };
        if d.account.is_empty() {
            let inv = about("no account: add an `account` column".into());
            self.plan.invalid.push(inv);
            return;
        }
        let landed = self.landed(&d);
        let warnings = match self.judge(&d, landed) {
            Ok(reasons) => reasons.into_iter().map(about).collect(),
            Err(reason) => {
                self.plan.invalid.push(about(reason));
                return;
            }
        };
        let invalid = if d.id.is_empty() {
            self.insert(d, warnings)
        } else {
            self.update(d, landed, warnings)
        };
        if let Some(reason) = invalid {
            self.plan.invalid.push(Invalid { row, ..reason });
        }
    }

    /// The landed contact a desired row with an id names.
    fn landed(&self, d: &ContactRecord) -> Option<&'a ContactRecord> {
        if d.id.is_empty() {
            return None;
        }
        self.by_id.get(&(d.account.clone(), d.id.clone())).copied()
    }

    /// Judges a desired row on the contact it produces (landed plus the managed
    /// columns): its warnings, or why it is invalid. A row based on another version
    /// than the landed one is a conflict before any local rule is asked (the rules would
    /// judge someone else's version): it is sent under its own etag, and the API's 412
    /// says so.
    fn judge(&self, d: &ContactRecord, landed: Option<&ContactRecord>) -> Verdict {
        if let Some(stale) = landed.and_then(|l| stale(d, l)) {
            return Ok(vec![stale]);
        }
        let subject = match landed {
            Some(l) => {
                let mut m = l.clone();
                merge_managed(&mut m, d, &self.managed);
                m
            }
            None => d.clone(),
        };
        let problems = validate(&subject, self.rules, &self.managed, landed);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(self.rules.warnings(&subject, landed, &self.managed))
    }

    /// A desired row without id: an insert, unless its key has landed or is already in
    /// the plan. Returns the invalid row (its `row` unset) when the mode does not insert.
    fn insert(&mut self, d: ContactRecord, warnings: Vec<Invalid>) -> Option<Invalid> {
        if self.mode == Mode::Update {
            return Some(invalid_of(
                &d,
                "a row without id is an insert, and --mode update does not insert".into(),
            ));
        }
        let key = insert_key(self.source, &d, &self.managed);
        if self.keys.contains(&key) || !self.insert_keys.insert(key.clone()) {
            self.plan.already_applied += 1;
            return None;
        }
        self.plan.warnings.extend(warnings);
        self.plan.ops.push(Op {
            index: self.plan.ops.len(),
            account: d.account.clone(),
            key,
            action: Action::Insert { desired: d },
        });
        None
    }

    /// A desired row with an id: an update of the columns that differ from the landed
    /// contact, conditional on the version the row was based on. Returns the invalid
    /// row (its `row` unset) when no landed contact has the id.
    fn update(
        &mut self,
        d: ContactRecord,
        landed: Option<&ContactRecord>,
        warnings: Vec<Invalid>,
    ) -> Option<Invalid> {
        let Some(l) = landed else {
            let reason = format!(
                "no landed contact {}/{}: it was deleted, or the id is wrong",
                d.account, d.id
            );
            return Some(invalid_of(&d, reason));
        };
        self.seen.insert((d.account.clone(), d.id.clone()));
        let (dj, lj) = (as_json(&d), as_json(l));
        let changed: Vec<String> = self
            .managed
            .iter()
            .filter(|m| !same_value(field(&dj, m), field(&lj, m)))
            .cloned()
            .collect();
        if changed.is_empty() {
            self.plan.unchanged += 1;
            return None;
        }
        let etag = d
            .etag
            .clone()
            .filter(|e| !e.is_empty())
            .or_else(|| l.etag.clone());
        self.plan.warnings.extend(warnings);
        self.plan.ops.push(Op {
            index: self.plan.ops.len(),
            account: d.account.clone(),
            key: format!("{}/{}", d.account, d.id),
            action: Action::Update {
                id: d.id.clone(),
                etag,
                desired: d,
                landed: l.clone(),
                changed,
            },
        });
        None
    }

    /// Mirror mode: a delete for every landed contact no desired row named.
    fn deletes(&mut self, landed: &[ContactRecord]) {
        for l in landed {
            if !self.seen.contains(&(l.account.clone(), l.id.clone())) {
                self.plan.ops.push(Op {
                    index: self.plan.ops.len(),
                    account: l.account.clone(),
                    key: format!("{}/{}", l.account, l.id),
                    action: Action::Delete {
                        id: l.id.clone(),
                        etag: l.etag.clone(),
                        landed: l.clone(),
                    },
                });
            }
        }
    }
}

/// The warning of a desired row whose etag is not the landed one's, if it is so.
fn stale(d: &ContactRecord, l: &ContactRecord) -> Option<String> {
    let e = d.etag.as_deref().filter(|e| !e.is_empty())?;
    (Some(e) != l.etag.as_deref()).then(|| {
        format!(
            "etag {e} is not the landed {}: changed by someone else since the desired state was read; the API will answer conflict (412) unless --force",
            l.etag.as_deref().unwrap_or("(none)")
        )
    })
}

/// An invalid row of desired row `d`, its position filled in by [`Differ::row`].
fn invalid_of(d: &ContactRecord, reason: String) -> Invalid {
    Invalid {
        row: 0,
        account: d.account.clone(),
        id: (!d.id.is_empty()).then(|| d.id.clone()),
        reason,
    }
}
