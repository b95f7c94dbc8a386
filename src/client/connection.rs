//! [`Client`]: one pipelined, self-healing connection to a broker, shared by cloning.
//!
//! Runs on a tokio runtime (current-thread or multi-thread). Each live connection has two tasks:
//! a writer that owns the socket's write half and drains a bounded channel of encoded frames
//! (coalescing whatever is queued into one flush), and a reader that owns the read half, reads
//! whole frames into aligned buffers and completes the waiting request by correlation id. Any
//! number of requests may be in flight up to [`ClientOptions::max_in_flight`]; responses may
//! arrive in any order.
//!
//! With `tls=true` in the connection string the socket is wrapped in TLS (rustls with the ring
//! provider, through tokio-rustls) before anything else is sent; the server's certificate must
//! chain to the `ca` file's authorities (or to the bundled Mozilla roots without `ca`) and carry
//! the `tls_domain` name (default: the host). The TLS stream is split into the same two tasks.
//!
//! Life cycle: [`Client::connect`] opens the socket and logs in (one attempt). When the
//! connection dies, every request still waiting fails with [`ClientError::Disconnected`] (the
//! client does not know whether the server acted on them, so it never resends them); the next
//! request reconnects, retrying with backoff, and logs in again with the last credentials that
//! succeeded. Dropping every clone of the client closes the connection.
//!
//! Invariants: request correlation ids are unique for the client's lifetime (never reused across
//! reconnects; the login on each new socket uses id 0, before any request); once a
//! connection's pending table is closed nothing more registers in it; each waiter is completed
//! exactly once (response, `Disconnected`, or dropped by its own timeout).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::error::ClientError;
use super::url::{parse_host_port, ConnectionString};
use super::wire::{encode_request, read_frame, recycle_buffer, Frame, RequestBody, ResponseBody};
use super::{READ_BUFFER_BYTES, RECONNECT_BACKOFF_MAX_FACTOR, WRITE_BUFFER_BYTES, WRITE_QUEUE_FRAMES};
use crate::protocol::messages::{self, Kind, LoginRequest, LoginResponse, MetadataResponse};

type Waiter = oneshot::Sender<Result<Frame, ClientError>>;

/// A handle on one broker connection. Cheap to clone; clones share the connection, its
/// credentials and its in-flight limit.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where to connect and as whom; the credentials change when [`Client::login`] succeeds.
    target: Mutex<ConnectionString>,
    /// The live connection, if any (it may have died since; checked on use).
    current: Mutex<Option<Arc<Connection>>>,
    /// Held while reconnecting, so one task reconnects and the others wait for its result.
    reconnecting: tokio::sync::Mutex<()>,
    /// The next correlation id.
    correlation_next: AtomicU64,
    /// Bounds requests awaiting responses.
    in_flight: Semaphore,
    /// What the last successful login answered.
    session: Mutex<Option<LoginResponse>>,
}

