//! `report --html`: the report as one self-contained HTML file (inline
//! style, script and data; no network) for a CI job to keep as an artifact.
//! It draws the timeline and findings with the web UI's own script
//! (`src/api/ui/timeline.js`), so both show the same picture.

use super::Report;

const CSS: &str = include_str!("../api/ui/app.css");
const I18N_JS: &str = include_str!("../api/ui/i18n.js");
const TIMELINE_JS: &str = include_str!("../api/ui/timeline.js");

/// Draws the page from the embedded JSON once it is parsed.
const PAGE_JS: &str = r#"
"use strict";
const report = JSON.parse(document.getElementById("report").textContent);
function draw() {
  document.documentElement.lang = mfLang();
  const main = document.getElementById("main");
  const card = (title, ...kids) => mfEl("section", { class: "card" }, title ? mfEl("h3", {}, title) : null, ...kids);
  const d = report.deliveries;
  document.getElementById("lang").textContent = mfT("language");
  main.replaceChildren(
    mfEl("h2", {}, mfT("report_title")),
    card(null, mfEl("dl", { class: "kv" }, mfEl("dt", {}, mfT("sessions")), mfEl("dd", {}, report.sessions),
      mfEl("dt", {}, mfT("deliveries")), mfEl("dd", {}, d.length), mfEl("dt", {}, mfT("findings")), mfEl("dd", {}, report.findings.length))),
    d.length ? card(mfT("timeline"), mfTimeline(d, null), mfLegend()) : card(null, mfT("none")),
    d.length ? card(mfT("attempts"), mfAttemptsTable(d, null)) : null,
    card(mfT("findings"), mfFindingsTable(report)));
}
document.getElementById("lang").addEventListener("click", () => {
  try { localStorage.setItem("mailfault.lang", mfLang() === "ja" ? "en" : "ja"); } catch (_) {}
  draw();
});
draw();
"#;

/// The whole page. The JSON sits in a `<script type="application/json">`:
/// `<` is escaped so no text in it (a reply, an address) can close it.
pub fn html(r: &Report) -> String {
    let data = serde_json::to_string(r)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c");
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>mailfault report</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n\
         <header><span class=\"brand\">mailfault</span><nav></nav>\
         <button id=\"lang\" type=\"button\"></button></header>\n\
         <main id=\"main\"></main>\n\
         <script type=\"application/json\" id=\"report\">{data}</script>\n\
         <script>\n{I18N_JS}\n{TIMELINE_JS}\n{PAGE_JS}</script>\n</body>\n</html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Report {
        Report {
            sessions: 0,
            in_progress: 0,
            senders: 0,
            deliveries: vec![],
            refusals: vec![],
            findings: vec![],
            reputation: vec![],
            expectations: vec![super::super::Verdict {
                name: "</script><script>alert(1)</script>".into(),
                passed: false,
                detail: "a name that tries to close the data".into(),
            }],
            skipped_lines: 0,
        }
    }

    /// Text from the transcript (a reply, an address, a rule name) cannot
    /// end the embedded JSON and run as script.
    #[test]
    fn the_data_cannot_close_its_script() {
        let page = html(&empty());
        assert_eq!(
            page.matches("</script>").count(),
            2,
            "only the page's own two"
        );
        assert!(page.contains(r"\u003c/script>\u003cscript>alert(1)"));
    }

    /// Nothing is loaded from anywhere: no src or href to a server.
    #[test]
    fn the_page_is_self_contained() {
        let page = html(&empty());
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
        assert!(page.contains("function mfTimeline(") && page.contains("const MF_LABELS"));
    }
}
