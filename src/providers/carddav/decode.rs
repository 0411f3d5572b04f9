//! vCard 3.0 and 4.0 text → one [`ContactRecord`], with the `calcard` parser (Stalwart's):
//! line unfolding, escapes, quoted-printable and base64, structured values and parameters
//! are its work; this module only maps properties to columns.
//!
//! - `FN` → `display_name`; `N` → family, given, middle (additional), prefix, suffix;
//!   `NICKNAME` → `nickname` (values joined by `, `); `SORT-STRING` → `file_as`.
//! - `EMAIL`, `TEL`, `ADR`, `IMPP`, `URL` → their lists: `type` is the `TYPE` values in
//!   lower case joined by `,` (without `pref`, and `internet`/`voice`, which say nothing),
//!   `primary` is `TYPE=pref` (3.0) or `PREF=1` (4.0), and `label` is the Apple-style
//!   `X-ABLabel` of the property's group (`item1.EMAIL` + `item1.X-ABLabel`). `ADR`'s
//!   extended address (apartment, suite) becomes a second line of `street`.
//! - `ORG` → an organization (name; the further units joined by `, ` as `department`),
//!   with the first `TITLE`; `BDAY` → `birthday` (`YYYY-MM-DD`, or `--MM-DD` without a
//!   year); `ANNIVERSARY` → an event; `RELATED` → relations; `NOTE` → `notes`;
//!   `CATEGORIES` → `groups`.
//! - `PHOTO`: a link → `photo.href`; inline data → `photo.etag` = `sha256:` and the first
//!   16 hex digits of the bytes' hash (the image stays in `raw`).
//! - `X-` properties (other than the group labels) → `extended_properties` (name, value).
//! - `REV` → `updated`; `UID`, the vCard's `VERSION` and the resource's `href` → `native`
//!   as JSON, e.g. `{"href":"/alice/contacts/x.vcf","uid":"x","version":"3.0"}`.
//! - `raw` is the vCard text exactly as the server sent it.
//!
//! The parser owns its strings, so values are moved from its tree into the record (one
//! copy of the text, the tree's); `raw` is the received text itself, not a copy.

use calcard::Entry;
use calcard::common::IanaString;
use calcard::vcard::{
    VCard, VCardParameter, VCardParameterName, VCardParameterValue, VCardProperty, VCardValue,
};
use std::collections::HashMap;

use sha2::Digest;

use crate::error::{Error, Result};
use crate::model::extract::RecordContext;
use crate::model::schema::{
    Address, ContactRecord, Email, Event, ExtendedProperty, Im, Organization, Phone, Photo,
    Relation, Website,
};

/// Decodes one vCard: `text` as received, `path` its href's path, `etag` its ETag.
/// `what` names the source, book and href in errors.
pub fn decode_vcard(
    text: String,
    path: &str,
    etag: Option<&str>,
    ctx: &RecordContext,
    what: &str,
) -> Result<ContactRecord> {
    let id = super::dav::resource_id(path)
        .ok_or_else(|| Error::decode(format!("{what}: the href {path} names no resource")))?;
    let card = parse_one(&text, what)?;
    let mut r = ContactRecord {
        source: ctx.source.clone(),
        account: ctx.account.clone(),
        id: id.to_string(),
        etag: etag.map(str::to_string),
        _run_id: ctx.run_id.clone(),
        _synced_at: ctx.synced_at_us,
        ..Default::default()
    };
    let native = map_card(card, &mut r, what);
    r.native = Some(native_json(path, &native));
    r.raw = Some(text);
    Ok(r)
}

/// The one vCard of a resource, whole: it ends with its `END:VCARD` (a card cut short,
/// or whose quoted-printable value ran on into the `END` line, would land truncated and
/// be written back without its end) and nothing but blank lines follows it.
fn parse_one(text: &str, what: &str) -> Result<VCard> {
    let not_a_card = |e: &Entry| {
        Error::decode(format!(
            "{what}: the address data is not a vCard ({}): {}",
            describe_entry(e),
            crate::http::describe_body(text.as_bytes())
        ))
    };
    // Strict only for the end: calcard's strict mode also refuses a line without a
    // colon, which some servers keep from old imports; such a card is read leniently
    // once its last line is seen to be `END:VCARD`.
    let begins = text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .get(..11)
        .is_some_and(|p| p.eq_ignore_ascii_case("BEGIN:VCARD"));
    let mut parser = calcard::Parser::new(text).strict();
    let card = match parser.entry() {
        Entry::VCard(c) => c,
        Entry::InvalidLine(_) if begins && ends_with_end(text) => {
            parser = calcard::Parser::new(text);
            match parser.entry() {
                Entry::VCard(c) => c,
                other => return Err(not_a_card(&other)),
            }
        }
        Entry::InvalidLine(_) | Entry::UnterminatedComponent(_) if begins => {
            return Err(Error::decode(format!(
                "{what}: the vCard has no END:VCARD: it is cut short, or a quoted-printable value runs on into its END line; fix the card on the server"
            )));
        }
        other => return Err(not_a_card(&other)),
    };
    match parser.entry() {
        Entry::Eof => Ok(card),
        other => Err(Error::decode(format!(
            "{what}: the address data holds more than one vCard, or text after END:VCARD ({}); a resource is one contact",
            describe_entry(&other)
        ))),
    }
}

