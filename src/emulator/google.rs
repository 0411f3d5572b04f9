//! The Google Domain Shared Contacts API (GData v3) emulator: feed paging, queries,
//! deletion placeholders, single-entry writes with ETags, batch, validation, error bodies
//! as Google sends them, and an OAuth2 token endpoint for service-account JWTs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};

use super::data::{ExtValue, Generator, Kind, Person};
use super::xml::{self, APP, ATOM, BATCH, El, GCONTACT, GD};
use super::{EmulatorConfig, MutationSummary, Shared, Truth, hash64};
use crate::model::schema::{self, ContactRecord};

const KIND_SCHEME: &str = "http://schemas.google.com/g/2005#kind";
const CONTACT_KIND: &str = "http://schemas.google.com/contact/2008#contact";
const PHOTO_REL: &str = "http://schemas.google.com/contacts/2008/rel#photo";
const MAX_EXT_PROPS: usize = 10;
const MAX_DATA_BYTES: usize = 2048;
const MAX_BATCH: usize = 100;

/// One stored contact.
#[derive(Debug, Clone)]
pub struct GContact {
    pub id: String,
    pub etag: String,
    pub updated_ms: i64,
    pub deleted_ms: Option<i64>,
    /// The entry's children that the client owns (everything but id, updated, edited,
    /// category, title and links).
    pub content: Vec<El>,
    pub photo: Option<(String, Vec<u8>, String)>,
    version: u64,
    rendered: Option<String>,
}

/// The Google side's state.
pub struct GoogleStore {
    pub domain: String,
    pub contacts: HashMap<String, GContact>,
    order: Option<Vec<String>>,
    /// `(updated, id)` ascending, cached between changes: sorting every contact for
    /// every page made large domains quadratic.
    by_updated: Option<std::sync::Arc<Vec<(i64, String)>>>,
    /// Ids written since `by_updated` was built. Write times only grow, so they move to
    /// its end; merging them costs one pass instead of sorting every contact again.
    moved: Vec<String>,
    people: Generator,
    seed: u64,
    next_n: u64,
    last_ms: i64,
    base_url: String,
    max_results: usize,
    retention_ms: i64,
    /// When this store was made (emulator time): it keeps no deletion placeholder from
    /// before then, so an `updated-min` older than this (a cursor of an earlier emulator
    /// process) is answered as the real API answers one older than its retention: 410.
    born_ms: i64,
    /// This store's instance id, random per emulator: in every etag, since a restarted
    /// emulator's contacts are new versions (their `updated` and links differ).
    instance: u64,
    token: String,
    oauth_tokens: HashMap<String, i64>,
    sa_public_key: Option<String>,
    oauth_ttl_secs: i64,
    batch_count: u64,
    photo_touches_contact: bool,
    photo_writes: u64,
    /// Every write operation received and answered, in order (see [`super::WriteLog`]).
    pub writes: Vec<super::WriteLog>,
    /// Generated contacts sit just under the size limit (see [`EmulatorConfig`]).
    near_limit: bool,
}

fn rel(k: &Kind, gd_uri: bool) -> (&'static str, String) {
    match k {
        Kind::Rel(r) if gd_uri => ("rel", format!("{GD}#{r}")),
        Kind::Rel(r) => ("rel", r.clone()),
        Kind::Label(l) => ("label", l.clone()),
    }
}

fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn parse_time_ms(s: &str) -> Option<i64> {
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_millis());
    }
    // The guide's example has no zone: read it as UTC.
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap())
        })
        .ok()
        .map(|d| d.and_utc().timestamp_millis())
}

/// Renders a synthetic person as entry content.
pub fn person_to_content(p: &Person, base: &str, domain: &str) -> Vec<El> {
    let mut c = Vec::new();
    if let Some(n) = &p.notes {
        c.push(
            El::new(ATOM, "content")
                .attr("type", "text")
                .text(n.clone()),
        );
    }
    let mut name = El::new(GD, "name");
    for (tag, v) in [
        ("givenName", &p.given),
        ("additionalName", &p.middle),
        ("familyName", &p.family),
        ("namePrefix", &p.prefix),
        ("nameSuffix", &p.suffix),
        ("fullName", &p.full),
    ] {
        if let Some(v) = v {
            name = name.child(El::new(GD, tag).text(v.clone()));
        }
    }
    if !name.children.is_empty() {
        c.push(name);
    }
    if let Some(v) = &p.nickname {
        c.push(El::new(GCONTACT, "nickname").text(v.clone()));
    }
    if let Some(v) = &p.file_as {
        c.push(El::new(GCONTACT, "fileAs").text(v.clone()));
    }
    for (addr, k, primary, dn) in &p.emails {
        let (a, v) = rel(k, true);
        let mut e = El::new(GD, "email")
            .attr(a, v)
            .attr("address", addr.clone());
        if *primary {
            e = e.attr("primary", "true");
        }
        if let Some(dn) = dn {
            e = e.attr("displayName", dn.clone());
        }
        c.push(e);
    }
    for (i, (num, k, primary)) in p.phones.iter().enumerate() {
        let (a, v) = rel(k, true);
        let mut e = El::new(GD, "phoneNumber").attr(a, v);
        if *primary {
            e = e.attr("primary", "true");
        }
        if i % 2 == 0 {
            let digits: String = num
                .chars()
                .map(|c| if c == ' ' { '-' } else { c })
                .collect();
            e = e.attr("uri", format!("tel:{digits}"));
        }
        c.push(e.text(num.clone()));
    }
    for (addr, proto, k) in &p.ims {
        let (a, v) = rel(k, true);
        c.push(
            El::new(GD, "im")
                .attr("address", addr.clone())
                .attr("protocol", format!("{GD}#{proto}"))
                .attr(a, v),
        );
    }
    for ad in &p.addresses {
        let mut e = El::new(GD, "structuredPostalAddress");
        if let Some(k) = &ad.kind {
            let (a, v) = rel(k, true);
            e = e.attr(a, v);
        }
        if ad.primary {
            e = e.attr("primary", "true");
        }
        for (tag, v) in [
            ("street", &ad.street),
            ("pobox", &ad.pobox),
            ("neighborhood", &ad.neighborhood),
            ("city", &ad.city),
            ("region", &ad.region),
            ("postcode", &ad.postcode),
            ("country", &ad.country),
            ("formattedAddress", &ad.formatted),
        ] {
            if let Some(v) = v {
                e = e.child(El::new(GD, tag).text(v.clone()));
            }
        }
        c.push(e);
    }
    for (name, title, dept, k) in &p.orgs {
        let (a, v) = rel(k, true);
        let mut e = El::new(GD, "organization")
            .attr(a, v)
            .child(El::new(GD, "orgName").text(name.clone()));
        if let Some(t) = title {
            e = e.child(El::new(GD, "orgTitle").text(t.clone()));
        }
        if let Some(d) = dept {
            e = e.child(El::new(GD, "orgDepartment").text(d.clone()));
        }
        c.push(e);
    }
    for (href, k) in &p.websites {
        let (a, v) = rel(k, false);
        c.push(
            El::new(GCONTACT, "website")
                .attr("href", href.clone())
                .attr(a, v),
        );
    }
    for (name, k) in &p.relations {
        let (a, v) = rel(k, false);
        c.push(El::new(GCONTACT, "relation").attr(a, v).text(name.clone()));
    }
    for (start, k) in &p.events {
        let (a, v) = rel(k, false);
        c.push(
            El::new(GCONTACT, "event")
                .attr(a, v)
                .child(El::new(GD, "when").attr("startTime", start.clone())),
        );
    }
    if let Some(b) = &p.birthday {
        c.push(El::new(GCONTACT, "birthday").attr("when", b.clone()));
    }
    for (name, v) in &p.ext_props {
        let e = El::new(GD, "extendedProperty").attr("name", name.clone());
        c.push(match v {
            ExtValue::Value(v) => e.attr("value", v.clone()),
            ExtValue::Xml(x) => El {
                children: xml::parse_content(x, ATOM).expect("generator XML parses"),
                ..e
            },
        });
    }
    for g in &p.groups {
        c.push(
            El::new(GCONTACT, "groupMembershipInfo")
                .attr("deleted", "false")
                .attr("href", format!("{base}/m8/feeds/groups/{domain}/base/{g}")),
        );
    }
    for (k, v) in &p.user_defined {
        c.push(
            El::new(GCONTACT, "userDefinedField")
                .attr("key", k.clone())
                .attr("value", v.clone()),
        );
    }
    c
}

