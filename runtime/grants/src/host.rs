//! Hosts: DNS names, addresses and networks, and the patterns over them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::{ParseError, text_form};

/// A DNS host name, lowercase (see the [crate rules](crate#the-grammar)).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsName(String);

impl DnsName {
    /// Parses a host name.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bad = |why: &str| ParseError::new(s, why);
        if s.is_empty() || s.len() > 253 {
            return Err(bad("a host name has 1 to 253 characters"));
        }
        for label in s.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(bad("not a host name: dot-separated labels of letters, digits, `-` and `_`, none empty, \
                     none starting or ending with `-`"));
            }
        }
        let last = s.rsplit('.').next().unwrap_or(s);
        let numeric = last.bytes().all(|b| b.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .or_else(|| last.strip_prefix("0X"))
                .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        if numeric {
            return Err(bad("ends in a number, which resolvers read as an IPv4 address; write the address itself"));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// The name, lowercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` (as a guest or a URL wrote it: any case, perhaps with a final dot) is
    /// this name.
    pub fn matches(&self, name: &str) -> bool {
        name.trim_end_matches('.').eq_ignore_ascii_case(&self.0)
    }

    /// Whether this name lies strictly below `domain` (`a.example.com` below `example.com`).
    pub fn is_below(&self, domain: &DnsName) -> bool {
        let (name, domain) = (self.0.as_str(), domain.0.as_str());
        name.len() > domain.len() + 1
            && name.ends_with(domain)
            && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_form!(DnsName);

/// One host a job names: a DNS name, or an address or network (an address is a network of
/// one: `/32` or `/128`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Host {
    /// A name, resolved by the host when the phase uses it.
    Name(DnsName),
    /// An address or network, canonical: IPv4-mapped IPv6 is IPv4, host bits dropped.
    Net(IpNet),
}

impl Host {
    /// Parses a host: a name, an IPv4 address or network, or a bracketed IPv6 address or
    /// network.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| ParseError::new(s, "an IPv6 address opened with `[` is not closed with `]`"))?;
            let net = match Ipv6Net::from_str(inner) {
                Ok(net) => net,
                Err(_) => inner
                    .parse::<std::net::Ipv6Addr>()
                    .map(Ipv6Net::from)
                    .map_err(|_| ParseError::new(s, "not an IPv6 address or network inside the brackets"))?,
            };
            return Ok(Self::Net(canonical_net(IpNet::V6(net))));
        }
        if s.contains(':') {
            return Err(ParseError::new(s, "write an IPv6 address in brackets, e.g. `[2001:db8::1]:443`"));
        }
        if s.contains('/') {
            let net = Ipv4Net::from_str(s)
                .map_err(|_| ParseError::new(s, "not an IPv4 network (`a.b.c.d/len`, len 0 to 32)"))?;
            return Ok(Self::Net(canonical_net(IpNet::V4(net))));
        }
        if let Ok(v4) = s.parse::<std::net::Ipv4Addr>() {
            return Ok(Self::Net(IpNet::from(IpAddr::V4(v4))));
        }
        DnsName::parse(s).map(Self::Name)
    }

    /// The address, when this host is exactly one address.
    pub fn addr(&self) -> Option<IpAddr> {
        match self {
            Self::Net(net) if net.prefix_len() == net.max_prefix_len() => Some(net.addr()),
            _ => None,
        }
    }

    /// The name, when this host is a name.
    pub fn name(&self) -> Option<&DnsName> {
        match self {
            Self::Name(n) => Some(n),
            Self::Net(_) => None,
        }
    }

    /// The network, when this host is an address or network.
    pub fn net(&self) -> Option<&IpNet> {
        match self {
            Self::Net(n) => Some(n),
            Self::Name(_) => None,
        }
    }

    /// Whether this host names an address or network inside a [blocked range](crate::blocked)
    /// (and so would open it).
    pub fn names_blocked(&self) -> bool {
        self.net().is_some_and(crate::blocked::names_blocked)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => write!(f, "{n}"),
            Self::Net(IpNet::V4(n)) if n.prefix_len() == 32 => write!(f, "{}", n.addr()),
            Self::Net(IpNet::V6(n)) if n.prefix_len() == 128 => write!(f, "[{}]", n.addr()),
            Self::Net(IpNet::V6(n)) => write!(f, "[{n}]"),
            Self::Net(n) => write!(f, "{n}"),
        }
    }
}

text_form!(Host);

