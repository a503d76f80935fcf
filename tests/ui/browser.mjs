// Launches Debian's chromium through playwright-core (never a downloaded
// browser) with a fresh profile, and small assertion helpers.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export async function launch(locale = "en-US") {
  const profile = mkdtempSync(join(tmpdir(), "mailfault-ui-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 800 },
    locale,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  // Any request that leaves 127.0.0.1 (a CDN, a font) fails the test.
  context.on("request", (r) => {
    const u = new URL(r.url());
    if (!["127.0.0.1", "localhost"].includes(u.hostname) && !["file:", "data:", "about:"].includes(u.protocol)) {
      throw new Error("the UI reached out to " + r.url());
    }
  });
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  return {
    page, errors,
    async close() { await context.close(); rmSync(profile, { recursive: true, force: true }); },
  };
}

export function check(cond, what) {
  if (!cond) throw new Error("assertion failed: " + what);
  console.log("ok -", what);
}

export function eq(got, want, what) {
  check(JSON.stringify(got) === JSON.stringify(want), `${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

export async function shot(page, dir, name) {
  if (dir && dir !== "-") await page.screenshot({ path: join(dir, name + ".png") });
}
