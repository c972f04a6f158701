//! One attempt at one file: stream a URL into `<file>.partial` (resuming it when it
//! can), or import a local file, and check the result.
//!
//! Owns the resume rules (re-hash the bytes already there, send `Range: bytes=N-`
//! with `If-Range`, accept only a `206` whose `Content-Range` starts at N, else start
//! again from zero), the size limit enforced while streaming, early rejection of
//! answers that are not the expected kind of file (an HTML page served with 200), and
//! the final checks (announced length, every known hash, the container), and the room
//! a file needs on the disk ([`super::space`]). A partial file is kept on network
//! errors and when the run stops, and deleted when its bytes are wrong or when the
//! disk filled up while writing it. Nothing here renames a file to its final name or
//! writes the catalog: a checked partial file is handed to the group commit.
//! It also owns what every attempt of a run shares ([`Ctx`]): the run builds it and
//! the scheduler hands it to each attempt.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use url::Url;

use std::sync::Arc;

use super::event::{Event, Fetched};
use super::job::{Job, ResumeFrom};
use super::space::{Disk, NoSpace};
use super::verify::{self, Digests, Expected, HEAD_BYTES, Hashers, Sniffed};
use super::{FetchError, Names, Shared};
use crate::net::client::{Client, Request, Response};
use crate::net::failure::{ErrorClass, Failure};
use crate::net::politeness::Politeness;
use crate::net::settings::FetchSettings;
use crate::source::Resolver;
use crate::source::local::LocalRoots;
use pmv_core::redact::show_url;
use pmv_core::root::DataRoot;

/// Writeback of a file being downloaded is started every this many bytes, so dirty
/// pages stay few and the disk works while the network does.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Files at least this large have their validators recorded as soon as their
/// headers arrive, so a killed run can resume them.
const RECORD_RESUME_FROM: u64 = 1 << 20;

/// A file of unknown length checks that the disk's reserve is still free every time
/// it grows by this much.
const ROOM_CHECK_EVERY: u64 = 1 << 20;

/// What every attempt of a run shares: the resolver, the HTTP client, the hosts'
/// politeness, the settings, the root, the channel to the calling thread, the run's
/// stop state and the disk's room.
pub(crate) struct Ctx {
    pub resolver: Resolver,
    pub client: Arc<Client>,
    pub gate: Arc<Politeness>,
    pub settings: FetchSettings,
    pub root: DataRoot,
    pub events: std::sync::mpsc::Sender<Event>,
    pub shared: Arc<Shared>,
    pub deadline: Option<std::time::Instant>,
    /// Per dataset name, the folders its local sources may be read from.
    pub local_roots: std::collections::HashMap<String, LocalRoots>,
    pub disk: Arc<Disk>,
}

/// Why an attempt ended without a file.
#[derive(Debug)]
pub(crate) enum AttemptError {
    Failed(Failure),
    /// The run is being cancelled; the partial file is kept.
    Interrupted,
    /// The file does not fit on the disk: the run starts no more downloads.
    NoSpace(Box<NoSpace>),
    /// The root cannot be written: the run stops.
    Fatal(FetchError),
}

impl From<NoSpace> for AttemptError {
    fn from(e: NoSpace) -> Self {
        AttemptError::NoSpace(Box::new(e))
    }
}

impl From<Failure> for AttemptError {
    fn from(f: Failure) -> Self {
        AttemptError::Failed(f)
    }
}

/// A failure to write under the root: the disk is full, or the run cannot go on.
fn fatal(path: &Path, source: std::io::Error) -> AttemptError {
    if pmv_core::disk::is_full(&source) {
        return NoSpace::filled(path).into();
    }
    if is_stopping(&source) {
        // A hash of bytes already there, given up because the run is stopping.
        return AttemptError::Interrupted;
    }
    AttemptError::Fatal(FetchError::Io {
        path: path.to_owned(),
        source,
    })
}

/// A read given up because the run is stopping.
#[derive(Debug)]
struct Stopping;

impl std::fmt::Display for Stopping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the run is stopping")
    }
}

impl std::error::Error for Stopping {}

fn stopping() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Interrupted, Stopping)
}

fn is_stopping(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|r| r.is::<Stopping>())
}

/// Awaits `fut` unless the run is cancelled first.
macro_rules! or_cancel {
    ($ctx:expr, $fut:expr) => {
        tokio::select! {
            biased;
            _ = $ctx.shared.cancel.cancelled() => return Err(AttemptError::Interrupted),
            r = $fut => r,
        }
    };
}
pub(crate) use or_cancel;

