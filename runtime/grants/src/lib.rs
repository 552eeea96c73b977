//! # phasebox-grants
//!
//! The one vocabulary in which the three parties of a grant write: the **job** asks for
//! concrete things ([`GrantRequest`]: [`Endpoint`], [`Origin`], [`DnsName`], [`FileRequest`]);
//! the plugin's **manifest** and the operator's **policy** allow patterns ([`EndpointPattern`],
//! [`OriginPattern`], [`HostPattern`], [`FileRule`]). A request is granted when a pattern of
//! each document [covers](EndpointPattern::covers) it. Every type parses from the text the
//! documents hold ([`FromStr`](std::str::FromStr), serde), prints back in a canonical form that
//! parses to the same value, and carries no engine: the job model validates with it at
//! submission, the planner and the sandbox use the values it parsed.
//!
//! # The grammar
//!
//! | form | job (concrete) | manifest, policy (pattern) |
//! |---|---|---|
//! | host | `example.com`, `10.0.0.1`, `10.1.0.0/16`, `[::1]`, `[fd00::/8]` | the same, and `*`, `*.example.com` |
//! | endpoint | `host:443`, `host:*`, `host:1000-2000`; an address or network alone: any port | the same, and `*` (every host and port) |
//! | origin | `https://example.com`, `http://10.0.0.1:8080`, `http://[::1]:8080` | the same, and `*`, `*://host:*`, `https://*.example.com:*`, port ranges |
//! | dns | `example.com` | `example.com`, `*.example.com`, `*` |
//!
//! One rule for each question the two grammars used to answer differently:
//!
//! - **An origin without a port has its scheme's port** (`https://example.com` is
//!   `https://example.com:443`), as in a URL. This holds for patterns too: `https://*` is
//!   `https://*:443`; write `https://*:*` for every port.
//! - **`*` and `*.domain` are patterns**: a job names hosts (a name, an address or a network),
//!   the manifest and the policy may name many. `*.example.com` covers every name below
//!   `example.com`, not `example.com` itself.
//! - **Ports are `*`, one port or an inclusive range `a-b`**, 1–65535, in jobs and patterns
//!   alike. A name needs a port; an address or network without one means any port.
//! - **IPv6 is always bracketed**: `[2001:db8::1]:443`, `[fd00::/8]`. A bare `2001:db8::1:443`
//!   could be read as an address with a port or as a longer address with none, and so grant a
//!   wider reach than was meant: it is refused everywhere. IPv4-mapped IPv6 (`[::ffff:10.0.0.1]`)
//!   is read as the IPv4 address it maps, and a network's host bits are dropped
//!   (`10.1.2.3/8` is `10.0.0.0/8`).
//! - **Host names** are dot-separated labels of ASCII letters, digits, `-` and `_` (underscores
//!   appear in real lab names), 1–63 characters each, 253 in all, no label starting or ending
//!   with `-`, compared in lowercase. A name whose last label is a number (`127.1`, `0x7f.1`) is
//!   refused: resolvers and URL parsers read it as an IPv4 address.
//! - **An origin is scheme, host and port** (`http` or `https`, in any case, and one trailing
//!   `/`): no user, path, query or fragment. It names a host, never a network, in a job and in a
//!   pattern alike.
//!
//! Which addresses no phase reaches unless a grant names them is the [`blocked`] module's.

#![deny(missing_docs)]

pub mod blocked;
pub mod derive;
mod endpoint;
mod files;
mod host;
mod origin;
mod request;

pub use derive::{Derive, DerivedOrigin};
pub use endpoint::{Endpoint, EndpointPattern, Ports};
pub use files::{Access, FileRequest, FileRule, validate_guest_path, validate_source};
pub use host::{DnsName, Host, HostPattern, canonical_ip};
pub use origin::{Origin, OriginPattern, Scheme};
pub use request::{GrantRequest, NetworkRequest, NetworkRule};

/// Text that is not a valid endpoint, origin, host, name or path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}`: {why}")]
pub struct ParseError {
    /// The text as written.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

impl ParseError {
    pub(crate) fn new(text: &str, why: impl Into<String>) -> Self {
        Self { text: text.to_owned(), why: why.into() }
    }
}

/// Implements `FromStr`, `TryFrom<String>` and `From<T> for String` through `T::parse`, so each
/// type reads and writes itself as one string in serde documents.
macro_rules! text_form {
    ($t:ty) => {
        impl std::str::FromStr for $t {
            type Err = $crate::ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
        impl TryFrom<String> for $t {
            type Error = $crate::ParseError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    };
}
pub(crate) use text_form;
