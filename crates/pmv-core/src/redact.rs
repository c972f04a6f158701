//! How a URL is shown: in every message, log line, error, catalog error message, run
//! report, `resolve` answer and shard sample that names one.
//!
//! Owns what counts as a secret in a URL and the one function that hides it
//! ([`redact_url`], and [`show_url`] which also cuts the text for a message). The
//! secrets are the user info before the host (`user:password@`) and the values of the
//! query and fragment parameters that carry credentials or signatures:
//!
//! - a parameter whose name, percent-decoded and compared without regard to case,
//!   contains `token`, `sig`, `secret`, `passw`, `credential`, `auth`, `key`, `hmac`,
//!   `policy`, `session` or `cookie`, or is `pwd`, `pass`, `md5`, `hash` or `hdnts`.
//!   That covers `token`, `access_token`, `sig`, `signature`, `X-Amz-Signature`,
//!   `X-Amz-Credential`, `X-Amz-Security-Token`, `AWSAccessKeyId`, `X-Goog-Signature`,
//!   `X-Goog-Credential`, `GoogleAccessId`, CloudFront's `Signature`, `Key-Pair-Id` and
//!   `Policy`, Azure SAS `sig`, `auth_key`, `api_key`, `password`, `tempauth`,
//!   `wsSecret`, Akamai's `hdnts` and `__token__`;
//! - in a URL signed with an expiry (a parameter named `expires`, `expire`, `expiry`,
//!   `expiration`, `exp`, `e`, `se`, `x-expires` or `deadline`), every other value that
//!   looks like a digest or a signature: 16 or more characters of hex or base64url,
//!   whatever the parameter is called (nginx `secure_link` `?md5=`, custom CDN names).
//!
//! Each such value is replaced by `REDACTED`; names and the rest of the URL stay, so a
//! message still says which host and file it is about. Nothing here changes the URL
//! that is fetched: the catalog keeps the real one. It performs no I/O.

use std::borrow::Cow;

/// What a secret value is replaced with.
pub const REDACTED: &str = "REDACTED";

/// Longest URL text in a message, in bytes (longer ones are cut, with `…`).
pub const SHOWN_URL_BYTES: usize = 160;

/// Parts of parameter names that mark a secret.
const SECRET_NAME_PARTS: &[&str] = &[
    "token",
    "sig",
    "secret",
    "passw",
    "credential",
    "auth",
    "key",
    "hmac",
    "policy",
    "session",
    "cookie",
];

/// Whole parameter names that mark a secret.
const SECRET_NAMES: &[&str] = &["pwd", "pass", "md5", "hash", "hdnts"];

/// Parameter names of an expiry: a URL that carries one is a signed URL.
const EXPIRY_NAMES: &[&str] = &[
    "expires",
    "expire",
    "expiry",
    "expiration",
    "exp",
    "e",
    "se",
    "x-expires",
    "deadline",
];

/// The URL as it may be shown anywhere: credentials and secret parameter values
/// replaced by [`REDACTED`]. Works on any text, valid URL or not.
pub fn redact_url(raw: &str) -> Cow<'_, str> {
    let (without_userinfo, changed) = strip_userinfo(raw);
    let query_at = without_userinfo.find(['?', '#']);
    let Some(start) = query_at else {
        return if changed {
            Cow::Owned(without_userinfo.into_owned())
        } else {
            Cow::Borrowed(raw)
        };
    };
    let (head, tail) = without_userinfo.split_at(start);
    // The query and the fragment are both read as `name=value` lists (OAuth puts
    // tokens in the fragment).
    let parts = split_params(tail);
    let signed = parts.iter().any(|p| {
        p.name()
            .is_some_and(|n| EXPIRY_NAMES.contains(&decoded_lower(n).as_str()))
    });
    let mut out = String::with_capacity(raw.len());
    out.push_str(head);
    let mut any = changed;
    for p in &parts {
        out.push_str(p.sep);
        match (p.name(), p.value()) {
            (Some(name), Some(value)) if is_secret(name, value, signed) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
                any = true;
            }
            _ => out.push_str(p.text),
        }
    }
    if any {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(raw)
    }
}

