//! The tools `/answer` offers the model: today one, `ocr_image`, which runs the same pipeline
//! as `POST /ocr` (same source rules, limits and engine pool) and logs its `ocr_results` row
//! under the exchange's request id.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::images::Attachments;
use super::request::ClientTools;
use crate::config::{ImageParts, ToolsConfig};
use crate::ocr::{ImageRequest, OcrService, Requester, UrlType, data_url};
use crate::prompts::Prompts;
use crate::store::LogWriter;

pub const OCR_TOOL_NAME: &str = "ocr_image";

/// Most characters of recognised text handed back to the model.
const TEXT_FOR_MODEL: usize = 2_000;

/// A complete tool call, assembled from the streamed fragments.
#[derive(Debug, Clone, Serialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them (JSON text).
    pub arguments: String,
}

/// What a call gave: the message content for the model and the client's `tool_result` event.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub content: String,
    pub event: Value,
}

pub struct ToolBox {
    ocr: Arc<OcrService>,
    log: LogWriter,
    default_url_type: UrlType,
    /// The `tools` array sent upstream, serialised once: it is the same for every request.
    definitions: Box<RawValue>,
    prompts: Prompts,
    pub max_rounds: usize,
    /// How image parts of user messages go upstream.
    pub image_parts: ImageParts,
    /// The system message rendered and serialised for one date, so that happens once a day,
    /// not per request.
    rendered: Mutex<Option<(NaiveDate, Arc<RawValue>)>>,
}

