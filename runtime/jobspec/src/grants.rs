//! What a phase asks to be granted (`<phase>_data.phasebox.grants`).
//!
//! These are plain serde data: the job's *request*. The effective grant is computed later
//! (plugin manifest ∩ operator policy ∩ this request) by the sandbox crate, which converts
//! these structs. [`crate::JobSpec`] parsing has already checked the syntax of every string in
//! them with the `parse_*`/`validate_*` functions below, which the sandbox may reuse.
//!
//! ```yaml
//! grants:
//!   files: [ { path: /scratch, source: scratch, access: rw } ]
//!   network: { connect: ["example.com:443", "10.1.0.0/16:22"], bind: false, udp: false }
//!   http: ["https://example.com:443"]
//!   dns: ["example.com"]
//!   env: { KEY: value }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Everything one phase asks for. Every part is optional; absent means "nothing".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// Directories of the job's working tree to preopen in the guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileRequest>,
    /// Socket access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkRequest>,
    /// Allowed origins for outgoing HTTP (`scheme://host:port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
    /// Host names the phase may resolve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// Extra environment variables for the guest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// One directory to preopen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRequest {
    /// Absolute path the guest sees (e.g. `/scratch`); no `.`/`..` or empty components.
    pub path: String,
    /// Subtree of the job directory it maps to: a relative path such as `scratch`,
    /// `artifacts` or `attachments/test`; no `.`/`..` or empty components.
    pub source: String,
    /// Read-only or read-write. Defaults to read-only.
    #[serde(default)]
    pub access: Access,
}

/// File access mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read-only (`ro`).
    #[default]
    Ro,
    /// Read-write (`rw`).
    Rw,
}

/// Socket access. Outgoing TCP to the listed endpoints; `bind` and `udp` default to off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRequest {
    /// Endpoint patterns the phase may connect to (see [`parse_endpoint`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connect: Vec<String>,
    /// Whether the phase may listen on sockets.
    #[serde(default)]
    pub bind: bool,
    /// Whether the phase may use UDP.
    #[serde(default)]
    pub udp: bool,
}

/// A parsed endpoint pattern: a host part and a port part.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Which hosts.
    pub host: HostPattern,
    /// Which ports.
    pub port: PortPattern,
}

/// The host part of an endpoint pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// A DNS name (resolved by the host at connect time), lowercased. `dut` is a plain name here;
    /// giving it meaning is the sandbox's business.
    Name(String),
    /// One address.
    Ip(IpAddr),
    /// A network in CIDR notation (host bits are allowed and ignored by whoever matches).
    Cidr {
        /// The address as written.
        addr: IpAddr,
        /// Prefix length (≤ 32 for IPv4, ≤ 128 for IPv6).
        prefix: u8,
    },
}

/// The port part of an endpoint pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortPattern {
    /// Any port (`*`, or no port after a CIDR).
    Any,
    /// One port, 1–65535.
    Port(u16),
}

impl fmt::Display for PortPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortPattern::Any => f.write_str("*"),
            PortPattern::Port(p) => write!(f, "{p}"),
        }
    }
}

