// Drives Debian's chromium (headless, Playwright) through the analyst portal for the Rust
// integration tests: sign in, see the catalog, launch the first stack, reach its session.
//
//   node web/tests/portal.mjs <gateway-base-url> <user> <password> <screenshot-dir>
//   → {"event":"catalog","stacks":["…"]}   the stacks the portal offers (screenshot portal.png)
//   → {"event":"session","state":"…","url":"…"}  the session page once its session is ACTIVE
//                                                (screenshot portal-session.png)
//   → {"event":"live","text":"…"}          a second portal tab, open all along and never
//                                          reloaded, lists the session as ACTIVE (it does not
//                                          poll: it hears of changes) (screenshot portal-live.png)
import { chromium } from "playwright-core";
import { steadyGoto } from "./steady.mjs";
import { launchFirstStack } from "./launch.mjs";

const [base, user, password, shots] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  await steadyGoto(page, `${base}/portal`);
  await page.fill("#user", user);
  await page.fill("#password", password);
  await page.click("#go");
  await page.waitForSelector("#stacks button", { timeout: 30_000 });
  const stacks = await page.$$eval("#stacks button", (buttons) => buttons.map((b) => b.dataset.stack));
  await page.screenshot({ path: `${shots}/portal.png` });
  say({ event: "catalog", stacks });
  const beside = await context.newPage();
  await steadyGoto(beside, `${base}/portal`);
  await beside.waitForSelector("#stacks button", { timeout: 30_000 });
  say(await launchFirstStack(page, shots, "portal-session"));
  await beside.waitForFunction(() => document.getElementById("sessions").textContent.includes("ACTIVE"), null, { timeout: 15_000 });
  await beside.screenshot({ path: `${shots}/portal-live.png` });
  say({ event: "live", text: await beside.textContent("#sessions") });
} catch (error) {
  say({ event: "error", message: String(error) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
