//! The feed parser: one page read event by event ([`FeedParser`]'s methods, one per kind
//! of event), the feed's own elements kept, and each entry's elements filled into its
//! scalar values and list items as they close.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use super::raw::{ext_content, feed_decls, standalone};
use super::row::{
    AddressX, EmailX, Entry, EventX, ExtPropX, ImX, Items, OrgX, PhoneX, PhotoX, RelationX,
    WebsiteX,
};
use super::scopes::{Attrs, Ns, Scopes, has_xmlns, page_str, short_rel, sub};
use super::{MAX_DEPTH, PHOTO_REL, S};
use crate::error::{Context, Error, Kind, Result};

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

/// What the element being read inside an entry will fill when it closes.
#[derive(Default)]
struct Pending<'a> {
    /// The structured item open (an address, an organization, …).
    open: Open<'a>,
    /// Where captured text goes.
    target: Option<Target>,
    /// The text captured so far.
    val: S<'a>,
    phone: Option<PhoneX<'a>>,
    relation: Option<RelationX<'a>>,
}

/// Which structured item is open.
#[derive(Default)]
enum Open<'a> {
    #[default]
    None,
    Address(AddressX<'a>),
    Org(OrgX<'a>),
    Event(EventX<'a>),
    ExtProp(ExtPropX<'a>),
}

/// What is read of a page: the feed's own elements, and the entries with their items.
#[derive(Default)]
pub(super) struct Parsed<'a> {
    pub(super) updated: Option<String>,
    pub(super) total_results: Option<usize>,
    pub(super) next: Option<String>,
    pub(super) entries: Vec<Entry<'a>>,
    pub(super) items: Items<'a>,
    /// Every entry's standalone text, one after another.
    pub(super) raws: String,
}

/// Appends `piece` to the text being captured, borrowing it when it is the only piece.
fn push_text<'a>(val: &mut S<'a>, piece: Cow<'a, str>) {
    match val {
        None => *val = Some(piece),
        Some(v) => v.to_mut().push_str(&piece),
    }
}

/// `text[from..to]`, two positions the reader reported in it.
fn span(text: &str, from: usize, to: usize) -> Result<&str> {
    text.get(from..to)
        .ok_or_else(|| Error::decode(format!("malformed XML near byte {from}")))
}

/// Reads a whole page (`text`, checked as UTF-8) into its feed values and entries.
pub(super) fn parse(text: &str) -> Result<Parsed<'_>> {
    let mut r = Reader::from_str(text);
    let mut p = FeedParser::new(text);
    loop {
        if let Some(level) = p.pending_pop.take() {
            p.scopes.pop(level);
        }
        let before = r.buffer_position() as usize;
        let ev = match r.read_event() {
            Ok(ev) => ev,
            Err(e) => {
                return Err(Error::with_source(
                    Kind::Decode,
                    format!("malformed XML near byte {before}"),
                    e,
                ));
            }
        };
        // Just past the event: where an element's content begins, or where it ended.
        let after = r.buffer_position() as usize;
        match ev {
            Event::Start(ref s) => p.start(s, false, before, after)?,
            Event::Empty(ref s) => p.start(s, true, before, after)?,
            Event::End(_) => p.end(before, after)?,
            Event::Text(t) if p.st.target.is_some() => {
                push_text(&mut p.st.val, page_str(text, &t)?);
            }
            Event::GeneralRef(g) => p.reference(&g)?,
            Event::CData(c) if p.st.target.is_some() => {
                push_text(
                    &mut p.st.val,
                    String::from_utf8_lossy(&c).into_owned().into(),
                );
            }
            Event::DocType(d) => return Err(p.doctype(&d)),
            Event::Eof => break,
            _ => {}
        }
    }
    p.finish()
}

