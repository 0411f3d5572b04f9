//! The Aurinko Contacts API emulator: sync start (`ready:false` first), the updated and
//! deleted streams with delta and page tokens, token expiry (410), CRUD with ETags, and
//! Bearer or Basic + `X-Aurinko-Account-Id` auth.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::data::{ExtValue, Generator, Kind, Person};
use super::{EmulatorConfig, MutationSummary, Shared, Truth, hash64};
use crate::model::schema::{self, ContactRecord};

const PHONE_TYPES: &[&str] = &[
    "work",
    "home",
    "other",
    "mobile",
    "workMobile",
    "main",
    "companyMain",
    "assistant",
    "workFax",
    "homeFax",
    "otherFax",
    "callback",
    "pager",
    "workPager",
    "radio",
    "telex",
    "tty",
];
const ADDRESS_TYPES: &[&str] = &["work", "home", "other"];
const URL_TYPES: &[&str] = &[
    "work",
    "home",
    "other",
    "blog",
    "profile",
    "homePage",
    "ftp",
    "reservations",
];
const RELATION_TYPES: &[&str] = &["manager", "assistant", "spouse"];
const READ_ONLY: &[&str] = &["id", "etag", "createdTime", "lastModifiedTime", "hasPhoto"];

#[derive(Default)]
struct AContact {
    /// The record without id, etag and times.
    body: Map<String, Value>,
    etag: String,
    modseq: u64,
    created_ms: i64,
    modified_ms: i64,
    version: u64,
}

struct Account {
    contacts: HashMap<String, AContact>,
    by_seq: BTreeMap<u64, String>,
    deletes: BTreeMap<u64, (String, i64)>,
    seq: u64,
    sync_calls: u32,
    next_n: u64,
    last_ms: i64,
}

/// The Aurinko side's state.
pub struct AurinkoStore {
    accounts: BTreeMap<String, Account>,
    people: Generator,
    seed: u64,
    /// This store's instance id, random per emulator: every token carries it, and a token
    /// of another instance (an emulator process that is gone) is expired (410), as a real
    /// server answers a token it never issued.
    instance: u64,
    epoch: u64,
    page_size: usize,
    ready_after: u32,
    token_ttl_ms: Option<i64>,
    require_if_match: bool,
    token: String,
}

/// A decoded sync token (delta or page).
#[derive(Serialize, Deserialize)]
struct Tok {
    /// account
    a: String,
    /// stream: "u" or "d"
    s: String,
    /// delta: high-water seq; page: last seq returned
    q: u64,
    /// page tokens: the snapshot's high-water seq
    h: Option<u64>,
    /// epoch
    e: u64,
    /// the issuing store's instance id (absent in a token of an older emulator: expired)
    #[serde(default)]
    i: u64,
    /// issued at (ms)
    t: i64,
}

fn enc(t: &Tok) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(t).unwrap())
}

fn dec(s: &str) -> Option<Tok> {
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?,
    )
    .ok()
}

fn ms_to_iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3f+00:00")
        .to_string()
}

fn kind_word(k: &Kind) -> String {
    match k {
        Kind::Rel(r) => r.clone(),
        Kind::Label(_) => "other".into(),
    }
}

fn phone_type(k: &Kind) -> &'static str {
    match k {
        Kind::Rel(r) => match r.as_str() {
            "work" => "work",
            "home" => "home",
            "mobile" => "mobile",
            "work_mobile" => "workMobile",
            "main" => "main",
            "fax" => "workFax",
            "pager" => "pager",
            _ => "other",
        },
        Kind::Label(_) => "other",
    }
}

/// A JSON object of the fields that have a value.
fn present(fields: &[(&str, &Option<String>)]) -> Map<String, Value> {
    fields
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), json!(v))))
        .collect()
}

