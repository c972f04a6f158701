//! Listing a OneDrive share through one of two lookup paths, and which one answered.
//!
//! Owns the paths and the switch between them: first the personal API
//! (`<onedrive_personal_api>/shares/<id>/driveitem`, its `/children` and sub-folders'
//! `/drives/<drive>/items/<id>/children`) with an anonymous token
//! (`Authorization: Badger <token>`, `Prefer: autoredeem`), the share id taken from the
//! `redeem` value of the link or of where a `1drv.ms` short link redirects; then, when
//! no token can be had or the personal API refuses a renewed token, the API of old
//! (`<onedrive_api>/shares/<id>/driveItem`) without credentials. Owns the paging rules
//! (`@odata.nextLink` only on the API's own host and scheme, a page never twice, at most
//! [`MAX_PAGES`] pages and [`MAX_ENTRIES`] entries), the share encoding of the API of old
//! (`u!` + unpadded base64url of the link) and what a listing holds ([`Listing`],
//! [`Listed`]). Requests
//! carrying a token never follow a redirect, so the token goes to the configured host
//! only. It never downloads a file and never shows the token.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use base64::Engine as _;
use serde_json::Value;
use url::Url;

use super::badger::Token;
use crate::net::client::{Request, check_url, host_key};
use crate::net::{ErrorClass, Failure};
use crate::source::{Resolver, rebase};
use pmv_core::redact::show_url;

/// `u!` + base64url of the link without padding: how the API names a share.
pub fn share_id(share: &Url) -> String {
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(share.as_str());
    format!("u!{enc}")
}

/// `base` with path segments added (each percent-encoded) and a query.
pub(super) fn api_url(base: &Url, tail: &[&str], query: Option<&str>) -> Url {
    let mut u = base.clone();
    {
        let mut segs = u.path_segments_mut().expect("http URL");
        segs.pop_if_empty();
        for t in tail {
            segs.push(t);
        }
    }
    u.set_query(query);
    u
}

/// One listed file.
#[derive(Debug, Clone)]
pub struct Listed {
    /// OneDrive's item id.
    pub id: String,
    /// The file's name as listed (only ever compared).
    pub name: String,
    /// The listed size in bytes.
    pub size: Option<u64>,
    /// `file.hashes.sha1Hash`.
    pub sha1: Option<String>,
    /// `file.hashes.quickXorHash`.
    pub quickxor: Option<String>,
    /// `@content.downloadUrl`, else the API's `/content` address.
    pub download: Url,
}

/// A share's files by lower-cased name.
#[derive(Debug)]
pub struct Listing {
    /// The share is a folder (else a file).
    pub folder: bool,
    /// The files by lower-cased name.
    pub files: HashMap<String, Listed>,
    /// Answers read (the item and every page).
    pub pages: usize,
    /// Names listed more than once (in different sub-folders): not used.
    pub ambiguous: usize,
    /// A public server answered a page: the download addresses it names are fetched
    /// with [`Request::public`](crate::net::client::Request::public).
    pub public: bool,
    /// The lookup path that listed the share.
    pub path: Lookup,
    /// Why the anonymous-token path gave way, when the API of old listed the share.
    pub gave_way: Option<String>,
    pub(super) fetched: Instant,
}

/// Largest API answer read.
const MAX_PAGE: usize = 64 << 20;
/// Pages read for one share before giving up (a loop guard).
pub const MAX_PAGES: usize = 10_000;
/// Entries read for one share before giving up.
pub const MAX_ENTRIES: usize = 2_000_000;
/// How deep sub-folders are listed.
const MAX_DEPTH: usize = 4;
/// Redirects of a short link followed to find its share token.
const MAX_SHORT_HOPS: usize = 5;
/// Longest `redeem` value taken as a share token.
const MAX_REDEEM: usize = 4096;

/// Which lookup path listed a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The personal API with an anonymous token.
    Badger,
    /// The API of old, without credentials.
    Api,
}

impl Lookup {
    /// `badger` or `api`.
    pub fn name(self) -> &'static str {
        match self {
            Lookup::Badger => "badger",
            Lookup::Api => "api",
        }
    }
}

/// How a path ended without a listing.
enum Miss {
    /// The next path is tried (why this one gave way).
    GiveWay(String),
    /// The share's failure, reported as it is.
    Failed(Failure),
}

