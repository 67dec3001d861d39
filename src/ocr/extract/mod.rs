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
//! 3. Share labels (持有份额, 持仓份额, 份额(份), 当前份额, a bare 份额; never 可用份额, 冻结份额
//!    or 确认份额) take the number right after them on the line, or else the numbers straight
//!    below in their column, down to the next text (one value for a card, one per row for a
//!    table). A number nearer to another column's header (可用份额, 单位净值, 参考市值, 金额...)
//!    is that column's, and a percentage is never a share.
//! 4. Each value belongs to the fund on its own line, or to the table row it is level with (a
//!    name wrapped onto two lines with the code under it), or else the nearest fund above it.
//! 5. A fund left without a share says why in its `warnings`: the page does not guess. A share
//!    whose digits Tesseract is less than 80% sure of is not reported either: a wrong share is
//!    worse than none.

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
    /// Held shares as a plain decimal string (`12345.67`), only when a share label or a share
    /// column gives it; otherwise null, and `warnings` says why.
    pub hold_share: Option<String>,
    pub name: Option<String>,
    /// Why `hold_share` is null, when it is: `only_available_share` (the page shows 可用份额 or
    /// 冻结份额 but not the held share), `no_share_label` (no share label or column on the
    /// page), `share_not_found` (the page has one, but no value of it belongs to this fund),
    /// `share_unreadable` (the fund's share is there, but Tesseract is unsure of its digits).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A share that the page shows, but not the held one.
pub const ONLY_AVAILABLE_SHARE: &str = "only_available_share";
/// No share label or share column on the page.
pub const NO_SHARE_LABEL: &str = "no_share_label";
/// The page labels a share, but no value of it belongs to this fund.
pub const SHARE_NOT_FOUND: &str = "share_not_found";
/// The fund's share is on the page, but Tesseract is not sure of its digits.
pub const SHARE_UNREADABLE: &str = "share_unreadable";

/// The least confidence (Tesseract's, 0 to 100) a share's digits need to be reported: below it, a
/// digit may be misread (a blurred 1 as a 4), and a wrong share is worse than none.
const MIN_SHARE_CONFIDENCE: f32 = 80.0;

/// Every fund on the page, top to bottom.
pub fn extract(tsv: &str) -> Vec<Fund> {
    let lines = lines_from_tsv(tsv);
    let codes = find_codes(&lines);
    let found = find_share_values(&lines, &codes);
    let mut funds = Vec::new();
    for (code, share) in assign(codes, found.values) {
        let mut fund = Fund {
            fund_code: code.code,
            hold_share: None,
            name: code.name,
            warnings: Vec::new(),
        };
        match share {
            Some(value) if value.conf >= MIN_SHARE_CONFIDENCE => {
                fund.hold_share = Some(value.value)
            }
            Some(_) => fund.warnings.push(SHARE_UNREADABLE.to_owned()),
            // A bare six-digit number with no fund name beside it and no share is more likely
            // a code of something else whose label OCR misread than a fund.
            None if fund.name.is_none() => continue,
            None if found.held_label => fund.warnings.push(SHARE_NOT_FOUND.to_owned()),
            None if found.other_share_label => fund.warnings.push(ONLY_AVAILABLE_SHARE.to_owned()),
            None => fund.warnings.push(NO_SHARE_LABEL.to_owned()),
        }
        funds.push(fund);
    }
    funds
}

/// Pairs each fund with the value on its own line, or in its table row, or else the nearest value
/// below it before the next fund; in page order.
fn assign(codes: Vec<Code>, values: Vec<ShareValue>) -> Vec<(Code, Option<ShareValue>)> {
    let mut shares: Vec<Option<(f32, ShareValue)>> = vec![None; codes.len()];
    for value in values {
        let same_line = codes
            .iter()
            .position(|c| c.line == value.line || c.rect.same_row(&value.rect));
        let owner = same_line
            .or_else(|| row_band(&codes, &value.rect))
            .or_else(|| {
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
                shares[i] = Some((distance, value));
            }
        }
    }
    let mut funds: Vec<(Code, Option<ShareValue>)> = codes
        .into_iter()
        .zip(shares)
        .map(|(code, share)| (code, share.map(|(_, v)| v)))
        .collect();
    funds.sort_by(|(a, _), (b, _)| {
        a.anchor_top
            .total_cmp(&b.anchor_top)
            .then(a.rect.left.total_cmp(&b.rect.left))
    });
    funds
}

