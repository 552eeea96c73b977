//! HTTP origins: `scheme://host:port`.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::endpoint::{EndpointPattern, Ports, port, split_host_port};
use crate::host::{Host, HostPattern, canonical_ip};
use crate::{ParseError, text_form};

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// `http`, port 80 by default.
    Http,
    /// `https`, port 443 by default.
    Https,
}

impl Scheme {
    /// Reads a scheme in any case.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("http") {
            Some(Self::Http)
        } else if s.eq_ignore_ascii_case("https") {
            Some(Self::Https)
        } else {
            None
        }
    }

    /// The port an origin of this scheme has when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splits `scheme://authority` (one trailing `/` allowed) and refuses user, path, query and
/// fragment.
fn split_origin(s: &str) -> Result<(&str, &str), ParseError> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| ParseError::new(s, "an origin is `scheme://host[:port]`, e.g. `https://example.com`"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err(ParseError::new(s, "an origin has no user, path, query or fragment: `scheme://host[:port]`"));
    }
    Ok((scheme, rest))
}

/// An HTTP origin a job asks for: scheme, one host and one port (the scheme's when not
/// written): `https://example.com`, `http://10.0.0.1:8080`, `https://[::1]:8443`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Origin {
    /// The scheme.
    pub scheme: Scheme,
    /// One name or one address.
    pub host: Host,
    /// The port.
    pub port: u16,
}

impl Origin {
    /// Parses a job's origin.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        let (scheme_text, rest) = split_origin(s)?;
        let scheme = Scheme::parse(scheme_text)
            .ok_or_else(|| ParseError::new(s, format!("scheme `{scheme_text}` is not `http` or `https`")))?;
        let (host, port_text) = split_host_port(rest).map_err(|e| ParseError::new(s, e.why))?;
        if host.starts_with('*') {
            return Err(ParseError::new(s, "a job names its hosts; `*` is for manifests and policies"));
        }
        let host = Host::parse(host).map_err(|e| ParseError::new(s, e.why))?;
        if host.net().is_some() && host.addr().is_none() {
            return Err(ParseError::new(s, "an origin names one host, not a network"));
        }
        let port = match port_text {
            Some(p) => port(p, s)?,
            None => scheme.default_port(),
        };
        Ok(Self { scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` (as a URL names it: any case, IPv6 without
    /// brackets) goes to this origin.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host_ok = match &self.host {
            Host::Name(name) => name.matches(host),
            Host::Net(_) => host.parse::<IpAddr>().is_ok_and(|ip| Some(canonical_ip(ip)) == self.host.addr()),
        };
        self.scheme.as_str().eq_ignore_ascii_case(scheme) && host_ok && self.port == port
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

text_form!(Origin);

/// The HTTP origins a manifest or policy allows: a scheme (or any) and an [`EndpointPattern`].
/// `*` is every origin; `*://host:*`, `https://*:*`, `http://10.0.0.1:8000-8999` are others.
/// Like an [`Origin`], it names hosts (or `*`, `*.domain`), never a network.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OriginPattern {
    /// The scheme, or `None` for either.
    pub scheme: Option<Scheme>,
    /// Which hosts and ports.
    pub endpoint: EndpointPattern,
}

impl OriginPattern {
    /// Every origin.
    pub const ANY: Self = Self { scheme: None, endpoint: EndpointPattern::ANY };

    /// Parses an origin pattern.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        if s == "*" {
            return Ok(Self::ANY);
        }
        let (scheme_text, rest) = split_origin(s)?;
        let scheme =
            match scheme_text {
                "*" => None,
                _ => Some(Scheme::parse(scheme_text).ok_or_else(|| {
                    ParseError::new(s, format!("scheme `{scheme_text}` is not `http`, `https` or `*`"))
                })?),
            };
        let (host, port_text) = split_host_port(rest).map_err(|e| ParseError::new(s, e.why))?;
        let host = HostPattern::parse(host).map_err(|e| ParseError::new(s, e.why))?;
        let ports = match (port_text, scheme) {
            (Some(p), _) => Ports::parse(p).map_err(|e| ParseError::new(s, e.why))?,
            (None, Some(scheme)) => {
                let p = scheme.default_port();
                Ports::Range(p, p)
            }
            (None, None) => Ports::Any,
        };
        Ok(Self { scheme, endpoint: EndpointPattern { host, ports } })
    }

