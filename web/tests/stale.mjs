// Drives Debian's chromium (headless, Playwright) for the Rust integration tests: opens a
// streaming URL whose session waits in the queue, and holds the page's first
// `/session/status` answer (fetched from the gateway at once, so it says PENDING) until the
// session has become ACTIVE on the page's live socket; then lets the old answer arrive. The
// page must not go back in time.
//
//   node web/tests/stale.mjs <streaming-url>
//   → {"event":"held","state":"PENDING"}   the first status answer, held
//   ← release                              (the test has started the session meanwhile)
//   → {"event":"shown","text":"…"}         the page's state once it showed "Connected" and
//                                          then received the held answer
import { chromium } from "playwright-core";
import { steadyGoto } from "./steady.mjs";
import readline from "node:readline";

const [url] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage();
  const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  let release;
  const released = new Promise((resolve) => { release = resolve; });
  let first = true;
  await page.route("**/session/status", async (route) => {
    if (!first) return route.continue();
    first = false;
    const response = await route.fetch();
    say({ event: "held", state: (await response.json()).State });
    await released;
    await route.fulfill({ response });
  });
  await steadyGoto(page, url);
  const command = await lines.next();
  if (command.value?.trim() !== "release") throw new Error(`expected "release", read ${command.value}`);
  await page.waitForFunction(() => document.getElementById("state").textContent === "Connected", null, { timeout: 60_000 });
  release();
  // The held answer goes through the page's handler; give it time to (wrongly) apply.
  await page.waitForTimeout(1500);
  say({ event: "shown", text: await page.textContent("#state") });
} catch (error) {
  say({ event: "error", message: String(error) });
  process.exitCode = 1;
} finally {
  await browser.close();
  process.exit();
}
