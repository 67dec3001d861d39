//! The tool fields of a `/v1/chat/completions` body: `tools` (functions of the client's own,
//! never one named `ocr_image`, which is the proxy's), `tool_choice` and `parallel_tool_calls`.

use serde_json::{Map, Value};

use crate::answer::tools::OCR_TOOL_NAME;
use crate::answer::{ClientTools, RequestError};

use super::request::param;

/// The most tools a client may define (OpenAI's own limit).
const MAX_TOOLS: usize = 128;

/// `tools`, `tool_choice` and `parallel_tool_calls`.
pub(super) fn client_tools(fields: &mut Map<String, Value>) -> Result<ClientTools, RequestError> {
    let mut tools = ClientTools::default();
    if let Some(value) = fields.remove("tools") {
        let Value::Array(definitions) = value else {
            return Err(param("tools", "must be an array"));
        };
        if definitions.len() > MAX_TOOLS {
            return Err(param(
                "tools",
                &format!("at most {MAX_TOOLS} tools are allowed"),
            ));
        }
        for (i, definition) in definitions.iter().enumerate() {
            let name = tool_name(definition, i)?;
            if name == OCR_TOOL_NAME {
                return Err(param(
                    &format!("tools[{i}].function.name"),
                    "`ocr_image` is the proxy's own tool and runs on the server; give yours another name",
                ));
            }
            if tools.owns(name) {
                return Err(param(
                    &format!("tools[{i}].function.name"),
                    &format!("`{name}` is defined twice"),
                ));
            }
            tools.names.push(name.to_owned());
        }
        tools.definitions = definitions;
    }
    if let Some(choice) = fields.remove("tool_choice") {
        let known = |name: &str| name == OCR_TOOL_NAME || tools.owns(name);
        let valid = match &choice {
            Value::String(mode) => matches!(mode.as_str(), "none" | "auto" | "required"),
            Value::Object(_) => {
                choice["type"] == "function"
                    && choice
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .is_some_and(known)
            }
            _ => false,
        };
        if !valid {
            return Err(param(
                "tool_choice",
                "must be `none`, `auto`, `required` or {\"type\": \"function\", \"function\": {\"name\"}} naming a tool",
            ));
        }
        tools.choice = Some(choice);
    }
    match fields.remove("parallel_tool_calls") {
        None => {}
        Some(Value::Bool(parallel)) => tools.parallel_calls = Some(parallel),
        Some(_) => return Err(param("parallel_tool_calls", "must be a boolean")),
    }
    Ok(tools)
}

/// The name of `tools[i]`, a `{"type": "function", "function": {"name", ...}}`.
fn tool_name(definition: &Value, i: usize) -> Result<&str, RequestError> {
    if definition["type"] != "function" {
        return Err(param(
            &format!("tools[{i}].type"),
            "only `function` tools are supported",
        ));
    }
    let function = &definition["function"];
    let name = function["name"].as_str().unwrap_or_default();
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if !valid {
        return Err(param(
            &format!("tools[{i}].function.name"),
            "must be 1 to 64 letters, digits, `_` or `-`",
        ));
    }
    if !matches!(function.get("parameters"), None | Some(Value::Object(_))) {
        return Err(param(
            &format!("tools[{i}].function.parameters"),
            "must be a JSON Schema object",
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(fields: Value) -> Result<ClientTools, RequestError> {
        let Value::Object(mut fields) = fields else {
            unreachable!("an object")
        };
        client_tools(&mut fields)
    }

    fn refused(fields: Value) -> Option<String> {
        parse(fields)
            .expect_err("refused")
            .param()
            .map(str::to_owned)
    }

    #[test]
    fn client_tools_are_checked_and_ocr_image_is_reserved() {
        let tool = |name: &str| json!({"type": "function", "function": {"name": name, "parameters": {"type": "object"}}});
        let tools = parse(json!({"tools": [tool("get_weather"), tool("lookup")]})).expect("valid");
        assert_eq!(tools.names, ["get_weather", "lookup"]);
        assert!(tools.owns("lookup"));
        let err = parse(json!({"tools": [tool("ocr_image")]})).expect_err("reserved");
        assert_eq!(
            (err.code(), err.param()),
            ("invalid_request", Some("tools[0].function.name"))
        );
        assert_eq!(
            refused(json!({"tools": [tool("a"), tool("a")]})).as_deref(),
            Some("tools[1].function.name")
        );
        assert_eq!(
            refused(json!({"tools": [{"type": "code_interpreter"}]})).as_deref(),
            Some("tools[0].type")
        );
        let choice = |name: &str| json!({"tools": [tool("lookup")], "tool_choice": {"type": "function", "function": {"name": name}}});
        assert!(parse(choice("lookup")).is_ok());
        assert!(
            parse(choice("ocr_image")).is_ok(),
            "the proxy's own may be chosen"
        );
        assert_eq!(refused(choice("other")).as_deref(), Some("tool_choice"));
        assert_eq!(
            refused(json!({"parallel_tool_calls": "yes"})).as_deref(),
            Some("parallel_tool_calls")
        );
    }
}
