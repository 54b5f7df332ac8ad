//! Which addresses a webhook must not reach unless the operator allows it
//! (`--webhook-allow-private`): the machine itself, private and link-local
//! networks (cloud metadata at 169.254.169.254 among them), shared carrier space,
//! and addresses no unicast host owns. A delivery target is checked after every
//! resolution, so a public name that resolves to a private address is refused
//! too (server-side request forgery).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True for an address a webhook must not reach without `--webhook-allow-private`:
/// loopback, RFC 1918, link-local (169.254/16, fe80::/10), CGNAT 100.64/10, 0/8,
/// unspecified, multicast, broadcast, unique-local fc00::/7, and the IPv4-mapped
/// (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`) forms of the IPv4 ones.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        // 0.0.0.0/8: "this network"; Linux connects 0.x.y.z to the local host.
        || a == 0
        // 100.64.0.0/10: carrier-grade NAT, shared address space.
        || (a == 100 && (b & 0xc0) == 64)
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_private_v4(v4);
    }
    let segments = ip.segments();
    // ::a.b.c.d, the deprecated IPv4-compatible form (:: and ::1 fall in here too).
    if segments[..6].iter().all(|&s| s == 0) {
        let [.., hi, lo] = segments;
        return is_private_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7, unique local.
        || (segments[0] & 0xfe00) == 0xfc00
        // fe80::/10, link-local.
        || (segments[0] & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(s: &str) -> bool {
        is_private(s.parse().expect("invariant: test addresses parse"))
    }

    #[test]
    fn loopback_is_private() {
        assert!(private("127.0.0.1"));
        assert!(private("127.255.255.254"));
        assert!(private("::1"));
    }

    #[test]
    fn rfc1918_ranges_are_private() {
        assert!(private("10.0.0.1"));
        assert!(private("10.255.255.255"));
        assert!(private("172.16.0.1"));
        assert!(private("172.31.255.255"));
        assert!(!private("172.15.255.255"));
        assert!(!private("172.32.0.0"));
        assert!(private("192.168.0.1"));
        assert!(!private("192.169.0.1"));
    }

    #[test]
    fn link_local_and_metadata_are_private() {
        assert!(private("169.254.169.254"));
        assert!(private("169.254.0.1"));
        assert!(private("fe80::1"));
        assert!(private("febf::1"));
        assert!(!private("fec0::1"));
    }

    #[test]
    fn cgnat_is_private() {
        assert!(private("100.64.0.1"));
        assert!(private("100.127.255.255"));
        assert!(!private("100.63.255.255"));
        assert!(!private("100.128.0.0"));
    }

    #[test]
    fn this_network_unspecified_multicast_broadcast_are_private() {
        assert!(private("0.0.0.0"));
        assert!(private("0.1.2.3"));
        assert!(private("::"));
        assert!(private("224.0.0.1"));
        assert!(private("239.255.255.250"));
        assert!(private("ff02::1"));
        assert!(private("255.255.255.255"));
    }

    #[test]
    fn unique_local_is_private() {
        assert!(private("fc00::1"));
        assert!(private("fd12:3456::1"));
        assert!(!private("fe00::1"));
    }

    #[test]
    fn ipv4_mapped_and_compatible_forms_follow_their_ipv4_address() {
        assert!(private("::ffff:127.0.0.1"));
        assert!(private("::ffff:10.1.2.3"));
        assert!(private("::ffff:169.254.169.254"));
        assert!(private("::ffff:100.64.0.1"));
        assert!(!private("::ffff:8.8.8.8"));
        assert!(private("::127.0.0.1"));
        assert!(private("::10.0.0.1"));
        assert!(!private("::8.8.8.8"));
    }

    #[test]
    fn public_addresses_are_not_private() {
        assert!(!private("8.8.8.8"));
        assert!(!private("1.1.1.1"));
        assert!(!private("93.184.216.34"));
        assert!(!private("2606:4700:4700::1111"));
        assert!(!private("2001:4860:4860::8888"));
    }
}
