//! Network capability: endpoint patterns, the blocked address ranges, and the checks that the
//! socket, DNS and HTTP hooks share.
//!
//! One [`NetworkPolicy`] is built per phase from its effective grant. The same policy answers
//! three hooks: wasmtime's `socket_addr_check` (every bind, connect and datagram), the
//! `wasi:sockets/ip-name-lookup` shadow (which names may be resolved), and the wasi-http send
//! hook (which origins may be requested, and which addresses they may resolve to). Keeping the
//! three answers in one type is what makes "granted" mean the same thing everywhere.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::error::PatternError;

/// The host part of an endpoint pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `*`: any host. Never unblocks the [blocked ranges](is_blocked), in a job's request or in
    /// the operator's policy.
    Any,
    /// A DNS name, lowercase, e.g. `example.com`.
    Name(String),
    /// `*.example.com`: every name below `example.com` (not `example.com` itself).
    Suffix(String),
    /// An address or network, e.g. `10.1.0.0/16`, `127.0.0.1` (a /32) or `[::1]`.
    Net(IpNet),
}

impl HostPattern {
    /// Parses the host part of a pattern (without the port).
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let bad = |why: &str| PatternError::new(s, why);
        let s = s.trim();
        if s.is_empty() {
            return Err(bad("the host is empty"));
        }
        if s == "*" {
            return Ok(Self::Any);
        }
        let unbracketed = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
        if let Ok(net) = IpNet::from_str(unbracketed) {
            return Ok(Self::Net(canonical_net(net)));
        }
        if let Ok(ip) = IpAddr::from_str(unbracketed) {
            return Ok(Self::Net(canonical_net(IpNet::from(ip))));
        }
        let (suffix, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !valid {
            return Err(bad("not a host name, address, CIDR network, `*` or `*.domain`"));
        }
        let name = name.to_ascii_lowercase();
        Ok(if suffix { Self::Suffix(name) } else { Self::Name(name) })
    }

    /// Whether this pattern covers everything `other` covers.
    pub fn covers(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (Self::Any, _) => true,
            (_, Self::Any) => false,
            (Self::Name(a), Self::Name(b)) => a == b,
            (Self::Suffix(a), Self::Name(b)) => name_below(b, a),
            (Self::Suffix(a), Self::Suffix(b)) => a == b || name_below(b, a),
            (Self::Net(a), Self::Net(b)) => a.contains(b),
            _ => false,
        }
    }

    /// Whether this pattern matches the DNS name `name`.
    pub fn matches_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match self {
            Self::Any => true,
            Self::Name(n) => *n == name,
            Self::Suffix(s) => name_below(&name, s),
            Self::Net(net) => IpAddr::from_str(&name).is_ok_and(|ip| net.contains(&canonical_ip(ip))),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Name(n) => f.write_str(n),
            Self::Suffix(s) => write!(f, "*.{s}"),
            Self::Net(IpNet::V4(n)) if n.prefix_len() == 32 => write!(f, "{}", n.addr()),
            Self::Net(IpNet::V6(n)) if n.prefix_len() == 128 => write!(f, "[{}]", n.addr()),
            Self::Net(IpNet::V6(n)) => write!(f, "[{n}]"),
            Self::Net(n) => write!(f, "{n}"),
        }
    }
}

fn name_below(name: &str, domain: &str) -> bool {
    name.len() > domain.len() + 1 && name.ends_with(domain) && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
}

/// The port part of an endpoint pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortPattern {
    /// `*` (or no port given for a network): any port.
    Any,
    /// An inclusive range; a single port is a range of one.
    Range(u16, u16),
}

impl PortPattern {
    fn parse(s: &str, whole: &str) -> Result<Self, PatternError> {
        if s == "*" {
            return Ok(Self::Any);
        }
        let port = |p: &str| {
            p.parse::<u16>().map_err(|_| PatternError::new(whole, "the port is not a number from 0 to 65535"))
        };
        match s.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                if a > b {
                    return Err(PatternError::new(whole, "the port range is backwards"));
                }
                Ok(Self::Range(a, b))
            }
            None => {
                let p = port(s)?;
                Ok(Self::Range(p, p))
            }
        }
    }

    fn covers(&self, other: &PortPattern) -> bool {
        match (self, other) {
            (Self::Any, _) => true,
            (_, Self::Any) => false,
            (Self::Range(a, b), Self::Range(c, d)) => a <= c && d <= b,
        }
    }

    fn matches(&self, port: u16) -> bool {
        match self {
            Self::Any => true,
            Self::Range(a, b) => (*a..=*b).contains(&port),
        }
    }
}