impl ToolBox {
    pub fn new(
        ocr: Arc<OcrService>,
        log: LogWriter,
        prompts: Prompts,
        default_url_type: &str,
        config: &ToolsConfig,
    ) -> Self {
        let max_rounds = config.max_rounds;
        let image_parts = config.image_parts;
        let default_url_type = UrlType::parse(default_url_type).unwrap_or(UrlType::Oss);
        let description = prompts.ocr_tool.render(&BTreeMap::from([
            ("tool_name", OCR_TOOL_NAME.to_owned()),
            ("default_url_type", default_url_type.as_str().to_owned()),
        ]));
        let definitions = json!([{
            "type": "function",
            "function": {
                "name": OCR_TOOL_NAME,
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": {
                        "image_url": {"type": "string", "description": "URL (or local path) of the screenshot"},
                        "url_type": {"type": "string", "enum": ["oss", "7min_local"], "description": "where the image lives"},
                    },
                    "required": ["image_url"],
                },
            },
        }]);
        let definitions =
            serde_json::value::to_raw_value(&definitions).expect("a JSON value serialises");
        Self {
            ocr,
            log,
            default_url_type,
            definitions,
            prompts,
            max_rounds,
            image_parts,
            rendered: Mutex::new(None),
        }
    }

    /// The `tools` array sent upstream.
    pub fn definitions(&self) -> &RawValue {
        &self.definitions
    }

    /// The system message for today (UTC), `{"role": "system", "content": PROMPT}` as JSON.
    pub fn system_message(&self) -> Arc<RawValue> {
        let today = chrono::Utc::now().date_naive();
        let mut rendered = self.rendered.lock().expect("system prompt lock");
        match &*rendered {
            Some((date, message)) if *date == today => message.clone(),
            _ => {
                let prompt = self.prompts.system.render(&BTreeMap::from([
                    ("date", today.format("%Y-%m-%d").to_string()),
                    ("tool_name", OCR_TOOL_NAME.to_owned()),
                ]));
                let message =
                    serde_json::value::to_raw_value(&json!({"role": "system", "content": prompt}))
                        .expect("a JSON value serialises");
                let message = Arc::<RawValue>::from(message);
                *rendered = Some((today, message.clone()));
                message
            }
        }
    }

    /// Runs one call. Errors (a bad argument, a refused URL, not an image) become the tool's
    /// content, so the model can tell the user; they never end the stream.
    /// `attachments` are the exchange's inline images, which a call names `attachment:N`.
    pub async fn run(
        &self,
        requester: Requester<'_>,
        call: &ToolCall,
        attachments: &Attachments,
    ) -> ToolOutput {
        let outcome = match self.parse(call, attachments) {
            Ok(image) => self
                .ocr
                .recognize_logged(&self.log, requester, image)
                .await
                .map_err(|e| (e.code(), e.to_string())),
            Err(err) => Err(err),
        };
        match outcome {
            Ok(result) => {
                let text: String = result.data.text.chars().take(TEXT_FOR_MODEL).collect();
                let content = json!({
                    "ok": true,
                    "fund_code": result.data.fund_code,
                    "hold_share": result.data.hold_share,
                    "funds": result.data.funds,
                    "text": text,
                });
                let event = json!({
                    "id": call.id,
                    "ok": true,
                    "ocr_id": result.id,
                    "fund_code": result.data.fund_code,
                    "hold_share": result.data.hold_share,
                    "funds": result.data.funds,
                });
                ToolOutput {
                    content: content.to_string(),
                    event,
                }
            }
            Err((code, message)) => {
                let error = json!({"code": code, "message": message});
                ToolOutput {
                    content: json!({"ok": false, "error": error}).to_string(),
                    event: json!({"id": call.id, "ok": false, "error": error}),
                }
            }
        }
    }

    fn parse(
        &self,
        call: &ToolCall,
        attachments: &Attachments,
    ) -> Result<ImageRequest, (&'static str, String)> {
        let invalid = |m: String| ("invalid_arguments", m);
        if call.name != OCR_TOOL_NAME {
            return Err((
                "unknown_tool",
                format!("there is no tool `{}`; use {OCR_TOOL_NAME}", call.name),
            ));
        }
        let arguments: Value = serde_json::from_str(&call.arguments)
            .map_err(|e| invalid(format!("the arguments are not JSON: {e}")))?;
        let image_url = arguments
            .get("image_url")
            .and_then(Value::as_str)
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| invalid("`image_url` (a string) is required".into()))?;
        // A screenshot the user attached arrives inline, named or as it is; `url_type` does not
        // apply to it.
        let inline = if Attachments::names(image_url) {
            Some(attachments.get(image_url).ok_or_else(|| {
                invalid(format!(
                    "there is no `{image_url}` in this conversation; name an image as it was given"
                ))
            })?)
        } else {
            data_url::is_data_url(image_url).then_some(image_url)
        };
        if let Some(inline) = inline {
            return data_url::decode(inline, self.ocr.config().max_image_bytes)
                .map_err(|e| (e.code(), e.to_string()));
        }
        let url_type = match arguments.get("url_type") {
            None | Some(Value::Null) => self.default_url_type,
            Some(Value::String(name)) => match UrlType::parse(name) {
                Some(UrlType::Upload) | None => {
                    return Err(invalid(format!(
                        "`url_type` must be oss or 7min_local, not `{name}`"
                    )));
                }
                Some(t) => t,
            },
            Some(_) => return Err(invalid("`url_type` must be a string".into())),
        };
        Ok(ImageRequest {
            url_type,
            image_url: image_url.to_owned(),
            upload: None,
        })
    }
}

/// The `tools` array of one upstream round: the proxy's own (when offered), then the client's.
pub struct OfferedTools<'a> {
    own: Option<&'a RawValue>,
    /// Both lists in one array, when the client brought tools.
    merged: Option<Box<RawValue>>,
}

impl<'a> OfferedTools<'a> {
    pub fn new(own: Option<&'a RawValue>, client: &ClientTools) -> Self {
        if client.definitions.is_empty() {
            return Self { own, merged: None };
        }
        let client = serde_json::to_string(&client.definitions).expect("JSON values serialise");
        // Both are JSON arrays: the elements of one, a comma, the elements of the other.
        let merged = match own.map(RawValue::get) {
            Some(own) if own.len() > 2 => {
                format!("{},{}", &own[..own.len() - 1], &client[1..])
            }
            _ => client,
        };
        let merged = RawValue::from_string(merged).expect("two JSON arrays make one");
        Self {
            own,
            merged: Some(merged),
        }
    }

    /// The array to send, if any tool is offered.
    pub fn get(&self) -> Option<&RawValue> {
        self.merged.as_deref().or(self.own)
    }
}

