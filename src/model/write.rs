//! Write-back operations and their outcomes. An operation carries exactly the data its
//! kind needs (an insert has no landed contact, a delete no desired one), so no part
//! unwraps an `Option` that "must" be set.

use super::schema::{ContactRecord, ExtendedProperty};

/// Name of the idempotency key stamped on created contacts (Google: an extended property;
/// Aurinko: a native property).
pub const KEY_PROPERTY: &str = "contacts-etl-key";

/// Columns the reverse sink can write.
pub const WRITABLE: &[&str] = &[
    "display_name",
    "given_name",
    "family_name",
    "middle_name",
    "prefix",
    "suffix",
    "nickname",
    "file_as",
    "emails",
    "phones",
    "addresses",
    "ims",
    "organizations",
    "websites",
    "relations",
    "events",
    "notes",
    "birthday",
    "groups",
    "extended_properties",
];

/// The extended property that stamps an insert key.
pub fn key_property(key: &str) -> ExtendedProperty {
    ExtendedProperty {
        name: Some(KEY_PROPERTY.into()),
        value: Some(key.into()),
        xml: None,
    }
}

/// The position in `landed` of the item equal, in every modelled value, to item `i` of
/// `desired`: a write-back keeps such an item as the API holds it (unmodelled parts
/// included) instead of rebuilding it from the model.
pub fn landed_position<T: PartialEq>(desired: &[T], landed: &[T], i: usize) -> Option<usize> {
    let x = desired.get(i)?;
    landed.iter().position(|y| y == x)
}

/// Copies the managed columns of `desired` onto `target`.
pub fn merge_managed(target: &mut ContactRecord, desired: &ContactRecord, managed: &[String]) {
    // Both sides are records of one type: serializing either cannot fail, and a field
    // copied from one fits the other, so the unwraps below never see input they refuse.
    let mut t = serde_json::to_value(&*target).unwrap();
    let d = serde_json::to_value(desired).unwrap();
    for m in managed {
        t[m.as_str()] = d[m.as_str()].clone();
    }
    *target = serde_json::from_value(t).unwrap();
}

/// An operation's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Insert,
    Update,
    Delete,
}

impl OpKind {
    /// The name used in `writeback_results.op`.
    pub fn as_str(&self) -> &'static str {
        match self {
            OpKind::Insert => "insert",
            OpKind::Update => "update",
            OpKind::Delete => "delete",
        }
    }
}

/// What an operation does, with the data it needs.
// An update holds two records, the others one: a plan's operations live in one vector,
// and a box per operation would cost more than the space it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Action {
    /// Create `desired`, stamped with the operation's key.
    Insert { desired: ContactRecord },
    /// Change the managed columns of `landed` to those of `desired`.
    Update {
        id: String,
        /// The etag the write is conditional on.
        etag: Option<String>,
        desired: ContactRecord,
        landed: ContactRecord,
        /// Managed columns whose value changes.
        changed: Vec<String>,
    },
    /// Delete `landed`.
    Delete {
        id: String,
        /// The etag the write is conditional on.
        etag: Option<String>,
        landed: ContactRecord,
    },
}

/// One planned operation.
#[derive(Debug, Clone)]
pub struct Op {
    /// Its index in the plan (the `op_index` of its result).
    pub index: usize,
    pub account: String,
    /// The insert's idempotency key, or `account/id`.
    pub key: String,
    pub action: Action,
}

impl Op {
    /// The operation's kind.
    pub fn kind(&self) -> OpKind {
        match self.action {
            Action::Insert { .. } => OpKind::Insert,
            Action::Update { .. } => OpKind::Update,
            Action::Delete { .. } => OpKind::Delete,
        }
    }
    /// The contact id (none for inserts).
    pub fn id(&self) -> Option<&str> {
        match &self.action {
            Action::Insert { .. } => None,
            Action::Update { id, .. } | Action::Delete { id, .. } => Some(id),
        }
    }
    /// The desired contact (inserts and updates).
    pub fn desired(&self) -> Option<&ContactRecord> {
        match &self.action {
            Action::Insert { desired } | Action::Update { desired, .. } => Some(desired),
            Action::Delete { .. } => None,
        }
    }
    /// The landed contact (updates and deletes).
    pub fn landed(&self) -> Option<&ContactRecord> {
        match &self.action {
            Action::Insert { .. } => None,
            Action::Update { landed, .. } | Action::Delete { landed, .. } => Some(landed),
        }
    }
    /// The managed columns an update changes (none for inserts and deletes).
    pub fn changed(&self) -> &[String] {
        match &self.action {
            Action::Update { changed, .. } => changed,
            _ => &[],
        }
    }
}

/// How a write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Applied (a delete of a contact already gone counts, with a reason).
    Ok,
    /// The contact changed since it was read (412/409): nothing was overwritten.
    Conflict,
    /// The API refused the write as invalid (400): its reason says why.
    Invalid,
    /// Anything else: rerunning `apply` retries it.
    #[default]
    Failed,
}

