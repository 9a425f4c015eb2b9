//! The HTTP management API under `/api`, shaped as RabbitMQ's management plugin (same paths,
//! JSON field names, status codes and error bodies), so rabbitmqadmin, monitoring tools and
//! `warrenctl` work against it.
//!
//! It owns no broker state: every request takes the broker lock once, briefly, to snapshot what
//! it lists or to run an operation through the broker's own API (`Broker::admin_session` for
//! AMQP-shaped operations, so permissions, checks and journaling are the AMQP path's), and
//! renders JSON after releasing it. The server provides the broker through the `Node` trait.

mod definitions;
mod render;
mod routes;
pub mod table;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use broker::{Broker, Effects};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Largest request body accepted (RabbitMQ's default `management.http.max_body_size` is 20 MB,
/// sized for definitions files).
pub const BODY_BYTES_MAX: usize = 20 * 1024 * 1024;
/// Largest page a paginated listing returns (RabbitMQ's limit).
pub const PAGE_SIZE_MAX: usize = 500;
/// Most HTTP connections open at once; more are closed at accept.
pub const HTTP_CONNECTIONS_MAX: usize = 1024;
/// Time a client has to send a request's headers (idle keep-alive connections end too).
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The header a local `warrenctl` authenticates with: the secret from the node's control file.
pub const CONTROL_SECRET_HEADER: &str = "x-warren-control-secret";

/// What the management API needs from the process hosting it.
pub trait Node: Send + Sync + 'static {
    /// Runs `f` under the broker lock and carries out the effects it queued (closing
    /// connections, deliveries) before releasing it.
    fn with_broker(&self, f: &mut dyn FnMut(&mut Broker, &mut Effects));
    /// Listening sockets as (protocol, address): "amqp" and "http".
    fn listeners(&self) -> Vec<(String, SocketAddr)>;
    /// Resource alarms in effect, by RabbitMQ's names ("disk", "memory").
    fn alarms(&self) -> Vec<String>;
    /// This node's name (RabbitMQ's `rabbit@host`).
    fn node_name(&self) -> String;
    /// The default user and password `reset` recreates.
    fn default_user(&self) -> (String, String);
    /// The secret of the control file; requests carrying it act as an administrator.
    fn control_secret(&self) -> String;
    /// False after `stop_app`: AMQP clients are refused until `start_app`.
    fn app_running(&self) -> bool;
    fn set_app_running(&self, running: bool);
    /// Stops the process (`warrenctl stop`).
    fn stop(&self);
    /// When the node started, milliseconds since the Unix epoch.
    fn started_at_ms(&self) -> u64;
    /// Changes a resource alarm threshold at run time (`vm_memory_high_watermark`,
    /// `disk_free_limit`; see the server's `alarms::Limits::set` for the body).
    fn set_limit(&self, which: &str, body: &Value) -> Result<(), String> {
        let _ = body;
        Err(format!("cannot set {which} on this node"))
    }
    /// Resource use and limits for `/api/nodes`, with RabbitMQ's field names (`mem_used`,
    /// `mem_limit`, `disk_free`, `disk_free_limit`, `fd_used`, `fd_total`, ...).
    fn resources(&self) -> serde_json::Map<String, Value> {
        serde_json::Map::new()
    }
}

