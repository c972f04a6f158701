//! Which rank this process is, from the launcher's environment (torchrun, Slurm, or
//! `--nproc`, whose children carry torchrun's variables).
//!
//! This module owns reading and checking those variables, and expanding the first host of
//! a Slurm hostlist. It never touches torch, never opens a socket, and never runs a
//! program (no `scontrol`): the answer depends on the variables alone, so the tests can
//! pass a map.

use std::env;

/// Who started this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// torchrun, or `pmv-data-train --nproc`, whose children look like torchrun's
    /// (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, ...).
    Torchrun,
    /// `srun`: one task per rank (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, ...).
    Slurm,
}

/// This process's place in a multi-process job, and where its rendezvous is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Who started this process.
    pub launcher: Launcher,
    /// This process's rank, below `world`.
    pub rank: usize,
    /// The number of processes in the job, at least 2.
    pub world: usize,
    /// This process's rank among those on this machine (its CUDA device index).
    pub local_rank: usize,
    /// Ranks on this machine (`LOCAL_WORLD_SIZE`, `SLURM_NTASKS_PER_NODE`, or this
    /// node's number in `SLURM_TASKS_PER_NODE`), if known.
    pub local_world: Option<usize>,
    /// The host of the rendezvous store (rank 0's machine).
    pub master_addr: String,
    /// The port of the rendezvous store.
    pub master_port: u16,
    /// The launcher already hosts the rendezvous store on `master_addr:master_port`
    /// (torchrun: `TORCHELASTIC_USE_AGENT_STORE=True`), so rank 0 must connect as a client.
    pub agent_store: bool,
}

/// Why the launcher's environment does not describe a job this process can join.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LaunchError {
    /// A variable is set to something unusable.
    #[error("{var}={value:?} {why}")]
    Bad {
        /// The variable.
        var: &'static str,
        /// Its value, as set.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A variable the launcher should have set is missing.
    #[error("{var} is not set; {why}")]
    Missing {
        /// The variable.
        var: &'static str,
        /// Why it is needed.
        why: String,
    },
    /// A Slurm hostlist expression that does not parse.
    #[error("Slurm hostlist {list:?} {why}")]
    Hostlist {
        /// The expression.
        list: String,
        /// What is wrong with it.
        why: String,
    },
}

/// The rendezvous port under Slurm when `MASTER_PORT` is not set is
/// `SLURM_PORT_BASE + SLURM_JOB_ID % SLURM_PORT_SPAN`: every rank of a job computes the
/// same port, and two jobs sharing a node pick the same one only when their ids are
/// equal modulo 20000, which is rare for jobs running at the same time. (A port that is
/// taken anyway fails the store's listen with "address in use" naming the port; set
/// `MASTER_PORT` then.)
const SLURM_PORT_BASE: u32 = 20000;
/// See [`SLURM_PORT_BASE`].
const SLURM_PORT_SPAN: u64 = 20000;

/// A variable lookup: the process environment, or a map in the tests.
type Vars<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Launch {
    /// From the process environment. `Ok(None)`: not started by a launcher, or a world
    /// of 1 (a single process; nothing to join).
    pub fn from_env() -> Result<Option<Launch>, LaunchError> {
        // A value that is not UTF-8 is kept (lossily), so it fails as a bad value that the
        // error names rather than passing for an unset variable.
        Self::from_vars(&|k| env::var_os(k).map(|v| v.to_string_lossy().into_owned()))
    }

    /// The same as [`Launch::from_env`] from any variable lookup (the tests pass a map).
    ///
    /// torchrun's variables (`RANK`) win over Slurm's: under `srun torchrun ...` both
    /// are set, and torchrun's describe the processes that actually train.
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<Launch>, LaunchError> {
        if get("RANK").is_some() {
            return torchrun(get);
        }
        if get("SLURM_PROCID").is_some() && get("SLURM_NTASKS").is_some() {
            return slurm(get);
        }
        // WORLD_SIZE alone: a launcher that forgot RANK would otherwise start `world`
        // independent single-process runs.
        if let Some(value) = get("WORLD_SIZE")
            && number("WORLD_SIZE", &value)? > 1
        {
            return Err(LaunchError::Missing {
                var: "RANK",
                why: format!(
                    "WORLD_SIZE={value:?} asks for several processes, but not which one this is"
                ),
            });
        }
        Ok(None)
    }
}

