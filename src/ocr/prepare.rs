//! From bytes to a clean page for Tesseract: sniff the real format, refuse decompression bombs,
//! go to grayscale, bring a small screenshot up to the size Tesseract reads best, turn dark mode
//! around, and flatten the background locally.
//!
//! A page-wide threshold fails on phone screenshots: a coloured header band drags it down and
//! every light-gray line under it (codes, labels) vanishes, and a gray pill behind a code turns
//! digits into others. So each pixel is measured against its own neighbourhood (its mean, over
//! an integral image): paper becomes white wherever it is, and text keeps its gray edges.
//! Tesseract then binarizes the flat page itself, and its recogniser reads the gray strokes,
//! which is what keeps blurred, shrunk and noisy text readable. A black-and-white page from a
//! local threshold (Bradley's method) was measured against it: see BENCHMARKS.md.

use std::io::Cursor;

use image::{GrayImage, ImageFormat, ImageReader};

use super::OcrError;

/// Formats accepted, whatever the file name or Content-Type says.
const FORMATS: [ImageFormat; 6] = [
    ImageFormat::Png,
    ImageFormat::Jpeg,
    ImageFormat::WebP,
    ImageFormat::Bmp,
    ImageFormat::Gif,
    ImageFormat::Tiff,
];

/// How much a pixel's darkness against its neighbourhood is stretched: text at half the
/// neighbourhood's brightness becomes black, and light-gray text a strong gray.
const CONTRAST: f32 = 2.0;
/// Pixels darker than this are ink, for the bars below: light-gray text comes out of
/// [`flatten`] at 150 or darker, a speck of JPEG noise above 220.
const INK: u8 = 200;

/// The most pixels a page is recognised at; a larger image is scaled down to it first. A phone
/// screenshot (1440x3200 is 4.6 M) and a long scrolling capture (1080x11000) keep every pixel;
/// beyond that, text is large enough to lose nothing.
pub const PAGE_PIXELS: u64 = 12_000_000;

/// A page narrower than this is scaled up to it: phone screenshots at 1.5x or 2x density
/// (540 to 720 pixels wide) have text 18 to 24 pixels high, below what Tesseract reads well.
pub const SMALL_PAGE_WIDTH: u32 = 1000;
/// The width a small page is scaled up to: a 3x phone screenshot's, whose text is read best.
pub const READ_WIDTH: u32 = 1080;

/// Decodes `bytes` (at most `max_pixels` pixels) into a flattened grayscale page.
pub fn prepare(bytes: &[u8], max_pixels: u64) -> Result<GrayImage, OcrError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| OcrError::Undecodable(e.to_string()))?;
    let format = reader
        .format()
        .filter(|f| FORMATS.contains(f))
        .ok_or_else(|| {
            OcrError::Undecodable("not a PNG, JPEG, WebP, BMP, GIF or TIFF image".into())
        })?;
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| OcrError::Undecodable(format!("{format:?}: {e}")))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(OcrError::TooManyPixels(format!(
            "{width}x{height} is {pixels} pixels; at most {max_pixels} are accepted"
        )));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    reader.limits(limits);
    let decoded = reader
        .decode()
        .map_err(|e| OcrError::Undecodable(format!("{format:?}: {e}")))?;
    let mut gray = enlarge(fit(decoded.into_luma8()));
    if is_dark(&gray) {
        image::imageops::invert(&mut gray);
    }
    let mut page = flatten(&gray);
    clear_bars(&mut page);
    Ok(page)
}

/// `gray`, scaled down to at most [`PAGE_PIXELS`] pixels if it is larger: each block of k x k
/// pixels becomes their mean, for the smallest whole k that fits. Unlike a general resize (which
/// works through a float copy of the page, 16 bytes a pixel), it needs only the result's memory.
fn fit(gray: GrayImage) -> GrayImage {
    let (w, h) = gray.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if pixels <= PAGE_PIXELS {
        return gray;
    }
    let mut k = 2u32;
    while (u64::from(w / k) * u64::from(h / k)) > PAGE_PIXELS {
        k += 1;
    }
    let (out_w, out_h) = ((w / k).max(1), (h / k).max(1));
    let area = k * k;
    let source = gray.as_raw();
    let stride = w as usize;
    let mut sums = vec![0u32; out_w as usize];
    let mut out = Vec::with_capacity(out_w as usize * out_h as usize);
    for block_row in 0..out_h as usize {
        sums.fill(0);
        for y in block_row * k as usize..(block_row + 1) * k as usize {
            let row = &source[y * stride..y * stride + (out_w * k) as usize];
            for (sum, block) in sums.iter_mut().zip(row.chunks_exact(k as usize)) {
                *sum += block.iter().map(|&p| u32::from(p)).sum::<u32>();
            }
        }
        out.extend(sums.iter().map(|&sum| (sum / area) as u8));
    }
    GrayImage::from_raw(out_w, out_h, out).expect("the buffer is out_w x out_h")
}

