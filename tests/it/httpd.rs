//! A real HTTP/1.1 server on 127.0.0.1 for the fetch tests: routes answer with
//! whatever a source does (files with Range support, redirects, JSON, pages) and can
//! misbehave on purpose (cut bodies, connection resets, slow drips, lying lengths,
//! ignored ranges). Every request is logged so tests can check what the client sent.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The request body (read by its Content-Length).
    pub body: Vec<u8>,
    /// How many requests this route answered before this one.
    pub hit: usize,
    /// When the request arrived.
    pub at: std::time::Instant,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self, key: &str) -> Option<String> {
        let q = self.target.split_once('?')?.1;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then(|| v.to_owned())
        })
    }

    /// The start of `Range: bytes=N-`.
    pub fn range_from(&self) -> Option<u64> {
        let v = self.header("range")?;
        v.strip_prefix("bytes=")?.split('-').next()?.parse().ok()
    }
}

/// How the body is delivered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delivery {
    Whole,
    /// Send this many body bytes, then close the connection.
    CutAfter(usize),
    /// Send this many body bytes, then reset the connection (RST).
    ResetAfter(usize),
    /// Send `chunk` bytes every `every`.
    Drip {
        chunk: usize,
        every: Duration,
    },
    /// Send this many bytes, then go silent for this long, then close.
    StallAfter(usize, Duration),
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delivery: Delivery,
    /// Announce this length instead of the body's.
    pub claim_length: Option<usize>,
    /// Send no Content-Length and close after the body.
    pub no_length: bool,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: body.into(),
            delivery: Delivery::Whole,
            claim_length: None,
            no_length: false,
        }
    }

    pub fn status(status: u16) -> Reply {
        Reply::new(status, format!("status {status}\n"))
    }

    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::new(status, "").header("Location", location)
    }

    pub fn json(v: &serde_json::Value) -> Reply {
        Reply::new(200, v.to_string()).header("Content-Type", "application/json")
    }

    pub fn html(text: &str) -> Reply {
        Reply::new(200, text).header("Content-Type", "text/html; charset=utf-8")
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn delivery(mut self, d: Delivery) -> Reply {
        self.delivery = d;
        self
    }

    /// Serves `data` as a file: `206` for a satisfiable `Range` (unless `If-Range`
    /// names another validator), `416` past the end, else `200`.
    pub fn file(req: &Req, data: &[u8], etag: Option<&str>) -> Reply {
        let mut headers = vec![("Accept-Ranges".to_owned(), "bytes".to_owned())];
        if let Some(e) = etag {
            headers.push(("ETag".to_owned(), e.to_owned()));
        }
        let range_ok = match (req.header("if-range"), etag) {
            (Some(v), Some(e)) => v == e,
            (Some(_), None) => false,
            (None, _) => true,
        };
        let mut reply = match req.range_from() {
            Some(from) if range_ok && from > 0 && from as usize >= data.len() => {
                let mut r = Reply::new(416, "");
                r.headers
                    .push(("Content-Range".into(), format!("bytes */{}", data.len())));
                r
            }
            Some(from) if range_ok => {
                let from = from as usize;
                let mut r = Reply::new(206, data[from..].to_vec());
                r.headers.push((
                    "Content-Range".into(),
                    format!(
                        "bytes {from}-{}/{}",
                        data.len().saturating_sub(1),
                        data.len()
                    ),
                ));
                r
            }
            _ => Reply::new(200, data.to_vec()),
        };
        headers.append(&mut reply.headers);
        reply.headers = headers;
        reply
    }
}

type Handler = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;

struct Route {
    pattern: String,
    prefix: bool,
    hits: AtomicUsize,
    handler: Handler,
}

#[derive(Default)]
struct State {
    routes: Mutex<Vec<Arc<Route>>>,
    log: Mutex<Vec<(Req, u16)>>,
    /// Connections open now and at most, per route pattern.
    active: Mutex<HashMap<String, (usize, usize)>>,
}