/// The state of one page's read, fed the reader's events in order.
struct FeedParser<'a> {
    text: &'a str,
    scopes: Scopes,
    /// The depth of an empty element just read, whose bindings end with it.
    pending_pop: Option<usize>,
    page: Parsed<'a>,
    depth: usize,
    /// The feed's namespace declarations, copied into each standalone entry.
    root_decls: Vec<(String, String)>,
    saw_root: bool,
    /// The entry being read, and where its start tag began.
    rec: Option<Entry<'a>>,
    entry_start: usize,
    /// The namespace declarations the entry's start tag makes (their attribute names),
    /// which its standalone text keeps instead of the feed's.
    entry_decls: Vec<String>,
    entry_count: usize,
    /// What the element open inside an entry will fill when it closes.
    st: Pending<'a>,
    /// Where the content of the open `gd:extendedProperty` begins (past its start tag).
    ext_inner: Option<usize>,
}

impl<'a> FeedParser<'a> {
    fn new(text: &'a str) -> FeedParser<'a> {
        FeedParser {
            text,
            scopes: Scopes::default(),
            pending_pop: None,
            page: Parsed {
                // The entries' text, and a little for the declarations each one gets.
                raws: String::with_capacity(text.len() + text.len() / 8),
                ..Default::default()
            },
            depth: 0,
            root_decls: Vec::new(),
            saw_root: false,
            rec: None,
            entry_start: 0,
            entry_decls: Vec::new(),
            entry_count: 0,
            st: Pending::default(),
            ext_inner: None,
        }
    }

    /// A start tag (or an empty element) that began at byte `before`; its content, if
    /// any, begins at `after`.
    fn start(
        &mut self,
        s: &BytesStart<'a>,
        empty: bool,
        before: usize,
        after: usize,
    ) -> Result<()> {
        // Every element's bindings are taken in (and checked) as the reader's resolver
        // did, before anything else is read of it.
        let level = self.depth + 1;
        self.scopes
            .declare(s, &page_str(self.text, s)?, level)
            .with_context(Kind::Decode, || format!("malformed XML near byte {before}"))?;
        if empty {
            self.pending_pop = Some(level);
        }
        let (ns, local) = self.scopes.element(s.name());
        if !self.saw_root {
            return self.root(s, empty, ns, local);
        }
        if !empty {
            self.depth += 1;
        }
        let d = if empty { self.depth + 1 } else { self.depth };
        if d > MAX_DEPTH {
            return Err(Error::decode(format!(
                "elements nest deeper than {MAX_DEPTH} levels near byte {before} (entry #{}); the page is refused whole rather than read in part",
                self.entry_count.max(1)
            )));
        }
        if self.rec.is_some() {
            self.entry_child(s, empty, d, ns, local, after)
        } else if d == 2 && ns == Ns::Atom && local == b"entry" {
            self.entry(s, empty, before)
        } else if d == 2 {
            self.feed_child(s, empty, ns, local)
        } else {
            Ok(())
        }
    }

    /// The document's root: an Atom `<feed>`, or the page is refused, naming what came.
    fn root(&mut self, s: &BytesStart<'_>, empty: bool, ns: Ns, local: &[u8]) -> Result<()> {
        self.saw_root = true;
        if !(ns == Ns::Atom && local == b"feed") {
            let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
            let hint = if name.eq_ignore_ascii_case("html") {
                let title = super::super::describe(self.text.as_bytes());
                format!(
                    "an HTML page ({title}) came back where an Atom feed was expected; check base_url and auth"
                )
            } else {
                format!("expected an Atom <feed>, found <{name}>")
            };
            return Err(Error::decode(hint));
        }
        // Keep the root's namespace declarations for standalone entries.
        self.root_decls = feed_decls(s);
        if !empty {
            self.depth += 1;
        }
        Ok(())
    }

    /// An `<entry>` opens (at byte `before`).
    fn entry(&mut self, s: &BytesStart<'_>, empty: bool, before: usize) -> Result<()> {
        self.entry_count += 1;
        self.entry_start = before;
        // Read from the start tag as parsed (entries rarely declare any): a search of the
        // entry's text for `xmlns:gd=` missed `xmlns:gd = "…"` (the feed's declaration
        // was then added too, a duplicate attribute) and took a value holding that text
        // for a declaration (the feed's, which the entry needed, was left out).
        self.entry_decls = if has_xmlns(&page_str(self.text, s)?) {
            feed_decls(s).into_iter().map(|(key, _)| key).collect()
        } else {
            Vec::new()
        };
        self.rec = Some(Entry {
            etag: Attrs::read(&self.scopes, s, self.text)?.gd("etag"),
            from: self.page.items.marks(),
            ..Default::default()
        });
        if empty {
            return Err(Error::decode(format!(
                "entry #{} is empty (no <id>)",
                self.entry_count
            )));
        }
        Ok(())
    }

    /// An element inside an entry, at depth `d` (3 is a child of the entry).
    fn entry_child(
        &mut self,
        s: &BytesStart<'_>,
        empty: bool,
        d: usize,
        ns: Ns,
        local: &[u8],
        after: usize,
    ) -> Result<()> {
        // Everything inside an extended property is its content, kept whole when the
        // property closes.
        if self.ext_inner.is_some() && d >= 4 {
            return Ok(());
        }
        let Some(rec) = self.rec.as_mut() else {
            return Ok(());
        };
        let at = Attrs::read(&self.scopes, s, self.text)?;
        let items = &mut self.page.items;
        if open_child(rec, items, &mut self.st, &at, d, ns, local) && !empty {
            self.ext_inner = Some(after);
        }
        if self.st.target.is_some() {
            self.st.val = None;
        }
        if empty {
            close(rec, items, &mut self.st, d)?;
        }
        Ok(())
    }

    /// A child of the feed outside the entries: its `<updated>`, `totalResults`, and
    /// the `next` link.
    fn feed_child(&mut self, s: &BytesStart<'_>, empty: bool, ns: Ns, local: &[u8]) -> Result<()> {
        match (ns, local) {
            (Ns::Atom, b"updated") => {
                self.st.target = Some(Target::FeedUpdated);
                self.st.val = None;
            }
            (Ns::OpenSearch, b"totalResults") => {
                self.st.target = Some(Target::Total);
                self.st.val = None;
            }
            (Ns::Atom, b"link") => {
                let at = Attrs::read(&self.scopes, s, self.text)?;
                if at.get("rel") == Some("next") {
                    self.page.next = at.opt("href").map(Cow::into_owned);
                }
            }
            _ => {}
        }
        if empty {
            self.st.target = None;
        }
        Ok(())
    }

    /// An end tag that began at byte `before` and ends at `after`.
    fn end(&mut self, before: usize, after: usize) -> Result<()> {
        let d = self.depth;
        self.depth = self.depth.saturating_sub(1);
        self.scopes.pop(d);
        if self.rec.is_none() {
            if d == 2 {
                self.feed_value();
            }
            return Ok(());
        }
        if let Some(start) = self.ext_inner {
            if d > 3 {
                return Ok(());
            }
            self.ext_inner = None;
            if let Open::ExtProp(p) = &mut self.st.open {
                p.xml = ext_content(span(self.text, start, before)?);
            }
        }
        if d == 2 {
            return self.entry_done(after);
        }
        match self.rec.as_mut() {
            Some(rec) => close(rec, &mut self.page.items, &mut self.st, d),
            None => Ok(()),
        }
    }

    /// A child of the feed closes: its text is the feed's `<updated>` or `totalResults`.
    fn feed_value(&mut self) {
        let v = self.st.val.take();
        let v = v.as_deref().map(str::trim);
        match self.st.target.take() {
            Some(Target::FeedUpdated) => self.page.updated = v.map(str::to_string),
            Some(Target::Total) => self.page.total_results = v.and_then(|v| v.parse().ok()),
            _ => {}
        }
    }

    /// `</entry>`, ending at byte `end`: the entry is whole, and its text is captured.
    fn entry_done(&mut self, end: usize) -> Result<()> {
        let Some(mut done) = self.rec.take() else {
            return Ok(());
        };
        if done.id.is_empty() {
            return Err(Error::decode(format!(
                "entry #{} has no <id>; the server sent an incomplete entry",
                self.entry_count
            )));
        }
        let at = self.page.raws.len();
        let entry = span(self.text, self.entry_start, end)?;
        standalone(
            entry,
            &self.root_decls,
            &self.entry_decls,
            &mut self.page.raws,
        );
        done.raw = at..self.page.raws.len();
        done.to = self.page.items.marks();
        self.page.entries.push(done);
        Ok(())
    }

    /// A character or entity reference, resolved without a DTD.
    fn reference(&mut self, g: &quick_xml::events::BytesRef<'_>) -> Result<()> {
        let c = crate::xml::reference_char(g).map_err(Error::decode)?;
        if self.st.target.is_some() {
            self.st
                .val
                .get_or_insert_with(|| Cow::Owned(String::new()))
                .to_mut()
                .push(c);
        }
        Ok(())
    }

    /// A DOCTYPE: never in a feed (entity expansion is refused); an HTML page is named.
    fn doctype(&self, d: &[u8]) -> Error {
        let html = d
            .trim_ascii_start()
            .get(..4)
            .is_some_and(|h| h.eq_ignore_ascii_case(b"html"));
        if html && !self.saw_root {
            let title = super::super::describe(self.text.as_bytes());
            return Error::decode(format!(
                "an HTML page ({title}) came back where an Atom feed was expected; check base_url and auth"
            ));
        }
        Error::decode("a DOCTYPE is not allowed in a feed (entity expansion is refused)")
    }

    /// The end of the body: the page, if the feed was whole.
    fn finish(self) -> Result<Parsed<'a>> {
        if !self.saw_root {
            return Err(Error::decode("the body is empty; expected an Atom feed"));
        }
        if self.depth != 0 || self.rec.is_some() {
            return Err(Error::decode("the feed ends early (truncated body)"));
        }
        Ok(self.page)
    }
}

