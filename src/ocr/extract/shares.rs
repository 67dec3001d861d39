//! Held shares on the page: the number right after a share label (持有份额, 持仓份额, 份额(份),
//! 当前份额, never 可用份额 or 确认份额), or else the numbers straight below it in its column.

use std::sync::LazyLock;

use regex::Regex;

use super::codes::Code;
use super::lines::{Line, Rect};

pub(super) static SHARE_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"持有份额|持仓份额|当前份额|份额[(]份[)]?").expect("valid regex"));
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d[\d,.]*\d|\d").expect("valid regex"));
/// Prefixes that turn `份额(份)` into a distractor.
const NOT_HELD_BEFORE: [&str; 4] = ["可用", "确认", "冻结", "赎回"];

#[derive(Debug, Clone)]
pub(super) struct ShareValue {
    pub(super) value: String,
    pub(super) line: usize,
    pub(super) rect: Rect,
}

/// A share-like number: `12,345.67`, `12345.67`, `12345` (separators checked, not guessed).
fn share_number(raw: &str) -> Option<String> {
    let raw = raw.trim_matches(|c| c == ',' || c == '.');
    if raw.is_empty() {
        return None;
    }
    // A comma read as a period: "12.345.67" has one decimal point, the last one.
    let dots = raw.matches('.').count();
    let (int_part, frac) = match raw.rfind('.') {
        Some(i) if dots >= 1 => (&raw[..i], Some(&raw[i + 1..])),
        _ => (raw, None),
    };
    let groups: Vec<&str> = int_part.split([',', '.']).collect();
    if groups
        .iter()
        .any(|g| g.is_empty() || !g.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    if groups.len() > 1 && (groups[0].len() > 3 || groups[1..].iter().any(|g| g.len() != 3)) {
        return None;
    }
    let mut value: String = groups.concat();
    if let Some(frac) = frac {
        if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        value.push('.');
        value.push_str(frac);
    }
    Some(value)
}

/// Numbers on a line with their byte spans.
fn numbers(line: &Line) -> Vec<(usize, usize, String)> {
    NUMBER
        .find_iter(&line.text)
        .filter_map(|m| share_number(m.as_str()).map(|v| (m.start(), m.end(), v)))
        .collect()
}

pub(super) fn find_share_values(lines: &[Line], codes: &[Code]) -> Vec<ShareValue> {
    let mut values = Vec::new();
    for (li, line) in lines.iter().enumerate() {
        for label in SHARE_LABEL.find_iter(&line.text) {
            if label.as_str().starts_with("份额") {
                let before: String = line.text[..label.start()].chars().rev().take(3).collect();
                let before: String = before.chars().rev().collect();
                if NOT_HELD_BEFORE.iter().any(|w| before.contains(w)) {
                    continue;
                }
            }
            // Right after the label on the same line.
            let after = &line.text[label.end()..];
            let skipped = after.len()
                - after
                    .trim_start_matches(|c: char| c.is_whitespace() || c == ':')
                    .len();
            let start = label.end() + skipped;
            if let Some(m) = NUMBER.find(&line.text[start..]).filter(|m| m.start() == 0) {
                if let Some(value) = share_number(m.as_str()) {
                    let rect = line.span_rect(start, start + m.end());
                    values.push(ShareValue {
                        value,
                        line: li,
                        rect,
                    });
                    continue;
                }
            }
            let label_rect = line.span_rect(label.start(), label.end());
            values.extend(column_values(lines, li, label_rect, codes));
        }
    }
    values
}

/// The numbers straight below a label, row by row, until other text or a gap ends the column.
fn column_values(
    lines: &[Line],
    label_line: usize,
    label: Rect,
    codes: &[Code],
) -> Vec<ShareValue> {
    let slack = 0.6 * label.width().max(label.height());
    let (left, right) = (label.left - slack, label.right + slack);
    let mut out = Vec::new();
    let mut last_bottom = label.bottom;
    for (li, line) in lines.iter().enumerate().skip(label_line + 1) {
        if line.rect.top - last_bottom > 4.0 * label.height().max(line.rect.height()) {
            break;
        }
        // What this row holds inside the column.
        let in_column: Vec<(usize, usize, Rect)> = line
            .words
            .iter()
            .enumerate()
            .filter(|(_, w)| w.rect.right > left && w.rect.left < right)
            .map(|(i, w)| {
                let start = line.owner.iter().position(|o| *o == Some(i)).unwrap_or(0);
                (start, start + w.text.len(), w.rect)
            })
            .collect();
        if in_column.is_empty() {
            continue;
        }
        let is_code = codes.iter().any(|c| {
            c.line == li
                && in_column.iter().any(|(_, _, r)| {
                    r.same_row(&c.rect) && r.right > c.rect.left && r.left < c.rect.right
                })
        });
        let best = numbers(line)
            .into_iter()
            .map(|(s, e, v)| (line.span_rect(s, e), v))
            .filter(|(r, _)| r.right > left && r.left < right)
            .min_by(|(a, _), (b, _)| {
                (a.center_x() - label.center_x())
                    .abs()
                    .total_cmp(&(b.center_x() - label.center_x()).abs())
            });
        match best {
            Some((rect, value)) if !is_code => {
                out.push(ShareValue {
                    value,
                    line: li,
                    rect,
                });
                last_bottom = rect.bottom;
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_numbers() {
        assert_eq!(share_number("12,345.67").as_deref(), Some("12345.67"));
        assert_eq!(share_number("12.345.67").as_deref(), Some("12345.67"));
        assert_eq!(share_number("500").as_deref(), Some("500"));
        assert_eq!(share_number("1,23,4"), None);
    }
}
