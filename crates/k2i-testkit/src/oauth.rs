//! An OAuth2 token endpoint for REST catalog tests: the client-credentials grant of RFC 6749 §4.4 as the
//! Iceberg REST spec uses it.
//!
//! A client POSTs a form (`application/x-www-form-urlencoded`) of `grant_type=client_credentials`,
//! `client_id`, `client_secret` and `scope` to [`TokenServer::url`]. Right credentials get `200` and
//! `{"access_token", "token_type": "bearer", "expires_in", "issued_token_type"}`; wrong ones `401` and
//! `{"error": "invalid_client"}`, another grant type `400` and `{"error": "unsupported_grant_type"}` (the
//! RFC 6749 §5.2 errors). Every request is recorded ([`TokenServer::requests`]) and every token issued with
//! when it expires ([`TokenServer::issued`]), so a test can check that each catalog request carried a token
//! that was valid when the request was sent.
//!
//! Like [`crate::proxy`], it runs on plain threads with blocking I/O, one request per connection
//! (`Connection: close`), on a free loopback port, and stops when dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A token request the server received.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The request's path.
    pub path: String,
    /// The form fields, decoded.
    pub form: HashMap<String, String>,
    /// The status answered.
    pub status: u16,
    /// When it was read.
    pub at: Instant,
}

/// A token the server issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The access token.
    pub token: String,
    /// When it was issued.
    pub at: Instant,
    /// When it stops being valid.
    pub expires: Instant,
    /// The scope it was issued for.
    pub scope: String,
}

#[derive(Default)]
struct State {
    requests: Vec<TokenRequest>,
    issued: Vec<Issued>,
}

/// The token endpoint. Stops when dropped.
pub struct TokenServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Starts a token endpoint that accepts `client_id` / `client_secret` and issues tokens valid for
    /// `expires_in`, each a new one (`<prefix>-<n>`, `prefix` unique to this server).
    ///
    /// # Panics
    /// When it cannot listen on a loopback port.
    pub fn start(client_id: &str, client_secret: &str, expires_in: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("cannot listen: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("no local address: {e}"));
        listener.set_nonblocking(true).unwrap_or_else(|e| panic!("cannot make the listener non-blocking: {e}"));
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let config = Arc::new(Config {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            expires_in,
            prefix: format!("tok{}", addr.port()),
            counter: AtomicU64::new(0),
        });
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (state, config) = (state.clone(), config.clone());
                            std::thread::spawn(move || serve(stream, &state, &config));
                        }
                        // Polled so that a drop stops the loop without a connection to wake it.
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Self { addr, state, stop, thread: Some(thread) }
    }

    /// The token endpoint's URL (`http://127.0.0.1:PORT/oauth/token`).
    pub fn url(&self) -> String {
        format!("http://{}/oauth/token", self.addr)
    }

    /// Every token request so far, in arrival order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).requests.clone()
    }

    /// Every token issued so far, in order.
    pub fn issued(&self) -> Vec<Issued> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).issued.clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Config {
    client_id: String,
    client_secret: String,
    expires_in: Duration,
    prefix: String,
    counter: AtomicU64,
}

fn serve(stream: TcpStream, state: &Mutex<State>, config: &Config) {
    // A client that vanishes mid-request is its own problem; the test judges by what was recorded.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length.min(64 * 1024)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let at = Instant::now();
    let form = parse_form(&String::from_utf8_lossy(&body));
    let field = |name: &str| form.get(name).map(String::as_str);
    let (status, reply) = if method != "POST" {
        (405, r#"{"error":"invalid_request","error_description":"POST a form"}"#.to_owned())
    } else if field("grant_type") != Some("client_credentials") {
        (400, r#"{"error":"unsupported_grant_type"}"#.to_owned())
    } else if field("client_id") != Some(&config.client_id) || field("client_secret") != Some(&config.client_secret) {
        (401, r#"{"error":"invalid_client","error_description":"unknown client or wrong secret"}"#.to_owned())
    } else {
        let n = config.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("{}-{n}", config.prefix);
        let scope = field("scope").unwrap_or_default().to_owned();
        let issued = Issued { token: token.clone(), at, expires: at + config.expires_in, scope };
        state.lock().unwrap_or_else(PoisonError::into_inner).issued.push(issued);
        let reply = serde_json::json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": config.expires_in.as_secs(),
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        });
        (200, reply.to_string())
    };
    state.lock().unwrap_or_else(PoisonError::into_inner).requests.push(TokenRequest { path, form, status, at });
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Method Not Allowed",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: \
         {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let mut stream = &stream;
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

/// Decodes an `application/x-www-form-urlencoded` body.
fn parse_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_percent_and_plus() {
        let form = parse_form("grant_type=client_credentials&client_secret=a%2Bb%3Ac&scope=catalog+extra");
        assert_eq!(form["client_secret"], "a+b:c");
        assert_eq!(form["scope"], "catalog extra");
    }
}
