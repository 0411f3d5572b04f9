//! Aurinko JSON pages → contact records. Field names follow Aurinko's OpenAPI spec
//! (`name{}`, `company{}`, `emailAddresses`, …); unknown fields are tolerated; each record
//! is kept as received in `raw`, and `nativeProperties` goes to `native` as JSON.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::providers::google::decode::RecordContext;
use crate::schema::{Address, ContactRecord, Email, Organization, Phone, Relation, Website};

/// One page of `/sync/updated` or `/sync/deleted`.
#[derive(Debug, Deserialize)]
pub struct Page<'a> {
    #[serde(rename = "nextPageToken")]
    pub next_page_token: Option<String>,
    #[serde(rename = "nextDeltaToken")]
    pub next_delta_token: Option<String>,
    #[serde(borrow, default)]
    pub records: Vec<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Name {
    display_name: Option<String>,
    given_name: Option<String>,
    middle_name: Option<String>,
    family_name: Option<String>,
    prefix: Option<String>,
    suffix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Company {
    name: Option<String>,
    job_title: Option<String>,
    department: Option<String>,
}

#[derive(Debug, Deserialize)]
struct EmailJ {
    address: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PhoneJ {
    number: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddressJ {
    street: Option<String>,
    street_line2: Option<String>,
    po_box: Option<String>,
    city: Option<String>,
    state: Option<String>,
    postal_code: Option<String>,
    country: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct UrlJ {
    href: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RelationJ {
    // The first OAS version called it `value`.
    #[serde(alias = "value")]
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// The Contact object (OAS `components.schemas.Contact`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContactJ {
    id: Option<String>,
    etag: Option<String>,
    last_modified_time: Option<String>,
    name: Option<Name>,
    nick_name: Option<String>,
    file_as: Option<String>,
    company: Option<Company>,
    #[serde(default)]
    email_addresses: Option<Vec<EmailJ>>,
    #[serde(default)]
    phone_numbers: Option<Vec<PhoneJ>>,
    #[serde(default)]
    addresses: Option<Vec<AddressJ>>,
    #[serde(default)]
    urls: Option<Vec<UrlJ>>,
    #[serde(default)]
    relations: Option<Vec<RelationJ>>,
    birthday: Option<String>,
    #[serde(default)]
    keywords: Option<Vec<String>>,
    notes: Option<String>,
    native_properties: Option<serde_json::Value>,
    deleted: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct DeletedJ {
    id: Option<String>,
}

fn ne(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.is_empty())
}

/// Parses a page body. `what` names account and page in errors.
pub fn parse_page<'a>(body: &'a [u8], what: &str) -> Result<Page<'a>> {
    let text = std::str::from_utf8(body)
        .map_err(|e| Error::decode(format!("{what}: the body is not UTF-8: {e}")))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('<') {
        return Err(Error::decode(format!(
            "{what}: an HTML or XML page ({}) came back where JSON was expected; check base_url",
            crate::http::describe_body(body)
        )));
    }
    serde_json::from_str(text).map_err(|e| {
        Error::decode(format!(
            "{what}: malformed JSON ({e}); the body may be truncated"
        ))
    })
}

/// Decodes `/sync/updated` records. Records flagged `deleted:true` come back as deletes.
pub fn decode_contacts(
    records: &[&RawValue],
    ctx: &RecordContext,
    what: &str,
) -> Result<(Vec<ContactRecord>, Vec<String>)> {
    let mut out = Vec::with_capacity(records.len());
    let mut deleted = Vec::new();
    for (i, raw) in records.iter().enumerate() {
        let c: ContactJ = serde_json::from_str(raw.get()).map_err(|e| {
            Error::decode(format!("{what}, record #{}: not a contact ({e})", i + 1))
        })?;
        let id = ne(c.id).ok_or_else(|| {
            Error::decode(format!("{what}, record #{}: the contact has no id", i + 1))
        })?;
        if c.deleted == Some(true) {
            deleted.push(id);
            continue;
        }
        let updated = match c.last_modified_time.as_deref() {
            Some(t) => Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|e| {
                        Error::decode(format!(
                            "{what}, contact {id}: lastModifiedTime {t:?} is not a date-time ({e})"
                        ))
                    })?
                    .timestamp_micros(),
            ),
            None => None,
        };
        let name = c.name.unwrap_or_default();
        out.push(ContactRecord {
            source: ctx.source.clone(),
            account: ctx.account.clone(),
            id,
            etag: ne(c.etag),
            updated,
            deleted: false,
            display_name: ne(name.display_name),
            given_name: ne(name.given_name),
            family_name: ne(name.family_name),
            middle_name: ne(name.middle_name),
            prefix: ne(name.prefix),
            suffix: ne(name.suffix),
            nickname: ne(c.nick_name),
            file_as: ne(c.file_as),
            emails: c
                .email_addresses
                .unwrap_or_default()
                .into_iter()
                .map(|e| Email {
                    address: ne(e.address),
                    kind: ne(e.kind),
                    label: None,
                    primary: None,
                    display_name: ne(e.name),
                })
                .collect(),
            phones: c
                .phone_numbers
                .unwrap_or_default()
                .into_iter()
                .map(|p| Phone {
                    number: ne(p.number),
                    kind: ne(p.kind),
                    label: None,
                    primary: None,
                    uri: None,
                })
                .collect(),
            addresses: c
                .addresses
                .unwrap_or_default()
                .into_iter()
                .map(|a| Address {
                    kind: ne(a.kind),
                    street: match (ne(a.street), ne(a.street_line2)) {
                        (Some(x), Some(y)) => Some(format!("{x}\n{y}")),
                        (x, y) => x.or(y),
                    },
                    po_box: ne(a.po_box),
                    city: ne(a.city),
                    region: ne(a.state),
                    postcode: ne(a.postal_code),
                    country: ne(a.country),
                    ..Default::default()
                })
                .collect(),
            organizations: c
                .company
                .map(|co| {
                    vec![Organization {
                        name: ne(co.name),
                        title: ne(co.job_title),
                        department: ne(co.department),
                        kind: None,
                        label: None,
                        primary: None,
                    }]
                })
                .unwrap_or_default(),
            websites: c
                .urls
                .unwrap_or_default()
                .into_iter()
                .map(|u| Website {
                    href: ne(u.href),
                    kind: ne(u.kind),
                    label: None,
                    primary: None,
                })
                .collect(),
            relations: c
                .relations
                .unwrap_or_default()
                .into_iter()
                .map(|r| Relation {
                    name: ne(r.name),
                    kind: ne(r.kind),
                    label: None,
                })
                .collect(),
            ims: vec![],
            events: vec![],
            notes: ne(c.notes),
            birthday: ne(c.birthday),
            groups: c.keywords.unwrap_or_default(),
            photo: None,
            extended_properties: vec![],
            native: c
                .native_properties
                .filter(|v| !v.is_null())
                .map(|v| v.to_string()),
            raw: Some(raw.get().to_string()),
            _run_id: ctx.run_id.clone(),
            _synced_at: ctx.synced_at_us,
        });
    }
    Ok((out, deleted))
}

/// Decodes `/sync/deleted` records into ids.
pub fn decode_deleted(records: &[&RawValue], what: &str) -> Result<Vec<String>> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let d: DeletedJ = serde_json::from_str(r.get())
                .map_err(|e| Error::decode(format!("{what}, record #{}: {e}", i + 1)))?;
            ne(d.id).ok_or_else(|| {
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
        let page = parse_page(body, "p").unwrap();
        assert_eq!(page.next_delta_token.as_deref(), Some("d2"));
        assert!(page.next_page_token.is_none());
        let (recs, deleted) = decode_contacts(&page.records, &ctx(), "p").unwrap();
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
    fn bad_pages_give_clear_errors() {
        assert!(
            parse_page(
                b"<html><title>Bad Gateway</title></html>",
                "account 101, page 2"
            )
            .unwrap_err()
            .to_string()
            .contains("Bad Gateway")
        );
        assert!(
            parse_page(br#"{"records":[{"id":"a""#, "p")
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        let page = parse_page(br#"{"records":[{"name":{}}]}"#, "p").unwrap();
        assert!(
            decode_contacts(&page.records, &ctx(), "p")
                .unwrap_err()
                .to_string()
                .contains("no id")
        );
    }
}
