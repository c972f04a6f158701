//! `--nproc N`: this binary starts N local ranks of itself and waits for them.
//!
//! Owns the launcher's side of a local data-parallel run: which argument list and
//! environment each rank gets, passing SIGTERM on, waiting for every rank, killing the
//! ranks that hang after another failed, and the exit status of the whole. It never
//! trains, never loads libtorch, never installs the trainer's own signal handlers (the
//! ranks do that), and never writes to stdout: rank 0's stdout is the command's.
//!
//! Each rank is this executable again with the original arguments minus `--nproc N`
//! (every other argument byte for byte, `argv[0]` included) and the environment
//! torchrun gives its workers: `RANK=r`, `WORLD_SIZE=N`, `LOCAL_RANK=r`,
//! `LOCAL_WORLD_SIZE=N`, `MASTER_ADDR=127.0.0.1`, `MASTER_PORT` (a port that was free on
//! 127.0.0.1 a moment before), plus `PMV_DATA_LAUNCHER=nproc`. When `OMP_NUM_THREADS` is
//! not set, each rank gets `max(1, cores / N)`: torchrun sets 1, but CPU ranks compute
//! on those cores, so they share them instead.
//!
//! Rank 0 keeps this process's stdout (its summary or `--json` document is the
//! command's output); the other ranks' stdout goes to /dev/null. Every rank keeps
//! stderr; none reads stdin (/dev/null).
//!
//! Signals: the ranks stay in this process's group, so a terminal's Ctrl-C (SIGINT)
//! reaches every rank directly; this process only keeps waiting for them and does not
//! pass SIGINT on (a second SIGINT would end a rank before its checkpoint). To stop the
//! ranks from elsewhere, send SIGTERM to this process (as `timeout` and `kill PID` do):
//! it is passed on to every live rank. A SIGTERM sent to the whole process group
//! (`kill %1` in a shell, systemd) reaches the ranks directly too, and the trainer ends
//! the usual way on its second SIGTERM, before its checkpoint; so a rank that already has
//! one pending, or that caught SIGTERM at the last poll and no longer does (it just ran
//! its handler, which resets it), is not sent the first one again. A rank that never
//! caught SIGTERM (still starting) gets it and ends; the second SIGTERM to this process
//! goes to every rank, as the second one ends the trainer. Should this process end
//! without waiting (SIGKILL, the OOM killer), each rank gets a SIGTERM from the kernel
//! (`PR_SET_PDEATHSIG`), so it checkpoints and stops instead of training on alone.
//!
//! Waiting: every rank is polled about every 100 ms. When a rank exits non-zero, the
//! others stop by themselves within `--dist-timeout` (they notice the lost rank); a rank
//! still running `--dist-timeout` + 30 s later is killed (SIGKILL), with a line on
//! stderr. The exit status is 0 when every rank exited 0, else the status of the first
//! rank that failed (128 + signal for a rank ended by a signal, as a shell reports it;
//! among ranks seen failing in the same poll, the lowest). Every rank is waited for on
//! every path, so none is left a zombie.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pmv_term::exit::Exit;
use pmv_term::output::errln;

/// How often the ranks are polled.
const POLL: Duration = Duration::from_millis(100);

/// What the ranks get beyond `--dist-timeout` to stop after one failed.
const GRACE_EXTRA: Duration = Duration::from_secs(30);

/// The environment variables by which a launcher (torchrun, srun) makes a process a rank.
const RANK_VARS: &[&str] = &["RANK", "SLURM_PROCID"];

