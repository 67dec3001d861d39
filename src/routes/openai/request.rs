//! `POST /v1/chat/completions` bodies become [`AnswerRequest`]s here, field by field as OpenAI
//! defines them. A field the proxy does not support is refused by name, never dropped.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::answer::request::{MessageBody, check_id, check_length, check_messages};
use crate::answer::{AnswerRequest, Api, RequestError};
use crate::config::LimitsConfig;

/// What the stream's writer needs beyond the exchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamOptions {
    /// `stream_options.include_usage`: a usage chunk before `[DONE]`.
    pub include_usage: bool,
}

/// The body of `POST /v1/chat/completions`, as the OpenAPI description shows it. Parsing goes
/// field by field (below), so that every refusal names its field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[expect(dead_code, reason = "the spec's view of the body; `parse` reads it")]
pub struct ChatCompletionBody {
    /// One of `GET /v1/models`.
    model: String,
    /// The conversation; `developer` messages are sent as `system`.
    messages: Vec<MessageBody>,
    /// Server-Sent Events of `chat.completion.chunk` objects ending with `data: [DONE]`;
    /// default false: one `chat.completion`.
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptionsBody>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2)]
    temperature: Option<f64>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    top_p: Option<f64>,
    #[serde(default)]
    #[schema(minimum = 1)]
    max_tokens: Option<u64>,
    #[serde(default)]
    #[schema(minimum = 1)]
    max_completion_tokens: Option<u64>,
    /// A string or up to 4 strings.
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    #[schema(minimum = -2, maximum = 2)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    #[schema(minimum = -2, maximum = 2)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    seed: Option<i64>,
    /// `{"type": "text" | "json_object" | "json_schema", ...}`.
    #[serde(default)]
    response_format: Option<Value>,
    /// Recorded as the log row's user id (up to 128 characters).
    #[serde(default)]
    user: Option<String>,
    /// Functions of the client's own: a call to one comes back with `finish_reason:
    /// "tool_calls"`. `ocr_image` is the proxy's and cannot be defined.
    #[serde(default)]
    tools: Option<Vec<Value>>,
    /// `none`, `auto`, `required` or `{"type": "function", "function": {"name"}}`.
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    /// Only 1.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1)]
    n: Option<u32>,
    /// Only false.
    #[serde(default)]
    logprobs: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct StreamOptionsBody {
    #[serde(default)]
    #[expect(dead_code, reason = "the spec's view; `parse` reads it")]
    include_usage: Option<bool>,
}

/// Fields sent upstream as they are, once their type is checked.
const PASSED_THROUGH: [&str; 9] = [
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "response_format",
];

/// Parses and checks a raw body against the configured limits.
pub fn parse(
    body: &[u8],
    limits: &LimitsConfig,
) -> Result<(AnswerRequest, StreamOptions), RequestError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let Value::Object(mut fields) = value else {
        return Err(RequestError::Invalid("body must be a JSON object".into()));
    };
    // As in OpenAI's API, a field that is null is a field not given.
    fields.retain(|_, value| !value.is_null());
    let model = match fields.remove("model") {
        Some(Value::String(model)) if !model.is_empty() => model,
        Some(_) => return Err(param("model", "must be a non-empty string")),
        None => return Err(param("model", "is required")),
    };
    let messages = messages(fields.remove("messages"), limits)?;
    let stream = match fields.remove("stream") {
        None => false,
        Some(Value::Bool(stream)) => stream,
        Some(_) => return Err(param("stream", "must be a boolean")),
    };
    let options = stream_options(fields.remove("stream_options"), stream)?;
    let user_id = match fields.remove("user") {
        None => None,
        Some(Value::String(user)) => check_id("user", Some(user))?,
        Some(_) => return Err(param("user", "must be a string")),
    };
    let tools = super::tools::client_tools(&mut fields)?;
    let mut passed = Map::new();
    for name in PASSED_THROUGH {
        if let Some(value) = fields.remove(name) {
            check_option(name, &value)?;
            passed.insert(name.to_owned(), value);
        }
    }
    neutral(
        &mut fields,
        "n",
        &Value::from(1),
        "only one choice (`n`: 1) is made",
    )?;
    neutral(
        &mut fields,
        "logprobs",
        &Value::Bool(false),
        "log probabilities are not relayed",
    )?;
    if let Some(name) = fields.keys().next() {
        return Err(RequestError::Unsupported {
            param: name.clone(),
            message: "the proxy does not pass this field on; remove it".into(),
        });
    }
    let request = AnswerRequest {
        messages,
        session_id: None,
        user_id,
        stream,
        model: Some(model),
        options: passed,
        tools,
        api: Api::OpenAi,
    };
    Ok((request, options))
}

