//! Aurinko JSON pages → contact records. Field names follow Aurinko's OpenAPI spec
//! (`name{}`, `company{}`, `emailAddresses`, …); unknown fields are tolerated; each record
//! is kept as received in `raw`, and `nativeProperties` goes to `native` as JSON.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::providers::google::decode::RecordContext;
use crate::schema::{Address, ContactRecord, Email, Organization, Phone, Relation, Website};

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

/// The Contact object (OAS `components.schemas.Contact`), the fields this tool maps.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactJ {
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

/// A record of `/sync/deleted`.
#[derive(Debug, Deserialize)]
pub struct DeletedJ {
    id: Option<String>,
}

fn ne(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.is_empty())
}

/// Parses a page body in one pass: the page's tokens, and each record both as text (a
/// slice of the body) and parsed as `T`. `what` names account and page in errors.
///
/// serde_json cannot tell where inside a body a value was read, so the page object is
/// walked here, one value at a time, each read by a serde_json stream deserializer that
/// does report how far it read. Unknown page fields are skipped.
pub fn parse_page<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<Page<'a, T>> {
    let text = std::str::from_utf8(body)
        .map_err(|e| Error::decode(format!("{what}: the body is not UTF-8: {e}")))?;
    if text.trim_start().starts_with('<') {
        return Err(Error::decode(format!(
            "{what}: an HTML or XML page ({}) came back where JSON was expected; check base_url",
            crate::http::describe_body(body)
        )));
    }
    let malformed = |detail: String| {
        Error::decode(format!(
            "{what}: malformed JSON ({detail}); the body may be truncated"
        ))
    };
    let mut page = Page {
        next_page_token: None,
        next_delta_token: None,
        records: Vec::new(),
    };
    let mut at = JsonCursor { text, pos: 0 };
    at.expect(b'{').map_err(&malformed)?;
    if !at.eat(b'}') {
        loop {
            let key: String = at.value().map_err(|e| malformed(e.to_string()))?;
            at.expect(b':').map_err(&malformed)?;
            match key.as_ref() {
                "nextPageToken" => {
                    page.next_page_token = at.value().map_err(|e| malformed(e.to_string()))?
                }
                "nextDeltaToken" => {
                    page.next_delta_token = at.value().map_err(|e| malformed(e.to_string()))?
                }
                "records" if at.eat_null() => {}
                "records" => {
                    at.expect(b'[').map_err(&malformed)?;
                    if !at.eat(b']') {
                        loop {
                            let start = at.skip_ws();
                            let value: T = at.value().map_err(|e| {
                                if e.is_data() {
                                    Error::decode(format!(
                                        "{what}, record #{}: not a contact ({e})",
                                        page.records.len() + 1
                                    ))
                                } else {
                                    malformed(e.to_string())
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
                    at.value::<serde::de::IgnoredAny>()
                        .map_err(|e| malformed(e.to_string()))?;
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

/// Decodes `/sync/updated` records. Records flagged `deleted:true` come back as deletes.
pub fn decode_contacts(
    records: Vec<Rec<'_, ContactJ>>,
    ctx: &RecordContext,
    what: &str,
) -> Result<(Vec<ContactRecord>, Vec<String>)> {
    let mut out = Vec::with_capacity(records.len());
    let mut deleted = Vec::new();
    for (i, Rec { raw, value: c }) in records.into_iter().enumerate() {
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
            raw: Some(raw.to_string()),
            _run_id: ctx.run_id.clone(),
            _synced_at: ctx.synced_at_us,
        });
    }
    Ok((out, deleted))
}

/// Decodes `/sync/deleted` records into ids.
pub fn decode_deleted(records: Vec<Rec<'_, DeletedJ>>, what: &str) -> Result<Vec<String>> {
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            ne(r.value.id).ok_or_else(|| {
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
        let page = parse_page::<ContactJ>(body, "p").unwrap();
        assert_eq!(page.next_delta_token.as_deref(), Some("d2"));
        assert!(page.next_page_token.is_none());
        let (recs, deleted) = decode_contacts(page.records, &ctx(), "p").unwrap();
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
}
