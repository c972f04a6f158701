//! The `douyin` resolver: PMV play links, share links and video pages, to the CDN
//! address of the video.
//!
//! Owns the link forms (`.../aweme/v1/play/?video_id=<id>`, `v.douyin.com/<code>`,
//! `douyin.com/video/<aweme_id>`, `iesdouyin.com/share/video/<aweme_id>`,
//! `?modal_id=<aweme_id>`, a user page's `?vid=<aweme_id>`), the text the app's share
//! button copies around a share link ([`share_text_link`]), and the cookie-free item
//! lookups, each a small replaceable
//! path tried in order until one answers ([`LOOKUPS`]): the `slidesinfo` JSON endpoint,
//! then the mobile share page's `window._ROUTER_DATA`. From the item it takes
//! `video.play_addr` (`url_list[0]`, else built from `uri`), with `playwm` turned into
//! `play`. A removed, private or blocked item (`filter_list[].filter_reason`,
//! `detail_msg`) is a permanent `removed` failure carrying the platform's reason. Play
//! links need no lookup: the download follows their redirect to the CDN.
//!
//! Every Douyin request carries the configured User-Agent (`sources.douyin_user_agent`).
//! A cookie file's cookies ([`super::cookies`]) go only with the share-link redirect
//! and the item lookups, and only to a Douyin host ([`cookie_host`]: `douyin.com`,
//! `iesdouyin.com` and their subdomains, or the configured `douyin_short` /
//! `douyin_web` base); never to play links, the CDN, or any other source's host.

use serde_json::Value;
use url::Url;

use super::cookies::{CookieJar, domain_matches};
use super::{Offline, Resolved, Resolver, SourceKind, SourceSettings, Target, rebase};
use crate::net::client::host_key;
use crate::net::{ErrorClass, Failure};
use pmv_core::redact::{show_text, show_url};

/// Largest lookup answer read (a share page is about 100 KiB).
const MAX_ANSWER: usize = 8 << 20;

/// A Douyin link, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// `.../aweme/v1/play/?video_id=<id>`: redirects to the CDN.
    Play { video_id: String },
    /// `v.douyin.com/<code>/`: redirects to the share page of an item.
    Short { code: String },
    /// An item (aweme) id, from a video page or share page URL.
    Aweme { id: String },
}

/// Reads a Douyin link.
pub fn parse(url: &Url) -> Result<Link, Failure> {
    let query = |key: &str| {
        url.query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let unsupported = |why: &str| {
        Failure::new(
            ErrorClass::Unsupported,
            format!("{why}: {}", show_url(url.as_str())),
        )
    };
    let path = url.path();
    if path.contains("/aweme/v1/play") || path.contains("/aweme/v1/playwm") {
        let id = query("video_id").ok_or_else(|| unsupported("play link without video_id"))?;
        if !valid_video_id(&id) {
            return Err(unsupported("play link with an invalid video_id"));
        }
        return Ok(Link::Play { video_id: id });
    }
    if let Some(id) = query("modal_id") {
        return aweme(&id).ok_or_else(|| unsupported("modal_id is not an item id"));
    }
    // A user page showing one of the user's videos (`/user/<sec_uid>?...&vid=<id>`).
    if let Some(id) = query("vid") {
        return aweme(&id).ok_or_else(|| unsupported("vid is not an item id"));
    }
    let host = url.host_str().unwrap_or("").trim_end_matches('.');
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    if host.eq_ignore_ascii_case("v.douyin.com") || host.eq_ignore_ascii_case("v.iesdouyin.com") {
        return match segments.first() {
            Some(code)
                if code.len() <= 32
                    && code
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Ok(Link::Short {
                    code: (*code).to_owned(),
                })
            }
            _ => Err(unsupported("share link without a valid code")),
        };
    }
    for pair in segments.windows(2) {
        if matches!(pair[0], "video" | "note" | "slides")
            && let Some(link) = aweme(pair[1])
        {
            return Ok(link);
        }
    }
    Err(unsupported(
        "not a Douyin play link, share link or video page",
    ))
}