/// The odd but legal shapes of real records, chosen by the person's number so the random
/// stream stays as it was: an explicit null beside absent fields, empty arrays, fields this
/// tool does not model (top level, in `name`, in list items and in `company`), and
/// non-ASCII keys in `nativeProperties`. A client must land them without loss and write
/// back around them without wiping them.
fn odd_shapes(n: u64, m: &mut Map<String, Value>) {
    match n % 11 {
        2 => {
            m.insert("nickName".into(), Value::Null);
            m.insert("fileAs".into(), Value::Null);
        }
        4 => {
            m.entry("emailAddresses").or_insert_with(|| json!([]));
            m.insert("urls".into(), json!([]));
            m.insert("keywords".into(), json!([]));
        }
        6 => {
            m.insert("somethingNew".into(), json!({"nested": [1, "two", null]}));
            if let Some(Value::Object(name)) = m.get_mut("name") {
                name.insert("yomiGivenName".into(), json!("よみ"));
            }
            if let Some(Value::Array(items)) = m.get_mut("emailAddresses")
                && let Some(Value::Object(first)) = items.first_mut()
            {
                first.insert("id".into(), json!(format!("em-{n}")));
            }
            if let Some(Value::Object(c)) = m.get_mut("company") {
                c.insert("officeLocation".into(), json!("Bâtiment 7"));
            }
        }
        8 => {
            let native = m.entry("nativeProperties").or_insert_with(|| json!({}));
            if let Value::Object(o) = native {
                o.insert("clé-ü 字".into(), json!("värde \"quoted\""));
            }
        }
        _ => {}
    }
}

/// Renders a synthetic person as an Aurinko contact body.
fn person_to_body(p: &Person) -> Map<String, Value> {
    let mut m = Map::new();
    name_and_company(p, &mut m);
    channels(p, &mut m);
    links_and_notes(p, &mut m);
    m
}

/// The name, nickname, file-as and company of a person's body.
fn name_and_company(p: &Person, m: &mut Map<String, Value>) {
    let name = present(&[
        ("displayName", &p.full),
        ("givenName", &p.given),
        ("middleName", &p.middle),
        ("familyName", &p.family),
        ("prefix", &p.prefix),
        ("suffix", &p.suffix),
    ]);
    if !name.is_empty() {
        m.insert("name".into(), Value::Object(name));
    }
    if let Some(v) = &p.nickname {
        m.insert("nickName".into(), json!(v));
    }
    if let Some(v) = &p.file_as {
        m.insert("fileAs".into(), json!(v));
    }
    if let Some((n, t, d, _)) = p.orgs.first() {
        let mut c = Map::new();
        c.insert("name".into(), json!(n));
        if let Some(t) = t {
            c.insert("jobTitle".into(), json!(t));
        }
        if let Some(d) = d {
            c.insert("department".into(), json!(d));
        }
        m.insert("company".into(), Value::Object(c));
    }
}

/// The e-mail addresses, phone numbers and postal addresses of a person's body.
fn channels(p: &Person, m: &mut Map<String, Value>) {
    if !p.emails.is_empty() {
        m.insert(
            "emailAddresses".into(),
            p.emails
                .iter()
                .map(|(a, k, _, dn)| {
                    let mut e = json!({"address": a, "type": kind_word(k)});
                    if let Some(dn) = dn {
                        e["name"] = json!(dn);
                    }
                    e
                })
                .collect(),
        );
    }
    if !p.phones.is_empty() {
        m.insert(
            "phoneNumbers".into(),
            p.phones
                .iter()
                .map(|(n, k, _)| json!({"number": n, "type": phone_type(k)}))
                .collect(),
        );
    }
    if !p.addresses.is_empty() {
        m.insert(
            "addresses".into(),
            p.addresses
                .iter()
                .map(|a| {
                    let mut o = present(&[
                        ("street", &a.street),
                        ("poBox", &a.pobox),
                        ("city", &a.city),
                        ("state", &a.region),
                        ("postalCode", &a.postcode),
                        ("country", &a.country),
                    ]);
                    o.insert(
                        "type".into(),
                        json!(
                            a.kind
                                .as_ref()
                                .map(kind_word)
                                .filter(|k| ADDRESS_TYPES.contains(&k.as_str()))
                                .unwrap_or_else(|| "other".into())
                        ),
                    );
                    Value::Object(o)
                })
                .collect(),
        );
    }
}