/// Looks for a complete file under the final name whose record was lost; checks it
/// like a download. A file there that fails the checks, or anything there that is not
/// a regular file (a symlink is never followed), is moved to `quarantine/`.
pub(crate) async fn adopt(
    ctx: &Ctx,
    job: &Job,
    names: &Names,
) -> Result<Option<Fetched>, AttemptError> {
    let Some((path, ext, meta)) = job.role.extensions().iter().find_map(|e| {
        let p = names.final_path(e);
        std::fs::symlink_metadata(&p).ok().map(|m| (p, *e, m))
    }) else {
        return Ok(None);
    };
    if !meta.file_type().is_file() {
        let to = quarantine(ctx, &job.dataset, &path, "unverified")?;
        tracing::warn!(path = %path.display(), to = %to.display(), "not a regular file under a final name; moved to quarantine");
        return Ok(None);
    }
    let expected = job.expected.clone();
    let p = path.clone();
    let shared = std::sync::Arc::clone(&ctx.shared);
    let digests =
        tokio::task::spawn_blocking(move || hash_file(&p, &expected, &|| shared.cancel.is_set()))
            .await
            .map_err(|e| AttemptError::Fatal(FetchError::Runtime(std::io::Error::other(e))))?
            .map_err(|e| fatal(&path, e))?;
    let sniffed = verify::sniff(&digests.head, digests.len < HEAD_BYTES as u64);
    let checked = verify::accept(job.role, sniffed)
        .and_then(|got| {
            if got == ext {
                Ok(())
            } else {
                Err(Failure::new(
                    ErrorClass::NotVideo,
                    format!("a {got} file named .{ext}"),
                ))
            }
        })
        .and_then(|()| verify::check(&job.expected, &digests));
    match checked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "found complete under its final name; recorded without downloading");
            Ok(Some(Fetched {
                partial: None,
                final_rel: names.final_rel(ext),
                final_path: path,
                digests,
                etag: None,
                last_modified: None,
                resumed: 0,
            }))
        }
        Err(f) => {
            let to = quarantine(ctx, &job.dataset, &path, "unverified")?;
            tracing::warn!(path = %path.display(), to = %to.display(), "a file under a final name fails its checks ({f}); moved to quarantine");
            Ok(None)
        }
    }
}

/// Moves a file into `quarantine/<dataset>/` under a name that says why and when.
pub(crate) fn quarantine(
    ctx: &Ctx,
    dataset: &str,
    path: &Path,
    why: &str,
) -> Result<PathBuf, AttemptError> {
    super::rehash::move_to_quarantine(&ctx.root, dataset, path, why).map_err(AttemptError::Fatal)
}

/// Hashes a whole file with the hashers `expected` asks for; a symlink is not
/// followed (an error); gives up (with an `Interrupted` error) once `stop` says so.
pub(crate) fn hash_file(
    path: &Path,
    expected: &Expected,
    stop: &dyn Fn() -> bool,
) -> std::io::Result<Digests> {
    let mut f = pmv_core::util::open_no_follow(path)?;
    let mut h = Hashers::new(expected);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if stop() {
            return Err(stopping());
        }
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

/// A parsed `Content-Range`: the byte range (first, last), if any, and the total,
/// if known.
type ContentRange = (Option<(u64, u64)>, Option<u64>);

/// `Content-Range: bytes a-b/total` (or `bytes */total` on a 416).
fn content_range(v: &str) -> Option<ContentRange> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let range = match range.trim() {
        "*" => None,
        r => {
            let (a, b) = r.split_once('-')?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        }
    };
    Some((range, total))
}

/// The partial file, opened for appending after the bytes worth keeping.
struct Partial {
    file: fs_err::File,
    path: PathBuf,
    hashers: Hashers,
    len: u64,
}

