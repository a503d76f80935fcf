//! Events as JSON, written by hand: the form of the events file and of the
//! live stream, byte for byte what serde writes (`tests` below check every
//! kind). With an event stream open this runs for every event a session
//! records, on the session's thread; serde's flattened, internally tagged
//! enum escaped every key and went through a map per event, and was most
//! of what an open stream cost SMTP (docs/performance.md). The kinds a
//! message records are written here; the rare ones (a listener starting,
//! TLS, a hang, a refused greeting, a reply that names a limit) still go
//! through serde.

use super::{Event, EventKind, Said};
use crate::proto::TxEnd;

/// A JSON object being written: each field is `,"key":value` (the caller
/// writes the opening brace and the first field).
struct Fields<'a>(&'a mut Vec<u8>);

impl Fields<'_> {
    /// `key` is one of this file's field names: nothing in it needs
    /// escaping.
    fn key(&mut self, key: &str) {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn str(&mut self, key: &str, v: &str) {
        self.key(key);
        json_str(self.0, v);
    }

    fn num(&mut self, key: &str, v: u64) {
        self.key(key);
        self.0
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    fn bool(&mut self, key: &str, v: bool) {
        self.key(key);
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
    }

    fn strs(&mut self, key: &str, v: &[String]) {
        self.key(key);
        self.0.push(b'[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            json_str(self.0, s);
        }
        self.0.push(b']');
    }

    /// A `Said` without a limit (with one, the kind goes through serde).
    fn said(&mut self, key: &str, s: &Said) {
        self.key(key);
        self.0.push(b'{');
        if let Some(code) = s.code {
            self.0.extend_from_slice(b"\"code\":");
            self.0
                .extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
            self.0.push(b',');
        }
        self.0.extend_from_slice(b"\"reply\":");
        json_str(self.0, &s.reply);
        if let Some(rule) = &s.rule {
            self.str("rule", rule);
        }
        self.0.push(b'}');
    }
}

/// Appends `event` as one line of JSON (no line end).
pub(super) fn write_event(event: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"ts\":");
    json_str(out, &event.ts);
    let mut f = Fields(out);
    f.str("listener", &event.listener);
    f.str("scenario", &event.scenario);
    f.num("session", event.session);
    if !write_kind(&event.kind, &mut f) {
        write_kind_by_serde(&event.kind, out);
    }
    out.push(b'}');
}

/// The kind's fields, tag first, as serde orders them (declaration order,
/// options skipped when empty). False for a kind left to serde.
fn write_kind(kind: &EventKind, f: &mut Fields<'_>) -> bool {
    match kind {
        EventKind::Connect { client } => {
            f.str("type", "connect");
            f.str("client", client);
        }
        EventKind::Command {
            line,
            stage,
            pipelined,
        } => {
            f.str("type", "command");
            f.str("line", line);
            if let Some(stage) = stage {
                f.str("stage", stage.name());
            }
            f.bool("pipelined", *pipelined);
        }
        EventKind::Reply {
            code,
            text,
            rule,
            delay_ms,
            limit: None,
        } => {
            f.str("type", "reply");
            if let Some(code) = code {
                f.num("code", u64::from(*code));
            }
            f.str("text", text);
            if let Some(rule) = rule {
                f.str("rule", rule);
            }
            if let Some(ms) = delay_ms {
                f.num("delay_ms", *ms);
            }
        }
        EventKind::Mail { mail_from, answer } if answer.limit.is_none() => {
            f.str("type", "mail");
            f.str("mail_from", mail_from);
            f.said("answer", answer);
        }
        EventKind::Rcpt { rcpt, answer } if answer.limit.is_none() => {
            f.str("type", "rcpt");
            f.str("rcpt", rcpt);
            f.said("answer", answer);
        }
        EventKind::Message { .. } => write_message(kind, f),
        EventKind::Transaction {
            mail_from,
            rcpts,
            end,
            stage,
            answer,
        } if answer.as_ref().is_none_or(|a| a.limit.is_none()) => {
            f.str("type", "transaction");
            f.str("mail_from", mail_from);
            f.strs("rcpts", rcpts);
            f.str("end", tx_end_name(*end));
            f.str("stage", stage.name());
            if let Some(a) = answer {
                f.said("answer", a);
            }
        }
        EventKind::Greeted {
            helo,
            esmtp,
            pipelining,
        } => {
            f.str("type", "greeted");
            f.str("helo", helo);
            f.bool("esmtp", *esmtp);
            f.bool("pipelining", *pipelining);
        }
        EventKind::Close { by, reason } => {
            f.str("type", "close");
            f.str("by", by);
            f.str("reason", reason);
        }
        _ => return false,
    }
    true
}

