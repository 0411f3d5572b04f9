//! Atom feed → contact records, streaming and namespace-aware (prefixes are resolved, never
//! compared). Every element of protocol note §4 that the schema models is mapped; unknown
//! elements are tolerated and kept in `raw`, the entry as a standalone document with the
//! namespace declarations it needs.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::error::{Error, Result};
use crate::schema::{
    Address, ContactRecord, Email, Event as CEvent, ExtendedProperty, Im, Organization, Phone,
    Photo, Relation, Website,
};

const ATOM: &[u8] = b"http://www.w3.org/2005/Atom";
const GD: &[u8] = b"http://schemas.google.com/g/2005";
const GCONTACT: &[u8] = b"http://schemas.google.com/contact/2008";
const OPENSEARCH: &[u8] = b"http://a9.com/-/spec/opensearch/1.1/";
const OPENSEARCH_V1: &[u8] = b"http://a9.com/-/spec/opensearchrss/1.0/";
const PHOTO_REL: &str = "http://schemas.google.com/contacts/2008/rel#photo";

/// One decoded feed page.
#[derive(Debug, Default)]
pub struct FeedPage {
    /// The feed's `<updated>` (server time), as sent.
    pub updated: Option<String>,
    /// `openSearch:totalResults`.
    pub total_results: Option<usize>,
    /// The `rel="next"` link.
    pub next: Option<String>,
    /// Entries in page order; placeholders have `deleted = true`.
    pub entries: Vec<ContactRecord>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ns {
    Atom,
    Gd,
    GContact,
    OpenSearch,
    Other,
}

fn ns_of(r: &ResolveResult) -> Ns {
    match r {
        ResolveResult::Bound(n) => match n.as_ref() {
            ATOM => Ns::Atom,
            GD => Ns::Gd,
            GCONTACT => Ns::GContact,
            OPENSEARCH | OPENSEARCH_V1 => Ns::OpenSearch,
            _ => Ns::Other,
        },
        _ => Ns::Other,
    }
}

/// Where captured text goes when the current element closes.
#[derive(Clone, Copy, Debug)]
enum Target {
    Id,
    Updated,
    Notes,
    Given,
    Family,
    Middle,
    Prefix,
    Suffix,
    Full,
    Nickname,
    FileAs,
    PhoneNumber,
    RelationName,
    Street,
    PoBox,
    Neighborhood,
    City,
    Region,
    Postcode,
    Country,
    Formatted,
    OrgName,
    OrgTitle,
    OrgDept,
    FeedUpdated,
    Total,
}

/// Which structured item is open.
enum Open {
    None,
    Address(Address),
    Org(Organization),
    Event(CEvent),
    ExtProp(ExtendedProperty),
}

fn non_empty(s: std::borrow::Cow<'_, str>) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s.into_owned())
    }
}

fn short_rel(v: &str) -> String {
    v.rsplit('#').next().unwrap_or(v).to_string()
}

/// One attribute: its namespace, local name and (unescaped) value.
type Attr<'a> = (Ns, &'a [u8], std::borrow::Cow<'a, str>);

/// The attributes of one element, borrowed from it (no copy unless a value has escapes).
struct Attrs<'a> {
    /// On the stack: GData elements carry at most six attributes, and this runs for every
    /// element of every entry (a heap vector here was a third of a sync's allocations).
    items: smallvec::SmallVec<[Attr<'a>; 8]>,
}

