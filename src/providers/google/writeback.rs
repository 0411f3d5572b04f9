//! Google writes: batch feeds of at most 100 operations. An update is the landed `raw`
//! entry with only the changed elements replaced (every element the schema does not model
//! survives) and the etag the change was based on; a delete carries the etag too; an
//! insert carries the plan's idempotency key as an extended property. Results are matched
//! by `batch:id`, else `atom:id`, else position; after `batch:interrupted` the unprocessed
//! tail is sent again.

use std::collections::HashMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use super::GoogleSource;
use crate::error::{Context, Error, Kind, Result};
use crate::http::Metrics;
use crate::model::schema::ContactRecord;
use crate::model::write::{
    Action, KEY_PROPERTY, Op, OpKind, OpResult, Outcome, WRITABLE, key_property, merge_managed,
};

const ATOM: &str = "http://www.w3.org/2005/Atom";
const GD: &str = "http://schemas.google.com/g/2005";
const GCONTACT: &str = "http://schemas.google.com/contact/2008";
const BATCH: &str = "http://schemas.google.com/gdata/batch";
/// Operations per batch request (the API's limit).
pub const BATCH_SIZE: usize = 100;
const MAX_RESUBMITS: usize = 5;

/// Escapes text for an XML attribute or element. Tab, line feed and carriage return go
/// as character references, so a parser's attribute and line-end normalization cannot
/// change them; the characters XML 1.0 forbids anywhere (other C0 controls, U+FFFE,
/// U+FFFF) are dropped, and the write rules refuse them before anything is sent
/// ([`unwritable`]).
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' => o.push_str("&#9;"),
            '\n' => o.push_str("&#10;"),
            '\r' => o.push_str("&#13;"),
            c if not_xml(c) => {}
            c => o.push(c),
        }
    }
    o
}