impl Partial {
    /// Opens the partial file; keeps and re-hashes its bytes when `keep` (giving up
    /// once `stop` says so).
    ///
    /// Only a regular file with no other link is kept: a partial file that is a hard
    /// link (an import cut short) or a symlink is unlinked, never written through,
    /// and a fresh file is created in its place.
    fn open(
        path: &Path,
        keep: bool,
        expected: &Expected,
        stop: &dyn Fn() -> bool,
    ) -> std::io::Result<Partial> {
        use std::os::unix::fs::MetadataExt;
        let keep = keep
            && std::fs::symlink_metadata(path)
                .is_ok_and(|m| m.file_type().is_file() && m.nlink() == 1);
        let mut file = if keep {
            fs_err::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)?
        } else {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            fs_err::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)?
        };
        let mut hashers = Hashers::new(expected);
        let mut len = 0;
        if keep {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                if stop() {
                    return Err(stopping());
                }
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hashers.update(&buf[..n]);
                len += n as u64;
            }
        }
        file.seek(SeekFrom::Start(len))?;
        Ok(Partial {
            file,
            path: path.to_owned(),
            hashers,
            len,
        })
    }

    fn restart(&mut self, expected: &Expected) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.hashers = Hashers::new(expected);
        self.len = 0;
        Ok(())
    }

    fn remove(self) {
        let path = self.path.clone();
        drop(self);
        if let Err(e) = fs_err::remove_file(&path) {
            tracing::warn!("{e}");
        }
    }
}

/// Starts writing a file's dirty pages back now, so that the group commit's flush
/// finds little left to do (Linux `sync_file_range`; a no-op elsewhere).
pub(crate) fn start_writeback(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    // SAFETY: a valid open descriptor; the call only schedules writeback.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file.as_raw_fd();
}

/// Where a resolved source's bytes are read over HTTP.
pub(crate) struct Remote<'a> {
    pub url: &'a Url,
    pub headers: &'a [(String, String)],
    /// See [`Request::public`].
    pub public: bool,
}

/// Whether `path` was last written before this machine booted: its last bytes were
/// then in the page cache when the machine went down (a power cut, a crash) and may
/// never have reached the disk, leaving zeros or stale blocks under a length that
/// looks right. Without an expected hash nothing would notice them, so such a file
/// is fetched again from its start; a process that was only killed leaves the page
/// cache, and so its partial files, intact. False where it cannot be told (no
/// `/proc/stat`).
fn written_before_boot(path: &Path) -> bool {
    static BOOT: std::sync::OnceLock<Option<std::time::SystemTime>> = std::sync::OnceLock::new();
    let boot = BOOT.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let secs: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    });
    match (boot, std::fs::metadata(path).and_then(|m| m.modified())) {
        (Some(boot), Ok(written)) => written < *boot,
        _ => false,
    }
}

/// [`written_before_boot`], said in the log when it is so.
fn stale_after_reboot(path: &Path, key: &str) -> bool {
    let stale = written_before_boot(path);
    if stale {
        tracing::info!(
            item = key,
            "{} was written before the machine last started and no hash can check it: fetching it from the start",
            path.display()
        );
    }
    stale
}

/// Downloads `remote` (the resolved source of rank `rank`) into the partial file.
pub(crate) async fn http(
    ctx: &Ctx,
    job: &mut Job,
    names: &Names,
    rank: usize,
    remote: &Remote<'_>,
    expected: &Expected,
) -> Result<Fetched, AttemptError> {
    let path = names.partial();
    let (mut part, validator) = open_partial(ctx, job, &path, rank, expected).await?;
    let resp = request(ctx, remote, &mut part, validator, expected).await?;

    // The bytes of the partial file that this download keeps.
    let resumed_from = part.len;
    let mut etag = None;
    let mut last_modified = None;
    if let Some(mut r) = resp {
        etag = r.header(reqwest::header::ETAG).map(str::to_owned);
        last_modified = r.header(reqwest::header::LAST_MODIFIED).map(str::to_owned);
        let total = match announced_total(&r, &part, ctx.settings.max_size, expected) {
            Ok(total) => total,
            Err(f) => {
                part.remove();
                return Err(f.into());
            }
        };
        job.resume = Some(ResumeFrom {
            rank,
            etag: etag.clone(),
            last_modified: last_modified.clone(),
            total,
        });
        if total.is_none_or(|t| t >= RECORD_RESUME_FROM)
            && (etag.is_some() || last_modified.is_some())
        {
            let _ = ctx.events.send(Event::Validators {
                item_id: job.item_id,
                role: job.role,
                rank: rank as i64,
                etag: etag.clone(),
                last_modified: last_modified.clone(),
                total,
            });
        }
        part = stream_body(ctx, job, &mut r, part, total, expected).await?;
    }

    let (digests, ext) = finish(job, part, remote.url, expected)?;
    Ok(Fetched {
        partial: Some(path),
        final_path: names.final_path(ext),
        final_rel: names.final_rel(ext),
        digests,
        etag,
        last_modified,
        resumed: resumed_from,
    })
}

