// Drives Debian's chromium (headless, Playwright) through OpenID Connect sign-in for the Rust
// integration tests: the portal's "Sign in with OpenID Connect" → the provider (oidc-provider,
// which signs the user in without asking) → the callback → the catalog → launch → the session
// page. It reports the callback URL it went through, so that the test can try it again.
//
//   node web/tests/oidc.mjs <gateway-base-url> <screenshot-dir>
//   → {"event":"catalog","user":"…","stacks":["…"],"callback":"…"}  (screenshot oidc-portal.png)
//   → {"event":"session","state":"…","url":"…"}
import { chromium } from "playwright-core";
import { steadyGoto } from "./steady.mjs";
import { launchFirstStack } from "./launch.mjs";

const [base, shots] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
const visited = [];
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  let callback = null;
  page.on("request", (request) => { if (request.isNavigationRequest()) visited.push(request.url()); if (request.url().includes("/oidc/callback")) callback = request.url(); });
  await steadyGoto(page, `${base}/portal`);
  await page.click("#oidc");
  await page.waitForURL(`${base}/portal`, { timeout: 30_000 });
  await page.waitForSelector("#stacks button", { timeout: 30_000 });
  const stacks = await page.$$eval("#stacks button", (buttons) => buttons.map((b) => b.dataset.stack));
  await page.screenshot({ path: `${shots}/oidc-portal.png` });
  say({ event: "catalog", user: await page.textContent("#who"), stacks, callback });
  say(await launchFirstStack(page, shots, "oidc-session"));
} catch (error) {
  say({ event: "error", message: String(error), visited });
  process.exitCode = 1;
} finally {
  await browser.close();
}
