//! The People API's `people.listDirectoryPeople` over the emulator's domain: the listing
//! and its tokens as pure functions, the profiles' store, the route, Google's JSON error
//! bodies for the shared fault layer's statuses ([`fault_response`]) and the faults a
//! client must not retry into success ([`PermanentFault`]).
//!
//! A directory entry is a domain contact of the Google emulator (resource
//! `people/c<id>`, source type `DOMAIN_CONTACT`) or a user's profile (`people/<n>`,
//! `DOMAIN_PROFILE`). A full list is sorted by resource name and paged by offset; its
//! page tokens carry the offset, the moment the list began and a hash of the request,
//! and its last page a sync token of that moment. A sync list returns every entry
//! changed after its token's moment, the deleted ones as `metadata.deleted = true`.

use serde_json::{Value, json};

use crate::model::schema::ContactRecord;

/// One entry of the directory as the emulator holds it.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// `people/…`.
    pub resource: String,
    /// `DOMAIN_CONTACT` or `DOMAIN_PROFILE`.
    pub kind: &'static str,
    pub etag: String,
    pub updated_ms: i64,
    /// When it was deleted; deleted entries are listed only to a sync.
    pub deleted_ms: Option<i64>,
    /// What it holds, in the unified schema (the emulator's truth).
    pub record: ContactRecord,
}

/// A `google.type.Date` from `YYYY-MM-DD` or `--MM-DD`.
fn date(text: &str) -> Option<Value> {
    let parts: Vec<&str> = text.trim_start_matches("--").split('-').collect();
    let num = |s: &str| s.parse::<i64>().ok();
    match parts[..] {
        [y, m, d] if !text.starts_with("--") => {
            Some(json!({ "year": num(y)?, "month": num(m)?, "day": num(d)? }))
        }
        [m, d] => Some(json!({ "month": num(m)?, "day": num(d)? })),
        _ => None,
    }
}

/// A field's `metadata`, marking the primary one.
fn meta(primary: Option<bool>) -> Value {
    match primary {
        Some(true) => json!({ "primary": true }),
        _ => json!({}),
    }
}