/// What of the partial file at `path` a download of `job` from source `rank` resumes:
/// a partial file is resumed when its end can be checked, by the expected hash or by a
/// validator the server compares, as long as the bytes kept are the ones written (see
/// `written_before_boot`). `None`: it starts over.
pub(super) fn resume_for(
    job: &Job,
    path: &Path,
    rank: usize,
    expected: &Expected,
) -> Option<ResumeFrom> {
    job.resume.clone().filter(|r| {
        r.rank == rank
            && (expected.sha256.is_some()
                || (r.validator().is_some() && !stale_after_reboot(path, &job.key)))
    })
}

/// Opens the partial file for source `rank`: resumed when its end can be checked,
/// else empty. Returns it with the validator to send in `If-Range`, if any.
async fn open_partial(
    ctx: &Ctx,
    job: &Job,
    path: &Path,
    rank: usize,
    expected: &Expected,
) -> Result<(Partial, Option<String>), AttemptError> {
    let resume = resume_for(job, path, rank, expected);
    // Re-hashing a kept partial file may read gigabytes: off the runtime's threads.
    // Starting afresh is one open.
    let mut part = if resume.is_some() {
        let exp = expected.clone();
        let p = path.to_owned();
        let shared = std::sync::Arc::clone(&ctx.shared);
        tokio::task::spawn_blocking(move || {
            Partial::open(&p, true, &exp, &|| shared.cancel.is_set())
        })
        .await
        .map_err(|e| AttemptError::Fatal(FetchError::Runtime(std::io::Error::other(e))))?
    } else {
        Partial::open(path, false, expected, &|| false)
    }
    .map_err(|e| fatal(path, e))?;
    if let Some(total) = resume.as_ref().and_then(|r| r.total)
        && part.len > total
    {
        part.restart(expected).map_err(|e| fatal(path, e))?;
    }
    let validator = resume
        .as_ref()
        .and_then(|r| r.validator().map(str::to_owned));
    Ok((part, validator))
}

/// Asks for the bytes after those `part` holds, restarting `part` from zero when the
/// server cannot continue it. Returns the answer whose body is to be read, or `None`
/// when the partial file already holds every byte.
async fn request(
    ctx: &Ctx,
    remote: &Remote<'_>,
    part: &mut Partial,
    mut validator: Option<String>,
    expected: &Expected,
) -> Result<Option<Response>, AttemptError> {
    let Remote {
        url,
        headers,
        public,
    } = *remote;
    let path = part.path.clone();
    // At most three requests: the resume, a restart from zero after a 416, and one
    // after a 206 for the wrong range.
    for _ in 0..3 {
        let req = Request {
            url: url.clone(),
            range_from: Some(part.len),
            if_range: if part.len > 0 {
                validator.as_deref()
            } else {
                None
            },
            headers,
            follow: true,
            public,
            cookies: None,
        };
        let r = or_cancel!(ctx, ctx.client.send(&req))?;
        match r.status {
            206 => {
                let cr = r
                    .header(reqwest::header::CONTENT_RANGE)
                    .and_then(content_range);
                match cr {
                    Some((Some((start, _)), _)) if start == part.len => {}
                    Some((Some((0, _)), _)) => {
                        part.restart(expected).map_err(|e| fatal(&path, e))?;
                    }
                    _ => {
                        tracing::info!(url = %show_url(r.url.as_str()), "206 with an unusable Content-Range; starting again from zero");
                        part.restart(expected).map_err(|e| fatal(&path, e))?;
                        validator = None;
                        continue;
                    }
                }
                return Ok(Some(r));
            }
            200 => {
                if part.len > 0 {
                    tracing::info!(url = %show_url(r.url.as_str()), from = part.len, "the server sent the whole file (Range ignored, or the file changed): starting again from zero");
                    part.restart(expected).map_err(|e| fatal(&path, e))?;
                }
                return Ok(Some(r));
            }
            416 if part.len > 0 => {
                let total = r
                    .header(reqwest::header::CONTENT_RANGE)
                    .and_then(content_range)
                    .and_then(|(_, t)| t);
                if total == Some(part.len) {
                    // The partial file already holds every byte.
                    return Ok(None);
                }
                part.restart(expected).map_err(|e| fatal(&path, e))?;
                validator = None;
                continue;
            }
            _ => {
                let f = r.failure().unwrap_or_else(|| {
                    Failure::new(
                        ErrorClass::BadResponse,
                        format!(
                            "unexpected HTTP {} from {}",
                            r.status,
                            show_url(r.url.as_str())
                        ),
                    )
                });
                return Err(f.into());
            }
        }
    }
    Err(Failure::new(
        ErrorClass::BadResponse,
        format!(
            "{} keeps answering with unusable ranges",
            show_url(url.as_str())
        ),
    )
    .into())
}

