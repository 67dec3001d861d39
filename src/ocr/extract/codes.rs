//! Fund codes on the page: six-digit runs that are not part of an amount, a date or a time, and
//! not behind a distractor (order number, invitation code, card number...), each with its name:
//! the Chinese text before the code, or the line above.

use std::sync::LazyLock;

use regex::Regex;

use super::lines::{Line, Rect, is_cjk};
use super::shares::{OTHER_LABEL, SHARE_LABEL};

static SIX_DIGITS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d{6}").expect("valid regex"));
/// Text that is no half of a fund's name: a long number (a code, an order) or a date.
static NOT_A_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d{5}|\d{4}[-./年]\d{1,2}").expect("valid regex"));

/// Words before a six-digit number that make it something other than a fund code.
const NOT_A_CODE_BEFORE: [&str; 25] = [
    "订单",
    "请码",
    "推荐",
    "优惠",
    "单号",
    "编号",
    "邀请",
    "卡号",
    "银行卡",
    "尾号",
    "流水",
    "交易号",
    "手机",
    "电话",
    "账号",
    "账户",
    "客户号",
    "验证码",
    "金额",
    "收益",
    "市值",
    "净值",
    "资产",
    "份额",
    "¥",
];

/// A fund code with where it sits.
#[derive(Debug, Clone)]
pub(super) struct Code {
    pub(super) code: String,
    pub(super) name: Option<String>,
    pub(super) line: usize,
    pub(super) rect: Rect,
    /// Top of the fund's block: its name line if that is above the code.
    pub(super) anchor_top: f32,
}

/// Whether `text` has Chinese in it: two characters or more.
fn has_cjk(text: &str) -> bool {
    text.chars().filter(|&c| is_cjk(c)).count() >= 2
}

pub(super) fn find_codes(lines: &[Line]) -> Vec<Code> {
    let mut codes: Vec<Code> = Vec::new();
    for (li, line) in lines.iter().enumerate() {
        let text = &line.text;
        for m in SIX_DIGITS.find_iter(text) {
            let (start, end) = (m.start(), m.end());
            let mut before_chars = text[..start].chars().rev().filter(|c| !c.is_whitespace());
            let prev = text[..start].chars().next_back();
            let prev_visible = before_chars.next();
            let prev_prev_visible = before_chars.next();
            let mut rest = text[end..].chars();
            let next = rest.next();
            let after_next = rest.next();
            // Part of a longer number, an amount, a date or a time: not a code. A colon is
            // fine after a label (`基金代码：005827`), not after a digit (`12:005827`).
            if prev.is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | ',' | '-' | '/'))
                || (prev_visible == Some(':')
                    && prev_prev_visible.is_some_and(|c| c.is_ascii_digit()))
                || next.is_some_and(|c| {
                    c.is_ascii_digit() || matches!(c, '元' | '%' | '-' | '/' | ':')
                })
                || (matches!(next, Some('.' | ','))
                    && after_next.is_some_and(|c| c.is_ascii_digit()))
            {
                continue;
            }
            let before: String = text[..start]
                .chars()
                .rev()
                .take(8)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let before_compact: String = before.chars().filter(|c| !c.is_whitespace()).collect();
            if NOT_A_CODE_BEFORE.iter().any(|w| before_compact.contains(w))
                || is_misread_label(&text[..start])
            {
                continue;
            }
            let code = m.as_str().to_owned();
            if codes.iter().any(|c| c.code == code) {
                continue;
            }
            let rect = line.span_rect(start, end);
            let (name, anchor_top) = fund_name(lines, li, start, rect);
            codes.push(Code {
                code,
                name,
                line: li,
                rect,
                anchor_top,
            });
        }
    }
    codes
}

/// The fund's name: Chinese text before the code on its line, else the nearest line above,
/// with the line above that when the name wrapped onto two. On a line above, the name is the run
/// of words that starts over the code's column, not the figures further along the row.
fn fund_name(lines: &[Line], li: usize, start: usize, code: Rect) -> (Option<String>, f32) {
    if let Some(name) = clean_name(&lines[li].text[..start]) {
        return (Some(name), code.top);
    }
    let height = code.height().max(1.0);
    let column = (code.left - 4.0 * height, code.right + 4.0 * height);
    for (ai, above) in lines[..li].iter().enumerate().rev() {
        if code.top - above.rect.bottom > 3.0 * height.max(above.rect.height()) {
            break;
        }
        if SHARE_LABEL.is_match(&above.text) {
            continue;
        }
        let Some((name, rect)) = name_run(above, column) else {
            continue;
        };
        // A figure's label (持有收益, 持仓市值) is no name.
        if OTHER_LABEL.find_iter(&name).any(|m| m.end() == name.len()) {
            continue;
        }
        // The first half of a wrapped name: just above, starting where this line starts.
        let first_half = ai
            .checked_sub(1)
            .map(|i| &lines[i])
            .filter(|line| !SHARE_LABEL.is_match(&line.text) && !line.text.contains("名称"))
            .and_then(|line| name_run(line, column))
            .filter(|(first_text, first)| {
                rect.top - first.bottom < 0.8 * rect.height()
                    && (first.left - rect.left).abs() < rect.height()
                    && !NOT_A_NAME.is_match(first_text)
            });
        return match first_half {
            Some((first, first_rect)) => (Some(first + &name), first_rect.top),
            None => (Some(name), rect.top),
        };
    }
    (None, code.top)
}

/// Whether the text before a number, on its line, is a short Chinese label Tesseract read as
/// Latin letters (邀请码 as `WAS` or `Bis`): two to four letters, a capital first, and nothing
/// else.
fn is_misread_label(before: &str) -> bool {
    let before = before.trim();
    (2..=4).contains(&before.len())
        && before.starts_with(|c: char| c.is_ascii_uppercase())
        && before.bytes().all(|b| b.is_ascii_alphabetic())
}

/// `text` without the words around a code, if Chinese is left.
fn clean_name(text: &str) -> Option<String> {
    let s = text.replace("基金代码", "").replace("代码", "");
    let s = s.trim_matches(|c: char| c.is_whitespace() || "():|-".contains(c));
    has_cjk(s).then(|| s.to_owned())
}

/// The words of `line` that start over `column` and follow each other without a column's gap,
/// as a name, with their box.
fn name_run(line: &Line, column: (f32, f32)) -> Option<(String, Rect)> {
    let first = line
        .words
        .iter()
        .position(|w| w.rect.right > column.0 && w.rect.left < column.1)?;
    let mut rect = line.words[first].rect;
    let mut text = line.words[first].text.clone();
    for word in &line.words[first + 1..] {
        // A figure of the row (`1.0434`, `3,456.78`, `+12%`) ends the name.
        let is_figure = word.text.contains(['.', ',', '%'])
            && word
                .text
                .chars()
                .all(|c| c.is_ascii_digit() || ".,%+-".contains(c));
        if is_figure || word.rect.left - rect.right > 1.5 * rect.height().max(word.rect.height()) {
            break;
        }
        rect = rect.union(word.rect);
        text.push_str(&word.text);
    }
    clean_name(&text).map(|name| (name, rect))
}