/// Locks a std mutex, recovering it if a panicking thread poisoned it (every critical section
/// here leaves the data consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Client {
    /// Connects to the broker a connection string names and logs in (one attempt; later
    /// reconnects retry as the options say).
    pub async fn connect(target: &ConnectionString) -> Result<Client, ClientError> {
        let (connection, session) = establish(target).await?;
        Ok(Client {
            inner: Arc::new(Inner {
                target: Mutex::new(target.clone()),
                current: Mutex::new(Some(connection)),
                reconnecting: tokio::sync::Mutex::new(()),
                correlation_next: AtomicU64::new(CORRELATION_AFTER_LOGIN),
                in_flight: Semaphore::new(target.options.max_in_flight.clamp(1, Semaphore::MAX_PERMITS)),
                session: Mutex::new(Some(session)),
            }),
        })
    }

    /// Connects to `address` (`host:port`) as `user` with default options and logs in.
    pub async fn connect_addr(address: &str, user: &str, password: &str) -> Result<Client, ClientError> {
        Self::connect(&ConnectionString::new(address, user, password)?).await
    }

    /// The connection string in use (with the credentials of the last successful login).
    pub fn connection_string(&self) -> ConnectionString {
        lock(&self.inner.target).clone()
    }

    /// What the last successful login answered (user id, admin).
    pub fn session(&self) -> Option<LoginResponse> {
        lock(&self.inner.session).clone()
    }

    /// Whether a connection is up right now (a request would not need to reconnect).
    pub fn is_connected(&self) -> bool {
        lock(&self.inner.current).as_ref().is_some_and(|connection| connection.pending.is_open())
    }

    /// Logs in again as another user on the current connection; on success, reconnects log in
    /// with these credentials too.
    pub async fn login(&self, user: &str, password: &str) -> Result<LoginResponse, ClientError> {
        let request = LoginRequest { user: user.to_string(), password: password.to_string() };
        let (response, _) = self.request::<_, LoginResponse>(Kind::Login, &request, &[]).await?;
        {
            let mut target = lock(&self.inner.target);
            target.user = request.user;
            target.password = request.password;
        }
        *lock(&self.inner.session) = Some(response.clone());
        Ok(response)
    }

    /// Sends one request and decodes its response: encodes `request` as the body, appends the
    /// `payload` parts back to back as the frame payload, and returns the decoded response body
    /// with the response payload. Error statuses become [`ClientError::Server`].
    pub async fn request<Req: RequestBody, Resp: ResponseBody>(
        &self,
        kind: Kind,
        request: &Req,
        payload: &[&[u8]],
    ) -> Result<(Resp, Bytes), ClientError> {
        let timeout = lock(&self.inner.target).options.timeout;
        self.request_with_timeout(kind, request, payload, timeout).await
    }

    /// [`request`](Self::request) with its own timeout (long polls wait longer).
    pub async fn request_with_timeout<Req: RequestBody, Resp: ResponseBody>(
        &self,
        kind: Kind,
        request: &Req,
        payload: &[&[u8]],
        timeout: Duration,
    ) -> Result<(Resp, Bytes), ClientError> {
        let body = messages::encode(request)
            .map_err(|error| ClientError::InvalidRequest(format!("{kind:?} body: {error}")))?;
        let frame = self.request_raw(kind, &body, payload, timeout).await?;
        frame.into_response::<Resp>(kind)
    }

    /// The lowest layer: sends an already archived body and the payload parts, and returns the
    /// response frame whatever its status.
    pub async fn request_raw(
        &self,
        kind: Kind,
        body: &[u8],
        payload: &[&[u8]],
        timeout: Duration,
    ) -> Result<Frame, ClientError> {
        let correlation = self.inner.correlation_next.fetch_add(1, Ordering::Relaxed);
        let frame = encode_request(kind, correlation, body, payload)?;
        let _permit = self.inner.in_flight.acquire().await.map_err(|_| ClientError::Disconnected)?;
        let connection = self.connection().await?;
        connection.call(correlation, frame, timeout).await
    }

    /// The live connection (reconnecting if needed), for requests that must all go over one
    /// particular connection (a subscription and its credits).
    pub(super) async fn pinned_connection(&self) -> Result<Arc<Connection>, ClientError> {
        self.connection().await
    }

    /// Sends `request` over `connection` (not reconnecting) and decodes its response.
    pub(super) async fn request_on<Req: RequestBody, Resp: ResponseBody>(
        &self,
        connection: &Connection,
        kind: Kind,
        request: &Req,
    ) -> Result<(Resp, Bytes), ClientError> {
        let body = messages::encode(request)
            .map_err(|error| ClientError::InvalidRequest(format!("{kind:?} body: {error}")))?;
        let correlation = self.inner.correlation_next.fetch_add(1, Ordering::Relaxed);
        let frame = encode_request(kind, correlation, &body, &[])?;
        let timeout = lock(&self.inner.target).options.timeout;
        let _permit = self.inner.in_flight.acquire().await.map_err(|_| ClientError::Disconnected)?;
        connection.call(correlation, frame, timeout).await?.into_response::<Resp>(kind)
    }

    /// The shard map: every shard's direct address and the owner of every partition the user
    /// may see.
    pub async fn metadata(&self) -> Result<MetadataResponse, ClientError> {
        Ok(self.request::<_, MetadataResponse>(Kind::Metadata, &messages::Empty {}, &[]).await?.0)
    }

    /// Opens a new client on shard `shard`'s direct address, with the same credentials and
    /// options, so requests for the partitions it owns need no hop between cores. Fetches the
    /// shard map first; see [`shard_connection_string`](Self::shard_connection_string) to reuse
    /// one.
    pub async fn connect_to_shard(&self, shard: u16) -> Result<Client, ClientError> {
        let metadata = self.metadata().await?;
        Client::connect(&self.shard_connection_string(&metadata, shard)?).await
    }

    /// The connection string of shard `shard` in `metadata`. An advertised wildcard host
    /// (`0.0.0.0`, `::`) is replaced by the host this client connects to.
    pub fn shard_connection_string(
        &self,
        metadata: &MetadataResponse,
        shard: u16,
    ) -> Result<ConnectionString, ClientError> {
        let advertised = metadata.shards.iter().find(|entry| entry.shard == shard).ok_or_else(|| {
            ClientError::InvalidRequest(format!(
                "shard {shard} has no direct address (the server lists {} shards)",
                metadata.shards.len()
            ))
        })?;
        if advertised.address.is_empty() {
            return Err(ClientError::InvalidRequest(format!(
                "shard {shard} has no direct address (the server runs without per-shard listeners)"
            )));
        }
        let mut target = self.connection_string();
        let (host, port) = parse_host_port(&advertised.address, target.port).map_err(|_| {
            ClientError::Protocol(format!("shard {shard} advertises a bad address `{}`", advertised.address))
        })?;
        if target.options.tls && target.options.tls_domain.is_none() {
            // The shard's listener presents the same certificate as the one this client
            // verified, under the name it verified it by; the advertised host may be an IP.
            target.options.tls_domain = Some(target.host.clone());
        }
        if !matches!(host.as_str(), "0.0.0.0" | "::" | "[::]") {
            target.host = host;
        }
        target.port = port;
        Ok(target)
    }

    /// The live connection, reconnecting (and logging in) if it died.
    async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        if let Some(connection) = self.live_connection() {
            return Ok(connection);
        }
        let _reconnecting = self.inner.reconnecting.lock().await;
        if let Some(connection) = self.live_connection() {
            return Ok(connection); // Another task reconnected while this one waited.
        }
        let target = self.connection_string();
        let (connection, session) = reconnect(&target).await?;
        *lock(&self.inner.current) = Some(connection.clone());
        *lock(&self.inner.session) = Some(session);
        Ok(connection)
    }

    fn live_connection(&self) -> Option<Arc<Connection>> {
        let current = lock(&self.inner.current);
        current.as_ref().filter(|connection| connection.pending.is_open()).cloned()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.connection_string())
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Correlation id of the login on a fresh connection; requests on the client start after it.
const CORRELATION_LOGIN: u64 = 0;
const CORRELATION_AFTER_LOGIN: u64 = 1;

