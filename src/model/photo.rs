//! Photos as they move between the parts: what the lake wants fetched, what a provider
//! fetched, and the photo writes a plan makes.

/// Largest photo accepted.
pub const MAX_PHOTO_BYTES: usize = 10 << 20;

/// A photo the lake should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoWant {
    /// The contact id.
    pub id: String,
    /// The photo link from the contact entry.
    pub href: Option<String>,
    /// The photo etag from the contact entry.
    pub etag: String,
}

/// A downloaded photo.
#[derive(Debug, Clone)]
pub struct FetchedPhoto {
    /// The contact id.
    pub id: String,
    /// The etag the bytes belong to (the response's ETag, else the link's).
    pub etag: Option<String>,
    /// The response's Content-Type.
    pub content_type: Option<String>,
    /// The image.
    pub bytes: Vec<u8>,
}

/// A photo operation's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoOpKind {
    /// Upload (add or replace) the photo.
    Put,
    /// Remove the photo.
    Delete,
}

impl PhotoOpKind {
    /// The name used in `writeback_results.op`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PhotoOpKind::Put => "photo_put",
            PhotoOpKind::Delete => "photo_delete",
        }
    }
}

/// What a photo operation does, carrying exactly what that needs.
#[derive(Debug, Clone)]
pub enum PhotoAction {
    /// Upload (add or replace) the photo.
    Put {
        /// The image.
        bytes: Vec<u8>,
        /// Its content type (`image/…`).
        content_type: String,
    },
    /// Remove the photo.
    Delete,
}

/// One planned photo operation.
#[derive(Debug, Clone)]
pub struct PhotoOp {
    /// Its place in the plan (results come back in this order).
    pub index: usize,
    /// The account of the contact.
    pub account: String,
    /// The contact id.
    pub id: String,
    /// The photo etag the write is conditional on (none: no photo is expected).
    pub etag: Option<String>,
    /// What it does.
    pub action: PhotoAction,
}

impl PhotoOp {
    /// Its kind.
    pub fn kind(&self) -> PhotoOpKind {
        match self.action {
            PhotoAction::Put { .. } => PhotoOpKind::Put,
            PhotoAction::Delete => PhotoOpKind::Delete,
        }
    }
}
