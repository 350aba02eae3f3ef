//! A node's HTTP side: the head's dashboard ([`dashboard`]) and each node's Prometheus endpoint
//! ([`metrics`]), both answering only holders of the cluster token ([`auth`]).
//!
//! Both run on the node's event loop (axum over tokio), read the cluster over the node's own
//! switchboard as any client would, keep no state of their own beyond a short cache, and stop
//! with the node ([`WebServers`] signals them; the event loop's end takes the rest). A node
//! serves them only when asked ([`NodeOptions::metrics_port`], [`NodeOptions::dashboard`]).
//!
//! [`NodeOptions::metrics_port`]: crate::cluster::NodeOptions::metrics_port
//! [`NodeOptions::dashboard`]: crate::cluster::NodeOptions::dashboard

pub(crate) mod auth;
pub(crate) mod dashboard;
pub(crate) mod metrics;

use crate::error::{describe_io, Error, Result};
use crate::ids::NodeId;
use crate::transport::net::Net;
use crate::transport::{random_bytes, Token};
use axum::http::header::{CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// One HTTP server of the node.
#[derive(Debug)]
struct Server {
    /// Where it listens.
    addr: SocketAddr,
    /// Fired (or dropped) to stop it.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The node's HTTP servers; dropping it stops them.
#[derive(Debug, Default)]
pub(crate) struct WebServers {
    metrics: Option<Server>,
    dashboard: Option<Server>,
}

/// What the node's servers need of it.
pub(crate) struct WebSettings {
    pub(crate) node_id: NodeId,
    pub(crate) net: Arc<Net>,
    /// The GCS's address (the node's own on the head).
    pub(crate) gcs: SocketAddr,
    pub(crate) token: Token,
    /// Where the node serves `/metrics`, if it does.
    pub(crate) metrics: Option<SocketAddr>,
    /// Where the head serves its dashboard, if it does.
    pub(crate) dashboard: Option<SocketAddr>,
    /// The session folder's logs, shown by the dashboard.
    pub(crate) log_dir: Option<PathBuf>,
}

impl WebServers {
    /// Starts the servers `settings` asks for on the event loop `rt`. A metrics port that cannot
    /// be bound fails the start; a dashboard address that cannot is logged, and the node runs
    /// without it.
    pub(crate) fn start(rt: &tokio::runtime::Handle, settings: WebSettings) -> Result<WebServers> {
        let mut servers = WebServers::default();
        if let Some(at) = settings.metrics {
            let source = metrics::Source {
                net: settings.net.clone(),
                node_id: settings.node_id,
                gcs: settings.gcs,
            };
            let router = Router::new()
                .route("/metrics", get(scrape))
                .route("/", get(metrics_index))
                .with_state(Arc::new(source));
            servers.metrics = Some(serve(rt, "metrics", at, router, &settings.token)?);
        }
        if let Some(at) = settings.dashboard {
            let board = dashboard::Dashboard::new(
                settings.net.clone(),
                settings.gcs,
                settings.log_dir.clone(),
            );
            let router = dashboard::router(Arc::new(board));
            // As in Ray, a dashboard that cannot listen (say a second head on the machine, on
            // the default port) leaves the cluster running without it.
            match serve(rt, "dashboard", at, router, &settings.token) {
                Ok(server) => servers.dashboard = Some(server),
                Err(e) => tracing::warn!(error = %e, "the dashboard is not served"),
            }
        }
        Ok(servers)
    }

    /// Where `/metrics` is served, if it is.
    pub(crate) fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|s| s.addr)
    }

    /// Where the dashboard is served, if it is.
    pub(crate) fn dashboard_address(&self) -> Option<SocketAddr> {
        self.dashboard.as_ref().map(|s| s.addr)
    }

    /// Stops the servers: they accept nothing more and close their connections as their
    /// requests end.
    pub(crate) fn stop(&mut self) {
        for server in [self.metrics.as_mut(), self.dashboard.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(stop) = server.stop.take() {
                let _ = stop.send(());
            }
        }
    }
}

impl Drop for WebServers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `at` now (so that a busy port fails the node's start, with the reason) and serves
/// `router` there behind the token guard, on `rt`.
fn serve(
    rt: &tokio::runtime::Handle,
    what: &'static str,
    at: SocketAddr,
    router: Router,
    token: &Token,
) -> Result<Server> {
    let cannot = |e: std::io::Error| {
        Error::connection(
            at,
            format!("cannot serve the {what} there: {}", describe_io(&e)),
        )
    };
    let std_listener = std::net::TcpListener::bind(at).map_err(cannot)?;
    std_listener.set_nonblocking(true).map_err(cannot)?;
    let addr = std_listener.local_addr().map_err(cannot)?;
    let listener = {
        let _context = rt.enter();
        tokio::net::TcpListener::from_std(std_listener).map_err(cannot)?
    };
    let keys = Arc::new(auth::Keys::new(token, random_bytes()?, addr.port()));
    let app = router
        .layer(axum::middleware::from_fn_with_state(keys, auth::guard))
        .layer(axum::middleware::map_response(hardened));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!(%addr, error = %e, "the {what} server stopped");
        }
    });
    tracing::info!(%addr, "serving the {what}");
    Ok(Server {
        addr,
        stop: Some(stop),
    })
}

/// Headers every answer carries: no framing, no sniffing, no referrer (a URL may hold the
/// token).
async fn hardened(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// `GET /metrics`: a fresh snapshot of the node, as Prometheus text.
async fn scrape(
    axum::extract::State(source): axum::extract::State<Arc<metrics::Source>>,
) -> Response {
    let text = match metrics::snapshot(&source).await {
        Ok(snap) => metrics::encode(&snap),
        Err(e) => Err(e),
    };
    match text {
        Ok(text) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the node's metrics: {e}\n"),
        )
            .into_response(),
    }
}

/// `GET /` of the metrics server: where the metrics are.
async fn metrics_index() -> &'static str {
    "lumen node metrics: GET /metrics (Prometheus text)\n"
}
