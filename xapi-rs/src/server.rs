//! The HTTP front: routes, envelopes, body limits, listeners (TCP, TLS, Unix).

use crate::api::{dispatch, Ctx};
use crate::generated::errors::ErrorCode;
use crate::wire::{json_response, parse_json_call, parse_xml_call, xml_response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

pub struct Server {
    pub ctx: Arc<Ctx>,
    pub max_body: usize,
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

fn json_error(code: &str, msg: &str) -> String {
    serde_json::json!({"jsonrpc": "2.0", "error": {"code": 1, "message": code, "data": [msg]}, "id": null})
        .to_string()
}

impl Server {
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
        let body = if too_big {
            None
        } else {
            Limited::new(req.into_body(), self.max_body)
                .collect()
                .await
                .ok()
                .map(|c| c.to_bytes())
        };
        let Some(body) = body else {
            tracing::warn!(
                "request body on {path} over {} bytes rejected",
                self.max_body
            );
            let r = if is_json {
                cors(respond(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "application/json",
                    json_error(ErrorCode::RequestTooLarge.code(), "body too large"),
                ))
            } else {
                respond(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/xml",
                    xml_response(&Err(vec![ErrorCode::RequestTooLarge.code().into()])),
                )
            };
            return Ok(r);
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
    pub fn serve_conn<S>(self: &Arc<Self>, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let me = self.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let head = match tokio::time::timeout(
                std::time::Duration::from_secs(60),
                crate::cli::sniff(&mut stream),
            )
            .await
            {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    tracing::debug!("connection: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("connection: no request within 60 s");
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
                .header_read_timeout(std::time::Duration::from_secs(60))
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("connection: {e}");
            }
        });
    }

    pub async fn run_tcp(self: Arc<Self>, l: tokio::net::TcpListener) {
        loop {
            match l.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    self.serve_conn(s)
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
            match l.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    let acc = acceptor.clone();
                    let me = self.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(
                            std::time::Duration::from_secs(30),
                            acc.accept(s),
                        )
                        .await
                        {
                            Ok(Ok(tls)) => me.serve_conn(tls),
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
            match l.accept().await {
                Ok((s, _)) => self.serve_conn(s),
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
