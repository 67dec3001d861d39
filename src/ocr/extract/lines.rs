//! Tesseract's TSV word boxes as lines: each line's text rebuilt with a map from every byte
//! back to its word, full-width characters normalised and OCR slips inside numbers mended.

use std::collections::HashMap;

/// A rectangle in page pixels.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Rect {
    pub(super) left: f32,
    pub(super) top: f32,
    pub(super) right: f32,
    pub(super) bottom: f32,
}

impl Rect {
    pub(super) fn union(self, other: Rect) -> Rect {
        Rect {
            left: self.left.min(other.left),
            top: self.top.min(other.top),
            right: self.right.max(other.right),
            bottom: self.bottom.max(other.bottom),
        }
    }
    pub(super) fn height(&self) -> f32 {
        self.bottom - self.top
    }
    pub(super) fn width(&self) -> f32 {
        self.right - self.left
    }
    pub(super) fn center_x(&self) -> f32 {
        (self.left + self.right) / 2.0
    }
    pub(super) fn same_row(&self, other: &Rect) -> bool {
        let overlap = self.bottom.min(other.bottom) - self.top.max(other.top);
        overlap > 0.5 * self.height().min(other.height())
    }
}

#[derive(Debug, Clone)]
pub(super) struct Word {
    pub(super) text: String,
    pub(super) rect: Rect,
    /// Tesseract's confidence in the word, 0 to 100.
    pub(super) conf: f32,
}

/// A line's text and, for each byte of it, the word it came from.
#[derive(Debug, Clone)]
pub(super) struct Line {
    pub(super) text: String,
    pub(super) owner: Vec<Option<usize>>,
    pub(super) words: Vec<Word>,
    pub(super) rect: Rect,
}

impl Line {
    pub(super) fn span_rect(&self, start: usize, end: usize) -> Rect {
        let mut rect: Option<Rect> = None;
        for owner in self.owner[start..end].iter().flatten() {
            let r = self.words[*owner].rect;
            rect = Some(rect.map_or(r, |acc| acc.union(r)));
        }
        rect.unwrap_or(self.rect)
    }

    /// The lowest confidence of the words under `text[start..end]`.
    pub(super) fn span_conf(&self, start: usize, end: usize) -> f32 {
        self.owner[start..end]
            .iter()
            .flatten()
            .map(|&i| self.words[i].conf)
            .reduce(f32::min)
            .unwrap_or(0.0)
    }
}

pub(super) fn lines_from_tsv(tsv: &str) -> Vec<Line> {
    let mut grouped: Vec<((u32, u32, u32), Vec<Word>)> = Vec::new();
    let mut index: HashMap<(u32, u32, u32), usize> = HashMap::new();
    for row in tsv.lines() {
        let cols: Vec<&str> = row.split('\t').collect();
        if cols.len() < 12 || cols[0] != "5" {
            continue;
        }
        let num = |i: usize| cols[i].trim().parse::<f32>().unwrap_or(0.0);
        let id = |i: usize| cols[i].trim().parse::<u32>().unwrap_or(0);
        let text = normalize_chars(cols[11].trim());
        if text.is_empty() {
            continue;
        }
        let rect = Rect {
            left: num(6),
            top: num(7),
            right: num(6) + num(8),
            bottom: num(7) + num(9),
        };
        let key = (id(2), id(3), id(4));
        let slot = *index.entry(key).or_insert_with(|| {
            grouped.push((key, Vec::new()));
            grouped.len() - 1
        });
        let conf = num(10);
        grouped[slot].1.push(Word { text, rect, conf });
    }
    grouped
        .into_iter()
        .map(|(_, mut words)| {
            words.sort_by(|a, b| a.rect.left.total_cmp(&b.rect.left));
            build_line(words)
        })
        .collect()
}

/// Joins words, with a space only where the gap is wide (a stray space inside a number or a
/// Chinese word is not one), then mends OCR slips inside numbers.
fn build_line(words: Vec<Word>) -> Line {
    let height = words
        .iter()
        .map(|w| w.rect.height())
        .fold(0.0f32, f32::max)
        .max(1.0);
    let mut text = String::new();
    let mut owner = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if i > 0 && word.rect.left - words[i - 1].rect.right > 0.6 * height {
            text.push(' ');
            owner.push(None);
        }
        for _ in 0..word.text.len() {
            owner.push(Some(i));
        }
        text.push_str(&word.text);
    }
    let rect = words
        .iter()
        .map(|w| w.rect)
        .reduce(Rect::union)
        .unwrap_or_default();
    let text = mend_digits(&text);
    Line {
        text,
        owner,
        words,
        rect,
    }
}

/// A CJK unified ideograph (Chinese text).
pub(super) fn is_cjk(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

/// Full-width digits and punctuation to ASCII.
fn normalize_chars(word: &str) -> String {
    word.chars()
        .map(|c| match c {
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c),
            '，' => ',',
            '．' | '。' => '.',
            '（' => '(',
            '）' => ')',
            '：' => ':',
            '￥' => '¥',
            other => other,
        })
        .collect()
}

/// Letters Tesseract puts for digits inside a number (`1O0` → `100`, and `ooooo1` → `000001` for
/// a whole token of digit-like letters with a digit in it); byte lengths stay the same, so the
/// word map still holds.
fn mend_digits(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let digit_like = |c: char| c.is_ascii_digit() || matches!(c, ',' | '.');
    let letter_digit = |c: char| matches!(c, 'O' | 'o' | 'l' | 'I' | '|');
    let mend = |c: char| match c {
        'O' | 'o' => '0',
        'l' | 'I' | '|' => '1',
        other => other,
    };
    // Whole tokens of digits and digit-like letters, not touching other letters.
    let mut whole = vec![false; chars.len()];
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        while i < chars.len() && (digit_like(chars[i]) || letter_digit(chars[i])) {
            i += 1;
        }
        let run = &chars[start..i];
        let bounded = |c: Option<&char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
        if run.len() >= 3
            && run.iter().any(char::is_ascii_digit)
            && bounded(start.checked_sub(1).and_then(|p| chars.get(p)))
            && bounded(chars.get(i))
        {
            whole[start..i].fill(true);
        }
        i = i.max(start + 1);
    }
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let before = i > 0 && chars[i - 1].is_ascii_digit();
        let after = chars.get(i + 1).is_some_and(|&n| digit_like(n));
        out.push(if whole[i] || (before && after) {
            mend(c)
        } else {
            c
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_like_letters_inside_numbers_are_mended() {
        assert_eq!(mend_digits("1O0"), "100");
        assert_eq!(mend_digits("ooooo1 56,789.12"), "000001 56,789.12");
        assert_eq!(
            mend_digits("代码:OO5827 代码OO5827"),
            "代码:005827 代码005827"
        );
        assert_eq!(mend_digits("l2,345.6O"), "12,345.60");
        // Words stay words.
        assert_eq!(mend_digits("Cool100 Io Oil"), "Cool100 Io Oil");
        assert_eq!(mend_digits("混合A 007119"), "混合A 007119");
    }
}
