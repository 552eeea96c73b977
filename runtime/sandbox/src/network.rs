//! Network capability: the checks that the socket, DNS and HTTP hooks share.
//!
//! One [`NetworkPolicy`] is built per phase from its effective grant. The same policy answers
//! three hooks: wasmtime's `socket_addr_check` (every bind, connect and datagram), the
//! `wasi:sockets/ip-name-lookup` shadow (which names may be resolved), and the wasi-http send
//! hook (which origins may be requested, and which addresses they may resolve to). Keeping the
//! three answers in one type is what makes "granted" mean the same thing everywhere.
//!
//! What a grant names (endpoints, origins, names) and which address ranges are blocked until a
//! grant names them is [`phasebox_grants`]' vocabulary; this module only applies it.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use phasebox_grants::blocked::{embedded_ipv4, is_blocked, names_blocked};
use phasebox_grants::{DnsName, Endpoint, Host, NetworkRequest, Origin, canonical_ip};

use wasmtime_wasi::sockets::SocketAddrUse;

use crate::error::SandboxError;
use crate::events::{CapabilityUse, EventSender, PhaseEvent};
use crate::grant::Documents;
use crate::limits::Monitor;

/// Grants the job's socket and DNS requests and builds the phase's policy from them and the
/// origins [`http::grant`](crate::http) granted. A blocked range opens only where the operator's
/// policy itself names a network inside it; `*` or `0.0.0.0/0` covers the request but names
/// nothing.
pub(crate) fn grant(
    docs: &Documents<'_>,
    ask: &NetworkRequest,
    dns: &[DnsName],
    http: Vec<Origin>,
) -> Result<Arc<NetworkPolicy>, SandboxError> {
    for e in &ask.connect {
        let what = || format!("network connect {e}");
        docs.require(what, |d| d.network.connect.iter().any(|p| p.covers(e)))?;
        if e.host.names_blocked() && !docs.allow.network.connect.iter().any(|p| p.covers(e) && p.host.names_blocked()) {
            return Err(docs.blocked_range_not_named(what()));
        }
    }
    if ask.bind {
        docs.require(|| "network bind".into(), |d| d.network.bind)?;
    }
    if ask.udp {
        docs.require(|| "network udp".into(), |d| d.network.udp)?;
    }
    for name in dns {
        let host = Host::Name(name.clone());
        docs.require(|| format!("dns {name}"), |d| d.dns.iter().any(|p| p.covers(&host)))?;
    }
    Ok(NetworkPolicy::new(ask.connect.clone(), ask.bind, ask.udp, dns.to_vec(), http))
}

/// Prepares an instance's WASI sockets from the phase's policy: TCP, UDP and name lookup are
/// switched on only when the grant can allow any of them, and every bind, connect and datagram
/// is asked of the policy and recorded as a capability use.
pub(crate) fn prepare(
    b: &mut wasmtime_wasi::WasiCtxBuilder,
    network: &Arc<NetworkPolicy>,
    events: &EventSender,
    monitor: &Arc<Monitor>,
) {
    let network = network.clone();
    b.allow_tcp(network.has_sockets());
    b.allow_udp(network.has_udp());
    b.allow_ip_name_lookup(network.has_dns());
    let events = events.clone();
    let monitor = monitor.clone();
    b.socket_addr_check(move |addr, usage| {
        let usage = match usage {
            SocketAddrUse::TcpBind => NetUse::TcpBind,
            SocketAddrUse::TcpListen => NetUse::TcpListen,
            SocketAddrUse::TcpAccept => NetUse::TcpAccept,
            SocketAddrUse::TcpConnect => NetUse::TcpConnect,
            SocketAddrUse::UdpBind => NetUse::UdpBind,
            SocketAddrUse::UdpSend => NetUse::UdpSend,
            SocketAddrUse::UdpReceive => NetUse::UdpReceive,
        };
        let verdict = network.check_socket(addr, usage);
        if let Err(reason) = &verdict {
            tracing::debug!(%addr, ?usage, %reason, "socket use denied");
        }
        let event = PhaseEvent::Capability(CapabilityUse {
            grant: "network".into(),
            call: format!("{usage:?} {addr}"),
            allowed: verdict.is_ok(),
            reason: verdict.err(),
            duration_ms: None,
        });
        let events = events.clone();
        let admitted = monitor.admit(&event);
        Box::pin(async move {
            let allowed = event_allowed(&event);
            if admitted {
                let _ = events.send(event).await;
            }
            allowed
        })
    });
}

