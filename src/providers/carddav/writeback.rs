//! CardDAV writes (RFC 6352 §6.3.2, RFC 4918): a PUT of a whole vCard per contact.
//!
//! - **Insert:** a new vCard 3.0 (what every server takes) PUT to `<book>/<key>.vcf` with
//!   `If-None-Match: *`, where `key` is the operation's idempotent-insert key: the key is
//!   both the resource name and an `X-CONTACTS-ETL-KEY` property (and the `UID`). A retry
//!   of the same insert, after a crash or a lost reply, meets the existing resource (412)
//!   and, when that resource carries the key, is the insert already done, not a second
//!   contact.
//! - **Update:** the vCard as the server stores it, read by a GET that asks for the
//!   format its address book offers (4.0 when offered: a server that converts, as Cyrus
//!   does, renders a 4.0 card as 3.0 otherwise and loses its inline photo), with only the
//!   properties of the changed managed columns replaced, PUT under `If-Match: <etag>`.
//!   The GET's ETag must be that etag, else the row is a `conflict`. Every other content
//!   line is sent as the server gave it, byte for byte (X- properties, unknown parameters,
//!   groups, folding); so is an item of a changed list that equals a landed item in every
//!   modelled value. The card is then read back: a property the change did not name that
//!   differs in meaning from before makes the row `failed`, naming the properties.
//! - **Delete:** DELETE under `If-Match`; a 404 is "already deleted".
//! - A 412 is a `conflict`; with `--force` an update is merged onto the vCard as the
//!   server now holds it (PUT under the ETag of that GET) and a delete is sent without a
//!   condition. 400/403/415/422 are `invalid` with the server's reason; the rest `failed`.
//!
//! The merge works on content lines rather than through a vCard parser, because a parser
//! that re-serializes would rewrite the lines nobody asked to change.

use futures::future::BoxFuture;

use super::CardDavSource;
use super::dav::Precondition;
use crate::error::Result;
use crate::http::{HttpResponse, Metrics};
use crate::model::schema::ContactRecord;
use crate::model::write::{Action, KEY_PROPERTY, Op, OpResult, Outcome, merge_managed};

/// The vCard property that carries the idempotent-insert key.
pub const KEY_X_PROPERTY: &str = "X-CONTACTS-ETL-KEY";

/// The vCard properties a managed column is written through (upper case).
pub fn properties_of(column: &str) -> &'static [&'static str] {
    match column {
        "display_name" => &["FN"],
        "given_name" | "family_name" | "middle_name" | "prefix" | "suffix" => &["N"],
        "nickname" => &["NICKNAME"],
        "file_as" => &["SORT-STRING"],
        "emails" => &["EMAIL"],
        "phones" => &["TEL"],
        "addresses" => &["ADR"],
        "ims" => &["IMPP"],
        "organizations" => &["ORG", "TITLE"],
        "websites" => &["URL"],
        "relations" => &["RELATED"],
        "events" => &["ANNIVERSARY"],
        "notes" => &["NOTE"],
        "birthday" => &["BDAY"],
        "groups" => &["CATEGORIES"],
        _ => &[],
    }
}

/// One logical content line of a vCard: its text as sent (folded, with its line break)
/// and its property name and group.
#[derive(Debug, Clone)]
struct Line<'a> {
    original: &'a str,
    group: Option<String>,
    name: String,
}

/// Splits a vCard into logical content lines, keeping each one's bytes.
fn lines(raw: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            // A line that begins with a space or tab continues the previous one.
            let next = bytes.get(i + 1);
            if next != Some(&b' ') && next != Some(&b'\t') {
                out.push(line(&raw[start..=i]));
                start = i + 1;
            }
        }
        i += 1;
    }
    if start < raw.len() {
        out.push(line(&raw[start..]));
    }
    out
}

fn line(original: &str) -> Line<'_> {
    let head_end = original
        .find([':', ';', '\r', '\n'])
        .unwrap_or(original.len());
    let head = original[..head_end].trim();
    let (group, name) = match head.rsplit_once('.') {
        Some((g, n)) => (Some(g.to_ascii_lowercase()), n),
        None => (None, head),
    };
    Line {
        original,
        group,
        name: name.to_ascii_uppercase(),
    }
}

/// The `VERSION` of a vCard (3.0 when absent).
fn version(ls: &[Line]) -> Version {
    let v = ls
        .iter()
        .find(|l| l.name == "VERSION")
        .map(|l| l.original.split_once(':').map_or("", |(_, v)| v.trim()));
    if v == Some("4.0") {
        Version::V4
    } else {
        Version::V3
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Version {
    V3,
    V4,
}

/// Escapes a text value (RFC 6350 §3.4): `\`, `,` and `;` are escaped and a line break
/// (CRLF, LF, a lone CR, or a Unicode line or paragraph separator) becomes `\n`, so a value never leaves its property. Other
/// control characters, which no vCard value can carry, are dropped; the write rules refuse
/// them before anything is sent ([`unwritable`]).
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => o.push_str("\\\\"),
            ',' => o.push_str("\\,"),
            ';' => o.push_str("\\;"),
            '\n' | '\u{2028}' | '\u{2029}' => o.push_str("\\n"),
            '\r' if chars.peek() != Some(&'\n') => o.push_str("\\n"),
            '\t' => o.push('\t'),
            c if c.is_control() => {}
            c => o.push(c),
        }
    }
    o
}

/// A character that would end a content line or that no vCard value may hold.
fn breaks_line(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// A URI value (`URL`, `IMPP`) as written. A URI takes no escapes (RFC 6350 §5.6), so one
/// holding a line break or control character cannot be written: the write rules refuse it
/// ([`unwritable`]), and should one come through it loses those characters here rather
/// than start a new property.
fn uri(s: &str) -> String {
    s.chars().filter(|c| !breaks_line(*c)).collect()
}

/// A date value (`BDAY`, `ANNIVERSARY`) with its `:`: the date as it is when it is one
/// ([`is_date`]), else the value as escaped text (`VALUE=text`, RFC 6350 §6.2.5).
fn date_value(s: &str) -> String {
    if is_date(s) {
        format!(":{s}")
    } else {
        format!(";VALUE=text:{}", esc(s))
    }
}

/// Whether `s` is a date the way the decoder lands one and a vCard date carries it:
/// `YYYY-MM-DD`, `YYYYMMDD`, `--MM-DD`, `--MMDD`, `YYYY-MM` or `YYYY`, of a day that
/// exists (a year-less 29 February does).
pub fn is_date(s: &str) -> bool {
    if !s.is_ascii() {
        return false;
    }
    let num = |t: &str| {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u32>().ok())
            .flatten()
    };
    let day = |y: Option<u32>, m: Option<u32>, d: Option<u32>| match (y, m, d) {
        (Some(y), Some(m), Some(d)) => chrono::NaiveDate::from_ymd_opt(y as i32, m, d).is_some(),
        _ => false,
    };
    let b = s.as_bytes();
    match (s.len(), s.strip_prefix("--")) {
        (7, Some(md)) => b[4] == b'-' && day(Some(2000), num(&md[..2]), num(&md[3..])),
        (6, Some(md)) => day(Some(2000), num(&md[..2]), num(&md[2..])),
        (10, None) => {
            b[4] == b'-' && b[7] == b'-' && day(num(&s[..4]), num(&s[5..7]), num(&s[8..]))
        }
        (8, None) => day(num(&s[..4]), num(&s[4..6]), num(&s[6..])),
        (7, None) => b[4] == b'-' && day(num(&s[..4]), num(&s[5..]), Some(1)),
        (4, None) => num(s).is_some(),
        _ => false,
    }
}

/// The values of `r` a vCard cannot carry as they are, each named by its column: a URI
/// (`websites[].href`, `ims[].address`, `ims[].protocol`) holding a line break or control
/// character, a `birthday` or `events[].start` that is not a date ([`is_date`]), a text
/// holding a control character other than a tab or a line break, an extended property
/// named as the insert key's property. The write rules refuse these, and a write that
/// would carry one is refused without being sent.
pub fn unwritable(r: &ContactRecord) -> Vec<String> {
    let mut out = Vec::new();
    let control = |v: &str| {
        v.chars()
            .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    };
    let mut text = |what: String, v: Option<&str>| {
        if let Some(c) = v.and_then(control) {
            out.push(format!(
                "{what} holds the control character U+{:04X}, which a vCard cannot carry",
                c as u32
            ));
        }
    };
    for (what, v) in [
        ("display_name", &r.display_name),
        ("given_name", &r.given_name),
        ("family_name", &r.family_name),
        ("middle_name", &r.middle_name),
        ("prefix", &r.prefix),
        ("suffix", &r.suffix),
        ("nickname", &r.nickname),
        ("file_as", &r.file_as),
        ("notes", &r.notes),
    ] {
        text(what.into(), v.as_deref());
    }
    for (i, e) in r.emails.iter().enumerate() {
        text(format!("emails[{i}].address"), e.address.as_deref());
    }
    for (i, p) in r.phones.iter().enumerate() {
        text(format!("phones[{i}].number"), p.number.as_deref());
    }
    for (i, a) in r.addresses.iter().enumerate() {
        for (part, v) in [
            ("po_box", &a.po_box),
            ("street", &a.street),
            ("city", &a.city),
            ("region", &a.region),
            ("postcode", &a.postcode),
            ("country", &a.country),
        ] {
            text(format!("addresses[{i}].{part}"), v.as_deref());
        }
    }
    for (i, o) in r.organizations.iter().enumerate() {
        for (part, v) in [
            ("name", &o.name),
            ("title", &o.title),
            ("department", &o.department),
        ] {
            text(format!("organizations[{i}].{part}"), v.as_deref());
        }
    }
    for (i, x) in r.relations.iter().enumerate() {
        text(format!("relations[{i}].name"), x.name.as_deref());
    }
    for (i, g) in r.groups.iter().enumerate() {
        text(format!("groups[{i}]"), Some(g));
    }
    for (i, p) in r.extended_properties.iter().enumerate() {
        text(
            format!("extended_properties[{i}].value"),
            p.value.as_deref(),
        );
    }
    let mut uri = |what: String, v: Option<&str>| {
        if let Some(c) = v.and_then(|v| v.chars().find(|c| breaks_line(*c))) {
            out.push(format!(
                "{what} holds a line break or control character (U+{:04X}); a URI in a vCard cannot carry one",
                c as u32
            ));
        }
    };
    for (i, w) in r.websites.iter().enumerate() {
        uri(format!("websites[{i}].href"), w.href.as_deref());
    }
    for (i, im) in r.ims.iter().enumerate() {
        uri(format!("ims[{i}].address"), im.address.as_deref());
        uri(format!("ims[{i}].protocol"), im.protocol.as_deref());
    }
    let mut date = |what: String, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !is_date(v)) {
            out.push(format!(
                "{what} {v:?} is not a date (YYYY-MM-DD, --MM-DD for no year, YYYY-MM or YYYY)"
            ));
        }
    };
    date("birthday".into(), r.birthday.as_deref());
    for (i, e) in r.events.iter().enumerate() {
        date(format!("events[{i}].start"), e.start.as_deref());
    }
    for (i, p) in r.extended_properties.iter().enumerate() {
        if p.name.as_deref() != Some(KEY_PROPERTY)
            && p.name
                .as_deref()
                .is_some_and(|n| x_name(n) == KEY_X_PROPERTY)
        {
            out.push(format!(
                "extended_properties[{i}].name {:?} is the property that carries this tool's insert key",
                p.name.as_deref().unwrap_or("")
            ));
        }
    }
    out
}

