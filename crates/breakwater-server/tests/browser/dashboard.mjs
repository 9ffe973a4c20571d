// Drives the gateway's live dashboard in headless chromium.
//
//   node dashboard.mjs <url of /dashboard?key=…> <screenshot.png>
//
// Checks, each polled with a deadline (never a fixed sleep): the key is
// exchanged for an HttpOnly SameSite=Strict cookie; the page connects to the
// event stream and explains the empty state; once traffic flows its numbers
// change over time and a tripped breaker shows as open; when the gateway
// stops, the page says the connection is lost; no script error happened.
// Saves a screenshot either way. Exit status 0 = every check passed
// (tests/dashboard.rs asserts it).
//
// Hand-shake with the Rust test on stdout: `READY-FOR-TRAFFIC` (start
// sending requests) and `READY-FOR-SHUTDOWN` (stop the gateway).
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node dashboard.mjs <dashboard url> <screenshot path>");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const overall = Date.now() + 60_000;

function log(msg) {
  console.log(`[${new Date().toISOString()}] ${msg}`);
}

/** Polls `probe` (async, returns a truthy value when done) until `ms` pass. */
async function until(what, probe, ms) {
  const deadline = Math.min(Date.now() + ms, overall);
  let last;
  while (Date.now() < deadline) {
    try {
      last = await probe();
      if (last) {
        log(`ok: ${what}`);
        return last;
      }
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for: ${what} (last: ${last})`);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const errors = [];
let page;
let failed = null;
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  page = await context.newPage();
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console error: ${m.text()}`);
  });

  const resp = await page.goto(url, { waitUntil: "domcontentloaded", timeout: 15_000 });
  if (!resp || resp.status() !== 200) throw new Error(`GET ${url} → ${resp && resp.status()}`);
  const here = new URL(page.url());
  if (here.search.includes("key=")) throw new Error(`the key stayed in the address bar: ${page.url()}`);

  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "bw_dashboard");
  if (!session) throw new Error(`no session cookie: ${JSON.stringify(cookies)}`);
  if (!session.httpOnly || session.sameSite !== "Strict") {
    throw new Error(`the session cookie must be HttpOnly and SameSite=Strict: ${JSON.stringify(session)}`);
  }
  if (await page.evaluate(() => document.cookie.includes("bw_dashboard"))) {
    throw new Error("the session cookie is readable from scripts");
  }
  log("ok: signed in with an HttpOnly SameSite=Strict cookie");

  await until("the event stream is live", async () => (await page.textContent("#conn")) === "live", 10_000);
  await until("the empty state explains what to do", async () =>
    (await page.isVisible("#banner-empty")) && (await page.textContent("#try-curl")).includes("/v1/chat/completions"), 5_000);
  console.log("READY-FOR-TRAFFIC");

  const read = async () => ({
    snapshots: Number(await page.getAttribute("body", "data-snapshots")),
    total: Number(((await page.textContent("#total-requests")) || "").replace(/,/g, "")),
    requests: await page.textContent("#requests"),
    rps: await page.textContent("#rps"),
  });
  const first = await until("a first snapshot with traffic", async () => {
    const r = await read();
    return r.snapshots >= 1 && r.total > 0 ? r : null;
  }, 15_000);
  log(`first: ${JSON.stringify(first)}`);
  // The numbers move: several later snapshots, each with more requests.
  let prev = first;
  for (let i = 0; i < 2; i++) {
    prev = await until(`the request count grows (${i + 1}/2)`, async () => {
      const r = await read();
      return r.snapshots > prev.snapshots && r.total > prev.total ? r : null;
    }, 10_000);
    log(`now: ${JSON.stringify(prev)}`);
  }
  await until("requests per second shows a positive number", async () => {
    const v = Number(((await page.textContent("#rps")) || "").replace(/,/g, ""));
    return v > 0;
  }, 10_000);

  const open = await until("a tripped breaker shows as open", async () => {
    const rows = await page.$$eval("#targets tr.target", (trs) =>
      trs.map((tr) => ({ target: tr.dataset.target, state: tr.dataset.state, badge: tr.querySelector(".badge")?.textContent })));
    return rows.find((r) => r.target === "bad/m" && r.state === "open" && r.badge === "open") ? rows : null;
  }, 15_000);
  log(`targets: ${JSON.stringify(open)}`);

  await until("the breaker change log lists the trip", async () => {
    const items = await page.$$eval("#changes li", (lis) => lis.map((li) => li.textContent));
    return items.some((t) => t.includes("bad/m") && t.includes("closed → open"));
  }, 5_000);
  await until("the retries chart has data", async () =>
    page.evaluate(() => document.getElementById("chart-retries").width > 0), 5_000);
  await until("the empty-state banner is gone", async () => page.isHidden("#banner-empty"), 5_000);
  if (errors.length) throw new Error(errors.join("\n"));
  await page.screenshot({ path: screenshot, fullPage: true });
  log(`screenshot: ${screenshot}`);

  console.log("READY-FOR-SHUTDOWN");
  await until("a stopped gateway shows as a lost connection", async () =>
    (await page.isVisible("#banner-lost")) && (await page.textContent("#conn")).includes("connection lost"), 15_000);
  // The browser's own failed reconnects are logged as console errors; they
  // are expected now.
} catch (e) {
  failed = e;
} finally {
  if (page && failed) {
    try {
      await page.screenshot({ path: screenshot, fullPage: true });
      log(`screenshot: ${screenshot}`);
    } catch (e) {
      console.error(`screenshot failed: ${e}`);
    }
  }
  await browser.close();
}
if (failed) {
  console.error(`FAILED: ${failed.stack || failed}`);
  process.exit(1);
}
log("all checks passed");