/// The fund whose table row holds `value`: its name starts above the value and its code sits
/// below it (a bank table puts the figures level with a name wrapped onto two lines, and the
/// code small under the name).
fn row_band(codes: &[Code], value: &lines::Rect) -> Option<usize> {
    let middle = (value.top + value.bottom) / 2.0;
    codes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.rect.top > middle && c.anchor_top - 1.5 * c.rect.height() <= middle)
        .min_by(|(_, a), (_, b)| a.rect.top.total_cmp(&b.rect.top))
        .map(|(i, _)| i)
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
                warnings: Vec::new(),
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
                warnings: Vec::new(),
            }]
        );
    }

    /// `(code, share, warnings)` of each fund found.
    fn shares(page: &str) -> Vec<(String, Option<String>, Vec<String>)> {
        extract(page)
            .into_iter()
            .map(|f| (f.fund_code, f.hold_share, f.warnings))
            .collect()
    }

    /// That both funds of a [`bank_table`] page come without a share, for the reason `why`.
    fn assert_no_shares(page: &str, why: &str) {
        let found = shares(page);
        assert_eq!(found.len(), 2, "{found:?}");
        for (_, share, warnings) in found {
            assert_eq!(share, None);
            assert_eq!(warnings, [why]);
        }
    }

    fn held(code: &str, share: &str) -> (String, Option<String>, Vec<String>) {
        (code.into(), Some(share.into()), Vec::new())
    }

    /// A bank app's holdings table: the header's columns at `xs` in the order of `headers`,
    /// and two funds whose names wrap onto a second line, each with its code small below.
    fn bank_table(headers: [&str; 3], xs: [f32; 3], rows: [[&str; 3]; 2]) -> String {
        let mut words = vec![(1, 20.0, 100.0, 150.0, 30.0, "基金名称")];
        for (header, x) in headers.iter().zip(xs) {
            words.push((1, x, 100.0, 130.0, 30.0, header));
        }
        let names = [
            ("招商中证白酒", "指数(LOF)A", "161725"),
            ("易方达蓝筹", "精选混合", "005827"),
        ];
        for (row, ((first, second, code), values)) in names.iter().zip(rows).enumerate() {
            let top = 160.0 + 140.0 * row as f32;
            let line = 2 + 3 * row as u32;
            words.push((line, 20.0, top, 170.0, 30.0, first));
            for (value, x) in values.iter().zip(xs) {
                words.push((line, x, top, 130.0, 30.0, value));
            }
            words.push((line + 1, 20.0, top + 36.0, 150.0, 30.0, second));
            words.push((line + 2, 20.0, top + 72.0, 80.0, 20.0, code));
        }
        tsv(&words)
    }

    #[test]
    fn a_bare_share_header_beside_available_share_and_value_in_either_order() {
        let rows = [
            ["8,000.00", "6,000.00", "9,123.45"],
            ["1,234.50", "1,000.00", "2,000.00"],
        ];
        let page = bank_table(
            ["份额", "可用份额", "参考市值"],
            [300.0, 500.0, 700.0],
            rows,
        );
        assert_eq!(
            shares(&page),
            vec![held("161725", "8000.00"), held("005827", "1234.50")]
        );
        // The other order: the share column last, beside the available shares.
        let reversed = rows.map(|[a, b, c]| [c, b, a]);
        let page = bank_table(
            ["参考市值", "可用份额", "份额"],
            [300.0, 500.0, 700.0],
            reversed,
        );
        assert_eq!(
            shares(&page),
            vec![held("161725", "8000.00"), held("005827", "1234.50")]
        );
    }

    #[test]
    fn only_available_shares_give_no_share_and_say_so() {
        let rows = [
            ["6,000.00", "9,123.45", "1.2345"],
            ["1,000.00", "2,000.00", "0.9876"],
        ];
        let page = bank_table(
            ["可用份额", "参考市值", "单位净值"],
            [300.0, 500.0, 700.0],
            rows,
        );
        assert_no_shares(&page, ONLY_AVAILABLE_SHARE);
    }

    #[test]
    fn a_nav_column_beside_the_share_column_is_never_the_share() {
        // Dark tables put the NAV right beside the share, 20 px apart.
        let rows = [
            ["1.0434", "3,456.78", "3,606.71"],
            ["2.1001", "120.00", "252.01"],
        ];
        let page = bank_table(
            ["单位净值", "持有份额", "持仓金额"],
            [230.0, 380.0, 540.0],
            rows,
        );
        assert_eq!(
            shares(&page),
            vec![held("161725", "3456.78"), held("005827", "120.00")]
        );
        // A share cell OCR could not read: the NAV beside it, within reach of the column, is
        // still not taken.
        let rows = [
            ["1.0434", "3,4S6.7B", "3,606.71"],
            ["2.1001", "--", "252.01"],
        ];
        let page = bank_table(
            ["单位净值", "持有份额", "持仓金额"],
            [230.0, 380.0, 540.0],
            rows,
        );
        assert_no_shares(&page, SHARE_NOT_FOUND);
        // A NAV and an amount without any share label: nothing is taken for a share.
        let page = bank_table(
            ["单位净值", "持仓金额", "收益率"],
            [260.0, 420.0, 600.0],
            [
                ["1.0434", "3,606.71", "5.1%"],
                ["2.1001", "252.01", "-0.2%"],
            ],
        );
        assert_no_shares(&page, NO_SHARE_LABEL);
    }

    #[test]
    fn inline_shares_without_separators_and_no_percentages() {
        let page = tsv(&[
            (1, 20.0, 50.0, 300.0, 30.0, "华夏成长混合 000001"),
            (
                2,
                20.0,
                100.0,
                420.0,
                30.0,
                "份额(份) 3456.789 单位净值 1.0434",
            ),
            (3, 20.0, 200.0, 300.0, 30.0, "南方中证500ETF联接 160119"),
            (4, 20.0, 250.0, 300.0, 30.0, "份额 12.5% 收益 300.00"),
        ]);
        assert_eq!(
            shares(&page),
            vec![
                held("000001", "3456.789"),
                ("160119".into(), None, vec![SHARE_NOT_FOUND.into()]),
            ]
        );
    }

    #[test]
    fn share_words_that_name_other_figures_are_no_label() {
        let page = tsv(&[
            (1, 20.0, 50.0, 300.0, 30.0, "华夏成长混合 000001"),
            (2, 20.0, 100.0, 300.0, 30.0, "份额确认日 20240601"),
            (3, 20.0, 150.0, 300.0, 30.0, "冻结份额 100.00"),
        ]);
        assert_eq!(
            shares(&page),
            vec![("000001".into(), None, vec![ONLY_AVAILABLE_SHARE.into()])]
        );
    }

    /// A bank table as Tesseract returns it: each row's figures level with the name's first
    /// line, its second line and the code below, and the rows 160 px apart (more than four
    /// lines: only the names and codes between them keep the column going).
    fn level_rows(values: [&str; 2]) -> String {
        let mut words = vec![
            (0, 20.0, 15.0, 160.0, 36.0, "我的持仓"),
            (1, 20.0, 60.0, 80.0, 28.0, "Bis"),
            (1, 110.0, 60.0, 100.0, 28.0, "583920"),
            (2, 20.0, 100.0, 150.0, 30.0, "基金名称"),
            (2, 300.0, 100.0, 60.0, 30.0, "份额"),
            (2, 560.0, 100.0, 120.0, 30.0, "可用份额"),
        ];
        let rows = [
            ("易方达蓝筹", "精选混合", "005827"),
            ("华夏成长", "混合", "000001"),
        ];
        for (row, ((first, second, code), value)) in rows.iter().zip(values).enumerate() {
            let top = 170.0 + 160.0 * row as f32;
            let line = 3 + 4 * row as u32;
            words.push((line, 20.0, top, 170.0, 30.0, first));
            words.push((line + 1, 20.0, top + 30.0, 10.0, 30.0, "o_o"));
            words.push((line + 1, 302.0, top + 30.0, 130.0, 30.0, value));
            words.push((line + 1, 562.0, top + 30.0, 130.0, 30.0, "1,000.00"));
            words.push((line + 2, 20.0, top + 50.0, 120.0, 30.0, second));
            words.push((line + 3, 20.0, top + 95.0, 80.0, 22.0, code));
        }
        tsv(&words)
    }

    #[test]
    fn figures_level_with_a_wrapped_name_belong_to_the_code_below_them() {
        // The code sits below its row's figures: the row, not the nearest code above, owns
        // them. A misread invitation code (`Bis 583920`) is no fund.
        let page = level_rows(["12,345.67", "56,789.12"]);
        assert_eq!(
            shares(&page),
            vec![held("005827", "12345.67"), held("000001", "56789.12")]
        );
    }

    #[test]
    fn a_share_tesseract_is_unsure_of_is_not_reported() {
        let page =
            level_rows(["12,345.67", "56,789.12"]).replace("\t90\t56,789.12", "\t62\t56,789.12");
        assert_eq!(
            shares(&page),
            vec![
                held("005827", "12345.67"),
                ("000001".into(), None, vec![SHARE_UNREADABLE.into()])
            ]
        );
    }

    #[test]
    fn a_number_a_column_away_from_a_label_is_not_its_value() {
        // A blurred `持有金额` read as `98`: far from the share label, so the share is the
        // number under the label, not the `98`. A figure's label above a code is no name.
        let page = tsv(&[
            (1, 40.0, 100.0, 300.0, 40.0, "华夏成长混合"),
            (2, 40.0, 160.0, 120.0, 30.0, "000001"),
            (3, 40.0, 220.0, 120.0, 30.0, "持有份额"),
            (3, 420.0, 220.0, 40.0, 30.0, "98"),
            (4, 40.0, 270.0, 160.0, 36.0, "56,789.12"),
            (4, 420.0, 270.0, 160.0, 36.0, "61,002.30"),
            (5, 420.0, 330.0, 120.0, 30.0, "持有收益"),
            (6, 440.0, 380.0, 100.0, 30.0, "007119"),
        ]);
        assert_eq!(shares(&page), vec![held("000001", "56789.12")]);
    }
}
