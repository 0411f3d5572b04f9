//! Atom feed → contacts, streaming and namespace-aware (prefixes are resolved, never
//! compared). Every element of protocol note §4 that the schema models is mapped; unknown
//! elements are tolerated and kept in `raw`, the entry as a standalone document with the
//! namespace declarations it needs.
//!
//! A page goes straight to Arrow: the decoder keeps each value as a slice of the page
//! (a copy only where the XML had to be unescaped), the list items of every entry in one
//! vector per list, and the typed builders then copy each string once, into its column.

use std::borrow::Cow;
use std::ops::Range;

use arrow::array::RecordBatch;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{NamespaceError, PrefixDeclaration, QName};
use quick_xml::reader::Reader;

use crate::error::{Context, Error, Kind, Result};
use crate::model::schema::ContactRecord;
use crate::model::schema::builders::{Cell, Cells, Row};

const ATOM: &[u8] = b"http://www.w3.org/2005/Atom";
const GD: &[u8] = b"http://schemas.google.com/g/2005";
const GCONTACT: &[u8] = b"http://schemas.google.com/contact/2008";
const OPENSEARCH: &[u8] = b"http://a9.com/-/spec/opensearch/1.1/";
const OPENSEARCH_V1: &[u8] = b"http://a9.com/-/spec/opensearchrss/1.0/";
const PHOTO_REL: &str = "http://schemas.google.com/contacts/2008/rel#photo";
/// How deep elements may nest in a page. A GData entry is 5 levels deep and an extended
/// property's XML adds a few; the limit stops a hostile page long before quick-xml's
/// 16-bit nesting counter could wrap and lose track of where an entry ends.
pub const MAX_DEPTH: usize = 256;

/// One decoded feed page.
#[derive(Debug)]
pub struct FeedPage {
    /// The feed's `<updated>` (server time), as sent.
    pub updated: Option<String>,
    /// `openSearch:totalResults`.
    pub total_results: Option<usize>,
    /// The `rel="next"` link.
    pub next: Option<String>,
    /// Entries in page order, one row each of the contacts schema; placeholders have
    /// `deleted = true`.
    pub batch: RecordBatch,
}

impl FeedPage {
    /// The entries as records (read back from the batch).
    pub fn records(&self) -> Result<Vec<ContactRecord>> {
        crate::model::schema::batches_to_records(std::slice::from_ref(&self.batch))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ns {
    Atom,
    Gd,
    GContact,
    OpenSearch,
    Other,
}

/// The namespace a URI names (an empty one undeclares: no namespace).
fn ns_of_uri(uri: &[u8]) -> Ns {
    match uri {
        ATOM => Ns::Atom,
        GD => Ns::Gd,
        GCONTACT => Ns::GContact,
        OPENSEARCH | OPENSEARCH_V1 => Ns::OpenSearch,
        _ => Ns::Other,
    }
}

const XML_URI: &[u8] = b"http://www.w3.org/XML/1998/namespace";
const XMLNS_URI: &[u8] = b"http://www.w3.org/2000/xmlns/";

/// The namespace bindings in scope, each resolved to the namespace the decoder knows it
/// by once, when it is declared. Resolving a name is then a look at the few prefixes in
/// scope, with no URI compared, and an element that declares nothing (all but the root of
/// a usual page) costs one search of its tag for `xmlns`. This is quick-xml's own
/// resolution (`NsReader`), rule for rule, including the bindings it refuses; the
/// reader's resolver walked every element's attributes a second time and compared URIs
/// for every name.
#[derive(Default)]
struct Scopes {
    /// Prefix (empty for the default namespace, as `xmlns:=` also declares it), namespace,
    /// and the depth of the declaring element; innermost last.
    bindings: Vec<(Box<[u8]>, Ns, usize)>,
}

impl Scopes {
    /// Takes in the bindings `s` (at depth `level`) declares, if its tag text `tag` has
    /// any. As quick-xml's resolver, reading stops at a malformed attribute (the decoder
    /// reports it where it reads attributes).
    fn declare(
        &mut self,
        s: &BytesStart<'_>,
        tag: &str,
        level: usize,
    ) -> Result<(), NamespaceError> {
        if !tag.contains("xmlns") {
            return Ok(());
        }
        for a in s.attributes().with_checks(false) {
            let Ok(a) = a else { break };
            let Some(decl) = a.key.as_namespace_binding() else {
                continue;
            };
            // quick-xml compares the value as written, without unescaping.
            let uri: &[u8] = &a.value;
            let prefix: &[u8] = match decl {
                PrefixDeclaration::Default => b"",
                PrefixDeclaration::Named(b"xml") if uri == XML_URI => continue,
                PrefixDeclaration::Named(b"xml") => {
                    return Err(NamespaceError::InvalidXmlPrefixBind(uri.to_vec()));
                }
                PrefixDeclaration::Named(b"xmlns") => {
                    return Err(NamespaceError::InvalidXmlnsPrefixBind(uri.to_vec()));
                }
                PrefixDeclaration::Named(p) if uri == XML_URI => {
                    return Err(NamespaceError::InvalidPrefixForXml(p.to_vec()));
                }
                PrefixDeclaration::Named(p) if uri == XMLNS_URI => {
                    return Err(NamespaceError::InvalidPrefixForXmlns(p.to_vec()));
                }
                PrefixDeclaration::Named(p) => p,
            };
            self.bindings.push((prefix.into(), ns_of_uri(uri), level));
        }
        Ok(())
    }

    /// Drops the bindings of the element at depth `level`, which closes.
    fn pop(&mut self, level: usize) {
        while self.bindings.last().is_some_and(|b| b.2 >= level) {
            self.bindings.pop();
        }
    }

    /// The namespace of a prefixed name: the innermost binding of the prefix (none, or
    /// one that undeclares it, is no namespace the decoder knows).
    fn prefixed(&self, p: &[u8]) -> Ns {
        if p.is_empty() {
            return Ns::Other;
        }
        self.bindings
            .iter()
            .rev()
            .find(|b| *b.0 == *p)
            .map_or(Ns::Other, |b| b.1)
    }

    /// An element's namespace and local name: unprefixed, the default namespace.
    fn element<'n>(&self, name: QName<'n>) -> (Ns, &'n [u8]) {
        let (local, prefix) = name.decompose();
        let ns = match prefix {
            Some(p) => self.prefixed(p.into_inner()),
            None => self
                .bindings
                .iter()
                .rev()
                .find(|b| b.0.is_empty())
                .map_or(Ns::Other, |b| b.1),
        };
        (ns, local.into_inner())
    }

    /// An attribute's namespace and local name: unprefixed, no namespace, which the
    /// decoder files under [`Ns::Atom`] (an Atom element's own attributes).
    fn attribute<'n>(&self, name: QName<'n>) -> (Ns, &'n [u8]) {
        let (local, prefix) = name.decompose();
        let ns = match prefix {
            Some(p) => self.prefixed(p.into_inner()),
            None => Ns::Atom,
        };
        (ns, local.into_inner())
    }
}

