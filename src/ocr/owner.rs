//! Who made an OCR result or job, and who may see it. With client keys on, each result and job
//! belongs to the key that asked (through `/ocr`, a job, or a tool call of `/answer`): another
//! key is told it does not exist, and only an `auth.admin_keys` key sees everything. Without
//! keys there is no one to tell apart, and everything is visible.

use crate::auth::ClientKeyId;

use super::Priority;

/// The request a recognition was made for.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub request_id: &'a str,
    /// The id of the client key that asked; none when the proxy runs without keys.
    pub client_key_id: Option<&'a str>,
    /// Someone waiting for the answer, or an item of a batch job.
    pub priority: Priority,
}

/// What one caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No keys are configured, or the key is an admin key.
    Everything,
    /// Only what this key id made.
    OwnedBy(String),
}

impl Access {
    /// `key` is the request's client key (none when keys are off); `admin` whether it is one
    /// of `auth.admin_keys`.
    pub fn new(key: Option<&ClientKeyId>, admin: bool) -> Self {
        match key {
            Some(key) if !admin => Self::OwnedBy(key.0.clone()),
            _ => Self::Everything,
        }
    }

    /// Whether a thing made by `owner` may be seen (and corrected, or cancelled).
    pub fn allows(&self, owner: Option<&str>) -> bool {
        match self {
            Self::Everything => true,
            Self::OwnedBy(key) => owner == Some(key.as_str()),
        }
    }

    /// The one owner whose things may be seen; none when everything may.
    pub fn only_owner(&self) -> Option<&str> {
        match self {
            Self::Everything => None,
            Self::OwnedBy(key) => Some(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_sees_only_its_own_and_an_admin_everything() {
        let a = ClientKeyId("aaaaaaaaaaaa".into());
        let own = Access::new(Some(&a), false);
        assert!(own.allows(Some("aaaaaaaaaaaa")));
        assert!(!own.allows(Some("bbbbbbbbbbbb")));
        assert!(!own.allows(None), "made without keys: no key owns it");
        let admin = Access::new(Some(&a), true);
        assert!(admin.allows(Some("bbbbbbbbbbbb")));
        assert!(admin.allows(None));
        assert!(Access::new(None, false).allows(Some("bbbbbbbbbbbb")));
    }
}