/// torchrun (and `--nproc`): `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (`RANK` if unset),
/// `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, `TORCHELASTIC_USE_AGENT_STORE`.
fn torchrun(get: Vars) -> Result<Option<Launch>, LaunchError> {
    let world = required(get, "WORLD_SIZE", "torchrun sets it with RANK")?;
    let world = world_size("WORLD_SIZE", &world)?;
    let rank = rank_below(get, "RANK", ("WORLD_SIZE", world))?;
    if world == 1 {
        return Ok(None);
    }
    let local_world = optional(get, "LOCAL_WORLD_SIZE")?;
    let local_world = match local_world {
        Some((value, n)) => Some(local_world_size("LOCAL_WORLD_SIZE", &value, n, world)?),
        None => None,
    };
    let local_rank = match get("LOCAL_RANK") {
        Some(value) => {
            let n = number("LOCAL_RANK", &value)?;
            local_rank_below(
                "LOCAL_RANK",
                &value,
                n,
                local_world.map(|w| ("LOCAL_WORLD_SIZE", w)),
            )?
        }
        None => {
            let value = rank.to_string();
            local_rank_below(
                "RANK",
                &value,
                rank,
                local_world.map(|w| ("LOCAL_WORLD_SIZE", w)),
            )?
        }
    };
    let master_addr = required(get, "MASTER_ADDR", "torchrun sets it with RANK")?;
    let master_addr = address("MASTER_ADDR", master_addr)?;
    let port = required(get, "MASTER_PORT", "torchrun sets it with RANK")?;
    let master_port = port_number("MASTER_PORT", &port)?;
    // torch.distributed compares with str(True) exactly.
    let agent_store = get("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True");
    Ok(Some(Launch {
        launcher: Launcher::Torchrun,
        rank,
        world,
        local_rank,
        local_world,
        master_addr,
        master_port,
        agent_store,
    }))
}

/// `srun`: `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, `SLURM_NTASKS_PER_NODE` or
/// `SLURM_TASKS_PER_NODE`, `MASTER_ADDR` or the first host of `SLURM_JOB_NODELIST`
/// (`SLURM_NODELIST`), `MASTER_PORT` or one derived from `SLURM_JOB_ID`.
fn slurm(get: Vars) -> Result<Option<Launch>, LaunchError> {
    let world = required(get, "SLURM_NTASKS", "srun sets it with SLURM_PROCID")?;
    let world = world_size("SLURM_NTASKS", &world)?;
    let rank = rank_below(get, "SLURM_PROCID", ("SLURM_NTASKS", world))?;
    if world == 1 {
        return Ok(None);
    }
    let local_world = slurm_local_world(get, world)?;
    let value = required(get, "SLURM_LOCALID", "srun sets it with SLURM_PROCID")?;
    let n = number("SLURM_LOCALID", &value)?;
    let local_rank = local_rank_below("SLURM_LOCALID", &value, n, local_world)?;
    let local_world = local_world.map(|(_, w)| w);
    let master_addr = match get("MASTER_ADDR") {
        Some(addr) => address("MASTER_ADDR", addr)?,
        None => {
            let (var, list) = match (get("SLURM_JOB_NODELIST"), get("SLURM_NODELIST")) {
                (Some(list), _) => ("SLURM_JOB_NODELIST", list),
                (None, Some(list)) => ("SLURM_NODELIST", list),
                (None, None) => {
                    return Err(LaunchError::Missing {
                        var: "MASTER_ADDR",
                        why: "nor is SLURM_JOB_NODELIST or SLURM_NODELIST, whose first host would be rank 0's".into(),
                    })
                }
            };
            first_host(&list).map_err(|e| match e {
                LaunchError::Hostlist { why, .. } => LaunchError::Bad {
                    var,
                    value: list.clone(),
                    why: format!("is not a Slurm hostlist: {why}"),
                },
                other => other,
            })?
        }
    };
    let master_port = match (get("MASTER_PORT"), get("SLURM_JOB_ID")) {
        (Some(port), _) => port_number("MASTER_PORT", &port)?,
        (None, Some(job)) => {
            let id = number("SLURM_JOB_ID", &job)? as u64;
            // Below 20000 + 20000, so it fits a u16.
            (SLURM_PORT_BASE + (id % SLURM_PORT_SPAN) as u32) as u16
        }
        (None, None) => {
            return Err(LaunchError::Missing {
                var: "MASTER_PORT",
                why: "nor is SLURM_JOB_ID, from which every rank would derive the same port".into(),
            });
        }
    };
    Ok(Some(Launch {
        launcher: Launcher::Slurm,
        rank,
        world,
        local_rank,
        local_world,
        master_addr,
        master_port,
        agent_store: false,
    }))
}