/// `b`, a slice of the page `text`, as text of the page: the page was checked as UTF-8
/// once, so its pieces are not checked again (quick-xml cuts only at ASCII delimiters; a
/// piece that is not a slice of the page, which a reader of a `&str` does not make, is
/// checked).
fn page_str<'a>(text: &'a str, b: &[u8]) -> Result<Cow<'a, str>> {
    let off = (b.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    match text.get(off..off.wrapping_add(b.len())) {
        Some(s) if off <= text.len() => Ok(Cow::Borrowed(s)),
        _ => std::str::from_utf8(b)
            .map(|s| Cow::Owned(s.to_string()))
            .context(Kind::Decode, "bad text"),
    }
}

/// Unescapes `v` (entity and character references), borrowing it when it has none.
fn unescape(v: Cow<'_, str>) -> Result<Cow<'_, str>> {
    let bad = |e| Error::with_source(Kind::Decode, "bad attribute value", e);
    Ok(match v {
        Cow::Borrowed(b) => quick_xml::escape::unescape(b).map_err(bad)?,
        Cow::Owned(o) => Cow::Owned(quick_xml::escape::unescape(&o).map_err(bad)?.into_owned()),
    })
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

/// A value of the page: a slice of it, or owned where the XML was unescaped.
type S<'a> = Option<Cow<'a, str>>;

/// The part of a string `f` picks, borrowed from the page when the string is.
fn sub<'a>(s: Cow<'a, str>, f: impl Fn(&str) -> &str) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(f(b)),
        Cow::Owned(o) => Cow::Owned(f(&o).to_string()),
    }
}

fn short_rel(v: Cow<'_, str>) -> Cow<'_, str> {
    sub(v, |v| v.rsplit('#').next().unwrap_or(v))
}

/// One attribute: its namespace, local name and (unescaped) value.
type Attr<'t, 'a> = (Ns, &'t [u8], Cow<'a, str>);

/// The attributes of one element, borrowed from the page (no copy unless a value has
/// escapes).
struct Attrs<'t, 'a> {
    /// On the stack: GData elements carry at most six attributes, and this runs for every
    /// element of every entry (a heap vector here was a third of a sync's allocations).
    items: smallvec::SmallVec<[Attr<'t, 'a>; 8]>,
}

impl<'t, 'a> Attrs<'t, 'a> {
    fn read(sc: &Scopes, s: &'t BytesStart<'_>, text: &'a str) -> Result<Attrs<'t, 'a>> {
        let mut items = smallvec::SmallVec::new();
        // quick-xml's duplicate check keeps a heap vector of the keys seen; the same check
        // is made below over the few raw keys without one.
        let mut keys: smallvec::SmallVec<[&'t [u8]; 8]> = smallvec::SmallVec::new();
        for a in s.attributes().with_checks(false) {
            let a = a.context(Kind::Decode, "bad attribute")?;
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
            let (ns, local) = sc.attribute(a.key);
            // The value as written is a slice of the page; unescaped, a copy only where
            // it has references.
            let v = unescape(page_str(text, &a.value)?)?;
            items.push((ns, local, v));
        }
        Ok(Attrs { items })
    }
    fn find(&self, ns: Ns, name: &str) -> Option<&Cow<'a, str>> {
        self.items
            .iter()
            .find(|(n, l, _)| *n == ns && *l == name.as_bytes())
            .map(|(_, _, v)| v)
    }
    /// An unprefixed attribute.
    fn get(&self, name: &str) -> Option<&str> {
        self.find(Ns::Atom, name).map(|v| v.as_ref())
    }
    /// An unprefixed attribute, absent when empty.
    fn opt(&self, name: &str) -> S<'a> {
        self.find(Ns::Atom, name).filter(|v| !v.is_empty()).cloned()
    }
    fn gd(&self, name: &str) -> S<'a> {
        self.find(Ns::Gd, name).cloned()
    }
    fn primary(&self) -> Option<bool> {
        Some(self.get("primary") == Some("true"))
    }
    fn rel(&self) -> S<'a> {
        self.opt("rel").map(short_rel)
    }
}

pub use crate::model::extract::RecordContext;

/// Schema columns of a list item, each a field of the decoder's item.
macro_rules! xml_cells {
    ($t:ident { $($name:literal => $kind:ident $f:ident),* $(,)? }) => {
        impl Cells for $t<'_> {
            fn getter(name: &str) -> Option<fn(&Self) -> Cell<'_>> {
                match name {
                    $($name => {
                        fn get<'x>(x: &'x $t<'_>) -> Cell<'x> {
                            xml_cells!(@cell $kind x.$f)
                        }
                        Some(get)
                    })*
                    _ => None,
                }
            }
        }
    };
    (@cell s $e:expr) => { Cell::Str($e.as_deref()) };
    (@cell b $e:expr) => { Cell::Bool($e) };
}

