//! The HTTP listener: hyper (HTTP/1.1) with a deadline for each request's
//! headers, a cap on open connections, and TLS (rustls) when a certificate
//! is configured. Slow or idle clients are cut off, so they cannot hold
//! the server's connections or memory.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};

/// `[http]`: limits of the listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections open at once; past it new ones are closed at once.
    pub max_connections: usize,
    /// A request's headers (and a TLS handshake) must arrive within this.
    pub header_timeout_ms: u64,
    /// A request's body must arrive within this.
    pub body_timeout_ms: u64,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout_ms: u64,
    /// Event streams (`/events`) one principal may hold open; all anonymous
    /// callers together count as one. Streams live long, so each is a slot.
    pub max_streams_per_principal: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 120_000,
            max_streams_per_principal: 64,
        }
    }
}

impl HttpConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.max_connections > 0, "[http] max_connections must be positive");
        anyhow::ensure!(self.max_streams_per_principal > 0, "[http] max_streams_per_principal must be positive");
        for (name, ms) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            anyhow::ensure!(ms > 0, "[http] {name} must be positive");
        }
        Ok(())
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
}

/// `[tls]`: serve HTTPS with this certificate chain and key (PEM); `ca` adds
/// trusted roots for this server's own HTTPS connections (remote trees).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

impl TlsConfig {
    /// The acceptor for serving HTTPS, or `None` for plain HTTP.
    pub fn acceptor(&self) -> anyhow::Result<Option<TlsAcceptor>> {
        let (cert, key) = match (&self.cert, &self.key) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            _ => anyhow::bail!("[tls] needs both cert and key"),
        };
        let chain = read_certs(cert)?;
        use pki_types::pem::PemObject as _;
        let key = pki_types::PrivateKeyDer::from_pem_file(key)
            .map_err(|e| anyhow::anyhow!("[tls] key {}: {e}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("[tls] the key does not match the certificate")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }

    /// The extra roots that outgoing HTTPS connections trust.
    pub fn extra_roots(&self) -> anyhow::Result<Vec<reqwest::Certificate>> {
        let Some(ca) = &self.ca else { return Ok(Vec::new()) };
        let pem = std::fs::read(ca).with_context(|| format!("[tls] cannot read ca {}", ca.display()))?;
        reqwest::Certificate::from_pem_bundle(&pem).with_context(|| format!("[tls] ca {} is not PEM", ca.display()))
    }
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<pki_types::CertificateDer<'static>>> {
    use pki_types::pem::PemObject as _;
    let certs = pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("[tls] cert {}: {e}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "[tls] cert {} holds no certificate", path.display());
    Ok(certs)
}

/// Serves `router` until `shutdown` resolves, then lets open requests finish
/// (up to 10 s; event streams end on their own at shutdown).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &HttpConfig,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_millis(config.header_timeout_ms));
    let handshake = Duration::from_millis(config.header_timeout_ms);
    let idle = Duration::from_millis(config.idle_timeout_ms);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, typically: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(max = config.max_connections, "connection limit reached; closing a new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let (http, tls, watcher) = (http.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(&http, stream, service, watcher, idle).await,
                Some(acceptor) => match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve_connection(&http, tls, service, watcher, idle).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections were still open 10 s after shutdown began");
    }
    Ok(())
}

/// One connection: requests until the client closes, falls idle, or the server shuts down.
async fn serve_connection<S>(
    http: &hyper::server::conn::http1::Builder,
    io: S,
    service: TowerToHyperService<Router>,
    watcher: hyper_util::server::graceful::Watcher,
    idle: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = IdleTimeout::new(io, idle);
    let conn = http.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Closes a connection on which nothing was read or written for `idle`
/// (hyper's header timeout covers a request's start, not a silent keep-alive).
struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, idle: Duration) -> Self {
        Self { inner, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }

    fn touched(&mut self) {
        self.deadline.as_mut().reset(tokio::time::Instant::now() + self.idle);
    }

    fn expired(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection idle")
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touched();
                }
                std::task::Poll::Ready(r)
            }
            std::task::Poll::Pending if self.expired(cx) => std::task::Poll::Ready(Err(timed_out())),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if let std::task::Poll::Ready(Ok(n)) = &r
            && *n > 0
        {
            self.touched();
        }
        r
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

/// Open event streams per principal, against `max_streams_per_principal`.
#[derive(Default)]
pub struct StreamCounts(parking_lot::Mutex<std::collections::HashMap<Option<Arc<str>>, usize>>);

/// One open stream; dropping it frees the slot.
pub struct StreamSlot {
    counts: Arc<StreamCounts>,
    key: Option<Arc<str>>,
}

impl StreamCounts {
    /// A slot for `principal`, or `None` at the limit.
    pub fn open(self: &Arc<Self>, principal: &dmtree_core::Principal, limit: usize) -> Option<StreamSlot> {
        let key = principal.name().map(Arc::from);
        let mut counts = self.0.lock();
        let n = counts.entry(key.clone()).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(StreamSlot { counts: self.clone(), key })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock();
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}
