//! Where a host in a URL leads: the public internet, this machine or a private
//! network, or places that are never fetched (link-local and cloud metadata
//! addresses).
//!
//! Owns the address classes and nothing else: the manifest rules refuse a link that
//! names a never-fetched host at ingest, and the HTTP client applies the classes to
//! every hop and every resolved address. It performs no I/O and no DNS lookup: a name
//! is judged here only by what it says (`localhost`, the metadata service names); the
//! addresses it resolves to are judged when it is resolved.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How far from the public internet a host or an address is. Ordered: the larger,
/// the more closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// Globally reachable (or a name, judged when it resolves).
    Public,
    /// This machine, a private network, or any other address that is not globally
    /// reachable: fetched only when the user opts in, and never when a public server's
    /// answer leads there.
    Internal,
    /// Link-local addresses and the cloud metadata services: never fetched.
    Never,
}

/// Names of cloud metadata services (AWS, Google Cloud, and the short names their
/// resolvers answer).
const METADATA_NAMES: [&str; 5] = [
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Metadata services outside link-local space: Alibaba Cloud (100.100.100.200) and
/// Oracle Cloud (192.0.0.192).
const METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];

/// The AWS instance metadata service over IPv6.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// What a URL host leads to, without resolving it: an address by its class, a name
/// by what it says (`localhost` and `*.localhost` are internal, the metadata names
/// never fetched, others public until resolved). `host` is a URL host as the URL
/// parser writes it (IPv6 in brackets).
pub fn host(host: &str) -> Reach {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(v6) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return match v6.parse::<Ipv6Addr>() {
            Ok(a) => ip(IpAddr::V6(a)),
            Err(_) => Reach::Public,
        };
    }
    if let Ok(a) = h.parse::<Ipv4Addr>() {
        return ip(IpAddr::V4(a));
    }
    if METADATA_NAMES.contains(&h.as_str()) {
        Reach::Never
    } else if h == "localhost" || h.ends_with(".localhost") {
        Reach::Internal
    } else {
        Reach::Public
    }
}

/// What a URL leads to, by its host (see [`host`]).
pub fn url(url: &url::Url) -> Reach {
    match url.host() {
        Some(url::Host::Ipv4(a)) => ip(IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => ip(IpAddr::V6(a)),
        Some(url::Host::Domain(d)) => host(d),
        None => Reach::Public,
    }
}

/// The class of an address: [`Reach::Never`] for link-local and metadata addresses,
/// [`Reach::Internal`] for every other address the IANA special-purpose registries
/// mark as not globally reachable (and multicast), [`Reach::Public`] otherwise. IPv6
/// forms that carry an IPv4 address to connect to (IPv4-mapped, NAT64 `64:ff9b::/96`,
/// 6to4 `2002::/16`) take that address's class.
pub fn ip(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => v6(a),
    }
}

fn v4(a: Ipv4Addr) -> Reach {
    let o = a.octets();
    let within = |net: [u8; 4], bits: u32| {
        let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
        (u32::from(a) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
    };
    if a.is_link_local() || METADATA_V4.contains(&a) {
        return Reach::Never;
    }
    let internal = within([0, 0, 0, 0], 8) // "this network", 0.0.0.0 among it
        || a.is_private() // 10/8, 172.16/12, 192.168/16
        || within([100, 64, 0, 0], 10) // carrier-grade NAT
        || a.is_loopback() // 127/8
        || within([192, 0, 0, 0], 24) // IETF protocol assignments
        || within([192, 0, 2, 0], 24) // documentation
        || within([198, 18, 0, 0], 15) // benchmarking
        || within([198, 51, 100, 0], 24) // documentation
        || within([203, 0, 113, 0], 24) // documentation
        || o[0] >= 224; // multicast 224/4, reserved 240/4, broadcast
    if internal {
        Reach::Internal
    } else {
        Reach::Public
    }
}

fn v6(a: Ipv6Addr) -> Reach {
    let s = a.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if a == METADATA_V6 || (s[0] & 0xffc0) == 0xfe80 {
        return Reach::Never; // the AWS metadata service; link-local fe80::/10
    }
    if let Some(mapped) = a.to_ipv4_mapped() {
        return v4(mapped); // ::ffff:a.b.c.d
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4(embedded(s[6], s[7])); // NAT64, well-known prefix
    }
    if s[0] == 0x2002 {
        return v4(embedded(s[1], s[2])); // 6to4
    }
    if s[..6] == [0; 6] {
        // ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d, which no network routes.
        return v4(embedded(s[6], s[7])).max(Reach::Internal);
    }
    if s[0] == 0x2001 && s[1] < 0x200 {
        // 2001::/23, IETF protocol assignments; Teredo (2001::/32) carries its client's
        // IPv4 address inverted.
        let teredo = (s[1] == 0).then(|| embedded(!s[6], !s[7]));
        return teredo.map_or(Reach::Internal, |t| v4(t).max(Reach::Internal));
    }
    let internal = (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // NAT64, local use /48
        || s[..4] == [0x100, 0, 0, 0] // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || (s[0] & 0xfff0) == 0x3ff0 // documentation 3fff::/20
        || s[0] == 0x5f00 // SRv6 SIDs
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfec0 // site-local, deprecated
        || (s[0] & 0xff00) == 0xff00; // multicast
    if internal {
        Reach::Internal
    } else {
        Reach::Public
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(s: &str) -> Reach {
        ip(s.parse().unwrap())
    }

    #[test]
    fn link_local_and_metadata_addresses_are_never_fetched() {
        for a in [
            "169.254.169.254",
            "169.254.170.2",
            "169.254.0.1",
            "100.100.100.200",
            "192.0.0.192",
            "fd00:ec2::254",
            "fe80::1",
            "febf::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
        ] {
            assert_eq!(of(a), Reach::Never, "{a}");
        }
    }

    #[test]
    fn addresses_that_are_not_globally_reachable_are_internal() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.8.9.10",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::8.8.8.8",
            "100::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert_eq!(of(a), Reach::Internal, "{a}");
        }
    }

    #[test]
    fn public_addresses_and_the_ipv4_they_carry() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.3.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:200::1",
        ] {
            assert_eq!(of(a), Reach::Public, "{a}");
        }
    }

    #[test]
    fn hosts_are_judged_by_what_they_say() {
        assert_eq!(host("metadata.google.internal"), Reach::Never);
        assert_eq!(host("METADATA.google.internal."), Reach::Never);
        assert_eq!(host("metadata"), Reach::Never);
        assert_eq!(host("169.254.169.254"), Reach::Never);
        assert_eq!(host("[fd00:ec2::254]"), Reach::Never);
        assert_eq!(host("localhost"), Reach::Internal);
        assert_eq!(host("api.localhost"), Reach::Internal);
        assert_eq!(host("127.0.0.1"), Reach::Internal);
        assert_eq!(host("[::1]"), Reach::Internal);
        assert_eq!(host("cdn.example"), Reach::Public);
        assert_eq!(host("mirror.lan"), Reach::Public, "judged when resolved");
        let u = |s: &str| url(&url::Url::parse(s).unwrap());
        // Numeric forms the URL parser normalises.
        assert_eq!(u("http://0xa9fea9fe/latest"), Reach::Never);
        assert_eq!(u("http://2130706433/"), Reach::Internal);
        assert_eq!(u("http://[::ffff:a9fe:a9fe]/"), Reach::Never);
        assert_eq!(u("https://cdn.example/v.mp4"), Reach::Public);
    }
}
