//! The DATA decoder: dot-unstuffing and the end-of-data terminator.
//!
//! RFC 5321 §4.5.2: a line starting with "." has that dot removed; the data
//! ends with CRLF "." CRLF. The decoder starts as if a line had just ended,
//! so a lone "." as the first line ends an empty message and a leading dot on
//! the first line is unstuffed. Only CR LF ends a line: a bare LF or bare CR
//! next to a dot is data, never the terminator (SMTP smuggling), and is
//! flagged so the transcript can show it.
//!
//! The size limit counts decoded bytes. Past it the decoder keeps reading to
//! the terminator (so the session stays in sync) but stores nothing more:
//! memory per message is bounded by the limit.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Just after CR LF (or at the start).
    LineStart,
    /// Inside a line.
    Text,
    /// A CR was seen and not yet stored.
    Cr,
    /// A dot at the start of a line.
    Dot,
    /// A dot at the start of a line, then CR.
    DotCr,
}

/// Decodes one message body.
#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    limit: u64,
    /// Decoded size, counted past the limit too.
    size: u64,
    body: Vec<u8>,
    bare_lf: bool,
    bare_cr: bool,
}

/// A finished message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub bytes: Vec<u8>,
    /// Decoded size; larger than `bytes.len()` when the limit was passed.
    pub size: u64,
    pub too_big: bool,
    pub bare_lf: bool,
    pub bare_cr: bool,
}

impl DataDecoder {
    pub fn new(limit: u64) -> Self {
        Self {
            state: State::LineStart,
            limit,
            size: 0,
            body: Vec::new(),
            bare_lf: false,
            bare_cr: false,
        }
    }

