// node report.mjs FILE OUT_DIR: the page of `report --html` opens from a
// file (no server, no network) and shows the timeline and findings.
import { launch, check, eq, shot } from "./browser.mjs";
import { pathToFileURL } from "node:url";

const [file, out] = process.argv.slice(2);
const { page, errors, close } = await launch();
try {
  await page.goto(pathToFileURL(file).href);
  const flaky = page.locator('svg.timeline g.delivery[data-rcpt="bob@flaky.test"]');
  await flaky.waitFor();
  const codes = await flaky.locator("circle.attempt").evaluateAll((c) => c.map((x) => x.dataset.code));
  eq(codes, ["451", "451", "250"], "the report's timeline shows the three attempts");
  check((await page.locator("main").textContent()).includes("Findings"), "and the findings");
  await shot(page, out, "report-html");
  eq(errors, [], "no script errors");
} finally {
  await close();
}
