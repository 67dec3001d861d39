//! `POST /answer` bodies become [`AnswerRequest`]s here; every refusal names the field.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::LimitsConfig;

use super::error::RequestError;

/// Longest accepted `session_id` / `user_id`.
const MAX_ID_CHARS: usize = 128;

/// A checked request: messages ready to send upstream in OpenAI form.
#[derive(Debug, Clone)]
pub struct AnswerRequest {
    pub messages: Vec<Value>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub stream: bool,
    /// The model asked for by its configured name; `None`: the first of `upstream.models`.
    pub model: Option<String>,
    /// Sampling and output options (`temperature`, `max_tokens`, ...), sent upstream as they are.
    pub options: Map<String, Value>,
    /// The client's own tools and its tool choice.
    pub tools: ClientTools,
    /// The front door the request came through, recorded with its log row.
    pub api: Api,
}

/// Tools a client defined, offered to the model beside the proxy's own. A call to one of them
/// goes back to the client instead of running here.
#[derive(Debug, Clone, Default)]
pub struct ClientTools {
    /// Each `{"type": "function", "function": {...}}` as the client sent it.
    pub definitions: Vec<Value>,
    /// Their function names.
    pub names: Vec<String>,
    /// `tool_choice`, as the client sent it.
    pub choice: Option<Value>,
    pub parallel_calls: Option<bool>,
}

impl ClientTools {
    pub fn owns(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }
}

/// Which protocol a request came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    /// `POST /answer`.
    #[default]
    Answer,
    /// `POST /v1/chat/completions`.
    OpenAi,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answer => "answer",
            Self::OpenAi => "openai",
        }
    }
}

/// The body of `POST /answer`: a question (`user_input`) or a chat history (`messages`), not both.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AnswerBody {
    /// One question; the proxy sends it as a single user message.
    #[serde(default)]
    user_input: Option<String>,
    /// An OpenAI-style chat history.
    #[serde(default)]
    messages: Option<Vec<MessageBody>>,
    /// Up to 128 characters, stored with the log row.
    #[serde(default)]
    session_id: Option<String>,
    /// Up to 128 characters, stored with the log row.
    #[serde(default)]
    user_id: Option<String>,
    /// Server-Sent Events (the default) or one JSON answer.
    #[serde(default)]
    #[schema(default = true)]
    stream: Option<bool>,
}

/// One chat message in OpenAI form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MessageBody {
    #[schema(pattern = "^(system|user|assistant|tool)$")]
    pub(crate) role: String,
    /// A string, or a list of parts: `{"type": "text", "text"}` and
    /// `{"type": "image_url", "image_url": {"url"}}`. Not empty, except on an assistant message
    /// (a stopped answer); null only on an assistant message with `tool_calls`.
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    name: Option<String>,
    /// Required on `tool` messages: the call this message answers.
    #[serde(default)]
    tool_call_id: Option<String>,
    /// An assistant message's tool calls, as the model sent them.
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
}

impl AnswerRequest {
    /// Parses and checks a raw body against the configured limits.
    pub fn parse(body: &[u8], limits: &LimitsConfig) -> Result<Self, RequestError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
        if !value.is_object() {
            return Err(invalid("body must be a JSON object"));
        }
        let body: AnswerBody = serde_path_to_error::deserialize(value).map_err(|err| {
            let field = err.path().to_string();
            invalid(format!("`{field}`: {}", err.into_inner()))
        })?;
        body.check(limits)
    }
}

impl AnswerBody {
    fn check(self, limits: &LimitsConfig) -> Result<AnswerRequest, RequestError> {
        let messages = match (self.user_input, self.messages) {
            (Some(_), Some(_)) => {
                return Err(invalid("send either `user_input` or `messages`, not both"));
            }
            (None, None) => return Err(invalid("one of `user_input` or `messages` is required")),
            (Some(text), None) => {
                if text.trim().is_empty() {
                    return Err(invalid("`user_input` must not be empty"));
                }
                vec![json!({"role": "user", "content": text})]
            }
            (None, Some(messages)) => check_messages(messages, limits)?,
        };
        check_length(&messages, limits)?;
        Ok(AnswerRequest {
            messages,
            session_id: check_id("session_id", self.session_id)?,
            user_id: check_id("user_id", self.user_id)?,
            stream: self.stream.unwrap_or(true),
            model: None,
            options: Map::new(),
            tools: ClientTools::default(),
            api: Api::Answer,
        })
    }
}

