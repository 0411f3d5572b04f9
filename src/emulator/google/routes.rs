//! The routes: axum routes for the feed, one entry, the batch and the photos, behind one
//! gate (authorization, GData version, `X-HTTP-Method-Override`), and the OAuth2 token
//! endpoint.

use super::*;

use axum::extract::{FromRequest, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::routing::get;

/// Routes of the Google emulator: one axum route per URL of the API, each handler behind
/// the [`Gate`].
pub fn routes() -> Router<Arc<Shared>> {
    const FEED: &str = "/m8/feeds/contacts/{domain}/{projection}";
    let feed = || get(get_feed).post(post_feed).fallback(not_allowed);
    Router::new()
        .route(FEED, feed())
        .route(&format!("{FEED}/"), feed())
        .route(&format!("{FEED}/batch"), any(batch_or_entry))
        .route(&format!("{FEED}/{{id}}"), any(entry))
        .route(&format!("{FEED}/{{id}}/{{*more}}"), any(not_allowed))
        .route("/m8/feeds/contacts/{domain}", any(not_allowed))
        .route("/m8/feeds/photos/media/{domain}/{id}", any(photo_route))
        .route("/m8/feeds/{*rest}", any(no_such_feed))
        .route("/token", post(token_endpoint))
}

/// What every request to the feeds passes first, as Google checks it: the caller is
/// authorized and asks for GData 3. It carries what the handlers need of the request:
/// its time, its query, and its method as `X-HTTP-Method-Override` makes it.
pub(super) struct Gate {
    now: i64,
    query: Vec<(String, String)>,
    method: Method,
    /// When handling began: the emulator's own handling time, waits for the store's
    /// lock included, is what the batch counter adds up.
    started: std::time::Instant,
}

impl FromRequestParts<Arc<Shared>> for Gate {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Shared>) -> Result<Gate, Response> {
        let started = std::time::Instant::now();
        let now = s.clock.now_ms();
        let query = query_pairs(&parts.uri);
        if !authorized(&mut s.google.lock().unwrap(), &parts.headers, now) {
            s.count("google.unauthorized");
            return Err(html_error(
                StatusCode::UNAUTHORIZED,
                "Token invalid - Invalid token: Token not found",
            ));
        }
        if !version_3(&parts.headers, &query) {
            s.count("google.bad_version");
            return Err(gdata_error(
                StatusCode::BAD_REQUEST,
                "versionNotSupported",
                "This emulator serves GData-Version 3.0 only: send the header GData-Version: 3.0",
            ));
        }
        Ok(Gate {
            now,
            method: overridden(&parts.method, &parts.headers),
            query,
            started,
        })
    }
}

/// A request body of at most 64 MiB; a larger or broken one is answered 400.
pub(super) struct Body(Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Body, Response> {
        axum::body::to_bytes(req.into_body(), 64 << 20)
            .await
            .map(Body)
            .map_err(|_| {
                text_error(
                    StatusCode::BAD_REQUEST,
                    "Request body too large or unreadable",
                )
            })
    }
}

/// Whether the request asks for GData 3 (the header, or `v=3` in the query).
fn version_3(headers: &HeaderMap, query: &[(String, String)]) -> bool {
    headers
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
        .unwrap_or_else(|| query.iter().any(|(k, v)| k == "v" && v.starts_with('3')))
}

/// The method a request means: a POST may say PUT, DELETE or PATCH in
/// `X-HTTP-Method-Override`.
fn overridden(method: &Method, headers: &HeaderMap) -> Method {
    let wanted = headers
        .get("X-HTTP-Method-Override")
        .and_then(|v| v.to_str().ok());
    match (method, wanted) {
        (&Method::POST, Some(m)) => match m.to_ascii_uppercase().as_str() {
            "PUT" => Method::PUT,
            "DELETE" => Method::DELETE,
            "PATCH" => Method::PATCH,
            _ => Method::POST,
        },
        (m, _) => m.clone(),
    }
}