/// `gray` scaled up to [`READ_WIDTH`] (bilinear) when it is narrower than [`SMALL_PAGE_WIDTH`],
/// unless that would pass [`PAGE_PIXELS`].
fn enlarge(gray: GrayImage) -> GrayImage {
    let (w, h) = gray.dimensions();
    if w == 0 || h == 0 || w >= SMALL_PAGE_WIDTH {
        return gray;
    }
    let out_w = READ_WIDTH;
    let out_h = (u64::from(h) * u64::from(out_w) / u64::from(w)) as u32;
    if u64::from(out_w) * u64::from(out_h) > PAGE_PIXELS {
        return gray;
    }
    // Fixed point, 8 fraction bits: each output pixel's source position and weights.
    let positions = |out: u32, len: u32| -> Vec<(usize, usize, u32)> {
        (0..out)
            .map(|i| {
                let at = ((u64::from(i) * 2 + 1) * u64::from(len) * 256 / (u64::from(out) * 2))
                    .saturating_sub(128);
                let lo = (at >> 8).min(u64::from(len - 1)) as usize;
                let hi = (lo + 1).min(len as usize - 1);
                (lo, hi, (at & 255) as u32)
            })
            .collect()
    };
    let xs = positions(out_w, w);
    let ys = positions(out_h, h);
    let source = gray.as_raw();
    let stride = w as usize;
    let mut out = Vec::with_capacity(out_w as usize * out_h as usize);
    for &(y0, y1, fy) in &ys {
        let (top, bottom) = (
            &source[y0 * stride..][..stride],
            &source[y1 * stride..][..stride],
        );
        out.extend(xs.iter().map(|&(x0, x1, fx)| {
            let row = |r: &[u8]| u32::from(r[x0]) * (256 - fx) + u32::from(r[x1]) * fx;
            ((row(top) * (256 - fy) + row(bottom) * fy + (1 << 15)) >> 16) as u8
        }));
    }
    GrayImage::from_raw(out_w, out_h, out).expect("the buffer is out_w x out_h")
}

/// Rows that are almost all ink are no text: they are the edge of a coloured band, which the
/// local flattening turns into a solid bar that Tesseract reads as junk. They become paper.
fn clear_bars(page: &mut GrayImage) {
    let width = page.width() as usize;
    if width == 0 {
        return;
    }
    for row in page.chunks_exact_mut(width) {
        let ink = row.iter().filter(|&&p| p < INK).count();
        if ink * 10 >= width * 9 {
            row.fill(255);
        }
    }
}

/// Dark mode: most of the page is dark.
fn is_dark(gray: &GrayImage) -> bool {
    let (sum, count) = gray
        .pixels()
        .step_by(7)
        .fold((0u64, 0u64), |(s, c), p| (s + u64::from(p[0]), c + 1));
    count > 0 && sum / count < 110
}