/// The file's whole length as the answer announces it, if it does; refused when it
/// is over `max_size` or differs from the expected size.
fn announced_total(
    r: &Response,
    part: &Partial,
    max_size: u64,
    expected: &Expected,
) -> Result<Option<u64>, Failure> {
    let total = if r.status == 206 {
        r.header(reqwest::header::CONTENT_RANGE)
            .and_then(content_range)
            .and_then(|(_, t)| t)
            .or_else(|| r.content_length().map(|n| n + part.len))
    } else {
        r.content_length()
    };
    if let Some(t) = total {
        if t > max_size {
            return Err(Failure::new(
                ErrorClass::TooLarge,
                format!(
                    "{} announces {t} bytes, more than the limit of {}",
                    show_url(r.url.as_str()),
                    max_size
                ),
            ));
        }
        if let Some(size) = expected.size
            && size != t
        {
            return Err(Failure::new(
                ErrorClass::SizeMismatch,
                format!(
                    "expected {size} bytes, {} announces {t}",
                    show_url(r.url.as_str())
                ),
            ));
        }
    }
    Ok(total)
}

/// Streams the body of `r` into `part`, hashing it, within the size limit and the
/// room claimed on the disk, and refusing it as soon as its first bytes show it is
/// not the expected kind of file. Returns `part` holding the whole body.
async fn stream_body(
    ctx: &Ctx,
    job: &mut Job,
    r: &mut Response,
    mut part: Partial,
    total: Option<u64>,
    expected: &Expected,
) -> Result<Partial, AttemptError> {
    let settings = &ctx.settings;
    let path = part.path.clone();
    // Room on the disk for the rest of the file (or, its length unknown, for the
    // reserve); the partial file is kept when there is none.
    let needed = total
        .or(expected.size)
        .map_or(0, |t| t.saturating_sub(part.len));
    let mut claim = ctx.disk.claim(&path, needed)?;
    let mut room_checked = part.len;

    // A resumed partial's first bytes are in the hashers already.
    let mut decided = part.len >= HEAD_BYTES as u64;
    loop {
        let chunk = if total.is_some_and(|t| part.len >= t) {
            // Every announced byte is here: the end of the body is read whatever
            // happens to the run (it completes the file and hands the connection
            // back for reuse).
            r.chunk().await
        } else {
            or_cancel!(ctx, r.chunk())
        };
        let chunk = match chunk {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(f) => return Err(f.into()),
        };
        if part.len + chunk.len() as u64 > settings.max_size {
            part.remove();
            return Err(Failure::new(
                ErrorClass::TooLarge,
                format!(
                    "{} sent more than the limit of {} bytes",
                    show_url(r.url.as_str()),
                    settings.max_size
                ),
            )
            .into());
        }
        if let Err(e) = ctx.disk.write_all(&mut part.file, &chunk) {
            let failed = fatal(&path, e);
            if matches!(failed, AttemptError::NoSpace(_)) {
                // It cannot complete, and its bytes hold the disk full.
                part.remove();
                job.resume = None;
            }
            return Err(failed);
        }
        claim.wrote(chunk.len() as u64);
        part.hashers.update(&chunk);
        let before = part.len;
        part.len += chunk.len() as u64;
        if before / WRITEBACK_EVERY != part.len / WRITEBACK_EVERY {
            start_writeback(part.file.file());
        }
        ctx.shared.add_bytes(chunk.len() as u64);
        if claim.open_ended() && part.len - room_checked >= ROOM_CHECK_EVERY {
            room_checked = part.len;
            if let Err(e) = ctx.disk.room_left(&path) {
                part.remove();
                job.resume = None;
                return Err(e.into());
            }
        }
        if !decided {
            match verify::sniff(part.hashers.head(), false) {
                Sniffed::NeedMore => {}
                s => {
                    if let Err(f) = verify::accept(job.role, s) {
                        part.remove();
                        return Err(Failure::new(
                            f.class,
                            format!("{} from {}", f.message, show_url(r.url.as_str())),
                        )
                        .into());
                    }
                    decided = true;
                }
            }
        }
    }
    if let Some(t) = total
        && part.len < t
    {
        return Err(Failure::new(
            ErrorClass::Truncated,
            format!(
                "body from {} ended at byte {} of {t}",
                show_url(r.url.as_str()),
                part.len
            ),
        )
        .into());
    }
    Ok(part)
}