/// Runs `f` under the broker lock (see `Node::with_broker`) and returns its result.
pub fn with<R>(node: &dyn Node, f: impl FnOnce(&mut Broker, &mut Effects) -> R) -> R {
    let mut f = Some(f);
    let mut out = None;
    node.with_broker(&mut |b, fx| {
        if let Some(f) = f.take() {
            out = Some(f(b, fx));
        }
    });
    out.expect("Node::with_broker runs its closure exactly once")
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Serves the API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    node: Arc<dyn Node>,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    if open.load(Ordering::Relaxed) >= HTTP_CONNECTIONS_MAX {
                        tracing::warn!(%peer, "http connection refused: {HTTP_CONNECTIONS_MAX} open");
                        continue;
                    }
                    open.fetch_add(1, Ordering::Relaxed);
                    let open = open.clone();
                    let node = node.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        // HTTPS: the TLS handshake within the header timeout, then the same API.
                        let stream: Box<dyn Io> = match tls {
                            None => Box::new(stream),
                            Some(acceptor) => {
                                match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(s)) => Box::new(s),
                                    Ok(Err(e)) => {
                                        tracing::debug!(%peer, "https handshake failed: {e}");
                                        open.fetch_sub(1, Ordering::Relaxed);
                                        return;
                                    }
                                    Err(_) => {
                                        tracing::debug!(%peer, "https handshake timed out");
                                        open.fetch_sub(1, Ordering::Relaxed);
                                        return;
                                    }
                                }
                            }
                        };
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let service = hyper::service::service_fn(move |req| {
                            let node = node.clone();
                            async move { Ok::<_, Infallible>(handle(node, peer, req).await) }
                        });
                        let served = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(HEADER_READ_TIMEOUT)
                            .serve_connection(io, service)
                            .await;
                        if let Err(e) = served {
                            tracing::debug!(%peer, "http connection ended: {e}");
                        }
                        open.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                Err(e) => {
                    tracing::warn!("http accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// A connection of the API: plain TCP, or TLS on `--management-tls-port`.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// An API error: status, RabbitMQ's `error` word and a reason.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub reason: String,
}

impl ApiError {
    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, error: "bad_request", reason: reason.into() }
    }
    pub fn not_found() -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, error: "Object Not Found", reason: "Not Found".into() }
    }
    /// RabbitMQ compat: insufficient tags or vhost access answer 401 not_authorised too.
    pub fn not_authorised(reason: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::UNAUTHORIZED, error: "not_authorised", reason: reason.into() }
    }
    pub fn method_not_allowed() -> ApiError {
        ApiError { status: StatusCode::METHOD_NOT_ALLOWED, error: "method_not_allowed", reason: "".into() }
    }
    /// An AMQP error from an operation, mapped as RabbitMQ maps channel errors.
    pub fn amqp(e: broker::AmqpError) -> ApiError {
        use amqp_codec::reply::*;
        let status = match e.code {
            NOT_FOUND => StatusCode::NOT_FOUND,
            ACCESS_REFUSED | NOT_ALLOWED => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        };
        let error = if status == StatusCode::UNAUTHORIZED { "not_authorised" } else { "bad_request" };
        ApiError { status, error, reason: e.reply_text() }
    }
}

pub type ApiResult = Result<Response<Full<Bytes>>, ApiError>;

/// Who is calling: a user of the database, or the local control client (full access).
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub tags: Vec<String>,
    /// Authenticated with the control secret: an administrator whose AMQP-shaped operations
    /// are not subject to vhost permissions.
    pub internal: bool,
}

impl Identity {
    pub fn has(&self, tag: &str) -> bool {
        self.internal || self.tags.iter().any(|t| t == tag)
    }
    pub fn is_admin(&self) -> bool {
        self.has("administrator")
    }
    /// Sees every vhost and every connection (monitoring or administrator).
    pub fn is_monitor(&self) -> bool {
        self.is_admin() || self.has("monitoring")
    }
    pub fn is_policymaker(&self) -> bool {
        self.is_admin() || self.has("policymaker")
    }
    pub fn is_management(&self) -> bool {
        self.is_monitor() || self.is_policymaker() || self.has("management")
    }
    /// The user name AMQP-shaped operations run as ("" = trusted internal caller).
    pub fn session_user(&self) -> &str {
        if self.internal {
            ""
        } else {
            &self.name
        }
    }
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not administrator user"))
        }
    }
    pub fn require_monitor(&self) -> Result<(), ApiError> {
        if self.is_monitor() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not monitor user"))
        }
    }
    pub fn require_policymaker(&self) -> Result<(), ApiError> {
        if self.is_policymaker() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not policymaker user"))
        }
    }
}

/// A parsed request.
pub struct Req {
    pub method: hyper::Method,
    /// Path segments after `/api`, percent-decoded.
    pub segs: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Bytes,
    pub identity: Identity,
    pub reason_header: Option<String>,
}

impl Req {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn flag(&self, key: &str) -> bool {
        self.param(key) == Some("true")
    }
    /// The body as a JSON object (an empty body is `{}`).
    pub fn json(&self) -> Result<serde_json::Map<String, Value>, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Map::new());
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(ApiError::bad_request("not_json_object")),
            Err(e) => Err(ApiError::bad_request(format!("failed_to_parse_json: {e}"))),
        }
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