/// Reconnects after a loss: up to `reconnect_retries` attempts, waiting `reconnect_interval`
/// before the first and doubling up to [`RECONNECT_BACKOFF_MAX_FACTOR`] times it. A refused
/// login is final (retrying a wrong password only earns `LoginThrottled`).
async fn reconnect(target: &ConnectionString) -> Result<(Arc<Connection>, LoginResponse), ClientError> {
    let options = &target.options;
    let mut delay = options.reconnect_interval;
    let delay_max = options.reconnect_interval.saturating_mul(RECONNECT_BACKOFF_MAX_FACTOR);
    let mut last_error = ClientError::Disconnected;
    for attempt in 1..=options.reconnect_retries {
        tokio::time::sleep(delay).await;
        match establish(target).await {
            Ok(established) => {
                tracing::info!(address = %target.address(), attempt, "reconnected");
                return Ok(established);
            }
            Err(error @ ClientError::Server { .. }) => return Err(error),
            Err(error) => {
                tracing::debug!(address = %target.address(), attempt, %error, "reconnect failed");
                last_error = error;
            }
        }
        delay = delay.saturating_mul(2).min(delay_max);
    }
    tracing::warn!(address = %target.address(), retries = options.reconnect_retries, "could not reconnect");
    Err(match last_error {
        error @ ClientError::Io(_) => error,
        _ => ClientError::Disconnected,
    })
}

