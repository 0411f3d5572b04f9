//! Aurinko writes: POST creates (with the insert key in `nativeProperties`), PATCH sends
//! the changed top-level fields, each whole as held with the changes merged in, with
//! `If-Match`, DELETE; bounded concurrency. On 412
//! the row is a conflict; with `force`, the contact is read again and the change re-applied
//! on the fresh etag.

use serde_json::{Map, Value, json};

use super::AurinkoSource;
use crate::error::Result;
use crate::http::{HttpResponse, Metrics};
use crate::model::schema::ContactRecord;
use crate::model::write::{Action, KEY_PROPERTY, Op, OpKind, OpResult, Outcome};

fn opt(v: &Option<String>) -> Value {
    v.as_ref().map(|s| json!(s)).unwrap_or(Value::Null)
}

/// The Aurinko top-level field a schema column is written through.
fn top_level(column: &str) -> Option<&'static str> {
    Some(match column {
        "display_name" | "given_name" | "family_name" | "middle_name" | "prefix" | "suffix" => {
            "name"
        }
        "nickname" => "nickName",
        "file_as" => "fileAs",
        "notes" => "notes",
        "birthday" => "birthday",
        "groups" => "keywords",
        "emails" => "emailAddresses",
        "phones" => "phoneNumbers",
        "addresses" => "addresses",
        "organizations" => "company",
        "websites" => "urls",
        "relations" => "relations",
        _ => return None,
    })
}

fn render(field: &str, r: &ContactRecord) -> Value {
    match field {
        "name" => {
            let mut m = Map::new();
            for (k, v) in [("displayName", &r.display_name), ("givenName", &r.given_name), ("middleName", &r.middle_name), ("familyName", &r.family_name), ("prefix", &r.prefix), ("suffix", &r.suffix)] {
                if v.is_some() {
                    m.insert(k.into(), opt(v));
                }
            }
            Value::Object(m)
        }
        "nickName" => opt(&r.nickname),
        "fileAs" => opt(&r.file_as),
        "notes" => opt(&r.notes),
        "birthday" => opt(&r.birthday),
        "keywords" => json!(r.groups),
        "emailAddresses" => r.emails.iter().map(|e| json!({"address": e.address, "name": e.display_name, "type": e.kind})).map(strip_nulls).collect(),
        "phoneNumbers" => r.phones.iter().map(|p| json!({"number": p.number, "type": p.kind})).map(strip_nulls).collect(),
        "addresses" => r.addresses.iter().map(|a| json!({"street": a.street, "poBox": a.po_box, "city": a.city, "state": a.region, "postalCode": a.postcode, "country": a.country, "type": a.kind})).map(strip_nulls).collect(),
        "company" => r.organizations.first().map(|o| strip_nulls(json!({"name": o.name, "jobTitle": o.title, "department": o.department}))).unwrap_or(Value::Null),
        "urls" => r.websites.iter().map(|w| json!({"href": w.href, "type": w.kind})).map(strip_nulls).collect(),
        "relations" => r.relations.iter().map(|x| json!({"name": x.name, "type": x.kind})).map(strip_nulls).collect(),
        _ => Value::Null,
    }
}

fn strip_nulls(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    v
}

/// The body of a new contact with the given columns (without the insert key).
pub fn insert_body(r: &ContactRecord, columns: &[String]) -> Map<String, Value> {
    body(r, columns)
}

fn body(r: &ContactRecord, columns: &[String]) -> Map<String, Value> {
    let mut m = Map::new();
    for c in columns {
        if let Some(f) = top_level(c) {
            m.insert(f.into(), render(f, r));
        }
    }
    m
}

