//! Which endpoints a webhook may reach. Loopback, private, link-local,
//! unspecified, multicast, broadcast/reserved, CGNAT (100.64.0.0/10),
//! benchmarking, unique-local (fc00::/7) and site-local addresses, and the
//! IPv6 forms that carry such an IPv4 address (mapped, compatible, NAT64,
//! 6to4), are refused unless the operator allow-lists the host name or the
//! address (`CREDITGATE_WEBHOOK_ALLOWED_HOSTS`: names, addresses, CIDRs).
//!
//! The check runs at `create_webhook` and again inside the HTTP client's
//! resolver at every delivery ([`AllowList::resolve`]), which hands the
//! client only the addresses that passed: a name that re-resolves to a
//! private address between the check and the connection (DNS rebinding)
//! is refused, not reached.

use crate::error::{Error, Result};
use crate::limits::{MAX_TEXT_BYTES, MAX_WEBHOOK_ALLOWED_HOSTS, MAX_WEBHOOK_URL_LEN};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// One allow-list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Allowed {
    /// A host name, lower-cased: every address it resolves to is allowed.
    Host(String),
    /// An address block (a single address is a /32 or /128).
    Net(IpAddr, u8),
}

/// The operator's allow-list; empty by default (only public addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AllowList(Vec<Allowed>);

impl AllowList {
    /// Parses host names, IP addresses and CIDRs (`localhost`,
    /// `127.0.0.1`, `10.0.0.0/8`, `fd00::/8`).
    pub(crate) fn parse(items: &[String]) -> Result<AllowList> {
        if items.len() > MAX_WEBHOOK_ALLOWED_HOSTS {
            return Err(Error::invalid(format!(
                "webhook_allowed_hosts takes at most {MAX_WEBHOOK_ALLOWED_HOSTS} entries, got {}",
                items.len()
            )));
        }
        let entries = items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()).map(parse_entry);
        Ok(AllowList(entries.collect::<Result<_>>()?))
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.0.iter().any(|a| matches!(a, Allowed::Host(h) if h.eq_ignore_ascii_case(host)))
    }

    fn ip_listed(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|a| matches!(a, Allowed::Net(net, bits) if in_net(ip, *net, *bits)))
    }

    /// Whether `host` may be reached at `ip`.
    fn permits(&self, host: &str, ip: IpAddr) -> bool {
        !is_special(ip) || self.host_allowed(host) || self.ip_listed(ip)
    }

    /// Refuses `host` when any of `addrs` is not permitted (every address
    /// must pass: the client may connect to any of them).
    fn check(&self, host: &str, addrs: &[SocketAddr]) -> Result<()> {
        match addrs.iter().find(|a| !self.permits(host, a.ip())) {
            Some(a) => Err(refused(a.ip())),
            None => Ok(()),
        }
    }

    /// The HTTP client's resolver: `netloc` (`host:port`) resolved, and
    /// returned only when every address is permitted.
    pub(crate) fn resolve(&self, netloc: &str) -> io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
        let host = netloc.rsplit_once(':').map_or(netloc, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.check(host, &addrs).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
        Ok(addrs)
    }
}

fn parse_entry(item: &str) -> Result<Allowed> {
    let bad = || {
        Error::invalid(format!("CREDITGATE_WEBHOOK_ALLOWED_HOSTS: {:?} is not a host, address or CIDR", trunc(item)))
    };
    if let Some((ip, bits)) = item.split_once('/') {
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let bits: u8 = bits.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if bits > max {
            return Err(bad());
        }
        // An IPv4-mapped block (`::ffff:a.b.c.d/n`) is the IPv4 block of
        // its last n − 96 bits; a shorter one spans more than IPv4.
        return match (ip, ip.to_canonical()) {
            (IpAddr::V6(_), v4 @ IpAddr::V4(_)) if bits >= 96 => Ok(Allowed::Net(v4, bits - 96)),
            (IpAddr::V6(_), IpAddr::V4(_)) => Err(bad()),
            (_, canonical) => Ok(Allowed::Net(canonical, bits)),
        };
    }
    let unbracketed = item.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        return Ok(Allowed::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    let host_chars = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    if item.len() <= MAX_TEXT_BYTES && item.chars().all(host_chars) {
        return Ok(Allowed::Host(item.to_ascii_lowercase()));
    }
    Err(bad())
}

fn trunc(s: &str) -> &str {
    crate::types::truncate(s)
}

/// The error of a refused address (it names the address, which the
/// operator may allow-list).
fn refused(ip: IpAddr) -> Error {
    Error::invalid(format!(
        "address {ip} is not allowed (loopback, private or reserved; add it to CREDITGATE_WEBHOOK_ALLOWED_HOSTS to allow it)"
    ))
}

/// Whether `ip` lies in `net`/`bits` (both canonical: IPv4-mapped IPv6 as IPv4).
fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip.to_canonical(), net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Loopback, private, link-local, unspecified, multicast, broadcast or
/// reserved, CGNAT, benchmarking, IETF protocol assignments, unique-local,
/// site-local; an IPv6 address that carries an IPv4 one (IPv4-mapped,
/// IPv4-compatible, NAT64, 6to4) as that IPv4 address.
pub(crate) fn is_special(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => embedded_v4(v6).map_or_else(|| special_v6(v6), special_v4),
    }
}