fn messages(value: Option<Value>, limits: &LimitsConfig) -> Result<Vec<Value>, RequestError> {
    let Some(value) = value else {
        return Err(param("messages", "is required"));
    };
    let mut messages: Vec<MessageBody> =
        serde_path_to_error::deserialize(value).map_err(|err| {
            // The path within the array: `.` for the array itself, else `[0].role`.
            let path = err.path().to_string();
            let field = format!("messages{}", path.trim_start_matches('.'));
            param(&field, &err.into_inner().to_string())
        })?;
    for message in &mut messages {
        // OpenAI's newer name for instructions; every compatible API knows `system`.
        if message.role == "developer" {
            "system".clone_into(&mut message.role);
        }
    }
    let messages = check_messages(messages, limits)?;
    check_length(&messages, limits)?;
    Ok(messages)
}

fn stream_options(value: Option<Value>, stream: bool) -> Result<StreamOptions, RequestError> {
    let Some(value) = value else {
        return Ok(StreamOptions::default());
    };
    if !stream {
        return Err(param(
            "stream_options",
            "is only allowed when `stream` is true",
        ));
    }
    let Value::Object(mut options) = value else {
        return Err(param("stream_options", "must be an object"));
    };
    let include_usage = match options.remove("include_usage") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(include)) => include,
        Some(_) => return Err(param("stream_options.include_usage", "must be a boolean")),
    };
    if let Some(name) = options.keys().next() {
        return Err(RequestError::Unsupported {
            param: format!("stream_options.{name}"),
            message: "only `include_usage` is".into(),
        });
    }
    Ok(StreamOptions { include_usage })
}

/// The type and range of a passed-through option.
fn check_option(name: &str, value: &Value) -> Result<(), RequestError> {
    let number_in = |low: f64, high: f64| {
        value
            .as_f64()
            .filter(|v| (low..=high).contains(v))
            .map(|_| ())
            .ok_or_else(|| param(name, &format!("must be a number from {low} to {high}")))
    };
    match name {
        "temperature" => number_in(0.0, 2.0),
        "top_p" => number_in(0.0, 1.0),
        "presence_penalty" | "frequency_penalty" => number_in(-2.0, 2.0),
        "max_tokens" | "max_completion_tokens" => match value.as_u64() {
            Some(n) if n > 0 => Ok(()),
            _ => Err(param(name, "must be a positive integer")),
        },
        "seed" => match value.as_i64() {
            Some(_) => Ok(()),
            None => Err(param(name, "must be an integer")),
        },
        "stop" => {
            let valid = match value {
                Value::String(_) => true,
                Value::Array(stops) => stops.len() <= 4 && stops.iter().all(Value::is_string),
                _ => false,
            };
            valid
                .then_some(())
                .ok_or_else(|| param(name, "must be a string or up to 4 strings"))
        }
        "response_format" => match value["type"].as_str() {
            Some("text" | "json_object" | "json_schema") => Ok(()),
            _ => Err(param(
                "response_format.type",
                "must be `text`, `json_object` or `json_schema`",
            )),
        },
        _ => Ok(()),
    }
}

/// A field accepted only with the value that changes nothing (`n: 1`, `logprobs: false`).
fn neutral(
    fields: &mut Map<String, Value>,
    name: &str,
    allowed: &Value,
    why: &str,
) -> Result<(), RequestError> {
    match fields.remove(name) {
        Some(value) if value != *allowed => Err(RequestError::Unsupported {
            param: name.to_owned(),
            message: format!("{why}; send {allowed} or leave it out"),
        }),
        _ => Ok(()),
    }
}