/// The URLs, relations, birthday, keywords, notes and native properties of a person's
/// body.
fn links_and_notes(p: &Person, m: &mut Map<String, Value>) {
    if !p.websites.is_empty() {
        m.insert(
            "urls".into(),
            p.websites
                .iter()
                .map(|(h, k)| {
                    let t = match kind_word(k).as_str() {
                        "home-page" => "homePage",
                        "blog" => "blog",
                        "profile" => "profile",
                        "work" => "work",
                        _ => "other",
                    };
                    json!({"href": h, "type": t})
                })
                .collect(),
        );
    }
    if !p.relations.is_empty() {
        m.insert(
            "relations".into(),
            p.relations
                .iter()
                .map(|(n, k)| json!({"name": n, "type": kind_word(k)}))
                .collect(),
        );
    }
    if let Some(b) = &p.birthday {
        m.insert("birthday".into(), json!(b));
    }
    if !p.groups.is_empty() {
        m.insert("keywords".into(), json!(p.groups));
    }
    if let Some(n) = &p.notes {
        m.insert("notes".into(), json!(n));
    }
    let native: Map<String, Value> = p
        .ext_props
        .iter()
        .filter_map(|(k, v)| match v {
            ExtValue::Value(v) => Some((k.clone(), json!(v))),
            ExtValue::Xml(_) => None,
        })
        .collect();
    if !native.is_empty() {
        m.insert("nativeProperties".into(), Value::Object(native));
    }
}

fn validate(body: &Map<String, Value>) -> Result<(), String> {
    let check = |field: &str, allowed: &[&str]| -> Result<(), String> {
        if let Some(v) = body.get(field) {
            let arr = v.as_array().ok_or(format!("{field} must be an array"))?;
            for item in arr {
                let obj = item
                    .as_object()
                    .ok_or(format!("{field} items must be objects"))?;
                if let Some(t) = obj.get("type")
                    && !t.is_null()
                {
                    let t = t.as_str().ok_or(format!("{field}.type must be a string"))?;
                    if !allowed.is_empty() && !allowed.contains(&t) {
                        return Err(format!(
                            "Invalid {field}.type value '{t}'; allowed: {}",
                            allowed.join(", ")
                        ));
                    }
                }
            }
        }
        Ok(())
    };
    check("emailAddresses", &[])?;
    check("phoneNumbers", PHONE_TYPES)?;
    check("addresses", ADDRESS_TYPES)?;
    check("urls", URL_TYPES)?;
    check("relations", RELATION_TYPES)?;
    for k in ["name", "company", "nativeProperties"] {
        if let Some(v) = body.get(k)
            && !(v.is_object() || v.is_null())
        {
            return Err(format!("{k} must be an object"));
        }
    }
    if let Some(v) = body.get("keywords")
        && !v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
    {
        return Err("keywords must be an array of strings".into());
    }
    Ok(())
}

impl AurinkoStore {
    /// Generates the configured accounts and contacts.
    pub fn generate(cfg: &EmulatorConfig, now_ms: i64) -> AurinkoStore {
        let mut s = AurinkoStore {
            accounts: BTreeMap::new(),
            people: Generator::new(cfg.seed ^ 0xA0).dense(cfg.dense),
            seed: cfg.seed,
            instance: rand::random::<u64>() | 1,
            epoch: 1,
            page_size: cfg.aurinko_page_size.max(1),
            ready_after: cfg.aurinko_ready_after,
            token_ttl_ms: cfg.aurinko_token_ttl_secs.map(|s| s as i64 * 1000),
            require_if_match: cfg.aurinko_require_if_match,
            token: cfg.token.clone(),
        };
        for i in 0..cfg.aurinko_accounts {
            let id = (101 + i).to_string();
            s.accounts.insert(
                id.clone(),
                Account {
                    contacts: HashMap::new(),
                    by_seq: BTreeMap::new(),
                    deletes: BTreeMap::new(),
                    seq: 0,
                    sync_calls: 0,
                    next_n: 0,
                    last_ms: now_ms - 86_400_000 - 1000 * cfg.aurinko_contacts as i64,
                },
            );
            for _ in 0..cfg.aurinko_contacts {
                let t = s.accounts[&id].last_ms + 1000;
                s.insert_person(&id, t);
            }
        }
        s
    }

    /// The account ids.
    pub fn account_ids(&self) -> Vec<String> {
        self.accounts.keys().cloned().collect()
    }

    /// Makes all issued tokens expire.
    pub fn bump_epoch(&mut self) {
        self.epoch += 1;
    }

    fn etag(&self, id: &str, version: u64) -> String {
        // With the instance: a restarted emulator's records are new versions.
        format!("{:016x}", hash64(self.seed ^ version ^ self.instance, id))
    }

    fn insert_person(&mut self, account: &str, now_ms: i64) -> String {
        let n = self.accounts[account].next_n;
        let p = self.people.person(n);
        let mut body = person_to_body(&p);
        odd_shapes(n, &mut body);
        self.insert_body(account, body, now_ms)
    }