/// [`redact_url`], cut to [`SHOWN_URL_BYTES`] for a message.
pub fn show_url(raw: &str) -> String {
    cut_for_message(redact_url(raw))
}

/// Free text from the outside (a pasted share text) for a message: every URL in it
/// redacted ([`redact_text`]), cut to [`SHOWN_URL_BYTES`].
pub fn show_text(text: &str) -> String {
    cut_for_message(redact_text(text))
}

fn cut_for_message(r: Cow<'_, str>) -> String {
    if r.len() <= SHOWN_URL_BYTES {
        return r.into_owned();
    }
    let mut cut = SHOWN_URL_BYTES;
    while !r.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &r[..cut])
}

/// Redacts every http(s) URL inside free text (a trail line, a client error).
pub fn redact_text(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut any = false;
    while let Some(at) = find_url_start(rest) {
        out.push_str(&rest[..at]);
        let url_len = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')'))
            .unwrap_or(rest.len() - at);
        let url = &rest[at..at + url_len];
        let shown = redact_url(url);
        any |= matches!(shown, Cow::Owned(_));
        out.push_str(&shown);
        rest = &rest[at + url_len..];
    }
    out.push_str(rest);
    if any {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// Where the next `http://` or `https://` starts (ASCII case-insensitive).
fn find_url_start(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    [lower.find("http://"), lower.find("https://")]
        .into_iter()
        .flatten()
        .min()
}

/// The text without the user info of its authority (`scheme://user:pw@host`).
fn strip_userinfo(raw: &str) -> (Cow<'_, str>, bool) {
    let Some(scheme_end) = raw.find("://") else {
        return (Cow::Borrowed(raw), false);
    };
    let auth_start = scheme_end + 3;
    let auth_len = raw[auth_start..]
        .find(['/', '?', '#'])
        .unwrap_or(raw.len() - auth_start);
    let authority = &raw[auth_start..auth_start + auth_len];
    match authority.rfind('@') {
        Some(at) => {
            let mut out = String::with_capacity(raw.len());
            out.push_str(&raw[..auth_start]);
            out.push_str(REDACTED);
            out.push_str(&raw[auth_start + at..]);
            (Cow::Owned(out), true)
        }
        None => (Cow::Borrowed(raw), false),
    }
}

/// One `name=value` piece of a query or fragment, with the separator before it.
struct Param<'a> {
    sep: &'a str,
    text: &'a str,
}

impl<'a> Param<'a> {
    fn name(&self) -> Option<&'a str> {
        self.text.split_once('=').map(|(n, _)| n)
    }

    fn value(&self) -> Option<&'a str> {
        self.text.split_once('=').map(|(_, v)| v)
    }
}

/// Splits `?a=1&b=2#c=3` into its pieces, keeping every separator.
fn split_params(tail: &str) -> Vec<Param<'_>> {
    let mut out = vec![];
    let mut start = 0;
    let mut sep_start = 0;
    for (i, c) in tail.char_indices() {
        if matches!(c, '?' | '#' | '&' | ';') {
            if i > 0 {
                out.push(Param {
                    sep: &tail[sep_start..start],
                    text: &tail[start..i],
                });
            }
            sep_start = i;
            start = i + 1;
        }
    }
    out.push(Param {
        sep: &tail[sep_start..start],
        text: &tail[start..],
    });
    out
}

fn decoded_lower(name: &str) -> String {
    let decoded: String = url::form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default();
    decoded.to_ascii_lowercase()
}

fn is_secret(name: &str, value: &str, signed: bool) -> bool {
    if value.is_empty() {
        return false;
    }
    let name = decoded_lower(name);
    if SECRET_NAMES.contains(&name.as_str()) || SECRET_NAME_PARTS.iter().any(|p| name.contains(p)) {
        return true;
    }
    signed && !EXPIRY_NAMES.contains(&name.as_str()) && looks_like_digest(value)
}

