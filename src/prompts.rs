//! Prompt templates from the `prompts/` folder: plain text with `{{variable}}` placeholders,
//! read and checked at start-up so a missing file or an unknown variable stops the service
//! with a clear message instead of surfacing mid-conversation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The system prompt: `{{date}}`, `{{tool_name}}`.
pub const SYSTEM: &str = "system.txt";
/// The OCR tool's description: `{{tool_name}}`, `{{default_url_type}}`.
pub const OCR_TOOL: &str = "ocr_tool.txt";

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("prompt template {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("prompt template {path}, line {line}: {message}")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// A checked template.
#[derive(Debug, Clone)]
pub struct Template {
    text: String,
}

impl Template {
    /// Parses `text`, allowing only the `allowed` variables.
    pub fn parse(path: &Path, text: &str, allowed: &[&str]) -> Result<Self, PromptError> {
        let malformed = |offset: usize, message: String| PromptError::Malformed {
            path: path.to_owned(),
            line: text[..offset].matches('\n').count() + 1,
            message,
        };
        if text.trim().is_empty() {
            return Err(malformed(0, "the template is empty".into()));
        }
        let mut rest = 0;
        while let Some(open) = text[rest..].find("{{") {
            let start = rest + open;
            let Some(close) = text[start..].find("}}") else {
                return Err(malformed(start, "`{{` without a closing `}}`".into()));
            };
            let name = text[start + 2..start + close].trim();
            if !allowed.contains(&name) {
                return Err(malformed(
                    start,
                    format!(
                        "unknown variable `{{{{{name}}}}}`; this template knows {}",
                        allowed.join(", ")
                    ),
                ));
            }
            rest = start + close + 2;
        }
        if let Some(stray) = text[rest..].find("}}") {
            return Err(malformed(
                rest + stray,
                "`}}` without an opening `{{`".into(),
            ));
        }
        Ok(Self {
            text: text.to_owned(),
        })
    }

    pub fn render(&self, values: &BTreeMap<&str, String>) -> String {
        let mut out = self.text.clone();
        for (name, value) in values {
            out = out.replace(&format!("{{{{{name}}}}}", name = name), value);
            out = out.replace(&format!("{{{{ {name} }}}}", name = name), value);
        }
        out.trim().to_owned()
    }
}

/// Every template the service uses.
#[derive(Debug, Clone)]
pub struct Prompts {
    pub system: Template,
    pub ocr_tool: Template,
}

impl Prompts {
    pub fn load(dir: &Path) -> Result<Self, PromptError> {
        Ok(Self {
            system: load_one(dir, SYSTEM, &["date", "tool_name"])?,
            ocr_tool: load_one(dir, OCR_TOOL, &["tool_name", "default_url_type"])?,
        })
    }
}

fn load_one(dir: &Path, name: &str, allowed: &[&str]) -> Result<Template, PromptError> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|source| PromptError::Read {
        path: path.clone(),
        source,
    })?;
    Template::parse(&path, &text, allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_prompts_load_and_render() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let prompts = Prompts::load(&dir).expect("shipped prompts are valid");
        let values = BTreeMap::from([
            ("date", "2026-11-21".to_owned()),
            ("tool_name", "ocr_image".to_owned()),
        ]);
        let system = prompts.system.render(&values);
        assert!(
            system.contains("2026-11-21") && system.contains("ocr_image"),
            "{system}"
        );
        assert!(!system.contains("{{"));
    }

    #[test]
    fn malformed_templates_are_refused_with_file_and_line() {
        let path = Path::new("prompts/x.txt");
        let err = Template::parse(path, "line one\nhello {{nme}}", &["name"]).expect_err("unknown");
        assert!(
            err.to_string().contains("line 2") && err.to_string().contains("nme"),
            "{err}"
        );
        let err = Template::parse(path, "hello {{name", &["name"]).expect_err("unclosed");
        assert!(err.to_string().contains("closing"), "{err}");
        let err = Template::parse(path, "hello name}}", &["name"]).expect_err("stray");
        assert!(err.to_string().contains("opening"), "{err}");
        assert!(Template::parse(path, "  \n", &[]).is_err());
        let err = Prompts::load(Path::new("/nonexistent")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/system.txt"), "{err}");
    }
}
