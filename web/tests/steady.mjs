// Chromium aborts every load in flight when the host's addresses change (net::ERR_NETWORK_CHANGED),
// and the tests that run beside a browser test add and remove veths all the time. A page whose
// own load was cut that way has often arrived all the same (what the caller waits for next
// judges that); one that has not is loaded again, at most five times. Any other failure is
// the caller's.
export async function steadyGoto(page, url) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await page.goto(url);
    } catch (error) {
      if (!String(error).includes("ERR_NETWORK_CHANGED") || attempt >= 5) throw error;
      if (page.url() !== "about:blank") return null;
      await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
    }
  }
}