/// Ranks on this node under Slurm, with the variable it came from:
/// `SLURM_NTASKS_PER_NODE`, else this node's (`SLURM_NODEID`'s) count in
/// `SLURM_TASKS_PER_NODE` ("4(x2),3": 4 on nodes 0 and 1, 3 on node 2), else that list's
/// first count.
fn slurm_local_world(
    get: Vars,
    world: usize,
) -> Result<Option<(&'static str, usize)>, LaunchError> {
    if let Some((value, n)) = optional(get, "SLURM_NTASKS_PER_NODE")? {
        let n = local_world_size("SLURM_NTASKS_PER_NODE", &value, n, world)?;
        return Ok(Some(("SLURM_NTASKS_PER_NODE", n)));
    }
    let Some(value) = get("SLURM_TASKS_PER_NODE") else {
        return Ok(None);
    };
    let counts = tasks_per_node(&value).map_err(|why| LaunchError::Bad {
        var: "SLURM_TASKS_PER_NODE",
        value: value.clone(),
        why,
    })?;
    let node = match optional(get, "SLURM_NODEID")? {
        Some((_, node)) => node,
        None => 0,
    };
    // A node id past the list (it should not happen) falls back to the first count.
    let n = counts.get(node).or(counts.first()).copied().unwrap_or(0);
    let n = local_world_size("SLURM_TASKS_PER_NODE", &value, n, world)?;
    Ok(Some(("SLURM_TASKS_PER_NODE", n)))
}

/// The task count of each node in a `SLURM_TASKS_PER_NODE` value ("4(x2),3" → 4, 4, 3),
/// or why it does not parse.
fn tasks_per_node(value: &str) -> Result<Vec<usize>, String> {
    let mut counts = vec![];
    for part in value.split(',').map(str::trim) {
        let (count, repeat) = match part.split_once('(') {
            Some((count, rest)) => {
                let times = rest
                    .strip_prefix('x')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("has {part:?}, not COUNT or COUNT(xTIMES)"))?;
                let times: usize = times
                    .parse()
                    .map_err(|_| format!("has {part:?}, whose repeat {times:?} is not a number"))?;
                (count, times)
            }
            None => (part, 1),
        };
        let count: usize = count
            .parse()
            .map_err(|_| format!("has {part:?}, whose count {count:?} is not a number"))?;
        // Bounded: a node cannot host more tasks than the job has, checked by the caller.
        counts.extend(std::iter::repeat_n(count, repeat.min(65536)));
    }
    Ok(counts)
}

/// The value of `var`, or a [`LaunchError::Missing`] saying `why` it is expected.
fn required(get: Vars, var: &'static str, why: &str) -> Result<String, LaunchError> {
    get(var).ok_or_else(|| LaunchError::Missing {
        var,
        why: why.into(),
    })
}

/// The value of `var` and its number, if it is set.
fn optional(get: Vars, var: &'static str) -> Result<Option<(String, usize)>, LaunchError> {
    match get(var) {
        Some(value) => {
            let n = number(var, &value)?;
            Ok(Some((value, n)))
        }
        None => Ok(None),
    }
}

/// A non-negative whole number.
fn number(var: &'static str, value: &str) -> Result<usize, LaunchError> {
    value.trim().parse().map_err(|_| LaunchError::Bad {
        var,
        value: value.into(),
        why: "is not a whole number (0, 1, 2, ...)".into(),
    })
}

/// A world size: a number of at least 1.
fn world_size(var: &'static str, value: &str) -> Result<usize, LaunchError> {
    match number(var, value)? {
        0 => Err(LaunchError::Bad {
            var,
            value: value.into(),
            why: "is not a world size: it must be at least 1".into(),
        }),
        n => Ok(n),
    }
}