impl GoogleStore {
    /// Generates the configured number of contacts.
    pub fn generate(cfg: &EmulatorConfig, base_url: &str, now_ms: i64) -> GoogleStore {
        let mut s = GoogleStore {
            domain: cfg.google_domain.clone(),
            contacts: HashMap::with_capacity(cfg.google_contacts),
            order: None,
            by_updated: None,
            moved: Vec::new(),
            people: Generator::new(cfg.seed),
            seed: cfg.seed,
            next_n: 0,
            last_ms: now_ms - 1000 * cfg.google_contacts as i64 - 86_400_000,
            base_url: base_url.to_string(),
            max_results: cfg.google_max_results.max(1),
            retention_ms: cfg.tombstone_retention_secs * 1000,
            born_ms: now_ms,
            instance: rand::random(),
            token: cfg.token.clone(),
            oauth_tokens: HashMap::new(),
            sa_public_key: cfg.service_account_public_key.clone(),
            oauth_ttl_secs: cfg.oauth_token_ttl_secs,
            batch_count: 0,
            photo_touches_contact: cfg.photo_touches_contact,
            photo_writes: 0,
            writes: Vec::new(),
            near_limit: cfg.google_near_limit,
        };
        for _ in 0..cfg.google_contacts {
            // Spread history over the past: one contact per second, ending a day ago.
            let t = s.last_ms + 1000;
            s.insert_person(t);
        }
        s
    }

    /// Logs one write operation answered with `status`.
    fn log_write(&mut self, op: &str, id: Option<&str>, status: StatusCode) {
        self.writes.push(super::WriteLog {
            op: op.to_string(),
            id: id.map(str::to_string),
            status: status.as_u16(),
        });
    }

    fn tick(&mut self, now_ms: i64) -> i64 {
        // Strictly increasing write times, so updated-min never misses a write.
        self.last_ms = now_ms.max(self.last_ms + 1);
        self.last_ms
    }

    fn new_id(&mut self) -> String {
        self.next_n += 1;
        let h = hash64(self.seed, &format!("g{}", self.next_n));
        // Variable-length lowercase hex, as real ids are.
        let len = 12 + (h % 5) as usize;
        format!("{h:016x}")[..len].to_string()
    }

    fn new_etag(&self, id: &str, version: u64) -> String {
        let h = hash64(self.seed ^ version ^ self.instance, id);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let s: String = (0..16)
            .map(|i| alphabet[((h >> (i * 4)) & 63) as usize ^ (i & 1)] as char)
            .collect();
        format!("\"{s}.\"")
    }

    fn insert_person(&mut self, now_ms: i64) -> String {
        let n = self.next_n;
        let p = self.people.person(n);
        let id = self.new_id();
        let mut p = p;
        let mut content = person_to_content(&p, &self.base_url, &self.domain);
        // A server holds few contacts over its own limit: shorten long notes until the
        // contact fits, with room left for edits, except for those seeded as held over it.
        while !p.over_limit
            && contact_data(&content) > MAX_DATA_BYTES - 150
            && let Some(n) = p.notes.as_mut().filter(|n| !n.is_empty())
        {
            let mut cut = n.len().saturating_sub(200);
            while !n.is_char_boundary(cut) {
                cut -= 1;
            }
            n.truncate(cut);
            content = person_to_content(&p, &self.base_url, &self.domain);
        }
        if self.near_limit {
            // Notes that bring the contact to a few units under the limit, as this server
            // counts them (none ending in a space, which the count trims).
            p.over_limit = false;
            p.notes = None;
            let base = contact_data(&person_to_content(&p, &self.base_url, &self.domain));
            let target = MAX_DATA_BYTES - 2 - (n % 6) as usize;
            let filler = "Near the limit, by the server's count. ";
            let want = target.saturating_sub(base + "text".len());
            let mut notes: String = filler.chars().cycle().take(want.max(8) - 1).collect();
            notes.push('.');
            p.notes = Some(notes);
            content = person_to_content(&p, &self.base_url, &self.domain);
        }
        let photo = p.has_photo.then(|| {
            (
                self.new_etag(&id, 999),
                photo_bytes(self.seed, &id, 0),
                "image/jpeg".to_string(),
            )
        });
        let t = self.tick(now_ms);
        self.store_new(id.clone(), content, t, photo);
        id
    }

    fn store_new(
        &mut self,
        id: String,
        content: Vec<El>,
        t: i64,
        photo: Option<(String, Vec<u8>, String)>,
    ) {
        let etag = self.new_etag(&id, 1);
        self.moved_id(&id);
        self.contacts.insert(
            id.clone(),
            GContact {
                id,
                etag,
                updated_ms: t,
                deleted_ms: None,
                content,
                photo,
                version: 1,
                rendered: None,
            },
        );
        self.order = None;
    }

    /// Notes that `id` was written: it leaves its place in `by_updated` for the end.
    fn moved_id(&mut self, id: &str) {
        if self.by_updated.is_some() {
            self.moved.push(id.to_string());
        }
    }

    /// Every contact as `(updated, id)`, ascending.
    fn sorted_by_updated(&mut self) -> std::sync::Arc<Vec<(i64, String)>> {
        if let Some(cached) = &mut self.by_updated
            && !self.moved.is_empty()
        {
            let moved: HashSet<&str> = self.moved.iter().map(String::as_str).collect();
            let mut tail: Vec<(i64, String)> = moved
                .iter()
                .filter_map(|id| self.contacts.get(*id).map(|c| (c.updated_ms, c.id.clone())))
                .collect();
            tail.sort();
            let v = std::sync::Arc::make_mut(cached);
            v.retain(|(_, id)| !moved.contains(id.as_str()));
            let in_order = match (v.last(), tail.first()) {
                (Some(a), Some(b)) => a < b,
                _ => true,
            };
            if in_order {
                v.extend(tail);
            } else {
                self.by_updated = None;
            }
            self.moved.clear();
        }
        if self.by_updated.is_none() {
            self.moved.clear();
            let mut v: Vec<(i64, String)> = self
                .contacts
                .values()
                .map(|c| (c.updated_ms, c.id.clone()))
                .collect();
            v.sort();
            self.by_updated = Some(std::sync::Arc::new(v));
        }
        self.by_updated.clone().unwrap()
    }

    fn touch(&mut self, id: &str, now_ms: i64) {
        self.moved_id(id);
        let t = self.tick(now_ms);
        let c = self.contacts.get_mut(id).unwrap();
        c.version += 1;
        c.updated_ms = t;
        c.rendered = None;
        let v = c.version;
        let etag = self.new_etag(id, v);
        self.contacts.get_mut(id).unwrap().etag = etag;
    }

    fn delete(&mut self, id: &str, now_ms: i64) {
        self.touch(id, now_ms);
        let c = self.contacts.get_mut(id).unwrap();
        c.deleted_ms = Some(c.updated_ms);
        c.photo = None;
    }

    fn purge_tombstones(&mut self, now_ms: i64) {
        let limit = now_ms - self.retention_ms;
        let before = self.contacts.len();
        self.contacts
            .retain(|_, c| c.deleted_ms.is_none_or(|d| d >= limit));
        if self.contacts.len() != before {
            self.order = None;
            self.by_updated = None;
        }
    }

