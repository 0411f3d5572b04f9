//! Deterministic synthetic people, realistic and nasty: Unicode (CJK, RTL, emoji), XML
//! special characters, many e-mails and phones with rel or label, multi-line addresses,
//! notes near the 2 KB limit, extended properties, group memberships, photos, and
//! near-empty contacts. Both emulators render these people in their own wire format.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One synthetic person, before any wire format.
#[derive(Debug, Clone, Default)]
pub struct Person {
    pub given: Option<String>,
    pub family: Option<String>,
    pub middle: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub full: Option<String>,
    pub nickname: Option<String>,
    pub file_as: Option<String>,
    /// (address, rel or label, primary, display name)
    pub emails: Vec<(String, Kind, bool, Option<String>)>,
    /// (number, rel or label, primary)
    pub phones: Vec<(String, Kind, bool)>,
    pub addresses: Vec<PostalAddress>,
    /// (address, protocol, rel or label)
    pub ims: Vec<(String, String, Kind)>,
    /// (name, title, department, rel or label)
    pub orgs: Vec<(String, Option<String>, Option<String>, Kind)>,
    /// (href, rel word or label)
    pub websites: Vec<(String, Kind)>,
    /// (name, rel word or label)
    pub relations: Vec<(String, Kind)>,
    /// (start date, rel word or label)
    pub events: Vec<(String, Kind)>,
    pub notes: Option<String>,
    pub birthday: Option<String>,
    pub groups: Vec<String>,
    /// (name, value) or (name, xml)
    pub ext_props: Vec<(String, ExtValue)>,
    pub has_photo: bool,
    /// Held by the server over its 2 KB limit (made before the limit, or by another
    /// client): the server keeps it as it is instead of shortening its notes.
    pub over_limit: bool,
    /// Unknown-to-the-schema element that must survive round trips (Google only).
    pub user_defined: Vec<(String, String)>,
    /// Elements in namespaces no client knows, as XML text (Google only; kept in `raw`).
    pub foreign: Vec<String>,
}

/// A `rel` (short word) or a free-text `label`.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Rel(String),
    Label(String),
}

/// An extended property's payload.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtValue {
    Value(String),
    Xml(String),
}

/// A structured postal address.
#[derive(Debug, Clone, Default)]
pub struct PostalAddress {
    pub kind: Option<Kind>,
    pub primary: bool,
    pub street: Option<String>,
    pub pobox: Option<String>,
    pub neighborhood: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postcode: Option<String>,
    pub country: Option<String>,
    pub formatted: Option<String>,
}

const GIVEN: &[&str] = &[
    "Alice",
    "Bob",
    "Zoë",
    "José",
    "Łukasz",
    "Søren",
    "Chloé",
    "Mar\u{ed}a",
    "李",
    "さくら",
    "Ольга",
    "محمد",
    "דניאל",
    "Nguyễn",
    "O'Neil",
    "Amélie",
    "Björn",
    "Ἀλέξανδρος",
    "Priya",
    "Kwame",
    "Dmitrij",
    "Jürgen",
    "François",
    "Anaïs",
];
const FAMILY: &[&str] = &[
    "Smith",
    "Müller",
    "García",
    "王",
    "田中",
    "Иванова",
    "الحسيني",
    "כהן",
    "Trần",
    "O'Brien",
    "Dupont & Fils",
    "<Script>",
    "van der Berg",
    "Ødegård",
    "Kowalski",
    "Nakamura",
    "Ferreira",
    "Okafor",
    "Schmidt",
    "Rossi",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Zürich", "ZH", "Switzerland"),
    ("São Paulo", "SP", "Brazil"),
    ("東京", "東京都", "Japan"),
    ("Mountain View", "CA", "USA"),
    ("القاهرة", "", "Egypt"),
    ("Kraków", "Małopolska", "Poland"),
    ("Tel Aviv", "", "Israel"),
];
const DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "exämple.net",
    "mail.example.co.uk",
    "corp.example",
];
const PHONE_RELS: &[&str] = &[
    "work",
    "home",
    "mobile",
    "work_mobile",
    "main",
    "fax",
    "other",
    "pager",
];
const LABELS: &[&str] = &["Obsolete", "Après-ski", "Büro \"2\"", "<old>", "家"];
const EMOJI: &[&str] = &["🎉", "👩‍💻", "🇯🇵", "❤️"];

/// A seeded generator of people.
pub struct Generator {
    rng: StdRng,
    dense: bool,
}

