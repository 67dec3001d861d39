//! Images given inline, as `data:image/…;base64,…` URLs: what a browser makes of a pasted or
//! attached screenshot (the chat page's "Ask about it" sends one in an `image_url` part, and the
//! model hands it to `ocr_image`). Decoding one needs no network, so no fetch rule applies: it
//! becomes an upload, and what is stored as its `image_url` is a short label, not the bytes.

use base64::Engine as _;
use bytes::Bytes;

use super::{ImageRequest, OcrError, UrlType};

/// Whether `url` is a data URL (`data:` in any case).
pub fn is_data_url(url: &str) -> bool {
    url.get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("data:"))
}

/// The image of a base64 `data:image/…` URL, as an upload of at most `max_bytes` bytes.
pub fn decode(url: &str, max_bytes: usize) -> Result<ImageRequest, OcrError> {
    let invalid = |m: &str| OcrError::InvalidRequest(format!("the data URL {m}"));
    let rest = url.get(5..).ok_or_else(|| invalid("is empty"))?;
    let (header, payload) = rest
        .split_once(',')
        .ok_or_else(|| invalid("has no `,` before its data"))?;
    let header = header.to_ascii_lowercase();
    let Some(media_type) = header.strip_suffix(";base64") else {
        return Err(invalid("must be base64 (`data:image/png;base64,…`)"));
    };
    let media_type = media_type.split(';').next().unwrap_or_default();
    if !media_type.starts_with("image/") {
        return Err(invalid(&format!(
            "holds `{media_type}`, not an image/… type"
        )));
    }
    // Four characters carry three bytes: refuse an oversized one before decoding it.
    let payload = payload.trim();
    if payload.len() / 4 * 3 > max_bytes + 3 {
        return Err(OcrError::TooLarge(format!(
            "the image is larger than {max_bytes} bytes"
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|e| invalid(&format!("is not valid base64: {e}")))?;
    if bytes.len() > max_bytes {
        return Err(OcrError::TooLarge(format!(
            "the image is larger than {max_bytes} bytes"
        )));
    }
    Ok(ImageRequest {
        url_type: UrlType::Upload,
        image_url: label_of(media_type, bytes.len()),
        upload: Some(Bytes::from(bytes)),
    })
}

/// What is kept of a data URL where its bytes are not wanted (a log row): its type and size,
/// `data:image/png (53211 bytes)`, read off the text without decoding it.
pub fn label(url: &str) -> String {
    let rest = url.get(5..).unwrap_or_default();
    let (header, payload) = rest.split_once(',').unwrap_or((rest, ""));
    let header = header.to_ascii_lowercase();
    let media_type = header.split(';').next().unwrap_or_default();
    let payload = payload.trim();
    let bytes = if header.ends_with(";base64") {
        let padding = payload.bytes().rev().take_while(|&b| b == b'=').count();
        (payload.len() / 4 * 3).saturating_sub(padding)
    } else {
        payload.len()
    };
    label_of(media_type, bytes)
}

fn label_of(media_type: &str, bytes: usize) -> String {
    format!("data:{media_type} ({bytes} bytes)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base64_image_becomes_an_upload_with_a_short_label() {
        let image = decode("DATA:image/PNG;base64,iVBORw0K", 100).expect("decodes");
        assert_eq!(image.url_type, UrlType::Upload);
        assert_eq!(image.image_url, "data:image/png (6 bytes)");
        assert_eq!(
            image.upload.as_deref(),
            Some(&b"\x89PNG\r\n"[..]),
            "the bytes themselves"
        );
        assert!(is_data_url("Data:x") && !is_data_url("http://x/a.png") && !is_data_url("dat"));
    }

    #[test]
    fn a_label_tells_the_type_and_size_without_decoding() {
        let url = "data:image/png;base64,iVBORw0KGgo=";
        let decoded = decode(url, 100).expect("decodes");
        assert_eq!(label(url), decoded.image_url);
        assert_eq!(label(url), "data:image/png (8 bytes)");
        assert_eq!(label("data:text/plain,hello"), "data:text/plain (5 bytes)");
    }

    #[test]
    fn other_types_bad_base64_and_oversized_ones_are_refused() {
        let refused = |url: &str, max| decode(url, max).expect_err(url).code();
        assert_eq!(
            refused("data:text/html;base64,PGI+", 100),
            "invalid_request"
        );
        assert_eq!(refused("data:image/png,rawbytes", 100), "invalid_request");
        assert_eq!(refused("data:image/png;base64", 100), "invalid_request");
        assert_eq!(refused("data:image/png;base64,***", 100), "invalid_request");
        let big = format!("data:image/png;base64,{}", "A".repeat(4000));
        assert_eq!(refused(&big, 100), "image_too_large");
        assert_eq!(
            refused("data:image/png;base64,AAAAAAAA", 5),
            "image_too_large"
        );
    }
}
