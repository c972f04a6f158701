//! Sources: which resolver a link needs, and the resolvers that turn a link into the
//! place its bytes can be read from.
//!
//! This module owns the classification of a validated location (an http(s) URL or an
//! absolute local path) into `direct`, `douyin`, `onedrive` or `local`, and one small,
//! replaceable resolver per kind ([`direct`], [`douyin`], [`onedrive`], [`local`]):
//! each answers, for one candidate source of one item, the URL or path to read, the
//! hashes the source vouches for and which lookup path answered; and each can say,
//! without any network, what it would do ([`resolve_offline`]). Every remote base URL
//! comes from [`SourceSettings`], so a mirror or a test server can stand in. Resolvers
//! never download a file body and never touch the catalog; the fetch stage does both.

pub mod cookies;
pub mod direct;
pub mod douyin;
mod expected;
pub mod local;
pub mod onedrive;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::net::client::{Client, host_key};
use crate::net::{ErrorClass, Failure};
pub use expected::Expected;
pub use pmv_core::{Locator, SourceKind};

/// `[sources]`: the remote base URLs of the resolvers, so that a mirror, a proxy or a
/// test server can stand in for each.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    /// Replaces `https://v.douyin.com` in share links.
    pub douyin_short: Option<String>,
    /// Where the Douyin item lookups go (`/web/api/v2/aweme/slidesinfo/`, the share
    /// page `/share/video/<id>`) [default: `https://www.iesdouyin.com`].
    pub douyin_web: Option<String>,
    /// Replaces the scheme and host of Douyin play links (`/aweme/v1/play/`).
    pub douyin_play: Option<String>,
    /// User-Agent of every Douyin request (a mobile browser).
    pub douyin_user_agent: Option<String>,
    /// The OneDrive API root of the fallback path, asked without credentials
    /// [default: `https://api.onedrive.com/v1.0`].
    pub onedrive_api: Option<String>,
    /// Replaces `https://1drv.ms` when a short link is followed for its share token.
    pub onedrive_short: Option<String>,
    /// Where anonymous OneDrive tokens are taken
    /// [default: `https://api-badgerp.svc.ms/v1.0/token`].
    pub onedrive_badger_token: Option<String>,
    /// The personal OneDrive API root asked with such a token
    /// [default: `https://my.microsoftpersonalcontent.com/_api/v2.0`].
    pub onedrive_personal_api: Option<String>,
    /// The `appId` sent for a token [default: OneDrive's web app].
    pub onedrive_badger_app_id: Option<String>,
    /// The `AppId` header sent for a token [default: `1141147648`].
    pub onedrive_badger_app_header: Option<String>,
}

/// The remote base URLs of the resolvers (`[sources]` in the configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    /// Replaces `https://v.douyin.com` in share links, when set.
    pub douyin_short: Option<Url>,
    /// Where Douyin item lookups go.
    pub douyin_web: Url,
    /// Replaces the scheme, host and port of Douyin play links, when set.
    pub douyin_play: Option<Url>,
    /// The User-Agent of every Douyin request (a mobile browser: the cookie-free page).
    pub douyin_user_agent: String,
    /// Cookies sent with Douyin lookups (`--cookies`, `douyin.cookies`).
    pub douyin_cookies: Option<Arc<cookies::CookieJar>>,
    /// The OneDrive API root of the fallback path.
    pub onedrive_api: Url,
    /// Replaces the scheme, host and port of `1drv.ms` short links, when set.
    pub onedrive_short: Option<Url>,
    /// Where anonymous OneDrive ("Badger") tokens are taken.
    pub onedrive_badger_token: Url,
    /// The personal OneDrive API root asked with an anonymous token.
    pub onedrive_personal_api: Url,
    /// The `appId` in a token request.
    pub onedrive_badger_app_id: String,
    /// The `AppId` header of a token request.
    pub onedrive_badger_app_header: String,
}

impl Default for SourceSettings {
    fn default() -> SourceSettings {
        SourceSettings {
            douyin_short: None,
            douyin_web: Url::parse("https://www.iesdouyin.com").expect("valid"),
            douyin_play: None,
            douyin_user_agent: "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) \
                 AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
                .into(),
            douyin_cookies: None,
            onedrive_api: Url::parse("https://api.onedrive.com/v1.0").expect("valid"),
            onedrive_short: None,
            onedrive_badger_token: Url::parse("https://api-badgerp.svc.ms/v1.0/token")
                .expect("valid"),
            onedrive_personal_api: Url::parse("https://my.microsoftpersonalcontent.com/_api/v2.0")
                .expect("valid"),
            onedrive_badger_app_id: "5cbed6ac-a083-4e14-b191-b4ba07653de2".into(),
            onedrive_badger_app_header: "1141147648".into(),
        }
    }
}

