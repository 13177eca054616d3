// Drives Debian's chromium (headless, Playwright) through an IdP-initiated SAML sign-in for
// the Rust integration tests: a page of another origin posts the response to the assertion
// consumer (as an IdP's page, or an attacker's, does); the confirmation page that answers
// must ignore a click that comes at once (the second click of a double-click another site
// asked for) and take a deliberate one.
//
//   node web/tests/saml_confirm.mjs <gateway-base-url> <SAMLResponse> <screenshot-dir>
//   → {"event":"early","url":"…","disabled":true}   (a click at once changed nothing)
//   → {"event":"armed","afterMs":…}                 (the button took that long to be enabled)
//   → {"event":"portal","user":"…"}                 (screenshot saml-confirmed.png)
import { chromium } from "playwright-core";

const [base, response, shots] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  await page.setContent(`<form method="post" action="${base}/saml/acs"><input type="hidden" name="SAMLResponse"></form>`);
  await page.$eval("input", (input, value) => { input.value = value; }, response);
  await Promise.all([page.waitForURL(`${base}/saml/acs`, { timeout: 30_000 }), page.$eval("form", (form) => form.submit())]);
  await page.waitForSelector("#continue", { state: "attached", timeout: 30_000 });
  const shown = Date.now();
  // The second click of a double-click, a moment after the page came to the front.
  await page.click("#continue", { force: true, timeout: 5_000 });
  await page.waitForTimeout(300);
  say({ event: "early", url: page.url(), disabled: await page.$eval("#continue", (button) => button.disabled) });
  await page.waitForSelector("#continue:not([disabled])", { timeout: 10_000 });
  say({ event: "armed", afterMs: Date.now() - shown });
  await Promise.all([page.waitForURL(`${base}/portal`, { timeout: 30_000 }), page.click("#continue")]);
  await page.waitForSelector("#who", { timeout: 30_000 });
  await page.waitForFunction(() => document.querySelector("#who").textContent.trim() !== "", null, { timeout: 30_000 });
  await page.screenshot({ path: `${shots}/saml-confirmed.png` });
  say({ event: "portal", user: (await page.textContent("#who")).trim() });
} catch (error) {
  say({ event: "error", message: String(error) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
