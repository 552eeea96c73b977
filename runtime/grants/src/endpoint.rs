//! Network endpoints: a host and the ports on it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::host::{Host, HostPattern};
use crate::{ParseError, text_form};

/// Which ports: `*`, one port, or an inclusive range `a-b`, each 1–65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ports {
    /// Any port.
    Any,
    /// An inclusive range; one port is a range of one.
    Range(u16, u16),
}

impl Ports {
    /// Parses `*`, `443` or `1000-2000`.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s == "*" {
            return Ok(Self::Any);
        }
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (port(a, s)?, port(b, s)?),
            None => {
                let p = port(s, s)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(ParseError::new(s, "the port range is backwards"));
        }
        Ok(Self::Range(lo, hi))
    }

    /// Whether these ports include every port of `other`.
    pub fn covers(&self, other: &Ports) -> bool {
        match (self, other) {
            (Self::Any, _) => true,
            (_, Self::Any) => false,
            (Self::Range(a, b), Self::Range(c, d)) => a <= c && d <= b,
        }
    }

    /// Whether `port` is one of these ports.
    pub fn contains(&self, port: u16) -> bool {
        match self {
            Self::Any => true,
            Self::Range(a, b) => (*a..=*b).contains(&port),
        }
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Range(a, b) if a == b => write!(f, "{a}"),
            Self::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

/// One port number, 1–65535, digits only.
pub(crate) fn port(s: &str, whole: &str) -> Result<u16, ParseError> {
    let n = (!s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse::<u32>().ok())
        .flatten()
        .filter(|n| (1..=65535).contains(n));
    n.map(|n| n as u16).ok_or_else(|| ParseError::new(whole, format!("`{s}` is not a port (1 to 65535)")))
}

/// Splits `host:ports`, `[v6]:ports`, `[v6]` or `host` into the host text and the port text.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, Option<&str>), ParseError> {
    if s.starts_with('[') {
        let close =
            s.find(']').ok_or_else(|| ParseError::new(s, "an IPv6 address opened with `[` is not closed with `]`"))?;
        let (host, after) = s.split_at(close + 1);
        return match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or_else(|| ParseError::new(s, "expected `:port` after `]`")),
        };
    }
    if s.matches(':').count() > 1 {
        return Err(ParseError::new(s, "write an IPv6 address in brackets, e.g. `[2001:db8::1]:443`"));
    }
    Ok(match s.rsplit_once(':') {
        Some((host, ports)) => (host, Some(ports)),
        None => (s, None),
    })
}

/// The ports of an endpoint whose port text is `ports`: a name needs them; an address or
/// network without them means any port.
fn endpoint_ports(text: &str, ports: Option<&str>, is_net: bool) -> Result<Ports, ParseError> {
    match ports {
        Some(p) => Ports::parse(p).map_err(|e| ParseError::new(text, e.why)),
        None if is_net => Ok(Ports::Any),
        None => Err(ParseError::new(text, "a host name needs a port, e.g. `example.com:443` or `example.com:*`")),
    }
}

/// What a job asks to connect to: a [`Host`] and its [`Ports`] (`example.com:443`,
/// `10.1.0.0/16:22`, `[2001:db8::1]:443`, `dut:*`, `10.1.0.0/16`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint {
    /// Which host or network.
    pub host: Host,
    /// Which ports.
    pub ports: Ports,
}

impl Endpoint {
    /// Parses a job's endpoint.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        if s.starts_with('*') {
            return Err(ParseError::new(
                s,
                "a job names its hosts (a name, an address or a network); `*` is for manifests and policies",
            ));
        }
        let (host, ports) = split_host_port(s)?;
        let host = Host::parse(host).map_err(|e| ParseError::new(s, e.why))?;
        let ports = endpoint_ports(s, ports, host.net().is_some())?;
        Ok(Self { host, ports })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.ports) {
            (Host::Net(_), Ports::Any) => write!(f, "{}", self.host),
            (host, ports) => write!(f, "{host}:{ports}"),
        }
    }
}

text_form!(Endpoint);

/// What a manifest or policy allows connecting to: a [`HostPattern`] and its [`Ports`]; `*`
/// alone is every host and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointPattern {
    /// Which hosts.
    pub host: HostPattern,
    /// Which ports.
    pub ports: Ports,
}

impl EndpointPattern {
    /// Every host, every port.
    pub const ANY: Self = Self { host: HostPattern::Any, ports: Ports::Any };