fn write_message(kind: &EventKind, f: &mut Fields<'_>) {
    let EventKind::Message {
        id,
        mail_from,
        rcpt,
        size,
        accepted,
        reply_code,
        tls,
        chunked,
        bare_lf,
        bare_cr,
    } = kind
    else {
        return;
    };
    f.str("type", "message");
    f.str("id", id);
    f.str("mail_from", mail_from);
    f.strs("rcpt", rcpt);
    f.num("size", *size);
    f.bool("accepted", *accepted);
    if let Some(code) = reply_code {
        f.num("reply_code", u64::from(*code));
    }
    f.bool("tls", *tls);
    f.bool("chunked", *chunked);
    if *bare_lf {
        f.bool("bare_lf", true);
    }
    if *bare_cr {
        f.bool("bare_cr", true);
    }
}

fn tx_end_name(end: TxEnd) -> &'static str {
    match end {
        TxEnd::Delivered => "delivered",
        TxEnd::Refused => "refused",
        TxEnd::Reset => "reset",
        TxEnd::Abandoned => "abandoned",
        TxEnd::Dropped => "dropped",
    }
}

/// A kind through serde: an internally tagged enum, so an object, whose
/// fields continue the event's once its braces are taken off.
fn write_kind_by_serde(kind: &EventKind, out: &mut Vec<u8>) {
    let at = out.len();
    out.push(b',');
    match serde_json::to_writer(&mut *out, kind) {
        Ok(()) if out.get(at + 1) == Some(&b'{') && out.last() == Some(&b'}') => {
            out.remove(at + 1);
            out.pop();
            // An object with no field at all leaves the comma alone.
            if out.len() == at + 1 {
                out.pop();
            }
        }
        _ => out.truncate(at),
    }
}

