//! The upstream's Server-Sent Events, decoded in place.
//!
//! The proxy needs one thing of each event: its `data`. This decoder follows the HTML
//! standard's event-stream rules for that (lines end in LF, CR or CRLF, a byte-order mark may
//! open the stream, `:` lines are comments, a `data` field's value loses one leading space,
//! several `data` lines join with LF, an empty line dispatches, an event not ended by an empty
//! line when the stream ends is dropped) and skips the other fields (`event`, `id`, `retry`).
//!
//! It replaced `eventsource-stream` on this path: that crate copied the rest of its buffer
//! after every line and built three strings per event, about a fifth of the proxy's
//! instructions for a streamed answer (BENCHMARKS.md). Here bytes are appended to one buffer,
//! lines are found with `memchr`, and an event's data is handed out as a borrowed `&str` that
//! lives until the next call, so a chunk costs no allocation. `tests` checks it against
//! `eventsource-stream` on the same bytes, cut at random places.

/// The most bytes one event may take before its end, data and line breaks included. The
/// chunks of a model's answer are a few hundred bytes; an upstream that sends more without
/// ending an event is broken, and would otherwise hold the proxy's memory.
pub const MAX_EVENT_BYTES: usize = 8 << 20;

/// Why the upstream's bytes are not an event stream the proxy can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event's data is not UTF-8")]
    NotUtf8,
    #[error("an event of more than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
}

/// Decodes the events of one response from its bytes, as they arrive.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes received and not yet decoded start at `start`.
    buffer: Vec<u8>,
    start: usize,
    /// The data lines of the event being read, each followed by LF.
    data: Vec<u8>,
    /// `data` holds the event handed out last: the next call clears it.
    dispatched: bool,
    /// The byte-order mark is looked for once, at the start of the stream.
    bom_checked: bool,
    /// No more bytes will come: a CR at the very end ends its line.
    ended: bool,
}

