//! The `direct` resolver: any http(s) URL that serves the file itself (the
//! xinpianchang CDN, mirrors, a Douyin CDN address).
//!
//! Owns nothing but the checks a URL must pass; redirects are followed by the
//! download itself, each hop checked. With `probe` (the `resolve` command) it also
//! asks, without following, where the URL redirects.

use url::Url;

use super::{Offline, Resolved, Resolver, SourceKind, Target};
use crate::net::Failure;
use crate::net::client::{check_url, host_key};

pub async fn resolve(r: &Resolver, url: &Url, probe: bool) -> Result<Resolved, Failure> {
    check_url(url)?;
    let mut trail = vec![];
    if probe && let Some(next) = r.client().location(url, &[]).await? {
        trail.push(format!("{url} redirects to {next}"));
    }
    Ok(Resolved {
        kind: SourceKind::Direct,
        canonical_id: None,
        target: Target::Http {
            url: url.clone(),
            headers: vec![],
            from_public: false,
        },
        via: "link",
        expected: Default::default(),
        trail,
    })
}

pub fn offline(url: &Url) -> Result<Offline, Failure> {
    check_url(url)?;
    Ok(Offline {
        kind: SourceKind::Direct,
        canonical_id: None,
        download_url: Some(url.to_string()),
        lookup_url: None,
        host: host_key(url),
        note: "downloaded as it is (redirects followed, each hop checked)".into(),
        paths: vec![],
    })
}
