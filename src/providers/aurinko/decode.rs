//! Aurinko JSON pages → contact records. Field names follow Aurinko's OpenAPI spec
//! (`name{}`, `company{}`, `emailAddresses`, …); unknown fields are tolerated; each record
//! is kept as received in `raw`, and `nativeProperties` goes to `native` as JSON.

use std::borrow::Cow;

use arrow::array::RecordBatch;
use serde::Deserialize;
use smallvec::SmallVec;

use crate::error::{Context, Error, Kind, Result};
use crate::model::extract::RecordContext;
use crate::model::schema::builders::{Cell, Cells, Row};
use crate::model::schema::{Event, ExtendedProperty, Im, Photo};

/// One page of `/sync/updated` or `/sync/deleted`, its records parsed as `T`.
#[derive(Debug)]
pub struct Page<'a, T> {
    pub next_page_token: Option<String>,
    pub next_delta_token: Option<String>,
    pub records: Vec<Rec<'a, T>>,
}

/// One record of a page: the text as received (the `raw` column) and its parse.
#[derive(Debug)]
pub struct Rec<'a, T> {
    pub raw: &'a str,
    pub value: T,
}

/// A JSON string: borrowed from the page when it has no escapes, owned when serde had to
/// unescape it. (`Option<Cow<str>>` would always be owned: serde borrows only from a
/// type that asks for it.)
#[derive(Debug, Default, Clone)]
pub struct JStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for JStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = JStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<JStr<'de>, E> {
                Ok(JStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<JStr<'de>, E> {
                Ok(JStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<JStr<'de>, E> {
                Ok(JStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl AsRef<str> for JStr<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A JSON array field. Most contacts' lists hold none or one item, so the first is kept
/// inline: a vector per list (up to six per contact) would cost an allocation, its
/// growth and its free for every list of every contact.
#[derive(Debug)]
pub struct List<T>(SmallVec<[T; 1]>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(SmallVec::new())
    }
}

impl<T> std::ops::Deref for List<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T> std::ops::DerefMut for List<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<List<T>, A::Error> {
                let mut items = SmallVec::new();
                while let Some(x) = seq.next_element()? {
                    items.push(x);
                }
                Ok(List(items))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// A string field as the schema stores it: an empty string is absent.
fn ne<'x>(s: &'x Option<JStr<'_>>) -> Option<&'x str> {
    s.as_ref().map(|s| s.as_ref()).filter(|v| !v.is_empty())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Name<'a> {
    #[serde(borrow)]
    display_name: Option<JStr<'a>>,
    #[serde(borrow)]
    given_name: Option<JStr<'a>>,
    #[serde(borrow)]
    middle_name: Option<JStr<'a>>,
    #[serde(borrow)]
    family_name: Option<JStr<'a>>,
    #[serde(borrow)]
    prefix: Option<JStr<'a>>,
    #[serde(borrow)]
    suffix: Option<JStr<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Company<'a> {
    #[serde(borrow)]
    name: Option<JStr<'a>>,
    #[serde(borrow)]
    job_title: Option<JStr<'a>>,
    #[serde(borrow)]
    department: Option<JStr<'a>>,
}

#[derive(Debug, Deserialize)]
struct EmailJ<'a> {
    #[serde(borrow)]
    address: Option<JStr<'a>>,
    #[serde(borrow)]
    name: Option<JStr<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<JStr<'a>>,
}

#[derive(Debug, Deserialize)]
struct PhoneJ<'a> {
    #[serde(borrow)]
    number: Option<JStr<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<JStr<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddressJ<'a> {
    #[serde(borrow)]
    street: Option<JStr<'a>>,
    #[serde(borrow)]
    street_line2: Option<JStr<'a>>,
    #[serde(borrow)]
    po_box: Option<JStr<'a>>,
    #[serde(borrow)]
    city: Option<JStr<'a>>,
    #[serde(borrow)]
    state: Option<JStr<'a>>,
    #[serde(borrow)]
    postal_code: Option<JStr<'a>>,
    #[serde(borrow)]
    country: Option<JStr<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<JStr<'a>>,
}

#[derive(Debug, Deserialize)]
struct UrlJ<'a> {
    #[serde(borrow)]
    href: Option<JStr<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<JStr<'a>>,
}