/// The platform's id a link names without any lookup: the item (aweme) id of a
/// video or share page, the video id of a play link; `None` for a share link (its
/// redirect names the item) and for anything else. Files downloaded by other tools are
/// named by it (yt-dlp's `%(id)s` is the aweme id), so `--import-dir` finds them.
pub fn link_id(location: &str) -> Option<String> {
    match parse(&Url::parse(location).ok()?).ok()? {
        Link::Aweme { id } => Some(id),
        Link::Play { video_id } => Some(video_id),
        Link::Short { .. } => None,
    }
}

/// Words the app's share text carries around its link.
const SHARE_TEXT_MARKS: [&str; 4] = ["抖音", "Dou音", "复制此链接", "复制打开"];

/// The link in text pasted from the Douyin app's share button, such as
/// `7.43 pda:/ 让你在几秒钟之内记住我 https://v.douyin.com/L5pbfdP/ 复制此链接，打开Dou音搜索，直接观看视频！`.
///
/// Text without whitespace is a URL or a path, not share text: `Ok(None)`, as for text
/// around no Douyin link at all (the caller reads it as it did). Text around one Douyin
/// link (written once or repeated) gives that link. Share text without any link, and
/// text holding several different links one of which is Douyin's, are errors: which of
/// them was meant cannot be told.
pub fn share_text_link(text: &str) -> Result<Option<&str>, String> {
    if !text.contains(char::is_whitespace) {
        return Ok(None);
    }
    let mut links: Vec<&str> = vec![];
    for word in text.split(char::is_whitespace) {
        let Some(start) =
            find_ascii_ci(word, "http://").or_else(|| find_ascii_ci(word, "https://"))
        else {
            continue;
        };
        let link = &word[start..];
        // A URL is ASCII; CJK punctuation or text may follow it without a space.
        let end = link
            .find(|c: char| !c.is_ascii_graphic() || "\"<>\\^`{|}".contains(c))
            .unwrap_or(link.len());
        let link = link[..end].trim_end_matches(['.', ',', ';', ':', '!', '?', '\'', ')', ']']);
        if !links.contains(&link) {
            links.push(link);
        }
    }
    let is_douyin =
        |l: &str| Url::parse(l).is_ok_and(|u| SourceKind::classify_url(&u) == SourceKind::Douyin);
    let marked = SHARE_TEXT_MARKS.iter().any(|m| text.contains(m));
    match links.as_slice() {
        [] if marked => Err(format!(
            "Douyin share text without a link: '{}'",
            show_text(text)
        )),
        [link] if is_douyin(link) => Ok(Some(link)),
        [_, _, ..] if marked || links.iter().any(|l| is_douyin(l)) => Err(format!(
            "text holds {} different links ({}): give one",
            links.len(),
            links
                .iter()
                .map(|l| show_url(l))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => Ok(None),
    }
}

/// Byte offset of `needle` (ASCII) in `hay`, ignoring ASCII case.
fn find_ascii_ci(hay: &str, needle: &str) -> Option<usize> {
    hay.as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn aweme(id: &str) -> Option<Link> {
    (!id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| Link::Aweme { id: id.to_owned() })
}

fn valid_video_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The play link, with its host replaced by `douyin_play` when that is set.
fn play_url(url: &Url, s: &SourceSettings) -> Url {
    match &s.douyin_play {
        Some(base) => rebase(url, base),
        None => url.clone(),
    }
}

fn short_url(url: &Url, s: &SourceSettings) -> Url {
    match &s.douyin_short {
        Some(base) => rebase(url, base),
        None => url.clone(),
    }
}

/// Whether a request to `url` may carry Douyin cookies: the host is Douyin's own
/// (`douyin.com`, `iesdouyin.com`, their subdomains) or the host and port of the
/// configured `douyin_short` or `douyin_web` base (how a mirror or a test server
/// stands in for Douyin). Play and CDN hosts are not cookie hosts.
pub fn cookie_host(url: &Url, s: &SourceSettings) -> bool {
    let host = url.host_str().unwrap_or("");
    ["douyin.com", "iesdouyin.com"]
        .iter()
        .any(|d| domain_matches(host, d, true))
        || [s.douyin_short.as_ref(), Some(&s.douyin_web)]
            .into_iter()
            .flatten()
            .any(|base| base.scheme() == url.scheme() && host_key(base) == host_key(url))
}

/// The cookies a request to `url` carries (see [`cookie_host`]).
fn cookies_for<'a>(url: &Url, s: &'a SourceSettings) -> Option<&'a CookieJar> {
    s.douyin_cookies.as_deref().filter(|_| cookie_host(url, s))
}

/// The User-Agent header every Douyin request carries.
fn user_agent(s: &SourceSettings) -> Vec<(String, String)> {
    vec![("User-Agent".to_owned(), s.douyin_user_agent.clone())]
}

/// One cookie-free way to look an item up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// `/web/api/v2/aweme/slidesinfo/?aweme_ids=[<id>]`, item `aweme_details[0]`.
    SlidesInfo,
    /// `/share/video/<id>/` with a mobile User-Agent, item in `window._ROUTER_DATA`.
    SharePage,
}

