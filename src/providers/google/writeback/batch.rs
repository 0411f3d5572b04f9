//! The batch: operations sent as GData batch feeds of at most [`BATCH_SIZE`], each
//! result matched to its operation by `batch:id`, else `atom:id`, else position, and the
//! unprocessed tail sent again after `batch:interrupted`.

use std::collections::HashMap;

use quick_xml::events::Event;
use quick_xml::reader::NsReader;

use super::merge::{atom_id, ns_eq, update_entry};
use super::render::{esc, insert_entry, unwritable};
use super::{ATOM, BATCH, BATCH_SIZE, GD, GoogleSource, MAX_RESUBMITS};
use crate::error::{Context, Error, Kind, Result};
use crate::http::Metrics;
use crate::model::write::{Action, Op, OpKind, OpResult, Outcome, merge_managed};

/// One result entry of a batch response.
#[derive(Debug, Default, Clone)]
pub struct BatchResult {
    pub batch_id: Option<String>,
    pub atom_id: Option<String>,
    pub code: Option<u16>,
    pub reason: Option<String>,
    pub etag: Option<String>,
}

/// Parses a batch response: the result entries and whether it was interrupted.
pub fn parse_batch_response(body: &[u8]) -> Result<(Vec<BatchResult>, Option<String>)> {
    let text = std::str::from_utf8(body).context(Kind::Decode, "batch response is not UTF-8")?;
    let mut r = NsReader::from_str(text);
    let mut out = Vec::new();
    let mut cur: Option<BatchResult> = None;
    let mut interrupted = None;
    let mut depth = 0;
    let mut field: Option<&str> = None;
    let mut saw_feed = false;
    let decoder = r.decoder();
    loop {
        let (res, ev) = r
            .read_resolved_event()
            .context(Kind::Decode, "malformed batch response")?;
        match ev {
            Event::Start(ref s) | Event::Empty(ref s) => {
                let empty = matches!(ev, Event::Empty(_));
                let level = depth + 1;
                if !empty {
                    depth += 1;
                }
                // Before quick-xml's 16-bit nesting counter can overflow on a hostile answer.
                if depth > crate::providers::google::decode::MAX_DEPTH {
                    return Err(Error::decode(format!(
                        "malformed batch response: elements nested deeper than {}",
                        crate::providers::google::decode::MAX_DEPTH
                    )));
                }
                let local = s.local_name();
                let attr = |name: &[u8]| {
                    s.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == name)
                        .and_then(|a| a.decode_and_unescape_value(decoder).ok())
                        .map(|v| v.into_owned())
                };
                if level == 1 {
                    saw_feed = ns_eq(&res, ATOM) && local.as_ref() == b"feed";
                    if !saw_feed {
                        return Err(Error::decode(format!(
                            "expected a batch <feed>, got: {}",
                            crate::providers::google::describe(body)
                        )));
                    }
                } else if level == 2 && ns_eq(&res, ATOM) && local.as_ref() == b"entry" {
                    let etag = s
                        .attributes()
                        .flatten()
                        .find(|a| a.key.as_ref().ends_with(b":etag"))
                        .and_then(|a| a.decode_and_unescape_value(decoder).ok())
                        .map(|v| v.into_owned());
                    cur = Some(BatchResult {
                        etag,
                        ..Default::default()
                    });
                } else if level == 2 && ns_eq(&res, BATCH) && local.as_ref() == b"interrupted" {
                    interrupted = Some(format!(
                        "reason={:?} parsed={:?} success={:?} failures={:?}",
                        attr(b"reason").unwrap_or_default(),
                        attr(b"parsed").unwrap_or_default(),
                        attr(b"success").unwrap_or_default(),
                        attr(b"failures")
                            .or_else(|| attr(b"error"))
                            .unwrap_or_default()
                    ));
                } else if level == 3
                    && let Some(c) = cur.as_mut()
                {
                    if ns_eq(&res, BATCH) && local.as_ref() == b"status" {
                        c.code = attr(b"code").and_then(|v| v.parse().ok());
                        c.reason = attr(b"reason");
                    } else if ns_eq(&res, BATCH) && local.as_ref() == b"id" {
                        field = Some("bid");
                    } else if ns_eq(&res, ATOM) && local.as_ref() == b"id" {
                        field = Some("aid");
                    }
                }
            }
            Event::Text(t) => {
                if let (Some(f), Some(c)) = (field, cur.as_mut()) {
                    let v = t
                        .decode()
                        .context(Kind::Decode, "malformed batch response")?
                        .trim()
                        .to_string();
                    if f == "bid" {
                        c.batch_id = Some(v);
                    } else {
                        c.atom_id = Some(
                            v.trim_end_matches('/')
                                .rsplit('/')
                                .next()
                                .unwrap_or(&v)
                                .to_string(),
                        );
                    }
                }
            }
            Event::End(_) => {
                if depth == 2
                    && let Some(c) = cur.take()
                {
                    out.push(c);
                }
                field = None;
                depth -= 1;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_feed {
        return Err(Error::decode("empty batch response"));
    }
    Ok((out, interrupted))
}

impl GoogleSource {
    /// Applies operations in batches of at most 100. `force` sends `If-Match: *`.
    pub async fn apply(
        &self,
        ops: &[Op],
        managed: &[String],
        force: bool,
        metrics: &Metrics,
    ) -> Result<Vec<OpResult>> {
        let mut results: HashMap<usize, OpResult> = HashMap::new();
        for chunk in ops.chunks(BATCH_SIZE) {
            self.apply_batch(chunk, managed, force, metrics, &mut results)
                .await?;
        }
        let mut out: Vec<OpResult> = results.into_values().collect();
        out.sort_by_key(|r| r.index);
        Ok(out)
    }

    /// One batch of at most [`BATCH_SIZE`] operations: sent, its results matched, and the
    /// unprocessed tail sent again after `batch:interrupted`, at most [`MAX_RESUBMITS`]
    /// times. Every operation of `chunk` ends with a result in `results`.
    async fn apply_batch(
        &self,
        chunk: &[Op],
        managed: &[String],
        force: bool,
        metrics: &Metrics,
        results: &mut HashMap<usize, OpResult>,
    ) -> Result<()> {
        let url = format!("{}/batch", self.feed_url());
        let mut pending: Vec<&Op> = chunk.iter().collect();
        for round in 0..=MAX_RESUBMITS {
            let feed = self.batch_feed(&mut pending, managed, results);
            if pending.is_empty() {
                break;
            }
            let what = format!(
                "{} batch of {} operation(s) to {} (round {})",
                self.name,
                pending.len(),
                self.domain,
                round + 1
            );
            let resp = self
                .send_write_authorized(
                    &what,
                    metrics,
                    crate::providers::google::MAX_PAGE_BYTES * 4,
                    |c| {
                        let rb = c
                            .post(&url)
                            .header(
                                reqwest::header::CONTENT_TYPE,
                                "application/atom+xml; charset=UTF-8; type=feed",
                            )
                            .body(feed.clone());
                        if force {
                            rb.header(reqwest::header::IF_MATCH, "*")
                        } else {
                            rb
                        }
                    },
                )
                .await;
            let failure = match resp {
                Ok(r) if r.ok() => {
                    let (entries, interrupted) = parse_batch_response(&r.body)?;
                    match_results(&pending, entries, results);
                    pending.retain(|o| !results.contains_key(&o.index));
                    if interrupted.is_some() {
                        tracing::info!(
                            what,
                            interrupted,
                            remaining = pending.len(),
                            "batch interrupted; resubmitting the unprocessed tail"
                        );
                        continue;
                    }
                    (
                        None,
                        "the batch response has no result for this operation".to_string(),
                    )
                }
                Ok(r) => (
                    Some(r.status),
                    format!("{what}: HTTP {}: {}", r.status, r.describe()),
                ),
                Err(e) => (None, e.to_string()),
            };
            for op in pending.drain(..) {
                results.insert(
                    op.index,
                    OpResult::failed(op.index, failure.0, failure.1.clone()),
                );
            }
        }
        for op in pending {
            results.entry(op.index).or_insert_with(|| {
                OpResult::failed(
                    op.index,
                    None,
                    format!("still unprocessed after {MAX_RESUBMITS} resubmissions"),
                )
            });
        }
        Ok(())
    }

    /// The batch feed of the `pending` operations. An operation whose entry cannot be
    /// built (no landed `raw`) fails here, and leaves `pending`.
    fn batch_feed(
        &self,
        pending: &mut Vec<&Op>,
        managed: &[String],
        results: &mut HashMap<usize, OpResult>,
    ) -> String {
        let mut feed = format!("<feed xmlns=\"{ATOM}\" xmlns:batch=\"{BATCH}\" xmlns:gd=\"{GD}\">");
        pending.retain(|op| {
            if let Some(r) = refused(op) {
                results.insert(op.index, r);
                return false;
            }
            self.batch_entry_in(op, managed, &mut feed, results)
        });
        feed.push_str("</feed>");
        feed
    }

    /// Adds one operation's entry to `feed`; an entry that cannot be built is the
    /// operation's failed result (false).
    fn batch_entry_in(
        &self,
        op: &Op,
        managed: &[String],
        feed: &mut String,
        results: &mut HashMap<usize, OpResult>,
    ) -> bool {
        match self.batch_entry(op, managed) {
            Ok(e) => {
                feed.push_str(&e[..e.len() - "</entry>".len()]);
                feed.push_str(&format!(
                    "<batch:id xmlns:batch=\"{BATCH}\">{}</batch:id><batch:operation xmlns:batch=\"{BATCH}\" type=\"{}\"/></entry>",
                    op.index,
                    op.kind().as_str()
                ));
                true
            }
            Err(e) => {
                results.insert(op.index, OpResult::failed(op.index, None, e.to_string()));
                false
            }
        }
    }

    /// One operation's entry, as the batch sends it (before its batch id and operation).
    fn batch_entry(&self, op: &Op, managed: &[String]) -> Result<String> {
        match &op.action {
            Action::Insert { desired } => Ok(insert_entry(desired, managed, &op.key)),
            Action::Update {
                desired,
                landed,
                changed,
                etag,
                ..
            } => {
                let mut merged = landed.clone();
                merge_managed(&mut merged, desired, managed);
                match landed.raw.as_deref() {
                    Some(raw) => update_entry(raw, &merged, changed, etag.as_deref(), Some(landed)),
                    None => Err(Error::decode(
                        "the landed contact has no raw entry; run sync --full-refresh",
                    )),
                }
            }
            Action::Delete { landed, etag, .. } => {
                let id = landed.raw.as_deref().and_then(atom_id).unwrap_or_else(|| {
                    format!(
                        "http://www.google.com/m8/feeds/contacts/{}/base/{}",
                        self.domain, landed.id
                    )
                });
                Ok(format!(
                    "<entry xmlns=\"{ATOM}\" xmlns:gd=\"{GD}\" gd:etag=\"{}\"><id>{}</id></entry>",
                    esc(etag.as_deref().unwrap_or("*")),
                    esc(&id)
                ))
            }
        }
    }
}

/// Matches a batch response's results to the pending operations: by `batch:id`, else
/// `atom:id`, else position (when a result has neither).
fn match_results(
    pending: &[&Op],
    entries: Vec<BatchResult>,
    results: &mut HashMap<usize, OpResult>,
) {
    let mut unmatched = 0;
    for (pos, b) in entries.into_iter().enumerate() {
        let op = b
            .batch_id
            .as_ref()
            .and_then(|bid| pending.iter().find(|o| o.index.to_string() == *bid))
            .or_else(|| {
                b.atom_id
                    .as_ref()
                    .and_then(|aid| pending.iter().find(|o| o.id() == Some(aid.as_str())))
            })
            .or_else(|| {
                if b.batch_id.is_none() && b.atom_id.is_none() {
                    pending.get(pos)
                } else {
                    None
                }
            });
        match op {
            Some(op) => {
                results.insert(op.index, result_of(op, &b));
            }
            None => unmatched += 1,
        }
    }
    if unmatched > 0 {
        tracing::warn!(count = unmatched, "batch results that match no operation");
    }
}

fn result_of(op: &Op, b: &BatchResult) -> OpResult {
    let code = b.code.unwrap_or(0);
    let mut r = OpResult {
        index: op.index,
        http_status: b.code,
        id: b.atom_id.clone().or(op.id().map(str::to_string)),
        reason: b.reason.clone(),
        new_etag: b.etag.clone(),
        ..Default::default()
    };
    r.outcome = match code {
        200..=299 => Outcome::Ok,
        412 | 409 => Outcome::Conflict,
        // The API's own validation decides what the local checks left to it.
        400 => Outcome::Invalid,
        404 if op.kind() == OpKind::Delete => {
            r.reason = Some("already deleted".into());
            Outcome::Ok
        }
        _ => Outcome::Failed,
    };
    if r.outcome != Outcome::Ok {
        r.error = Some(format!(
            "HTTP {code}: {}",
            b.reason.as_deref().unwrap_or("")
        ));
    }
    r
}

/// The `invalid` result of a write that would carry a value an entry cannot
/// ([`unwritable`]; a value the contact already held as it is does not count); `None` for
/// a write that can go.
pub(super) fn refused(op: &Op) -> Option<OpResult> {
    // A delete carries no value.
    if matches!(op.action, Action::Delete { .. }) {
        return None;
    }
    let (problems, id) = crate::model::write::write_problems(op, unwritable);
    crate::model::write::refused_result(op, id, &problems)
}