#[derive(Debug, Deserialize)]
struct RelationJ<'a> {
    // The first OAS version called it `value`.
    #[serde(borrow, alias = "value")]
    name: Option<JStr<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<JStr<'a>>,
}

/// The Contact object (OAS `components.schemas.Contact`), the fields this tool maps, with
/// its strings borrowed from the page where they need no unescaping.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactJ<'a> {
    #[serde(borrow)]
    id: Option<JStr<'a>>,
    #[serde(borrow)]
    etag: Option<JStr<'a>>,
    #[serde(borrow)]
    last_modified_time: Option<JStr<'a>>,
    #[serde(borrow)]
    name: Option<Name<'a>>,
    #[serde(borrow)]
    nick_name: Option<JStr<'a>>,
    #[serde(borrow)]
    file_as: Option<JStr<'a>>,
    #[serde(borrow)]
    company: Option<Company<'a>>,
    #[serde(borrow, default)]
    email_addresses: Option<List<EmailJ<'a>>>,
    #[serde(borrow, default)]
    phone_numbers: Option<List<PhoneJ<'a>>>,
    #[serde(borrow, default)]
    addresses: Option<List<AddressJ<'a>>>,
    #[serde(borrow, default)]
    urls: Option<List<UrlJ<'a>>>,
    #[serde(borrow, default)]
    relations: Option<List<RelationJ<'a>>>,
    #[serde(borrow)]
    birthday: Option<JStr<'a>>,
    #[serde(borrow, default)]
    keywords: Option<List<JStr<'a>>>,
    #[serde(borrow)]
    notes: Option<JStr<'a>>,
    native_properties: Option<serde_json::Value>,
    deleted: Option<bool>,
}

/// A record of `/sync/deleted`.
#[derive(Debug, Deserialize)]
pub struct DeletedJ<'a> {
    #[serde(borrow)]
    id: Option<JStr<'a>>,
}

/// Schema columns of a list item, each read from a field of the Aurinko object (through
/// [`ne`]) or null because Aurinko has no such field.
macro_rules! json_cells {
    ($t:ident { $($name:literal => $f:ident),* ; null: $($null:literal),* }) => {
        impl Cells for $t<'_> {
            fn getter(name: &str) -> Option<fn(&Self) -> Cell<'_>> {
                match name {
                    $($name => {
                        fn get<'x>(x: &'x $t<'_>) -> Cell<'x> {
                            Cell::Str(ne(&x.$f))
                        }
                        Some(get)
                    })*
                    $($null)|* => {
                        fn null(_: &$t<'_>) -> Cell<'static> {
                            Cell::Null
                        }
                        Some(null)
                    }
                    _ => None,
                }
            }
        }
    };
}

json_cells!(EmailJ { "address" => address, "type" => kind, "display_name" => name; null: "label", "primary" });
json_cells!(PhoneJ { "number" => number, "type" => kind; null: "label", "primary", "uri" });
json_cells!(AddressJ {
    "type" => kind, "street" => street, "po_box" => po_box, "city" => city,
    "region" => state, "postcode" => postal_code, "country" => country;
    null: "label", "primary", "neighborhood", "formatted"
});
json_cells!(Company { "name" => name, "title" => job_title, "department" => department; null: "type", "label", "primary" });
json_cells!(UrlJ { "href" => href, "type" => kind; null: "label", "primary" });
json_cells!(RelationJ { "name" => name, "type" => kind; null: "label" });

/// One live contact of a page on its way to Arrow: the parsed object, its text, and the
/// values computed from it.
struct JsonRow<'r, 'a> {
    /// Borrowed from the page's records, which stay where parsing put them (moving
    /// them, some 600 bytes each, cost more than building their columns).
    c: &'r ContactJ<'a>,
    raw: &'a str,
    updated: Option<i64>,
    native: Option<String>,
    ctx: &'r RecordContext,
}

