//! Rendering as the API writes: a synthetic person as entry content, entries and feed
//! pages (with their paging links), and the error bodies Google sends (HTML, GData XML,
//! plain text).

use super::*;

pub(super) fn rel(k: &Kind, gd_uri: bool) -> (&'static str, String) {
    match k {
        Kind::Rel(r) if gd_uri => ("rel", format!("{GD}#{r}")),
        Kind::Rel(r) => ("rel", r.clone()),
        Kind::Label(l) => ("label", l.clone()),
    }
}

/// Renders a synthetic person as entry content.
pub fn person_to_content(p: &Person, base: &str, domain: &str) -> Vec<El> {
    let mut c = Vec::new();
    push_names(p, &mut c);
    push_channels(p, &mut c);
    push_places(p, &mut c);
    push_links(p, base, domain, &mut c);
    c
}

/// The notes, the name and the single values (nickname, file-as).
fn push_names(p: &Person, c: &mut Vec<El>) {
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
}

/// E-mail addresses, phone numbers and IM addresses.
fn push_channels(p: &Person, c: &mut Vec<El>) {
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
}

/// Postal addresses and organizations.
fn push_places(p: &Person, c: &mut Vec<El>) {
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
}

/// Websites, relations, events, the birthday, extended properties, group memberships
/// user-defined fields and elements in foreign namespaces.
fn push_links(p: &Person, base: &str, domain: &str, c: &mut Vec<El>) {
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
    for x in &p.foreign {
        let nodes = xml::parse_content(x, ATOM).expect("generator XML parses");
        c.extend(nodes.into_iter().filter_map(|n| match n {
            xml::Node::El(e) => Some(e),
            _ => None,
        }));
    }
}

impl GoogleStore {
    pub(super) fn feed_url(&self) -> String {
        format!("{}/m8/feeds/contacts/{}/full", self.base_url, self.domain)
    }

    pub(super) fn render_entry(&self, c: &GContact, projection: &Projection, out: &mut String) {
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

    pub(super) fn entry_xml(&mut self, id: &str, projection: &Projection) -> String {
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

    pub(super) fn standalone_entry(&mut self, id: &str, projection: &Projection) -> String {
        let e = self.entry_xml(id, projection);
        format!(
            "<?xml version='1.0' encoding='UTF-8'?><entry{}{}",
            xml::root_decls(false, false),
            &e["<entry".len()..]
        )
    }
}

pub(super) fn title_of(content: &[El]) -> String {
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
pub(super) enum Projection {
    Full,
    Thin,
    Property(String),
}

impl Projection {
    pub(super) fn parse(s: &str) -> Option<Projection> {
        match s {
            "full" => Some(Projection::Full),
            "thin" | "base" => Some(Projection::Thin),
            _ => s
                .strip_prefix("property-")
                .filter(|k| !k.is_empty())
                .map(|k| Projection::Property(k.to_string())),
        }
    }
    pub(super) fn shows(&self, prop: &str) -> bool {
        match self {
            Projection::Full => true,
            Projection::Thin => false,
            Projection::Property(k) => k == prop,
        }
    }
}

pub(super) fn html_error(status: StatusCode, title: &str) -> Response {
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

pub(super) fn text_error(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        text.to_string(),
    )
        .into_response()
}

pub(super) fn atom(status: StatusCode, kind: &str, body: String) -> Response {
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

/// A feed read's parameters, checked as the API checks them.
struct FeedQuery<'q> {
    max: usize,
    start: usize,
    updated_min: Option<i64>,
    show_deleted: bool,
    require_all_deleted: bool,
    orderby: Option<&'q str>,
    descending: bool,
}

/// The parameters of a feed read, or the API's 400 for the first one it refuses.
fn feed_query<'q>(
    store: &GoogleStore,
    query: &'q [(String, String)],
) -> Result<FeedQuery<'q>, Box<Response>> {
    let q = |k: &str| query.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let bad = |code: &str, reason: &str| {
        Err(Box::new(gdata_error(StatusCode::BAD_REQUEST, code, reason)))
    };
    if q("q").is_some() {
        return bad(
            "unsupportedQueryParam",
            "Full-text search (q) is not supported on the domain shared contacts feed",
        );
    }
    if q("alt").is_some_and(|alt| alt != "atom") {
        return bad(
            "invalidParameterValue",
            "This emulator serves alt=atom only",
        );
    }
    let max = match q("max-results").map(str::parse::<usize>) {
        None => 25,
        Some(Ok(n)) if n >= 1 => n.min(store.max_results),
        _ => {
            return bad(
                "invalidParameterValue",
                "max-results must be a positive integer",
            );
        }
    };
    let start = match q("start-index").map(str::parse::<usize>) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        _ => {
            return bad(
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
                return bad(
                    "invalidParameterValue",
                    &format!("Invalid updated-min: {v}"),
                );
            }
        },
    };
    Ok(FeedQuery {
        max,
        start,
        updated_min,
        show_deleted: q("showdeleted") == Some("true"),
        require_all_deleted: q("requirealldeleted") == Some("true"),
        orderby: q("orderby"),
        descending: q("sortorder") == Some("descending"),
    })
}