/// The lookups, in the order they are tried. Platforms change these; each is one
/// function below, replaceable on its own.
pub const LOOKUPS: [Lookup; 2] = [Lookup::SlidesInfo, Lookup::SharePage];

impl Lookup {
    pub fn name(self) -> &'static str {
        match self {
            Lookup::SlidesInfo => "slidesinfo",
            Lookup::SharePage => "share-page",
        }
    }

    pub fn url(self, id: &str, s: &SourceSettings) -> Url {
        let mut u = s.douyin_web.clone();
        let prefix = u.path().trim_end_matches('/').to_owned();
        match self {
            Lookup::SlidesInfo => {
                u.set_path(&format!("{prefix}/web/api/v2/aweme/slidesinfo/"));
                u.query_pairs_mut()
                    .clear()
                    .append_pair("reflow_source", "reflow_page")
                    .append_pair("web_id", "7300000000000000000")
                    .append_pair("device_id", "7300000000000000000")
                    .append_pair("aweme_ids", &format!("[{id}]"))
                    .append_pair("request_source", "200");
            }
            Lookup::SharePage => {
                u.set_path(&format!("{prefix}/share/video/{id}/"));
                u.set_query(None);
            }
        }
        u
    }
}

/// What one lookup said.
#[derive(Debug)]
enum Answer {
    Item(Value),
    /// Removed, private or blocked: the platform's reason.
    Removed(String),
    /// This path did not answer usefully; the next one is tried.
    Nothing(Failure),
}