/// A contacts URL's domain and projection, checked as Google checks them (another
/// domain is forbidden; an unknown projection is refused); deletion placeholders past
/// their retention are dropped before anything is read or written.
fn scope(
    s: &Shared,
    store: &mut GoogleStore,
    domain: &str,
    projection: Option<&str>,
    now: i64,
) -> Result<Projection, Box<Response>> {
    if domain != store.domain {
        s.count("google.wrong_domain");
        return Err(Box::new(html_error(
            StatusCode::FORBIDDEN,
            &format!("Cannot request contacts belonging to another domain ({domain})."),
        )));
    }
    let Some(projection) = projection.and_then(Projection::parse) else {
        return Err(Box::new(gdata_error(
            StatusCode::BAD_REQUEST,
            "invalidParameterValue",
            "Invalid projection: use full, thin or property-KEY",
        )));
    };
    store.purge_tombstones(now);
    Ok(projection)
}

/// The answer to a method a contacts URL does not take (after its domain and
/// projection are checked).
fn method_not_allowed() -> Response {
    gdata_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "methodNotAllowed",
        "Method not allowed on this URL",
    )
}

/// Any contacts URL with a method it does not take, or a path under a contact.
async fn not_allowed(
    gate: Gate,
    State(s): State<Arc<Shared>>,
    Path(p): Path<HashMap<String, String>>,
) -> Response {
    let mut store = s.google.lock().unwrap();
    let domain = p.get("domain").map_or("", String::as_str);
    match scope(
        &s,
        &mut store,
        domain,
        p.get("projection").map(String::as_str),
        gate.now,
    ) {
        Ok(_) => method_not_allowed(),
        Err(r) => *r,
    }
}

/// A path under the feeds that is none of the API's.
async fn no_such_feed(_: Gate) -> Response {
    gdata_error(StatusCode::NOT_FOUND, "notFound", "No such feed")
}

/// GET of the feed: a page of it.
async fn get_feed(
    gate: Gate,
    State(s): State<Arc<Shared>>,
    Path((domain, projection)): Path<(String, String)>,
) -> Response {
    let mut store = s.google.lock().unwrap();
    let p = match scope(&s, &mut store, &domain, Some(&projection), gate.now) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    s.count("google.feed");
    feed(&mut store, &p, &gate.query, gate.now)
}

/// POST to the feed: one new entry.
async fn post_feed(
    gate: Gate,
    State(s): State<Arc<Shared>>,
    Path((domain, projection)): Path<(String, String)>,
    Body(body): Body,
) -> Response {
    let mut store = s.google.lock().unwrap();
    let p = match scope(&s, &mut store, &domain, Some(&projection), gate.now) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if gate.method != Method::POST {
        return method_not_allowed();
    }
    s.count("google.insert");
    let resp = insert_one(&mut store, &p, &body, gate.now);
    store.log_write("insert", None, resp.status());
    resp
}

