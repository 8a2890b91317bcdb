//! A fault-injecting HTTP/1.1 proxy for catalog tests: it stands between k2i and the Iceberg REST catalog,
//! forwards every request, records what it saw, and does to the requests a test selects what a flaky
//! network or gateway would do.
//!
//! ```text
//!  k2i ──(keep-alive connections)──► Proxy ──(one connection per request)──► REST catalog
//!                                      │
//!                         rules: Match (method, path) → Fault
//! ```
//!
//! The proxy parses requests only as far as it must: the request line (method and path), the headers, and
//! the body by `Content-Length` or chunked encoding, so that it knows where one request ends on a keep-alive
//! connection. Responses are read the same way (plus the close-delimited case) and relayed byte for byte.
//! Every request goes to the server over a fresh connection: a connection the server closed while idle can
//! then never make the proxy send a request twice, which would falsify exactly the tests this is for.
//!
//! Rules are tried in the order they were added; the first that matches and still has uses applies. A
//! request no rule applies to is forwarded unchanged. The iceberg REST commit endpoint is
//! `POST /v1/namespaces/{ns}/tables/{table}` ([`Match::commit`]).
//!
//! The proxy runs on plain threads (blocking I/O), not on a tokio runtime, so a test that blocks its own
//! thread (sleeps, waits for a child process) cannot starve it. It listens on a free loopback port and stops
//! when dropped: held requests are then dropped unsent and every open connection is closed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest request or response head the proxy accepts (a guard against reading garbage forever).
const MAX_HEAD_BYTES: usize = 1024 * 1024;

/// Which requests a rule applies to. All set conditions must hold; [`Match::any`] sets none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    method: Option<String>,
    path_suffix: Option<String>,
    path_contains: Option<String>,
}

impl Match {
    /// Every request.
    pub fn any() -> Self {
        Self::default()
    }

    /// The commit endpoint of table `table` (`POST …/tables/<table>`), in any namespace.
    pub fn commit(table: &str) -> Self {
        Self::any().method("POST").path_ends_with(&format!("/tables/{table}"))
    }

    /// Only requests with this method (case-insensitive).
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only requests whose path (without the query string) ends with `suffix`.
    pub fn path_ends_with(mut self, suffix: &str) -> Self {
        self.path_suffix = Some(suffix.to_owned());
        self
    }

    /// Only requests whose path (without the query string) contains `part`.
    pub fn path_contains(mut self, part: &str) -> Self {
        self.path_contains = Some(part.to_owned());
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let path = path.split('?').next().unwrap_or_default();
        self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path_suffix.as_deref().is_none_or(|s| path.ends_with(s))
            && self.path_contains.as_deref().is_none_or(|c| path.contains(c))
    }
}

/// What the proxy does to a request a rule selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers with this status (and a REST error body) without forwarding: the server never saw it.
    Respond(u16),
    /// Forwards, waits for the server's answer, then answers with this status instead: the server applied
    /// the request, the client believes it failed (a gateway timing out just too early).
    ForwardThenRespond(u16),
    /// Does not forward until [`Rule::release`]; then forwards and relays the answer (to a client that may
    /// have given up or died meanwhile).
    Hold,
    /// Waits, then forwards.
    Delay(Duration),
    /// Forwards, waits for the server's answer, then closes the client's connection without answering.
    ForwardThenCut,
    /// Closes the client's connection without forwarding.
    Cut,
}

/// A request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which client connection it came on (numbered from 1 in accept order).
    pub connection: u64,
    /// The method, as sent.
    pub method: String,
    /// The path with its query string, as sent.
    pub path: String,
    /// The headers, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (decoded when it was chunked).
    pub body: Vec<u8>,
    /// The fault applied to it, if a rule selected it.
    pub fault: Option<Fault>,
    /// The status the server answered, once it did (`None`: not forwarded, or not answered yet).
    pub status: Option<u16>,
    /// The status the client was sent (`None`: nothing yet, or the connection was cut).
    pub answered: Option<u16>,
    /// When the proxy had read the whole request.
    pub at: Instant,
}

