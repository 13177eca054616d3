// Drives Debian's chromium (headless, Playwright) through SAML sign-in for the Rust
// integration tests: the portal's "Sign in with your organization" link → the IdP (pysaml2,
// which signs the user in without asking) → the assertion consumer → the portal's catalog →
// launch → the session page.
//
//   node web/tests/saml.mjs <gateway-base-url> <screenshot-dir>
//   → {"event":"catalog","user":"…","stacks":["…"]}  (screenshot saml-portal.png)
//   → {"event":"session","state":"…","url":"…"}      (screenshot saml-session.png)
import { chromium } from "playwright-core";
import { steadyGoto } from "./steady.mjs";
import { launchFirstStack } from "./launch.mjs";

const [base, shots] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  await steadyGoto(page, `${base}/portal`);
  await page.click("#saml");
  await page.waitForURL(`${base}/portal`, { timeout: 30_000 });
  await page.waitForSelector("#stacks button", { timeout: 30_000 });
  const stacks = await page.$$eval("#stacks button", (buttons) => buttons.map((b) => b.dataset.stack));
  await page.screenshot({ path: `${shots}/saml-portal.png` });
  say({ event: "catalog", user: await page.textContent("#who"), stacks });
  say(await launchFirstStack(page, shots, "saml-session"));
} catch (error) {
  say({ event: "error", message: String(error) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