/// A page of the feed: checks the query, finds the page's entries and renders them.
pub(super) fn feed(
    store: &mut GoogleStore,
    projection: &Projection,
    query: &[(String, String)],
    now: i64,
) -> Response {
    let fq = match feed_query(store, query) {
        Ok(fq) => fq,
        Err(r) => return *r,
    };
    if fq.show_deleted
        && fq.require_all_deleted
        && let Some(t) = fq.updated_min
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
    let (page, total) = match feed_page(store, &fq) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let out = render_feed(store, projection, query, &fq, &page, total, now);
    atom(StatusCode::OK, "feed", out)
}

/// The ids of the page `fq` asks for, in its order, and how many entries match in all
/// (`totalResults`).
fn feed_page(
    store: &mut GoogleStore,
    fq: &FeedQuery<'_>,
) -> Result<(Vec<String>, usize), Box<Response>> {
    let (max, start) = (fq.max, fq.start);
    let sorted;
    let shuffled;
    let mut range_total = None;
    let ordered: Box<dyn Iterator<Item = &String>> = match fq.orderby {
        Some("lastmodified") | Some("edited") => {
            sorted = store.sorted_by_updated();
            // Everything at or after updated-min is one range of the sorted ids; with
            // deleted entries shown, every id in it matches, so the page is a slice.
            let from = fq
                .updated_min
                .map_or(0, |t| sorted.partition_point(|x| x.0 < t));
            let range = &sorted[from..];
            if fq.show_deleted {
                range_total = Some(range.len());
                let skip = (start - 1).min(range.len());
                let n = max.min(range.len() - skip);
                if fq.descending {
                    let end = range.len() - skip;
                    Box::new(range[end - n..end].iter().rev().map(|x| &x.1))
                } else {
                    Box::new(range[skip..skip + n].iter().map(|x| &x.1))
                }
            } else if fq.descending {
                Box::new(range.iter().rev().map(|x| &x.1))
            } else {
                Box::new(range.iter().map(|x| &x.1))
            }
        }
        Some(other) => {
            return Err(Box::new(gdata_error(
                StatusCode::BAD_REQUEST,
                "invalidParameterValue",
                &format!("Unsupported orderby: {other}"),
            )));
        }
        None => {
            shuffled = store.shuffled_order().clone();
            Box::new(shuffled.iter())
        }
    };
    if let Some(t) = range_total {
        // `ordered` is exactly this page.
        return Ok((ordered.cloned().collect(), t));
    }
    // One pass: count every match (totalResults), keep only this page's ids.
    let mut total = 0;
    let mut page: Vec<String> = Vec::with_capacity(max.min(10_000));
    for id in ordered {
        let c = &store.contacts[id];
        if (fq.show_deleted || c.deleted_ms.is_none())
            && fq.updated_min.is_none_or(|t| c.updated_ms >= t)
        {
            if total >= start - 1 && page.len() < max {
                page.push(id.clone());
            }
            total += 1;
        }
    }
    Ok((page, total))
}

/// The feed document of a page: the feed's own elements, its links (`next` while
/// entries remain), the openSearch counts, and the entries.
fn render_feed(
    store: &mut GoogleStore,
    projection: &Projection,
    query: &[(String, String)],
    fq: &FeedQuery<'_>,
    page: &[String],
    total: usize,
    now: i64,
) -> String {
    let (max, start) = (fq.max, fq.start);
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
    for id in page {
        let e = store.entry_xml(id, projection);
        out.push_str(&e);
    }
    out.push_str("</feed>");
    out
}

pub(super) fn projection_name(p: &Projection) -> String {
    match p {
        Projection::Full => "full".into(),
        Projection::Thin => "thin".into(),
        Projection::Property(k) => format!("property-{k}"),
    }
}

pub(super) fn encode_query(query: &[(String, String)], start: Option<usize>) -> String {
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
