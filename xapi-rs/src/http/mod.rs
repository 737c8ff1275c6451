//! The HTTP front: routes, envelopes, listeners (TCP, TLS, Unix) and what
//! bounds a client before it has logged in: the body limit (checked before
//! a byte of it is read), timeouts on a request's head and body, and a cap
//! on concurrent connections (an accept waits for a free slot, as the
//! reference's does). With `host.https_only` set, plain HTTP is refused to
//! all but loopback peers, as the reference's firewall rule does.

pub mod tls;

use crate::generated::errors::ErrorCode;
use crate::rpc::wire::{json_response, parse_json_call, parse_xml_call, xml_response};
use crate::rpc::{dispatch, Ctx};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Server {
    pub ctx: Arc<Ctx>,
    pub max_body: usize,
    pub request_timeout: Duration,
    /// Free connection slots: TCP (HTTP and HTTPS), and the Unix socket.
    tcp_slots: Arc<Semaphore>,
    unix_slots: Arc<Semaphore>,
}

/// Where a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Network,
    /// The local Unix socket: its callers are the local superuser.
    LocalSocket,
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, ctype: &'static str, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn cors(mut r: Resp) -> Resp {
    let h = r.headers_mut();
    h.insert("Access-Control-Allow-Origin", HeaderValue::from_static("*"));
    h.insert(
        "Access-Control-Allow-Methods",
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        "Access-Control-Allow-Headers",
        HeaderValue::from_static("Content-Type, Authorization"),
    );
    r
}

