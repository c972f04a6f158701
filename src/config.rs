//! The configuration file (TOML) that `--config` names.
//!
//! Owns the file's schema and its error messages (with line and column). Command-line
//! flags override the file; the environment (`PMV_DATA_ROOT`) overrides the file's
//! `root`. Unknown keys are errors, so a misspelt setting is never silently ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::manifest::SplitRatios;
use crate::refresh::config::{DatasetConfig, RefreshPlan, RefreshSettings};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The data root (overridden by `--root` and `PMV_DATA_ROOT`).
    pub root: Option<PathBuf>,
    #[serde(default)]
    pub ingest: IngestConfig,
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
        let plan =
            RefreshPlan::build(&config.refresh, &config.datasets, text, path).map_err(invalid)?;
        // A relative root in a config file means relative to the file, not to the
        // directory cron happens to start in.
        let root = config.root.map(|r| match path.parent() {
            Some(dir) if r.is_relative() => dir.join(r),
            _ => r,
        });
        Ok(Config {
            root,
            plan: Some(plan),
            ..config
        })
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
    fn relative_roots_follow_the_file() {
        let c = Config::parse("root = \"data\"\n", Path::new("/srv/pmv/pmv.toml")).unwrap();
        assert_eq!(c.root.unwrap(), PathBuf::from("/srv/pmv/data"));
        let c = Config::parse("", Path::new("c.toml")).unwrap();
        assert!(c.root.is_none());
    }
}