impl SseDecoder {
    /// Adds bytes received from the upstream.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.start == self.buffer.len() {
            // Everything before was decoded: start over at the front, with no copy.
            self.buffer.clear();
            self.start = 0;
        } else if self.start > 0 {
            // Keep the undecoded tail (a line cut by the network) and drop the rest.
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        if self.buffer.len() + self.data.len() + bytes.len() > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        self.buffer.extend_from_slice(bytes);
        Ok(())
    }

    /// The stream has ended: what is left is decoded as if the connection had stayed open,
    /// and an event without its closing empty line is dropped.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// The data of the next complete event, if the bytes so far hold one. An event whose data
    /// is empty is not dispatched, as the standard says.
    pub fn next_data(&mut self) -> Option<Result<&str, SseError>> {
        if std::mem::take(&mut self.dispatched) {
            self.data.clear();
        }
        if !self.bom_checked {
            const BOM: &[u8] = "\u{feff}".as_bytes();
            let rest = &self.buffer[self.start..];
            if rest.len() < BOM.len() && BOM.starts_with(rest) && !self.ended {
                return None;
            }
            if rest.starts_with(BOM) {
                self.start += BOM.len();
            }
            self.bom_checked = true;
        }
        loop {
            let rest = &self.buffer[self.start..];
            let cut = memchr::memchr2(b'\n', b'\r', rest)?;
            let ending = match rest[cut] {
                b'\r' => match rest.get(cut + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A CR as the last byte so far may be the first half of a CRLF.
                    None if !self.ended => return None,
                    None => 1,
                },
                _ => 1,
            };
            let line = self.start..self.start + cut;
            self.start += cut + ending;
            if line.is_empty() {
                // No data line (even an empty one) since the last event: nothing to dispatch.
                if self.data.is_empty() {
                    continue;
                }
                // The last LF is not part of the data.
                self.data.pop();
                self.dispatched = true;
                return Some(std::str::from_utf8(&self.data).map_err(|_| SseError::NotUtf8));
            }
            let line = &self.buffer[line];
            if line[0] == b':' {
                continue;
            }
            let (field, value) = match memchr::memchr(b':', line) {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &[][..]),
            };
            if field == b"data" {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use eventsource_stream::Eventsource as _;
    use futures::StreamExt as _;

    use super::*;

    /// Decodes `pieces` fed one after another, then the end of the stream.
    fn decode(pieces: &[&[u8]]) -> Result<Vec<String>, SseError> {
        let mut decoder = SseDecoder::default();
        let mut events = Vec::new();
        for piece in pieces {
            decoder.push(piece)?;
            while let Some(data) = decoder.next_data() {
                events.push(data?.to_owned());
            }
        }
        decoder.end();
        while let Some(data) = decoder.next_data() {
            events.push(data?.to_owned());
        }
        Ok(events)
    }

    /// What `eventsource-stream` makes of the same pieces: each event's data.
    fn reference(pieces: &[&[u8]]) -> Vec<String> {
        let body = futures::stream::iter(
            pieces
                .iter()
                .map(|p| Ok::<_, Infallible>(bytes::Bytes::copy_from_slice(p))),
        );
        futures::executor::block_on(
            body.eventsource()
                .map(|event| event.expect("valid stream").data)
                .collect(),
        )
    }

    #[test]
    fn the_forms_of_the_standard_decode_to_their_data() {
        let cases: &[(&str, &[&str])] = &[
            ("data: a\n\n", &["a"]),
            ("data:a\r\n\r\ndata: b\r\rdata:  c\n\n", &["a", "b", " c"]),
            ("\u{feff}data: bom\n\n", &["bom"]),
            (": comment\nevent: x\nid: 7\nretry: 10\ndata: d\n\n", &["d"]),
            ("data: one\ndata: two\n\n", &["one\ntwo"]),
            ("data\n\ndata:\n\n", &["", ""]),
            ("event: only\n\n\n\ndata: 中文\n\n", &["中文"]),
            ("data: unfinished\n", &[]),
            (
                "data: {\"a\":1}\n\ndata: [DONE]\n\n",
                &["{\"a\":1}", "[DONE]"],
            ),
        ];
        for (text, expected) in cases {
            let got = decode(&[text.as_bytes()]).expect("decodes");
            assert_eq!(got, *expected, "{text:?}");
            // `eventsource-stream` panics on a byte-order mark (it cuts the 3-byte character
            // after its first byte).
            if !text.starts_with('\u{feff}') {
                assert_eq!(reference(&[text.as_bytes()]), *expected, "{text:?}");
            }
        }
    }

    #[test]
    fn a_byte_order_mark_cut_by_the_network_is_still_skipped() {
        let bom = "\u{feff}".as_bytes();
        let pieces: [&[u8]; 3] = [&bom[..1], &bom[1..], b"data: x\n\n"];
        assert_eq!(decode(&pieces).expect("decodes"), ["x"]);
        // Only at the start of the stream.
        let text = "data: a\n\n\u{feff}data: b\n\n";
        assert_eq!(decode(&[text.as_bytes()]).expect("decodes"), ["a"]);
    }

    #[test]
    fn a_cr_at_the_end_of_the_bytes_waits_for_a_possible_lf() {
        let mut decoder = SseDecoder::default();
        decoder.push(b"data: a\r").expect("room");
        assert!(decoder.next_data().is_none());
        decoder.push(b"\n\r\n").expect("room");
        assert_eq!(decoder.next_data(), Some(Ok("a")));
        assert!(decoder.next_data().is_none());
        // At the end of the stream, a last CR ends its line.
        decoder.push(b"data: b\r\r").expect("room");
        assert_eq!(decoder.next_data(), None);
        decoder.end();
        assert_eq!(decoder.next_data(), Some(Ok("b")));
    }

    #[test]
    fn bytes_cut_anywhere_give_the_events_eventsource_stream_gives() {
        let lines = [
            "data: {\"choices\":[{\"delta\":{\"content\":\"你好\"}}]}",
            "data: [DONE]",
            "data:x",
            "data",
            ": keep-alive",
            "event: message",
            "id: 42",
            "retry: 1000",
            "data:  two spaces",
            "",
        ];
        let endings = ["\n", "\r\n", "\r"];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2_000 {
            let mut text = String::new();
            for _ in 0..rng.usize(1..30) {
                text.push_str(lines[rng.usize(..lines.len())]);
                text.push_str(endings[rng.usize(..endings.len())]);
            }
            // `eventsource-stream` never decodes a CR that the stream ends on; both agree on
            // everything else.
            text.push('\n');
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = (0..rng.usize(0..8))
                .map(|_| rng.usize(0..=bytes.len()))
                .collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                pieces.push(&bytes[from..cut]);
                from = cut;
            }
            assert_eq!(
                decode(&pieces).expect("decodes"),
                reference(&pieces),
                "{text:?} cut into {pieces:?}"
            );
        }
    }

    #[test]
    fn data_that_is_not_utf8_is_an_error_and_the_next_event_decodes() {
        let mut decoder = SseDecoder::default();
        decoder
            .push(b"data: \xff\xfe\n\ndata: ok\n\n")
            .expect("room");
        assert_eq!(decoder.next_data(), Some(Err(SseError::NotUtf8)));
        assert_eq!(decoder.next_data(), Some(Ok("ok")));
    }

    #[test]
    fn an_event_that_never_ends_is_refused_past_the_limit() {
        let mut decoder = SseDecoder::default();
        let line = vec![b'x'; 1 << 20];
        decoder.push(b"data: ").expect("room");
        let mut refused = false;
        for _ in 0..=MAX_EVENT_BYTES >> 20 {
            match decoder.push(&line) {
                Ok(()) => assert!(decoder.next_data().is_none()),
                Err(err) => {
                    assert_eq!(err, SseError::TooLarge);
                    refused = true;
                    break;
                }
            }
        }
        assert!(
            refused,
            "{} bytes without a line end were kept",
            MAX_EVENT_BYTES
        );
        // Data lines that never end their event count too.
        let mut decoder = SseDecoder::default();
        let mut line = b"data: ".to_vec();
        line.extend(vec![b'y'; 1 << 20]);
        line.push(b'\n');
        let refused = (0..=MAX_EVENT_BYTES >> 20).any(|_| {
            let pushed = decoder.push(&line);
            assert!(pushed.is_err() || decoder.next_data().is_none());
            pushed == Err(SseError::TooLarge)
        });
        assert!(refused);
    }
}