impl From<Failure> for Miss {
    fn from(f: Failure) -> Miss {
        Miss::Failed(f)
    }
}

/// One API as one listing asks it.
struct Api<'a> {
    r: &'a Resolver,
    path: Lookup,
    base: &'a Url,
    /// The personal API's token was renewed once in this listing.
    renewed: bool,
    /// The token just renewed, for the retry.
    renewal: Option<Token>,
}

impl Api<'_> {
    /// A JSON answer, and whether a public server gave it.
    async fn get(&mut self, url: &Url) -> Result<(Value, bool), Miss> {
        loop {
            let mut headers = vec![("Accept".to_owned(), "application/json".to_owned())];
            let token = match self.path {
                Lookup::Api => None,
                Lookup::Badger => {
                    let t =
                        match self.renewal.take() {
                            Some(t) => t,
                            None => {
                                self.r.onedrive.badger.current(self.r).await.map_err(|f| {
                                    Miss::GiveWay(format!("no anonymous token: {f}"))
                                })?
                            }
                        };
                    headers.push(("Authorization".to_owned(), t.authorization()));
                    headers.push(("Prefer".to_owned(), "autoredeem".to_owned()));
                    Some(t)
                }
            };
            let req = Request {
                url: url.clone(),
                range_from: None,
                if_range: None,
                headers: &headers,
                // A token goes to the configured host only.
                follow: token.is_none(),
                public: false,
                cookies: None,
            };
            let resp = self.r.client().send(&req).await?;
            if let Some(t) = token {
                match resp.status {
                    401 => {
                        self.refused(&t, url).await?;
                        continue;
                    }
                    301 | 302 | 303 | 307 | 308 => {
                        return Err(Miss::GiveWay(format!(
                            "the personal API redirects {} (HTTP {}; not followed with a token)",
                            show_url(url.as_str()),
                            resp.status
                        )));
                    }
                    _ => {}
                }
            }
            if let Some(f) = resp.failure() {
                return Err(f.into());
            }
            let public = resp.public;
            let text = resp.text(MAX_PAGE).await?;
            return serde_json::from_str(&text)
                .map(|v| (v, public))
                .map_err(|e| {
                    Failure::new(
                        ErrorClass::BadResponse,
                        format!(
                            "OneDrive answer from {} is not JSON: {e}",
                            show_url(url.as_str())
                        ),
                    )
                    .into()
                });
        }
    }

    /// The personal API answered 401 to `t`: a new token once per listing, then the
    /// next path.
    async fn refused(&mut self, t: &Token, url: &Url) -> Result<(), Miss> {
        if self.renewed {
            return Err(Miss::GiveWay(format!(
                "the personal API refused a renewed anonymous token (HTTP 401 from {})",
                show_url(url.as_str())
            )));
        }
        self.renewed = true;
        tracing::info!(
            serial = t.serial(),
            "the personal OneDrive API refused the anonymous token; taking a new one"
        );
        let new = self
            .r
            .onedrive
            .badger
            .renew(self.r, t)
            .await
            .map_err(|f| Miss::GiveWay(format!("no new anonymous token: {f}")))?;
        // The retry goes with it, whatever expiry it claims.
        self.renewal = Some(new);
        Ok(())
    }

    fn url(&self, tail: &[&str], query: Option<&str>) -> Url {
        api_url(self.base, tail, query)
    }
}

/// Lists a share: the personal API with an anonymous token first, the API of old
/// without credentials when that path gives way.
pub(super) async fn list(r: &Resolver, share: &Url) -> Result<Listing, Failure> {
    let s = r.settings();
    let mut first = Api {
        r,
        path: Lookup::Badger,
        base: &s.onedrive_personal_api,
        renewed: false,
        renewal: None,
    };
    let id = badger_share_id(r, share).await;
    let why = match walk(&mut first, share, &id).await {
        Ok(l) => return Ok(l),
        Err(Miss::Failed(f)) => return Err(f),
        Err(Miss::GiveWay(why)) => why,
    };
    tracing::warn!(
        share = %show_url(share.as_str()),
        reason = %why,
        "OneDrive's anonymous-token path gave way; asking the API of old without credentials"
    );
    let mut old = Api {
        r,
        path: Lookup::Api,
        base: &s.onedrive_api,
        renewed: false,
        renewal: None,
    };
    match walk(&mut old, share, &share_id(share)).await {
        Ok(mut l) => {
            l.gave_way = Some(why);
            Ok(l)
        }
        Err(miss) => {
            let f = match miss {
                Miss::Failed(f) => f,
                Miss::GiveWay(w) => Failure::new(ErrorClass::BadResponse, w),
            };
            Err(Failure::new(
                f.class,
                format!(
                    "{} (after the anonymous-token path gave way: {why})",
                    f.message
                ),
            )
            .with_retry_after(f.retry_after))
        }
    }
}

