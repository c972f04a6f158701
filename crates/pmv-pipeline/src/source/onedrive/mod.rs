//! The `onedrive` resolver: a shared OneDrive folder or file, to a download address
//! and the size and hashes OneDrive lists for it.
//!
//! Owns the share encoding (`u!` + unpadded base64url of the link), the API requests
//! (`/shares/<id>/driveItem`, then for a folder `/shares/<id>/driveItem/children`,
//! following `@odata.nextLink` pages, and sub-folders through
//! `/drives/<drive>/items/<id>/children`), the listing cache (one listing per share
//! link per run, renewed before OneDrive's download addresses expire) and the mapping
//! of an item to a listed file: the link's `#<name>` fragment, else `<item id>.mp4`,
//! compared without case as OneDrive does. Listed names are only ever compared, never
//! used as paths; next-page links must stay on the API's host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use url::Url;

use super::{Expected, Offline, Resolved, Resolver, SourceKind, SourceSettings, Target};
use crate::net::client::{check_url, host_key};
use crate::net::{ErrorClass, Failure};
use pmv_core::redact::show_url;

/// A listing is renewed after this long: OneDrive's download addresses last about an
/// hour.
const LISTING_TTL: Duration = Duration::from_secs(40 * 60);
/// A failed listing is not asked again for this long (all items of the folder wait).
const FAILURE_TTL: Duration = Duration::from_secs(20);
/// Largest API answer read.
const MAX_PAGE: usize = 64 << 20;
/// Pages read for one folder before giving up (a loop guard).
const MAX_PAGES: usize = 100_000;
/// How deep sub-folders are listed.
const MAX_DEPTH: usize = 4;

/// A share link with the optional file name after `#`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareLink {
    pub share: Url,
    pub name: Option<String>,
}

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

/// `u!` + base64url of the link without padding: how the API names a share.
pub fn share_id(share: &Url) -> String {
    let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(share.as_str());
    format!("u!{enc}")
}

fn api_url(s: &SourceSettings, tail: &[&str], query: Option<&str>) -> Url {
    let mut u = s.onedrive_api.clone();
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

/// The name an item's file has in a shared folder.
pub fn file_name(link: &ShareLink, key: &str) -> String {
    link.name.clone().unwrap_or_else(|| format!("{key}.mp4"))
}

/// One listed file.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub name: String,
    pub size: Option<u64>,
    pub sha1: Option<String>,
    pub quickxor: Option<String>,
    /// `@content.downloadUrl`, else the API's `/content` address.
    pub download: Url,
}

/// A share's files by lower-cased name.
#[derive(Debug)]
pub struct Listing {
    pub folder: bool,
    pub files: HashMap<String, Listed>,
    pub pages: usize,
    /// Names listed more than once (in different sub-folders): not used.
    pub ambiguous: usize,
    /// A public server answered a page: the download addresses it names are fetched
    /// with [`Request::public`](crate::net::client::Request::public).
    pub public: bool,
    fetched: Instant,
}

/// Listings shared by every job of a run.
#[derive(Default)]
pub struct Listings {
    entries: Mutex<HashMap<String, Entry>>,
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
        match cell.get_or_try_init(|| list(r, share)).await {
            Ok(l) => Ok(Arc::clone(l)),
            Err(f) => {
                let mut map = self.entries.lock().unwrap();
                map.entry(key).or_default().failed = Some((Instant::now(), f.clone()));
                Err(f)
            }
        }
    }
}

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
        trail: vec![format!(
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
        )],
    })
}

/// Lists a share: the item itself, then (for a folder) its children page by page and
/// its sub-folders.
async fn list(r: &Resolver, share: &Url) -> Result<Arc<Listing>, Failure> {
    let s = r.settings();
    let id = share_id(share);
    let root_url = api_url(s, &["shares", &id, "driveItem"], None);
    let (root, public) = get_json(r, &root_url).await?;
    let mut listing = Listing {
        folder: root.get("folder").is_some(),
        files: HashMap::new(),
        pages: 1,
        ambiguous: 0,
        public,
        fetched: Instant::now(),
    };
    if !listing.folder {
        let file = listed(&root, s).ok_or_else(|| {
            Failure::new(
                ErrorClass::BadResponse,
                format!(
                    "share {} is neither a file nor a folder",
                    show_url(share.as_str())
                ),
            )
        })?;
        listing.files.insert(file.name.to_lowercase(), file);
        return Ok(Arc::new(listing));
    }
    let mut folders: Vec<(Url, usize)> = vec![(
        api_url(
            s,
            &["shares", &id, "driveItem", "children"],
            Some("$top=1000"),
        ),
        0,
    )];
    let mut seen_pages: std::collections::HashSet<String> = Default::default();
    while let Some((mut next, depth)) = folders.pop() {
        loop {
            if listing.pages > MAX_PAGES || !seen_pages.insert(next.to_string()) {
                return Err(Failure::new(
                    ErrorClass::BadResponse,
                    format!(
                        "listing of {} does not end (page {} repeats or too many pages)",
                        show_url(share.as_str()),
                        show_url(next.as_str())
                    ),
                ));
            }
            let (page, public) = get_json(r, &next).await?;
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
                            api_url(
                                s,
                                &["drives", drive, "items", item, "children"],
                                Some("$top=1000"),
                            ),
                            depth + 1,
                        ));
                    }
                    continue;
                }
                if let Some(file) = listed(child, s) {
                    let key = file.name.to_lowercase();
                    match listing.files.entry(key) {
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
                Some(link) => {
                    let u = Url::parse(link).map_err(|e| {
                        Failure::new(
                            ErrorClass::BadResponse,
                            format!("next page link '{}': {e}", show_url(link)),
                        )
                    })?;
                    if host_key(&u) != host_key(&s.onedrive_api)
                        || u.scheme() != s.onedrive_api.scheme()
                    {
                        return Err(Failure::new(
                            ErrorClass::BadResponse,
                            format!(
                                "next page link {} leaves the API host {}",
                                show_url(link),
                                host_key(&s.onedrive_api)
                            ),
                        ));
                    }
                    next = u;
                }
                None => break,
            }
        }
    }
    tracing::info!(share = %show_url(share.as_str()), files = listing.files.len(), pages = listing.pages, "OneDrive share listed");
    Ok(Arc::new(listing))
}