    /// Whether this pattern covers `origin`.
    pub fn covers(&self, origin: &Origin) -> bool {
        self.scheme.is_none_or(|s| s == origin.scheme)
            && self.endpoint.host.covers(&origin.host)
            && self.endpoint.ports.contains(origin.port)
    }
}

impl From<Origin> for OriginPattern {
    fn from(o: Origin) -> Self {
        Self {
            scheme: Some(o.scheme),
            endpoint: EndpointPattern { host: o.host.into(), ports: Ports::Range(o.port, o.port) },
        }
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::ANY {
            return f.write_str("*");
        }
        let scheme = self.scheme.map_or("*", Scheme::as_str);
        // The port is always written: a pattern without one would read back as the scheme's.
        write!(f, "{scheme}://{}:{}", self.endpoint.host, self.endpoint.ports)
    }
}

text_form!(OriginPattern);

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> Origin {
        Origin::parse(s).unwrap()
    }
    fn pat(s: &str) -> OriginPattern {
        OriginPattern::parse(s).unwrap()
    }

    #[test]
    fn job_origins_default_to_the_schemes_port() {
        for (input, shown) in [
            ("https://Example.com", "https://example.com:443"),
            ("http://example.com", "http://example.com:80"),
            ("HTTPS://example.com:8443/", "https://example.com:8443"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            ("http://10.0.0.1", "http://10.0.0.1:80"),
        ] {
            let o = origin(input);
            assert_eq!(o.to_string(), shown, "{input}");
            assert_eq!(origin(shown), o, "{shown} reads back");
        }
        for bad in [
            "example.com:443",
            "ftp://example.com:21",
            "https://example.com:443/path",
            "https://example.com:443?q",
            "https://u@example.com:443",
            "https://example.com:*",
            "https://example.com:1-2",
            "https://*:443",
            "*",
            "http://10.0.0.0/8:80",
            "http://::1:80",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
        let o = origin("https://example.com");
        assert!(o.matches("HTTPS", "example.com.", 443));
        assert!(!o.matches("http", "example.com", 443) && !o.matches("https", "example.com", 8443));
        assert!(origin("http://[::ffff:127.0.0.1]:80").matches("http", "127.0.0.1", 80));
    }

    #[test]
    fn patterns_cover_origins() {
        for (input, shown) in [
            ("*", "*"),
            ("*://*:*", "*"),
            ("https://*", "https://*:443"),
            ("https://*:*", "https://*:*"),
            ("*://127.0.0.1:*", "*://127.0.0.1:*"),
            ("http://10.0.0.1:8000-8999", "http://10.0.0.1:8000-8999"),
            ("https://*.example.com", "https://*.example.com:443"),
        ] {
            assert_eq!(pat(input).to_string(), shown, "{input}");
            assert_eq!(pat(shown), pat(input), "{shown} reads back");
        }
        let o = origin("https://example.com");
        assert!(pat("*").covers(&o) && pat("https://*:*").covers(&o) && pat("https://*").covers(&o));
        assert!(!pat("http://*:*").covers(&o));
        assert!(!pat("https://*").covers(&origin("https://example.com:8443")));
        assert!(pat("*://*.example.com:*").covers(&origin("http://a.example.com:8080")));
        assert!(pat("http://10.1.2.3:*").covers(&origin("http://10.1.2.3:8080")));
        assert!(OriginPattern::parse("http://10.0.0.0/8:*").is_err(), "origins name hosts, not networks");
        assert_eq!(OriginPattern::from(o.clone()), pat("https://example.com:443"));
        assert!(OriginPattern::parse("gopher://x:1").is_err());
    }
}