async fn handle(node: Arc<dyn Node>, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, BODY_BYTES_MAX).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error_response(&ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                error: "bad_request",
                reason: format!("request body larger than {BODY_BYTES_MAX} bytes"),
            })
        }
    };
    let path = parts.uri.path();
    let Some(rest) = path.strip_prefix("/api") else {
        // The web console's static files (crates/console), served to anyone: they hold no data,
        // and the page asks for credentials before it calls /api.
        return match console::asset(path) {
            Some((content_type, bytes))
                if parts.method == hyper::Method::GET || parts.method == hyper::Method::HEAD =>
            {
                let mut r = Response::new(Full::new(Bytes::from_static(bytes)));
                let h = r.headers_mut();
                h.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
                for (name, value) in console::HEADERS {
                    h.insert(*name, hyper::header::HeaderValue::from_static(value));
                }
                r
            }
            _ => error_response(&ApiError::not_found()),
        };
    };
    let segs: Vec<String> = rest.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let query = parts
        .uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (percent_decode(&k.replace('+', " ")), percent_decode(&v.replace('+', " ")))
                })
                .collect()
        })
        .unwrap_or_default();
    let identity = match authenticate(&*node, peer, &parts.headers) {
        Ok(i) => i,
        Err(e) => return error_response(&e),
    };
    if !identity.is_management() {
        return error_response(&ApiError::not_authorised("Not management user"));
    }
    let reason_header = parts.headers.get("x-reason").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let r = Req { method: parts.method, segs, query, body, identity, reason_header };
    match routes::route(&*node, &r) {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}

fn authenticate(node: &dyn Node, peer: SocketAddr, headers: &hyper::HeaderMap) -> Result<Identity, ApiError> {
    if let Some(secret) = headers.get(CONTROL_SECRET_HEADER).and_then(|v| v.to_str().ok()) {
        if broker::auth::constant_time_eq(secret.as_bytes(), node.control_secret().as_bytes()) {
            return Ok(Identity { name: "warrenctl".into(), tags: vec!["administrator".into()], internal: true });
        }
        return Err(ApiError::not_authorised("Login failed"));
    }
    let Some(auth) = headers.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::not_authorised("Not_Authorized"));
    };
    let creds = auth
        .strip_prefix("Basic ")
        .and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b.trim()).ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    let Some((user, pass)) = creds.as_deref().and_then(|c| c.split_once(':')) else {
        return Err(ApiError::not_authorised("Login failed"));
    };
    let loopback = peer.ip().to_canonical().is_loopback();
    let (default_user, _) = node.default_user();
    let found = with(node, |b, _| {
        b.authenticate(user, pass, loopback, &default_user).map(|u| (u.name.clone(), u.tags.clone()))
    });
    match found {
        Ok((name, tags)) => Ok(Identity { name, tags, internal: false }),
        Err(broker::auth::LoginError::LoopbackOnly) => {
            Err(ApiError::not_authorised("User can only log in via localhost"))
        }
        Err(broker::auth::LoginError::Refused) => Err(ApiError::not_authorised("Login failed")),
    }
}

pub fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    let mut r = json_response(e.status, &json!({"error": e.error, "reason": e.reason}));
    if e.status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
        );
    }
    r
}

pub fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

pub fn ok_json(v: Value) -> ApiResult {
    Ok(json_response(StatusCode::OK, &v))
}

pub fn no_content() -> ApiResult {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

pub fn created() -> ApiResult {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::CREATED;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(tags: &[&str]) -> Identity {
        Identity { name: "u".into(), tags: tags.iter().map(|t| t.to_string()).collect(), internal: false }
    }

    /// Proves the tag hierarchy: administrator includes monitoring and policymaker, which
    /// include management; no tag grants nothing.
    #[test]
    fn tag_hierarchy() {
        assert!(!who(&[]).is_management());
        assert!(who(&["management"]).is_management() && !who(&["management"]).is_monitor());
        assert!(who(&["policymaker"]).is_policymaker() && !who(&["policymaker"]).is_monitor());
        assert!(who(&["monitoring"]).is_monitor() && !who(&["monitoring"]).is_admin());
        let admin = who(&["administrator"]);
        assert!(admin.is_admin() && admin.is_monitor() && admin.is_policymaker() && admin.is_management());
        let internal = Identity { name: "warrenctl".into(), tags: vec![], internal: true };
        assert!(internal.is_admin() && internal.session_user().is_empty());
    }

    /// Proves AMQP errors map to RabbitMQ's API statuses.
    #[test]
    fn amqp_errors_map_to_statuses() {
        let e = ApiError::amqp(broker::AmqpError::not_found("no queue 'q' in vhost '/'"));
        assert_eq!((e.status, e.reason.as_str()), (StatusCode::NOT_FOUND, "NOT_FOUND - no queue 'q' in vhost '/'"));
        assert_eq!(ApiError::amqp(broker::AmqpError::access_refused("x")).status, StatusCode::UNAUTHORIZED);
        assert_eq!(ApiError::amqp(broker::AmqpError::precondition_failed("x")).status, StatusCode::BAD_REQUEST);
    }
}