    fn live_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .contacts
            .values()
            .filter(|c| c.deleted_ms.is_none())
            .map(|c| c.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Random inserts, updates and deletes.
    pub fn mutate(
        &mut self,
        inserts: usize,
        updates: usize,
        deletes: usize,
        now_ms: i64,
    ) -> MutationSummary {
        let mut out = MutationSummary::default();
        for _ in 0..inserts {
            out.inserted.push(self.insert_person(now_ms));
        }
        let mut live = self.live_ids();
        for _ in 0..updates.min(live.len()) {
            let id = live.swap_remove(self.people.index(live.len()));
            let word = self.people.word();
            let c = self.contacts.get_mut(&id).unwrap();
            c.content.retain(|e| !e.is(ATOM, "content"));
            c.content
                .insert(0, El::new(ATOM, "content").attr("type", "text").text(word));
            let phone = format!("+1 555 {:04}", self.people.index(10_000));
            self.contacts.get_mut(&id).unwrap().content.push(
                El::new(GD, "phoneNumber")
                    .attr("rel", format!("{GD}#mobile"))
                    .text(phone),
            );
            self.touch(&id, now_ms);
            out.updated.push(id);
        }
        for _ in 0..deletes.min(live.len()) {
            let id = live.swap_remove(self.people.index(live.len()));
            self.delete(&id, now_ms);
            out.deleted.push(id);
        }
        out
    }

    /// Live contacts and placeholder ids, as the emulator reads them.
    pub fn truth(&self, base: &str) -> Truth {
        let mut contacts: Vec<ContactRecord> = self
            .contacts
            .values()
            .filter(|c| c.deleted_ms.is_none())
            .map(|c| self.record(c, base))
            .collect();
        contacts.sort_by(|a, b| a.id.cmp(&b.id));
        let mut deleted: Vec<String> = self
            .contacts
            .values()
            .filter(|c| c.deleted_ms.is_some())
            .map(|c| c.id.clone())
            .collect();
        deleted.sort();
        Truth { contacts, deleted }
    }

    /// How the emulator would read `entry` (a client's update) once stored: parsed and
    /// validated by the server's rules, then read in the unified schema. Identity and
    /// server-side fields (id, etag, updated, photo) are left empty.
    pub fn read_written_entry(&self, entry: &str) -> Result<ContactRecord, String> {
        let el = parse_entry(entry.as_bytes())?;
        let content = content_of(&el);
        // As an update of a contact that held the same: the rules of each element apply,
        // the limits that depend on what is held do not.
        validate(&content, Some(&content)).map_err(|OpError(_, _, m)| m)?;
        let c = GContact {
            id: String::new(),
            etag: String::new(),
            updated_ms: 0,
            deleted_ms: None,
            content,
            photo: None,
            version: 0,
            rendered: None,
        };
        let mut r = self.record(&c, &self.base_url);
        (r.etag, r.updated, r.photo) = (None, None, None);
        Ok(r)
    }

    /// The emulator's own reading of a stored contact in the unified schema.
    fn record(&self, c: &GContact, base: &str) -> ContactRecord {
        let txt = |e: Option<&El>| e.map(El::text_content).filter(|s| !s.is_empty());
        let attr = |e: &El, n: &str| e.get(n).map(str::to_string).filter(|s| !s.is_empty());
        let short = |e: &El| {
            e.get("rel")
                .map(|r| r.rsplit('#').next().unwrap_or(r).to_string())
        };
        let primary = |e: &El| Some(e.get("primary") == Some("true"));
        let mut r = ContactRecord {
            account: self.domain.clone(),
            id: c.id.clone(),
            etag: Some(c.etag.clone()),
            updated: Some(c.updated_ms * 1000),
            ..Default::default()
        };
        for e in &c.content {
            match (e.ns.as_str(), e.name.as_str()) {
                (ATOM, "content") => r.notes = txt(Some(e)),
                (GD, "name") => {
                    r.given_name = txt(e.find(GD, "givenName"));
                    r.family_name = txt(e.find(GD, "familyName"));
                    r.middle_name = txt(e.find(GD, "additionalName"));
                    r.prefix = txt(e.find(GD, "namePrefix"));
                    r.suffix = txt(e.find(GD, "nameSuffix"));
                    r.display_name = txt(e.find(GD, "fullName"));
                }
                (GCONTACT, "nickname") => r.nickname = txt(Some(e)),
                (GCONTACT, "fileAs") => r.file_as = txt(Some(e)),
                (GD, "email") => r.emails.push(schema::Email {
                    address: attr(e, "address"),
                    kind: short(e),
                    label: attr(e, "label"),
                    primary: primary(e),
                    display_name: attr(e, "displayName"),
                }),
                (GD, "phoneNumber") => r.phones.push(schema::Phone {
                    number: txt(Some(e)),
                    kind: short(e),
                    label: attr(e, "label"),
                    primary: primary(e),
                    uri: attr(e, "uri"),
                }),
                (GD, "im") => r.ims.push(schema::Im {
                    address: attr(e, "address"),
                    protocol: e
                        .get("protocol")
                        .map(|p| p.rsplit('#').next().unwrap_or(p).to_string()),
                    kind: short(e),
                    label: attr(e, "label"),
                    primary: primary(e),
                }),
                (GD, "structuredPostalAddress") => r.addresses.push(schema::Address {
                    kind: short(e),
                    label: attr(e, "label"),
                    primary: primary(e),
                    street: txt(e.find(GD, "street")),
                    po_box: txt(e.find(GD, "pobox")),
                    neighborhood: txt(e.find(GD, "neighborhood")),
                    city: txt(e.find(GD, "city")),
                    region: txt(e.find(GD, "region")),
                    postcode: txt(e.find(GD, "postcode")),
                    country: txt(e.find(GD, "country")),
                    formatted: txt(e.find(GD, "formattedAddress")),
                }),
                (GD, "postalAddress") => r.addresses.push(schema::Address {
                    kind: short(e),
                    label: attr(e, "label"),
                    primary: primary(e),
                    formatted: txt(Some(e)),
                    ..Default::default()
                }),
                (GD, "organization") => r.organizations.push(schema::Organization {
                    name: txt(e.find(GD, "orgName")),
                    title: txt(e.find(GD, "orgTitle")),
                    department: txt(e.find(GD, "orgDepartment")),
                    kind: short(e),
                    label: attr(e, "label"),
                    primary: primary(e),
                }),
                (GCONTACT, "website") => r.websites.push(schema::Website {
                    href: attr(e, "href"),
                    kind: short(e),
                    label: attr(e, "label"),
                    primary: primary(e),
                }),
                (GCONTACT, "relation") => r.relations.push(schema::Relation {
                    name: txt(Some(e)),
                    kind: short(e),
                    label: attr(e, "label"),
                }),
                (GCONTACT, "event") => r.events.push(schema::Event {
                    kind: short(e),
                    label: attr(e, "label"),
                    start: e.find(GD, "when").and_then(|w| attr(w, "startTime")),
                }),
                (GCONTACT, "birthday") => r.birthday = attr(e, "when"),
                (GCONTACT, "groupMembershipInfo") if e.get("deleted") != Some("true") => {
                    r.groups.extend(attr(e, "href"))
                }
                (GD, "extendedProperty") => r.extended_properties.push(schema::ExtendedProperty {
                    name: attr(e, "name"),
                    value: e.get("value").map(str::to_string),
                    xml: ext_xml(e),
                }),
                _ => {}
            }
        }
        r.photo = Some(schema::Photo {
            href: Some(format!(
                "{base}/m8/feeds/photos/media/{}/{}",
                self.domain, c.id
            )),
            etag: c.photo.as_ref().map(|p| p.0.clone()),
        });
        r
    }

    fn feed_url(&self) -> String {
        format!("{}/m8/feeds/contacts/{}/full", self.base_url, self.domain)
    }

    fn render_entry(&self, c: &GContact, projection: &Projection, out: &mut String) {
        let feed = self.feed_url();
        out.push_str("<entry gd:etag=\"");
        xml::esc(&c.etag, out);
        out.push_str("\"><id>");
        out.push_str(&format!(
            "{}/m8/feeds/contacts/{}/base/{}",
            self.base_url, self.domain, c.id
        ));
        let t = ms_to_rfc3339(c.updated_ms);
        out.push_str(&format!("</id><updated>{t}</updated><app:edited>{t}</app:edited><category scheme=\"{KIND_SCHEME}\" term=\"{CONTACT_KIND}\"/>"));
        if c.deleted_ms.is_some() {
            out.push_str("<title/>");
        } else {
            let title = title_of(&c.content);
            if title.is_empty() {
                out.push_str("<title/>");
            } else {
                out.push_str("<title>");
                xml::esc(&title, out);
                out.push_str("</title>");
            }
        }
        let content_first = c.content.iter().filter(|e| e.is(ATOM, "content"));
        for e in content_first {
            xml::write(e, out, ATOM);
        }
        out.push_str(&format!(
            "<link rel=\"{PHOTO_REL}\" type=\"image/*\" href=\"{}/m8/feeds/photos/media/{}/{}\"",
            self.base_url, self.domain, c.id
        ));
        if let Some((etag, _, _)) = &c.photo {
            out.push_str(" gd:etag=\"");
            xml::esc(etag, out);
            out.push('"');
        }
        out.push_str(&format!("/><link rel=\"self\" type=\"application/atom+xml\" href=\"{feed}/{id}\"/><link rel=\"edit\" type=\"application/atom+xml\" href=\"{feed}/{id}\"/>", id = c.id));
        if c.deleted_ms.is_some() {
            out.push_str("<gd:deleted/>");
            for g in c
                .content
                .iter()
                .filter(|e| e.is(GCONTACT, "groupMembershipInfo"))
            {
                let mut g = g.clone();
                g.attrs.retain(|a| a.1 != "deleted");
                g.attrs
                    .insert(0, (String::new(), "deleted".into(), "true".into()));
                xml::write(&g, out, ATOM);
            }
        } else {
            for e in c.content.iter().filter(|e| !e.is(ATOM, "content")) {
                if e.is(GD, "extendedProperty") && !projection.shows(e.get("name").unwrap_or("")) {
                    continue;
                }
                xml::write(e, out, ATOM);
            }
        }
        out.push_str("</entry>");
    }

    fn entry_xml(&mut self, id: &str, projection: &Projection) -> String {
        if matches!(projection, Projection::Full)
            && let Some(r) = &self.contacts[id].rendered
        {
            return r.clone();
        }
        let mut s = String::new();
        self.render_entry(&self.contacts[id], projection, &mut s);
        if matches!(projection, Projection::Full) {
            self.contacts.get_mut(id).unwrap().rendered = Some(s.clone());
        }
        s
    }

    fn standalone_entry(&mut self, id: &str, projection: &Projection) -> String {
        let e = self.entry_xml(id, projection);
        format!(
            "<?xml version='1.0' encoding='UTF-8'?><entry{}{}",
            xml::root_decls(false, false),
            &e["<entry".len()..]
        )
    }

    fn shuffled_order(&mut self) -> &Vec<String> {
        if self.order.is_none() {
            let mut ids: Vec<(u64, String)> = self
                .contacts
                .keys()
                .map(|id| (hash64(self.seed ^ 0x5eed, id), id.clone()))
                .collect();
            ids.sort();
            self.order = Some(ids.into_iter().map(|(_, id)| id).collect());
        }
        self.order.as_ref().unwrap()
    }
}

fn title_of(content: &[El]) -> String {
    let Some(name) = content.iter().find(|e| e.is(GD, "name")) else {
        return String::new();
    };
    if let Some(f) = name.find(GD, "fullName") {
        return f.text_content();
    }
    let parts: Vec<String> = ["givenName", "familyName"]
        .iter()
        .filter_map(|t| name.find(GD, t).map(El::text_content))
        .collect();
    parts.join(" ")
}

#[derive(Debug, Clone)]
enum Projection {
    Full,
    Thin,
    Property(String),
}

impl Projection {
    fn parse(s: &str) -> Option<Projection> {
        match s {
            "full" => Some(Projection::Full),
            "thin" | "base" => Some(Projection::Thin),
            _ => s
                .strip_prefix("property-")
                .filter(|k| !k.is_empty())
                .map(|k| Projection::Property(k.to_string())),
        }
    }
    fn shows(&self, prop: &str) -> bool {
        match self {
            Projection::Full => true,
            Projection::Thin => false,
            Projection::Property(k) => k == prop,
        }
    }
}

/// Routes of the Google emulator.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/m8/feeds/{*rest}", any(handle))
        .route("/token", post(token_endpoint))
}