/// The elements whose text is one value, by depth (3: a child of the entry), namespace
/// and name. A flat table.
fn text_target(d: usize, ns: Ns, local: &[u8]) -> Option<Target> {
    Some(match (d, ns, local) {
        (3, Ns::Atom, b"id") => Target::Id,
        (3, Ns::Atom, b"updated") => Target::Updated,
        (3, Ns::Atom, b"content") => Target::Notes,
        (3, Ns::GContact, b"nickname") => Target::Nickname,
        (3, Ns::GContact, b"fileAs") => Target::FileAs,
        (4, Ns::Gd, b"givenName") => Target::Given,
        (4, Ns::Gd, b"familyName") => Target::Family,
        (4, Ns::Gd, b"additionalName") => Target::Middle,
        (4, Ns::Gd, b"namePrefix") => Target::Prefix,
        (4, Ns::Gd, b"nameSuffix") => Target::Suffix,
        (4, Ns::Gd, b"fullName") => Target::Full,
        (4, Ns::Gd, b"street") => Target::Street,
        (4, Ns::Gd, b"pobox") => Target::PoBox,
        (4, Ns::Gd, b"neighborhood") => Target::Neighborhood,
        (4, Ns::Gd, b"city") => Target::City,
        (4, Ns::Gd, b"region") => Target::Region,
        (4, Ns::Gd, b"postcode") => Target::Postcode,
        (4, Ns::Gd, b"country") => Target::Country,
        (4, Ns::Gd, b"formattedAddress") => Target::Formatted,
        (4, Ns::Gd, b"orgName") => Target::OrgName,
        (4, Ns::Gd, b"orgTitle") => Target::OrgTitle,
        (4, Ns::Gd, b"orgDepartment") => Target::OrgDept,
        _ => return None,
    })
}