pub struct Server {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (Arc::clone(&state), Arc::clone(&stop));
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = Arc::clone(&st);
                std::thread::spawn(move || serve(conn, st));
            }
        });
        Server {
            addr,
            state,
            stop,
            accept: Some(accept),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Answers requests whose path (without query) is `path`.
    pub fn route(&self, path: &str, f: impl Fn(&Req) -> Reply + Send + Sync + 'static) {
        self.add(path, false, f);
    }

    /// Answers requests whose path starts with `prefix` (exact routes win).
    pub fn prefix(&self, prefix: &str, f: impl Fn(&Req) -> Reply + Send + Sync + 'static) {
        self.add(prefix, true, f);
    }

    fn add(&self, pattern: &str, prefix: bool, f: impl Fn(&Req) -> Reply + Send + Sync + 'static) {
        self.state.routes.lock().unwrap().push(Arc::new(Route {
            pattern: pattern.to_owned(),
            prefix,
            hits: AtomicUsize::new(0),
            handler: Arc::new(f),
        }));
    }

    /// Serves `data` at `path` as a file with an ETag.
    pub fn file(&self, path: &str, data: Vec<u8>) {
        let etag = format!("\"{}\"", &sha256(&data)[..16]);
        self.route(path, move |r| Reply::file(r, &data, Some(&etag)));
    }

    /// Every request so far with the status it got.
    pub fn log(&self) -> Vec<(Req, u16)> {
        self.state.log.lock().unwrap().clone()
    }

    /// Requests to a path (without query).
    pub fn requests(&self, path: &str) -> Vec<(Req, u16)> {
        self.log()
            .into_iter()
            .filter(|(r, _)| r.path() == path)
            .collect()
    }

    /// The most connections a route served at once.
    pub fn max_concurrent(&self, pattern: &str) -> usize {
        self.state
            .active
            .lock()
            .unwrap()
            .get(pattern)
            .map_or(0, |(_, m)| *m)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn serve(conn: TcpStream, state: Arc<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_nodelay(true);
    let mut reader = BufReader::new(conn.try_clone().expect("clone stream"));
    let mut out = conn;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, target) = (method.to_owned(), target.to_owned());
        let mut headers = vec![];
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length.min(1 << 20)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = target.split('?').next().unwrap_or("").to_owned();
        let route = {
            let routes = state.routes.lock().unwrap();
            routes
                .iter()
                .find(|r| !r.prefix && r.pattern == path)
                .or_else(|| {
                    routes
                        .iter()
                        .filter(|r| r.prefix && path.starts_with(&r.pattern))
                        .max_by_key(|r| r.pattern.len())
                })
                .cloned()
        };
        let mut req = Req {
            method,
            target,
            headers,
            body,
            hit: 0,
            at: std::time::Instant::now(),
        };
        let reply = match &route {
            Some(r) => {
                req.hit = r.hits.fetch_add(1, Ordering::SeqCst);
                let mut a = state.active.lock().unwrap();
                let e = a.entry(r.pattern.clone()).or_default();
                e.0 += 1;
                e.1 = e.1.max(e.0);
                drop(a);
                (r.handler)(&req)
            }
            None => Reply::status(404),
        };
        state.log.lock().unwrap().push((req.clone(), reply.status));
        let keep = write_reply(&mut out, &req, &reply);
        if let Some(r) = &route {
            let mut a = state.active.lock().unwrap();
            if let Some(e) = a.get_mut(&r.pattern) {
                e.0 -= 1;
            }
        }
        if !keep {
            return;
        }
    }
}

/// Writes a reply; false when the connection must end.
fn write_reply(out: &mut TcpStream, req: &Req, r: &Reply) -> bool {
    let reason = match r.status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", r.status);
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let closes = r.no_length || !matches!(r.delivery, Delivery::Whole | Delivery::Drip { .. });
    if !r.no_length {
        head.push_str(&format!(
            "Content-Length: {}\r\n",
            r.claim_length.unwrap_or(r.body.len())
        ));
    }
    if closes || r.claim_length.is_some() {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    if out.write_all(head.as_bytes()).is_err() {
        return false;
    }
    if req.method == "HEAD" {
        return !closes;
    }
    let body = &r.body;
    let ok = match r.delivery {
        Delivery::Whole => out.write_all(body).is_ok(),
        Delivery::CutAfter(n) => {
            let _ = out.write_all(&body[..n.min(body.len())]);
            let _ = out.flush();
            return false;
        }
        Delivery::ResetAfter(n) => {
            let _ = out.write_all(&body[..n.min(body.len())]);
            let _ = out.flush();
            std::thread::sleep(Duration::from_millis(20));
            reset(out);
            return false;
        }
        Delivery::Drip { chunk, every } => {
            let mut ok = true;
            for (i, c) in body.chunks(chunk.max(1)).enumerate() {
                if i > 0 {
                    std::thread::sleep(every);
                }
                if out.write_all(c).is_err() {
                    ok = false;
                    break;
                }
                let _ = out.flush();
            }
            ok
        }
        Delivery::StallAfter(n, pause) => {
            let _ = out.write_all(&body[..n.min(body.len())]);
            let _ = out.flush();
            std::thread::sleep(pause);
            return false;
        }
    };
    let _ = out.flush();
    ok && !closes && r.claim_length.is_none()
}

/// Closes with RST instead of FIN.
fn reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Bytes that sniff as an MP4: an `ftyp` box, then pseudo-random bytes from `seed`.
pub fn fake_mp4(len: usize, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2");
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Reads a whole body from a reader (for tests that talk to the server directly).
pub fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = vec![];
    let _ = r.read_to_end(&mut v);
    v
}
