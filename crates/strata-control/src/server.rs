//! HTTPS front door: a TLS 1.3 accept loop feeding an axum router whose only non-public route
//! is the ARM dispatcher. There is no plaintext listener.

use crate::app::App;
use crate::dispatch::{self, Incoming, Reply};
use crate::token::{self, SeenAssertions};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use strata_types::resource::MAX_BODY_BYTES;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Clone)]
pub struct Shared {
    pub app: Arc<App>,
    pub seen: Arc<SeenAssertions>,
}

#[derive(Clone, Copy)]
struct Peer(SocketAddr);

/// The leaf certificate a client presented (chained to the host CA by rustls).
#[derive(Clone)]
struct PeerCert(Option<Arc<Vec<u8>>>);

fn json_response(status: u16, body: &Value, request_id: &str) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-ms-request-id", v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn reply_response(r: Reply, request_id: &str) -> Response {
    let mut resp = match &r.body {
        Some(b) => json_response(r.status, b, request_id),
        None => {
            let mut resp = StatusCode::from_u16(r.status)
                .unwrap_or(StatusCode::OK)
                .into_response();
            if let Ok(v) = HeaderValue::from_str(request_id) {
                resp.headers_mut().insert("x-ms-request-id", v);
            }
            resp
        }
    };
    if let Some(etag) = r.etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    if let Some(s) = r.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    if r.status == 401 {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn read_body(body: Body) -> Result<Bytes, Response> {
    read_body_limited(body, MAX_BODY_BYTES).await
}

/// Agent evidence carries a whole TCG event log (base64): allow more than an ARM body.
const AGENT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How far past its limit a body is still read (and dropped) before the refusal is sent, so a
/// client that is still writing a moderately oversized body reads the 400 instead of a reset
/// connection. Anything larger is cut off at this point.
const BODY_DRAIN_BYTES: usize = 1024 * 1024;

async fn read_body_limited(body: Body, limit: usize) -> Result<Bytes, Response> {
    let too_large = || {
        let e = strata_types::ApiError::bad_request(
            "RequestBodyTooLarge",
            format!("the request body is larger than {limit} bytes"),
        );
        json_response(
            400,
            &serde_json::to_value(e.body()).unwrap_or(Value::Null),
            &new_request_id(),
        )
    };
    match axum::body::to_bytes(body, limit.saturating_add(BODY_DRAIN_BYTES)).await {
        Ok(bytes) if bytes.len() <= limit => Ok(bytes),
        _ => Err(too_large()),
    }
}

fn store_is_embedded(s: &Shared) -> bool {
    s.app.store.backend() == "sqlite"
}

async fn arm(State(s): State<Shared>, req: Request<Body>) -> Response {
    let request_id = new_request_id();
    let is_get = req.method() == axum::http::Method::GET;
    let peer = req
        .extensions()
        .get::<Peer>()
        .map(|p| p.0.ip().to_string())
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    if dispatch::is_upload(parts.method.as_str(), parts.uri.path()) {
        return upload(s, parts, body, peer, request_id).await;
    }
    if crate::handlers::snapshots::is_export(parts.method.as_str(), parts.uri.path()) {
        return snapshot_export(s, parts, peer, request_id).await;
    }
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let run = move |s: Shared, rid: String| {
        let incoming = Incoming {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            authorization: header_str(&parts.headers, header::AUTHORIZATION),
            if_match: header_str(&parts.headers, header::IF_MATCH),
            if_none_match: header_str(&parts.headers, header::IF_NONE_MATCH),
            client_ip: peer,
            body: &bytes,
        };
        dispatch::handle(&s.app, incoming, &rid)
    };
    // Reads on the embedded store take microseconds: run them inline rather than paying a
    // thread hand-off. Writes (fsync, argon2) and every PostgreSQL call go to the blocking pool.
    let inline = is_get && store_is_embedded(&s);
    let rid = request_id.clone();
    let reply = if inline {
        run(s, rid)
    } else {
        match tokio::task::spawn_blocking(move || run(s, rid)).await {
            Ok(r) => r,
            Err(_) => Reply::error(&strata_types::ApiError::internal()),
        }
    };
    reply_response(reply, &request_id)
}

/// `POST …/Strata.Compute/images/NAME/upload`: the image's bytes, streamed. The request is
/// admitted (authenticated, authorized, the declared length checked) before a byte of the body
/// is read; the body then goes to disk through a bounded channel on a blocking thread that
/// hashes it; then the image is validated and converted (`handlers::images`).
async fn upload(
    s: Shared,
    parts: axum::http::request::Parts,
    body: Body,
    peer: String,
    request_id: String,
) -> Response {
    let content_length = header_str(&parts.headers, header::CONTENT_LENGTH)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|_| !parts.headers.contains_key(header::TRANSFER_ENCODING));
    let expects_continue = expects_continue(&parts.headers);
    let head = {
        let (s, parts, peer, rid) = (s.clone(), parts.clone(), peer.clone(), request_id.clone());
        tokio::task::spawn_blocking(move || {
            let incoming = Incoming {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query(),
                authorization: header_str(&parts.headers, header::AUTHORIZATION),
                if_match: header_str(&parts.headers, header::IF_MATCH),
                if_none_match: header_str(&parts.headers, header::IF_NONE_MATCH),
                client_ip: peer,
                body: &[],
            };
            crate::handlers::images::begin_upload(&s.app, &incoming, &rid, content_length)
        })
        .await
    };
    let (ticket, body) = match admitted(head, body, expects_continue, &request_id).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let received = receive_body(body, ticket.path.clone(), ticket.length).await;
    let app = s.app.clone();
    let reply = tokio::task::spawn_blocking(move || {
        crate::handlers::images::finish_upload(&app, ticket, received)
    })
    .await
    .unwrap_or_else(|_| Reply::error(&strata_types::ApiError::internal()));
    reply_response(reply, &request_id)
}