/// Whether the last line that is not blank is `END:VCARD`.
fn ends_with_end(text: &str) -> bool {
    text.trim_end()
        .rsplit(['\n', '\r'])
        .next()
        .is_some_and(|l| l.trim().eq_ignore_ascii_case("END:VCARD"))
}

fn describe_entry(e: &Entry) -> String {
    match e {
        Entry::ICalendar(_) => "an iCalendar object".into(),
        Entry::InvalidLine(l) => format!("invalid line {l:?}"),
        Entry::UnterminatedComponent(c) => format!("{c} without its END"),
        Entry::TooManyComponents => "too many components".into(),
        Entry::Eof => "no BEGIN:VCARD".into(),
        Entry::VCard(_) => "a second vCard".into(),
        _ => "unreadable".into(),
    }
}

/// What goes to `native` besides the href.
#[derive(Default)]
struct Native {
    uid: Option<String>,
    version: Option<String>,
}

/// `native`: `{"href":…,"uid":…,"version":…}`, written by serde_json from a struct of
/// borrowed fields (the same text as a `json!` object, without building one).
fn native_json(href: &str, n: &Native) -> String {
    #[derive(serde::Serialize)]
    struct N<'a> {
        href: &'a str,
        uid: Option<&'a str>,
        version: Option<&'a str>,
    }
    serde_json::to_string(&N {
        href,
        uid: n.uid.as_deref(),
        version: n.version.as_deref(),
    })
    .unwrap_or_default()
}

/// The Apple-style group labels of a card: group name → its `X-ABLabel`, the last one
/// for a group labelled twice. A card has few, so they are looked up in order, with the
/// group's case ignored, rather than hashed.
/// A card with many labels (a hostile one may have 10^5) gets a map keyed by the
/// lower-cased group, so the lookups stay linear in the card's size.
struct Labels(Vec<(String, String)>, Option<HashMap<String, String>>);

/// Labels looked up in order up to this many; a map beyond.
const LABELS_IN_ORDER: usize = 16;

impl Labels {
    fn new(labels: Vec<(String, String)>) -> Labels {
        let map = (labels.len() > LABELS_IN_ORDER).then(|| {
            // Inserted in order: the last label of a group wins, as in the ordered lookup.
            labels
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect()
        });
        Labels(labels, map)
    }

    fn of(&self, group: &Option<String>) -> Option<String> {
        let g = group.as_deref()?;
        if let Some(map) = &self.1 {
            return map.get(&g.to_ascii_lowercase()).cloned();
        }
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(g))
            .map(|(_, v)| v.clone())
    }
}

/// Group name → its `X-ABLabel`.
fn group_labels(card: &VCard) -> Labels {
    Labels::new(card.entries
        .iter()
        .filter(
            |e| matches!(&e.name, VCardProperty::Other(n) if n.eq_ignore_ascii_case("X-ABLABEL")),
        )
        .filter_map(|e| {
            let g = e.group.clone()?;
            let v = first_text(&e.values)?;
            // Apple writes its standard labels as `_$!<Mobile>!$_`.
            let v = v
                .strip_prefix("_$!<")
                .and_then(|v| v.strip_suffix(">!$_"))
                .unwrap_or(&v)
                .to_string();
            Some((g, v))
        })
        .collect())
}

