//! Where webhooks may point (server-side request forgery): only `https`
//! unless plain `http` is allowed (dev clusters), and only public addresses
//! unless private ones are allowed: a webhook must not make the coordinator
//! call its own loopback services, the cloud metadata endpoint or hosts on
//! its private network.
//!
//! The host is checked when a webhook is registered and again at every
//! delivery, through a DNS resolver that drops non-public addresses, so a
//! name that resolves to a public address at registration and to a private
//! one later (DNS rebinding) is not delivered to. Redirects are never
//! followed (see [`crate::Dispatcher`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::EventsError;

/// Which webhook destinations are accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    /// Plain `http://` URLs (dev clusters only).
    pub allow_http: bool,
    /// Loopback, private, link-local and other non-public addresses.
    pub allow_private: bool,
}

impl DestinationPolicy {
    /// Anything `http(s)`: tests and dev clusters with local receivers.
    pub const PERMISSIVE: DestinationPolicy = DestinationPolicy {
        allow_http: true,
        allow_private: true,
    };
}

fn v4_is_public(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // 100.64.0.0/10: carrier-grade NAT, 198.18.0.0/15: benchmarking, 240/4: reserved.
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn v6_is_public(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_is_public(v4);
    }
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local, 2001:db8::/32 documentation.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_public(v4),
        IpAddr::V6(v6) => v6_is_public(v6),
    }
}

fn refused(why: String) -> EventsError {
    EventsError::InvalidWebhook(why)
}

/// Checks what can be checked without a lookup: the scheme, and the host
/// when it is an IP address.
pub fn check_url(url: &str, policy: DestinationPolicy) -> Result<reqwest::Url, EventsError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| refused(format!("url: {e}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => return Err(refused("url must be https".into())),
        _ => return Err(refused("url must be https".into())),
    }
    let ip = match parsed.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(refused("url has no host".into())),
    };
    if let Some(ip) = ip
        && !policy.allow_private
        && !is_public(ip)
    {
        return Err(refused(format!(
            "url points at {ip}, a loopback, private or otherwise non-public address"
        )));
    }
    Ok(parsed)
}

/// [`check_url`], then every address the host resolves to must be public
/// (unless private addresses are allowed).
pub async fn check_destination(url: &str, policy: DestinationPolicy) -> Result<(), EventsError> {
    let parsed = check_url(url, policy)?;
    if policy.allow_private {
        return Ok(());
    }
    if let Some(url::Host::Domain(name)) = parsed.host() {
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| refused(format!("url host {name} does not resolve: {e}")))?
            .collect();
        if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
            return Err(refused(format!(
                "url host {name} resolves to {}, a loopback, private or otherwise non-public address",
                bad.ip()
            )));
        }
        if addrs.is_empty() {
            return Err(refused(format!("url host {name} has no address")));
        }
    }
    Ok(())
}

/// A DNS resolver for deliveries that keeps only public addresses.
#[derive(Debug, Default)]
pub struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} has no public address (webhooks reach public hosts only)")
                        .into();
                return Err(e);
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_per_policy() {
        let strict = DestinationPolicy::default();
        assert!(check_url("https://93.184.216.34/hook", strict).is_ok());
        for (url, why) in [
            ("http://93.184.216.34/hook", "https"),
            ("ftp://x/", "https"),
            ("https://127.0.0.1:8080/hook", "127.0.0.1"),
            (
                "https://169.254.169.254/latest/meta-data",
                "169.254.169.254",
            ),
            ("https://[::1]/hook", "::1"),
            ("https://10.0.0.5/hook", "10.0.0.5"),
        ] {
            let e = check_url(url, strict).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
        assert!(check_url("http://127.0.0.1:1/", DestinationPolicy::PERMISSIVE).is_ok());
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused() {
        let e = check_destination("https://localhost:9/hook", DestinationPolicy::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("localhost resolves to"), "{e}");
        check_destination("http://localhost:9/hook", DestinationPolicy::PERMISSIVE)
            .await
            .unwrap();
    }
}