/// Lists a share through one API: the item itself, then (for a folder) its children
/// page by page and its sub-folders.
async fn walk(api: &mut Api<'_>, share: &Url, id: &str) -> Result<Listing, Miss> {
    let item = match api.path {
        Lookup::Badger => "driveitem",
        Lookup::Api => "driveItem",
    };
    let root_url = api.url(&["shares", id, item], None);
    let (root, public) = api.get(&root_url).await?;
    let mut listing = Listing {
        folder: root.get("folder").is_some(),
        files: HashMap::new(),
        pages: 1,
        ambiguous: 0,
        public,
        path: api.path,
        gave_way: None,
        fetched: Instant::now(),
    };
    if !listing.folder {
        let file = listed(&root, api).ok_or_else(|| {
            Failure::new(
                ErrorClass::BadResponse,
                format!(
                    "share {} is neither a file nor a folder with a download address",
                    show_url(share.as_str())
                ),
            )
        })?;
        listing.files.insert(file.name.to_lowercase(), file);
        return Ok(listing);
    }
    let mut folders: Vec<(Url, usize)> = vec![(
        api.url(&["shares", id, item, "children"], Some("$top=1000")),
        0,
    )];
    let mut seen_pages: HashSet<String> = HashSet::new();
    let mut entries = 0usize;
    while let Some((mut next, depth)) = folders.pop() {
        loop {
            if listing.pages > MAX_PAGES || !seen_pages.insert(next.to_string()) {
                return Err(Failure::new(
                    ErrorClass::BadResponse,
                    format!(
                        "listing of {} does not end (page {} repeats or more than {MAX_PAGES} pages)",
                        show_url(share.as_str()),
                        show_url(next.as_str())
                    ),
                )
                .into());
            }
            let (page, public) = api.get(&next).await?;
            listing.public |= public;
            listing.pages += 1;
            let children = page.get("value").and_then(Value::as_array).ok_or_else(|| {
                Failure::new(
                    ErrorClass::BadResponse,
                    format!(
                        "listing page {} has no 'value' array",
                        show_url(next.as_str())
                    ),
                )
            })?;
            entries += children.len();
            if entries > MAX_ENTRIES {
                return Err(Failure::new(
                    ErrorClass::BadResponse,
                    format!(
                        "listing of {} has more than {MAX_ENTRIES} entries",
                        show_url(share.as_str())
                    ),
                )
                .into());
            }
            for child in children {
                if child.get("folder").is_some() {
                    if depth < MAX_DEPTH
                        && let (Some(drive), Some(item)) = (
                            child
                                .get("parentReference")
                                .and_then(|p| p.get("driveId"))
                                .and_then(Value::as_str),
                            child.get("id").and_then(Value::as_str),
                        )
                    {
                        folders.push((
                            api.url(
                                &["drives", drive, "items", item, "children"],
                                Some("$top=1000"),
                            ),
                            depth + 1,
                        ));
                    }
                    continue;
                }
                if let Some(file) = listed(child, api) {
                    match listing.files.entry(file.name.to_lowercase()) {
                        std::collections::hash_map::Entry::Occupied(_) => {
                            listing.ambiguous += 1;
                            tracing::warn!(name = %file.name, "a shared folder lists this name twice; the first is used");
                        }
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(file);
                        }
                    }
                }
            }
            match page.get("@odata.nextLink").and_then(Value::as_str) {
                Some(link) => next = next_page(link, api.base)?,
                None => break,
            }
        }
    }
    tracing::info!(
        share = %show_url(share.as_str()),
        path = api.path.name(),
        files = listing.files.len(),
        pages = listing.pages,
        "OneDrive share listed"
    );
    Ok(listing)
}