pub async fn resolve(r: &Resolver, url: &Url, probe: bool) -> Result<Resolved, Failure> {
    let s = r.settings();
    let link = parse(url)?;
    let mut trail = vec![];
    let id = match link {
        Link::Play { video_id } => {
            let play = play_url(url, s);
            if probe && let Some(cdn) = r.client().location(&play, &user_agent(s)).await? {
                trail.push(format!("play link redirects to {cdn}"));
            }
            return Ok(Resolved {
                kind: SourceKind::Douyin,
                canonical_id: Some(video_id),
                target: Target::Http {
                    url: play,
                    headers: user_agent(s),
                    from_public: false,
                },
                via: "play-link",
                expected: Default::default(),
                trail,
            });
        }
        Link::Short { .. } => {
            let short = short_url(url, s);
            let next = r
                .client()
                .location_with(&short, &user_agent(s), cookies_for(&short, s))
                .await?
                .ok_or_else(|| {
                    Failure::new(
                        ErrorClass::BadResponse,
                        format!(
                            "share link {} did not redirect to an item",
                            show_url(short.as_str())
                        ),
                    )
                })?;
            trail.push(format!("share link redirects to {next}"));
            match parse(&next) {
                Ok(Link::Aweme { id }) => id,
                _ => {
                    return Err(Failure::new(
                        ErrorClass::Removed,
                        format!(
                            "share link {} leads to {}, which is not a video (removed or never one)",
                            show_url(short.as_str()),
                            show_url(next.as_str())
                        ),
                    ));
                }
            }
        }
        Link::Aweme { id } => id,
    };
    let mut misses = vec![];
    for lookup in LOOKUPS {
        let (answer, from_public) = ask(r, lookup, &id).await;
        match answer {
            Answer::Item(item) => {
                trail.push(format!("{} answered for item {id}", lookup.name()));
                let play = play_addr(&item, s).map_err(|why| {
                    Failure::new(
                        why.0,
                        format!("Douyin item {id} ({}): {}", lookup.name(), why.1),
                    )
                })?;
                let mut target = play.clone();
                if probe && let Some(cdn) = r.client().location(&play, &user_agent(s)).await? {
                    trail.push(format!("play address redirects to {cdn}"));
                    target = cdn;
                }
                return Ok(Resolved {
                    kind: SourceKind::Douyin,
                    canonical_id: Some(id),
                    target: Target::Http {
                        url: target,
                        headers: user_agent(s),
                        from_public,
                    },
                    via: lookup.name(),
                    expected: Default::default(),
                    trail,
                });
            }
            Answer::Removed(reason) => {
                return Err(Failure::new(
                    ErrorClass::Removed,
                    format!(
                        "Douyin item {id} is unavailable ({}): {reason}",
                        lookup.name()
                    ),
                ));
            }
            Answer::Nothing(f) => {
                tracing::debug!(item = %id, lookup = lookup.name(), "{f}");
                misses.push((lookup, f));
            }
        }
    }
    // Every path failed: transient if any failure was (the platform may be down).
    let class = if misses.iter().any(|(_, f)| f.class.is_transient()) {
        misses
            .iter()
            .find(|(_, f)| f.class.is_transient())
            .map(|(_, f)| f.class)
            .unwrap_or(ErrorClass::BadResponse)
    } else {
        misses[misses.len() - 1].1.class
    };
    let retry_after = misses.iter().filter_map(|(_, f)| f.retry_after).max();
    let detail: Vec<String> = misses
        .iter()
        .map(|(l, f)| format!("{}: {}", l.name(), f.message))
        .collect();
    Err(Failure::new(
        class,
        format!("no lookup found Douyin item {id}: {}", detail.join("; ")),
    )
    .with_retry_after(retry_after))
}

/// One lookup's answer, and whether a public server gave it.
async fn ask(r: &Resolver, lookup: Lookup, id: &str) -> (Answer, bool) {
    let s = r.settings();
    let url = lookup.url(id, s);
    let mut headers = user_agent(s);
    if lookup == Lookup::SlidesInfo {
        headers.push(("Accept".to_owned(), "application/json".to_owned()));
    }
    let (text, public) = match r
        .client()
        .get_text_with(&url, &headers, cookies_for(&url, s), MAX_ANSWER)
        .await
    {
        Ok(d) => (d.text, d.public),
        Err(f) => return (Answer::Nothing(f), false),
    };
    let bad = |why: String| Answer::Nothing(Failure::new(ErrorClass::BadResponse, why));
    let answer = match lookup {
        Lookup::SlidesInfo => match serde_json::from_str::<Value>(&text) {
            Ok(v) => read_answer(v.get("aweme_details"), v.get("filter_list"), &v, id),
            Err(e) => bad(format!("slidesinfo answer is not JSON: {e}")),
        },
        Lookup::SharePage => match router_data(&text) {
            Some(data) => {
                let info = data
                    .get("loaderData")
                    .and_then(Value::as_object)
                    .and_then(|pages| pages.values().find_map(|p| p.get("videoInfoRes")));
                match info {
                    Some(info) => {
                        read_answer(info.get("item_list"), info.get("filter_list"), info, id)
                    }
                    None => bad("share page data has no videoInfoRes".into()),
                }
            }
            None => bad("share page carries no window._ROUTER_DATA".into()),
        },
    };
    (answer, public)
}

