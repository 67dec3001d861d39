//! Held shares on the page: the number right after a share label (持有份额, 持仓份额, 份额(份),
//! 当前份额, a bare 份额; never 可用份额, 冻结份额 or 确认份额), or else the numbers straight
//! below it in its column.
//!
//! A number is the share only if a share label gives it. In a table, a number under the share
//! header is taken only if that header is the nearest one above it: the numbers under 可用份额,
//! 单位净值, 参考市值, 持仓金额 or 收益 beside it belong to those columns. A percentage never counts.

use std::sync::LazyLock;

use regex::Regex;

use super::codes::Code;
use super::lines::{Line, Rect, is_cjk};

pub(super) static SHARE_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"持有份额|持仓份额|当前份额|份额(?:[(]份[)]?)?").expect("valid regex")
});
/// Labels and column headers of the other numbers near a share: shares not held (available,
/// frozen), prices and NAVs, amounts, returns, rates, dates.
pub(super) static OTHER_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"可用份额|冻结份额|确认份额|赎回份额|单位净值|累计净值|最新净值|净值|参考市值|持仓市值|市值|持有金额|持仓金额|金额|持有收益|累计收益|收益率|收益|盈亏|最新价|现价|成本价|成本|价格|涨跌幅|涨幅|占比|日期",
    )
    .expect("valid regex")
});
/// Words after `份额` that make it another figure (份额确认日, 份额净值...).
const NOT_HELD_AFTER: [&str; 5] = ["确认", "净值", "变动", "明细", "日期"];
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d[\d,.]*\d|\d").expect("valid regex"));
/// Prefixes that turn `份额` into a distractor.
const NOT_HELD_BEFORE: [&str; 4] = ["可用", "确认", "冻结", "赎回"];

/// The shares found on a page, and what its labels said.
#[derive(Debug, Default)]
pub(super) struct ShareFindings {
    pub(super) values: Vec<ShareValue>,
    /// A label of the held share was on the page.
    pub(super) held_label: bool,
    /// A label of shares that are not the held ones (可用份额, 冻结份额...) was on the page.
    pub(super) other_share_label: bool,
}

#[derive(Debug, Clone)]
pub(super) struct ShareValue {
    pub(super) value: String,
    pub(super) line: usize,
    pub(super) rect: Rect,
    /// Tesseract's lowest confidence in the value's words.
    pub(super) conf: f32,
}

/// The most digits a share's whole part has: a longer number is an order or account number.
const MAX_SHARE_DIGITS: usize = 10;

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
    if value.len() > MAX_SHARE_DIGITS {
        return None;
    }
    if let Some(frac) = frac {
        if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        value.push('.');
        value.push_str(frac);
    }
    Some(value)
}

/// Numbers on a line with their byte spans: whole tokens only (not a piece of `3,4S6.7B`), and
/// no percentage.
fn numbers(line: &Line) -> Vec<(usize, usize, String)> {
    NUMBER
        .find_iter(&line.text)
        .filter(|m| is_whole(&line.text, m.start(), m.end()) && !is_percent(&line.text, m.end()))
        .filter_map(|m| share_number(m.as_str()).map(|v| (m.start(), m.end(), v)))
        .collect()
}

/// Whether `text[start..end]` stands alone: no letter or digit touches it on either side.
fn is_whole(text: &str, start: usize, end: usize) -> bool {
    let touches = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !touches(text[..start].chars().next_back()) && !touches(text[end..].chars().next())
}

/// Whether the number ending at `end` is followed by a percent sign.
fn is_percent(text: &str, end: usize) -> bool {
    text[end..].trim_start().starts_with(['%', '％'])
}

/// Whether the share label `label` on `text` names the held share, not another figure.
fn names_held_share(text: &str, label: &regex::Match<'_>) -> bool {
    if !label.as_str().starts_with("份额") {
        return true;
    }
    let before: String = text[..label.start()].chars().rev().take(3).collect();
    let before: String = before.chars().rev().collect();
    let after = &text[label.end()..];
    !NOT_HELD_BEFORE.iter().any(|w| before.contains(w))
        && !NOT_HELD_AFTER.iter().any(|w| after.starts_with(w))
}

