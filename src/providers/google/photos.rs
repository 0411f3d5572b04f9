//! Contact photos: download (`GET`), upload (`PUT image/*`) and removal (`DELETE`) on the
//! photo URL, each write conditional on the photo etag.
//!
//! The photo link in an entry carries `gd:etag` only when a photo exists. Its `href` is
//! used when it points at the configured API; otherwise (a server that writes the public
//! host into its links) the URL is built from `base_url` as the protocol documents it:
//! `{base}/m8/feeds/photos/media/{domain}/{id}`.

use futures::StreamExt;
use futures::future::BoxFuture;

use super::GoogleSource;
use crate::error::{Error, Result};
use crate::http::{HttpResponse, Metrics};
use crate::model::photo::{FetchedPhoto, PhotoAction, PhotoOp, PhotoWant};
use crate::model::write::{OpResult, Outcome};

pub use crate::model::photo::MAX_PHOTO_BYTES;

impl GoogleSource {
    /// Whether the pipeline asked for photos (`photos = true`).
    pub fn photos_enabled(&self) -> bool {
        self.photos
    }

    /// The photo URL of a contact: the entry's link when it is on the origin of
    /// `base_url`, else the documented URL on `base_url`. A link elsewhere is never
    /// requested, so the credentials stay with the API.
    fn photo_url(&self, id: &str, href: Option<&str>) -> String {
        let on_origin =
            |h: &str| url::Url::parse(h).is_ok_and(|u| crate::http::same_origin(&self.origin, &u));
        match href {
            Some(h) if h.starts_with(&format!("{}/", self.base_url)) && on_origin(h) => {
                h.to_string()
            }
            _ => format!(
                "{}/m8/feeds/photos/media/{}/{}",
                self.base_url, self.domain, id
            ),
        }
    }