/// The X- property name an extended property is written as.
fn x_name(name: &str) -> String {
    let name = name.to_ascii_uppercase();
    if name.starts_with("X-") {
        name
    } else {
        format!("X-{name}")
    }
}

fn opt(v: &Option<String>) -> String {
    v.as_deref().map(esc).unwrap_or_default()
}

/// A parameter value, quoted when it holds a separator.
fn param(v: &str) -> String {
    let v: String = v
        .chars()
        .filter(|c| *c != '"' && !breaks_line(*c))
        .collect();
    if v.contains([':', ';', ',']) {
        format!("\"{v}\"")
    } else {
        v
    }
}

/// Folds a content line at 75 octets (RFC 6350 §3.2), on character boundaries, and ends it
/// with CRLF.
fn fold(unfolded: &str) -> String {
    let mut out = String::with_capacity(unfolded.len() + 8);
    let mut width = 0;
    for c in unfolded.chars() {
        let n = c.len_utf8();
        if width + n > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += n;
    }
    out.push_str("\r\n");
    out
}

/// `;TYPE=…` (and `PREF`) for a kind and a primary flag, in the version's form.
fn type_params(kind: &Option<String>, primary: Option<bool>, v: Version) -> String {
    let mut types: Vec<String> = kind
        .as_deref()
        .filter(|k| !k.is_empty())
        .map(|k| vec![param(k)])
        .unwrap_or_default();
    let mut s = String::new();
    if primary == Some(true) {
        match v {
            Version::V3 => types.push("pref".into()),
            Version::V4 => s.push_str(";PREF=1"),
        }
    }
    if !types.is_empty() {
        s.insert_str(0, &format!(";TYPE={}", types.join(",")));
    }
    s
}

/// The content lines (folded, CRLF) one column group renders for `r`.
fn render(prop: &str, r: &ContactRecord, v: Version) -> Vec<String> {
    let lines = match prop {
        "EMAIL" | "TEL" | "ADR" | "IMPP" | "URL" | "RELATED" | "ANNIVERSARY" => {
            list_lines(prop, r, v)
        }
        _ => single_lines(prop, r, v),
    };
    lines.iter().map(|l| fold(l)).collect()
}

/// The unfolded lines of a group with one value (or one line): the names, notes, dates,
/// categories, the first organization and its title.
fn single_lines(prop: &str, r: &ContactRecord, v: Version) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    match prop {
        "FN" => {
            let n = display_name(r);
            out.push(format!("FN:{}", esc(&n)));
        }
        // vCard 3.0 requires N; 4.0 only when there is a name part.
        "N" if v == Version::V3 || has_name_part(r) => out.push(format!(
            "N:{};{};{};{};{}",
            opt(&r.family_name),
            opt(&r.given_name),
            opt(&r.middle_name),
            opt(&r.prefix),
            opt(&r.suffix)
        )),
        "NICKNAME" => r
            .nickname
            .iter()
            .for_each(|n| out.push(format!("NICKNAME:{}", esc(n)))),
        "SORT-STRING" => r
            .file_as
            .iter()
            .for_each(|n| out.push(format!("SORT-STRING:{}", esc(n)))),
        "NOTE" => r
            .notes
            .iter()
            .for_each(|n| out.push(format!("NOTE:{}", esc(n)))),
        "BDAY" => r
            .birthday
            .iter()
            .for_each(|b| out.push(format!("BDAY{}", date_value(b)))),
        "CATEGORIES" if !r.groups.is_empty() => {
            let g: Vec<String> = r.groups.iter().map(|g| esc(g)).collect();
            out.push(format!("CATEGORIES:{}", g.join(",")));
        }
        "ORG" => {
            if let Some(o) = r.organizations.first()
                && (o.name.is_some() || o.department.is_some())
            {
                let mut s = format!("ORG:{}", opt(&o.name));
                if o.department.is_some() {
                    s.push_str(&format!(";{}", opt(&o.department)));
                }
                out.push(s);
            }
        }
        "TITLE" => {
            if let Some(t) = r.organizations.first().and_then(|o| o.title.as_ref()) {
                out.push(format!("TITLE:{}", esc(t)));
            }
        }
        _ => {}
    }
    out
}

/// The unfolded lines of a list group, one per item that has its value.
fn list_lines(prop: &str, r: &ContactRecord, v: Version) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    match prop {
        "EMAIL" => {
            for e in &r.emails {
                if let Some(a) = &e.address {
                    out.push(format!(
                        "EMAIL{}:{}",
                        type_params(&e.kind, e.primary, v),
                        esc(a)
                    ));
                }
            }
        }
        "TEL" => {
            for p in &r.phones {
                if let Some(n) = &p.number {
                    out.push(format!(
                        "TEL{}:{}",
                        type_params(&p.kind, p.primary, v),
                        esc(n)
                    ));
                }
            }
        }
        "ADR" => {
            for a in &r.addresses {
                out.push(format!(
                    "ADR{}:{};;{};{};{};{};{}",
                    type_params(&a.kind, a.primary, v),
                    opt(&a.po_box),
                    opt(&a.street),
                    opt(&a.city),
                    opt(&a.region),
                    opt(&a.postcode),
                    opt(&a.country)
                ));
            }
        }
        "IMPP" => {
            for im in &r.ims {
                if let Some(a) = &im.address {
                    let value = match &im.protocol {
                        Some(p) if !a.contains(':') => format!("{}:{a}", p.to_ascii_lowercase()),
                        _ => a.clone(),
                    };
                    out.push(format!(
                        "IMPP{}:{}",
                        type_params(&im.kind, im.primary, v),
                        uri(&value)
                    ));
                }
            }
        }
        "URL" => {
            for w in &r.websites {
                if let Some(h) = &w.href {
                    out.push(format!(
                        "URL{}:{}",
                        type_params(&w.kind, w.primary, v),
                        uri(h)
                    ));
                }
            }
        }
        "RELATED" => {
            for x in &r.relations {
                if let Some(n) = &x.name {
                    let t = x
                        .kind
                        .as_deref()
                        .map(|k| format!(";TYPE={}", param(k)))
                        .unwrap_or_default();
                    out.push(format!("RELATED{t};VALUE=text:{}", esc(n)));
                }
            }
        }
        "ANNIVERSARY" => {
            for e in &r.events {
                if let Some(s) = &e.start {
                    out.push(format!("ANNIVERSARY{}", date_value(s)));
                }
            }
        }
        _ => {}
    }
    out
}

fn has_name_part(r: &ContactRecord) -> bool {
    [
        &r.family_name,
        &r.given_name,
        &r.middle_name,
        &r.prefix,
        &r.suffix,
    ]
    .iter()
    .any(|x| x.is_some())
}

/// FN: the display name, or the name parts joined (the rules refuse a contact with none).
fn display_name(r: &ContactRecord) -> String {
    match r.display_name.as_deref().filter(|n| !n.trim().is_empty()) {
        Some(n) => n.to_string(),
        None => [
            &r.prefix,
            &r.given_name,
            &r.middle_name,
            &r.family_name,
            &r.suffix,
        ]
        .iter()
        .filter_map(|x| x.as_deref())
        .filter(|x| !x.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" "),
    }
}

/// The X- lines of the extended properties (the key stays as it is held).
fn render_extended(r: &ContactRecord) -> Vec<String> {
    r.extended_properties
        .iter()
        .filter(|p| p.name.as_deref() != Some(KEY_PROPERTY))
        .filter_map(|p| {
            let name = x_name(p.name.as_deref()?);
            // Only the tool writes its insert key's property.
            let ok = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && name != KEY_X_PROPERTY;
            ok.then(|| fold(&format!("{name}:{}", esc(p.value.as_deref().unwrap_or("")))))
        })
        .collect()
}

/// Index `i` of the desired list equals a landed item in every modelled value: the
/// position of that landed item.
fn same_item(prop: &str, d: &ContactRecord, l: &ContactRecord, i: usize) -> Option<usize> {
    use crate::model::write::landed_position as find;
    match prop {
        "EMAIL" => find(&d.emails, &l.emails, i),
        "TEL" => find(&d.phones, &l.phones, i),
        "ADR" => find(&d.addresses, &l.addresses, i),
        "IMPP" => find(&d.ims, &l.ims, i),
        "URL" => find(&d.websites, &l.websites, i),
        _ => None,
    }
}

