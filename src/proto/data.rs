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
//! memory per message is bounded by the limit. Every growth of the buffer
//! is reserved first in the server's [`MemoryBudget`]: when it has no room
//! the decoder frees what it held, stores nothing more, and still reads to
//! the terminator, so all messages together are bounded too.

use std::sync::Arc;

use super::budget::{MemoryBudget, Reservation};

/// The smallest buffer a message starts with: one allocation holds a
/// typical small message.
const MIN_BUFFER: usize = 4096;

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
    /// The body's bytes in the global budget.
    reservation: Reservation,
    /// The budget had no room: nothing more is stored.
    no_memory: bool,
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
    /// The server's message memory budget ran out while it arrived: the
    /// bytes were not kept.
    pub no_memory: bool,
    pub bare_lf: bool,
    pub bare_cr: bool,
}

impl DataDecoder {
    /// A decoder without a global budget (only the size limit bounds it).
    pub fn new(limit: u64) -> Self {
        Self::with_budget(limit, None)
    }

    pub fn with_budget(limit: u64, budget: Option<Arc<MemoryBudget>>) -> Self {
        Self {
            state: State::LineStart,
            limit,
            size: 0,
            body: Vec::new(),
            reservation: Reservation::new(budget),
            no_memory: false,
            bare_lf: false,
            bare_cr: false,
        }
    }

    /// A bare LF was seen so far.
    pub fn saw_bare_lf(&self) -> bool {
        self.bare_lf
    }

    /// Reserves room for `n` more bytes now (a BDAT chunk of known size),
    /// counting only what the size limit would store. False when the
    /// budget has no room (or had none before).
    pub fn reserve(&mut self, n: u64) -> bool {
        let room = self.limit.saturating_sub(self.size).min(n);
        !self.no_memory && self.make_room(room)
    }

    /// Makes the buffer hold `n` more bytes, reserving first. Grows by
    /// doubling (amortised copies) but never past the size limit, and
    /// falls back to the exact need when the doubled size does not fit.
    fn make_room(&mut self, n: u64) -> bool {
        let len = self.body.len() as u64;
        let need = len.saturating_add(n);
        let cap = self.body.capacity() as u64;
        if need <= cap {
            return true;
        }
        let doubled = cap.saturating_mul(2).max(MIN_BUFFER as u64);
        let mut want = doubled.min(self.limit).max(need);
        if !self.reservation.grow_to(want) {
            if want == need || !self.reservation.grow_to(need) {
                return false;
            }
            want = need;
        }
        let Ok(extra) = usize::try_from(want - len) else {
            return false;
        };
        self.body.reserve_exact(extra);
        true
    }

    /// The budget ran out: free the bytes held so others can use them.
    fn out_of_memory(&mut self) {
        self.no_memory = true;
        self.body = Vec::new();
        self.reservation = Reservation::new(None);
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
        if room > 0 && !self.no_memory {
            let take = room.min(n);
            if self.make_room(take) {
                self.body.extend_from_slice(&bytes[..take as usize]);
            } else {
                self.out_of_memory();
            }
        }
        self.size = self.size.saturating_add(n);
    }

    /// Consumes bytes until the terminator. Returns how many bytes were used
    /// and, when the terminator was among them, the finished body.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Body>) {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::LineStart && !matches!(input[i], b'.' | b'\r' | b'\n') {
                // A line that starts with anything else is text from its
                // first byte: no byte is taken here, the fast path copies it.
                self.state = State::Text;
            }
            if self.state == State::Text {
                // Fast path: whole plain lines in one copy (a 1 KB message
                // is one or two copies, not one a line), else the text up
                // to the next CR or LF (not a CR LF: `plain_lines` would
                // have taken that line), which goes byte by byte.
                let rest = &input[i..];
                let run = plain_lines(rest);
                if run > 0 {
                    self.push(&rest[..run]);
                    i += run;
                    self.state = State::LineStart;
                    continue;
                }
                match memchr::memchr2(b'\r', b'\n', rest) {
                    Some(0) => {}
                    Some(k) => {
                        self.push(&rest[..k]);
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
            no_memory: self.no_memory,
            bare_lf: self.bare_lf,
            bare_cr: self.bare_cr,
        }
    }
}