/// Parses an endpoint pattern:
///
/// * `host:port` — a DNS name and a port: `example.com:443`, `dut:22`;
/// * `a.b.c.d:port` — an IPv4 address and a port;
/// * `[v6]:port` — an IPv6 address in brackets and a port: `[2001:db8::1]:443`;
/// * `a.b.c.d/len` or `[v6/len]`, optionally followed by `:port` — a network; without a port,
///   any port: `10.1.0.0/16`, `10.1.0.0/16:22`, `[2001:db8::/32]:443`;
/// * the port may be `*` (any port): `example.com:*`.
///
/// Names and single addresses need a port; IPv6 always needs brackets.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    if text.is_empty() {
        return Err("an endpoint cannot be empty".into());
    }
    let (host_text, port_text, bracketed) = if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or("an IPv6 address opened with `[` is not closed with `]`")?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("expected `:port` after `]`")?),
        };
        (inner, port, true)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p), false),
            None => (text, None, false),
        }
    };
    if !bracketed && host_text.contains(':') {
        return Err("IPv6 addresses must be written in brackets, e.g. `[2001:db8::1]:443`".into());
    }
    let host = if let Some((addr, len)) = host_text.split_once('/') {
        let addr: IpAddr = if bracketed {
            IpAddr::V6(addr.parse::<Ipv6Addr>().map_err(|_| format!("`{addr}` is not an IPv6 address"))?)
        } else {
            IpAddr::V4(addr.parse::<Ipv4Addr>().map_err(|_| format!("`{addr}` is not an IPv4 address"))?)
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = parse_decimal(len)
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("`/{len}` is not a prefix length (0–{max})"))?;
        HostPattern::Cidr { addr, prefix: prefix as u8 }
    } else if bracketed {
        HostPattern::Ip(IpAddr::V6(
            host_text.parse::<Ipv6Addr>().map_err(|_| format!("`{host_text}` is not an IPv6 address"))?,
        ))
    } else if let Ok(v4) = host_text.parse::<Ipv4Addr>() {
        HostPattern::Ip(IpAddr::V4(v4))
    } else {
        validate_hostname(host_text)?;
        HostPattern::Name(host_text.to_ascii_lowercase())
    };
    let port = match port_text {
        Some(p) => parse_port(p, true)?,
        None if matches!(host, HostPattern::Cidr { .. }) => PortPattern::Any,
        None => {
            return Err(format!("`{text}` needs a port (`host:port`, or `host:*` for any port)"));
        }
    };
    Ok(Endpoint { host, port })
}

fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_port(p: &str, allow_any: bool) -> Result<PortPattern, String> {
    if allow_any && p == "*" {
        return Ok(PortPattern::Any);
    }
    match parse_decimal(p) {
        Some(n) if (1..=65535).contains(&n) => Ok(PortPattern::Port(n as u16)),
        _ => Err(format!("`{p}` is not a port (1–65535{})", if allow_any { " or `*`" } else { "" })),
    }
}

/// Checks a DNS host name: dot-separated labels of letters, digits and inner hyphens, each 1–63
/// characters, 253 at most in all, not all-numeric (that would be a malformed IPv4 address).
pub fn validate_hostname(name: &str) -> Result<(), String> {
    let bad = || format!("`{name}` is not a valid host name");
    if name.is_empty() || name.len() > 253 {
        return Err(bad());
    }
    let mut all_numeric = true;
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(bad());
        }
        all_numeric &= label.bytes().all(|b| b.is_ascii_digit());
    }
    if all_numeric {
        return Err(bad());
    }
    Ok(())
}

/// A parsed HTTP origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name (lowercased), IPv4 address, or IPv6 address (without brackets).
    pub host: String,
    /// The port, always explicit.
    pub port: u16,
}

/// Parses an origin `scheme://host:port`: scheme `http` or `https`, host a DNS name, an IPv4
/// address or a bracketed IPv6 address, and an explicit port; nothing after the port.
pub fn parse_origin(text: &str) -> Result<Origin, String> {
    let (scheme, rest) =
        text.split_once("://").ok_or_else(|| format!("`{text}` is not an origin: expected scheme://host:port"))?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("scheme `{scheme}` is not `http` or `https`"));
    }
    if rest.contains(['/', '?', '#', '@']) {
        return Err(format!("`{text}` is not an origin: no user, path, query or fragment (scheme://host:port)"));
    }
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (addr, after) = inner.split_once(']').ok_or("an IPv6 address opened with `[` is not closed with `]`")?;
        addr.parse::<Ipv6Addr>().map_err(|_| format!("`{addr}` is not an IPv6 address"))?;
        (addr.to_owned(), after.strip_prefix(':'))
    } else {
        let (h, p) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        if h.parse::<Ipv4Addr>().is_err() {
            validate_hostname(h)?;
        }
        (h.to_ascii_lowercase(), p)
    };
    let port = match port {
        Some(p) => match parse_port(p, false)? {
            PortPattern::Port(p) => p,
            PortPattern::Any => unreachable!("`*` is not allowed here"),
        },
        None => {
            let default = if scheme == "https" { 443 } else { 80 };
            return Err(format!("`{text}` needs an explicit port, e.g. `{text}:{default}`"));
        }
    };
    Ok(Origin { scheme: scheme.to_owned(), host, port })
}

