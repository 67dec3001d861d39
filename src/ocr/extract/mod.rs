//! Fund holdings from Tesseract's word boxes.
//!
//! A regex over lines finds less than half of the shares on real screenshots, because apps
//! place the label before the value, above it, or only in a table's column header. So this
//! works with positions:
//! 1. Words become lines. Each line's text is rebuilt with a map back to its word boxes, with
//!    full-width characters and common OCR slips inside numbers mended.
//! 2. Fund codes are six-digit runs that are not part of an amount and not behind a
//!    distractor (order number, invitation code, card number...). The name is the Chinese text
//!    before the code, or the line above.
//! 3. Share labels (持有份额, 持仓份额, 份额(份), 当前份额, never 可用份额 or 确认份额) take the
//!    number right after them on the line, or else the numbers straight below in their column,
//!    down to the next text (one value for a card, one per row for a table).
//! 4. Each value belongs to the fund on its own line, or else the nearest fund above it.

mod lines;

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use lines::{Line, Rect, lines_from_tsv};

/// One fund found on the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fund {
    pub fund_code: String,
    /// Held shares as a plain decimal string (`12345.67`), if found.
    pub hold_share: Option<String>,
    pub name: Option<String>,
}

static SHARE_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"持有份额|持仓份额|当前份额|份额[(]份[)]?").expect("valid regex"));
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d[\d,.]*\d|\d").expect("valid regex"));
static SIX_DIGITS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d{6}").expect("valid regex"));

