//! HTTP capability: wasi-http outgoing requests, checked against the phase's granted origins
//! and, after the host resolves the name, against the blocked address ranges.
//!
//! wasmtime's default sender resolves and connects by itself, past `socket_addr_check`, so the
//! hook here does its own: it resolves the host, checks every address, and connects to an
//! address it checked. The request then goes over exactly that connection, so a name that
//! resolves differently a moment later (DNS rebinding) cannot redirect it.
//!
//! What the host holds for a guest's HTTP resources is bounded too: each header map to
//! [`FIELD_SIZE_LIMIT`], each outgoing body to one buffered chunk of that size, and all of them
//! together, counted whenever the guest makes a new one, to what the phase's memory limit leaves
//! beside the guest's own memory ([`Stop::HttpMemoryLimit`](crate::Stop::HttpMemoryLimit)).

use std::any::Any;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::events::{CapabilityUse, EventSender, PhaseEvent};
use crate::host::PhaseState;
use crate::limits::Monitor;
use phasebox_grants::{Origin, canonical_ip};

use crate::error::SandboxError;
use crate::grant::Documents;
use crate::network::NetworkPolicy;

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendResult = Result<(http::Response<WasiBody>, IoFuture), Error>;

/// The most one header map may hold (wasmtime counts names, values and their in-memory
/// overhead). Real requests carry a few KiB; wasmtime's default is twice this.
pub(crate) const FIELD_SIZE_LIMIT: usize = 64 << 10;

/// What the host may hold for each HTTP resource a guest has: a header map up to
/// [`FIELD_SIZE_LIMIT`], an outgoing body's buffered chunk, a response's read buffer. Counted
/// against the phase's memory limit, beside the guest's own memory.
const HTTP_ENTRY_RESERVE: u64 = FIELD_SIZE_LIMIT as u64;

/// Grants the job's origins: each covered by the manifest and the policy; one whose host is an
/// address in a blocked range only where the policy names that address itself (`*` or
/// `https://*:*` covers it but names nothing).
pub(crate) fn grant(docs: &Documents<'_>, asks: &[Origin]) -> Result<Vec<Origin>, SandboxError> {
    for o in asks {
        docs.require(|| format!("http {o}"), |d| d.http.iter().any(|p| p.covers(o)))?;
        if o.host.names_blocked() && !docs.allow.http.iter().any(|p| p.covers(o) && p.endpoint.host.names_blocked()) {
            return Err(docs.blocked_range_not_named(format!("http {o}")));
        }
    }
    Ok(asks.to_vec())
}

/// The phase's wasi-http hooks.
pub(crate) struct HttpHooks {
    pub(crate) network: Arc<NetworkPolicy>,
    pub(crate) events: EventSender,
    pub(crate) monitor: Arc<Monitor>,
}

impl WasiHttpHooks for HttpHooks {
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        // One buffered chunk per outgoing body: as much as one HTTP resource may hold.
        HTTP_ENTRY_RESERVE as usize
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_io: IoFuture,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let network = self.network.clone();
        let events = self.events.clone();
        let monitor = self.monitor.clone();
        Box::new(async move {
            let uri = request.uri().clone();
            let call = format!("{} {uri}", request.method());
            match checked_address(&network, &uri).await {
                Ok((addr, tls, host)) => {
                    record(&events, &monitor, call, None).await;
                    send_to(addr, tls, &host, request, options).await
                }
                Err((reason, error)) => {
                    // Not the URI: a guest may put a secret in its path or query.
                    tracing::debug!(%reason, "http request denied");
                    record(&events, &monitor, call, Some(reason)).await;
                    Err(error)
                }
            }
        })
    }
}

async fn record(events: &EventSender, monitor: &Monitor, call: String, denied: Option<String>) {
    let event = PhaseEvent::Capability(CapabilityUse {
        grant: "http".into(),
        call,
        allowed: denied.is_none(),
        reason: denied,
        duration_ms: None,
    });
    if monitor.admit(&event) {
        let _ = events.send(event).await;
    }
}

/// What the host holds for the guest's HTTP resources: [`HTTP_ENTRY_RESERVE`] for each one.
fn http_held(table: &mut ResourceTable) -> u64 {
    use wasmtime_wasi_http::p2::body::{HostFutureTrailers, HostIncomingBody, HostOutgoingBody};
    use wasmtime_wasi_http::p2::types::{
        HostFutureIncomingResponse, HostIncomingResponse, HostOutgoingRequest, HostOutgoingResponse,
    };
    let is_http = |e: &(dyn Any + Send)| {
        e.is::<wasmtime_wasi_http::FieldMap>()
            || e.is::<HostOutgoingRequest>()
            || e.is::<HostOutgoingResponse>()
            || e.is::<HostOutgoingBody>()
            || e.is::<HostFutureIncomingResponse>()
            || e.is::<HostIncomingResponse>()
            || e.is::<HostIncomingBody>()
            || e.is::<HostFutureTrailers>()
    };
    table.iter_mut().filter(|e| is_http(&**e)).count() as u64 * HTTP_ENTRY_RESERVE
}

/// Before the host makes one more HTTP resource for the guest: whether what it would then
/// hold still fits the phase's memory limit beside the guest's own memory. When it does not,
/// the phase stops, and the call traps with the reason.
fn reserve_http_entry(state: &mut PhaseState) -> wasmtime::Result<()> {
    let held = http_held(&mut state.table) + HTTP_ENTRY_RESERVE;
    if state.monitor.hold_host_memory(held) {
        return Ok(());
    }
    let stop = state.monitor.stopped_because().map(|s| s.to_string()).unwrap_or_default();
    Err(wasmtime::format_err!("phase stopped: {stop}"))
}

