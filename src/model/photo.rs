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

/// Hex SHA-256 of photo bytes.
pub fn photo_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The image a photo upload sends: bytes held (a row of a desired table), or a file that
/// is read only when its write is sent, so a folder of photos is never held whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhotoBytes {
    /// The bytes themselves.
    Held(Vec<u8>),
    /// A file as it was planned: read again when sent, and sent only if it still is.
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Its size when planned.
        len: usize,
        /// Hex SHA-256 of its bytes when planned.
        sha256: String,
    },
}

impl PhotoBytes {
    /// The image's size in bytes.
    pub fn len(&self) -> usize {
        match self {
            PhotoBytes::Held(b) => b.len(),
            PhotoBytes::File { len, .. } => *len,
        }
    }

    /// Whether the image has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hex SHA-256 of the image: of the bytes held, or of the file as it was planned
    /// (what [`PhotoBytes::load`] insists on sending).
    pub fn sha256(&self) -> String {
        match self {
            PhotoBytes::Held(b) => photo_sha256(b),
            PhotoBytes::File { sha256, .. } => sha256.clone(),
        }
    }

    /// The bytes to send: those held, or the file read now. A file that is no longer the
    /// one planned (gone, replaced, another size or content) is an error that says so:
    /// what was reviewed is what is sent, or nothing.
    pub fn load(&self) -> std::result::Result<Vec<u8>, String> {
        let (path, len, sha256) = match self {
            PhotoBytes::Held(b) => return Ok(b.clone()),
            PhotoBytes::File { path, len, sha256 } => (path, len, sha256),
        };
        let changed = |what: String| {
            format!(
                "{}: {what} since the plan was made; nothing was sent for it (plan again)",
                path.display()
            )
        };
        let bytes = read_photo_file(path).map_err(changed)?;
        if bytes.len() != *len || photo_sha256(&bytes) != *sha256 {
            return Err(changed("changed".into()));
        }
        Ok(bytes)
    }
}

/// A photo file opened for reading: a regular file only (not a link, device, FIFO or
/// socket), its size checked from its metadata before any byte is read, opened without
/// following links and without blocking, and the same file that was checked. The error
/// says what is wrong with the file.
fn open_photo_file(path: &std::path::Path) -> std::result::Result<std::fs::File, String> {
    let too_big =
        |len: u64| format!("is {len} bytes, more than the {MAX_PHOTO_BYTES}-byte limit of a photo");
    let checked = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !checked.file_type().is_file() {
        return Err("is not a regular file (a link, device or FIFO); photos are read from regular files only".into());
    }
    if checked.len() > MAX_PHOTO_BYTES as u64 {
        return Err(too_big(checked.len()));
    }
    let mut open = std::fs::OpenOptions::new();
    open.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = open.open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if (meta.dev(), meta.ino()) != (checked.dev(), checked.ino()) {
            return Err("was replaced while it was read".into());
        }
    }
    if !meta.file_type().is_file() {
        return Err("is not a regular file".into());
    }
    Ok(file)
}

/// Reads one photo file whole (see [`open_photo_file`] for what is refused); the file
/// may grow after the check, so no more than the limit is read.
pub fn read_photo_file(path: &std::path::Path) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let file = open_photo_file(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_PHOTO_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > MAX_PHOTO_BYTES {
        return Err(format!(
            "is more than the {MAX_PHOTO_BYTES}-byte limit of a photo"
        ));
    }
    Ok(bytes)
}

/// A photo file read in pieces, none of it kept: its first bytes (for the image
/// signature) and, as [`PhotoBytes::File`], its size and SHA-256.
pub fn scan_photo_file(
    path: &std::path::Path,
) -> std::result::Result<(Vec<u8>, PhotoBytes), String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = open_photo_file(path)?.take(MAX_PHOTO_BYTES as u64 + 1);
    let (mut hash, mut head, mut len) = (sha2::Sha256::new(), Vec::new(), 0usize);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..n.min(16 - head.len())]);
        }
        hash.update(&buf[..n]);
        len += n;
    }
    if len > MAX_PHOTO_BYTES {
        return Err(format!(
            "is more than the {MAX_PHOTO_BYTES}-byte limit of a photo"
        ));
    }
    let sha256 = hex::encode(hash.finalize());
    Ok((
        head,
        PhotoBytes::File {
            path: path.to_path_buf(),
            len,
            sha256,
        },
    ))
}

/// What a photo operation does, carrying exactly what that needs.
#[derive(Debug, Clone)]
pub enum PhotoAction {
    /// Upload (add or replace) the photo.
    Put {
        /// The image.
        bytes: PhotoBytes,
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
