//! A small static-file HTTP/1.1 server on 127.0.0.1, run inside the demo's process so
//! the demo downloads its videos over a real socket, exactly as a user's would be.
//!
//! Owns one directory and serves its plain files by name: GET and HEAD, byte ranges
//! (`Range: bytes=N-` and `N-M`, answered 206 with `Content-Range`, or 416), ETag and
//! Last-Modified, keep-alive. Names with `/`, `\`, `..` or control bytes are refused, so
//! nothing outside the directory is ever read. It never writes anything.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

/// Longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A running server; dropped, it stops.
pub struct FileServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    /// Serves `dir` on a free port of 127.0.0.1.
    pub fn start(dir: &Path) -> std::io::Result<FileServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let dir = Arc::new(dir.to_owned());
        let thread = {
            let (stop, requests) = (stop.clone(), requests.clone());
            std::thread::Builder::new()
                .name("demo-http".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let (dir, requests) = (dir.clone(), requests.clone());
                        let _ = std::thread::Builder::new()
                            .name("demo-http-conn".into())
                            .spawn(move || {
                                let _ = serve_connection(conn, &dir, &requests);
                            });
                    }
                })?
        };
        Ok(FileServer {
            addr,
            stop,
            requests,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>/`.
    pub fn base_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A parsed request head.
struct Request {
    method: String,
    target: String,
    range: Option<String>,
    close: bool,
}

fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut lines = vec![];
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = reader
            .by_ref()
            .take((MAX_HEAD - total) as u64 + 1)
            .read_line(&mut line)?;
        if n == 0 {
            return Ok(None); // the client closed the connection
        }
        total += n;
        if total > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // stray CRLF between requests
            }
            break;
        }
        lines.push(line);
    }
    let mut first = lines[0].split(' ');
    let (method, target, version) = (
        first.next().unwrap_or_default().to_owned(),
        first.next().unwrap_or_default().to_owned(),
        first.next().unwrap_or_default().to_owned(),
    );
    let mut range = None;
    let mut close = version != "HTTP/1.1";
    for h in &lines[1..] {
        let Some((name, value)) = h.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("range") {
            range = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some(Request {
        method,
        target,
        range,
        close,
    }))
}

fn serve_connection(conn: TcpStream, dir: &Path, requests: &AtomicU64) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.set_nodelay(true)?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    while let Some(req) = read_head(&mut reader)? {
        requests.fetch_add(1, Ordering::Relaxed);
        let keep = respond(&mut writer, dir, &req)? && !req.close;
        if !keep {
            break;
        }
    }
    Ok(())
}

fn simple(w: &mut impl Write, status: &str, extra: &str) -> std::io::Result<bool> {
    write!(
        w,
        "HTTP/1.1 {status}\r\ncontent-length: 0\r\n{extra}connection: keep-alive\r\n\r\n"
    )?;
    Ok(true)
}

/// The file a request target names, if it is a safe plain name inside `dir`.
fn resolve(dir: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next()?.strip_prefix('/')?;
    let name = percent_decode(path)?;
    let bad = name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\'])
        || name.contains("..")
        || name.chars().any(char::is_control);
    (!bad).then(|| dir.join(name))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `bytes=N-` or `bytes=N-M` against a file of `len` bytes; `Err` when it cannot
/// be satisfied.
fn parse_range(value: &str, len: u64) -> Result<(u64, u64), ()> {
    let spec = value.strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        (len.saturating_sub(n), len.checked_sub(1).ok_or(())?)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        (start, end)
    };
    if start >= len || end < start {
        return Err(());
    }
    Ok((start, end))
}

/// Answers one request; `Ok(false)` when the connection must close.
fn respond(w: &mut TcpStream, dir: &Path, req: &Request) -> std::io::Result<bool> {
    let head_only = match req.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => return simple(w, "405 Method Not Allowed", "allow: GET, HEAD\r\n"),
    };
    let Some(path) = resolve(dir, &req.target) else {
        return simple(w, "404 Not Found", "");
    };
    let Ok(mut file) = std::fs::File::open(&path) else {
        return simple(w, "404 Not Found", "");
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return simple(w, "404 Not Found", "");
    }
    let len = meta.len();
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let etag = format!("\"{len:x}-{mtime:x}\"");
    let modified = httpdate(mtime);
    let (status, start, end) = match &req.range {
        Some(r) => match parse_range(r, len) {
            Ok((s, e)) => ("206 Partial Content", s, e),
            Err(()) => {
                return simple(
                    w,
                    "416 Range Not Satisfiable",
                    &format!("content-range: bytes */{len}\r\n"),
                );
            }
        },
        None => ("200 OK", 0, len.saturating_sub(1)),
    };
    let body = if len == 0 { 0 } else { end - start + 1 };
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {}\r\ncontent-length: {body}\r\n\
         accept-ranges: bytes\r\netag: {etag}\r\nlast-modified: {modified}\r\n\
         connection: keep-alive\r\n",
        content_type(&path)
    );
    if req.range.is_some() {
        head.push_str(&format!("content-range: bytes {start}-{end}/{len}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if !head_only && body > 0 {
        file.seek(SeekFrom::Start(start))?;
        let copied = std::io::copy(&mut file.take(body), w)?;
        if copied != body {
            return Ok(false); // the file shrank: the client sees a short body
        }
    }
    w.flush()?;
    Ok(true)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("mp4") => "video/mp4",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("json" | "jsonl") => "application/json",
        Some("txt" | "csv") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for Last-Modified.
fn httpdate(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86400;
    let secs = unix % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: &str, head: &str) -> (String, Vec<u8>) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let mut out = vec![];
        s.read_to_end(&mut out).unwrap();
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&out[..split]).into_owned(),
            out[split + 4..].to_vec(),
        )
    }

    #[test]
    fn serves_files_ranges_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("a b.mp4"), &data).unwrap();
        let srv = FileServer::start(dir.path()).unwrap();
        let addr = srv.base_url()[7..].trim_end_matches('/').to_owned();
        let (h, body) = get(
            &addr,
            "GET /a%20b.mp4 HTTP/1.1\r\nconnection: close\r\n\r\n",
        );
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        assert_eq!(body, data);
        let (h, body) = get(
            &addr,
            "GET /a%20b.mp4 HTTP/1.1\r\nRange: bytes=990-\r\nconnection: close\r\n\r\n",
        );
        assert!(h.starts_with("HTTP/1.1 206"), "{h}");
        assert!(h.contains("content-range: bytes 990-999/1000"), "{h}");
        assert_eq!(body, &data[990..]);
        let (h, _) = get(
            &addr,
            "GET /a%20b.mp4 HTTP/1.1\r\nRange: bytes=1000-\r\nconnection: close\r\n\r\n",
        );
        assert!(h.starts_with("HTTP/1.1 416"), "{h}");
        for bad in [
            "/..%2Fetc%2Fpasswd",
            "/%2e%2e",
            "/.hidden",
            "/x/../a%20b.mp4",
        ] {
            let (h, _) = get(
                &addr,
                &format!("GET {bad} HTTP/1.1\r\nconnection: close\r\n\r\n"),
            );
            assert!(h.starts_with("HTTP/1.1 404"), "{bad}: {h}");
        }
        // Two requests on one connection.
        let (h, body) = get(
            &addr,
            "HEAD /a%20b.mp4 HTTP/1.1\r\n\r\nGET /a%20b.mp4 HTTP/1.1\r\nRange: bytes=0-1\r\nconnection: close\r\n\r\n",
        );
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with("HTTP/1.1 206"), "{text}");
        assert!(srv.requests() >= 8);
    }

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(httpdate(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(httpdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(httpdate(1_795_000_000), "Wed, 18 Nov 2026 11:06:40 GMT");
    }
}