/// Why `--nproc` could not run its ranks.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// `--nproc` in a process a launcher already made a rank (exit 2).
    #[error("--nproc starts ranks itself; under torchrun or srun leave it out ({var}={value})")]
    AlreadyARank { var: &'static str, value: String },
    #[error("cannot find this program's own executable to start the ranks: {0}")]
    Exe(#[source] std::io::Error),
    #[error("cannot find a free port on 127.0.0.1 for the ranks (MASTER_PORT): {0}")]
    Port(#[source] std::io::Error),
    #[error("cannot install the handler that passes SIGTERM on to the ranks: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot start rank {rank} ({}): {source}", exe.display())]
    Start {
        rank: u32,
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SpawnError {
    /// [`Exit::Usage`] (2) for `--nproc` under another launcher, else [`Exit::Error`] (1).
    pub fn exit(&self) -> Exit {
        match self {
            SpawnError::AlreadyARank { .. } => Exit::Usage,
            _ => Exit::Error,
        }
    }
}

/// Whether a command given `--nproc nproc` should start its ranks here: `Ok(false)`
/// for one process (`nproc` 1) and for a rank this launcher started (it carries
/// `PMV_DATA_LAUNCHER=nproc` and `WORLD_SIZE=nproc`, as when a recipe file sets
/// `nproc`), an error for a process another launcher made a rank. `var` reads the
/// environment.
pub fn should_launch(nproc: u32, var: impl Fn(&str) -> Option<String>) -> Result<bool, SpawnError> {
    if nproc <= 1 {
        return Ok(false);
    }
    let Some((name, value)) = RANK_VARS
        .iter()
        .find_map(|name| var(name).map(|value| (*name, value)))
    else {
        return Ok(true);
    };
    let ours = var("PMV_DATA_LAUNCHER").as_deref() == Some("nproc")
        && var("WORLD_SIZE").and_then(|w| w.parse::<u32>().ok()) == Some(nproc);
    if ours {
        Ok(false)
    } else {
        Err(SpawnError::AlreadyARank { var: name, value })
    }
}

/// Runs `nproc` ranks of this executable with `argv` (this process's arguments,
/// `argv[0]` first) minus `--nproc`, waits for all of them and returns the exit status
/// of the whole (see the module documentation). `dist_timeout` is `--dist-timeout` in
/// seconds.
pub fn run_local(nproc: u32, dist_timeout: u64, argv: &[OsString]) -> Result<u8, SpawnError> {
    let exe = std::env::current_exe().map_err(SpawnError::Exe)?;
    let port = free_port().map_err(SpawnError::Port)?;
    let mut env = vec![
        (OsString::from("MASTER_ADDR"), OsString::from("127.0.0.1")),
        (
            OsString::from("MASTER_PORT"),
            OsString::from(port.to_string()),
        ),
    ];
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = omp_threads(cores, nproc);
        env.push(("OMP_NUM_THREADS".into(), threads.to_string().into()));
    }
    let grace = Duration::from_secs(dist_timeout).saturating_add(GRACE_EXTRA);
    run_children(
        &exe,
        argv.first().map(OsString::as_os_str),
        &without_nproc(argv.get(1..).unwrap_or_default()),
        nproc,
        grace,
        &env,
    )
}

/// OpenMP threads of each of `nproc` ranks on `cores` cores.
fn omp_threads(cores: usize, nproc: u32) -> usize {
    (cores / (nproc.max(1) as usize)).max(1)
}

/// A port that was free on 127.0.0.1 when asked (bound, read and released).
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// `args` without every `--nproc N` and `--nproc=N` before a `--`; every other
/// argument is kept as it is.
fn without_nproc(args: &[OsString]) -> Vec<OsString> {
    let mut kept = Vec::with_capacity(args.len());
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            kept.push(arg.clone());
            kept.extend(rest.cloned());
            break;
        }
        if arg == "--nproc" {
            rest.next();
        } else if !arg.as_encoded_bytes().starts_with(b"--nproc=") {
            kept.push(arg.clone());
        }
    }
    kept
}

/// Starts `nproc` ranks of `exe` (see the module documentation), passes SIGTERM on
/// while they run, and returns the exit status of the whole. `grace`: how long the
/// other ranks may run after one failed. `env`: variables every rank gets besides its
/// rank's own.
fn run_children(
    exe: &Path,
    arg0: Option<&OsStr>,
    args: &[OsString],
    nproc: u32,
    grace: Duration,
    env: &[(OsString, OsString)],
) -> Result<u8, SpawnError> {
    let signals = Signals::install()?;
    let result = Ranks::start(exe, arg0, args, nproc, env)
        .map(|ranks| ranks.wait(grace, &|| signals.take_term()));
    signals.uninstall();
    result
}

/// SIGTERM and SIGINT as flags: SIGTERM to pass on, SIGINT only so that a terminal's
/// Ctrl-C does not end this process before the ranks it reached.
struct Signals {
    term: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Signals {
    fn install() -> Result<Signals, SpawnError> {
        let term = Arc::new(AtomicBool::new(false));
        let int = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for (sig, flag) in [
            (signal_hook::consts::SIGTERM, &term),
            (signal_hook::consts::SIGINT, &int),
        ] {
            match signal_hook::flag::register(sig, Arc::clone(flag)) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    for id in ids {
                        signal_hook::low_level::unregister(id);
                    }
                    return Err(SpawnError::Signal(e));
                }
            }
        }
        Ok(Signals { term, ids })
    }

    /// Whether a SIGTERM came since the last call.
    fn take_term(&self) -> bool {
        self.term.swap(false, Ordering::SeqCst)
    }

    fn uninstall(self) {
        for id in self.ids {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// One started rank.
struct Rank {
    rank: u32,
    child: Child,
    /// Set once the rank has exited (and was waited for).
    status: Option<ExitStatus>,
    /// The rank caught SIGTERM when last polled.
    catching_term: bool,
    /// A SIGTERM was passed on to the rank.
    term_sent: bool,
}

/// The started ranks.
struct Ranks {
    ranks: Vec<Rank>,
}

impl Ranks {
    /// Starts the ranks; if one cannot start, kills and waits for those already started.
    fn start(
        exe: &Path,
        arg0: Option<&OsStr>,
        args: &[OsString],
        nproc: u32,
        env: &[(OsString, OsString)],
    ) -> Result<Ranks, SpawnError> {
        let mut started = Ranks { ranks: Vec::new() };
        for rank in 0..nproc {
            let mut cmd = Command::new(exe);
            if let Some(arg0) = arg0 {
                cmd.arg0(arg0);
            }
            cmd.args(args)
                .envs(env.iter().map(|(k, v)| (k, v)))
                // A stray agent flag would make rank 0 a client of a store nobody hosts.
                .env_remove("TORCHELASTIC_USE_AGENT_STORE")
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", nproc.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("LOCAL_WORLD_SIZE", nproc.to_string())
                .env("PMV_DATA_LAUNCHER", "nproc")
                .stdin(Stdio::null());
            // SAFETY: between fork and exec the closure calls only prctl() and
            // getppid(), which are async-signal-safe, and allocates nothing.
            let parent = std::process::id();
            unsafe {
                cmd.pre_exec(move || term_when_orphaned(parent));
            }
            if rank > 0 {
                cmd.stdout(Stdio::null());
            }
            match cmd.spawn() {
                Ok(child) => started.ranks.push(Rank {
                    rank,
                    child,
                    status: None,
                    catching_term: false,
                    term_sent: false,
                }),
                Err(source) => {
                    started.kill_all();
                    return Err(SpawnError::Start {
                        rank,
                        exe: exe.to_owned(),
                        source,
                    });
                }
            }
        }
        Ok(started)
    }

    /// Passes a SIGTERM on to every rank still running that has not received it
    /// already (see the module documentation).
    fn forward_term(&mut self) {
        for r in &mut self.ranks {
            if r.status.is_some() || matches!(r.child.try_wait(), Ok(Some(_))) {
                // Exited (a zombie until waited for): nothing to signal, and its pid
                // cannot have gone to another process yet.
                continue;
            }
            let now = SignalState::of(r.child.id(), libc::SIGTERM);
            let has_it = now.pending || (r.catching_term && !now.caught);
            if has_it && !r.term_sent {
                continue;
            }
            let Ok(pid) = libc::pid_t::try_from(r.child.id()) else {
                continue;
            };
            // SAFETY: kill() has no memory effects; the pid is our child's, not yet
            // waited for, so it still names that process.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            r.term_sent = true;
        }
    }

    /// Notes which running ranks catch SIGTERM now.
    fn note_handlers(&mut self) {
        for r in &mut self.ranks {
            if r.status.is_none() {
                r.catching_term = SignalState::of(r.child.id(), libc::SIGTERM).caught;
            }
        }
    }

    /// Kills every rank still running and waits for all of them.
    fn kill_all(&mut self) {
        for r in &mut self.ranks {
            if r.status.is_none() {
                let _ = r.child.kill();
                r.status = r.child.wait().ok().or(Some(ExitStatus::from_raw(9)));
            }
        }
    }

    /// Waits for every rank (see the module documentation); `term` says whether a
    /// SIGTERM came that should be passed on.
    fn wait(mut self, grace: Duration, term: &dyn Fn() -> bool) -> u8 {
        // (rank, status, when) of the first rank that failed.
        let mut first: Option<(u32, u8, Instant)> = None;
        loop {
            if term() {
                self.forward_term();
            }
            let mut running = 0;
            for r in &mut self.ranks {
                if r.status.is_some() {
                    continue;
                }
                let status = match r.child.try_wait() {
                    Ok(Some(status)) => status,
                    Ok(None) => {
                        running += 1;
                        continue;
                    }
                    Err(e) => {
                        errln!("cannot wait for rank {}: {e}", r.rank);
                        ExitStatus::from_raw(1 << 8)
                    }
                };
                r.status = Some(status);
                let code = exit_code(status);
                if code != 0 && first.is_none() {
                    let how = status
                        .signal()
                        .map_or_else(String::new, |s| format!("killed by signal {s}, "));
                    errln!(
                        "rank {} exited with status {code} ({how}first to fail)",
                        r.rank
                    );
                    first = Some((r.rank, code, Instant::now()));
                }
            }
            if running == 0 {
                break;
            }
            self.note_handlers();
            if let Some((rank, _, when)) = first
                && when.elapsed() >= grace
            {
                let hung: Vec<String> = self
                    .ranks
                    .iter()
                    .filter(|r| r.status.is_none())
                    .map(|r| r.rank.to_string())
                    .collect();
                errln!(
                    "rank(s) {} still running {} after rank {rank} failed: killed",
                    hung.join(", "),
                    humantime::format_duration(grace)
                );
                self.kill_all();
                break;
            }
            std::thread::sleep(POLL);
        }
        first.map_or(0, |(_, code, _)| code)
    }
}

/// In a rank between fork and exec: a SIGTERM when the thread that started it ends,
/// and at once if `parent` has already gone.
fn term_when_orphaned(parent: u32) -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid() touch no memory of ours.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
            return Err(std::io::Error::last_os_error());
        }
        if u32::try_from(libc::getppid()).ok() != Some(parent) {
            libc::raise(libc::SIGTERM);
        }
    }
    Ok(())
}

