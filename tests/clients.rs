//! Real SMTP clients against the real server: lettre (Rust), Python's
//! smtplib, swaks and curl. Every assertion is on exact codes and texts.

mod common;

use common::*;
use lettre::message::Mailbox;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Message, Tokio1Executor};

fn lettre_client(port: u16) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .build()
}

fn message(to: &str) -> Message {
    Message::builder()
        .from("Sender <sender@example.test>".parse::<Mailbox>().unwrap())
        .to(to.parse::<Mailbox>().unwrap())
        .subject("mailfault test")
        .body(String::from("Hello from lettre.\r\n.leading dot\r\n"))
        .unwrap()
}

#[tokio::test]
async fn lettre_delivers_and_sees_rejections() {
    let server = start_default().await;
    let mailer = lettre_client(server.addr().port());
    let ok = mailer.send(message("rcpt@example.test")).await.unwrap();
    assert_eq!(ok.code().to_string(), "250");
    let text: Vec<&str> = ok.message().collect();
    assert!(text[0].starts_with("2.0.0 Ok: queued as "), "{text:?}");
    let m = &server.capture.messages()[0];
    assert_eq!(m.rcpts, ["rcpt@example.test"]);
    let body = String::from_utf8_lossy(&m.body);
    assert!(body.contains("Subject: mailfault test"));
    assert!(
        body.contains("\r\n.leading dot\r\n"),
        "dot-stuffing round trip: {body}"
    );

    let err = mailer
        .send(message("550-5.1.1@example.test"))
        .await
        .unwrap_err();
    assert!(err.is_permanent());
    assert_eq!(err.status().unwrap().to_string(), "550");
    assert!(
        err.to_string()
            .contains("5.1.1 The email account that you tried to reach does not exist."),
        "{err}"
    );

    let err = mailer
        .send(message("tempfail1@example.test"))
        .await
        .unwrap_err();
    assert!(err.is_transient());
    assert_eq!(err.status().unwrap().to_string(), "451");
    assert!(
        mailer.send(message("tempfail1@example.test")).await.is_ok(),
        "accepted after one failure"
    );
}

#[tokio::test]
async fn lettre_against_scripted_rules() {
    let server = start("[[rule]]\non = \"data\"\nwhen = { mail_from = \"sender@*\" }\nreply = \"554 5.7.1 You are blocked\"\n").await;
    let err = lettre_client(server.addr().port())
        .send(message("x@example.test"))
        .await
        .unwrap_err();
    assert_eq!(err.status().unwrap().to_string(), "554");
    assert!(err.to_string().contains("5.7.1 You are blocked"), "{err}");
}

const SMTPLIB: &str = r#"
import smtplib, sys
port = int(sys.argv[1])
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
code, _ = s.ehlo("python.test")
print("ehlo", code, " ".join(sorted(s.esmtp_features)))
refused = s.sendmail("py@example.test", ["ok@example.test", "550-5.1.1@example.test"], b"Subject: py\r\n\r\nhi\r\n")
for rcpt, (code, msg) in refused.items():
    print("refused", rcpt, code, msg.decode())
try:
    s.sendmail("py@example.test", ["tempfail1@example.test"], b"Subject: py\r\n\r\nhi\r\n")
except smtplib.SMTPDataError as e:
    print("data error", e.smtp_code, e.smtp_error.decode())
print("quit", s.quit()[0])
"#;

#[tokio::test]
async fn python_smtplib() {
    if !have_python3() {
        return;
    }
    let server = start_default().await;
    let port = server.addr().port().to_string();
    let out = tokio::process::Command::new("python3")
        .args(["-c", SMTPLIB, &port])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "ehlo 250 8bitmime chunking dsn enhancedstatuscodes pipelining size smtputf8"
    );
    assert!(
        lines[1].starts_with("refused 550-5.1.1@example.test 550 5.1.1 The email account"),
        "{stdout}"
    );
    assert_eq!(
        lines[2],
        "data error 451 4.3.0 Mail server temporarily rejected message."
    );
    assert_eq!(lines[3], "quit 221");
    assert_eq!(
        server
            .capture
            .messages()
            .iter()
            .filter(|m| m.accepted)
            .count(),
        1
    );
}

#[tokio::test]
async fn swaks() {
    if !have_swaks() {
        return;
    }
    let server = start("[[rule]]\non = \"rcpt\"\nwhen = { rcpt = \"nobody@*\" }\npreset = \"gmail.user_unknown\"\n").await;
    let port = server.addr().port().to_string();
    let run = |to: &'static str, port: String| async move {
        output(
            "swaks",
            &[
                "--server",
                "127.0.0.1",
                "--port",
                &port,
                "--to",
                to,
                "--from",
                "swaks@example.test",
                "--helo",
                "swaks.test",
                "--timeout",
                "20",
            ],
        )
        .await
    };
    let ok = run("someone@example.test", port.clone()).await;
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}");
    assert!(
        out.contains("<-  220 mailfault.test ESMTP mailfault"),
        "{out}"
    );
    assert!(out.contains("<-  250 2.0.0 Ok: queued as "), "{out}");
    let bad = run("nobody@example.test", port).await;
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success());
    assert!(
        out.contains("<** 550 5.1.1 The email account that you tried to reach does not exist."),
        "{out}"
    );
}

#[tokio::test]
async fn curl() {
    if !have_curl_smtp() {
        return;
    }
    let server = start_default().await;
    let url = format!("smtp://127.0.0.1:{}/curl.test", server.addr().port());
    let send = |rcpt: &'static str, url: String| async move {
        let file = std::env::temp_dir().join(format!("mailfault-curl-{}.eml", std::process::id()));
        std::fs::write(&file, "Subject: curl\r\n\r\nhello from curl\r\n").unwrap();
        let out = output(
            "curl",
            &[
                "-sS",
                "-v",
                "--max-time",
                "20",
                &url,
                "--mail-from",
                "curl@example.test",
                "--mail-rcpt",
                rcpt,
                "--upload-file",
                file.to_str().unwrap(),
            ],
        )
        .await;
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = send("ok@example.test", url.clone()).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("< 250 2.0.0 Ok: queued as"), "{err}");
    assert_eq!(
        server.capture.messages()[0].body,
        b"Subject: curl\r\n\r\nhello from curl\r\n"
    );
    let (code, err) = send("553-5.1.3@example.test", url).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("< 553 5.1.3 "), "{err}");
}
