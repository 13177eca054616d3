// Drives Debian's chromium (headless, Playwright) through a password change on the analyst
// portal for the Rust integration tests: sign in, change the password with "also end my
// running sessions" ticked, and sign in again with the new one.
//
//   node web/tests/password.mjs <gateway-base-url> <user> <password> <new-password> <screenshot-dir>
//   → {"event":"refused","error":"…"}              a wrong current password changes nothing
//   → {"event":"changed","notice":"…","signIn":true} the page asks for the new password
//   → {"event":"again","user":"…"}                 the new password signs in (screenshot password.png)
import { chromium } from "playwright-core";
import { steadyGoto } from "./steady.mjs";

const [base, user, password, proposed, shots] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
const signIn = async (page, secret) => {
  await page.fill("#user", user);
  await page.fill("#password", secret);
  await page.click("#go");
  await page.waitForFunction((name) => document.getElementById("who").textContent === name, user, { timeout: 30_000 });
};
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  await steadyGoto(page, `${base}/portal`);
  await signIn(page, password);
  await page.click("#account summary");
  await page.fill("#previous", "not the password at all");
  await page.fill("#proposed", proposed);
  await page.click("#change-go");
  await page.waitForFunction(() => document.getElementById("error").textContent !== "", null, { timeout: 30_000 });
  say({ event: "refused", error: await page.textContent("#error") });
  await page.fill("#previous", password);
  await page.check("#end-sessions");
  await page.click("#change-go");
  await page.waitForFunction(() => !document.getElementById("signin").hidden, null, { timeout: 30_000 });
  say({ event: "changed", notice: await page.textContent("#notice"), signIn: await page.isVisible("#signin") });
  await signIn(page, proposed);
  await page.screenshot({ path: `${shots}/password.png` });
  say({ event: "again", user: await page.textContent("#who") });
} catch (error) {
  say({ event: "error", message: String(error) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
