//! The `onedrive` resolver: a shared OneDrive folder or file, to a download address
//! and the size and hashes OneDrive lists for it.
//!
//! Owns the share link (the `#<name>` fragment naming a file of a folder), the listing
//! cache (one listing per share link per run, renewed before OneDrive's download
//! addresses expire, a failed one not asked again for a while) and the mapping of an
//! item to a listed file: the link's `#<name>` fragment, else `<item id>.mp4`, compared
//! without case as OneDrive does. Listed names are only ever compared, never used as
//! paths. Which API is asked, and how, is the `listing` module's; the anonymous token is
//! the `badger` module's ([`Badger`]).
//!
//! Public facts this follows: anonymous calls to `api.onedrive.com/v1.0/shares/...`
//! (and to Graph) answer 401 `unauthenticated` since late 2024 (OneDrive API docs
//! issues; felixrieseberg/onedrive-link issue 1, 2024-10 to 2025-05); OneDrive's web
//! app, and public downloaders since, take an anonymous "Badger" token from
//! `api-badgerp.svc.ms/v1.0/token` (answer `token`, `expiryTimeUtc`; about a week)
//! and ask `my.microsoftpersonalcontent.com/_api/v2.0/shares/u!<redeem>/driveitem`
//! with `Authorization: Badger <token>` and `Prefer: autoredeem`, where `<redeem>` is
//! the `redeem` query value of the new-format link a `1drv.ms` short link redirects
//! to (`/x/c/<cid>/<resid>?...&redeem=...`). The shares API's encoding rule and
//! `driveItem` shape (`@content.downloadUrl`, `@odata.nextLink`, `size`,
//! `file.hashes.sha1Hash` and `quickXorHash`) are those of OneDrive's API reference.

mod badger;
mod listing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use url::Url;

use super::{
    Expected, Offline, OfflinePath, Resolved, Resolver, SourceKind, SourceSettings, Target,
};
use crate::net::client::{check_url, host_key};
use crate::net::{ErrorClass, Failure};
pub use badger::{Badger, Token};
use listing::api_url;
pub use listing::{Listed, Listing, Lookup, MAX_ENTRIES, MAX_PAGES, share_id};
use pmv_core::redact::show_url;

/// A listing is renewed after this long: OneDrive's download addresses last about an
/// hour.
const LISTING_TTL: Duration = Duration::from_secs(40 * 60);
/// A failed listing is not asked again for this long (all items of the folder wait).
const FAILURE_TTL: Duration = Duration::from_secs(20);

/// A share link with the optional file name after `#`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareLink {
    /// The link without its fragment.
    pub share: Url,
    /// The file of a shared folder the fragment names.
    pub name: Option<String>,
}