/// POST of a batch feed; any other method is one on the entry named `batch`, as the
/// API reads the URL.
async fn batch_or_entry(
    gate: Gate,
    State(s): State<Arc<Shared>>,
    Path((domain, projection)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let at = EntryAt {
        domain,
        projection,
        id: "batch".into(),
    };
    if gate.method != Method::POST {
        return on_entry(gate, &s, at, &headers, &body);
    }
    let mut store = s.google.lock().unwrap();
    let p = match scope(&s, &mut store, &at.domain, Some(&at.projection), gate.now) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    s.count("google.batch");
    // Deterministic: a rate r interrupts r of all batches, evenly spread (0.5 = every
    // second one).
    let rate = s.faults.spec().batch_interrupt;
    let n = store.batch_count;
    store.batch_count += 1;
    let interrupt = rate > 0.0 && ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor();
    let resp = batch(&mut store, &p, &headers, &body, gate.now, interrupt);
    s.add("google.batch.us", gate.started.elapsed().as_micros() as u64);
    resp
}

/// The URL of one entry: domain, projection and contact id.
#[derive(serde::Deserialize)]
struct EntryAt {
    domain: String,
    projection: String,
    id: String,
}

/// A request to one entry: GET, PUT or DELETE (a POST may be either write, see
/// [`overridden`]).
async fn entry(
    gate: Gate,
    State(s): State<Arc<Shared>>,
    Path(at): Path<EntryAt>,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    on_entry(gate, &s, at, &headers, &body)
}

/// One entry read, replaced or deleted, by the request's method.
fn on_entry(gate: Gate, s: &Shared, at: EntryAt, headers: &HeaderMap, body: &Bytes) -> Response {
    let mut store = s.google.lock().unwrap();
    let p = match scope(s, &mut store, &at.domain, Some(&at.projection), gate.now) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let id = at.id.as_str();
    match gate.method {
        Method::GET => {
            s.count("google.get");
            get_entry(&mut store, id, &p, headers)
        }
        Method::PUT => {
            s.count("google.update");
            let resp = update_one(&mut store, id, &p, headers, body, gate.now);
            store.log_write("update", Some(id), resp.status());
            resp
        }
        Method::DELETE => {
            s.count("google.delete");
            let resp = delete_one(&mut store, id, headers, gate.now);
            store.log_write("delete", Some(id), resp.status());
            resp
        }
        _ => method_not_allowed(),
    }
}

/// One entry as a document (304 when `If-None-Match` names its etag).
fn get_entry(store: &mut GoogleStore, id: &str, p: &Projection, headers: &HeaderMap) -> Response {
    match store.contacts.get(id) {
        Some(c) if c.deleted_ms.is_none() => {
            if let Some(inm) = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                && inm == c.etag
            {
                return StatusCode::NOT_MODIFIED.into_response();
            }
            atom(StatusCode::OK, "entry", store.standalone_entry(id, p))
        }
        _ => gdata_error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("Contact not found: {id}"),
        ),
    }
}

/// One entry deleted under its `If-Match`.
fn delete_one(store: &mut GoogleStore, id: &str, headers: &HeaderMap, now: i64) -> Response {
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match delete(store, id, if_match.as_deref(), None, now) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(OpError(st, code, reason)) => op_error_response(st, code, &reason),
    }
}

