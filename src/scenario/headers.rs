//! Header values of a received message for `when.header`, read with
//! mail-parser: a value matches in its decoded form (RFC 2047 words
//! decoded) or as written, unfolded.

use mail_parser::MessageParser;

pub struct Headers {
    /// (lower-case name, candidate values)
    items: Vec<(String, Vec<String>)>,
}

impl Headers {
    pub fn parse(message: &[u8]) -> Self {
        let mut items = vec![];
        if let Some(m) = MessageParser::default().parse_headers(message) {
            for h in m.headers() {
                let mut values = vec![];
                let (s, e) = (h.offset_start as usize, h.offset_end as usize);
                if let Some(raw) = message.get(s..e) {
                    let raw = String::from_utf8_lossy(raw);
                    let unfolded: Vec<&str> = raw
                        .split(['\r', '\n'])
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .collect();
                    values.push(unfolded.join(" "));
                }
                if let Some(t) = h.value.as_text() {
                    values.push(t.to_string());
                }
                items.push((h.name.as_str().to_ascii_lowercase(), values));
            }
        }
        Self { items }
    }

    /// True when some header `name` has a value for which `f` holds.
    pub fn any(&self, name: &str, f: impl Fn(&str) -> bool) -> bool {
        let name = name.to_ascii_lowercase();
        self.items
            .iter()
            .filter(|(n, _)| *n == name)
            .any(|(_, vs)| vs.iter().any(|v| f(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_and_folded_values() {
        let msg = b"Subject: =?UTF-8?B?dGVzdCBtZQ==?=\r\nX-Tag: one\r\n two\r\n\r\nbody\r\n";
        let h = Headers::parse(msg);
        assert!(h.any("subject", |v| v == "test me"));
        assert!(h.any("X-TAG", |v| v == "one two"));
        assert!(!h.any("From", |_| true));
    }
}