/// Splits a link into the share and the file name after `#`.
pub fn parse(url: &Url) -> ShareLink {
    let mut share = url.clone();
    let name = url.fragment().filter(|f| !f.is_empty()).map(percent_decode);
    share.set_fragment(None);
    ShareLink { share, name }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// The share id the personal API is asked with when it is known without any request:
/// `u!` + the link's `redeem` value; `None` for links without one.
pub fn redeem_share_id(share: &Url) -> Option<String> {
    listing::redeem_id(share)
}

/// The name an item's file has in a shared folder.
pub fn file_name(link: &ShareLink, key: &str) -> String {
    link.name.clone().unwrap_or_else(|| format!("{key}.mp4"))
}

/// Listings shared by every job of a run, and the run's anonymous token.
#[derive(Default)]
pub struct Listings {
    entries: Mutex<HashMap<String, Entry>>,
    badger: Badger,
}

#[derive(Default, Clone)]
struct Entry {
    cell: Arc<tokio::sync::OnceCell<Arc<Listing>>>,
    failed: Option<(Instant, Failure)>,
}

impl Listings {
    /// Drops listings old enough for their download addresses to expire.
    pub fn expire(&self) {
        let mut map = self.entries.lock().unwrap();
        map.retain(|_, e| {
            e.cell
                .get()
                .is_none_or(|l| l.fetched.elapsed() < LISTING_TTL)
        });
    }

    async fn get(&self, r: &Resolver, share: &Url) -> Result<Arc<Listing>, Failure> {
        let key = share.to_string();
        let cell = {
            let mut map = self.entries.lock().unwrap();
            let e = map.entry(key.clone()).or_default();
            if let Some(l) = e.cell.get()
                && l.fetched.elapsed() >= LISTING_TTL
            {
                *e = Entry::default();
            }
            if let Some((at, f)) = &e.failed {
                if at.elapsed() < FAILURE_TTL {
                    return Err(f.clone());
                }
                e.failed = None;
            }
            Arc::clone(&e.cell)
        };
        let list = || async { listing::list(r, share).await.map(Arc::new) };
        match cell.get_or_try_init(list).await {
            Ok(l) => Ok(Arc::clone(l)),
            Err(f) => {
                let mut map = self.entries.lock().unwrap();
                map.entry(key).or_default().failed = Some((Instant::now(), f.clone()));
                Err(f)
            }
        }
    }
}

/// Resolves a share link (with the item's key, for a folder) to the listed file.
pub async fn resolve(r: &Resolver, url: &Url, key: Option<&str>) -> Result<Resolved, Failure> {
    let link = parse(url);
    check_url(&link.share)?;
    let listing = r.onedrive.get(r, &link.share).await?;
    let (name, file) = if listing.folder {
        let name = match (&link.name, key) {
            (Some(n), _) => n.clone(),
            (None, Some(k)) => file_name(&link, k),
            (None, None) => {
                return Err(Failure::new(
                    ErrorClass::NotListed,
                    format!(
                        "{} is a shared folder of {} files: name one with '#<file name>' or give the item id",
                        show_url(link.share.as_str()),
                        listing.files.len()
                    ),
                ));
            }
        };
        let file = listing.files.get(&name.to_lowercase()).ok_or_else(|| {
            Failure::new(
                ErrorClass::NotListed,
                format!(
                    "the shared folder {} does not list '{}' ({} files listed)",
                    show_url(link.share.as_str()),
                    show_url(&name),
                    listing.files.len()
                ),
            )
        })?;
        (name, file)
    } else {
        let file = listing.files.values().next().ok_or_else(|| {
            Failure::new(
                ErrorClass::BadResponse,
                format!("share {} lists no file", show_url(link.share.as_str())),
            )
        })?;
        (file.name.clone(), file)
    };
    Ok(Resolved {
        kind: SourceKind::Onedrive,
        canonical_id: Some(file.id.clone()),
        target: Target::Http {
            url: file.download.clone(),
            headers: vec![],
            from_public: listing.public,
        },
        via: if listing.folder {
            "folder-listing"
        } else {
            "file-link"
        },
        expected: Expected {
            size: file.size,
            sha256: None,
            sha1: file.sha1.clone(),
            quickxor: file.quickxor.clone(),
        },
        trail: vec![
            match &listing.gave_way {
                None => "listed through the personal API with an anonymous token (badger)".into(),
                Some(why) => format!(
                    "listed through the API of old without credentials (api): the anonymous-token path gave way: {why}"
                ),
            },
            format!(
                "{} '{}' listed in {} page(s): {} bytes, sha1 {}, quickXorHash {}",
                if listing.folder {
                    "folder lists"
                } else {
                    "file"
                },
                show_url(&name),
                listing.pages,
                file.size.map_or("?".into(), |s| s.to_string()),
                file.sha1.as_deref().unwrap_or("-"),
                file.quickxor.as_deref().unwrap_or("-"),
            ),
        ],
    })
}

/// Says what resolving a share link would do: the lookup paths in order and what is
/// checked, without any network.
pub fn offline(url: &Url, key: Option<&str>, s: &SourceSettings) -> Result<Offline, Failure> {
    let link = parse(url);
    check_url(&link.share)?;
    let old_id = share_id(&link.share);
    let redeem = redeem_share_id(&link.share);
    let short = redeem.is_none() && link.share.host_str() == Some("1drv.ms");
    let badger_id = redeem.clone().unwrap_or_else(|| old_id.clone());
    let badger = api_url(
        &s.onedrive_personal_api,
        &["shares", &badger_id, "driveitem"],
        None,
    );
    let old = api_url(&s.onedrive_api, &["shares", &old_id, "driveItem"], None);
    let name = match (&link.name, key) {
        (Some(n), _) => format!("'{n}' (from the link)"),
        (None, Some(k)) => format!("'{k}.mp4'"),
        (None, None) => "'<item id>.mp4'".into(),
    };
    let id_from = if redeem.is_some() {
        "the link's redeem value"
    } else if short {
        "the redeem value of where the short link redirects (else the link itself)"
    } else {
        "the link itself"
    };
    Ok(Offline {
        kind: SourceKind::Onedrive,
        canonical_id: None,
        download_url: None,
        lookup_url: Some(badger.to_string()),
        host: host_key(&badger),
        note: format!(
            "first the personal API with an anonymous token from {} (share id from {id_from}), \
             then, if no token can be had or a renewed one is refused, {} without credentials \
             (share {old_id}): a folder is listed (all pages) and {name} looked up; a file link \
             is the file itself; the listed size, sha1 and quickXorHash are checked",
            show_url(s.onedrive_badger_token.as_str()),
            host_key(&s.onedrive_api),
        ),
        paths: vec![
            OfflinePath {
                name: Lookup::Badger.name(),
                lookup_url: badger.to_string(),
            },
            OfflinePath {
                name: Lookup::Api.name(),
                lookup_url: old.to_string(),
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::listing::listed_from;
    use super::*;
    use serde_json::Value;

    #[test]
    fn share_ids_follow_the_api_rule() {
        // The example from the OneDrive API documentation.
        let u = Url::parse(
            "https://onedrive.live.com/redir?resid=1231244193912!12&authKey=1201919!12921!1",
        )
        .unwrap();
        assert_eq!(
            share_id(&u),
            "u!aHR0cHM6Ly9vbmVkcml2ZS5saXZlLmNvbS9yZWRpcj9yZXNpZD0xMjMxMjQ0MTkzOTEyITEyJmF1dGhLZXk9MTIwMTkxOSExMjkyMSEx"
        );
    }

    #[test]
    fn fragments_name_the_file() {
        let l = parse(&Url::parse("https://1drv.ms/f/s!AbCd#v0d00fg%20x.mp4").unwrap());
        assert_eq!(l.share.as_str(), "https://1drv.ms/f/s!AbCd");
        assert_eq!(l.name.as_deref(), Some("v0d00fg x.mp4"));
        assert_eq!(file_name(&l, "k"), "v0d00fg x.mp4");
        let l = parse(&Url::parse("https://1drv.ms/f/s!AbCd").unwrap());
        assert_eq!(file_name(&l, "v0abc"), "v0abc.mp4");
    }

    #[test]
    fn api_urls_keep_the_base_path() {
        let base = Url::parse("http://127.0.0.1:5/v1.0/").unwrap();
        let u = api_url(
            &base,
            &["shares", "u!abc", "driveItem", "children"],
            Some("$top=1000"),
        );
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:5/v1.0/shares/u!abc/driveItem/children?$top=1000"
        );
        // A hostile id stays one path segment.
        let u = api_url(&base, &["shares", "../x/y?z"], None);
        assert_eq!(u.as_str(), "http://127.0.0.1:5/v1.0/shares/..%2Fx%2Fy%3Fz");
    }

    #[test]
    fn new_format_links_name_their_share_by_the_redeem_value() {
        let u = Url::parse(
            "https://onedrive.live.com/x/c/ABCDEF0123456789/EQabc?e=Xy12&redeem=aHR0cHM6Ly8xZHJ2Lm1zL2YvYy9hYmM=",
        )
        .unwrap();
        assert_eq!(
            redeem_share_id(&u).as_deref(),
            Some("u!aHR0cHM6Ly8xZHJ2Lm1zL2YvYy9hYmM")
        );
        for no in [
            "https://1drv.ms/f/s!AbCd",
            "https://onedrive.live.com/x/c/A/B?redeem=",
            "https://onedrive.live.com/x/c/A/B?redeem=a%2F..%2Fb",
            "https://onedrive.live.com/x/c/A/B?redeem=a+b",
        ] {
            assert_eq!(redeem_share_id(&Url::parse(no).unwrap()), None, "{no}");
        }
    }

    #[test]
    fn offline_answers_name_both_paths_in_order() {
        let s = SourceSettings::default();
        let o = offline(
            &Url::parse("https://1drv.ms/f/s!AbCd#a.mp4").unwrap(),
            None,
            &s,
        )
        .unwrap();
        let names: Vec<_> = o.paths.iter().map(|p| p.name).collect();
        assert_eq!(names, ["badger", "api"]);
        assert!(
            o.paths[0]
                .lookup_url
                .starts_with("https://my.microsoftpersonalcontent.com/_api/v2.0/shares/u!"),
            "{o:?}"
        );
        assert!(o.paths[0].lookup_url.ends_with("/driveitem"));
        assert!(
            o.paths[1]
                .lookup_url
                .starts_with("https://api.onedrive.com/v1.0/shares/u!")
        );
        assert_eq!(
            o.lookup_url.as_deref(),
            Some(o.paths[0].lookup_url.as_str())
        );
        assert_eq!(o.host, "my.microsoftpersonalcontent.com:443");
        assert!(o.note.contains("short link redirects"), "{}", o.note);
        let o = offline(
            &Url::parse("https://onedrive.live.com/x/c/A/B?redeem=UmVk").unwrap(),
            None,
            &s,
        )
        .unwrap();
        assert!(o.paths[0].lookup_url.contains("/shares/u!UmVk/driveitem"));
    }

    #[test]
    fn listed_entries_need_a_file_facet_and_a_download() {
        let base = SourceSettings::default().onedrive_api;
        let v: Value = serde_json::from_str(
            r#"{"id":"A!1","name":"x.mp4","size":5,"file":{"hashes":{"sha1Hash":"AB","quickXorHash":"q="}},"@content.downloadUrl":"https://dl.example/x"}"#,
        )
        .unwrap();
        let f = listed_from(&v, Lookup::Api, &base).unwrap();
        assert_eq!(
            (f.size, f.sha1.as_deref(), f.quickxor.as_deref()),
            (Some(5), Some("AB"), Some("q="))
        );
        let folder: Value =
            serde_json::from_str(r#"{"id":"A!2","name":"sub","folder":{}}"#).unwrap();
        assert!(listed_from(&folder, Lookup::Api, &base).is_none());
        let via_api: Value = serde_json::from_str(
            r#"{"id":"A!3","name":"y.mp4","file":{},"parentReference":{"driveId":"d1"}}"#,
        )
        .unwrap();
        assert_eq!(
            listed_from(&via_api, Lookup::Api, &base)
                .unwrap()
                .download
                .as_str(),
            "https://api.onedrive.com/v1.0/drives/d1/items/A!3/content"
        );
        // The personal API's /content needs the token, which downloads never carry.
        assert!(listed_from(&via_api, Lookup::Badger, &base).is_none());
        let graph: Value = serde_json::from_str(
            r#"{"id":"A!4","name":"z.mp4","file":{},"@microsoft.graph.downloadUrl":"https://dl.example/z"}"#,
        )
        .unwrap();
        assert_eq!(
            listed_from(&graph, Lookup::Badger, &base)
                .unwrap()
                .download
                .as_str(),
            "https://dl.example/z"
        );
    }
}
