//! Fund-app screenshots drawn at test time with a CJK font from Debian (fonts-wqy-zenhei), in
//! the layouts real apps use, with the codes and shares each one must yield.

use std::io::Cursor;

use ab_glyph::{FontRef, PxScale};
use image::{ImageFormat, Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_text_mut};
use imageproc::rect::Rect;

const FONT_PATH: &str = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc";

/// One fund on the page.
#[derive(Debug, Clone)]
pub struct FundRow {
    pub name: &'static str,
    pub code: &'static str,
    /// As the app prints it (`12,345.67`).
    pub share: &'static str,
    pub amount: &'static str,
}

impl FundRow {
    /// The share as the API returns it.
    pub fn expected_share(&self) -> String {
        self.share.replace(',', "")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Name, code in small gray under it, a row of labels, the values under them.
    CardsLabelAbove,
    /// Name with the code in brackets, then `label  value` on one line.
    CardsInline,
    /// A table: the share label only in the column header.
    Table,
    /// A detail page: `基金代码：005827` and `当前份额：...` rows.
    Detail,
}

#[derive(Debug, Clone)]
pub struct Screenshot {
    pub layout: Layout,
    pub width: u32,
    pub dark: bool,
    /// JPEG quality, or PNG when `None`.
    pub jpeg: Option<u8>,
    /// The share label the app uses.
    pub label: &'static str,
    pub funds: Vec<FundRow>,
}

struct Palette {
    background: Rgb<u8>,
    text: Rgb<u8>,
    gray: Rgb<u8>,
    header: Rgb<u8>,
    header_text: Rgb<u8>,
    pill: Rgb<u8>,
}

fn palette(dark: bool) -> Palette {
    if dark {
        Palette {
            background: Rgb([18, 18, 22]),
            text: Rgb([235, 235, 235]),
            gray: Rgb([150, 150, 155]),
            header: Rgb([30, 60, 120]),
            header_text: Rgb([255, 255, 255]),
            pill: Rgb([45, 45, 52]),
        }
    } else {
        Palette {
            background: Rgb([255, 255, 255]),
            text: Rgb([30, 30, 30]),
            gray: Rgb([150, 150, 150]),
            header: Rgb([22, 119, 255]),
            header_text: Rgb([255, 255, 255]),
            pill: Rgb([238, 238, 238]),
        }
    }
}

pub fn font_bytes() -> Vec<u8> {
    std::fs::read(FONT_PATH).unwrap_or_else(|e| {
        panic!("{FONT_PATH} is needed for the OCR fixtures (apt-get install fonts-wqy-zenhei): {e}")
    })
}

impl Screenshot {
    /// The encoded image.
    pub fn render(&self) -> Vec<u8> {
        let data = font_bytes();
        let font = FontRef::try_from_slice_and_index(&data, 0).expect("a TrueType collection");
        let p = palette(self.dark);
        let k = self.width as f32 / 1080.0;
        let px = |v: f32| (v * k).round() as i32;
        let size = |v: f32| PxScale::from(v * k);
        let height = (px(260.0) + px(360.0) * self.funds.len() as i32 + px(260.0)) as u32;
        let mut img = RgbImage::from_pixel(self.width, height, p.background);

        // A coloured header band with the page title, and an unrelated six-digit code.
        draw_filled_rect_mut(
            &mut img,
            Rect::at(0, 0).of_size(self.width, px(150.0) as u32),
            p.header,
        );
        draw_text_mut(
            &mut img,
            p.header_text,
            px(60.0),
            px(50.0),
            size(52.0),
            &font,
            "我的持仓",
        );
        draw_text_mut(
            &mut img,
            p.gray,
            px(60.0),
            px(180.0),
            size(30.0),
            &font,
            "邀请码 583920   更新于 2024-06-01",
        );

        let mut y = px(250.0);
        if self.layout == Layout::Table {
            draw_text_mut(&mut img, p.gray, px(40.0), y, size(32.0), &font, "基金名称");
            draw_text_mut(
                &mut img,
                p.gray,
                px(560.0),
                y,
                size(32.0),
                &font,
                self.label,
            );
            draw_text_mut(
                &mut img,
                p.gray,
                px(820.0),
                y,
                size(32.0),
                &font,
                "金额(元)",
            );
            y += px(80.0);
        }
        for fund in &self.funds {
            match self.layout {
                Layout::CardsLabelAbove => {
                    draw_text_mut(&mut img, p.text, px(60.0), y, size(44.0), &font, fund.name);
                    draw_filled_rect_mut(
                        &mut img,
                        Rect::at(px(50.0), y + px(62.0)).of_size(px(150.0) as u32, px(44.0) as u32),
                        p.pill,
                    );
                    draw_text_mut(
                        &mut img,
                        p.gray,
                        px(60.0),
                        y + px(68.0),
                        size(30.0),
                        &font,
                        fund.code,
                    );
                    let row = y + px(140.0);
                    draw_text_mut(
                        &mut img,
                        p.gray,
                        px(60.0),
                        row,
                        size(30.0),
                        &font,
                        self.label,
                    );
                    draw_text_mut(
                        &mut img,
                        p.gray,
                        px(420.0),
                        row,
                        size(30.0),
                        &font,
                        "持有金额(元)",
                    );
                    draw_text_mut(
                        &mut img,
                        p.gray,
                        px(780.0),
                        row,
                        size(30.0),
                        &font,
                        "昨日收益",
                    );
                    let values = row + px(50.0);
                    draw_text_mut(
                        &mut img,
                        p.text,
                        px(60.0),
                        values,
                        size(40.0),
                        &font,
                        fund.share,
                    );
                    draw_text_mut(
                        &mut img,
                        p.text,
                        px(420.0),
                        values,
                        size(40.0),
                        &font,
                        fund.amount,
                    );
                    draw_text_mut(
                        &mut img,
                        p.text,
                        px(780.0),
                        values,
                        size(40.0),
                        &font,
                        "+12.34",
                    );
                    y += px(330.0);
                }
                Layout::CardsInline => {
                    let title = format!("{}({})", fund.name, fund.code);
                    draw_text_mut(&mut img, p.text, px(60.0), y, size(42.0), &font, &title);
                    let line = format!("{}  {}", self.label, fund.share);
                    draw_text_mut(
                        &mut img,
                        p.text,
                        px(60.0),
                        y + px(80.0),
                        size(36.0),
                        &font,
                        &line,
                    );
                    let available = format!("可用份额  {}", fund.share);
                    draw_text_mut(
                        &mut img,
                        p.gray,
                        px(60.0),
                        y + px(140.0),
                        size(32.0),
                        &font,
                        &available,
                    );
                    let amount = format!("持有金额  {} 元", fund.amount);
                    draw_text_mut(
                        &mut img,
                        p.gray,
                        px(60.0),
                        y + px(200.0),
                        size(32.0),
                        &font,
                        &amount,
                    );
                    y += px(320.0);
                }
                Layout::Table => {
                    draw_text_mut(&mut img, p.text, px(40.0), y, size(34.0), &font, fund.name);
                    draw_text_mut(
                        &mut img,
                        p.gray,
                        px(40.0),
                        y + px(48.0),
                        size(28.0),
                        &font,
                        fund.code,
                    );
                    draw_text_mut(
                        &mut img,
                        p.text,
                        px(560.0),
                        y + px(20.0),
                        size(36.0),
                        &font,
                        fund.share,
                    );
                    draw_text_mut(
                        &mut img,
                        p.text,
                        px(820.0),
                        y + px(20.0),
                        size(36.0),
                        &font,
                        fund.amount,
                    );
                    y += px(130.0);
                }
                Layout::Detail => {
                    draw_text_mut(&mut img, p.text, px(60.0), y, size(46.0), &font, fund.name);
                    let code = format!("基金代码：{}", fund.code);
                    draw_text_mut(
                        &mut img,
                        p.gray,
                        px(60.0),
                        y + px(80.0),
                        size(34.0),
                        &font,
                        &code,
                    );
                    let share = format!("{}：{}", self.label, fund.share);
                    draw_text_mut(
                        &mut img,
                        p.text,
                        px(60.0),
                        y + px(140.0),
                        size(36.0),
                        &font,
                        &share,
                    );
                    draw_text_mut(
                        &mut img,
                        p.gray,
                        px(60.0),
                        y + px(200.0),
                        size(32.0),
                        &font,
                        "确认份额：500.00",
                    );
                    y += px(300.0);
                }
            }
        }
        draw_text_mut(
            &mut img,
            p.gray,
            px(60.0),
            y + px(40.0),
            size(28.0),
            &font,
            "订单号 20240601883920 单位净值 1.2345",
        );
        encode(&img, self.jpeg)
    }
}

pub fn encode(img: &RgbImage, jpeg: Option<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    match jpeg {
        Some(quality) => {
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
            img.write_with_encoder(encoder).expect("JPEG encoding");
        }
        None => img
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .expect("PNG encoding"),
    }
    out
}

pub fn yifangda() -> FundRow {
    FundRow {
        name: "易方达蓝筹精选混合",
        code: "005827",
        share: "12,345.67",
        amount: "23,456.78",
    }
}
pub fn zhaoshang() -> FundRow {
    FundRow {
        name: "招商中证白酒指数",
        code: "161725",
        share: "8,000.00",
        amount: "9,123.45",
    }
}
pub fn zhongou() -> FundRow {
    FundRow {
        name: "中欧医疗健康混合",
        code: "003095",
        share: "1,234.50",
        amount: "2,000.00",
    }
}
pub fn huaxia() -> FundRow {
    FundRow {
        name: "华夏成长混合",
        code: "000001",
        share: "56,789.12",
        amount: "61,002.30",
    }
}

/// The set of screenshots the OCR tests assert exactly.
pub fn catalogue() -> Vec<(&'static str, Screenshot)> {
    vec![
        (
            "cards-above-1080-four-funds",
            Screenshot {
                layout: Layout::CardsLabelAbove,
                width: 1080,
                dark: false,
                jpeg: None,
                label: "持有份额",
                funds: vec![yifangda(), zhaoshang(), zhongou(), huaxia()],
            },
        ),
        (
            "cards-above-1080-light",
            Screenshot {
                layout: Layout::CardsLabelAbove,
                width: 1080,
                dark: false,
                jpeg: None,
                label: "持有份额",
                funds: vec![yifangda(), zhaoshang()],
            },
        ),
        (
            "cards-above-720-dark-jpeg",
            Screenshot {
                layout: Layout::CardsLabelAbove,
                width: 720,
                dark: true,
                jpeg: Some(80),
                label: "持仓份额",
                funds: vec![zhongou()],
            },
        ),
        (
            "cards-inline-1170-light-jpeg",
            Screenshot {
                layout: Layout::CardsInline,
                width: 1170,
                dark: false,
                jpeg: Some(75),
                label: "持有份额",
                funds: vec![huaxia(), yifangda(), zhaoshang()],
            },
        ),
        (
            "cards-inline-1080-dark",
            Screenshot {
                layout: Layout::CardsInline,
                width: 1080,
                dark: true,
                jpeg: None,
                label: "当前份额",
                funds: vec![zhaoshang()],
            },
        ),
        (
            "table-1080-light",
            Screenshot {
                layout: Layout::Table,
                width: 1080,
                dark: false,
                jpeg: None,
                label: "份额(份)",
                funds: vec![yifangda(), zhongou(), huaxia()],
            },
        ),
        (
            "table-1170-dark-jpeg",
            Screenshot {
                layout: Layout::Table,
                width: 1170,
                dark: true,
                jpeg: Some(85),
                label: "持仓份额",
                funds: vec![zhaoshang(), yifangda()],
            },
        ),
        (
            "detail-720-light",
            Screenshot {
                layout: Layout::Detail,
                width: 720,
                dark: false,
                jpeg: None,
                label: "当前份额",
                funds: vec![huaxia()],
            },
        ),
        (
            "detail-1080-dark-jpeg",
            Screenshot {
                layout: Layout::Detail,
                width: 1080,
                dark: true,
                jpeg: Some(70),
                label: "持有份额",
                funds: vec![zhongou()],
            },
        ),
    ]
}

/// A small detail card: name, `基金代码：code`, `持有份额：share`, in plain dark type (for load
/// tests that need hundreds of distinct, reliably read images quickly).
pub fn holding_card(name: &str, code: &str, share: &str) -> Vec<u8> {
    let data = font_bytes();
    let font = FontRef::try_from_slice_and_index(&data, 0).expect("a TrueType collection");
    let p = palette(false);
    let mut img = RgbImage::from_pixel(720, 260, p.background);
    draw_text_mut(&mut img, p.text, 40, 30, PxScale::from(40.0), &font, name);
    draw_text_mut(
        &mut img,
        p.text,
        40,
        96,
        PxScale::from(38.0),
        &font,
        &format!("基金代码：{code}"),
    );
    draw_text_mut(
        &mut img,
        p.text,
        40,
        160,
        PxScale::from(34.0),
        &font,
        &format!("持有份额：{share}"),
    );
    encode(&img, None)
}