/// The rank in `var`, checked to be below the world size in `world`.
fn rank_below(
    get: Vars,
    var: &'static str,
    world: (&'static str, usize),
) -> Result<usize, LaunchError> {
    let value = required(get, var, &format!("it is set with {}", world.0))?;
    let rank = number(var, &value)?;
    if rank >= world.1 {
        return Err(LaunchError::Bad {
            var,
            value,
            why: format!(
                "is not a rank of this job: it is not below {}={}",
                world.0, world.1
            ),
        });
    }
    Ok(rank)
}

/// The local rank `n` read from `var`, checked to be below the local world size, if known.
fn local_rank_below(
    var: &'static str,
    value: &str,
    n: usize,
    local_world: Option<(&'static str, usize)>,
) -> Result<usize, LaunchError> {
    match local_world {
        Some((wvar, w)) if n >= w => Err(LaunchError::Bad {
            var,
            value: value.into(),
            why: format!("is not a local rank on this machine: it is not below {wvar}={w}"),
        }),
        _ => Ok(n),
    }
}

/// A local world size `n` read from `var`: at least 1, at most the whole world.
fn local_world_size(
    var: &'static str,
    value: &str,
    n: usize,
    world: usize,
) -> Result<usize, LaunchError> {
    if n == 0 || n > world {
        return Err(LaunchError::Bad {
            var,
            value: value.into(),
            why: format!(
                "is not a number of ranks on this machine: it must be between 1 and the world size {world}"
            ),
        });
    }
    Ok(n)
}

/// A host name or address, not empty.
fn address(var: &'static str, value: String) -> Result<String, LaunchError> {
    let addr = value.trim();
    if addr.is_empty() {
        return Err(LaunchError::Bad {
            var,
            value,
            why: "is empty; it must name rank 0's host".into(),
        });
    }
    Ok(addr.to_string())
}

/// A TCP port: 1 to 65535.
fn port_number(var: &'static str, value: &str) -> Result<u16, LaunchError> {
    match number(var, value)? {
        n @ 1..=65535 => Ok(n as u16),
        _ => Err(LaunchError::Bad {
            var,
            value: value.into(),
            why: "is not a TCP port: it must be 1 to 65535".into(),
        }),
    }
}

/// The first host of a Slurm hostlist (`SLURM_JOB_NODELIST`), as
/// `scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1` prints it: "gpu[01-04,07]"
/// gives "gpu01" (zero padding kept), "n[1-2]-ib[0-1]" gives "n1-ib0", "a,b" gives "a".
///
/// The whole list is checked, not just its first host, so a malformed list is an error
/// wherever the mistake is.
pub fn first_host(list: &str) -> Result<String, LaunchError> {
    let bad = |why: String| LaunchError::Hostlist {
        list: list.into(),
        why,
    };
    if list.trim().is_empty() {
        return Err(bad("is empty".into()));
    }
    let mut first = None;
    for item in split_top(list).map_err(bad)? {
        let host = first_of_item(item.trim())
            .map_err(|why| bad(format!("has {:?}, which {why}", item.trim())))?;
        first.get_or_insert(host);
    }
    // The list is not blank, so it has at least one item.
    first.ok_or_else(|| bad("has no host".into()))
}

/// The comma-separated items of a hostlist (commas inside brackets do not separate).
fn split_top(list: &str) -> Result<Vec<&str>, String> {
    let mut items = vec![];
    let mut open = None;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '[' if open.is_some() => return Err(format!("has a '[' inside brackets at byte {i}")),
            '[' => open = Some(i),
            ']' if open.is_none() => return Err(format!("has a ']' without its '[' at byte {i}")),
            ']' => open = None,
            ',' if open.is_none() => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if let Some(i) = open {
        return Err(format!("has an unclosed bracket at byte {i}"));
    }
    items.push(&list[start..]);
    Ok(items)
}

/// The first host of one item ("rack1-n[003-010]" → "rack1-n003"); brackets are balanced
/// and not nested (checked by [`split_top`]).
fn first_of_item(item: &str) -> Result<String, String> {
    if item.is_empty() {
        return Err("is an empty host name".into());
    }
    let mut host = String::new();
    let mut rest = item;
    while let Some(open) = rest.find('[') {
        host.push_str(&rest[..open]);
        let close = rest[open..]
            .find(']')
            .map(|c| c + open)
            .ok_or("has an unclosed bracket")?;
        let mut first = None;
        for range in rest[open + 1..close].split(',').map(str::trim) {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            let (lo, hi) = (lo.trim(), hi.trim());
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if range.is_empty() {
                return Err("has an empty range in brackets".into());
            }
            if !digits(lo) || !digits(hi) {
                return Err(format!(
                    "has the range {range:?}, not N or N-M with N and M numbers"
                ));
            }
            // Both are digits only; compare as numbers without overflow: strip zeros, then
            // longer is larger, then lexically.
            let key = |s: &str| {
                let s = s.trim_start_matches('0');
                (s.len(), s.to_string())
            };
            if key(lo) > key(hi) {
                return Err(format!("has the range {range:?}, which runs backwards"));
            }
            first.get_or_insert(lo);
        }
        // split(',') yields at least one piece, and an empty one is an error above.
        host.push_str(first.unwrap_or_default());
        rest = &rest[close + 1..];
    }
    host.push_str(rest);
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Runs [`Launch::from_vars`] on exactly these variables.
    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>, LaunchError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(&|k| map.get(k).cloned())
    }

    /// The error of [`launch`] as its message, panicking if it succeeded.
    fn error(vars: &[(&str, &str)]) -> String {
        match launch(vars) {
            Ok(l) => panic!("expected an error from {vars:?}, got {l:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// torchrun --nproc-per-node 2, rank 1, as measured.
    const TORCHRUN: &[(&str, &str)] = &[
        ("RANK", "1"),
        ("LOCAL_RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("GROUP_RANK", "0"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29500"),
        ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1"),
    ];

    /// srun -N 2 --ntasks-per-node 4, rank 5 (second node, local 1).
    const SLURM: &[(&str, &str)] = &[
        ("SLURM_PROCID", "5"),
        ("SLURM_NTASKS", "8"),
        ("SLURM_LOCALID", "1"),
        ("SLURM_NODEID", "1"),
        ("SLURM_TASKS_PER_NODE", "4(x2)"),
        ("SLURM_JOB_NODELIST", "gpu[07-08]"),
        ("SLURM_NODELIST", "other[1-2]"),
        ("SLURM_JOB_ID", "123456"),
    ];

    /// Changes to a set of variables: ("VAR", None) removes VAR.
    type Changes = [(&'static str, Option<&'static str>)];

    /// `base` with `changes` applied: ("VAR", None) removes VAR.
    fn with(
        base: &[(&'static str, &'static str)],
        changes: &Changes,
    ) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = base
            .iter()
            .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
            .copied()
            .collect();
        v.extend(
            changes
                .iter()
                .filter_map(|(k, val)| val.map(|val| (*k, val))),
        );
        v
    }

    #[test]
    fn torchrun_reads_every_variable() {
        let l = launch(TORCHRUN).unwrap().unwrap();
        assert_eq!(
            l,
            Launch {
                launcher: Launcher::Torchrun,
                rank: 1,
                world: 2,
                local_rank: 1,
                local_world: Some(2),
                master_addr: "127.0.0.1".into(),
                master_port: 29500,
                agent_store: true,
            }
        );
    }

    #[test]
    fn torchrun_optional_variables() {
        // No LOCAL_RANK: RANK stands in; no LOCAL_WORLD_SIZE: unknown; agent store only for "True".
        let vars = with(
            TORCHRUN,
            &[
                ("LOCAL_RANK", None),
                ("LOCAL_WORLD_SIZE", None),
                ("TORCHELASTIC_USE_AGENT_STORE", Some("1")),
            ],
        );
        let l = launch(&vars).unwrap().unwrap();
        assert_eq!(
            (l.local_rank, l.local_world, l.agent_store),
            (1, None, false)
        );
        let vars = with(TORCHRUN, &[("TORCHELASTIC_USE_AGENT_STORE", None)]);
        assert!(!launch(&vars).unwrap().unwrap().agent_store);
    }

    #[test]
    fn torchrun_wins_over_slurm() {
        // srun torchrun ...: both sets are there; torchrun's describe the training processes.
        let both: Vec<_> = TORCHRUN.iter().chain(SLURM).copied().collect();
        let l = launch(&both).unwrap().unwrap();
        assert_eq!(
            (l.launcher, l.rank, l.world, l.master_port),
            (Launcher::Torchrun, 1, 2, 29500)
        );
        // Even a broken Slurm set does not matter then.
        let vars = with(&both, &[("SLURM_PROCID", Some("x"))]);
        assert_eq!(launch(&vars).unwrap().unwrap().launcher, Launcher::Torchrun);
    }

    #[test]
    fn no_launcher_or_world_of_one_is_none() {
        assert_eq!(launch(&[]), Ok(None));
        assert_eq!(launch(&[("WORLD_SIZE", "1")]), Ok(None));
        // torchrun --nproc-per-node 1, and srun -n 1: nothing to join, nothing else needed.
        assert_eq!(launch(&[("RANK", "0"), ("WORLD_SIZE", "1")]), Ok(None));
        assert_eq!(
            launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]),
            Ok(None)
        );
        // Only one of Slurm's pair: not a Slurm launch.
        assert_eq!(launch(&[("SLURM_PROCID", "3")]), Ok(None));
        assert_eq!(launch(&[("SLURM_NTASKS", "3")]), Ok(None));
    }

    #[test]
    fn world_size_without_rank_is_an_error() {
        let e = error(&[("WORLD_SIZE", "4")]);
        assert!(
            e.starts_with("RANK is not set") && e.contains("WORLD_SIZE=\"4\""),
            "{e}"
        );
        let e = error(&[("WORLD_SIZE", "four")]);
        assert!(
            e.starts_with("WORLD_SIZE=\"four\" is not a whole number"),
            "{e}"
        );
    }

    #[test]
    fn torchrun_errors_name_the_variable_and_value() {
        let cases: &[(&Changes, &str)] = &[
            (
                &[("RANK", Some("one"))],
                "RANK=\"one\" is not a whole number",
            ),
            (&[("RANK", Some("-1"))], "RANK=\"-1\" is not a whole number"),
            (
                &[("WORLD_SIZE", Some("2x"))],
                "WORLD_SIZE=\"2x\" is not a whole number",
            ),
            (
                &[("WORLD_SIZE", Some("0"))],
                "WORLD_SIZE=\"0\" is not a world size",
            ),
            (&[("WORLD_SIZE", None)], "WORLD_SIZE is not set"),
            (
                &[("RANK", Some("2"))],
                "RANK=\"2\" is not a rank of this job: it is not below WORLD_SIZE=2",
            ),
            (
                &[("LOCAL_RANK", Some("x"))],
                "LOCAL_RANK=\"x\" is not a whole number",
            ),
            (
                &[("LOCAL_RANK", Some("2"))],
                "LOCAL_RANK=\"2\" is not a local rank on this machine: it is not below LOCAL_WORLD_SIZE=2",
            ),
            (
                &[("LOCAL_WORLD_SIZE", Some("0"))],
                "LOCAL_WORLD_SIZE=\"0\" is not a number of ranks on this machine",
            ),
            (
                &[("LOCAL_WORLD_SIZE", Some("3"))],
                "LOCAL_WORLD_SIZE=\"3\" is not a number of ranks on this machine",
            ),
            (
                &[("LOCAL_WORLD_SIZE", Some("1")), ("LOCAL_RANK", None)],
                "RANK=\"1\" is not a local rank on this machine",
            ),
            (&[("MASTER_ADDR", None)], "MASTER_ADDR is not set"),
            (&[("MASTER_ADDR", Some(" "))], "MASTER_ADDR=\" \" is empty"),
            (&[("MASTER_PORT", None)], "MASTER_PORT is not set"),
            (
                &[("MASTER_PORT", Some("0"))],
                "MASTER_PORT=\"0\" is not a TCP port",
            ),
            (
                &[("MASTER_PORT", Some("65536"))],
                "MASTER_PORT=\"65536\" is not a TCP port",
            ),
            (
                &[("MASTER_PORT", Some("http"))],
                "MASTER_PORT=\"http\" is not a whole number",
            ),
        ];
        for (changes, want) in cases {
            let e = error(&with(TORCHRUN, changes));
            assert!(
                e.starts_with(want),
                "{changes:?}: got {e:?}, want it to start with {want:?}"
            );
        }
        // The edges that are fine.
        let l = launch(&with(TORCHRUN, &[("MASTER_PORT", Some("65535"))]))
            .unwrap()
            .unwrap();
        assert_eq!(l.master_port, 65535);
        let l = launch(&with(
            TORCHRUN,
            &[("MASTER_PORT", Some("1")), ("RANK", Some(" 0 "))],
        ))
        .unwrap()
        .unwrap();
        assert_eq!((l.master_port, l.rank), (1, 0));
    }

    #[test]
    fn slurm_reads_every_variable() {
        let l = launch(SLURM).unwrap().unwrap();
        assert_eq!(
            l,
            Launch {
                launcher: Launcher::Slurm,
                rank: 5,
                world: 8,
                local_rank: 1,
                local_world: Some(4),
                master_addr: "gpu07".into(),
                master_port: 23456,
                agent_store: false,
            }
        );
        assert_eq!(l.master_port, 23456);
    }

    #[test]
    fn slurm_master_addr_and_port() {
        // MASTER_ADDR and MASTER_PORT, when set, win.
        let l = launch(&with(
            SLURM,
            &[
                ("MASTER_ADDR", Some("head")),
                ("MASTER_PORT", Some("29400")),
            ],
        ))
        .unwrap()
        .unwrap();
        assert_eq!((l.master_addr.as_str(), l.master_port), ("head", 29400));
        // SLURM_NODELIST when SLURM_JOB_NODELIST is not there.
        let l = launch(&with(SLURM, &[("SLURM_JOB_NODELIST", None)]))
            .unwrap()
            .unwrap();
        assert_eq!(l.master_addr, "other1");
        // The derived port stays in 20000..40000 and is the same for every rank.
        let l = launch(&with(SLURM, &[("SLURM_JOB_ID", Some("39999"))]))
            .unwrap()
            .unwrap();
        assert_eq!(l.master_port, 39999);
        let l = launch(&with(
            SLURM,
            &[("SLURM_JOB_ID", Some("18446744073709551615"))],
        ))
        .unwrap()
        .unwrap();
        assert!((20000..40000).contains(&l.master_port));
        let l0 = launch(&with(
            SLURM,
            &[("SLURM_PROCID", Some("0")), ("SLURM_LOCALID", Some("0"))],
        ))
        .unwrap()
        .unwrap();
        assert_eq!(l0.master_port, launch(SLURM).unwrap().unwrap().master_port);
    }

    #[test]
    fn slurm_local_world() {
        let local = |changes: &Changes| launch(&with(SLURM, changes)).unwrap().unwrap().local_world;
        // SLURM_NTASKS_PER_NODE wins over SLURM_TASKS_PER_NODE.
        assert_eq!(
            local(&[
                ("SLURM_NTASKS_PER_NODE", Some("2")),
                ("SLURM_TASKS_PER_NODE", Some("4,4"))
            ]),
            Some(2)
        );
        // The first number; with SLURM_NODEID, this node's.
        assert_eq!(
            local(&[
                ("SLURM_TASKS_PER_NODE", Some("4(x2),3")),
                ("SLURM_NODEID", None)
            ]),
            Some(4)
        );
        assert_eq!(
            local(&[
                ("SLURM_TASKS_PER_NODE", Some("4(x2),3")),
                ("SLURM_NODEID", Some("1"))
            ]),
            Some(4)
        );
        assert_eq!(
            local(&[
                ("SLURM_TASKS_PER_NODE", Some("4(x2),3")),
                ("SLURM_NODEID", Some("2")),
                ("SLURM_LOCALID", Some("2"))
            ]),
            Some(3)
        );
        assert_eq!(
            local(&[
                ("SLURM_TASKS_PER_NODE", Some("3,5")),
                ("SLURM_NODEID", Some("1")),
                ("SLURM_LOCALID", Some("4"))
            ]),
            Some(5)
        );
        // Unknown without either.
        assert_eq!(local(&[("SLURM_TASKS_PER_NODE", None)]), None);
        assert_eq!(tasks_per_node("4(x2),3"), Ok(vec![4, 4, 3]));
        assert_eq!(tasks_per_node("1"), Ok(vec![1]));
    }

    #[test]
    fn slurm_errors_name_the_variable_and_value() {
        let cases: &[(&Changes, &str)] = &[
            (
                &[("SLURM_PROCID", Some("a"))],
                "SLURM_PROCID=\"a\" is not a whole number",
            ),
            (
                &[("SLURM_NTASKS", Some("a"))],
                "SLURM_NTASKS=\"a\" is not a whole number",
            ),
            (
                &[("SLURM_NTASKS", Some("0"))],
                "SLURM_NTASKS=\"0\" is not a world size",
            ),
            (
                &[("SLURM_PROCID", Some("8"))],
                "SLURM_PROCID=\"8\" is not a rank of this job: it is not below SLURM_NTASKS=8",
            ),
            (&[("SLURM_LOCALID", None)], "SLURM_LOCALID is not set"),
            (
                &[("SLURM_LOCALID", Some("x"))],
                "SLURM_LOCALID=\"x\" is not a whole number",
            ),
            (
                &[("SLURM_LOCALID", Some("4"))],
                "SLURM_LOCALID=\"4\" is not a local rank on this machine: it is not below SLURM_TASKS_PER_NODE=4",
            ),
            (
                &[
                    ("SLURM_LOCALID", Some("2")),
                    ("SLURM_NTASKS_PER_NODE", Some("2")),
                ],
                "SLURM_LOCALID=\"2\" is not a local rank on this machine: it is not below SLURM_NTASKS_PER_NODE=2",
            ),
            (
                &[("SLURM_NTASKS_PER_NODE", Some("x"))],
                "SLURM_NTASKS_PER_NODE=\"x\" is not a whole number",
            ),
            (
                &[("SLURM_NTASKS_PER_NODE", Some("9"))],
                "SLURM_NTASKS_PER_NODE=\"9\" is not a number of ranks",
            ),
            (
                &[("SLURM_TASKS_PER_NODE", Some("4(2)"))],
                "SLURM_TASKS_PER_NODE=\"4(2)\" has \"4(2)\", not COUNT or COUNT(xTIMES)",
            ),
            (
                &[("SLURM_TASKS_PER_NODE", Some("four"))],
                "SLURM_TASKS_PER_NODE=\"four\" has \"four\", whose count",
            ),
            (
                &[("SLURM_TASKS_PER_NODE", Some("4(xy)"))],
                "SLURM_TASKS_PER_NODE=\"4(xy)\" has \"4(xy)\", whose repeat",
            ),
            (
                &[("SLURM_TASKS_PER_NODE", Some("0(x2)"))],
                "SLURM_TASKS_PER_NODE=\"0(x2)\" is not a number of ranks",
            ),
            (
                &[("SLURM_NODEID", Some("n1"))],
                "SLURM_NODEID=\"n1\" is not a whole number",
            ),
            (&[("MASTER_ADDR", Some(""))], "MASTER_ADDR=\"\" is empty"),
            (
                &[("SLURM_JOB_NODELIST", Some("gpu[01-"))],
                "SLURM_JOB_NODELIST=\"gpu[01-\" is not a Slurm hostlist: has an unclosed bracket",
            ),
            (
                &[
                    ("SLURM_JOB_NODELIST", None),
                    ("SLURM_NODELIST", Some("gpu[]")),
                ],
                "SLURM_NODELIST=\"gpu[]\" is not a Slurm hostlist",
            ),
            (
                &[("SLURM_JOB_NODELIST", None), ("SLURM_NODELIST", None)],
                "MASTER_ADDR is not set; nor is SLURM_JOB_NODELIST",
            ),
            (
                &[("MASTER_PORT", Some("70000"))],
                "MASTER_PORT=\"70000\" is not a TCP port",
            ),
            (
                &[("SLURM_JOB_ID", Some("job7"))],
                "SLURM_JOB_ID=\"job7\" is not a whole number",
            ),
            (
                &[("SLURM_JOB_ID", None)],
                "MASTER_PORT is not set; nor is SLURM_JOB_ID",
            ),
        ];
        for (changes, want) in cases {
            let e = error(&with(SLURM, changes));
            assert!(
                e.starts_with(want),
                "{changes:?}: got {e:?}, want it to start with {want:?}"
            );
        }
    }

    #[test]
    fn first_host_expands_like_scontrol() {
        let cases = [
            ("node7", "node7"),
            ("a,b", "a"),
            ("gpu[01-04,07]", "gpu01"),
            ("gpu[3,5-6],cpu[1-2]", "gpu3"),
            ("rack1-n[003-010]", "rack1-n003"),
            ("n[1-2]-ib[0-1]", "n1-ib0"),
            ("gpu[01-04,07],cpu5", "gpu01"),
            (" node7\n", "node7"),
            ("  a , b ", "a"),
            ("gpu[ 01 - 04 ]", "gpu01"),
            ("gpu[7]", "gpu7"),
            ("gpu[9-10]", "gpu9"),
        ];
        for (list, want) in cases {
            assert_eq!(first_host(list).as_deref(), Ok(want), "{list:?}");
        }
    }

    #[test]
    fn first_host_rejects_malformed_lists() {
        let cases = [
            ("", "is empty"),
            ("  ", "is empty"),
            ("gpu[", "has an unclosed bracket at byte 3"),
            ("gpu[01-", "has an unclosed bracket at byte 3"),
            (
                "gpu[]",
                "has \"gpu[]\", which has an empty range in brackets",
            ),
            ("gpu[a-b", "has an unclosed bracket"),
            (
                "gpu[a-b]",
                "has \"gpu[a-b]\", which has the range \"a-b\", not N or N-M",
            ),
            ("gpu[1-]", "has the range \"1-\""),
            ("gpu[1,]", "has an empty range in brackets"),
            ("gpu[4-1]", "has the range \"4-1\", which runs backwards"),
            ("gpu]", "has a ']' without its '['"),
            ("gpu[[1]]", "has a '[' inside brackets"),
            ("a,,b", "has \"\", which is an empty host name"),
            ("a,", "has \"\", which is an empty host name"),
            // The mistake is found after the first host too.
            ("gpu1,cpu[x]", "has \"cpu[x]\""),
        ];
        for (list, want) in cases {
            match first_host(list) {
                Ok(h) => panic!("{list:?}: expected an error, got {h:?}"),
                Err(e) => {
                    let e = e.to_string();
                    let prefix = format!("Slurm hostlist {list:?} ");
                    assert!(
                        e.starts_with(&prefix) && e.contains(want),
                        "{list:?}: got {e:?}, want {want:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn from_env_reads_the_process_environment() {
        // The test harness is not started by a launcher, unless it is run under one.
        if env::var_os("RANK").is_none()
            && env::var_os("SLURM_PROCID").is_none()
            && env::var_os("WORLD_SIZE").is_none()
        {
            assert_eq!(Launch::from_env(), Ok(None));
        }
    }
}
