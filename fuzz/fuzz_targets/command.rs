//! The command framer and parser: arbitrary bytes, cut at arbitrary places.
//!
//! Properties: no panic; the framer never holds more than the line limit;
//! the frames do not depend on how the bytes were split (the design's "every
//! split point gives the same replies"); every line parses, and MAIL/RCPT/
//! BDAT arguments parse without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfault::proto::command::{parse_bdat, parse_number, parse_path, Command, Verb};
use mailfault::proto::line::{Frame, LineFramer, MAX_COMMAND_LINE};

/// The first bytes choose the cut points; the rest is the stream.
fn cuts(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let n = data.len().min(4);
    let sizes = data[..n].iter().map(|&b| 1 + b as usize).collect();
    (sizes, &data[n..])
}

fn frames(stream: &[u8], sizes: &[usize]) -> Vec<Frame> {
    let mut framer = LineFramer::default();
    let mut out = vec![];
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let size = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(stream.len());
        i += 1;
        let chunk = &stream[pos..(pos + size).min(stream.len())];
        pos += chunk.len();
        let mut at = 0;
        while at < chunk.len() {
            let (used, frame) = framer.push(&chunk[at..]);
            assert!(used > 0 && used <= chunk.len() - at, "framer made no progress");
            at += used;
            assert!(framer.pending() < MAX_COMMAND_LINE);
            out.extend(frame);
        }
    }
    out
}

fn parse(line: &[u8]) {
    assert!(line.len() < MAX_COMMAND_LINE);
    let cmd = Command::parse(line);
    assert_eq!(cmd.raw(), line);
    let _ = (cmd.clone().into_line(), cmd.verb_text());
    match cmd.verb {
        Verb::Mail => drop(parse_path(cmd.args(), "FROM:")),
        Verb::Rcpt => drop(parse_path(cmd.args(), "TO:")),
        Verb::Bdat => drop(parse_bdat(cmd.args())),
        _ => drop(parse_number(cmd.args())),
    }
}

fuzz_target!(|data: &[u8]| {
    let (sizes, stream) = cuts(data);
    let whole = frames(stream, &[]);
    let split = frames(stream, &sizes);
    assert_eq!(whole, split, "frames depend on the cut points");
    for f in &whole {
        if let Frame::Line(line) = f {
            parse(line);
        }
    }
});
