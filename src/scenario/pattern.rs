//! Patterns for `when` conditions: a case-insensitive glob (`*`, `?`), a
//! `/regular expression/`, or a list meaning any of them.

use regex::{Regex, RegexBuilder};
use wildmatch::WildMatch;

#[derive(Debug, Clone)]
enum One {
    Glob(WildMatch),
    Regex(Regex),
}

/// The most memory one compiled pattern may take. The regex crate allows
/// 10 MB by default; a scenario's patterns are all kept for the life of the
/// listener (and again for each reload in flight), and a counted repetition
/// such as `\w{1000}` compiles to megabytes, so a size that no address or
/// header pattern needs is refused at `check` instead of at run time.
pub const MAX_REGEX_SIZE: usize = 1 << 20;

/// One or more alternatives; matches when any does.
#[derive(Debug, Clone)]
pub struct Pattern {
    alternatives: Vec<One>,
}

impl Pattern {
    /// Parses the alternatives; on error, returns the index of the bad one.
    pub fn parse<S: AsRef<str>>(parts: &[S]) -> Result<Self, (usize, String)> {
        let mut alternatives = Vec::with_capacity(parts.len());
        for (i, s) in parts.iter().enumerate() {
            let s = s.as_ref();
            if s.len() >= 2 && s.starts_with('/') && s.ends_with('/') {
                let re = RegexBuilder::new(&s[1..s.len() - 1])
                    .size_limit(MAX_REGEX_SIZE)
                    .build()
                    .map_err(|e| {
                    if let regex::Error::CompiledTooBig(n) = e {
                        return (
                            i,
                            format!(
                                "regular expression {s} is too big once compiled (over {n} bytes): \
                                 patterns stay in memory for every rule; use a shorter one or a glob"
                            ),
                        );
                    }
                    // The regex crate's message spans lines; keep its last.
                    let e = e.to_string();
                    let why = e
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim_start_matches("error: ")
                        .to_string();
                    (i, format!("bad regular expression {s}: {why}"))
                })?;
                alternatives.push(One::Regex(re));
            } else {
                alternatives.push(One::Glob(WildMatch::new_case_insensitive(s)));
            }
        }
        Ok(Self { alternatives })
    }

    /// The texts of the globs, when no alternative is a regular
    /// expression: what the rule index keys literal addresses by.
    pub fn globs(&self) -> Option<Vec<String>> {
        self.alternatives
            .iter()
            .map(|p| match p {
                One::Glob(g) => Some(g.to_string()),
                One::Regex(_) => None,
            })
            .collect()
    }

    /// One regular expression per alternative, for a `regex::bytes`
    /// set that tests many patterns at once: a user's expression as
    /// written, a glob translated. On an ASCII text each matches exactly
    /// when its alternative does; on other texts a glob's may not (see
    /// [`glob_regex`]), so a set must not be asked about them.
    pub fn set_sources(&self) -> Vec<String> {
        self.alternatives
            .iter()
            .map(|p| match p {
                One::Glob(g) => glob_regex(g.pattern_chars()),
                One::Regex(r) => r.as_str().to_string(),
            })
            .collect()
    }

    pub fn matches(&self, value: &str) -> bool {
        self.alternatives.iter().any(|p| match p {
            One::Glob(g) => g.matches(value),
            One::Regex(r) => r.is_match(value),
        })
    }
}

/// A glob as an anchored regular expression (for `regex::bytes`) that
/// matches an ASCII text exactly when the glob does: `*` any run of
/// characters, `?` one, and every other character a class of the ASCII
/// characters the glob's case-insensitive comparison takes for it. That
/// comparison is wildmatch's: ASCII against ASCII ignoring ASCII case, else
/// the two characters' `to_lowercase` equal (so the Kelvin sign `K` matches
/// `k` and `K`, while the dotted `İ`, which lowercases to two characters,
/// matches no ASCII letter). Unicode is off (`-u`): on ASCII a byte is a
/// character, and a set of globs compiles to a twentieth of the size, but
/// a set of these must only be asked about ASCII texts. An empty glob
/// matches the empty text only, as wildmatch's does.
fn glob_regex(glob: &[char]) -> String {
    let mut re = String::from(r"\A(?s-u:");
    for &c in glob {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => {
                let class = ascii_equivalents(c);
                if class.is_empty() {
                    // No ASCII character matches it: a class of no byte.
                    re.push_str(r"[^\x00-\xFF]");
                    continue;
                }
                re.push('[');
                for m in class {
                    re.push_str(&regex::escape(m.encode_utf8(&mut [0; 4])));
                }
                re.push(']');
            }
        }
    }
    re.push_str(r")\z");
    re
}

