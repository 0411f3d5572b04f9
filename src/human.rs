//! Numbers, sizes, times, ages and table cells for people, and what the terminal they
//! read on allows (its width, whether colour is wanted). Shared by every command's
//! text output.

/// `n` with thousands separators: `60,000`.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A byte count in B, KB, MB, GB (powers of 1000, one decimal).
pub fn bytes(n: i64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The time from `then_us` to `now_us` in its largest unit: `42s ago`, `3m ago`,
/// `5h ago`, `2d ago`.
pub fn ago(then_us: i64, now_us: i64) -> String {
    let s = (now_us - then_us).max(0) / 1_000_000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// A UTC time at second precision: `2026-12-01 23:10:05Z`.
pub fn utc_seconds(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| us.to_string())
}

/// A UTC time at second precision in RFC 3339: `2026-12-01T23:10:05Z`.
pub fn rfc3339_seconds(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| us.to_string())
}

/// `s` on one line (line breaks and other control characters become spaces), cut to
/// `width` columns of a terminal, ending in `…` when cut.
pub fn fit(s: &str, width: usize) -> String {
    use unicode_width::UnicodeWidthChar;
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if width_of(&s) <= width {
        return s;
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// The columns `s` takes on a terminal.
pub fn width_of(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}

/// The width of a column of names: its widest name of at most `max` columns (a longer one
/// stands on a line of its own, never cut), and at least its heading's 14.
pub fn name_column(names: &[String], max: usize) -> usize {
    names
        .iter()
        .map(|n| width_of(n))
        .filter(|&w| w <= max)
        .chain([14])
        .max()
        .unwrap_or(14)
}

/// `s` padded with spaces to `width` columns (on the right).
pub fn pad(s: &str, width: usize) -> String {
    format!("{s}{}", " ".repeat(width.saturating_sub(width_of(s))))
}

/// A rate as a person reads it: a whole number with separators, `2,487/s`.
pub fn rate(per_sec: f64) -> String {
    let n = if per_sec.is_finite() {
        per_sec.round() as i64
    } else {
        0
    };
    format!("{}/s", count(n))
}

/// The width of the terminal stdout writes to, if it is one that says (else `COLUMNS`,
/// as a shell exports it); `None` when stdout is no terminal and `COLUMNS` is unset.
pub fn stdout_width() -> Option<usize> {
    use std::io::IsTerminal;
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0);
    if !std::io::stdout().is_terminal() {
        return columns;
    }
    tty_columns(libc::STDOUT_FILENO).or(columns).or(Some(80))
}

/// The columns of the terminal on `fd` (`TIOCGWINSZ`), when it reports some.
fn tty_columns(fd: i32) -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct it is given.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// Whether colour is refused: `NO_COLOR` set to anything but the empty string
/// (<https://no-color.org>).
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// An error message with its cause first: `"ctx: ctx: the cause"` becomes
/// `"the cause (ctx: ctx)"`. The messages of this crate name where (source, account,
/// page, request) before what happened; a line cut at the terminal's edge should keep
/// what happened. Leading parts are context while they are short and read as a place
/// (at most 40 bytes, no `;` or `,`, not an `HTTP …` status), and the cause is never
/// empty.
pub fn cause_first(msg: &str) -> String {
    let parts: Vec<&str> = msg.split(": ").collect();
    let is_place = |p: &str| p.len() <= 40 && !p.contains([';', ',']) && !p.starts_with("HTTP ");
    let context = parts
        .iter()
        .take(parts.len().saturating_sub(1))
        .take_while(|p| is_place(p))
        .count();
    if context == 0 {
        return msg.to_string();
    }
    format!(
        "{} ({})",
        parts[context..].join(": "),
        parts[..context].join(": ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_read_these() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(60_000), "60,000");
        assert_eq!(count(-1_234_567), "-1,234,567");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1_234_567), "1.2 MB");
        let m = 1_000_000;
        assert_eq!(ago(0, 42 * m), "42s ago");
        assert_eq!(ago(0, 185 * m), "3m ago");
        assert_eq!(ago(0, 7300 * m), "2h ago");
        assert_eq!(ago(0, 3 * 86_400 * m), "3d ago");
        assert_eq!(utc_seconds(1_764_630_605_123_456), "2025-12-01 23:10:05Z");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("ab\ncd", 9), "ab cd");
        // Wide characters take two columns each.
        assert_eq!(fit("日本語テキスト", 7), "日本語…");
        assert_eq!(width_of(&fit("日本語テキスト", 7)), 7);
        assert_eq!(rate(2486.7723), "2,487/s");
        assert_eq!(rate(0.4), "0/s");
        assert_eq!(
            cause_first(
                "crm account 102: /sync/updated page 1: the API refused the credentials (401 Token invalid); refresh the account token"
            ),
            "the API refused the credentials (401 Token invalid); refresh the account token (crm account 102: /sync/updated page 1)"
        );
        assert_eq!(
            cause_first("shared: page 3: HTTP 503: over quota"),
            "HTTP 503: over quota (shared: page 3)"
        );
        assert_eq!(cause_first("no context here"), "no context here");
        assert_eq!(
            cause_first(
                "crm account 102: sync start (attempt 1): the API refused the credentials (401 Token invalid); refresh the token"
            ),
            "the API refused the credentials (401 Token invalid); refresh the token (crm account 102: sync start (attempt 1))"
        );
    }
}
