//! Entries rendered from records: each column group as the elements the API reads
//! (each declaring the namespaces it uses, so it stands anywhere), a new entry for an
//! insert, the values an entry cannot carry ([`unwritable`]), and the data size Google
//! counts.

use quick_xml::events::Event;
use quick_xml::reader::NsReader;

use super::{ATOM, GCONTACT, GD};
use crate::model::schema::{
    Address, ContactRecord, Email, Event as DatedEvent, ExtendedProperty, Im, Organization, Phone,
    Relation, Website,
};
use crate::model::write::{KEY_PROPERTY, WRITABLE, key_property};

/// Escapes text for an XML attribute or element. Tab, line feed and carriage return go
/// as character references, so a parser's attribute and line-end normalization cannot
/// change them; the characters XML 1.0 forbids anywhere (other C0 controls, U+FFFE,
/// U+FFFF) are dropped, and the write rules refuse them before anything is sent
/// ([`unwritable`]).
pub(super) fn esc(s: &str) -> String {
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
pub(super) fn is_xml_content(xml: &str) -> bool {
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
pub(super) fn elements_of(column: &str) -> (&'static str, &'static [&'static str]) {
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

/// `xmlns:gd`, declared on each rendered element so that it stands alone.
fn gd_decl() -> String {
    format!("xmlns:gd=\"{GD}\"")
}

/// `xmlns:gContact` and `xmlns:gd`, for the contact namespace's elements.
fn gcontact_decl() -> String {
    format!("xmlns:gContact=\"{GCONTACT}\" xmlns:gd=\"{GD}\"")
}

/// The elements of one column group of `r`, as an update or an insert sends them: the
/// name parts share `gd:name`; a list renders one element per item; an absent value
/// renders nothing.
pub(super) fn render_column(column: &str, r: &ContactRecord) -> String {
    fn each<T>(items: &[T], one: fn(&T) -> String) -> String {
        items.iter().map(one).collect()
    }
    match column {
        "display_name" | "given_name" | "family_name" | "middle_name" | "prefix" | "suffix" => {
            render_name(r)
        }
        "nickname" | "file_as" | "notes" | "birthday" => render_single(column, r),
        "emails" => each(&r.emails, email),
        "phones" => each(&r.phones, phone),
        "addresses" => each(&r.addresses, address),
        "ims" => each(&r.ims, im),
        "organizations" => each(&r.organizations, organization),
        "websites" => each(&r.websites, website),
        "relations" => each(&r.relations, relation),
        "events" => each(&r.events, event),
        "groups" => r
            .groups
            .iter()
            .map(|g| {
                format!(
                    "<gContact:groupMembershipInfo {} deleted=\"false\" href=\"{}\"/>",
                    gcontact_decl(),
                    esc(g)
                )
            })
            .collect(),
        "extended_properties" => each(&r.extended_properties, extended_property),
        _ => String::new(),
    }
}

/// `gd:name` with the name parts present, or nothing.
fn render_name(r: &ContactRecord) -> String {
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
        format!("<gd:name {}>{inner}</gd:name>", gd_decl())
    }
}

/// The element of a column with one value (nickname, file-as, notes, birthday).
fn render_single(column: &str, r: &ContactRecord) -> String {
    let c = gcontact_decl();
    // The element of a value, given the namespace declarations and the escaped value.
    type Element = fn(&str, &str) -> String;
    let (value, el): (&Option<String>, Element) = match column {
        "nickname" => (&r.nickname, |c, v| {
            format!("<gContact:nickname {c}>{v}</gContact:nickname>")
        }),
        "file_as" => (&r.file_as, |c, v| {
            format!("<gContact:fileAs {c}>{v}</gContact:fileAs>")
        }),
        "notes" => (&r.notes, |_, v| {
            format!("<content xmlns=\"{ATOM}\" type=\"text\">{v}</content>")
        }),
        "birthday" => (&r.birthday, |c, v| {
            format!("<gContact:birthday {c} when=\"{v}\"/>")
        }),
        _ => return String::new(),
    };
    value.as_ref().map(|v| el(&c, &esc(v))).unwrap_or_default()
}

/// ` name="value"` for an attribute present, else nothing.
fn attr(name: &str, v: &Option<String>) -> String {
    v.as_ref()
        .map(|v| format!(" {name}=\"{}\"", esc(v)))
        .unwrap_or_default()
}

fn email(e: &Email) -> String {
    format!(
        "<gd:email {}{}{} address=\"{}\"{}/>",
        gd_decl(),
        rel_or_label(&e.kind, &e.label, true),
        primary(e.primary),
        esc(e.address.as_deref().unwrap_or("")),
        attr("displayName", &e.display_name)
    )
}

fn phone(p: &Phone) -> String {
    format!(
        "<gd:phoneNumber {}{}{}{}>{}</gd:phoneNumber>",
        gd_decl(),
        rel_or_label(&p.kind, &p.label, true),
        primary(p.primary),
        attr("uri", &p.uri),
        esc(p.number.as_deref().unwrap_or(""))
    )
}

fn address(a: &Address) -> String {
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
        "<gd:structuredPostalAddress {}{}{}>{inner}</gd:structuredPostalAddress>",
        gd_decl(),
        rel_or_label(&a.kind, &a.label, true),
        primary(a.primary)
    )
}

fn im(i: &Im) -> String {
    format!(
        "<gd:im {} address=\"{}\"{}{}{}/>",
        gd_decl(),
        esc(i.address.as_deref().unwrap_or("")),
        i.protocol
            .as_ref()
            .map(|p| format!(" protocol=\"{GD}#{}\"", esc(p)))
            .unwrap_or_default(),
        rel_or_label(&i.kind, &i.label, true),
        primary(i.primary)
    )
}

fn organization(o: &Organization) -> String {
    format!(
        "<gd:organization {}{}{}>{}{}{}</gd:organization>",
        gd_decl(),
        rel_or_label(&o.kind, &o.label, true),
        primary(o.primary),
        text_el("gd", "orgName", &o.name),
        text_el("gd", "orgTitle", &o.title),
        text_el("gd", "orgDepartment", &o.department)
    )
}

fn website(w: &Website) -> String {
    format!(
        "<gContact:website {} href=\"{}\"{}{}/>",
        gcontact_decl(),
        esc(w.href.as_deref().unwrap_or("")),
        rel_or_label(&w.kind, &w.label, false),
        primary(w.primary)
    )
}

fn relation(x: &Relation) -> String {
    format!(
        "<gContact:relation {}{}>{}</gContact:relation>",
        gcontact_decl(),
        rel_or_label(&x.kind, &x.label, false),
        esc(x.name.as_deref().unwrap_or(""))
    )
}

fn event(e: &DatedEvent) -> String {
    format!(
        "<gContact:event {}{}><gd:when startTime=\"{}\"/></gContact:event>",
        gcontact_decl(),
        rel_or_label(&e.kind, &e.label, false),
        esc(e.start.as_deref().unwrap_or(""))
    )
}

fn extended_property(p: &ExtendedProperty) -> String {
    let d = gd_decl();
    let name = esc(p.name.as_deref().unwrap_or(""));
    match (&p.value, &p.xml) {
        (Some(v), _) => format!(
            "<gd:extendedProperty {d} name=\"{name}\" value=\"{}\"/>",
            esc(v)
        ),
        // `xml` is the property's content as XML (elements, or plain text as the API
        // allows): written back between the tags, never as an attribute.
        (None, Some(x)) => {
            format!("<gd:extendedProperty {d} name=\"{name}\">{x}</gd:extendedProperty>")
        }
        (None, None) => format!("<gd:extendedProperty {d} name=\"{name}\"/>"),
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
pub(super) fn group(column: &str) -> &str {
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