/// The start of an element inside an entry, at depth `d`: what it opens or fills, from
/// its attributes. True for an extended property, whose content is kept whole.
fn open_child<'a>(
    rec: &mut Entry<'a>,
    items: &mut Items<'a>,
    st: &mut Pending<'a>,
    at: &Attrs<'_, 'a>,
    d: usize,
    ns: Ns,
    local: &[u8],
) -> bool {
    if let Some(t) = text_target(d, ns, local) {
        st.target = Some(t);
        return false;
    }
    match (d, ns, local) {
        (3, Ns::Gd, b"deleted") => rec.deleted = true,
        (3, Ns::Atom, b"link") if at.get("rel") == Some(PHOTO_REL) => {
            rec.photo = Some(PhotoX {
                href: at.opt("href"),
                etag: at.gd("etag"),
            });
        }
        (3, Ns::GContact, b"birthday") => rec.birthday = at.opt("when"),
        (3, Ns::GContact, b"groupMembershipInfo") => {
            if at.get("deleted") != Some("true")
                && let Some(h) = at.opt("href")
            {
                items.groups.push(h);
            }
        }
        (3, Ns::Gd, b"extendedProperty") => {
            st.open = Open::ExtProp(ExtPropX {
                name: at.opt("name"),
                value: at.find(Ns::Atom, "value").cloned(),
                xml: None,
            });
            return true;
        }
        (4, Ns::Gd, b"when") => {
            if let Open::Event(e) = &mut st.open {
                e.start = at.opt("startTime");
            }
        }
        (3, _, _) => open_item(items, st, at, ns, local),
        _ => {}
    }
    false
}