fn map_card(card: VCard, r: &mut ContactRecord, what: &str) -> Native {
    let labels = group_labels(&card);
    let mut native = Native::default();
    let mut titles: Vec<String> = Vec::new();
    for e in card.entries {
        // The label, types and preference of the properties that have them (computed
        // for those only: most lines of a card are not list items).
        let label = || labels.of(&e.group);
        let tp = || type_and_pref(&e.params);
        match e.name {
            // The first one counts.
            VCardProperty::Fn if r.display_name.is_none() => r.display_name = joined(e.values, ","),
            VCardProperty::N => name_parts(e.values, r),
            VCardProperty::Nickname => append(&mut r.nickname, joined(e.values, ", "), ", "),
            VCardProperty::Email => {
                let (kind, primary) = tp();
                r.emails.push(Email {
                    address: joined(e.values, ","),
                    kind,
                    label: label(),
                    primary: Some(primary),
                    display_name: None,
                })
            }
            VCardProperty::Tel => r.phones.push(phone(e.values, tp(), label())),
            VCardProperty::Adr => {
                let formatted = param_text(&e.params, |n| *n == VCardParameterName::Label);
                r.addresses
                    .push(address(e.values, tp(), label(), formatted));
            }
            VCardProperty::Impp => r.ims.push(im(e.values, tp(), label())),
            VCardProperty::Url => {
                let (kind, primary) = tp();
                r.websites.push(Website {
                    href: uri_text(e.values),
                    kind,
                    label: label(),
                    primary: Some(primary),
                })
            }
            VCardProperty::Org => r.organizations.push(organization(e.values, tp(), label())),
            VCardProperty::Title => titles.extend(joined(e.values, ",")),
            // The first one counts.
            VCardProperty::Bday if r.birthday.is_none() => r.birthday = date_text(e.values),
            VCardProperty::Anniversary => r.events.push(Event {
                kind: Some("anniversary".into()),
                label: label(),
                start: date_text(e.values),
            }),
            VCardProperty::Related => r.relations.push(Relation {
                name: uri_text(e.values),
                kind: tp().0,
                label: label(),
            }),
            VCardProperty::Note => append(&mut r.notes, joined(e.values, ","), "\n"),
            VCardProperty::Categories => r.groups.extend(
                e.values
                    .into_iter()
                    .filter_map(value_text)
                    .filter(|g| !g.is_empty()),
            ),
            // The first one counts.
            VCardProperty::Photo if r.photo.is_none() => r.photo = photo(e.values, what),
            VCardProperty::Rev => {
                r.updated = e
                    .values
                    .iter()
                    .find_map(|v| match v {
                        VCardValue::PartialDateTime(d) => d.to_timestamp(),
                        _ => None,
                    })
                    .map(|s| s.saturating_mul(1_000_000));
            }
            VCardProperty::Uid => native.uid = uri_text(e.values),
            VCardProperty::Version => native.version = joined(e.values, ","),
            VCardProperty::Other(name) => other_property(name, e.values, r),
            _ => {}
        }
    }
    if let Some(title) = titles.into_iter().next() {
        match r.organizations.first_mut() {
            Some(o) => o.title = Some(title),
            None => r.organizations.push(Organization {
                title: Some(title),
                ..Default::default()
            }),
        }
    }
    native
}

/// `N`: family, given, middle names, prefix and suffix, in that order.
fn name_parts(values: Vec<VCardValue>, r: &mut ContactRecord) {
    let mut parts = components(values).into_iter();
    r.family_name = parts.next().flatten();
    r.given_name = parts.next().flatten();
    r.middle_name = parts.next().flatten();
    r.prefix = parts.next().flatten();
    r.suffix = parts.next().flatten();
}

/// `TEL`: the number, and the `tel:` URI when the value is one.
fn phone(
    values: Vec<VCardValue>,
    (kind, primary): (Option<String>, bool),
    label: Option<String>,
) -> Phone {
    let v = joined(values, ",");
    let number = v
        .as_deref()
        .map(|n| n.strip_prefix("tel:").unwrap_or(n).to_string());
    let uri = v.filter(|n| n.starts_with("tel:"));
    Phone {
        number,
        kind,
        label,
        primary: Some(primary),
        uri,
    }
}

/// `ADR`: post-office box, extended address (joined to the street), street, locality,
/// region, postal code and country; `formatted` is its `LABEL` parameter.
fn address(
    values: Vec<VCardValue>,
    (kind, primary): (Option<String>, bool),
    label: Option<String>,
    formatted: Option<String>,
) -> Address {
    let mut p = components(values).into_iter();
    let mut next = || p.next().flatten();
    let (po_box, extended, street) = (next(), next(), next());
    let street = match (street, extended) {
        (Some(s), Some(x)) => Some(format!("{s}\n{x}")),
        (s, x) => s.or(x),
    };
    Address {
        kind,
        label,
        primary: Some(primary),
        po_box,
        street,
        city: next(),
        region: next(),
        postcode: next(),
        country: next(),
        neighborhood: None,
        formatted,
    }
}

