//! A real HTTP receiver on 127.0.0.1 for the webhook tests: a std
//! `TcpListener` whose connections each get a thread, answering from a
//! script (200 once the script is empty), recording every request and how
//! many deliveries of one event (per path) were in flight at once.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(u16),
    /// Reads until the client gives up (or 30 s), never answering.
    Hang,
    /// A 302 to `/followed` on this receiver.
    Redirect,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status answered (None: hung).
    pub status: Option<u16>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The `webhook-id` header as an event id.
    pub fn event_id(&self) -> i64 {
        self.header("webhook-id").and_then(|v| v.parse().ok()).expect("a webhook-id")
    }

    pub fn headers(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    requests: Vec<Request>,
    in_flight: HashMap<(String, String), u32>,
    /// The most deliveries of one (path, event id) in flight at once.
    max_in_flight: u32,
    /// Milliseconds each answer waits (widens any overlap of deliveries).
    delay_ms: u64,
}

#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let port = listener.local_addr().expect("its address").port();
        let r = Receiver { port, state: Arc::default() };
        let state = r.state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let state = state.clone();
                std::thread::spawn(move || serve(conn, &state));
            }
        });
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers the next requests with `replies`, in order, then 200s.
    pub fn script(&self, replies: &[Reply]) {
        self.state.lock().unwrap().script.extend(replies);
    }

    pub fn delay_ms(&self, ms: u64) {
        self.state.lock().unwrap().delay_ms = ms;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Event ids answered 2xx on `path`, in the order they were answered.
    pub fn delivered(&self, path: &str) -> Vec<i64> {
        let ok = |r: &&Request| r.path == path && r.status.is_some_and(|s| (200..300).contains(&s));
        self.requests().iter().filter(ok).map(Request::event_id).collect()
    }

    pub fn max_in_flight(&self) -> u32 {
        self.state.lock().unwrap().max_in_flight
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone the connection"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let len = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    let mut body = vec![0; len.and_then(|(_, v)| v.parse().ok()).unwrap_or(0)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let id = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("webhook-id")).map(|(_, v)| v.clone());
    let key = (path.clone(), id.unwrap_or_default());
    let (reply, delay) = {
        let mut s = state.lock().unwrap();
        let n = s.in_flight.entry(key.clone()).or_default();
        *n += 1;
        let now = *n;
        s.max_in_flight = s.max_in_flight.max(now);
        (s.script.pop_front().unwrap_or(Reply::Status(200)), s.delay_ms)
    };
    std::thread::sleep(Duration::from_millis(delay));
    let status = match reply {
        Reply::Hang => {
            // Until the client closes the connection (its timeout).
            let _ = reader.read_to_end(&mut Vec::new());
            None
        }
        Reply::Redirect => Some(302),
        Reply::Status(s) => Some(s),
    };
    {
        let mut s = state.lock().unwrap();
        if let Some(n) = s.in_flight.get_mut(&key) {
            *n -= 1;
        }
        s.requests.push(Request { path: path.clone(), headers, body, status });
    }
    let mut conn = reader.into_inner();
    let answer = match (reply, status) {
        (Reply::Redirect, _) => "HTTP/1.1 302 Found\r\nLocation: /followed\r\nContent-Length: 0\r\n\r\n".to_string(),
        (_, Some(s)) => format!("HTTP/1.1 {s} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"),
        _ => return,
    };
    let _ = conn.write_all(answer.as_bytes());
}