impl SourceSettings {
    /// The defaults, overridden by the configuration (already checked to hold
    /// http(s) URLs).
    pub fn from_config(c: &SourcesConfig) -> Result<SourceSettings, String> {
        let d = SourceSettings::default();
        let url = |key: &str, v: &Option<String>| -> Result<Option<Url>, String> {
            v.as_deref()
                .map(|u| Url::parse(u).map_err(|e| format!("sources.{key} = '{u}': {e}")))
                .transpose()
        };
        Ok(SourceSettings {
            douyin_short: url("douyin_short", &c.douyin_short)?,
            douyin_web: url("douyin_web", &c.douyin_web)?.unwrap_or(d.douyin_web),
            douyin_play: url("douyin_play", &c.douyin_play)?,
            douyin_user_agent: c.douyin_user_agent.clone().unwrap_or(d.douyin_user_agent),
            douyin_cookies: None,
            onedrive_api: url("onedrive_api", &c.onedrive_api)?.unwrap_or(d.onedrive_api),
            onedrive_short: url("onedrive_short", &c.onedrive_short)?,
            onedrive_badger_token: url("onedrive_badger_token", &c.onedrive_badger_token)?
                .unwrap_or(d.onedrive_badger_token),
            onedrive_personal_api: url("onedrive_personal_api", &c.onedrive_personal_api)?
                .unwrap_or(d.onedrive_personal_api),
            onedrive_badger_app_id: c
                .onedrive_badger_app_id
                .clone()
                .unwrap_or(d.onedrive_badger_app_id),
            onedrive_badger_app_header: c
                .onedrive_badger_app_header
                .clone()
                .unwrap_or(d.onedrive_badger_app_header),
        })
    }
}

/// Where the bytes of a resolved source are.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Read over HTTP; `headers` go with the request (a Referer, a User-Agent).
    Http {
        url: Url,
        headers: Vec<(String, String)>,
        /// A public server's answer named the URL (see [`Request::public`]).
        ///
        /// [`Request::public`]: crate::net::client::Request::public
        from_public: bool,
    },
    /// Import a local file.
    Local { path: PathBuf },
}

/// One candidate source, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub kind: SourceKind,
    /// The platform's id of the item (Douyin aweme or video id, OneDrive item id).
    pub canonical_id: Option<String>,
    pub target: Target,
    /// Which resolver path answered (`link`, `play-link`, `slidesinfo`,
    /// `share-page`, `folder-listing`, `file-link`, `path`).
    pub via: &'static str,
    /// What the source vouches for (OneDrive's size and hashes).
    pub expected: Expected,
    /// What was asked and answered on the way, for `resolve` and for messages.
    pub trail: Vec<String>,
}

/// What resolving a source would do, told without any network.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Offline {
    pub kind: SourceKind,
    pub canonical_id: Option<String>,
    /// The URL that would be downloaded, when known without asking anyone.
    pub download_url: Option<String>,
    /// The first request a resolution would send, when one is needed.
    pub lookup_url: Option<String>,
    /// The host politeness counts the work under.
    pub host: String,
    pub note: String,
    /// The lookup paths tried in order, for sources that have several (OneDrive:
    /// `badger`, then `api`); empty for the others.
    pub paths: Vec<OfflinePath>,
}

/// One lookup path of an [`Offline`] answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OfflinePath {
    /// `badger` (anonymous token, personal API) or `api` (no credentials).
    pub name: &'static str,
    /// The first request of the path about the item.
    pub lookup_url: String,
}

/// The online resolvers with what they share: the client and the OneDrive listings.
pub struct Resolver {
    client: Arc<Client>,
    settings: SourceSettings,
    onedrive: onedrive::Listings,
}

