// node token.mjs API_URL TOKEN: with --api-token the page still loads,
// asks for the token once (on the API's 401) and then shows the data.
import { launch, check, eq } from "./browser.mjs";

const [api, token] = process.argv.slice(2);
const { page, errors, close } = await launch();
try {
  let asked = 0;
  page.on("dialog", (d) => { asked += 1; d.accept(token); });
  await page.goto(api + "/#/deliveries");
  await page.locator('svg.timeline g.delivery[data-rcpt="alice@example.test"]').waitFor();
  eq(asked, 1, "the page asked for the token once");
  eq(await page.evaluate(() => localStorage.getItem("mailfault.token")), token, "and keeps it");
  await page.goto(api + "/#/sessions");
  await page.locator("main tr.click").first().waitFor();
  eq(asked, 1, "and does not ask again");
  check((await page.locator("#live").textContent()) === "live", "live (polling: EventSource cannot send the token)");
  eq(errors, [], "no script errors");
} finally {
  await close();
}