impl Seen {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct RuleState {
    id: usize,
    matcher: Match,
    fault: Fault,
    /// How many more requests it applies to (`None`: all).
    remaining: Option<usize>,
    /// Requests it applied to.
    matched: usize,
    /// Requests it holds right now.
    holding: usize,
    /// A hold rule's held requests may go (and it selects no more).
    released: bool,
}

#[derive(Default)]
struct State {
    rules: Vec<RuleState>,
    seen: Vec<Seen>,
    /// Every open socket (client and server side), to close them all when the proxy stops.
    sockets: HashMap<u64, TcpStream>,
    next_socket: u64,
    next_connection: u64,
}

struct Shared {
    target: String,
    state: Mutex<State>,
    /// Signalled on every change a waiter may care about (a release, a stop, a request seen or answered).
    changed: Condvar,
    stopped: AtomicBool,
}

impl Shared {
    /// Waits until `check` returns a value, woken by every change.
    ///
    /// # Panics
    /// After `timeout`, naming `what` and listing the requests seen.
    fn wait_until<T>(&self, what: &str, timeout: Duration, check: impl Fn(&State) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(value) = check(&state) {
                return value;
            }
            let now = Instant::now();
            if now >= deadline {
                let seen: Vec<String> = state.seen.iter().map(describe).collect();
                drop(state);
                panic!("proxy: timed out after {timeout:?} waiting for {what}; requests seen:\n{}", seen.join("\n"));
            }
            state = self.changed.wait_timeout(state, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data: a panicking connection thread cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, socket: &TcpStream) -> Option<u64> {
        let clone = socket.try_clone().ok()?;
        let mut state = self.lock();
        state.next_socket += 1;
        let id = state.next_socket;
        state.sockets.insert(id, clone);
        Some(id)
    }

    fn unregister(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.lock().sockets.remove(&id);
        }
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut Seen)) {
        let mut state = self.lock();
        if let Some(seen) = state.seen.get_mut(index) {
            f(seen);
        }
        drop(state);
        self.changed.notify_all();
    }
}

/// A running proxy; stopped when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("addr", &self.addr).field("target", &self.shared.target).finish_non_exhaustive()
    }
}