    fn insert_body(&mut self, account: &str, body: Map<String, Value>, now_ms: i64) -> String {
        let seed = self.seed;
        let a = self.accounts.get_mut(account).unwrap();
        a.next_n += 1;
        let id = format!(
            "AAMkAD{:020x}",
            u128::from(hash64(seed, &format!("{account}/{}", a.next_n))) << 16
                | u128::from(a.next_n as u16)
        );
        let id = id[..26].to_string() + &format!("{:04x}", a.next_n % 0x10000);
        a.seq += 1;
        a.last_ms = now_ms.max(a.last_ms + 1);
        let (seq, t) = (a.seq, a.last_ms);
        a.by_seq.insert(seq, id.clone());
        let etag = self.etag(&id, 1);
        self.accounts.get_mut(account).unwrap().contacts.insert(
            id.clone(),
            AContact {
                body,
                etag,
                modseq: seq,
                created_ms: t,
                modified_ms: t,
                version: 1,
            },
        );
        id
    }

    fn touch(&mut self, account: &str, id: &str, now_ms: i64) {
        let a = self.accounts.get_mut(account).unwrap();
        a.seq += 1;
        a.last_ms = now_ms.max(a.last_ms + 1);
        let (seq, t) = (a.seq, a.last_ms);
        let c = a.contacts.get_mut(id).unwrap();
        a.by_seq.remove(&c.modseq);
        a.by_seq.insert(seq, id.to_string());
        c.modseq = seq;
        c.modified_ms = t;
        c.version += 1;
        let v = c.version;
        let etag = self.etag(id, v);
        self.accounts
            .get_mut(account)
            .unwrap()
            .contacts
            .get_mut(id)
            .unwrap()
            .etag = etag;
    }

    fn remove(&mut self, account: &str, id: &str, now_ms: i64) {
        let a = self.accounts.get_mut(account).unwrap();
        let c = a.contacts.remove(id).unwrap();
        a.by_seq.remove(&c.modseq);
        a.seq += 1;
        a.last_ms = now_ms.max(a.last_ms + 1);
        let (seq, t) = (a.seq, a.last_ms);
        a.deletes.insert(seq, (id.to_string(), t));
    }

    /// Random inserts, updates and deletes in one account or all.
    pub fn mutate(
        &mut self,
        account: Option<&str>,
        inserts: usize,
        updates: usize,
        deletes: usize,
        now_ms: i64,
    ) -> MutationSummary {
        let mut out = MutationSummary::default();
        let ids: Vec<String> = match account {
            Some(a) if self.accounts.contains_key(a) => vec![a.to_string()],
            Some(_) => vec![],
            None => self.account_ids(),
        };
        for acct in ids {
            for _ in 0..inserts {
                out.inserted.push(self.insert_person(&acct, now_ms));
            }
            let mut live: Vec<String> = self.accounts[&acct].contacts.keys().cloned().collect();
            live.sort();
            for _ in 0..updates.min(live.len()) {
                let id = live.swap_remove(self.people.index(live.len()));
                let word = self.people.word();
                let phone = format!("+1 555 {:04}", self.people.index(10_000));
                let c = self
                    .accounts
                    .get_mut(&acct)
                    .unwrap()
                    .contacts
                    .get_mut(&id)
                    .unwrap();
                c.body.insert("notes".into(), json!(word));
                let phones = c.body.entry("phoneNumbers").or_insert_with(|| json!([]));
                phones
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"number": phone, "type": "mobile"}));
                self.touch(&acct, &id, now_ms);
                out.updated.push(id);
            }
            for _ in 0..deletes.min(live.len()) {
                let id = live.swap_remove(self.people.index(live.len()));
                self.remove(&acct, &id, now_ms);
                out.deleted.push(id);
            }
        }
        out
    }

    fn render(&self, id: &str, c: &AContact) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(id));
        m.insert("etag".into(), json!(c.etag));
        m.insert("createdTime".into(), json!(ms_to_iso(c.created_ms)));
        m.insert("lastModifiedTime".into(), json!(ms_to_iso(c.modified_ms)));
        for (k, v) in &c.body {
            m.insert(k.clone(), v.clone());
        }
        m.insert("hasPhoto".into(), json!(false));
        Value::Object(m)
    }

    /// One account's truth, as the emulator reads its own records.
    pub fn truth(&self, account: &str) -> Option<Truth> {
        let a = self.accounts.get(account)?;
        let mut contacts: Vec<ContactRecord> = a
            .contacts
            .iter()
            .map(|(id, c)| record(account, id, c))
            .collect();
        contacts.sort_by(|x, y| x.id.cmp(&y.id));
        let mut deleted: Vec<String> = a.deletes.values().map(|(id, _)| id.clone()).collect();
        deleted.sort();
        Some(Truth { contacts, deleted })
    }
}