/// How many items of a list property the landed record holds (to map lines to items).
fn landed_len(prop: &str, l: &ContactRecord) -> Option<usize> {
    Some(match prop {
        "EMAIL" => l.emails.len(),
        "TEL" => l.phones.len(),
        "ADR" => l.addresses.len(),
        "IMPP" => l.ims.len(),
        "URL" => l.websites.len(),
        _ => return None,
    })
}

/// One line of a replaced property: a held line kept as it was (its index in the vCard),
/// or a new one.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Held(usize),
    New(String),
}

/// The new lines of a replaced property: a held line is kept where its item is unchanged.
/// `held` are the indexes of the property's lines in `ls`.
fn replacement(
    prop: &str,
    ls: &[Line],
    held: &[usize],
    merged: &ContactRecord,
    landed: &ContactRecord,
    v: Version,
) -> Vec<Item> {
    let fresh = render(prop, merged, v);
    // Held lines map to landed items one to one only when the counts agree; otherwise
    // everything of the property is rendered anew.
    if landed_len(prop, landed) != Some(held.len()) {
        return fresh.into_iter().map(Item::New).collect();
    }
    // A scalar property whose new text is the held text stays as it was.
    if landed_len(prop, landed).is_none() {
        return if fresh.len() == held.len()
            && held
                .iter()
                .zip(&fresh)
                .all(|(&j, f)| unfold(ls[j].original) == unfold(f))
        {
            held.iter().map(|&j| Item::Held(j)).collect()
        } else {
            fresh.into_iter().map(Item::New).collect()
        };
    }
    fresh
        .into_iter()
        .enumerate()
        .map(|(i, line)| match same_item(prop, merged, landed, i) {
            Some(j) => Item::Held(held[j]),
            None => Item::New(line),
        })
        .collect()
}

/// A content line without its folding and line break.
fn unfold(l: &str) -> String {
    l.replace("\r\n ", "")
        .replace("\r\n\t", "")
        .replace("\n ", "")
        .trim_end_matches(['\r', '\n'])
        .to_string()
}

/// The landed vCard with the properties of the `changed` columns replaced by their
/// values in `merged` (the landed contact with the managed columns of the desired one).
/// Every other line is kept byte for byte and in place, and so is a held line of a
/// changed list whose item did not change; new lines go where the property's lines stood
/// (before `END` for a property the contact did not have). A grouped line that is dropped
/// takes its group's `X-ABLABEL` with it (an Apple label means nothing without its item).
pub fn merge_vcard(
    raw: &str,
    merged: &ContactRecord,
    landed: &ContactRecord,
    changed: &[String],
) -> String {
    let ls = lines(raw);
    let v = version(&ls);
    let mut props: Vec<&str> = Vec::new();
    for c in changed {
        for p in properties_of(c) {
            if !props.contains(p) {
                props.push(p);
            }
        }
    }
    let extended = changed.iter().any(|c| c == "extended_properties");
    // The property group a line of `ls` belongs to, if it is replaced.
    let group_of = |l: &Line| -> Option<String> {
        if props.contains(&l.name.as_str()) {
            Some(l.name.clone())
        } else if extended
            && l.name.starts_with("X-")
            && l.name != KEY_X_PROPERTY
            && l.name != "X-ABLABEL"
        {
            Some("X-".into())
        } else {
            None
        }
    };
    let held_of = |key: &str| -> Vec<usize> {
        (0..ls.len())
            .filter(|&i| group_of(&ls[i]).as_deref() == Some(key))
            .collect()
    };
    let mut queues: Vec<(String, std::collections::VecDeque<Item>, Option<usize>)> = props
        .iter()
        .map(|p| {
            let held = held_of(p);
            let items = replacement(p, &ls, &held, merged, landed, v);
            (p.to_string(), items.into(), held.last().copied())
        })
        .collect();
    if extended {
        let held = held_of("X-");
        let items = render_extended(merged).into_iter().map(Item::New).collect();
        queues.push(("X-".into(), items, held.last().copied()));
    }
    let kept: std::collections::HashSet<usize> = queues
        .iter()
        .flat_map(|(_, q, _)| q.iter())
        .filter_map(|i| match i {
            Item::Held(j) => Some(*j),
            Item::New(_) => None,
        })
        .collect();
    let dropped_groups: std::collections::HashSet<&str> = ls
        .iter()
        .enumerate()
        .filter(|(i, l)| group_of(l).is_some() && !kept.contains(i))
        .filter_map(|(_, l)| l.group.as_deref())
        .collect();
    let push = |out: &mut String, item: Item| match item {
        Item::Held(j) => out.push_str(ls[j].original),
        Item::New(t) => out.push_str(&t),
    };
    let mut out = String::with_capacity(raw.len() + 256);
    for (x, l) in ls.iter().enumerate() {
        if l.name == "END" {
            // What had no held line goes last, before END.
            for (_, q, _) in queues.iter_mut() {
                q.drain(..).for_each(|i| push(&mut out, i));
            }
            out.push_str(l.original);
            continue;
        }
        if let Some(key) = group_of(l) {
            // `group_of` names only groups a queue was made for just above.
            let (_, q, last) = queues.iter_mut().find(|(k, _, _)| *k == key).unwrap();
            // A kept line comes out in its place, after the new lines before it.
            if let Some(at) = q.iter().position(|i| *i == Item::Held(x)) {
                q.drain(..=at).for_each(|i| push(&mut out, i));
            }
            // After the property's last held line, the rest of its new lines.
            if *last == Some(x) {
                q.drain(..).for_each(|i| push(&mut out, i));
            }
            continue;
        }
        if l.name == "X-ABLABEL"
            && l.group
                .as_deref()
                .is_some_and(|g| dropped_groups.contains(g))
        {
            continue;
        }
        out.push_str(l.original);
    }
    out
}

/// A new vCard 3.0 for `desired`'s managed columns, stamped with the insert key.
pub fn insert_vcard(desired: &ContactRecord, managed: &[String], key: &str) -> String {
    let mut out = String::from("BEGIN:VCARD\r\nVERSION:3.0\r\n");
    out.push_str(&fold(&format!("UID:{}", esc(key))));
    let mut props: Vec<&str> = vec!["FN", "N"];
    for c in managed {
        for p in properties_of(c) {
            if !props.contains(p) {
                props.push(p);
            }
        }
    }
    for p in props {
        for l in render(p, desired, Version::V3) {
            out.push_str(&l);
        }
    }
    if managed.iter().any(|c| c == "extended_properties") {
        for l in render_extended(desired) {
            out.push_str(&l);
        }
    }
    out.push_str(&fold(&format!("{KEY_X_PROPERTY}:{}", esc(key))));
    out.push_str("END:VCARD\r\n");
    out
}

/// The href of the member named `name` of the address book whose account id is
/// `account` (see [`super::config::book_of`]).
fn member_href(account: &str, name: &str) -> String {
    let book = super::config::book_of(account).unwrap_or_else(|| format!("/{account}/"));
    format!("{}/{name}.vcf", book.trim_end_matches('/'))
}

/// The path of a DAV href (a path, or a whole URL) as a server resolves it: escapes
/// decoded, `.` and `..` segments resolved; `None` for one that climbs above the root or
/// holds a control character or a backslash.
fn resolved_path(href: &str) -> Option<String> {
    let path = match href.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => href,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decoded(path)?;
    if decoded.chars().any(|c| c.is_control() || c == '\\') {
        return None;
    }
    let mut segs: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop()?;
            }
            s => segs.push(s),
        }
    }
    Some(format!("/{}", segs.join("/")))
}

/// `%XX` escapes decoded; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decoded(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Refuses a write to `href` unless it names a member of the address book of `account`:
/// a write never leaves the account it belongs to.
fn inside_book(account: &str, href: &str) -> std::result::Result<(), String> {
    let book = super::config::book_of(account).unwrap_or_else(|| format!("/{account}/"));
    let (Some(book), Some(at)) = (resolved_path(&book), resolved_path(href)) else {
        return Err(format!(
            "{href} is outside the address book of {account}: not a path that stays inside it"
        ));
    };
    let book = format!("{}/", book.trim_end_matches('/'));
    if at.len() > book.len() && at.starts_with(&book) && !at[book.len()..].contains('/') {
        Ok(())
    } else {
        Err(format!(
            "{href} is outside the address book {book}; a write goes only to a member of its account's address book"
        ))
    }
}

/// The properties (upper case) a change of the `changed` columns rewrites, and whether
/// it rewrites the X- properties (`extended_properties`), as [`merge_vcard`] does.
fn named_properties(changed: &[String]) -> (Vec<&'static str>, bool) {
    let mut props: Vec<&'static str> = Vec::new();
    for c in changed {
        for p in properties_of(c) {
            if !props.contains(p) {
                props.push(p);
            }
        }
    }
    (props, changed.iter().any(|c| c == "extended_properties"))
}

