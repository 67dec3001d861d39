//! What the demo model says: the frames of a streamed answer, tool calls for the image links
//! in a question, and the answer from tool results.

use bytes::Bytes;
use serde_json::{Value, json};

use super::{Fault, MockKnobs};

pub(super) enum Frame {
    /// An answer chunk, sent `token_delay` after the previous one.
    Content(Bytes),
    /// Anything else, sent at once.
    Data(Bytes),
    Stall,
    Cut,
}

pub(super) fn build_frames(
    model: &str,
    pieces: &[String],
    prompt_tokens: u64,
    include_usage: bool,
    fault: Option<Fault>,
) -> Vec<Frame> {
    let id = format!("chatcmpl-demo-{}", uuid::Uuid::new_v4().simple());
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let data = |value: &Value| Frame::Data(Bytes::from(format!("data: {value}\n\n")));
    let stop_after = match fault {
        Some(Fault::CutAfter(n) | Fault::MalformedAfter(n) | Fault::StallAfter(n)) => Some(n),
        _ => None,
    };
    let mut frames = Vec::with_capacity(pieces.len() + 3);
    for (i, piece) in pieces.iter().enumerate() {
        if stop_after == Some(i) {
            break;
        }
        let delta = if i == 0 {
            json!({"role": "assistant", "content": piece})
        } else {
            json!({"content": piece})
        };
        frames.push(Frame::Content(Bytes::from(format!(
            "data: {}\n\n",
            chunk(delta, Value::Null)
        ))));
    }
    match fault {
        Some(Fault::CutAfter(_)) => {
            frames.push(Frame::Cut);
            return frames;
        }
        Some(Fault::MalformedAfter(_)) => {
            frames.push(Frame::Data(Bytes::from_static(
                b"data: {\"choices\": [\n\n",
            )));
            return frames;
        }
        Some(Fault::StallAfter(_)) => {
            frames.push(Frame::Stall);
            return frames;
        }
        _ => {}
    }
    frames.push(data(&chunk(json!({}), json!("stop"))));
    if include_usage {
        let completion = pieces.len() as u64;
        frames.push(data(&json!({
            "id": id, "object": "chat.completion.chunk", "model": model, "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            },
        })));
    }
    frames.push(Frame::Data(Bytes::from_static(b"data: [DONE]\n\n")));
    frames
}

/// Image links in the last `user` message: URLs in its text and its `image_url` parts.
pub(super) fn image_urls(request: &Value) -> Vec<String> {
    static URL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"https?://[^\s"'<>)]+|attachment:\d+"#).expect("valid regex")
    });
    let Some(message) = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
    else {
        return Vec::new();
    };
    let mut urls: Vec<String> = URL
        .find_iter(&last_user_text(request))
        .map(|m| m.as_str().to_owned())
        .collect();
    if let Some(parts) = message.get("content").and_then(Value::as_array) {
        urls.extend(
            parts
                .iter()
                .filter_map(|p| p.pointer("/image_url/url").and_then(Value::as_str))
                .map(str::to_owned),
        );
    }
    urls
}

/// The calls to `ocr_image` for the image links in a question: one per URL.
pub(super) fn ocr_calls(urls: &[String], knobs: &MockKnobs) -> Vec<(String, String)> {
    let urls: Vec<String> = if urls.is_empty() {
        vec!["http://127.0.0.1:1/none.png".to_owned()]
    } else {
        urls.to_vec()
    };
    urls.iter()
        .map(|url| {
            let mut args = json!({"image_url": url});
            if let Some(url_type) = &knobs.tool_url_type {
                args["url_type"] = json!(url_type);
            }
            ("ocr_image".to_owned(), args.to_string())
        })
        .collect()
}

/// A call to the first offered tool other than `ocr_image` whose name the question mentions,
/// with the question as its argument: how the demo model exercises a client's own tools.
pub(super) fn client_tool_call(request: &Value, question: &str) -> Option<(String, String)> {
    let tools = request.get("tools")?.as_array()?;
    let name = tools
        .iter()
        .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
        .find(|name| *name != "ocr_image" && question.contains(name))?;
    Some((name.to_owned(), json!({ "question": question }).to_string()))
}