/// How the emulator would read `body` (a client's POST) once stored: validated by the
/// server's rules, then read in the unified schema. Server-side fields (id, etag,
/// updated) are left empty.
pub fn read_written_body(
    account: &str,
    body: &Map<String, Value>,
) -> Result<ContactRecord, String> {
    validate(body)?;
    let c = AContact {
        body: body.clone(),
        ..AContact::default()
    };
    let mut r = record(account, "", &c);
    (r.etag, r.updated) = (None, None);
    Ok(r)
}

fn record(account: &str, id: &str, c: &AContact) -> ContactRecord {
    let b = &c.body;
    let s = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let name = b.get("name");
    let arr = |k: &str| {
        b.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let company = b.get("company");
    ContactRecord {
        account: account.to_string(),
        id: id.to_string(),
        etag: Some(c.etag.clone()),
        updated: Some(c.modified_ms * 1000),
        display_name: s(name.and_then(|n| n.get("displayName"))),
        given_name: s(name.and_then(|n| n.get("givenName"))),
        family_name: s(name.and_then(|n| n.get("familyName"))),
        middle_name: s(name.and_then(|n| n.get("middleName"))),
        prefix: s(name.and_then(|n| n.get("prefix"))),
        suffix: s(name.and_then(|n| n.get("suffix"))),
        nickname: s(b.get("nickName")),
        file_as: s(b.get("fileAs")),
        emails: arr("emailAddresses")
            .iter()
            .map(|e| schema::Email {
                address: s(e.get("address")),
                kind: s(e.get("type")),
                label: None,
                primary: None,
                display_name: s(e.get("name")),
            })
            .collect(),
        phones: arr("phoneNumbers")
            .iter()
            .map(|e| schema::Phone {
                number: s(e.get("number")),
                kind: s(e.get("type")),
                label: None,
                primary: None,
                uri: None,
            })
            .collect(),
        addresses: arr("addresses")
            .iter()
            .map(|e| {
                let street = match (s(e.get("street")), s(e.get("streetLine2"))) {
                    (Some(a), Some(b)) => Some(format!("{a}\n{b}")),
                    (a, b) => a.or(b),
                };
                schema::Address {
                    kind: s(e.get("type")),
                    street,
                    po_box: s(e.get("poBox")),
                    city: s(e.get("city")),
                    region: s(e.get("state")),
                    postcode: s(e.get("postalCode")),
                    country: s(e.get("country")),
                    ..Default::default()
                }
            })
            .collect(),
        organizations: company
            .filter(|c| c.is_object())
            .map(|c| {
                vec![schema::Organization {
                    name: s(c.get("name")),
                    title: s(c.get("jobTitle")),
                    department: s(c.get("department")),
                    ..Default::default()
                }]
            })
            .unwrap_or_default(),
        websites: arr("urls")
            .iter()
            .map(|e| schema::Website {
                href: s(e.get("href")),
                kind: s(e.get("type")),
                ..Default::default()
            })
            .collect(),
        relations: arr("relations")
            .iter()
            .map(|e| schema::Relation {
                name: s(e.get("name")),
                kind: s(e.get("type")),
                label: None,
            })
            .collect(),
        notes: s(b.get("notes")),
        birthday: s(b.get("birthday")),
        groups: arr("keywords")
            .iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        native: b
            .get("nativeProperties")
            .filter(|v| !v.is_null())
            .map(|v| v.to_string()),
        ..Default::default()
    }
}

/// Routes of the Aurinko emulator.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/contacts/sync", post(sync_start))
        .route("/v1/contacts/sync/updated", get(sync_updated))
        .route("/v1/contacts/sync/deleted", get(sync_deleted))
        .route("/v1/contacts", post(create))
        .route("/v1/contacts/{id}", get(read).patch(patch).delete(remove))
}

/// An Aurinko error body `{code, message, requestId}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"code": code, "message": message, "requestId": uuid::Uuid::new_v4().to_string()}))).into_response()
}

