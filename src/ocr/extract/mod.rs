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

mod codes;
mod lines;
mod shares;

use serde::{Deserialize, Serialize};

use codes::{Code, find_codes};
use lines::lines_from_tsv;
use shares::{ShareValue, find_share_values};

/// One fund found on the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fund {
    pub fund_code: String,
    /// Held shares as a plain decimal string (`12345.67`), if found.
    pub hold_share: Option<String>,
    pub name: Option<String>,
}

/// Every fund on the page, top to bottom.
pub fn extract(tsv: &str) -> Vec<Fund> {
    let lines = lines_from_tsv(tsv);
    let codes = find_codes(&lines);
    let values = find_share_values(&lines, &codes);
    assign(codes, values)
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
}
