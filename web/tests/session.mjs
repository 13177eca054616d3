// Drives a real browser (Debian's chromium, headless, through Playwright) for the Rust
// integration tests: it opens a streaming URL and answers commands read line by line on
// standard input, reporting JSON lines on standard output.
//
//   node web/tests/session.mjs <streaming-url>
//   → {"event":"streaming"}            once the session page shows the instance's display
//   ← shot <path.png>                  screenshot of the page
//   → {"event":"shot","colors":N,"yellow":Y,"state":S,"closed":C}
//                                      N distinct colours sampled from the display's canvas, Y
//                                      pixels of Python-logo yellow (JupyterLab's launcher drawn),
//                                      S the page's state line, C WebSockets closed so far
//   ← reload                           reloads the page (it lives at /session once the URL is spent)
//   → {"event":"reloaded","url":"…"}   once the display streams again
//   ← paste <text>                     types the text into the clipboard box, presses "Paste into workspace"
//   → {"event":"pasted"}
//   ← end                              presses "End session"
//   → {"event":"ended","text":"…"}     once the page says the session ended
import { chromium } from "playwright-core";
import { steadyGoto } from "./steady.mjs";
import readline from "node:readline";

const [url] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // The tests run as root, where Chromium's own sandbox cannot start.
  args: ["--no-sandbox"],
});
// What the page said and did, for the error report of a run that fails.
const seen = [];
let closed = 0;
let page = null;
try {
  page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.on("pageerror", (error) => say({ event: "pageerror", message: String(error) }));
  page.on("console", (message) => seen.push(`console ${message.type()}: ${message.text()}`.slice(0, 300)));
  page.on("websocket", (socket) => {
    seen.push(`websocket ${socket.url()}`);
    socket.on("close", () => {
      closed += 1;
      seen.push(`websocket closed ${socket.url()}`);
    });
  });
  page.on("requestfailed", (request) => seen.push(`failed ${request.url()}: ${request.failure()?.errorText}`));
  await steadyGoto(page, url);
  await page.waitForSelector("#screen canvas", { timeout: 180_000 });
  await page.waitForFunction(() => document.getElementById("state").textContent === "Streaming", null, { timeout: 180_000 });
  say({ event: "streaming" });
  for await (const line of readline.createInterface({ input: process.stdin })) {
    const [command, argument] = line.trim().split(/\s+/, 2);
    if (command === "shot") {
      await page.screenshot({ path: argument });
      const { colors, yellow } = await page.evaluate(() => {
        const canvas = document.querySelector("#screen canvas");
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        const seen = new Set();
        let yellow = 0;
        for (let i = 0; i < data.length; i += 4) {
          if (i % (4 * 97) === 0) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
          if (data[i] > 220 && data[i + 1] > 180 && data[i + 2] < 120) yellow += 1;
        }
        return { colors: seen.size, yellow };
      });
      say({ event: "shot", colors, yellow, state: await page.textContent("#state"), closed });
    } else if (command === "reload") {
      await page.reload();
      await page.waitForSelector("#screen canvas", { timeout: 60_000 });
      await page.waitForFunction(() => document.getElementById("state").textContent === "Streaming", null, { timeout: 60_000 });
      say({ event: "reloaded", url: page.url() });
    } else if (command === "paste") {
      await page.fill("#clip", line.trim().slice("paste ".length));
      await page.click("#paste");
      say({ event: "pasted" });
    } else if (command === "end") {
      await page.click("#end");
      await page.waitForFunction(() => document.getElementById("state").textContent === "Ended", null, { timeout: 60_000 });
      say({ event: "ended", text: await page.textContent("#detail") });
    } else if (command === "quit") {
      break;
    }
  }
} catch (error) {
  // The page as it was: its state and detail lines, and the last of what it logged.
  const text = async (selector) => (page ? await page.textContent(selector).catch(() => null) : null);
  say({ event: "error", message: String(error), state: await text("#state"), detail: await text("#detail"), seen: seen.slice(-40) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