/// Checks a guest path: absolute, no empty, `.` or `..` components, no NUL.
pub fn validate_guest_path(path: &str) -> Result<(), String> {
    let rest = path.strip_prefix('/').ok_or_else(|| format!("`{path}` must be an absolute path"))?;
    if rest.is_empty() {
        return Err("the guest path cannot be `/` itself".into());
    }
    check_components(path, rest)
}

/// Checks a job-directory subtree: relative, no empty, `.` or `..` components, no NUL.
pub fn validate_source(source: &str) -> Result<(), String> {
    if source.is_empty() {
        return Err("the source cannot be empty".into());
    }
    if source.starts_with('/') {
        return Err(format!("`{source}` must be relative to the job directory (e.g. `scratch`)"));
    }
    check_components(source, source)
}

fn check_components(whole: &str, rest: &str) -> Result<(), String> {
    if whole.contains('\0') {
        return Err("a path cannot contain NUL".into());
    }
    for c in rest.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(format!("`{whole}` must be a normalised path (no empty, `.` or `..` components)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = parse_endpoint("example.com:443").unwrap();
        assert_eq!(e.host, HostPattern::Name("example.com".into()));
        assert_eq!(e.port, PortPattern::Port(443));
        assert_eq!(parse_endpoint("dut:*").unwrap().port, PortPattern::Any);
        assert_eq!(
            parse_endpoint("10.1.0.0/16:22").unwrap().host,
            HostPattern::Cidr { addr: "10.1.0.0".parse().unwrap(), prefix: 16 }
        );
        assert_eq!(parse_endpoint("10.1.0.0/16").unwrap().port, PortPattern::Any);
        assert_eq!(parse_endpoint("[2001:db8::1]:443").unwrap().host, HostPattern::Ip("2001:db8::1".parse().unwrap()));
        assert!(parse_endpoint("[2001:db8::/32]").is_ok());
        assert!(parse_endpoint("192.168.1.1:8080").is_ok());
        for bad in [
            "",
            "example.com",
            "example.com:0",
            "example.com:65536",
            "example.com:http",
            "2001:db8::1",
            "[2001:db8::1]",
            "[2001:db8::1:443",
            "10.0.0.0/33",
            "10.0.0.1",
            "exa_mple.com:80",
            "-bad.com:80",
            "1.2.3.999:80",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins() {
        let o = parse_origin("https://Example.com:443").unwrap();
        assert_eq!((o.scheme.as_str(), o.host.as_str(), o.port), ("https", "example.com", 443));
        assert!(parse_origin("http://[::1]:8080").is_ok());
        assert!(parse_origin("http://10.0.0.1:80").is_ok());
        for bad in [
            "https://example.com",
            "https://example.com:443/",
            "ftp://example.com:21",
            "example.com:443",
            "https://example.com:*",
            "https://u@example.com:443",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert!(validate_guest_path("/scratch").is_ok());
        assert!(validate_guest_path("/a/b").is_ok());
        for bad in ["scratch", "/", "/a/../b", "/a//b", "/a/"] {
            assert!(validate_guest_path(bad).is_err(), "{bad}");
        }
        assert!(validate_source("attachments/test").is_ok());
        for bad in ["", "/scratch", "../x", "a/./b"] {
            assert!(validate_source(bad).is_err(), "{bad}");
        }
    }
}