impl<'a> Attrs<'a> {
    fn read(r: &NsReader<&[u8]>, s: &'a BytesStart<'_>) -> Result<Attrs<'a>> {
        let mut items = smallvec::SmallVec::new();
        // quick-xml's duplicate check keeps a heap vector of the keys seen; the same check
        // is made below over the few raw keys without one.
        let mut keys: smallvec::SmallVec<[&'a [u8]; 8]> = smallvec::SmallVec::new();
        for a in s.attributes().with_checks(false) {
            let a = a.map_err(|e| Error::decode(format!("bad attribute: {e}")))?;
            let key = a.key.into_inner();
            if keys.contains(&key) {
                return Err(Error::decode(format!(
                    "attribute {} appears twice in <{}>",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(s.name().as_ref())
                )));
            }
            keys.push(key);
            if a.key.as_namespace_binding().is_some() {
                continue;
            }
            let (res, local) = r.resolver().resolve_attribute(a.key);
            let ns = match res {
                ResolveResult::Unbound => Ns::Atom, // unprefixed attributes: no namespace
                other => ns_of(&other),
            };
            let v = a
                .decode_and_unescape_value(r.decoder())
                .map_err(|e| Error::decode(format!("bad attribute value: {e}")))?;
            items.push((ns, local.into_inner(), v));
        }
        Ok(Attrs { items })
    }
    /// An unprefixed attribute.
    fn get(&self, name: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(ns, n, _)| *ns == Ns::Atom && *n == name.as_bytes())
            .map(|(_, _, v)| v.as_ref())
    }
    fn opt(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).map(str::to_string)
    }
    fn gd(&self, name: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(ns, n, _)| *ns == Ns::Gd && *n == name.as_bytes())
            .map(|(_, _, v)| v.as_ref())
    }
    fn primary(&self) -> Option<bool> {
        Some(self.get("primary") == Some("true"))
    }
    fn rel(&self) -> Option<String> {
        self.get("rel").filter(|v| !v.is_empty()).map(short_rel)
    }
}

/// Context of the records made: the pipeline's source name, the account, the run.
#[derive(Debug, Clone)]
pub struct RecordContext {
    pub source: String,
    pub account: String,
    pub run_id: String,
    pub synced_at_us: i64,
}

/// Decodes one feed page. `what` names the page in errors.
pub fn decode_feed(body: &[u8], ctx: &RecordContext, what: &str) -> Result<FeedPage> {
    decode_feed_inner(body, ctx).map_err(|e| match e {
        Error::Decode(m) => Error::Decode(format!("{what}: {m}")),
        other => other.context(what),
    })
}

