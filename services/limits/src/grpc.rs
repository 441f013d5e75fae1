//! A hand-written tonic service (no protoc, no tonic-build, no router): one tower service that
//! answers the RPC paths (ShouldRateLimit, Settle, grpc.health.v1 Check) and UNIMPLEMENTED for
//! anything else.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::proto::{
    HealthCheckRequest, HealthCheckResponse, RateLimitRequest, RateLimitResponse, SettleRequest, SettleResponse,
    HEALTH_CHECK_PATH, SETTLE_PATH, SHOULD_RATE_LIMIT_PATH,
};
use crate::service::Limits;

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

#[derive(Clone)]
pub struct LimitsServer(pub Arc<Limits>);

impl NamedService for LimitsServer {
    // The server does not route by name (it serves one service); the paths are matched below.
    const NAME: &'static str = "envoy.service.ratelimit.v3.RateLimitService";
}

struct ShouldRateLimit(Arc<Limits>);

impl UnaryService<RateLimitRequest> for ShouldRateLimit {
    type Response = RateLimitResponse;
    type Future = BoxFuture<Response<RateLimitResponse>, Status>;
    fn call(&mut self, request: Request<RateLimitRequest>) -> Self::Future {
        let limits = self.0.clone();
        Box::pin(async move { limits.should_rate_limit(request.into_inner()).await.map(Response::new) })
    }
}

struct Settle(Arc<Limits>);

impl UnaryService<SettleRequest> for Settle {
    type Response = SettleResponse;
    type Future = BoxFuture<Response<SettleResponse>, Status>;
    fn call(&mut self, request: Request<SettleRequest>) -> Self::Future {
        let limits = self.0.clone();
        Box::pin(async move { limits.settle(request.into_inner()).await.map(Response::new) })
    }
}

struct Health(Arc<Limits>);

impl UnaryService<HealthCheckRequest> for Health {
    type Response = HealthCheckResponse;
    type Future = BoxFuture<Response<HealthCheckResponse>, Status>;
    fn call(&mut self, request: Request<HealthCheckRequest>) -> Self::Future {
        let limits = self.0.clone();
        Box::pin(async move { limits.health(request.into_inner()).await.map(Response::new) })
    }
}

impl<B> tower_service::Service<http::Request<B>> for LimitsServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync + 'static>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let limits = self.0.clone();
        match req.uri().path() {
            SHOULD_RATE_LIMIT_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<RateLimitResponse, RateLimitRequest>::default());
                Ok(grpc.unary(ShouldRateLimit(limits), req).await)
            }),
            SETTLE_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<SettleResponse, SettleRequest>::default());
                Ok(grpc.unary(Settle(limits), req).await)
            }),
            HEALTH_CHECK_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default());
                Ok(grpc.unary(Health(limits), req).await)
            }),
            path => {
                let status = Status::unimplemented(format!("tollgate-limits serves no {path}"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