/// A network endpoint pattern: `host:port`, `[v6]:port`, `CIDR`, `CIDR:port`, `*.domain:port`,
/// `host:*` or `*`. A port may be a range `1000-2000`. A host name or `*` must carry a port
/// (`*` alone means every host and port).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint {
    /// Which hosts.
    pub host: HostPattern,
    /// Which ports.
    pub port: PortPattern,
}

impl Endpoint {
    /// Parses an endpoint pattern.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let s = s.trim();
        if s == "*" {
            return Ok(Self { host: HostPattern::Any, port: PortPattern::Any });
        }
        // `[v6]:port`, `[v6/64]:port` or `[v6]`
        if let Some(rest) = s.strip_prefix('[') {
            let (inner, after) =
                rest.split_once(']').ok_or_else(|| PatternError::new(s, "`[` without a closing `]`"))?;
            let host = HostPattern::parse(inner)?;
            let port = match after.strip_prefix(':') {
                Some(p) => PortPattern::parse(p, s)?,
                None if after.is_empty() => PortPattern::Any,
                None => return Err(PatternError::new(s, "unexpected text after `]`")),
            };
            return Ok(Self { host, port });
        }
        // A bare IPv6 address or network has several colons and no port.
        if s.matches(':').count() > 1 {
            let host = HostPattern::parse(s)?;
            return Ok(Self { host, port: PortPattern::Any });
        }
        match s.rsplit_once(':') {
            Some((h, p)) => Ok(Self { host: HostPattern::parse(h)?, port: PortPattern::parse(p, s)? }),
            None => {
                let host = HostPattern::parse(s)?;
                if !matches!(host, HostPattern::Net(_)) {
                    return Err(PatternError::new(
                        s,
                        "a host name needs a port, e.g. `example.com:443` or `example.com:*`",
                    ));
                }
                Ok(Self { host, port: PortPattern::Any })
            }
        }
    }

    /// Whether this pattern covers everything `other` covers.
    pub fn covers(&self, other: &Endpoint) -> bool {
        self.host.covers(&other.host) && self.port.covers(&other.port)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, &self.port) {
            (HostPattern::Any, PortPattern::Any) => f.write_str("*"),
            (HostPattern::Net(_), PortPattern::Any) => write!(f, "{}", self.host),
            (h, PortPattern::Any) => write!(f, "{h}:*"),
            (h, PortPattern::Range(a, b)) if a == b => write!(f, "{h}:{a}"),
            (h, PortPattern::Range(a, b)) => write!(f, "{h}:{a}-{b}"),
        }
    }
}

impl TryFrom<String> for Endpoint {
    type Error = PatternError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Endpoint> for String {
    fn from(e: Endpoint) -> String {
        e.to_string()
    }
}

impl FromStr for Endpoint {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// An HTTP origin pattern: `scheme://host:port` (the port defaults to the scheme's), or `*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Origin {
    /// `http`, `https`, or `None` for any scheme.
    pub scheme: Option<String>,
    /// Which hosts and ports.
    pub endpoint: Endpoint,
}

impl Origin {
    /// Parses an origin pattern.
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let s = s.trim();
        if s == "*" {
            return Ok(Self { scheme: None, endpoint: Endpoint::parse("*")? });
        }
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| PatternError::new(s, "an origin is `scheme://host:port`, e.g. `https://example.com:443`"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "*" => None,
            sch @ ("http" | "https") => Some(sch.to_owned()),
            _ => return Err(PatternError::new(s, "the scheme must be http, https or *")),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(PatternError::new(s, "an origin has no path"));
        }
        let has_port = if rest.starts_with('[') { rest.contains("]:") } else { rest.contains(':') };
        let endpoint = if has_port || rest == "*" {
            Endpoint::parse(rest)?
        } else {
            let port = match scheme.as_deref() {
                Some("http") => "80",
                Some("https") => "443",
                _ => "*",
            };
            Endpoint::parse(&format!("{rest}:{port}"))?
        };
        Ok(Self { scheme, endpoint })
    }

    /// Whether this pattern covers everything `other` covers.
    pub fn covers(&self, other: &Origin) -> bool {
        let scheme_ok = match (&self.scheme, &other.scheme) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a == b,
        };
        scheme_ok && self.endpoint.covers(&other.endpoint)
    }

    /// Whether a request to `scheme://host:port` is inside this origin.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.scheme.as_deref().is_none_or(|s| s.eq_ignore_ascii_case(scheme))
            && self.endpoint.host.matches_name(host)
            && self.endpoint.port.matches(port)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scheme {
            None if self.endpoint == Endpoint::parse("*").expect("valid") => f.write_str("*"),
            None => write!(f, "*://{}", self.endpoint),
            Some(s) => write!(f, "{s}://{}", self.endpoint),
        }
    }
}