    /// Sends one photo request with auth; a 401 that a refresh did not cure is an error.
    async fn photo_request<F>(
        &self,
        what: &str,
        metrics: &Metrics,
        build: F,
    ) -> Result<HttpResponse>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let resp = self
            .send_authorized(what, metrics, MAX_PHOTO_BYTES, build)
            .await?;
        match resp.status {
            401 => Err(self.refused(what, &resp)),
            _ => Ok(resp),
        }
    }

    /// Downloads one photo; `None` when it is gone (404: removed since the extract).
    pub async fn fetch_photo(
        &self,
        want: &PhotoWant,
        metrics: &Metrics,
    ) -> Result<Option<FetchedPhoto>> {
        let url = self.photo_url(&want.id, want.href.as_deref());
        let what = format!(
            "{} photo of contact {} in {}",
            self.name, want.id, self.domain
        );
        let resp = self.photo_request(&what, metrics, |c| c.get(&url)).await?;
        let header = |name: reqwest::header::HeaderName| {
            resp.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        match resp.status {
            200 => Ok(Some(FetchedPhoto {
                id: want.id.clone(),
                // The response's ETag names the bytes actually read; a server that sends
                // none leaves the link's etag, read with the entry.
                etag: header(reqwest::header::ETAG).or_else(|| Some(want.etag.clone())),
                content_type: header(reqwest::header::CONTENT_TYPE),
                bytes: resp.body.to_vec(),
            })),
            404 => Ok(None),
            s => Err(Error::http(
                Some(s),
                format!("{what}: HTTP {s}: {}", resp.describe()),
            )),
        }
    }

    /// Downloads photos with bounded concurrency. Returns the photos read, the ids found
    /// gone (404), and the failures (id, error) — one failure does not stop the others.
    pub async fn fetch_photos<'a>(
        &'a self,
        wants: &'a [PhotoWant],
        metrics: &'a Metrics,
        progress: Option<&indicatif::ProgressBar>,
    ) -> (Vec<FetchedPhoto>, Vec<String>, Vec<(String, Error)>) {
        let mut fetched = Vec::new();
        let mut gone = Vec::new();
        let mut failed = Vec::new();
        // The futures are made first and streamed from a vector: behind the Photos trait the
        // whole future must be Send, which the compiler cannot prove for a stream that holds
        // a closure over borrowed items (rust-lang/rust#102211).
        type Fetch<'a> = (&'a PhotoWant, Result<Option<FetchedPhoto>>);
        let fetches: Vec<BoxFuture<'a, Fetch<'a>>> = wants
            .iter()
            .map(|w| -> BoxFuture<'a, Fetch<'a>> {
                Box::pin(async move { (w, self.fetch_photo(w, metrics).await) })
            })
            .collect();
        let mut results = futures::stream::iter(fetches).buffer_unordered(self.photo_concurrency);
        while let Some((w, r)) = results.next().await {
            if let Some(pb) = progress {
                pb.inc(1);
            }
            match r {
                Ok(Some(p)) => fetched.push(p),
                Ok(None) => gone.push(w.id.clone()),
                Err(e) => failed.push((w.id.clone(), e)),
            }
        }
        fetched.sort_by(|a, b| a.id.cmp(&b.id));
        gone.sort();
        (fetched, gone, failed)
    }

    /// Writes planned photo operations, `photo_concurrency` at a time. A PUT or DELETE is
    /// conditional on the landed photo etag (`If-Match`); a PUT where no photo was landed
    /// asks for "no photo yet" (`If-None-Match: *`). `force` sends `If-Match: *`.
    pub async fn apply_photos<'a>(
        &'a self,
        ops: &'a [PhotoOp],
        force: bool,
        metrics: &'a Metrics,
    ) -> Vec<OpResult> {
        let writes: Vec<BoxFuture<'a, OpResult>> = ops
            .iter()
            .map(|op| -> BoxFuture<'a, OpResult> { Box::pin(self.apply_photo(op, force, metrics)) })
            .collect();
        let mut out: Vec<OpResult> = futures::stream::iter(writes)
            .buffer_unordered(self.photo_concurrency)
            .collect()
            .await;
        out.sort_by_key(|r| r.index);
        out
    }

    async fn apply_photo(&self, op: &PhotoOp, force: bool, metrics: &Metrics) -> OpResult {
        let url = self.photo_url(&op.id, None);
        let what = format!(
            "{} photo {} of contact {} in {}",
            self.name,
            op.kind().as_str(),
            op.id,
            self.domain
        );
        let condition = match (&op.etag, force) {
            (_, true) => ("If-Match", "*".to_string()),
            (Some(e), false) => ("If-Match", e.clone()),
            (None, false) => ("If-None-Match", "*".to_string()),
        };
        // A photo file is read now, as its write is sent (and only if it is still the
        // file planned): the writes in flight are all the photos held.
        let body = match &op.action {
            PhotoAction::Put { bytes, .. } => match bytes.load() {
                Ok(b) => Some(bytes::Bytes::from(b)),
                Err(e) => return OpResult::failed(op.index, None, format!("{what}: {e}")),
            },
            PhotoAction::Delete => None,
        };
        let resp = self
            .photo_request(&what, metrics, |c| {
                let rb = match &op.action {
                    PhotoAction::Put { content_type, .. } => c
                        .put(&url)
                        .header(reqwest::header::CONTENT_TYPE, content_type.as_str())
                        .body(body.clone().unwrap_or_default()),
                    PhotoAction::Delete => c.delete(&url),
                };
                rb.header(condition.0, condition.1.as_str())
            })
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return OpResult::failed(op.index, None, e.to_string()),
        };
        let reason = reqwest::StatusCode::from_u16(resp.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .map(str::to_string);
        match resp.status {
            200..=299 => OpResult {
                index: op.index,
                http_status: Some(resp.status),
                outcome: Outcome::Ok,
                reason,
                id: Some(op.id.clone()),
                new_etag: resp
                    .headers
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                error: None,
            },
            412 => OpResult {
                index: op.index,
                http_status: Some(412),
                outcome: Outcome::Conflict,
                reason,
                id: Some(op.id.clone()),
                new_etag: None,
                error: Some(format!(
                    "{what}: the photo changed since it was landed (412: {})",
                    resp.describe()
                )),
            },
            s => OpResult {
                reason,
                id: Some(op.id.clone()),
                ..OpResult::failed(
                    op.index,
                    Some(s),
                    format!("{what}: HTTP {s}: {}", resp.describe()),
                )
            },
        }
    }
}
