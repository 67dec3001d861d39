//! Getting the image bytes safely, in memory only.
//!
//! `oss` downloads go only to configured host patterns, over http(s). Every connection's
//! address comes from a resolver that refuses loopback, private, link-local and metadata
//! addresses, so neither a name nor a redirect can reach the internal network. IP literals are
//! checked the same way, and every redirect is checked like the first URL. The size cap is
//! enforced while the body streams in. `7min_local` reads a file under the configured root,
//! refusing anything that leaves it. `upload` bytes come with the request.

use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::config::{OcrConfig, ms};

use super::OcrError;

/// Where an image comes from (`url_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlType {
    Oss,
    Local,
    Upload,
}

impl UrlType {
    pub const NAMES: [&'static str; 3] = ["oss", "7min_local", "upload"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "oss" => Some(Self::Oss),
            "7min_local" => Some(Self::Local),
            "upload" => Some(Self::Upload),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oss => "oss",
            Self::Local => "7min_local",
            Self::Upload => "upload",
        }
    }
}

/// Downloads and reads images under the configured rules. Cheap to clone.
#[derive(Clone)]
pub struct ImageFetcher {
    http: reqwest::Client,
    config: Arc<OcrConfig>,
}

impl ImageFetcher {
    pub fn new(config: Arc<OcrConfig>) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let resolver = Arc::new(PublicOnlyResolver {
            allow_private: config.allow_private_networks,
        });
        let redirect_config = config.clone();
        let http = reqwest::Client::builder()
            .connect_timeout(ms(config.connect_timeout_ms))
            .timeout(ms(config.fetch_timeout_ms))
            .no_proxy()
            .dns_resolver(resolver)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > redirect_config.max_redirects {
                    return attempt.error(format!(
                        "more than {} redirects",
                        redirect_config.max_redirects
                    ));
                }
                match check_oss_url(attempt.url(), &redirect_config) {
                    Ok(()) => attempt.follow(),
                    Err(err) => attempt.error(format!("redirect refused: {err}")),
                }
            }))
            .build()
            .context("building the image download client")?;
        Ok(Self { http, config })
    }

    /// The image bytes for `image_url` of the given type (not `upload`).
    pub async fn fetch(&self, url_type: UrlType, image_url: &str) -> Result<Bytes, OcrError> {
        match url_type {
            UrlType::Oss => self.download(image_url).await,
            UrlType::Local => self.read_local(image_url).await,
            UrlType::Upload => Err(OcrError::InvalidRequest(
                "`url_type` upload needs the image in a multipart part named `image`".into(),
            )),
        }
    }

    async fn download(&self, image_url: &str) -> Result<Bytes, OcrError> {
        let url = Url::parse(image_url.trim())
            .map_err(|e| OcrError::InvalidRequest(format!("`image_url` is not a URL: {e}")))?;
        check_oss_url(&url, &self.config).map_err(OcrError::Forbidden)?;
        if let Some(Host::Domain(name)) = url.host() {
            // Refuse clearly up front; the resolver checks again for every connection.
            let port = url.port_or_known_default().unwrap_or(443);
            public_addrs(name, port, self.config.allow_private_networks)
                .await
                .map_err(OcrError::Forbidden)?;
        }
        let response = self.http.get(url).send().await.map_err(download_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(OcrError::Download(format!(
                "the image server answered HTTP {status}"
            )));
        }
        let cap = self.config.max_image_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > cap as u64)
        {
            return Err(OcrError::TooLarge(format!(
                "the image is larger than {cap} bytes"
            )));
        }
        let mut body = response.bytes_stream();
        let mut buffer = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(download_error)?;
            if buffer.len() + chunk.len() > cap {
                return Err(OcrError::TooLarge(format!(
                    "the image is larger than {cap} bytes"
                )));
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buffer))
    }

    async fn read_local(&self, image_url: &str) -> Result<Bytes, OcrError> {
        let path = local_path(&self.config.local_root, image_url)?;
        let cap = self.config.max_image_bytes;
        let metadata = tokio::fs::metadata(&path)
            .await
            .map_err(|_| OcrError::NotFound(format!("no image at `{image_url}`")))?;
        if !metadata.is_file() {
            return Err(OcrError::NotFound(format!("no image at `{image_url}`")));
        }
        if metadata.len() > cap as u64 {
            return Err(OcrError::TooLarge(format!(
                "the image is larger than {cap} bytes"
            )));
        }
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| OcrError::Download(format!("reading `{image_url}`: {e}")))?;
        Ok(Bytes::from(bytes))
    }
}

fn download_error(err: reqwest::Error) -> OcrError {
    let timed_out = err.is_timeout();
    let redirect = err.is_redirect();
    let text = crate::upstream::describe_reqwest(err);
    if redirect || text.contains(NO_PUBLIC_ADDRESS) {
        return OcrError::Forbidden(text);
    }
    if timed_out {
        OcrError::Download(format!("the download timed out: {text}"))
    } else {
        OcrError::Download(text)
    }
}

/// A path inside `root` for a `7min_local` image; anything that could leave it is refused.
pub fn local_path(root: &Path, image_url: &str) -> Result<PathBuf, OcrError> {
    let relative = image_url.trim().trim_start_matches('/');
    if relative.is_empty() {
        return Err(OcrError::InvalidRequest(
            "`image_url` must not be empty".into(),
        ));
    }
    let candidate = Path::new(relative);
    if candidate
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
        || relative.contains('\\')
    {
        return Err(OcrError::Forbidden(format!(
            "`{image_url}` leaves the local image folder"
        )));
    }
    let root = root
        .canonicalize()
        .map_err(|_| OcrError::NotFound(format!("no image at `{image_url}`")))?;
    let full = root.join(candidate);
    // Resolve symlinks too: a link inside the root must not lead out of it.
    let resolved = full
        .canonicalize()
        .map_err(|_| OcrError::NotFound(format!("no image at `{image_url}`")))?;
    if !resolved.starts_with(&root) {
        return Err(OcrError::Forbidden(format!(
            "`{image_url}` leaves the local image folder"
        )));
    }
    Ok(resolved)
}

/// Scheme, host pattern and (for IP literals) address checks for an `oss` URL or a redirect.
fn check_oss_url(url: &Url, config: &OcrConfig) -> Result<(), String> {
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

const NO_PUBLIC_ADDRESS: &str = "resolves to no public address";

/// The host's addresses that may be reached, or why none may.
async fn public_addrs(
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
struct PublicOnlyResolver {
    allow_private: bool,
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

    #[test]
    fn local_paths_stay_inside_the_root() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a.png"), b"x").expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/b.png"), b"x").expect("write");
        assert!(local_path(dir.path(), "a.png").is_ok());
        assert!(local_path(dir.path(), "/sub/b.png").is_ok());
        for bad in ["../etc/passwd", "sub/../../x", "./a.png", "sub\\..\\a.png"] {
            assert!(
                matches!(local_path(dir.path(), bad), Err(OcrError::Forbidden(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            local_path(dir.path(), "missing.png"),
            Err(OcrError::NotFound(_))
        ));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc", dir.path().join("escape")).expect("symlink");
            assert!(matches!(
                local_path(dir.path(), "escape/hostname"),
                Err(OcrError::Forbidden(_)) | Err(OcrError::NotFound(_))
            ));
        }
    }
}
