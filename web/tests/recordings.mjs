// Drives Debian's chromium (headless, Playwright) through the console's recordings player for
// the Rust integration tests: an auditor signs in, opens a session's recording with a reason,
// seeks to a share of its length (a frame is drawn from the segment's own start), plays and
// pauses.
//
//   node web/tests/recordings.mjs <gateway-base-url> <user> <password> <session-id> <reason> <share 0..1> <screenshot-dir>
//   → {"event":"segments","segments":N}
//   → {"event":"seeked","at":"…","drawn":P,"yellow":Y,"width":W,"height":H}  (screenshot recording-middle.png;
//                                      Y: pixels of Python-logo yellow, JupyterLab's launcher drawn)
//   → {"event":"played","before":A,"after":B}
import { chromium } from "playwright-core";
import { steadyGoto } from "./steady.mjs";

const [base, user, password, session, reason, share, shots] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => say({ event: "pageerror", message: String(e) }));
  await steadyGoto(page, `${base}/console#recordings`);
  await page.fill("#user", user);
  await page.fill("#password", password);
  await page.click("#go");
  await page.waitForSelector("#recording-session", { state: "visible", timeout: 30_000 });
  await page.fill("#recording-session", session);
  await page.fill("#recording-why", reason);
  await page.click("#recording-go");
  await page.waitForSelector("#recording-segments td", { timeout: 30_000 });
  const segments = await page.$$eval("#recording-segments tr", (rows) => rows.length - 1);
  await page.waitForFunction(() => document.getElementById("recording-at").textContent.includes("segment"), null, { timeout: 30_000 });
  say({ event: "segments", segments });

  // Seek: the segment there replays from its own handshake and first frame.
  const max = Number(await page.getAttribute("#recording-seek", "max"));
  const target = Math.floor(max * Number(share));
  await page.$eval("#recording-seek", (range, value) => { range.value = String(value); range.dispatchEvent(new Event("change")); }, target);
  await page.waitForFunction((at) => Number(document.getElementById("recording-seek").value) >= at - 100, target, { timeout: 30_000 });
  // Pixels drawn: those of the canvas that are not the empty canvas's black.
  const drawn = () => page.$eval("#recording-screen canvas", (canvas) => {
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let lit = 0;
    let yellow = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i] || data[i + 1] || data[i + 2]) lit += 1;
      if (data[i] > 220 && data[i + 1] > 180 && data[i + 2] < 120) yellow += 1;
    }
    return { lit, yellow, width: canvas.width, height: canvas.height };
  });
  await page.waitForFunction(() => {
    const canvas = document.querySelector("#recording-screen canvas");
    return canvas && canvas.width > 0;
  }, null, { timeout: 30_000 });
  // noVNC draws on the next animation frames; wait (a while, on a loaded machine) for pixels.
  await page.waitForFunction(() => {
    const canvas = document.querySelector("#recording-screen canvas");
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let lit = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i] || data[i + 1] || data[i + 2]) lit += 1;
    return lit > 1000;
  }, null, { timeout: 15_000, polling: 200 }).catch(() => {});
  const frame = await drawn();
  await page.screenshot({ path: `${shots}/recording-middle.png` });
  say({ event: "seeked", at: await page.textContent("#recording-at"), drawn: frame.lit, yellow: frame.yellow, width: frame.width, height: frame.height });

  const before = Number(await page.$eval("#recording-seek", (r) => r.value));
  await page.click("#recording-play");
  await page.waitForTimeout(1500);
  await page.click("#recording-pause");
  const after = Number(await page.$eval("#recording-seek", (r) => r.value));
  say({ event: "played", before, after });
} finally {
  await browser.close();
}