/// The `Person` the API serves for `e`: every field of the read mask the record holds.
pub fn person_json(e: &DirEntry) -> Value {
    let r = &e.record;
    let updated = chrono::DateTime::from_timestamp_millis(e.updated_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut p = json!({
        "resourceName": e.resource,
        "etag": e.etag,
        "metadata": { "sources": [{ "type": e.kind, "id": e.resource.trim_start_matches("people/"), "updateTime": updated }] },
    });
    let set = |p: &mut Value, k: &str, v: Vec<Value>| {
        if !v.is_empty() {
            p[k] = Value::Array(v);
        }
    };
    let name = json!({
        "metadata": { "primary": true },
        "displayName": r.display_name, "givenName": r.given_name, "familyName": r.family_name,
        "middleName": r.middle_name, "honorificPrefix": r.prefix, "honorificSuffix": r.suffix,
    });
    let has_name = [
        &r.display_name,
        &r.given_name,
        &r.family_name,
        &r.middle_name,
        &r.prefix,
        &r.suffix,
    ]
    .iter()
    .any(|x| x.is_some());
    set(&mut p, "names", if has_name { vec![name] } else { vec![] });
    set(
        &mut p,
        "nicknames",
        r.nickname.iter().map(|n| json!({ "value": n })).collect(),
    );
    set(&mut p, "emailAddresses", r.emails.iter().map(|m| json!({
        "metadata": meta(m.primary), "value": m.address, "type": m.label.as_ref().or(m.kind.as_ref()),
        "formattedType": m.label, "displayName": m.display_name,
    })).collect());
    set(&mut p, "phoneNumbers", r.phones.iter().map(|m| json!({
        "metadata": meta(m.primary), "value": m.number, "type": m.label.as_ref().or(m.kind.as_ref()),
        "formattedType": m.label, "canonicalForm": m.uri.as_deref().and_then(|u| u.strip_prefix("tel:")),
    })).collect());
    set(&mut p, "addresses", r.addresses.iter().map(|a| json!({
        "metadata": meta(a.primary), "type": a.label.as_ref().or(a.kind.as_ref()), "formattedType": a.label,
        "streetAddress": a.street, "poBox": a.po_box, "extendedAddress": a.neighborhood, "city": a.city,
        "region": a.region, "postalCode": a.postcode, "country": a.country, "formattedValue": a.formatted,
    })).collect());
    set(&mut p, "organizations", r.organizations.iter().map(|o| json!({
        "metadata": meta(o.primary), "name": o.name, "title": o.title, "department": o.department,
        "type": o.label.as_ref().or(o.kind.as_ref()), "formattedType": o.label,
    })).collect());
    set(&mut p, "urls", r.websites.iter().map(|w| json!({
        "metadata": meta(w.primary), "value": w.href, "type": w.label.as_ref().or(w.kind.as_ref()), "formattedType": w.label,
    })).collect());
    set(&mut p, "relations", r.relations.iter().map(|x| json!({
        "person": x.name, "type": x.label.as_ref().or(x.kind.as_ref()), "formattedType": x.label,
    })).collect());
    set(&mut p, "events", r.events.iter().map(|x| json!({
        "date": x.start.as_deref().and_then(date), "type": x.label.as_ref().or(x.kind.as_ref()), "formattedType": x.label,
    })).collect());
    set(
        &mut p,
        "birthdays",
        r.birthday
            .iter()
            .map(|b| match date(b) {
                Some(d) => json!({ "date": d }),
                None => json!({ "text": b }),
            })
            .collect(),
    );
    set(
        &mut p,
        "biographies",
        r.notes
            .iter()
            .map(|n| json!({ "value": n, "contentType": "TEXT_PLAIN" }))
            .collect(),
    );
    set(
        &mut p,
        "memberships",
        r.groups
            .iter()
            .map(|g| json!({ "contactGroupMembership": { "contactGroupResourceName": g } }))
            .collect(),
    );
    set(
        &mut p,
        "photos",
        r.photo
            .iter()
            .filter_map(|ph| ph.href.as_ref())
            .map(|u| json!({ "metadata": { "primary": true }, "url": u }))
            .collect(),
    );
    p
}

/// The `Person` of a deleted entry, as a sync list returns it.
pub fn deleted_json(e: &DirEntry) -> Value {
    json!({ "resourceName": e.resource, "etag": e.etag, "metadata": { "deleted": true } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::extract::RecordContext;
    use crate::model::schema::{Email, Event, Organization, Phone};
    use crate::providers::google_directory::decode::decode_page;

    fn entry(n: usize, kind: &'static str, updated_ms: i64) -> DirEntry {
        DirEntry {
            resource: format!("people/{n:03}"),
            kind,
            etag: format!("e{n}"),
            updated_ms,
            deleted_ms: None,
            record: ContactRecord {
                display_name: Some(format!("P{n}")),
                ..Default::default()
            },
        }
    }

    fn cfg() -> ListConfig {
        ListConfig {
            token_ttl_ms: None,
            expired_status: 400,
            retention_ms: 1_000_000,
            instance: 7,
        }
    }

    fn query(pairs: &[(&str, &str)]) -> ListQuery {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ListQuery::of(&pairs)
    }

    /// Reads a whole list (following page tokens), returning the resources listed, the
    /// deleted ones, and the sync token.
    fn read_all(
        entries: &[DirEntry],
        base: &[(&str, &str)],
        now: i64,
    ) -> (Vec<String>, Vec<String>, String) {
        let (mut live, mut gone, mut page) = (vec![], vec![], None::<String>);
        loop {
            let mut pairs = base.to_vec();
            if let Some(p) = &page {
                pairs.push(("pageToken", p));
            }
            let (status, v) = list(entries, &query(&pairs), now, &cfg());
            assert_eq!(status, 200, "{v}");
            for p in v["people"].as_array().unwrap() {
                let r = p["resourceName"].as_str().unwrap().to_string();
                if p["metadata"]["deleted"] == json!(true) {
                    gone.push(r)
                } else {
                    live.push(r)
                }
            }
            match v["nextPageToken"].as_str() {
                Some(t) => page = Some(t.to_string()),
                None => {
                    return (
                        live,
                        gone,
                        v["nextSyncToken"].as_str().unwrap_or("").to_string(),
                    );
                }
            }
        }
    }

    /// A full list pages through every live entry of the kinds asked; its sync token
    /// then lists exactly what changed, deletes included; a token of another request,
    /// another instance or past the retention is refused as the API refuses it.
    #[test]
    fn lists_page_and_sync_tokens_follow_changes() {
        let mut entries: Vec<DirEntry> = (0..25)
            .map(|n| {
                entry(
                    n,
                    if n % 5 == 0 {
                        "DOMAIN_PROFILE"
                    } else {
                        "DOMAIN_CONTACT"
                    },
                    100,
                )
            })
            .collect();
        entries[3].deleted_ms = Some(50);
        let both = [
            ("readMask", "names"),
            ("sources", "DIRECTORY_SOURCE_TYPE_DOMAIN_CONTACT"),
            ("sources", "DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE"),
            ("pageSize", "4"),
            ("requestSyncToken", "true"),
        ];
        let (live, gone, sync) = read_all(&entries, &both, 1000);
        assert_eq!(live.len(), 24, "{live:?}");
        assert!(gone.is_empty() && !sync.is_empty());
        let profiles = [
            ("readMask", "names"),
            ("sources", "DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE"),
            ("requestSyncToken", "true"),
        ];
        assert_eq!(read_all(&entries, &profiles, 1000).0.len(), 5);
        // Changes after the list: an edit, a delete, an insert.
        entries[1].updated_ms = 2000;
        entries[2].deleted_ms = Some(2000);
        entries.push(entry(99, "DOMAIN_CONTACT", 2000));
        let mut again = both.to_vec();
        again.retain(|(k, _)| *k != "requestSyncToken");
        again.push(("syncToken", &sync));
        let (live, gone, next) = read_all(&entries, &again, 3000);
        assert_eq!(live, ["people/001", "people/099"]);
        assert_eq!(gone, ["people/002"]);
        assert!(!next.is_empty() && next != sync);
        // The same token with other sources, or past the retention, is refused.
        let mut other = profiles.to_vec();
        other.retain(|(k, _)| *k != "requestSyncToken");
        other.push(("syncToken", &sync));
        let (status, v) = list(&entries, &query(&other), 3000, &cfg());
        assert_eq!(
            (status, v["error"]["details"][0]["reason"].as_str()),
            (400, Some("EXPIRED_SYNC_TOKEN"))
        );
        let (status, _) = list(&entries, &query(&again), 2_000_000, &cfg());
        assert_eq!(status, 400);
        let gone_cfg = ListConfig {
            expired_status: 410,
            ..cfg()
        };
        assert_eq!(list(&entries, &query(&again), 2_000_000, &gone_cfg).0, 410);
        assert_eq!(
            list(
                &entries,
                &query(&[("sources", "DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE")]),
                1,
                &cfg()
            )
            .0,
            400
        );
    }

    /// An entry deleted while a full list pages shifts no live entry out of it.
    #[test]
    fn a_delete_during_a_full_list_skips_nothing() {
        let mut entries: Vec<DirEntry> = (0..10).map(|n| entry(n, "DOMAIN_CONTACT", 100)).collect();
        let q = [
            ("readMask", "names"),
            ("sources", "DIRECTORY_SOURCE_TYPE_DOMAIN_CONTACT"),
            ("pageSize", "3"),
            ("requestSyncToken", "true"),
        ];
        let (status, first) = list(&entries, &query(&q), 1000, &cfg());
        assert_eq!(status, 200);
        entries[0].deleted_ms = Some(1500);
        let token = first["nextPageToken"].as_str().unwrap().to_string();
        let mut rest = q.to_vec();
        rest.push(("pageToken", &token));
        let (_, second) = list(&entries, &query(&rest), 1600, &cfg());
        assert_eq!(second["people"][0]["resourceName"], "people/003");
    }

    /// What the emulator serves decodes, through the provider's own decoder, to the
    /// record it holds (for the fields the People API carries).
    #[test]
    fn a_served_person_decodes_to_the_record_held() {
        let record = ContactRecord {
            display_name: Some("Ada Lovelace".into()),
            given_name: Some("Ada".into()),
            family_name: Some("Lovelace".into()),
            nickname: Some("Ada".into()),
            emails: vec![Email {
                address: Some("ada@example.com".into()),
                kind: Some("work".into()),
                primary: Some(true),
                ..Default::default()
            }],
            phones: vec![Phone {
                number: Some("+44 20 1".into()),
                kind: Some("mobile".into()),
                uri: Some("tel:+44201".into()),
                primary: Some(false),
                ..Default::default()
            }],
            organizations: vec![Organization {
                name: Some("Analytical".into()),
                title: Some("Countess".into()),
                primary: Some(false),
                ..Default::default()
            }],
            events: vec![Event {
                kind: Some("anniversary".into()),
                start: Some("--11-27".into()),
                ..Default::default()
            }],
            birthday: Some("1815-12-10".into()),
            notes: Some("Wrote the first program.".into()),
            groups: vec!["contactGroups/eng".into()],
            ..Default::default()
        };
        let e = DirEntry {
            resource: "people/c42".into(),
            kind: "DOMAIN_CONTACT",
            etag: "%E1".into(),
            updated_ms: 1_767_323_045_500,
            deleted_ms: None,
            record: record.clone(),
        };
        let body = json!({ "people": [person_json(&e), deleted_json(&DirEntry { resource: "people/9".into(), ..e.clone() })], "nextSyncToken": "s" });
        let ctx = RecordContext {
            source: "d".into(),
            account: "example.com".into(),
            run_id: "r".into(),
            synced_at_us: 1,
        };
        let page = decode_page(body.to_string().as_bytes(), &ctx, "p").unwrap();
        assert_eq!(page.deletes, ["9"]);
        let got = &page.upserts[0];
        assert_eq!(got.id, "c42");
        assert_eq!(got.updated, Some(1_767_323_045_500_000));
        for (a, b) in [
            (&got.display_name, &record.display_name),
            (&got.given_name, &record.given_name),
            (&got.nickname, &record.nickname),
            (&got.birthday, &record.birthday),
            (&got.notes, &record.notes),
        ] {
            assert_eq!(a, b);
        }
        assert_eq!(got.emails, record.emails);
        assert_eq!(got.phones, record.phones);
        assert_eq!(got.organizations, record.organizations);
        assert_eq!(got.events, record.events);
        assert_eq!(got.groups, record.groups);
    }
}

/// How the emulator's directory answers, beyond its data.
#[derive(Debug, Clone)]
pub struct ListConfig {
    /// Sync tokens older than this are expired.
    pub token_ttl_ms: Option<i64>,
    /// The status an expired sync token gets: 400 (`FAILED_PRECONDITION`) or 410.
    pub expired_status: u16,
    /// Deleted entries older than this are forgotten: a sync token from before then is
    /// expired, as its deletes can no longer be told.
    pub retention_ms: i64,
    /// The emulator's instance: a token of another instance (a restarted emulator) is
    /// expired.
    pub instance: u64,
}

/// The query of one list call.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub read_mask: Option<String>,
    pub sources: Vec<String>,
    pub page_size: Option<usize>,
    pub page_token: Option<String>,
    pub request_sync_token: bool,
    pub sync_token: Option<String>,
}

impl ListQuery {
    /// The query of `pairs` (`sources` repeated, or `sources[]`).
    pub fn of(pairs: &[(String, String)]) -> ListQuery {
        let mut q = ListQuery::default();
        for (k, v) in pairs {
            match k.as_str() {
                "readMask" => q.read_mask = Some(v.clone()),
                "sources" | "sources[]" => q.sources.push(v.clone()),
                "pageSize" => q.page_size = v.parse().ok(),
                "pageToken" => q.page_token = Some(v.clone()),
                "requestSyncToken" => q.request_sync_token = v == "true",
                "syncToken" => q.sync_token = Some(v.clone()),
                _ => {}
            }
        }
        q
    }

    /// What a page or sync token is tied to: every parameter but the tokens and the
    /// page size.
    fn request(&self) -> String {
        format!(
            "{}|{}",
            self.read_mask.as_deref().unwrap_or(""),
            self.sources.join(",")
        )
    }
}

/// A page token: where the next page starts, the list it belongs to.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PageToken {
    /// Offset of the next entry.
    o: usize,
    /// The moment the list began (a full list) or its sync token's moment (a sync).
    t: i64,
    /// When a sync list began (its next sync token's moment).
    s: i64,
    /// The request it belongs to.
    r: String,
    i: u64,
}

/// A sync token: the moment of the list that made it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SyncToken {
    t: i64,
    r: String,
    i: u64,
}