impl Generator {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            dense: false,
        }
    }

    /// With `on`, people come with the density real domains show (see
    /// [`Generator::densify`]). Chosen by each person's number, so the random stream, and
    /// every field a plain generator makes, stay as they are.
    pub fn dense(mut self, on: bool) -> Self {
        self.dense = on;
        self
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.rng.random_range(0..xs.len())]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn kind(&mut self, rels: &[&str]) -> Kind {
        if self.chance(0.1) {
            Kind::Label(self.pick(LABELS).to_string())
        } else {
            Kind::Rel(self.pick(rels).to_string())
        }
    }

    /// The next person; `n` makes addresses unique.
    pub fn person(&mut self, n: u64) -> Person {
        let mut p = Person::default();
        // About 3% are near-empty: a single e-mail and nothing else.
        if self.chance(0.03) {
            p.emails.push((
                format!("lonely{n}@{}", self.pick(DOMAINS)),
                Kind::Rel("other".into()),
                false,
                None,
            ));
            return p;
        }
        let (given, family) = self.name(&mut p);
        self.emails_and_phones(n, &given, &family, &mut p);
        self.address(n, &mut p);
        self.im_and_org(n, &given, &mut p);
        self.links_and_dates(n, &mut p);
        self.notes(n, &mut p);
        self.groups_and_properties(n, &mut p);
        if self.dense {
            densify(n, &mut p);
        }
        p
    }

    /// The name parts, nickname and file-as of a person; returns the given and family
    /// names the other fields are made from.
    fn name(&mut self, p: &mut Person) -> (String, String) {
        let given = self.pick(GIVEN).to_string();
        let family = self.pick(FAMILY).to_string();
        p.given = Some(given.clone());
        p.family = Some(family.clone());
        if self.chance(0.2) {
            p.middle = Some(self.pick(GIVEN).to_string());
        }
        if self.chance(0.1) {
            p.prefix = Some("Dr.".into());
        }
        if self.chance(0.05) {
            p.suffix = Some("Jr.".into());
        }
        let emoji = if self.chance(0.05) {
            format!(" {}", self.pick(EMOJI))
        } else {
            String::new()
        };
        p.full = Some(format!("{given} {family}{emoji}"));
        if self.chance(0.2) {
            p.nickname = Some(format!(
                "{}{}",
                &given.chars().take(3).collect::<String>(),
                self.pick(EMOJI)
            ));
        }
        if self.chance(0.1) {
            p.file_as = Some(format!("{family}, {given}"));
        }
        (given, family)
    }

    /// E-mail addresses (now and then many) and phone numbers.
    fn emails_and_phones(&mut self, n: u64, given: &str, family: &str, p: &mut Person) {
        let n_emails = self.rng.random_range(0..4) + usize::from(self.chance(0.02)) * 8;
        for i in 0..n_emails {
            let local: String = given
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_lowercase();
            let local = if local.is_empty() {
                "user".to_string()
            } else {
                local
            };
            let addr = format!("{local}.{n}.{i}@{}", self.pick(DOMAINS));
            let kind = self.kind(&["work", "home", "other"]);
            let dn = if self.chance(0.1) {
                Some(format!("{given} <{family}>"))
            } else {
                None
            };
            p.emails.push((addr, kind, i == 0 && n_emails > 1, dn));
        }
        for i in 0..self.rng.random_range(0..3) {
            let num = format!(
                "+{} {} {:03}-{:04}",
                self.rng.random_range(1..99),
                self.rng.random_range(100..999),
                n % 1000,
                self.rng.random_range(0..9999)
            );
            let kind = self.kind(PHONE_RELS);
            p.phones.push((num, kind, i == 0));
        }
    }

    /// Half of the people get a postal address.
    fn address(&mut self, n: u64, p: &mut Person) {
        if self.chance(0.5) {
            let (city, region, country) = CITIES[self.rng.random_range(0..CITIES.len())];
            let street = if self.chance(0.3) {
                format!("{} Main St\nApt {}", n % 997, n % 13)
            } else {
                format!("{} Rue d'Ève", n % 400)
            };
            p.addresses.push(PostalAddress {
                kind: Some(self.kind(&["work", "home", "other"])),
                primary: self.chance(0.5),
                street: Some(street.clone()),
                pobox: if self.chance(0.1) {
                    Some(format!("PO {}", n % 100))
                } else {
                    None
                },
                neighborhood: None,
                city: Some(city.to_string()),
                region: if region.is_empty() {
                    None
                } else {
                    Some(region.to_string())
                },
                postcode: Some(format!("{:05}", n % 99999)),
                country: Some(country.to_string()),
                formatted: Some(format!("{street}\n{city}\n{country}")),
            });
        }
    }

    /// An IM address and an organization, for some.
    fn im_and_org(&mut self, n: u64, given: &str, p: &mut Person) {
        if self.chance(0.15) {
            p.ims.push((
                format!("{}{n}", given.to_lowercase()),
                "GOOGLE_TALK".into(),
                self.kind(&["work", "home", "other"]),
            ));
        }
        if self.chance(0.6) {
            let name = format!(
                "{} {}",
                self.pick(&["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Ünïcode"]),
                self.pick(&["Inc.", "GmbH", "& Co.", "株式会社", "<Ltd>"])
            );
            let title = if self.chance(0.7) {
                Some(
                    self.pick(&[
                        "Engineer",
                        "CEO",
                        "Sales \"Ninja\"",
                        "Directeur général",
                        "エンジニア",
                    ])
                    .to_string(),
                )
            } else {
                None
            };
            let dept = if self.chance(0.3) {
                Some("R&D".to_string())
            } else {
                None
            };
            p.orgs
                .push((name, title, dept, self.kind(&["work", "other"])));
        }
    }

    /// A website, a relation, an anniversary and a birthday, for some.
    fn links_and_dates(&mut self, n: u64, p: &mut Person) {
        if self.chance(0.2) {
            p.websites.push((
                format!("https://{}/~{n}?a=1&b=2", self.pick(DOMAINS)),
                Kind::Rel(self.pick(&["home-page", "blog", "profile", "work"]).into()),
            ));
        }
        if self.chance(0.1) {
            p.relations.push((
                self.pick(GIVEN).to_string(),
                Kind::Rel(self.pick(&["spouse", "manager", "assistant"]).into()),
            ));
        }
        if self.chance(0.1) {
            p.events.push((
                format!("20{:02}-0{}-1{}", n % 24, 1 + n % 9, n % 10),
                Kind::Rel("anniversary".into()),
            ));
        }
        if self.chance(0.3) {
            p.birthday = Some(if self.chance(0.2) {
                format!("--0{}-1{}", 1 + n % 9, n % 10)
            } else {
                format!("19{:02}-0{}-2{}", 50 + n % 50, 1 + n % 9, n % 10)
            });
        }
    }

    /// Notes: long ones near the data limit, short ones, or none.
    fn notes(&mut self, n: u64, p: &mut Person) {
        if self.chance(0.05) {
            // Near the 2 KB data limit: long notes with specials and newlines.
            let unit = "Notes & <remarks> \"quoted\" 'single' — ünïcödé 字\n";
            let mut s = String::new();
            while s.len() + unit.len() < 1500 {
                s.push_str(unit);
            }
            p.notes = Some(s);
        } else if self.chance(0.3) {
            p.notes = Some(format!(
                "Met at conference #{n}.\nFollow up: <soon> & often."
            ));
        }
    }

    /// Group memberships, extended properties in every shape the API allows (and at its
    /// limits), the photo flag and a user-defined field.
    fn groups_and_properties(&mut self, n: u64, p: &mut Person) {
        for g in 0..self.rng.random_range(0..3) {
            p.groups.push(format!("g{}", (n + g) % 5));
        }
        if self.chance(0.1) {
            p.ext_props
                .push(("crm-id".into(), ExtValue::Value(format!("CRM-{n}"))));
        }
        if self.chance(0.05) {
            p.ext_props.push((
                "sync-info".into(),
                ExtValue::Xml(format!(
                    "<info xmlns=\"urn:example:crm\" rev=\"{n}\">a &amp; b</info>"
                )),
            ));
        }
        // Every shape the API allows inside an extended property, chosen by the contact's
        // number so the random stream (and every other field) stays as it was.
        let shape = match n % 19 {
            3 => Some(format!("plain text payload #{n}")),
            5 => Some(format!(
                "<a xmlns=\"urn:example:x\">{n}</a><b xmlns=\"urn:example:x\" k=\"v\"/>"
            )),
            7 => Some(format!("lead <i xmlns=\"urn:example:x\">{n}</i> tail")),
            9 => Some(format!("<![CDATA[x < y & z #{n}]]>")),
            11 => Some(format!("Fish &amp; Chips &#233; &lt;ok&gt; #{n}")),
            _ => None,
        };
        if let Some(x) = shape {
            p.ext_props
                .push(("legacy.payload".into(), ExtValue::Xml(x)));
        }
        if n % 97 == 13 {
            // Exactly at the API's limit of 10 extended properties.
            p.ext_props.truncate(0);
            for i in 0..10 {
                p.ext_props
                    .push((format!("slot-{i}"), ExtValue::Value(format!("{n}-{i}"))));
            }
        }
        if n % 89 == 17 {
            // Over the 2 KB of contact data that a write may have: the API holds such
            // contacts (made before the limit, or by another client), and an update that
            // does not grow them must still go through.
            let mut s = String::new();
            while s.len() < 2100 {
                s.push_str("Long-standing notes — kept as they are. ");
            }
            p.notes = Some(s);
            p.over_limit = true;
        }
        p.has_photo = self.chance(0.2);
        if self.chance(0.1) {
            p.user_defined.push((
                "Favourite colour".into(),
                self.pick(&["blue", "vert", "赤"]).into(),
            ));
        }
    }

    /// A random index below `n` (for choosing contacts to mutate).
    pub fn index(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    /// A short random word for updates.
    pub fn word(&mut self) -> String {
        format!(
            "{} {}",
            self.pick(&["Updated", "Geändert", "更新", "Mis à jour"]),
            self.rng.random_range(0..1_000_000)
        )
    }

    /// A 64-bit random value.
    pub fn u64(&mut self) -> u64 {
        self.rng.random()
    }
}

