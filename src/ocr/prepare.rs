//! From bytes to a clean black-on-white page for Tesseract: sniff the real format, refuse
//! decompression bombs, go to grayscale, turn dark mode around, and binarize with a local
//! (adaptive) threshold.
//!
//! A page-wide threshold fails on phone screenshots: a coloured header band drags it down and
//! every light-gray line under it (codes, labels) vanishes, and a gray pill behind a code turns
//! digits into others. A threshold from each pixel's neighbourhood (Bradley's method over an
//! integral image) keeps light-gray text on white and dark text on a pill alike.

use std::io::Cursor;

use image::{GrayImage, ImageFormat, ImageReader, Luma};

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

/// A pixel is ink when darker than its neighbourhood's mean by this fraction.
const BRADLEY_T: f32 = 0.15;

/// The most pixels a page is recognised at; a larger image is scaled down to it first. A phone
/// screenshot (1440x3200 is 4.6 M) and a long scrolling capture (1080x11000) keep every pixel;
/// beyond that, text is large enough to lose nothing.
pub const PAGE_PIXELS: u64 = 12_000_000;

/// Decodes `bytes` (at most `max_pixels` pixels) into a binarized grayscale page.
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
    let mut gray = fit(decoded.into_luma8());
    if is_dark(&gray) {
        image::imageops::invert(&mut gray);
    }
    let mut page = binarize(&gray);
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

/// Rows that are almost all ink are no text: they are the edge of a coloured band, which the
/// local threshold turns into a solid bar that Tesseract reads as junk. They become paper.
fn clear_bars(page: &mut GrayImage) {
    let (w, h) = page.dimensions();
    for y in 0..h {
        let ink = (0..w).filter(|&x| page.get_pixel(x, y)[0] == 0).count();
        if ink * 10 >= w as usize * 9 {
            for x in 0..w {
                page.put_pixel(x, y, Luma([255]));
            }
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

/// Bradley's adaptive threshold: ink where a pixel is `BRADLEY_T` darker than the mean of the
/// square around it (about a thirtieth of the page wide).
pub fn binarize(gray: &GrayImage) -> GrayImage {
    let (w, h) = gray.dimensions();
    let (wu, hu) = (w as usize, h as usize);
    if wu == 0 || hu == 0 {
        return gray.clone();
    }
    // `u32` sums, half the memory of `u64`: they wrap on a large page, but a window's sum is
    // far below 2^32, and modular arithmetic gives it exactly.
    let mut integral = vec![0u32; (wu + 1) * (hu + 1)];
    for y in 0..hu {
        let mut row = 0u32;
        for x in 0..wu {
            row = row.wrapping_add(u32::from(gray.get_pixel(x as u32, y as u32)[0]));
            integral[(y + 1) * (wu + 1) + x + 1] = integral[y * (wu + 1) + x + 1].wrapping_add(row);
        }
    }
    let radius = (w.min(h) / 30).max(8) as usize;
    GrayImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let x0 = x.saturating_sub(radius);
        let y0 = y.saturating_sub(radius);
        let x1 = (x + radius + 1).min(wu);
        let y1 = (y + radius + 1).min(hu);
        let area = ((x1 - x0) * (y1 - y0)) as u64;
        // Modular arithmetic: the true sum is in range, so the wrapped terms cancel out.
        let sum = u64::from(
            integral[y1 * (wu + 1) + x1]
                .wrapping_add(integral[y0 * (wu + 1) + x0])
                .wrapping_sub(integral[y0 * (wu + 1) + x1])
                .wrapping_sub(integral[y1 * (wu + 1) + x0]),
        );
        let pixel = u64::from(gray.get_pixel(x as u32, y as u32)[0]);
        let ink = (pixel * area) as f32 <= sum as f32 * (1.0 - BRADLEY_T);
        Luma([if ink { 0 } else { 255 }])
    })
}

#[cfg(test)]
mod tests {
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
        let page = GrayImage::from_fn(300, 300, |x, y| {
            if y < 80 {
                Luma([40])
            } else if (150..160).contains(&y) && (50..250).contains(&x) {
                Luma([170])
            } else {
                Luma([250])
            }
        });
        let out = prepare(&png(&page), 1_000_000).expect("prepared");
        assert_eq!(out.get_pixel(100, 155)[0], 0, "gray text is ink");
        assert_eq!(out.get_pixel(100, 220)[0], 255, "white stays paper");
    }

    #[test]
    fn dark_mode_is_inverted() {
        let page = GrayImage::from_fn(200, 200, |x, y| {
            if (90..100).contains(&y) && (20..180).contains(&x) {
                Luma([230])
            } else {
                Luma([20])
            }
        });
        let out = prepare(&png(&page), 1_000_000).expect("prepared");
        assert_eq!(out.get_pixel(100, 95)[0], 0, "light text becomes dark ink");
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
}