/// A next-page link, which must stay on the API's host and scheme.
fn next_page(link: &str, base: &Url) -> Result<Url, Failure> {
    let u = Url::parse(link).map_err(|e| {
        Failure::new(
            ErrorClass::BadResponse,
            format!("next page link '{}': {e}", show_url(link)),
        )
    })?;
    if host_key(&u) != host_key(base) || u.scheme() != base.scheme() {
        return Err(Failure::new(
            ErrorClass::BadResponse,
            format!(
                "next page link {} leaves the API host {}",
                show_url(link),
                host_key(base)
            ),
        ));
    }
    Ok(u)
}

/// A file entry of a listing; `None` for entries that are not usable files. The
/// download address is `@content.downloadUrl` (else `@microsoft.graph.downloadUrl`);
/// without either, the API of old's `/content` address (the personal API's needs the
/// token, which a download never carries: such an entry is not usable).
fn listed(v: &Value, api: &Api<'_>) -> Option<Listed> {
    listed_from(v, api.path, api.base)
}

pub(super) fn listed_from(v: &Value, path: Lookup, base: &Url) -> Option<Listed> {
    let file = v.get("file")?;
    let name = v.get("name")?.as_str()?.to_owned();
    let id = v.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    let hashes = file.get("hashes");
    let hash = |k: &str| {
        hashes
            .and_then(|h| h.get(k))
            .and_then(Value::as_str)
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
    };
    let given = v
        .get("@content.downloadUrl")
        .or_else(|| v.get("@microsoft.graph.downloadUrl"))
        .and_then(Value::as_str);
    let download = match (given, path) {
        (Some(u), _) => Url::parse(u).ok()?,
        (None, Lookup::Badger) => return None,
        (None, Lookup::Api) => {
            let drive = v
                .get("parentReference")
                .and_then(|p| p.get("driveId"))
                .and_then(Value::as_str)?;
            if id.is_empty() {
                return None;
            }
            api_url(base, &["drives", drive, "items", &id, "content"], None)
        }
    };
    Some(Listed {
        id,
        name,
        size: v.get("size").and_then(Value::as_u64),
        sha1: hash("sha1Hash"),
        quickxor: hash("quickXorHash"),
        download,
    })
}

/// The share id the personal API is asked with: `u!` + the link's `redeem` value; for
/// a `1drv.ms` short link, that of where it redirects; else the link encoded as the
/// API of old encodes it.
async fn badger_share_id(r: &Resolver, share: &Url) -> String {
    if let Some(id) = redeem_id(share) {
        return id;
    }
    if share.host_str() == Some("1drv.ms") {
        match follow_short(r, share).await {
            Ok(Some(id)) => return id,
            Ok(None) => {}
            Err(f) => tracing::warn!(
                share = %show_url(share.as_str()),
                error = %f,
                "a OneDrive short link could not be followed; the link itself names the share"
            ),
        }
    }
    share_id(share)
}

/// Follows a short link's redirects (without fetching the last one) until one names
/// a `redeem` share token.
async fn follow_short(r: &Resolver, share: &Url) -> Result<Option<String>, Failure> {
    let mut url = match &r.settings().onedrive_short {
        Some(base) => rebase(share, base),
        None => share.clone(),
    };
    let mut public = false;
    for _ in 0..MAX_SHORT_HOPS {
        let req = Request {
            url: url.clone(),
            range_from: None,
            if_range: None,
            headers: &[],
            follow: false,
            public,
            cookies: None,
        };
        let resp = r.client().send(&req).await?;
        if !matches!(resp.status, 301 | 302 | 303 | 307 | 308) {
            return Ok(None);
        }
        let next = resp
            .header("location")
            .and_then(|l| resp.url.join(l.trim()).ok())
            .ok_or_else(|| {
                Failure::new(
                    ErrorClass::BadResponse,
                    format!(
                        "redirect without a usable Location from {}",
                        show_url(resp.url.as_str())
                    ),
                )
            })?;
        check_url(&next)?;
        if let Some(id) = redeem_id(&next) {
            return Ok(Some(id));
        }
        public |= resp.public;
        url = next;
    }
    Ok(None)
}

/// `u!` + a link's `redeem` value (base64url, padding dropped), when it has a usable
/// one.
pub(super) fn redeem_id(url: &Url) -> Option<String> {
    let (_, v) = url.query_pairs().find(|(k, _)| k == "redeem")?;
    let v = v.trim_end_matches('=');
    let ok = !v.is_empty()
        && v.len() <= MAX_REDEEM
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| format!("u!{v}"))
}
