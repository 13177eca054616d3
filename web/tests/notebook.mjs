// Drives Debian's chromium (headless, Playwright) for the Rust integration tests: opens a
// DIRECT session's streaming URL, whose page frames the notebook from the notebook origin
// (another port than the page's), waits for JupyterLab to be drawn in the frame, then
// reloads the page (the presigned URL is spent by then) and waits for it again.
//
//   node web/tests/notebook.mjs <streaming-url>
//   → {"event":"opened","page":"…","frame":"…"}    JupyterLab drawn in the frame
//   → {"event":"reopened","page":"…","frame":"…"}  the same after a reload
import { chromium } from "playwright-core";
import { steadyGoto } from "./steady.mjs";

const [url] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });

/// The notebook's frame once JupyterLab has drawn its shell in it.
async function lab(page, timeout) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const frame = page.frames().find((f) => f.url().includes("/notebook/") && f.url().includes("/lab"));
    if (frame && (await frame.$(".jp-LabShell").catch(() => null))) return frame;
    await page.waitForTimeout(500);
  }
  throw new Error(`JupyterLab was not drawn in the page's frame: ${page.frames().map((f) => f.url()).join(", ")}`);
}

try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.on("pageerror", (error) => say({ event: "pageerror", message: String(error) }));
  await steadyGoto(page, url);
  let frame = await lab(page, 240_000);
  say({ event: "opened", page: page.url(), frame: frame.url() });
  await page.reload();
  frame = await lab(page, 60_000);
  say({ event: "reopened", page: page.url(), frame: frame.url() });
} catch (error) {
  say({ event: "error", message: String(error) });
  process.exitCode = 1;
} finally {
  await browser.close();
  process.exit();
}
