//! People API pages (`people.listDirectoryPeople`) → contact records.
//!
//! A page is `{"people": [Person…], "nextPageToken", "nextSyncToken"}`; every field may
//! be missing (an empty directory answers `{}`), and fields this reader does not know are
//! kept in `raw`, the person's JSON as served. The mapping, column by column, is in
//! `schemas/README.md` ("google_directory"). A person whose `metadata.deleted` is true (a
//! sync answer) is a delete, named by its id.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Context, Error, Kind, Result};
use crate::model::extract::RecordContext;
use crate::model::schema::{
    Address, ContactRecord, Email, Event, ExtendedProperty, Organization, Phone, Photo, Relation,
    Website,
};

/// One page as served.
#[derive(Debug)]
pub struct DirectoryPage {
    /// The people of the page that are not deleted.
    pub upserts: Vec<ContactRecord>,
    /// Ids of the people the page says are deleted.
    pub deletes: Vec<String>,
    /// The token of the next page, when there is one.
    pub next_page_token: Option<String>,
    /// The sync token, on the last page of a list that asked for one.
    pub next_sync_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageJ<'a> {
    #[serde(borrow, default)]
    people: Vec<&'a RawValue>,
    next_page_token: Option<String>,
    next_sync_token: Option<String>,
}

/// The parts of a `Person` the unified schema holds.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct PersonJ {
    resource_name: Option<String>,
    etag: Option<String>,
    metadata: Option<PersonMetadataJ>,
    names: Vec<NameJ>,
    nicknames: Vec<ValueJ>,
    email_addresses: Vec<EmailJ>,
    phone_numbers: Vec<PhoneJ>,
    addresses: Vec<AddressJ>,
    organizations: Vec<OrganizationJ>,
    urls: Vec<TypedValueJ>,
    relations: Vec<RelationJ>,
    events: Vec<EventJ>,
    birthdays: Vec<BirthdayJ>,
    biographies: Vec<ValueJ>,
    memberships: Vec<MembershipJ>,
    external_ids: Vec<TypedValueJ>,
    client_data: Vec<KeyValueJ>,
    user_defined: Vec<KeyValueJ>,
    photos: Vec<PhotoJ>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct PersonMetadataJ {
    sources: Vec<SourceJ>,
    deleted: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SourceJ {
    #[serde(rename = "type")]
    kind: Option<String>,
    update_time: Option<String>,
}

/// `metadata` of one field: which is primary.
#[derive(Deserialize, Default)]
#[serde(default)]
struct FieldMetaJ {
    primary: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct NameJ {
    metadata: FieldMetaJ,
    display_name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    middle_name: Option<String>,
    honorific_prefix: Option<String>,
    honorific_suffix: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ValueJ {
    metadata: FieldMetaJ,
    value: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct TypedValueJ {
    metadata: FieldMetaJ,
    value: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    formatted_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct EmailJ {
    metadata: FieldMetaJ,
    value: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    formatted_type: Option<String>,
    display_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct PhoneJ {
    metadata: FieldMetaJ,
    value: Option<String>,
    canonical_form: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    formatted_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct AddressJ {
    metadata: FieldMetaJ,
    formatted_value: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    formatted_type: Option<String>,
    po_box: Option<String>,
    street_address: Option<String>,
    extended_address: Option<String>,
    city: Option<String>,
    region: Option<String>,
    postal_code: Option<String>,
    country: Option<String>,
    country_code: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct OrganizationJ {
    metadata: FieldMetaJ,
    name: Option<String>,
    title: Option<String>,
    department: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    formatted_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RelationJ {
    person: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    formatted_type: Option<String>,
}

/// A `google.type.Date`: a year of 0 (or none) is a date without a year.
#[derive(Deserialize, Default)]
#[serde(default)]
struct DateJ {
    year: Option<i64>,
    month: Option<i64>,
    day: Option<i64>,
}

impl DateJ {
    /// `YYYY-MM-DD`, or `--MM-DD` without a year (vCard's and GData's form); `None` when
    /// the month or day is missing or out of range.
    fn text(&self) -> Option<String> {
        let (m, d) = (
            self.month.filter(|m| (1..=12).contains(m))?,
            self.day.filter(|d| (1..=31).contains(d))?,
        );
        Some(match self.year.filter(|y| (1..=9999).contains(y)) {
            Some(y) => format!("{y:04}-{m:02}-{d:02}"),
            None => format!("--{m:02}-{d:02}"),
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct EventJ {
    date: Option<DateJ>,
    #[serde(rename = "type")]
    kind: Option<String>,
    formatted_type: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct BirthdayJ {
    metadata: FieldMetaJ,
    date: Option<DateJ>,
    text: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct MembershipJ {
    contact_group_membership: Option<GroupJ>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct GroupJ {
    contact_group_resource_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct KeyValueJ {
    key: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct PhotoJ {
    metadata: FieldMetaJ,
    url: Option<String>,
    default: Option<bool>,
}

/// The item marked primary, else the first.
fn primary<T>(items: &[T], meta: impl Fn(&T) -> &FieldMetaJ) -> Option<&T> {
    items
        .iter()
        .find(|i| meta(i).primary == Some(true))
        .or_else(|| items.first())
}

/// The error for a body that is not a page, saying what it is when that is plain: an
/// HTML page (a proxy's, a sign-in portal's) or JSON that ends early.
fn not_a_page(body: &[u8], what: &str, e: serde_json::Error) -> Error {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let start = text.trim_start().to_ascii_lowercase();
    let why = if start.starts_with("<!doctype html") || start.starts_with("<html") {
        let title = text
            .split_once("<title>")
            .or_else(|| text.split_once("<TITLE>"))
            .and_then(|(_, t)| t.split('<').next())
            .map(|t| format!(" ({})", t.trim()))
            .unwrap_or_default();
        format!(
            "an HTML page{title} (text/html) came back where the People API's JSON was expected; check base_url, the credentials and any proxy between"
        )
    } else if e.is_eof() {
        format!(
            "the JSON answer ends early, after {} bytes (cut off on the way?)",
            body.len()
        )
    } else {
        "not a listDirectoryPeople answer".to_string()
    };
    Error::with_source(Kind::Decode, format!("{what}: {why}"), e)
}

/// Decodes one page. `what` names it (account, page number) in errors.
pub fn decode_page(body: &[u8], ctx: &RecordContext, what: &str) -> Result<DirectoryPage> {
    let page: PageJ = serde_json::from_slice(body).map_err(|e| not_a_page(body, what, e))?;
    let mut out = DirectoryPage {
        upserts: Vec::with_capacity(page.people.len()),
        deletes: Vec::new(),
        next_page_token: page.next_page_token.filter(|t| !t.is_empty()),
        next_sync_token: page.next_sync_token.filter(|t| !t.is_empty()),
    };
    for (i, raw) in page.people.iter().enumerate() {
        let person: PersonJ = serde_json::from_str(raw.get()).with_context(Kind::Decode, || {
            format!("{what}: person {i} is not a Person")
        })?;
        let id = person_id(&person).ok_or_else(|| {
            Error::decode(format!(
                "{what}: person {i} has no resourceName of the form people/<id>"
            ))
        })?;
        if person.metadata.as_ref().and_then(|m| m.deleted) == Some(true) {
            out.deletes.push(id);
        } else {
            out.upserts.push(record(person, id, raw.get(), ctx));
        }
    }
    Ok(out)
}

/// The id of a person: its resource name without `people/`.
fn person_id(p: &PersonJ) -> Option<String> {
    let id = p.resource_name.as_deref()?.strip_prefix("people/")?;
    (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
}

/// The newest `updateTime` of the person's sources, in microseconds.
fn updated(meta: Option<&PersonMetadataJ>) -> Option<i64> {
    meta?
        .sources
        .iter()
        .filter_map(|s| s.update_time.as_deref())
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_micros())
        .max()
}

/// Which kind of directory entry the person is (`DOMAIN_PROFILE`, `DOMAIN_CONTACT`, …),
/// from its sources, as `native` JSON.
fn native(meta: Option<&PersonMetadataJ>) -> Option<String> {
    let kinds: Vec<&str> = meta?
        .sources
        .iter()
        .filter_map(|s| s.kind.as_deref())
        .collect();
    let first = kinds.first()?;
    Some(serde_json::json!({ "directory_source": first, "sources": kinds }).to_string())
}

/// The `type` values the People API reference lists for emails, phones, addresses,
/// URLs, relations, events and organizations; any other `type` is the user's own.
const FIXED_TYPES: [&str; 35] = [
    "home",
    "work",
    "other",
    "mobile",
    "homeFax",
    "workFax",
    "otherFax",
    "pager",
    "workMobile",
    "workPager",
    "main",
    "googleVoice",
    "blog",
    "profile",
    "homePage",
    "ftp",
    "reservations",
    "appInstallPage",
    "spouse",
    "child",
    "mother",
    "father",
    "parent",
    "brother",
    "sister",
    "friend",
    "relative",
    "domesticPartner",
    "manager",
    "assistant",
    "referredBy",
    "partner",
    "anniversary",
    "school",
    "isdn",
];

/// The label of an item: its `formattedType` (the type in the viewer's words) when its
/// type is the user's own; a fixed type needs none.
fn label(kind: &Option<String>, formatted: Option<String>) -> Option<String> {
    match kind {
        Some(k) if FIXED_TYPES.contains(&k.as_str()) => None,
        _ => formatted,
    }
}

/// The contact record of a live person.
fn record(p: PersonJ, id: String, raw: &str, ctx: &RecordContext) -> ContactRecord {
    let name = primary(&p.names, |n| &n.metadata);
    let meta = p.metadata.as_ref();
    ContactRecord {
        source: ctx.source.clone(),
        account: ctx.account.clone(),
        id,
        etag: p.etag.clone(),
        updated: updated(meta),
        deleted: false,
        display_name: name.and_then(|n| n.display_name.clone()),
        given_name: name.and_then(|n| n.given_name.clone()),
        family_name: name.and_then(|n| n.family_name.clone()),
        middle_name: name.and_then(|n| n.middle_name.clone()),
        prefix: name.and_then(|n| n.honorific_prefix.clone()),
        suffix: name.and_then(|n| n.honorific_suffix.clone()),
        nickname: primary(&p.nicknames, |n| &n.metadata).and_then(|n| n.value.clone()),
        file_as: None,
        emails: p.email_addresses.into_iter().map(Email::from).collect(),
        phones: p.phone_numbers.into_iter().map(Phone::from).collect(),
        addresses: p.addresses.into_iter().map(Address::from).collect(),
        ims: vec![],
        organizations: p
            .organizations
            .into_iter()
            .map(Organization::from)
            .collect(),
        websites: p.urls.into_iter().map(Website::from).collect(),
        relations: p.relations.into_iter().map(Relation::from).collect(),
        events: p.events.into_iter().map(Event::from).collect(),
        notes: primary(&p.biographies, |b| &b.metadata).and_then(|b| b.value.clone()),
        birthday: primary(&p.birthdays, |b| &b.metadata).and_then(|b| {
            b.date
                .as_ref()
                .and_then(DateJ::text)
                .or_else(|| b.text.clone())
        }),
        groups: p
            .memberships
            .into_iter()
            .filter_map(|m| m.contact_group_membership?.contact_group_resource_name)
            .collect(),
        photo: primary(&p.photos, |ph| &ph.metadata)
            .filter(|ph| ph.default != Some(true))
            .and_then(|ph| ph.url.clone())
            // The URL changes with the photo: it is the photo's etag as well.
            .map(|url| Photo {
                etag: Some(url.clone()),
                href: Some(url),
            }),
        extended_properties: extended(p.external_ids, p.client_data, p.user_defined),
        native: native(meta),
        raw: Some(raw.to_string()),
        _run_id: ctx.run_id.clone(),
        _synced_at: ctx.synced_at_us,
    }
}

impl From<EmailJ> for Email {
    fn from(e: EmailJ) -> Email {
        Email {
            label: label(&e.kind, e.formatted_type),
            address: e.value,
            kind: e.kind,
            primary: Some(e.metadata.primary == Some(true)),
            display_name: e.display_name,
        }
    }
}

impl From<PhoneJ> for Phone {
    fn from(ph: PhoneJ) -> Phone {
        Phone {
            label: label(&ph.kind, ph.formatted_type),
            uri: ph.canonical_form.map(|c| format!("tel:{c}")),
            number: ph.value,
            kind: ph.kind,
            primary: Some(ph.metadata.primary == Some(true)),
        }
    }
}

impl From<AddressJ> for Address {
    fn from(a: AddressJ) -> Address {
        Address {
            label: label(&a.kind, a.formatted_type),
            kind: a.kind,
            primary: Some(a.metadata.primary == Some(true)),
            street: a.street_address,
            po_box: a.po_box,
            neighborhood: a.extended_address,
            city: a.city,
            region: a.region,
            postcode: a.postal_code,
            country: a.country.or(a.country_code),
            formatted: a.formatted_value,
        }
    }
}

impl From<OrganizationJ> for Organization {
    fn from(o: OrganizationJ) -> Organization {
        Organization {
            label: label(&o.kind, o.formatted_type),
            name: o.name,
            title: o.title,
            department: o.department,
            kind: o.kind,
            primary: Some(o.metadata.primary == Some(true)),
        }
    }
}

impl From<TypedValueJ> for Website {
    fn from(u: TypedValueJ) -> Website {
        Website {
            label: label(&u.kind, u.formatted_type),
            href: u.value,
            kind: u.kind,
            primary: Some(u.metadata.primary == Some(true)),
        }
    }
}

impl From<RelationJ> for Relation {
    fn from(r: RelationJ) -> Relation {
        Relation {
            label: label(&r.kind, r.formatted_type),
            name: r.person,
            kind: r.kind,
        }
    }
}

impl From<EventJ> for Event {
    fn from(e: EventJ) -> Event {
        Event {
            label: label(&e.kind, e.formatted_type),
            start: e.date.as_ref().and_then(DateJ::text),
            kind: e.kind,
        }
    }
}

/// `externalIds`, `clientData` and `userDefined` as extended properties named
/// `externalId:<type>`, `clientData:<key>` and `userDefined:<key>`.
fn extended(
    external: Vec<TypedValueJ>,
    client: Vec<KeyValueJ>,
    user: Vec<KeyValueJ>,
) -> Vec<ExtendedProperty> {
    let ext = external.into_iter().map(|e| ExtendedProperty {
        name: Some(format!("externalId:{}", e.kind.unwrap_or_default())),
        value: e.value,
        xml: None,
    });
    let kv = |prefix: &'static str| {
        move |k: KeyValueJ| ExtendedProperty {
            name: Some(format!("{prefix}:{}", k.key.unwrap_or_default())),
            value: k.value,
            xml: None,
        }
    };
    ext.chain(client.into_iter().map(kv("clientData")))
        .chain(user.into_iter().map(kv("userDefined")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RecordContext {
        RecordContext {
            source: "directory".into(),
            account: "example.com".into(),
            run_id: "r".into(),
            synced_at_us: 1,
        }
    }

    /// A body that is not a page says what it is: an HTML page (named, with its title),
    /// JSON cut short, or something else.
    #[test]
    fn a_body_that_is_not_a_page_says_what_it_is() {
        let e = |b: &[u8]| decode_page(b, &ctx(), "page 2").unwrap_err().to_string();
        let html = e(b"\n<!DOCTYPE html><html><head><title>Sign in</title></head></html>");
        assert!(
            html.starts_with("page 2: an HTML page (Sign in) (text/html)"),
            "{html}"
        );
        let cut = e(br#"{"people":[{"resourceName":"people/1","#);
        assert!(
            cut.starts_with("page 2: the JSON answer ends early, after 38 bytes"),
            "{cut}"
        );
        let other = e(b"[1, 2]");
        assert!(
            other.starts_with("page 2: not a listDirectoryPeople answer"),
            "{other}"
        );
    }

    /// A profile with every mapped field lands field by field; its JSON is `raw`.
    #[test]
    fn a_person_maps_field_by_field() {
        let body = br#"{"people":[{"resourceName":"people/c123","etag":"%EgU=",
          "metadata":{"sources":[{"type":"DOMAIN_PROFILE","id":"1","updateTime":"2026-01-02T03:04:05.5Z"}]},
          "names":[{"metadata":{"primary":true},"displayName":"Ada Lovelace","givenName":"Ada","familyName":"Lovelace","honorificPrefix":"Lady"}],
          "nicknames":[{"value":"Ada"}],
          "emailAddresses":[{"metadata":{"primary":true},"value":"ada@example.com","type":"work","formattedType":"Work"},{"value":"a@x.org","type":"Lab","formattedType":"Lab"}],
          "phoneNumbers":[{"value":"+44 20 1","canonicalForm":"+44201","type":"mobile"}],
          "addresses":[{"streetAddress":"1 St","city":"London","postalCode":"N1","countryCode":"GB","type":"work"}],
          "organizations":[{"name":"Analytical","title":"Countess","department":"Math"}],
          "urls":[{"value":"https://ada.example","type":"homePage"}],
          "relations":[{"person":"Byron","type":"father"}],
          "events":[{"date":{"month":11,"day":27},"type":"anniversary"}],
          "birthdays":[{"date":{"year":1815,"month":12,"day":10}}],
          "biographies":[{"value":"Wrote the first program."}],
          "memberships":[{"contactGroupMembership":{"contactGroupResourceName":"contactGroups/eng"}},{"domainMembership":{"inViewerDomain":true}}],
          "externalIds":[{"value":"E-1","type":"employee"}],
          "clientData":[{"key":"crm","value":"42"}],
          "userDefined":[{"key":"desk","value":"3F"}],
          "photos":[{"url":"https://lh3/p1","default":false}],
          "skills":[{"value":"kept in raw"}]}],
          "nextPageToken":"p2"}"#;
        let page = decode_page(body, &ctx(), "page 1").unwrap();
        assert_eq!(page.next_page_token.as_deref(), Some("p2"));
        assert_eq!(page.next_sync_token, None);
        let r = &page.upserts[0];
        assert_eq!(r.id, "c123");
        assert_eq!(r.etag.as_deref(), Some("%EgU="));
        assert_eq!(r.updated, Some(1_767_323_045_500_000));
        assert_eq!(r.display_name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(r.prefix.as_deref(), Some("Lady"));
        assert_eq!(r.nickname.as_deref(), Some("Ada"));
        assert_eq!(r.emails.len(), 2);
        assert_eq!(r.emails[0].primary, Some(true));
        assert_eq!(r.emails[0].label, None, "a fixed type has no label");
        assert_eq!(r.emails[1].label.as_deref(), Some("Lab"));
        assert_eq!(r.phones[0].uri.as_deref(), Some("tel:+44201"));
        assert_eq!(r.addresses[0].country.as_deref(), Some("GB"));
        assert_eq!(r.organizations[0].title.as_deref(), Some("Countess"));
        assert_eq!(r.websites[0].href.as_deref(), Some("https://ada.example"));
        assert_eq!(r.relations[0].name.as_deref(), Some("Byron"));
        assert_eq!(r.events[0].start.as_deref(), Some("--11-27"));
        assert_eq!(r.birthday.as_deref(), Some("1815-12-10"));
        assert_eq!(r.notes.as_deref(), Some("Wrote the first program."));
        assert_eq!(r.groups, vec!["contactGroups/eng"]);
        assert_eq!(
            r.photo.as_ref().and_then(|p| p.href.as_deref()),
            Some("https://lh3/p1")
        );
        let names: Vec<_> = r
            .extended_properties
            .iter()
            .map(|e| e.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            ["externalId:employee", "clientData:crm", "userDefined:desk"]
        );
        assert!(r.native.as_deref().unwrap().contains("DOMAIN_PROFILE"));
        assert!(r.raw.as_deref().unwrap().contains("kept in raw"));
    }

    /// Deleted people are deletes; an empty directory is `{}`; a person without a
    /// resource name, or a body that is not a page, is an error naming the page.
    #[test]
    fn deletes_empty_pages_and_bad_answers() {
        let page = decode_page(
            br#"{"people":[{"resourceName":"people/c9","metadata":{"deleted":true}}],"nextSyncToken":"s1"}"#,
            &ctx(),
            "p",
        )
        .unwrap();
        assert_eq!(page.deletes, ["c9"]);
        assert!(page.upserts.is_empty());
        assert_eq!(page.next_sync_token.as_deref(), Some("s1"));
        let empty = decode_page(b"{}", &ctx(), "p").unwrap();
        assert!(empty.upserts.is_empty() && empty.deletes.is_empty());
        for bad in [
            &br#"{"people":[{"etag":"x"}]}"#[..],
            b"<html>",
            br#"{"people":[{"resourceName":"people/a/b"}]}"#,
            br#"{"people":{}}"#,
        ] {
            let e = decode_page(bad, &ctx(), "page 3").unwrap_err();
            assert!(
                matches!(e, Error::Decode { .. }) && e.to_string().contains("page 3"),
                "{e}"
            );
        }
    }
}
