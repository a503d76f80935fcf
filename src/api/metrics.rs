//! `/metrics` in the Prometheus text format (version 0.0.4), every name
//! prefixed `mailfault_`. The counters live in `capture::metrics`; this
//! only writes them out.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::ApiState;
use crate::capture::metrics::Snapshot;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(axum::extract::State(s): State<ApiState>) -> impl IntoResponse {
    let (messages, bytes) = s.capture.store().size();
    let store = Store {
        messages: messages as u64,
        bytes,
        max_bytes: s.capture.store().max_bytes(),
        evicted: s.capture.store().evicted(),
    };
    let mut text = render(&s.capture.metrics().snapshot(), &store);
    if let Some(rt) = &s.runtime {
        render_state(&mut text, &rt.store_health());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Whether each scenario's counters can be reached (`--state`): 0 while
/// Redis is gone, and how many outages there were.
pub fn render_state(o: &mut String, health: &[(String, bool, u64)]) {
    head(
        o,
        "state_store_up",
        "gauge",
        "1 when the scenario's state store answers, 0 during an outage.",
    );
    for (name, up, _) in health {
        let _ = writeln!(
            o,
            "mailfault_state_store_up{{scenario=\"{}\"}} {}",
            label(name),
            u8::from(*up)
        );
    }
    head(
        o,
        "state_store_outages_total",
        "counter",
        "Outages of the scenario's state store since start.",
    );
    for (name, _, n) in health {
        let _ = writeln!(
            o,
            "mailfault_state_store_outages_total{{scenario=\"{}\"}} {n}",
            label(name)
        );
    }
}

/// The store's gauges at one moment.
pub struct Store {
    pub messages: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub evicted: u64,
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP mailfault_{name} {help}");
    let _ = writeln!(out, "# TYPE mailfault_{name} {kind}");
}

/// A label value escaped as the text format wants (`\`, `"`, newline).
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(m: &Snapshot, store: &Store) -> String {
    let mut o = String::new();
    head(
        &mut o,
        "sessions_total",
        "counter",
        "SMTP sessions accepted.",
    );
    let _ = writeln!(o, "mailfault_sessions_total {}", m.sessions);
    head(&mut o, "sessions_open", "gauge", "SMTP sessions open now.");
    let _ = writeln!(o, "mailfault_sessions_open {}", m.open);
    head(
        &mut o,
        "commands_total",
        "counter",
        "Commands received, by the stage they opened.",
    );
    for (stage, n) in &m.commands {
        let _ = writeln!(o, "mailfault_commands_total{{stage=\"{stage}\"}} {n}");
    }
    head(
        &mut o,
        "replies_total",
        "counter",
        "Replies sent, by stage and code.",
    );
    for (stage, code, n) in &m.replies {
        let code = code.map_or("other".to_string(), |c| c.to_string());
        let _ = writeln!(
            o,
            "mailfault_replies_total{{stage=\"{stage}\",code=\"{code}\"}} {n}"
        );
    }
    head(
        &mut o,
        "rule_hits_total",
        "counter",
        "Replies decided by each scenario rule.",
    );
    for (scenario, rule, n) in &m.rule_hits {
        let _ = writeln!(
            o,
            "mailfault_rule_hits_total{{scenario=\"{}\",rule=\"{}\"}} {n}",
            label(scenario),
            label(rule)
        );
    }
    head(
        &mut o,
        "messages_total",
        "counter",
        "Messages received to their end, by verdict.",
    );
    let _ = writeln!(
        o,
        "mailfault_messages_total{{accepted=\"true\"}} {}",
        m.messages_accepted
    );
    let _ = writeln!(
        o,
        "mailfault_messages_total{{accepted=\"false\"}} {}",
        m.messages_refused
    );
    head(
        &mut o,
        "message_bytes_total",
        "counter",
        "Bytes of the messages received.",
    );
    let _ = writeln!(o, "mailfault_message_bytes_total {}", m.message_bytes);
    head(
        &mut o,
        "delivery_attempts_total",
        "counter",
        "Delivery attempts (one recipient in one transaction), by outcome.",
    );
    for (outcome, n) in &m.attempts {
        let _ = writeln!(
            o,
            "mailfault_delivery_attempts_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    head(
        &mut o,
        "store_messages",
        "gauge",
        "Messages kept in memory.",
    );
    let _ = writeln!(o, "mailfault_store_messages {}", store.messages);
    head(
        &mut o,
        "store_bytes",
        "gauge",
        "Bytes the kept messages count against the bound.",
    );
    let _ = writeln!(o, "mailfault_store_bytes {}", store.bytes);
    head(
        &mut o,
        "store_max_bytes",
        "gauge",
        "The store's bound (--store-max-bytes).",
    );
    let _ = writeln!(o, "mailfault_store_max_bytes {}", store.max_bytes);
    head(
        &mut o,
        "store_evicted_total",
        "counter",
        "Messages dropped from memory to stay under the bound.",
    );
    let _ = writeln!(o, "mailfault_store_evicted_total {}", store.evicted);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let m = Snapshot {
            rule_hits: vec![("s".into(), "a \"b\"\\\n".into(), 2)],
            ..Snapshot::default()
        };
        let store = Store {
            messages: 0,
            bytes: 0,
            max_bytes: 1,
            evicted: 0,
        };
        let text = render(&m, &store);
        assert!(text.contains(r#"mailfault_rule_hits_total{scenario="s",rule="a \"b\"\\\n"} 2"#));
    }
}