/// Reads an item list and a filter list as both lookups return them.
fn read_answer(items: Option<&Value>, filters: Option<&Value>, whole: &Value, id: &str) -> Answer {
    let same = |v: &Value| {
        v.get("aweme_id")
            .map(|a| {
                a.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| a.to_string())
            })
            .is_none_or(|a| a == id)
    };
    let items: Vec<&Value> = items
        .and_then(Value::as_array)
        .map(|a| a.iter().filter(|v| v.is_object()).collect())
        .unwrap_or_default();
    if let Some(item) = items.iter().find(|v| same(v)) {
        return Answer::Item((*item).clone());
    }
    let filters = filters.and_then(Value::as_array);
    if let Some(f) = filters.and_then(|fs| fs.iter().find(|f| same(f))) {
        let text = |k: &str| {
            f.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_owned()
        };
        let (reason, detail) = (text("filter_reason"), text("detail_msg"));
        let said = match (reason.is_empty(), detail.is_empty()) {
            (false, false) => format!("{reason} ({detail})"),
            (false, true) => reason,
            (true, false) => detail,
            (true, true) => "filtered without a reason".into(),
        };
        return Answer::Removed(said);
    }
    let status = whole
        .get("status_code")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let msg = whole
        .get("status_msg")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Answer::Nothing(Failure::new(
        ErrorClass::BadResponse,
        if status != 0 {
            format!("status_code {status} {msg}").trim_end().to_owned()
        } else {
            "the answer holds no item".into()
        },
    ))
}

/// The JSON value assigned to `window._ROUTER_DATA` in a share page.
pub fn router_data(page: &str) -> Option<Value> {
    let at = page.find("window._ROUTER_DATA")?;
    let rest = &page[at + "window._ROUTER_DATA".len()..];
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
    values.next()?.ok()
}

/// The play address of an item: `video.play_addr.url_list[0]`, else one built from
/// `video.play_addr.uri`; `playwm` (watermarked) becomes `play`.
fn play_addr(item: &Value, s: &SourceSettings) -> Result<Url, (ErrorClass, String)> {
    let addr = item.get("video").and_then(|v| v.get("play_addr"));
    let first = addr
        .and_then(|a| a.get("url_list"))
        .and_then(Value::as_array)
        .and_then(|l| l.iter().find_map(Value::as_str));
    let uri = addr
        .and_then(|a| a.get("uri"))
        .and_then(Value::as_str)
        .filter(|u| valid_video_id(u));
    let url = match (first, uri) {
        (Some(u), _) => Url::parse(u).map_err(|e| {
            (
                ErrorClass::BadResponse,
                format!("play address '{}': {e}", show_url(u)),
            )
        })?,
        (None, Some(uri)) => {
            let mut u = Url::parse("https://aweme.snssdk.com/aweme/v1/play/").expect("valid");
            u.query_pairs_mut().append_pair("video_id", uri);
            u
        }
        (None, None) => {
            let images = item.get("images").is_some_and(|i| !i.is_null());
            return Err(if images {
                (ErrorClass::Unsupported, "an image post, not a video".into())
            } else {
                (
                    ErrorClass::BadResponse,
                    "the item has no play address".into(),
                )
            });
        }
    };
    let mut url = url;
    if url.path().contains("/playwm") {
        let p = url.path().replace("/playwm", "/play");
        url.set_path(&p);
    }
    if url.path().contains("/aweme/v1/play") {
        url = play_url(&url, s);
    }
    Ok(url)
}