/// A chat history checked message by message, in OpenAI form.
pub(crate) fn check_messages(
    messages: Vec<MessageBody>,
    limits: &LimitsConfig,
) -> Result<Vec<Value>, RequestError> {
    if messages.is_empty() {
        return Err(invalid("`messages` must not be empty"));
    }
    if messages.len() > limits.max_messages {
        return Err(RequestError::TooManyMessages {
            count: messages.len(),
            max: limits.max_messages,
        });
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| m.check(i))
        .collect()
}

/// The `limits.max_input_chars` limit over every message's text.
pub(crate) fn check_length(messages: &[Value], limits: &LimitsConfig) -> Result<(), RequestError> {
    let chars: usize = messages.iter().map(text_chars).sum();
    if chars > limits.max_input_chars {
        return Err(RequestError::InputTooLong {
            chars,
            max: limits.max_input_chars,
        });
    }
    Ok(())
}

impl MessageBody {
    fn check(self, i: usize) -> Result<Value, RequestError> {
        let field = |name: &str| format!("messages[{i}].{name}");
        let role = self.role.as_str();
        if !matches!(role, "system" | "user" | "assistant" | "tool") {
            return Err(invalid(format!(
                "`{}`: unknown role `{role}`; expected system, user, assistant or tool",
                field("role")
            )));
        }
        let has_tool_calls = self.tool_calls.as_ref().is_some_and(|c| !c.is_empty());
        let content = match self.content {
            None | Some(Value::Null) if role == "assistant" && has_tool_calls => Value::Null,
            // Clients write an assistant turn that only calls tools with empty text, too, and
            // chat front ends keep an answer that was stopped before its first word.
            Some(Value::String(text)) if text.is_empty() && role == "assistant" => {
                if has_tool_calls {
                    Value::Null
                } else {
                    Value::String(text)
                }
            }
            None | Some(Value::Null) => {
                return Err(invalid(format!("`{}` is required", field("content"))));
            }
            Some(Value::String(text)) => {
                if text.trim().is_empty() {
                    return Err(invalid(format!("`{}` must not be empty", field("content"))));
                }
                Value::String(text)
            }
            Some(Value::Array(parts)) => {
                if parts.is_empty() {
                    return Err(invalid(format!("`{}` must not be empty", field("content"))));
                }
                for (j, part) in parts.iter().enumerate() {
                    check_part(part, &format!("{}[{j}]", field("content")))?;
                }
                Value::Array(parts)
            }
            Some(_) => {
                return Err(invalid(format!(
                    "`{}` must be a string or an array of content parts",
                    field("content")
                )));
            }
        };
        if role == "tool" && self.tool_call_id.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "`{}` is required for a tool message",
                field("tool_call_id")
            )));
        }
        let mut out = Map::new();
        out.insert("role".into(), Value::String(self.role));
        out.insert("content".into(), content);
        if let Some(name) = self.name {
            out.insert("name".into(), Value::String(name));
        }
        if let Some(id) = self.tool_call_id {
            out.insert("tool_call_id".into(), Value::String(id));
        }
        if let Some(calls) = self.tool_calls.filter(|c| !c.is_empty()) {
            out.insert("tool_calls".into(), Value::Array(calls));
        }
        Ok(Value::Object(out))
    }
}

/// A content part: `{"type": "text", "text"}` or `{"type": "image_url", "image_url": {"url"}}`.
fn check_part(part: &Value, field: &str) -> Result<(), RequestError> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => match part.get("text").and_then(Value::as_str) {
            Some(text) if !text.trim().is_empty() => Ok(()),
            _ => Err(invalid(format!(
                "`{field}.text` must be a non-empty string"
            ))),
        },
        Some("image_url") => match part.pointer("/image_url/url").and_then(Value::as_str) {
            Some(url) if !url.trim().is_empty() => Ok(()),
            _ => Err(invalid(format!(
                "`{field}.image_url.url` must be a non-empty string"
            ))),
        },
        Some(other) => Err(invalid(format!(
            "`{field}.type`: unknown part type `{other}`; expected text or image_url"
        ))),
        None => Err(invalid(format!("`{field}.type` is required"))),
    }
}

