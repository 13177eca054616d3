// Drives Debian's chromium (headless, Playwright) through an IdP-initiated SAML sign-in for
// the Rust integration tests: a page of another origin posts the response to the assertion
// consumer (as an IdP's page, or an attacker's, does); the confirmation page that answers
// must ignore a click that comes at once (the second click of a double-click another site
// asked for), stay disabled while it lacks the focus and through a burst of keys, and take a
// deliberate click.
//
//   node web/tests/saml_confirm.mjs <gateway-base-url> <SAMLResponse> <another SAMLResponse> <screenshot-dir>
//   → {"event":"early","url":"…","disabled":true}     a click at once changed nothing
//   → {"event":"unfocused","disabled":true}           1.5 s without the focus: still disabled
//   → {"event":"refocused","url":"…"}                 a click as the focus came back changed nothing
//   → {"event":"mashed","disabled":true}              keys every 300 ms for 2 s kept it disabled
//   → {"event":"armed","afterMs":…}                   enabled that long after the last key
//   → {"event":"portal","user":"…"}                   (screenshot saml-confirmed.png)
//   → {"event":"tapped","url":"…"}                    a tap on a touch screen confirms too
import { chromium } from "playwright-core";

const [base, response, touchResponse, shots] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
// Another page's form posts `saml` to the assertion consumer: `page` then shows the
// confirmation.
const posted = async (page, saml) => {
  await page.setContent(`<form method="post" action="${base}/saml/acs"><input type="hidden" name="SAMLResponse"></form>`);
  await page.$eval("input", (input, value) => { input.value = value; }, saml);
  await Promise.all([page.waitForURL(`${base}/saml/acs`, { timeout: 30_000 }), page.$eval("form", (form) => form.submit())]);
  await page.waitForSelector("#continue", { state: "attached", timeout: 30_000 });
};
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  await posted(page, response);
  const disabled = () => page.$eval("#continue", (button) => button.disabled);
  // The second click of a double-click, a moment after the page came to the front.
  await page.click("#continue", { force: true, timeout: 5_000 });
  await page.waitForTimeout(100);
  say({ event: "early", url: page.url(), disabled: await disabled() });
  // Headless Chromium reports every page focused: the page's focus is taken away by hand.
  await page.evaluate(() => {
    document.hasFocus = () => false;
    dispatchEvent(new Event("blur"));
  });
  await page.waitForTimeout(1_500);
  say({ event: "unfocused", disabled: await disabled() });
  await page.evaluate(() => {
    delete document.hasFocus;
    dispatchEvent(new Event("focus"));
  });
  await page.click("#continue", { force: true, timeout: 5_000 });
  await page.waitForTimeout(100);
  say({ event: "refocused", url: page.url() });
  let mashed = true;
  for (let n = 0; n < 7; n++) {
    await page.keyboard.press("Shift");
    mashed = mashed && (await disabled());
    await page.waitForTimeout(300);
  }
  const lastKey = Date.now() - 300;
  say({ event: "mashed", disabled: mashed });
  await page.waitForSelector("#continue:not([disabled])", { timeout: 10_000 });
  say({ event: "armed", afterMs: Date.now() - lastKey });
  await Promise.all([page.waitForURL(`${base}/portal`, { timeout: 30_000 }), page.click("#continue")]);
  await page.waitForFunction(() => document.querySelector("#who").textContent.trim() !== "", null, { timeout: 30_000 });
  await page.screenshot({ path: `${shots}/saml-confirmed.png` });
  say({ event: "portal", user: (await page.textContent("#who")).trim() });
  // On a touch screen (no hover: each tap enters and leaves the page), a tap once the page
  // was in front for a second confirms too (review finding: every tap disarmed the button).
  const touch = await browser.newPage({ viewport: { width: 600, height: 800 }, hasTouch: true, isMobile: true });
  await posted(touch, touchResponse);
  await touch.waitForSelector("#continue:not([disabled])", { timeout: 10_000 });
  await touch.waitForTimeout(300);
  await Promise.all([touch.waitForURL(`${base}/portal`, { timeout: 30_000 }), touch.tap("#continue")]);
  say({ event: "tapped", url: touch.url() });
} catch (error) {
  say({ event: "error", message: String(error) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
