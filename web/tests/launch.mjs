// What the portal's browser tests share: launch the catalog's first stack and wait for its
// session page to stream; the page's screenshot is `<shots>/<name>.png`.
export async function launchFirstStack(page, shots, name) {
  const logged = [];
  page.on("console", (message) => logged.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => logged.push(`error: ${error.message}`));
  await page.click("#stacks button");
  await page.waitForURL(/\/session$/, { timeout: 30_000 });
  await page
    .waitForFunction(() => ["Connected", "Streaming"].includes(document.getElementById("state")?.textContent), null, { timeout: 120_000 })
    .catch(async (error) => {
      const shown = await page.evaluate(() => `${document.getElementById("state")?.textContent} / ${document.getElementById("detail")?.textContent}`);
      throw new Error(`${error.message}; the session page shows: ${shown}; its console: ${logged.join(" | ")}`);
    });
  await page.screenshot({ path: `${shots}/${name}.png` });
  return { event: "session", state: await page.textContent("#state"), url: page.url() };
}