/// 16 or more characters of hex or base64url (percent-escapes allowed for `=`, `+`
/// and `/`).
fn looks_like_digest(value: &str) -> bool {
    let decoded: String = url::form_urlencoded::parse(format!("x={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let core = decoded.trim_end_matches('=');
    core.len() >= 16
        && core
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/'))
        && core.bytes().any(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_secrets_are_hidden_and_the_rest_kept() {
        let cases = [
            (
                "https://h.example/v.mp4?token=abc123&x=1",
                "https://h.example/v.mp4?token=REDACTED&x=1",
            ),
            (
                "https://b.s3.amazonaws.com/k.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20240101&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=deadbeef",
                "https://b.s3.amazonaws.com/k.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=REDACTED&X-Amz-Signature=REDACTED",
            ),
            (
                "https://d1.cloudfront.net/v.mp4?Expires=1700000000&Signature=abc~def&Key-Pair-Id=K2J",
                "https://d1.cloudfront.net/v.mp4?Expires=1700000000&Signature=REDACTED&Key-Pair-Id=REDACTED",
            ),
            (
                "https://a.blob.core.windows.net/c/v.mp4?sv=2021-06-08&se=2024-01-01T00%3A00Z&sr=b&sp=r&sig=abc%3D",
                "https://a.blob.core.windows.net/c/v.mp4?sv=2021-06-08&se=2024-01-01T00%3A00Z&sr=b&sp=r&sig=REDACTED",
            ),
            (
                "https://h.example/v?ACCESS_TOKEN=x&api_key=y&password=z&auth_key=1-0-0-ab",
                "https://h.example/v?ACCESS_TOKEN=REDACTED&api_key=REDACTED&password=REDACTED&auth_key=REDACTED",
            ),
            (
                "https://h.example/cb#access_token=abc&state=1",
                "https://h.example/cb#access_token=REDACTED&state=1",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(redact_url(raw), want, "{raw}");
        }
    }

    #[test]
    fn expiry_signed_urls_lose_their_digests() {
        assert_eq!(
            redact_url(
                "https://cdn.example/v.mp4?md5=AbC_dEf-0123456789xyz&expires=1700000000&id=42"
            ),
            "https://cdn.example/v.mp4?md5=REDACTED&expires=1700000000&id=42"
        );
        assert_eq!(
            redact_url("https://cdn.example/v.mp4?h=0123456789abcdef0123&e=1700000000"),
            "https://cdn.example/v.mp4?h=REDACTED&e=1700000000"
        );
        // Without an expiry, a long id is only an id.
        let plain = "https://aweme.snssdk.com/aweme/v1/play/?video_id=v0d00fg10000cc0bltrc77ud5sllkjug&ratio=720p";
        assert!(matches!(redact_url(plain), Cow::Borrowed(_)));
    }

    #[test]
    fn user_info_is_hidden_but_the_host_stays() {
        assert_eq!(
            redact_url("https://user:secret@h.example/a?b=1"),
            "https://REDACTED@h.example/a?b=1"
        );
        assert_eq!(
            redact_url("http://good.example@evil.example/x"),
            "http://REDACTED@evil.example/x"
        );
        // An @ in the path is not user info.
        assert_eq!(
            redact_url("https://h.example/@user/v.mp4"),
            "https://h.example/@user/v.mp4"
        );
    }

    #[test]
    fn text_and_shown_urls_are_redacted_and_cut() {
        assert_eq!(
            redact_text("play link redirects to https://cdn.example/v.mp4?sig=abc (HTTP 302)"),
            "play link redirects to https://cdn.example/v.mp4?sig=REDACTED (HTTP 302)"
        );
        let long = format!("https://h.example/{}?token=secret", "a".repeat(200));
        let shown = show_url(&long);
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.ends_with('…'));
        assert_eq!(show_url("https://h.example/a"), "https://h.example/a");
    }
}