/// A list item of an entry opens (a child of the entry): an item with no text is
/// whole at once; one with text or children waits in `st` for its end.
fn open_item<'a>(
    items: &mut Items<'a>,
    st: &mut Pending<'a>,
    at: &Attrs<'_, 'a>,
    ns: Ns,
    local: &[u8],
) {
    match (ns, local) {
        (Ns::Gd, b"email") => items.emails.push(EmailX {
            address: at.opt("address"),
            kind: at.rel(),
            label: at.opt("label"),
            primary: at.primary(),
            display_name: at.opt("displayName"),
        }),
        (Ns::Gd, b"phoneNumber") => {
            st.phone = Some(PhoneX {
                number: None,
                kind: at.rel(),
                label: at.opt("label"),
                primary: at.primary(),
                uri: at.opt("uri"),
            });
            st.target = Some(Target::PhoneNumber);
        }
        (Ns::Gd, b"im") => items.ims.push(ImX {
            address: at.opt("address"),
            protocol: at.opt("protocol").map(short_rel),
            kind: at.rel(),
            label: at.opt("label"),
            primary: at.primary(),
        }),
        (Ns::Gd, b"structuredPostalAddress") => st.open = Open::Address(address(at)),
        // The legacy unstructured form: its text is the formatted address.
        (Ns::Gd, b"postalAddress") => {
            st.open = Open::Address(address(at));
            st.target = Some(Target::Formatted);
        }
        (Ns::Gd, b"organization") => {
            st.open = Open::Org(OrgX {
                kind: at.rel(),
                label: at.opt("label"),
                primary: at.primary(),
                ..Default::default()
            })
        }
        (Ns::GContact, b"website") => items.websites.push(WebsiteX {
            href: at.opt("href"),
            kind: at.rel(),
            label: at.opt("label"),
            primary: at.primary(),
        }),
        (Ns::GContact, b"relation") => {
            st.relation = Some(RelationX {
                name: None,
                kind: at.rel(),
                label: at.opt("label"),
            });
            st.target = Some(Target::RelationName);
        }
        (Ns::GContact, b"event") => {
            st.open = Open::Event(EventX {
                kind: at.rel(),
                label: at.opt("label"),
                start: None,
            })
        }
        _ => {}
    }
}

/// An address opening, with the attributes of its start tag.
fn address<'a>(at: &Attrs<'_, 'a>) -> AddressX<'a> {
    AddressX {
        kind: at.rel(),
        label: at.opt("label"),
        primary: at.primary(),
        ..Default::default()
    }
}

