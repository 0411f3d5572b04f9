//! The routes: axum routes for the feed, one entry, the batch and the photos, behind one
//! gate (authorization, GData version, `X-HTTP-Method-Override`), and the OAuth2 token
//! endpoint.

#[allow(unused_imports)]
use super::*;

/// Routes of the Google emulator.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/m8/feeds/{*rest}", any(handle))
        .route("/token", post(token_endpoint))
}

pub(super) fn query_pairs(req: &Request) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn authorized(store: &mut GoogleStore, headers: &HeaderMap, now_ms: i64) -> bool {
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

pub(super) async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
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