    /// Appends bytes without decoding (a BDAT chunk), counting them against
    /// the limit.
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.push(bytes);
    }

    /// The body so far (for BDAT, whose end is known by count).
    pub fn into_body(mut self) -> Body {
        self.finish()
    }

    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len() as u64;
        let room = self.limit.saturating_sub(self.size);
        if room > 0 {
            let take = room.min(n) as usize;
            self.body.extend_from_slice(&bytes[..take]);
        }
        self.size = self.size.saturating_add(n);
    }

    /// Consumes bytes until the terminator. Returns how many bytes were used
    /// and, when the terminator was among them, the finished body.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Body>) {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Text {
                // Fast path: copy up to the next CR or LF.
                match memchr::memchr2(b'\r', b'\n', &input[i..]) {
                    Some(0) => {}
                    Some(k) => {
                        self.push(&input[i..i + k]);
                        i += k;
                    }
                    None => {
                        self.push(&input[i..]);
                        return (input.len(), None);
                    }
                }
            }
            let b = input[i];
            i += 1;
            if self.step(b) {
                return (i, Some(self.finish()));
            }
        }
        (i, None)
    }

    /// One byte; returns true at the end of data.
    fn step(&mut self, b: u8) -> bool {
        match self.state {
            State::LineStart => match b {
                b'.' => self.state = State::Dot,
                _ => self.text(b),
            },
            State::Text => self.text(b),
            State::Cr => match b {
                b'\n' => {
                    self.push(b"\r\n");
                    self.state = State::LineStart;
                }
                b'\r' => {
                    self.bare_cr = true;
                    self.push(b"\r");
                }
                _ => {
                    self.bare_cr = true;
                    self.push(b"\r");
                    self.text(b);
                }
            },
            // The leading dot is dropped whatever follows it (RFC 5321
            // §4.5.2: "the first character is deleted").
            State::Dot => match b {
                b'\r' => self.state = State::DotCr,
                _ => self.text(b),
            },
            State::DotCr => match b {
                b'\n' => return true,
                _ => {
                    // ".\r" then not LF: the CR is data; `b` is read after it.
                    self.state = State::Cr;
                    return self.step(b);
                }
            },
        }
        false
    }

    fn text(&mut self, b: u8) {
        match b {
            b'\r' => self.state = State::Cr,
            b'\n' => {
                // Bare LF: data, and not a line start.
                self.bare_lf = true;
                self.push(b"\n");
                self.state = State::Text;
            }
            _ => {
                self.push(&[b]);
                self.state = State::Text;
            }
        }
    }

    fn finish(&mut self) -> Body {
        Body {
            bytes: std::mem::take(&mut self.body),
            size: self.size,
            too_big: self.size > self.limit,
            bare_lf: self.bare_lf,
            bare_cr: self.bare_cr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in two parts split at `split`.
    fn decode_split(input: &[u8], split: usize, limit: u64) -> Option<Body> {
        let mut d = DataDecoder::new(limit);
        for part in [&input[..split], &input[split..]] {
            let mut pos = 0;
            while pos < part.len() {
                let (n, body) = d.feed(&part[pos..]);
                pos += n;
                if body.is_some() {
                    return body;
                }
            }
        }
        None
    }

    fn decode(input: &[u8]) -> Option<Body> {
        let mut result = None;
        for split in 0..=input.len() {
            let body = decode_split(input, split, 1 << 20);
            if split == 0 {
                result = body.clone();
            }
            assert_eq!(body, result, "split at {split}");
        }
        // One byte at a time.
        let mut d = DataDecoder::new(1 << 20);
        let mut one = None;
        for b in input {
            let (_, body) = d.feed(std::slice::from_ref(b));
            if body.is_some() {
                one = body;
                break;
            }
        }
        assert_eq!(one, result, "byte at a time");
        result
    }

    fn body(input: &[u8]) -> Vec<u8> {
        decode(input).expect("terminated").bytes
    }

    #[test]
    fn plain_message() {
        assert_eq!(
            body(b"Subject: x\r\n\r\nhello\r\n.\r\n"),
            b"Subject: x\r\n\r\nhello\r\n"
        );
    }

    #[test]
    fn lone_dot_first_line_is_empty_message() {
        assert_eq!(body(b".\r\n"), b"");
    }

    #[test]
    fn leading_dot_on_first_line_is_unstuffed() {
        assert_eq!(body(b"..x\r\n.\r\n"), b".x\r\n");
        assert_eq!(body(b"a\r\n..\r\n.\r\n"), b"a\r\n.\r\n");
    }

    #[test]
    fn smuggling_variants_do_not_end_data() {
        for tricky in [
            &b"a\n.\nb\r\n.\r\n"[..],
            b"a\r\n.\nb\r\n.\r\n",
            b"a\n.\r\nb\r\n.\r\n",
            b"a\r.\r\nb\r\n.\r\n",
            b"a\r\n.\rb\r\n.\r\n",
        ] {
            let got = decode(tricky).expect("ends at the real terminator");
            assert!(
                got.bytes.ends_with(b"b\r\n"),
                "{:?}",
                String::from_utf8_lossy(tricky)
            );
            assert!(got.bare_lf || got.bare_cr);
        }
        assert!(decode(b"a\n.\n").is_none());
    }

    #[test]
    fn bytes_after_terminator_are_left_for_commands() {
        let input = b"x\r\n.\r\nQUIT\r\n";
        let mut d = DataDecoder::new(100);
        let (n, body) = d.feed(input);
        assert_eq!(body.unwrap().bytes, b"x\r\n");
        assert_eq!(&input[n..], b"QUIT\r\n");
    }

    #[test]
    fn size_limit_counts_but_does_not_store() {
        let mut input = vec![b'x'; 5000];
        input.extend_from_slice(b"\r\n.\r\n");
        let b = decode_split(&input, 100, 1000).unwrap();
        assert!(b.too_big);
        assert_eq!(b.size, 5002);
        assert_eq!(b.bytes.len(), 1000);
    }

    #[test]
    fn limit_exactly_met_is_not_too_big() {
        let b = decode_split(b"abc\r\n.\r\n", 0, 5).unwrap();
        assert!(!b.too_big);
        assert_eq!(b.size, 5);
    }
}