/// The IPv4 address an IPv6 address routes to, for the forms that embed
/// one: IPv4-compatible `::a.b.c.d` (not `::` and `::1`), NAT64
/// `64:ff9b::a.b.c.d`, and 6to4 `2002:AABB:CCDD::`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if bits >> 32 == 0 && bits > 1 {
        return Some(low);
    }
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return Some(low);
    }
    if ip.segments()[0] == 0x2002 {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

fn special_v4(ip: Ipv4Addr) -> bool {
    let v = |s: &str, bits| in_net(IpAddr::V4(ip), IpAddr::V4(s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)), bits);
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || v("0.0.0.0", 8)
        || v("100.64.0.0", 10)
        || v("192.0.0.0", 24)
        || v("198.18.0.0", 15)
        || v("240.0.0.0", 4)
}

fn special_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || first & 0xfe00 == 0xfc00 // unique-local fc00::/7
        || first & 0xffc0 == 0xfe80 // link-local fe80::/10
        || first & 0xffc0 == 0xfec0 // site-local fec0::/10 (deprecated, still routed by some)
        || (first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 local-use 64:ff9b:1::/48 and the rest
}

/// Checks an endpoint URL at creation: `http`/`https`, a host, no
/// credentials, at most [`MAX_WEBHOOK_URL_LEN`] bytes, and its host (an
/// address, or a name that resolves now) permitted. A name that does not
/// resolve is accepted: delivery checks it again.
pub(crate) fn check_url(raw: &str, allow: &AllowList) -> Result<()> {
    let (host, port) = endpoint(raw)?;
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return allow.check(&host, &[SocketAddr::new(ip, port)]);
    }
    match (host.as_str(), port).to_socket_addrs() {
        Ok(addrs) => allow.check(&host, &addrs.collect::<Vec<_>>()),
        Err(_) => Ok(()),
    }
}

/// The host and port of an endpoint URL, after the checks of [`check_url`].
fn endpoint(raw: &str) -> Result<(String, u16)> {
    let bad = |why: &str| Error::invalid(format!("webhook url {:?}: {why}", trunc(raw)));
    if raw.len() > MAX_WEBHOOK_URL_LEN {
        return Err(bad(&format!("longer than {MAX_WEBHOOK_URL_LEN} bytes")));
    }
    let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be https or http"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not allowed (they would be stored in clear)"));
    }
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("no host"))?;
    let port = url.port_or_known_default().ok_or_else(|| bad("no port"))?;
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_addresses_are_classified() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::10.0.0.5",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "fec0::1",
            "192.0.0.8",
            "198.18.0.1",
            "198.19.255.255",
        ] {
            assert!(is_special(ip(s)), "{s} is special");
        }
        for s in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "198.20.0.1",
        ] {
            assert!(!is_special(ip(s)), "{s} is public");
        }
    }

    #[test]
    fn the_allow_list_takes_hosts_addresses_and_cidrs() {
        let list = |v: &[&str]| AllowList::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let a = list(&["localhost", "127.0.0.1", "10.0.0.0/8", "fd00::/8"]).unwrap();
        assert!(a.permits("LOCALHOST", ip("::1")), "a listed name allows its addresses");
        assert!(a.permits("x", ip("127.0.0.1")) && a.permits("x", ip("::ffff:127.0.0.1")));
        assert!(a.permits("x", ip("10.200.0.1")) && a.permits("x", ip("fd00::5")));
        assert!(!a.permits("x", ip("127.0.0.2")) && !a.permits("x", ip("192.168.0.1")));
        assert!(a.permits("x", ip("8.8.8.8")), "public addresses need no listing");
        for bad in ["10.0.0.0/33", "a b", "1.2.3.4/x", "http://x"] {
            assert!(list(&[bad]).is_err(), "{bad}");
        }
        assert!(list(&["[::1]", "0.0.0.0/0", " ", ""]).is_ok());
        // An IPv4-mapped block is the IPv4 block of its last bits, never more.
        let mapped = list(&["::ffff:127.0.0.1/128"]).unwrap();
        assert!(mapped.permits("x", ip("127.0.0.1")));
        assert!(!mapped.permits("x", ip("10.0.0.1")) && !mapped.permits("x", ip("169.254.169.254")));
        assert!(list(&["::ffff:10.0.0.0/104"]).unwrap().permits("x", ip("10.9.9.9")));
        assert!(list(&["::ffff:0.0.0.0/95"]).is_err(), "wider than IPv4");
    }

    #[test]
    fn urls_are_checked_at_creation() {
        let none = AllowList::default();
        for bad in
            ["ftp://example.com/", "http://u:p@example.com/", "not a url", "http://127.0.0.1:9/", "http://[::1]/"]
        {
            assert!(check_url(bad, &none).is_err(), "{bad}");
        }
        let e = check_url("http://127.0.0.1:8080/hook", &none).unwrap_err().to_string();
        assert!(e.contains("address 127.0.0.1 is not allowed"), "{e}");
        assert!(check_url("http://localhost:8080/", &none).is_err(), "a name resolving to loopback");
        assert!(check_url("https://203.0.113.7/", &none).is_ok());
        assert!(check_url("https://no-such-host.invalid/", &none).is_ok(), "checked again at delivery");
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(MAX_WEBHOOK_URL_LEN)), &none).is_err());
        let listed = AllowList::parse(&["127.0.0.1".into()]).unwrap();
        assert!(check_url("http://127.0.0.1:8080/hook", &listed).is_ok());
        assert!(listed.resolve("127.0.0.1:8080").is_ok());
        assert!(none.resolve("127.0.0.1:8080").is_err());
    }
}
