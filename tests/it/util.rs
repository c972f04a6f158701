//! Helpers: a temporary data root, running the binary, reading the catalog.

use std::path::{Path, PathBuf};
use std::process::Command;
#[cfg(feature = "train")]
use std::time::SystemTime;

use tempfile::TempDir;

/// A scratch directory with a data root inside it.
pub struct Env {
    pub dir: TempDir,
    pub root: PathBuf,
}

/// What a run of the binary produced.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Runs `cmd` to its end and keeps its exit code and output.
    pub fn of(mut cmd: Command) -> Out {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// stdout as JSON, checked against the schema of the command that printed it
    /// (`json_output::check`).
    pub fn json(&self) -> serde_json::Value {
        let doc = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        });
        crate::json_output::check(&doc);
        doc
    }

    /// Rejection lines printed on stderr.
    pub fn rejections(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| {
                !l.starts_with("error") && !l.starts_with("  caused") && !l.starts_with("...")
            })
            .collect()
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the venv's python (`scripts/setup.sh` installs it) with `args`; it must exit 0.
/// Returns its stdout.
#[cfg(any(feature = "media", feature = "train"))]
pub fn venv_python<A: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = A>) -> String {
    let out = Command::new(repo().join(".venv/bin/python"))
        .args(args)
        .output()
        .expect("run the venv python (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python printed UTF-8")
}

/// Where `pmv-data-train` is: beside `pmv-data`, where cargo builds every binary of
/// the workspace. Cargo builds a package's binaries for its own integration tests
/// only, and the trainer is another package: `scripts/test.sh` builds it first (`cargo
/// build -p pmv-train`). A trainer older than a source file it is built from fails
/// here, so a test never runs a stale trainer.
#[cfg(feature = "train")]
pub fn trainer_path() -> PathBuf {
    static CHECKED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let p = PathBuf::from(env!("CARGO_BIN_EXE_pmv-data")).with_file_name("pmv-data-train");
            let built = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: {e}; build the trainer with `cargo build -p pmv-train`",
                        p.display()
                    )
                });
            let crates = repo().join("crates");
            for c in [
                "pmv-train",
                "pmv-train-cli",
                "pmv-c10d",
                "pmv-core",
                "pmv-catalog",
                "pmv-shard",
                "pmv-term",
            ] {
                if let Some(newer) = newest_source(&crates.join(c)).filter(|(t, _)| *t > built) {
                    panic!(
                        "{} is older than {}: rebuild it with `cargo build -p pmv-train`",
                        p.display(),
                        newer.1.display()
                    );
                }
            }
            p
        })
        .clone()
}

/// The most recently changed file under `dir` (sources and manifests), with its time.
#[cfg(feature = "train")]
fn newest_source(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if let Ok(t) = meta.modified()
                && newest.as_ref().is_none_or(|(n, _)| t > *n)
            {
                newest = Some((t, path));
            }
        }
    }
    newest
}

/// The trainer binary, with no data root or log filter from the environment.
#[cfg(feature = "train")]
pub fn trainer() -> Command {
    let mut c = Command::new(trainer_path());
    c.env_remove("PMV_DATA_ROOT").env_remove("RUST_LOG");
    c
}

/// `pmv-data-train ARGS` run to its end.
#[cfg(feature = "train")]
pub fn train_run(args: &[&str]) -> Out {
    let mut c = trainer();
    c.args(args);
    Out::of(c)
}

pub fn pmv_list(name: &str) -> PathBuf {
    repo().join("manifests/pmv400").join(name)
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        Env { dir, root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (creating parent directories) and returns its path.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// The binary with this root. Test servers listen on 127.0.0.1, so fetching from
    /// private hosts is allowed (`env_remove("PMV_FETCH_ALLOW_PRIVATE_HOSTS")` to see
    /// the refusal).
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pmv-data"));
        c.env_remove("PMV_DATA_ROOT")
            .env_remove("PMV_DATA_CONFIG")
            .env_remove("RUST_LOG")
            .env("PMV_FETCH_ALLOW_PRIVATE_HOSTS", "1")
            .arg("--root")
            .arg(&self.root);
        c
    }

    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Out {
        let mut c = self.command();
        c.args(args);
        Out::of(c)
    }

    /// `ingest --json` with the given arguments; the caller checks the exit code.
    pub fn ingest<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Out {
        let mut all: Vec<std::ffi::OsString> = vec!["--json".into(), "ingest".into()];
        all.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self.run(&all)
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["--json", "status"]);
        assert_eq!(out.code, 0, "status failed: {}", out.stderr);
        out.json()
    }

    pub fn dataset(&self, name: &str) -> serde_json::Value {
        let s = self.status();
        s["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no dataset {name} in {s}"))
            .clone()
    }

    pub fn catalog(&self) -> rusqlite::Connection {
        // Read-write (never created): SQLite rolls back a journal that a killed writer
        // left, which a read-only connection cannot. The tests only read.
        rusqlite::Connection::open_with_flags(
            self.root.join("catalog.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        )
        .unwrap()
    }

    /// One value from the catalog.
    pub fn query<T: rusqlite::types::FromSql>(&self, sql: &str) -> T {
        self.catalog().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// A column of strings from the catalog.
    pub fn strings(&self, sql: &str) -> Vec<String> {
        let c = self.catalog();
        let mut stmt = c.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

/// Path as a str, for argument lists.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small seeded generator for rendered test data (SplitMix64): one seed, one data set.
#[cfg(all(feature = "media", feature = "train"))]
pub struct TestRng(u64);

#[cfg(all(feature = "media", feature = "train"))]
impl TestRng {
    pub fn new(seed: u64) -> TestRng {
        TestRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n
    }

    /// Heads or tails.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }
}