/// Each pixel against the mean of the square around it (about a thirtieth of the page wide):
/// paper, at its neighbourhood's brightness or above, becomes white; darker pixels keep their
/// darkness relative to it, stretched by [`CONTRAST`].
pub fn flatten(gray: &GrayImage) -> GrayImage {
    let (w, h) = gray.dimensions();
    let (wu, hu) = (w as usize, h as usize);
    if wu == 0 || hu == 0 {
        return gray.clone();
    }
    let source = gray.as_raw();
    // `u32` sums, half the memory of `u64`: they wrap on a large page, but a window's sum is
    // far below 2^32, and modular arithmetic gives it exactly. Row y + 1 of the integral holds
    // the sums over source rows 0..=y.
    let stride = wu + 1;
    let mut integral = vec![0u32; stride * (hu + 1)];
    for (y, pixels) in source.chunks_exact(wu).enumerate() {
        let (above, below) = integral.split_at_mut((y + 1) * stride);
        let (above, current) = (&above[y * stride..], &mut below[..stride]);
        let mut row = 0u32;
        for (x, &p) in pixels.iter().enumerate() {
            row = row.wrapping_add(u32::from(p));
            current[x + 1] = above[x + 1].wrapping_add(row);
        }
    }
    let radius = (w.min(h) / 30).max(8) as usize;
    let mut out = vec![0u8; wu * hu];
    for (y, (pixels, flat)) in source
        .chunks_exact(wu)
        .zip(out.chunks_exact_mut(wu))
        .enumerate()
    {
        let y0 = y.saturating_sub(radius);
        let y1 = (y + radius + 1).min(hu);
        let (top, bottom) = (
            &integral[y0 * stride..][..stride],
            &integral[y1 * stride..][..stride],
        );
        for (x, (&p, flat)) in pixels.iter().zip(flat.iter_mut()).enumerate() {
            let x0 = x.saturating_sub(radius);
            let x1 = (x + radius + 1).min(wu);
            let area = ((x1 - x0) * (y1 - y0)) as f32;
            // Modular arithmetic: the true sum is in range, so the wrapped terms cancel out.
            let sum = bottom[x1]
                .wrapping_add(top[x0])
                .wrapping_sub(top[x1])
                .wrapping_sub(bottom[x0]);
            let mean = (sum as f32 / area).max(1.0);
            let darkness = (1.0 - f32::from(p) / mean).max(0.0);
            *flat = (255.0 * (1.0 - CONTRAST * darkness)).clamp(0.0, 255.0) as u8;
        }
    }
    GrayImage::from_raw(w, h, out).expect("the buffer is w x h")
}

#[cfg(test)]
mod tests {
    use image::Luma;

    use super::*;

    fn png(image: &GrayImage) -> Vec<u8> {
        let mut out = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .expect("encode");
        out
    }

    #[test]
    fn light_gray_text_survives_under_a_dark_band() {
        // A dark band on top, light-gray "text" on white below: a page-wide threshold would
        // lose the gray; the local one keeps it as ink and the white as paper.
        let page = GrayImage::from_fn(SMALL_PAGE_WIDTH, 300, |x, y| {
            if y < 80 {
                Luma([40])
            } else if (150..160).contains(&y) && (50..250).contains(&x) {
                Luma([170])
            } else {
                Luma([250])
            }
        });
        let out = prepare(&png(&page), 1_000_000).expect("prepared");
        assert!(out.get_pixel(100, 155)[0] < INK, "gray text is ink");
        assert_eq!(out.get_pixel(100, 220)[0], 255, "white stays paper");
    }

    #[test]
    fn dark_mode_is_inverted() {
        let page = GrayImage::from_fn(SMALL_PAGE_WIDTH, 200, |x, y| {
            if (90..100).contains(&y) && (20..180).contains(&x) {
                Luma([230])
            } else {
                Luma([20])
            }
        });
        let out = prepare(&png(&page), 1_000_000).expect("prepared");
        assert!(
            out.get_pixel(100, 95)[0] < INK,
            "light text becomes dark ink"
        );
        assert_eq!(
            out.get_pixel(100, 20)[0],
            255,
            "dark background becomes paper"
        );
    }

    #[test]
    fn a_huge_page_is_scaled_down_to_the_recognition_size() {
        let page = GrayImage::from_pixel(6000, 3000, Luma([250]));
        let out = prepare(&png(&page), 40_000_000).expect("prepared");
        assert_eq!(
            out.dimensions(),
            (3000, 1500),
            "halved: the aspect ratio is kept"
        );
        let page = GrayImage::from_pixel(14000, 3600, Luma([250]));
        let out = prepare(&png(&page), 60_000_000).expect("prepared");
        assert_eq!(
            out.dimensions(),
            (4666, 1200),
            "a half is still too large: a third"
        );
        // A block's mean: two black and two white pixels give mid-gray.
        let checker = GrayImage::from_fn(4000, 4000, |x, y| {
            Luma([if (x + y) % 2 == 0 { 0 } else { 254 }])
        });
        assert_eq!(fit(checker).get_pixel(10, 10)[0], 127);
    }

