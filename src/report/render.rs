//! The report as text for people.

use std::fmt::Write;

use super::build::human_ms;
use super::*;

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Delivered => "delivered",
        Outcome::Deferred => "deferred",
        Outcome::Failed => "failed",
        Outcome::Dropped => "dropped",
        Outcome::Abandoned => "abandoned",
    }
}

/// Renders the report for a terminal.
pub fn text(r: &Report) -> String {
    let mut o = String::new();
    let errors = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let failed = r.expectations.iter().filter(|v| !v.passed).count();
    let _ = writeln!(
        o,
        "mailfault report: {} session{} from {} sender{}, {} deliver{}, {} finding{} ({} error{}), {} of {} expectation{} met",
        r.sessions,
        plural(r.sessions),
        r.senders,
        plural(r.senders),
        r.deliveries.len(),
        if r.deliveries.len() == 1 { "y" } else { "ies" },
        r.findings.len(),
        plural(r.findings.len()),
        errors,
        plural(errors),
        r.expectations.len() - failed,
        r.expectations.len(),
        plural(r.expectations.len()),
    );
    if r.in_progress > 0 {
        let _ = writeln!(
            o,
            "({} session{} still open: {} open transaction{} not judged yet)",
            r.in_progress,
            plural(r.in_progress),
            if r.in_progress == 1 { "its" } else { "their" },
            plural(r.in_progress)
        );
    }
    if r.skipped_lines > 0 {
        let _ = writeln!(
            o,
            "({} input line{} were not events and were skipped)",
            r.skipped_lines,
            plural(r.skipped_lines)
        );
    }

    expectations(&mut o, r);
    findings(&mut o, r);
    deliveries(&mut o, r);
    refusals(&mut o, r);
    reputation(&mut o, r);
    o
}

fn expectations(o: &mut String, r: &Report) {
    if !r.expectations.is_empty() {
        let _ = writeln!(o, "\nExpectations");
        for v in &r.expectations {
            let _ = writeln!(
                o,
                "  {} {}: {}",
                if v.passed { "ok  " } else { "FAIL" },
                v.name,
                v.detail
            );
        }
    }
}

fn findings(o: &mut String, r: &Report) {
    if !r.findings.is_empty() {
        let _ = writeln!(o, "\nFindings");
        for f in &r.findings {
            let sev = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warn ",
            };
            let _ = writeln!(
                o,
                "  {sev} {} [{}] {} session {}: {}",
                f.time, f.kind, f.client, f.session, f.message
            );
        }
    }
}

fn deliveries(o: &mut String, r: &Report) {
    if !r.deliveries.is_empty() {
        let _ = writeln!(o, "\nDeliveries");
        for d in &r.deliveries {
            let intervals = if d.intervals_ms.is_empty() {
                String::new()
            } else {
                let v: Vec<String> = d.intervals_ms.iter().map(|&i| human_ms(i)).collect();
                format!(", intervals {}", v.join(", "))
            };
            let _ = writeln!(
                o,
                "  {} -> {}: {} after {} attempt{}{intervals}",
                if d.mail_from.is_empty() {
                    "<>"
                } else {
                    &d.mail_from
                },
                d.rcpt,
                outcome(d.outcome),
                d.attempts.len(),
                plural(d.attempts.len()),
            );
            for a in &d.attempts {
                let rule = a
                    .rule
                    .as_ref()
                    .map(|r| format!(" [rule {r:?}]"))
                    .unwrap_or_default();
                let reply = a.reply.as_deref().unwrap_or("(no reply)");
                let _ = writeln!(
                    o,
                    "    {}  {}  session {}  {:<9} at {:<7} {reply}{rule}",
                    a.time,
                    a.client,
                    a.session,
                    outcome(a.outcome),
                    a.stage
                );
            }
        }
    }
}

fn refusals(o: &mut String, r: &Report) {
    if !r.refusals.is_empty() {
        let _ = writeln!(o, "\nRefused before any recipient");
        for x in &r.refusals {
            let from = x
                .mail_from
                .as_ref()
                .map(|m| format!(" from <{m}>"))
                .unwrap_or_default();
            let rule = x
                .rule
                .as_ref()
                .map(|r| format!(" [rule {r:?}]"))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  {}  {}  session {}  at {}{from}: {}{rule}",
                x.time, x.client, x.session, x.stage, x.reply
            );
        }
    }
}

fn reputation(o: &mut String, r: &Report) {
    if !r.reputation.is_empty() {
        let _ = writeln!(
            o,
            "\nReputation per sender (recipients accepted or refused with 5xx at RCPT)"
        );
        for rep in &r.reputation {
            // A sender told apart by its HELO name carries it in its label.
            let helo = if rep.helos.is_empty() || rep.client.ends_with(')') {
                String::new()
            } else {
                format!(" ({})", rep.helos.join(", "))
            };
            let _ = writeln!(
                o,
                "  {}{helo}: {} connection{}, {} judged, {} refused ({:.0}%)",
                rep.client,
                rep.connections,
                plural(rep.connections as usize),
                rep.attempts,
                rep.failures,
                100.0 * rep.failures as f64 / rep.attempts.max(1) as f64
            );
            for p in &rep.series {
                let _ = writeln!(
                    o,
                    "    {}  {:>4} judged  {:>4} refused  {:>3.0}%",
                    p.minute,
                    p.attempts,
                    p.failures,
                    100.0 * p.failures as f64 / p.attempts.max(1) as f64
                );
            }
            if let (Some(at), Some((a, f))) = (&rep.turned_at, rep.turned_after) {
                let by = rep
                    .turned_by
                    .as_ref()
                    .map(|r| format!(" (rule {r:?})"))
                    .unwrap_or_default();
                let _ = writeln!(
                    o,
                    "    turned at {at}{by}: {f} of {a} recipients refused ({:.0}%) in its window",
                    100.0 * f as f64 / a.max(1) as f64
                );
            } else {
                let _ = writeln!(o, "    not turned: no reputation rule refused it");
            }
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