pub(super) fn find_share_values(lines: &[Line], codes: &[Code]) -> ShareFindings {
    let mut found = ShareFindings::default();
    for (li, line) in lines.iter().enumerate() {
        if OTHER_LABEL
            .find_iter(&line.text)
            .any(|m| m.as_str().ends_with("份额"))
        {
            found.other_share_label = true;
        }
        for label in SHARE_LABEL.find_iter(&line.text) {
            if !names_held_share(&line.text, &label) {
                continue;
            }
            found.held_label = true;
            let label_rect = line.span_rect(label.start(), label.end());
            // Right after the label on the same line (a number a column away is another
            // column's: the label heads its own).
            let after = &line.text[label.end()..];
            let skipped = after.len()
                - after
                    .trim_start_matches(|c: char| c.is_whitespace() || c == ':')
                    .len();
            let start = label.end() + skipped;
            let next = NUMBER.find(&line.text[start..]).filter(|m| {
                let rect = line.span_rect(start + m.start(), start + m.end());
                m.start() == 0 && rect.left - label_rect.right <= 3.0 * label_rect.height()
            });
            if let Some(m) = next {
                let end = start + m.end();
                if is_percent(&line.text, end) || !is_whole(&line.text, start, end) {
                    continue;
                }
                if let Some(value) = share_number(m.as_str()) {
                    let rect = line.span_rect(start, end);
                    found.values.push(ShareValue {
                        value,
                        line: li,
                        rect,
                        conf: line.span_conf(start, end),
                    });
                    continue;
                }
            }
            let others = other_headers(lines, label_rect);
            found
                .values
                .extend(column_values(lines, li, label_rect, &others, codes));
        }
    }
    found
}

/// The other column headers in the share header's row: where their columns are.
fn other_headers(lines: &[Line], header: Rect) -> Vec<Rect> {
    lines
        .iter()
        .filter(|line| line.rect.same_row(&header) || header.same_row(&line.rect))
        .flat_map(|line| {
            OTHER_LABEL
                .find_iter(&line.text)
                .map(|m| line.span_rect(m.start(), m.end()))
        })
        .filter(|rect| rect.same_row(&header) && *rect != header)
        .collect()
}

/// The numbers straight below a label, row by row, until other text or a gap ends the column.
fn column_values(
    lines: &[Line],
    label_line: usize,
    label: Rect,
    others: &[Rect],
    codes: &[Code],
) -> Vec<ShareValue> {
    // A number is in the share's column only if no other header is nearer to it.
    let nearest_is_label = |rect: &Rect| {
        let to_label = (rect.center_x() - label.center_x()).abs();
        others
            .iter()
            .all(|other| (rect.center_x() - other.center_x()).abs() > to_label)
    };
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
            // Text elsewhere on the row (a name, a code): the table goes on.
            last_bottom = last_bottom.max(line.rect.bottom);
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
            .map(|(s, e, v)| (line.span_rect(s, e), (v, line.span_conf(s, e))))
            .filter(|(r, _)| r.right > left && r.left < right && nearest_is_label(r))
            .min_by(|(a, _), (b, _)| {
                (a.center_x() - label.center_x())
                    .abs()
                    .total_cmp(&(b.center_x() - label.center_x()).abs())
            });
        // Text beside the column that does not reach under the label (a long name) does
        // not end it, nor do specks read as punctuation or letters (`o_o`); Chinese text or a
        // number under the label does.
        let under_label = line.words.iter().any(|w| {
            w.rect.right > label.left
                && w.rect.left < label.right
                && w.text.chars().any(|c| c.is_ascii_digit() || is_cjk(c))
        });
        match best {
            None if !is_code && !under_label => {
                last_bottom = last_bottom.max(line.rect.bottom);
                continue;
            }
            Some((rect, (value, conf))) if !is_code => {
                out.push(ShareValue {
                    value,
                    line: li,
                    rect,
                    conf,
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
        assert_eq!(share_number("20240601883920"), None, "an order number");
    }
}