/// The ASCII characters a case-insensitive glob character `c` matches
/// (wildmatch's `char_matches`).
fn ascii_equivalents(c: char) -> Vec<char> {
    let mut lower = c.to_lowercase();
    let single = match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => return vec![],
    };
    let mut out: Vec<char> = [c, single.to_ascii_lowercase(), single.to_ascii_uppercase()]
        .into_iter()
        .filter(char::is_ascii)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(parts: &[&str]) -> Pattern {
        Pattern::parse(parts).unwrap()
    }

    #[test]
    fn globs_are_case_insensitive() {
        assert!(p(&["nobody@*"]).matches("NoBody@example.test"));
        assert!(p(&["*@flaky.test"]).matches("x@flaky.test"));
        assert!(!p(&["*@flaky.test"]).matches("x@flaky.test.evil"));
        assert!(p(&["a?c"]).matches("abc"));
        assert!(p(&[""]).matches(""));
        assert!(!p(&[""]).matches("x"));
    }

    #[test]
    fn regex_and_lists() {
        assert!(p(&["/^user[0-9]+@/"]).matches("user42@x"));
        assert!(p(&["a@x", "b@x"]).matches("b@x"));
        assert_eq!(Pattern::parse(&["x", "/(/"]).unwrap_err().0, 1);
    }

    /// Every string over `alphabet` up to `max` characters long.
    fn strings(alphabet: &[char], max: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = all.clone();
        for _ in 0..max {
            last = last
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn a_globs_set_source_matches_ascii_texts_exactly_as_the_glob() {
        // Pattern characters: wildcards, letters in both cases, a regex
        // metacharacter, and characters outside ASCII whose lowercase is an
        // ASCII letter (Kelvin sign), two characters (dotted I), or another
        // non-ASCII one (sigma), or that ASCII `s` does not fold to (long s).
        let globs = strings(
            &['*', '?', 'a', 'K', '.', '\u{212A}', '\u{130}', 'Σ', 'ſ'],
            3,
        );
        let texts = strings(&['a', 'A', 'k', 'K', 'i', 's', '.', 'x'], 3);
        let mut compared = 0;
        for g in &globs {
            let pattern = p(&[g.as_str()]);
            let sources = pattern.set_sources();
            let set = regex::bytes::RegexSet::new(&sources).unwrap();
            for t in &texts {
                assert_eq!(
                    set.is_match(t.as_bytes()),
                    pattern.matches(t),
                    "glob {g:?} ({}) on {t:?}",
                    sources[0]
                );
                compared += 1;
            }
        }
        assert!(compared > 400_000, "{compared}");
    }

    #[test]
    fn every_ascii_character_of_a_glob_matches_in_its_set_source_as_in_the_glob() {
        // Regex metacharacters (`[`, `]`, `^`, `-`, `\`, `&`, `~`, `#`, ...),
        // controls and the space, alone and between letters.
        let ascii: Vec<char> = (0u8..128).map(char::from).collect();
        for &c in &ascii {
            for g in [format!("{c}"), format!("x{c}*y")] {
                let pattern = p(&[g.as_str()]);
                let set = regex::bytes::RegexSet::new(pattern.set_sources()).unwrap();
                for &d in &ascii {
                    for t in [format!("{d}"), format!("X{d}zY")] {
                        assert_eq!(
                            set.is_match(t.as_bytes()),
                            pattern.matches(&t),
                            "{g:?} {t:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn set_sources_are_one_per_alternative_and_regexes_as_written() {
        let pattern = p(&["", "/^Never[0-9]+@/", "a?*"]);
        assert_eq!(
            pattern.set_sources(),
            [r"\A(?s-u:)\z", "^Never[0-9]+@", r"\A(?s-u:[Aa]..*)\z"]
        );
    }

    #[test]
    fn huge_compiled_regex_is_refused_and_says_why() {
        let (i, why) = Pattern::parse(&["/\\w{1000}@/"]).unwrap_err();
        assert_eq!(i, 0);
        assert!(why.contains("too big once compiled"), "{why}");
        assert!(Pattern::parse(&["/^[a-z0-9._%+-]{1,64}@example\\.test$/"]).is_ok());
    }
}
