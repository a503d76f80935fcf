//! Reading and checking scenario files. Every problem is reported as
//! `FILE:LINE:COL: what is wrong`, all of them at once where possible.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::{Spanned, Value};

use super::model::*;
use super::pattern::Pattern;
use super::presets;
use super::stage_codes;
use super::units::{self, DurationRange, SizeCmp, Window};
use crate::proto::{Reply, Stage};

/// One problem in a scenario file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based line and column; `None` when the file could not be read.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Why a scenario was refused: one or more diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.diagnostics.iter().map(|d| d.to_string()).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for LoadError {}

/// Reads and checks a scenario file. Its name is the file stem.
pub fn load_file(path: &Path) -> Result<Scenario, LoadError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| LoadError {
        diagnostics: vec![Diagnostic {
            file: file.clone(),
            position: None,
            message: format!("cannot read: {e}"),
        }],
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    parse(&text, &file, &name)
}

/// The built-in default scenario (`scenarios/default.toml`).
pub fn default_scenario() -> Scenario {
    let mut s = parse(DEFAULT_TOML, "scenarios/default.toml", "default")
        .unwrap_or_else(|e| panic!("the built-in default scenario is invalid: {e}"));
    s.name = "default".into();
    s
}

pub const DEFAULT_TOML: &str = include_str!("../../scenarios/default.toml");

/// The file's sections, each read on its own so that a problem in one rule
/// does not hide the problems in the others. A rule or expectation that
/// could not be read at all is `None` and keeps its place (rule #N).
#[derive(Default)]
struct RawScenario {
    server: Option<RawServer>,
    /// Each rule, and whether all its keys could be read.
    rule: Vec<Option<(RawRule, bool)>>,
    auth: Option<Spanned<RawAuth>>,
    tls: Option<Spanned<RawTls>>,
    expect: Vec<Option<Spanned<RawExpect>>>,
}

/// The top-level keys of a scenario.
const SECTIONS: &str = "`server`, `rule`, `auth`, `tls`, `expect`";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    starttls: Option<bool>,
    certificate: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    versions: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    mechanisms: Option<Vec<Spanned<String>>>,
    required: Option<bool>,
    users: Option<BTreeMap<String, String>>,
    allow_plaintext: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    name: Option<String>,
    rcpt: Option<Spanned<Value>>,
    mail_from: Option<Spanned<Value>>,
    delivered: Option<bool>,
    attempts: Option<Spanned<Value>>,
    min_interval: Option<Spanned<String>>,
    no_retry_after_permanent: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    hostname: Option<Spanned<String>>,
    greeting: Option<Spanned<String>>,
    max_message_size: Option<Spanned<Value>>,
    max_recipients: Option<Spanned<i64>>,
    require_tls: Option<bool>,
    idle_timeout: Option<Spanned<String>>,
    seed: Option<Spanned<i64>>,
    extensions: Option<Vec<Spanned<String>>>,
    magic_recipients: Option<bool>,
    bare_lf: Option<Spanned<String>>,
    max_line_length: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    on: Spanned<Value>,
    when: Option<RawWhen>,
    reply: Option<Spanned<String>>,
    preset: Option<Spanned<String>>,
    sequence: Option<Spanned<Vec<Spanned<String>>>>,
    action: Option<Spanned<String>>,
    raw: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
    close: Option<bool>,
    drip: Option<Spanned<String>>,
    probability: Option<Spanned<f64>>,
    times: Option<Spanned<i64>>,
    key: Option<Vec<Spanned<String>>>,
    limit: Option<Spanned<RawLimit>>,
    greylist: Option<Spanned<RawGreylist>>,
    reputation: Option<Spanned<RawReputation>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    rate: Option<Spanned<String>>,
    concurrent: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGreylist {
    retry_after: Spanned<String>,
    expire: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReputation {
    window: Spanned<String>,
    min_attempts: Option<Spanned<i64>>,
    max_failure_rate: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    client_ip: Option<Spanned<Value>>,
    helo: Option<Spanned<Value>>,
    mail_from: Option<Spanned<Value>>,
    rcpt: Option<Spanned<Value>>,
    tls: Option<bool>,
    authenticated: Option<bool>,
    size: Option<Spanned<String>>,
    header: Option<BTreeMap<String, Spanned<Value>>>,
    during: Option<Spanned<Value>>,
    auth_user: Option<Spanned<Value>>,
}

/// Collects diagnostics with positions computed from byte offsets.
struct Checker<'a> {
    text: &'a str,
    file: &'a str,
    diagnostics: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, offset: usize, message: impl Into<String>) {
        let position = Some(line_col(self.text, offset));
        self.diagnostics.push(Diagnostic {
            file: self.file.to_string(),
            position,
            message: message.into(),
        });
    }

    fn at<T>(&mut self, s: &Spanned<T>, message: impl Into<String>) {
        self.error(s.span().start, message);
    }

    /// Every diagnostic, in file order.
    fn into_error(mut self) -> LoadError {
        self.diagnostics.sort_by_key(|d| d.position);
        LoadError {
            diagnostics: self.diagnostics,
        }
    }
}

