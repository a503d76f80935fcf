//! Command-line framing with a length limit we enforce ourselves.
//!
//! RFC 5321 §4.5.3.1.4 limits a command line to 512 octets; extensions
//! (SIZE, DSN, AUTH) lengthen it, so like Postfix (`line_length_limit`) we
//! allow [`MAX_COMMAND_LINE`]. The limit holds however the bytes are split
//! across reads: the framer never buffers more than the limit.

/// Longest command line accepted by default, CRLF included
/// (`[server] max_line_length`).
pub const MAX_COMMAND_LINE: usize = 2048;
/// RFC 5321 §4.5.3.1.4: a server must take command lines of 512 octets.
pub const MIN_COMMAND_LINE: usize = 512;
/// The most `max_line_length` may be: the framer buffers up to this much
/// per session.
pub const MAX_COMMAND_LINE_LIMIT: usize = 65_536;

/// What the framer found in the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its line ending.
    Line(Vec<u8>),
    /// A line longer than the limit; its bytes up to the next LF are
    /// discarded so the session stays in sync with the client.
    TooLong,
}

/// Splits a byte stream into command lines. A line ends at LF; a CR right
/// before it is removed. Bare LF is accepted as a line end for commands, as
/// most MTAs do (it only matters for message data, see [`super::data`]).
#[derive(Debug)]
pub struct LineFramer {
    /// Longest line, CRLF included.
    limit: usize,
    buf: Vec<u8>,
    /// Set after a too-long line was reported, until its LF arrives.
    discarding: bool,
    /// The last line ended with a bare LF (no CR before it).
    bare: bool,
}

impl Default for LineFramer {
    fn default() -> Self {
        Self::new(MAX_COMMAND_LINE)
    }
}

impl LineFramer {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            buf: Vec::new(),
            discarding: false,
            bare: false,
        }
    }

    /// Consumes bytes from `input` until one frame is complete. Returns the
    /// number of bytes consumed and the frame, or `None` when every byte was
    /// consumed and the line is not complete yet.
    pub fn push(&mut self, input: &[u8]) -> (usize, Option<Frame>) {
        match memchr::memchr(b'\n', input) {
            Some(i) => {
                let consumed = i + 1;
                if self.discarding {
                    self.discarding = false;
                    self.buf.clear();
                    return (consumed, None);
                }
                if self.buf.len() + consumed > self.limit {
                    self.buf.clear();
                    return (consumed, Some(Frame::TooLong));
                }
                self.buf.extend_from_slice(&input[..i]);
                let mut line = std::mem::take(&mut self.buf);
                self.bare = line.last() != Some(&b'\r');
                if !self.bare {
                    line.pop();
                }
                (consumed, Some(Frame::Line(line)))
            }
            None => {
                if self.discarding {
                    return (input.len(), None);
                }
                if self.buf.len() + input.len() >= self.limit {
                    self.buf.clear();
                    self.discarding = true;
                    return (input.len(), Some(Frame::TooLong));
                }
                self.buf.extend_from_slice(input);
                (input.len(), None)
            }
        }
    }

    /// The last line returned ended with a bare LF.
    pub fn ended_bare(&self) -> bool {
        self.bare
    }

    /// Bytes of an unfinished line held right now.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = LineFramer::default();
        let mut out = vec![];
        for chunk in chunks {
            let mut pos = 0;
            while pos < chunk.len() {
                let (n, frame) = f.push(&chunk[pos..]);
                pos += n;
                out.extend(frame);
            }
        }
        out
    }

    #[test]
    fn every_split_point_gives_the_same_lines() {
        let input = b"EHLO a\r\nMAIL FROM:<x@y>\nNOOP\r\n";
        let want = vec![
            Frame::Line(b"EHLO a".to_vec()),
            Frame::Line(b"MAIL FROM:<x@y>".to_vec()),
            Frame::Line(b"NOOP".to_vec()),
        ];
        for i in 0..=input.len() {
            assert_eq!(frames(&[&input[..i], &input[i..]]), want, "split at {i}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(frames(&bytes), want);
    }

    #[test]
    fn too_long_is_reported_once_and_stays_in_sync() {
        let mut input = vec![b'A'; 100_000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let want = vec![Frame::TooLong, Frame::Line(b"NOOP".to_vec())];
        assert_eq!(frames(&[&input]), want);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(frames(&bytes), want);
        let pieces: Vec<&[u8]> = input.chunks(1000).collect();
        assert_eq!(frames(&pieces), want);
    }

    #[test]
    fn limit_is_exact() {
        let mut ok = vec![b'A'; MAX_COMMAND_LINE - 2];
        ok.extend_from_slice(b"\r\n");
        assert!(matches!(frames(&[&ok])[..], [Frame::Line(_)]));
        let mut long = vec![b'A'; MAX_COMMAND_LINE - 1];
        long.extend_from_slice(b"\r\n");
        assert_eq!(frames(&[&long]), vec![Frame::TooLong]);
    }

    #[test]
    fn limit_is_configurable() {
        let mut f = LineFramer::new(512);
        let mut ok = vec![b'A'; 510];
        ok.extend_from_slice(b"\r\n");
        assert!(matches!(f.push(&ok), (512, Some(Frame::Line(_)))));
        let mut long = vec![b'A'; 511];
        long.extend_from_slice(b"\r\n");
        assert_eq!(f.push(&long), (513, Some(Frame::TooLong)));
    }

    #[test]
    fn buffer_never_exceeds_limit() {
        let mut f = LineFramer::default();
        for _ in 0..10_000 {
            f.push(b"xxxxxxxxxx");
            assert!(f.pending() < MAX_COMMAND_LINE);
        }
    }
}
