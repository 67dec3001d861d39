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
    // Credentials would go on as Basic auth, and into the log.
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a user name or password in the URL is not allowed".to_owned());
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
/// multicast, documentation or unique-local addresses. IPv6 must be global unicast (`2000::/3`),
/// so IPv4-compatible (`::a.b.c.d`) and site-local (`fec0::/10`) addresses are refused; the
/// forms that carry an IPv4 address are judged by it (IPv4-mapped, 6to4 `2002::/16`), and
/// Teredo (`2001::/32`), whose IPv4 address is hidden, is refused.
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
            let segments = v6.segments();
            let (first, second) = (segments[0], segments[1]);
            if first == 0x2002 {
                // 6to4: the IPv4 address is in the next 32 bits.
                let [a, b] = second.to_be_bytes();
                let [c, d] = segments[2].to_be_bytes();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            // Teredo (2001::/32) and documentation (2001:db8::/32) inside global unicast.
            let teredo_or_documentation = first == 0x2001 && matches!(second, 0x0000 | 0x0db8);
            (first & 0xe000) == 0x2000 && !teredo_or_documentation
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
/// `url` without a user name or password, for what is stored and shown: a URL that carried
/// them is refused, but its row is still written.
pub fn without_credentials(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

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
            // IPv4-compatible, 6to4 of a loopback or private address, Teredo, site-local,
            // NAT64, documentation, IPv6 multicast.
            "::127.0.0.1",
            "::8.8.8.8",
            "2002:7f00:1::1",
            "2002:a00:1::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "64:ff9b::7f00:1",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "47.96.1.1",
            "2400:3200::1",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
        ] {
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
    fn credentials_are_taken_out_of_a_stored_url() {
        assert_eq!(
            without_credentials("https://user:secret@b.oss.aliyuncs.com/a.png?x=1"),
            "https://b.oss.aliyuncs.com/a.png?x=1"
        );
        assert_eq!(without_credentials("a/b.png"), "a/b.png");
        assert_eq!(
            without_credentials("https://b.oss.aliyuncs.com/a.png"),
            "https://b.oss.aliyuncs.com/a.png"
        );
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
        assert!(check("https://user:secret@b.oss.aliyuncs.com/a.png").is_err());
        assert!(check("https://user@b.oss.aliyuncs.com/a.png").is_err());
    }
}