/// A TOML error's message on one line, without our type names: "expected
/// struct RawGreylist" reads "expected a table".
fn one_line(message: &str) -> String {
    let mut m = message.trim_end().replace('\n', " ");
    while let Some(i) = m.find("struct Raw") {
        let end = m[i + 7..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map_or(m.len(), |e| i + 7 + e);
        m.replace_range(i..end, "a table");
    }
    m
}

/// Splits the document into its sections. TOML syntax errors stop here
/// (all of them are reported); a section or rule that does not fit its
/// shape is reported and the others are still read.
fn read_sections(ck: &mut Checker<'_>) -> Option<RawScenario> {
    let (root, errors) = DeTable::parse_recoverable(ck.text);
    if !errors.is_empty() {
        for e in errors {
            ck.error(e.span().map_or(0, |s| s.start), one_line(e.message()));
        }
        return None;
    }
    let mut raw = RawScenario::default();
    for (key, value) in root.into_inner() {
        match key.get_ref().as_ref() {
            "server" | "tls" | "auth" if !value.get_ref().is_table() => {
                let k = key.get_ref();
                ck.error(key.span().start, format!("{k} is a table: write [{k}]"));
            }
            "server" => raw.server = section(ck, value).map(|(t, _)| t),
            "tls" => raw.tls = section(ck, value).map(|(t, _)| t),
            "auth" => raw.auth = section(ck, value).map(|(t, _)| t),
            "rule" => raw.rule = tables(ck, value, "rule"),
            "expect" => {
                raw.expect = tables(ck, value, "expect")
                    .into_iter()
                    .map(|e| e.map(|(t, _)| t))
                    .collect()
            }
            other => ck.error(
                key.span().start,
                format!("unknown field `{other}`, expected one of {SECTIONS}"),
            ),
        }
    }
    Some(raw)
}

/// Each table of an array of tables (`[[rule]]`), read on its own.
fn tables<T: serde::de::DeserializeOwned>(
    ck: &mut Checker<'_>,
    value: Spanned<DeValue<'_>>,
    name: &str,
) -> Vec<Option<(T, bool)>> {
    let start = value.span().start;
    match value.into_inner() {
        DeValue::Array(items) => items.into_iter().map(|v| section(ck, v)).collect(),
        _ => {
            ck.error(
                start,
                format!("{name} is a list of tables: write [[{name}]]"),
            );
            vec![]
        }
    }
}

/// Reads one table into its shape. A key that does not fit (unknown, or a
/// value of the wrong type) is reported and left out, and the table is read
/// again, so every bad key of the table is reported, not only the first.
/// The flag says whether every key was read.
fn section<T: serde::de::DeserializeOwned>(
    ck: &mut Checker<'_>,
    mut value: Spanned<DeValue<'_>>,
) -> Option<(T, bool)> {
    let mut complete = true;
    loop {
        let err = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(t) => return Some((t, complete)),
            Err(e) => e,
        };
        let at = err.span().map_or(value.span().start, |s| s.start);
        ck.error(at, one_line(err.message()));
        let DeValue::Table(table) = value.get_mut() else {
            return None;
        };
        let bad = table
            .iter()
            .find(|(k, v)| k.span().start <= at && at < v.span().end)
            .map(|(k, _)| k.clone());
        // No key holds it: the problem is the table as a whole (a missing key).
        table.remove(&bad?);
        complete = false;
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses and checks scenario text; `file` is used in diagnostics.
pub fn parse(text: &str, file: &str, name: &str) -> Result<Scenario, LoadError> {
    let mut ck = Checker {
        text,
        file,
        diagnostics: vec![],
    };
    let Some(raw) = read_sections(&mut ck) else {
        return Err(ck.into_error());
    };
    let server = check_server(&mut ck, raw.server);
    let tls = raw.tls.as_ref().map(|t| check_tls(&mut ck, t));
    let auth = raw.auth.as_ref().map(|a| check_auth(&mut ck, a));
    let expects = raw
        .expect
        .iter()
        .enumerate()
        .filter_map(|(i, e)| check_expect(&mut ck, i, e.as_ref()?))
        .collect();
    let rules = raw
        .rule
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let (r, complete) = r?;
            check_rule(&mut ck, i, r, complete)
        })
        .collect();
    if !ck.diagnostics.is_empty() {
        return Err(ck.into_error());
    }
    Ok(Scenario {
        name: name.to_string(),
        server,
        rules,
        expects,
        tls,
        auth,
    })
}