fn decode_feed_inner(body: &[u8], ctx: &RecordContext) -> Result<FeedPage> {
    let text = std::str::from_utf8(body)
        .map_err(|e| Error::decode(format!("the body is not UTF-8: {e}")))?;
    let mut r = NsReader::from_str(text);
    let mut page = FeedPage::default();
    let mut depth = 0usize;
    let mut root_decls = String::new();
    let mut saw_root = false;
    // Entry state.
    let mut rec: Option<ContactRecord> = None;
    let mut entry_start = 0usize;
    let mut open = Open::None;
    let mut target: Option<Target> = None;
    let mut buf = String::new();
    let mut ext_child_start: Option<(usize, usize)> = None; // (byte offset, depth)
    let mut phone: Option<Phone> = None;
    let mut relation: Option<Relation> = None;
    let mut entry_count = 0usize;
    loop {
        let before = r.buffer_position() as usize;
        let (res, ev) = r
            .read_resolved_event()
            .map_err(|e| Error::decode(format!("malformed XML near byte {before}: {e}")))?;
        match ev {
            Event::Start(ref s) | Event::Empty(ref s) => {
                let empty = matches!(ev, Event::Empty(_));
                let ns = ns_of(&res);
                let local = s.local_name();
                let local = local.as_ref();
                if !saw_root {
                    saw_root = true;
                    if !(ns == Ns::Atom && local == b"feed") {
                        let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
                        let hint = if name.eq_ignore_ascii_case("html") {
                            let title = crate::http::describe_body(body);
                            format!(
                                "an HTML page ({title}) came back where an Atom feed was expected; check base_url and auth"
                            )
                        } else {
                            format!("expected an Atom <feed>, found <{name}>")
                        };
                        return Err(Error::decode(hint));
                    }
                    // Keep the root's namespace declarations for standalone entries.
                    for a in s.attributes().flatten() {
                        if a.key.as_namespace_binding().is_some() {
                            root_decls.push(' ');
                            root_decls.push_str(&String::from_utf8_lossy(a.key.as_ref()));
                            root_decls.push_str("=\"");
                            root_decls.push_str(
                                &String::from_utf8_lossy(&a.value).replace('"', "&quot;"),
                            );
                            root_decls.push('"');
                        }
                    }
                    if !empty {
                        depth += 1;
                    }
                    continue;
                }
                if !empty {
                    depth += 1;
                }
                let d = if empty { depth + 1 } else { depth };
                if let Some(rec) = rec.as_mut() {
                    // Inside an entry: d == 3 is a child of the entry.
                    if let Open::ExtProp(_) = open
                        && d >= 4
                    {
                        if ext_child_start.is_none() {
                            ext_child_start = Some((before, d));
                            if empty {
                                let end = r.buffer_position() as usize;
                                if let Open::ExtProp(p) = &mut open
                                    && p.xml.is_none()
                                {
                                    p.xml = Some(text[before..end].to_string());
                                }
                                ext_child_start = None;
                            }
                        }
                        continue;
                    }
                    let at = Attrs::read(&r, s)?;
                    match (d, ns, local) {
                        (3, Ns::Atom, b"id") => target = Some(Target::Id),
                        (3, Ns::Atom, b"updated") => target = Some(Target::Updated),
                        (3, Ns::Atom, b"content") => target = Some(Target::Notes),
                        (3, Ns::Gd, b"deleted") => rec.deleted = true,
                        (3, Ns::Atom, b"link") if at.get("rel") == Some(PHOTO_REL) => {
                            rec.photo = Some(Photo {
                                href: at.opt("href"),
                                etag: at.gd("etag").map(str::to_string),
                            });
                        }
                        (3, Ns::GContact, b"nickname") => target = Some(Target::Nickname),
                        (3, Ns::GContact, b"fileAs") => target = Some(Target::FileAs),
                        (4, Ns::Gd, b"givenName") => target = Some(Target::Given),
                        (4, Ns::Gd, b"familyName") => target = Some(Target::Family),
                        (4, Ns::Gd, b"additionalName") => target = Some(Target::Middle),
                        (4, Ns::Gd, b"namePrefix") => target = Some(Target::Prefix),
                        (4, Ns::Gd, b"nameSuffix") => target = Some(Target::Suffix),
                        (4, Ns::Gd, b"fullName") => target = Some(Target::Full),
                        (3, Ns::Gd, b"email") => rec.emails.push(Email {
                            address: at.opt("address"),
                            kind: at.rel(),
                            label: at.opt("label"),
                            primary: at.primary(),
                            display_name: at.opt("displayName"),
                        }),
                        (3, Ns::Gd, b"phoneNumber") => {
                            phone = Some(Phone {
                                number: None,
                                kind: at.rel(),
                                label: at.opt("label"),
                                primary: at.primary(),
                                uri: at.opt("uri"),
                            });
                            target = Some(Target::PhoneNumber);
                        }
                        (3, Ns::Gd, b"im") => rec.ims.push(Im {
                            address: at.opt("address"),
                            protocol: at.get("protocol").filter(|v| !v.is_empty()).map(short_rel),
                            kind: at.rel(),
                            label: at.opt("label"),
                            primary: at.primary(),
                        }),
                        (3, Ns::Gd, b"structuredPostalAddress") => {
                            open = Open::Address(Address {
                                kind: at.rel(),
                                label: at.opt("label"),
                                primary: at.primary(),
                                ..Default::default()
                            })
                        }
                        (4, Ns::Gd, b"street") => target = Some(Target::Street),
                        (4, Ns::Gd, b"pobox") => target = Some(Target::PoBox),
                        (4, Ns::Gd, b"neighborhood") => target = Some(Target::Neighborhood),
                        (4, Ns::Gd, b"city") => target = Some(Target::City),
                        (4, Ns::Gd, b"region") => target = Some(Target::Region),
                        (4, Ns::Gd, b"postcode") => target = Some(Target::Postcode),
                        (4, Ns::Gd, b"country") => target = Some(Target::Country),
                        (4, Ns::Gd, b"formattedAddress") => target = Some(Target::Formatted),
                        (3, Ns::Gd, b"organization") => {
                            open = Open::Org(Organization {
                                kind: at.rel(),
                                label: at.opt("label"),
                                primary: at.primary(),
                                ..Default::default()
                            })
                        }
                        (4, Ns::Gd, b"orgName") => target = Some(Target::OrgName),
                        (4, Ns::Gd, b"orgTitle") => target = Some(Target::OrgTitle),
                        (4, Ns::Gd, b"orgDepartment") => target = Some(Target::OrgDept),
                        (3, Ns::GContact, b"website") => rec.websites.push(Website {
                            href: at.opt("href"),
                            kind: at.rel(),
                            label: at.opt("label"),
                            primary: at.primary(),
                        }),
                        (3, Ns::GContact, b"relation") => {
                            relation = Some(Relation {
                                name: None,
                                kind: at.rel(),
                                label: at.opt("label"),
                            });
                            target = Some(Target::RelationName);
                        }
                        (3, Ns::GContact, b"event") => {
                            open = Open::Event(CEvent {
                                kind: at.rel(),
                                label: at.opt("label"),
                                start: None,
                            })
                        }
                        (4, Ns::Gd, b"when") => {
                            if let Open::Event(e) = &mut open {
                                e.start = at.opt("startTime");
                            }
                        }
                        (3, Ns::GContact, b"birthday") => rec.birthday = at.opt("when"),
                        (3, Ns::GContact, b"groupMembershipInfo") => {
                            if at.get("deleted") != Some("true")
                                && let Some(h) = at.opt("href")
                            {
                                rec.groups.push(h);
                            }
                        }
                        (3, Ns::Gd, b"extendedProperty") => {
                            open = Open::ExtProp(ExtendedProperty {
                                name: at.opt("name"),
                                value: at.get("value").map(str::to_string),
                                xml: None,
                            })
                        }
                        _ => {}
                    }
                    if target.is_some() {
                        buf.clear();
                    }
                    if empty {
                        close(
                            rec,
                            &mut open,
                            &mut target,
                            &mut buf,
                            &mut phone,
                            &mut relation,
                            d,
                        )?;
                    }
                } else if d == 2 && ns == Ns::Atom && local == b"entry" {
                    entry_count += 1;
                    entry_start = before;
                    let mut fresh = ContactRecord {
                        source: ctx.source.clone(),
                        account: ctx.account.clone(),
                        _run_id: ctx.run_id.clone(),
                        _synced_at: ctx.synced_at_us,
                        ..Default::default()
                    };
                    fresh.etag = Attrs::read(&r, s)?.gd("etag").map(str::to_string);
                    rec = Some(fresh);
                    if empty {
                        return Err(Error::decode(format!(
                            "entry #{entry_count} is empty (no <id>)"
                        )));
                    }
                } else if d == 2 {
                    match (ns, local) {
                        (Ns::Atom, b"updated") => {
                            target = Some(Target::FeedUpdated);
                            buf.clear();
                        }
                        (Ns::OpenSearch, b"totalResults") => {
                            target = Some(Target::Total);
                            buf.clear();
                        }
                        (Ns::Atom, b"link") => {
                            let at = Attrs::read(&r, s)?;
                            if at.get("rel") == Some("next") {
                                page.next = at.opt("href");
                            }
                        }
                        _ => {}
                    }
                    if empty {
                        target = None;
                    }
                }
            }
            Event::End(ref e) => {
                let d = depth;
                depth = depth.saturating_sub(1);
                if let Some(rc) = rec.as_mut() {
                    if let Some((start, sd)) = ext_child_start
                        && d == sd
                    {
                        let end = r.buffer_position() as usize;
                        if let Open::ExtProp(p) = &mut open
                            && p.xml.is_none()
                        {
                            p.xml = Some(text[start..end].to_string());
                        }
                        ext_child_start = None;
                        continue;
                    }
                    if ext_child_start.is_some() {
                        continue;
                    }
                    if d == 2 {
                        // </entry>
                        let end = r.buffer_position() as usize;
                        let mut done = rec.take().unwrap();
                        if done.id.is_empty() {
                            return Err(Error::decode(format!(
                                "entry #{entry_count} has no <id>; the server sent an incomplete entry"
                            )));
                        }
                        done.raw = Some(standalone(&text[entry_start..end], &root_decls));
                        page.entries.push(done);
                        continue;
                    }
                    let _ = e;
                    close(
                        rc,
                        &mut open,
                        &mut target,
                        &mut buf,
                        &mut phone,
                        &mut relation,
                        d,
                    )?;
                } else if d == 2 {
                    match target.take() {
                        Some(Target::FeedUpdated) => page.updated = Some(buf.trim().to_string()),
                        Some(Target::Total) => page.total_results = buf.trim().parse().ok(),
                        _ => {}
                    }
                }
            }
            Event::Text(t) if target.is_some() && ext_child_start.is_none() => {
                buf.push_str(
                    &t.decode()
                        .map_err(|e| Error::decode(format!("bad text: {e}")))?,
                );
            }
            Event::GeneralRef(g) => {
                let c = if g.is_char_ref() {
                    g.resolve_char_ref()
                        .map_err(|e| Error::decode(format!("bad character reference: {e}")))?
                        .ok_or_else(|| Error::decode("bad character reference"))?
                } else {
                    let name = g
                        .decode()
                        .map_err(|e| Error::decode(format!("bad entity: {e}")))?;
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => s.chars().next().unwrap_or('?'),
                        None => {
                            return Err(Error::decode(format!(
                                "undefined entity &{name}; (custom entities are refused)"
                            )));
                        }
                    }
                };
                if target.is_some() && ext_child_start.is_none() {
                    buf.push(c);
                }
            }
            Event::CData(c) if target.is_some() && ext_child_start.is_none() => {
                buf.push_str(&String::from_utf8_lossy(&c));
            }
            Event::DocType(_) => {
                return Err(Error::decode(
                    "a DOCTYPE is not allowed in a feed (entity expansion is refused)",
                ));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err(Error::decode("the body is empty; expected an Atom feed"));
    }
    if depth != 0 || rec.is_some() {
        return Err(Error::decode("the feed ends early (truncated body)"));
    }
    Ok(page)
}

fn close(
    rec: &mut ContactRecord,
    open: &mut Open,
    target: &mut Option<Target>,
    buf: &mut String,
    phone: &mut Option<Phone>,
    relation: &mut Option<Relation>,
    d: usize,
) -> Result<()> {
    if let Some(t) = target.take() {
        let v = non_empty(std::borrow::Cow::Borrowed(buf.as_str()));
        match t {
            Target::Id => {
                let full = buf.trim();
                rec.id = full
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or(full)
                    .to_string();
            }
            Target::Updated => {
                rec.updated = Some(
                    chrono::DateTime::parse_from_rfc3339(buf.trim())
                        .map_err(|e| {
                            Error::decode(format!(
                                "entry <updated> {:?} is not RFC 3339: {e}",
                                buf.trim()
                            ))
                        })?
                        .timestamp_micros(),
                );
            }
            Target::Notes => rec.notes = v,
            Target::Given => rec.given_name = v,
            Target::Family => rec.family_name = v,
            Target::Middle => rec.middle_name = v,
            Target::Prefix => rec.prefix = v,
            Target::Suffix => rec.suffix = v,
            Target::Full => rec.display_name = v,
            Target::Nickname => rec.nickname = v,
            Target::FileAs => rec.file_as = v,
            Target::PhoneNumber => {
                if let Some(mut p) = phone.take() {
                    p.number = v;
                    rec.phones.push(p);
                }
            }
            Target::RelationName => {
                if let Some(mut x) = relation.take() {
                    x.name = v;
                    rec.relations.push(x);
                }
            }
            Target::Street => {
                if let Open::Address(a) = open {
                    a.street = v
                }
            }
            Target::PoBox => {
                if let Open::Address(a) = open {
                    a.po_box = v
                }
            }
            Target::Neighborhood => {
                if let Open::Address(a) = open {
                    a.neighborhood = v
                }
            }
            Target::City => {
                if let Open::Address(a) = open {
                    a.city = v
                }
            }
            Target::Region => {
                if let Open::Address(a) = open {
                    a.region = v
                }
            }
            Target::Postcode => {
                if let Open::Address(a) = open {
                    a.postcode = v
                }
            }
            Target::Country => {
                if let Open::Address(a) = open {
                    a.country = v
                }
            }
            Target::Formatted => {
                if let Open::Address(a) = open {
                    a.formatted = v
                }
            }
            Target::OrgName => {
                if let Open::Org(o) = open {
                    o.name = v
                }
            }
            Target::OrgTitle => {
                if let Open::Org(o) = open {
                    o.title = v
                }
            }
            Target::OrgDept => {
                if let Open::Org(o) = open {
                    o.department = v
                }
            }
            Target::FeedUpdated | Target::Total => {}
        }
        buf.clear();
        return Ok(());
    }
    if d == 3 {
        match std::mem::replace(open, Open::None) {
            Open::Address(a) => rec.addresses.push(a),
            Open::Org(o) => rec.organizations.push(o),
            Open::Event(e) => rec.events.push(e),
            Open::ExtProp(p) => rec.extended_properties.push(p),
            Open::None => {}
        }
    }
    Ok(())
}

/// Makes an entry cut from a feed parse on its own: adds the feed's namespace
/// declarations to the entry's start tag, except prefixes the entry declares itself.
fn standalone(entry: &str, root_decls: &str) -> String {
    let name_end = entry[1..]
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .map(|i| i + 1)
        .unwrap_or(entry.len());
    let tag_end = entry.find('>').unwrap_or(entry.len());
    let own = &entry[..tag_end];
    // The declarations to add, as slices of `root_decls`: the entry is then written with
    // one allocation (this runs for every entry of every page).
    let mut decls: smallvec::SmallVec<[&str; 8]> = smallvec::SmallVec::new();
    let mut rest = root_decls;
    while let Some(start) = rest.find(" xmlns") {
        let after = &rest[start + 1..];
        let eq = after.find('=').unwrap_or(after.len());
        let key = &after[..eq];
        let close = after[eq + 2..]
            .find('"')
            .map(|i| eq + 2 + i + 1)
            .unwrap_or(after.len());
        // Whether the entry's own start tag declares this prefix (`key=`).
        let declared = own
            .match_indices(key)
            .any(|(i, _)| own[i + key.len()..].starts_with('='));
        if !declared {
            decls.push(&after[..close]);
        }
        rest = &after[close..];
    }
    let extra: usize = decls.iter().map(|d| d.len() + 1).sum();
    let mut out = String::with_capacity(entry.len() + extra);
    out.push_str(&entry[..name_end]);
    for d in decls {
        out.push(' ');
        out.push_str(d);
    }
    out.push_str(&entry[name_end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RecordContext {
        RecordContext {
            source: "s".into(),
            account: "example.com".into(),
            run_id: "r".into(),
            synced_at_us: 0,
        }
    }

    /// A v3-shaped feed (captured shapes, prefixes as an ElementTree client writes them).
    const FEED: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns='http://www.w3.org/2005/Atom' xmlns:openSearch='http://a9.com/-/spec/opensearch/1.1/' xmlns:gContact='http://schemas.google.com/contact/2008' xmlns:batch='http://schemas.google.com/gdata/batch' xmlns:gd='http://schemas.google.com/g/2005' gd:etag='W/&quot;CEQNQHgyeCt7I2A9WhFSEEs.&quot;'>
<id>example.com</id><updated>2013-06-12T18:39:51.690Z</updated>
<link rel='next' type='application/atom+xml' href='https://www.google.com/m8/feeds/contacts/example.com/full?max-results=2&amp;start-index=3'/>
<openSearch:totalResults>3</openSearch:totalResults>
<entry gd:etag='&quot;Qn85fzVSLit7I2A9WhJXFkoNRQE.&quot;'>
 <id>http://www.google.com/m8/feeds/contacts/example.com/base/2fc67238aede7ff</id>
 <updated>2013-06-12T18:39:51.123Z</updated>
 <title>Zoë &amp; Co</title>
 <content type='text'>line1
line2 &lt;b&gt;</content>
 <link rel='http://schemas.google.com/contacts/2008/rel#photo' type='image/*' href='https://www.google.com/m8/feeds/photos/media/example.com/2fc67238aede7ff' gd:etag='&quot;ph.&quot;'/>
 <gd:name><gd:givenName>Zoë</gd:givenName><gd:familyName>O'Brien</gd:familyName><gd:fullName>Zoë O'Brien</gd:fullName></gd:name>
 <gd:email rel='http://schemas.google.com/g/2005#work' address='zoe@example.org' primary='true'/>
 <gd:email label='Obsolete' address='old@example.org'/>
 <gd:phoneNumber rel='http://schemas.google.com/g/2005#mobile' uri='tel:+44-7554-257819'>+44 7554 257819</gd:phoneNumber>
 <gd:im address='zoe' protocol='http://schemas.google.com/g/2005#GOOGLE_TALK' rel='http://schemas.google.com/g/2005#other'/>
 <gd:structuredPostalAddress rel='http://schemas.google.com/g/2005#work'><gd:street>1 Main St
Apt 2</gd:street><gd:city>東京</gd:city><gd:country code='JP'>Japan</gd:country></gd:structuredPostalAddress>
 <gd:organization rel='http://schemas.google.com/g/2005#work'><gd:orgName>Acme</gd:orgName><gd:orgTitle>CEO</gd:orgTitle></gd:organization>
 <gContact:website href='http://blog.example' rel='blog'/>
 <gContact:relation rel='spouse'>Sam</gContact:relation>
 <gContact:event rel='anniversary'><gd:when startTime='2010-05-01'/></gContact:event>
 <gContact:birthday when='--05-06'/>
 <gContact:groupMembershipInfo deleted='false' href='http://www.google.com/m8/feeds/groups/example.com/base/6'/>
 <gContact:groupMembershipInfo deleted='true' href='http://www.google.com/m8/feeds/groups/example.com/base/7'/>
 <gd:extendedProperty name='crm' value='42'/>
 <gd:extendedProperty name='blob'><info xmlns='urn:x' a='1'>x &amp; y</info></gd:extendedProperty>
 <gContact:userDefinedField key='k' value='v'/>
 <unknown:thing xmlns:unknown='urn:unknown'>kept</unknown:thing>
</entry>
<ns0:entry xmlns:ns0='http://www.w3.org/2005/Atom' xmlns:ns1='http://schemas.google.com/g/2005' ns1:etag='"del."'>
 <ns0:id>http://www.google.com/m8/feeds/contacts/example.com/base/aa</ns0:id>
 <ns0:updated>2013-06-12T18:40:00.000Z</ns0:updated><ns0:title/>
 <ns1:deleted/>
</ns0:entry>
</feed>"#;

    #[test]
    fn decodes_a_v3_feed() {
        let p = decode_feed(FEED.as_bytes(), &ctx(), "page 1").unwrap();
        assert_eq!(p.updated.as_deref(), Some("2013-06-12T18:39:51.690Z"));
        assert_eq!(p.total_results, Some(3));
        assert!(p.next.as_deref().unwrap().ends_with("start-index=3"));
        assert_eq!(p.entries.len(), 2);
        let e = &p.entries[0];
        assert_eq!(e.id, "2fc67238aede7ff");
        assert_eq!(e.etag.as_deref(), Some("\"Qn85fzVSLit7I2A9WhJXFkoNRQE.\""));
        assert_eq!(e.display_name.as_deref(), Some("Zoë O'Brien"));
        assert_eq!(e.notes.as_deref(), Some("line1\nline2 <b>"));
        assert_eq!(e.emails.len(), 2);
        assert_eq!(e.emails[0].kind.as_deref(), Some("work"));
        assert_eq!(e.emails[0].primary, Some(true));
        assert_eq!(e.emails[1].label.as_deref(), Some("Obsolete"));
        assert_eq!(e.emails[1].kind, None);
        assert_eq!(e.emails[1].primary, Some(false));
        assert_eq!(e.phones[0].uri.as_deref(), Some("tel:+44-7554-257819"));
        assert_eq!(e.phones[0].number.as_deref(), Some("+44 7554 257819"));
        assert_eq!(e.ims[0].protocol.as_deref(), Some("GOOGLE_TALK"));
        assert_eq!(e.addresses[0].street.as_deref(), Some("1 Main St\nApt 2"));
        assert_eq!(e.addresses[0].city.as_deref(), Some("東京"));
        assert_eq!(e.organizations[0].title.as_deref(), Some("CEO"));
        assert_eq!(e.websites[0].kind.as_deref(), Some("blog"));
        assert_eq!(e.relations[0].name.as_deref(), Some("Sam"));
        assert_eq!(e.events[0].start.as_deref(), Some("2010-05-01"));
        assert_eq!(e.birthday.as_deref(), Some("--05-06"));
        assert_eq!(
            e.groups,
            vec!["http://www.google.com/m8/feeds/groups/example.com/base/6".to_string()]
        );
        assert_eq!(e.extended_properties[0].value.as_deref(), Some("42"));
        assert_eq!(
            e.extended_properties[1].xml.as_deref(),
            Some("<info xmlns='urn:x' a='1'>x &amp; y</info>")
        );
        assert_eq!(e.photo.as_ref().unwrap().etag.as_deref(), Some("\"ph.\""));
        assert!(!e.deleted);
        // raw parses on its own and keeps the unknown element.
        let raw = e.raw.as_deref().unwrap();
        assert!(
            raw.contains("urn:unknown") && raw.contains("xmlns:gd="),
            "{raw}"
        );
        crate::emulator::xml::parse(raw.as_bytes()).unwrap();
        let d = &p.entries[1];
        assert_eq!(d.id, "aa");
        assert!(d.deleted);
        crate::emulator::xml::parse(d.raw.as_deref().unwrap().as_bytes()).unwrap();
    }

    #[test]
    fn bad_bodies_give_clear_errors() {
        let html = b"<HTML><HEAD><TITLE>Cannot request contacts belonging to another domain (x.com).</TITLE></HEAD><BODY><H2>Error 403</H2></BODY></HTML>";
        let e = decode_feed(html, &ctx(), "page 1 of example.com")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HTML page")
                && e.contains("another domain")
                && e.contains("page 1 of example.com"),
            "{e}"
        );
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><feed xmlns="http://www.w3.org/2005/Atom">&b;</feed>"#;
        assert!(
            decode_feed(bomb, &ctx(), "p")
                .unwrap_err()
                .to_string()
                .contains("DOCTYPE")
        );
        let cut = &FEED.as_bytes()[..FEED.len() / 2];
        assert!(decode_feed(cut, &ctx(), "p").is_err());
        let no_id =
            br#"<feed xmlns="http://www.w3.org/2005/Atom"><entry><title>x</title></entry></feed>"#;
        assert!(
            decode_feed(no_id, &ctx(), "p")
                .unwrap_err()
                .to_string()
                .contains("no <id>")
        );
        assert!(
            decode_feed(b"", &ctx(), "p")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        // Attributes are read without quick-xml's own uniqueness check; ours must refuse
        // a repeated one, prefixed or not.
        for twice in [
            r#"<entry gd:etag="a" gd:etag="b"><id>x</id></entry>"#,
            r#"<entry><id>x</id><gd:email address="a@x" rel="r" address="b@x"/></entry>"#,
        ] {
            let feed = format!(
                r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:gd="http://schemas.google.com/g/2005">{twice}</feed>"#
            );
            let e = decode_feed(feed.as_bytes(), &ctx(), "page 3")
                .unwrap_err()
                .to_string();
            assert!(e.contains("appears twice") && e.contains("page 3"), "{e}");
        }
    }
}
