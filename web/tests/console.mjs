// Drives Debian's chromium (headless, Playwright) through the operator console for the Rust
// integration tests: SAML sign-in (the IdP signs in an operator holding the admin role) →
// fleets → nodes → a streaming URL, opened in a second tab → the session in the console's list →
// its trace → expire → trail validation.
//
//   node web/tests/console.mjs <gateway-base-url> <user-id> <screenshot-dir>
//   → {"event":"fleets","fleets":["…"]}          (screenshot console-fleets.png)
//   → {"event":"nodes","nodes":[["name","state"]]} (screenshot console-nodes.png)
//   → {"event":"url","url":"…"}
//   → {"event":"trace","session":"…","actions":["…"]} (screenshot console-trace.png)
//   → {"event":"expired","session":"…"}
//   → {"event":"trail","text":"…"}              (screenshot console-trail.png)
//   → {"event":"report","name":"…","text":"…"}  today's sessions report, generated and downloaded
import { chromium } from "playwright-core";
import { steadyGoto } from "./steady.mjs";

const [base, user, shots] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await steadyGoto(page, `${base}/console`);
  await page.click("#saml");
  await page.waitForURL(`${base}/console`, { timeout: 30_000 });
  await page.waitForSelector("#fleets td", { timeout: 30_000 });
  const fleets = await page.$$eval("#fleets tr", (rows) => rows.slice(1).map((r) => r.cells[0].textContent));
  await page.screenshot({ path: `${shots}/console-fleets.png` });
  say({ event: "fleets", fleets });

  await page.click("[data-tab=nodes]");
  await page.waitForSelector("#nodes td", { timeout: 30_000 });
  const nodes = await page.$$eval("#nodes tr", (rows) => rows.slice(1).map((r) => [r.cells[0].textContent, r.cells[1].textContent]));
  await page.screenshot({ path: `${shots}/console-nodes.png` });
  say({ event: "nodes", nodes });

  await page.click("[data-tab=urls]");
  await page.waitForSelector("#url-stack option", { state: "attached", timeout: 30_000 });
  await page.fill("#url-user", user);
  await page.click("#url-go");
  await page.waitForFunction(() => document.getElementById("url").textContent.includes("/streaming/"), null, { timeout: 30_000 });
  const url = await page.textContent("#url");
  say({ event: "url", url });

  // The user opens it in their own browser tab.
  const other = await browser.newPage();
  await steadyGoto(other, url);
  await other.waitForFunction(() => ["Connected", "Streaming"].includes(document.getElementById("state")?.textContent), null, { timeout: 120_000 });

  await page.click("[data-tab=sessions]");
  const row = page.locator("#sessions tr", { hasText: user });
  await row.first().waitFor({ timeout: 30_000 });
  const session = await row.first().locator("td").first().textContent();
  await row.first().getByText("Trace").click();
  await page.waitForFunction(() => document.querySelectorAll("#trace tr").length > 2, null, { timeout: 30_000 });
  const actions = await page.$$eval("#trace tr", (rows) => rows.slice(1).map((r) => r.cells[2].textContent));
  await page.screenshot({ path: `${shots}/console-trace.png`, fullPage: true });
  say({ event: "trace", session, actions });

  await page.click("[data-tab=sessions]");
  await row.first().waitFor({ timeout: 30_000 });
  await row.first().getByText("Expire").click();
  await page.waitForFunction((u) => ![...document.querySelectorAll("#sessions tr")].some((r) => r.textContent.includes(u)), user, { timeout: 30_000 });
  say({ event: "expired", session });

  await page.click("[data-tab=trail]");
  await page.click("#validate");
  await page.waitForFunction(() => !["", "Validating…"].includes(document.getElementById("validity").textContent), null, { timeout: 60_000 });
  await page.screenshot({ path: `${shots}/console-trail.png`, fullPage: true });
  say({ event: "trail", text: await page.textContent("#validity") });

  // Today's usage reports: generated (once the ended session is on the record) and downloaded.
  await page.click("[data-tab=reports]");
  const report = page.locator("#reports tr", { hasText: "daily-session-report" });
  for (let i = 0; i < 30 && !(await report.count()); i++) {
    await page.click("#report-form button");
    await page.waitForTimeout(1000);
  }
  const [download] = await Promise.all([page.waitForEvent("download"), report.first().getByText("Download").click()]);
  const saved = `${shots}/${download.suggestedFilename()}`;
  await download.saveAs(saved);
  const { readFileSync } = await import("node:fs");
  say({ event: "report", name: download.suggestedFilename(), text: readFileSync(saved, "utf8") });
} catch (error) {
  say({ event: "error", message: String(error) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