/// Whether the client waits for `100 Continue` before it sends the body.
fn expects_continue(headers: &axum::http::HeaderMap) -> bool {
    header_str(headers, header::EXPECT).is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// An upload's admission (run on a blocking thread): its ticket and the body to receive, or
/// the response to send. A refused client that asked `Expect: 100-continue` has sent nothing
/// yet and is answered at once (reading the body would invite it to send); from others a
/// little is read (and dropped) first, so a client still sending a small refused upload reads
/// the refusal rather than a reset, while a large one is cut off.
async fn admitted<T>(
    begun: Result<Result<T, Box<Reply>>, tokio::task::JoinError>,
    body: Body,
    expects_continue: bool,
    request_id: &str,
) -> Result<(T, Body), Response> {
    match begun {
        Ok(Ok(ticket)) => Ok((ticket, body)),
        Ok(Err(reply)) => {
            if !expects_continue {
                let _ = axum::body::to_bytes(body, BODY_DRAIN_BYTES).await;
            }
            Err(reply_response(*reply, request_id))
        }
        Err(_) => Err(reply_response(
            Reply::error(&strata_types::ApiError::internal()),
            request_id,
        )),
    }
}

/// Streams a request body into a new 0600 file at `path` on a blocking thread (through a
/// bounded channel, hashing it), refusing more than `limit` bytes. Returns (bytes, SHA-256).
async fn receive_body(
    body: Body,
    path: std::path::PathBuf,
    limit: u64,
) -> Result<(u64, String), strata_types::ApiError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let writer =
        tokio::task::spawn_blocking(move || crate::compute::images::receive(&path, rx, limit));
    let mut body = std::pin::pin!(body);
    let mut broken = None;
    loop {
        let frame =
            std::future::poll_fn(|cx| axum::body::HttpBody::poll_frame(body.as_mut(), cx)).await;
        match frame {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data()
                    && tx.send(data).await.is_err()
                {
                    // The writer stopped (too long, disk error): its error says why.
                    break;
                }
            }
            Some(Err(e)) => {
                broken = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    match (writer.await, broken) {
        (_, Some(why)) => Err(strata_types::ApiError::bad_request(
            "UploadInterrupted",
            format!("the upload broke off ({why}); upload again"),
        )),
        (Ok(Ok(r)), None) => Ok(r),
        (Ok(Err(e)), None) => Err(strata_types::ApiError::bad_request(
            "UploadFailed",
            format!("the upload could not be stored: {e}"),
        )),
        (Err(_), None) => Err(strata_types::ApiError::internal()),
    }
}

/// `GET …/Strata.Compute/snapshots/NAME/export`: the snapshot's encrypted bytes, streamed
/// (admitted and audited by `handlers::snapshots::open_export`).
async fn snapshot_export(
    s: Shared,
    parts: axum::http::request::Parts,
    peer: String,
    request_id: String,
) -> Response {
    let rid = request_id.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let incoming = Incoming {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            authorization: header_str(&parts.headers, header::AUTHORIZATION),
            if_match: None,
            if_none_match: None,
            client_ip: peer,
            body: &[],
        };
        crate::handlers::snapshots::open_export(&s.app, &incoming, &rid)
    })
    .await;
    match opened {
        Ok(Ok((file, len, name))) => {
            let mut resp = stream_file(file, len, &request_id);
            let disposition = format!("attachment; filename=\"{name}.qcow2\"");
            if let Ok(v) = HeaderValue::from_str(&disposition) {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Ok(Err(reply)) => reply_response(*reply, &request_id),
        Err(_) => reply_response(
            Reply::error(&strata_types::ApiError::internal()),
            &request_id,
        ),
    }
}

/// An agent's streamed upload, owned: what its admission and its finish both see.
struct UploadCall {
    method: String,
    path: String,
    cert: Option<Arc<Vec<u8>>>,
    peer: String,
    request_id: String,
}

impl UploadCall {
    fn agent_call(&self) -> crate::fabric::door::AgentCall<'_> {
        crate::fabric::door::AgentCall {
            method: &self.method,
            path: &self.path,
            body: &[],
            peer_certificate: self.cert.as_deref().map(Vec::as_slice),
            client_ip: self.peer.clone(),
            request_id: &self.request_id,
        }
    }
}

/// `PUT /fabric/v1/hosts/{host}/snapshots/{token}`: a snapshot's encrypted bytes from the host
/// that took it, admitted (`fabric::door::snapshot_begin`) before the body is read.
async fn snapshot_upload(
    s: Shared,
    parts: axum::http::request::Parts,
    body: Body,
    cert: Option<Arc<Vec<u8>>>,
    peer: String,
    request_id: String,
) -> Response {
    let call = Arc::new(UploadCall {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        cert,
        peer,
        request_id: request_id.clone(),
    });
    let expects_continue = expects_continue(&parts.headers);
    let begun = {
        let (s, call) = (s.clone(), call.clone());
        tokio::task::spawn_blocking(move || {
            crate::fabric::door::snapshot_begin(&s.app, call.agent_call())
        })
        .await
    };
    let (ticket, body) = match admitted(begun, body, expects_continue, &request_id).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let received = receive_body(body, ticket.path.clone(), ticket.limit).await;
    let reply = tokio::task::spawn_blocking(move || {
        crate::fabric::door::snapshot_finish(&s.app, call.agent_call(), &ticket, received)
    })
    .await
    .unwrap_or_else(|_| Reply::error(&strata_types::ApiError::internal()));
    reply_response(reply, &request_id)
}

async fn token_route(State(s): State<Shared>, req: Request<Body>) -> Response {
    let request_id = new_request_id();
    let peer = req
        .extensions()
        .get::<Peer>()
        .map(|p| p.0.ip().to_string())
        .unwrap_or_default();
    let bytes = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let rid = request_id.clone();
    let result = tokio::task::spawn_blocking(move || {
        token::token_endpoint(&s.app, &s.seen, &bytes, &peer, &rid)
    })
    .await;
    match result {
        Ok((status, body)) => json_response(status, &body, &request_id),
        Err(_) => json_response(
            500,
            &serde_json::json!({"error": "server_error"}),
            &request_id,
        ),
    }
}

/// Host agents: a separate door with its own authentication (join token, TPM credential
/// activation, AK-signed evidence, host certificate); see `fabric::door`.
async fn agent(State(s): State<Shared>, req: Request<Body>) -> Response {
    let request_id = new_request_id();
    let peer = req
        .extensions()
        .get::<Peer>()
        .map(|p| p.0.ip().to_string())
        .unwrap_or_default();
    let cert = req.extensions().get::<PeerCert>().and_then(|c| c.0.clone());
    let (parts, body) = req.into_parts();
    if parts.method == axum::http::Method::GET
        && crate::fabric::door::is_image_fetch(parts.uri.path())
    {
        return image_fetch(s, parts, cert, peer, request_id).await;
    }
    if crate::fabric::door::is_snapshot_upload(parts.method.as_str(), parts.uri.path()) {
        return snapshot_upload(s, parts, body, cert, peer, request_id).await;
    }
    let bytes = match read_body_limited(body, AGENT_MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let rid = request_id.clone();
    let reply = tokio::task::spawn_blocking(move || {
        crate::fabric::door::handle(
            &s.app,
            crate::fabric::door::AgentCall {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                body: &bytes,
                peer_certificate: cert.as_deref().map(Vec::as_slice),
                client_ip: peer,
                request_id: &rid,
            },
        )
    })
    .await
    .unwrap_or_else(|_| Reply::error(&strata_types::ApiError::internal()));
    reply_response(reply, &request_id)
}

/// `GET /fabric/v1/hosts/{host}/images/{sha256}`: an image's bytes for a host (the door decides
/// whether this host may have them), streamed from the file on a blocking thread.
async fn image_fetch(
    s: Shared,
    parts: axum::http::request::Parts,
    cert: Option<Arc<Vec<u8>>>,
    peer: String,
    request_id: String,
) -> Response {
    let rid = request_id.clone();
    let opened = tokio::task::spawn_blocking(move || {
        crate::fabric::door::image_fetch(
            &s.app,
            crate::fabric::door::AgentCall {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                body: &[],
                peer_certificate: cert.as_deref().map(Vec::as_slice),
                client_ip: peer,
                request_id: &rid,
            },
        )
    })
    .await;
    let (file, len) = match opened {
        Ok(Ok(f)) => f,
        Ok(Err(reply)) => return reply_response(*reply, &request_id),
        Err(_) => {
            return reply_response(
                Reply::error(&strata_types::ApiError::internal()),
                &request_id,
            );
        }
    };
    stream_file(file, len, &request_id)
}

/// A 200 response streaming `len` bytes of `file` (read on a blocking thread).
fn stream_file(file: std::fs::File, len: u64, request_id: &str) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut file = file;
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let mut resp = Response::new(Body::new(ChannelBody(rx)));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-ms-request-id", v);
    }
    resp
}