/// A JSON answer, and whether a public server gave it.
async fn get_json(r: &Resolver, url: &Url) -> Result<(Value, bool), Failure> {
    let headers = [("Accept".to_owned(), "application/json".to_owned())];
    let doc = r.client().get_text(url, &headers, MAX_PAGE).await?;
    let public = doc.public;
    serde_json::from_str(&doc.text)
        .map(|v| (v, public))
        .map_err(|e| {
            Failure::new(
                ErrorClass::BadResponse,
                format!(
                    "OneDrive answer from {} is not JSON: {e}",
                    show_url(url.as_str())
                ),
            )
        })
}

/// A file entry of a listing; `None` for entries that are not usable files.
fn listed(v: &Value, s: &SourceSettings) -> Option<Listed> {
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
    let download = match v.get("@content.downloadUrl").and_then(Value::as_str) {
        Some(u) => Url::parse(u).ok()?,
        None => {
            let drive = v
                .get("parentReference")
                .and_then(|p| p.get("driveId"))
                .and_then(Value::as_str)?;
            if id.is_empty() {
                return None;
            }
            api_url(s, &["drives", drive, "items", &id, "content"], None)
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

pub fn offline(url: &Url, key: Option<&str>, s: &SourceSettings) -> Result<Offline, Failure> {
    let link = parse(url);
    check_url(&link.share)?;
    let id = share_id(&link.share);
    let lookup = api_url(s, &["shares", &id, "driveItem"], None);
    let name = match (&link.name, key) {
        (Some(n), _) => format!("'{n}' (from the link)"),
        (None, Some(k)) => format!("'{k}.mp4'"),
        (None, None) => "'<item id>.mp4'".into(),
    };
    Ok(Offline {
        kind: SourceKind::Onedrive,
        canonical_id: None,
        download_url: None,
        lookup_url: Some(lookup.to_string()),
        host: host_key(&lookup),
        note: format!(
            "share {id}: a folder is listed (all pages) and {name} looked up; a file link is the file itself; \
             the listed size, sha1 and quickXorHash are checked"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let s = SourceSettings {
            onedrive_api: Url::parse("http://127.0.0.1:5/v1.0/").unwrap(),
            ..SourceSettings::default()
        };
        let u = api_url(
            &s,
            &["shares", "u!abc", "driveItem", "children"],
            Some("$top=1000"),
        );
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:5/v1.0/shares/u!abc/driveItem/children?$top=1000"
        );
    }

    #[test]
    fn listed_entries_need_a_file_facet_and_a_download() {
        let s = SourceSettings::default();
        let v: Value = serde_json::from_str(
            r#"{"id":"A!1","name":"x.mp4","size":5,"file":{"hashes":{"sha1Hash":"AB","quickXorHash":"q="}},"@content.downloadUrl":"https://dl.example/x"}"#,
        )
        .unwrap();
        let f = listed(&v, &s).unwrap();
        assert_eq!(
            (f.size, f.sha1.as_deref(), f.quickxor.as_deref()),
            (Some(5), Some("AB"), Some("q="))
        );
        let folder: Value =
            serde_json::from_str(r#"{"id":"A!2","name":"sub","folder":{}}"#).unwrap();
        assert!(listed(&folder, &s).is_none());
        let via_api: Value = serde_json::from_str(
            r#"{"id":"A!3","name":"y.mp4","file":{},"parentReference":{"driveId":"d1"}}"#,
        )
        .unwrap();
        assert_eq!(
            listed(&via_api, &s).unwrap().download.as_str(),
            "https://api.onedrive.com/v1.0/drives/d1/items/A!3/content"
        );
    }
}