    /// Parses an endpoint pattern.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        if s == "*" {
            return Ok(Self::ANY);
        }
        let (host, ports) = split_host_port(s)?;
        let host = HostPattern::parse(host).map_err(|e| ParseError::new(s, e.why))?;
        let ports = endpoint_ports(s, ports, matches!(host, HostPattern::Exact(Host::Net(_))))?;
        Ok(Self { host, ports })
    }

    /// Whether this pattern covers everything `endpoint` reaches.
    pub fn covers(&self, endpoint: &Endpoint) -> bool {
        self.host.covers(&endpoint.host) && self.ports.covers(&endpoint.ports)
    }
}

impl From<Endpoint> for EndpointPattern {
    fn from(e: Endpoint) -> Self {
        Self { host: e.host.into(), ports: e.ports }
    }
}

impl fmt::Display for EndpointPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.ports) {
            (HostPattern::Any, Ports::Any) => f.write_str("*"),
            (HostPattern::Exact(Host::Net(_)), Ports::Any) => write!(f, "{}", self.host),
            (host, ports) => write!(f, "{host}:{ports}"),
        }
    }
}

text_form!(EndpointPattern);

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        Endpoint::parse(s).unwrap()
    }
    fn pat(s: &str) -> EndpointPattern {
        EndpointPattern::parse(s).unwrap()
    }

    #[test]
    fn job_endpoints() {
        for (input, shown) in [
            ("example.com:443", "example.com:443"),
            ("EXAMPLE.com:443", "example.com:443"),
            ("dut:*", "dut:*"),
            ("dut:1000-2000", "dut:1000-2000"),
            ("10.1.2.3/16:22", "10.1.0.0/16:22"),
            ("10.1.0.0/16", "10.1.0.0/16"),
            ("10.0.0.1", "10.0.0.1"),
            ("[2001:db8::1]:443", "[2001:db8::1]:443"),
            ("[2001:db8::1]", "[2001:db8::1]"),
            ("[2001:db8::/32]:443", "[2001:db8::/32]:443"),
            ("[::ffff:10.0.0.1]:22", "10.0.0.1:22"),
            (" under_score.lab:80 ", "under_score.lab:80"),
        ] {
            let e = ep(input);
            assert_eq!(e.to_string(), shown, "{input}");
            assert_eq!(ep(shown), e, "{shown} reads back");
        }
        for bad in [
            "",
            "*",
            "*:443",
            "*.example.com:443",
            "example.com",
            "example.com:0",
            "example.com:65536",
            "example.com:+80",
            "example.com:http",
            "example.com:20-10",
            "2001:db8::1:443",
            "fd00::/8",
            "[2001:db8::1:443",
            "[2001:db8::1]443",
            "10.0.0.0/33",
            "-bad.com:80",
            "1.2.3.999:80",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_and_coverage() {
        for (input, shown) in [("*", "*"), ("*:443", "*:443"), ("*.example.com:1000-2000", "*.example.com:1000-2000")] {
            assert_eq!(pat(input).to_string(), shown);
            assert_eq!(pat(shown), pat(input));
        }
        assert!(EndpointPattern::parse("*.example.com").is_err(), "a name pattern needs a port");
        assert!(EndpointPattern::parse("::/0").is_err(), "bare IPv6 is refused in patterns too");
        assert!(pat("*").covers(&ep("example.com:443")));
        assert!(pat("*.example.com:*").covers(&ep("a.example.com:443")));
        assert!(!pat("*.example.com:*").covers(&ep("example.com:443")));
        assert!(pat("10.0.0.0/8").covers(&ep("10.1.0.0/16:22")));
        assert!(!pat("10.1.0.0/16").covers(&ep("10.0.0.0/8")));
        assert!(!pat("example.com:443").covers(&ep("example.com:*")));
        assert!(pat("example.com:400-500").covers(&ep("example.com:443")));
        assert!(!pat("example.com:443").covers(&ep("93.184.216.34:443")));
        assert_eq!(EndpointPattern::from(ep("10.0.0.1:22")), pat("10.0.0.1:22"));
    }

    #[test]
    fn serde_uses_the_text_form() {
        let e: Endpoint = serde_json::from_str("\"10.1.2.3/16:22\"").unwrap();
        assert_eq!(serde_json::to_string(&e).unwrap(), "\"10.1.0.0/16:22\"");
        assert!(serde_json::from_str::<Endpoint>("\"*\"").is_err());
        assert!(serde_json::from_str::<EndpointPattern>("\"*\"").is_ok());
    }
}