/// Stands in front of the `wasi:http` calls that make a new resource from nothing (a header
/// map, a copy of one, a request in flight): wasmtime bounds each header map, but not how many
/// a guest holds, so the host's share of them is counted here against the phase's memory
/// limit. (Every other HTTP resource is made from one of these and is bounded by the phase's
/// handle limit.)
pub(crate) fn link_http_accounting(linker: &mut Linker<PhaseState>) -> wasmtime::Result<()> {
    use wasmtime_wasi_http::FieldMap;
    use wasmtime_wasi_http::p2::bindings::http::outgoing_handler::{self, ErrorCode};
    use wasmtime_wasi_http::p2::bindings::http::types::{self as wit, HeaderError, HostFields};
    use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};

    linker.allow_shadowing(true);
    let mut types = linker.instance("wasi:http/types@0.2.12")?;
    types.func_wrap("[constructor]fields", |mut store: StoreContextMut<'_, PhaseState>, (): ()| {
        reserve_http_entry(store.data_mut())?;
        Ok((HostFields::new(&mut store.data_mut().http())?,))
    })?;
    types.func_wrap(
        "[static]fields.from-list",
        |mut store: StoreContextMut<'_, PhaseState>, (entries,): (Vec<(String, Vec<u8>)>,)| {
            reserve_http_entry(store.data_mut())?;
            let mut view = store.data_mut().http();
            match HostFields::from_list(&mut view, entries) {
                Ok(fields) => Ok((Ok::<_, HeaderError>(fields),)),
                Err(e) => Ok((Err(wit::Host::convert_header_error(&mut view, e)?),)),
            }
        },
    )?;
    types.func_wrap(
        "[method]fields.clone",
        |mut store: StoreContextMut<'_, PhaseState>, (fields,): (Resource<FieldMap>,)| {
            reserve_http_entry(store.data_mut())?;
            Ok((HostFields::clone(&mut store.data_mut().http(), fields)?,))
        },
    )?;
    let mut handler = linker.instance("wasi:http/outgoing-handler@0.2.12")?;
    handler.func_wrap(
        "handle",
        |mut store: StoreContextMut<'_, PhaseState>,
         (request, options): (Resource<HostOutgoingRequest>, Option<Resource<RequestOptions>>)| {
            reserve_http_entry(store.data_mut())?;
            let mut view = store.data_mut().http();
            match outgoing_handler::Host::handle(&mut view, request, options) {
                Ok(future) => Ok((Ok::<Resource<HostFutureIncomingResponse>, ErrorCode>(future),)),
                Err(e) => Ok((Err(wit::Host::convert_error_code(&mut view, e)?),)),
            }
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Checks a request's origin and resolves it to an address the grant allows.
async fn checked_address(
    network: &NetworkPolicy,
    uri: &http::Uri,
) -> Result<(SocketAddr, bool, String), (String, Error)> {
    let denied = |why: String| (why, Error::HttpRequestDenied);
    let tls = match uri.scheme() {
        Some(s) if *s == Scheme::HTTPS => true,
        Some(s) if *s == Scheme::HTTP => false,
        _ => return Err(denied(format!("unsupported scheme in {uri}"))),
    };
    let scheme = if tls { "https" } else { "http" };
    let host = uri.host().ok_or_else(|| denied(format!("no host in {uri}")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    network.check_http_origin(scheme, &host, port).map_err(denied)?;

    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![canonical_ip(ip)],
        Err(_) => tokio::time::timeout(Duration::from_secs(10), tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| ("DNS lookup timed out".to_string(), Error::DnsTimeout))?
            .map_err(|e| (format!("cannot resolve {host}: {e}"), Error::DnsError { rcode: None, info_code: None }))?
            .map(|a| canonical_ip(a.ip()))
            .collect(),
    };
    let mut last_refusal = format!("{host} resolved to no address");
    for ip in addrs {
        match network.check_http_addr(scheme, ip, port) {
            Ok(()) => return Ok((SocketAddr::new(ip, port), tls, host)),
            Err(why) => last_refusal = why,
        }
    }
    Err((last_refusal, Error::DestinationIpProhibited))
}

/// Sends `request` over a new connection to `addr`, the address that was checked.
async fn send_to(
    addr: SocketAddr,
    tls: bool,
    host: &str,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> SendResult {
    let connect_timeout = options.and_then(|o| o.connect_timeout).unwrap_or(Duration::from_secs(30));
    let first_byte_timeout = options.and_then(|o| o.first_byte_timeout).unwrap_or(Duration::from_secs(600));
    let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
            _ => Error::Connect(e),
        })?;
    // Only the path goes on the wire; the authority travels in the Host header.
    let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    *request.uri_mut() = http::Uri::builder().path_and_query(path).build().map_err(|_| Error::HttpRequestUriInvalid)?;

    let response = if tls {
        let stream = tls_connect(tcp, host).await?;
        exchange(stream, request, first_byte_timeout).await?
    } else {
        exchange(tcp, request, first_byte_timeout).await?
    };
    Ok(response)
}

async fn tls_connect(tcp: TcpStream, host: &str) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    use tokio_rustls::rustls;
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|_| Error::TlsProtocolError)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::from(ip),
        Err(_) => rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(Error::InvalidDnsNameError)?,
    };
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(Error::Tls)
}

async fn exchange<S>(stream: S, request: http::Request<WasiBody>, first_byte_timeout: Duration) -> SendResult
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection task moves the bytes; it ends when the response body is done or dropped.
    let driver = wasmtime_wasi::runtime::spawn(async move { conn.await.map_err(Error::from) });
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
    Ok((response, Box::new(driver) as IoFuture))
}