/// The body of an update: every top-level field a changed column is written through, each
/// sent whole (Aurinko's PATCH replaces a top-level field wholesale), built from the field
/// as the API holds it (`landed.raw`) with only the changed parts replaced. So the parts of
/// `name` or `company` the desired state does not name, and the fields of list items the
/// schema does not model, stay as they are: a list item whose modelled values are unchanged
/// is sent exactly as held.
fn update_body(
    landed: &ContactRecord,
    d: &ContactRecord,
    changed: &[String],
) -> Map<String, Value> {
    let held: Map<String, Value> = landed
        .raw
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default();
    let held_obj = |f: &str| {
        held.get(f)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let set = |m: &mut Map<String, Value>, k: &str, v: &Option<String>| match v {
        Some(v) => {
            m.insert(k.into(), json!(v));
        }
        None => {
            m.remove(k);
        }
    };
    let mut out = Map::new();
    for c in changed {
        let Some(f) = top_level(c) else { continue };
        let v = match f {
            "name" => {
                let mut m = out
                    .get("name")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_else(|| held_obj("name"));
                let (k, v) = match c.as_str() {
                    "display_name" => ("displayName", &d.display_name),
                    "given_name" => ("givenName", &d.given_name),
                    "middle_name" => ("middleName", &d.middle_name),
                    "family_name" => ("familyName", &d.family_name),
                    "prefix" => ("prefix", &d.prefix),
                    _ => ("suffix", &d.suffix),
                };
                set(&mut m, k, v);
                Value::Object(m)
            }
            "company" => match d.organizations.first() {
                None => Value::Null,
                Some(o) => {
                    let mut m = held_obj("company");
                    set(&mut m, "name", &o.name);
                    set(&mut m, "jobTitle", &o.title);
                    set(&mut m, "department", &o.department);
                    Value::Object(m)
                }
            },
            _ => {
                let new = render(f, d);
                let held_items = held.get(f).and_then(Value::as_array);
                match new {
                    Value::Array(items) => Value::Array(
                        items
                            .into_iter()
                            .enumerate()
                            .map(|(i, item)| {
                                same_item(f, d, landed, i)
                                    .and_then(|j| held_items?.get(j).cloned())
                                    .unwrap_or(item)
                            })
                            .collect(),
                    ),
                    other => other,
                }
            }
        };
        out.insert(f.into(), v);
    }
    out
}

/// The position in the landed contact of the item that equals item `i` of the desired
/// contact's list `field`, in every modelled value.
fn same_item(field: &str, d: &ContactRecord, l: &ContactRecord, i: usize) -> Option<usize> {
    use crate::model::write::landed_position as find;
    match field {
        "emailAddresses" => find(&d.emails, &l.emails, i),
        "phoneNumbers" => find(&d.phones, &l.phones, i),
        "addresses" => find(&d.addresses, &l.addresses, i),
        "urls" => find(&d.websites, &l.websites, i),
        "relations" => find(&d.relations, &l.relations, i),
        _ => None,
    }
}

fn outcome(op: &Op, resp: &HttpResponse) -> OpResult {
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let mut r = OpResult {
        index: op.index,
        http_status: Some(resp.status),
        id: v
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(op.id().map(str::to_string)),
        new_etag: v.get("etag").and_then(Value::as_str).map(str::to_string),
        ..Default::default()
    };
    r.outcome = match resp.status {
        200..=299 => Outcome::Ok,
        412 => Outcome::Conflict,
        // The API's own validation decides what the local checks left to it.
        400 | 422 => Outcome::Invalid,
        404 if op.kind() == OpKind::Delete => {
            r.reason = Some("already deleted".into());
            Outcome::Ok
        }
        _ => Outcome::Failed,
    };
    if r.outcome != Outcome::Ok {
        r.error = Some(format!("HTTP {}: {}", resp.status, resp.describe()));
        r.reason = Some(resp.describe());
    }
    r
}

impl AurinkoSource {
    /// Applies operations with bounded concurrency.
    pub async fn apply<'a>(
        &'a self,
        ops: &'a [Op],
        managed: &'a [String],
        force: bool,
        metrics: &'a Metrics,
    ) -> Result<Vec<OpResult>> {
        Ok(crate::providers::apply_each(ops, self.concurrency, |op| {
            Box::pin(self.apply_one(op, managed, force, metrics))
        })
        .await)
    }

    async fn apply_one(
        &self,
        op: &Op,
        managed: &[String],
        force: bool,
        metrics: &Metrics,
    ) -> Result<OpResult> {
        let ctx = crate::providers::RunContext {
            run_id: String::new(),
            synced_at_us: 0,
            metrics: std::sync::Arc::new(Metrics::default()),
            progress: None,
        };
        let what = format!(
            "{} account {}: {} {}",
            self.name,
            op.account,
            op.kind().as_str(),
            op.id().unwrap_or("(new)")
        );
        let result = match &op.action {
            Action::Insert { desired } => self.insert(op, desired, managed, &what, &ctx).await?,
            Action::Update {
                id,
                etag,
                desired,
                landed,
                changed,
            } => {
                let b = Value::Object(update_body(landed, desired, changed));
                self.update(op, id, etag.as_deref(), b, force, &what, &ctx)
                    .await?
            }
            Action::Delete { id, .. } => {
                let url = format!("{}/v1/contacts/{}", self.base_url, urlencode(id));
                let resp = self
                    .write(
                        &op.account,
                        &what,
                        &ctx,
                        reqwest::Method::DELETE,
                        &url,
                        None,
                        None,
                    )
                    .await?;
                outcome(op, &resp)
            }
        };
        let (requests, retries, bytes, pages) = ctx.metrics.snapshot();
        use std::sync::atomic::Ordering::Relaxed;
        metrics.requests.fetch_add(requests, Relaxed);
        metrics.retries.fetch_add(retries, Relaxed);
        metrics.bytes.fetch_add(bytes, Relaxed);
        metrics.pages.fetch_add(pages, Relaxed);
        Ok(result)
    }

    /// An insert: the desired contact's managed fields, its native properties and the
    /// plan's idempotency key, POSTed.
    async fn insert(
        &self,
        op: &Op,
        desired: &ContactRecord,
        managed: &[String],
        what: &str,
        ctx: &crate::providers::RunContext,
    ) -> Result<OpResult> {
        let mut b = body(desired, managed);
        let mut native: Map<String, Value> = desired
            .native
            .as_deref()
            .and_then(|n| serde_json::from_str(n).ok())
            .unwrap_or_default();
        native.insert(KEY_PROPERTY.into(), json!(op.key));
        b.insert("nativeProperties".into(), Value::Object(native));
        let url = format!("{}/v1/contacts", self.base_url);
        let resp = self
            .write(
                &op.account,
                what,
                ctx,
                reqwest::Method::POST,
                &url,
                Some(Value::Object(b)),
                None,
            )
            .await?;
        Ok(outcome(op, &resp))
    }

    /// An update: the changed fields PATCHed under the etag the change is based on; with
    /// `force`, a 412 reads the current version and PATCHes again under its etag.
    #[allow(clippy::too_many_arguments)]
    async fn update(
        &self,
        op: &Op,
        id: &str,
        etag: Option<&str>,
        b: Value,
        force: bool,
        what: &str,
        ctx: &crate::providers::RunContext,
    ) -> Result<OpResult> {
        let url = format!("{}/v1/contacts/{}", self.base_url, urlencode(id));
        let url = url.as_str();
        let patch = |b: Value, etag: Option<String>| async move {
            self.write(
                &op.account,
                what,
                ctx,
                reqwest::Method::PATCH,
                url,
                Some(b),
                etag.as_deref(),
            )
            .await
        };
        let resp = patch(b.clone(), etag.map(str::to_string)).await?;
        if resp.status != 412 || !force {
            return Ok(outcome(op, &resp));
        }
        // Read the current version and apply the change on top of it.
        let cur = self
            .write(
                &op.account,
                what,
                ctx,
                reqwest::Method::GET,
                url,
                None,
                None,
            )
            .await?;
        let etag = serde_json::from_slice::<Value>(&cur.body)
            .ok()
            .and_then(|v| v.get("etag").and_then(Value::as_str).map(str::to_string));
        let resp = patch(b, etag).await?;
        Ok(outcome(op, &resp))
    }

    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        account: &str,
        what: &str,
        ctx: &crate::providers::RunContext,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Result<HttpResponse> {
        let _ = self.authorize(account, self.http.client().get(url))?;
        // Creates and conditional updates are not sent twice after a lost reply; reads and
        // deletes (a second delete answers 404, "already deleted") are.
        let write = method == reqwest::Method::POST || method == reqwest::Method::PATCH;
        let build = |c: &reqwest::Client| {
            let mut rb = self
                .authorize(account, c.request(method.clone(), url))
                .expect("checked above");
            if let Some(b) = &body {
                rb = rb
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_string());
            }
            if let Some(e) = if_match {
                rb = rb.header(reqwest::header::IF_MATCH, e);
            }
            rb
        };
        let resp = if write {
            self.http
                .send_write(what, &ctx.metrics, 16 << 20, build)
                .await?
        } else {
            self.http.send(what, &ctx.metrics, 16 << 20, build).await?
        };
        if resp.status == 401 {
            return Err(crate::Error::auth(format!(
                "{what}: the API refused the account's credentials (401 {})",
                resp.describe()
            )));
        }
        Ok(resp)
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::write::{WRITABLE, poisoned};

    /// JSON bodies are built by serde: a quote, brace, CR/LF or control character in any
    /// writable column stays inside its string; the body parses back with the same fields
    /// and the value unchanged.
    #[test]
    fn no_value_of_any_writable_column_leaves_its_string() {
        let payload =
            "x\",\"emailAddresses\":[{\"address\":\"injected@evil.example\"}],\"y\":\"\r\n\u{1}}{";
        for column in WRITABLE {
            let managed = vec![column.to_string()];
            let plain = insert_body(&poisoned(column, "x"), &managed);
            let body = insert_body(&poisoned(column, payload), &managed);
            let text = serde_json::to_string(&body).unwrap();
            let back: Map<String, Value> = serde_json::from_str(&text).unwrap();
            assert_eq!(
                back.keys().collect::<Vec<_>>(),
                plain.keys().collect::<Vec<_>>(),
                "{column}: {text}"
            );
            assert_eq!(back, body, "{column}");
            if let Some(f) = top_level(column) {
                assert!(
                    text.contains(&serde_json::to_string(payload).unwrap()[1..]),
                    "{column} ({f}) holds the value: {text}"
                );
            }
        }
    }
}