/// Opens a socket (and its TLS session), starts its tasks and logs in; connecting and the
/// handshake share one request timeout, the login has its own.
async fn establish(target: &ConnectionString) -> Result<(Arc<Connection>, LoginResponse), ClientError> {
    let address = target.address();
    let options = &target.options;
    let tls = if options.tls { Some(tls_connector(options)?) } else { None };
    let opening = async {
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|error| ClientError::io(format_args!("connecting to {address}"), error))?;
        stream.set_nodelay(true).map_err(|error| ClientError::io("setting TCP_NODELAY", error))?;
        let Some(connector) = tls else {
            let (read_half, write_half) = stream.into_split();
            return Ok(Connection::start(read_half, write_half, options.max_frame_bytes, &address));
        };
        let name = target.tls_server_name();
        let server_name = ServerName::try_from(name.to_string()).map_err(|error| {
            ClientError::InvalidConnectionString(format!("`{name}` is no TLS server name: {error}"))
        })?;
        let stream = connector.connect(server_name, stream).await.map_err(|error| {
            ClientError::io(format_args!("TLS handshake with {address} (server name `{name}`)"), error)
        })?;
        let (read_half, write_half) = tokio::io::split(stream);
        Ok::<_, ClientError>(Connection::start(read_half, write_half, options.max_frame_bytes, &address))
    };
    let connection =
        tokio::time::timeout(options.timeout, opening).await.map_err(|_| ClientError::Timeout)??;
    let request = LoginRequest { user: target.user.clone(), password: target.password.clone() };
    let body = messages::encode(&request)
        .map_err(|error| ClientError::InvalidRequest(format!("Login body: {error}")))?;
    let frame = encode_request(Kind::Login, CORRELATION_LOGIN, &body, &[])?;
    let (session, _) = connection
        .call(CORRELATION_LOGIN, frame, options.timeout)
        .await?
        .into_response::<LoginResponse>(Kind::Login)?;
    tracing::debug!(%address, user = %target.user, user_id = session.user_id, "logged in");
    Ok((connection, session))
}