/// A character XML 1.0 allows nowhere, not even as a reference.
fn not_xml(c: char) -> bool {
    (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

/// Whether `xml` is well-formed content for between two tags: balanced elements, no
/// declaration, doctype or processing instruction, every reference one XML defines.
fn is_xml_content(xml: &str) -> bool {
    let wrapped = format!("<x>{xml}</x>");
    let mut reader = quick_xml::Reader::from_str(&wrapped);
    let mut depth = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => depth += 1,
            Ok(Event::End(_)) => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Ok(Event::GeneralRef(g)) => {
                if crate::xml::reference_char(&g).is_err() {
                    return false;
                }
            }
            Ok(Event::Text(t)) => {
                if t.decode().is_err() {
                    return false;
                }
            }
            Ok(Event::Decl(_) | Event::DocType(_) | Event::PI(_)) => return false,
            Ok(Event::Eof) => return depth == 0,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// The values of `r`'s writable columns an Atom entry cannot carry, each named by its
/// column: a text holding a character XML 1.0 forbids, and extended-property `xml` that
/// is not well-formed content for one element (it is written as XML, unescaped, so it
/// must not close its element or open another outside it). The write rules refuse these,
/// and a write that would carry one is refused without being sent.
pub fn unwritable(r: &ContactRecord) -> Vec<String> {
    fn walk(path: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => {
                if let Some(c) = s.chars().find(|c| not_xml(*c)) {
                    out.push(format!(
                        "{path} holds U+{:04X}, a character XML 1.0 does not allow",
                        c as u32
                    ));
                }
            }
            serde_json::Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, x)| walk(&format!("{path}[{i}]"), x, out)),
            serde_json::Value::Object(o) => o
                .iter()
                .for_each(|(k, x)| walk(&format!("{path}.{k}"), x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    // Column by column: the whole record would serialize `raw` and `native` too.
    macro_rules! columns {
        ($($c:ident),+) => {
            $(
                if let Ok(v) = serde_json::to_value(&r.$c) {
                    walk(stringify!($c), &v, &mut out);
                }
            )+
        };
    }
    columns!(
        display_name,
        given_name,
        family_name,
        middle_name,
        prefix,
        suffix,
        nickname,
        file_as,
        emails,
        phones,
        addresses,
        ims,
        organizations,
        websites,
        relations,
        events,
        notes,
        birthday,
        groups,
        extended_properties
    );
    for (i, p) in r.extended_properties.iter().enumerate() {
        if let Some(x) = p.xml.as_deref().filter(|x| !is_xml_content(x)) {
            out.push(format!(
                "extended_properties[{i}].xml is not well-formed XML content for one element: {:?}",
                x.chars().take(60).collect::<String>()
            ));
        }
    }
    out
}

/// The `invalid` result of a write that would carry a value an entry cannot
/// ([`unwritable`]; a value the contact already held as it is does not count); `None` for
/// a write that can go.
fn refused(op: &Op) -> Option<OpResult> {
    // A delete carries no value.
    if matches!(op.action, Action::Delete { .. }) {
        return None;
    }
    let (problems, id) = crate::model::write::write_problems(op, unwritable);
    crate::model::write::refused_result(op, id, &problems)
}

fn rel_or_label(kind: &Option<String>, label: &Option<String>, uri: bool) -> String {
    match (kind, label) {
        (Some(k), _) if !k.is_empty() => {
            if uri && !k.contains('#') {
                format!(" rel=\"{GD}#{}\"", esc(k))
            } else {
                format!(" rel=\"{}\"", esc(k))
            }
        }
        (_, Some(l)) => format!(" label=\"{}\"", esc(l)),
        _ => String::new(),
    }
}

fn primary(p: Option<bool>) -> &'static str {
    if p == Some(true) {
        " primary=\"true\""
    } else {
        ""
    }
}

fn text_el(ns_prefix: &str, name: &str, v: &Option<String>) -> String {
    v.as_ref()
        .map(|v| format!("<{ns_prefix}:{name}>{}</{ns_prefix}:{name}>", esc(v)))
        .unwrap_or_default()
}

/// The elements that hold one schema column, as (namespace, local names).
fn elements_of(column: &str) -> (&'static str, &'static [&'static str]) {
    match column {
        "display_name" | "given_name" | "family_name" | "middle_name" | "prefix" | "suffix" => {
            (GD, &["name"])
        }
        "nickname" => (GCONTACT, &["nickname"]),
        "file_as" => (GCONTACT, &["fileAs"]),
        "notes" => (ATOM, &["content"]),
        "emails" => (GD, &["email"]),
        "phones" => (GD, &["phoneNumber"]),
        "addresses" => (GD, &["structuredPostalAddress", "postalAddress"]),
        "ims" => (GD, &["im"]),
        "organizations" => (GD, &["organization"]),
        "websites" => (GCONTACT, &["website"]),
        "relations" => (GCONTACT, &["relation"]),
        "events" => (GCONTACT, &["event"]),
        "birthday" => (GCONTACT, &["birthday"]),
        "groups" => (GCONTACT, &["groupMembershipInfo"]),
        "extended_properties" => (GD, &["extendedProperty"]),
        _ => (ATOM, &[]),
    }
}

/// Renders the elements of one column group from a record. Each element declares the
/// namespaces it uses, so it is valid wherever it is placed.
fn render_column(column: &str, r: &ContactRecord) -> String {
    let d = format!("xmlns:gd=\"{GD}\"");
    let c = format!("xmlns:gContact=\"{GCONTACT}\" xmlns:gd=\"{GD}\"");
    match column {
        "display_name" | "given_name" | "family_name" | "middle_name" | "prefix" | "suffix" => {
            let inner = [
                text_el("gd", "givenName", &r.given_name),
                text_el("gd", "additionalName", &r.middle_name),
                text_el("gd", "familyName", &r.family_name),
                text_el("gd", "namePrefix", &r.prefix),
                text_el("gd", "nameSuffix", &r.suffix),
                text_el("gd", "fullName", &r.display_name),
            ]
            .concat();
            if inner.is_empty() {
                String::new()
            } else {
                format!("<gd:name {d}>{inner}</gd:name>")
            }
        }
        "nickname" => r
            .nickname
            .as_ref()
            .map(|v| format!("<gContact:nickname {c}>{}</gContact:nickname>", esc(v)))
            .unwrap_or_default(),
        "file_as" => r
            .file_as
            .as_ref()
            .map(|v| format!("<gContact:fileAs {c}>{}</gContact:fileAs>", esc(v)))
            .unwrap_or_default(),
        "notes" => r
            .notes
            .as_ref()
            .map(|v| {
                format!(
                    "<content xmlns=\"{ATOM}\" type=\"text\">{}</content>",
                    esc(v)
                )
            })
            .unwrap_or_default(),
        "emails" => r
            .emails
            .iter()
            .map(|e| {
                format!(
                    "<gd:email {d}{}{} address=\"{}\"{}/>",
                    rel_or_label(&e.kind, &e.label, true),
                    primary(e.primary),
                    esc(e.address.as_deref().unwrap_or("")),
                    e.display_name
                        .as_ref()
                        .map(|n| format!(" displayName=\"{}\"", esc(n)))
                        .unwrap_or_default()
                )
            })
            .collect(),
        "phones" => r
            .phones
            .iter()
            .map(|p| {
                format!(
                    "<gd:phoneNumber {d}{}{}{}>{}</gd:phoneNumber>",
                    rel_or_label(&p.kind, &p.label, true),
                    primary(p.primary),
                    p.uri
                        .as_ref()
                        .map(|u| format!(" uri=\"{}\"", esc(u)))
                        .unwrap_or_default(),
                    esc(p.number.as_deref().unwrap_or(""))
                )
            })
            .collect(),
        "addresses" => r
            .addresses
            .iter()
            .map(|a| {
                let inner = [
                    text_el("gd", "street", &a.street),
                    text_el("gd", "pobox", &a.po_box),
                    text_el("gd", "neighborhood", &a.neighborhood),
                    text_el("gd", "city", &a.city),
                    text_el("gd", "region", &a.region),
                    text_el("gd", "postcode", &a.postcode),
                    text_el("gd", "country", &a.country),
                    text_el("gd", "formattedAddress", &a.formatted),
                ]
                .concat();
                format!(
                    "<gd:structuredPostalAddress {d}{}{}>{inner}</gd:structuredPostalAddress>",
                    rel_or_label(&a.kind, &a.label, true),
                    primary(a.primary)
                )
            })
            .collect(),
        "ims" => r
            .ims
            .iter()
            .map(|i| {
                format!(
                    "<gd:im {d} address=\"{}\"{}{}{}/>",
                    esc(i.address.as_deref().unwrap_or("")),
                    i.protocol
                        .as_ref()
                        .map(|p| format!(" protocol=\"{GD}#{}\"", esc(p)))
                        .unwrap_or_default(),
                    rel_or_label(&i.kind, &i.label, true),
                    primary(i.primary)
                )
            })
            .collect(),
        "organizations" => r
            .organizations
            .iter()
            .map(|o| {
                format!(
                    "<gd:organization {d}{}{}>{}{}{}</gd:organization>",
                    rel_or_label(&o.kind, &o.label, true),
                    primary(o.primary),
                    text_el("gd", "orgName", &o.name),
                    text_el("gd", "orgTitle", &o.title),
                    text_el("gd", "orgDepartment", &o.department)
                )
            })
            .collect(),
        "websites" => r
            .websites
            .iter()
            .map(|w| {
                format!(
                    "<gContact:website {c} href=\"{}\"{}{}/>",
                    esc(w.href.as_deref().unwrap_or("")),
                    rel_or_label(&w.kind, &w.label, false),
                    primary(w.primary)
                )
            })
            .collect(),
        "relations" => r
            .relations
            .iter()
            .map(|x| {
                format!(
                    "<gContact:relation {c}{}>{}</gContact:relation>",
                    rel_or_label(&x.kind, &x.label, false),
                    esc(x.name.as_deref().unwrap_or(""))
                )
            })
            .collect(),
        "events" => r
            .events
            .iter()
            .map(|e| {
                format!(
                    "<gContact:event {c}{}><gd:when startTime=\"{}\"/></gContact:event>",
                    rel_or_label(&e.kind, &e.label, false),
                    esc(e.start.as_deref().unwrap_or(""))
                )
            })
            .collect(),
        "birthday" => r
            .birthday
            .as_ref()
            .map(|b| format!("<gContact:birthday {c} when=\"{}\"/>", esc(b)))
            .unwrap_or_default(),
        "groups" => r
            .groups
            .iter()
            .map(|g| {
                format!(
                    "<gContact:groupMembershipInfo {c} deleted=\"false\" href=\"{}\"/>",
                    esc(g)
                )
            })
            .collect(),
        "extended_properties" => r
            .extended_properties
            .iter()
            .map(|p| match (&p.value, &p.xml) {
                (Some(v), _) => format!(
                    "<gd:extendedProperty {d} name=\"{}\" value=\"{}\"/>",
                    esc(p.name.as_deref().unwrap_or("")),
                    esc(v)
                ),
                // `xml` is the property's content as XML (elements, or plain text as
                // the API allows): written back between the tags, never as an attribute.
                (None, Some(x)) => format!(
                    "<gd:extendedProperty {d} name=\"{}\">{x}</gd:extendedProperty>",
                    esc(p.name.as_deref().unwrap_or(""))
                ),
                (None, None) => format!(
                    "<gd:extendedProperty {d} name=\"{}\"/>",
                    esc(p.name.as_deref().unwrap_or(""))
                ),
            })
            .collect(),
        _ => String::new(),
    }
}

/// Bytes of contact data as Google counts it (text and attribute values, not markup),
/// measured on the entry this record would be written as (insert key included).
pub fn data_bytes(r: &ContactRecord) -> usize {
    let cols: Vec<String> = WRITABLE.iter().map(|c| c.to_string()).collect();
    let mut rec = r.clone();
    rec.extended_properties
        .retain(|p| p.name.as_deref() != Some(KEY_PROPERTY));
    entry_data_bytes(&insert_entry(&rec, &cols, ""))
}

/// Bytes of contact data in an entry document: text and attribute values of the
/// contact's own elements; the server-controlled ones (id, updated, edited, category,
/// title, links) and the entry's own attributes do not count.
pub fn entry_data_bytes(xml: &str) -> usize {
    let mut reader = NsReader::from_str(xml);
    let decoder = reader.decoder();
    let (mut n, mut depth, mut skip) = (0usize, 0usize, None::<usize>);
    // Text between two tags counts once, trimmed (entity references split it in events).
    let mut text = String::new();
    while let Ok(ev) = reader.read_event() {
        if matches!(
            ev,
            Event::Start(_) | Event::Empty(_) | Event::End(_) | Event::Eof
        ) {
            n += text.trim().len();
            text.clear();
        }
        match ev {
            Event::Start(ref s) | Event::Empty(ref s) => {
                let empty = matches!(ev, Event::Empty(_));
                let level = depth + 1;
                if !empty {
                    depth += 1;
                }
                if skip.is_some() {
                    continue;
                }
                if level == 2
                    && matches!(
                        s.local_name().as_ref(),
                        b"id" | b"updated" | b"edited" | b"category" | b"title" | b"link"
                    )
                {
                    if !empty {
                        skip = Some(level);
                    }
                    continue;
                }
                if level >= 2 {
                    for a in s
                        .attributes()
                        .flatten()
                        .filter(|a| a.key.as_namespace_binding().is_none())
                    {
                        n += a
                            .decode_and_unescape_value(decoder)
                            .map(|v| v.len())
                            .unwrap_or(0);
                    }
                }
            }
            Event::End(_) => {
                if skip == Some(depth) {
                    skip = None;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) if skip.is_none() => text.push_str(&t.decode().unwrap_or_default()),
            Event::GeneralRef(g) if skip.is_none() => {
                text.push(crate::xml::reference_char(&g).unwrap_or('?'));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    n
}

/// The group a column belongs to (the name parts share `gd:name`).
fn group(column: &str) -> &str {
    match column {
        "display_name" | "given_name" | "family_name" | "middle_name" | "prefix" | "suffix" => {
            "name"
        }
        c => c,
    }
}

/// A new entry with every managed column and the insert key.
pub fn insert_entry(r: &ContactRecord, managed: &[String], key: &str) -> String {
    let mut rec = r.clone();
    rec.extended_properties
        .retain(|p| p.name.as_deref() != Some(KEY_PROPERTY));
    rec.extended_properties.push(key_property(key));
    let mut cols: Vec<&str> = managed.iter().map(String::as_str).collect();
    cols.push("extended_properties");
    let mut done = std::collections::HashSet::new();
    let mut body = String::new();
    for c in cols {
        if done.insert(group(c).to_string()) {
            body.push_str(&render_column(c, &rec));
        }
    }
    format!(
        "<entry xmlns=\"{ATOM}\" xmlns:gd=\"{GD}\" xmlns:gContact=\"{GCONTACT}\"><category scheme=\"http://schemas.google.com/g/2005#kind\" term=\"http://schemas.google.com/contact/2008#contact\"/>{body}</entry>"
    )
}

fn ns_eq(r: &ResolveResult, ns: &str) -> bool {
    matches!(r, ResolveResult::Bound(n) if n.as_ref() == ns.as_bytes())
}

/// The list items of `merged` rendered for an update: an item whose modelled values equal
/// those of a landed item is sent as the landed element, as it came (`spans`, the landed
/// elements of the column in document order, the order the decoder read them in), so the
/// attributes and children the schema does not model survive; other items are rendered.
fn keep_items<T: PartialEq + Clone>(
    merged: &[T],
    landed: &[T],
    spans: &[&str],
    one: impl Fn(T) -> ContactRecord,
    column: &str,
) -> String {
    let mut used = vec![false; landed.len()];
    let mut out = String::new();
    for item in merged {
        let j = (0..landed.len().min(spans.len())).find(|&j| !used[j] && landed[j] == *item);
        match j {
            Some(j) => {
                used[j] = true;
                out.push_str(spans[j]);
            }
            None => out.push_str(&render_column(column, &one(item.clone()))),
        }
    }
    out
}

/// Renders a list column for an update (see [`keep_items`]); `None` for other columns.
fn render_list(
    column: &str,
    merged: &ContactRecord,
    landed: &ContactRecord,
    spans: &[&str],
) -> Option<String> {
    type R = ContactRecord;
    let d = R::default;
    Some(match column {
        "emails" => keep_items(
            &merged.emails,
            &landed.emails,
            spans,
            |x| R {
                emails: vec![x],
                ..d()
            },
            column,
        ),
        "phones" => keep_items(
            &merged.phones,
            &landed.phones,
            spans,
            |x| R {
                phones: vec![x],
                ..d()
            },
            column,
        ),
        "addresses" => keep_items(
            &merged.addresses,
            &landed.addresses,
            spans,
            |x| R {
                addresses: vec![x],
                ..d()
            },
            column,
        ),
        "ims" => keep_items(
            &merged.ims,
            &landed.ims,
            spans,
            |x| R {
                ims: vec![x],
                ..d()
            },
            column,
        ),
        "organizations" => keep_items(
            &merged.organizations,
            &landed.organizations,
            spans,
            |x| R {
                organizations: vec![x],
                ..d()
            },
            column,
        ),
        "websites" => keep_items(
            &merged.websites,
            &landed.websites,
            spans,
            |x| R {
                websites: vec![x],
                ..d()
            },
            column,
        ),
        "relations" => keep_items(
            &merged.relations,
            &landed.relations,
            spans,
            |x| R {
                relations: vec![x],
                ..d()
            },
            column,
        ),
        "events" => keep_items(
            &merged.events,
            &landed.events,
            spans,
            |x| R {
                events: vec![x],
                ..d()
            },
            column,
        ),
        "extended_properties" => keep_items(
            &merged.extended_properties,
            &landed.extended_properties,
            spans,
            |x| R {
                extended_properties: vec![x],
                ..d()
            },
            column,
        ),
        // Removed memberships are in the entry but not in `groups`: no one-to-one order.
        _ => return None,
    })
}

/// The landed entry with the changed column groups replaced and `gd:etag` set to `etag`.
/// With `landed` (the contact `raw` was decoded into), list items that did not change are
/// kept as the landed elements, unmodelled attributes and children included.
pub fn update_entry(
    raw: &str,
    merged: &ContactRecord,
    changed: &[String],
    etag: Option<&str>,
    landed: Option<&ContactRecord>,
) -> Result<String> {
    let mut groups: Vec<&str> = Vec::new();
    for c in changed {
        if !groups.contains(&group(c)) {
            groups.push(group(c));
        }
    }
    let mut r = NsReader::from_str(raw);
    let mut w = quick_xml::Writer::new(Vec::new());
    let mut depth = 0usize;
    let mut skip_until: Option<usize> = None;
    // The dropped elements of each changed group, as spans of `raw`, in document order.
    let mut spans: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut open_span: Option<(&str, usize)> = None;
    loop {
        let before = r.buffer_position() as usize;
        let (res, ev) = r.read_resolved_event().map_err(unparsable)?;
        match ev {
            Event::Eof => break,
            Event::Start(ref s) | Event::Empty(ref s) => {
                let empty = matches!(ev, Event::Empty(_));
                let level = depth + 1;
                if !empty {
                    depth += 1;
                }
                if skip_until.is_some() {
                    continue;
                }
                if level == 2
                    && let Some(c) = changed.iter().find(|c| {
                        let (ns, names) = elements_of(c);
                        ns_eq(&res, ns)
                            && names
                                .iter()
                                .any(|n| s.local_name().as_ref() == n.as_bytes())
                    })
                {
                    let g = group(c);
                    if empty {
                        let end = r.buffer_position() as usize;
                        spans.entry(g).or_default().push(&raw[before..end]);
                    } else {
                        skip_until = Some(level);
                        open_span = Some((g, before));
                    }
                    continue;
                }
                if level == 1 {
                    // Set gd:etag to the version this change was based on.
                    let mut start =
                        BytesStart::new(String::from_utf8_lossy(s.name().as_ref()).into_owned());
                    for a in s.attributes().flatten() {
                        let (ans, local) = r.resolver().resolve_attribute(a.key);
                        if ns_eq(&ans, GD) && local.as_ref() == b"etag" {
                            continue;
                        }
                        start.push_attribute(a);
                    }
                    let has_gd = s
                        .attributes()
                        .flatten()
                        .any(|a| a.key.as_ref() == b"xmlns:gd");
                    if !has_gd {
                        start.push_attribute(("xmlns:gd", GD));
                    }
                    if let Some(e) = etag {
                        start.push_attribute(("gd:etag", e));
                    }
                    w.write_event(if empty {
                        Event::Empty(start)
                    } else {
                        Event::Start(start)
                    })
                    .map_err(unparsable)?;
                    continue;
                }
                w.write_event(ev.borrow()).map_err(unparsable)?;
            }
            Event::End(ref e) => {
                let level = depth;
                depth = depth.saturating_sub(1);
                if let Some(l) = skip_until {
                    if level == l {
                        skip_until = None;
                        if let Some((g, start)) = open_span.take() {
                            let end = r.buffer_position() as usize;
                            spans.entry(g).or_default().push(&raw[start..end]);
                        }
                    }
                    continue;
                }
                if level == 1 {
                    let mut new = String::new();
                    for g in &groups {
                        let kept = landed.and_then(|l| {
                            render_list(g, merged, l, spans.get(g).map_or(&[][..], Vec::as_slice))
                        });
                        match kept {
                            Some(k) => new.push_str(&k),
                            None => new.push_str(&render_column(
                                if *g == "name" { "display_name" } else { g },
                                merged,
                            )),
                        }
                    }
                    w.get_mut().extend_from_slice(new.as_bytes());
                }
                w.write_event(Event::End(e.clone())).map_err(unparsable)?;
            }
            other => {
                if skip_until.is_none() {
                    w.write_event(other).map_err(unparsable)?;
                }
            }
        }
    }
    String::from_utf8(w.into_inner()).map_err(unparsable)
}

/// The `atom:id` text of a raw entry.
pub fn atom_id(raw: &str) -> Option<String> {
    let mut r = NsReader::from_str(raw);
    let mut depth = 0;
    let mut in_id = false;
    loop {
        match r.read_resolved_event().ok()? {
            (res, Event::Start(s)) => {
                depth += 1;
                in_id = depth == 2 && ns_eq(&res, ATOM) && s.local_name().as_ref() == b"id";
            }
            (_, Event::Text(t)) if in_id => return Some(t.decode().ok()?.trim().to_string()),
            (_, Event::End(_)) => {
                depth -= 1;
                in_id = false;
            }
            (_, Event::Eof) => return None,
            _ => {}
        }
    }
}

/// One result entry of a batch response.
#[derive(Debug, Default, Clone)]
pub struct BatchResult {
    pub batch_id: Option<String>,
    pub atom_id: Option<String>,
    pub code: Option<u16>,
    pub reason: Option<String>,
    pub etag: Option<String>,
}

/// A landed raw entry the XML reader or writer stopped at, the reader's error kept.
fn unparsable(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(
        Kind::Decode,
        "the landed raw entry does not parse (run sync --full-refresh)",
        e,
    )
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
                            super::describe(body)
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
                .send_write_authorized(&what, metrics, super::MAX_PAGE_BYTES * 4, |c| {
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
                })
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

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = r#"<entry xmlns="http://www.w3.org/2005/Atom" xmlns:gd="http://schemas.google.com/g/2005" xmlns:gContact="http://schemas.google.com/contact/2008" gd:etag="&quot;old.&quot;"><id>http://www.google.com/m8/feeds/contacts/example.com/base/abc</id><content type="text">old notes</content><gd:email rel="http://schemas.google.com/g/2005#work" address="a@x.org"/><gContact:userDefinedField key="k" value="kept &amp; sound"/><x:unknown xmlns:x="urn:x">stays</x:unknown></entry>"#;

    /// A changed list keeps the items that did not change as they came: attributes and
    /// children the schema does not model survive; only the changed item is rendered anew.
    #[test]
    fn an_update_of_a_list_keeps_unchanged_items_whole() {
        let raw = r#"<entry xmlns="http://www.w3.org/2005/Atom" xmlns:gd="http://schemas.google.com/g/2005"><id>http://x/base/abc</id><gd:structuredPostalAddress rel="http://schemas.google.com/g/2005#work" mailClass="http://schemas.google.com/g/2005#letters"><gd:agent>c/o Desk</gd:agent><gd:city>Paris</gd:city></gd:structuredPostalAddress><gd:structuredPostalAddress rel="http://schemas.google.com/g/2005#home"><gd:housename>Rose</gd:housename><gd:city>Lyon</gd:city></gd:structuredPostalAddress></entry>"#;
        let ctx = super::super::decode::RecordContext {
            source: "s".into(),
            account: "a".into(),
            run_id: "r".into(),
            synced_at_us: 0,
        };
        let feed = format!(
            r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:gd="http://schemas.google.com/g/2005">{}</feed>"#,
            raw.replacen("<entry xmlns=\"http://www.w3.org/2005/Atom\" xmlns:gd=\"http://schemas.google.com/g/2005\">", "<entry>", 1)
                .replace("<id>http://x/base/abc</id>", "<id>http://x/base/abc</id><updated>2020-01-01T00:00:00Z</updated>")
        );
        let landed = super::super::decode::decode_feed(feed.as_bytes(), &ctx, "p")
            .unwrap()
            .records()
            .unwrap()
            .remove(0);
        assert_eq!(landed.addresses.len(), 2);
        let mut merged = landed.clone();
        merged.addresses[1].city = Some("Nice".into());
        let out = update_entry(raw, &merged, &["addresses".into()], None, Some(&landed)).unwrap();
        assert!(
            out.contains("<gd:agent>c/o Desk</gd:agent>") && out.contains("mailClass="),
            "the unchanged item is kept whole: {out}"
        );
        assert!(out.contains("Nice") && !out.contains("Lyon"), "{out}");
    }

    #[cfg(feature = "emulator")]
    #[test]
    fn an_update_replaces_only_changed_elements() {
        let merged = ContactRecord {
            notes: Some("new <notes>".into()),
            emails: vec![crate::model::schema::Email {
                address: Some("a@x.org".into()),
                kind: Some("work".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = update_entry(RAW, &merged, &["notes".into()], Some("\"old.\""), None).unwrap();
        assert!(
            out.contains("new &lt;notes&gt;") && !out.contains("old notes"),
            "{out}"
        );
        assert!(
            out.contains("userDefinedField")
                && out.contains("kept &amp; sound")
                && out.contains("<x:unknown xmlns:x=\"urn:x\">stays</x:unknown>"),
            "{out}"
        );
        assert!(out.contains("gd:email"), "{out}");
        assert_eq!(out.matches("gd:etag").count(), 1, "{out}");
        // Still a valid standalone entry.
        crate::emulator::xml::parse(out.as_bytes()).unwrap();
        assert_eq!(
            atom_id(RAW).as_deref(),
            Some("http://www.google.com/m8/feeds/contacts/example.com/base/abc")
        );
    }

    #[test]
    fn batch_responses_parse_with_both_interrupted_spellings() {
        let body = br#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:batch="http://schemas.google.com/gdata/batch" xmlns:gd="http://schemas.google.com/g/2005">
<entry gd:etag="&quot;n.&quot;"><id>http://x/base/abc</id><batch:id>0</batch:id><batch:status code="200" reason="Success"/></entry>
<entry><title>Error</title><batch:status code="412" reason="Etags mismatch"/></entry>
<batch:interrupted reason="x" parsed="3" success="1" error="1"/></feed>"#;
        let (r, i) = parse_batch_response(body).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].batch_id.as_deref(), Some("0"));
        assert_eq!(r[0].atom_id.as_deref(), Some("abc"));
        assert_eq!(r[0].etag.as_deref(), Some("\"n.\""));
        assert_eq!(r[1].code, Some(412));
        assert!(i.unwrap().contains("failures=\"1\""));
    }

    /// The local names of the elements of an entry, or the parse error.
    fn element_names(xml: &str) -> std::result::Result<Vec<String>, String> {
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut out = Vec::new();
        loop {
            match reader.read_event().map_err(|e| format!("{e}: {xml}"))? {
                Event::Start(e) | Event::Empty(e) => {
                    out.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned())
                }
                Event::Eof => return Ok(out),
                _ => {}
            }
        }
    }

    /// Values meant to close their attribute or element and open another.
    const PAYLOADS: &[&str] = &[
        "x\"/><gd:email address=\"injected@evil.example\"/><x y=\"",
        "x'/><gd:email address='injected@evil.example'/><x y='",
        "x</gd:name></entry><entry><gd:email address=\"injected@evil.example\"/>",
        "x]]><gd:email address=\"injected@evil.example\"/>&amp;&#1;\r\n\t",
    ];

    /// A quote, `<`, `>`, `&`, CR or LF in any text of any writable column, in an insert or
    /// an update, stays inside its attribute or element: the entry parses and holds no
    /// added element.
    #[test]
    fn no_value_of_any_writable_column_leaves_its_element() {
        use crate::model::write::{WRITABLE, poisoned};
        let landed = ContactRecord {
            id: "abc".into(),
            notes: Some("old notes".into()),
            emails: vec![crate::model::schema::Email {
                address: Some("a@x.org".into()),
                kind: Some("work".into()),
                ..Default::default()
            }],
            raw: Some(RAW.into()),
            ..Default::default()
        };
        for column in WRITABLE {
            for payload in PAYLOADS {
                let r = poisoned(column, payload);
                let managed = vec![column.to_string()];
                let plain = insert_entry(
                    &ContactRecord {
                        id: "c1".into(),
                        display_name: Some("Ada".into()),
                        ..Default::default()
                    },
                    &managed,
                    "cetl-0123456789abcdef0123",
                );
                let entry = insert_entry(&r, &managed, "cetl-0123456789abcdef0123");
                let (want, got) = (element_names(&plain).unwrap(), element_names(&entry));
                let got = got.unwrap_or_else(|e| panic!("{column}: {e}"));
                let count = |v: &[String], n: &str| v.iter().filter(|x| *x == n).count();
                assert_eq!(count(&got, "entry"), 1, "{column}: {entry}");
                let emails = if *column == "emails" { 1 } else { 0 };
                assert_eq!(count(&got, "email"), emails, "{column}: {entry}");
                assert_eq!(
                    count(&got, "extendedProperty"),
                    count(&want, "extendedProperty")
                        + usize::from(*column == "extended_properties"),
                    "{column}: {entry}"
                );
                let mut merged = landed.clone();
                merge_managed(&mut merged, &r, &managed);
                let entry = update_entry(RAW, &merged, &managed, Some("e"), Some(&landed)).unwrap();
                let got = element_names(&entry).unwrap_or_else(|e| panic!("{column}: {e}"));
                assert_eq!(count(&got, "entry"), 1, "{column}: {entry}");
                let emails = if *column == "emails" {
                    1
                } else {
                    landed.emails.len()
                };
                assert_eq!(count(&got, "email"), emails, "{column}: {entry}");
                assert!(
                    !entry.contains("\r") && !entry.contains('\u{1}'),
                    "{column}: {entry}"
                );
            }
        }
    }

    /// A character XML forbids is found in every writable column, named by it.
    #[test]
    fn every_writable_column_is_checked() {
        for column in WRITABLE {
            let why = unwritable(&crate::model::write::poisoned(column, "x\u{1}y"));
            assert!(
                why.iter().any(|w| w.starts_with(column)),
                "{column}: {why:?}"
            );
        }
    }

    /// Text the XML forbids and extended-property XML that would leave its element are
    /// refused by the rules and by the write.
    #[test]
    fn unwritable_values_are_refused() {
        let mut r = ContactRecord {
            display_name: Some("Ada\u{1}".into()),
            ..Default::default()
        };
        assert!(
            unwritable(&r)[0].starts_with("display_name"),
            "{:?}",
            unwritable(&r)
        );
        r.display_name = Some("Ada\r\n<&>\"'".into());
        assert!(unwritable(&r).is_empty());
        for (xml, ok) in [
            ("<a:b xmlns:a=\"urn:a\">text &amp; more</a:b>", true),
            ("plain text", true),
            ("", true),
            (
                "</gd:extendedProperty><gd:email address=\"injected@evil.example\"/><gd:extendedProperty>",
                false,
            ),
            ("<a>", false),
            ("</a>", false),
            ("&nbsp;", false),
            ("<?xml version=\"1.0\"?><a/>", false),
            ("<!DOCTYPE a [<!ENTITY e \"x\">]><a/>", false),
        ] {
            r.extended_properties = vec![crate::model::schema::ExtendedProperty {
                name: Some("n".into()),
                value: None,
                xml: Some(xml.into()),
            }];
            assert_eq!(unwritable(&r).is_empty(), ok, "{xml}");
            let op = Op {
                index: 1,
                account: "example.com".into(),
                key: "cetl-0123456789abcdef0123".into(),
                action: Action::Insert { desired: r.clone() },
            };
            assert_eq!(refused(&op).is_none(), ok, "{xml}");
            if !ok {
                assert_eq!(refused(&op).unwrap().outcome, Outcome::Invalid);
            }
        }
    }
}