/// Reads a PEM file named in `[tls]`: relative paths are taken from the
/// scenario file's folder first, then from the current folder.
fn read_pem(ck: &mut Checker<'_>, at: &Spanned<String>) -> Option<String> {
    let given = std::path::Path::new(at.get_ref());
    let beside = std::path::Path::new(ck.file)
        .parent()
        .map(|d| d.join(given));
    let path = match beside {
        Some(p) if given.is_relative() && p.exists() => p,
        _ => given.to_path_buf(),
    };
    match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) => {
            ck.at(at, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

fn check_tls(ck: &mut Checker<'_>, raw: &Spanned<RawTls>) -> TlsSettings {
    let t = raw.get_ref();
    let mut out = TlsSettings {
        starttls: t.starttls.unwrap_or(true),
        ..TlsSettings::default()
    };
    match (&t.certificate, &t.key) {
        (None, Some(k)) => ck.at(k, "key goes with certificate = \"PATH\""),
        (None, None) => {}
        (Some(c), key) => match CertFault::from_name(c.get_ref()) {
            Some(f) => {
                if let Some(k) = key {
                    ck.at(
                        k,
                        format!(
                            "key is only for a certificate read from a file, not {:?}",
                            c.get_ref()
                        ),
                    );
                }
                out.certificate = Certificate::Made(f);
            }
            None if c.get_ref().contains(['/', '.']) => {
                let Some(k) = key else {
                    ck.at(c, "a certificate file needs its key: key = \"PATH\"");
                    return check_versions(ck, raw, out);
                };
                if let (Some(cert_pem), Some(key_pem)) = (read_pem(ck, c), read_pem(ck, k)) {
                    if let Err(e) = crate::certs::parse_chain(&cert_pem) {
                        ck.at(c, e.to_string());
                    }
                    if let Err(e) = crate::certs::parse_key(&key_pem) {
                        ck.at(k, e.to_string());
                    }
                    out.certificate = Certificate::Files { cert_pem, key_pem };
                }
            }
            None => ck.at(
                c,
                format!(
                    "unknown certificate {:?}; use {} or a path to a PEM file",
                    c.get_ref(),
                    CertFault::NAMES.join(", ")
                ),
            ),
        },
    }
    check_versions(ck, raw, out)
}

/// `[tls] versions`.
fn check_versions(
    ck: &mut Checker<'_>,
    raw: &Spanned<RawTls>,
    mut out: TlsSettings,
) -> TlsSettings {
    if let Some(vs) = &raw.get_ref().versions {
        out.versions = vec![];
        for v in vs {
            match v.get_ref().as_str() {
                "1.2" => out.versions.push(TlsVersion::V1_2),
                "1.3" => out.versions.push(TlsVersion::V1_3),
                other => ck.at(
                    v,
                    format!("unknown TLS version {other:?}; use \"1.2\" or \"1.3\""),
                ),
            }
        }
        if vs.is_empty() {
            ck.at(raw, "versions needs at least one of \"1.2\", \"1.3\"");
        }
    }
    out
}

fn check_auth(ck: &mut Checker<'_>, raw: &Spanned<RawAuth>) -> crate::proto::auth::AuthConfig {
    use crate::proto::auth::{AuthConfig, Mechanism};
    let a = raw.get_ref();
    let mut mechanisms = vec![];
    match &a.mechanisms {
        None => mechanisms = vec![Mechanism::Plain, Mechanism::Login],
        Some(ms) => {
            for m in ms {
                match Mechanism::from_name(m.get_ref()) {
                    Some(x) if !mechanisms.contains(&x) => mechanisms.push(x),
                    Some(_) => {}
                    None => ck.at(
                        m,
                        format!(
                            "unknown mechanism {:?}; use {}",
                            m.get_ref(),
                            Mechanism::ALL.map(Mechanism::name).join(", ")
                        ),
                    ),
                }
            }
            if ms.is_empty() {
                ck.at(
                    raw,
                    "mechanisms needs at least one of PLAIN, LOGIN, CRAM-MD5, XOAUTH2",
                );
            }
        }
    }
    AuthConfig {
        mechanisms,
        required: a.required.unwrap_or(false),
        users: a.users.clone().unwrap_or_default(),
        allow_plaintext: a.allow_plaintext.unwrap_or(false),
    }
}

fn check_expect(ck: &mut Checker<'_>, index: usize, raw: &Spanned<RawExpect>) -> Option<Expect> {
    let before = ck.diagnostics.len();
    let e = raw.get_ref();
    let rcpt = e.rcpt.as_ref().and_then(|v| pattern(ck, v, "rcpt"));
    let mail_from = e
        .mail_from
        .as_ref()
        .and_then(|v| pattern(ck, v, "mail_from"));
    let attempts = e.attempts.as_ref().and_then(|v| {
        let parsed = match v.get_ref() {
            Value::Integer(n) => u64::try_from(*n).ok().map(|n| (n, Some(n))),
            Value::String(s) => match s.split_once("..") {
                Some((a, b)) => {
                    let lo = crate::proto::command::parse_number(a.trim());
                    let hi = if b.trim().is_empty() {
                        Some(None)
                    } else {
                        crate::proto::command::parse_number(b.trim()).map(Some)
                    };
                    match (lo, hi) {
                        (Some(lo), Some(hi)) if hi.is_none_or(|h| h >= lo) => Some((lo, hi)),
                        _ => None,
                    }
                }
                None => crate::proto::command::parse_number(s.trim()).map(|n| (n, Some(n))),
            },
            _ => None,
        };
        if parsed.is_none() {
            ck.at(
                v,
                "attempts is a number or a range such as \"3..5\" or \"2..\"",
            );
        }
        parsed
    });
    let min_interval = e
        .min_interval
        .as_ref()
        .and_then(|d| match units::duration(d.get_ref()) {
            Ok(v) => Some(v),
            Err(err) => {
                ck.at(d, err);
                None
            }
        });
    let no_retry_after_permanent = e.no_retry_after_permanent.unwrap_or(false);
    if e.delivered.is_none()
        && attempts.is_none()
        && min_interval.is_none()
        && !no_retry_after_permanent
    {
        ck.at(raw, "this expectation checks nothing: give delivered, attempts, min_interval or no_retry_after_permanent");
    }
    if ck.diagnostics.len() > before {
        return None;
    }
    Some(Expect {
        name: e
            .name
            .clone()
            .unwrap_or_else(|| format!("expectation #{}", index + 1)),
        rcpt,
        mail_from,
        delivered: e.delivered,
        attempts,
        min_interval,
        no_retry_after_permanent,
    })
}

fn check_server(ck: &mut Checker<'_>, raw: Option<RawServer>) -> ServerSettings {
    let mut s = ServerSettings::default();
    let Some(raw) = raw else { return s };
    if let Some(h) = raw.hostname {
        if h.get_ref().is_empty()
            || h.get_ref()
                .contains(|c: char| c.is_whitespace() || c.is_control())
        {
            ck.at(&h, "hostname must be one word without spaces");
        }
        s.hostname = Some(h.into_inner());
    }
    if let Some(g) = raw.greeting {
        if g.get_ref().contains(['\r', '\n']) {
            ck.at(&g, "greeting must be one line");
        }
        s.greeting = g.into_inner();
    }
    if let Some(v) = raw.max_message_size {
        match v.get_ref() {
            Value::Integer(n) if *n >= 0 => s.max_message_size = *n as u64,
            Value::String(t) => match units::size(t) {
                Ok(n) => s.max_message_size = n,
                Err(e) => ck.at(&v, e),
            },
            _ => ck.at(
                &v,
                "max_message_size is a size such as \"35MB\" or a number of bytes",
            ),
        }
    }
    if let Some(n) = raw.max_recipients {
        match usize::try_from(*n.get_ref()) {
            Ok(v) if v > 0 => s.max_recipients = v,
            _ => ck.at(&n, "max_recipients must be at least 1"),
        }
    }
    s.require_tls = raw.require_tls.unwrap_or(false);
    if let Some(t) = raw.idle_timeout {
        match units::duration(t.get_ref()) {
            Ok(d) if !d.is_zero() => s.idle_timeout = d,
            Ok(_) => ck.at(&t, "idle_timeout must be longer than 0s"),
            Err(e) => ck.at(&t, e),
        }
    }
    if let Some(seed) = raw.seed {
        match u64::try_from(*seed.get_ref()) {
            Ok(v) => s.seed = Some(v),
            Err(_) => ck.at(&seed, "seed must be a non-negative integer"),
        }
    }
    if let Some(exts) = raw.extensions {
        s.extensions = vec![];
        for e in exts {
            let word = e.get_ref().trim();
            let keyword = word.split(' ').next().unwrap_or("");
            if keyword.is_empty()
                || !keyword
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                || word.contains(['\r', '\n'])
            {
                ck.at(
                    &e,
                    format!("{word:?} is not an EHLO keyword (letters, digits and '-')"),
                );
            } else if keyword.eq_ignore_ascii_case("STARTTLS")
                || keyword.eq_ignore_ascii_case("AUTH")
            {
                ck.at(
                    &e,
                    format!("{keyword} is advertised from [tls] / [auth], not from extensions"),
                );
            }
            s.extensions.push(word.to_string());
        }
    }
    s.magic_recipients = raw.magic_recipients.unwrap_or(false);
    if let Some(n) = raw.max_line_length {
        use crate::proto::line::{MAX_COMMAND_LINE_LIMIT as MAX, MIN_COMMAND_LINE as MIN};
        match usize::try_from(*n.get_ref()) {
            Ok(v) if (MIN..=MAX).contains(&v) => s.max_line_length = v,
            _ => ck.at(
                &n,
                format!("max_line_length is from {MIN} (RFC 5321 §4.5.3.1.4) to {MAX} octets, CRLF included"),
            ),
        }
    }
    if let Some(b) = raw.bare_lf {
        match BareLf::from_name(b.get_ref()) {
            Some(v) => s.bare_lf = v,
            None => ck.at(
                &b,
                format!("bare_lf is \"accept\" or \"reject\", not {:?}", b.get_ref()),
            ),
        }
    }
    s
}

/// Strings of a value that may be one string or a list of strings.
fn strings(ck: &mut Checker<'_>, v: &Spanned<Value>, what: &str) -> Option<Vec<String>> {
    match v.get_ref() {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) if items.iter().all(Value::is_str) => Some(
            items
                .iter()
                .filter_map(|i| i.as_str().map(String::from))
                .collect(),
        ),
        _ => {
            ck.at(v, format!("{what} must be a string or a list of strings"));
            None
        }
    }
}

fn pattern(ck: &mut Checker<'_>, v: &Spanned<Value>, what: &str) -> Option<Pattern> {
    let parts = strings(ck, v, what)?;
    match Pattern::parse(&parts) {
        Ok(p) => Some(p),
        Err((_, e)) => {
            ck.at(v, e);
            None
        }
    }
}

// `reply` keeps to RFC 5321 §4.5.3.1.5 (clients may cut or refuse longer
// lines); `raw` stays free for testing exactly that.
use crate::proto::reply::MAX_REPLY_LINE;

fn reply(ck: &mut Checker<'_>, s: &Spanned<String>) -> Option<Reply> {
    match Reply::parse(s.get_ref()) {
        Ok(r) => {
            let wire = r.to_wire();
            let longest = wire
                .split_inclusive(|&b| b == b'\n')
                .map(<[u8]>::len)
                .max()
                .unwrap_or(0);
            if let Some(c) = control_in(&wire) {
                ck.at(
                    s,
                    format!(
                        "a reply line holds the control character {c:?}; reply text is printable characters, spaces and tabs (RFC 5321 §4.2); use raw to send it anyway"
                    ),
                );
                return None;
            }
            if longest > MAX_REPLY_LINE {
                ck.at(
                    s,
                    format!(
                        "a reply line is {longest} octets on the wire, over the {MAX_REPLY_LINE} RFC 5321 §4.5.3.1.5 allows (code and CRLF included); split it with \\n, or use raw to send it anyway"
                    ),
                );
                return None;
            }
            Some(r)
        }
        Err(e) => {
            ck.at(s, format!("bad reply {:?}: {e}", s.get_ref()));
            None
        }
    }
}

/// The first control character inside a reply's lines (their CRLF aside),
/// other than a tab.
fn control_in(wire: &[u8]) -> Option<char> {
    wire.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .flat_map(|l| l.iter())
        .find(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        .map(|&b| char::from(b))
}

/// The stages a rule answers.
struct RuleStages<'a> {
    stages: &'a [Stage],
    /// `on` includes `any`: every command stage too.
    any: bool,
}

/// Refuses a scripted reply whose success or intermediate code makes no
/// sense at a stage the rule answers (see `stage_codes`); `raw` still sends
/// it, unchecked, for tests of deliberately impossible replies.
fn fits_stage(ck: &mut Checker<'_>, at: &Spanned<String>, step: &Step, on: &RuleStages<'_>) {
    let Step::Reply(r) = step else { return };
    let commands = Stage::ALL.into_iter().filter(|s| s.is_command());
    let stages: Vec<Stage> = match on.any {
        true => on.stages.iter().copied().chain(commands).collect(),
        false => on.stages.to_vec(),
    };
    let Some(row) = stage_codes::first_refusing(&stages, r.code) else {
        return;
    };
    let wire = String::from_utf8_lossy(&r.to_wire()).into_owned();
    let via_any = match on.stages.contains(&row.stage) {
        true => "",
        false => " (on = \"any\" includes it)",
    };
    ck.at(
        at,
        format!(
            "reply code {} is not a reply to {}{via_any}, which takes {} or a 4xx/5xx refusal; to send it anyway, use raw = {}",
            r.code,
            row.stage.name(),
            row.describe(),
            toml_string(&wire)
        ),
    );
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `complete`: false when a key of the rule could not be read (already
/// reported), so a missing outcome may be that key.
fn check_rule(ck: &mut Checker<'_>, index: usize, raw: RawRule, complete: bool) -> Option<Rule> {
    let before = ck.diagnostics.len();
    let (stages, any) = check_on(ck, &raw.on);
    let gate = check_gate(ck, &raw, &stages, any);
    let on = RuleStages {
        stages: &stages,
        any,
    };
    let outcome = check_outcome(ck, &raw, &on, complete);
    let key = check_key(ck, &raw, &on, gate.as_ref());
    let delay = raw
        .delay
        .as_ref()
        .and_then(|d| match DurationRange::parse(d.get_ref()) {
            Ok(r) => Some(r),
            Err(e) => {
                ck.at(d, e);
                None
            }
        });
    let drip = raw
        .drip
        .as_ref()
        .and_then(|d| match units::duration(d.get_ref()) {
            Ok(v) => Some(v),
            Err(e) => {
                ck.at(d, e);
                None
            }
        });
    let probability = raw.probability.as_ref().and_then(|p| {
        let v = *p.get_ref();
        if (0.0..=1.0).contains(&v) {
            Some(v)
        } else {
            ck.at(p, "probability must be between 0 and 1");
            None
        }
    });
    let times = raw
        .times
        .as_ref()
        .and_then(|t| match u64::try_from(*t.get_ref()) {
            Ok(v) if v > 0 => Some(v),
            _ => {
                ck.at(t, "times must be at least 1");
                None
            }
        });
    let when = raw
        .when
        .map(|w| check_when(ck, w, &stages, any))
        .unwrap_or_default();
    if ck.diagnostics.len() > before {
        return None;
    }
    Some(Rule {
        index,
        name: raw.name,
        stages,
        any,
        when,
        outcome: outcome?,
        delay,
        close: raw.close,
        drip,
        probability,
        times,
        key,
        gate,
    })
}

/// `on`: the stages, and whether `any` is among them.
fn check_on(ck: &mut Checker<'_>, on: &Spanned<Value>) -> (Vec<Stage>, bool) {
    let mut stages = vec![];
    let mut any = false;
    let Some(names) = strings(ck, on, "on") else {
        return (stages, any);
    };
    if names.is_empty() {
        ck.at(on, "on needs at least one stage");
    }
    for n in names {
        match (n.as_str(), Stage::from_name(&n)) {
            ("any", _) => any = true,
            (_, Some(st)) => stages.push(st),
            (_, None) => ck.at(
                on,
                format!(
                    "unknown stage {n:?}; stages are {}, any",
                    Stage::ALL.map(Stage::name).join(", ")
                ),
            ),
        }
    }
    (stages, any)
}

/// Exactly one of reply, preset, sequence, action, raw; replies must fit
/// the rule's stages.
fn check_outcome(
    ck: &mut Checker<'_>,
    raw: &RawRule,
    on: &RuleStages<'_>,
    complete: bool,
) -> Option<RuleOutcome> {
    let present: Vec<(&str, usize)> = [
        ("reply", raw.reply.as_ref().map(|s| s.span().start)),
        ("preset", raw.preset.as_ref().map(|s| s.span().start)),
        ("sequence", raw.sequence.as_ref().map(|s| s.span().start)),
        ("action", raw.action.as_ref().map(|s| s.span().start)),
        ("raw", raw.raw.as_ref().map(|s| s.span().start)),
    ]
    .into_iter()
    .filter_map(|(k, o)| o.map(|o| (k, o)))
    .collect();
    match present.as_slice() {
        [] if !complete => {}
        [] => ck.error(
            raw.on.span().start,
            "a rule needs one outcome: reply, preset, sequence, action or raw",
        ),
        [_] => {}
        [(first, _), rest @ ..] => {
            for (k, off) in rest {
                ck.error(*off, format!("a rule has exactly one outcome, and this one already has `{first}`; remove `{k}`"));
            }
        }
    }
    if let Some(r) = &raw.reply {
        let step = Step::Reply(reply(ck, r)?);
        fits_stage(ck, r, &step, on);
        Some(RuleOutcome::Step(step))
    } else if let Some(p) = &raw.preset {
        let step = preset_step(ck, p, p.get_ref())?;
        fits_stage(ck, p, &step, on);
        Some(RuleOutcome::Step(step))
    } else if let Some(seq) = &raw.sequence {
        if seq.get_ref().is_empty() {
            ck.at(seq, "sequence needs at least one item");
        }
        let mut steps = vec![];
        for item in seq.get_ref() {
            if let Some(step) = sequence_item(ck, item) {
                fits_stage(ck, item, &step, on);
                steps.push(step);
            }
        }
        Some(RuleOutcome::Sequence(steps))
    } else if let Some(a) = &raw.action {
        action(ck, a, on).map(RuleOutcome::Step)
    } else {
        let r = raw.raw.as_ref()?;
        if r.get_ref().is_empty() {
            ck.at(r, "raw needs at least one byte");
        }
        Some(RuleOutcome::Step(Step::Raw(
            r.get_ref().as_bytes().to_vec(),
        )))
    }
}

fn action(ck: &mut Checker<'_>, a: &Spanned<String>, on: &RuleStages<'_>) -> Option<Step> {
    match a.get_ref().as_str() {
        "accept" => Some(Step::Accept),
        "disconnect" => Some(Step::Disconnect),
        "hang" => Some(Step::Hang),
        "tls_abort" => {
            if on.any || on.stages != [Stage::Starttls] {
                ck.at(a, "action \"tls_abort\" works at stage starttls only");
            }
            Some(Step::TlsAbort)
        }
        other => {
            ck.at(
                a,
                format!(
                    "unknown action {other:?}; actions are accept, disconnect, hang, tls_abort"
                ),
            );
            None
        }
    }
}

/// `key`: known field names, each known wherever the rule counts
/// (reputation also counts at RCPT, where it records outcomes).
fn check_key(
    ck: &mut Checker<'_>,
    raw: &RawRule,
    on: &RuleStages<'_>,
    gate: Option<&Gate>,
) -> Option<Vec<KeyField>> {
    let fields = raw.key.as_ref()?;
    let mut at: Vec<Stage> = if on.any { vec![] } else { on.stages.to_vec() };
    if matches!(gate, Some(Gate::Reputation { .. })) {
        at.push(Stage::Rcpt);
    }
    let mut key = vec![];
    for f in fields {
        let Some(k) = KeyField::from_name(f.get_ref()) else {
            ck.at(
                f,
                format!(
                    "unknown key field {:?}; use client_ip, helo, mail_from, rcpt",
                    f.get_ref()
                ),
            );
            continue;
        };
        if let Some(st) = at.iter().find(|s| !k.known_at(**s)) {
            ck.at(
                f,
                format!(
                    "key field {:?} is not known at stage {}",
                    f.get_ref(),
                    st.name()
                ),
            );
        }
        key.push(k);
    }
    Some(key)
}

fn dur(ck: &mut Checker<'_>, s: &Spanned<String>) -> Option<std::time::Duration> {
    match units::duration(s.get_ref()) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            ck.at(s, "must be longer than 0s");
            None
        }
        Err(e) => {
            ck.at(s, e);
            None
        }
    }
}

/// `limit`, `greylist` or `reputation`: at most one per rule.
fn check_gate(ck: &mut Checker<'_>, raw: &RawRule, stages: &[Stage], any: bool) -> Option<Gate> {
    let given: Vec<(&str, usize)> = [
        ("limit", raw.limit.as_ref().map(|v| v.span().start)),
        ("greylist", raw.greylist.as_ref().map(|v| v.span().start)),
        (
            "reputation",
            raw.reputation.as_ref().map(|v| v.span().start),
        ),
    ]
    .into_iter()
    .filter_map(|(k, o)| o.map(|o| (k, o)))
    .collect();
    if let [(first, _), rest @ ..] = given.as_slice() {
        for (k, off) in rest {
            ck.error(*off, format!("a rule takes one of limit, greylist, reputation, and this one already has `{first}`; remove `{k}`"));
        }
    }
    // Each is checked, so all their problems are reported at once.
    let limit = raw
        .limit
        .as_ref()
        .and_then(|l| limit_gate(ck, l, stages, any));
    let greylist = raw.greylist.as_ref().and_then(|g| greylist_gate(ck, g));
    let reputation = raw.reputation.as_ref().and_then(|r| reputation_gate(ck, r));
    limit.or(greylist).or(reputation)
}

fn limit_gate(
    ck: &mut Checker<'_>,
    l: &Spanned<RawLimit>,
    stages: &[Stage],
    any: bool,
) -> Option<Gate> {
    let l_ref = l.get_ref();
    match (&l_ref.rate, &l_ref.concurrent) {
        (Some(r), None) => match units::rate(r.get_ref()) {
            Ok((max, window)) => Some(Gate::Rate { max, window }),
            Err(e) => {
                ck.at(r, e);
                None
            }
        },
        (None, Some(c)) => {
            if any || stages != [Stage::Connect] {
                ck.at(
                    l,
                    "limit = { concurrent = N } counts open sessions: use it with on = \"connect\"",
                );
            }
            match u64::try_from(*c.get_ref()) {
                Ok(max) if max > 0 => Some(Gate::Concurrent { max }),
                _ => {
                    ck.at(c, "concurrent must be at least 1");
                    None
                }
            }
        }
        _ => {
            ck.at(
                l,
                "limit takes one of rate = \"N/DURATION\" or concurrent = N",
            );
            None
        }
    }
}

fn greylist_gate(ck: &mut Checker<'_>, g: &Spanned<RawGreylist>) -> Option<Gate> {
    let retry_after = dur(ck, &g.get_ref().retry_after);
    let expire = match &g.get_ref().expire {
        Some(e) => dur(ck, e),
        None => Some(DEFAULT_GREYLIST_EXPIRE),
    };
    let (retry_after, expire) = (retry_after?, expire?);
    if expire <= retry_after {
        ck.at(g, "greylist expire must be longer than retry_after");
    }
    Some(Gate::Greylist {
        retry_after,
        expire,
    })
}

fn reputation_gate(ck: &mut Checker<'_>, r: &Spanned<RawReputation>) -> Option<Gate> {
    let r = r.get_ref();
    let window = dur(ck, &r.window);
    let min_attempts = match &r.min_attempts {
        Some(m) => match u64::try_from(*m.get_ref()) {
            Ok(v) if v > 0 => Some(v),
            _ => {
                ck.at(m, "min_attempts must be at least 1");
                None
            }
        },
        None => Some(DEFAULT_MIN_ATTEMPTS),
    };
    let max_failure_rate = *r.max_failure_rate.get_ref();
    if !(0.0..1.0).contains(&max_failure_rate) {
        ck.at(
            &r.max_failure_rate,
            "max_failure_rate is a share from 0 up to (not including) 1",
        );
        return None;
    }
    Some(Gate::Reputation {
        window: window?,
        min_attempts: min_attempts?,
        max_failure_rate,
    })
}

fn preset_step(ck: &mut Checker<'_>, at: &Spanned<String>, id: &str) -> Option<Step> {
    match presets::find(id) {
        Some(p) => Some(Step::Reply(p.reply())),
        None => {
            let hint = closest_preset(id)
                .map(|c| format!(" (did you mean {c:?}?)"))
                .unwrap_or_default();
            ck.at(
                at,
                format!("unknown preset {id:?}{hint}; `mailfault presets` lists them"),
            );
            None
        }
    }
}

fn closest_preset(id: &str) -> Option<&'static str> {
    let (prefix, rest) = id.split_once('.')?;
    presets::all().iter().map(|p| p.id.as_str()).find(|p| {
        p.starts_with(prefix)
            && p.split_once('.')
                .is_some_and(|(_, r)| r.contains(rest) || rest.contains(r))
    })
}

