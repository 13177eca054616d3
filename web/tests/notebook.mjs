// Drives Debian's chromium (headless, Playwright) for the Rust integration tests: opens a
// DIRECT session's streaming URL, whose page frames the notebook from the notebook origin
// (another port than the page's), waits for JupyterLab to be drawn in the frame, then
// reloads the page (the presigned URL is spent by then) and waits for it again; then opens a
// new notebook from JupyterLab's launcher, runs a cell in it, and reads what the cell printed
// and whether JupyterLab offers its debugger for the kernel.
//
//   DATASANDBOX_ARTIFACTS=<screenshot-dir> node web/tests/notebook.mjs <streaming-url>
//   → {"event":"opened","page":"…","frame":"…"}    JupyterLab drawn in the frame
//   → {"event":"reopened","page":"…","frame":"…"}  the same after a reload
//   → {"event":"ran","cell":"…","output":"…","attempts":n,"debugger":{"shown":…,"enabled":…},"channelsClosed":n}
//     (notebook-cell.png)
// A failure leaves notebook-error.png.
import { chromium } from "playwright-core";
import { steadyGoto } from "./steady.mjs";

const [url] = process.argv.slice(2);
const shots = process.env.DATASANDBOX_ARTIFACTS || "/tmp";
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

/// Opens a new notebook from the launcher, runs `cell` in its first cell and waits for its
/// output; what the cell printed, and JupyterLab's debugger button for the kernel.
async function run(page, frame, cell) {
  await frame.locator('.jp-LauncherCard[data-category="Notebook"]').first().click({ timeout: 60_000 });
  // The notebook shown (the launcher's panel is hidden behind it).
  const notebook = (selector) => frame.locator(`.jp-NotebookPanel:not(.lm-mod-hidden) ${selector}`).first();
  const editor = notebook(".jp-Cell .cm-content");
  await editor.waitFor({ timeout: 60_000 });
  // A cell run before the notebook is connected to its kernel, or before what was typed has
  // reached the notebook's model, is dropped without a word: its prompt stays `[ ]`. Once the
  // kernel says idle, the cell is run again while that is so, three tries at most; a run under
  // way (`[*]`) is waited for, never sent again.
  await notebook('.jp-Notebook-ExecutionIndicator[data-status="idle"]').waitFor({ timeout: 120_000 });
  await editor.click();
  await page.keyboard.type(cell);
  const output = notebook(".jp-OutputArea-output");
  const prompt = notebook(".jp-Cell .jp-InputArea-prompt");
  let attempts = 0;
  for (;;) {
    attempts++;
    await editor.click();
    await page.keyboard.press("Shift+Enter");
    try {
      await output.waitFor({ timeout: 20_000 });
      break;
    } catch {
      const dropped = (await prompt.innerText()).replace(/\s/g, "") === "[]:";
      if (!dropped || attempts >= 3) {
        await output.waitFor({ timeout: 100_000 });
        break;
      }
    }
  }
  // JupyterLab may change its mind about the debugger once the kernel has answered: the
  // button is read over two seconds, and counts as enabled if it ever is.
  const button = notebook(".jp-DebuggerBugButton");
  const shown = (await button.count()) > 0;
  let enabled = false;
  for (let read = 0; shown && read < 5; read++) {
    // A toolbar button JupyterLab disables is a disabled <button> (or <jp-button>) inside it.
    enabled ||= await button.evaluate((el) => {
      const inner = el.querySelector("button, jp-button") || el;
      return !(inner.disabled || inner.getAttribute("aria-disabled") === "true" || el.classList.contains("lm-mod-disabled"));
    });
    await page.waitForTimeout(500);
  }
  return { output: (await output.innerText()).trim(), attempts, debugger: { shown, enabled } };
}

let channelsClosed = 0;
const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
try {
  // A kernel's channels the proxy closed (a refusal, a trail it could not write) would be
  // opened again by JupyterLab and hidden by a run that then passes: each close is counted.
  page.on("websocket", (socket) => {
    if (socket.url().includes("/channels")) socket.on("close", () => channelsClosed++);
  });
  page.on("pageerror", (error) => say({ event: "pageerror", message: String(error) }));
  await steadyGoto(page, url);
  let frame = await lab(page, 240_000);
  say({ event: "opened", page: page.url(), frame: frame.url() });
  // The reload closes whatever channels the first page had opened: those closes are the
  // test's own, not the proxy's, and are not counted.
  await page.reload();
  channelsClosed = 0;
  frame = await lab(page, 60_000);
  say({ event: "reopened", page: page.url(), frame: frame.url() });
  const cell = "print(6 * 7)";
  const ran = await run(page, frame, cell);
  await page.screenshot({ path: `${shots}/notebook-cell.png` });
  say({ event: "ran", cell, ...ran, channelsClosed });
} catch (error) {
  say({ event: "error", message: String(error) });
  await page.screenshot({ path: `${shots}/notebook-error.png` }).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
  process.exit();
}