/// Words of the long notes real address books hold: many scripts, entities to escape.
const NOTE_WORDS: &[&str] = &[
    "Zürich",
    "東京",
    "北京市",
    "Москва",
    "Αθήνα",
    "القاهرة",
    "मुंबई",
    "São Paulo",
    "Kraków",
    "Reykjavík",
    "İstanbul",
    "данные",
    "クライアント",
    "고객",
    "회의",
    "meeting",
    "follow-up",
    "renewal",
    "invoice",
    "contract",
    "<draft>",
    "R&D",
    "Q3",
    "\"VIP\"",
];

/// What real domains hold beyond the plain generator, measured on an independent server's
/// pages (issue #36): elements in namespaces no client knows on a third of the entries, an
/// XML blob in an extended property on half, long multilingual notes on a quarter, and
/// many e-mails, phones and addresses on a fifth. Each choice follows from `n` alone.
fn densify(n: u64, p: &mut Person) {
    if n.is_multiple_of(3) {
        p.foreign.push(format!(
            "<sf:Contact xmlns:sf=\"http://soap.sforce.example/schemas/class/Contact\" sf:version=\"52\"><sf:AccountId>001{n:012}</sf:AccountId><sf:LeadSource>{}</sf:LeadSource></sf:Contact>",
            xml_text(NOTE_WORDS[n as usize % NOTE_WORDS.len()])
        ));
        p.foreign.push(format!(
            "<x:syncState xmlns:x=\"urn:vendor:sync:meta\" x:rev=\"{}\" x:origin=\"mobile\"/>",
            n % 17
        ));
    }
    if n % 2 == 1 && p.ext_props.len() < 10 {
        p.ext_props.push((
            "crm-sync".into(),
            ExtValue::Xml(format!(
                "<crm:record xmlns:crm=\"urn:example:crm:2019\" id=\"{n}\"><crm:stage>{}</crm:stage><crm:tags><crm:tag>{}</crm:tag><crm:tag>{}</crm:tag></crm:tags></crm:record>",
                ["lead", "customer", "churned"][n as usize % 3],
                xml_text(NOTE_WORDS[n as usize % NOTE_WORDS.len()]),
                xml_text(NOTE_WORDS[(n as usize / 3) % NOTE_WORDS.len()])
            )),
        ));
    }
    if n.is_multiple_of(4) && !p.over_limit {
        let mut s = format!("Notes for contact {n}\n");
        for i in 0..(40 + n % 80) as usize {
            s.push_str(NOTE_WORDS[(n as usize * 7 + i * 13) % NOTE_WORDS.len()]);
            s.push(if i % 12 == 11 { '\n' } else { ' ' });
        }
        p.notes = Some(s);
    }
    if n.is_multiple_of(5) {
        for i in 0..4 {
            p.emails.push((
                format!("dense.{n}.{i}@mail{i}.example.com"),
                Kind::Rel(["work", "home", "other", "work"][i].into()),
                false,
                None,
            ));
        }
        for i in 0..3 {
            p.phones.push((
                format!("+1 555 {:03}-{i:04}", n % 1000),
                Kind::Rel(PHONE_RELS[i % PHONE_RELS.len()].into()),
                false,
            ));
        }
    }
}

/// `s` escaped for XML text.
fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