pub(super) fn param(name: &str, message: &str) -> RequestError {
    RequestError::InvalidParam {
        param: name.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse_value(body: Value) -> Result<(AnswerRequest, StreamOptions), RequestError> {
        parse(body.to_string().as_bytes(), &LimitsConfig::default())
    }

    fn refused(body: Value) -> (String, Option<String>) {
        let err = parse_value(body.clone()).expect_err("refused");
        (err.code().to_owned(), err.param().map(str::to_owned))
    }

    fn base() -> Value {
        json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut body = base();
        body[field] = value;
        body
    }

    #[test]
    fn options_pass_through_and_user_is_recorded() {
        let mut body = base();
        for (name, value) in [
            ("temperature", json!(0.2)),
            ("top_p", json!(0.9)),
            ("max_tokens", json!(50)),
            ("max_completion_tokens", json!(60)),
            ("stop", json!(["\n\n"])),
            ("presence_penalty", json!(0.5)),
            ("frequency_penalty", json!(-0.5)),
            ("seed", json!(7)),
            ("response_format", json!({"type": "json_object"})),
        ] {
            body[name] = value;
        }
        body["user"] = json!("u-1");
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        body["n"] = json!(1);
        body["logprobs"] = json!(false);
        body["tool_choice"] = json!("none");
        let (request, options) = parse_value(body).expect("valid");
        assert_eq!(request.options.len(), 9);
        assert_eq!(request.options["seed"], 7);
        assert_eq!(request.user_id.as_deref(), Some("u-1"));
        assert_eq!(request.model.as_deref(), Some("demo"));
        assert!(request.stream && options.include_usage);
        assert_eq!(request.api, Api::OpenAi);
        assert_eq!(request.tools.choice, Some(json!("none")));
    }

    #[test]
    fn defaults_are_openais_and_nulls_are_absent() {
        let mut body = base();
        body["temperature"] = Value::Null;
        body["messages"][0]["role"] = json!("developer");
        body["messages"]
            .as_array_mut()
            .expect("array")
            .push(json!({"role": "user", "content": "q"}));
        let (request, options) = parse_value(body).expect("valid");
        assert!(!request.stream && !options.include_usage);
        assert!(request.options.is_empty());
        assert_eq!(request.messages[0]["role"], "system");
    }

    #[test]
    fn unsupported_fields_are_named() {
        let unsupported = |name: &str, value: Value| {
            let (code, param) = refused(with(name, value));
            assert_eq!(code, "unsupported_parameter", "{name}");
            assert_eq!(param.as_deref(), Some(name));
        };
        unsupported("n", json!(2));
        unsupported("logprobs", json!(true));
        unsupported("top_logprobs", json!(3));
        unsupported("functions", json!([]));
        unsupported("audio", json!({}));
    }

    #[test]
    fn bad_values_name_their_field() {
        let invalid = |body: Value, expected: &str| {
            let (code, param) = refused(body);
            assert_eq!(code, "invalid_request", "{expected}");
            assert_eq!(param.as_deref(), Some(expected));
        };
        invalid(
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            "model",
        );
        invalid(json!({"model": "demo"}), "messages");
        invalid(with("messages", json!([{"content": "x"}])), "messages[0]");
        invalid(with("temperature", json!(3)), "temperature");
        invalid(with("max_tokens", json!(0)), "max_tokens");
        invalid(with("stop", json!(["a", "b", "c", "d", "e"])), "stop");
        invalid(
            with("response_format", json!({"type": "xml"})),
            "response_format.type",
        );
        invalid(with("stream", json!("yes")), "stream");
        invalid(
            with("stream_options", json!({"include_usage": true})),
            "stream_options",
        );
        invalid(with("tool_choice", json!("sometimes")), "tool_choice");
        invalid(with("user", json!("u".repeat(129))), "user");
        let mut body = base();
        body["messages"][0]["role"] = json!("bot");
        let err = parse_value(body).expect_err("bad role");
        assert!(err.to_string().contains("messages[0].role"), "{err}");
    }
}
