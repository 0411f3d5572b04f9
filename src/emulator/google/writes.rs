//! Writes as the API takes them: one entry inserted, updated or deleted (with its etag
//! checked), a batch feed of them, each checked by the API's rules and limits.

use super::*;

/// A single update (PUT of one entry).
pub(super) fn update_one(
    store: &mut GoogleStore,
    id: &str,
    projection: &Projection,
    headers: &HeaderMap,
    body: &Bytes,
    now: i64,
) -> Response {
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match parse_entry(body) {
        Ok(entry) => match update(store, id, projection, &entry, if_match.as_deref(), now) {
            Ok(()) => atom(
                StatusCode::OK,
                "entry",
                store.standalone_entry(id, projection),
            ),
            Err(OpError(st, code, reason)) => op_error_response(st, code, &reason),
        },
        Err(e) => text_error(StatusCode::BAD_REQUEST, &e),
    }
}

pub(super) fn op_error_response(st: StatusCode, code: &str, reason: &str) -> Response {
    if st == StatusCode::BAD_REQUEST {
        text_error(st, reason)
    } else {
        gdata_error(st, code, reason)
    }
}

/// A failed operation: status, GData code, reason.
pub(super) struct OpError(
    pub(super) StatusCode,
    pub(super) &'static str,
    pub(super) String,
);

pub(super) fn parse_entry(body: &[u8]) -> Result<El, String> {
    let el = xml::parse(body).map_err(|e| format!("[Line 1, Column 0] Parse error: {e}"))?;
    if !el.is(ATOM, "entry") {
        return Err(format!(
            "[Line 1, Column 0] Expected an Atom entry, found {}",
            el.name
        ));
    }
    Ok(el)
}

/// The client-owned children of an entry.
pub(super) fn content_of(entry: &El) -> Vec<El> {
    entry
        .elements()
        .filter(|e| {
            !(e.ns == ATOM
                && matches!(
                    e.name.as_str(),
                    "id" | "updated" | "category" | "title" | "link" | "author"
                ))
        })
        .filter(|e| !e.is(APP, "edited") && !e.is(GD, "deleted") && e.ns != BATCH)
        .cloned()
        .collect()
}

/// The `xml` column of an extended property as the emulator knows it: its content
/// serialized as written on the wire, whitespace around elements trimmed, null when blank
/// (the documented rule of `schemas/contacts.v1.json`).
pub(super) fn ext_xml(e: &El) -> Option<String> {
    let mut s = String::new();
    xml::write_content(e, &mut s, ATOM);
    if s.trim().is_empty() {
        None
    } else if s.contains('<') {
        Some(s.trim().to_string())
    } else {
        Some(s)
    }
}

/// The "contact data" the size limit counts, as this server counts it: characters (not
/// bytes) of text and attribute values, without the `rel` URIs and `primary` flags. It is
/// deliberately not the client's estimate: Google does not document its count, so a
/// client can only guess near the limit and must leave the decision to the server.
pub(super) fn contact_data(content: &[El]) -> usize {
    pub(super) fn one(e: &El) -> usize {
        e.attrs
            .iter()
            .filter(|a| !matches!(a.1.as_str(), "rel" | "primary"))
            .map(|a| a.2.chars().count())
            .sum::<usize>()
            + e.children
                .iter()
                .map(|c| match c {
                    xml::Node::Text(t) | xml::Node::CData(t) => t.trim().chars().count(),
                    xml::Node::El(e) => one(e),
                })
                .sum::<usize>()
    }
    content.iter().map(one).sum()
}

