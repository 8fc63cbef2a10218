// Drives the dashboard in headless chromium for test_dashboard.py:
//   node drive.mjs URL SCREENSHOT.png RUN_DIR[,RUN_DIR...] HELD_STEP MAX_STEPS
// Each run is held before HELD_STEP (pause fault) after one injected crash. The page must
// show every run's loss curve up to the held step and the crash as a restart marker on the
// curves; then the runs are released (RUN_DIR/faults.release) and the curves must grow to
// MAX_STEPS without a reload. Prints what it saw as JSON; exit 0 when all of it held.
import fs from "node:fs";
import puppeteer from "puppeteer-core";

const [url, shot, dirs, heldArg, maxArg] = process.argv.slice(2);
const runDirs = dirs.split(","), held = +heldArg, max = +maxArg;
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu"],
});
const errors = [];
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => errors.push(e.message));
  await page.setViewport({ width: 1400, height: 1000 });
  await page.goto(url);
  // No timing in the test: each wait is for something the run or the page does.
  const wait = (fn, arg) => page.waitForFunction(fn, { timeout: 0, polling: 200 }, arg);
  const lossPoints = (i) => page.evaluate((i) => {
    const d = window.tandemDashboard.data[i];
    return d ? d.metrics.filter((m) => m.loss != null).length : 0;
  }, i);
  for (let i = 0; i < runDirs.length; ++i) {
    await wait((a) => {
      const d = window.tandemDashboard.data[a.i];
      return d && d.metrics.filter((m) => m.loss != null).length >= a.held - 1;
    }, { i, held });
    await wait((name) => document.querySelectorAll(
      `#chart-loss .marker[data-kind="restart"][data-run="${name}"]`).length > 0,
      runDirs[i].split("/").filter(Boolean).pop());
  }
  const before = [];
  for (let i = 0; i < runDirs.length; ++i) before.push(await lossPoints(i));
  for (const d of runDirs) fs.writeFileSync(d + "/faults.release", "");
  for (let i = 0; i < runDirs.length; ++i)
    await wait((a) => {
      const d = window.tandemDashboard.data[a.i];
      return d && d.metrics.filter((m) => m.loss != null).length >= a.max;
    }, { i, max });
  // One more poll after the last step, so the status panel says finished.
  await wait((n) => window.tandemDashboard.runs.every((r) => r.status && r.status.state === "finished"));
  const after = [];
  for (let i = 0; i < runDirs.length; ++i) after.push(await lossPoints(i));
  const seen = await page.evaluate(() => ({
    legend: [...document.querySelectorAll("#chart-loss .u-legend .u-label")].map((e) => e.textContent),
    restarts: [...document.querySelectorAll('#chart-loss .marker[data-kind="restart"]')].map((m) => m.dataset.run),
    states: window.tandemDashboard.runs.map((r) => r.status.state),
  }));
  // Hovering a marker shows its record.
  const marker = await page.$('#chart-loss .marker[data-kind="restart"]');
  await marker.hover();
  const tip = await page.$eval("#tip", (t) => (t.hidden ? "" : t.textContent));
  await page.screenshot({ path: shot, fullPage: false });
  console.log(JSON.stringify({ before, after, ...seen, tip, errors }));
  const ok = before.every((b, i) => after[i] > b && after[i] >= max) && errors.length === 0 &&
    tip.includes("restart");
  process.exitCode = ok ? 0 : 1;
} finally {
  await browser.close();
}