fn html_error(status: StatusCode, title: &str) -> Response {
    let body = format!(
        "<HTML>\n<HEAD>\n<TITLE>{title}</TITLE>\n</HEAD>\n<BODY BGCOLOR=\"#FFFFFF\" TEXT=\"#000000\">\n<H1>{title}</H1>\n<H2>Error {}</H2>\n</BODY>\n</HTML>\n",
        status.as_u16()
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
        body,
    )
        .into_response()
}

/// A GData XML error body.
pub fn gdata_error(status: StatusCode, code: &str, reason: &str) -> Response {
    let mut r = String::new();
    xml::esc(reason, &mut r);
    let body = format!(
        "<errors xmlns='http://schemas.google.com/g/2005'><error><domain>GData</domain><code>{code}</code><internalReason>{r}</internalReason></error></errors>"
    );
    (
        status,
        [(
            header::CONTENT_TYPE,
            "application/vnd.google.gdata.error+xml",
        )],
        body,
    )
        .into_response()
}

fn text_error(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        text.to_string(),
    )
        .into_response()
}

fn atom(status: StatusCode, kind: &str, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            format!("application/atom+xml; charset=UTF-8; type={kind}"),
        )],
        body,
    )
        .into_response()
}

fn query_pairs(req: &Request) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn authorized(store: &mut GoogleStore, headers: &HeaderMap, now_ms: i64) -> bool {
    let Some(h) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if let Some(t) = h.strip_prefix("Bearer ") {
        if t == store.token {
            return true;
        }
        return store.oauth_tokens.get(t).is_some_and(|exp| *exp > now_ms);
    }
    if let Some(t) = h.strip_prefix("GoogleLogin auth=") {
        return t == store.token;
    }
    false
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    // From the first byte of the body to the finished response, waiting for the store's
    // lock included: the emulator's own handling time, which B5 compares with `apply`.
    let started = std::time::Instant::now();
    let now = s.clock.now_ms();
    let method = req.method().clone();
    let headers = req.headers().clone();
    let query = query_pairs(&req);
    let path = req.uri().path().to_string();
    let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(b) => b,
        Err(_) => {
            return text_error(
                StatusCode::BAD_REQUEST,
                "Request body too large or unreadable",
            );
        }
    };
    let segs: Vec<&str> = path
        .trim_start_matches("/m8/feeds/")
        .split('/')
        .filter(|x| !x.is_empty())
        .collect();
    let mut store = s.google.lock().unwrap();
    if !authorized(&mut store, &headers, now) {
        s.count("google.unauthorized");
        return html_error(
            StatusCode::UNAUTHORIZED,
            "Token invalid - Invalid token: Token not found",
        );
    }
    let version_ok = headers
        .get("GData-Version")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
                .unwrap_or(0)
                >= 3
        })
        .unwrap_or_else(|| query.iter().any(|(k, v)| k == "v" && v.starts_with('3')));
    if !version_ok {
        s.count("google.bad_version");
        return gdata_error(
            StatusCode::BAD_REQUEST,
            "versionNotSupported",
            "This emulator serves GData-Version 3.0 only: send the header GData-Version: 3.0",
        );
    }
    let method = match (
        method,
        headers
            .get("X-HTTP-Method-Override")
            .and_then(|v| v.to_str().ok()),
    ) {
        (Method::POST, Some(m)) => match m.to_ascii_uppercase().as_str() {
            "PUT" => Method::PUT,
            "DELETE" => Method::DELETE,
            "PATCH" => Method::PATCH,
            _ => Method::POST,
        },
        (m, _) => m,
    };
    match segs.as_slice() {
        ["contacts", domain, rest @ ..] => {
            if *domain != store.domain {
                s.count("google.wrong_domain");
                return html_error(
                    StatusCode::FORBIDDEN,
                    &format!("Cannot request contacts belonging to another domain ({domain})."),
                );
            }
            let Some(projection) = rest.first().and_then(|p| Projection::parse(p)) else {
                return gdata_error(
                    StatusCode::BAD_REQUEST,
                    "invalidParameterValue",
                    "Invalid projection: use full, thin or property-KEY",
                );
            };
            store.purge_tombstones(now);
            match (&method, &rest[1..]) {
                (&Method::GET, []) => {
                    s.count("google.feed");
                    feed(&mut store, &projection, &query, now)
                }
                (&Method::POST, []) => {
                    s.count("google.insert");
                    let resp = insert_one(&mut store, &projection, &body, now);
                    store.log_write("insert", None, resp.status());
                    resp
                }
                (&Method::POST, ["batch"]) => {
                    s.count("google.batch");
                    // Deterministic: a rate r interrupts r of all batches, evenly spread
                    // (0.5 = every second one).
                    let rate = s.faults.spec().batch_interrupt;
                    let n = store.batch_count;
                    store.batch_count += 1;
                    let interrupt =
                        rate > 0.0 && ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor();
                    let resp = batch(&mut store, &projection, &headers, &body, now, interrupt);
                    s.add("google.batch.us", started.elapsed().as_micros() as u64);
                    resp
                }
                (&Method::GET, [id]) => {
                    s.count("google.get");
                    match store.contacts.get(*id) {
                        Some(c) if c.deleted_ms.is_none() => {
                            if let Some(inm) = headers
                                .get(header::IF_NONE_MATCH)
                                .and_then(|v| v.to_str().ok())
                                && inm == c.etag
                            {
                                return StatusCode::NOT_MODIFIED.into_response();
                            }
                            atom(
                                StatusCode::OK,
                                "entry",
                                store.standalone_entry(id, &projection),
                            )
                        }
                        _ => gdata_error(
                            StatusCode::NOT_FOUND,
                            "notFound",
                            &format!("Contact not found: {id}"),
                        ),
                    }
                }
                (&Method::PUT, [id]) => {
                    s.count("google.update");
                    let resp = update_one(&mut store, id, &projection, &headers, &body, now);
                    store.log_write("update", Some(id), resp.status());
                    resp
                }
                (&Method::DELETE, [id]) => {
                    s.count("google.delete");
                    let if_match = headers
                        .get(header::IF_MATCH)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let resp = match delete(&mut store, id, if_match.as_deref(), None, now) {
                        Ok(()) => StatusCode::OK.into_response(),
                        Err(OpError(st, code, reason)) => op_error_response(st, code, &reason),
                    };
                    store.log_write("delete", Some(id), resp.status());
                    resp
                }
                _ => gdata_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "methodNotAllowed",
                    "Method not allowed on this URL",
                ),
            }
        }
        ["photos", "media", domain, id] => {
            if *domain != store.domain {
                return html_error(
                    StatusCode::FORBIDDEN,
                    &format!("Cannot request contacts belonging to another domain ({domain})."),
                );
            }
            s.count("google.photo");
            let resp = photo(&mut store, &method, id, &headers, &body, now);
            match method {
                Method::PUT => store.log_write("photo_put", Some(id), resp.status()),
                Method::DELETE => store.log_write("photo_delete", Some(id), resp.status()),
                _ => {}
            }
            resp
        }
        _ => gdata_error(StatusCode::NOT_FOUND, "notFound", "No such feed"),
    }
}

