//! Bounce notifications from sending services, as JSON: Amazon SES (raw or
//! inside an SNS envelope whose `Message` is a JSON string), the SendGrid
//! event webhook (an array of events), Mailgun events (one event, a webhook
//! with `event-data`, or an events page with `items`) and the Postmark bounce
//! webhook. Each failed recipient becomes a [`Failure`] with its status,
//! the remote reply and the reporting MTA; the field names are the
//! providers' documented ones.

use serde_json::Value;

use crate::proto::reply::ReadReply;

use super::dsn::{complete, diagnose, Bounce, Failure, NotBounce};

/// How deep an SNS envelope may nest notifications (one level in practice).
const MAX_ENVELOPES: usize = 3;

/// Notifications that are no failure but are named when nothing else is
/// found: complaints and delivery notices.
#[derive(Default)]
struct Named {
    complaints: usize,
    deliveries: usize,
    /// The first delivery's reply, when the notice quotes it.
    delivered_reply: Option<String>,
}

/// Reads a JSON notification (or an array of them).
pub fn parse(bytes: &[u8]) -> Result<Bounce, NotBounce> {
    let v: Value = serde_json::from_slice(bytes).map_err(|_| NotBounce::NotNotification)?;
    let mut bounce = Bounce {
        format: "json".into(),
        ..Bounce::default()
    };
    let mut named = Named::default();
    read_value(&v, &mut bounce, &mut named, 0);
    if bounce.failures.is_empty() {
        return Err(if named.complaints > 0 {
            NotBounce::Complaint
        } else if named.deliveries > 0 {
            let r = named.delivered_reply.as_deref().and_then(ReadReply::parse);
            NotBounce::Delivered {
                status: r.as_ref().and_then(|r| r.status.clone()),
                code: r.map(|r| r.code),
            }
        } else {
            NotBounce::NotNotification
        });
    }
    complete(&mut bounce.failures);
    if bounce.failures.is_empty() {
        return Err(NotBounce::NotNotification);
    }
    Ok(bounce)
}

/// Reads the first JSON document of a text (a notification followed by a
/// signature, as in a notification delivered by mail).
pub fn parse_first(text: &str) -> Result<Bounce, NotBounce> {
    let mut docs = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    match docs.next() {
        Some(Ok(v)) => parse(v.to_string().as_bytes()),
        _ => Err(NotBounce::NotNotification),
    }
}