impl Resolver {
    pub fn new(client: Arc<Client>, settings: SourceSettings) -> Resolver {
        Resolver {
            client,
            settings,
            onedrive: onedrive::Listings::default(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn settings(&self) -> &SourceSettings {
        &self.settings
    }

    /// Resolves one candidate source of item `key` (needed to find the item's file in
    /// a shared folder). `probe` also asks where a play link redirects (for
    /// `resolve`; a download follows the redirect itself).
    pub async fn resolve(
        &self,
        loc: &Locator,
        key: Option<&str>,
        probe: bool,
    ) -> Result<Resolved, Failure> {
        match loc.kind {
            SourceKind::Direct => direct::resolve(self, &parse_url(loc)?, probe).await,
            SourceKind::Douyin => douyin::resolve(self, &parse_url(loc)?, probe).await,
            SourceKind::Onedrive => onedrive::resolve(self, &parse_url(loc)?, key).await,
            SourceKind::Local => local::resolve(&loc.location),
        }
    }
}

/// Says what resolving `loc` for item `key` would do, without any network.
pub fn resolve_offline(
    loc: &Locator,
    key: Option<&str>,
    settings: &SourceSettings,
) -> Result<Offline, Failure> {
    match loc.kind {
        SourceKind::Direct => direct::offline(&parse_url(loc)?),
        SourceKind::Douyin => douyin::offline(&parse_url(loc)?, settings),
        SourceKind::Onedrive => onedrive::offline(&parse_url(loc)?, key, settings),
        SourceKind::Local => local::offline(&loc.location),
    }
}

/// The host a source's work is counted under by per-host politeness (before any
/// redirect): the link's own host, or the lookup host for links that need one.
pub fn primary_host(loc: &Locator, settings: &SourceSettings) -> String {
    match resolve_offline(loc, None, settings) {
        Ok(o) => o.host,
        Err(_) => match Url::parse(&loc.location) {
            Ok(u) => host_key(&u),
            Err(_) => String::new(),
        },
    }
}

fn parse_url(loc: &Locator) -> Result<Url, Failure> {
    Url::parse(&loc.location).map_err(|e| {
        Failure::new(
            ErrorClass::BadUrl,
            format!(
                "invalid URL '{}': {e}",
                pmv_core::redact::show_url(&loc.location)
            ),
        )
    })
}

/// `url` with its scheme, host and port (and a path prefix) taken from `base`: how a
/// configured base URL stands in for a platform's host.
pub fn rebase(url: &Url, base: &Url) -> Url {
    let mut out = base.clone();
    let prefix = base.path().trim_end_matches('/');
    out.set_path(&format!("{prefix}{}", url.path()));
    out.set_query(url.query());
    out.set_fragment(None);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(u: &str) -> SourceKind {
        SourceKind::classify_url(&Url::parse(u).unwrap())
    }

    #[test]
    fn hosts_are_classified_by_whole_labels() {
        assert_eq!(
            kind("https://www.douyin.com/video/7100000000000000000"),
            SourceKind::Douyin
        );
        assert_eq!(kind("https://v.douyin.com/iRNBho6u/"), SourceKind::Douyin);
        assert_eq!(
            kind(
                "https://aweme.snssdk.com/aweme/v1/play/?video_id=v0d00fg10000cc0bltrc77ud5sllkjug"
            ),
            SourceKind::Douyin
        );
        assert_eq!(
            kind("https://www.iesdouyin.com/share/video/7100/"),
            SourceKind::Douyin
        );
        assert_eq!(kind("https://notdouyin.com/x.mp4"), SourceKind::Direct);
        assert_eq!(
            kind("https://v26.douyinvod.com/abc/video.mp4"),
            SourceKind::Direct
        );
        assert_eq!(kind("https://1drv.ms/f/s!AbCdEf"), SourceKind::Onedrive);
        assert_eq!(
            kind("https://contoso-my.sharepoint.com/:f:/g/x"),
            SourceKind::Onedrive
        );
        assert_eq!(
            kind("https://p5-v1.xpccdn.com/099945958_main_xl.mp4"),
            SourceKind::Direct
        );
        assert_eq!(kind("http://127.0.0.1:8080/a.mp4"), SourceKind::Direct);
    }

    #[test]
    fn bases_replace_hosts_and_keep_paths() {
        let base = Url::parse("http://127.0.0.1:8080/douyin").unwrap();
        let link = Url::parse("https://aweme.snssdk.com/aweme/v1/play/?video_id=abc&ratio=720p#x")
            .unwrap();
        assert_eq!(
            rebase(&link, &base).as_str(),
            "http://127.0.0.1:8080/douyin/aweme/v1/play/?video_id=abc&ratio=720p"
        );
        let base = Url::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            rebase(&link, &base).as_str(),
            "http://127.0.0.1:8080/aweme/v1/play/?video_id=abc&ratio=720p"
        );
    }

    #[test]
    fn names_round_trip() {
        for k in SourceKind::ALL {
            assert_eq!(k.as_str().parse::<SourceKind>().unwrap(), k);
        }
        assert!("ftp".parse::<SourceKind>().is_err());
    }
}