/// A single update (PUT of one entry).
fn update_one(
    store: &mut GoogleStore,
    id: &str,
    projection: &Projection,
    headers: &HeaderMap,
    body: &Bytes,
    now: i64,
) -> Response {
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match parse_entry(body) {
        Ok(entry) => match update(store, id, projection, &entry, if_match.as_deref(), now) {
            Ok(()) => atom(
                StatusCode::OK,
                "entry",
                store.standalone_entry(id, projection),
            ),
            Err(OpError(st, code, reason)) => op_error_response(st, code, &reason),
        },
        Err(e) => text_error(StatusCode::BAD_REQUEST, &e),
    }
}

fn op_error_response(st: StatusCode, code: &str, reason: &str) -> Response {
    if st == StatusCode::BAD_REQUEST {
        text_error(st, reason)
    } else {
        gdata_error(st, code, reason)
    }
}

/// A seeded photo: a JPEG start-of-image marker, 1–8 KB of pseudo-random bytes, and the
/// end marker, so sizes vary and equal bytes mean the same photo.
pub fn photo_bytes(seed: u64, id: &str, version: u64) -> Vec<u8> {
    let mut h = super::hash64(seed ^ version.wrapping_mul(0x9E37), id);
    let len = 1024 + (h % 7168) as usize;
    let mut out = Vec::with_capacity(len + 4);
    out.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
    while out.len() < len {
        h = super::hash64(h, "p");
        out.extend_from_slice(&h.to_le_bytes());
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

fn photo(
    store: &mut GoogleStore,
    method: &Method,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
    now: i64,
) -> Response {
    let Some(c) = store.contacts.get(id).filter(|c| c.deleted_ms.is_none()) else {
        return gdata_error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("Contact not found: {id}"),
        );
    };
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    match *method {
        Method::GET => match &c.photo {
            Some((etag, bytes, ct)) => (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, ct.clone()),
                    (header::ETAG, etag.clone()),
                ],
                bytes.clone(),
            )
                .into_response(),
            None => gdata_error(StatusCode::NOT_FOUND, "notFound", "Photo not found"),
        },
        Method::PUT | Method::DELETE => {
            let current = c.photo.as_ref().map(|p| p.0.clone());
            // If-None-Match: * = "only if there is no photo yet" (a conflict-safe add).
            if if_match.is_none() && if_none_match == Some("*") {
                if current.is_some() {
                    return gdata_error(
                        StatusCode::PRECONDITION_FAILED,
                        "etagsMismatch",
                        "Etags mismatch: the contact already has a photo",
                    );
                }
            } else {
                match (if_match, &current) {
                    (Some("*"), _) => {}
                    (Some(m), Some(e)) if m == e => {}
                    (None, Some(_)) => {
                        return gdata_error(
                            StatusCode::FORBIDDEN,
                            "matchHeaderRequired",
                            "If-Match or If-None-Match header required",
                        );
                    }
                    (Some(_), _) => {
                        return gdata_error(
                            StatusCode::PRECONDITION_FAILED,
                            "etagsMismatch",
                            "Etags mismatch",
                        );
                    }
                    (None, None) => {}
                }
            }
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if *method == Method::PUT && !ct.starts_with("image/") {
                return text_error(
                    StatusCode::BAD_REQUEST,
                    "Photo content type must be image/*",
                );
            }
            store.photo_writes += 1;
            let v = store.contacts[id].version + 1000 + store.photo_writes;
            let new = (*method == Method::PUT).then(|| (store.new_etag(id, v), body.to_vec(), ct));
            let etag = new.as_ref().map(|n| n.0.clone());
            let c = store.contacts.get_mut(id).unwrap();
            c.photo = new;
            c.rendered = None;
            if store.photo_touches_contact {
                store.touch(id, now);
            }
            match etag {
                Some(e) => (StatusCode::OK, [(header::ETAG, e)]).into_response(),
                None => StatusCode::OK.into_response(),
            }
        }
        _ => gdata_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "methodNotAllowed",
            "Method not allowed",
        ),
    }
}