impl Cells for JsonRow<'_, '_> {
    fn getter(name: &str) -> Option<fn(&Self) -> Cell<'_>> {
        fn name_part<'x, 'a>(
            x: &'x JsonRow<'_, 'a>,
            f: fn(&'x Name<'a>) -> &'x Option<JStr<'a>>,
        ) -> Option<&'x str> {
            x.c.name.as_ref().and_then(|n| ne(f(n)))
        }
        let get: fn(&Self) -> Cell<'_> = match name {
            "source" => |x| Cell::Str(Some(&x.ctx.source)),
            "account" => |x| Cell::Str(Some(&x.ctx.account)),
            "_run_id" => |x| Cell::Str(Some(&x.ctx.run_id)),
            "id" => |x| Cell::Str(ne(&x.c.id)),
            "etag" => |x| Cell::Str(ne(&x.c.etag)),
            "deleted" => |_| Cell::Bool(Some(false)),
            "display_name" => |x| Cell::Str(name_part(x, |n| &n.display_name)),
            "given_name" => |x| Cell::Str(name_part(x, |n| &n.given_name)),
            "family_name" => |x| Cell::Str(name_part(x, |n| &n.family_name)),
            "middle_name" => |x| Cell::Str(name_part(x, |n| &n.middle_name)),
            "prefix" => |x| Cell::Str(name_part(x, |n| &n.prefix)),
            "suffix" => |x| Cell::Str(name_part(x, |n| &n.suffix)),
            "nickname" => |x| Cell::Str(ne(&x.c.nick_name)),
            "file_as" => |x| Cell::Str(ne(&x.c.file_as)),
            "notes" => |x| Cell::Str(ne(&x.c.notes)),
            "birthday" => |x| Cell::Str(ne(&x.c.birthday)),
            "native" => |x| Cell::Str(x.native.as_deref()),
            "raw" => |x| Cell::Str(Some(x.raw)),
            _ => return None,
        };
        Some(get)
    }
}

impl<'a> Row for JsonRow<'_, 'a> {
    type Email = EmailJ<'a>;
    type Phone = PhoneJ<'a>;
    type Address = AddressJ<'a>;
    type Im = Im;
    type Organization = Company<'a>;
    type Website = UrlJ<'a>;
    type Relation = RelationJ<'a>;
    type Event = Event;
    type ExtendedProperty = ExtendedProperty;
    type Group = JStr<'a>;
    type Photo = Photo;
    fn updated(&self) -> Option<i64> {
        self.updated
    }
    fn synced_at(&self) -> i64 {
        self.ctx.synced_at_us
    }
    fn emails(&self) -> &[EmailJ<'a>] {
        self.c.email_addresses.as_deref().unwrap_or_default()
    }
    fn phones(&self) -> &[PhoneJ<'a>] {
        self.c.phone_numbers.as_deref().unwrap_or_default()
    }
    fn addresses(&self) -> &[AddressJ<'a>] {
        self.c.addresses.as_deref().unwrap_or_default()
    }
    fn ims(&self) -> &[Im] {
        &[]
    }
    fn organizations(&self) -> &[Company<'a>] {
        self.c.company.as_slice()
    }
    fn websites(&self) -> &[UrlJ<'a>] {
        self.c.urls.as_deref().unwrap_or_default()
    }
    fn relations(&self) -> &[RelationJ<'a>] {
        self.c.relations.as_deref().unwrap_or_default()
    }
    fn events(&self) -> &[Event] {
        &[]
    }
    fn extended_properties(&self) -> &[ExtendedProperty] {
        &[]
    }
    fn groups(&self) -> &[JStr<'a>] {
        self.c.keywords.as_deref().unwrap_or_default()
    }
    fn photo(&self) -> Option<&Photo> {
        None
    }
}