/// Streamed fragments of the calls in one answer, keyed by their `index`.
#[derive(Debug, Default)]
pub struct CallAssembler {
    calls: BTreeMap<u32, ToolCall>,
}

impl CallAssembler {
    pub fn add(&mut self, fragment: &crate::upstream::wire::ToolCallDelta) {
        let call = self
            .calls
            .entry(fragment.index)
            .or_insert_with(|| ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        if let Some(id) = fragment.id.as_deref().filter(|id| !id.is_empty()) {
            call.id = id.to_owned();
        }
        if let Some(function) = &fragment.function {
            if let Some(name) = function.name.as_deref() {
                call.name.push_str(name);
            }
            if let Some(arguments) = function.arguments.as_deref() {
                call.arguments.push_str(arguments);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls in `index` order; a call the upstream sent without an id gets one.
    pub fn finish(self) -> Vec<ToolCall> {
        let mut seen = HashSet::new();
        self.calls
            .into_iter()
            .map(|(index, mut call)| {
                if call.id.is_empty() || !seen.insert(call.id.clone()) {
                    call.id = format!("call_{index}_{}", uuid::Uuid::new_v4().simple());
                }
                call
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::wire::{FunctionDelta, ToolCallDelta};

    fn fragment(
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
    ) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            function: Some(FunctionDelta {
                name: name.map(str::to_owned),
                arguments: arguments.map(str::to_owned),
            }),
        }
    }

    #[test]
    fn interleaved_fragments_assemble_by_index() {
        let mut calls = CallAssembler::default();
        calls.add(&fragment(0, Some("a"), Some("ocr_image"), Some("")));
        calls.add(&fragment(1, Some("b"), Some("ocr_image"), None));
        calls.add(&fragment(0, None, None, Some("{\"image_u")));
        calls.add(&fragment(1, None, None, Some("{\"image_url\":")));
        calls.add(&fragment(0, None, None, Some("rl\":\"x\"}")));
        calls.add(&fragment(1, None, None, Some("\"y\"}")));
        let calls = calls.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].arguments.as_str()),
            ("a", "{\"image_url\":\"x\"}")
        );
        assert_eq!(
            (calls[1].id.as_str(), calls[1].arguments.as_str()),
            ("b", "{\"image_url\":\"y\"}")
        );
    }

    #[test]
    fn client_tools_follow_the_proxys_own_in_one_array() {
        let own = RawValue::from_string(
            r#"[{"type":"function","function":{"name":"ocr_image"}}]"#.into(),
        )
        .expect("JSON");
        let client = ClientTools {
            definitions: vec![
                json!({"type": "function", "function": {"name": "a"}}),
                json!({"type": "function", "function": {"name": "b"}}),
            ],
            ..ClientTools::default()
        };
        let names = |offered: &OfferedTools| -> Vec<String> {
            let value: Value =
                serde_json::from_str(offered.get().expect("tools").get()).expect("JSON");
            value
                .as_array()
                .expect("array")
                .iter()
                .map(|t| t["function"]["name"].as_str().expect("name").to_owned())
                .collect()
        };
        assert_eq!(
            names(&OfferedTools::new(Some(&own), &client)),
            ["ocr_image", "a", "b"]
        );
        assert_eq!(names(&OfferedTools::new(None, &client)), ["a", "b"]);
        let none = ClientTools::default();
        assert_eq!(names(&OfferedTools::new(Some(&own), &none)), ["ocr_image"]);
        assert!(OfferedTools::new(None, &none).get().is_none());
    }

    #[test]
    fn missing_or_repeated_ids_are_made_unique() {
        let mut calls = CallAssembler::default();
        calls.add(&fragment(0, None, Some("ocr_image"), Some("{}")));
        calls.add(&fragment(1, Some("same"), Some("ocr_image"), Some("{}")));
        calls.add(&fragment(2, Some("same"), Some("ocr_image"), Some("{}")));
        let calls = calls.finish();
        assert!(calls[0].id.starts_with("call_0_"));
        assert_eq!(calls[1].id, "same");
        assert_ne!(calls[2].id, "same");
    }
}