/// A TLS connector trusting the `ca` file's certificates, or the bundled Mozilla roots without
/// one (rustls with the ring provider; TLS 1.2 and 1.3).
fn tls_connector(options: &super::ClientOptions) -> Result<tokio_rustls::TlsConnector, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match &options.tls_ca {
        Some(path) => {
            let shown = path.display();
            let certificates = CertificateDer::pem_file_iter(path).map_err(|error| {
                ClientError::io(format_args!("reading CA file {shown}"), pem_io_error(error))
            })?;
            for certificate in certificates {
                let certificate = certificate.map_err(|error| {
                    ClientError::io(format_args!("reading CA file {shown}"), pem_io_error(error))
                })?;
                roots.add(certificate).map_err(|error| {
                    ClientError::InvalidConnectionString(format!("CA file {shown}: {error}"))
                })?;
            }
            if roots.is_empty() {
                return Err(ClientError::InvalidConnectionString(format!(
                    "CA file {shown} holds no PEM certificate"
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::InvalidRequest(format!("TLS set-up: {error}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A PEM reading error as an I/O error (keeping the I/O error itself when there is one).
fn pem_io_error(error: rustls::pki_types::pem::Error) -> std::io::Error {
    match error {
        rustls::pki_types::pem::Error::Io(error) => error,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{other:?}")),
    }
}

/// One socket's tasks and the requests waiting on it.
pub(super) struct Connection {
    frames: mpsc::Sender<Vec<u8>>,
    pending: Arc<Pending>,
    pushes: Arc<Pushes>,
}

/// Correlation ids with this bit set are the client's `Credit` frames (`bit | subscription id`),
/// which the server answers only on error; such an error goes to the subscription.
pub(super) const CREDIT_CORRELATION_BIT: u64 = 1 << 63;

/// Where the frames the server pushes go: per subscription id, the subscription's channel.
/// Closed (every channel dropped, nothing more registered) when the connection closes.
#[derive(Default)]
struct Pushes {
    routes: Mutex<Option<HashMap<u32, tokio::sync::mpsc::UnboundedSender<Frame>>>>,
}

impl Pushes {
    fn new() -> Self {
        Self { routes: Mutex::new(Some(HashMap::new())) }
    }

    /// Whether `frame` is pushed (a delivery, a consumer update, or a refused credit) rather
    /// than a response to a waiting request.
    fn is_push(frame: &Frame) -> bool {
        let header = frame.header();
        header.kind == Kind::Deliver as u16
            || header.kind == Kind::ConsumerUpdate as u16
            || (header.kind == Kind::Credit as u16 && header.correlation & CREDIT_CORRELATION_BIT != 0)
    }

    fn route(&self, frame: Frame) {
        // Deliveries and refused credits carry the subscription id in the correlation id; a
        // consumer update carries it in its body (its correlation is the server's request id).
        let id = match frame.header().kind {
            kind if kind == Kind::ConsumerUpdate as u16 => {
                match messages::decode::<crate::protocol::subscriptions::ConsumerUpdate>(frame.body()) {
                    Ok(update) => update.subscription_id,
                    Err(error) => {
                        tracing::warn!(%error, "a consumer update that cannot be read was dropped");
                        return;
                    }
                }
            }
            _ => (frame.header().correlation & !CREDIT_CORRELATION_BIT) as u32,
        };
        let routes = lock(&self.routes);
        match routes.as_ref().and_then(|routes| routes.get(&id)) {
            Some(route) => {
                let _ = route.send(frame);
            }
            None => {
                tracing::debug!(subscription = id, kind = frame.header().kind, "a push for no subscription")
            }
        }
    }

    fn register(&self, id: u32) -> Result<tokio::sync::mpsc::UnboundedReceiver<Frame>, ClientError> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let mut routes = lock(&self.routes);
        let routes = routes.as_mut().ok_or(ClientError::Disconnected)?;
        if routes.contains_key(&id) {
            return Err(ClientError::InvalidRequest(format!(
                "subscription {id} is in use on this connection"
            )));
        }
        routes.insert(id, sender);
        Ok(receiver)
    }

    fn forget(&self, id: u32) {
        if let Some(routes) = lock(&self.routes).as_mut() {
            routes.remove(&id);
        }
    }

    fn close(&self) {
        lock(&self.routes).take();
    }
}

impl Connection {
    /// Spawns the reader and writer tasks of a split socket (plain TCP or TLS).
    fn start<R, W>(read_half: R, write_half: W, max_frame_bytes: usize, address: &str) -> Arc<Connection>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (frames, queue) = mpsc::channel(WRITE_QUEUE_FRAMES);
        let pending = Arc::new(Pending::new());
        let pushes = Arc::new(Pushes::new());
        let reading = Reading { pending: pending.clone(), pushes: pushes.clone(), max_frame_bytes };
        tokio::spawn(read_loop(read_half, reading, address.to_string()));
        tokio::spawn(write_loop(write_half, queue, pending.clone(), address.to_string()));
        Arc::new(Connection { frames, pending, pushes })
    }

    /// Queues one encoded frame that gets no response on success.
    pub(super) async fn send(&self, frame: Vec<u8>) -> Result<(), ClientError> {
        self.frames.send(frame).await.map_err(|_| ClientError::Disconnected)
    }

    /// Routes the frames pushed for subscription `id` on this connection to the receiver.
    pub(super) fn register_push(
        &self,
        id: u32,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<Frame>, ClientError> {
        self.pushes.register(id)
    }

    /// Stops routing subscription `id`'s pushes.
    pub(super) fn forget_push(&self, id: u32) {
        self.pushes.forget(id);
    }

    /// Queues one encoded frame and waits for the response with this correlation id.
    pub(super) async fn call(
        &self,
        correlation: u64,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> Result<Frame, ClientError> {
        let response = self.pending.register(correlation)?;
        let exchange = async {
            self.frames.send(frame).await.map_err(|_| ClientError::Disconnected)?;
            response.await.map_err(|_| ClientError::Disconnected)?
        };
        let outcome = tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(ClientError::Timeout));
        if outcome.is_err() {
            self.pending.forget(correlation);
        }
        outcome
    }
}

/// The requests waiting for responses on one connection.
struct Pending {
    state: Mutex<PendingState>,
    /// Flips to `true` once, when the connection closes; both tasks watch it.
    closed: watch::Sender<bool>,
}

struct PendingState {
    open: bool,
    waiters: HashMap<u64, Waiter>,
}

impl Pending {
    fn new() -> Self {
        Self {
            state: Mutex::new(PendingState { open: true, waiters: HashMap::new() }),
            closed: watch::Sender::new(false),
        }
    }

    fn is_open(&self) -> bool {
        lock(&self.state).open
    }

    /// Registers a waiter; [`ClientError::Disconnected`] once the connection closed.
    fn register(
        &self,
        correlation: u64,
    ) -> Result<oneshot::Receiver<Result<Frame, ClientError>>, ClientError> {
        let (sender, receiver) = oneshot::channel();
        let mut state = lock(&self.state);
        if !state.open {
            return Err(ClientError::Disconnected);
        }
        let previous = state.waiters.insert(correlation, sender);
        debug_assert!(previous.is_none(), "correlation id {correlation} reused");
        Ok(receiver)
    }

    /// Hands a response to its waiter. A response nobody waits for (its request timed out) is
    /// dropped.
    fn complete(&self, frame: Frame) {
        let correlation = frame.header().correlation;
        let waiter = lock(&self.state).waiters.remove(&correlation);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(Ok(frame));
            }
            None => tracing::debug!(correlation, status = %frame.status(), "response to no waiting request"),
        }
    }

    /// Drops a waiter whose caller gave up.
    fn forget(&self, correlation: u64) {
        lock(&self.state).waiters.remove(&correlation);
    }

    /// Closes the table: fails every waiter with [`ClientError::Disconnected`] and tells both
    /// tasks to stop. Idempotent.
    fn close(&self) {
        let waiters = {
            let mut state = lock(&self.state);
            state.open = false;
            std::mem::take(&mut state.waiters)
        };
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(ClientError::Disconnected));
        }
        self.closed.send_replace(true);
    }
}

/// What the reader task hands frames to.
struct Reading {
    pending: Arc<Pending>,
    pushes: Arc<Pushes>,
    max_frame_bytes: usize,
}

/// Reads frames until the stream ends, fails, or the connection is closed from elsewhere.
async fn read_loop<R: AsyncRead + Unpin>(read_half: R, reading: Reading, address: String) {
    let Reading { pending, pushes, max_frame_bytes } = reading;
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
    let mut closed = pending.closed.subscribe();
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader, max_frame_bytes) => frame,
            _ = closed.wait_for(|closed| *closed) => break,
        };
        match frame {
            Ok(Some(frame)) if Pushes::is_push(&frame) => pushes.route(frame),
            Ok(Some(frame)) => pending.complete(frame),
            Ok(None) => {
                tracing::debug!(%address, "the server closed the connection");
                break;
            }
            Err(error) => {
                tracing::warn!(%address, %error, "connection failed while reading");
                break;
            }
        }
    }
    pushes.close();
    pending.close();
}