/// The final checks of a complete partial file (its kind, its size and every known
/// hash): its digests and extension, or the failure (the file is then deleted and
/// will not be resumed).
fn finish(
    job: &mut Job,
    mut part: Partial,
    url: &Url,
    expected: &Expected,
) -> Result<(Digests, &'static str), AttemptError> {
    start_writeback(part.file.file());
    let file_len = part.len;
    let hashers = std::mem::replace(&mut part.hashers, Hashers::new(&Expected::default()));
    let digests = hashers.finish();
    debug_assert_eq!(digests.len, file_len);
    let sniffed = verify::sniff(&digests.head, true);
    let checked = verify::accept(job.role, sniffed)
        .and_then(|ext| verify::check(expected, &digests).map(|()| ext));
    match checked {
        Ok(ext) => Ok((digests, ext)),
        Err(f) => {
            part.remove();
            job.resume = None;
            Err(Failure::new(
                f.class,
                format!("{} ({})", f.message, show_url(url.as_str())),
            )
            .into())
        }
    }
}

/// Imports a local file: a hard link to it when the root is on the same file system,
/// else a copy; hashed and checked like a download.
///
/// The file is read through one descriptor opened by [`LocalRoots::open`] (inside the
/// folders allowed for the item's dataset, no symlink at the last step, a regular
/// file): the hashes are computed from that descriptor, and what is stored is that same
/// file (a hard link made from the descriptor itself) or the very bytes hashed (a copy,
/// created no wider than the source's permissions). A linked file that changes while
/// it is hashed is not kept.
pub(crate) async fn local(
    ctx: &Ctx,
    job: &Job,
    names: &Names,
    source: &Path,
    expected: &Expected,
) -> Result<Fetched, AttemptError> {
    let partial = names.partial();
    let roots = ctx
        .local_roots
        .get(&*job.dataset)
        .cloned()
        .unwrap_or_default();
    let import_job = Import {
        src: source.to_owned(),
        dst: partial.clone(),
        expected: expected.clone(),
        role: job.role,
        max: ctx.settings.max_size,
    };
    let shared = std::sync::Arc::clone(&ctx.shared);
    let disk = std::sync::Arc::clone(&ctx.disk);
    let result = tokio::task::spawn_blocking(move || import(&import_job, &roots, &shared, &disk))
        .await
        .map_err(|e| AttemptError::Fatal(FetchError::Runtime(std::io::Error::other(e))))??;
    let (digests, ext) = result;
    Ok(Fetched {
        partial: Some(partial),
        final_path: names.final_path(ext),
        final_rel: names.final_rel(ext),
        digests,
        etag: None,
        last_modified: None,
        resumed: 0,
    })
}

/// One local file to import into the partial file `dst`.
struct Import {
    src: PathBuf,
    dst: PathBuf,
    expected: Expected,
    role: super::Role,
    /// The largest file accepted (`max_size`).
    max: u64,
}

