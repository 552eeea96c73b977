//! The documents: what a job asks for in one phase, and the network part of what a manifest or
//! policy allows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::endpoint::{Endpoint, EndpointPattern};
use crate::files::FileRequest;
use crate::host::DnsName;
use crate::origin::Origin;

/// Everything one phase asks for, every part concrete. Absent means nothing. A job writes it
/// as `<phase>_data.phasebox.grants` (and its `secrets` beside it, as
/// `<phase>_data.phasebox.secrets`):
///
/// ```yaml
/// grants:
///   files: [ { path: /scratch, source: scratch, access: rw } ]
///   network: { connect: ["example.com:443", "10.1.0.0/16:22"], bind: false, udp: false }
///   http: ["https://example.com"]
///   dns: ["example.com"]
///   env: { KEY: value }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// Directories of the job directory to mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileRequest>,
    /// Sockets.
    #[serde(default, skip_serializing_if = "NetworkRequest::is_empty")]
    pub network: NetworkRequest,
    /// HTTP origins for `wasi:http`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<Origin>,
    /// Names the phase may resolve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<DnsName>,
    /// Environment variables for the phase.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secret names the phase declares.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

/// Socket access a job asks for: outgoing TCP to the listed endpoints; `bind` and `udp` off
/// unless asked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRequest {
    /// Endpoints to connect to (and, with `udp`, send datagrams to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connect: Vec<Endpoint>,
    /// Whether sockets may be bound to a chosen port and listen.
    #[serde(default)]
    pub bind: bool,
    /// Whether UDP may be used.
    #[serde(default)]
    pub udp: bool,
}

impl NetworkRequest {
    /// Whether it asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.connect.is_empty() && !self.bind && !self.udp
    }
}

/// Socket access a manifest or policy allows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRule {
    /// Endpoints that may be connected to.
    #[serde(default)]
    pub connect: Vec<EndpointPattern>,
    /// Whether sockets may be bound to a chosen port and listen.
    #[serde(default)]
    pub bind: bool,
    /// Whether UDP may be used (datagrams go only to `connect` endpoints).
    #[serde(default)]
    pub udp: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_its_values_and_prints_them_canonically() {
        let ask: GrantRequest = serde_json::from_str(
            r#"{"network": {"connect": ["10.1.2.3/16:22", "dut:*"], "udp": true},
                "http": ["https://example.com"], "dns": ["Example.com"],
                "files": [{"path": "/s", "source": "scratch"}]}"#,
        )
        .unwrap();
        assert_eq!(ask.network.connect.len(), 2);
        let json = serde_json::to_value(&ask).unwrap();
        assert_eq!(json["network"]["connect"][0], "10.1.0.0/16:22");
        assert_eq!(json["http"][0], "https://example.com:443");
        assert_eq!(json["dns"][0], "example.com");
        assert_eq!(serde_json::from_value::<GrantRequest>(json).unwrap(), ask);
        assert_eq!(serde_json::to_string(&GrantRequest::default()).unwrap(), "{}");
        assert!(serde_json::from_str::<GrantRequest>(r#"{"http": ["*"]}"#).is_err());
        assert!(serde_json::from_str::<GrantRequest>(r#"{"tcp": true}"#).is_err());
    }
}