/// How many bytes at the start of `text` (read in the text state: its
/// first line is already known not to start with a dot) are whole lines
/// that decode as they are: each ends with CR LF and holds no other CR or
/// LF, and each after the first starts with neither a dot nor CR nor LF
/// (RFC 5321 §4.5.2: only a line that starts with a dot changes).
fn plain_lines(text: &[u8]) -> usize {
    let mut end = 0;
    while let Some(k) = memchr::memchr2(b'\r', b'\n', &text[end..]) {
        let at = end + k;
        if text[at] != b'\r' || text.get(at + 1) != Some(&b'\n') {
            break;
        }
        end = at + 2;
        if matches!(text.get(end), None | Some(b'.' | b'\r' | b'\n')) {
            break;
        }
    }
    end
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
    fn whole_lines_and_odd_ones_decode_alike_however_they_arrive() {
        // Whole lines take the one-copy path; a stuffed dot, a bare CR or LF
        // inside or at the end of a line, and empty lines go byte by byte.
        let got = decode(b"one\r\n..two\r\n\r\nth\rree\r\nfo\nur\r\n.\r\n").unwrap();
        assert_eq!(got.bytes, b"one\r\n.two\r\n\r\nth\rree\r\nfo\nur\r\n");
        assert!(got.bare_cr && got.bare_lf);
        assert_eq!(got.size, got.bytes.len() as u64);
    }

    #[test]
    fn runs_of_plain_lines_stop_where_a_line_needs_a_look() {
        // Plain lines run together in one copy up to a stuffed dot, an
        // empty line, a bare CR or LF, or the terminator; every split and a
        // byte at a time give the same body (`decode`).
        let input =
            b"a: 1\r\nb: 2\r\n\r\nx\r\ny\r\n..z\r\nw\r\nv\rv\r\nu\r\nt\nt\r\ns\r\n.\r\nNOOP\r\n";
        let got = decode(input).unwrap();
        assert_eq!(
            got.bytes,
            b"a: 1\r\nb: 2\r\n\r\nx\r\ny\r\n.z\r\nw\r\nv\rv\r\nu\r\nt\nt\r\ns\r\n"
        );
        assert!(got.bare_cr && got.bare_lf);
        assert_eq!(plain_lines(b"x\r\ny\r\n..z\r\n"), 6);
        assert_eq!(plain_lines(b"x\r\ny\r\n\r\n"), 6);
        assert_eq!(plain_lines(b"x\r\nv\rv\r\n"), 3);
        assert_eq!(plain_lines(b"x\r\ny"), 3);
        assert_eq!(plain_lines(b"x\ny\r\n"), 0);
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
    fn budget_refusal_frees_the_bytes_and_still_finds_the_end() {
        let budget = MemoryBudget::new(10_000);
        let mut d = DataDecoder::with_budget(1 << 20, Some(budget.clone()));
        let mut input = vec![b'x'; 50_000];
        input.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
        let (n, body) = d.feed(&input[..20_000]);
        assert_eq!((n, body), (20_000, None));
        assert_eq!(budget.used(), 0, "released as soon as it ran out");
        let (n, body) = d.feed(&input[20_000..]);
        let body = body.expect("the terminator is still found");
        assert_eq!(&input[20_000 + n..], b"NOOP\r\n");
        assert!(body.no_memory && !body.too_big);
        assert!(body.bytes.is_empty());
        assert_eq!(body.size, 50_002);
    }

    #[test]
    fn budget_is_released_when_the_decoder_goes() {
        let budget = MemoryBudget::new(1 << 20);
        let mut d = DataDecoder::with_budget(1 << 20, Some(budget.clone()));
        d.feed(&[b'y'; 3000]);
        assert!(budget.used() >= 3000);
        assert!(d.reserve(200_000));
        assert!(budget.used() >= 203_000);
        drop(d);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn limit_exactly_met_is_not_too_big() {
        let b = decode_split(b"abc\r\n.\r\n", 0, 5).unwrap();
        assert!(!b.too_big);
        assert_eq!(b.size, 5);
    }
}
