// The console page in a real headless Chromium (Debian's), driven by playwright-core.
//
// Usage: node console.test.js BASE_URL SCREENSHOT_PATH
// Checks: the page loads with no console errors and no failed or external requests; it lists a
// topic the test created through the API; a message sent through the form shows up when the
// queue is browsed; the live chart is drawn. Writes a screenshot. Prints `N passed, N failed`.
"use strict";

const { chromium } = require("playwright-core");

const base = process.argv[2];
const screenshot = process.argv[3];
if (!base || !screenshot) {
  console.error("usage: node console.test.js BASE_URL SCREENSHOT_PATH");
  process.exit(2);
}
const DEADLINE_MS = 15000;

async function api(method, path, body) {
  const r = await fetch(base + path, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!r.ok) throw new Error(method + " " + path + ": " + r.status + " " + (await r.text()));
  return r.json();
}

async function main() {
  const results = [];
  const check = (name, ok, detail) => {
    results.push({ name, ok });
    console.log((ok ? "ok   " : "FAIL ") + name + (detail ? ": " + detail : ""));
  };

  const topic = "browser_topic_" + Date.now().toString(36);
  await api("POST", "/v1/topics", { name: topic, queues: 2 });
  // A little traffic so the chart and the tables have something to show.
  await api("POST", "/v1/topics/" + topic + "/messages?visible=true",
    { messages: [{ queue_id: 1, tag: "Seed", body: "seeded 1" }, { queue_id: 1, tag: "Seed", body: "seeded 2" }] });
  // The group consumes one of the two: a lag of 1.
  await api("POST", "/v1/groups/browser_group/pull", { topic, queue_id: 1, max_messages: 1 });

  const userDataDir = require("fs").mkdtempSync(require("path").join(require("os").tmpdir(), "tern-chromium-"));
  // A fresh profile directory (playwright passes it as --user-data-dir).
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 1000 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const errors = [];
  const requests = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on("console", (m) => { if (m.type() === "error") errors.push("console: " + m.text()); });
    page.on("pageerror", (e) => errors.push("page error: " + e.message));
    page.on("requestfailed", (r) => errors.push("request failed: " + r.url() + " " + (r.failure() || {}).errorText));
    page.on("request", (r) => requests.push(r.url()));

    const resp = await page.goto(base + "/", { waitUntil: "load" });
    check("page answers 200", resp && resp.status() === 200, resp && String(resp.status()));

    await page.waitForFunction(() => document.getElementById("ready").textContent === "ready",
      null, { timeout: DEADLINE_MS });
    check("readiness is shown", true);

    // The topic created through the API is listed.
    const row = page.locator('#topics tr[data-topic="' + topic + '"]');
    await row.waitFor({ timeout: DEADLINE_MS });
    check("topic created by the test is listed", (await row.count()) === 1);

    // The group and its lag are listed.
    await page.locator("#groups tbody tr", { hasText: "browser_group" }).first().waitFor({ timeout: DEADLINE_MS });
    check("consumer group is listed", true);

    // Send a message through the form.
    await row.click();
    const body = "hello from the browser " + Date.now();
    await page.fill("#send-topic", topic);
    await page.fill("#send-queue", "0");
    await page.fill("#send-tag", "Browser");
    await page.fill("#send-keys", "bk1");
    await page.fill("#send-body", body);
    await page.click("#send-btn");
    await page.locator("#send-result.ok").waitFor({ timeout: DEADLINE_MS });
    const sent = await page.textContent("#send-result");
    check("form send succeeds", /sent: queue 0, offset 0/.test(sent), sent);

    // Browse the queue: the message is there.
    await page.selectOption("#browse-topic", topic);
    await page.selectOption("#browse-queue", "0");
    await page.fill("#browse-offset", "0");
    await page.click("#browse-btn");
    const cellWithBody = page.locator("#browse-table tbody td", { hasText: body });
    await cellWithBody.waitFor({ timeout: DEADLINE_MS });
    check("browsing the queue shows the sent message", (await cellWithBody.count()) === 1);
    const tagCell = page.locator("#browse-table tbody tr", { hasText: body }).locator("td").nth(1);
    check("the row shows the tag", (await tagCell.textContent()) === "Browser");

    // The live figures count the sends (two HTTP puts so far) and the chart is drawn.
    await page.waitForFunction(() => Number(document.getElementById("fig-puts").textContent) >= 2,
      null, { timeout: DEADLINE_MS });
    check("live put counter moves", true);

    // Traffic for the live chart: batches spread over about three seconds.
    for (let i = 0; i < 30; i++) {
      const batch = Array.from({ length: 20 }, (_, j) => ({ queue_id: 1, tag: "Load", body: "load " + i + "." + j }));
      await api("POST", "/v1/topics/" + topic + "/messages", { messages: batch });
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await page.waitForFunction(() => Number(document.getElementById("fig-rate").textContent) > 0,
      null, { timeout: DEADLINE_MS });
    check("live put rate is shown", true);
    await page.waitForFunction(() => {
      const c = document.getElementById("chart");
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) return true;
      return false;
    }, null, { timeout: DEADLINE_MS });
    check("chart is drawn", true);

    await page.screenshot({ path: screenshot, fullPage: true });
    check("screenshot written", require("fs").statSync(screenshot).size > 10000, screenshot);

    const external = requests.filter((u) => !u.startsWith(base) && !u.startsWith("data:"));
    check("no external requests", external.length === 0, external.join(", "));
    check("no console errors", errors.length === 0, errors.join(" | "));
  } finally {
    await context.close();
    require("fs").rmSync(userDataDir, { recursive: true, force: true });
  }
  const failed = results.filter((r) => !r.ok).length;
  console.log(`${results.length - failed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error("browser test crashed: " + (e && e.stack ? e.stack : e));
  console.log("0 passed, 1 failed");
  process.exit(1);
});