// Handlers answer errors as ready responses; boxing them would only add noise.
#[allow(clippy::result_large_err)]
fn account_of(store: &AurinkoStore, headers: &HeaderMap) -> Result<String, Response> {
    let unauthorized = || error_response(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized");
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    if let Some(t) = h.strip_prefix("Bearer ") {
        let acct = t
            .strip_prefix(&format!("{}-", store.token))
            .ok_or_else(|| {
                error_response(StatusCode::UNAUTHORIZED, "token.dead", "Not authorized")
            })?;
        return if store.accounts.contains_key(acct) {
            Ok(acct.to_string())
        } else {
            Err(error_response(
                StatusCode::UNAUTHORIZED,
                "token.dead",
                "Not authorized",
            ))
        };
    }
    if let Some(b) = h.strip_prefix("Basic ") {
        let creds = base64::engine::general_purpose::STANDARD
            .decode(b)
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(unauthorized)?;
        if creds != format!("emulator:{}", store.token) {
            return Err(unauthorized());
        }
        let acct = headers
            .get("X-Aurinko-Account-Id")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                error_response(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "X-Aurinko-Account-Id header is required with app credentials",
                )
            })?;
        return if store.accounts.contains_key(acct) {
            Ok(acct.to_string())
        } else {
            Err(error_response(
                StatusCode::UNAUTHORIZED,
                "token.dead",
                "Not authorized",
            ))
        };
    }
    Err(unauthorized())
}

async fn sync_start(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    s.count("aurinko.sync.start");
    let now = s.clock.now_ms();
    let mut store = s.aurinko.lock().unwrap();
    let acct = match account_of(&store, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let ready_after = store.ready_after;
    let (epoch, instance) = (store.epoch, store.instance);
    let a = store.accounts.get_mut(&acct).unwrap();
    a.sync_calls += 1;
    if a.sync_calls <= ready_after {
        return axum::Json(json!({"ready": false})).into_response();
    }
    let u = enc(&Tok {
        a: acct.clone(),
        s: "u".into(),
        q: 0,
        h: None,
        e: epoch,
        i: instance,
        t: now,
    });
    let d = enc(&Tok {
        a: acct.clone(),
        s: "d".into(),
        q: a.seq,
        h: None,
        e: epoch,
        i: instance,
        t: now,
    });
    axum::Json(json!({"syncUpdatedToken": u, "syncDeletedToken": d, "ready": true})).into_response()
}

#[derive(Deserialize)]
struct SyncQuery {
    #[serde(rename = "deltaToken")]
    delta_token: Option<String>,
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
}

async fn sync_updated(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<SyncQuery>,
) -> Response {
    s.count("aurinko.sync.updated");
    sync_page(&s, &headers, q, "u")
}

async fn sync_deleted(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<SyncQuery>,
) -> Response {
    s.count("aurinko.sync.deleted");
    sync_page(&s, &headers, q, "d")
}

fn sync_page(s: &Shared, headers: &HeaderMap, q: SyncQuery, stream: &str) -> Response {
    let now = s.clock.now_ms();
    let store = s.aurinko.lock().unwrap();
    let acct = match account_of(&store, headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let (tok, is_page) = match (&q.page_token, &q.delta_token) {
        (Some(p), _) => (dec(p), true),
        (None, Some(d)) => (dec(d), false),
        (None, None) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "badRequest",
                "deltaToken or pageToken is required",
            );
        }
    };
    let Some(tok) = tok.filter(|t| t.a == acct && t.s == stream && t.h.is_some() == is_page) else {
        return if is_page {
            error_response(
                StatusCode::BAD_REQUEST,
                "token.notValid",
                "Page token is invalid",
            )
        } else {
            error_response(
                StatusCode::BAD_REQUEST,
                "token.notValid",
                "Delta token is invalid",
            )
        };
    };
    if tok.i != store.instance
        || tok.e != store.epoch
        || store.token_ttl_ms.is_some_and(|ttl| now - tok.t > ttl)
    {
        return error_response(StatusCode::GONE, "syncToken.expired", "syncToken expired.");
    }
    let a = &store.accounts[&acct];
    let hi = tok.h.unwrap_or(a.seq);
    // Nothing new when the token is already at the high-water mark.
    let after = tok.q.min(hi);
    let mut records = Vec::new();
    let mut last = after;
    let mut more = false;
    if stream == "u" {
        for (seq, id) in a.by_seq.range((
            std::ops::Bound::Excluded(after),
            std::ops::Bound::Included(hi),
        )) {
            if records.len() == store.page_size {
                more = true;
                break;
            }
            records.push(store.render(id, &a.contacts[id]));
            last = *seq;
        }
    } else {
        for (seq, (id, ts)) in a.deletes.range((
            std::ops::Bound::Excluded(after),
            std::ops::Bound::Included(hi),
        )) {
            if records.len() == store.page_size {
                more = true;
                break;
            }
            records.push(json!({"id": id, "timestamp": ms_to_iso(*ts)}));
            last = *seq;
        }
    }
    let mut body = Map::new();
    if more {
        body.insert(
            "nextPageToken".into(),
            json!(enc(&Tok {
                a: acct.clone(),
                s: stream.into(),
                q: last,
                h: Some(hi),
                e: store.epoch,
                i: store.instance,
                t: now
            })),
        );
    } else {
        body.insert(
            "nextDeltaToken".into(),
            json!(enc(&Tok {
                a: acct.clone(),
                s: stream.into(),
                q: hi,
                h: None,
                e: store.epoch,
                i: store.instance,
                t: now
            })),
        );
    }
    body.insert("length".into(), json!(records.len()));
    body.insert("records".into(), Value::Array(records));
    axum::Json(Value::Object(body)).into_response()
}

