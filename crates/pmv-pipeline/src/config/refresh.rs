//! The parts of the configuration file that the nightly refresh reads: the `[refresh]`
//! limits and one `[[datasets]]` table per dataset it keeps up to date.
//!
//! Owns their schema and their validation, with the line of every mistake: a config
//! file with an error is rejected before anything is done. It never touches the data
//! root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::manifest::{Format, Split, SplitRatios, UrlTemplate};
use pmv_core::frame_recipe::{self, Filter, Fit, FrameRecipe, Overrides};
use pmv_core::size::parse_size;

/// `[refresh]`: limits of one run and what makes it fail.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshSettings {
    /// Stop scheduling new work after this long (`"5h 30m"`).
    pub max_duration: Option<Spanned<String>>,
    /// Fetch at most this many files per run.
    pub max_items: Option<u64>,
    /// Fetch at most this many bytes per run (`"200 GiB"`).
    pub max_bytes: Option<Spanned<String>>,
    /// Re-hash this fraction of stored videos and shards per run, oldest check first.
    pub verify_fraction: Option<Spanned<f64>>,
    /// Exit status when this run's failures pass `max_failures` or `max_failure_rate`.
    pub failure_exit_code: Option<Spanned<u8>>,
    /// More failed files than this in one run makes the run fail.
    pub max_failures: Option<u64>,
    /// More than this fraction of the files attempted in one run failing makes it fail.
    pub max_failure_rate: Option<Spanned<f64>>,
}

/// `[[datasets]]`: one dataset, its manifests and what to make of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    pub name: Spanned<String>,
    pub format: Format,
    /// Manifest files (or, for xinpianchang, download trees); relative to the config
    /// file's directory.
    pub manifests: Vec<Spanned<PathBuf>>,
    pub classes: Option<PathBuf>,
    pub links: Option<PathBuf>,
    pub url_template: Option<Spanned<String>>,
    pub split: Option<Spanned<String>>,
    pub split_ratios: Option<Spanned<String>>,
    pub multi_label: Option<bool>,
    pub base_dir: Option<PathBuf>,
    /// Shard recipes to keep every verified video of this dataset sharded with: names
    /// (built-in, or stored in the catalog by an earlier `pmv-data shard`), or inline
    /// tables with the `shard` flags (`{ frames = 8, stride = 4, size = "112x64" }`).
    #[serde(default)]
    pub recipes: Vec<Spanned<RecipeRef>>,
}

/// One entry of a dataset's `recipes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RecipeRef {
    Name(String),
    Spec(RecipeSpec),
}

/// A recipe written inline, as `pmv-data shard` takes it from flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeSpec {
    /// A built-in recipe to start from.
    pub base: Option<String>,
    pub frames: Option<u32>,
    pub stride: Option<u32>,
    #[serde(default)]
    pub segments: bool,
    pub clips: Option<u32>,
    pub fps: Option<f64>,
    /// `HxW`.
    pub size: Option<String>,
    pub fit: Option<Fit>,
    pub short_side: Option<u32>,
    pub filter: Option<Filter>,
}

/// A dataset's recipe after validation.
#[derive(Debug, Clone, PartialEq)]
pub enum RecipeChoice {
    /// A built-in, or a recipe the catalog stores under this name or id.
    Named(String),
    /// A recipe given in full.
    Given(FrameRecipe),
}

impl RecipeChoice {
    /// How the configuration names it.
    pub fn label(&self) -> String {
        match self {
            RecipeChoice::Named(n) => n.clone(),
            RecipeChoice::Given(r) => r.name.clone(),
        }
    }
}

/// The refresh's view of a validated configuration.
#[derive(Debug, Clone)]
pub struct RefreshPlan {
    pub max_duration: Option<Duration>,
    pub max_items: Option<u64>,
    pub max_bytes: Option<u64>,
    pub verify_fraction: f64,
    pub failure_exit_code: u8,
    pub max_failures: Option<u64>,
    pub max_failure_rate: Option<f64>,
    pub datasets: Vec<DatasetPlan>,
}

#[derive(Debug, Clone)]
pub struct DatasetPlan {
    pub name: String,
    pub format: Format,
    pub manifests: Vec<PathBuf>,
    pub classes: Option<PathBuf>,
    pub links: Option<PathBuf>,
    pub url_template: Option<UrlTemplate>,
    pub split: Option<Split>,
    pub split_ratios: Option<SplitRatios>,
    pub multi_label: Option<bool>,
    pub base_dir: Option<PathBuf>,
    pub recipes: Vec<RecipeChoice>,
}