impl TryFrom<String> for Origin {
    type Error = PatternError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Origin> for String {
    fn from(o: Origin) -> String {
        o.to_string()
    }
}

/// Maps IPv4-mapped and IPv4-compatible IPv6 addresses to plain IPv4, so that `::ffff:10.0.0.1`
/// meets the same rules as `10.0.0.1`.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::new(v4, n.prefix_len() - 96).expect("prefix fits")),
            None => net.trunc(),
        },
        _ => net.trunc(),
    }
}

/// Address ranges no phase reaches unless its grant names an address or network inside them:
/// loopback, private, shared (CGNAT), link-local (which holds the cloud metadata service
/// 169.254.169.254), unspecified, multicast, broadcast, documentation and benchmarking
/// ranges, IPv6 unique-local, link-local and site-local, and the IPv6 forms that embed IPv4
/// (IPv4-compatible `::/96`, SIIT `::ffff:0:0/96`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`,
/// 6to4 `2002::/16`, Teredo `2001::/32`), whose embedded address could point anywhere,
/// including at a blocked IPv4 address. (IPv4-mapped `::ffff:a.b.c.d` is not listed: it is
/// [mapped to IPv4](canonical_ip) before any check and meets the IPv4 rules.)
///
/// A job's grant can name such a network only when the operator's policy names it too: the
/// policy must hold a network inside a blocked range that covers the request (`127.0.0.0/8`
/// or `127.0.0.1:8080` lets a job ask for `127.0.0.1:8080`; `*` or `0.0.0.0/0` does not). See
/// [`Grant::resolve`](crate::Grant::resolve).
pub fn blocked_ranges() -> &'static [IpNet] {
    use std::sync::OnceLock;
    static RANGES: OnceLock<Vec<IpNet>> = OnceLock::new();
    RANGES.get_or_init(|| {
        [
            "0.0.0.0/8",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.0.0.0/24",
            "192.0.2.0/24",
            "192.88.99.0/24",
            "192.168.0.0/16",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "224.0.0.0/4",
            "240.0.0.0/4",
            "::/128",
            "::1/128",
            "::/96",
            "::ffff:0:0:0/96",
            "64:ff9b::/96",
            "64:ff9b:1::/48",
            "100::/64",
            "2001::/32",
            "2001:db8::/32",
            "2002::/16",
            "fc00::/7",
            "fe80::/10",
            "fec0::/10",
            "ff00::/8",
        ]
        .iter()
        .map(|s| s.parse().expect("valid network"))
        .collect()
    })
}

/// Whether `ip` lies in one of the [blocked ranges](blocked_ranges).
pub fn is_blocked(ip: IpAddr) -> bool {
    let ip = canonical_ip(ip);
    blocked_ranges().iter().any(|n| n.contains(&ip))
}

/// Whether a granted network is specific enough to unblock the blocked addresses it holds:
/// it must lie wholly inside one blocked range. `10.1.0.0/16` names a private network;
/// `0.0.0.0/0` does not name anything in particular, so it never reaches loopback or the
/// metadata service.
pub(crate) fn names_blocked(net: &IpNet) -> bool {
    blocked_ranges().iter().any(|b| b.contains(net))
}

/// The IPv4 address an IPv6 address embeds, for the embeddings that carry it in a fixed place:
/// IPv4-compatible (`::a.b.c.d`), SIIT (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and
/// 6to4 (`2002:aabb:ccdd::/48`).
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0, _, _] if !ip.is_unspecified() && !ip.is_loopback() => Some(low),
        [0, 0, 0, 0, 0xffff, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, a, b, ..] => Some(Ipv4Addr::new((a >> 8) as u8, a as u8, (b >> 8) as u8, b as u8)),
        _ => None,
    }
}

/// Whether `host` names a network inside a blocked range (and so would open it).
pub(crate) fn host_names_blocked(host: &HostPattern) -> bool {
    matches!(host, HostPattern::Net(net) if names_blocked(net))
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
    dns: Vec<HostPattern>,
    http: Vec<Origin>,
    /// Addresses the host resolved for granted names (from a grant's own names and from the
    /// phase's granted lookups); a connection to such an address counts as one to the name.
    resolved: Mutex<HashMap<IpAddr, HashSet<String>>>,
}

impl NetworkPolicy {
    /// Builds the policy from granted patterns.
    pub fn new(connect: Vec<Endpoint>, bind: bool, udp: bool, dns: Vec<HostPattern>, http: Vec<Origin>) -> Arc<Self> {
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
        !self.dns.is_empty()
            || self.connect.iter().any(|e| matches!(e.host, HostPattern::Name(_) | HostPattern::Suffix(_)))
    }

    /// Whether any HTTP origin is granted.
    pub fn has_http(&self) -> bool {
        !self.http.is_empty()
    }