/// `IMPP`: the URI, its scheme as the protocol.
fn im(
    values: Vec<VCardValue>,
    (kind, primary): (Option<String>, bool),
    label: Option<String>,
) -> Im {
    let address = joined(values, ",");
    let protocol = address
        .as_deref()
        .and_then(|a| a.split_once(':'))
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    Im {
        address,
        protocol,
        kind,
        label,
        primary: Some(primary),
    }
}

/// `ORG`: the name, then the units joined as the department.
fn organization(
    values: Vec<VCardValue>,
    (kind, primary): (Option<String>, bool),
    label: Option<String>,
) -> Organization {
    let mut parts = components(values).into_iter().flatten();
    let name = parts.next();
    let units: Vec<String> = parts.collect();
    Organization {
        name,
        department: (!units.is_empty()).then(|| units.join(", ")),
        kind,
        label,
        primary: Some(primary),
        title: None,
    }
}

/// A property the vCard standard does not name: `SORT-STRING` is the file-as; an `X-`
/// property (other than Apple's labels) is an extended property.
fn other_property(name: String, values: Vec<VCardValue>, r: &mut ContactRecord) {
    let upper = name.to_ascii_uppercase();
    if upper == "SORT-STRING" {
        r.file_as = joined(values, ",");
    } else if upper.starts_with("X-") && upper != "X-ABLABEL" {
        // The write-back's insert key, under the name the planner looks for.
        let name = if upper == super::writeback::KEY_X_PROPERTY {
            crate::model::write::KEY_PROPERTY.to_string()
        } else {
            name
        };
        r.extended_properties.push(ExtendedProperty {
            name: Some(name),
            value: joined(values, ","),
            xml: None,
        });
    }
}

/// Appends `more` to `to`, `sep` between: in place, so a card of many `NOTE` lines costs
/// their length, not its square.
fn append(to: &mut Option<String>, more: Option<String>, sep: &str) {
    match (to.as_mut(), more) {
        (Some(a), Some(b)) => {
            a.push_str(sep);
            a.push_str(&b);
        }
        (None, b) => *to = b,
        (Some(_), None) => {}
    }
}

/// A value as text (a date or binary value has none).
fn value_text(v: VCardValue) -> Option<String> {
    match v {
        VCardValue::Text(s) => Some(s),
        VCardValue::Component(parts) => Some(parts.join(",")),
        VCardValue::Integer(i) => Some(i.to_string()),
        VCardValue::Float(f) => Some(f.to_string()),
        VCardValue::Boolean(b) => Some(b.to_string()),
        VCardValue::PartialDateTime(d) => date_string(&d),
        VCardValue::Binary(_) => None,
        other => other.into_text().map(|c| c.into_owned()),
    }
}

fn first_text(values: &[VCardValue]) -> Option<String> {
    values.iter().find_map(|v| v.as_text().map(str::to_string))
}

/// The values as one text, `sep` between them; `None` when empty.
fn joined(mut values: Vec<VCardValue>, sep: &str) -> Option<String> {
    // Most properties have one value: it is the text, moved, not joined.
    if values.len() == 1 {
        return values.pop().and_then(value_text).filter(|s| !s.is_empty());
    }
    let parts: Vec<String> = values.into_iter().filter_map(value_text).collect();
    let s = parts.join(sep);
    (!s.is_empty()).then_some(s)
}

/// A URI value (`URL`, `UID`, `RELATED`): the parser reads `data:` URIs as binary; the
/// rest are text.
fn uri_text(values: Vec<VCardValue>) -> Option<String> {
    joined(values, ",")
}

/// A structured value's components (`N`, `ADR`, `ORG`): each a text, a comma list joined
/// by `,`, or `None` when empty.
fn components(values: Vec<VCardValue>) -> Vec<Option<String>> {
    values
        .into_iter()
        .map(|v| value_text(v).filter(|s| !s.is_empty()))
        .collect()
}

fn date_string(d: &calcard::common::PartialDateTime) -> Option<String> {
    match (d.year, d.month, d.day) {
        (Some(y), Some(m), Some(day)) => Some(format!("{y:04}-{m:02}-{day:02}")),
        (None, Some(m), Some(day)) => Some(format!("--{m:02}-{day:02}")),
        (Some(y), Some(m), None) => Some(format!("{y:04}-{m:02}")),
        (Some(y), None, None) => Some(format!("{y:04}")),
        _ => None,
    }
}

/// A date value as written in `birthday` and events (a text date is kept as written).
fn date_text(values: Vec<VCardValue>) -> Option<String> {
    values.into_iter().find_map(value_text)
}

