//! The address ranges no phase reaches unless a grant names them, and the IPv6 forms that
//! carry an IPv4 address inside them.
//!
//! A job's grant can name such a range only when the operator's policy names it too: the
//! policy must hold a network inside a blocked range that covers the request (`127.0.0.0/8` or
//! `127.0.0.1:8080` lets a job ask for `127.0.0.1:8080`; `*` or `0.0.0.0/0` does not).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use ipnet::IpNet;

use crate::host::canonical_ip;

/// Address ranges no phase reaches unless its grant names an address or network inside them:
/// loopback, private, shared (CGNAT), link-local (which holds the cloud metadata service
/// 169.254.169.254), unspecified, multicast, broadcast, documentation and benchmarking
/// ranges, IPv6 unique-local, link-local and site-local, and the IPv6 forms that embed IPv4
/// (IPv4-compatible `::/96`, SIIT `::ffff:0:0/96`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`,
/// 6to4 `2002::/16`, Teredo `2001::/32`), whose embedded address could point anywhere,
/// including at a blocked IPv4 address. (IPv4-mapped `::ffff:a.b.c.d` is not listed: it is
/// [mapped to IPv4](canonical_ip) before any check and meets the IPv4 rules.)
pub fn blocked_ranges() -> &'static [IpNet] {
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
pub fn names_blocked(net: &IpNet) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_ipv4_forms() {
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
    }

    #[test]
    fn only_networks_inside_a_blocked_range_name_it() {
        for (net, names) in
            [("127.0.0.0/8", true), ("10.1.0.0/16", true), ("0.0.0.0/0", false), ("::/0", false), ("8.8.8.0/24", false)]
        {
            assert_eq!(names_blocked(&net.parse().unwrap()), names, "{net}");
        }
        assert!(is_blocked("::ffff:169.254.169.254".parse().unwrap()));
        assert!(!is_blocked("93.184.216.34".parse().unwrap()));
    }
}
