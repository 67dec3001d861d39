//! Getting the image bytes safely, in memory only.
//!
//! `oss` downloads go only where the [`ssrf`](super::ssrf) guard allows: configured host
//! patterns, over http(s), to public addresses only, for the first URL and every redirect. The
//! size cap is enforced while the body streams in. `7min_local` reads a file under the configured root,
//! refusing anything that leaves it. `upload` bytes come with the request.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use url::{Host, Url};

use crate::config::{OcrConfig, ms};

use super::OcrError;
use super::ssrf::{NO_PUBLIC_ADDRESS, PublicOnlyResolver, check_oss_url, public_addrs};

/// Where an image comes from (`url_type`): `oss`, `7min_local` or `upload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
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

impl TryFrom<String> for UrlType {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Self::parse(&name)
            .ok_or_else(|| format!("`{name}` is not one of {}", Self::NAMES.join(", ")))
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
    let text = crate::http_client::describe_reqwest(err);
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

#[cfg(test)]
mod tests {
    use super::*;

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