fn feed(
    store: &mut GoogleStore,
    projection: &Projection,
    query: &[(String, String)],
    now: i64,
) -> Response {
    let q = |k: &str| query.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    if q("q").is_some() {
        return gdata_error(
            StatusCode::BAD_REQUEST,
            "unsupportedQueryParam",
            "Full-text search (q) is not supported on the domain shared contacts feed",
        );
    }
    if let Some(alt) = q("alt")
        && alt != "atom"
    {
        return gdata_error(
            StatusCode::BAD_REQUEST,
            "invalidParameterValue",
            "This emulator serves alt=atom only",
        );
    }
    let max = match q("max-results").map(str::parse::<usize>) {
        None => 25,
        Some(Ok(n)) if n >= 1 => n.min(store.max_results),
        _ => {
            return gdata_error(
                StatusCode::BAD_REQUEST,
                "invalidParameterValue",
                "max-results must be a positive integer",
            );
        }
    };
    let start = match q("start-index").map(str::parse::<usize>) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        _ => {
            return gdata_error(
                StatusCode::BAD_REQUEST,
                "invalidParameterValue",
                "start-index must be a positive integer",
            );
        }
    };
    let updated_min = match q("updated-min") {
        None => None,
        Some(v) => match parse_time_ms(v) {
            Some(t) => Some(t),
            None => {
                return gdata_error(
                    StatusCode::BAD_REQUEST,
                    "invalidParameterValue",
                    &format!("Invalid updated-min: {v}"),
                );
            }
        },
    };
    let show_deleted = q("showdeleted") == Some("true");
    if show_deleted
        && q("requirealldeleted") == Some("true")
        && let Some(t) = updated_min
        && (t < now - store.retention_ms || t < store.born_ms)
    {
        return text_error(
            StatusCode::GONE,
            "Gone: some deletion placeholders older than updated-min are no longer kept. Do a full sync.",
        );
    }
    // Writes are stamped strictly increasing, so a burst of them runs ahead of the wall
    // clock; the server's time is never behind its own stamps, or a client resuming from
    // this feed's <updated> would be handed the burst's tail again.
    let now = now.max(store.last_ms);
    let sorted;
    let shuffled;
    let mut range_total = None;
    let ordered: Box<dyn Iterator<Item = &String>> = match q("orderby") {
        Some("lastmodified") | Some("edited") => {
            sorted = store.sorted_by_updated();
            // Everything at or after updated-min is one range of the sorted ids; with
            // deleted entries shown, every id in it matches, so the page is a slice.
            let from = updated_min.map_or(0, |t| sorted.partition_point(|x| x.0 < t));
            let range = &sorted[from..];
            let desc = q("sortorder") == Some("descending");
            if show_deleted {
                range_total = Some(range.len());
                let skip = (start - 1).min(range.len());
                let n = max.min(range.len() - skip);
                if desc {
                    let end = range.len() - skip;
                    Box::new(range[end - n..end].iter().rev().map(|x| &x.1))
                } else {
                    Box::new(range[skip..skip + n].iter().map(|x| &x.1))
                }
            } else if desc {
                Box::new(range.iter().rev().map(|x| &x.1))
            } else {
                Box::new(range.iter().map(|x| &x.1))
            }
        }
        Some(other) => {
            return gdata_error(
                StatusCode::BAD_REQUEST,
                "invalidParameterValue",
                &format!("Unsupported orderby: {other}"),
            );
        }
        None => {
            shuffled = store.shuffled_order().clone();
            Box::new(shuffled.iter())
        }
    };
    // One pass: count every match (totalResults), keep only this page's ids.
    let mut total = 0;
    let mut page: Vec<String> = Vec::with_capacity(max.min(10_000));
    if let Some(t) = range_total {
        // `ordered` is exactly this page.
        page.extend(ordered.cloned());
        total = t;
    } else {
        for id in ordered {
            let c = &store.contacts[id];
            if (show_deleted || c.deleted_ms.is_none())
                && updated_min.is_none_or(|t| c.updated_ms >= t)
            {
                if total >= start - 1 && page.len() < max {
                    page.push(id.clone());
                }
                total += 1;
            }
        }
    }
    let feed_url = store.feed_url();
    let self_q = encode_query(query, None);
    let mut out = String::with_capacity(2048 + page.len() * 1500);
    out.push_str("<?xml version='1.0' encoding='UTF-8'?><feed");
    out.push_str(&xml::root_decls(true, true));
    let fe = format!("W/\"{:x}.\"", hash64(now as u64, &store.domain));
    out.push_str(" gd:etag=\"");
    xml::esc(&fe, &mut out);
    out.push_str("\">");
    out.push_str(&format!("<id>{}</id><updated>{}</updated><category scheme=\"{KIND_SCHEME}\" term=\"{CONTACT_KIND}\"/>", store.domain, ms_to_rfc3339(now)));
    out.push_str(&format!("<title>{}'s Contacts</title><link rel=\"alternate\" type=\"text/html\" href=\"http://www.google.com/\"/>", store.domain));
    out.push_str(&format!("<link rel=\"http://schemas.google.com/g/2005#feed\" type=\"application/atom+xml\" href=\"{feed_url}\"/><link rel=\"http://schemas.google.com/g/2005#post\" type=\"application/atom+xml\" href=\"{feed_url}\"/><link rel=\"http://schemas.google.com/g/2005#batch\" type=\"application/atom+xml\" href=\"{feed_url}/batch\"/>"));
    let this_url = format!(
        "{}/m8/feeds/contacts/{}/{}",
        store.base_url,
        store.domain,
        projection_name(projection)
    );
    out.push_str("<link rel=\"self\" type=\"application/atom+xml\" href=\"");
    xml::esc(&format!("{this_url}{self_q}"), &mut out);
    out.push_str("\"/>");
    if start - 1 + page.len() < total {
        let next_q = encode_query(query, Some(start + max));
        out.push_str("<link rel=\"next\" type=\"application/atom+xml\" href=\"");
        xml::esc(&format!("{this_url}{next_q}"), &mut out);
        out.push_str("\"/>");
    }
    out.push_str(&format!("<author><name>(unknown)</name><email>{}</email></author><generator version=\"1.0\" uri=\"http://www.google.com/m8/feeds\">Contacts</generator>", store.domain));
    out.push_str(&format!("<openSearch:totalResults>{total}</openSearch:totalResults><openSearch:startIndex>{start}</openSearch:startIndex><openSearch:itemsPerPage>{max}</openSearch:itemsPerPage>"));
    for id in &page {
        let e = store.entry_xml(id, projection);
        out.push_str(&e);
    }
    out.push_str("</feed>");
    atom(StatusCode::OK, "feed", out)
}

fn projection_name(p: &Projection) -> String {
    match p {
        Projection::Full => "full".into(),
        Projection::Thin => "thin".into(),
        Projection::Property(k) => format!("property-{k}"),
    }
}

fn encode_query(query: &[(String, String)], start: Option<usize>) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    let mut had_start = false;
    for (k, v) in query {
        if k == "start-index" {
            had_start = true;
            ser.append_pair(
                k,
                &start.map(|s| s.to_string()).unwrap_or_else(|| v.clone()),
            );
        } else {
            ser.append_pair(k, v);
        }
    }
    if !had_start && let Some(s) = start {
        ser.append_pair("start-index", &s.to_string());
    }
    let s = ser.finish();
    if s.is_empty() { s } else { format!("?{s}") }
}

