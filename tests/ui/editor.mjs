// node editor.mjs API_URL OUT_DIR NAME: the scenario editor shows a bad
// edit's error at its line, then saves a good one (tests/ui.rs then sends
// mail and asserts the new reply); the explain page explains a reply.
import { launch, check, eq, shot } from "./browser.mjs";

const [api, out, name] = process.argv.slice(2);
const GOOD = `# Edited in the web UI
[[rule]]
name = "flaky"
on = "message"
when = { rcpt = "*@flaky.test" }
times = 2
reply = "451 4.3.0 Try again later"

[[rule]]
name = "edited"
on = "rcpt"
when = { rcpt = "*@edited.test" }
reply = "550 5.7.1 Refused by an edit in the web UI"
`;
const BAD = GOOD.replace('reply = "550', 'repyl = "550');
const BAD_LINE = 13;

const { page, errors, close } = await launch();
try {
  const added = await fetch(`${api}/api/v1/scenarios/${encodeURIComponent(name)}/rules`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ on: "rcpt", when: { rcpt: "nobody@prepended.test" }, reply: "550 5.1.1 Added at run time" }),
  });
  eq(added.status, 201, "a rule is prepended over the API");
  await page.goto(`${api}/#/scenarios/${encodeURIComponent(name)}`);
  await page.waitForFunction(() => document.body.dataset.view === "scenario");
  check((await page.locator("#toml").inputValue()).includes("flaky.test"), "the editor holds the scenario's source");
  check((await page.locator("#prepended pre").first().textContent()).includes("550 5.1.1 Added at run time"), "and shows the prepended rule above it");
  await page.locator("#toml").fill(BAD);
  await page.locator("#save").click();
  const mark = page.locator("#gutter div.err");
  await mark.first().waitFor();
  eq(await mark.evaluateAll((m) => m.map((x) => Number(x.dataset.line))), [BAD_LINE], "the error is marked at its line in the gutter");
  const note = await page.locator("ul.diagnostics li").first();
  eq(Number(await note.getAttribute("data-line")), BAD_LINE, "and listed with that line");
  check((await note.textContent()).includes("line " + BAD_LINE + ":"), "saying line N:col: " + (await note.textContent()));
  await shot(page, out, "scenario-editor");

  await page.locator("#toml").fill(GOOD);
  await page.locator("#save").click();
  await page.locator("#saved").waitFor();
  eq(await page.locator("#gutter div.err").count(), 0, "a valid edit clears the marks");
  check((await page.locator("#saved").textContent()).match(/\d+$/), "and says the port");
  await page.reload();
  await page.waitForFunction(() => document.body.dataset.view === "scenario");
  eq(await page.locator("#prepended").count(), 0, "saving started over without the prepended rule");

  await page.goto(`${api}/#/explain`);
  await page.locator("#explain-input").fill("550 5.1.1 <bob@example.test>: Recipient address rejected: User unknown");
  await page.locator("#explain-go").click();
  await page.locator("#reproduce").waitFor();
  check((await page.locator("#explain-out").textContent()).includes("permanent"), "the reply is explained as permanent");
  check((await page.locator("#reproduce").textContent()).includes('reply = "550 5.1.1'), "with a scenario that reproduces it");
  await shot(page, out, "explain");
  eq(errors, [], "no script errors");
} finally {
  await close();
}