fn sequence_item(ck: &mut Checker<'_>, item: &Spanned<String>) -> Option<Step> {
    let s = item.get_ref().as_str();
    match s {
        "accept" => Some(Step::Accept),
        "disconnect" => Some(Step::Disconnect),
        "hang" => Some(Step::Hang),
        _ if s.starts_with('@') => preset_step(ck, item, &s[1..]),
        _ => reply(ck, item).map(Step::Reply),
    }
}

/// `when.client_ip`: CIDRs or single addresses.
fn client_ip(ck: &mut Checker<'_>, v: &Spanned<Value>) -> Option<Vec<IpNet>> {
    let list = strings(ck, v, "client_ip")?;
    let mut nets = vec![];
    for s in list {
        match s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        {
            Ok(n) => nets.push(n),
            Err(_) => ck.at(
                v,
                format!("bad client_ip {s:?}: write a CIDR such as \"10.0.0.0/8\" or an address"),
            ),
        }
    }
    Some(nets)
}

fn check_when(ck: &mut Checker<'_>, w: RawWhen, stages: &[Stage], any: bool) -> When {
    let mut out = When::default();
    let only = |allowed: &[Stage]| {
        !any && !stages.is_empty() && stages.iter().all(|s| allowed.contains(s))
    };
    out.client_ip = w.client_ip.as_ref().and_then(|v| client_ip(ck, v));
    out.helo = w.helo.as_ref().and_then(|v| pattern(ck, v, "helo"));
    out.mail_from = w
        .mail_from
        .as_ref()
        .and_then(|v| pattern(ck, v, "mail_from"));
    if let Some(v) = &w.rcpt {
        out.rcpt = pattern(ck, v, "rcpt");
        // Before RCPT no recipient is known: such a rule could never match.
        let before_rcpt = [
            Stage::Connect,
            Stage::Ehlo,
            Stage::Helo,
            Stage::Starttls,
            Stage::Auth,
            Stage::Mail,
        ];
        if !stages.is_empty() && !any && stages.iter().all(|s| before_rcpt.contains(s)) {
            ck.at(
                v,
                "rcpt is only known from stage rcpt on (rcpt, data, message)",
            );
        }
    }
    out.tls = w.tls;
    out.auth_user = w
        .auth_user
        .as_ref()
        .and_then(|v| pattern(ck, v, "auth_user"));
    out.authenticated = w.authenticated;
    if let Some(s) = &w.size {
        match SizeCmp::parse(s.get_ref()) {
            Ok(c) => out.size = Some(c),
            Err(e) => ck.at(s, e),
        }
        if !only(&[Stage::Mail, Stage::Message]) {
            ck.at(
                s,
                "size is known only at stages mail (declared SIZE=) and message",
            );
        }
    }
    if let Some(h) = w.header {
        let mut first = None;
        for (name, v) in h {
            first.get_or_insert(v.span().start);
            if let Some(p) = pattern(ck, &v, "a header pattern") {
                out.header.push((name, p));
            }
        }
        if let Some(off) = first {
            if !only(&[Stage::Message]) {
                ck.error(off, "header conditions apply only at stage message");
            }
        }
    }
    if let Some(d) = &w.during {
        if let Some(list) = strings(ck, d, "during") {
            let mut windows = vec![];
            for item in list {
                match Window::parse(&item) {
                    Ok(win) => windows.push(win),
                    Err(e) => ck.at(d, e),
                }
            }
            out.during = Some(windows);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, "t.toml", "t").unwrap_err().to_string()
    }

    #[test]
    fn contract_examples_load() {
        for text in [
            "[[rule]]\nname = \"unknown user\"\non = \"rcpt\"\nwhen = { rcpt = \"nobody@*\" }\nreply = \"550 5.1.1 The email account that you tried to reach does not exist.\"\n",
            "[[rule]]\non = \"message\"\nwhen = { rcpt = \"*@flaky.test\" }\ntimes = 2\nreply = \"451 4.3.0 Mail server temporarily rejected message.\"\n",
            "[[rule]]\non = \"connect\"\nprobability = 0.3\ndelay = \"2s\"\nreply = \"421 4.4.5 Server busy, try again later.\"\n",
            "[server]\nhostname = \"mx.example.test\"\ngreeting = \"ESMTP ready\"\nmax_message_size = \"35MB\"\nmax_recipients = 100\nrequire_tls = false\nidle_timeout = \"5m\"\nseed = 42\nextensions = [\"PIPELINING\", \"SIZE\", \"8BITMIME\", \"SMTPUTF8\", \"ENHANCEDSTATUSCODES\", \"CHUNKING\", \"DSN\"]\n",
            "[[rule]]\non = [\"mail\", \"rcpt\"]\nsequence = [\"451 4.3.0 x\", \"@gmail.receiving_too_quickly\", \"accept\"]\n",
        ] {
            parse(text, "t.toml", "t").unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
    }

    #[test]
    fn control_characters_in_a_reply_are_refused_but_raw_is_free() {
        let bad = "[[rule]]\non = \"rcpt\"\nreply = \"550 5.1.1 a\\u0000b\"\n";
        assert_eq!(err(bad), "t.toml:3:9: a reply line holds the control character '\\0'; reply text is printable characters, spaces and tabs (RFC 5321 §4.2); use raw to send it anyway");
        let tab = "[[rule]]\non = \"rcpt\"\nreply = \"550 5.1.1 a\\tb\\nsecond line\"\n";
        assert!(parse(tab, "t.toml", "t").is_ok());
        let raw = "[[rule]]\non = \"rcpt\"\nraw = \"550 a\\u0000b\\r\\n\"\n";
        assert!(parse(raw, "t.toml", "t").is_ok());
    }

    #[test]
    fn reply_lines_over_512_octets_are_refused_but_raw_is_free() {
        // "550 5.1.1 " (10) + text + CRLF (2): 500 octets of text is 512.
        let ok = format!(
            "[[rule]]\non = \"rcpt\"\nreply = \"550 5.1.1 {}\"\n",
            "x".repeat(500)
        );
        parse(&ok, "t.toml", "t").unwrap();
        let long = format!(
            "[[rule]]\non = \"rcpt\"\nreply = \"550 5.1.1 {}\"\n",
            "x".repeat(501)
        );
        assert_eq!(err(&long), "t.toml:3:9: a reply line is 513 octets on the wire, over the 512 RFC 5321 §4.5.3.1.5 allows (code and CRLF included); split it with \\n, or use raw to send it anyway");
        let split = format!(
            "[[rule]]\non = \"rcpt\"\nreply = \"550 5.1.1 {0}\\n{0}\"\n",
            "x".repeat(400)
        );
        parse(&split, "t.toml", "t").unwrap();
        let raw = format!(
            "[[rule]]\non = \"rcpt\"\nraw = \"550 {}\\r\\n\"\n",
            "x".repeat(2000)
        );
        parse(&raw, "t.toml", "t").unwrap();
        let seq = format!(
            "[[rule]]\non = \"rcpt\"\nsequence = [\"451 4.3.0 {}\"]\n",
            "y".repeat(600)
        );
        assert!(
            err(&seq).starts_with("t.toml:3:13: a reply line is 612 octets"),
            "{}",
            err(&seq)
        );
    }

    #[test]
    fn max_line_length_bounds() {
        let s = parse("[server]\nmax_line_length = 1000\n", "t.toml", "t").unwrap();
        assert_eq!(s.server.max_line_length, 1000);
        assert_eq!(
            err("[server]\nmax_line_length = 100\n"),
            "t.toml:2:19: max_line_length is from 512 (RFC 5321 §4.5.3.1.4) to 65536 octets, CRLF included"
        );
        assert!(err("[server]\nmax_line_length = 100000\n").contains("to 65536 octets"));
    }

    #[test]
    fn bare_lf_setting() {
        let s = parse("[server]\nbare_lf = \"reject\"\n", "t.toml", "t").unwrap();
        assert_eq!(s.server.bare_lf, BareLf::Reject);
        let s = parse("", "t.toml", "t").unwrap();
        assert_eq!(s.server.bare_lf, BareLf::Accept);
        assert_eq!(
            err("[server]\nbare_lf = \"normalize\"\n"),
            "t.toml:2:11: bare_lf is \"accept\" or \"reject\", not \"normalize\""
        );
    }

    #[test]
    fn errors_have_positions() {
        assert_eq!(err("[[rule]]\non = \"rcpt\"\nreplyy = \"550 x\"\n"), "t.toml:3:1: unknown field `replyy`, expected one of `name`, `on`, `when`, `reply`, `preset`, `sequence`, `action`, `raw`, `delay`, `close`, `drip`, `probability`, `times`, `key`, `limit`, `greylist`, `reputation`");
        assert_eq!(
            err("[[rule]]\non = \"rcpt2\"\nreply = \"550 x\"\n")
                .split(';')
                .next()
                .unwrap(),
            "t.toml:2:6: unknown stage \"rcpt2\""
        );
        assert_eq!(
            err("[[rule]]\non = \"rcpt\"\nreply = \"650 x\"\n"),
            "t.toml:3:9: bad reply \"650 x\": reply code 650 is outside 200-599"
        );
        assert_eq!(err("[[rule]]\non = \"rcpt\"\nreply = \"450 5.1.1 x\"\n"), "t.toml:3:9: bad reply \"450 5.1.1 x\": enhanced status code 5.1.1 does not match reply code 450: the class must be 4");
        assert_eq!(err("[[rule]]\non = \"rcpt\"\nreply = \"550 x\"\naction = \"accept\"\n"), "t.toml:4:10: a rule has exactly one outcome, and this one already has `reply`; remove `action`");
        assert!(err("[[rule]]\non = \"rcpt\"\npreset = \"gmail.nope\"\n")
            .starts_with("t.toml:3:10: unknown preset \"gmail.nope\""));
        assert!(
            err("[[rule]]\non = \"rcpt\"\naction = \"accept\"\ndelay = \"3 parsecs\"\n")
                .starts_with("t.toml:4:9: bad duration")
        );
        assert!(err("[server]\nmax_message_size = \"35XB\"\n").starts_with("t.toml:2:20: bad size"));
        assert!(err("[[rule]]\non = \"connect\"\nwhen = { client_ip = \"10.0.0.0/33\" }\naction = \"disconnect\"\n").starts_with("t.toml:3:22: bad client_ip"));
        assert!(
            err("[[rule]]\non = \"rcpt\"\nwhen = { rcpt = \"/(/\" }\naction = \"accept\"\n")
                .starts_with("t.toml:3:17: bad regular expression")
        );
        for (text, want) in [
            ("[[rule]]\non = \"mail\"\nlimit = { rate = \"5 per minute\" }\naction = \"accept\"\n", "t.toml:3:18: bad rate"),
            ("[[rule]]\non = \"mail\"\nlimit = { concurrent = 2 }\naction = \"accept\"\n", "t.toml:3:9: limit = { concurrent = N } counts open sessions"),
            ("[[rule]]\non = \"rcpt\"\ngreylist = { retry_after = \"5m\", expire = \"1m\" }\naction = \"accept\"\n", "t.toml:3:12: greylist expire must be longer"),
            ("[[rule]]\non = \"rcpt\"\ngreylist = { retry_after = \"5m\", wait = \"1m\" }\naction = \"accept\"\n", "t.toml:3:"),
            ("[[rule]]\non = \"rcpt\"\nreputation = { window = \"1h\", max_failure_rate = 1.5 }\naction = \"accept\"\n", "t.toml:3:50: max_failure_rate"),
            ("[[rule]]\non = \"rcpt\"\nlimit = { rate = \"5/1m\" }\ngreylist = { retry_after = \"5m\" }\naction = \"accept\"\n", "t.toml:4:12: a rule takes one of limit, greylist, reputation"),
            ("[[rule]]\non = \"mail\"\nkey = [\"rcpt\"]\nreputation = { window = \"1h\", max_failure_rate = 0.1 }\naction = \"accept\"\n", "t.toml:3:8: key field \"rcpt\" is not known at stage mail"),
        ] {
            let got = err(text);
            assert!(got.starts_with(want), "{text}: expected {want:?}, got {got:?}");
        }
        assert!(
            err("[[rule]]\non = \"rcpt\"\n").starts_with("t.toml:2:6: a rule needs one outcome")
        );
        assert!(err("[[rule]\n").starts_with("t.toml:1:"));
    }

    #[test]
    fn all_errors_are_reported() {
        let e = parse(
            "[[rule]]\non = \"x\"\nreply = \"1\"\n[[rule]]\non = \"rcpt\"\nreply = \"700\"\n",
            "t.toml",
            "t",
        )
        .unwrap_err();
        assert_eq!(e.diagnostics.len(), 3);
    }

    #[test]
    fn every_bad_key_of_every_section_is_reported_in_file_order() {
        let text = "[server]\nhostnme = \"x\"\nmax_recipients = 0\n\n[[rule]]\non = \"rcpt\"\nreplyy = \"550 x\"\ntimes = \"three\"\n\n[[rule]]\non = \"mail\"\nreply = \"650 nope\"\n\n[[rule]]\non = \"data\"\nwhen = { rcpt = \"x\", bogus = 1 }\nreply = \"550 5.1.1 x\"\n\n[extra]\na = 1\n";
        let e = parse(text, "t.toml", "t").unwrap_err();
        let want = [
            "t.toml:2:1: unknown field `hostnme`",
            "t.toml:3:18: max_recipients must be at least 1",
            "t.toml:7:1: unknown field `replyy`",
            "t.toml:8:9: invalid type: string \"three\"",
            "t.toml:12:9: bad reply \"650 nope\"",
            "t.toml:16:22: unknown field `bogus`",
            "t.toml:19:2: unknown field `extra`",
        ];
        assert_eq!(e.diagnostics.len(), want.len(), "{e}");
        for (d, w) in e.diagnostics.iter().zip(want) {
            assert!(d.to_string().starts_with(w), "{d} does not start with {w}");
        }
        // A rule whose outcome key was misspelt is not also "without outcome".
        assert!(!e.to_string().contains("needs one outcome"), "{e}");
    }

    #[test]
    fn syntax_errors_stop_before_the_sections() {
        let e = parse("[[rule]\non = \"x\"\n", "t.toml", "t").unwrap_err();
        assert_eq!(e.diagnostics[0].position, Some((1, 8)));
        assert!(
            err("rule = 3\n").starts_with("t.toml:1:8: rule is a list of tables: write [[rule]]")
        );
    }

    #[test]
    fn a_section_of_the_wrong_shape_says_what_to_write() {
        assert_eq!(
            err("server = 5\n[[tls]]\nstarttls = true\n[[rule]]\non = \"rcpt\"\nreply = \"550 x\"\ngreylist = 3\n"),
            "t.toml:1:1: server is a table: write [server]\n\
             t.toml:2:3: tls is a table: write [tls]\n\
             t.toml:7:12: invalid type: integer `3`, expected a table"
        );
    }

    #[test]
    fn a_success_code_out_of_its_stage_points_to_raw() {
        assert_eq!(
            err("[[rule]]\non = \"connect\"\nreply = \"354 go \\\"on\\\"\"\n"),
            "t.toml:3:9: reply code 354 is not a reply to connect, which takes 220 (RFC 5321 §4.3.2) or a 4xx/5xx refusal; to send it anyway, use raw = \"354 go \\\"on\\\"\\r\\n\""
        );
        assert!(
            err("[[rule]]\non = \"rcpt\"\nsequence = [\"250 ok\", \"221 bye\"]\n").starts_with(
                "t.toml:3:23: reply code 221 is not a reply to rcpt, which takes 250 or 251"
            )
        );
        assert!(err("[[rule]]\non = \"mail\"\nreply = \"334 x\"\n")
            .starts_with("t.toml:3:9: reply code 334 is not a reply to mail"));
        assert!(
            err("[[rule]]\non = \"any\"\nreply = \"250 fine\"\n").starts_with(
                "t.toml:3:9: reply code 250 is not a reply to starttls (on = \"any\" includes it)"
            )
        );
        assert!(err("[[rule]]\non = [\"mail\", \"quit\"]\npreset = \"gmail.server_busy\"\n[[rule]]\non = \"rcpt\"\nreply = \"250 ok\"\n[[rule]]\non = \"quit\"\nreply = \"250 ok\"\n")
            .starts_with("t.toml:9:9: reply code 250 is not a reply to quit"));
        for ok in [
            "[[rule]]\non = \"connect\"\nraw = \"354 go on\\r\\n\"\n",
            "[[rule]]\non = \"auth\"\nreply = \"334 VXNlcm5hbWU6\"\n",
            "[[rule]]\non = \"data\"\nsequence = [\"354 go\", \"250 chunk\"]\n",
            "[[rule]]\non = \"rcpt\"\nreply = \"554 5.7.1 Relay access denied\"\n",
            "[[rule]]\non = \"unknown\"\nreply = \"220 XCLIENT ok\"\n",
            "[[rule]]\non = \"any\"\nreply = \"421 4.3.2 bye\"\n",
        ] {
            parse(ok, "t.toml", "t").unwrap_or_else(|e| panic!("{e}\n{ok}"));
        }
    }

    #[test]
    fn every_preset_fits_its_own_stage() {
        for p in presets::all() {
            let text = format!("[[rule]]\non = {:?}\npreset = {:?}\n", p.stage, p.id);
            parse(&text, "t.toml", "t").unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé\nx", 0), (1, 1));
        assert_eq!(line_col("ab\ncé\nx", 3), (2, 1));
        assert_eq!(line_col("ab\ncé\nx", 7), (3, 1));
    }

    #[test]
    fn default_scenario_loads() {
        let s = default_scenario();
        assert!(s.server.magic_recipients);
    }
}