/// Parses a page body in one pass: the page's tokens, and each record both as text (a
/// slice of the body) and parsed as `T`. `what` names account and page in errors.
///
/// serde_json cannot tell where inside a body a value was read, so the page object is
/// walked here, one value at a time, each read by a serde_json stream deserializer that
/// does report how far it read. Unknown page fields are skipped.
pub fn parse_page<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<Page<'a, T>> {
    let text = crate::http::body_text(body)
        .with_context(Kind::Decode, || format!("{what}: the body is not UTF-8"))?;
    if text.trim_start().starts_with('<') {
        return Err(Error::decode(format!(
            "{what}: an HTML or XML page ({}) came back where JSON was expected; check base_url",
            super::describe(body)
        )));
    }
    let malformed = |detail: String| {
        Error::decode(format!(
            "{what}: malformed JSON ({detail}); the body may be truncated"
        ))
    };
    // serde_json's error, kept as the source.
    let bad_json = |e: serde_json::Error| {
        Error::with_source(
            Kind::Decode,
            format!("{what}: malformed JSON (the body may be truncated)"),
            e,
        )
    };
    let mut page = Page {
        next_page_token: None,
        next_delta_token: None,
        // Room for the records of a usual page (a few hundred bytes each), so the vector
        // of parsed records is not copied as it grows.
        records: Vec::with_capacity((text.len() / 512).min(16_384)),
    };
    let mut at = JsonCursor { text, pos: 0 };
    at.expect(b'{').map_err(&malformed)?;
    if !at.eat(b'}') {
        loop {
            let key: String = at.value().map_err(bad_json)?;
            at.expect(b':').map_err(&malformed)?;
            match key.as_ref() {
                "nextPageToken" => page.next_page_token = at.value().map_err(bad_json)?,
                "nextDeltaToken" => page.next_delta_token = at.value().map_err(bad_json)?,
                "records" if at.eat_null() => {}
                "records" => {
                    at.expect(b'[').map_err(&malformed)?;
                    if !at.eat(b']') {
                        loop {
                            let start = at.skip_ws();
                            let value: T = at.value().map_err(|e| {
                                if e.is_data() {
                                    Error::with_source(
                                        Kind::Decode,
                                        format!(
                                            "{what}, record #{}: not a contact",
                                            page.records.len() + 1
                                        ),
                                        e,
                                    )
                                } else {
                                    bad_json(e)
                                }
                            })?;
                            page.records.push(Rec {
                                raw: &text[start..at.pos],
                                value,
                            });
                            if at.eat(b']') {
                                break;
                            }
                            at.expect(b',').map_err(&malformed)?;
                        }
                    }
                }
                _ => {
                    at.value::<serde::de::IgnoredAny>().map_err(bad_json)?;
                }
            }
            if at.eat(b'}') {
                break;
            }
            at.expect(b',').map_err(&malformed)?;
        }
    }
    if at.skip_ws() != text.len() {
        return Err(malformed(format!("trailing characters at byte {}", at.pos)));
    }
    Ok(page)
}

/// A position in a JSON text, for walking one object by hand (see [`parse_page`]).
struct JsonCursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> JsonCursor<'a> {
    /// Skips whitespace; returns the new position.
    fn skip_ws(&mut self) -> usize {
        let b = self.text.as_bytes();
        while self.pos < b.len() && matches!(b[self.pos], b' ' | b'\n' | b'\r' | b'\t') {
            self.pos += 1;
        }
        self.pos
    }

    /// Consumes `c` (after whitespace) if it is next.
    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        let hit = self.text.as_bytes().get(self.pos) == Some(&c);
        self.pos += hit as usize;
        hit
    }

    fn eat_null(&mut self) -> bool {
        self.skip_ws();
        let hit = self.text[self.pos..].starts_with("null");
        self.pos += if hit { 4 } else { 0 };
        hit
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            return Ok(());
        }
        Err(match self.text.as_bytes().get(self.pos) {
            Some(&found) => format!(
                "expected `{}` at byte {}, found `{}`",
                c as char, self.pos, found as char
            ),
            None => format!(
                "expected `{}` at byte {}, found the end",
                c as char, self.pos
            ),
        })
    }

    /// Reads one JSON value as `T`.
    fn value<T: Deserialize<'a>>(&mut self) -> serde_json::Result<T> {
        self.skip_ws();
        let mut it = serde_json::Deserializer::from_str(&self.text[self.pos..]).into_iter::<T>();
        match it.next() {
            Some(Ok(v)) => {
                self.pos += it.byte_offset();
                Ok(v)
            }
            Some(Err(e)) => Err(e),
            // Only whitespace was left: serde_json's own end-of-input error.
            None => Err(serde_json::from_str::<serde::de::IgnoredAny>("").unwrap_err()),
        }
    }
}

/// A decoded page of `/sync/updated`: its live contacts as one batch of the contacts
/// schema, and the ids of records flagged `deleted:true`.
#[derive(Debug)]
pub struct DecodedPage {
    pub batch: RecordBatch,
    pub deleted: Vec<String>,
}