fn encode<T: serde::Serialize>(t: &T) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(t).unwrap_or_default())
}

fn decode_token<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    serde_json::from_slice(&raw).ok()
}

/// A Google API error document.
pub fn api_error(code: u16, status: &str, message: &str, reason: Option<&str>) -> (u16, Value) {
    let mut e = json!({ "error": { "code": code, "message": message, "status": status } });
    if let Some(r) = reason {
        e["error"]["details"] = json!([{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": r, "domain": "people.googleapis.com" }]);
    }
    (code, e)
}

/// The answer (status, JSON) to one list call over `entries` at `now_ms`.
pub fn list(entries: &[DirEntry], q: &ListQuery, now_ms: i64, cfg: &ListConfig) -> (u16, Value) {
    if q.read_mask.as_deref().is_none_or(str::is_empty) {
        return api_error(400, "INVALID_ARGUMENT", "readMask is required", None);
    }
    let kinds: Vec<&str> = q
        .sources
        .iter()
        .filter_map(|s| s.strip_prefix("DIRECTORY_SOURCE_TYPE_"))
        .collect();
    if kinds.is_empty() || kinds.len() != q.sources.len() {
        return api_error(
            400,
            "INVALID_ARGUMENT",
            "sources must name directory source types",
            None,
        );
    }
    let size = match q.page_size {
        None | Some(0) => 100,
        Some(n) => n.min(1000),
    };
    let request = q.request();
    // Where this call reads from: a page token, a sync token, or the start of a list.
    let (offset, since, began) = match (&q.page_token, &q.sync_token) {
        (Some(p), _) => match decode_token::<PageToken>(p) {
            Some(t) if t.r == request && t.i == cfg.instance => {
                (t.o, Some(t.t).filter(|_| q.sync_token.is_some()), t.s)
            }
            _ => {
                return api_error(
                    400,
                    "INVALID_ARGUMENT",
                    "the page token is not one of this list's",
                    None,
                );
            }
        },
        (None, Some(s)) => match decode_token::<SyncToken>(s) {
            Some(t)
                if t.r == request
                    && t.i == cfg.instance
                    && now_ms - t.t <= cfg.retention_ms
                    && cfg.token_ttl_ms.is_none_or(|ttl| now_ms - t.t <= ttl) =>
            {
                (0, Some(t.t), now_ms)
            }
            _ => {
                return match cfg.expired_status {
                    410 => api_error(
                        410,
                        "ABORTED",
                        "Sync token is expired. Clear local cache and retry call without the sync token.",
                        Some("EXPIRED_SYNC_TOKEN"),
                    ),
                    _ => api_error(
                        400,
                        "FAILED_PRECONDITION",
                        "Sync token is expired. Clear local cache and retry call without the sync token.",
                        Some("EXPIRED_SYNC_TOKEN"),
                    ),
                };
            }
        },
        (None, None) => (0, None, now_ms),
    };
    let mut chosen: Vec<&DirEntry> = entries
        .iter()
        .filter(|e| kinds.contains(&e.kind))
        .filter(|e| match since {
            // A sync: what changed after its moment, deletes included.
            Some(t) => e.updated_ms > t || e.deleted_ms.is_some_and(|d| d > t),
            // A full list: every entry live when it began, so that an entry deleted
            // meanwhile shifts no later one out of its pages (the next sync deletes it).
            None => e.deleted_ms.is_none_or(|d| d > began),
        })
        .collect();
    chosen.sort_by(|a, b| a.resource.cmp(&b.resource));
    let page: Vec<Value> = chosen
        .iter()
        .skip(offset)
        .take(size)
        .map(|e| match (e.deleted_ms, since) {
            (Some(_), Some(_)) => deleted_json(e),
            _ => person_json(e),
        })
        .collect();
    let mut out = json!({ "people": page });
    if offset + size < chosen.len() {
        out["nextPageToken"] = json!(encode(&PageToken {
            o: offset + size,
            t: since.unwrap_or(began),
            s: began,
            r: request,
            i: cfg.instance,
        }));
    } else if q.request_sync_token || since.is_some() {
        out["nextSyncToken"] = json!(encode(&SyncToken {
            t: began,
            r: request,
            i: cfg.instance
        }));
    }
    (200, out)
}

/// The People API's word for a GData `rel` or a label: the API writes its fixed types in
/// camel case (`workFax`, `homePage`), a user's own label as written.
fn people_type(kind: &Option<String>, label: &Option<String>) -> Option<String> {
    if let Some(l) = label {
        return Some(l.clone());
    }
    let k = kind.as_ref()?;
    let mut out = String::new();
    let mut up = false;
    for c in k.chars() {
        if c == '_' || c == '-' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// A domain contact of the Google emulator as the directory shows it: the fields the
/// People API carries, types in its words, groups as contact-group resources, the photo
/// URL as the photo's version.
pub fn directory_view(mut r: ContactRecord) -> ContactRecord {
    macro_rules! retype {
        ($items:expr) => {
            for x in $items.iter_mut() {
                x.kind = people_type(&x.kind, &x.label);
            }
        };
    }
    // The API marks a primary field and leaves the others unmarked: not primary.
    macro_rules! primary {
        ($items:expr) => {
            for x in $items.iter_mut() {
                x.primary = Some(x.primary == Some(true));
            }
        };
    }
    primary!(r.emails);
    primary!(r.phones);
    primary!(r.addresses);
    primary!(r.organizations);
    primary!(r.websites);
    retype!(r.emails);
    retype!(r.phones);
    retype!(r.addresses);
    retype!(r.organizations);
    retype!(r.websites);
    retype!(r.relations);
    retype!(r.events);
    r.ims.clear();
    r.file_as = None;
    r.extended_properties.clear();
    r.groups = r
        .groups
        .iter()
        .map(|g| format!("contactGroups/{}", g.rsplit('/').next().unwrap_or(g)))
        .collect();
    r.photo = r
        .photo
        .and_then(|p| p.href)
        .map(|u| crate::model::schema::Photo {
            etag: Some(u.clone()),
            href: Some(u),
        });
    r
}

/// The directory's own entries (the domain's users' profiles) and how it answers; the
/// domain's shared contacts are the Google emulator's, read at each call.
pub struct DirectoryStore {
    /// Profiles, `people/<n>`.
    pub profiles: Vec<DirEntry>,
    people: super::data::Generator,
    domain: String,
    next_n: usize,
    ttl_ms: Option<i64>,
    expired_status: u16,
    /// A permanent fault and the calls still answered normally before it starts.
    fault: Option<(u64, PermanentFault)>,
}

impl DirectoryStore {
    /// `cfg.directory_profiles` profiles, changed a day ago.
    pub fn generate(cfg: &super::EmulatorConfig, now_ms: i64) -> DirectoryStore {
        let mut s = DirectoryStore {
            profiles: Vec::with_capacity(cfg.directory_profiles),
            people: super::data::Generator::new(cfg.seed ^ 0x5EED_D1EC),
            domain: cfg.google_domain.clone(),
            next_n: 0,
            ttl_ms: cfg.people_token_ttl_secs.map(|s| s as i64 * 1000),
            expired_status: cfg.people_expired_status,
            fault: None,
        };
        for _ in 0..cfg.directory_profiles {
            s.insert(now_ms - 86_400_000);
        }
        s
    }

    /// A new profile, changed at `now_ms`; returns its id.
    fn insert(&mut self, now_ms: i64) -> String {
        let n = 1000 + self.next_n;
        self.next_n += 1;
        let p = self.people.person(n as u64);
        let given = p.given.clone().unwrap_or_else(|| format!("User{n}"));
        let family = p.family.clone().unwrap_or_default();
        let address = format!("{}.{}@{}", given.to_lowercase(), n, self.domain);
        let record = ContactRecord {
            account: self.domain.clone(),
            id: n.to_string(),
            display_name: Some(format!("{given} {family}").trim().to_string()),
            given_name: Some(given),
            family_name: p.family.clone(),
            emails: vec![crate::model::schema::Email {
                address: Some(address),
                kind: Some("work".into()),
                primary: Some(true),
                ..Default::default()
            }],
            organizations: p
                .orgs
                .iter()
                .take(1)
                .map(
                    |(name, title, dept, _)| crate::model::schema::Organization {
                        name: Some(name.clone()),
                        title: title.clone(),
                        department: dept.clone(),
                        kind: Some("work".into()),
                        primary: Some(false),
                        ..Default::default()
                    },
                )
                .collect(),
            ..Default::default()
        };
        self.profiles.push(DirEntry {
            resource: format!("people/{n}"),
            kind: "DOMAIN_PROFILE",
            etag: format!("%Ep{n}.0"),
            updated_ms: now_ms,
            deleted_ms: None,
            record,
        });
        n.to_string()
    }

    /// From the call after the next `after` list calls on, answers every list call with
    /// `fault` (`None`: no fault).
    pub fn set_fault(&mut self, after: u64, fault: Option<PermanentFault>) {
        self.fault = fault.map(|f| (after, f));
    }

    /// The fault this list call gets, counting it.
    fn next_fault(&mut self) -> Option<PermanentFault> {
        let (left, f) = self.fault.as_mut()?;
        if *left == 0 {
            return Some(*f);
        }
        *left -= 1;
        None
    }

    /// Adds, edits (a new title) and deletes profiles at `now_ms`.
    pub fn mutate(
        &mut self,
        inserts: usize,
        updates: usize,
        deletes: usize,
        now_ms: i64,
    ) -> super::MutationSummary {
        let mut out = super::MutationSummary::default();
        for _ in 0..inserts {
            out.inserted.push(self.insert(now_ms));
        }
        let live: Vec<usize> = (0..self.profiles.len())
            .filter(|&i| self.profiles[i].deleted_ms.is_none())
            .collect();
        for (k, &i) in live.iter().enumerate().take(updates + deletes) {
            let e = &mut self.profiles[i];
            let id = e.resource.trim_start_matches("people/").to_string();
            e.updated_ms = now_ms;
            if k < updates {
                let word = self.people.word();
                e.etag = format!("{}.{k}", e.etag);
                match e.record.organizations.first_mut() {
                    Some(o) => o.title = Some(word),
                    None => e.record.notes = Some(word),
                }
                out.updated.push(id);
            } else {
                e.deleted_ms = Some(now_ms);
                out.deleted.push(id);
            }
        }
        out
    }
}

/// Every entry of the directory at `now`: the Google emulator's contacts (as
/// `people/c<id>`) and the profiles.
fn entries(s: &super::Shared) -> (Vec<DirEntry>, ListConfig) {
    let g = s.google.lock().unwrap();
    let d = s.directory.lock().unwrap();
    let mut out: Vec<DirEntry> = g
        .contacts
        .values()
        .map(|c| DirEntry {
            resource: format!("people/c{}", c.id),
            kind: "DOMAIN_CONTACT",
            etag: format!("%Ec{}", c.etag),
            updated_ms: c.updated_ms,
            deleted_ms: c.deleted_ms,
            record: directory_view(g.record(c, &s.base_url)),
        })
        .collect();
    out.extend(d.profiles.iter().cloned());
    let cfg = ListConfig {
        token_ttl_ms: d.ttl_ms,
        expired_status: d.expired_status,
        retention_ms: g.retention_ms,
        instance: g.instance,
    };
    (out, cfg)
}

/// What the directory holds, as a `google_directory` source lands it (ids without
/// `people/`), live entries only, sorted by id.
pub fn truth(s: &super::Shared) -> Vec<ContactRecord> {
    let (entries, _) = entries(s);
    let mut out: Vec<ContactRecord> = entries
        .into_iter()
        .filter(|e| e.deleted_ms.is_none())
        .map(|e| {
            let mut r = e.record;
            r.id = e.resource.trim_start_matches("people/").to_string();
            r.etag = Some(e.etag);
            r.updated = Some(e.updated_ms * 1000);
            r.native = Some(json!({ "directory_source": e.kind, "sources": [e.kind] }).to_string());
            r
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// A fault the directory route keeps answering, from some call on, until it is cleared
/// ([`DirectoryStore::set_fault`]): what a client must fail on rather than retry into
/// success. (The transient faults, 429 with `Retry-After`, 5xx, resets, cut
/// connections and slow answers, come from the shared fault layer, [`super::FaultSpec`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermanentFault {
    /// 200 with an HTML page (a proxy's or a sign-in portal's) instead of JSON.
    HtmlPage,
    /// 200 with the page's JSON cut in half, its `Content-Length` matching what is sent:
    /// complete as far as HTTP goes, so only the JSON can tell.
    TruncatedJson,
    /// 401 `UNAUTHENTICATED` to every token, a freshly issued one included (a revoked
    /// delegation).
    Unauthorized,
}

/// The People API's own error body for a status the shared fault layer injects: Google's
/// JSON error document, `RESOURCE_EXHAUSTED` for 429.
pub fn fault_response(status: axum::http::StatusCode) -> axum::response::Response {
    let (code, body) = match status.as_u16() {
        429 => api_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute per user' of service 'people.googleapis.com'.",
            Some("RATE_LIMIT_EXCEEDED"),
        ),
        503 => api_error(
            503,
            "UNAVAILABLE",
            "The service is currently unavailable.",
            None,
        ),
        c => api_error(c, "INTERNAL", "Internal error encountered.", None),
    };
    json_response(code, body.to_string())
}

/// A JSON answer with `code`.
fn json_response(code: u16, body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status = axum::http::StatusCode::from_u16(code)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=UTF-8",
        )],
        body,
    )
        .into_response()
}

/// The route of `people.listDirectoryPeople`.
pub fn routes() -> axum::Router<std::sync::Arc<super::Shared>> {
    axum::Router::new().route(
        "/v1/people:listDirectoryPeople",
        axum::routing::get(list_route),
    )
}

async fn list_route(
    axum::extract::State(s): axum::extract::State<std::sync::Arc<super::Shared>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let now = s.clock.now_ms();
    let fault = s.directory.lock().unwrap().next_fault();
    if let Some(f) = fault {
        s.count(&format!("people.fault.{f:?}"));
    }
    let (status, body) = if fault == Some(PermanentFault::Unauthorized)
        || !super::google::authorized(&mut s.google.lock().unwrap(), &headers, now)
    {
        s.count("people.unauthorized");
        api_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            None,
        )
    } else {
        s.count("people.list");
        let (entries, cfg) = entries(&s);
        list(
            &entries,
            &ListQuery::of(&super::google::query_pairs(&uri)),
            now,
            &cfg,
        )
    };
    match fault {
        Some(PermanentFault::HtmlPage) => (
            axum::http::StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "text/html; charset=UTF-8")],
            "<!DOCTYPE html><html><head><title>Sign in</title></head><body>Your session has expired. Sign in to continue.</body></html>",
        )
            .into_response(),
        Some(PermanentFault::TruncatedJson) if status == 200 => {
            let mut text = body.to_string();
            text.truncate(text.len() / 2);
            json_response(status, text)
        }
        _ => json_response(status, body.to_string()),
    }
}
