//! A Docker API proxy that counts: `up` talks to the engine through it, and
//! a test reads which requests it made and when. It forwards every
//! connection byte for byte to dockerd's socket and finds the requests in
//! the client's byte stream (request line, headers, a Content-Length or
//! chunked body skipped), so keep-alive connections count every request;
//! an Upgrade (attach) ends the parsing of its connection.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One request `up` sent: when, the method, the path without its query.
#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub method: String,
    pub path: String,
}

pub struct CountingProxy {
    pub socket: PathBuf,
    log: Arc<Mutex<Vec<Request>>>,
    _dir: crate::names::TempDir,
}

impl CountingProxy {
    /// Listen on a new socket in a temporary folder, forwarding to `upstream`.
    pub fn start(upstream: &Path) -> CountingProxy {
        let dir = crate::names::TempDir::new("proxy");
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).expect("binding the proxy socket");
        let log = Arc::new(Mutex::new(Vec::new()));
        let upstream = upstream.to_owned();
        let l = log.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = UnixStream::connect(&upstream) else {
                    continue;
                };
                let log = l.clone();
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump_counting(client, server, log));
                std::thread::spawn(move || pump(s2, c2));
            }
        });
        CountingProxy {
            socket,
            log,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    /// The requests made after `t`.
    pub fn since(&self, t: Instant) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.at >= t).collect()
    }
}

fn pump(mut from: UnixStream, mut to: UnixStream) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn pump_counting(mut from: UnixStream, mut to: UnixStream, log: Arc<Mutex<Vec<Request>>>) {
    let mut parser = Requests::default();
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                for (method, path) in parser.feed(&buf[..n]) {
                    log.lock().unwrap().push(Request {
                        at: Instant::now(),
                        method,
                        path,
                    });
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Request boundaries in one connection's client-to-server bytes.
#[derive(Default)]
struct Requests {
    buf: Vec<u8>,
    state: State,
}

#[derive(Default)]
enum State {
    #[default]
    Head,
    Body(usize),
    Chunked,
    Raw,
}

impl Requests {
    fn feed(&mut self, data: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.buf.extend_from_slice(data);
        loop {
            match self.state {
                State::Raw => {
                    self.buf.clear();
                    return out;
                }
                State::Head => {
                    let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                        return out;
                    };
                    let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    self.buf.drain(..end + 4);
                    let mut lines = head.split("\r\n");
                    let mut first = lines.next().unwrap_or("").split(' ');
                    let method = first.next().unwrap_or("?").to_owned();
                    let path = first.next().unwrap_or("?");
                    let path = path.split('?').next().unwrap_or(path).to_owned();
                    let mut length = 0;
                    let mut chunked = false;
                    let mut upgrade = false;
                    for h in lines {
                        let Some((k, v)) = h.split_once(':') else {
                            continue;
                        };
                        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                        match k.as_str() {
                            "content-length" => length = v.parse().unwrap_or(0),
                            "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                            "upgrade" => upgrade = true,
                            _ => {}
                        }
                    }
                    out.push((method, path));
                    self.state = if upgrade {
                        State::Raw
                    } else if chunked {
                        State::Chunked
                    } else if length > 0 {
                        State::Body(length)
                    } else {
                        State::Head
                    };
                }
                State::Body(left) => {
                    let n = left.min(self.buf.len());
                    self.buf.drain(..n);
                    if n < left {
                        self.state = State::Body(left - n);
                        return out;
                    }
                    self.state = State::Head;
                }
                State::Chunked => {
                    // Size line, data, CRLF; a zero size ends the body
                    // (then an empty trailer line).
                    let Some(end) = find(&self.buf, b"\r\n") else {
                        return out;
                    };
                    let size_line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    let size =
                        usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                            .unwrap_or(0);
                    if self.buf.len() < end + 2 + size + 2 {
                        return out;
                    }
                    self.buf.drain(..end + 2 + size + 2);
                    if size == 0 {
                        self.state = State::Head;
                    }
                }
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