/// A failed operation: status, GData code, reason.
struct OpError(StatusCode, &'static str, String);

fn parse_entry(body: &[u8]) -> Result<El, String> {
    let el = xml::parse(body).map_err(|e| format!("[Line 1, Column 0] Parse error: {e}"))?;
    if !el.is(ATOM, "entry") {
        return Err(format!(
            "[Line 1, Column 0] Expected an Atom entry, found {}",
            el.name
        ));
    }
    Ok(el)
}

/// The client-owned children of an entry.
fn content_of(entry: &El) -> Vec<El> {
    entry
        .elements()
        .filter(|e| {
            !(e.ns == ATOM
                && matches!(
                    e.name.as_str(),
                    "id" | "updated" | "category" | "title" | "link" | "author"
                ))
        })
        .filter(|e| !e.is(APP, "edited") && !e.is(GD, "deleted") && e.ns != BATCH)
        .cloned()
        .collect()
}

/// The `xml` column of an extended property as the emulator knows it: its content
/// serialized as written on the wire, whitespace around elements trimmed, null when blank
/// (the documented rule of `schemas/contacts.v1.json`).
fn ext_xml(e: &El) -> Option<String> {
    let mut s = String::new();
    xml::write_content(e, &mut s, ATOM);
    if s.trim().is_empty() {
        None
    } else if s.contains('<') {
        Some(s.trim().to_string())
    } else {
        Some(s)
    }
}

/// The "contact data" the size limit counts, as this server counts it: characters (not
/// bytes) of text and attribute values, without the `rel` URIs and `primary` flags. It is
/// deliberately not the client's estimate: Google does not document its count, so a
/// client can only guess near the limit and must leave the decision to the server.
fn contact_data(content: &[El]) -> usize {
    fn one(e: &El) -> usize {
        e.attrs
            .iter()
            .filter(|a| !matches!(a.1.as_str(), "rel" | "primary"))
            .map(|a| a.2.chars().count())
            .sum::<usize>()
            + e.children
                .iter()
                .map(|c| match c {
                    xml::Node::Text(t) | xml::Node::CData(t) => t.trim().chars().count(),
                    xml::Node::El(e) => one(e),
                })
                .sum::<usize>()
    }
    content.iter().map(one).sum()
}

/// Checks a contact's content. `before` is the content the server holds for an update:
/// a count or size limit that the contact already exceeded is not enforced against a
/// change that does not make it worse (the server accepts what it holds).
fn validate(content: &[El], before: Option<&[El]>) -> Result<(), OpError> {
    let bad = |m: String| Err(OpError(StatusCode::BAD_REQUEST, "invalid", m));
    for e in content {
        if e.ns == GD
            && matches!(
                e.name.as_str(),
                "email"
                    | "im"
                    | "organization"
                    | "phoneNumber"
                    | "structuredPostalAddress"
                    | "postalAddress"
            )
        {
            let has_rel = e.get("rel").is_some_and(|v| !v.is_empty());
            let has_label = e.get("label").is_some_and(|v| !v.is_empty());
            if has_rel == has_label {
                return bad(format!(
                    "[Line 1, Column 0, element gd:{}] Exactly one of rel or label is required.",
                    e.name
                ));
            }
        }
        if (e.is(GD, "email") || e.is(GD, "im")) && e.get("address").is_none_or(str::is_empty) {
            return bad(format!(
                "[Line 1, Column 0, element gd:{}] gd:{}/@address is required.",
                e.name, e.name
            ));
        }
        if e.is(GD, "extendedProperty") {
            if e.get("name").is_none_or(str::is_empty) {
                return bad("[Line 1, Column 0, element gd:extendedProperty] gd:extendedProperty/@name is required.".into());
            }
            // Content is an XML blob or, as the API allows, plain text.
            let has_content = e.children.iter().any(|c| match c {
                xml::Node::Text(t) => !t.trim().is_empty(),
                _ => true,
            });
            if e.get("value").is_some() && has_content {
                return bad("[Line 1, Column 0, element gd:extendedProperty] g:extendedProperty/@value and XML are mutually exclusive".into());
            }
        }
    }
    let count = |c: &[El]| c.iter().filter(|e| e.is(GD, "extendedProperty")).count();
    let size = |c: &[El]| contact_data(c);
    let props = count(content);
    if props > MAX_EXT_PROPS && before.is_none_or(|b| props > count(b)) {
        return bad(format!(
            "Too many extended properties: {props}; at most {MAX_EXT_PROPS} are allowed per contact."
        ));
    }
    let bytes = size(content);
    if bytes > MAX_DATA_BYTES && before.is_none_or(|b| bytes > size(b)) {
        return bad(format!(
            "Contact data is {bytes} bytes; at most {MAX_DATA_BYTES} bytes are allowed per contact."
        ));
    }
    Ok(())
}

fn insert_content(
    store: &mut GoogleStore,
    projection: &Projection,
    entry: &El,
    now: i64,
) -> Result<String, OpError> {
    let mut content = content_of(entry);
    if matches!(projection, Projection::Thin) {
        content.retain(|e| !e.is(GD, "extendedProperty"));
    }
    validate(&content, None)?;
    let id = store.new_id();
    let t = store.tick(now);
    store.store_new(id.clone(), content, t, None);
    Ok(id)
}

fn insert_one(
    store: &mut GoogleStore,
    projection: &Projection,
    body: &Bytes,
    now: i64,
) -> Response {
    let entry = match parse_entry(body) {
        Ok(e) => e,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, &e),
    };
    match insert_content(store, projection, &entry, now) {
        Ok(id) => atom(
            StatusCode::CREATED,
            "entry",
            store.standalone_entry(&id, projection),
        ),
        Err(OpError(st, code, r)) => op_error_response(st, code, &r),
    }
}

fn check_etag(
    c: &GContact,
    if_match: Option<&str>,
    body_etag: Option<&str>,
) -> Result<(), OpError> {
    match if_match.or(body_etag) {
        None => Err(OpError(
            StatusCode::FORBIDDEN,
            "matchHeaderRequired",
            "If-Match or If-None-Match header or entry etag attribute required".into(),
        )),
        Some("*") => Ok(()),
        Some(e) if e == c.etag => Ok(()),
        Some(_) => Err(OpError(
            StatusCode::PRECONDITION_FAILED,
            "etagsMismatch",
            "Etags mismatch".into(),
        )),
    }
}

fn short_id(s: &str) -> &str {
    s.trim_end_matches('/').rsplit('/').next().unwrap_or(s)
}

fn update(
    store: &mut GoogleStore,
    id: &str,
    projection: &Projection,
    entry: &El,
    if_match: Option<&str>,
    now: i64,
) -> Result<(), OpError> {
    let Some(c) = store.contacts.get(id).filter(|c| c.deleted_ms.is_none()) else {
        return Err(OpError(
            StatusCode::NOT_FOUND,
            "notFound",
            format!("Contact not found: {id}"),
        ));
    };
    if let Some(eid) = entry.find(ATOM, "id").map(El::text_content)
        && short_id(&eid) != id
    {
        return Err(OpError(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("Entry id {eid} does not match the URL's contact {id}"),
        ));
    }
    check_etag(c, if_match, entry.get_ns(GD, "etag"))?;
    let mut content = content_of(entry);
    let old_props: Vec<El> = c
        .content
        .iter()
        .filter(|e| e.is(GD, "extendedProperty"))
        .cloned()
        .collect();
    match projection {
        Projection::Full => {}
        Projection::Thin => {
            content.retain(|e| !e.is(GD, "extendedProperty"));
            content.extend(old_props);
        }
        Projection::Property(k) => {
            content.retain(|e| !e.is(GD, "extendedProperty") || e.get("name") == Some(k));
            content.extend(old_props.into_iter().filter(|e| e.get("name") != Some(k)));
        }
    }
    validate(&content, Some(&c.content))?;
    store.contacts.get_mut(id).unwrap().content = content;
    store.touch(id, now);
    Ok(())
}

fn delete(
    store: &mut GoogleStore,
    id: &str,
    if_match: Option<&str>,
    body_etag: Option<&str>,
    now: i64,
) -> Result<(), OpError> {
    let Some(c) = store.contacts.get(id).filter(|c| c.deleted_ms.is_none()) else {
        return Err(OpError(
            StatusCode::NOT_FOUND,
            "notFound",
            format!("Contact not found: {id}"),
        ));
    };
    check_etag(c, if_match, body_etag)?;
    store.delete(id, now);
    Ok(())
}