/// Which hosts a manifest or policy allows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HostPattern {
    /// `*`: any host. Never opens a [blocked range](crate::blocked).
    Any,
    /// `*.example.com`: every name below `example.com` (not `example.com` itself).
    Suffix(DnsName),
    /// One name, address or network.
    Exact(Host),
}

impl HostPattern {
    /// Parses a host pattern: `*`, `*.domain`, or a [`Host`].
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "*" => Ok(Self::Any),
            _ => match s.strip_prefix("*.") {
                Some(domain) => DnsName::parse(domain).map(Self::Suffix).map_err(|e| ParseError::new(s, e.why)),
                None if s.contains('*') => {
                    Err(ParseError::new(s, "`*` stands alone (any host) or opens a name (`*.example.com`)"))
                }
                None => Host::parse(s).map(Self::Exact),
            },
        }
    }

    /// Whether this pattern covers every address or name `host` reaches.
    pub fn covers(&self, host: &Host) -> bool {
        match (self, host) {
            (Self::Any, _) => true,
            (Self::Suffix(domain), Host::Name(name)) => name.is_below(domain),
            (Self::Exact(Host::Name(a)), Host::Name(b)) => a == b,
            (Self::Exact(Host::Net(a)), Host::Net(b)) => a.contains(b),
            _ => false,
        }
    }

    /// Whether this pattern names an address or network inside a blocked range.
    pub fn names_blocked(&self) -> bool {
        matches!(self, Self::Exact(host) if host.names_blocked())
    }
}

impl From<Host> for HostPattern {
    fn from(host: Host) -> Self {
        Self::Exact(host)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Suffix(domain) => write!(f, "*.{domain}"),
            Self::Exact(host) => write!(f, "{host}"),
        }
    }
}

text_form!(HostPattern);

/// Maps IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) to plain IPv4, so that `::ffff:10.0.0.1`
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
            Some(v4) => IpNet::V4(Ipv4Net::new(v4, n.prefix_len() - 96).expect("prefix fits")).trunc(),
            None => net.trunc(),
        },
        _ => net.trunc(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(DnsName::parse("Lab-1.Example.com").unwrap().as_str(), "lab-1.example.com");
        assert!(DnsName::parse("_ssh.under_score.lab").is_ok(), "underscores appear in lab names");
        assert!(DnsName::parse("dut").is_ok());
        assert!(DnsName::parse("1e100.net").is_ok());
        for bad in ["", "a..b", "-a.com", "a-.com", "a b", "a.com.", "127.1", "1.2.3.999", "0x7f.1", "é.com"] {
            assert!(DnsName::parse(bad).is_err(), "{bad}");
        }
        let n = DnsName::parse("example.com").unwrap();
        assert!(n.matches("EXAMPLE.com."));
        assert!(DnsName::parse("a.example.com").unwrap().is_below(&n));
        assert!(!DnsName::parse("evilexample.com").unwrap().is_below(&n));
        assert!(!n.is_below(&n));
    }

    #[test]
    fn hosts_parse_and_print_canonically() {
        for (input, shown) in [
            ("example.com", "example.com"),
            ("10.0.0.1", "10.0.0.1"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("[::1]", "[::1]"),
            ("[fd00::1/8]", "[fd00::/8]"),
            ("[::ffff:10.0.0.1]", "10.0.0.1"),
            ("[::ffff:10.0.0.0/104]", "10.0.0.0/8"),
        ] {
            let host = Host::parse(input).unwrap();
            assert_eq!(host.to_string(), shown, "{input}");
            assert_eq!(Host::parse(shown).unwrap(), host, "{shown} reads back");
        }
        for bad in ["::1", "fd00::/8", "[::1", "[10.0.0.1]", "10.0.0.0/33", "10.0.0/8", "[::1/129]"] {
            assert!(Host::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_cover_hosts() {
        let p = |s: &str| HostPattern::parse(s).unwrap();
        let h = |s: &str| Host::parse(s).unwrap();
        assert!(p("*").covers(&h("example.com")) && p("*").covers(&h("[::1]")));
        assert!(p("*.example.com").covers(&h("a.b.example.com")));
        assert!(!p("*.example.com").covers(&h("example.com")));
        assert!(p("10.0.0.0/8").covers(&h("10.1.0.0/16")));
        assert!(!p("10.1.0.0/16").covers(&h("10.0.0.0/8")));
        assert!(!p("example.com").covers(&h("93.184.216.34")), "a name never covers an address");
        for bad in ["*.*.com", "a*.com", "*example.com", "*."] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(p("127.0.0.0/8").names_blocked() && !p("0.0.0.0/0").names_blocked() && !p("*").names_blocked());
    }
}
