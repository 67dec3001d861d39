//! What the two outbound HTTP clients (the model API and image downloads) share.

/// The error text a client may see: reqwest's chain without URLs (which could carry secrets).
pub fn describe_reqwest(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