    /// Whether the phase may resolve `name`: it is granted for DNS, or a connect grant names it.
    pub fn may_resolve(&self, name: &str) -> bool {
        self.dns.iter().any(|p| p.matches_name(name))
            || self
                .connect
                .iter()
                .any(|e| matches!(e.host, HostPattern::Name(_) | HostPattern::Suffix(_)) && e.host.matches_name(name))
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
            e.port.matches(port)
                && match &e.host {
                    HostPattern::Net(net) => net.contains(&ip) && (!blocked || names_blocked(net)),
                    HostPattern::Any => !blocked,
                    host => !blocked && names.is_some_and(|ns| ns.iter().any(|n| host.matches_name(n))),
                }
        });
        let named = self
            .connect
            .iter()
            .any(|e| matches!(&e.host, HostPattern::Net(net) if net.contains(&ip) && names_blocked(net)));
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
            o.scheme.as_deref().is_none_or(|s| s.eq_ignore_ascii_case(scheme))
                && o.endpoint.port.matches(port)
                && matches!(&o.endpoint.host, HostPattern::Net(net) if net.contains(&ip) && names_blocked(net))
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
    use super::*;

    fn ep(s: &str) -> Endpoint {
        Endpoint::parse(s).unwrap()
    }

    fn policy(connect: &[&str]) -> Arc<NetworkPolicy> {
        NetworkPolicy::new(connect.iter().map(|s| ep(s)).collect(), false, false, vec![], vec![])
    }

    #[test]
    fn endpoint_forms_parse_and_print() {
        for (input, shown) in [
            ("example.com:443", "example.com:443"),
            ("EXAMPLE.com:443", "example.com:443"),
            ("*.example.com:1000-2000", "*.example.com:1000-2000"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8:22", "10.0.0.0/8:22"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("[::1]:22", "[::1]:22"),
            ("[fd00::/8]:22", "[fd00::/8]:22"),
            ("fd00::/8", "[fd00::/8]"),
            ("[::ffff:10.0.0.1]:22", "10.0.0.1:22"),
            ("host:*", "host:*"),
            ("*", "*"),
        ] {
            assert_eq!(ep(input).to_string(), shown, "{input}");
        }
        for bad in ["example.com", "host:99999", "host:20-10", "a..b:1", "[::1:22", "", "h st:1"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn coverage_is_containment() {
        assert!(ep("*").covers(&ep("example.com:443")));
        assert!(ep("*.example.com:*").covers(&ep("a.example.com:443")));
        assert!(!ep("*.example.com:*").covers(&ep("example.com:443")));
        assert!(!ep("*.example.com:*").covers(&ep("evilexample.com:443")));
        assert!(ep("10.0.0.0/8").covers(&ep("10.1.0.0/16:22")));
        assert!(!ep("10.1.0.0/16").covers(&ep("10.0.0.0/8")));
        assert!(!ep("example.com:443").covers(&ep("example.com:*")));
        assert!(!ep("example.com:443").covers(&ep("93.184.216.34:443")));
    }

    #[test]
    fn blocked_ranges_need_a_specific_grant() {
        let any = policy(&["*"]);
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

        let wide = policy(&["0.0.0.0/0", "::/0"]);
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
        for (v6, v4) in [
            ("::ffff:0:7f00:1", Some("127.0.0.1")),
            ("::7f00:1", Some("127.0.0.1")),
            ("64:ff9b::a9fe:a9fe", Some("169.254.169.254")),
            ("2002:a9fe:a9fe::1", Some("169.254.169.254")),
            ("::1", None),
            ("::", None),
            ("2001:db8::1", None),
        ] {
            let embedded = embedded_ipv4(v6.parse().unwrap()).map(|a| a.to_string());
            assert_eq!(embedded.as_deref(), v4, "{v6}");
        }
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
        let p = policy(&["*"]);
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
        let o = Origin::parse("https://example.com").unwrap();
        assert_eq!(o.to_string(), "https://example.com:443");
        assert!(o.matches("https", "example.com", 443));
        assert!(!o.matches("http", "example.com", 443));
        assert!(!o.matches("https", "example.com", 8443));
        assert!(Origin::parse("*").unwrap().covers(&o));
        assert!(Origin::parse("https://*:*").unwrap().covers(&o));
        assert!(!Origin::parse("http://*:*").unwrap().covers(&o));
        assert!(Origin::parse("ftp://x:1").is_err());
        assert!(Origin::parse("https://x:1/path").is_err());
        let p = NetworkPolicy::new(vec![], false, false, vec![], vec![Origin::parse("http://127.0.0.1:8080").unwrap()]);
        assert!(p.check_http_origin("http", "127.0.0.1", 8080).is_ok());
        assert!(p.check_http_addr("http", v4(127, 0, 0, 1), 8080).is_ok());
        assert!(p.check_http_addr("http", v4(169, 254, 169, 254), 8080).is_err());
    }
}