/// Splits `s` at each `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// A content line in a form two renderings of the same meaning share: unfolded; group,
/// name and parameter names in one case; parameters sorted, `TYPE` values (however
/// written: `TYPE=a,b`, `TYPE=a;TYPE=b`, a bare 3.0 `;a`) as one sorted, lower-case set;
/// quotes around parameter values dropped. The value is kept as it is.
fn meaning(original: &str) -> String {
    let text = unfold(original);
    let colon = {
        let mut quoted = false;
        text.char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    quoted = !quoted;
                }
                c == ':' && !quoted
            })
            .map_or(text.len(), |(i, _)| i)
    };
    let (head, value) = (&text[..colon], text.get(colon + 1..).unwrap_or(""));
    let parts = split_unquoted(head, ';');
    let mut types: Vec<String> = Vec::new();
    let mut params: Vec<String> = Vec::new();
    for p in &parts[1..] {
        let (k, v) = p.split_once('=').unwrap_or(("TYPE", p));
        let k = k.trim().to_ascii_uppercase();
        let vs = split_unquoted(v, ',')
            .into_iter()
            .map(|x| x.trim().trim_matches('"').to_string());
        if k == "TYPE" {
            types.extend(vs.map(|x| x.to_ascii_lowercase()));
        } else {
            params.push(format!("{k}={}", vs.collect::<Vec<_>>().join(",")));
        }
    }
    types.sort();
    types.dedup();
    if !types.is_empty() {
        params.push(format!("TYPE={}", types.join(",")));
    }
    params.sort();
    let mut out = parts[0].trim().to_ascii_uppercase();
    for p in params {
        out.push(';');
        out.push_str(&p);
    }
    out.push(':');
    out.push_str(value);
    out
}

/// The properties (upper case, sorted) whose lines differ in meaning between two
/// versions of a vCard, leaving out what a change of the `changed` columns rewrites: the
/// named properties, the lines grouped with them (an Apple label goes with its item),
/// and the X- properties when `extended_properties` changed. Empty: the write kept
/// everything else.
pub fn unasked_differences(before: &str, after: &str, changed: &[String]) -> Vec<String> {
    let (props, extended) = named_properties(changed);
    let (b, a) = (lines(before), lines(after));
    let named = |l: &Line| {
        props.contains(&l.name.as_str())
            || (extended
                && l.name.starts_with("X-")
                && l.name != KEY_X_PROPERTY
                && l.name != "X-ABLABEL")
    };
    let groups: std::collections::HashSet<&str> = b
        .iter()
        .chain(&a)
        .filter(|l| named(l))
        .filter_map(|l| l.group.as_deref())
        .collect();
    let kept = |ls: &[Line]| -> std::collections::BTreeMap<String, Vec<String>> {
        let mut m: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for l in ls.iter().filter(|l| !l.original.trim().is_empty()) {
            if named(l) || l.group.as_deref().is_some_and(|g| groups.contains(g)) {
                continue;
            }
            m.entry(l.name.clone())
                .or_default()
                .push(meaning(l.original));
        }
        m.values_mut().for_each(|v| v.sort());
        m
    };
    let (kb, ka) = (kept(&b), kept(&a));
    let mut names: Vec<String> = kb
        .keys()
        .chain(ka.keys())
        .filter(|n| kb.get(*n) != ka.get(*n))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

/// An inline binary line (PHOTO, LOGO, SOUND, KEY) as its `data:` URI, however the
/// version writes it (3.0: `;ENCODING=b;TYPE=JPEG:<base64>`, 4.0:
/// `:data:image/jpeg;base64,<base64>`), with its other parameters; `None` for another
/// line.
fn binary_as_data_uri(original: &str) -> Option<String> {
    let l = line(original);
    let top = match l.name.as_str() {
        "PHOTO" | "LOGO" => "image",
        "SOUND" => "audio",
        "KEY" => "application",
        _ => return None,
    };
    let text = unfold(original);
    let (head, value) = text.split_once(':')?;
    let parts = split_unquoted(head, ';');
    let (mut encoded, mut kind, mut rest) = (false, None::<String>, Vec::new());
    for p in &parts[1..] {
        let (k, v) = p.split_once('=').unwrap_or(("TYPE", p));
        let v = v.trim().trim_matches('"').to_ascii_lowercase();
        match k.trim().to_ascii_uppercase().as_str() {
            "ENCODING" => encoded = v == "b" || v == "base64",
            "TYPE" => kind = Some(v),
            "VALUE" => {}
            k => rest.push(format!("{k}={v}")),
        }
    }
    let uri = if encoded {
        let mime = match kind {
            Some(t) if t.contains('/') => t,
            Some(t) => format!("{top}/{t}"),
            None => format!("{top}/*"),
        };
        format!("data:{mime};base64,{value}")
    } else if value.starts_with("data:") {
        value.to_string()
    } else {
        return None;
    };
    rest.sort();
    let mut out = parts[0].trim().to_ascii_uppercase();
    for p in rest {
        out.push(';');
        out.push_str(&p);
    }
    Some(format!("{out}:{uri}"))
}

/// Whether two renderings of one card in different vCard versions say the same: every
/// line alike in meaning, the `VERSION` aside and an inline binary read as its `data:`
/// URI. (A server that converts, as Cyrus does, renders a 3.0 card as 4.0 without loss;
/// its 3.0 rendering of a 4.0 card loses what 3.0 writes another way, e.g. a photo.)
fn same_across_versions(a: &str, b: &str) -> bool {
    let canonical = |text: &str| -> Vec<String> {
        let mut v: Vec<String> = lines(text)
            .iter()
            .filter(|l| !l.original.trim().is_empty() && l.name != "VERSION")
            .map(|l| binary_as_data_uri(l.original).unwrap_or_else(|| meaning(l.original)))
            .collect();
        v.sort();
        v
    };
    canonical(a) == canonical(b)
}

/// The `VERSION` of a vCard's text (3.0 when absent).
fn version_of(text: &str) -> &'static str {
    match version(&lines(text)) {
        Version::V3 => "3.0",
        Version::V4 => "4.0",
    }
}

/// An ETag without its weak marker, for comparing what a GET and a listing sent.
fn same_etag(a: &str, b: &str) -> bool {
    let strong = |e: &str| e.trim().trim_start_matches("W/").to_string();
    strong(a) == strong(b)
}

/// The href a landed contact lives at: `native.href` as the server sent it, else its
/// address book and id.
fn landed_href(account: &str, landed: &ContactRecord) -> String {
    landed
        .native
        .as_deref()
        .and_then(|n| serde_json::from_str::<serde_json::Value>(n).ok())
        .and_then(|v| v.get("href")?.as_str().map(str::to_string))
        .unwrap_or_else(|| member_href(account, &landed.id))
}

fn etag_of(resp: &HttpResponse) -> Option<String> {
    resp.headers
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The result of a write from its response.
fn outcome(op: &Op, id: Option<String>, resp: &HttpResponse) -> OpResult {
    let mut r = OpResult {
        index: op.index,
        http_status: Some(resp.status),
        id,
        new_etag: etag_of(resp),
        ..Default::default()
    };
    r.outcome = match resp.status {
        200..=299 => Outcome::Ok,
        412 => Outcome::Conflict,
        // The server's own validation decides what the local rules left to it.
        400 | 403 | 415 | 422 => Outcome::Invalid,
        _ => Outcome::Failed,
    };
    if r.outcome != Outcome::Ok {
        r.reason = Some(resp.describe());
        r.error = Some(format!("HTTP {}: {}", resp.status, resp.describe()));
    }
    r
}

impl CardDavSource {
    async fn apply_one(
        &self,
        op: &Op,
        managed: &[String],
        force: bool,
        metrics: &Metrics,
    ) -> Result<OpResult> {
        let what = format!(
            "source {}: address book {}: {} {}",
            self.name,
            op.account,
            op.kind().as_str(),
            op.id().unwrap_or("(new)")
        );
        match &op.action {
            Action::Insert { desired } => {
                let href = member_href(&op.account, &op.key);
                let card = insert_vcard(desired, managed, &op.key);
                let resp = self
                    .dav
                    .put(&href, &card, Precondition::Create, &what, metrics)
                    .await?;
                if resp.status != 412 {
                    return Ok(outcome(op, Some(op.key.clone()), &resp));
                }
                // The resource exists: the same insert, done before a crash or a lost
                // reply, when it carries the key; else someone else's contact.
                let held = self.dav.get(&href, &what, metrics).await?;
                let text = String::from_utf8_lossy(&held.body);
                let ours = lines(&text).iter().any(|l| {
                    l.name == KEY_X_PROPERTY
                        && l.original
                            .split_once(':')
                            .is_some_and(|(_, v)| v.trim() == op.key)
                });
                let mut r = outcome(op, Some(op.key.clone()), &held);
                if held.status == 200 && ours {
                    r.reason = Some("already inserted".into());
                } else {
                    r.outcome = Outcome::Conflict;
                    r.reason = Some(format!("{href} exists and is not this insert"));
                    r.error = r.reason.clone();
                }
                Ok(r)
            }
            Action::Update {
                id,
                etag,
                desired,
                landed,
                changed,
            } => {
                let mut merged = landed.clone();
                merge_managed(&mut merged, desired, managed);
                let href = landed_href(&op.account, landed);
                if etag.is_none() && !force {
                    return Ok(OpResult::failed(
                        op.index,
                        None,
                        format!("{what}: no etag to write under; sync first"),
                    ));
                }
                self.update_stored(
                    op,
                    id,
                    etag.as_deref(),
                    &href,
                    &merged,
                    landed,
                    changed,
                    force,
                    &what,
                    metrics,
                )
                .await
            }
            Action::Delete { id, etag, landed } => {
                let href = landed_href(&op.account, landed);
                let cond = match (etag.as_deref(), force) {
                    (_, true) | (None, _) => Precondition::None,
                    (Some(e), false) => Precondition::Match(e),
                };
                let resp = self.dav.delete(&href, cond, &what, metrics).await?;
                let mut r = outcome(op, Some(id.clone()), &resp);
                if resp.status == 404 {
                    r.outcome = Outcome::Ok;
                    r.reason = Some("already deleted".into());
                    r.error = None;
                }
                Ok(r)
            }
        }
    }
}

/// The `invalid` result of a write that would go outside its account's address book or
/// use an insert key the tool does not make, or would carry a value a vCard cannot
/// ([`unwritable`]; a value the contact already held as it is does not count), sent
/// nowhere; `None` for a write that can go.
fn refused(op: &Op) -> Option<OpResult> {
    let href = match &op.action {
        Action::Insert { .. } => member_href(&op.account, &op.key),
        Action::Update { landed, .. } | Action::Delete { landed, .. } => {
            landed_href(&op.account, landed)
        }
    };
    let mut wrong: Vec<String> = inside_book(&op.account, &href).err().into_iter().collect();
    if matches!(op.action, Action::Insert { .. }) && !crate::model::write::is_insert_key(&op.key) {
        wrong.push(format!(
            "insert key {:?} is not one contacts-etl makes (cetl- and 20 hex digits)",
            op.key
        ));
    }
    let (mut problems, id) = crate::model::write::write_problems(op, unwritable);
    problems.splice(0..0, wrong);
    crate::model::write::refused_result(op, id, &problems)
}

/// A stored card as a GET answered it: the response, its text, its ETag, and whether
/// its format was checked against the newest the book offers.
struct Stored<'a> {
    resp: &'a HttpResponse,
    text: &'a str,
    etag: Option<&'a str>,
    compared: bool,
}