/// A contact's photo: GET, PUT or DELETE.
async fn photo_route(
    gate: Gate,
    State(s): State<Arc<Shared>>,
    Path((domain, id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let mut store = s.google.lock().unwrap();
    if domain != store.domain {
        return html_error(
            StatusCode::FORBIDDEN,
            &format!("Cannot request contacts belonging to another domain ({domain})."),
        );
    }
    s.count("google.photo");
    let resp = photo(&mut store, &gate.method, &id, &headers, &body, gate.now);
    match gate.method {
        Method::PUT => store.log_write("photo_put", Some(&id), resp.status()),
        Method::DELETE => store.log_write("photo_delete", Some(&id), resp.status()),
        _ => {}
    }
    resp
}

/// The query's pairs, decoded.
pub(crate) fn query_pairs(uri: &axum::http::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the `Authorization` header holds the configured token or an unexpired
/// OAuth2 token this emulator handed out.
pub(crate) fn authorized(store: &mut GoogleStore, headers: &HeaderMap, now_ms: i64) -> bool {
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

/// A contact's photo as the API keeps it: read, replaced or removed, under the photo's
/// etag.
pub(super) fn photo(
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

#[derive(serde::Deserialize)]
pub(super) struct JwtClaims {
    iss: String,
    sub: Option<String>,
    scope: String,
    aud: String,
    exp: i64,
    iat: i64,
}

pub(super) async fn token_endpoint(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
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
    // The contacts feed's scopes, or the People API directory's (the same token endpoint).
    if !claims.scope.split(' ').any(|sc| {
        sc == "https://www.google.com/m8/feeds"
            || sc == "https://www.google.com/m8/feeds/contacts"
            || sc == "https://www.googleapis.com/auth/directory.readonly"
    }) {
        return fail(
            "Invalid scope: the contacts feed needs https://www.google.com/m8/feeds, the directory https://www.googleapis.com/auth/directory.readonly",
        );
    }
    if claims.iss.is_empty() || claims.sub.as_deref().is_none_or(|s| !s.contains('@')) {
        return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"error": "unauthorized_client", "error_description": "Client is unauthorized to retrieve access tokens using this method: sub must name an administrator"}))).into_response();
    }
    let token = format!("ya29.emu-{:016x}", hash64(now as u64, assertion));
    let ttl = store.oauth_ttl_secs;
    store.oauth_tokens.insert(token.clone(), now + ttl * 1000);
    axum::Json(serde_json::json!({"access_token": token, "expires_in": store.oauth_ttl_secs, "token_type": "Bearer"})).into_response()
}

#[cfg(test)]
mod tests {
    use crate::emulator::{Emulator, EmulatorConfig};

    /// Each URL of the API answers as Google does, through its route: the gate first
    /// (401 without the token, whatever the path; 400 without GData 3), then the domain
    /// (403), the projection (400), the method (405), and a path that is no feed (404);
    /// `X-HTTP-Method-Override` makes a POST the write it names; `batch` is an entry's
    /// id to any method but POST.
    #[tokio::test]
    async fn every_url_answers_through_its_route() {
        let emu = Emulator::start(EmulatorConfig {
            google_contacts: 3,
            aurinko_accounts: 0,
            ..Default::default()
        })
        .await
        .unwrap();
        let base = format!("{}/m8/feeds", emu.url());
        let http = reqwest::Client::new();
        let send = |method: reqwest::Method, path: &str, v3: bool, auth: bool| {
            let mut rb = http.request(method, format!("{base}{path}"));
            if v3 {
                rb = rb.header("GData-Version", "3.0");
            }
            if auth {
                rb = rb.bearer_auth("emulator-token");
            }
            rb
        };
        let status = |rb: reqwest::RequestBuilder| async move {
            let r = rb.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        use reqwest::Method as M;
        let feed = "/contacts/example.com/full";
        for path in [feed, "/nowhere/at/all"] {
            let (st, body) = status(send(M::GET, path, true, false)).await;
            assert_eq!(st, 401, "{path}: {body}");
        }
        let (st, body) = status(send(M::GET, feed, false, true)).await;
        assert!(st == 400 && body.contains("versionNotSupported"), "{body}");
        let (st, body) = status(send(M::GET, feed, true, true)).await;
        assert_eq!(st, 200, "{body}");
        let id = body
            .split("/base/")
            .nth(1)
            .and_then(|t| t.split('<').next())
            .unwrap()
            .to_string();
        let cases = [
            (
                M::GET,
                "/contacts/other.org/full".to_string(),
                403,
                "another domain",
            ),
            (
                M::GET,
                "/contacts/example.com/nope".to_string(),
                400,
                "Invalid projection",
            ),
            (
                M::GET,
                "/contacts/example.com".to_string(),
                400,
                "Invalid projection",
            ),
            (M::PATCH, format!("{feed}/{id}"), 405, "methodNotAllowed"),
            (M::PUT, feed.to_string(), 405, "methodNotAllowed"),
            (
                M::GET,
                format!("{feed}/batch"),
                404,
                "Contact not found: batch",
            ),
            (M::GET, format!("{feed}/"), 200, "<feed"),
            (M::GET, format!("{feed}/{id}/more"), 405, "methodNotAllowed"),
            (
                M::GET,
                "/groups/example.com/full".to_string(),
                404,
                "No such feed",
            ),
            (M::GET, format!("{feed}/{id}"), 200, "<entry"),
            (M::GET, format!("{feed}/missing"), 404, "Contact not found"),
        ];
        for (method, path, want, words) in cases {
            let (st, body) = status(send(method.clone(), &path, true, true)).await;
            assert!(
                st == want && body.contains(words),
                "{method} {path}: {st} {body}"
            );
        }
        let del = send(M::POST, &format!("{feed}/{id}"), true, true)
            .header("X-HTTP-Method-Override", "DELETE")
            .header("If-Match", "*");
        assert_eq!(status(del).await.0, 200);
        let (st, _) = status(send(M::GET, &format!("{feed}/{id}"), true, true)).await;
        assert_eq!(st, 404, "the override deleted the contact");
    }
}