pub(crate) fn check_id(name: &str, value: Option<String>) -> Result<Option<String>, RequestError> {
    match value {
        Some(id) if id.chars().count() > MAX_ID_CHARS => Err(RequestError::InvalidParam {
            param: name.to_owned(),
            message: format!("is longer than {MAX_ID_CHARS} characters"),
        }),
        Some(id) if id.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Characters of text a message carries, for the `max_input_chars` limit.
fn text_chars(message: &Value) -> usize {
    match message.get("content") {
        Some(Value::String(text)) => text.chars().count(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|t| t.chars().count())
            .sum(),
        _ => 0,
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> RequestError {
    RequestError::Invalid(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<AnswerRequest, RequestError> {
        AnswerRequest::parse(body.as_bytes(), &LimitsConfig::default())
    }

    fn refused(body: &str) -> String {
        let err = parse(body).expect_err(body);
        let api = crate::error::ApiError::from(err.clone());
        assert_eq!(api.status, 400, "{body}");
        assert!(matches!(err, RequestError::Invalid(_)), "{body}: {err:?}");
        err.to_string()
    }

    #[test]
    fn user_input_becomes_one_user_message() {
        let req = parse(r#"{"user_input": "hello", "session_id": "s1"}"#).expect("valid");
        assert_eq!(
            req.messages,
            vec![json!({"role": "user", "content": "hello"})]
        );
        assert!(req.stream);
        assert_eq!(req.session_id.as_deref(), Some("s1"));
    }

    #[test]
    fn messages_keep_tool_history_and_parts() {
        let req = parse(
            r#"{"stream": false, "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "read"}, {"type": "image_url", "image_url": {"url": "http://x/a.png"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "result"}
            ]}"#,
        )
        .expect("valid");
        assert_eq!(req.messages.len(), 4);
        assert!(!req.stream);
        assert_eq!(req.messages[2]["tool_calls"][0]["id"], "c1");
    }

    #[test]
    fn each_refusal_names_the_field() {
        assert!(refused("{}").contains("user_input"));
        assert!(refused(r#"{"user_input": "a", "messages": []}"#).contains("not both"));
        assert!(refused(r#"{"user_input": "  "}"#).contains("user_input"));
        assert!(refused(r#"{"user_input": 5}"#).contains("user_input"));
        assert!(refused(r#"{"messages": []}"#).contains("messages"));
        assert!(
            refused(r#"{"messages": [{"role": "bot", "content": "x"}]}"#)
                .contains("messages[0].role")
        );
        assert!(
            refused(r#"{"messages": [{"role": "user", "content": ""}]}"#)
                .contains("messages[0].content")
        );
        assert!(refused(r#"{"messages": [{"role": "user"}]}"#).contains("messages[0].content"));
        let stopped = r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "b"}]}"#;
        assert!(parse(stopped).is_ok(), "an empty assistant turn is kept");
        assert!(
            refused(r#"{"messages": [{"role": "user", "content": 3}]}"#)
                .contains("messages[0].content")
        );
        assert!(refused(r#"{"messages": [{"content": "x"}]}"#).contains("role"));
        assert!(refused(r#"{"user_input": "a", "stream": "yes"}"#).contains("stream"));
        assert!(
            refused(r#"{"messages": [{"role": "tool", "content": "x"}]}"#).contains("tool_call_id")
        );
        assert!(refused(r#"[1]"#).contains("object"));
        let err = parse("{not json").expect_err("syntax");
        assert!(matches!(err, RequestError::InvalidJson(_)), "{err:?}");
    }

    #[test]
    fn limits_on_messages_and_characters() {
        let limits = LimitsConfig {
            max_messages: 2,
            max_input_chars: 10,
            ..LimitsConfig::default()
        };
        let three = r#"{"messages": [{"role":"user","content":"a"},{"role":"user","content":"b"},{"role":"user","content":"c"}]}"#;
        let err = AnswerRequest::parse(three.as_bytes(), &limits).expect_err("too many");
        assert_eq!(err, RequestError::TooManyMessages { count: 3, max: 2 });
        let long = r#"{"user_input": "01234567890"}"#;
        let err = AnswerRequest::parse(long.as_bytes(), &limits).expect_err("too long");
        assert_eq!(err, RequestError::InputTooLong { chars: 11, max: 10 });
    }
}
