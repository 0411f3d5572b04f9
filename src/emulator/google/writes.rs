//! Writes as the API takes them: one entry inserted, updated or deleted (with its etag
//! checked), a batch feed of them, each checked by the API's rules and limits.

#[allow(unused_imports)]
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
        let if_match = force.then_some("*");
        let result: Result<(u16, &str, Option<String>), OpError> = match op.as_str() {
            "insert" => {
                insert_content(store, projection, entry, now).map(|id| (201, "Created", Some(id)))
            }
            "update" => match &target {
                Some(id) => update(store, id, projection, entry, if_match, now)
                    .map(|_| (200, "Success", Some(id.clone()))),
                None => Err(OpError(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "update needs an atom:id".into(),
                )),
            },
            "delete" => match &target {
                Some(id) => delete(store, id, if_match, entry.get_ns(GD, "etag"), now)
                    .map(|_| (200, "Success", None)),
                None => Err(OpError(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "delete needs an atom:id".into(),
                )),
            },
            "query" => match &target {
                Some(id)
                    if store
                        .contacts
                        .get(id)
                        .is_some_and(|c| c.deleted_ms.is_none()) =>
                {
                    Ok((200, "Success", Some(id.clone())))
                }
                Some(id) => Err(OpError(
                    StatusCode::NOT_FOUND,
                    "notFound",
                    format!("Contact not found: {id}"),
                )),
                None => Err(OpError(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "query needs an atom:id".into(),
                )),
            },
            other => Err(OpError(
                StatusCode::BAD_REQUEST,
                "invalidBatchOperationType",
                format!("Unknown batch operation {other}"),
            )),
        };
        if ["insert", "update", "delete"].contains(&op.as_str()) {
            let (id, status) = match &result {
                Ok((code, _, id)) => (id.clone().or(target.clone()), *code),
                Err(OpError(st, _, _)) => (target.clone(), st.as_u16()),
            };
            store.writes.push(crate::emulator::WriteLog {
                op: op.clone(),
                id,
                status,
            });
        }
        let mut tail = String::new();
        if let Some(b) = &bid {
            tail.push_str("<batch:id>");
            xml::esc(b, &mut tail);
            tail.push_str("</batch:id>");
        }
        tail.push_str(&format!(
            "<batch:operation type=\"{}\"/>",
            if ["insert", "update", "delete", "query"].contains(&op.as_str()) {
                op.as_str()
            } else {
                "insert"
            }
        ));
        match result {
            Ok((code, reason, id)) => {
                ok += 1;
                tail.push_str(&format!(
                    "<batch:status code=\"{code}\" reason=\"{reason}\"/>"
                ));
                match id {
                    Some(id) => {
                        let e = store.entry_xml(&id, projection);
                        out.push_str(&e[..e.len() - "</entry>".len()]);
                        out.push_str(&tail);
                        out.push_str("</entry>");
                    }
                    None => {
                        out.push_str("<entry>");
                        if let Some(t) = &target {
                            out.push_str(&format!(
                                "<id>{}/m8/feeds/contacts/{}/base/{t}</id>",
                                store.base_url, store.domain
                            ));
                        }
                        out.push_str(&tail);
                        out.push_str("</entry>");
                    }
                }
            }
            Err(OpError(st, _code, reason)) => {
                failed += 1;
                out.push_str("<entry>");
                if let Some(t) = &target {
                    out.push_str(&format!(
                        "<id>{}/m8/feeds/contacts/{}/base/{t}</id>",
                        store.base_url, store.domain
                    ));
                }
                tail.push_str(&format!("<batch:status code=\"{}\" reason=\"", st.as_u16()));
                xml::esc(&reason, &mut tail);
                tail.push_str("\"/>");
                out.push_str(&tail);
                out.push_str("<title>Error</title></entry>");
            }
        }
    }
    if stop_at < entries.len() {
        out.push_str(&format!("<batch:interrupted reason=\"emulated interruption\" parsed=\"{}\" success=\"{ok}\" failures=\"{failed}\" unprocessed=\"{}\"/>", entries.len(), entries.len() - stop_at));
    }
    out.push_str("</feed>");
    atom(StatusCode::OK, "feed", out)
}