impl Proxy {
    /// Starts a proxy to `target` (`host:port` or `http://host:port[/…]`) on a free loopback port.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start(target: &str) -> Self {
        let target = target.trim_start_matches("http://");
        let target = target.split('/').next().unwrap_or(target).to_owned();
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("proxy: cannot bind a loopback port: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("proxy: no local address: {e}"));
        let shared = Arc::new(Shared {
            target,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stopped: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || accept_loop(&listener, &accept_shared))
            .unwrap_or_else(|e| panic!("proxy: cannot start a thread: {e}"));
        Self { addr, shared, accept: Some(accept) }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's base URL (`http://127.0.0.1:<port>`), to put where the catalog's URL would go.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to every request `matcher` selects, until the rule is released or removed.
    pub fn rule(&self, matcher: Match, fault: Fault) -> Rule {
        self.add(matcher, fault, None)
    }

    /// Applies `fault` to the next request `matcher` selects only.
    pub fn once(&self, matcher: Match, fault: Fault) -> Rule {
        self.add(matcher, fault, Some(1))
    }

    /// Applies `fault` to the next `times` requests `matcher` selects.
    pub fn times(&self, matcher: Match, fault: Fault, times: usize) -> Rule {
        self.add(matcher, fault, Some(times))
    }

    fn add(&self, matcher: Match, fault: Fault, remaining: Option<usize>) -> Rule {
        let mut state = self.shared.lock();
        let id = state.rules.len();
        state.rules.push(RuleState { id, matcher, fault, remaining, matched: 0, holding: 0, released: false });
        Rule { shared: self.shared.clone(), id }
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.lock().seen.clone()
    }

    /// Waits until `check` holds on the requests seen so far and returns them.
    ///
    /// # Panics
    /// After `timeout`, naming `what` and listing the requests seen.
    pub fn wait_for(&self, what: &str, timeout: Duration, check: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        self.shared.wait_until(what, timeout, |state| check(&state.seen).then(|| state.seen.clone()))
    }
}

/// One line per request: for failure messages.
pub fn describe(seen: &Seen) -> String {
    format!(
        "#{} {} {} fault={:?} server={:?} client={:?}",
        seen.connection, seen.method, seen.path, seen.fault, seen.status, seen.answered
    )
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let sockets: Vec<TcpStream> = self.shared.lock().sockets.drain().map(|(_, s)| s).collect();
        for socket in sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
        self.shared.changed.notify_all();
        // The accept loop blocks in accept(): one connection wakes it to see the stop flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// A rule added to a [`Proxy`].
pub struct Rule {
    shared: Arc<Shared>,
    id: usize,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Rule {
    fn with<R>(&self, f: impl FnOnce(&mut RuleState) -> R) -> R {
        let mut state = self.shared.lock();
        let rule = state.rules.iter_mut().find(|r| r.id == self.id);
        f(rule.unwrap_or_else(|| unreachable!("rules are never removed from the list")))
    }

    /// How many requests the rule applied to so far.
    pub fn matched(&self) -> usize {
        self.with(|r| r.matched)
    }

    /// How many requests the rule holds right now.
    pub fn holding(&self) -> usize {
        self.with(|r| r.holding)
    }

    /// Waits until the rule holds at least `n` requests at once.
    ///
    /// # Panics
    /// After `timeout`.
    pub fn wait_holding(&self, n: usize, timeout: Duration) {
        self.wait(&format!("{n} held request(s)"), timeout, |r| r.holding >= n);
    }

    /// Waits until the rule applied to at least `n` requests.
    ///
    /// # Panics
    /// After `timeout`.
    pub fn wait_matched(&self, n: usize, timeout: Duration) {
        self.wait(&format!("{n} matched request(s)"), timeout, |r| r.matched >= n);
    }

    fn wait(&self, what: &str, timeout: Duration, check: impl Fn(&RuleState) -> bool) {
        self.shared.wait_until(what, timeout, |state| {
            state.rules.iter().find(|r| r.id == self.id).is_some_and(&check).then_some(())
        })
    }

    /// Lets the requests the rule holds go on to the server, and stops the rule selecting more.
    pub fn release(&self) {
        self.with(|r| {
            r.released = true;
            r.remaining = Some(0);
        });
        self.shared.changed.notify_all();
    }

    /// Stops the rule selecting more requests (requests it holds stay held until [`Rule::release`]).
    pub fn remove(&self) {
        self.with(|r| r.remaining = Some(0));
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let shared = shared.clone();
        let connection = {
            let mut state = shared.lock();
            state.next_connection += 1;
            state.next_connection
        };
        let spawned = std::thread::Builder::new()
            .name(format!("proxy-conn-{connection}"))
            .spawn(move || serve(&shared, client, connection));
        if spawned.is_err() {
            // Out of threads: the client sees its connection closed, like a refused one.
            continue;
        }
    }
}

/// A request or response as read: the raw bytes to relay and what the proxy needs to know about it.
struct Message {
    raw: Vec<u8>,
    start_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body ran until the connection closed (a response without length): the connection cannot be reused.
    close_delimited: bool,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn wants_close(&self) -> bool {
        self.close_delimited || self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

fn serve(shared: &Arc<Shared>, client: TcpStream, connection: u64) {
    let socket = shared.register(&client);
    let Ok(read_half) = client.try_clone() else {
        shared.unregister(socket);
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = client;
    // Until the client closes the connection (or sends garbage, or the proxy stops).
    while let Ok(Some(request)) = read_message(&mut reader, None) {
        let mut parts = request.start_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let (index, applied) = {
            let mut state = shared.lock();
            let rule = state.rules.iter_mut().find(|r| r.remaining != Some(0) && r.matcher.matches(&method, &path));
            let applied = rule.map(|rule| {
                rule.remaining = rule.remaining.map(|n| n - 1);
                rule.matched += 1;
                if rule.fault == Fault::Hold {
                    rule.holding += 1;
                }
                (rule.id, rule.fault)
            });
            state.seen.push(Seen {
                connection,
                method: method.clone(),
                path: path.clone(),
                headers: request.headers.clone(),
                body: request.body.clone(),
                fault: applied.map(|(_, f)| f),
                status: None,
                answered: None,
                at: Instant::now(),
            });
            (state.seen.len() - 1, applied)
        };
        shared.changed.notify_all();
        let keep_going = match applied {
            None => relay(shared, &mut writer, &request, &method, index),
            Some((_, Fault::Respond(code))) => answer(shared, &mut writer, code, index),
            Some((_, Fault::ForwardThenRespond(code))) => {
                let _ = forward(shared, &request, &method, index);
                answer(shared, &mut writer, code, index)
            }
            Some((rule, Fault::Hold)) => {
                let released = hold(shared, rule);
                released && relay(shared, &mut writer, &request, &method, index)
            }
            Some((_, Fault::Delay(delay))) => {
                std::thread::sleep(delay);
                relay(shared, &mut writer, &request, &method, index)
            }
            Some((_, Fault::ForwardThenCut)) => {
                let _ = forward(shared, &request, &method, index);
                false
            }
            Some((_, Fault::Cut)) => false,
        };
        if !keep_going || request.wants_close() || shared.stopped.load(Ordering::SeqCst) {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
    shared.unregister(socket);
}

/// Waits until a hold rule is released (`true`) or the proxy stops (`false`).
fn hold(shared: &Shared, rule: usize) -> bool {
    let mut state = shared.lock();
    let released = loop {
        if shared.stopped.load(Ordering::SeqCst) {
            break false;
        }
        if state.rules.iter().find(|r| r.id == rule).is_some_and(|r| r.released) {
            break true;
        }
        state = shared.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
    };
    if let Some(r) = state.rules.iter_mut().find(|r| r.id == rule) {
        r.holding -= 1;
    }
    drop(state);
    shared.changed.notify_all();
    released
}

/// Forwards a request and relays the server's answer; whether the client connection can be reused.
fn relay(shared: &Shared, client: &mut TcpStream, request: &Message, method: &str, index: usize) -> bool {
    match forward(shared, request, method, index) {
        Ok(response) => {
            let code = status_of(&response.start_line);
            if client.write_all(&response.raw).and_then(|()| client.flush()).is_err() {
                return false;
            }
            shared.update(index, |s| s.answered = code);
            !response.wants_close()
        }
        // The server is unreachable or broke off: what a gateway answers then.
        Err(_) => answer(shared, client, 502, index),
    }
}

/// Sends a request to the server over a fresh connection and reads the whole answer.
fn forward(shared: &Shared, request: &Message, method: &str, index: usize) -> std::io::Result<Message> {
    let server = TcpStream::connect(&shared.target)?;
    let socket = shared.register(&server);
    let outcome = (|| {
        let mut writer = server.try_clone()?;
        writer.write_all(&request.raw)?;
        writer.flush()?;
        let mut reader = BufReader::new(server.try_clone()?);
        loop {
            let response = read_message(&mut reader, Some(method))?
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server closed"))?;
            // Interim answers (100 Continue) precede the real one.
            if !matches!(status_of(&response.start_line), Some(100..=199)) {
                return Ok(response);
            }
        }
    })();
    let _ = server.shutdown(Shutdown::Both);
    shared.unregister(socket);
    if let Ok(response) = &outcome {
        let code = status_of(&response.start_line);
        shared.update(index, |s| s.status = code);
    }
    outcome
}

/// Answers the client with `code` and an Iceberg REST error body; whether the connection can be reused.
fn answer(shared: &Shared, client: &mut TcpStream, code: u16, index: usize) -> bool {
    let reason = match code {
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected",
    };
    let body = format!(
        r#"{{"error":{{"message":"injected by the k2i test proxy","type":"{}","code":{code}}}}}"#,
        reason.replace(' ', "")
    );
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    if client.write_all(response.as_bytes()).and_then(|()| client.flush()).is_err() {
        return false;
    }
    shared.update(index, |s| s.answered = Some(code));
    true
}

fn status_of(start_line: &str) -> Option<u16> {
    start_line.split_whitespace().nth(1)?.parse().ok()
}

/// Reads one HTTP/1.1 message. `request_method`: `None` reads a request, `Some(method)` the response to a
/// request with that method. `Ok(None)`: the connection closed before a message began.
fn read_message(reader: &mut impl BufRead, request_method: Option<&str>) -> std::io::Result<Option<Message>> {
    let mut raw = Vec::new();
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the connection closed mid-head"));
        }
        raw.extend_from_slice(&line);
        if raw.len() > MAX_HEAD_BYTES {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "message head too long"));
        }
        let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_owned();
        if text.is_empty() {
            if lines.is_empty() {
                // Tolerated before a request line (RFC 9112 §2.2).
                raw.clear();
                continue;
            }
            break;
        }
        lines.push(text);
    }
    let start_line = lines.remove(0);
    let headers: Vec<(String, String)> = lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut message = Message { raw, start_line, headers, body: Vec::new(), close_delimited: false };
    let no_body = match request_method {
        None => false,
        Some(method) => {
            method.eq_ignore_ascii_case("HEAD") || matches!(status_of(&message.start_line), Some(100..=199 | 204 | 304))
        }
    };
    if no_body {
        return Ok(Some(message));
    }
    let chunked = message.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = message.header("content-length").and_then(|v| v.parse::<usize>().ok());
    if chunked {
        read_chunked(reader, &mut message)?;
    } else if let Some(length) = length {
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        message.raw.extend_from_slice(&body);
        message.body = body;
    } else if request_method.is_some() {
        // A response without a length ends when the server closes the connection.
        let mut body = Vec::new();
        reader.read_to_end(&mut body)?;
        message.raw.extend_from_slice(&body);
        message.body = body;
        message.close_delimited = true;
    }
    Ok(Some(message))
}

fn read_chunked(reader: &mut impl BufRead, message: &mut Message) -> std::io::Result<()> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Err(invalid("the connection closed mid-chunk"));
        }
        message.raw.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line);
        let size = text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line)? == 0 {
                    return Err(invalid("the connection closed in the trailers"));
                }
                message.raw.extend_from_slice(&line);
                if line.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                    return Ok(());
                }
            }
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        message.raw.extend_from_slice(&chunk);
        message.body.extend_from_slice(&chunk[..size]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-route HTTP server: answers every request with its method and path, counting POSTs.
    fn server() -> (String, Arc<Mutex<usize>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let posts = Arc::new(Mutex::new(0));
        let counter = posts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut writer = stream;
                    while let Ok(Some(request)) = read_message(&mut reader, None) {
                        if request.start_line.starts_with("POST") {
                            *counter.lock().expect("lock") += 1;
                        }
                        // Chunked, to exercise the proxy's response framing.
                        let body = format!("{}|{}", request.start_line, String::from_utf8_lossy(&request.body));
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                            body.len()
                        );
                        if writer.write_all(response.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, posts)
    }

    /// Sends requests over one keep-alive connection; each answer's status and body (`None`: cut).
    fn send(addr: SocketAddr, requests: &[(&str, &str, &str)]) -> Vec<Option<(u16, String)>> {
        let stream = TcpStream::connect(addr).expect("connect");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut writer = stream;
        let mut out = Vec::new();
        for (method, path, body) in requests {
            let request =
                format!("{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            if writer.write_all(request.as_bytes()).is_err() {
                out.push(None);
                break;
            }
            match read_message(&mut reader, Some(method)) {
                Ok(Some(m)) => out.push(Some((status_of(&m.start_line).expect("status"), m.body_text()))),
                _ => {
                    out.push(None);
                    break;
                }
            }
        }
        out
    }

    impl Message {
        fn body_text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    #[test]
    fn forwards_keep_alive_requests_and_applies_rules_in_order() {
        let (target, posts) = server();
        let proxy = Proxy::start(&format!("http://{target}"));
        let commit = Match::commit("events");
        proxy.once(commit.clone(), Fault::ForwardThenRespond(504));
        proxy.once(commit.clone(), Fault::Respond(503));
        let answers = send(
            proxy.addr(),
            &[
                ("GET", "/v1/namespaces/n/tables/events", ""),
                ("POST", "/v1/namespaces/n/tables/events", "{\"a\":1}"),
                ("POST", "/v1/namespaces/n/tables/events", "{\"a\":2}"),
                ("POST", "/v1/namespaces/n/tables/events?x=1", "{\"a\":3}"),
                ("POST", "/v1/namespaces/n/tables", "{}"),
            ],
        );
        let codes: Vec<u16> = answers.iter().map(|a| a.as_ref().expect("answered").0).collect();
        assert_eq!(codes, [200, 504, 503, 200, 200]);
        assert_eq!(
            answers[3].as_ref().expect("answered").1,
            "POST /v1/namespaces/n/tables/events?x=1 HTTP/1.1|{\"a\":3}"
        );
        // The 504 was applied by the server; the 503 never reached it.
        assert_eq!(*posts.lock().expect("lock"), 3);
        let seen = proxy.requests();
        assert_eq!(seen.len(), 5);
        assert!(seen.iter().all(|s| s.connection == 1), "one keep-alive connection");
        assert_eq!((seen[1].status, seen[1].answered), (Some(200), Some(504)));
        assert_eq!((seen[2].status, seen[2].answered), (None, Some(503)));
        assert_eq!(seen[1].body_text(), "{\"a\":1}");
        assert_eq!(seen[1].header("Content-Length"), Some("7"));
    }

    #[test]
    fn a_held_request_reaches_the_server_only_once_released_even_after_its_client_left() {
        let (target, posts) = server();
        let proxy = Proxy::start(&target);
        let hold = proxy.once(Match::commit("events"), Fault::Hold);
        let addr = proxy.addr();
        let client = std::thread::spawn(move || send(addr, &[("POST", "/v1/namespaces/n/tables/events", "{}")]));
        hold.wait_holding(1, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(*posts.lock().expect("lock"), 0, "held, not forwarded");
        // A second request on another connection passes (the rule applied once).
        assert_eq!(send(addr, &[("POST", "/v1/namespaces/n/tables/events", "{}")])[0].as_ref().map(|a| a.0), Some(200));
        hold.release();
        assert_eq!(client.join().expect("client")[0].as_ref().map(|a| a.0), Some(200));
        assert_eq!(*posts.lock().expect("lock"), 2);
        assert_eq!(hold.holding(), 0);
    }

    #[test]
    fn cut_connections_and_delays() {
        let (target, posts) = server();
        let proxy = Proxy::start(&target);
        proxy.once(Match::any().method("post"), Fault::ForwardThenCut);
        proxy.once(Match::any().path_contains("/slow"), Fault::Delay(Duration::from_millis(300)));
        proxy.once(Match::any().path_contains("/cut"), Fault::Cut);
        assert_eq!(send(proxy.addr(), &[("POST", "/p", "x"), ("GET", "/after", "")]), [None]);
        assert_eq!(*posts.lock().expect("lock"), 1, "forwarded before the cut");
        let started = Instant::now();
        assert_eq!(send(proxy.addr(), &[("GET", "/slow", "")])[0].as_ref().map(|a| a.0), Some(200));
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(send(proxy.addr(), &[("GET", "/cut", "")]), [None]);
        let seen = proxy.wait_for("three requests", Duration::from_secs(5), |s| s.len() == 3);
        assert_eq!(seen[0].status, Some(200));
        assert_eq!(seen[0].answered, None);
        assert_eq!(seen[2].status, None);
    }

    #[test]
    fn dropping_the_proxy_drops_held_requests_unsent() {
        let (target, posts) = server();
        let proxy = Proxy::start(&target);
        let hold = proxy.rule(Match::any(), Fault::Hold);
        let addr = proxy.addr();
        let client = std::thread::spawn(move || send(addr, &[("POST", "/x", "")]));
        hold.wait_holding(1, Duration::from_secs(5));
        drop(proxy);
        assert_eq!(client.join().expect("client"), [None]);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(*posts.lock().expect("lock"), 0);
    }
}
