//! The configuration file (TOML) that `--config` names.
//!
//! Owns the file's schema and its error messages (with line and column). Command-line
//! flags override the file; the environment (`PMV_DATA_ROOT`) overrides the file's
//! `root`, and `PMV_FETCH_*` / `PMV_SOURCES_*` variables override the `[fetch]` and
//! `[sources]` settings and `PMV_DOUYIN_COOKIES` the `[douyin]` cookie file (see
//! [`Config::apply_env`]). Unknown keys are errors, so a
//! misspelt setting is never silently ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::manifest::SplitRatios;
pub use crate::net::settings::FetchConfig;
pub mod refresh;

pub use crate::source::SourcesConfig;
pub use pmv_core::size::{ByteSize, parse_size};
use refresh::{DatasetConfig, RefreshPlan, RefreshSettings};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The data root (overridden by `--root` and `PMV_DATA_ROOT`).
    pub root: Option<PathBuf>,
    /// Folders local files may be read from, besides each manifest's own folder
    /// tree, `--base-dir` and `--import-dir` (relative to this file's directory).
    #[serde(default)]
    pub local_roots: Vec<PathBuf>,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub fetch: FetchConfig,
    #[serde(default)]
    pub sources: SourcesConfig,
    /// `[douyin]`: the cookie file Douyin lookups send.
    #[serde(default)]
    pub douyin: DouyinConfig,
    /// `[refresh]`: limits of a nightly run.
    #[serde(default)]
    pub refresh: RefreshSettings,
    /// `[[datasets]]`: what `refresh` keeps up to date.
    #[serde(default)]
    pub datasets: Vec<DatasetConfig>,
    /// `refresh` and `datasets`, validated when the file is loaded.
    #[serde(skip)]
    pub plan: Option<RefreshPlan>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Hash-split ratios for rows without a split, e.g. `"train=0.9,val=0.1"`.
    pub split_ratios: Option<String>,
}