/// Decodes `/sync/updated` records straight into Arrow: each string is copied once, from
/// the page into its column. Records flagged `deleted:true` come back as deletes.
pub fn decode_contacts<'a>(
    mut records: Vec<Rec<'a, ContactJ<'a>>>,
    ctx: &RecordContext,
    what: &str,
) -> Result<DecodedPage> {
    // First what is computed of each live record (its records are completed in place),
    // then the rows, which borrow the records.
    let mut live = Vec::with_capacity(records.len());
    let mut deleted = Vec::new();
    for (i, Rec { value: c, .. }) in records.iter_mut().enumerate() {
        let Some(id) = ne(&c.id) else {
            return Err(Error::decode(format!(
                "{what}, record #{}: the contact has no id",
                i + 1
            )));
        };
        if c.deleted == Some(true) {
            deleted.push(id.to_string());
            continue;
        }
        let updated = match ne(&c.last_modified_time) {
            Some(t) => Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .with_context(Kind::Decode, || {
                        format!("{what}, contact {id}: lastModifiedTime {t:?} is not a date-time")
                    })?
                    .timestamp_micros(),
            ),
            None => None,
        };
        // The schema has one street: Aurinko's second line goes under the first.
        for a in c.addresses.as_deref_mut().unwrap_or_default() {
            let joined = match (ne(&a.street), ne(&a.street_line2)) {
                (Some(x), Some(y)) => Some(format!("{x}\n{y}")),
                (None, Some(y)) => Some(y.to_string()),
                _ => None,
            };
            if let Some(j) = joined {
                a.street = Some(JStr(Cow::Owned(j)));
            }
        }
        // Re-serialized compactly: the same properties read the same however the server
        // spaced them.
        let native = c
            .native_properties
            .take()
            .filter(|v| !v.is_null())
            .map(|v| v.to_string());
        live.push((i, updated, native));
    }
    let rows: Vec<JsonRow<'_, '_>> = live
        .into_iter()
        .map(|(i, updated, native)| JsonRow {
            c: &records[i].value,
            raw: records[i].raw,
            updated,
            native,
            ctx,
        })
        .collect();
    Ok(DecodedPage {
        batch: crate::model::schema::rows_to_batch(&rows)?,
        deleted,
    })
}

