//! The gRPC boundary of every request, before any service sees it:
//!
//! - A request whose `content-type` is not gRPC (`application/grpc`,
//!   `application/grpc+proto`, either with parameters) is answered HTTP 415
//!   Unsupported Media Type, as the gRPC spec asks, and served no further.
//! - Oversize messages: tonic rejects a message over a service's size limit
//!   with OUT_OF_RANGE before reading its body. keyhaven promises
//!   RESOURCE_EXHAUSTED for every limit, so exactly that status is
//!   rewritten, saying which limit applies to the service called.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http;

/// The size limit of requests to every service but `Credentials`, and of
/// their responses where those are bounded: Status, health checks and
/// reflection requests are a few hundred bytes.
pub const SMALL_MESSAGE: usize = 64 * 1024;

/// The `Credentials` service, whose limit follows `max_secret_bytes`.
const CREDENTIALS: &str = "keyhaven.v1.Credentials";

/// A tower layer applying the gRPC boundary rules (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct GrpcBoundaryLayer {
    credentials_limit: usize,
}

impl GrpcBoundaryLayer {
    /// `credentials_limit`: the decoding limit of the `Credentials` service.
    pub fn new(credentials_limit: usize) -> Self {
        Self { credentials_limit }
    }
}

impl<S> tower::Layer<S> for GrpcBoundaryLayer {
    type Service = GrpcBoundary<S>;

    fn layer(&self, inner: S) -> GrpcBoundary<S> {
        GrpcBoundary {
            inner,
            credentials_limit: self.credentials_limit,
        }
    }
}

/// See [`GrpcBoundaryLayer`].
#[derive(Debug, Clone)]
pub struct GrpcBoundary<S> {
    inner: S,
    credentials_limit: usize,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcBoundary<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoundaryFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if !is_grpc(request.headers()) {
            tracing::debug!(
                path = request.uri().path(),
                "refused a request that is not gRPC (content-type); HTTP 415"
            );
            let mut response = http::Response::new(ResBody::default());
            *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return BoundaryFuture::Refused {
                response: Some(response),
            };
        }
        // Connections past max_connections, and (never, if the listener
        // works) a request without a checked peer, go no further. This
        // was an interceptor on every service; here it costs no
        // conversion of the request.
        if let Err(status) = crate::net::listener::admit(request.extensions()) {
            return BoundaryFuture::Refused {
                response: Some(status.into_http()),
            };
        }
        // What the limit is, said only if a message breaks it: formatting
        // it for every request cost more than the rest of this layer.
        let service = request
            .uri()
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        let limit = if service == CREDENTIALS {
            Limit::Credentials(self.credentials_limit)
        } else {
            Limit::Small(service.into())
        };
        BoundaryFuture::Served {
            inner: self.inner.call(request),
            limit,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`GrpcBoundary`]: a refusal at once, or the inner
    /// service's answer with an oversize status rewritten. A named future,
    /// not a boxed one: no allocation per request.
    #[project = BoundaryProjection]
    #[allow(missing_debug_implementations, missing_docs)]
    pub enum BoundaryFuture<F, B> {
        /// Not gRPC (HTTP 415), or a connection not admitted (a gRPC
        /// status).
        Refused { response: Option<http::Response<B>> },
        /// Passed to the services: their answer, and the limit an
        /// oversize status names.
        Served {
            #[pin]
            inner: F,
            limit: Limit,
        },
    }
}

impl<F, B, E> Future for BoundaryFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            BoundaryProjection::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
            BoundaryProjection::Served { inner, limit } => inner
                .poll(cx)
                .map(|answer| answer.map(|r| map_oversize(r, limit))),
        }
    }
}

/// True for `application/grpc`, `application/grpc+proto`, with or without
/// parameters (`;...`), in any letter case.
fn is_grpc(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
        return false;
    };
    // Bytes, not text: the media type is compared exactly and the
    // parameters are ignored, so nothing needs checking or converting.
    let value = value.as_bytes();
    let media = value
        .iter()
        .position(|&b| b == b';')
        .map_or(value, |end| &value[..end])
        .trim_ascii();
    media.eq_ignore_ascii_case(b"application/grpc")
        || media.eq_ignore_ascii_case(b"application/grpc+proto")
}

/// Which limit a request was held to.
#[derive(Debug)]
pub enum Limit {
    /// `Credentials`: `max_secret_bytes` plus the key, label and attributes.
    Credentials(usize),
    /// Every other service, by name.
    Small(Box<str>),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Credentials(bytes) => write!(
                f,
                "the limit is max_secret_bytes plus 48 KiB for the key, label and attributes, \
                 {bytes} bytes"
            ),
            Self::Small(service) => write!(
                f,
                "{} requests are limited to {SMALL_MESSAGE} bytes",
                if service.is_empty() { "these" } else { service }
            ),
        }
    }
}

/// Rewrites tonic's "message length too large" OUT_OF_RANGE into
/// RESOURCE_EXHAUSTED naming `limit`. Other responses pass through
/// untouched.
fn map_oversize<B>(mut response: http::Response<B>, limit: &Limit) -> http::Response<B> {
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != tonic::Code::OutOfRange
        || !status.message().contains("message length too large")
    {
        return response;
    }
    let (what, detail) = match status
        .message()
        .strip_prefix("Error, decoded message length too large: ")
    {
        Some(detail) => ("request", detail),
        None => (
            "response",
            status
                .message()
                .trim_start_matches("Error, encoded message length too large: "),
        ),
    };
    let rewritten =
        tonic::Status::resource_exhausted(format!("{what} too large: {detail} ({limit})"));
    if rewritten.add_header(response.headers_mut()).is_err() {
        tracing::warn!("could not rewrite an oversize-message status");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(v) = content_type {
            h.insert(
                http::header::CONTENT_TYPE,
                v.parse().unwrap_or_else(|_| unreachable!()),
            );
        }
        h
    }

    #[test]
    fn only_grpc_content_types_pass() {
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc; charset=utf-8",
            "Application/GRPC+Proto;x=y",
        ] {
            assert!(is_grpc(&headers(Some(ok))), "{ok}");
        }
        for bad in [
            "application/json",
            "application/grpc+json",
            "application/grpc-web",
            "text/plain",
            "",
        ] {
            assert!(!is_grpc(&headers(Some(bad))), "{bad}");
        }
        assert!(!is_grpc(&headers(None)));
    }
}