impl Outcome {
    /// The name used in `writeback_results.result`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Conflict => "conflict",
            Outcome::Invalid => "invalid",
            Outcome::Failed => "failed",
        }
    }
}

/// The `writeback_results.result` of an operation sent and not yet answered: each group
/// of writes is recorded so before it goes out, and replaced by its results after. A
/// process killed in between leaves such rows for the next apply or sync to resolve
/// (`plan::resolve`).
pub const SENT: &str = "sent";

/// The `writeback_results.result` of a `sent` row the resolution could not interpret:
/// whether the API applied the write is not known, and a person checks it.
pub const UNKNOWN: &str = "unknown";

/// The outcome of one write operation.
#[derive(Debug, Clone, Default)]
pub struct OpResult {
    /// The operation's index in the plan.
    pub index: usize,
    /// HTTP (or batch) status.
    pub http_status: Option<u16>,
    /// How it ended.
    pub outcome: Outcome,
    /// The status reason.
    pub reason: Option<String>,
    /// The contact id (new for inserts).
    pub id: Option<String>,
    /// The contact's etag after the write.
    pub new_etag: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
}

impl OpResult {
    /// A failed operation.
    pub fn failed(index: usize, status: Option<u16>, error: String) -> OpResult {
        OpResult {
            index,
            http_status: status,
            outcome: Outcome::Failed,
            error: Some(error),
            ..Default::default()
        }
    }
}

/// A record whose column `column` holds `payload` in every text it has (one item of
/// each list), for the property-injection tests of the writers.
#[cfg(test)]
pub(crate) fn poisoned(column: &str, payload: &str) -> ContactRecord {
    use crate::model::schema::*;
    fn fill(v: &mut serde_json::Value, payload: &str) {
        match v {
            serde_json::Value::Null | serde_json::Value::String(_) => {
                *v = serde_json::Value::String(payload.into())
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| fill(x, payload)),
            serde_json::Value::Object(o) => o
                .iter_mut()
                .filter(|(k, _)| k.as_str() != "primary")
                .for_each(|(_, x)| fill(x, payload)),
            _ => {}
        }
    }
    let template = ContactRecord {
        id: "c1".into(),
        display_name: Some("Ada".into()),
        emails: vec![Email::default()],
        phones: vec![Phone::default()],
        addresses: vec![Address::default()],
        ims: vec![Im::default()],
        organizations: vec![Organization::default()],
        websites: vec![Website::default()],
        relations: vec![Relation::default()],
        events: vec![Event::default()],
        groups: vec![String::new()],
        extended_properties: vec![ExtendedProperty::default()],
        ..Default::default()
    };
    let mut t = serde_json::to_value(&template).unwrap();
    let mut keep = ContactRecord {
        id: "c1".into(),
        display_name: Some("Ada".into()),
        ..Default::default()
    };
    fill(&mut t[column], payload);
    let mut k = serde_json::to_value(&keep).unwrap();
    k[column] = t[column].clone();
    keep = serde_json::from_value(k).unwrap();
    keep
}

/// Whether `key` is an insert key as `plan::insert_key` makes one: `cetl-` and 20
/// lower-case hex digits (so it is safe as a resource name and in a URL). Providers
/// check it before a key becomes part of a URL.
pub fn is_insert_key(key: &str) -> bool {
    key.strip_prefix("cetl-").is_some_and(|h| {
        h.len() == 20
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What a write would carry that its API cannot hold, by the provider's `unwritable`
/// check: an insert's values; an update's written values less the problems the
/// contact already had as held (they do not block a change elsewhere); a delete, none.
/// The id is the contact's (none for an insert).
pub fn write_problems(
    op: &Op,
    unwritable: impl Fn(&ContactRecord) -> Vec<String>,
) -> (Vec<String>, Option<String>) {
    match &op.action {
        Action::Insert { desired } => (unwritable(desired), None),
        Action::Update {
            id,
            desired,
            landed,
            ..
        } => {
            let mut p = unwritable(desired);
            if !p.is_empty() {
                let held = unwritable(landed);
                p.retain(|x| !held.contains(x));
            }
            (p, Some(id.clone()))
        }
        Action::Delete { id, .. } => (Vec::new(), Some(id.clone())),
    }
}

/// The `invalid` result of a write refused before it is sent, naming each problem;
/// `None` when there is none and the write can go.
pub fn refused_result(op: &Op, id: Option<String>, problems: &[String]) -> Option<OpResult> {
    if problems.is_empty() {
        return None;
    }
    let why = format!(
        "{} {}: {}",
        op.account,
        op.id().unwrap_or(&op.key),
        problems.join("; ")
    );
    Some(OpResult {
        index: op.index,
        outcome: Outcome::Invalid,
        id,
        reason: Some(why.clone()),
        error: Some(why),
        ..Default::default()
    })
}