/// The precondition an update of the stored card `cur` goes under (its `etag`, the one
/// the change is based on, or with `force` the one stored); or why it is not written:
/// the answer is no vCard, another version is stored, or the server converted a 4.0
/// card to 3.0 (status, outcome and reason).
fn write_condition<'a>(
    cur: &Stored<'a>,
    href: &str,
    etag: Option<&'a str>,
    landed: &ContactRecord,
    force: bool,
) -> std::result::Result<Precondition<'a>, (u16, Outcome, String)> {
    if !cur
        .text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .get(..11)
        .is_some_and(|b| b.eq_ignore_ascii_case("BEGIN:VCARD"))
    {
        return Err((
            200,
            Outcome::Failed,
            format!(
                "the GET of {href} answered something that is not a vCard: {}",
                cur.resp.describe()
            ),
        ));
    }
    let cond = match (etag, cur.etag, force) {
        (Some(e), Some(now), false) if !same_etag(e, now) => {
            return Err((
                cur.resp.status,
                Outcome::Conflict,
                format!(
                    "conflict decided before writing: the server holds another version ({now}) than the one the change is based on ({e})"
                ),
            ));
        }
        (Some(e), _, false) => Precondition::Match(e),
        (_, Some(now), true) => Precondition::Match(now),
        _ => Precondition::None,
    };
    let landed_version = landed.raw.as_deref().map(version_of);
    if !cur.compared
        && landed_version == Some("4.0")
        && version_of(cur.text) == "3.0"
        && cur.etag.zip(etag).is_some_and(|(a, b)| same_etag(a, b))
    {
        return Err((
            200,
            Outcome::Failed,
            "the server answered a vCard 3.0 rendering of a card stored as 4.0; not written, as the conversion may have lost data"
                .to_string(),
        ));
    }
    Ok(cond)
}

impl CardDavSource {
    /// An update merged into the card exactly as the server stores it: the card is read
    /// (in the format its book offers, so a converting server does not hand out a
    /// rendering that lost data), its ETag checked against the one the change is based
    /// on, the change merged in, PUT under `If-Match`, and read back: a property the
    /// change did not name that is not as it was makes the row `failed`, naming it.
    #[allow(clippy::too_many_arguments)]
    async fn update_stored(
        &self,
        op: &Op,
        id: &str,
        etag: Option<&str>,
        href: &str,
        merged: &ContactRecord,
        landed: &ContactRecord,
        changed: &[String],
        force: bool,
        what: &str,
        metrics: &Metrics,
    ) -> Result<OpResult> {
        let id = Some(id.to_string());
        let book = super::config::book_of(&op.account)
            .or_else(|| href.rsplit_once('/').map(|(b, _)| format!("{b}/")))
            .unwrap_or_default();
        let offered = self.dav.address_data_offered(&book, metrics).await?;
        let local = |status: u16, outcome: Outcome, why: String| OpResult {
            index: op.index,
            http_status: Some(status),
            outcome,
            id: id.clone(),
            reason: Some(why.clone()),
            error: Some(format!("{what}: {why}")),
            ..Default::default()
        };
        // Twice at most: with --force, a version written between the read and the PUT
        // (412) is read again and the change merged onto it.
        for _ in 0..2 {
            let (cur, format) = self.read_stored(href, &offered, what, metrics).await?;
            if cur.status == 404 && !force {
                return Ok(local(
                    404,
                    Outcome::Conflict,
                    "deleted on the server since it was read".into(),
                ));
            }
            if cur.status != 200 {
                return Ok(outcome(op, id.clone(), &cur));
            }
            let before = String::from_utf8_lossy(&cur.body).into_owned();
            let cur_etag = etag_of(&cur);
            // A card read as 4.0 and now answered as 3.0 under the same ETag, unasked
            // (not the oldest rendering found to say what the newest says), is a
            // server's conversion, which may have lost data: never written back.
            let compared = offered.len() > 1 && format == offered.first();
            let stored = Stored {
                resp: &cur,
                text: &before,
                etag: cur_etag.as_deref(),
                compared,
            };
            let cond = match write_condition(&stored, href, etag, landed, force) {
                Ok(c) => c,
                Err((status, outcome, why)) => return Ok(local(status, outcome, why)),
            };
            let card = merge_vcard(&before, merged, landed, changed);
            let resp = self.dav.put(href, &card, cond, what, metrics).await?;
            if resp.status == 412 && force {
                continue;
            }
            if !resp.ok() {
                return Ok(outcome(op, id.clone(), &resp));
            }
            return self
                .verify(
                    op,
                    id.clone(),
                    href,
                    &before,
                    &resp,
                    changed,
                    format,
                    what,
                    metrics,
                )
                .await;
        }
        Ok(local(
            412,
            Outcome::Conflict,
            "changed on the server again while it was being written".into(),
        ))
    }

    /// The card as stored, and the format it was read in. A server that offers several
    /// vCard versions is asked for the newest (nothing lost converting up) and the
    /// oldest; when the two say the same, the card is taken in the oldest, the version
    /// every client reads: a card stored as 3.0 stays 3.0 (a converting server's 3.0
    /// rendering of the same card written as 4.0 would lose its photo), and one stored
    /// as 4.0, whose 3.0 rendering lost something, is written as 4.0.
    async fn read_stored<'f>(
        &self,
        href: &str,
        offered: &'f [super::dav::AddressDataType],
        what: &str,
        metrics: &Metrics,
    ) -> Result<(HttpResponse, Option<&'f super::dav::AddressDataType>)> {
        let newest = offered.last();
        let cur = self.dav.get_as(href, newest, what, metrics).await?;
        let Some(oldest) = offered.first().filter(|_| offered.len() > 1) else {
            return Ok((cur, newest));
        };
        if cur.status != 200 {
            return Ok((cur, newest));
        }
        let old = self.dav.get_as(href, Some(oldest), what, metrics).await?;
        let same_version = match (etag_of(&cur), etag_of(&old)) {
            (Some(a), Some(b)) => same_etag(&a, &b),
            _ => false,
        };
        if old.status == 200
            && same_version
            && same_across_versions(
                &String::from_utf8_lossy(&cur.body),
                &String::from_utf8_lossy(&old.body),
            )
        {
            return Ok((old, Some(oldest)));
        }
        Ok((cur, newest))
    }

    /// Reads a written card back and compares every property the change did not name
    /// with the card as it was before the write.
    #[allow(clippy::too_many_arguments)]
    async fn verify(
        &self,
        op: &Op,
        id: Option<String>,
        href: &str,
        before: &str,
        put: &HttpResponse,
        changed: &[String],
        format: Option<&super::dav::AddressDataType>,
        what: &str,
        metrics: &Metrics,
    ) -> Result<OpResult> {
        let mut r = outcome(op, id, put);
        let fail = |r: &mut OpResult, why: String| {
            r.outcome = Outcome::Failed;
            r.reason = Some(why.clone());
            r.error = Some(format!("{what}: {why}"));
        };
        let after = match self.dav.get_as(href, format, what, metrics).await {
            Ok(a) if a.status == 200 => a,
            Ok(a) => {
                fail(
                    &mut r,
                    format!(
                        "written (HTTP {}), but reading it back answered {} {}: not verified",
                        put.status,
                        a.status,
                        a.describe()
                    ),
                );
                return Ok(r);
            }
            Err(e) => {
                fail(
                    &mut r,
                    format!(
                        "written (HTTP {}), but reading it back failed: {e}; not verified",
                        put.status
                    ),
                );
                return Ok(r);
            }
        };
        if r.new_etag.is_none() {
            r.new_etag = etag_of(&after);
        }
        let lost = unasked_differences(before, &String::from_utf8_lossy(&after.body), changed);
        if !lost.is_empty() {
            let other = match (etag_of(put), etag_of(&after)) {
                (Some(a), Some(b)) if !same_etag(&a, &b) => {
                    " (the card changed again after the write: another writer, or the server)"
                }
                _ => "",
            };
            fail(
                &mut r,
                format!(
                    "written, but read back with properties the update did not name changed: {}{other}",
                    lost.join(", ")
                ),
            );
        }
        Ok(r)
    }
}

impl crate::providers::WriteBack for CardDavSource {
    fn rules(&self) -> &dyn crate::providers::Rules {
        &super::rules::CardDavRules
    }

