//! The anonymous "Badger" token OneDrive's web app uses for people who open a share
//! link without signing in: taken from the token endpoint
//! (`POST <onedrive_badger_token>` with `{"appId": <onedrive_badger_app_id>}` and the
//! header `AppId: <onedrive_badger_app_header>`; the answer is
//! `{"token": "...", "expiryTimeUtc": "<RFC 3339>"}`, valid about a week) and sent as
//! `Authorization: Badger <token>` to the personal API.
//!
//! Owns the one token of a run: kept in memory only, behind an async lock so that
//! concurrent listings take one token between them, renewed when its expiry (less a
//! margin) has passed and, once per stale token, when the personal API refuses it.
//! The token's value is never logged, shown in a message, written to a report or the
//! catalog, nor printed by `Debug`. It never decides which lookup path is taken; the
//! listing does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::super::Resolver;
use crate::net::{ErrorClass, Failure};
use pmv_core::redact::show_url;

/// A token is renewed this long before the expiry its endpoint announced.
const MARGIN: Duration = Duration::from_secs(5 * 60);
/// How long a token is used when its endpoint announces no (readable) expiry.
const UNTIMED: Duration = Duration::from_secs(60 * 60);
/// Largest token answer read.
const MAX_ANSWER: usize = 64 << 10;
/// Longest token accepted (the web app's are about 1.5 KiB).
const MAX_TOKEN: usize = 16 << 10;

/// An anonymous token. `Debug` shows its serial number, never its value.
#[derive(Clone)]
pub struct Token {
    value: String,
    /// When it is renewed before use.
    renew_at: Instant,
    /// Which token of the run this is (1 for the first).
    serial: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("serial", &self.serial)
            .finish()
    }
}

impl Token {
    /// The `Authorization` header value.
    pub fn authorization(&self) -> String {
        format!("Badger {}", self.value)
    }

    /// Which token of the run this is (1 for the first).
    pub fn serial(&self) -> u64 {
        self.serial
    }
}

/// The run's token, taken when first needed.
#[derive(Default)]
pub struct Badger {
    current: tokio::sync::Mutex<Option<Token>>,
    taken: AtomicU64,
}

impl std::fmt::Debug for Badger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Badger")
            .field("taken", &self.taken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Badger {
    /// The token to send: the one held while its expiry (less the margin) has not
    /// passed, else a new one. A new token is used for the request it was taken for
    /// even when it claims to be expired already (a clock apart from the server's).
    pub async fn current(&self, r: &Resolver) -> Result<Token, Failure> {
        let mut held = self.current.lock().await;
        if let Some(t) = held.as_ref()
            && Instant::now() < t.renew_at
        {
            return Ok(t.clone());
        }
        self.take(r, &mut held).await
    }

    /// A new token after the personal API refused `stale`; when another listing has
    /// renewed it in the meantime, that one.
    pub async fn renew(&self, r: &Resolver, stale: &Token) -> Result<Token, Failure> {
        let mut held = self.current.lock().await;
        if let Some(t) = held.as_ref()
            && t.serial != stale.serial
        {
            return Ok(t.clone());
        }
        self.take(r, &mut held).await
    }

    /// Tokens taken so far in this run.
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    async fn take(&self, r: &Resolver, held: &mut Option<Token>) -> Result<Token, Failure> {
        *held = None;
        let s = r.settings();
        let url = &s.onedrive_badger_token;
        let headers = [
            ("Accept".to_owned(), "application/json".to_owned()),
            ("AppId".to_owned(), s.onedrive_badger_app_header.clone()),
        ];
        let body = serde_json::json!({ "appId": s.onedrive_badger_app_id }).to_string();
        let doc = r
            .client()
            .post_json(url, &headers, body, MAX_ANSWER)
            .await?;
        let (value, expires) = parse_answer(&doc.text).map_err(|why| {
            Failure::new(
                ErrorClass::BadResponse,
                format!("token answer from {}: {why}", show_url(url.as_str())),
            )
        })?;
        let serial = self.taken.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let left = match expires {
            Some(at) => at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .saturating_sub(MARGIN),
            None => UNTIMED,
        };
        let token = Token {
            value,
            renew_at: now + left,
            serial,
        };
        tracing::debug!(
            serial,
            renew_in_s = left.as_secs(),
            "anonymous OneDrive token taken"
        );
        *held = Some(token.clone());
        Ok(token)
    }
}

/// The token and its announced expiry (`None` when absent or unreadable). Errors
/// describe the answer without quoting it (it may hold a token).
fn parse_answer(text: &str) -> Result<(String, Option<SystemTime>), String> {
    let v: Value = serde_json::from_str(text).map_err(|_| "not JSON".to_owned())?;
    let token = v
        .get("token")
        .and_then(Value::as_str)
        .ok_or("no 'token' string")?;
    if token.is_empty() || token.len() > MAX_TOKEN {
        return Err(format!(
            "a 'token' of {} bytes (1 to {MAX_TOKEN} expected)",
            token.len()
        ));
    }
    // It goes into a header: visible ASCII only.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a 'token' with characters a header cannot carry".into());
    }
    let expires = v
        .get("expiryTimeUtc")
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339_weak(t.trim()).ok());
    Ok((token.to_owned(), expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_and_checked_without_quoting_them() {
        let (t, e) = parse_answer(
            r#"{"token":"eyJ0eXAi.abc-_","expiryTimeUtc":"2026-12-13T10:00:00.0000000Z"}"#,
        )
        .unwrap();
        assert_eq!(t, "eyJ0eXAi.abc-_");
        let e = e.unwrap();
        assert_eq!(
            e.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_797_156_000
        );
        let (_, none) = parse_answer(r#"{"token":"x","expiryTimeUtc":"soon"}"#).unwrap();
        assert!(none.is_none());
        for bad in [
            "<html>",
            r#"{"tok":"x"}"#,
            r#"{"token":""}"#,
            r#"{"token":"a b"}"#,
            r#"{"token":"a\r\nX-Evil: 1"}"#,
        ] {
            let e = parse_answer(bad).unwrap_err();
            assert!(!e.contains("a b") && !e.contains("Evil"), "{e}");
        }
    }

    #[test]
    fn debug_never_shows_the_value() {
        let t = Token {
            value: "SECRET-VALUE".into(),
            renew_at: Instant::now(),
            serial: 3,
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("serial: 3"), "{shown}");
        assert_eq!(t.authorization(), "Badger SECRET-VALUE");
    }
}
