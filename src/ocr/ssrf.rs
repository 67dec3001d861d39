//! The SSRF guard for image downloads: which URLs may be fetched and which addresses reached.
//!
//! An `oss` URL needs http(s) and a host matching `ocr.oss_hosts`. Every connection's address
//! comes from a resolver that refuses loopback, private, link-local and metadata addresses, so
//! neither a name nor a redirect can reach the internal network. IP literals are checked the same
//! way, and every redirect is checked like the first URL (`ocr.allow_private_networks` lifts the
//! address checks, for tests and closed networks).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::config::OcrConfig;

/// Scheme, host pattern and (for IP literals) address checks for an `oss` URL or a redirect.
pub(super) fn check_oss_url(url: &Url, config: &OcrConfig) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme `{}` is not allowed; use http(s)",
            url.scheme()
        ));
    }
    let host = url.host().ok_or("the URL has no host")?;
    match host {
        Host::Ipv4(ip) => check_ip(IpAddr::V4(ip), config.allow_private_networks)?,
        Host::Ipv6(ip) => check_ip(IpAddr::V6(ip), config.allow_private_networks)?,
        Host::Domain(_) => {}
    }
    let name = match host {
        Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
    };
    if !host_allowed(&name, &config.oss_hosts) {
        return Err(format!("host `{name}` is not in ocr.oss_hosts"));
    }
    Ok(())
}

/// `*.example.com` matches subdomains of example.com; other patterns match exactly.
pub fn host_allowed(host: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == pattern,
        }
    })
}

fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(format!("address {ip} is not a public address"))
    }
}

/// Public unicast only: no loopback, private, link-local (cloud metadata), CGNAT, unspecified,
/// multicast, documentation or unique-local addresses, including IPv4 inside IPv6.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b)
        }
    }
}

pub(super) const NO_PUBLIC_ADDRESS: &str = "resolves to no public address";

/// The host's addresses that may be reached, or why none may.
pub(super) async fn public_addrs(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, String> {
    let found: Vec<SocketAddr> = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host, port)),
    )
    .await
    .map_err(|_| format!("looking up {host} timed out"))?
    .map_err(|e| format!("looking up {host}: {e}"))?
    .collect();
    let allowed: Vec<SocketAddr> = found
        .into_iter()
        .filter(|addr| allow_private || is_public(addr.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(format!("{host} {NO_PUBLIC_ADDRESS}"));
    }
    Ok(allowed)
}

/// Resolves names and keeps only public addresses, so the connection goes exactly where it
/// was checked (no second lookup for a rebinding answer to slip in).
pub(super) struct PublicOnlyResolver {
    pub(super) allow_private: bool,
}

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let allowed = public_addrs(name.as_str(), 0, allow_private).await?;
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "47.96.1.1", "2400:3200::1"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn host_patterns() {
        let patterns = vec!["*.aliyuncs.com".to_owned(), "img.example.com".to_owned()];
        assert!(host_allowed(
            "bucket.oss-cn-hangzhou.aliyuncs.com",
            &patterns
        ));
        assert!(host_allowed("img.example.com", &patterns));
        assert!(!host_allowed("aliyuncs.com.evil.com", &patterns));
        assert!(!host_allowed("evilaliyuncs.com", &patterns));
        assert!(!host_allowed("other.example.com", &patterns));
    }

    #[test]
    fn oss_urls_are_checked() {
        let config = OcrConfig {
            oss_hosts: vec!["*.aliyuncs.com".into(), "127.0.0.1".into()],
            ..OcrConfig::default()
        };
        let check = |u: &str| check_oss_url(&Url::parse(u).expect("url"), &config);
        assert!(check("https://b.oss.aliyuncs.com/a.png").is_ok());
        assert!(check("file:///etc/passwd").is_err());
        assert!(check("ftp://b.oss.aliyuncs.com/a.png").is_err());
        assert!(
            check("http://127.0.0.1/a.png").is_err(),
            "loopback even when listed"
        );
        assert!(check("http://[::1]/a.png").is_err());
        assert!(check("http://169.254.169.254/latest/meta-data").is_err());
        assert!(check("https://evil.com/a.png").is_err());
    }
}