fn read_value(v: &Value, b: &mut Bounce, named: &mut Named, depth: usize) {
    if depth > MAX_ENVELOPES {
        return;
    }
    match v {
        Value::Array(items) => {
            for i in items {
                read_value(i, b, named, depth + 1);
            }
        }
        Value::Object(o) => {
            // SNS: {"Type": "Notification", "Message": "<JSON as a string>"}
            if let Some(Value::String(m)) = o.get("Message") {
                if let Ok(inner) = serde_json::from_str::<Value>(m) {
                    read_value(&inner, b, named, depth + 1);
                }
                return;
            }
            if let Some(items @ Value::Array(_)) = o.get("items") {
                return read_value(items, b, named, depth + 1);
            }
            if let Some(ev) = o.get("event-data") {
                return read_value(ev, b, named, depth + 1);
            }
            read_one(v, b, named);
        }
        _ => {}
    }
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn read_one(v: &Value, b: &mut Bounce, named: &mut Named) {
    let ses_type = s(v, "notificationType").or_else(|| s(v, "eventType"));
    if let Some(t) = ses_type {
        match t {
            "Bounce" => ses_bounce(v, b),
            "Complaint" => named.complaints += 1,
            "Delivery" => {
                named.deliveries += 1;
                let reply = v.get("delivery").and_then(|d| s(d, "smtpResponse"));
                if named.delivered_reply.is_none() {
                    named.delivered_reply = reply.map(str::to_string);
                }
            }
            _ => {}
        }
    } else if v.get("sg_event_id").is_some() || v.get("sg_message_id").is_some() {
        sendgrid(v, b, named);
    } else if s(v, "event").is_some() && v.get("delivery-status").is_some() {
        mailgun(v, b, named);
    } else if s(v, "RecordType").is_some()
        || (v.get("TypeCode").is_some() && s(v, "Email").is_some())
    {
        postmark(v, b, named);
    }
}

/// Amazon SES: `bounce.bouncedRecipients[]` with `emailAddress`, `status`,
/// `diagnosticCode`; `bounce.reportingMTA`.
fn ses_bounce(v: &Value, b: &mut Bounce) {
    let Some(bounce) = v.get("bounce") else {
        return;
    };
    if let Some(m) = s(bounce, "reportingMTA") {
        b.reporting_mta
            .get_or_insert_with(|| m.split_once(';').map_or(m, |x| x.1).trim().to_string());
    }
    let Some(Value::Array(rcpts)) = bounce.get("bouncedRecipients") else {
        return;
    };
    for r in rcpts {
        let Some(addr) = s(r, "emailAddress") else {
            continue;
        };
        let mut f = failure(addr, "Amazon SES bouncedRecipients");
        f.action = s(r, "action").map(str::to_string);
        set_status(&mut f, s(r, "status"), "Amazon SES status");
        if let Some(d) = s(r, "diagnosticCode") {
            diagnose(&mut f, d, "Amazon SES diagnosticCode");
        }
        if f.reply.is_empty() && f.diagnostic.is_none() {
            f.diagnostic = s(bounce, "bounceSubType").map(str::to_string);
        }
        b.failures.push(f);
    }
}

/// SendGrid event webhook: `event` bounce, dropped or deferred; the reply
/// in `reason` (bounce, dropped) or `response` (deferred).
fn sendgrid(v: &Value, b: &mut Bounce, named: &mut Named) {
    let event = s(v, "event").unwrap_or("");
    match event {
        "spamreport" => named.complaints += 1,
        "delivered" => named.deliveries += 1,
        _ => {}
    }
    if !matches!(event, "bounce" | "dropped" | "deferred") {
        return;
    }
    let Some(addr) = s(v, "email") else { return };
    let mut f = failure(addr, "SendGrid event email");
    f.action = Some(
        if event == "deferred" {
            "delayed"
        } else {
            "failed"
        }
        .into(),
    );
    set_status(&mut f, s(v, "status"), "SendGrid status");
    if let Some(d) = s(v, "reason").or_else(|| s(v, "response")) {
        diagnose(&mut f, d, "SendGrid reason");
    }
    b.failures.push(f);
}

/// Mailgun: `event` failed, `severity` permanent or temporary,
/// `delivery-status` with `code`, `enhanced-code`, `message`, `mx-host`.
fn mailgun(v: &Value, b: &mut Bounce, named: &mut Named) {
    let event = s(v, "event").unwrap_or("");
    match event {
        "complained" => named.complaints += 1,
        "delivered" => named.deliveries += 1,
        _ => {}
    }
    if event != "failed" {
        return;
    }
    let Some(addr) = s(v, "recipient") else {
        return;
    };
    let ds = &v["delivery-status"];
    let mut f = failure(addr, "Mailgun recipient");
    f.action = Some(match s(v, "severity") {
        Some("temporary") => "delayed".into(),
        _ => "failed".into(),
    });
    set_status(&mut f, s(ds, "enhanced-code"), "Mailgun enhanced-code");
    f.remote_host = s(ds, "mx-host").map(str::to_string);
    let message = s(ds, "message")
        .filter(|m| !m.is_empty())
        .or_else(|| s(ds, "description"))
        .unwrap_or("");
    match ds.get("code").and_then(Value::as_u64) {
        Some(code @ 200..=599) if !message.starts_with(&code.to_string()) => diagnose(
            &mut f,
            &format!("{code} {message}"),
            "Mailgun delivery-status",
        ),
        _ => diagnose(&mut f, message, "Mailgun delivery-status"),
    }
    b.failures.push(f);
}

/// Postmark bounce webhook: `Type` (HardBounce, SoftBounce, ...), `Email`,
/// `Details` (`smtp;550 5.1.1 ...`), `Description`.
fn postmark(v: &Value, b: &mut Bounce, named: &mut Named) {
    let kind = s(v, "Type").unwrap_or("");
    if matches!(kind, "SpamComplaint" | "SpamNotification")
        || s(v, "RecordType") == Some("SpamComplaint")
    {
        named.complaints += 1;
        return;
    }
    if s(v, "RecordType") == Some("Delivery") {
        named.deliveries += 1;
    }
    if s(v, "RecordType").is_some_and(|r| r != "Bounce") {
        return;
    }
    let Some(addr) = s(v, "Email") else { return };
    let mut f = failure(addr, "Postmark Email");
    f.action = Some(
        if kind == "SoftBounce" || kind == "Transient" {
            "delayed"
        } else {
            "failed"
        }
        .into(),
    );
    let details = s(v, "Details").unwrap_or("");
    diagnose(&mut f, details, "Postmark Details");
    if f.reply.is_empty() {
        f.diagnostic = s(v, "Description").map(str::to_string).or(f.diagnostic);
    }
    b.failures.push(f);
}

fn failure(addr: &str, from: &str) -> Failure {
    Failure {
        recipient: addr.trim().to_string(),
        recipient_from: from.into(),
        ..Failure::default()
    }
}

fn set_status(f: &mut Failure, status: Option<&str>, from: &str) {
    let Some(st) = status.map(str::trim) else {
        return;
    };
    let parts: Vec<&str> = st.split('.').collect();
    let ok = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|c| c.is_ascii_digit()));
    if ok {
        f.status = Some(st.to_string());
        f.status_from = Some(from.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_that_is_no_notification_is_refused() {
        assert_eq!(parse(b"{\"a\": 1}"), Err(NotBounce::NotNotification));
        assert_eq!(parse(b"[1, 2, 3]"), Err(NotBounce::NotNotification));
        assert_eq!(parse(b"{"), Err(NotBounce::NotNotification));
    }

    #[test]
    fn an_sns_envelope_holds_an_ses_bounce() {
        let inner = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General","reportingMTA":"dsn; a1-2.smtp-out.amazonses.com","bouncedRecipients":[{"emailAddress":"nobody@example.com","action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 user unknown"}]}}"#;
        let sns = serde_json::json!({"Type": "Notification", "Message": inner}).to_string();
        let b = parse(sns.as_bytes()).unwrap();
        assert_eq!(b.failures.len(), 1);
        let f = &b.failures[0];
        assert_eq!(f.reply, vec!["550 5.1.1 user unknown"]);
        assert_eq!(f.reason, "userunknown");
        assert!(f.hard_bounce);
        assert_eq!(
            b.reporting_mta.as_deref(),
            Some("a1-2.smtp-out.amazonses.com")
        );
    }
}