/// Words before a six-digit number that make it something other than a fund code.
const NOT_A_CODE_BEFORE: [&str; 22] = [
    "订单",
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
/// Prefixes that turn `份额(份)` into a distractor.
const NOT_HELD_BEFORE: [&str; 4] = ["可用", "确认", "冻结", "赎回"];

/// Every fund on the page, top to bottom.
pub fn extract(tsv: &str) -> Vec<Fund> {
    let lines = lines_from_tsv(tsv);
    let codes = find_codes(&lines);
    let values = find_share_values(&lines, &codes);
    assign(codes, values)
}

/// A fund code with where it sits.
#[derive(Debug, Clone)]
struct Code {
    code: String,
    name: Option<String>,
    line: usize,
    rect: Rect,
    /// Top of the fund's block: its name line if that is above the code.
    anchor_top: f32,
}

#[derive(Debug, Clone)]
struct ShareValue {
    value: String,
    line: usize,
    rect: Rect,
}

fn has_cjk(text: &str) -> bool {
    text.chars()
        .filter(|c| ('\u{4e00}'..='\u{9fff}').contains(c))
        .count()
        >= 2
}

fn find_codes(lines: &[Line]) -> Vec<Code> {
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
            if NOT_A_CODE_BEFORE.iter().any(|w| before_compact.contains(w)) {
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

/// The fund's name: Chinese text before the code on its line, else the nearest line above.
fn fund_name(lines: &[Line], li: usize, start: usize, code: Rect) -> (Option<String>, f32) {
    let clean = |s: &str| {
        let s = s.replace("基金代码", "").replace("代码", "");
        let s = s.trim_matches(|c: char| c.is_whitespace() || "():|-".contains(c));
        has_cjk(s).then(|| s.to_owned())
    };
    if let Some(name) = clean(&lines[li].text[..start]) {
        return (Some(name), code.top);
    }
    let height = code.height().max(1.0);
    for above in lines[..li].iter().rev() {
        if code.top - above.rect.bottom > 3.0 * height.max(above.rect.height()) {
            break;
        }
        let overlaps = above.rect.left < code.right + 4.0 * height
            && above.rect.right > code.left - 4.0 * height;
        if !overlaps || SHARE_LABEL.is_match(&above.text) {
            continue;
        }
        if let Some(name) = clean(&above.text) {
            return (Some(name), above.rect.top);
        }
    }
    (None, code.top)
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

fn find_share_values(lines: &[Line], codes: &[Code]) -> Vec<ShareValue> {
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

/// Gives each fund the value on its own line, or the nearest value below it before the next fund.
fn assign(codes: Vec<Code>, values: Vec<ShareValue>) -> Vec<Fund> {
    let mut shares: Vec<Option<(f32, String)>> = vec![None; codes.len()];
    for value in values {
        let same_line = codes
            .iter()
            .position(|c| c.line == value.line || c.rect.same_row(&value.rect));
        let owner = same_line.or_else(|| {
            codes
                .iter()
                .enumerate()
                .filter(|(_, c)| c.anchor_top <= value.rect.top + 1.0)
                .max_by(|(_, a), (_, b)| a.anchor_top.total_cmp(&b.anchor_top))
                .map(|(i, _)| i)
        });
        if let Some(i) = owner {
            let distance = (value.rect.top - codes[i].anchor_top).abs();
            if shares[i].as_ref().is_none_or(|(d, _)| distance < *d) {
                shares[i] = Some((distance, value.value));
            }
        }
    }
    let mut funds: Vec<(f32, f32, Fund)> = codes
        .into_iter()
        .zip(shares)
        .map(|(code, share)| {
            (
                code.anchor_top,
                code.rect.left,
                Fund {
                    fund_code: code.code,
                    hold_share: share.map(|(_, v)| v),
                    name: code.name,
                },
            )
        })
        .collect();
    // A bare six-digit number with no fund name beside it and no share is more likely a code
    // of something else whose label OCR misread (邀请码 read as digits) than a fund.
    funds.retain(|(_, _, f)| f.name.is_some() || f.hold_share.is_some());
    funds.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    funds.into_iter().map(|(_, _, f)| f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds TSV from `(line, left, top, width, height, text)` words.
    fn tsv(words: &[(u32, f32, f32, f32, f32, &str)]) -> String {
        let mut out = String::from(
            "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n",
        );
        for (i, (line, left, top, width, height, text)) in words.iter().enumerate() {
            out.push_str(&format!(
                "5\t1\t1\t1\t{line}\t{i}\t{left}\t{top}\t{width}\t{height}\t90\t{text}\n"
            ));
        }
        out
    }

    #[test]
    fn card_with_label_above_value() {
        let page = tsv(&[
            (1, 40.0, 100.0, 300.0, 40.0, "易方达蓝筹精选混合"),
            (2, 40.0, 150.0, 120.0, 30.0, "005827"),
            (3, 40.0, 220.0, 120.0, 30.0, "持有份额"),
            (3, 400.0, 220.0, 120.0, 30.0, "持有金额"),
            (4, 40.0, 260.0, 160.0, 36.0, "12,345.67"),
            (4, 400.0, 260.0, 160.0, 36.0, "23,456.78"),
            (5, 40.0, 320.0, 120.0, 30.0, "可用份额"),
            (6, 40.0, 360.0, 160.0, 36.0, "10,000.00"),
        ]);
        assert_eq!(
            extract(&page),
            vec![Fund {
                fund_code: "005827".into(),
                hold_share: Some("12345.67".into()),
                name: Some("易方达蓝筹精选混合".into()),
            }]
        );
    }

    #[test]
    fn table_with_header_label_and_order_number() {
        let page = tsv(&[
            (1, 20.0, 50.0, 200.0, 30.0, "订单号"),
            (1, 240.0, 50.0, 120.0, 30.0, "202406"),
            (2, 20.0, 100.0, 120.0, 30.0, "基金名称"),
            (2, 400.0, 100.0, 120.0, 30.0, "份额(份)"),
            (2, 650.0, 100.0, 120.0, 30.0, "金额(元)"),
            (3, 20.0, 150.0, 160.0, 30.0, "招商中证白酒"),
            (3, 190.0, 150.0, 100.0, 30.0, "161725"),
            (3, 400.0, 150.0, 140.0, 30.0, "8,000.00"),
            (3, 650.0, 150.0, 140.0, 30.0, "9,123.45"),
            (4, 20.0, 200.0, 160.0, 30.0, "中欧医疗健康"),
            (4, 190.0, 200.0, 100.0, 30.0, "003095"),
            (4, 400.0, 200.0, 140.0, 30.0, "1.234.50"),
            (4, 650.0, 200.0, 140.0, 30.0, "2,000.00"),
        ]);
        let funds = extract(&page);
        let pairs: Vec<(&str, Option<&str>)> = funds
            .iter()
            .map(|f| (f.fund_code.as_str(), f.hold_share.as_deref()))
            .collect();
        assert_eq!(
            pairs,
            vec![("161725", Some("8000.00")), ("003095", Some("1234.50"))]
        );
    }

    #[test]
    fn inline_label_value_full_width_and_slips() {
        let page = tsv(&[
            (1, 20.0, 50.0, 300.0, 30.0, "华夏成长混合(０００００１)"),
            (2, 20.0, 100.0, 120.0, 30.0, "当前份额："),
            (2, 150.0, 100.0, 40.0, 30.0, "1,2"),
            (2, 195.0, 100.0, 80.0, 30.0, "O0.5"),
            (3, 20.0, 150.0, 220.0, 30.0, "邀请码 123456"),
        ]);
        assert_eq!(
            extract(&page),
            vec![Fund {
                fund_code: "000001".into(),
                hold_share: Some("1200.5".into()),
                name: Some("华夏成长混合".into()),
            }]
        );
    }

    #[test]
    fn share_numbers() {
        assert_eq!(share_number("12,345.67").as_deref(), Some("12345.67"));
        assert_eq!(share_number("12.345.67").as_deref(), Some("12345.67"));
        assert_eq!(share_number("500").as_deref(), Some("500"));
        assert_eq!(share_number("1,23,4"), None);
    }
}