/// The reference's answer to a body over the limit: it raises
/// `Client_requested_size_over_limit` before reading the body, which its
/// HTTP server turns into a 500 and a closed connection.
fn too_large() -> Resp {
    let mut r = respond(
        StatusCode::INTERNAL_SERVER_ERROR,
        "text/html",
        "<html><body><h1>HTTP 500 internal server error</h1>An unexpected error occurred; \
         please wait a while and try again. If the problem persists, please contact your \
         support representative.<h1> Additional information </h1>\
         Http_svr.Client_requested_size_over_limit</body></html>"
            .into(),
    );
    r.headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A body that did not arrive within the request timeout (the reference's
/// 408 for a request it timed out on).
fn timed_out() -> Resp {
    let mut r = respond(
        StatusCode::REQUEST_TIMEOUT,
        "text/html",
        "<html><body><h1>HTTP 408 request timeout</h1>Timed out waiting for the request.\
         </body></html>"
            .into(),
    );
    r.headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn json_error(code: &str, msg: &str) -> String {
    serde_json::json!({"jsonrpc": "2.0", "error": {"code": 1, "message": code, "data": [msg]}, "id": null})
        .to_string()
}

impl Server {
    pub fn new(ctx: Arc<Ctx>, cfg: &crate::Config) -> Server {
        Server {
            ctx,
            max_body: cfg.max_body,
            request_timeout: cfg.request_timeout,
            tcp_slots: Arc::new(Semaphore::new(cfg.max_connections)),
            unix_slots: Arc::new(Semaphore::new(cfg.max_unix_connections)),
        }
    }

    /// `host.https_only` of this host.
    fn https_only(&self) -> bool {
        self.ctx
            .db
            .get("host", &self.ctx.host_ref)
            .and_then(|h| h.get("https_only").cloned())
            == Some(crate::model::value::V::B(true))
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Resp, Infallible> {
        let path = req.uri().path().to_string();
        let is_json = path == "/jsonrpc" || path.starts_with("/jsonrpc/");
        if req.method() == Method::OPTIONS {
            let mut r = cors(respond(StatusCode::OK, "text/plain", String::new()));
            r.headers_mut()
                .insert("Access-Control-Max-Age", HeaderValue::from_static("86400"));
            return Ok(r);
        }
        if path == "/cli" || path.starts_with("/cli/") {
            // Reached only when a /cli request follows another request on a
            // kept-alive connection: the CLI protocol needs the raw stream,
            // which `serve_conn` takes over for a connection's first request.
            return Ok(respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "/cli must be the first request of a connection\n".into(),
            ));
        }
        if req.method() != Method::POST {
            return Ok(respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".into(),
            ));
        }
        let too_big = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > self.max_body as u64);
        if too_big {
            tracing::warn!(
                "request body on {path} over {} bytes refused",
                self.max_body
            );
            return Ok(too_large());
        }
        // A chunked body is counted as it arrives.
        let collect = Limited::new(req.into_body(), self.max_body).collect();
        let body = match tokio::time::timeout(self.request_timeout, collect).await {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    tracing::warn!(
                        "request body on {path} over {} bytes refused",
                        self.max_body
                    );
                    return Ok(too_large());
                }
                tracing::debug!("request body on {path}: {e}");
                return Ok(respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "bad request body\n".into(),
                ));
            }
            Err(_) => {
                tracing::warn!(
                    "request body on {path} not received within {:?}",
                    self.request_timeout
                );
                return Ok(timed_out());
            }
        };
        if is_json {
            let out = match parse_json_call(&body) {
                Ok(jc) => {
                    tracing::debug!("jsonrpc {}", jc.call.method);
                    let outcome = dispatch(&self.ctx, jc.call).await;
                    json_response(&outcome, jc.v2, &jc.id)
                }
                Err(e) => json_error(ErrorCode::JsonrpcUnmarshalFailure.code(), &e.to_string()),
            };
            Ok(cors(respond(StatusCode::OK, "application/json", out)))
        } else {
            let out = match parse_xml_call(&body) {
                Ok(call) => {
                    tracing::debug!("xmlrpc {}", call.method);
                    let outcome = dispatch(&self.ctx, call).await;
                    xml_response(&outcome)
                }
                Err(e) => xml_response(&Err(vec![
                    ErrorCode::XmlrpcUnmarshalFailure.code().into(),
                    "methodCall".into(),
                    e.to_string(),
                ])),
            };
            Ok(respond(StatusCode::OK, "text/xml", out))
        }
    }

    /// Serve one accepted connection: the thin CLI protocol if its first
    /// request is `POST /cli` (the reference answers it with no HTTP
    /// response at all), HTTP/1.1 otherwise.
    /// `permit` is the connection's slot, held until it closes.
    pub fn serve_conn<S>(self: &Arc<Self>, stream: S, origin: Origin, permit: OwnedSemaphorePermit)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let me = self.clone();
        let conn = async move {
            let _permit = permit;
            me.serve_conn_inner(stream).await
        };
        tokio::spawn(async move {
            match origin {
                Origin::LocalSocket => crate::rpc::auth::as_local_root(conn).await,
                Origin::Network => conn.await,
            }
        });
    }

    async fn serve_conn_inner<S>(self: Arc<Self>, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let me = self;
        let timeout = me.request_timeout;
        {
            let mut stream = stream;
            let head = match tokio::time::timeout(timeout, crate::cli::sniff(&mut stream)).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    tracing::debug!("connection: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("connection: no request within {timeout:?}");
                    return;
                }
            };
            let stream = match head {
                crate::cli::Sniffed::Cli(req) => {
                    crate::cli::serve(me.ctx.clone(), stream, req).await;
                    return;
                }
                crate::cli::Sniffed::Other(buffered) => Rewind::new(buffered, stream),
            };
            let svc = hyper::service::service_fn(move |req| me.clone().handle(req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(timeout)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("connection: {e}");
            }
        }
    }

    /// A free TCP slot; waits while all are taken.
    async fn tcp_slot(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(p) = self.tcp_slots.clone().acquire_owned().await {
                return p;
            }
        }
    }

    /// Plain HTTP.
    pub async fn run_tcp(self: Arc<Self>, l: tokio::net::TcpListener) {
        loop {
            let permit = self.tcp_slot().await;
            match l.accept().await {
                Ok((s, peer)) => {
                    // The reference closes port 80 in its firewall, which
                    // still lets loopback through.
                    if !peer.ip().is_loopback() && self.https_only() {
                        tracing::debug!("plain HTTP from {peer} refused: https_only");
                        drop(s);
                        continue;
                    }
                    let _ = s.set_nodelay(true);
                    self.serve_conn(s, Origin::Network, permit)
                }
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    pub async fn run_tls(
        self: Arc<Self>,
        l: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
    ) {
        loop {
            let permit = self.tcp_slot().await;
            match l.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    let acc = acceptor.clone();
                    let me = self.clone();
                    tokio::spawn(async move {
                        let limit = me.request_timeout.min(Duration::from_secs(30));
                        match tokio::time::timeout(limit, acc.accept(s)).await {
                            Ok(Ok(tls)) => me.serve_conn(tls, Origin::Network, permit),
                            Ok(Err(e)) => tracing::debug!("TLS handshake: {e}"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    pub async fn run_unix(self: Arc<Self>, l: tokio::net::UnixListener) {
        loop {
            let permit = loop {
                if let Ok(p) = self.unix_slots.clone().acquire_owned().await {
                    break p;
                }
            };
            match l.accept().await {
                Ok((s, _)) => self.serve_conn(s, Origin::LocalSocket, permit),
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// A stream that first yields bytes already read from it.
pub struct Rewind<S> {
    pre: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(pre: Vec<u8>, inner: S) -> Self {
        Rewind { pre, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.pos < self.pre.len() {
            let n = (self.pre.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.pre[start..start + n]);
            self.pos += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