    #[test]
    fn a_small_screenshot_is_scaled_up_to_the_reading_width() {
        // Dark text on white: the text stays text, the paper paper, at the new size.
        let page = GrayImage::from_fn(540, 1170, |x, y| {
            let text = (100..110).contains(&y) && (50..250).contains(&x);
            Luma([if text { 30 } else { 250 }])
        });
        let out = prepare(&png(&page), 1_000_000).expect("prepared");
        assert_eq!(out.dimensions(), (READ_WIDTH, 2340));
        assert!(out.get_pixel(300, 209)[0] < INK, "text is ink");
        assert_eq!(out.get_pixel(300, 400)[0], 255, "paper stays paper");
        // Bilinear: a step between two pixels gets a middle value, the ends keep theirs.
        let step = GrayImage::from_fn(500, 10, |x, _| Luma([if x < 250 { 0 } else { 200 }]));
        let big = enlarge(step);
        assert_eq!(big.width(), READ_WIDTH);
        assert_eq!(big.get_pixel(0, 5)[0], 0);
        assert_eq!(big.get_pixel(READ_WIDTH - 1, 5)[0], 200);
        let middle = big.get_pixel(READ_WIDTH / 2, 5)[0];
        assert!(middle > 0 && middle < 200, "{middle}");
        // Wide pages, and a narrow page too long to enlarge, keep their size.
        let wide = GrayImage::new(1080, 100);
        assert_eq!(enlarge(wide).dimensions(), (1080, 100));
        let scroll = GrayImage::new(600, 8_000);
        assert_eq!(enlarge(scroll).dimensions(), (600, 8_000));
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            prepare(b"not an image at all", 1_000),
            Err(OcrError::Undecodable(_))
        ));
        let page = GrayImage::new(100, 100);
        assert!(matches!(
            prepare(&png(&page), 9_999),
            Err(OcrError::TooManyPixels(_))
        ));
        let mut truncated = png(&GrayImage::new(400, 400));
        truncated.truncate(60);
        assert!(matches!(
            prepare(&truncated, 1_000_000),
            Err(OcrError::Undecodable(_))
        ));
    }

    #[test]
    fn flatten_is_each_pixel_against_the_mean_of_its_square() {
        // Noise with a gradient, on a page not square: the integral image must give exactly the
        // window sums a direct count gives, at the edges too.
        let mut seed = 7u32;
        let page = GrayImage::from_fn(97, 61, |x, y| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            Luma([((seed >> 16) % 96) as u8 + (x + y) as u8])
        });
        let flat = flatten(&page);
        let radius = 8;
        for (x, y, p) in page.enumerate_pixels() {
            let (x0, y0) = (x.saturating_sub(radius), y.saturating_sub(radius));
            let (x1, y1) = ((x + radius + 1).min(97), (y + radius + 1).min(61));
            let sum: u32 = (y0..y1)
                .flat_map(|yy| (x0..x1).map(move |xx| (xx, yy)))
                .map(|(xx, yy)| u32::from(page.get_pixel(xx, yy)[0]))
                .sum();
            let mean = (sum as f32 / ((x1 - x0) * (y1 - y0)) as f32).max(1.0);
            let darkness = (1.0 - f32::from(p[0]) / mean).max(0.0);
            let want = (255.0 * (1.0 - CONTRAST * darkness)).clamp(0.0, 255.0) as u8;
            assert_eq!(flat.get_pixel(x, y)[0], want, "at {x},{y}");
        }
    }

    #[test]
    fn rows_almost_all_ink_become_paper_and_text_rows_stay() {
        // Row 1 is a bar (95% ink), row 3 text (half ink); the rest is paper.
        let mut page = GrayImage::from_fn(40, 5, |x, y| match y {
            1 if x >= 2 => Luma([10]),
            3 if x % 2 == 0 => Luma([10]),
            _ => Luma([255]),
        });
        let text_row: Vec<u8> = page.rows().nth(3).expect("row 3").map(|p| p[0]).collect();
        clear_bars(&mut page);
        assert!(page.rows().nth(1).expect("row 1").all(|p| p[0] == 255));
        let after: Vec<u8> = page.rows().nth(3).expect("row 3").map(|p| p[0]).collect();
        assert_eq!(after, text_row);
    }
}