fn import(
    job: &Import,
    roots: &LocalRoots,
    shared: &super::Shared,
    disk: &std::sync::Arc<super::space::Disk>,
) -> Result<(Digests, &'static str), AttemptError> {
    let Import {
        src,
        dst,
        expected,
        role,
        max,
    } = job;
    let (src, dst, role, max) = (src.as_path(), dst.as_path(), *role, *max);
    let mut source = roots
        .open(src)
        .map_err(|e| AttemptError::Failed(e.into_failure()))?;
    let unreadable = |e: std::io::Error| {
        AttemptError::Failed(Failure::new(
            ErrorClass::LocalMissing,
            format!("cannot read {}: {e}", src.display()),
        ))
    };
    if source.len() > max {
        return Err(Failure::new(
            ErrorClass::TooLarge,
            format!(
                "{} has {} bytes, more than the limit of {max}",
                src.display(),
                source.len()
            ),
        )
        .into());
    }
    if let Some(size) = expected.size
        && size != source.len()
    {
        return Err(Failure::new(
            ErrorClass::SizeMismatch,
            format!(
                "expected {size} bytes, {} has {}",
                src.display(),
                source.len()
            ),
        )
        .into());
    }
    match std::fs::remove_file(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fatal(dst, e)),
    }
    let remove_dst = || {
        let _ = std::fs::remove_file(dst);
    };
    let digests = match link_opened(&source.file, dst) {
        Ok(()) => {
            // The link is the opened file itself: hash it from the same descriptor.
            let h = hash_through(&mut source.file, expected, shared, None, &unreadable)
                .inspect_err(|_| remove_dst())?;
            let changed = source.changed().map_err(|e| {
                remove_dst();
                unreadable(e)
            })?;
            if changed || h.len() != source.len() {
                remove_dst();
                return Err(Failure::new(
                    ErrorClass::Truncated,
                    format!(
                        "{} changed while it was read (still being written?); it is tried again later",
                        src.display()
                    ),
                )
                .into());
            }
            h.finish()
        }
        Err(e) => {
            tracing::debug!(src = %src.display(), "no hard link ({e}); copying");
            // A copy takes room on the disk (a link does not).
            let mut claim = disk.claim(dst, source.len())?;
            use std::os::unix::fs::OpenOptionsExt;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(source.copy_mode())
                .open(dst)
                .map_err(|e| fatal(dst, e))?;
            let copy = Copy {
                out: &mut out,
                path: dst,
                claim: &mut claim,
                disk,
            };
            let h = hash_through(&mut source.file, expected, shared, Some(copy), &unreadable)
                .inspect_err(|_| remove_dst())?;
            start_writeback(&out);
            h.finish()
        }
    };
    let checked = verify::accept(role, verify::sniff(&digests.head, true))
        .and_then(|ext| verify::check(expected, &digests).map(|()| ext));
    match checked {
        Ok(ext) => Ok((digests, ext)),
        Err(f) => {
            remove_dst();
            Err(Failure::new(f.class, format!("{} ({})", f.message, src.display())).into())
        }
    }
}

/// Where [`hash_through`] writes a copy of what it reads.
struct Copy<'a> {
    out: &'a mut std::fs::File,
    path: &'a Path,
    claim: &'a mut super::space::Claim,
    disk: &'a super::space::Disk,
}

/// Reads `file` to its end, hashing every byte and, for a copy, writing the same bytes
/// to `copy` (what is stored is then what was hashed). Stops with `Interrupted` when
/// the run is cancelled; a read error goes through `unreadable`.
fn hash_through(
    file: &mut std::fs::File,
    expected: &Expected,
    shared: &super::Shared,
    mut copy: Option<Copy<'_>>,
    unreadable: &dyn Fn(std::io::Error) -> AttemptError,
) -> Result<Hashers, AttemptError> {
    let mut h = Hashers::new(expected);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if shared.cancel.is_set() {
            return Err(AttemptError::Interrupted);
        }
        let n = file.read(&mut buf).map_err(unreadable)?;
        if n == 0 {
            return Ok(h);
        }
        if let Some(c) = copy.as_mut() {
            c.disk
                .write_all(c.out, &buf[..n])
                .map_err(|e| fatal(c.path, e))?;
            c.claim.wrote(n as u64);
            shared.add_bytes(n as u64);
        }
        h.update(&buf[..n]);
    }
}

/// A hard link at `dst` to the file open as `file`: `linkat` of `/proc/self/fd/N`
/// with `AT_SYMLINK_FOLLOW`, so the link is to the inode that was opened and checked,
/// never to whatever the source path names by now. Fails (and the caller copies) where
/// there is no `/proc`, across file systems, or where the kernel refuses links to
/// another user's files.
fn link_opened(file: &std::fs::File, dst: &Path) -> std::io::Result<()> {
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        proc_path.as_str(),
        rustix::fs::CWD,
        dst,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(
            content_range("bytes 100-199/200"),
            Some((Some((100, 199)), Some(200)))
        );
        assert_eq!(content_range("bytes 0-9/*"), Some((Some((0, 9)), None)));
        assert_eq!(content_range("bytes */1234"), Some((None, Some(1234))));
        assert_eq!(content_range("items 0-1/2"), None);
        assert_eq!(content_range("bytes x-y/2"), None);
    }
}
