//! Whether an EC2 instance metadata service would hand the S3 client credentials.
//!
//! A port that accepts a connection is not enough: a metadata address that answers 403
//! (IMDS switched off, a proxy, a container that forbids it) or anything else that is no
//! credential made the AWS SDK log a dozen warnings and the lake fail with "Kernel error
//! … loading credentials". So this asks what the SDK asks (IMDSv2: a session token, the
//! role name, the role's credentials; IMDSv1 where no token is offered), each request
//! bounded by [`TIMEOUT`], and says yes only when credentials came back. It runs before
//! the lake is opened, on a blocking socket, once per command.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The longest wait for each request to the metadata service.
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// Of an answer, at most this much is read (credentials are about 1 KB).
const MAX_ANSWER: u64 = 64 * 1024;

/// Whether the metadata service at `endpoint` (`http://host[:port]`) gives credentials.
pub fn gives_credentials(endpoint: &str) -> bool {
    let Some(addr) = url::Url::parse(endpoint)
        .ok()
        .filter(|u| u.scheme() == "http")
        .and_then(|u| u.socket_addrs(|| Some(80)).ok())
        .and_then(|a| a.first().copied())
    else {
        return false;
    };
    let token = match request(
        addr,
        "PUT",
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
    ) {
        Some((200, t)) if !t.trim().is_empty() => Some(t.trim().to_string()),
        // Answered, and refused: IMDS is off for this caller, as the SDK reads it.
        Some((403, _)) | None => return false,
        // No token service (IMDSv1 only): the SDK asks without one.
        Some(_) => None,
    };
    let headers: Vec<(&str, &str)> = token
        .as_deref()
        .map(|t| vec![("x-aws-ec2-metadata-token", t)])
        .unwrap_or_default();
    let base = "/latest/meta-data/iam/security-credentials/";
    let Some((200, roles)) = request(addr, "GET", base, &headers) else {
        return false;
    };
    let Some(role) = roles.lines().map(str::trim).find(|r| is_role_name(r)) else {
        return false;
    };
    matches!(
        request(addr, "GET", &format!("{base}{role}"), &headers),
        Some((200, creds)) if serde_json::from_str::<serde_json::Value>(&creds)
            .is_ok_and(|c| c["AccessKeyId"].as_str().is_some_and(|k| !k.is_empty()))
    )
}

/// An IAM role name as the service lists it (letters, digits and `+=,.@_-`).
fn is_role_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

/// One HTTP/1.1 request with `Connection: close`; the status and the body, or `None` when
/// nothing answered within [`TIMEOUT`] or the answer is no HTTP.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).ok()?;
    s.set_read_timeout(Some(TIMEOUT)).ok()?;
    s.set_write_timeout(Some(TIMEOUT)).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut answer = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .lines()
        .next()?
        .strip_prefix("HTTP/1.")?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()?;
    // A chunked body is read whole (the service answers with a length; a proxy may not).
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

/// The data of a chunked body (sizes in hex, each chunk followed by CRLF).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        // A size that cuts a character is a body that is not what it says.
        let (Some(chunk), Some(after)) = (rest.get(..n), rest.get(n..)) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.push_str(chunk);
        body = after.trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A metadata service on 127.0.0.1 answering each request by `answer(first line)`,
    /// for `n` connections.
    fn serve(n: usize, answer: fn(&str) -> String) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for _ in 0..n {
                let Ok((mut s, _)) = l.accept() else { return };
                let mut buf = [0u8; 4096];
                let got = s.read(&mut buf).unwrap_or(0);
                let text = String::from_utf8_lossy(&buf[..got]).into_owned();
                let _ = s.write_all(answer(text.lines().next().unwrap_or("")).as_bytes());
            }
        });
        url
    }

    fn http(status: u16, body: &str) -> String {
        format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// Chunk sizes that cut a character, run past the body or are not hex end the data
    /// there; whole chunks join.
    #[test]
    fn a_chunked_body_with_lying_sizes_is_cut_not_a_panic() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
        assert_eq!(dechunk("1\r\né\r\n"), "");
        assert_eq!(dechunk("2\r\naé\r\n"), "");
        assert_eq!(dechunk("ff\r\nshort"), "");
        assert_eq!(dechunk("zz\r\nabc"), "");
    }

    #[test]
    fn only_credentials_count_as_credentials() {
        assert!(!gives_credentials(&serve(1, |_| http(403, "Forbidden"))));
        assert!(!gives_credentials(&serve(3, |_| http(
            200,
            "<html>a captive portal</html>"
        ))));
        assert!(!gives_credentials(&serve(3, |_| "not http".into())));
        assert!(!gives_credentials("http://127.0.0.1:1"));
        assert!(gives_credentials(&serve(3, |line| {
            if line.starts_with("PUT") {
                http(200, "TOKEN")
            } else if line.ends_with("credentials/ HTTP/1.1") {
                http(200, "app-role\n")
            } else {
                http(
                    200,
                    r#"{"Code":"Success","AccessKeyId":"AKIA","SecretAccessKey":"s"}"#,
                )
            }
        })));
        // IMDSv1 only: no token service, the same questions without one.
        assert!(gives_credentials(&serve(3, |line| {
            if line.starts_with("PUT") {
                http(405, "")
            } else if line.ends_with("credentials/ HTTP/1.1") {
                http(200, "app-role")
            } else {
                http(200, r#"{"AccessKeyId":"AKIA"}"#)
            }
        })));
    }

    #[test]
    fn chunked_bodies_are_read_whole() {
        assert_eq!(dechunk("4\r\nrole\r\n2\r\n-a\r\n0\r\n\r\n"), "role-a");
    }
}
