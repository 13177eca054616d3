// Drives Debian's chromium (headless, Playwright) through the airlock for the Rust integration
// tests: a researcher asks, in her session page's My Files, for results.csv to leave; two
// reviewers approve it in the console's review queue (one previews the table first), the
// second releases it, and the researcher downloads it from the portal's "My requests".
//
//   node web/tests/airlock.mjs <gateway-base-url> <session-cookie> <researcher> <reviewer-1> <reviewer-2> <password> <screenshot-dir>
//   → {"event":"exported","note":"…","request":"…"}  what My Files said (airlock-export.png)
//   → {"event":"preview","cells":[["…"]]}     the table as reviewer 1 previews it (airlock-preview.png)
//   → {"event":"before","reviewer":"…","votes":"…"}  the votes a reviewer sees before voting
//   → {"event":"voted","reviewer":"…","state":"…"}  after each reviewer's vote
//   → {"event":"released","state":"…"}        (airlock-released.png)
//   → {"event":"requests","text":"…"}         the researcher's "My requests" (airlock-portal.png)
//   → {"event":"downloaded","name":"…","text":"…"}  the file the portal's Download button saved
import { readFile } from "node:fs/promises";
import { chromium } from "playwright-core";
import { steadyGoto } from "./steady.mjs";

const [base, cookie, researcher, first, second, password, shots] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });

async function signIn(page, path, user) {
  await steadyGoto(page, `${base}${path}`);
  await page.fill("#user", user);
  await page.fill("#password", password);
  await page.click(path.startsWith("/console") ? "#signin-form button" : "#go");
}

// The request's row in the review queue, and its state as shown.
const row = (page) => page.locator("#airlock tr", { hasText: request });
const state = async (page) => (await row(page).locator("td").nth(5).textContent()).trim();

// The request the researcher makes from her session.
let request = null;

try {
  {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const [name, ...value] = cookie.split("=");
    await context.addCookies([{ name, value: value.join("="), url: base }]);
    const page = await context.newPage();
    // The page asks why the file should leave; her reviewers read the answer.
    page.on("dialog", (dialog) => dialog.accept("the tables of the paper"));
    await steadyGoto(page, `${base}/session`);
    await page.click("#my-files");
    await page.click('#file-list button.export[data-name="results.csv"]', { timeout: 30_000 });
    await page.waitForFunction(() => /\(([^)]+)\)/.test(document.querySelector("#file-note small").textContent), null, { timeout: 60_000 });
    const note = await page.textContent("#file-note small");
    request = note.match(/\(([^)]+)\)/)[1];
    await page.screenshot({ path: `${shots}/airlock-export.png` });
    say({ event: "exported", note, request });
    await context.close();
  }
  for (const [reviewer, index] of [[first, 0], [second, 1]]) {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    await signIn(page, "/console#airlock", reviewer);
    await row(page).waitFor({ timeout: 30_000 });
    if (index === 0) {
      await row(page).locator("td").nth(6).locator("button").first().click();
      await page.waitForSelector("#airlock-table td", { timeout: 30_000 });
      const cells = await page.$$eval("#airlock-table tr", (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
      await page.screenshot({ path: `${shots}/airlock-preview.png`, fullPage: true });
      say({ event: "preview", cells });
    }
    // Before voting, a reviewer sees how many voted, not who or how.
    say({ event: "before", reviewer, votes: await row(page).locator("td").nth(8).textContent() });
    await row(page).getByText("approve", { exact: true }).click();
    // The first vote shows as one cast (whose, hidden); the last decides the request.
    await page.waitForFunction(([id, first]) => [...document.querySelectorAll("#airlock tr")].some((r) =>
      r.textContent.includes(id) && (first ? r.cells[8].textContent.startsWith("1 cast") : r.cells[5].textContent === "approved")), [request, index === 0], { timeout: 30_000 });
    say({ event: "voted", reviewer, state: await state(page), votes: await row(page).locator("td").nth(8).textContent() });
    if (index === 1) {
      await row(page).getByText("release", { exact: true }).click();
      await page.waitForFunction((id) => [...document.querySelectorAll("#airlock tr")].some((r) => r.textContent.includes(id) && r.cells[5].textContent === "released"), request, { timeout: 30_000 });
      await page.screenshot({ path: `${shots}/airlock-released.png`, fullPage: true });
      say({ event: "released", state: await state(page) });
    }
    await context.close();
  }

  const context = await browser.newContext({ viewport: { width: 1100, height: 800 }, acceptDownloads: true });
  const page = await context.newPage();
  await signIn(page, "/portal", researcher);
  await page.waitForSelector(`#requests [data-request="${request}"] button`, { timeout: 30_000 });
  await page.screenshot({ path: `${shots}/airlock-portal.png`, fullPage: true });
  say({ event: "requests", text: await page.textContent("#requests") });
  const [download] = await Promise.all([page.waitForEvent("download", { timeout: 30_000 }), page.click(`#requests [data-request="${request}"] button`)]);
  const text = await readFile(await download.path(), "utf8");
  say({ event: "downloaded", name: download.suggestedFilename(), text });
} catch (error) {
  say({ event: "error", message: String(error) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