/// The photo of a card: a link, or inline image data hashed into `etag`. Data that is not
/// an image (a `data:` URI without its comma, base64 that does not decode, a media type
/// that is not an image, bytes of no image format) is no photo: it lands as `null` with
/// a warning naming the contact, never as a photo whose hash is of its media type.
fn photo(values: Vec<VCardValue>, what: &str) -> Option<Photo> {
    let bad = |why: &str| {
        tracing::warn!("{what}: PHOTO {why}; it lands as no photo");
        None
    };
    let v = values.into_iter().find(|v| match v {
        VCardValue::Binary(d) => !d.data.is_empty(),
        VCardValue::Text(t) => !t.is_empty(),
        _ => false,
    })?;
    match v {
        VCardValue::Binary(d) => {
            let declared = d.content_type.as_deref().map(str::to_ascii_lowercase);
            if declared
                .as_deref()
                .is_some_and(|t| !t.starts_with("image/"))
            {
                return bad(&format!(
                    "has the media type {:?}, which is not an image",
                    declared.unwrap_or_default()
                ));
            }
            if declared.is_none() && !is_image(&d.data) {
                return bad(
                    "holds data that is no image (a data: URI without its comma, or bytes of no image format)",
                );
            }
            let hash = sha2::Sha256::digest(&d.data);
            Some(Photo {
                href: None,
                etag: Some(format!("sha256:{}", &hex::encode(hash)[..16])),
            })
        }
        VCardValue::Text(t) => {
            // calcard reads good `data:` URIs and encoded data as binary: a text that is
            // still one did not decode.
            if t.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("data:")) {
                return bad("is a data: URI that does not decode");
            }
            let scheme = t.split_once(':').map(|(s, _)| s);
            let is_uri = scheme.is_some_and(|s| {
                s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            });
            if !is_uri || t.chars().any(char::is_control) {
                return bad("is neither image data nor a URI (base64 that does not decode?)");
            }
            Some(Photo {
                href: Some(t),
                etag: None,
            })
        }
        _ => None,
    }
}

/// Whether bytes start like an image file: JPEG, PNG, GIF, WebP, BMP, TIFF, ICO,
/// HEIF/AVIF, JPEG 2000 or SVG.
fn is_image(b: &[u8]) -> bool {
    let starts = |p: &[u8]| b.starts_with(p);
    starts(&[0xFF, 0xD8, 0xFF])
        || starts(b"\x89PNG\r\n\x1a\n")
        || starts(b"GIF87a")
        || starts(b"GIF89a")
        || (starts(b"RIFF") && b.get(8..12) == Some(b"WEBP"))
        || starts(b"BM")
        || starts(b"II*\0")
        || starts(b"MM\0*")
        || starts(&[0, 0, 1, 0])
        || b.get(4..8) == Some(b"ftyp")
        || starts(&[0, 0, 0, 0x0C, b'j', b'P'])
        || {
            let t = String::from_utf8_lossy(&b[..b.len().min(256)]);
            let t = t.trim_start();
            t.starts_with("<svg") || (t.starts_with("<?xml") && t.contains("<svg"))
        }
}

/// The first text of a parameter.
fn param_text(
    params: &[calcard::vcard::VCardParameter],
    name: impl Fn(&VCardParameterName) -> bool,
) -> Option<String> {
    params
        .iter()
        .find(|p| name(&p.name))
        .and_then(|p| match &p.value {
            VCardParameterValue::Text(t) if !t.is_empty() => Some(t.clone()),
            _ => None,
        })
}