/// Declares the decoder's list items: plain structs of page values, and their columns.
macro_rules! xml_items {
    ($($(#[$m:meta])* $t:ident { $($name:literal => $kind:ident $f:ident),* $(,)? })*) => {$(
        $(#[$m])*
        #[derive(Debug, Default)]
        struct $t<'a> {
            $($f: xml_items!(@ty $kind 'a),)*
        }
        xml_cells!($t { $($name => $kind $f),* });
    )*};
    (@ty s $a:lifetime) => { S<$a> };
    (@ty b $a:lifetime) => { Option<bool> };
}

xml_items! {
    /// `gd:email`.
    EmailX { "address" => s address, "type" => s kind, "label" => s label, "primary" => b primary, "display_name" => s display_name }
    /// `gd:phoneNumber`.
    PhoneX { "number" => s number, "type" => s kind, "label" => s label, "primary" => b primary, "uri" => s uri }
    /// `gd:structuredPostalAddress`.
    AddressX {
        "type" => s kind, "label" => s label, "primary" => b primary, "street" => s street,
        "po_box" => s po_box, "neighborhood" => s neighborhood, "city" => s city,
        "region" => s region, "postcode" => s postcode, "country" => s country,
        "formatted" => s formatted,
    }
    /// `gd:im`.
    ImX { "address" => s address, "protocol" => s protocol, "type" => s kind, "label" => s label, "primary" => b primary }
    /// `gd:organization`.
    OrgX {
        "name" => s name, "title" => s title, "department" => s department, "type" => s kind,
        "label" => s label, "primary" => b primary,
    }
    /// `gContact:website`.
    WebsiteX { "href" => s href, "type" => s kind, "label" => s label, "primary" => b primary }
    /// `gContact:relation`.
    RelationX { "name" => s name, "type" => s kind, "label" => s label }
    /// `gContact:event`.
    EventX { "type" => s kind, "label" => s label, "start" => s start }
    /// The photo `link`.
    PhotoX { "href" => s href, "etag" => s etag }
    /// `gd:extendedProperty`.
    ExtPropX { "name" => s name, "value" => s value, "xml" => s xml }
}

/// The list items of a page's entries, one vector per list; an entry holds ranges.
#[derive(Default)]
struct Items<'a> {
    emails: Vec<EmailX<'a>>,
    phones: Vec<PhoneX<'a>>,
    addresses: Vec<AddressX<'a>>,
    ims: Vec<ImX<'a>>,
    organizations: Vec<OrgX<'a>>,
    websites: Vec<WebsiteX<'a>>,
    relations: Vec<RelationX<'a>>,
    events: Vec<EventX<'a>>,
    extended_properties: Vec<ExtPropX<'a>>,
    groups: Vec<Cow<'a, str>>,
}

/// Where an entry's items are in [`Items`]: one position per list.
#[derive(Clone, Copy, Default)]
struct Marks([u32; 10]);

impl Items<'_> {
    fn marks(&self) -> Marks {
        Marks(
            [
                self.emails.len(),
                self.phones.len(),
                self.addresses.len(),
                self.ims.len(),
                self.organizations.len(),
                self.websites.len(),
                self.relations.len(),
                self.events.len(),
                self.extended_properties.len(),
                self.groups.len(),
            ]
            .map(|n| n as u32),
        )
    }
}

/// One entry as read: its scalar values, and where its list items are.
#[derive(Default)]
struct Entry<'a> {
    id: Cow<'a, str>,
    etag: S<'a>,
    updated: Option<i64>,
    deleted: bool,
    display_name: S<'a>,
    given_name: S<'a>,
    family_name: S<'a>,
    middle_name: S<'a>,
    prefix: S<'a>,
    suffix: S<'a>,
    nickname: S<'a>,
    file_as: S<'a>,
    notes: S<'a>,
    birthday: S<'a>,
    photo: Option<PhotoX<'a>>,
    /// The entry as a standalone document, a range of the page's `raws`.
    raw: Range<usize>,
    from: Marks,
    to: Marks,
}

/// An entry with what it refers to, as the builders read it.
struct GRow<'p, 'a> {
    e: &'p Entry<'a>,
    items: &'p Items<'a>,
    raws: &'p str,
    ctx: &'p RecordContext,
}

impl GRow<'_, '_> {
    fn span(&self, k: usize) -> Range<usize> {
        self.e.from.0[k] as usize..self.e.to.0[k] as usize
    }
}

impl Cells for GRow<'_, '_> {
    fn getter(name: &str) -> Option<fn(&Self) -> Cell<'_>> {
        let get: fn(&Self) -> Cell<'_> = match name {
            "source" => |x| Cell::Str(Some(&x.ctx.source)),
            "account" => |x| Cell::Str(Some(&x.ctx.account)),
            "_run_id" => |x| Cell::Str(Some(&x.ctx.run_id)),
            "id" => |x| Cell::Str(Some(&x.e.id)),
            "etag" => |x| Cell::Str(x.e.etag.as_deref()),
            "deleted" => |x| Cell::Bool(Some(x.e.deleted)),
            "display_name" => |x| Cell::Str(x.e.display_name.as_deref()),
            "given_name" => |x| Cell::Str(x.e.given_name.as_deref()),
            "family_name" => |x| Cell::Str(x.e.family_name.as_deref()),
            "middle_name" => |x| Cell::Str(x.e.middle_name.as_deref()),
            "prefix" => |x| Cell::Str(x.e.prefix.as_deref()),
            "suffix" => |x| Cell::Str(x.e.suffix.as_deref()),
            "nickname" => |x| Cell::Str(x.e.nickname.as_deref()),
            "file_as" => |x| Cell::Str(x.e.file_as.as_deref()),
            "notes" => |x| Cell::Str(x.e.notes.as_deref()),
            "birthday" => |x| Cell::Str(x.e.birthday.as_deref()),
            // GData has no provider-native extras beyond `raw`.
            "native" => |_| Cell::Str(None),
            "raw" => |x| Cell::Str(Some(&x.raws[x.e.raw.clone()])),
            _ => return None,
        };
        Some(get)
    }
}

impl<'a> Row for GRow<'_, 'a> {
    type Email = EmailX<'a>;
    type Phone = PhoneX<'a>;
    type Address = AddressX<'a>;
    type Im = ImX<'a>;
    type Organization = OrgX<'a>;
    type Website = WebsiteX<'a>;
    type Relation = RelationX<'a>;
    type Event = EventX<'a>;
    type ExtendedProperty = ExtPropX<'a>;
    type Group = Cow<'a, str>;
    type Photo = PhotoX<'a>;
    fn updated(&self) -> Option<i64> {
        self.e.updated
    }
    fn synced_at(&self) -> i64 {
        self.ctx.synced_at_us
    }
    fn emails(&self) -> &[EmailX<'a>] {
        &self.items.emails[self.span(0)]
    }
    fn phones(&self) -> &[PhoneX<'a>] {
        &self.items.phones[self.span(1)]
    }
    fn addresses(&self) -> &[AddressX<'a>] {
        &self.items.addresses[self.span(2)]
    }
    fn ims(&self) -> &[ImX<'a>] {
        &self.items.ims[self.span(3)]
    }
    fn organizations(&self) -> &[OrgX<'a>] {
        &self.items.organizations[self.span(4)]
    }
    fn websites(&self) -> &[WebsiteX<'a>] {
        &self.items.websites[self.span(5)]
    }
    fn relations(&self) -> &[RelationX<'a>] {
        &self.items.relations[self.span(6)]
    }
    fn events(&self) -> &[EventX<'a>] {
        &self.items.events[self.span(7)]
    }
    fn extended_properties(&self) -> &[ExtPropX<'a>] {
        &self.items.extended_properties[self.span(8)]
    }
    fn groups(&self) -> &[Cow<'a, str>] {
        &self.items.groups[self.span(9)]
    }
    fn photo(&self) -> Option<&PhotoX<'a>> {
        self.e.photo.as_ref()
    }
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

/// Decodes one feed page into a batch of the contacts schema. `what` names the page in
/// errors.
pub fn decode_feed(body: &[u8], ctx: &RecordContext, what: &str) -> Result<FeedPage> {
    decode_feed_inner(body, ctx).map_err(|e| e.context(what))
}