/// `[douyin]`: what Douyin lookups send besides the link.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DouyinConfig {
    /// A Netscape cookie file (as curl and yt-dlp read it) whose Douyin cookies go with
    /// the item lookups (relative to this file's directory; `--cookies` overrides it).
    pub cookies: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs_err::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let config: Config = toml::from_str(text).map_err(|e| {
            let place = e
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: ")
                })
                .unwrap_or_default();
            invalid(format!("{place}{}", e.message()))
        })?;
        if let Some(r) = &config.ingest.split_ratios {
            SplitRatios::parse(r).map_err(|e| invalid(format!("ingest.split_ratios: {e}")))?;
        }
        config.check().map_err(invalid)?;
        let plan =
            RefreshPlan::build(&config.refresh, &config.datasets, text, path).map_err(invalid)?;
        // A relative root in a config file means relative to the file, not to the
        // directory cron happens to start in; the same for the local roots.
        let from_file = |r: PathBuf| match path.parent() {
            Some(dir) if r.is_relative() => dir.join(r),
            _ => r,
        };
        let root = config.root.map(from_file);
        let local_roots = config.local_roots.into_iter().map(from_file).collect();
        let douyin = DouyinConfig {
            cookies: config.douyin.cookies.map(from_file),
        };
        Ok(Config {
            root,
            local_roots,
            douyin,
            plan: Some(plan),
            ..config
        })
    }

    /// Overrides `[fetch]` and `[sources]` settings from the environment:
    /// `PMV_FETCH_<KEY>` and `PMV_SOURCES_<KEY>`, the key in upper case
    /// (`PMV_FETCH_PER_HOST=4`, `PMV_SOURCES_DOUYIN_WEB=http://127.0.0.1:8080`), and
    /// `douyin.cookies` from `PMV_DOUYIN_COOKIES` (a path as given).
    /// `get` reads one variable (`std::env::var` in the binary).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError::Env {
                name: name.to_owned(),
                message: format!("'{v}' is not a valid number"),
            })
        }
        let f = &mut self.fetch;
        let var = |key: &str| {
            let name = format!("PMV_FETCH_{key}");
            get(&name).filter(|v| !v.is_empty()).map(|v| (name, v))
        };
        if let Some((n, v)) = var("CONCURRENCY") {
            f.concurrency = Some(num(&n, &v)?);
        }
        if let Some((n, v)) = var("PER_HOST") {
            f.per_host = Some(num(&n, &v)?);
        }
        if let Some((n, v)) = var("RATE") {
            f.rate = Some(num(&n, &v)?);
        }
        if let Some((n, v)) = var("TIMEOUT") {
            f.timeout = Some(num(&n, &v)?);
        }
        if let Some((n, v)) = var("CONNECT_TIMEOUT") {
            f.connect_timeout = Some(num(&n, &v)?);
        }
        if let Some((n, v)) = var("MAX_SIZE") {
            f.max_size = Some(ByteSize(
                parse_size(&v).map_err(|message| ConfigError::Env { name: n, message })?,
            ));
        }
        if let Some((_, v)) = var("USER_AGENT") {
            f.user_agent = Some(v);
        }
        if let Some((n, v)) = var("RETRIES") {
            f.retries = Some(num(&n, &v)?);
        }
        if let Some((n, v)) = var("RETRY_BASE") {
            f.retry_base = Some(num(&n, &v)?);
        }
        if let Some((n, v)) = var("MAX_REDIRECTS") {
            f.max_redirects = Some(num(&n, &v)?);
        }
        for (key, slot) in [
            ("MIN_SPEED", &mut f.min_speed),
            ("MIN_FREE", &mut f.min_free),
        ] {
            if let Some((n, v)) = var(key) {
                *slot = Some(ByteSize(
                    parse_size(&v).map_err(|message| ConfigError::Env { name: n, message })?,
                ));
            }
        }
        if let Some((n, v)) = var("MIN_SPEED_TIME") {
            f.min_speed_time = Some(num(&n, &v)?);
        }
        if let Some((n, v)) = var("ALLOW_PRIVATE_HOSTS") {
            f.allow_private_hosts = Some(match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    return Err(ConfigError::Env {
                        name: n,
                        message: format!("'{v}' is not a boolean (1 or 0, true or false)"),
                    });
                }
            });
        }
        let s = &mut self.sources;
        for (key, slot) in [
            ("DOUYIN_SHORT", &mut s.douyin_short),
            ("DOUYIN_WEB", &mut s.douyin_web),
            ("DOUYIN_PLAY", &mut s.douyin_play),
            ("DOUYIN_USER_AGENT", &mut s.douyin_user_agent),
            ("ONEDRIVE_API", &mut s.onedrive_api),
            ("ONEDRIVE_SHORT", &mut s.onedrive_short),
            ("ONEDRIVE_BADGER_TOKEN", &mut s.onedrive_badger_token),
            ("ONEDRIVE_PERSONAL_API", &mut s.onedrive_personal_api),
            ("ONEDRIVE_BADGER_APP_ID", &mut s.onedrive_badger_app_id),
            (
                "ONEDRIVE_BADGER_APP_HEADER",
                &mut s.onedrive_badger_app_header,
            ),
        ] {
            let name = format!("PMV_SOURCES_{key}");
            if let Some(v) = get(&name).filter(|v| !v.is_empty()) {
                *slot = Some(v);
            }
        }
        if let Some(v) = get("PMV_DOUYIN_COOKIES").filter(|v| !v.is_empty()) {
            self.douyin.cookies = Some(PathBuf::from(v));
        }
        self.check().map_err(|message| ConfigError::Env {
            name: "PMV_FETCH_* / PMV_SOURCES_*".into(),
            message,
        })
    }

    /// Checks values the types cannot: positive counts, http(s) base URLs.
    fn check(&self) -> Result<(), String> {
        let f = &self.fetch;
        for (key, v) in [
            ("concurrency", f.concurrency),
            ("per_host", f.per_host),
            ("max_redirects", f.max_redirects.map(|n| n + 1)),
        ] {
            if v == Some(0) {
                return Err(format!("fetch.{key} must be at least 1"));
            }
        }
        if f.retries == Some(0) {
            return Err("fetch.retries must be at least 1 (one attempt)".into());
        }
        for (key, v) in [
            ("rate", f.rate),
            ("timeout", f.timeout),
            ("connect_timeout", f.connect_timeout),
            ("retry_base", f.retry_base),
            ("min_speed_time", f.min_speed_time),
        ] {
            if let Some(x) = v
                && (!x.is_finite() || x < 0.0 || (key != "rate" && key != "retry_base" && x == 0.0))
            {
                return Err(format!("fetch.{key} = {x} is out of range"));
            }
        }
        let s = &self.sources;
        for (key, v) in [
            ("douyin_short", &s.douyin_short),
            ("douyin_web", &s.douyin_web),
            ("douyin_play", &s.douyin_play),
            ("onedrive_api", &s.onedrive_api),
            ("onedrive_short", &s.onedrive_short),
            ("onedrive_badger_token", &s.onedrive_badger_token),
            ("onedrive_personal_api", &s.onedrive_personal_api),
        ] {
            if let Some(u) = v {
                match url::Url::parse(u) {
                    Ok(url)
                        if (url.scheme() == "http" || url.scheme() == "https")
                            && url.host_str().is_some() => {}
                    _ => return Err(format!("sources.{key} = '{u}' is not an http(s) URL")),
                }
            }
        }
        for (key, v) in [
            ("onedrive_badger_app_id", &s.onedrive_badger_app_id),
            ("onedrive_badger_app_header", &s.onedrive_badger_app_header),
        ] {
            if let Some(x) = v
                && (x.is_empty() || !x.bytes().all(|b| b.is_ascii_graphic()))
            {
                return Err(format!(
                    "sources.{key} must be visible ASCII characters (it is sent in a request)"
                ));
            }
        }
        Ok(())
    }

    pub fn split_ratios(&self) -> Option<SplitRatios> {
        self.ingest
            .split_ratios
            .as_deref()
            .map(|r| SplitRatios::parse(r).expect("checked when loaded"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let e = Config::parse(
            "root = \"/x\"\n[ingest]\nsplit_ratio = \"a\"\n",
            Path::new("/etc/pmv.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("config file /etc/pmv.toml: line 3: unknown field `split_ratio`"),
            "{e}"
        );
        let e = Config::parse(
            "[ingest]\nsplit_ratios = \"train=2\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("split_ratios"), "{e}");
        let e = Config::parse("root = [", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn fetch_and_sources_settings_parse_and_env_overrides() {
        let mut c = Config::parse(
            "[fetch]\nconcurrency = 4\nmax_size = \"2 GiB\"\nrate = 2.5\n\
             [sources]\ndouyin_web = \"http://127.0.0.1:9\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.fetch.concurrency, Some(4));
        assert_eq!(c.fetch.max_size, Some(ByteSize(2 << 30)));
        assert_eq!(c.fetch.rate, Some(2.5));
        let env = |k: &str| match k {
            "PMV_FETCH_CONCURRENCY" => Some("9".to_string()),
            "PMV_FETCH_MAX_SIZE" => Some("64KiB".to_string()),
            "PMV_SOURCES_ONEDRIVE_API" => Some("http://127.0.0.1:7/v1.0".to_string()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        assert_eq!(c.fetch.concurrency, Some(9));
        assert_eq!(c.fetch.max_size, Some(ByteSize(65536)));
        assert_eq!(
            c.sources.onedrive_api.as_deref(),
            Some("http://127.0.0.1:7/v1.0")
        );
        assert_eq!(c.sources.douyin_web.as_deref(), Some("http://127.0.0.1:9"));

        let e = c
            .clone()
            .apply_env(|k| (k == "PMV_FETCH_PER_HOST").then(|| "many".to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("PMV_FETCH_PER_HOST"), "{e}");
        let e = Config::parse("[fetch]\nconcurrency = 0\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fetch.concurrency"), "{e}");
        let e = Config::parse("[sources]\ndouyin_web = \"ftp://x\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sources.douyin_web"), "{e}");
        let e = Config::parse("[fetch]\nmax_size = \"4 parsecs\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn onedrive_token_settings_parse_and_env_overrides() {
        let mut c = Config::parse(
            "[sources]\nonedrive_badger_token = \"http://127.0.0.1:9/token\"\n\
             onedrive_badger_app_id = \"abc\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        c.apply_env(|k| match k {
            "PMV_SOURCES_ONEDRIVE_PERSONAL_API" => Some("http://127.0.0.1:9/_api/v2.0".into()),
            "PMV_SOURCES_ONEDRIVE_SHORT" => Some("http://127.0.0.1:9/short".into()),
            "PMV_SOURCES_ONEDRIVE_BADGER_APP_HEADER" => Some("77".into()),
            _ => None,
        })
        .unwrap();
        let s = crate::source::SourceSettings::from_config(&c.sources).unwrap();
        assert_eq!(s.onedrive_badger_token.as_str(), "http://127.0.0.1:9/token");
        assert_eq!(
            s.onedrive_personal_api.as_str(),
            "http://127.0.0.1:9/_api/v2.0"
        );
        assert_eq!(
            s.onedrive_short.as_ref().map(|u| u.as_str()),
            Some("http://127.0.0.1:9/short")
        );
        assert_eq!(
            (
                s.onedrive_badger_app_id.as_str(),
                s.onedrive_badger_app_header.as_str()
            ),
            ("abc", "77")
        );
        // The defaults are OneDrive's web app's.
        let d = crate::source::SourceSettings::default();
        assert_eq!(
            d.onedrive_badger_token.as_str(),
            "https://api-badgerp.svc.ms/v1.0/token"
        );
        assert_eq!(d.onedrive_badger_app_header, "1141147648");
        for bad in [
            "[sources]\nonedrive_personal_api = \"file:///x\"\n",
            "[sources]\nonedrive_badger_app_header = \"1 2\"\n",
        ] {
            let e = Config::parse(bad, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("sources.onedrive_"), "{e}");
        }
    }

    #[test]
    fn budgets_and_the_private_host_opt_in_parse() {
        let mut c = Config::parse(
            "[fetch]\nmin_speed = \"2 KiB\"\nmin_speed_time = 10\nmin_free = \"500MB\"\n\
             allow_private_hosts = true\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.fetch.min_speed, Some(ByteSize(2048)));
        assert_eq!(c.fetch.min_speed_time, Some(10.0));
        assert_eq!(c.fetch.min_free, Some(ByteSize(500_000_000)));
        assert_eq!(c.fetch.allow_private_hosts, Some(true));
        let s = crate::fetch::FetchSettings::from_config(&c.fetch);
        assert_eq!(
            (s.min_speed, s.min_speed_time.as_secs(), s.min_free),
            (2048, 10, Some(500_000_000))
        );
        assert!(s.allow_private_hosts);
        let env = |k: &str| match k {
            "PMV_FETCH_MIN_SPEED" => Some("0".to_string()),
            "PMV_FETCH_MIN_FREE" => Some("1MiB".to_string()),
            "PMV_FETCH_ALLOW_PRIVATE_HOSTS" => Some("0".to_string()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        assert_eq!(c.fetch.min_speed, Some(ByteSize(0)));
        assert_eq!(c.fetch.min_free, Some(ByteSize(1 << 20)));
        assert_eq!(c.fetch.allow_private_hosts, Some(false));
        let e = c
            .clone()
            .apply_env(|k| (k == "PMV_FETCH_ALLOW_PRIVATE_HOSTS").then(|| "maybe".to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("PMV_FETCH_ALLOW_PRIVATE_HOSTS"), "{e}");
        let e = Config::parse("[fetch]\nmin_speed_time = 0\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fetch.min_speed_time"), "{e}");
        // The default reserve: 1 GiB, or 5% of a small disk.
        let d = crate::fetch::FetchSettings::default();
        assert_eq!(d.reserve(1 << 40), 1 << 30);
        assert_eq!(d.reserve(100 << 20), 5 << 20);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1.5 G").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("4gib").unwrap(), 4 << 30);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 XB").is_err());
    }

    #[test]
    fn relative_roots_follow_the_file() {
        let c = Config::parse(
            "root = \"data\"\nlocal_roots = [\"videos\", \"/mnt/mirror\"]\n",
            Path::new("/srv/pmv/pmv.toml"),
        )
        .unwrap();
        assert_eq!(c.root.unwrap(), PathBuf::from("/srv/pmv/data"));
        assert_eq!(
            c.local_roots,
            vec![
                PathBuf::from("/srv/pmv/videos"),
                PathBuf::from("/mnt/mirror")
            ]
        );
        let c = Config::parse("", Path::new("c.toml")).unwrap();
        assert!(c.root.is_none());
        assert!(c.douyin.cookies.is_none());
    }

    #[test]
    fn the_douyin_cookie_file_follows_the_config_file_and_the_environment() {
        let mut c = Config::parse(
            "[douyin]\ncookies = \"cookies.txt\"\n",
            Path::new("/srv/pmv/pmv.toml"),
        )
        .unwrap();
        assert_eq!(
            c.douyin.cookies.as_deref(),
            Some(Path::new("/srv/pmv/cookies.txt"))
        );
        c.apply_env(|k| (k == "PMV_DOUYIN_COOKIES").then(|| "/tmp/c.txt".to_string()))
            .unwrap();
        assert_eq!(c.douyin.cookies.as_deref(), Some(Path::new("/tmp/c.txt")));
        let e = Config::parse("[douyin]\ncookie = \"c\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("cookie"), "{e}");
    }
}
