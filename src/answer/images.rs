//! Images in the messages, as the model gets them. A model that reads only text never sees the
//! URL of an `image_url` part, so it could not hand the image to `ocr_image`. With
//! `tools.image_parts = "reference"` (the default), each image part of a user message goes
//! upstream as a text part that names it, `(image 1: URL)`. An image sent inline (a `data:` URL,
//! what the chat page and Open WebUI send for an attached picture) is named `attachment:1`
//! instead: its bytes stay in the exchange, for the tool, and never go upstream. With
//! `"forward"`, parts go upstream as they are, for a model that sees images itself.

use serde_json::{Value, json};

use crate::ocr::data_url;

/// The images of one exchange sent inline, by number: `attachment:1` is the first.
#[derive(Debug, Default)]
pub struct Attachments(Vec<String>);

/// How an inline image is named to the model.
const PREFIX: &str = "attachment:";

impl Attachments {
    /// The data URL that `reference` (`attachment:N`) names, if it is one of this exchange's.
    pub fn get(&self, reference: &str) -> Option<&str> {
        let number: usize = reference.strip_prefix(PREFIX)?.trim().parse().ok()?;
        self.0.get(number.checked_sub(1)?).map(String::as_str)
    }

    /// Whether `url` is meant as an attachment's name (known or not).
    pub fn names(url: &str) -> bool {
        url.starts_with(PREFIX)
    }

    fn add(&mut self, data_url: &str) -> String {
        self.0.push(data_url.to_owned());
        format!("{PREFIX}{}", self.0.len())
    }
}

/// The messages with each user message's image parts turned into references (the others as
/// they are), and the inline images they name. `seen` counts images across the conversation,
/// so each has its own number.
pub fn reference_images(messages: &[Value]) -> (Vec<Value>, Attachments) {
    let mut attachments = Attachments::default();
    let mut seen = 0;
    let messages = messages
        .iter()
        .map(|message| {
            let Some(parts) = message
                .get("content")
                .and_then(Value::as_array)
                .filter(|_| message["role"] == "user")
            else {
                return message.clone();
            };
            let parts: Vec<Value> = parts
                .iter()
                .map(
                    |part| match part.pointer("/image_url/url").and_then(Value::as_str) {
                        Some(url) if part["type"] == "image_url" => {
                            seen += 1;
                            let name = if data_url::is_data_url(url) {
                                attachments.add(url)
                            } else {
                                url.to_owned()
                            };
                            json!({"type": "text", "text": format!("(image {seen}: {name})")})
                        }
                        _ => part.clone(),
                    },
                )
                .collect();
            let mut message = message.clone();
            message["content"] = Value::Array(parts);
            message
        })
        .collect();
    (messages, attachments)
}

/// `messages` as the log keeps them: an image sent inline is a label (`data:image/png (53211
/// bytes)`), not its bytes, so no log row or journal line holds a user's picture.
pub fn for_log(mut messages: Vec<Value>) -> Value {
    for part in messages
        .iter_mut()
        .filter_map(|m| m.get_mut("content").and_then(Value::as_array_mut))
        .flatten()
    {
        if let Some(url) = part.pointer_mut("/image_url/url") {
            if let Some(label) = url
                .as_str()
                .filter(|u| data_url::is_data_url(u))
                .map(data_url::label)
            {
                *url = Value::String(label);
            }
        }
    }
    Value::Array(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_parts_become_named_references_and_inline_ones_stay_here() {
        let messages = vec![
            json!({"role": "system", "content": "be brief"}),
            json!({"role": "user", "content": [
                {"type": "text", "text": "read these"},
                {"type": "image_url", "image_url": {"url": "https://oss.example/a.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
            ]}),
            json!({"role": "assistant", "content": "done"}),
            json!({"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
            ]}),
        ];
        let (sent, attachments) = reference_images(&messages);
        assert_eq!(sent[0], messages[0]);
        assert_eq!(sent[2], messages[2]);
        assert_eq!(
            sent[1]["content"],
            json!([
                {"type": "text", "text": "read these"},
                {"type": "text", "text": "(image 1: https://oss.example/a.png)"},
                {"type": "text", "text": "(image 2: attachment:1)"},
            ])
        );
        assert_eq!(
            sent[3]["content"],
            json!([{"type": "text", "text": "(image 3: attachment:2)"}])
        );
        assert!(
            !serde_json::to_string(&sent)
                .expect("JSON")
                .contains("base64")
        );
        assert_eq!(
            attachments.get("attachment:1"),
            Some("data:image/png;base64,iVBORw0K")
        );
        assert_eq!(
            attachments.get("attachment:2"),
            Some("data:image/jpeg;base64,/9j/")
        );
        for unknown in ["attachment:0", "attachment:3", "attachment:x", "a.png"] {
            assert_eq!(attachments.get(unknown), None, "{unknown}");
        }
        assert!(Attachments::names("attachment:9") && !Attachments::names("https://x"));

        let logged = for_log(messages.clone());
        assert_eq!(
            logged[1]["content"][2]["image_url"]["url"],
            "data:image/png (6 bytes)"
        );
        assert_eq!(
            logged[1]["content"][1]["image_url"]["url"],
            "https://oss.example/a.png"
        );
        assert_eq!(logged[0], messages[0]);
    }
}