fn event_allowed(event: &PhaseEvent) -> bool {
    matches!(event, PhaseEvent::Capability(CapabilityUse { allowed: true, .. }))
}

/// What a phase tried to do on the network, for the policy's verdict and the event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetUse {
    /// Open a TCP connection to the address.
    TcpConnect,
    /// Bind a TCP socket to a local address.
    TcpBind,
    /// Listen for TCP connections.
    TcpListen,
    /// Accept a TCP connection from the address.
    TcpAccept,
    /// Bind a UDP socket.
    UdpBind,
    /// Send a datagram to the address.
    UdpSend,
    /// Receive a datagram from the address.
    UdpReceive,
}

/// The network part of a phase's effective grant, ready to answer checks.
#[derive(Debug, Default)]
pub struct NetworkPolicy {
    connect: Vec<Endpoint>,
    bind: bool,
    udp: bool,
    dns: Vec<DnsName>,
    http: Vec<Origin>,
    /// Addresses the host resolved for granted names (from a grant's own names and from the
    /// phase's granted lookups); a connection to such an address counts as one to the name.
    resolved: Mutex<HashMap<IpAddr, HashSet<String>>>,
}

impl NetworkPolicy {
    /// Builds the policy from what a phase was granted.
    pub fn new(connect: Vec<Endpoint>, bind: bool, udp: bool, dns: Vec<DnsName>, http: Vec<Origin>) -> Arc<Self> {
        Arc::new(Self { connect, bind, udp, dns, http, resolved: Mutex::default() })
    }

    /// Whether any socket use may be allowed at all (decides whether TCP is switched on).
    pub fn has_sockets(&self) -> bool {
        !self.connect.is_empty() || self.bind
    }

    /// Whether UDP may be used at all.
    pub fn has_udp(&self) -> bool {
        self.udp
    }

    /// Whether any name may be resolved.
    pub fn has_dns(&self) -> bool {
        !self.dns.is_empty() || self.connect.iter().any(|e| e.host.name().is_some())
    }

    /// Whether any HTTP origin is granted.
    pub fn has_http(&self) -> bool {
        !self.http.is_empty()
    }

    /// The granted HTTP origins.
    pub fn http_origins(&self) -> &[Origin] {
        &self.http
    }

    /// Whether the phase may resolve `name`: it is granted for DNS, or a connect grant names it.
    pub fn may_resolve(&self, name: &str) -> bool {
        self.dns.iter().any(|n| n.matches(name))
            || self.connect.iter().any(|e| e.host.name().is_some_and(|n| n.matches(name)))
    }

    /// Records that `name` resolved to `addrs`, so connections to them count as connections
    /// to `name`.
    pub fn remember(&self, name: &str, addrs: impl IntoIterator<Item = IpAddr>) {
        let mut resolved = self.resolved.lock().expect("resolved map poisoned");
        for ip in addrs {
            resolved.entry(canonical_ip(ip)).or_default().insert(name.to_ascii_lowercase());
        }
    }

    /// The verdict on one socket use.
    pub fn check_socket(&self, addr: SocketAddr, usage: NetUse) -> Result<(), String> {
        let ip = canonical_ip(addr.ip());
        match usage {
            // connect() binds implicitly to the wildcard address first; that is part of
            // connecting, not a listening socket.
            NetUse::TcpBind if ip.is_unspecified() && addr.port() == 0 && self.has_sockets() => Ok(()),
            NetUse::TcpBind | NetUse::TcpListen | NetUse::TcpAccept => {
                if self.bind {
                    Ok(())
                } else {
                    Err(format!("binding or listening on {addr} needs the network `bind` grant"))
                }
            }
            NetUse::UdpBind if !self.udp => Err("UDP needs the network `udp` grant".into()),
            NetUse::UdpBind => Ok(()),
            NetUse::UdpSend | NetUse::UdpReceive if !self.udp => Err("UDP needs the network `udp` grant".into()),
            NetUse::TcpConnect | NetUse::UdpSend | NetUse::UdpReceive => self.check_peer(ip, addr.port()),
        }
    }