fn batch(
    store: &mut GoogleStore,
    projection: &Projection,
    headers: &HeaderMap,
    body: &Bytes,
    now: i64,
    interrupt: bool,
) -> Response {
    let feed = match xml::parse(body) {
        Ok(f) if f.is(ATOM, "feed") => f,
        Ok(f) => {
            return text_error(
                StatusCode::BAD_REQUEST,
                &format!("[Line 1, Column 0] Expected a batch feed, found {}", f.name),
            );
        }
        Err(e) => {
            return text_error(
                StatusCode::BAD_REQUEST,
                &format!("[Line 1, Column 0] Parse error: {e}"),
            );
        }
    };
    let entries: Vec<&El> = feed.find_all(ATOM, "entry").collect();
    if entries.len() > MAX_BATCH {
        return text_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "A batch request may hold at most {MAX_BATCH} operations; this one has {}.",
                entries.len()
            ),
        );
    }
    let default_op = feed
        .find(BATCH, "operation")
        .and_then(|o| o.get("type"))
        .unwrap_or("insert")
        .to_string();
    let force = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) == Some("*");
    let stop_at = if interrupt && entries.len() > 1 {
        entries.len() / 2
    } else {
        entries.len()
    };
    let mut out = String::new();
    out.push_str("<?xml version='1.0' encoding='UTF-8'?><feed");
    out.push_str(&xml::root_decls(true, true));
    out.push_str(&format!(
        "><id>{}/batch/{now}</id><updated>{}</updated><title>Batch Feed</title>",
        store.feed_url(),
        ms_to_rfc3339(now)
    ));
    let (mut ok, mut failed) = (0usize, 0usize);
    for entry in entries.iter().take(stop_at) {
        let op = entry
            .find(BATCH, "operation")
            .and_then(|o| o.get("type"))
            .unwrap_or(&default_op)
            .to_string();
        let bid = entry.find(BATCH, "id").map(El::text_content);
        let target = entry
            .find(ATOM, "id")
            .map(|e| short_id(&e.text_content()).to_string());
        let if_match = force.then_some("*");
        let result: Result<(u16, &str, Option<String>), OpError> = match op.as_str() {
            "insert" => {
                insert_content(store, projection, entry, now).map(|id| (201, "Created", Some(id)))
            }
            "update" => match &target {
                Some(id) => update(store, id, projection, entry, if_match, now)
                    .map(|_| (200, "Success", Some(id.clone()))),
                None => Err(OpError(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "update needs an atom:id".into(),
                )),
            },
            "delete" => match &target {
                Some(id) => delete(store, id, if_match, entry.get_ns(GD, "etag"), now)
                    .map(|_| (200, "Success", None)),
                None => Err(OpError(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "delete needs an atom:id".into(),
                )),
            },
            "query" => match &target {
                Some(id)
                    if store
                        .contacts
                        .get(id)
                        .is_some_and(|c| c.deleted_ms.is_none()) =>
                {
                    Ok((200, "Success", Some(id.clone())))
                }
                Some(id) => Err(OpError(
                    StatusCode::NOT_FOUND,
                    "notFound",
                    format!("Contact not found: {id}"),
                )),
                None => Err(OpError(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "query needs an atom:id".into(),
                )),
            },
            other => Err(OpError(
                StatusCode::BAD_REQUEST,
                "invalidBatchOperationType",
                format!("Unknown batch operation {other}"),
            )),
        };
        if ["insert", "update", "delete"].contains(&op.as_str()) {
            let (id, status) = match &result {
                Ok((code, _, id)) => (id.clone().or(target.clone()), *code),
                Err(OpError(st, _, _)) => (target.clone(), st.as_u16()),
            };
            store.writes.push(super::WriteLog {
                op: op.clone(),
                id,
                status,
            });
        }
        let mut tail = String::new();
        if let Some(b) = &bid {
            tail.push_str("<batch:id>");
            xml::esc(b, &mut tail);
            tail.push_str("</batch:id>");
        }
        tail.push_str(&format!(
            "<batch:operation type=\"{}\"/>",
            if ["insert", "update", "delete", "query"].contains(&op.as_str()) {
                op.as_str()
            } else {
                "insert"
            }
        ));
        match result {
            Ok((code, reason, id)) => {
                ok += 1;
                tail.push_str(&format!(
                    "<batch:status code=\"{code}\" reason=\"{reason}\"/>"
                ));
                match id {
                    Some(id) => {
                        let e = store.entry_xml(&id, projection);
                        out.push_str(&e[..e.len() - "</entry>".len()]);
                        out.push_str(&tail);
                        out.push_str("</entry>");
                    }
                    None => {
                        out.push_str("<entry>");
                        if let Some(t) = &target {
                            out.push_str(&format!(
                                "<id>{}/m8/feeds/contacts/{}/base/{t}</id>",
                                store.base_url, store.domain
                            ));
                        }
                        out.push_str(&tail);
                        out.push_str("</entry>");
                    }
                }
            }
            Err(OpError(st, _code, reason)) => {
                failed += 1;
                out.push_str("<entry>");
                if let Some(t) = &target {
                    out.push_str(&format!(
                        "<id>{}/m8/feeds/contacts/{}/base/{t}</id>",
                        store.base_url, store.domain
                    ));
                }
                tail.push_str(&format!("<batch:status code=\"{}\" reason=\"", st.as_u16()));
                xml::esc(&reason, &mut tail);
                tail.push_str("\"/>");
                out.push_str(&tail);
                out.push_str("<title>Error</title></entry>");
            }
        }
    }
    if stop_at < entries.len() {
        out.push_str(&format!("<batch:interrupted reason=\"emulated interruption\" parsed=\"{}\" success=\"{ok}\" failures=\"{failed}\" unprocessed=\"{}\"/>", entries.len(), entries.len() - stop_at));
    }
    out.push_str("</feed>");
    atom(StatusCode::OK, "feed", out)
}

#[derive(serde::Deserialize)]
struct JwtClaims {
    iss: String,
    sub: Option<String>,
    scope: String,
    aud: String,
    exp: i64,
    iat: i64,
}

async fn token_endpoint(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    s.count("google.token");
    let now = s.clock.now_ms();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let fail = |desc: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "invalid_grant", "error_description": desc})),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}))).into_response();
    }
    let Some(assertion) = form.get("assertion") else {
        return fail("Missing assertion");
    };
    let mut store = s.google.lock().unwrap();
    let Some(pem) = store.sa_public_key.clone() else {
        return fail("No service account is configured on this emulator");
    };
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()) else {
        return fail("Bad configured public key");
    };
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<JwtClaims>(assertion, &key, &v) {
        Ok(d) => d.claims,
        Err(e) => return fail(&format!("Invalid JWT Signature: {e}")),
    };
    let now_s = now / 1000;
    if claims.exp <= now_s || claims.iat > now_s + 300 || claims.exp - claims.iat > 3600 {
        return fail(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe",
        );
    }
    let expected_aud = format!("{}/token", s.base_url);
    if claims.aud != expected_aud {
        return fail(&format!("Invalid JWT: aud must be {expected_aud}"));
    }
    if !claims.scope.split(' ').any(|sc| {
        sc == "https://www.google.com/m8/feeds" || sc == "https://www.google.com/m8/feeds/contacts"
    }) {
        return fail("Invalid scope: the contacts feed needs https://www.google.com/m8/feeds");
    }
    if claims.iss.is_empty() || claims.sub.as_deref().is_none_or(|s| !s.contains('@')) {
        return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"error": "unauthorized_client", "error_description": "Client is unauthorized to retrieve access tokens using this method: sub must name an administrator"}))).into_response();
    }
    let token = format!("ya29.emu-{:016x}", hash64(now as u64, assertion));
    let ttl = store.oauth_ttl_secs;
    store.oauth_tokens.insert(token.clone(), now + ttl * 1000);
    axum::Json(serde_json::json!({"access_token": token, "expires_in": store.oauth_ttl_secs, "token_type": "Bearer"})).into_response()
}