/// Decodes `/sync/deleted` records into ids.
pub fn decode_deleted(records: Vec<Rec<'_, DeletedJ<'_>>>, what: &str) -> Result<Vec<String>> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            ne(&r.value.id).map(str::to_string).ok_or_else(|| {
                Error::decode(format!(
                    "{what}, record #{}: a deleted record without id",
                    i + 1
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::schema::{
        Address, ContactRecord, Email, Organization, Phone, Relation, Website, batches_to_records,
        records_to_batch,
    };

    /// The mapping written out record by record, as it was before pages went straight
    /// to Arrow: the oracle the builders are held to.
    fn oracle(
        records: Vec<Rec<'_, ContactJ<'_>>>,
        ctx: &RecordContext,
    ) -> (Vec<ContactRecord>, Vec<String>) {
        let own = |s: &Option<JStr<'_>>| ne(s).map(str::to_string);
        let mut out = Vec::new();
        let mut deleted = Vec::new();
        for Rec { raw, value: c } in records {
            let id = own(&c.id).unwrap();
            if c.deleted == Some(true) {
                deleted.push(id);
                continue;
            }
            let name = c.name.unwrap_or_default();
            out.push(ContactRecord {
                source: ctx.source.clone(),
                account: ctx.account.clone(),
                id,
                etag: own(&c.etag),
                updated: own(&c.last_modified_time).map(|t| {
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .unwrap()
                        .timestamp_micros()
                }),
                deleted: false,
                display_name: own(&name.display_name),
                given_name: own(&name.given_name),
                family_name: own(&name.family_name),
                middle_name: own(&name.middle_name),
                prefix: own(&name.prefix),
                suffix: own(&name.suffix),
                nickname: own(&c.nick_name),
                file_as: own(&c.file_as),
                emails: (c.email_addresses.unwrap_or_default().iter())
                    .map(|e| Email {
                        address: own(&e.address),
                        kind: own(&e.kind),
                        display_name: own(&e.name),
                        ..Default::default()
                    })
                    .collect(),
                phones: (c.phone_numbers.unwrap_or_default().iter())
                    .map(|p| Phone {
                        number: own(&p.number),
                        kind: own(&p.kind),
                        ..Default::default()
                    })
                    .collect(),
                addresses: (c.addresses.unwrap_or_default().iter())
                    .map(|a| Address {
                        kind: own(&a.kind),
                        street: match (own(&a.street), own(&a.street_line2)) {
                            (Some(x), Some(y)) => Some(format!("{x}\n{y}")),
                            (x, y) => x.or(y),
                        },
                        po_box: own(&a.po_box),
                        city: own(&a.city),
                        region: own(&a.state),
                        postcode: own(&a.postal_code),
                        country: own(&a.country),
                        ..Default::default()
                    })
                    .collect(),
                organizations: (c.company.iter())
                    .map(|co| Organization {
                        name: own(&co.name),
                        title: own(&co.job_title),
                        department: own(&co.department),
                        ..Default::default()
                    })
                    .collect(),
                websites: (c.urls.unwrap_or_default().iter())
                    .map(|u| Website {
                        href: own(&u.href),
                        kind: own(&u.kind),
                        ..Default::default()
                    })
                    .collect(),
                relations: (c.relations.unwrap_or_default().iter())
                    .map(|r| Relation {
                        name: own(&r.name),
                        kind: own(&r.kind),
                        label: None,
                    })
                    .collect(),
                notes: own(&c.notes),
                birthday: own(&c.birthday),
                groups: (c.keywords.unwrap_or_default().iter())
                    .map(|k| k.as_ref().to_string())
                    .collect(),
                native: c
                    .native_properties
                    .filter(|v| !v.is_null())
                    .map(|v| v.to_string()),
                raw: Some(raw.to_string()),
                _run_id: ctx.run_id.clone(),
                _synced_at: ctx.synced_at_us,
                ..Default::default()
            });
        }
        (out, deleted)
    }

    /// Decodes `body` both ways and checks they agree column by column; returns the rows.
    fn decode_both(body: &[u8]) -> (Vec<ContactRecord>, Vec<String>) {
        let page = decode_contacts(parse_page(body, "p").unwrap().records, &ctx(), "p").unwrap();
        let (recs, deleted) = oracle(parse_page(body, "p").unwrap().records, &ctx());
        let want = records_to_batch(&recs).unwrap();
        assert_eq!(page.batch.schema(), want.schema());
        for (i, f) in want.schema().fields().iter().enumerate() {
            assert_eq!(
                page.batch.column(i).as_ref(),
                want.column(i).as_ref(),
                "column {}",
                f.name()
            );
        }
        assert_eq!(page.deleted, deleted);
        let back = batches_to_records(&[page.batch]).unwrap();
        assert_eq!(back, recs);
        (back, page.deleted)
    }

    fn ctx() -> RecordContext {
        RecordContext {
            source: "crm".into(),
            account: "101".into(),
            run_id: "r".into(),
            synced_at_us: 0,
        }
    }

    #[test]
    fn decodes_an_oas_shaped_page() {
        let body = br#"{"nextDeltaToken":"d2","length":2,"records":[
          {"id":"AAMk1","etag":"e1","createdTime":"2000-01-23T04:56:07.000+00:00","lastModifiedTime":"2000-01-23T04:56:07.000+00:00",
           "name":{"givenName":"Sam","familyName":"Black","displayName":"Sam Black"},"company":{"name":"Aurinko","jobTitle":"Support engineer"},
           "emailAddresses":[{"address":"sam@aurinko.io","type":"work"}],"phoneNumbers":[{"number":"415 8399949","type":"work"}],
           "addresses":[{"street":"1 Road","streetLine2":"Unit 3","state":"CA","type":"home"}],"urls":[{"href":"http://x","type":"blog"}],
           "relations":[{"value":"Ann","type":"spouse"}],"keywords":["vip"],"nativeProperties":{"k":"v"},"somethingNew":{"x":1}},
          {"id":"AAMk2","deleted":true}]}"#;
        let page = parse_page::<ContactJ>(body, "p").unwrap();
        assert_eq!(page.next_delta_token.as_deref(), Some("d2"));
        assert!(page.next_page_token.is_none());
        let (recs, deleted) = decode_both(body);
        assert_eq!(deleted, vec!["AAMk2".to_string()]);
        let r = &recs[0];
        assert_eq!(r.display_name.as_deref(), Some("Sam Black"));
        assert_eq!(
            r.organizations[0].title.as_deref(),
            Some("Support engineer")
        );
        assert_eq!(r.emails[0].primary, None);
        assert_eq!(r.addresses[0].street.as_deref(), Some("1 Road\nUnit 3"));
        assert_eq!(r.addresses[0].region.as_deref(), Some("CA"));
        assert_eq!(r.relations[0].name.as_deref(), Some("Ann"));
        assert_eq!(r.native.as_deref(), Some(r#"{"k":"v"}"#));
        assert_eq!(r.groups, vec!["vip".to_string()]);
        assert!(r.raw.as_deref().unwrap().contains("somethingNew"));
        assert_eq!(r.updated, Some(948_603_367_000_000));
    }

    #[test]
    fn escaped_empty_and_odd_fields_go_to_arrow_as_the_records_say() {
        let body = br#"{"records":[
          {"id":"e\u00e9","etag":"","name":{"displayName":"A \"B\" \\ C","givenName":""},
           "addresses":[{"streetLine2":"only line 2","city":"\u674e"},{"street":"","streetLine2":""},{"street":"s\n1","streetLine2":"l2"}],
           "company":{},"keywords":["","k\t1"],"emailAddresses":[],"phoneNumbers":null,
           "nativeProperties":{ "b" : 1, "a":[true, null]},"notes":"\ud83d\ude00"},
          {"id":"d1","deleted":true},
          {"id":"n","nativeProperties":null,"relations":[{"name":"x"},{"value":"y","type":"t"}],"urls":[{"href":"h"}]}
        ],"nextDeltaToken":"d"}"#;
        let (recs, deleted) = decode_both(body);
        assert_eq!(deleted, vec!["d1".to_string()]);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].display_name.as_deref(), Some(r#"A "B" \ C"#));
        assert_eq!(recs[0].given_name, None);
        assert_eq!(recs[0].addresses[0].street.as_deref(), Some("only line 2"));
        assert_eq!(recs[0].addresses[1].street, None);
        assert_eq!(recs[0].addresses[2].street.as_deref(), Some("s\n1\nl2"));
        assert_eq!(recs[0].organizations.len(), 1);
        assert_eq!(recs[0].groups, vec!["".to_string(), "k\t1".to_string()]);
        assert_eq!(
            recs[0].native.as_deref(),
            Some(r#"{"b":1,"a":[true,null]}"#)
        );
        assert_eq!(recs[0].notes.as_deref(), Some("\u{1f600}"));
        assert_eq!(recs[1].native, None);
        assert_eq!(recs[1].relations[1].name.as_deref(), Some("y"));
    }

    #[cfg(feature = "emulator")]
    #[tokio::test]
    async fn emulator_pages_go_to_arrow_as_the_records_say() {
        let emu = crate::emulator::Emulator::start(crate::emulator::EmulatorConfig {
            aurinko_accounts: 1,
            aurinko_contacts: 600,
            aurinko_page_size: 200,
            aurinko_ready_after: 0,
            ..Default::default()
        })
        .await
        .unwrap();
        let c = reqwest::Client::new();
        let auth = format!("Bearer {}", emu.aurinko_token("101"));
        let s: serde_json::Value = c
            .post(format!("{}/v1/contacts/sync", emu.url()))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut query = (
            "deltaToken",
            s["syncUpdatedToken"].as_str().unwrap().to_string(),
        );
        let mut landed = Vec::new();
        loop {
            let body = c
                .get(format!("{}/v1/contacts/sync/updated", emu.url()))
                .query(&[query.clone()])
                .header("Authorization", &auth)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            landed.extend(decode_both(&body).0);
            let page = parse_page::<serde::de::IgnoredAny>(&body, "p").unwrap();
            match page.next_page_token {
                Some(t) => query = ("pageToken", t),
                None => break,
            }
        }
        let truth = emu.aurinko_truth("101").unwrap().contacts;
        assert_eq!(landed.len(), 600);
        let diff = crate::model::verify::diff(&landed, &truth);
        assert!(diff.is_empty(), "{diff:?}");
    }

    /// serde_json's own reading of a page, to hold the hand walk to.
    #[derive(Deserialize)]
    struct SerdePage<'a> {
        #[serde(rename = "nextPageToken")]
        next_page_token: Option<String>,
        #[serde(rename = "nextDeltaToken")]
        next_delta_token: Option<String>,
        #[serde(borrow, default)]
        records: Option<Vec<&'a serde_json::value::RawValue>>,
    }

    #[test]
    fn the_page_walk_agrees_with_serde_and_refuses_every_truncation() {
        let bodies: [&[u8]; 5] = [
            br#" { "records" : [ {"id":"a","x":"], {"} , {"id":"b\"]","n":[1,{"y":[]}]} ] , "nextPageToken" : "p\u00e9" , "length":2.5e0, "more":{"records":[1]} } "#,
            br#"{"nextDeltaToken":"d","records":[]}"#,
            br#"{"records":null,"nextDeltaToken":null,"nextPageToken":"q"}"#,
            br#"{}"#,
            br#"{"records":[{"id":"z"}],"nextDeltaToken":"d9"}"#,
        ];
        for body in bodies {
            let ours = parse_page::<serde_json::Value>(body, "p").unwrap();
            let theirs: SerdePage = serde_json::from_slice(body).unwrap();
            assert_eq!(ours.next_page_token, theirs.next_page_token);
            assert_eq!(ours.next_delta_token, theirs.next_delta_token);
            let raws: Vec<&str> = ours.records.iter().map(|r| r.raw).collect();
            let want: Vec<&str> = theirs
                .records
                .unwrap_or_default()
                .iter()
                .map(|r| r.get())
                .collect();
            assert_eq!(raws, want);
            for r in &ours.records {
                assert_eq!(
                    r.value,
                    serde_json::from_str::<serde_json::Value>(r.raw).unwrap()
                );
            }
            // A body cut anywhere is an error that says so, never a shorter page.
            let end = body.iter().rposition(|b| *b == b'}').unwrap();
            for cut in 0..end {
                let e = parse_page::<serde_json::Value>(&body[..cut], "p").unwrap_err();
                assert!(e.to_string().contains("truncated"), "cut at {cut}: {e}");
            }
        }
        for bad in [
            &br#"{"records":[{"id":"a"}]} x"#[..],
            br#"{"records":[{"id":"a"} {"id":"b"}]}"#,
            br#"{"records":{}}"#,
        ] {
            assert!(
                parse_page::<serde_json::Value>(bad, "p").is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let e = parse_page::<ContactJ>(br#"{"records":[{"id":"a"},{"id":5}]}"#, "p").unwrap_err();
        assert!(e.to_string().contains("record #2: not a contact"), "{e}");
    }

    #[test]
    fn bad_pages_give_clear_errors() {
        assert!(
            parse_page::<ContactJ>(
                b"<html><title>Bad Gateway</title></html>",
                "account 101, page 2"
            )
            .unwrap_err()
            .to_string()
            .contains("Bad Gateway")
        );
        assert!(
            parse_page::<ContactJ>(br#"{"records":[{"id":"a""#, "p")
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        let page = parse_page::<ContactJ>(br#"{"records":[{"name":{}}]}"#, "p").unwrap();
        assert!(
            decode_contacts(page.records, &ctx(), "p")
                .unwrap_err()
                .to_string()
                .contains("no id")
        );
    }

    /// Deep nesting never makes a record disappear: where a value is read (as in
    /// `nativeProperties`) serde_json's limit of 128 levels fails the page whole, naming it;
    /// where it is only skipped (an unknown field) it is skipped whole, without recursion,
    /// and every record of the page is kept, the deep value in its `raw`.
    #[test]
    fn deep_nesting_fails_the_page_or_keeps_every_record() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let body = format!(
            r#"{{"records":[{{"id":"a","nativeProperties":{{"k":{deep}}}}},{{"id":"b"}}],"nextDeltaToken":"d"}}"#
        );
        let e = parse_page::<ContactJ<'_>>(body.as_bytes(), "page 4 of 101")
            .map(|_| ())
            .expect_err("a value nested too deep is refused")
            .to_string();
        assert!(
            e.contains("page 4 of 101") && e.contains("recursion limit"),
            "{e}"
        );
        for body in [
            format!(r#"{{"records":[{{"id":"a","x":{deep}}},{{"id":"b"}}],"nextDeltaToken":"d"}}"#),
            format!(
                r#"{{"other":{deep},"records":[{{"id":"a"}},{{"id":"b"}}],"nextDeltaToken":"d"}}"#
            ),
        ] {
            let p = parse_page::<ContactJ<'_>>(body.as_bytes(), "p").unwrap();
            let ids: Vec<&str> = p
                .records
                .iter()
                .map(|r| r.value.id.as_ref().unwrap().as_ref())
                .collect();
            assert_eq!(ids, ["a", "b"]);
        }
        let body = format!(r#"{{"records":[{{"id":"a","x":{deep}}},{{"id":"b"}}]}}"#);
        let p = parse_page::<ContactJ<'_>>(body.as_bytes(), "p").unwrap();
        assert!(p.records[0].raw.len() > 200_000 && p.records[1].raw == r#"{"id":"b"}"#);
    }
}