/// Default share of stored files re-hashed per run.
pub const DEFAULT_VERIFY_FRACTION: f64 = 0.01;
/// Default exit status of a run whose failures pass the threshold.
pub const DEFAULT_FAILURE_EXIT_CODE: u8 = 4;

/// Exit statuses the refresh reserves for itself.
const RESERVED_CODES: [u8; 6] = [0, 1, 2, 3, 75, 130];

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl RefreshPlan {
    /// Validates the `[refresh]` and `[[datasets]]` parts of a configuration whose text
    /// is `text`, read from `path`; relative paths are taken from the file's directory.
    /// Errors name the line.
    pub fn build(
        settings: &RefreshSettings,
        datasets: &[DatasetConfig],
        text: &str,
        path: &Path,
    ) -> Result<RefreshPlan, String> {
        let at = |span: std::ops::Range<usize>, msg: String| {
            format!("line {}: {msg}", line_of(text, span.start))
        };
        let dir = path.parent().unwrap_or(Path::new(""));
        let rel = |p: &Path| {
            if p.is_relative() {
                dir.join(p)
            } else {
                p.to_owned()
            }
        };
        let max_duration = settings
            .max_duration
            .as_ref()
            .map(|d| {
                humantime::parse_duration(d.get_ref())
                    .map_err(|e| at(d.span(), format!("refresh.max_duration: {e}")))
            })
            .transpose()?;
        let max_bytes = settings
            .max_bytes
            .as_ref()
            .map(|b| {
                parse_size(b.get_ref()).map_err(|e| at(b.span(), format!("refresh.max_bytes: {e}")))
            })
            .transpose()?;
        let fraction = |v: &Option<Spanned<f64>>, name: &str| -> Result<Option<f64>, String> {
            match v {
                Some(f) if !(0.0..=1.0).contains(f.get_ref()) => Err(at(
                    f.span(),
                    format!("refresh.{name} must be between 0 and 1"),
                )),
                Some(f) => Ok(Some(*f.get_ref())),
                None => Ok(None),
            }
        };
        let verify_fraction = fraction(&settings.verify_fraction, "verify_fraction")?
            .unwrap_or(DEFAULT_VERIFY_FRACTION);
        let max_failure_rate = fraction(&settings.max_failure_rate, "max_failure_rate")?;
        let failure_exit_code = match &settings.failure_exit_code {
            Some(c) if RESERVED_CODES.contains(c.get_ref()) => {
                return Err(at(
                    c.span(),
                    format!(
                        "refresh.failure_exit_code {} is reserved (0 ok, 1 error, 2 usage, 3 rejected input, 75 busy, 130 interrupted)",
                        c.get_ref()
                    ),
                ));
            }
            Some(c) => *c.get_ref(),
            None => DEFAULT_FAILURE_EXIT_CODE,
        };

        let mut plans: Vec<DatasetPlan> = Vec::with_capacity(datasets.len());
        for d in datasets {
            let name = d.name.get_ref();
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(at(
                    d.name.span(),
                    format!("dataset name {name:?}: use 1 to 64 letters, digits, '-' or '_'"),
                ));
            }
            if plans.iter().any(|p| &p.name == name) {
                return Err(at(
                    d.name.span(),
                    format!("dataset {name:?} is declared twice"),
                ));
            }
            if d.manifests.is_empty() {
                return Err(at(
                    d.name.span(),
                    format!("dataset {name:?} lists no manifests"),
                ));
            }
            let url_template = d
                .url_template
                .as_ref()
                .map(|t| {
                    UrlTemplate::parse(t.get_ref())
                        .map_err(|e| at(t.span(), format!("url_template: {e}")))
                })
                .transpose()?;
            let split = d
                .split
                .as_ref()
                .map(|s| Split::parse(s.get_ref()).map_err(|e| at(s.span(), format!("split: {e}"))))
                .transpose()?;
            let split_ratios = d
                .split_ratios
                .as_ref()
                .map(|s| {
                    SplitRatios::parse(s.get_ref())
                        .map_err(|e| at(s.span(), format!("split_ratios: {e}")))
                })
                .transpose()?;
            let mut recipes: Vec<RecipeChoice> = vec![];
            for r in &d.recipes {
                let choice = match r.get_ref() {
                    RecipeRef::Name(n) => match frame_recipe::builtin(n) {
                        Some(b) => RecipeChoice::Given(b),
                        None => RecipeChoice::Named(n.clone()),
                    },
                    RecipeRef::Spec(spec) => {
                        let size = spec
                            .size
                            .as_deref()
                            .map(frame_recipe::parse_size)
                            .transpose()
                            .map_err(|e| at(r.span(), format!("recipe: {e}")))?;
                        let o = Overrides {
                            frames: spec.frames,
                            stride: spec.stride,
                            segments: spec.segments,
                            clips: spec.clips,
                            fps: spec.fps,
                            size,
                            fit: spec.fit,
                            short_side: spec.short_side,
                            filter: spec.filter,
                            ..Default::default()
                        };
                        RecipeChoice::Given(
                            frame_recipe::resolve(spec.base.as_deref(), &o)
                                .map_err(|e| at(r.span(), format!("recipe: {e}")))?,
                        )
                    }
                };
                if recipes.contains(&choice) {
                    return Err(at(
                        r.span(),
                        format!("recipe {:?} listed twice", choice.label()),
                    ));
                }
                recipes.push(choice);
            }
            plans.push(DatasetPlan {
                name: name.clone(),
                format: d.format,
                manifests: d.manifests.iter().map(|m| rel(m.get_ref())).collect(),
                classes: d.classes.as_deref().map(rel),
                links: d.links.as_deref().map(rel),
                url_template,
                split,
                split_ratios,
                multi_label: d.multi_label,
                base_dir: d.base_dir.as_deref().map(rel),
                recipes,
            });
        }
        Ok(RefreshPlan {
            max_duration,
            max_items: settings.max_items,
            max_bytes,
            verify_fraction,
            failure_exit_code,
            max_failures: settings.max_failures,
            max_failure_rate,
            datasets: plans,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::Config;

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("/etc/pmv/pmv.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn datasets_resolve_relative_to_the_file() {
        let c = Config::parse(
            "[refresh]\nmax_duration = \"5h 30m\"\nmax_bytes = \"2 GiB\"\n\
             [[datasets]]\nname = \"pmv400\"\nformat = \"pmv400\"\n\
             manifests = [\"lists/train.csv\", \"/abs/val.csv\"]\nrecipes = [\"videomae-16x4-224\"]\n",
            Path::new("/etc/pmv/pmv.toml"),
        )
        .unwrap();
        let plan = c.plan.unwrap();
        assert_eq!(
            plan.max_duration,
            Some(Duration::from_secs(5 * 3600 + 1800))
        );
        assert_eq!(plan.max_bytes, Some(2 << 30));
        assert_eq!(plan.verify_fraction, DEFAULT_VERIFY_FRACTION);
        let d = &plan.datasets[0];
        assert_eq!(
            d.manifests,
            vec![
                PathBuf::from("/etc/pmv/lists/train.csv"),
                PathBuf::from("/abs/val.csv")
            ]
        );
        assert_eq!(
            d.recipes,
            vec![RecipeChoice::Given(
                frame_recipe::builtin("videomae-16x4-224").unwrap()
            )]
        );
    }

    #[test]
    fn mistakes_name_their_line() {
        let e = err("[refresh]\nmax_duration = \"5 fortnights\"\n");
        assert!(e.contains("line 2: refresh.max_duration"), "{e}");
        let e = err("[refresh]\n\nverify_fraction = 1.5\n");
        assert!(
            e.contains("line 3: refresh.verify_fraction must be between 0 and 1"),
            "{e}"
        );
        let e = err("[refresh]\nfailure_exit_code = 75\n");
        assert!(e.contains("line 2") && e.contains("reserved"), "{e}");
        let ds = "[[datasets]]\nname = \"a\"\nformat = \"pmv400\"\nmanifests = [\"x.csv\"]\n";
        let e = err(&format!("{ds}{ds}"));
        assert!(e.contains("line 6: dataset \"a\" is declared twice"), "{e}");
        let e = err("[[datasets]]\nname = \"a/b\"\nformat = \"pmv400\"\nmanifests = [\"x\"]\n");
        assert!(e.contains("line 2: dataset name"), "{e}");
        let e = err("[[datasets]]\nname = \"a\"\nformat = \"mp3\"\nmanifests = [\"x\"]\n");
        assert!(e.contains("line 3"), "{e}");
        let e = err("[[datasets]]\nname = \"a\"\nformat = \"pmv400\"\nmanifests = []\n");
        assert!(e.contains("lists no manifests"), "{e}");
        let e = err(
            "[[datasets]]\nname = \"a\"\nformat = \"jsonl\"\nmanifests = [\"m\"]\n\
                     split_ratios = \"train=2\"\n",
        );
        assert!(e.contains("line 5: split_ratios"), "{e}");
        let e = err(
            "[[datasets]]\nname = \"a\"\nformat = \"jsonl\"\nmanifests = [\"m\"]\nmirror = 1\n",
        );
        assert!(e.contains("line 5") && e.contains("unknown field"), "{e}");
    }
}