/// A streamed answer that makes `calls` (name, arguments): the first call shares its chunk
/// with some content, arguments come in `tool_fragment`-sized (or larger) pieces, and the calls are
/// interleaved by `index`.
pub(super) fn tool_call_frames(
    model: &str,
    calls: &[(String, String)],
    knobs: &MockKnobs,
    include_usage: bool,
) -> Vec<Frame> {
    let id = format!("chatcmpl-demo-{}", uuid::Uuid::new_v4().simple());
    let chunk = |delta: Value, finish: Value| {
        let value = json!({
            "id": id, "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        Frame::Content(Bytes::from(format!("data: {value}\n\n")))
    };
    let arguments: Vec<&String> = calls.iter().map(|(_, arguments)| arguments).collect();
    let mut frames = Vec::new();
    for (i, (name, _)) in calls.iter().enumerate() {
        let call = json!([{"index": i, "id": format!("call_{i}_{}", uuid::Uuid::new_v4().simple()),
            "type": "function", "function": {"name": name, "arguments": ""}}]);
        let delta = if i == 0 {
            json!({"role": "assistant", "content": "Let me read that. ", "tool_calls": call})
        } else {
            json!({"tool_calls": call})
        };
        frames.push(chunk(delta, Value::Null));
    }
    // A long argument (an inline `data:` image) comes in at most 32 pieces, not thousands.
    let longest_argument = arguments.iter().map(|a| a.chars().count()).max();
    let size = knobs
        .tool_fragment
        .max(longest_argument.unwrap_or(0) / 32)
        .max(1);
    let pieces: Vec<Vec<String>> = arguments
        .iter()
        .map(|a| {
            a.chars()
                .collect::<Vec<_>>()
                .chunks(size)
                .map(|c| c.iter().collect())
                .collect()
        })
        .collect();
    let longest = pieces.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..longest {
        for (i, call_pieces) in pieces.iter().enumerate() {
            if let Some(piece) = call_pieces.get(k) {
                let delta = json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]});
                frames.push(chunk(delta, Value::Null));
            }
        }
    }
    let tail = |value: Value| Frame::Data(Bytes::from(format!("data: {value}\n\n")));
    frames.push(tail(json!({
        "id": id, "object": "chat.completion.chunk", "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
    })));
    if include_usage {
        frames.push(tail(json!({
            "id": id, "object": "chat.completion.chunk", "model": model, "choices": [],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })));
    }
    frames.push(Frame::Data(Bytes::from_static(b"data: [DONE]\n\n")));
    frames
}

/// The answer after tool results: each fund the tools found, or what failed.
pub(super) fn tool_answer_pieces(request: &Value) -> Vec<String> {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let since = messages
        .iter()
        .rposition(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
        .map_or(0, |i| i + 1);
    let mut text = String::new();
    for message in &messages[since..] {
        let content = message.get("content").and_then(Value::as_str).unwrap_or("");
        let result: Value = serde_json::from_str(content).unwrap_or(Value::Null);
        if result.get("ok").is_none() {
            // Not `ocr_image`'s: a client's own tool, whose answer is repeated.
            text.push_str(&format!("The tool said: {content}. "));
            continue;
        }
        if text.is_empty() {
            text.push_str("From the screenshot: ");
        }
        if result["ok"] == true {
            for fund in result["funds"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "fund {} holds {} shares. ",
                    fund["fund_code"].as_str().unwrap_or("?"),
                    fund["hold_share"].as_str().unwrap_or("?")
                ));
            }
        } else {
            text.push_str(&format!(
                "the tool failed: {}. ",
                result
                    .pointer("/error/code")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
            ));
        }
    }
    text.split_inclusive(' ').map(str::to_owned).collect()
}

/// Text of the last `user` message (string content, or the text parts of an array).
pub(super) fn last_user_text(request: &Value) -> String {
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return String::new();
    };
    let Some(content) = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
    else {
        return String::new();
    };
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The answer, one chunk a word. With `tokens`, exactly that many chunks, each echoing the
/// question, so a test can tell one request's answer from another's by any single chunk.
pub(super) fn reply_pieces(question: &str, tokens: Option<usize>) -> Vec<String> {
    let question = question.trim();
    match tokens {
        Some(n) => (0..n).map(|i| format!("{question}#{i} ")).collect(),
        None => {
            let text = format!(
                "This is chat-proxy's offline demo model. You asked: \u{201c}{question}\u{201d}. \
                 Point upstream.base_url at a real OpenAI-compatible API to get real answers."
            );
            text.split_inclusive(' ').map(str::to_owned).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_echoes_question_in_every_chunk_when_counted() {
        let pieces = reply_pieces("nonce-42", Some(3));
        assert_eq!(pieces, vec!["nonce-42#0 ", "nonce-42#1 ", "nonce-42#2 "]);
        let demo = reply_pieces("hi", None).concat();
        assert!(demo.contains("You asked: \u{201c}hi\u{201d}"));
    }

    #[test]
    fn faults_shape_the_frames() {
        let pieces = reply_pieces("q", Some(5));
        let frames = build_frames("m", &pieces, 1, true, Some(Fault::CutAfter(2)));
        assert_eq!(frames.len(), 3);
        assert!(matches!(frames[2], Frame::Cut));
        let frames = build_frames("m", &pieces, 1, true, None);
        // 5 content, finish, usage, [DONE]
        assert_eq!(frames.len(), 8);
    }
}