    fn check_peer(&self, ip: IpAddr, port: u16) -> Result<(), String> {
        // An IPv6 address that embeds a blocked IPv4 address reaches that address through a
        // translator: it needs a grant for the IPv4 address as well as for itself.
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = embedded_ipv4(v6).filter(|v4| is_blocked(IpAddr::V4(*v4)))
        {
            self.check_peer(IpAddr::V4(v4), port)
                .map_err(|why| format!("{} embeds {v4}: {why}", SocketAddr::new(ip, port)))?;
        }
        let blocked = is_blocked(ip);
        let resolved = self.resolved.lock().expect("resolved map poisoned");
        let names = resolved.get(&ip);
        let allowed = self.connect.iter().any(|e| {
            e.ports.contains(port)
                && match &e.host {
                    Host::Net(net) => net.contains(&ip) && (!blocked || names_blocked(net)),
                    Host::Name(name) => !blocked && names.is_some_and(|ns| ns.iter().any(|n| name.matches(n))),
                }
        });
        let named =
            self.connect.iter().any(|e| matches!(&e.host, Host::Net(net) if net.contains(&ip) && names_blocked(net)));
        if allowed {
            Ok(())
        } else if blocked && !named {
            Err(format!(
                "{} is in a blocked range (loopback, private, link-local or metadata) and no grant names it",
                SocketAddr::new(ip, port)
            ))
        } else {
            Err(format!("no network grant allows connecting to {}", SocketAddr::new(ip, port)))
        }
    }

    /// Whether an HTTP request to `scheme://host:port` is inside a granted origin.
    pub fn check_http_origin(&self, scheme: &str, host: &str, port: u16) -> Result<(), String> {
        if self.http.iter().any(|o| o.matches(scheme, host, port)) {
            Ok(())
        } else {
            Err(format!("no http grant allows {scheme}://{host}:{port}"))
        }
    }

    /// Whether an HTTP request for `host` may go to the resolved address `ip`: blocked ranges
    /// only when a granted origin names a network holding `ip`.
    pub fn check_http_addr(&self, scheme: &str, ip: IpAddr, port: u16) -> Result<(), String> {
        let ip = canonical_ip(ip);
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = embedded_ipv4(v6).filter(|v4| is_blocked(IpAddr::V4(*v4)))
        {
            self.check_http_addr(scheme, IpAddr::V4(v4), port)
                .map_err(|why| format!("{} embeds {v4}: {why}", SocketAddr::new(ip, port)))?;
        }
        if !is_blocked(ip) {
            return Ok(());
        }
        let named = self.http.iter().any(|o| {
            o.scheme.as_str().eq_ignore_ascii_case(scheme)
                && o.port == port
                && matches!(&o.host, Host::Net(net) if net.contains(&ip) && names_blocked(net))
        });
        if named {
            Ok(())
        } else {
            Err(format!(
                "{} is in a blocked range (loopback, private, link-local or metadata) and no http grant names it",
                SocketAddr::new(ip, port)
            ))
        }
    }
}

/// Convenience for tests and callers holding plain addresses.
pub fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// The IPv4-mapped IPv6 form of an IPv4 address (`::ffff:a.b.c.d`).
pub fn mapped(ip: Ipv4Addr) -> IpAddr {
    IpAddr::V6(ip.to_ipv6_mapped())
}

#[cfg(test)]
mod tests {
    use phasebox_grants::{EndpointPattern, GrantRequest, NetworkRule, OriginPattern};

    use super::*;
    use crate::{Capabilities, Grant, Policy};

