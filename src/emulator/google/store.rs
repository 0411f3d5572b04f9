//! The store: the domain's contacts, each with its version, etag and photo, the orders
//! the feed reads them in, the mutations the tests ask for, and the truth they compare
//! with.

use super::*;

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
    pub(super) version: u64,
    pub(super) rendered: Option<String>,
}

/// The Google side's state.
pub struct GoogleStore {
    pub domain: String,
    pub contacts: HashMap<String, GContact>,
    pub(super) order: Option<Vec<String>>,
    /// `(updated, id)` ascending, cached between changes: sorting every contact for
    /// every page made large domains quadratic.
    pub(super) by_updated: Option<std::sync::Arc<Vec<(i64, String)>>>,
    /// Ids written since `by_updated` was built. Write times only grow, so they move to
    /// its end; merging them costs one pass instead of sorting every contact again.
    pub(super) moved: Vec<String>,
    pub(super) people: Generator,
    pub(super) seed: u64,
    pub(super) next_n: u64,
    pub(super) last_ms: i64,
    pub(super) base_url: String,
    pub(super) max_results: usize,
    pub(crate) retention_ms: i64,
    /// When this store was made (emulator time): it keeps no deletion placeholder from
    /// before then, so an `updated-min` older than this (a cursor of an earlier emulator
    /// process) is answered as the real API answers one older than its retention: 410.
    pub(super) born_ms: i64,
    /// This store's instance id, random per emulator: in every etag, since a restarted
    /// emulator's contacts are new versions (their `updated` and links differ).
    pub(crate) instance: u64,
    pub(super) token: String,
    pub(super) oauth_tokens: HashMap<String, i64>,
    pub(super) sa_public_key: Option<String>,
    pub(super) oauth_ttl_secs: i64,
    pub(super) batch_count: u64,
    pub(super) photo_touches_contact: bool,
    pub(super) photo_writes: u64,
    /// Every write operation received and answered, in order (see [`crate::emulator::WriteLog`]).
    pub writes: Vec<crate::emulator::WriteLog>,
    /// Generated contacts sit just under the size limit (see [`EmulatorConfig`]).
    pub(super) near_limit: bool,
}

pub(super) fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

pub(super) fn parse_time_ms(s: &str) -> Option<i64> {
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

impl GoogleStore {
    /// Generates the configured number of contacts.
    pub fn generate(cfg: &EmulatorConfig, base_url: &str, now_ms: i64) -> GoogleStore {
        let mut s = GoogleStore {
            domain: cfg.google_domain.clone(),
            contacts: HashMap::with_capacity(cfg.google_contacts),
            order: None,
            by_updated: None,
            moved: Vec::new(),
            people: Generator::new(cfg.seed).dense(cfg.dense),
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
    pub(super) fn log_write(&mut self, op: &str, id: Option<&str>, status: StatusCode) {
        self.writes.push(crate::emulator::WriteLog {
            op: op.to_string(),
            id: id.map(str::to_string),
            status: status.as_u16(),
        });
    }

    pub(super) fn tick(&mut self, now_ms: i64) -> i64 {
        // Strictly increasing write times, so updated-min never misses a write.
        self.last_ms = now_ms.max(self.last_ms + 1);
        self.last_ms
    }

    pub(super) fn new_id(&mut self) -> String {
        self.next_n += 1;
        let h = hash64(self.seed, &format!("g{}", self.next_n));
        // Variable-length lowercase hex, as real ids are.
        let len = 12 + (h % 5) as usize;
        format!("{h:016x}")[..len].to_string()
    }

    pub(super) fn new_etag(&self, id: &str, version: u64) -> String {
        let h = hash64(self.seed ^ version ^ self.instance, id);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let s: String = (0..16)
            .map(|i| alphabet[((h >> (i * 4)) & 63) as usize ^ (i & 1)] as char)
            .collect();
        format!("\"{s}.\"")
    }

    pub(super) fn insert_person(&mut self, now_ms: i64) -> String {
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

    pub(super) fn store_new(
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
    pub(super) fn moved_id(&mut self, id: &str) {
        if self.by_updated.is_some() {
            self.moved.push(id.to_string());
        }
    }

    /// Every contact as `(updated, id)`, ascending.
    pub(super) fn sorted_by_updated(&mut self) -> std::sync::Arc<Vec<(i64, String)>> {
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

    pub(super) fn touch(&mut self, id: &str, now_ms: i64) {
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

    pub(super) fn delete(&mut self, id: &str, now_ms: i64) {
        self.touch(id, now_ms);
        let c = self.contacts.get_mut(id).unwrap();
        c.deleted_ms = Some(c.updated_ms);
        c.photo = None;
    }

    pub(super) fn purge_tombstones(&mut self, now_ms: i64) {
        let limit = now_ms - self.retention_ms;
        let before = self.contacts.len();
        self.contacts
            .retain(|_, c| c.deleted_ms.is_none_or(|d| d >= limit));
        if self.contacts.len() != before {
            self.order = None;
            self.by_updated = None;
        }
    }

    pub(super) fn live_ids(&self) -> Vec<String> {
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
        // The writes of other users are indexed as they are made, as a server's write
        // path does: the first delta read after a burst of them is not charged for
        // re-sorting the whole domain (6 of a 500-change incremental sync's 58 ms, B4).
        self.sorted_by_updated();
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
    pub(crate) fn record(&self, c: &GContact, base: &str) -> ContactRecord {
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

    pub(super) fn shuffled_order(&mut self) -> &Vec<String> {
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

/// A seeded photo: a JPEG start-of-image marker, 1–8 KB of pseudo-random bytes, and the
/// end marker, so sizes vary and equal bytes mean the same photo.
pub fn photo_bytes(seed: u64, id: &str, version: u64) -> Vec<u8> {
    let mut h = crate::emulator::hash64(seed ^ version.wrapping_mul(0x9E37), id);
    let len = 1024 + (h % 7168) as usize;
    let mut out = Vec::with_capacity(len + 4);
    out.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
    while out.len() < len {
        h = crate::emulator::hash64(h, "p");
        out.extend_from_slice(&h.to_le_bytes());
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}