/// Checks a contact's content. `before` is the content the server holds for an update:
/// a count or size limit that the contact already exceeded is not enforced against a
/// change that does not make it worse (the server accepts what it holds).
pub(super) fn validate(content: &[El], before: Option<&[El]>) -> Result<(), OpError> {
    let bad = |m: String| Err(OpError(StatusCode::BAD_REQUEST, "invalid", m));
    for e in content {
        if e.ns == GD
            && matches!(
                e.name.as_str(),
                "email"
                    | "im"
                    | "organization"
                    | "phoneNumber"
                    | "structuredPostalAddress"
                    | "postalAddress"
            )
        {
            let has_rel = e.get("rel").is_some_and(|v| !v.is_empty());
            let has_label = e.get("label").is_some_and(|v| !v.is_empty());
            if has_rel == has_label {
                return bad(format!(
                    "[Line 1, Column 0, element gd:{}] Exactly one of rel or label is required.",
                    e.name
                ));
            }
        }
        if (e.is(GD, "email") || e.is(GD, "im")) && e.get("address").is_none_or(str::is_empty) {
            return bad(format!(
                "[Line 1, Column 0, element gd:{}] gd:{}/@address is required.",
                e.name, e.name
            ));
        }
        if e.is(GD, "extendedProperty") {
            if e.get("name").is_none_or(str::is_empty) {
                return bad("[Line 1, Column 0, element gd:extendedProperty] gd:extendedProperty/@name is required.".into());
            }
            // Content is an XML blob or, as the API allows, plain text.
            let has_content = e.children.iter().any(|c| match c {
                xml::Node::Text(t) => !t.trim().is_empty(),
                _ => true,
            });
            if e.get("value").is_some() && has_content {
                return bad("[Line 1, Column 0, element gd:extendedProperty] g:extendedProperty/@value and XML are mutually exclusive".into());
            }
        }
    }
    let count = |c: &[El]| c.iter().filter(|e| e.is(GD, "extendedProperty")).count();
    let size = |c: &[El]| contact_data(c);
    let props = count(content);
    if props > MAX_EXT_PROPS && before.is_none_or(|b| props > count(b)) {
        return bad(format!(
            "Too many extended properties: {props}; at most {MAX_EXT_PROPS} are allowed per contact."
        ));
    }
    let bytes = size(content);
    if bytes > MAX_DATA_BYTES && before.is_none_or(|b| bytes > size(b)) {
        return bad(format!(
            "Contact data is {bytes} bytes; at most {MAX_DATA_BYTES} bytes are allowed per contact."
        ));
    }
    Ok(())
}

pub(super) fn insert_content(
    store: &mut GoogleStore,
    projection: &Projection,
    entry: &El,
    now: i64,
) -> Result<String, OpError> {
    let mut content = content_of(entry);
    if matches!(projection, Projection::Thin) {
        content.retain(|e| !e.is(GD, "extendedProperty"));
    }
    validate(&content, None)?;
    let id = store.new_id();
    let t = store.tick(now);
    store.store_new(id.clone(), content, t, None);
    Ok(id)
}

pub(super) fn insert_one(
    store: &mut GoogleStore,
    projection: &Projection,
    body: &Bytes,
    now: i64,
) -> Response {
    let entry = match parse_entry(body) {
        Ok(e) => e,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, &e),
    };
    match insert_content(store, projection, &entry, now) {
        Ok(id) => atom(
            StatusCode::CREATED,
            "entry",
            store.standalone_entry(&id, projection),
        ),
        Err(OpError(st, code, r)) => op_error_response(st, code, &r),
    }
}

pub(super) fn check_etag(
    c: &GContact,
    if_match: Option<&str>,
    body_etag: Option<&str>,
) -> Result<(), OpError> {
    match if_match.or(body_etag) {
        None => Err(OpError(
            StatusCode::FORBIDDEN,
            "matchHeaderRequired",
            "If-Match or If-None-Match header or entry etag attribute required".into(),
        )),
        Some("*") => Ok(()),
        Some(e) if e == c.etag => Ok(()),
        Some(_) => Err(OpError(
            StatusCode::PRECONDITION_FAILED,
            "etagsMismatch",
            "Etags mismatch".into(),
        )),
    }
}

pub(super) fn short_id(s: &str) -> &str {
    s.trim_end_matches('/').rsplit('/').next().unwrap_or(s)
}

pub(super) fn update(
    store: &mut GoogleStore,
    id: &str,
    projection: &Projection,
    entry: &El,
    if_match: Option<&str>,
    now: i64,
) -> Result<(), OpError> {
    let Some(c) = store.contacts.get(id).filter(|c| c.deleted_ms.is_none()) else {
        return Err(OpError(
            StatusCode::NOT_FOUND,
            "notFound",
            format!("Contact not found: {id}"),
        ));
    };
    if let Some(eid) = entry.find(ATOM, "id").map(El::text_content)
        && short_id(&eid) != id
    {
        return Err(OpError(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("Entry id {eid} does not match the URL's contact {id}"),
        ));
    }
    check_etag(c, if_match, entry.get_ns(GD, "etag"))?;
    let mut content = content_of(entry);
    let old_props: Vec<El> = c
        .content
        .iter()
        .filter(|e| e.is(GD, "extendedProperty"))
        .cloned()
        .collect();
    match projection {
        Projection::Full => {}
        Projection::Thin => {
            content.retain(|e| !e.is(GD, "extendedProperty"));
            content.extend(old_props);
        }
        Projection::Property(k) => {
            content.retain(|e| !e.is(GD, "extendedProperty") || e.get("name") == Some(k));
            content.extend(old_props.into_iter().filter(|e| e.get("name") != Some(k)));
        }
    }
    validate(&content, Some(&c.content))?;
    store.contacts.get_mut(id).unwrap().content = content;
    store.touch(id, now);
    Ok(())
}

