//! One file per subcommand: each wires options to library calls and prints results.
//!
//! Nothing a test would want to check lives only here; the logic is in the library.

mod completions;
mod demo;
mod doctor;
mod eval;
mod fetch;
mod ingest;
mod pretrain;
mod probe;
mod refresh;
mod resolve;
mod shard;
mod status;
mod train;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use pmv_catalog::{Catalog, RunStatus};
use pmv_core::report::write_run_report;
use pmv_core::root::{DEFAULT_ROOT, DataRoot};
use pmv_pipeline::config::Config;
use pmv_pipeline::source::SourceSettings;
use pmv_pipeline::source::cookies::CookieJar;

use crate::cli::{Cli, Command, DouyinArgs, GlobalArgs};
use pmv_term::exit::Exit;
use pmv_term::output::outln;

pub fn run(cli: Cli) -> Result<Exit> {
    let app = App::new(&cli.global)?;
    match cli.command {
        Command::Ingest(args) => ingest::run(&app, args),
        Command::Status(args) => status::run(&app, args),
        Command::Fetch(args) => fetch::run(&app, args),
        Command::Resolve(args) => resolve::run(&app, args),
        Command::Shard(args) => shard::run(&app, args),
        Command::Probe(args) => probe::run(&app, args),
        Command::Refresh(args) => refresh::run(&app, args),
        Command::Demo(args) => demo::run(&app, args),
        Command::Doctor => doctor::run(&app),
        Command::Train(args) => train::run(&app, args),
        Command::Eval(args) => eval::run(&app, args),
        Command::Pretrain(args) => pretrain::run(&app, args),
        Command::Completions { shell } => completions::run(shell),
    }
}

/// The sources' settings: the configuration's `[sources]`, with the Douyin
/// User-Agent and cookie file of the command line (else of the configuration).
pub fn source_settings(app: &App, douyin: &DouyinArgs) -> Result<SourceSettings> {
    let mut sources = SourceSettings::from_config(&app.config.sources)
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    if let Some(ua) = &douyin.douyin_user_agent {
        sources.douyin_user_agent = ua.clone();
    }
    if let Some(path) = douyin
        .cookies
        .as_ref()
        .or(app.config.douyin.cookies.as_ref())
    {
        let jar = CookieJar::load(path)?;
        tracing::info!(
            file = %path.display(),
            cookies = jar.cookies().len(),
            expired = jar.expired,
            "Douyin cookie file read"
        );
        if jar.is_empty() {
            // Other sources still work: the run goes on, Douyin lookups without cookies.
            tracing::warn!(
                file = %path.display(),
                expired = jar.expired,
                "the cookie file holds no unexpired cookie: export it again"
            );
        } else {
            sources.douyin_cookies = Some(Arc::new(jar));
        }
    }
    Ok(sources)
}

/// A flag that SIGINT or SIGTERM sets: the first asks the command for a clean stop (it
/// finishes what is in flight, records it and exits with 130); a second exits at once,
/// which loses nothing either, since every change is committed as it is made.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&cancel))
            .context("cannot install the signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&cancel))
            .context("cannot install the signal handler")?;
    }
    Ok(cancel)
}

/// What every command needs: the configuration, the root and the output mode.
pub struct App {
    pub config: Config,
    pub root: DataRoot,
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
}

impl App {
    fn new(global: &GlobalArgs) -> Result<App> {
        let mut config = match &global.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        let root: PathBuf = global
            .root
            .clone()
            .or_else(|| config.root.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        Ok(App {
            config,
            root: DataRoot::new(root),
            json: global.json,
            quiet: global.quiet,
            verbose: global.verbose,
        })
    }

    /// Ends a run recorded at its start: the catalog's row gets `status` and `result`,
    /// and `reports/<run-id>.json` the whole record. Returns the report's path.
    pub fn finish_run(
        &self,
        catalog: &Catalog,
        run: (&str, &str),
        args: &serde_json::Value,
        status: RunStatus,
        result: &serde_json::Value,
    ) -> Result<PathBuf> {
        let (run_id, command) = run;
        catalog.finish_run(run_id, status, result)?;
        let document = serde_json::json!({
            "run_id": run_id,
            "command": command,
            "pmv_data": pmv_core::VERSION,
            "args": args,
            "result": result,
        });
        write_run_report(&self.root, run_id, &document).context("cannot write the run report")
    }

    /// Ends a run as failed with `error`; the caller then returns the error.
    pub fn fail_run(
        &self,
        catalog: &Catalog,
        run: (&str, &str),
        args: &serde_json::Value,
        error: &dyn std::fmt::Display,
    ) -> Result<()> {
        let result = serde_json::json!({ "error": error.to_string() });
        self.finish_run(catalog, run, args, RunStatus::Failed, &result)
            .map(drop)
    }

    /// Prints the `--json` document of a command that recorded run `run_id` in
    /// `report`: `result` (an object, as the report holds it) with the keys every such
    /// document has, `command`, `run_id` and `report`.
    pub fn print_run_json(
        &self,
        run: (&str, &str),
        report: &std::path::Path,
        result: serde_json::Value,
    ) -> Result<()> {
        let (run_id, command) = run;
        let mut doc = result;
        if let Some(o) = doc.as_object_mut() {
            o.insert("command".into(), command.into());
            o.insert("run_id".into(), run_id.into());
            o.insert("report".into(), report.display().to_string().into());
        }
        self.print_json(&doc)
    }

    /// Prints a JSON document on stdout.
    pub fn print_json(&self, value: &impl serde::Serialize) -> Result<()> {
        let text = serde_json::to_string_pretty(value).context("cannot render JSON")?;
        outln!("{text}");
        Ok(())
    }
}