/// `type` (the `TYPE` values in lower case, joined by `,`, without `pref` and the
/// uninformative `internet`, `voice` and `x400`) and whether the property is preferred
/// (`TYPE=pref` in 3.0, `PREF=1` in 4.0).
fn type_and_pref(params: &[VCardParameter]) -> (Option<String>, bool) {
    let mut kinds: Vec<String> = Vec::new();
    let mut seen: Option<std::collections::HashSet<String>> = None;
    let mut pref = false;
    for p in params {
        match (&p.name, &p.value) {
            (VCardParameterName::Type, v) => {
                let t = match v {
                    VCardParameterValue::Type(t) => t.as_str().to_ascii_lowercase(),
                    VCardParameterValue::Text(t) => t.to_ascii_lowercase(),
                    _ => continue,
                };
                // 3.0 allows `TYPE="work,voice"` as one quoted value.
                for t in t.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    match t {
                        "pref" => pref = true,
                        "internet" | "voice" | "x400" => {}
                        t => {
                            // Beyond a few types, a set: a hostile card may give 10^5.
                            let dup = match &seen {
                                Some(set) => set.contains(t),
                                None => kinds.iter().any(|k| k == t),
                            };
                            if !dup {
                                kinds.push(t.to_string());
                                match &mut seen {
                                    Some(set) => {
                                        set.insert(t.to_string());
                                    }
                                    None if kinds.len() > LABELS_IN_ORDER => {
                                        seen = Some(kinds.iter().cloned().collect())
                                    }
                                    None => {}
                                }
                            }
                        }
                    }
                }
            }
            (VCardParameterName::Pref, VCardParameterValue::Integer(1)) => pref = true,
            (VCardParameterName::Pref, VCardParameterValue::Text(t)) if t.trim() == "1" => {
                pref = true
            }
            _ => {}
        }
    }
    ((!kinds.is_empty()).then(|| kinds.join(",")), pref)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RecordContext {
        RecordContext {
            source: "s".into(),
            account: "alice.contacts".into(),
            run_id: "r".into(),
            synced_at_us: 1,
        }
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/carddav/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn decode(text: &str) -> ContactRecord {
        decode_vcard(
            text.to_string(),
            "/alice/contacts/x%20y.vcf",
            Some("\"e1\""),
            &ctx(),
            "t",
        )
        .unwrap()
    }

    /// A vCard 3.0 as Apple writes it: folded lines, escapes, `TYPE=pref`, grouped
    /// properties with `X-ABLabel`, quoted-printable, inline photo, `X-` properties.
    #[test]
    fn vcard_3_maps_to_the_schema() {
        let text = fixture("v3.vcf");
        let r = decode(&text);
        assert_eq!(
            r.raw.as_deref(),
            Some(text.as_str()),
            "raw is the text as sent"
        );
        assert_eq!(
            (r.id.as_str(), r.etag.as_deref()),
            ("x%20y", Some("\"e1\""))
        );
        assert_eq!(r.account, "alice.contacts");
        assert_eq!(r.display_name.as_deref(), Some("Zoë O'Brien-Łukasik"));
        assert_eq!(
            (
                r.family_name.as_deref(),
                r.given_name.as_deref(),
                r.middle_name.as_deref(),
                r.prefix.as_deref(),
                r.suffix.as_deref()
            ),
            (
                Some("O'Brien-Łukasik"),
                Some("Zoë"),
                Some("Ann,Marie"),
                Some("Dr."),
                None
            )
        );
        assert_eq!(r.nickname.as_deref(), Some("Zo, Zee"));
        assert_eq!(r.emails.len(), 2);
        assert_eq!(
            r.emails[0],
            Email {
                address: Some("zoe@example.org".into()),
                kind: Some("work".into()),
                label: Some("Office".into()),
                primary: Some(true),
                display_name: None
            }
        );
        assert_eq!(r.emails[1].primary, Some(false));
        assert_eq!(r.emails[1].kind.as_deref(), Some("home"));
        assert_eq!(r.phones[0].number.as_deref(), Some("+44 20 7946 0018"));
        assert_eq!(r.phones[0].kind.as_deref(), Some("cell"));
        assert_eq!(r.phones[0].label.as_deref(), Some("Mobile"));
        let a = &r.addresses[0];
        assert_eq!(a.street.as_deref(), Some("1 Long Road; Block C\nFlat 2"));
        assert_eq!(
            (
                a.city.as_deref(),
                a.postcode.as_deref(),
                a.country.as_deref()
            ),
            (Some("London"), Some("N1 9GU"), Some("United Kingdom"))
        );
        assert_eq!(r.notes.as_deref(), Some("Café, line one\nline two; done"));
        assert_eq!(
            r.groups,
            vec!["Friends".to_string(), "Work, Old".to_string()]
        );
        assert_eq!(r.birthday.as_deref(), Some("1980-12-31"));
        assert_eq!(r.organizations[0].name.as_deref(), Some("Acme Ltd"));
        assert_eq!(r.organizations[0].department.as_deref(), Some("R&D"));
        assert_eq!(r.organizations[0].title.as_deref(), Some("Engineer"));
        assert_eq!(r.ims[0].protocol.as_deref(), Some("xmpp"));
        assert_eq!(
            r.websites[0].href.as_deref(),
            Some("https://example.org/zoe")
        );
        assert!(
            r.photo
                .as_ref()
                .unwrap()
                .etag
                .as_ref()
                .unwrap()
                .starts_with("sha256:")
        );
        assert_eq!(r.extended_properties.len(), 1);
        assert_eq!(
            r.extended_properties[0].name.as_deref(),
            Some("X-SOCIAL-HANDLE")
        );
        assert_eq!(r.extended_properties[0].value.as_deref(), Some("@zoe"));
        assert_eq!(r.updated, Some(1_704_164_645_000_000));
        let n: serde_json::Value = serde_json::from_str(r.native.as_deref().unwrap()).unwrap();
        assert_eq!(n["href"], "/alice/contacts/x%20y.vcf");
        assert_eq!(n["uid"], "zoe-1");
        assert_eq!(n["version"], "3.0");
    }

    /// vCard 4.0: `PREF=1`, `VALUE=uri` phones, a data: URI photo, a year-less birthday,
    /// an anniversary, a related person.
    #[test]
    fn vcard_4_maps_to_the_schema() {
        let r = decode(&fixture("v4.vcf"));
        assert_eq!(r.display_name.as_deref(), Some("Grace Hopper"));
        assert_eq!(r.emails[0].primary, Some(false));
        assert_eq!(r.emails[1].primary, Some(true));
        assert_eq!(r.emails[1].kind.as_deref(), Some("work"));
        assert_eq!(r.phones[0].number.as_deref(), Some("+1-555-555-5555"));
        assert_eq!(r.phones[0].uri.as_deref(), Some("tel:+1-555-555-5555"));
        assert_eq!(r.phones[0].kind.as_deref(), Some("cell,text"));
        assert_eq!(r.phones[0].primary, Some(true));
        assert_eq!(r.birthday.as_deref(), Some("--12-09"));
        assert_eq!(r.events[0].start.as_deref(), Some("1930-06-15"));
        assert_eq!(r.relations[0].kind.as_deref(), Some("spouse"));
        assert!(r.photo.unwrap().etag.is_some());
        assert_eq!(
            r.addresses[0].formatted.as_deref(),
            Some("1 Navy Way\nArlington")
        );
        let n: serde_json::Value = serde_json::from_str(r.native.as_deref().unwrap()).unwrap();
        assert_eq!(n["version"], "4.0");
    }

    /// A vCard without FN (invalid, but servers hold them) still lands, with no name.
    #[test]
    fn a_vcard_without_fn_lands() {
        let r = decode("BEGIN:VCARD\r\nVERSION:4.0\r\nEMAIL:a@example.org\r\nEND:VCARD\r\n");
        assert_eq!(r.display_name, None);
        assert_eq!(r.emails[0].address.as_deref(), Some("a@example.org"));
    }

    /// What is not a vCard is an error naming where it came from.
    #[test]
    fn not_a_vcard_is_an_error() {
        for text in [
            "",
            "<html>hello</html>",
            "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n",
        ] {
            let e = decode_vcard(
                text.into(),
                "/a/b.vcf",
                None,
                &ctx(),
                "src book /a/, /a/b.vcf",
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.starts_with("src book /a/, /a/b.vcf: the address data is not a vCard"),
                "{e}"
            );
        }
    }

    /// The vCards Radicale and Xandikos sent back read the same.
    #[test]
    fn server_rewritten_cards_read() {
        for server in ["radicale", "xandikos"] {
            let m = super::super::dav::parse_multistatus(
                fixture(&format!("{server}-multiget.xml")).as_bytes(),
                "m",
            )
            .unwrap();
            let r = m
                .responses
                .iter()
                .find(|r| r.href.ends_with("/u1.vcf"))
                .unwrap();
            let rec = decode(r.props.address_data.as_deref().unwrap());
            assert_eq!(
                rec.display_name.as_deref(),
                Some("Ada1 Lovelace"),
                "{server}"
            );
            assert_eq!(rec.emails[0].primary, Some(true), "{server}");
            assert_eq!(rec.emails[0].kind, None, "{server}");
        }
    }

    /// Group labels match the group whatever its case, and a group labelled twice takes
    /// the last label (as the map they were kept in before did); a property without a
    /// group, or with a group nobody labelled, has none.
    #[test]
    fn group_labels_ignore_case_and_the_last_one_counts() {
        let r = decode(
            "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:x\r\nItem1.EMAIL:a@x\r\nitem1.X-ABLabel:first\r\nITEM1.x-ablabel:_$!<Second>!$_\r\nitem2.TEL:1\r\nTEL:2\r\nitem3.URL:http://u\r\nitem3.X-ABLabel:site\r\nEND:VCARD\r\n",
        );
        assert_eq!(r.emails[0].label.as_deref(), Some("Second"));
        assert_eq!(
            (r.phones[0].label.as_deref(), r.phones[1].label.as_deref()),
            (None, None)
        );
        assert_eq!(r.websites[0].label.as_deref(), Some("site"));
    }

    /// `native` is the text a `json!` object of the same fields gives, nulls and escapes
    /// included.
    #[test]
    fn native_is_the_json_object_text() {
        for (href, uid, version) in [
            ("/a/b.vcf", Some("u"), Some("3.0")),
            ("/a/\"q\"\\é 字.vcf", None, Some("4.0")),
            ("/a/c.vcf", Some("x\ny\u{1}"), None),
        ] {
            let n = Native {
                uid: uid.map(str::to_string),
                version: version.map(str::to_string),
            };
            assert_eq!(
                native_json(href, &n),
                serde_json::json!({ "href": href, "uid": uid, "version": version }).to_string()
            );
        }
    }

    fn decode_err(text: &str) -> String {
        decode_vcard(text.into(), "/a/b.vcf", None, &ctx(), "at /a/b.vcf")
            .unwrap_err()
            .to_string()
    }

    /// A card cut short, one whose quoted-printable value swallows its END line, and
    /// two cards in one resource are refused; a card that ends well with a line
    /// without a colon is read leniently, and trailing blank lines are fine.
    #[test]
    fn a_card_must_be_whole_and_alone() {
        for (text, words) in [
            (
                "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Cut\r\nNOTE:half",
                "no END:VCARD",
            ),
            (
                "BEGIN:VCARD\r\nVERSION:2.1\r\nNOTE;ENCODING=QUOTED-PRINTABLE:a=\r\nEND:VCARD\r\n",
                "no END:VCARD",
            ),
            (
                "BEGIN:VCARD\r\nFN:a\r\nEND:VCARD\r\nBEGIN:VCARD\r\nFN:b\r\nEND:VCARD\r\n",
                "more than one vCard",
            ),
        ] {
            let e = decode_err(text);
            assert!(
                e.starts_with("at /a/b.vcf: ") && e.contains(words),
                "{text:?}: {e}"
            );
        }
        let r = decode("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ok\r\nJUNKLINE\r\nEND:VCARD\r\n\r\n\r\n");
        assert_eq!(r.display_name.as_deref(), Some("Ok"));
    }

    /// Photo data that is not an image lands as no photo; images and links land.
    #[test]
    fn bad_photo_data_is_no_photo() {
        let card = |photo: &str| {
            decode(&format!(
                "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:P\r\n{photo}\r\nEND:VCARD\r\n"
            ))
            .photo
        };
        // /9j/4A is the start of a JPEG (FF D8 FF E0) in base64.
        for bad in [
            "PHOTO:data:image/jpeg",
            "PHOTO:data:text/plain;base64,aGVsbG8=",
            "PHOTO:data:image/jpeg;base64,!!!notbase64!!!",
            "PHOTO;ENCODING=b;TYPE=JPEG:!!!notbase64!!!",
            "PHOTO;ENCODING=b;TYPE=JPEG:aGVsbG8gd29ybGQ=",
        ] {
            assert_eq!(card(bad), None, "{bad}");
        }
        let good = card("PHOTO:data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ==").unwrap();
        assert!(good.etag.unwrap().starts_with("sha256:"));
        let untyped = card("PHOTO:data:;base64,/9j/4AAQSkZJRgABAQ==").unwrap();
        assert!(untyped.etag.is_some());
        let v3 = card("PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQ==").unwrap();
        assert!(v3.etag.is_some());
        let link = card("PHOTO:https://example.org/p.jpg").unwrap();
        assert_eq!(link.href.as_deref(), Some("https://example.org/p.jpg"));
    }

    /// Many NOTE lines, labels and types are read in time linear in the card: joined
    /// in place, looked up through a map. Checked by result here; the time is
    /// measured by hand (see the closing note), not asserted.
    #[test]
    fn many_notes_labels_and_types_read_whole() {
        let mut t = String::from("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Big\r\n");
        for i in 0..2000 {
            t.push_str(&format!("NOTE:line {i}\r\nitem{i}.EMAIL;TYPE=t{i};TYPE=work:e{i}@x.org\r\nitem{i}.X-ABLabel:L{i}\r\n"));
        }
        t.push_str("END:VCARD\r\n");
        let r = decode(&t);
        assert_eq!(r.notes.as_deref().map(|n| n.lines().count()), Some(2000));
        assert_eq!(r.emails.len(), 2000);
        assert_eq!(r.emails[1999].label.as_deref(), Some("L1999"));
        assert_eq!(r.emails[7].kind.as_deref(), Some("t7,work"));
        let mut types = String::from("BEGIN:VCARD\r\nEMAIL");
        for i in 0..100 {
            types.push_str(&format!(";TYPE=k{}", i % 40));
        }
        types.push_str(":a@x.org\r\nEND:VCARD\r\n");
        let kinds = decode(&types).emails[0].kind.clone().unwrap();
        assert_eq!(kinds.split(',').count(), 40, "deduplicated in order");
        assert!(kinds.starts_with("k0,k1,k2"));
    }
}