/// A shell's status for `status`: the exit code, or 128 + the signal that ended it.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(255),
        (None, None) => 1,
    }
}

/// What a process does with one signal, from `/proc/PID/status`.
#[derive(Debug, Default, PartialEq, Eq)]
struct SignalState {
    /// The signal waits to be delivered (`SigPnd` or `ShdPnd`).
    pending: bool,
    /// A handler catches it (`SigCgt`).
    caught: bool,
}

impl SignalState {
    /// `sig`'s state in process `pid` (all false when /proc cannot be read).
    fn of(pid: u32, sig: libc::c_int) -> SignalState {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|status| SignalState::parse(&status, sig))
            .unwrap_or_default()
    }

    /// `sig`'s state in a `/proc/PID/status` text (hexadecimal masks, bit `sig - 1`).
    fn parse(status: &str, sig: libc::c_int) -> SignalState {
        let has = |fields: &[&str]| {
            status.lines().any(|line| {
                fields.iter().any(|f| {
                    line.strip_prefix(f)
                        .and_then(|rest| rest.strip_prefix(':'))
                        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
                        .zip(u32::try_from(sig - 1).ok().filter(|b| *b < 64))
                        .is_some_and(|(m, bit)| m & (1 << bit) != 0)
                })
            })
        };
        SignalState {
            pending: has(&["SigPnd", "ShdPnd"]),
            caught: has(&["SigCgt"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    /// Runs `script` as `nproc` ranks of `/bin/sh -c` with `dir` as `$1`.
    fn run_sh(script: &str, dir: &Path, nproc: u32, grace: Duration) -> u8 {
        let args = os(&["-c", script, "sh", dir.to_str().unwrap()]);
        let env = [(OsString::from("MASTER_PORT"), OsString::from("4242"))];
        run_children(Path::new("/bin/sh"), None, &args, nproc, grace, &env).unwrap()
    }

    #[test]
    fn nproc_is_removed_and_nothing_else() {
        let args = os(&[
            "train",
            "--nproc",
            "2",
            "--model",
            "tiny3d",
            "--nproc=4",
            "--out",
            "a b",
            "--",
            "--nproc",
            "3",
        ]);
        assert_eq!(
            without_nproc(&args),
            os(&[
                "train", "--model", "tiny3d", "--out", "a b", "--", "--nproc", "3"
            ])
        );
        let same = os(&["eval", "--nprocs", "2", "-n", "--run", "--nproc-x"]);
        assert_eq!(without_nproc(&same), same);
        // Not UTF-8: kept byte for byte.
        use std::os::unix::ffi::OsStringExt;
        let odd = vec![
            OsString::from_vec(vec![0x66, 0xff, 0x6f]),
            "--nproc=2".into(),
        ];
        assert_eq!(without_nproc(&odd), odd[..1]);
    }

    #[test]
    fn a_rank_of_another_launcher_is_refused() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(!should_launch(1, env(&[("RANK", "0")])).unwrap());
        assert!(should_launch(2, env(&[])).unwrap());
        let e = should_launch(2, env(&[("SLURM_PROCID", "3")])).unwrap_err();
        assert_eq!(e.exit(), Exit::Usage);
        assert!(e.to_string().contains("(SLURM_PROCID=3)"), "{e}");
        let e = should_launch(2, env(&[("RANK", "1"), ("WORLD_SIZE", "2")])).unwrap_err();
        assert!(e.to_string().contains("leave it out (RANK=1)"), "{e}");
        // A rank of ours whose recipe file sets nproc runs as a rank.
        let ours = env(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("PMV_DATA_LAUNCHER", "nproc"),
        ]);
        assert!(!should_launch(2, ours).unwrap());
        let other_size = env(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "4"),
            ("PMV_DATA_LAUNCHER", "nproc"),
        ]);
        assert!(should_launch(2, other_size).is_err());
    }

    #[test]
    fn every_rank_gets_its_own_rank_and_the_same_world() {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"echo "$RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_PORT $PMV_DATA_LAUNCHER" > "$1/env.$RANK""#;
        assert_eq!(run_sh(script, dir.path(), 3, Duration::from_secs(5)), 0);
        for r in 0..3 {
            let line = std::fs::read_to_string(dir.path().join(format!("env.{r}"))).unwrap();
            assert_eq!(line.trim(), format!("{r} 3 {r} 3 4242 nproc"));
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn the_first_rank_to_fail_gives_the_status() {
        let dir = tempfile::tempdir().unwrap();
        // Rank 1 fails at once with 3, rank 0 a moment later with 5, rank 2 succeeds.
        let script = r#"case $RANK in 0) sleep 1.5; exit 5;; 1) exit 3;; *) exit 0;; esac"#;
        assert_eq!(run_sh(script, dir.path(), 3, Duration::from_secs(10)), 3);
        // A rank ended by a signal counts as 128 + the signal.
        let script = r#"if [ "$RANK" = 1 ]; then kill -KILL $$; fi; sleep 0.5"#;
        assert_eq!(run_sh(script, dir.path(), 2, Duration::from_secs(10)), 137);
    }

    #[test]
    fn a_hung_rank_is_killed_after_the_grace_time() {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"if [ "$RANK" = 0 ]; then exit 4; fi; exec sleep 60"#;
        let t = Instant::now();
        assert_eq!(run_sh(script, dir.path(), 2, Duration::from_millis(500)), 4);
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }

    #[test]
    fn a_rank_that_cannot_start_names_the_executable() {
        let exe = Path::new("/nonexistent/pmv-data-train");
        let err = run_children(exe, None, &[], 2, Duration::from_secs(1), &[]).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/pmv-data-train"),
            "{err}"
        );
        assert!(err.to_string().contains("rank 0"), "{err}");
    }

    #[test]
    fn sigterm_is_passed_on_to_every_rank() {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"trap 'echo term > "$1/term.$RANK"; exit 143' TERM
            touch "$1/ready.$RANK"
            i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; exit 9"#;
        let args = os(&["-c", script, "sh", dir.path().to_str().unwrap()]);
        let ranks = Ranks::start(Path::new("/bin/sh"), None, &args, 3, &[]).unwrap();
        let ready = |r: u32| dir.path().join(format!("ready.{r}")).exists();
        let t = Instant::now();
        while !(0..3).all(ready) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the ranks never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let sent = AtomicBool::new(true);
        let code = ranks.wait(Duration::from_secs(20), &|| {
            sent.swap(false, Ordering::SeqCst)
        });
        assert_eq!(code, 143);
        for r in 0..3 {
            let seen = std::fs::read_to_string(dir.path().join(format!("term.{r}")));
            assert_eq!(seen.unwrap().trim(), "term", "rank {r}");
        }
        assert!(t.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn ranks_get_sigterm_when_their_launcher_ends() {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"trap 'echo term > "$1/term.$RANK"; exit 143' TERM
            touch "$1/ready.$RANK"
            i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done"#;
        let args = os(&["-c", script, "sh", dir.path().to_str().unwrap()]);
        let d = dir.path().to_owned();
        let t = Instant::now();
        // The thread that starts the ranks ends without waiting for them (once they
        // trap SIGTERM), as a killed launcher would.
        let ranks = std::thread::spawn(move || {
            let ranks = Ranks::start(Path::new("/bin/sh"), None, &args, 2, &[]).unwrap();
            while !(0..2).all(|r| d.join(format!("ready.{r}")).exists()) {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "the ranks never started"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            ranks
        })
        .join()
        .unwrap();
        assert_eq!(ranks.wait(Duration::from_secs(40), &|| false), 143);
        assert!(t.elapsed() < Duration::from_secs(25), "{:?}", t.elapsed());
        for r in 0..2 {
            assert!(dir.path().join(format!("term.{r}")).exists(), "rank {r}");
        }
    }

    #[test]
    fn signal_states_are_read_from_proc_status() {
        let status = "Name:\tsh\nShdPnd:\t0000000000004000\nSigPnd:\t0000000000000000\n\
                      SigBlk:\t0000000000000002\nSigCgt:\t0000000000000002\n";
        let term = SignalState::parse(status, libc::SIGTERM);
        assert_eq!(
            term,
            SignalState {
                pending: true,
                caught: false
            }
        );
        let int = SignalState::parse(status, libc::SIGINT);
        assert_eq!(
            int,
            SignalState {
                pending: false,
                caught: true
            }
        );
        let bad = SignalState::parse("SigPnd:\tzz\nSigCgt:\n", libc::SIGINT);
        assert_eq!(bad, SignalState::default());
        // A process that installs a SIGTERM handler shows it.
        let child = Command::new("/bin/sh")
            .args(["-c", "trap 'exit 0' TERM; sleep 5"])
            .spawn()
            .unwrap();
        let mut ranks = Ranks {
            ranks: vec![Rank {
                rank: 0,
                child,
                status: None,
                catching_term: false,
                term_sent: false,
            }],
        };
        let t = Instant::now();
        while !SignalState::of(ranks.ranks[0].child.id(), libc::SIGTERM).caught {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no SIGTERM handler seen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ranks.kill_all();
    }

    #[test]
    fn a_sigterm_the_ranks_had_already_is_not_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        // Like the trainer: the first SIGTERM is noted and resets the handler, the
        // second ends the process.
        let script = r#"trap 'echo term >> "$1/term.$RANK"; trap - TERM' TERM
            touch "$1/ready.$RANK"
            i=0; while [ ! -e "$1/stop" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done"#;
        let args = os(&["-c", script, "sh", dir.path().to_str().unwrap()]);
        let mut ranks = Ranks::start(Path::new("/bin/sh"), None, &args, 2, &[]).unwrap();
        let file = |name: &str, r: u32| dir.path().join(format!("{name}.{r}"));
        let t = Instant::now();
        while !(0..2).all(|r| file("ready", r).exists()) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the ranks never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ranks.note_handlers();
        assert!(ranks.ranks.iter().all(|r| r.catching_term));
        // A SIGTERM to the whole group reaches the ranks directly...
        for r in &ranks.ranks {
            // SAFETY: kill() of our own running child.
            unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) };
        }
        while !(0..2).all(|r| file("term", r).exists()) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the ranks never saw SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // ...and this process's copy is not passed on: it would end them.
        ranks.forward_term();
        std::fs::write(dir.path().join("stop"), "").unwrap();
        assert_eq!(ranks.wait(Duration::from_secs(20), &|| false), 0);
        for r in 0..2 {
            assert_eq!(std::fs::read_to_string(file("term", r)).unwrap(), "term\n");
        }
    }

    #[test]
    fn ranks_share_the_cores() {
        assert_eq!(omp_threads(16, 4), 4);
        assert_eq!(omp_threads(2, 4), 1);
        assert_eq!(omp_threads(7, 2), 3);
    }
}