    fn apply<'a>(
        &'a self,
        ops: &'a [Op],
        managed: &'a [String],
        force: bool,
        metrics: &'a Metrics,
    ) -> BoxFuture<'a, Result<Vec<OpResult>>> {
        let writes =
            crate::providers::apply_each(ops, self.concurrency, move |op| match refused(op) {
                Some(r) => Box::pin(async move { Ok(r) }),
                None => Box::pin(self.apply_one(op, managed, force, metrics)),
            });
        Box::pin(async move { Ok(writes.await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::schema::{Email, Phone};
    use calcard::vcard::{VCard, VCardProperty};

    /// A vCard 3.0 as Apple writes them: a grouped e-mail with its label, an unknown
    /// parameter, an X- property with a parameter, a folded note, a photo.
    const HELD: &str = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:u-1\r\nFN:Zoë Ünïcode\r\nN:Ünïcode;Zoë;;;\r\n\
item1.EMAIL;TYPE=INTERNET,WORK;X-ODD=yes:zoe@example.org\r\nitem1.X-ABLabel:Büro\r\n\
item2.EMAIL;TYPE=HOME:old@example.org\r\nitem2.X-ABLabel:_$!<Other>!$_\r\n\
TEL;TYPE=CELL:+1 555 0100\r\nX-CUSTOM-THING;X-P=1:keep me\r\n\
NOTE:a note that is long enough to be folded by the server at seventy-five oc\r\n tets\r\n\
PHOTO;ENCODING=b;TYPE=PNG:iVBORw0KGgo=\r\nEND:VCARD\r\n";

    fn landed() -> ContactRecord {
        ContactRecord {
            id: "c1".into(),
            display_name: Some("Zoë Ünïcode".into()),
            given_name: Some("Zoë".into()),
            family_name: Some("Ünïcode".into()),
            emails: vec![
                Email {
                    address: Some("zoe@example.org".into()),
                    kind: Some("work".into()),
                    ..Default::default()
                },
                Email {
                    address: Some("old@example.org".into()),
                    kind: Some("home".into()),
                    ..Default::default()
                },
            ],
            phones: vec![Phone {
                number: Some("+1 555 0100".into()),
                kind: Some("cell".into()),
                ..Default::default()
            }],
            notes: Some(
                "a note that is long enough to be folded by the server at seventy-five octets"
                    .into(),
            ),
            raw: Some(HELD.into()),
            ..Default::default()
        }
    }

    fn parse(text: &str) -> VCard {
        match calcard::Parser::new(text).entry() {
            calcard::Entry::VCard(c) => c,
            other => panic!("not a vCard: {other:?}\n{text}"),
        }
    }

    fn texts(c: &VCard, p: VCardProperty) -> Vec<String> {
        c.properties(&p)
            .filter_map(|e| e.values.first()?.as_text().map(str::to_string))
            .collect()
    }

    fn held_lines_missing(out: &str, except: &[&str]) -> Vec<String> {
        lines(HELD)
            .iter()
            .filter(|l| !except.iter().any(|e| l.original.contains(e)))
            .filter(|l| !out.contains(l.original))
            .map(|l| l.original.to_string())
            .collect()
    }

    /// A changed list keeps its unchanged item's lines (group, label, unknown parameter)
    /// byte for byte, renders only the new item, drops the removed item with its label,
    /// and leaves every line of other properties as it was.
    #[test]
    fn only_the_changed_items_of_a_list_are_rewritten() {
        let l = landed();
        let mut merged = l.clone();
        merged.emails[1] = Email {
            address: Some("new@example.org".into()),
            kind: Some("home".into()),
            primary: Some(true),
            ..Default::default()
        };
        let out = merge_vcard(HELD, &merged, &l, &["emails".into()]);
        assert_eq!(
            held_lines_missing(&out, &["old@example.org", "<Other>"]),
            Vec::<String>::new(),
            "{out}"
        );
        assert!(
            !out.contains("old@example.org") && !out.contains("<Other>"),
            "{out}"
        );
        assert!(
            out.contains("EMAIL;TYPE=home,pref:new@example.org\r\n"),
            "{out}"
        );
        // The new line stands where the property stood, before the phone.
        assert!(
            out.find("new@example.org").unwrap() < out.find("TEL;").unwrap(),
            "{out}"
        );
        let c = parse(&out);
        assert_eq!(
            texts(&c, VCardProperty::Email),
            ["zoe@example.org", "new@example.org"]
        );
        assert_eq!(texts(&c, VCardProperty::Note), [l.notes.clone().unwrap()]);
    }

    /// A name part changes N alone, with every other part as it was; FN, the X- property
    /// and the photo stay byte for byte.
    #[test]
    fn a_name_part_rewrites_n_only() {
        let l = landed();
        let mut merged = l.clone();
        merged.given_name = Some("Zoé; \"Z\"".into());
        let out = merge_vcard(HELD, &merged, &l, &["given_name".into()]);
        assert_eq!(
            held_lines_missing(&out, &["N:Ünïcode"]),
            Vec::<String>::new(),
            "{out}"
        );
        assert!(out.contains("\r\nN:Ünïcode;Zoé\\; \"Z\";;;\r\n"), "{out}");
        let c = parse(&out);
        let n = c.property(&VCardProperty::N).unwrap();
        assert_eq!(n.values.len(), 5, "{n:?}");
        assert_eq!(n.values[1].as_text(), Some("Zoé; \"Z\""));
    }

    /// A property the contact did not have goes in before END; clearing one removes its
    /// lines; a long value is folded at 75 octets without splitting a character, and the
    /// unfolded line is the value.
    #[test]
    fn added_removed_and_folded_properties() {
        let l = landed();
        let mut merged = l.clone();
        merged.organizations = vec![crate::model::schema::Organization {
            name: Some("Ölwerk AG".into()),
            title: Some("ü".repeat(60)),
            ..Default::default()
        }];
        merged.phones.clear();
        let out = merge_vcard(
            HELD,
            &merged,
            &l,
            &["organizations".into(), "phones".into()],
        );
        assert!(!out.contains("TEL"), "{out}");
        assert!(
            out.ends_with("END:VCARD\r\n") && out.contains("ORG:Ölwerk AG\r\n"),
            "{out}"
        );
        for physical in out.split("\r\n").filter(|p| !HELD.contains(p)) {
            assert!(
                physical.len() <= 75,
                "{physical:?} is {} octets",
                physical.len()
            );
        }
        let c = parse(&out);
        assert_eq!(texts(&c, VCardProperty::Title), ["ü".repeat(60)]);
        assert!(c.property(&VCardProperty::Photo).is_some());
        assert_eq!(
            held_lines_missing(&out, &["TEL"]),
            Vec::<String>::new(),
            "{out}"
        );
    }

    /// With nothing changed the merge is the identity.
    #[test]
    fn no_change_is_the_held_text() {
        let l = landed();
        assert_eq!(merge_vcard(HELD, &l, &l, &[]), HELD);
        // Changed to what it already was: every held e-mail line is kept as it was.
        assert_eq!(merge_vcard(HELD, &l, &l, &["emails".into()]), HELD);
    }

    /// A new vCard carries FN, N, the managed values, the UID and the insert key, and
    /// parses.
    #[test]
    fn an_insert_is_a_whole_vcard_with_its_key() {
        let mut d = landed();
        d.raw = None;
        let managed: Vec<String> = ["display_name", "emails", "notes"]
            .map(String::from)
            .to_vec();
        let out = insert_vcard(&d, &managed, "cetl-0123456789abcdef0123");
        let c = parse(&out);
        assert_eq!(c.uid(), Some("cetl-0123456789abcdef0123"));
        assert_eq!(texts(&c, VCardProperty::Fn), ["Zoë Ünïcode"]);
        assert_eq!(
            texts(&c, VCardProperty::Email),
            ["zoe@example.org", "old@example.org"]
        );
        assert!(
            out.contains("\r\nX-CONTACTS-ETL-KEY:cetl-0123456789abcdef0123\r\n"),
            "{out}"
        );
        assert!(!out.contains("TEL"), "phones are not managed: {out}");
    }

    /// Continuation lines belong to their line; groups and names are read case-blind.
    #[test]
    fn content_lines_are_split_logically() {
        let ls = lines(HELD);
        let note = ls.iter().find(|l| l.name == "NOTE").unwrap();
        assert!(note.original.ends_with("oc\r\n tets\r\n"));
        let label = ls.iter().find(|l| l.name == "X-ABLABEL").unwrap();
        assert_eq!(label.group.as_deref(), Some("item1"));
        assert_eq!(ls.concat_originals(), HELD);
    }

    /// Two renderings of one card (parameters split or joined, folded differently) differ
    /// in nothing; Cyrus' 3.0 rendering of a 4.0 card differs in its photo and version;
    /// what a change names, and the label of a dropped grouped item, are left out.
    #[test]
    fn differences_are_read_in_meaning() {
        let other = HELD
            .replace(
                "TYPE=INTERNET,WORK;X-ODD=yes",
                "X-ODD=yes;TYPE=internet;TYPE=work",
            )
            .replace("seventy-five oc\r\n tets", "seventy-\r\n five octets")
            .replace("TEL;TYPE=CELL", "TEL;CELL");
        assert_eq!(unasked_differences(HELD, &other, &[]), Vec::<String>::new());
        let v4 = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:A\r\nNOTE:x\r\nPHOTO:data:image/jpeg;base64,/9j/4AAQ\r\n SkZJRg==\r\nEND:VCARD\r\n";
        let converted = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:A\r\nNOTE:y\r\nPHOTO:data:image/jpeg\r\nEND:VCARD\r\n";
        assert_eq!(
            unasked_differences(v4, converted, &["notes".into()]),
            ["PHOTO", "VERSION"]
        );
        // Across versions: a 3.0 inline photo is the 4.0 data URI; a cut one is not.
        let v3 = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:A\r\nNOTE:x\r\nPHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRg==\r\nEND:VCARD\r\n";
        assert!(same_across_versions(v3, v4));
        assert!(!same_across_versions(v4, &v4.replace("NOTE:x", "NOTE:y")));
        assert!(!same_across_versions(
            v4,
            &converted.replace("NOTE:y", "NOTE:x")
        ));
        let changed = HELD.replace("NOTE:a note", "NOTE:another note");
        assert_eq!(
            unasked_differences(HELD, &changed, &["notes".into()]),
            Vec::<String>::new()
        );
        assert_eq!(unasked_differences(HELD, &changed, &[]), ["NOTE"]);
        // The second e-mail dropped, with its label: an e-mail change, nothing else.
        let l = landed();
        let mut merged = l.clone();
        merged.emails.truncate(1);
        let out = merge_vcard(HELD, &merged, &l, &["emails".into()]);
        assert!(!out.contains("<Other>"), "{out}");
        assert_eq!(
            unasked_differences(HELD, &out, &["emails".into()]),
            Vec::<String>::new()
        );
        // A lost X- property, a changed parameter and an added line are named.
        let worse = HELD
            .replace("X-CUSTOM-THING;X-P=1:keep me\r\n", "")
            .replace("TEL;TYPE=CELL", "TEL;TYPE=HOME")
            .replace("END:VCARD", "CATEGORIES:x\r\nEND:VCARD");
        assert_eq!(
            unasked_differences(HELD, &worse, &["notes".into()]),
            ["CATEGORIES", "TEL", "X-CUSTOM-THING"]
        );
    }

    /// A CardDAV server that converts as Cyrus IMAP 3.6 does: it offers vCard 3.0 and
    /// 4.0, stores the 4.0 card it was given, and answers a GET without
    /// `Accept: text/vcard; version=4.0` with a 3.0 rendering whose photo lost its data.
    /// `lossy`: it also drops the photo of every card PUT to it; `advertise`: whether it
    /// names its formats in `supported-address-data`.
    mod converting_server {
        use super::super::*;
        use std::sync::{Arc, Mutex};

        pub const STORED: &str = "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:u-1\r\nFN:Zoë Ünïcode\r\nN:Ünïcode;Zoë;;;\r\nitem1.EMAIL;TYPE=work:zoe@example.org\r\nitem1.X-ABLabel:Büro\r\nNOTE:old\r\nX-CUSTOM-THING;X-P=1:keep\r\nPHOTO:data:image/jpeg;base64,/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBw\r\n cJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PTgyPC4zNDL/\r\nEND:VCARD\r\n";

        /// A card stored as 3.0: its photo inline in 3.0's way.
        pub fn stored_v3() -> String {
            as_v3(STORED).replace(
                "PHOTO:data:image/jpeg\r\n",
                "PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRg==\r\n",
            )
        }

        /// Cyrus' 3.0 rendering of `card`: a 4.0 photo loses its data.
        pub fn as_v3(card: &str) -> String {
            if version_of(card) == "3.0" {
                return card.to_string();
            }
            lines(card)
                .iter()
                .map(|l| match l.name.as_str() {
                    "VERSION" => "VERSION:3.0\r\n".to_string(),
                    "PHOTO" => "PHOTO:data:image/jpeg\r\n".to_string(),
                    _ => l.original.to_string(),
                })
                .collect()
        }

        /// Cyrus' 4.0 rendering of `card`: a 3.0 photo becomes a data URI.
        pub fn as_v4(card: &str) -> String {
            if version_of(card) == "4.0" {
                return card.to_string();
            }
            lines(card)
                .iter()
                .map(|l| match l.name.as_str() {
                    "VERSION" => "VERSION:4.0\r\n".to_string(),
                    "PHOTO" => format!(
                        "PHOTO:data:image/jpeg;base64,{}",
                        l.original.split_once(':').unwrap().1
                    ),
                    _ => l.original.to_string(),
                })
                .collect()
        }

        #[derive(Default)]
        pub struct State {
            pub card: String,
            pub etag: u32,
            pub lossy: bool,
            pub advertise: bool,
            /// (method, Accept, If-Match, body) of each request.
            pub seen: Vec<(String, String, String, String)>,
        }

        pub type Shared = Arc<Mutex<State>>;

        pub async fn start(lossy: bool, advertise: bool) -> (String, Shared) {
            start_with(STORED, lossy, advertise).await
        }

        pub async fn start_with(card: &str, lossy: bool, advertise: bool) -> (String, Shared) {
            let state: Shared = Arc::new(Mutex::new(State {
                card: card.into(),
                etag: 1,
                lossy,
                advertise,
                ..Default::default()
            }));
            let st = state.clone();
            let app = axum::Router::new().fallback(
                move |method: axum::http::Method, headers: axum::http::HeaderMap, body: String| {
                    let st = st.clone();
                    async move {
                        let h = |k: &str| {
                            headers
                                .get(k)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        let mut s = st.lock().unwrap();
                        s.seen
                            .push((method.to_string(), h("accept"), h("if-match"), body.clone()));
                        let etag = format!("\"e{}\"", s.etag);
                        let (status, text) = match method.as_str() {
                            "PROPFIND" if !s.advertise => (404, String::new()),
                            "PROPFIND" => (
                                207,
                                r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:response><D:href>/b/</D:href><D:propstat><D:prop><C:supported-address-data><C:address-data-type content-type="text/vcard" version="3.0"/><C:address-data-type content-type="text/vcard" version="4.0"/></C:supported-address-data></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#.to_string(),
                            ),
                            "GET" if h("accept").contains("version=4.0") => (200, as_v4(&s.card)),
                            "GET" => (200, as_v3(&s.card)),
                            "PUT" if h("if-match") != etag => (412, String::new()),
                            "PUT" => {
                                s.card = if s.lossy {
                                    lines(&body)
                                        .iter()
                                        .filter(|l| l.name != "PHOTO")
                                        .map(|l| l.original)
                                        .collect()
                                } else {
                                    body
                                };
                                s.etag += 1;
                                (204, String::new())
                            }
                            _ => (405, String::new()),
                        };
                        let etag = format!("\"e{}\"", s.etag);
                        (
                            axum::http::StatusCode::from_u16(status).unwrap(),
                            [(axum::http::header::ETAG, etag)],
                            text,
                        )
                    }
                },
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            (base, state)
        }

        pub fn source(base: &str) -> CardDavSource {
            let t = format!(
                "[lake]\nurl = \"/tmp/lake\"\n[[sources]]\nname = \"s\"\nprovider = \"carddav\"\nbase_url = \"{base}\"\nmax_retries = 0\naddress_books = [\"/b/\"]\nauth = {{ kind = \"bearer\", token_file = \"tok\" }}\n"
            );
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("tok"), "sekrit-token-123\n").unwrap();
            let p = crate::config::Pipeline::parse(&t, &dir.path().join("p.toml")).unwrap();
            let http = crate::http::HttpClient::try_new(
                std::time::Duration::from_secs(5),
                crate::http::RetryPolicy {
                    max_retries: 0,
                    ..Default::default()
                },
            )
            .unwrap();
            CardDavSource::try_new(&p.sources[0], http, dir.path()).unwrap()
        }

        /// A notes update of the card, based on `etag`, as the lake holds it after a sync
        /// that asked no version (Cyrus' 3.0 rendering).
        pub fn notes_update(etag: &str) -> Op {
            let landed = ContactRecord {
                id: "c1".into(),
                etag: Some(etag.into()),
                display_name: Some("Zoë Ünïcode".into()),
                notes: Some("old".into()),
                native: Some(r#"{"href": "/b/c1.vcf"}"#.into()),
                raw: Some(as_v3(STORED)),
                ..Default::default()
            };
            let mut desired = landed.clone();
            desired.notes = Some("new; with a separator".into());
            Op {
                index: 0,
                account: "b".into(),
                key: "b/c1".into(),
                action: Action::Update {
                    id: "c1".into(),
                    etag: Some(etag.into()),
                    desired,
                    landed,
                    changed: vec!["notes".into()],
                },
            }
        }
    }

    /// A notes-only update on a server that converts (as Cyrus does): the card is read
    /// and merged as stored (4.0, its photo whole), never as the 3.0 rendering the lake
    /// may hold; the PUT keeps every other line; the read-back finds nothing changed.
    #[tokio::test]
    async fn an_update_merges_into_the_stored_form() {
        let (base, state) = converting_server::start(false, true).await;
        let src = converting_server::source(&base);
        let managed = vec!["notes".to_string()];
        let r = src
            .apply_one(
                &converting_server::notes_update("\"e1\""),
                &managed,
                false,
                &Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert_eq!(r.new_etag.as_deref(), Some("\"e2\""));
        let s = state.lock().unwrap();
        let put: Vec<_> = s.seen.iter().filter(|x| x.0 == "PUT").collect();
        assert_eq!(put.len(), 1, "{:?}", s.seen);
        assert_eq!(put[0].2, "\"e1\"", "If-Match");
        assert_eq!(
            s.card,
            converting_server::STORED.replace("NOTE:old", "NOTE:new\\; with a separator")
        );
        // The card read in both versions the book offers: the 3.0 rendering lost the
        // photo, so the card is written and read back as 4.0.
        let gets: Vec<&str> = s
            .seen
            .iter()
            .filter(|x| x.0 == "GET")
            .map(|x| x.1.as_str())
            .collect();
        assert_eq!(
            gets,
            [
                "text/vcard; version=4.0",
                "text/vcard; version=3.0",
                "text/vcard; version=4.0"
            ]
        );
    }

    /// A card stored as 3.0 on a converting server stays 3.0: its 3.0 rendering says what
    /// the 4.0 one says, so the update is merged into it (written as 4.0, the server's
    /// 3.0 rendering of it would have lost the photo).
    #[tokio::test]
    async fn a_card_stored_as_3_stays_3() {
        let stored = converting_server::stored_v3();
        let (base, state) = converting_server::start_with(&stored, false, true).await;
        let src = converting_server::source(&base);
        let r = src
            .apply_one(
                &converting_server::notes_update("\"e1\""),
                &["notes".to_string()],
                false,
                &Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        let s = state.lock().unwrap();
        assert_eq!(
            s.card,
            stored.replace("NOTE:old", "NOTE:new\\; with a separator")
        );
    }

    /// A server that drops a property the update did not name: the row is `failed` and
    /// names it, never a silent success.
    #[tokio::test]
    async fn a_property_lost_by_the_server_fails_the_row() {
        let (base, _state) = converting_server::start(true, true).await;
        let src = converting_server::source(&base);
        let r = src
            .apply_one(
                &converting_server::notes_update("\"e1\""),
                &["notes".to_string()],
                false,
                &Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
        let e = r.error.unwrap();
        assert!(
            e.contains("did not name changed: PHOTO") && e.contains("c1"),
            "{e}"
        );
    }

    /// The card on the server is not the version the change is based on: a conflict,
    /// decided on the GET's ETag, and nothing is written.
    #[tokio::test]
    async fn another_version_is_a_conflict_before_any_put() {
        let (base, state) = converting_server::start(false, true).await;
        let src = converting_server::source(&base);
        let r = src
            .apply_one(
                &converting_server::notes_update("\"e0\""),
                &["notes".to_string()],
                false,
                &Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(r.outcome, Outcome::Conflict, "{r:?}");
        assert!(r.reason.unwrap().contains("\"e1\""));
        let s = state.lock().unwrap();
        assert!(s.seen.iter().all(|x| x.0 != "PUT"), "{:?}", s.seen);
        assert_eq!(s.card, converting_server::STORED);
    }

    /// A card the lake read as 4.0 and the server now answers as 3.0 under the same ETag
    /// (a server converting and ignoring what it was asked): not written.
    #[tokio::test]
    async fn a_converted_rendering_is_never_written() {
        // The server advertises no format: the GET names none and gets 3.0.
        let (base, state) = converting_server::start(false, false).await;
        let src = converting_server::source(&base);
        let mut op = converting_server::notes_update("\"e1\"");
        if let Action::Update { landed, .. } = &mut op.action {
            landed.raw = Some(converting_server::STORED.into());
        }
        let r = src
            .apply_one(&op, &["notes".to_string()], false, &Default::default())
            .await
            .unwrap();
        assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
        assert!(r.error.unwrap().contains("3.0 rendering"));
        let s = state.lock().unwrap();
        assert!(s.seen.iter().all(|x| x.0 != "PUT"), "{:?}", s.seen);
    }

    trait Concat {
        fn concat_originals(&self) -> String;
    }
    impl Concat for Vec<Line<'_>> {
        fn concat_originals(&self) -> String {
            self.iter().map(|l| l.original).collect()
        }
    }

    /// Values meant to break out of their content line.
    const PAYLOADS: &[&str] = &[
        "x\r\nEMAIL:injected@evil.example\r\nX-CONTACTS-ETL-KEY:forged\r\nEND:VCARD\r\nBEGIN:VCARD\r\nFN:second",
        "x\nEMAIL:injected@evil.example\nX-CONTACTS-ETL-KEY:forged",
        "x\rEMAIL:injected@evil.example\rEND:VCARD",
        "x\u{85}EMAIL:injected@evil.example\u{2028}X-CONTACTS-ETL-KEY:forged\u{b}END:VCARD",
    ];

    /// Every logical line of `card`, unfolded, must be one property: no line break or
    /// control character inside it; one BEGIN, one END, at most `keys` key properties, and
    /// e-mail lines only for the items of `emails`.
    fn assert_one_property_a_line(card: &str, column: &str, keys: usize, emails: usize) {
        let ls = lines(card);
        for l in &ls {
            let u = unfold(l.original);
            assert!(
                !u.chars().any(|c| c.is_control() && c != '\t')
                    && !u.contains(['\u{2028}', '\u{2029}']),
                "{column}: a line holds a line break: {u:?}\n{card}"
            );
        }
        let count = |n: &str| ls.iter().filter(|l| l.name == n).count();
        assert_eq!(count("BEGIN"), 1, "{column}:\n{card}");
        assert_eq!(count("END"), 1, "{column}:\n{card}");
        assert_eq!(count(KEY_X_PROPERTY), keys, "{column}:\n{card}");
        assert_eq!(count("EMAIL"), emails, "{column}:\n{card}");
        let c = parse(card);
        assert!(
            !texts(&c, VCardProperty::Email).contains(&"injected@evil.example".to_string()),
            "{column}:\n{card}"
        );
    }

    /// A CR, LF, CRLF, NEL or line separator in any text of any writable column, written by
    /// an insert or merged into an update, never adds a property or a second vCard; a URI or
    /// date holding one is refused by the rules and by the write.
    #[test]
    fn no_value_of_any_writable_column_leaves_its_property() {
        use crate::model::write::{WRITABLE, poisoned};
        for column in WRITABLE {
            for payload in PAYLOADS {
                let r = poisoned(column, payload);
                let emails = if *column == "emails" { 1 } else { 0 };
                let managed = vec![column.to_string()];
                let card = insert_vcard(&r, &managed, "cetl-0123456789abcdef0123");
                assert_one_property_a_line(&card, column, 1, emails);
                let l = landed();
                let mut merged = l.clone();
                merge_managed(&mut merged, &r, &managed);
                let card = merge_vcard(HELD, &merged, &l, &managed);
                let emails = if *column == "emails" {
                    1
                } else {
                    l.emails.len()
                };
                assert_one_property_a_line(&card, column, 0, emails);
                if ["websites", "ims", "birthday", "events"].contains(column) {
                    let why = unwritable(&r);
                    assert!(
                        why.iter().any(|w| w.starts_with(column)),
                        "{column}: {why:?}"
                    );
                    let op = Op {
                        index: 3,
                        account: "/u/book/".into(),
                        key: "cetl-0123456789abcdef0123".into(),
                        action: Action::Insert { desired: r.clone() },
                    };
                    let res = refused(&op).expect("refused");
                    assert_eq!(res.outcome, Outcome::Invalid);
                    assert!(res.reason.unwrap().contains(column));
                }
            }
        }
    }

    /// Dates are checked as dates; a non-date is written as escaped text, never raw.
    #[test]
    fn dates_are_dates() {
        for ok in [
            "1980-12-31",
            "19801231",
            "--02-29",
            "--0229",
            "1980-12",
            "1980",
            "2024-02-29",
        ] {
            assert!(is_date(ok), "{ok}");
        }
        for bad in [
            "",
            "1980-13-01",
            "1981-02-29",
            "--02-30",
            "1980-1-1",
            "80-12-31",
            "1980-12-31x",
            "1980-12-31\r\nEMAIL:x",
            "today",
            "１９８０",
            "1980/12/31",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
        assert_eq!(date_value("1980-12-31"), ":1980-12-31");
        assert_eq!(date_value("a;b\nc"), ";VALUE=text:a\\;b\\nc");
        let mut r = ContactRecord {
            display_name: Some("Ada".into()),
            birthday: Some("1815-12-10".into()),
            ..Default::default()
        };
        assert!(unwritable(&r).is_empty());
        r.birthday = Some("1815-12-10\nEND:VCARD".into());
        assert!(unwritable(&r)[0].starts_with("birthday"));
    }

    /// An extended property named like the insert key's property is refused and never
    /// written: only the tool stamps the key.
    #[test]
    fn the_insert_key_property_cannot_be_forged() {
        for name in [
            "X-CONTACTS-ETL-KEY",
            "x-contacts-etl-key",
            "CONTACTS-ETL-KEY",
        ] {
            let r = ContactRecord {
                display_name: Some("Ada".into()),
                extended_properties: vec![crate::model::schema::ExtendedProperty {
                    name: Some(name.into()),
                    value: Some("cetl-forged".into()),
                    xml: None,
                }],
                ..Default::default()
            };
            assert!(unwritable(&r)[0].contains("insert key"), "{name}");
            let card = insert_vcard(&r, &["extended_properties".into()], "cetl-mine");
            assert!(!card.contains("cetl-forged"), "{card}");
        }
    }

    /// A write goes only to a member of its account's address book: an insert key made a
    /// path, an href that climbs out (plainly or escaped), or one of another book is
    /// refused without being sent.
    #[test]
    fn every_write_stays_inside_its_address_book() {
        let account = "alice.contacts";
        assert_eq!(
            super::super::config::book_of(account).unwrap(),
            "/alice/contacts/"
        );
        assert!(inside_book(account, "/alice/contacts/c1.vcf").is_ok());
        assert!(inside_book(account, "http://h:5232/alice/contacts/c1.vcf").is_ok());
        for bad in [
            "/alice/contacts/../../victim/contacts/owned.vcf",
            "/alice/contacts/%2e%2e/%2E%2E/victim/contacts/owned.vcf",
            "/alice/contacts/sub/c1.vcf",
            "/alice/contacts/",
            "/victim/contacts/c1.vcf",
            "/alice/contacts/a%0d%0aX: y.vcf",
            "/../../etc/passwd",
        ] {
            assert!(inside_book(account, bad).is_err(), "{bad}");
        }
        let r = ContactRecord {
            display_name: Some("Ada".into()),
            ..Default::default()
        };
        let insert = |key: &str| Op {
            index: 0,
            account: account.into(),
            key: key.into(),
            action: Action::Insert { desired: r.clone() },
        };
        assert!(refused(&insert("cetl-0123456789abcdef0123")).is_none());
        let res = refused(&insert("../../../victim/contacts/owned")).unwrap();
        assert_eq!(res.outcome, Outcome::Invalid);
        assert!(res.reason.unwrap().contains("outside the address book"));
        let mut landed = landed();
        landed.native = Some(r#"{"href":"/victim/contacts/c1.vcf"}"#.into());
        let delete = Op {
            index: 1,
            account: account.into(),
            key: format!("{account}/c1"),
            action: Action::Delete {
                id: "c1".into(),
                etag: None,
                landed,
            },
        };
        assert!(refused(&delete).is_some());
    }
}