async fn read(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    s.count("aurinko.get");
    let store = s.aurinko.lock().unwrap();
    let acct = match account_of(&store, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match store.accounts[&acct].contacts.get(&id) {
        Some(c) => axum::Json(store.render(&id, c)).into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "The record could not be found",
        ),
    }
}

#[allow(clippy::result_large_err)]
fn parse_body(body: &Bytes) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut m)) => {
            for k in READ_ONLY {
                m.remove(*k);
            }
            Ok(m)
        }
        Ok(_) => Err(error_response(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "The body must be a JSON object",
        )),
        Err(e) => Err(error_response(
            StatusCode::BAD_REQUEST,
            "badRequest",
            &format!("Malformed JSON: {e}"),
        )),
    }
}

async fn create(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    s.count("aurinko.create");
    let now = s.clock.now_ms();
    let mut store = s.aurinko.lock().unwrap();
    let acct = match account_of(&store, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let m = match parse_body(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Err(e) = validate(&m) {
        return error_response(StatusCode::BAD_REQUEST, "badRequest", &e);
    }
    let id = store.insert_body(&acct, m, now);
    let c = &store.accounts[&acct].contacts[&id];
    (
        StatusCode::CREATED,
        axum::Json(json!({"id": id, "etag": c.etag, "record": store.render(&id, c)})),
    )
        .into_response()
}

async fn patch(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    s.count("aurinko.patch");
    let now = s.clock.now_ms();
    let mut store = s.aurinko.lock().unwrap();
    let acct = match account_of(&store, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(c) = store.accounts[&acct].contacts.get(&id) else {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "The record could not be found",
        );
    };
    match headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        None if store.require_if_match => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "badRequest",
                "If-Match header is required",
            );
        }
        Some(m) if m != c.etag && m != "*" => {
            return error_response(
                StatusCode::PRECONDITION_FAILED,
                "preconditionFailed",
                "ETag mismatch: the contact changed since it was read",
            );
        }
        _ => {}
    }
    let m = match parse_body(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut merged = c.body.clone();
    for (k, v) in m {
        if v.is_null() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    if let Err(e) = validate(&merged) {
        return error_response(StatusCode::BAD_REQUEST, "badRequest", &e);
    }
    store
        .accounts
        .get_mut(&acct)
        .unwrap()
        .contacts
        .get_mut(&id)
        .unwrap()
        .body = merged;
    store.touch(&acct, &id, now);
    let c = &store.accounts[&acct].contacts[&id];
    axum::Json(json!({"id": id, "etag": c.etag, "record": store.render(&id, c)})).into_response()
}

async fn remove(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    s.count("aurinko.delete");
    let now = s.clock.now_ms();
    let mut store = s.aurinko.lock().unwrap();
    let acct = match account_of(&store, &headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    if !store.accounts[&acct].contacts.contains_key(&id) {
        return error_response(StatusCode::NOT_FOUND, "not_found", "Contact not found");
    }
    store.remove(&acct, &id, now);
    StatusCode::OK.into_response()
}