pub(super) fn delete(
    store: &mut GoogleStore,
    id: &str,
    if_match: Option<&str>,
    body_etag: Option<&str>,
    now: i64,
) -> Result<(), OpError> {
    let Some(c) = store.contacts.get(id).filter(|c| c.deleted_ms.is_none()) else {
        return Err(OpError(
            StatusCode::NOT_FOUND,
            "notFound",
            format!("Contact not found: {id}"),
        ));
    };
    check_etag(c, if_match, body_etag)?;
    store.delete(id, now);
    Ok(())
}

/// One batch operation's outcome: the status code, its reason and the entry to send
/// back, or the operation's error.
type BatchOutcome = Result<(u16, &'static str, Option<String>), OpError>;

/// A batch feed: each entry's operation applied in order (after an emulated
/// interruption, only the first half), and a feed of results, one entry each with its
/// `batch:id`, `batch:operation` and `batch:status`.
pub(super) fn batch(
    store: &mut GoogleStore,
    projection: &Projection,
    headers: &HeaderMap,
    body: &Bytes,
    now: i64,
    interrupt: bool,
) -> Response {
    let feed = match xml::parse(body) {
        Ok(f) if f.is(ATOM, "feed") => f,
        Ok(f) => {
            return text_error(
                StatusCode::BAD_REQUEST,
                &format!("[Line 1, Column 0] Expected a batch feed, found {}", f.name),
            );
        }
        Err(e) => {
            return text_error(
                StatusCode::BAD_REQUEST,
                &format!("[Line 1, Column 0] Parse error: {e}"),
            );
        }
    };
    let entries: Vec<&El> = feed.find_all(ATOM, "entry").collect();
    if entries.len() > MAX_BATCH {
        return text_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "A batch request may hold at most {MAX_BATCH} operations; this one has {}.",
                entries.len()
            ),
        );
    }
    let default_op = feed
        .find(BATCH, "operation")
        .and_then(|o| o.get("type"))
        .unwrap_or("insert")
        .to_string();
    let force = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) == Some("*");
    let stop_at = if interrupt && entries.len() > 1 {
        entries.len() / 2
    } else {
        entries.len()
    };
    let mut out = String::new();
    out.push_str("<?xml version='1.0' encoding='UTF-8'?><feed");
    out.push_str(&xml::root_decls(true, true));
    out.push_str(&format!(
        "><id>{}/batch/{now}</id><updated>{}</updated><title>Batch Feed</title>",
        store.feed_url(),
        ms_to_rfc3339(now)
    ));
    let (mut ok, mut failed) = (0usize, 0usize);
    for entry in entries.iter().take(stop_at) {
        let op = entry
            .find(BATCH, "operation")
            .and_then(|o| o.get("type"))
            .unwrap_or(&default_op)
            .to_string();
        let bid = entry.find(BATCH, "id").map(El::text_content);
        let target = entry
            .find(ATOM, "id")
            .map(|e| short_id(&e.text_content()).to_string());
        let result = batch_op(store, projection, entry, &op, target.as_deref(), force, now);
        log_batch_write(store, &op, target.as_deref(), &result);
        if result.is_ok() {
            ok += 1;
        } else {
            failed += 1;
        }
        let tail = batch_tail(bid.as_deref(), &op);
        batch_result_entry(store, projection, target.as_deref(), tail, result, &mut out);
    }
    if stop_at < entries.len() {
        out.push_str(&format!("<batch:interrupted reason=\"emulated interruption\" parsed=\"{}\" success=\"{ok}\" failures=\"{failed}\" unprocessed=\"{}\"/>", entries.len(), entries.len() - stop_at));
    }
    out.push_str("</feed>");
    atom(StatusCode::OK, "feed", out)
}