    #[test]
    fn only_a_policy_that_names_a_blocked_range_opens_it() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = Capabilities::everything();
        let allowing = |endpoints: &[&str], origins: &[&str]| Policy {
            allow: Capabilities {
                network: NetworkRule {
                    connect: endpoints.iter().map(|e| EndpointPattern::parse(e).unwrap()).collect(),
                    ..NetworkRule::default()
                },
                http: origins.iter().map(|o| OriginPattern::parse(o).unwrap()).collect(),
                ..Capabilities::default()
            },
            ..Policy::default()
        };
        let asking = |endpoint: &str| {
            let mut ask = GrantRequest::default();
            ask.network.connect = vec![Endpoint::parse(endpoint).unwrap()];
            ask
        };
        let asking_http =
            |origin: &str| GrantRequest { http: vec![Origin::parse(origin).unwrap()], ..Default::default() };
        for broad in [&["*"][..], &["0.0.0.0/0", "[::/0]"], &["0.0.0.0/0:*", "[::/0]:*"]] {
            let policy = allowing(broad, &["*", "http://*:*", "https://*:*"]);
            for named in [
                "127.0.0.1:8080",
                "127.0.0.0/8",
                "[::1]:22",
                "169.254.169.254:80",
                "10.1.0.0/16:22",
                "[::ffff:127.0.0.1]:80",
            ] {
                let err = Grant::resolve("test", &plugin, &policy, &asking(named), dir.path()).unwrap_err();
                assert!(matches!(err, SandboxError::BlockedRangeNotNamed { .. }), "{broad:?} {named}: {err}");
            }
            for origin in ["http://127.0.0.1:8080", "http://169.254.169.254", "https://[::1]:443"] {
                let err = Grant::resolve("test", &plugin, &policy, &asking_http(origin), dir.path()).unwrap_err();
                assert!(matches!(err, SandboxError::BlockedRangeNotNamed { .. }), "{broad:?} {origin}: {err}");
            }
            // What a broad policy covers and names nothing blocked stays grantable.
            assert!(Grant::resolve("test", &plugin, &policy, &asking("93.184.216.34:443"), dir.path()).is_ok());
            assert!(Grant::resolve("test", &plugin, &policy, &asking("0.0.0.0/0:443"), dir.path()).is_ok());
        }
        let policy = allowing(&["127.0.0.0/8", "10.0.0.0/8:22"], &["http://127.0.0.1:8080"]);
        for named in ["127.0.0.1:8080", "10.1.0.0/16:22"] {
            assert!(Grant::resolve("test", &plugin, &policy, &asking(named), dir.path()).is_ok(), "{named}");
        }
        assert!(Grant::resolve("test", &plugin, &policy, &asking_http("http://127.0.0.1:8080"), dir.path()).is_ok());
        let policy = allowing(&["127.0.0.1:8080"], &[]);
        assert!(Grant::resolve("test", &plugin, &policy, &asking("127.0.0.1:8080"), dir.path()).is_ok());
        assert!(Grant::resolve("test", &plugin, &policy, &asking("127.0.0.1:8081"), dir.path()).is_err());
    }

    fn ep(s: &str) -> Endpoint {
        Endpoint::parse(s).unwrap()
    }

    fn policy(connect: &[&str]) -> Arc<NetworkPolicy> {
        NetworkPolicy::new(connect.iter().map(|s| ep(s)).collect(), false, false, vec![], vec![])
    }

    #[test]
    fn blocked_ranges_need_a_specific_grant() {
        // The widest a job can ask for names no blocked range.
        let any = policy(&["0.0.0.0/0", "[::/0]"]);
        for ip in [
            v4(127, 0, 0, 1),
            v4(10, 0, 0, 1),
            v4(192, 168, 1, 1),
            v4(172, 16, 0, 1),
            v4(169, 254, 169, 254),
            v4(100, 64, 0, 1),
            v4(0, 0, 0, 0),
            "::1".parse().unwrap(),
            "fe80::1".parse().unwrap(),
            "fd00::1".parse().unwrap(),
            mapped(Ipv4Addr::new(127, 0, 0, 1)),
            mapped(Ipv4Addr::new(169, 254, 169, 254)),
            "64:ff9b::a9fe:a9fe".parse().unwrap(),
            // SIIT (IPv4-translated), IPv4-compatible and 6to4 spellings of loopback and metadata
            "::ffff:0:7f00:1".parse().unwrap(),
            "::ffff:0:a9fe:a9fe".parse().unwrap(),
            "::7f00:1".parse().unwrap(),
            "2002:a9fe:a9fe::1".parse().unwrap(),
        ] {
            let err = any.check_socket(SocketAddr::new(ip, 80), NetUse::TcpConnect).unwrap_err();
            assert!(err.contains("blocked range"), "{ip}: {err}");
        }
        assert!(any.check_socket("93.184.216.34:80".parse().unwrap(), NetUse::TcpConnect).is_ok());

        let wide = policy(&["0.0.0.0/0", "[::/0]"]);
        assert!(wide.check_socket("127.0.0.1:80".parse().unwrap(), NetUse::TcpConnect).is_err());
        assert!(wide.check_socket("[::ffff:169.254.169.254]:80".parse().unwrap(), NetUse::TcpConnect).is_err());

        let named = policy(&["127.0.0.1:8080", "10.1.0.0/16:22"]);
        assert!(named.check_socket("127.0.0.1:8080".parse().unwrap(), NetUse::TcpConnect).is_ok());
        assert!(named.check_socket("[::ffff:127.0.0.1]:8080".parse().unwrap(), NetUse::TcpConnect).is_ok());
        assert!(named.check_socket("127.0.0.1:8081".parse().unwrap(), NetUse::TcpConnect).is_err());
        assert!(named.check_socket("10.1.200.3:22".parse().unwrap(), NetUse::TcpConnect).is_ok());
        assert!(named.check_socket("10.2.0.3:22".parse().unwrap(), NetUse::TcpConnect).is_err());
    }

    #[test]
    fn an_embedded_blocked_ipv4_needs_its_own_grant() {
        // Naming the translator's prefix is not naming the loopback or metadata address behind it.
        let nat64 = policy(&["[64:ff9b::/96]"]);
        let err = nat64.check_socket("[64:ff9b::7f00:1]:80".parse().unwrap(), NetUse::TcpConnect).unwrap_err();
        assert!(err.contains("embeds 127.0.0.1") && err.contains("blocked range"), "{err}");
        assert!(nat64.check_socket("[64:ff9b::5db8:d822]:80".parse().unwrap(), NetUse::TcpConnect).is_ok());
        let both = policy(&["[64:ff9b::/96]", "127.0.0.1"]);
        assert!(both.check_socket("[64:ff9b::7f00:1]:80".parse().unwrap(), NetUse::TcpConnect).is_ok());
        // An origin naming the SIIT spelling of loopback does not name loopback itself.
        let origins = |list: &[&str]| list.iter().map(|o| Origin::parse(o).unwrap()).collect();
        let siit = NetworkPolicy::new(vec![], false, false, vec![], origins(&["http://[::ffff:0:7f00:1]:80"]));
        let err = siit.check_http_addr("http", "::ffff:0:7f00:1".parse().unwrap(), 80).unwrap_err();
        assert!(err.contains("embeds 127.0.0.1"), "{err}");
        let both = origins(&["http://[::ffff:0:7f00:1]:80", "http://127.0.0.1:80"]);
        let both = NetworkPolicy::new(vec![], false, false, vec![], both);
        assert!(both.check_http_addr("http", "::ffff:0:7f00:1".parse().unwrap(), 80).is_ok());
    }

    #[test]
    fn names_allow_only_what_they_resolved_to() {
        let p = policy(&["example.com:443"]);
        let addr: SocketAddr = "93.184.216.34:443".parse().unwrap();
        assert!(p.check_socket(addr, NetUse::TcpConnect).is_err());
        p.remember("example.com", [addr.ip()]);
        assert!(p.check_socket(addr, NetUse::TcpConnect).is_ok());
        assert!(p.check_socket("93.184.216.34:80".parse().unwrap(), NetUse::TcpConnect).is_err());
        // A granted name that resolves into a blocked range does not unblock it.
        p.remember("example.com", [v4(127, 0, 0, 1)]);
        assert!(p.check_socket("127.0.0.1:443".parse().unwrap(), NetUse::TcpConnect).is_err());
        assert!(p.may_resolve("EXAMPLE.com."));
        assert!(!p.may_resolve("example.org"));
    }

    #[test]
    fn bind_listen_and_udp_need_their_grants() {
        let p = policy(&["0.0.0.0/0"]);
        assert!(p.check_socket("0.0.0.0:0".parse().unwrap(), NetUse::TcpBind).is_ok());
        assert!(p.check_socket("0.0.0.0:8080".parse().unwrap(), NetUse::TcpBind).is_err());
        assert!(p.check_socket("0.0.0.0:0".parse().unwrap(), NetUse::TcpListen).is_err());
        assert!(p.check_socket("0.0.0.0:0".parse().unwrap(), NetUse::UdpBind).is_err());
        assert!(p.check_socket("93.184.216.34:53".parse().unwrap(), NetUse::UdpSend).is_err());
        let none = policy(&[]);
        assert!(none.check_socket("0.0.0.0:0".parse().unwrap(), NetUse::TcpBind).is_err());
    }

    #[test]
    fn origins() {
        let origins = |list: &[&str]| list.iter().map(|o| Origin::parse(o).unwrap()).collect();
        let p = NetworkPolicy::new(
            vec![],
            false,
            false,
            vec![],
            origins(&["https://example.com", "http://127.0.0.1:8080"]),
        );
        assert!(p.check_http_origin("https", "EXAMPLE.com", 443).is_ok());
        assert!(p.check_http_origin("http", "example.com", 443).is_err());
        assert!(p.check_http_origin("https", "example.com", 8443).is_err());
        assert!(p.check_http_origin("http", "127.0.0.1", 8080).is_ok());
        assert!(p.check_http_addr("http", v4(127, 0, 0, 1), 8080).is_ok());
        assert!(p.check_http_addr("http", v4(169, 254, 169, 254), 8080).is_err());
        assert!(p.check_http_addr("https", v4(93, 184, 216, 34), 443).is_ok());
    }
}
