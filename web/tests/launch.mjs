// What the portal's browser tests share: launch the catalog's first stack and wait for its
// session page to stream; the page's screenshot is `<shots>/<name>.png`.
export async function launchFirstStack(page, shots, name) {
  await page.click("#stacks button");
  await page.waitForURL(/\/session$/, { timeout: 30_000 });
  await page.waitForFunction(() => ["Connected", "Streaming"].includes(document.getElementById("state")?.textContent), null, { timeout: 120_000 });
  await page.screenshot({ path: `${shots}/${name}.png` });
  return { event: "session", state: await page.textContent("#state"), url: page.url() };
}