/// What is read of a page: the feed's own elements, and the entries with their items.
#[derive(Default)]
struct Parsed<'a> {
    updated: Option<String>,
    total_results: Option<usize>,
    next: Option<String>,
    entries: Vec<Entry<'a>>,
    items: Items<'a>,
    /// Every entry's standalone text, one after another.
    raws: String,
}

fn decode_feed_inner(body: &[u8], ctx: &RecordContext) -> Result<FeedPage> {
    let text = crate::http::body_text(body).context(Kind::Decode, "the body is not UTF-8")?;
    let p = parse(text)?;
    let rows: Vec<GRow<'_, '_>> = p
        .entries
        .iter()
        .map(|e| GRow {
            e,
            items: &p.items,
            raws: &p.raws,
            ctx,
        })
        .collect();
    Ok(FeedPage {
        batch: crate::model::schema::rows_to_batch(&rows)?,
        updated: p.updated,
        total_results: p.total_results,
        next: p.next,
    })
}

/// Appends `piece` to the text being captured, borrowing it when it is the only piece.
fn push_text<'a>(val: &mut S<'a>, piece: Cow<'a, str>) {
    match val {
        None => *val = Some(piece),
        Some(v) => v.to_mut().push_str(&piece),
    }
}

fn parse(text: &str) -> Result<Parsed<'_>> {
    let mut r = Reader::from_str(text);
    let mut scopes = Scopes::default();
    // The depth of an empty element just read, whose bindings end with it.
    let mut pending_pop: Option<usize> = None;
    let mut page = Parsed {
        // The entries' text, and a little for the declarations each one gets.
        raws: String::with_capacity(text.len() + text.len() / 8),
        ..Default::default()
    };
    let mut depth = 0usize;
    let mut root_decls = Vec::new();
    let mut saw_root = false;
    // Entry state.
    let mut rec: Option<Entry<'_>> = None;
    let mut entry_start = 0usize;
    // What the element open inside an entry will fill when it closes.
    let mut st = Pending::default();
    // Where the content of the open `gd:extendedProperty` begins (just past its start tag).
    let mut ext_inner: Option<usize> = None;
    let mut entry_count = 0usize;
    loop {
        if let Some(level) = pending_pop.take() {
            scopes.pop(level);
        }
        let before = r.buffer_position() as usize;
        let ev = r
            .read_event()
            .with_context(Kind::Decode, || format!("malformed XML near byte {before}"))?;
        match ev {
            Event::Start(ref s) | Event::Empty(ref s) => {
                let empty = matches!(ev, Event::Empty(_));
                // Every element's bindings are taken in (and checked) as the reader's
                // resolver did, before anything else is read of it.
                let level = depth + 1;
                scopes
                    .declare(s, &page_str(text, s)?, level)
                    .with_context(Kind::Decode, || format!("malformed XML near byte {before}"))?;
                if empty {
                    pending_pop = Some(level);
                }
                let (ns, local) = scopes.element(s.name());
                if !saw_root {
                    saw_root = true;
                    if !(ns == Ns::Atom && local == b"feed") {
                        let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
                        let hint = if name.eq_ignore_ascii_case("html") {
                            let title = super::describe(text.as_bytes());
                            format!(
                                "an HTML page ({title}) came back where an Atom feed was expected; check base_url and auth"
                            )
                        } else {
                            format!("expected an Atom <feed>, found <{name}>")
                        };
                        return Err(Error::decode(hint));
                    }
                    // Keep the root's namespace declarations for standalone entries.
                    root_decls = feed_decls(s);
                    if !empty {
                        depth += 1;
                    }
                    continue;
                }
                if !empty {
                    depth += 1;
                }
                let d = if empty { depth + 1 } else { depth };
                if d > MAX_DEPTH {
                    return Err(Error::decode(format!(
                        "elements nest deeper than {MAX_DEPTH} levels near byte {before} (entry #{}); the page is refused whole rather than read in part",
                        entry_count.max(1)
                    )));
                }
                if let Some(rec) = rec.as_mut() {
                    // Inside an entry: d == 3 is a child of the entry.
                    // Everything inside an extended property is its content, kept whole
                    // when the property closes.
                    if ext_inner.is_some() && d >= 4 {
                        continue;
                    }
                    let at = Attrs::read(&scopes, s, text)?;
                    let items = &mut page.items;
                    if open_child(rec, items, &mut st, &at, d, ns, local) && !empty {
                        ext_inner = Some(r.buffer_position() as usize);
                    }
                    if st.target.is_some() {
                        st.val = None;
                    }
                    if empty {
                        close(rec, items, &mut st, d)?;
                    }
                } else if d == 2 && ns == Ns::Atom && local == b"entry" {
                    entry_count += 1;
                    entry_start = before;
                    rec = Some(Entry {
                        etag: Attrs::read(&scopes, s, text)?.gd("etag"),
                        from: page.items.marks(),
                        ..Default::default()
                    });
                    if empty {
                        return Err(Error::decode(format!(
                            "entry #{entry_count} is empty (no <id>)"
                        )));
                    }
                } else if d == 2 {
                    match (ns, local) {
                        (Ns::Atom, b"updated") => {
                            st.target = Some(Target::FeedUpdated);
                            st.val = None;
                        }
                        (Ns::OpenSearch, b"totalResults") => {
                            st.target = Some(Target::Total);
                            st.val = None;
                        }
                        (Ns::Atom, b"link") => {
                            let at = Attrs::read(&scopes, s, text)?;
                            if at.get("rel") == Some("next") {
                                page.next = at.opt("href").map(Cow::into_owned);
                            }
                        }
                        _ => {}
                    }
                    if empty {
                        st.target = None;
                    }
                }
            }
            Event::End(_) => {
                let d = depth;
                depth = depth.saturating_sub(1);
                scopes.pop(d);
                if let Some(rc) = rec.as_mut() {
                    if let Some(start) = ext_inner {
                        if d > 3 {
                            continue;
                        }
                        ext_inner = None;
                        if let Open::ExtProp(p) = &mut st.open {
                            p.xml = ext_content(&text[start..before]);
                        }
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
                        let at = page.raws.len();
                        standalone(&text[entry_start..end], &root_decls, &mut page.raws);
                        done.raw = at..page.raws.len();
                        done.to = page.items.marks();
                        page.entries.push(done);
                        continue;
                    }
                    close(rc, &mut page.items, &mut st, d)?;
                } else if d == 2 {
                    let v = st.val.take();
                    let v = v.as_deref().map(str::trim);
                    match st.target.take() {
                        Some(Target::FeedUpdated) => page.updated = v.map(str::to_string),
                        Some(Target::Total) => page.total_results = v.and_then(|v| v.parse().ok()),
                        _ => {}
                    }
                }
            }
            Event::Text(t) if st.target.is_some() => {
                push_text(&mut st.val, page_str(text, &t)?);
            }
            Event::GeneralRef(g) => {
                let c = crate::xml::reference_char(&g).map_err(Error::decode)?;
                if st.target.is_some() {
                    st.val
                        .get_or_insert_with(|| Cow::Owned(String::new()))
                        .to_mut()
                        .push(c);
                }
            }
            Event::CData(c) if st.target.is_some() => {
                push_text(&mut st.val, String::from_utf8_lossy(&c).into_owned().into());
            }
            Event::DocType(d) => {
                let html = d
                    .trim_ascii_start()
                    .get(..4)
                    .is_some_and(|h| h.eq_ignore_ascii_case(b"html"));
                if html && !saw_root {
                    let title = super::describe(text.as_bytes());
                    return Err(Error::decode(format!(
                        "an HTML page ({title}) came back where an Atom feed was expected; check base_url and auth"
                    )));
                }
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
    match (d, ns, local) {
        (3, Ns::Atom, b"id") => st.target = Some(Target::Id),
        (3, Ns::Atom, b"updated") => st.target = Some(Target::Updated),
        (3, Ns::Atom, b"content") => st.target = Some(Target::Notes),
        (3, Ns::Gd, b"deleted") => rec.deleted = true,
        (3, Ns::Atom, b"link") if at.get("rel") == Some(PHOTO_REL) => {
            rec.photo = Some(PhotoX {
                href: at.opt("href"),
                etag: at.gd("etag"),
            });
        }
        (3, Ns::GContact, b"nickname") => st.target = Some(Target::Nickname),
        (3, Ns::GContact, b"fileAs") => st.target = Some(Target::FileAs),
        (4, Ns::Gd, b"givenName") => st.target = Some(Target::Given),
        (4, Ns::Gd, b"familyName") => st.target = Some(Target::Family),
        (4, Ns::Gd, b"additionalName") => st.target = Some(Target::Middle),
        (4, Ns::Gd, b"namePrefix") => st.target = Some(Target::Prefix),
        (4, Ns::Gd, b"nameSuffix") => st.target = Some(Target::Suffix),
        (4, Ns::Gd, b"fullName") => st.target = Some(Target::Full),
        (3, Ns::Gd, b"email") => items.emails.push(EmailX {
            address: at.opt("address"),
            kind: at.rel(),
            label: at.opt("label"),
            primary: at.primary(),
            display_name: at.opt("displayName"),
        }),
        (3, Ns::Gd, b"phoneNumber") => {
            st.phone = Some(PhoneX {
                number: None,
                kind: at.rel(),
                label: at.opt("label"),
                primary: at.primary(),
                uri: at.opt("uri"),
            });
            st.target = Some(Target::PhoneNumber);
        }
        (3, Ns::Gd, b"im") => items.ims.push(ImX {
            address: at.opt("address"),
            protocol: at.opt("protocol").map(short_rel),
            kind: at.rel(),
            label: at.opt("label"),
            primary: at.primary(),
        }),
        (3, Ns::Gd, b"structuredPostalAddress") => {
            st.open = Open::Address(AddressX {
                kind: at.rel(),
                label: at.opt("label"),
                primary: at.primary(),
                ..Default::default()
            })
        }
        // The legacy unstructured form: its text is the formatted address.
        (3, Ns::Gd, b"postalAddress") => {
            st.open = Open::Address(AddressX {
                kind: at.rel(),
                label: at.opt("label"),
                primary: at.primary(),
                ..Default::default()
            });
            st.target = Some(Target::Formatted);
        }
        (4, Ns::Gd, b"street") => st.target = Some(Target::Street),
        (4, Ns::Gd, b"pobox") => st.target = Some(Target::PoBox),
        (4, Ns::Gd, b"neighborhood") => st.target = Some(Target::Neighborhood),
        (4, Ns::Gd, b"city") => st.target = Some(Target::City),
        (4, Ns::Gd, b"region") => st.target = Some(Target::Region),
        (4, Ns::Gd, b"postcode") => st.target = Some(Target::Postcode),
        (4, Ns::Gd, b"country") => st.target = Some(Target::Country),
        (4, Ns::Gd, b"formattedAddress") => st.target = Some(Target::Formatted),
        (3, Ns::Gd, b"organization") => {
            st.open = Open::Org(OrgX {
                kind: at.rel(),
                label: at.opt("label"),
                primary: at.primary(),
                ..Default::default()
            })
        }
        (4, Ns::Gd, b"orgName") => st.target = Some(Target::OrgName),
        (4, Ns::Gd, b"orgTitle") => st.target = Some(Target::OrgTitle),
        (4, Ns::Gd, b"orgDepartment") => st.target = Some(Target::OrgDept),
        (3, Ns::GContact, b"website") => items.websites.push(WebsiteX {
            href: at.opt("href"),
            kind: at.rel(),
            label: at.opt("label"),
            primary: at.primary(),
        }),
        (3, Ns::GContact, b"relation") => {
            st.relation = Some(RelationX {
                name: None,
                kind: at.rel(),
                label: at.opt("label"),
            });
            st.target = Some(Target::RelationName);
        }
        (3, Ns::GContact, b"event") => {
            st.open = Open::Event(EventX {
                kind: at.rel(),
                label: at.opt("label"),
                start: None,
            })
        }
        (4, Ns::Gd, b"when") => {
            if let Open::Event(e) = &mut st.open {
                e.start = at.opt("startTime");
            }
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
        _ => {}
    }
    false
}

/// The end of an element inside an entry at depth `d`: what it captured goes where
/// `st` says, into the entry or its items.
fn close<'a>(
    rec: &mut Entry<'a>,
    items: &mut Items<'a>,
    st: &mut Pending<'a>,
    d: usize,
) -> Result<()> {
    let Pending {
        open,
        target,
        val,
        phone,
        relation,
    } = st;
    if let Some(t) = target.take() {
        // The id and the time read the whole text; other values are absent when empty.
        let (whole, v) = match t {
            Target::Id | Target::Updated => (val.take(), None),
            _ => (None, val.take().filter(|s| !s.is_empty())),
        };
        match t {
            Target::Id => {
                rec.id = sub(whole.unwrap_or_default(), |full| {
                    let full = full.trim();
                    full.trim_end_matches('/')
                        .rsplit('/')
                        .next()
                        .unwrap_or(full)
                });
            }
            Target::Updated => {
                let t = whole.as_deref().unwrap_or_default().trim();
                rec.updated = Some(
                    chrono::DateTime::parse_from_rfc3339(t)
                        .with_context(Kind::Decode, || {
                            format!("entry <updated> {t:?} is not RFC 3339")
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
                    items.phones.push(p);
                }
            }
            Target::RelationName => {
                if let Some(mut x) = relation.take() {
                    x.name = v;
                    items.relations.push(x);
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
                // `gd:postalAddress` itself closes: the address is whole.
                if d == 3
                    && let Open::Address(a) = std::mem::replace(open, Open::None)
                {
                    items.addresses.push(a);
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
        return Ok(());
    }
    if d == 3 {
        match std::mem::replace(open, Open::None) {
            Open::Address(a) => items.addresses.push(a),
            Open::Org(o) => items.organizations.push(o),
            Open::Event(e) => items.events.push(e),
            Open::ExtProp(p) => items.extended_properties.push(p),
            Open::None => {}
        }
    }
    Ok(())
}

/// The content of a `gd:extendedProperty`, as the `xml` column holds it: the XML between
/// its tags exactly as sent (elements, text, entity references, CDATA and comments alike),
/// so one element, several sibling elements, plain text and mixed content all survive and
/// are written back as they came. Whitespace around element content is layout and is
/// trimmed; text-only content is kept as it is; whitespace alone is no content (null).
pub(crate) fn ext_content(inner: &str) -> Option<Cow<'_, str>> {
    if inner.trim().is_empty() {
        None
    } else if inner.contains('<') {
        Some(Cow::Borrowed(inner.trim()))
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// The feed's namespace declarations, each as its attribute name (`xmlns:gd`) and its
/// whole text (`xmlns:gd="…"`), to copy into each standalone entry.
fn feed_decls(root: &BytesStart<'_>) -> Vec<(String, String)> {
    root.attributes()
        .flatten()
        .filter(|a| a.key.as_namespace_binding().is_some())
        .map(|a| {
            let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
            let value = String::from_utf8_lossy(&a.value).replace('"', "&quot;");
            (key.clone(), format!("{key}=\"{value}\""))
        })
        .collect()
}

/// Writes an entry cut from a feed parse as a document on its own to `out`: adds the
/// feed's namespace declarations to the entry's start tag, except prefixes the entry
/// declares itself.
fn standalone(entry: &str, decls: &[(String, String)], out: &mut String) {
    let name_end = entry[1..]
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .map(|i| i + 1)
        .unwrap_or(entry.len());
    let tag_end = entry.find('>').unwrap_or(entry.len());
    let own = &entry[..tag_end];
    // Entries rarely declare namespaces of their own: one search settles most of them.
    let own_decls = own.contains("xmlns");
    out.push_str(&entry[..name_end]);
    for (key, decl) in decls {
        // Whether the entry's own start tag declares this prefix (`key=`).
        let declared = own_decls
            && own
                .match_indices(key.as_str())
                .any(|(i, _)| own[i + key.len()..].starts_with('='));
        if !declared {
            out.push(' ');
            out.push_str(decl);
        }
    }
    out.push_str(&entry[name_end..]);
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

    #[cfg(feature = "emulator")]
    #[test]
    fn decodes_a_v3_feed() {
        let p = decode_feed(FEED.as_bytes(), &ctx(), "page 1").unwrap();
        assert_eq!(p.updated.as_deref(), Some("2013-06-12T18:39:51.690Z"));
        assert_eq!(p.total_results, Some(3));
        assert!(p.next.as_deref().unwrap().ends_with("start-index=3"));
        let entries = p.records().unwrap();
        assert_eq!(entries.len(), 2);
        let e = &entries[0];
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
        let d = &entries[1];
        assert_eq!(d.id, "aa");
        assert!(d.deleted);
        crate::emulator::xml::parse(d.raw.as_deref().unwrap().as_bytes()).unwrap();
    }

    /// Values arrive as slices of the page where they can, and are put together where
    /// the XML splits them: around an entity, a comment or a CDATA section.
    #[test]
    fn values_split_by_the_xml_come_out_whole() {
        let feed = r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:gd="http://schemas.google.com/g/2005"><updated>2013-06-12T18:39:51.690Z</updated>
<entry><id>http://x/base/a&amp;b</id><updated>2013-06-12T18:39:51.123Z</updated>
<gd:name><gd:givenName>Jo<!-- c -->hn</gd:givenName><gd:familyName>O'<![CDATA[<Neil>]]>!</gd:familyName><gd:fullName>plain</gd:fullName></gd:name>
<gd:email address="a&#64;x.org" rel="http://schemas.google.com/g/2005#home" label=""/>
</entry></feed>"#;
        let p = decode_feed(feed.as_bytes(), &ctx(), "p").unwrap();
        let e = &p.records().unwrap()[0];
        assert_eq!(e.id, "a&b");
        assert_eq!(e.given_name.as_deref(), Some("John"));
        assert_eq!(e.family_name.as_deref(), Some("O'<Neil>!"));
        assert_eq!(e.display_name.as_deref(), Some("plain"));
        assert_eq!(e.emails[0].address.as_deref(), Some("a@x.org"));
        assert_eq!(e.emails[0].kind.as_deref(), Some("home"));
        // An empty attribute is absent, as an empty element is.
        assert_eq!(e.emails[0].label, None);
        assert_eq!(p.updated.as_deref(), Some("2013-06-12T18:39:51.690Z"));
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

    /// Every shape of `gd:extendedProperty` keeps its whole content (issue: text-only
    /// properties and all but the first of several elements were dropped).
    #[test]
    fn extended_properties_keep_every_shape() {
        let feed = r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:gd="http://schemas.google.com/g/2005">
<entry><id>http://x/base/e1</id><updated>2013-06-12T18:39:51.123Z</updated>
<gd:extendedProperty name='attr' value='v &amp; w'/>
<gd:extendedProperty name='legacy.id'>plain text payload</gd:extendedProperty>
<gd:extendedProperty name='two'><a xmlns='urn:x'>1</a><b xmlns='urn:x'/></gd:extendedProperty>
<gd:extendedProperty name='mixed'>lead <i xmlns='urn:x'>in</i> tail</gd:extendedProperty>
<gd:extendedProperty name='cdata'><![CDATA[x < y & z]]></gd:extendedProperty>
<gd:extendedProperty name='entities'>Fish &amp; Chips &#233; &lt;ok&gt;</gd:extendedProperty>
<gd:extendedProperty name='pretty'>
    <info xmlns='urn:x'>deep<j><k>er</k></j></info>
  </gd:extendedProperty>
<gd:extendedProperty name='empty'/>
<gd:extendedProperty name='blank'>  </gd:extendedProperty>
<gd:extendedProperty name='spaced'>  two spaces  </gd:extendedProperty>
<gd:postalAddress rel='http://schemas.google.com/g/2005#home' primary='true'>1 Old Road
Springfield</gd:postalAddress>
<gd:postalAddress label='Cabin'/>
</entry>
<entry><id>http://x/base/e2</id><updated>2013-06-12T18:39:51.123Z</updated></entry></feed>"#;
        let p = decode_feed(feed.as_bytes(), &ctx(), "p").unwrap();
        let r = p.records().unwrap();
        assert_eq!(r.len(), 2, "the entry after the properties is not lost");
        let got: Vec<(Option<&str>, Option<&str>, Option<&str>)> = r[0]
            .extended_properties
            .iter()
            .map(|p| (p.name.as_deref(), p.value.as_deref(), p.xml.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("attr"), Some("v & w"), None),
                (Some("legacy.id"), None, Some("plain text payload")),
                (
                    Some("two"),
                    None,
                    Some("<a xmlns='urn:x'>1</a><b xmlns='urn:x'/>")
                ),
                (
                    Some("mixed"),
                    None,
                    Some("lead <i xmlns='urn:x'>in</i> tail")
                ),
                (Some("cdata"), None, Some("<![CDATA[x < y & z]]>")),
                (
                    Some("entities"),
                    None,
                    Some("Fish &amp; Chips &#233; &lt;ok&gt;")
                ),
                (
                    Some("pretty"),
                    None,
                    Some("<info xmlns='urn:x'>deep<j><k>er</k></j></info>")
                ),
                (Some("empty"), None, None),
                (Some("blank"), None, None),
                (Some("spaced"), None, Some("  two spaces  ")),
            ]
        );
        // The legacy unstructured address lands as one, its text the formatted address.
        let a = &r[0].addresses;
        assert_eq!(a.len(), 2);
        assert_eq!(
            (
                a[0].kind.as_deref(),
                a[0].primary,
                a[0].formatted.as_deref()
            ),
            (Some("home"), Some(true), Some("1 Old Road\nSpringfield"))
        );
        assert_eq!(
            (a[1].label.as_deref(), a[1].formatted.as_deref()),
            (Some("Cabin"), None)
        );
    }

    /// A page nested deeper than the limit fails whole: no entry of it may disappear.
    #[test]
    fn deep_nesting_fails_the_page() {
        let deep = "<x>".repeat(100_000) + &"</x>".repeat(100_000);
        let feed = format!(
            r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:gd="http://schemas.google.com/g/2005"><entry><id>a</id><updated>2013-06-12T18:39:51.123Z</updated><gd:extendedProperty name="d">{deep}</gd:extendedProperty></entry><entry><id>b</id><updated>2013-06-12T18:39:51.123Z</updated></entry></feed>"#
        );
        let e = decode_feed(feed.as_bytes(), &ctx(), "page 2 of example.com")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("deeper than 256") && e.contains("page 2 of example.com"),
            "{e}"
        );
    }

    /// An HTML error page with a doctype is named as one, not as an entity attack.
    #[test]
    fn an_html_page_with_a_doctype_is_named() {
        let html = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>x</body></html>";
        let e = decode_feed(html, &ctx(), "page 1").unwrap_err().to_string();
        assert!(
            e.contains("HTML page") && e.contains("502 Bad Gateway"),
            "{e}"
        );
    }

    /// An element's namespace and local name, and its attributes'.
    type Resolved = (Ns, Vec<u8>, Vec<(Ns, Vec<u8>)>);

    /// The namespaces of every element and attribute of `doc` as the decoder's scopes
    /// resolve them, driven as `parse` drives them; an error as text.
    fn scoped(doc: &str) -> std::result::Result<Vec<Resolved>, String> {
        let mut r = Reader::from_str(doc);
        let mut sc = Scopes::default();
        let (mut depth, mut pending, mut out) = (0usize, None, Vec::new());
        loop {
            if let Some(l) = pending.take() {
                sc.pop(l);
            }
            let ev = r.read_event().map_err(|e| e.to_string())?;
            match ev {
                Event::Start(ref s) | Event::Empty(ref s) => {
                    let empty = matches!(ev, Event::Empty(_));
                    let level = depth + 1;
                    sc.declare(s, &page_str(doc, s).unwrap(), level)
                        .map_err(|e| e.to_string())?;
                    if empty {
                        pending = Some(level);
                    } else {
                        depth += 1;
                    }
                    let (ns, local) = sc.element(s.name());
                    let attrs = s
                        .attributes()
                        .with_checks(false)
                        .map_while(|a| a.ok())
                        .filter(|a| a.key.as_namespace_binding().is_none())
                        .map(|a| {
                            let (ns, l) = sc.attribute(a.key);
                            (ns, l.to_vec())
                        })
                        .collect();
                    out.push((ns, local.to_vec(), attrs));
                }
                Event::End(_) => {
                    sc.pop(depth);
                    depth -= 1;
                }
                Event::Eof => return Ok(out),
                _ => {}
            }
        }
    }

    /// The same, as quick-xml's `NsReader` resolves them: the reference.
    fn ns_reader(doc: &str) -> std::result::Result<Vec<Resolved>, String> {
        use quick_xml::name::ResolveResult;
        let of = |r: &ResolveResult, unprefixed_attr: bool| match r {
            ResolveResult::Bound(n) => ns_of_uri(n.as_ref()),
            ResolveResult::Unbound if unprefixed_attr => Ns::Atom,
            _ => Ns::Other,
        };
        let mut r = quick_xml::reader::NsReader::from_str(doc);
        let mut out = Vec::new();
        loop {
            match r.read_resolved_event().map_err(|e| e.to_string())? {
                (res, Event::Start(s)) | (res, Event::Empty(s)) => {
                    let ns = of(&res, false);
                    let attrs = s
                        .attributes()
                        .with_checks(false)
                        .map_while(|a| a.ok())
                        .filter(|a| a.key.as_namespace_binding().is_none())
                        .map(|a| {
                            let (res, l) = r.resolver().resolve_attribute(a.key);
                            (of(&res, true), l.as_ref().to_vec())
                        })
                        .collect();
                    out.push((ns, s.local_name().as_ref().to_vec(), attrs));
                }
                (_, Event::Eof) => return Ok(out),
                _ => {}
            }
        }
    }

    /// The decoder's own namespace scopes resolve every element and attribute as
    /// quick-xml's `NsReader` does, and refuse the same bindings, for documents that bind
    /// prefixes in every unusual way: the usual namespaces under other prefixes, a
    /// default namespace that is not Atom, prefixes rebound and undeclared on inner and
    /// on empty elements, `xmlns:` with no prefix, values with references, names with
    /// two colons or none before the colon, and the reserved `xml`/`xmlns` bindings.
    #[test]
    fn namespace_scopes_resolve_as_quick_xml_does() {
        let docs = [
            r#"<a:feed xmlns:a="http://www.w3.org/2005/Atom" xmlns="urn:other"><entry/><a:entry xmlns:g="http://schemas.google.com/g/2005" g:etag="x"><g:email xmlns:g="urn:not" g:x="1" y="2"/><g:email g:rel="r"/><id xmlns="http://www.w3.org/2005/Atom">i</id><x:y xmlns:x=""/><gd:z/></a:entry><entry/></a:feed>"#,
            r#"<feed xmlns="http://www.w3.org/2005/Atom"><e xmlns:="urn:x"><f/></e><f/></feed>"#,
            r#"<feed xmlns="http://www.w3.org/2005/Atom"><e xmlns=""><f/></e><g/><h xmlns="http://schemas.google.com/g/2005"/><i/></feed>"#,
            r#"<p:a xmlns:p="http://schemas.google.com/g/2005"><p:b xmlns:p="http://schemas.google.com/contact/2008"><p:c p:d="1"/></p:b><p:c p:d="1"/></p:a>"#,
            r#"<p:a xmlns:p="http://schemas.google.com/g/2005&#x20;"><p:b/></p:a>"#,
            r#"<a xmlns:os="http://a9.com/-/spec/opensearchrss/1.0/"><os:totalResults/><:b/><os:c:d os:e:f="1" :g="2"/></a>"#,
            r#"<feed xmlns:xml="http://www.w3.org/XML/1998/namespace"><xml:a xml:lang="en"/><xmlns:b/></feed>"#,
            r#"<feed><a b xmlns:p="http://schemas.google.com/g/2005"><p:c/></a></feed>"#,
            r#"<feed><a xmlns:p="http://schemas.google.com/g/2005" b><p:c/></a></feed>"#,
            r#"<feed xmlns:xml="urn:bad"/>"#,
            r#"<feed><a><b xmlns:xmlns="urn:x"/></a></feed>"#,
            r#"<feed><a xmlns:p="http://www.w3.org/XML/1998/namespace"/></feed>"#,
            r#"<feed><a xmlns:p="http://www.w3.org/2000/xmlns/"/></feed>"#,
            r#"<feed xmlns="http://www.w3.org/XML/1998/namespace"><a/></feed>"#,
        ];
        for doc in docs {
            let (ours, theirs) = (scoped(doc), ns_reader(doc));
            assert_eq!(ours, theirs, "{doc}");
        }
        // The refusals above are refusals.
        assert!(scoped(docs[9]).is_err() && scoped(docs[12]).is_err());
    }

    /// A feed that binds the usual namespaces under unusual prefixes, makes another
    /// namespace the default, and rebinds and undeclares prefixes inside entries reads
    /// by namespace, never by prefix: the decoder's scopes (its fast path) stay exact.
    #[test]
    fn unusual_prefix_bindings_read_by_namespace() {
        let feed = r#"<atom:feed xmlns:atom="http://www.w3.org/2005/Atom" xmlns="urn:not-atom" xmlns:g="http://schemas.google.com/g/2005" xmlns:c="http://schemas.google.com/contact/2008" xmlns:os="http://a9.com/-/spec/opensearch/1.1/">
<atom:updated>2013-06-12T18:39:51.690Z</atom:updated><os:totalResults>2</os:totalResults>
<updated>1999-01-01T00:00:00Z</updated>
<atom:entry g:etag='"e1"'>
 <atom:id>http://x/base/one</atom:id><atom:updated>2013-06-12T18:39:51.123Z</atom:updated>
 <id>http://x/base/WRONG</id>
 <g:name><g:givenName>Ann</g:givenName><name><familyName>Nope</familyName></name></g:name>
 <gd:email address="lost@x" xmlns:gd="urn:not-gd"/>
 <x:email xmlns:x="http://schemas.google.com/g/2005" address="a@x"/>
 <x:email address="unbound@x"/>
 <g:email address="b@x" rel="http://schemas.google.com/g/2005#home" primary="true" g:primary="false"/>
 <g:phoneNumber xmlns:g="urn:other">0 ignored</g:phoneNumber>
 <g:phoneNumber>+1 555</g:phoneNumber>
 <c:nickname xmlns:c="">nope</c:nickname>
 <c:fileAs>F</c:fileAs>
 <g:extendedProperty name="p"><g:q xmlns:g="urn:inner">in</g:q></g:extendedProperty>
 <g:email address="after@x"/>
</atom:entry>
<entry xmlns="http://www.w3.org/2005/Atom" xmlns:atom="urn:not-atom"><id>http://x/base/two</id><updated>2013-06-12T18:39:51.123Z</updated><atom:id>http://x/base/WRONG</atom:id></entry>
</atom:feed>"#;
        let p = decode_feed(feed.as_bytes(), &ctx(), "p").unwrap();
        assert_eq!(p.updated.as_deref(), Some("2013-06-12T18:39:51.690Z"));
        assert_eq!(p.total_results, Some(2));
        let r = p.records().unwrap();
        assert_eq!(r.len(), 2);
        let e = &r[0];
        assert_eq!((e.id.as_str(), e.etag.as_deref()), ("one", Some("\"e1\"")));
        assert_eq!(e.given_name.as_deref(), Some("Ann"));
        assert_eq!(e.family_name, None);
        let emails: Vec<_> = e
            .emails
            .iter()
            .map(|m| (m.address.as_deref(), m.kind.as_deref(), m.primary))
            .collect();
        assert_eq!(
            emails,
            vec![
                (Some("a@x"), None, Some(false)),
                (Some("b@x"), Some("home"), Some(true)),
                (Some("after@x"), None, Some(false)),
            ]
        );
        let phones: Vec<_> = e.phones.iter().map(|p| p.number.as_deref()).collect();
        assert_eq!(phones, vec![Some("+1 555")]);
        assert_eq!(
            (e.nickname.as_deref(), e.file_as.as_deref()),
            (None, Some("F"))
        );
        assert_eq!(
            e.extended_properties[0].xml.as_deref(),
            Some(r#"<g:q xmlns:g="urn:inner">in</g:q>"#)
        );
        assert_eq!(r[1].id, "two");
        // A binding the XML namespaces forbid fails the page, wherever it is.
        let bad = feed.replace(
            r#"<g:q xmlns:g="urn:inner">"#,
            r#"<g:q xmlns:xml="urn:inner">"#,
        );
        let err = decode_feed(bad.as_bytes(), &ctx(), "p")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("malformed XML") && err.contains("'xml'"),
            "{err}"
        );
    }
}
