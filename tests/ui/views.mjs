// node views.mjs API_URL OUT_DIR: the start page, the timeline of a
// fail-twice-then-accept delivery, a transcript, a message, the Japanese
// page. tests/ui.rs sends the mail first.
import { launch, check, eq, shot } from "./browser.mjs";
import { connect } from "node:net";

const [api, out, smtpPort] = process.argv.slice(2);

// One message over raw SMTP, each command after the previous reply.
function smtpSend(port, rcpt) {
  const steps = ["EHLO live.test", "MAIL FROM:<live@example.test>", `RCPT TO:<${rcpt}>`, "DATA",
    "Subject: live\r\n\r\nlive\r\n.", "QUIT"];
  return new Promise((resolve, reject) => {
    const c = connect(Number(port), "127.0.0.1");
    let buf = "";
    c.on("data", (d) => {
      buf += d;
      if (!/(^|\n)\d{3} [^\n]*\n$/.test(buf)) return;
      buf = "";
      const next = steps.shift();
      if (next) c.write(next + "\r\n"); else c.end();
    });
    c.on("close", resolve);
    c.on("error", reject);
  });
}
const { page, errors, close } = await launch();
// The streams the page opens (EventSource), from its first load on.
const streams = [];
page.on("request", (r) => { if (r.resourceType() === "eventsource") streams.push(r.url()); });
try {
  await page.goto(api + "/#/deliveries");
  const flaky = page.locator('svg.timeline g.delivery[data-rcpt="bob@flaky.test"]');
  await flaky.waitFor();
  const codes = await flaky.locator("circle.attempt").evaluateAll((c) => c.map((x) => x.dataset.code));
  eq(codes, ["451", "451", "250"], "the timeline shows three attempts of bob@flaky.test");
  const classes = await flaky.locator("circle.attempt").evaluateAll((c) => c.map((x) => x.getAttribute("class")));
  eq(classes, ["attempt temp", "attempt temp", "attempt ok"], "coloured 4xx, 4xx, 2xx");
  const tips = await flaky.locator("circle.attempt title").allTextContents();
  check(tips[0].includes("451 4.3.0 Try again later") && tips[0].includes("flaky"), "the tooltip has the reply and the rule: " + tips[0]);
  eq(await flaky.locator("text.gap").count(), 2, "two intervals between the attempts");
  const rows = await page.locator("table.attempts tr.attempt-row").allTextContents();
  const bob = rows.filter((r) => r.includes("Try again later") || r.includes("250 2.0.0"));
  check(bob.filter((r) => r.includes("451 4.3.0 Try again later")).length === 2, "the attempts table lists the two 451 replies");
  const list = await page.locator("main table").first().textContent();
  check(list.includes("bob@flaky.test") && list.includes("delivered"), "the start page lists the delivery and its outcome");
  check(list.includes("nobody@example.test") && list.includes("failed"), "and the refused one");
  await page.locator("text=Delivery timeline").waitFor();
  await shot(page, out, "deliveries");
  await page.locator("svg.timeline").screenshot({ path: out && out !== "-" ? out + "/timeline.png" : undefined });

  // The last attempt's session: its transcript, each reply with its rule.
  await flaky.locator("a").nth(1).click();
  await page.waitForFunction(() => document.body.dataset.view === "session");
  const transcript = await page.locator("table.transcript").textContent();
  check(transcript.includes("MAIL FROM:<sender@example.test>"), "the transcript shows the commands");
  check(transcript.includes("451 4.3.0 Try again later") && transcript.includes("flaky"), "a reply with the rule that decided it");
  await page.locator("table.transcript tr.s.e4").scrollIntoViewIfNeeded();
  await shot(page, out, "transcript");

  // A message: headers, text, raw.
  await page.goto(api + "/#/messages");
  await page.locator("main tr.click", { hasText: "Hello from the UI test" }).click();
  await page.waitForFunction(() => document.body.dataset.view === "message");
  const msg = await page.locator("main").textContent();
  check(msg.includes("Subject") && msg.includes("Line one of the body."), "the message shows headers and text");
  check((await page.locator("pre.raw").textContent()).includes("Subject: Hello from the UI test"), "and its raw source");
  await shot(page, out, "message");

  // Live: a delivery made while the page is open shows up without a reload,
  // told by the change feed (no events: an open page costs SMTP nothing).
  check(streams.length === 1 && new URL(streams[0]).pathname === "/api/v1/changes",
    `the page follows the change feed: ${streams}`);
  await page.goto(api + "/#/deliveries");
  await page.locator("svg.timeline").waitFor();
  await page.locator("#live.on").waitFor();
  await page.evaluate(() => { window.notReloaded = true; });
  await smtpSend(smtpPort, "carol@example.test");
  await page.locator('svg.timeline g.delivery[data-rcpt="carol@example.test"]').waitFor({ timeout: 5000 });
  check(await page.evaluate(() => window.notReloaded === true), "a new delivery appears live, without a reload");

  // Japanese: the switch, remembered across a reload.
  await page.goto(api + "/#/deliveries");
  await page.locator("svg.timeline").waitFor();
  await page.locator("#lang").click();
  await page.locator("text=配送タイムライン").waitFor();
  await page.reload();
  await page.locator("svg.timeline").waitFor();
  const nav = await page.locator("nav").textContent();
  eq(nav, "配送セッションメッセージシナリオ指摘事項解説", "the navigation is Japanese after a reload");
  eq(await page.evaluate(() => document.documentElement.lang), "ja", "the page says it is Japanese");
  check((await page.locator("main").textContent()).includes("配送済み"), "outcomes are Japanese");
  await shot(page, out, "japanese");
  await page.locator("#lang").click();
  await page.locator("text=Delivery timeline").waitFor();
  eq(errors, [], "no script errors");
} finally {
  await close();
}

// A browser set to Japanese gets Japanese without touching the switch.
const ja = await launch("ja-JP");
try {
  await ja.page.goto(api + "/#/deliveries");
  await ja.page.locator("svg.timeline").waitFor();
  eq(await ja.page.locator("nav a").first().textContent(), "配送", "navigator.language ja-JP: Japanese from the start");
  eq(await ja.page.locator("#lang").textContent(), "English", "with a switch to English");
} finally {
  await ja.close();
}