/// Writes queued frames, flushing whenever the queue runs dry, until the client is dropped or
/// the connection closes.
async fn write_loop<W: AsyncWrite + Unpin>(
    write_half: W,
    mut queue: mpsc::Receiver<Vec<u8>>,
    pending: Arc<Pending>,
    address: String,
) {
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, write_half);
    let mut closed = pending.closed.subscribe();
    loop {
        let frame = tokio::select! {
            frame = queue.recv() => frame,
            _ = closed.wait_for(|closed| *closed) => None,
        };
        let Some(frame) = frame else { break };
        if let Err(error) = write_queued(&mut writer, frame, &mut queue).await {
            tracing::warn!(%address, %error, "connection failed while writing");
            break;
        }
    }
    pending.close();
    let _ = writer.get_mut().shutdown().await;
    tracing::debug!(%address, "connection closed");
}

/// Writes one frame and every frame already queued behind it, then flushes.
async fn write_queued<W: AsyncWrite + Unpin>(
    writer: &mut BufWriter<W>,
    frame: Vec<u8>,
    queue: &mut mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<()> {
    writer.write_all(&frame).await?;
    recycle_buffer(frame);
    while let Ok(frame) = queue.try_recv() {
        writer.write_all(&frame).await?;
        recycle_buffer(frame);
    }
    writer.flush().await
}
