// Every label of the UI and of `report --html`, in English and Japanese:
// one table, so a missing translation shows up next to its original.
"use strict";
const MF_LABELS = {
  en: {
    title: "mailfault", deliveries: "Deliveries", sessions: "Sessions", messages: "Messages",
    scenarios: "Scenarios", findings: "Findings", explain: "Explain", timeline: "Delivery timeline",
    from: "From", rcpt: "Recipient", outcome: "Outcome", attempts: "Attempts", reply: "Reply",
    rule: "Rule", time: "Time", session: "Session", client: "Client", interval: "after",
    last_reply: "Last reply", none: "Nothing yet: send mail to a listener.",
    delivered: "delivered", deferred: "deferred", failed: "failed", dropped: "dropped",
    abandoned: "abandoned", hung: "hung", live: "live", offline: "offline",
    transcript: "Transcript", commands: "commands", scenario: "Scenario", listener: "Listener",
    started: "Started", ended: "Ended", headers: "Headers", text: "Text", raw: "Raw",
    subject: "Subject", received: "Received", size: "Size", save: "Save", saved: "Saved: port",
    errors: "Errors", line: "line", port: "Port", file: "File", rules: "Rules",
    prepended: "Rules added at run time", prepended_hint: "Tried before the text below, newest first; saving the scenario starts over without them.",
    new_scenario: "New scenario", name: "Name", severity: "Severity", message: "Message",
    expectations: "Expectations", passed: "passed", not_passed: "failed", no_findings: "No findings.",
    explain_hint: "Paste an SMTP reply (e.g. 550 5.1.1 user unknown) or a whole bounce message.",
    meaning: "Meaning", advice: "What to do", status: "Status", category: "Category",
    reproduce: "A scenario that reproduces it", failures: "Failed recipients",
    token: "API token", token_ask: "This API needs a token (--api-token). Enter it:",
    language: "日本語", sender: "Sender", code: "Code", legend: "Legend",
    report_title: "mailfault sender report", generated: "Generated", value: "Value", bounce: "Bounce",
  },
  ja: {
    title: "mailfault", deliveries: "配送", sessions: "セッション", messages: "メッセージ",
    scenarios: "シナリオ", findings: "指摘事項", explain: "解説", timeline: "配送タイムライン",
    from: "送信者", rcpt: "受信者", outcome: "結果", attempts: "試行", reply: "応答",
    rule: "ルール", time: "時刻", session: "セッション", client: "クライアント", interval: "間隔",
    last_reply: "最後の応答", none: "まだありません。リスナーにメールを送ってください。",
    delivered: "配送済み", deferred: "保留", failed: "失敗", dropped: "切断",
    abandoned: "中断", hung: "無応答", live: "接続中", offline: "切断中",
    transcript: "やり取り", commands: "コマンド", scenario: "シナリオ", listener: "リスナー",
    started: "開始", ended: "終了", headers: "ヘッダー", text: "本文", raw: "原文",
    subject: "件名", received: "受信", size: "サイズ", save: "保存", saved: "保存しました: ポート",
    errors: "エラー", line: "行", port: "ポート", file: "ファイル", rules: "ルール数",
    prepended: "実行中に追加されたルール", prepended_hint: "下のテキストより先に、新しい順に試されます。シナリオを保存すると消えます。",
    new_scenario: "新しいシナリオ", name: "名前", severity: "重大度", message: "内容",
    expectations: "期待値", passed: "合格", not_passed: "不合格", no_findings: "指摘事項はありません。",
    explain_hint: "SMTP 応答(例: 550 5.1.1 user unknown)またはバウンスメール全体を貼り付けてください。",
    meaning: "意味", advice: "対処", status: "ステータス", category: "分類",
    reproduce: "再現するシナリオ", failures: "失敗した受信者",
    token: "API トークン", token_ask: "この API にはトークン(--api-token)が必要です。入力してください:",
    language: "English", sender: "送信元", code: "コード", legend: "凡例",
    report_title: "mailfault 送信者レポート", generated: "作成", value: "値", bounce: "バウンス",
  },
};

// The language: the one chosen with the switch, else the browser's.
function mfLang() {
  let saved = null;
  try { saved = localStorage.getItem("mailfault.lang"); } catch (_) { /* file:// */ }
  if (saved === "en" || saved === "ja") return saved;
  return (navigator.language || "en").toLowerCase().startsWith("ja") ? "ja" : "en";
}

function mfT(key) {
  const table = MF_LABELS[mfLang()] || MF_LABELS.en;
  return table[key] || MF_LABELS.en[key] || key;
}