/// A response body fed chunk by chunk from a channel (a file read on a blocking thread).
struct ChannelBody(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

impl axum::body::HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(http_body::Frame::data)))
    }
}

async fn discovery(State(s): State<Shared>) -> Response {
    json_response(200, &token::discovery(&s.app), &new_request_id())
}

async fn jwks(State(s): State<Shared>) -> Response {
    let keys = serde_json::to_value(&s.app.tokens().jwks).unwrap_or(Value::Null);
    json_response(200, &keys, &new_request_id())
}

async fn openapi() -> Response {
    json_response(200, &crate::openapi::document(), &new_request_id())
}

async fn health() -> Response {
    json_response(
        200,
        &serde_json::json!({ "status": "ok" }),
        &new_request_id(),
    )
}

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/oauth2/token", post(token_route))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(health))
        .route("/fabric/v1/{*rest}", axum::routing::any(agent))
        .fallback(arm)
        .with_state(shared)
}

/// Accepts TLS connections until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %addr, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let cert = PeerCert(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| Arc::new(c.to_vec())),
            );
            let service =
                hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(Peer(addr));
                    req.extensions_mut().insert(cert.clone());
                    let mut router = router.clone();
                    async move { tower::Service::call(&mut router, req.map(Body::new)).await }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(15))
                .serve_connection(TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => { if let Err(e) = r { tracing::debug!(error = %e, "connection ended with error"); } }
                _ = stop.changed() => { conn.as_mut().graceful_shutdown(); let _ = conn.await; }
            }
        });
    }
}