pub fn offline(url: &Url, s: &SourceSettings) -> Result<Offline, Failure> {
    let link = parse(url)?;
    Ok(match link {
        Link::Play { video_id } => {
            let play = play_url(url, s);
            Offline {
                kind: SourceKind::Douyin,
                canonical_id: Some(video_id),
                download_url: Some(play.to_string()),
                lookup_url: None,
                host: host_key(&play),
                note: "play link: the download follows its redirect to the CDN".into(),
                paths: vec![],
            }
        }
        Link::Short { code } => {
            let short = short_url(url, s);
            Offline {
                kind: SourceKind::Douyin,
                canonical_id: None,
                download_url: None,
                lookup_url: Some(short.to_string()),
                host: host_key(&short),
                note: format!(
                    "share link {code}: its redirect names the item, then the item is looked up ({})",
                    LOOKUPS.map(Lookup::name).join(", then ")
                ),
                paths: vec![],
            }
        }
        Link::Aweme { id } => {
            let first = LOOKUPS[0].url(&id, s);
            Offline {
                kind: SourceKind::Douyin,
                canonical_id: Some(id),
                download_url: None,
                lookup_url: Some(first.to_string()),
                host: host_key(&first),
                note: format!(
                    "item page: the item is looked up ({})",
                    LOOKUPS.map(Lookup::name).join(", then ")
                ),
                paths: vec![],
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(s: &str) -> Result<Link, Failure> {
        parse(&Url::parse(s).unwrap())
    }

    #[test]
    fn every_link_form_is_read() {
        assert_eq!(
            link("https://aweme.snssdk.com/aweme/v1/play/?video_id=v0d00fg10000cc0bltrc77ud5sllkjug&ratio=720p&line=0").unwrap(),
            Link::Play { video_id: "v0d00fg10000cc0bltrc77ud5sllkjug".into() }
        );
        assert_eq!(
            link("https://www.douyin.com/aweme/v1/playwm/?video_id=v0200abc").unwrap(),
            Link::Play {
                video_id: "v0200abc".into()
            }
        );
        assert_eq!(
            link("https://v.douyin.com/iRNBho6u/").unwrap(),
            Link::Short {
                code: "iRNBho6u".into()
            }
        );
        assert_eq!(
            link("https://www.douyin.com/video/7123456789012345678").unwrap(),
            Link::Aweme {
                id: "7123456789012345678".into()
            }
        );
        assert_eq!(
            link("https://www.iesdouyin.com/share/video/7123456789012345678/?region=CN&mid=1")
                .unwrap(),
            Link::Aweme {
                id: "7123456789012345678".into()
            }
        );
        assert_eq!(
            link("https://www.douyin.com/discover?modal_id=7123456789012345678").unwrap(),
            Link::Aweme {
                id: "7123456789012345678".into()
            }
        );
        assert_eq!(
            link("https://www.douyin.com/user/MS4wLjABAAAA?from_tab_name=main&vid=7123456789012345678")
                .unwrap(),
            Link::Aweme {
                id: "7123456789012345678".into()
            }
        );
        for bad in [
            "https://www.douyin.com/user/MS4wLjABAAAA",
            "https://www.douyin.com/aweme/v1/play/?ratio=720p",
            "https://www.douyin.com/video/12ab",
            "https://www.douyin.com/user/MS4wLjABAAAA?vid=12ab",
            "https://v.douyin.com/",
            "https://aweme.snssdk.com/aweme/v1/play/?video_id=../../etc",
        ] {
            let f = link(bad).unwrap_err();
            assert_eq!(f.class, ErrorClass::Unsupported, "{bad}");
        }
    }

    #[test]
    fn link_ids_need_no_lookup() {
        assert_eq!(
            link_id("https://www.douyin.com/video/7123456789012345678").as_deref(),
            Some("7123456789012345678")
        );
        assert_eq!(
            link_id("https://www.douyin.com/discover?modal_id=7123").as_deref(),
            Some("7123")
        );
        assert_eq!(
            link_id("https://aweme.snssdk.com/aweme/v1/play/?video_id=v0abc").as_deref(),
            Some("v0abc")
        );
        assert_eq!(link_id("https://v.douyin.com/iRNBho6u/"), None);
        assert_eq!(link_id("https://www.douyin.com/user/MS4"), None);
        assert_eq!(link_id("not a url"), None);
    }

    #[test]
    fn share_text_gives_its_one_link() {
        let text = "7.43 pda:/ 让你在几秒钟之内记住我 https://v.douyin.com/L5pbfdP/ \
                    复制此链接，打开Dou音搜索，直接观看视频！";
        assert_eq!(
            share_text_link(text),
            Ok(Some("https://v.douyin.com/L5pbfdP/"))
        );
        // CJK text right after the link, no space; the link written twice.
        assert_eq!(
            share_text_link(
                "看看 https://v.douyin.com/L5pbfdP/复制此链接 https://v.douyin.com/L5pbfdP/"
            ),
            Ok(Some("https://v.douyin.com/L5pbfdP/"))
        );
        // Not share text: URLs, paths, and text around no Douyin link.
        for other in [
            "https://v.douyin.com/L5pbfdP/",
            "videos/my clip.mp4",
            "see https://example.com/a.mp4 here",
            "https://www.douyin.com/search/美食?modal_id=7123456789012345678",
        ] {
            assert_eq!(share_text_link(other), Ok(None), "{other}");
        }
        let e = share_text_link("7.43 pda:/ 复制此链接，打开Dou音搜索").unwrap_err();
        assert!(e.contains("without a link"), "{e}");
        let e = share_text_link(&format!("{text} https://v.douyin.com/Other12/")).unwrap_err();
        assert!(e.contains("2 different links"), "{e}");
        let e = share_text_link("https://v.douyin.com/L5pbfdP/ https://example.com/x").unwrap_err();
        assert!(e.contains("2 different links"), "{e}");
    }

    #[test]
    fn lookups_and_play_links_follow_the_configured_bases() {
        let s = SourceSettings {
            douyin_web: Url::parse("http://127.0.0.1:9/dy").unwrap(),
            douyin_play: Some(Url::parse("http://127.0.0.1:8").unwrap()),
            ..SourceSettings::default()
        };
        let u = Lookup::SlidesInfo.url("123", &s);
        assert_eq!(u.path(), "/dy/web/api/v2/aweme/slidesinfo/");
        assert!(u.query().unwrap().contains("aweme_ids=%5B123%5D"), "{u}");
        assert!(u.query().unwrap().contains("request_source=200"), "{u}");
        assert_eq!(
            Lookup::SharePage.url("123", &s).as_str(),
            "http://127.0.0.1:9/dy/share/video/123/"
        );
        let o = offline(
            &Url::parse("https://aweme.snssdk.com/aweme/v1/play/?video_id=v0abc").unwrap(),
            &s,
        )
        .unwrap();
        assert_eq!(
            o.download_url.as_deref(),
            Some("http://127.0.0.1:8/aweme/v1/play/?video_id=v0abc")
        );
        assert_eq!(o.host, "127.0.0.1:8");
        assert_eq!(o.canonical_id.as_deref(), Some("v0abc"));
    }

    #[test]
    fn cookies_go_only_to_douyin_hosts_and_the_configured_lookup_bases() {
        let s = SourceSettings {
            douyin_web: Url::parse("http://127.0.0.1:9/dy").unwrap(),
            douyin_short: Some(Url::parse("http://127.0.0.1:10").unwrap()),
            douyin_play: Some(Url::parse("http://127.0.0.1:8").unwrap()),
            ..SourceSettings::default()
        };
        let yes = |u: &str| cookie_host(&Url::parse(u).unwrap(), &s);
        for u in [
            "https://www.douyin.com/video/1",
            "https://douyin.com/",
            "https://v.douyin.com/AbC/",
            "https://www.iesdouyin.com/share/video/1/",
            "http://127.0.0.1:9/dy/share/video/1/",
            "http://127.0.0.1:10/AbC/",
        ] {
            assert!(yes(u), "{u}");
        }
        for u in [
            "http://127.0.0.1:8/aweme/v1/play/?video_id=v0",
            "https://aweme.snssdk.com/aweme/v1/play/?video_id=v0",
            "https://v26.douyinvod.com/a/video.mp4",
            "https://notdouyin.com/",
            "https://douyin.com.evil.net/",
            "https://api.onedrive.com/v1.0/shares",
            "http://127.0.0.1:11/",
            "https://127.0.0.1:9/dy/",
        ] {
            assert!(!yes(u), "{u}");
        }
        // Without a cookie file nothing is sent anywhere.
        assert!(cookies_for(&Url::parse("https://www.douyin.com/").unwrap(), &s).is_none());
    }

    #[test]
    fn router_data_is_read_from_a_share_page() {
        let page = r#"<html><script>window._ROUTER_DATA = {"loaderData":{"video_(id)/page":{"videoInfoRes":{"item_list":[{"aweme_id":"42","video":{"play_addr":{"uri":"v0abc","url_list":["https://aweme.snssdk.com/aweme/v1/playwm/?video_id=v0abc&ratio=720p"]}}}],"filter_list":[]}}}}</script><script>var x = 1;</script>"#;
        let data = router_data(page).unwrap();
        let info = &data["loaderData"]["video_(id)/page"]["videoInfoRes"];
        let Answer::Item(item) =
            read_answer(info.get("item_list"), info.get("filter_list"), info, "42")
        else {
            panic!("no item");
        };
        let url = play_addr(&item, &SourceSettings::default()).unwrap();
        assert_eq!(
            url.as_str(),
            "https://aweme.snssdk.com/aweme/v1/play/?video_id=v0abc&ratio=720p"
        );
    }

    #[test]
    fn removed_items_carry_the_platform_reason() {
        let v: Value = serde_json::from_str(
            r#"{"status_code":0,"aweme_details":[],"filter_list":[{"aweme_id":"42","filter_reason":"status_deleted","detail_msg":"作品已删除"}]}"#,
        )
        .unwrap();
        match read_answer(v.get("aweme_details"), v.get("filter_list"), &v, "42") {
            Answer::Removed(r) => assert_eq!(r, "status_deleted (作品已删除)"),
            other => panic!("{other:?}"),
        }
        let v: Value = serde_json::from_str(r#"{"status_code":8,"status_msg":"busy"}"#).unwrap();
        match read_answer(v.get("aweme_details"), v.get("filter_list"), &v, "42") {
            Answer::Nothing(f) => {
                assert!(f.message.contains("status_code 8 busy"), "{}", f.message)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn play_addresses_fall_back_to_the_uri() {
        let item: Value =
            serde_json::from_str(r#"{"video":{"play_addr":{"uri":"v0xyz","url_list":[]}}}"#)
                .unwrap();
        let s = SourceSettings {
            douyin_play: Some(Url::parse("http://127.0.0.1:7").unwrap()),
            ..SourceSettings::default()
        };
        assert_eq!(
            play_addr(&item, &s).unwrap().as_str(),
            "http://127.0.0.1:7/aweme/v1/play/?video_id=v0xyz"
        );
        let images: Value = serde_json::from_str(r#"{"images":[{"url_list":[]}]}"#).unwrap();
        assert_eq!(
            play_addr(&images, &s).unwrap_err().0,
            ErrorClass::Unsupported
        );
    }
}