/// The end of an element inside an entry at depth `d`: what it captured goes where
/// `st` says, into the entry or its items.
fn close<'a>(
    rec: &mut Entry<'a>,
    items: &mut Items<'a>,
    st: &mut Pending<'a>,
    d: usize,
) -> Result<()> {
    let Some(t) = st.target.take() else {
        if d == 3 {
            match std::mem::replace(&mut st.open, Open::None) {
                Open::Address(a) => items.addresses.push(a),
                Open::Org(o) => items.organizations.push(o),
                Open::Event(e) => items.events.push(e),
                Open::ExtProp(p) => items.extended_properties.push(p),
                Open::None => {}
            }
        }
        return Ok(());
    };
    match t {
        // The id and the time read the whole text; other values are absent when empty.
        Target::Id => {
            rec.id = sub(st.val.take().unwrap_or_default(), |full| {
                let full = full.trim();
                full.trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or(full)
            });
        }
        Target::Updated => {
            let whole = st.val.take();
            let t = whole.as_deref().unwrap_or_default().trim();
            rec.updated = Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .with_context(Kind::Decode, || {
                        format!("entry <updated> {t:?} is not RFC 3339")
                    })?
                    .timestamp_micros(),
            );
        }
        _ => {
            let v = st.val.take().filter(|s| !s.is_empty());
            fill(rec, items, st, t, v, d);
        }
    }
    Ok(())
}

/// A value `v` (text, absent when empty) goes to the field `t` names: the entry's, the
/// pending phone or relation (then whole), or the open address or organization.
fn fill<'a>(
    rec: &mut Entry<'a>,
    items: &mut Items<'a>,
    st: &mut Pending<'a>,
    t: Target,
    v: S<'a>,
    d: usize,
) {
    if let Some(field) = entry_field(rec, t) {
        *field = v;
        return;
    }
    match (t, &mut st.open) {
        (Target::PhoneNumber, _) => {
            if let Some(mut p) = st.phone.take() {
                p.number = v;
                items.phones.push(p);
            }
        }
        (Target::RelationName, _) => {
            if let Some(mut x) = st.relation.take() {
                x.name = v;
                items.relations.push(x);
            }
        }
        (_, Open::Address(a)) => {
            if let Some(field) = address_field(a, t) {
                *field = v;
            }
        }
        (_, Open::Org(o)) => {
            if let Some(field) = org_field(o, t) {
                *field = v;
            }
        }
        _ => {}
    }
    // `gd:postalAddress` itself closes: the address is whole.
    if matches!(t, Target::Formatted)
        && d == 3
        && let Open::Address(a) = std::mem::replace(&mut st.open, Open::None)
    {
        items.addresses.push(a);
    }
}

/// The entry's field a text target fills. A flat table.
fn entry_field<'e, 'a>(rec: &'e mut Entry<'a>, t: Target) -> Option<&'e mut S<'a>> {
    Some(match t {
        Target::Notes => &mut rec.notes,
        Target::Given => &mut rec.given_name,
        Target::Family => &mut rec.family_name,
        Target::Middle => &mut rec.middle_name,
        Target::Prefix => &mut rec.prefix,
        Target::Suffix => &mut rec.suffix,
        Target::Full => &mut rec.display_name,
        Target::Nickname => &mut rec.nickname,
        Target::FileAs => &mut rec.file_as,
        _ => return None,
    })
}

/// The address field a text target fills. A flat table.
fn address_field<'e, 'a>(a: &'e mut AddressX<'a>, t: Target) -> Option<&'e mut S<'a>> {
    Some(match t {
        Target::Street => &mut a.street,
        Target::PoBox => &mut a.po_box,
        Target::Neighborhood => &mut a.neighborhood,
        Target::City => &mut a.city,
        Target::Region => &mut a.region,
        Target::Postcode => &mut a.postcode,
        Target::Country => &mut a.country,
        Target::Formatted => &mut a.formatted,
        _ => return None,
    })
}

/// The organization field a text target fills.
fn org_field<'e, 'a>(o: &'e mut OrgX<'a>, t: Target) -> Option<&'e mut S<'a>> {
    Some(match t {
        Target::OrgName => &mut o.name,
        Target::OrgTitle => &mut o.title,
        Target::OrgDept => &mut o.department,
        _ => return None,
    })
}