/// One batch entry's operation (`insert`, `update`, `delete`, `query`) on `target`
/// (the entry's `atom:id`); `force` is the request's `If-Match: *`.
fn batch_op(
    store: &mut GoogleStore,
    projection: &Projection,
    entry: &El,
    op: &str,
    target: Option<&str>,
    force: bool,
    now: i64,
) -> BatchOutcome {
    let if_match = force.then_some("*");
    let needs_id = |op: &str| {
        Err(OpError(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{op} needs an atom:id"),
        ))
    };
    match (op, target) {
        ("insert", _) => {
            insert_content(store, projection, entry, now).map(|id| (201, "Created", Some(id)))
        }
        ("update", Some(id)) => update(store, id, projection, entry, if_match, now)
            .map(|_| (200, "Success", Some(id.to_string()))),
        ("delete", Some(id)) => delete(store, id, if_match, entry.get_ns(GD, "etag"), now)
            .map(|_| (200, "Success", None)),
        ("query", Some(id))
            if store
                .contacts
                .get(id)
                .is_some_and(|c| c.deleted_ms.is_none()) =>
        {
            Ok((200, "Success", Some(id.to_string())))
        }
        ("query", Some(id)) => Err(OpError(
            StatusCode::NOT_FOUND,
            "notFound",
            format!("Contact not found: {id}"),
        )),
        ("update" | "delete" | "query", None) => needs_id(op),
        (other, _) => Err(OpError(
            StatusCode::BAD_REQUEST,
            "invalidBatchOperationType",
            format!("Unknown batch operation {other}"),
        )),
    }
}

/// A batch write (not a query) in the store's write log, with the status it got.
fn log_batch_write(store: &mut GoogleStore, op: &str, target: Option<&str>, result: &BatchOutcome) {
    if !["insert", "update", "delete"].contains(&op) {
        return;
    }
    let target = target.map(str::to_string);
    let (id, status) = match result {
        Ok((code, _, id)) => (id.clone().or(target), *code),
        Err(OpError(st, _, _)) => (target, st.as_u16()),
    };
    store.writes.push(crate::emulator::WriteLog {
        op: op.to_string(),
        id,
        status,
    });
}

/// The `batch:id` and `batch:operation` of a result entry (an unknown operation is
/// answered as an insert, as the API does).
fn batch_tail(bid: Option<&str>, op: &str) -> String {
    let mut tail = String::new();
    if let Some(b) = bid {
        tail.push_str("<batch:id>");
        xml::esc(b, &mut tail);
        tail.push_str("</batch:id>");
    }
    let known = ["insert", "update", "delete", "query"].contains(&op);
    tail.push_str(&format!(
        "<batch:operation type=\"{}\"/>",
        if known { op } else { "insert" }
    ));
    tail
}

/// One result entry of the batch feed: the entry itself with its status when the
/// operation leaves one, else an entry naming the target, with the error's reason.
fn batch_result_entry(
    store: &mut GoogleStore,
    projection: &Projection,
    target: Option<&str>,
    mut tail: String,
    result: BatchOutcome,
    out: &mut String,
) {
    let target_id = |store: &GoogleStore, t: &str| {
        format!(
            "<id>{}/m8/feeds/contacts/{}/base/{t}</id>",
            store.base_url, store.domain
        )
    };
    match result {
        Ok((code, reason, id)) => {
            tail.push_str(&format!(
                "<batch:status code=\"{code}\" reason=\"{reason}\"/>"
            ));
            match id {
                Some(id) => {
                    let e = store.entry_xml(&id, projection);
                    // The rendered entry ends in `</entry>`: the status goes before it.
                    out.push_str(e.strip_suffix("</entry>").unwrap_or(&e));
                    out.push_str(&tail);
                    out.push_str("</entry>");
                }
                None => {
                    out.push_str("<entry>");
                    if let Some(t) = target {
                        out.push_str(&target_id(store, t));
                    }
                    out.push_str(&tail);
                    out.push_str("</entry>");
                }
            }
        }
        Err(OpError(st, _code, reason)) => {
            out.push_str("<entry>");
            if let Some(t) = target {
                out.push_str(&target_id(store, t));
            }
            tail.push_str(&format!("<batch:status code=\"{}\" reason=\"", st.as_u16()));
            xml::esc(&reason, &mut tail);
            tail.push_str("\"/>");
            out.push_str(&tail);
            out.push_str("<title>Error</title></entry>");
        }
    }
}