/// A JSON string: copied as it is when nothing in it needs escaping (RFC
/// 8259 §7: quotation mark, reverse solidus and control characters), which
/// is nearly always; otherwise escaped by serde_json.
pub(super) fn json_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        let _ = serde_json::to_writer(out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether a byte of `b` must be escaped in a JSON string: eight bytes at a
/// time (the classic "has a zero byte" test, on the bytes themselves for
/// controls and on the bytes xor `"` and xor `\`), since a stream encodes
/// every event's strings and the byte-by-byte test was most of that.
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_ne_bytes(w.try_into().unwrap_or_default());
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS != 0;
        if control || zero(x ^ (ONES * u64::from(b'"'))) || zero(x ^ (ONES * u64::from(b'\\'))) {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

#[cfg(test)]
mod tests {
    use crate::capture::Event;

    /// Lines as serde writes them: every kind, the options set and unset,
    /// and strings that need escaping in every field written by hand.
    const LINES: &[&str] = &[
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"127.0.0.1:2525","scenario":"t","session":0,"type":"listen","file":"/x/t.toml","hash":"fnv1a:0000000000000001"}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"127.0.0.1:2525","scenario":"t","session":0,"type":"listen"}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"[::1]:2525","scenario":"a \"b\"\\c\u0001é","session":7,"type":"connect","client":"127.0.0.1:5"}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l\n","scenario":"t","session":18446744073709551615,"type":"command","line":"MAIL FROM:<\"a b\"@x>\t","stage":"mail","pipelined":true}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"command","line":"\u0000","pipelined":false}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"reply","code":451,"text":"451 4.7.1 later\r\n","rule":"grey","delay_ms":5,"limit":{"kind":"greylist","retry_after_ms":1000}}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"reply","code":250,"text":"250 ok\r\n","rule":"r \"1\"","delay_ms":0}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"reply","text":"raw\r\n"}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"mail","mail_from":"","answer":{"code":250,"reply":"250 2.1.0 Ok"}}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"mail","mail_from":"a@x","answer":{"reply":"raw","rule":"r"}}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"rcpt","rcpt":"b@x","answer":{"code":550,"reply":"550 5.1.1 no","rule":"u"}}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"rcpt","rcpt":"b@x","answer":{"code":450,"reply":"450 4.2.1 slow","rule":"rate","limit":{"kind":"rate","max":3,"window_ms":60000}}}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"message","id":"X1","mail_from":"","rcpt":["a@x","ü@y"],"size":3,"accepted":true,"reply_code":250,"tls":false,"chunked":true,"bare_lf":true}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"message","id":"X2","mail_from":"a@x","rcpt":[],"size":0,"accepted":false,"tls":true,"chunked":false,"bare_cr":true}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"greeted","helo":"c\"x","esmtp":true,"pipelining":false}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"refused","stage":"ehlo","answer":{"code":554,"reply":"554 no"}}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"transaction","mail_from":"a@x","rcpts":[],"end":"reset","stage":"rset"}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"transaction","mail_from":"a@x","rcpts":["b@x","c@x"],"end":"delivered","stage":"message","answer":{"code":250,"reply":"250 2.0.0 Ok"}}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"transaction","mail_from":"a@x","rcpts":["b@x"],"end":"refused","stage":"data","answer":{"code":421,"reply":"421 x","limit":{"kind":"concurrent","max":2}}}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"transaction","mail_from":"a@x","rcpts":["b@x"],"end":"abandoned","stage":"quit"}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"transaction","mail_from":"a@x","rcpts":["b@x"],"end":"dropped","stage":"rcpt"}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"tls","version":"TLSv1_3","cipher":"TLS13_AES_256_GCM_SHA384"}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"hang","rule":"h"}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"hang"}"#,
        r#"{"ts":"2026-01-01T00:00:00.000Z","listener":"l","scenario":"t","session":1,"type":"close","by":"client","reason":"quit"}"#,
    ];

    #[test]
    fn every_byte_that_needs_escaping_is_found_at_every_position() {
        for bad in (0u8..0x20).chain([b'"', b'\\']) {
            for len in 1..20 {
                for at in 0..len {
                    let mut b = vec![b'a'; len];
                    b[at] = bad;
                    assert!(super::needs_escape(&b), "{bad:#x} at {at} of {len}");
                }
            }
        }
        for ok in (0x20u8..=0xff).filter(|c| *c != b'"' && *c != b'\\') {
            assert!(!super::needs_escape(&[ok; 19]), "{ok:#x}");
        }
        assert!(!super::needs_escape(
            "ünïcödé text, 250 2.1.0 Ok".as_bytes()
        ));
    }

    #[test]
    fn type_names_are_the_type_fields() {
        let mut named = std::collections::BTreeSet::new();
        for line in LINES {
            let e: Event = serde_json::from_str(line).unwrap();
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(e.kind.type_name(), v["type"], "{line}");
            named.insert(e.kind.type_name());
        }
        let all: std::collections::BTreeSet<_> = crate::capture::EVENT_TYPES.into_iter().collect();
        assert_eq!(named, all, "the fixture has every type");
    }

    #[test]
    fn hand_written_json_is_serdes() {
        for line in LINES {
            let e: Event = serde_json::from_str(line).unwrap();
            let serde = serde_json::to_string(&e).unwrap();
            assert_eq!(&serde, line, "the fixture is serde's own form");
            let mut ours = vec![];
            e.write_json(&mut ours);
            assert_eq!(String::from_utf8(ours).unwrap(), serde);
        }
    }
}
