// The dashboard page: polls /api/runs (status) and /api/runs/I/data (new metrics, timing and
// event records since the offsets it has) about once a second and draws them with uPlot.
"use strict";

const KEY = new URLSearchParams(location.hash.slice(1)).get("key");
const HEADERS = KEY ? { Authorization: "Bearer " + KEY } : {};
const COLORS = ["#2e86de", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"];
// Events drawn on the curves (the rest are listed only).
const MARKED = new Set(["restart", "hang", "rollback", "batch_skipped", "transient_fault",
  "replay_check", "checkpoint_saved", "collective_failed", "regroup", "regroup_restart",
  "anomaly", "hard_batch", "rank_diverged", "straggler", "diagnosis"]);
const CHARTS = [
  { id: "loss", title: "Loss", series: [["m", "loss", "loss"], ["m", "val_loss", "val loss"]], logy: true },
  { id: "lr", title: "Learning rate", series: [["m", "lr", "lr"]] },
  { id: "grad", title: "Gradient norm", series: [["m", "grad_norm", "grad norm"]] },
  { id: "tps", title: "Tokens/s", series: [["t", "tokens_per_s", "tokens/s"]] },
  { id: "reward", title: "Reward (RL)", series: [["m", "reward_mean", "reward"], ["m", "val_reward", "held-out"]],
    perVerifier: true },
  { id: "kl", title: "KL to the reference (RL)", series: [["m", "kl", "KL"]] },
  { id: "len", title: "Completion length (RL)", series: [["m", "completion_len", "length"]] },
];

const state = { runs: [], data: [], charts: {}, xmode: "step", smooth: 0, logy: true, polls: 0 };
window.tandemDashboard = state;  // for tests and the curious

function runData(i) {
  if (!state.data[i]) state.data[i] = { metrics: [], timing: [], events: [], offsets: {} };
  return state.data[i];
}

async function getJSON(url) {
  const r = await fetch(url, { headers: HEADERS, cache: "no-store" });
  if (!r.ok) throw new Error(url + ": HTTP " + r.status + " " + (await r.text()));
  return r.json();
}

// step -> x in the chosen mode, from the run's timing records (the last record of a step wins:
// a step redone after a crash appears twice).
function xMapper(d) {
  if (state.xmode === "step") return (s) => s;
  const byStep = new Map();
  for (const t of d.timing) byStep.set(t.step, t);
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  const val = new Map();
  let tokens = 0;
  const t0 = d.timing.length ? d.timing[0].t - d.timing[0].step_s : 0;
  for (const s of steps) {
    const t = byStep.get(s);
    tokens += t.tokens_per_s * t.step_s;
    val.set(s, state.xmode === "tokens" ? tokens : t.t - t0);
  }
  return (s) => (val.has(s) ? val.get(s) : null);
}

// Tick labels that fit: 3 significant digits, exponents for the very small and large.
function fmt(v) {
  if (v == null) return "";
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a < 1e-3 || a >= 1e6) return v.toExponential(1);
  if (a >= 1000) return (v / 1000).toPrecision(3).replace(/\.?0+$/, "") + "k";
  return String(+v.toPrecision(3));
}

function smooth(ys) {
  const a = state.smooth;
  if (!a) return ys;
  let m = null;
  return ys.map((y) => (y == null ? null : (m = m == null ? y : a * m + (1 - a) * y)));
}

// The step an event belongs to: its own, or the newest step committed before it happened.
function eventStep(e, d) {
  if (e.step != null) return e.step;
  if (e.from_step != null) return e.from_step;
  let best = null;
  for (const t of d.timing) if (t.t <= e.t) best = t.step;
  return best;
}

// A chart's series for one run: its fixed ones, and for the reward one mean per verifier.
function seriesOf(chart, d) {
  const out = chart.series.slice();
  if (chart.perVerifier) {
    const names = new Set();
    for (const r of d.metrics) if (r.rewards) for (const k of Object.keys(r.rewards)) names.add(k);
    for (const k of [...names].sort()) out.push(["m", "rewards." + k + ".mean", k]);
  }
  return out;
}

function field(r, key) {
  let v = r;
  for (const part of key.split(".")) v = v == null ? null : v[part];
  return typeof v === "number" ? v : null;
}

function tableFor(chart, i) {
  const d = runData(i), fx = xMapper(d);
  const cols = seriesOf(chart, d).map(([src, key]) => {
    const recs = src === "m" ? d.metrics : d.timing, m = new Map();
    for (const r of recs) {
      const v = field(r, key);
      if (v != null) m.set(r.step, v);
    }
    return m;
  });
  const steps = [...new Set(cols.flatMap((m) => [...m.keys()]))].sort((a, b) => a - b);
  const xs = [], ys = cols.map(() => []);
  for (const s of steps) {
    const x = fx(s);
    if (x == null) continue;
    xs.push(x);
    cols.forEach((m, k) => ys[k].push(m.has(s) ? m.get(s) : null));
  }
  return [xs, ...ys.map(smooth)];
}

function buildChart(chart) {
  const el = document.getElementById("chart-" + chart.id);
  const tables = [], series = [{ label: state.xmode }];
  state.runs.forEach((run, i) => {
    if (run.error) return;
    const t = tableFor(chart, i);
    if (t[0].length === 0 || t.slice(1).every((c) => c.every((v) => v == null))) return;
    tables.push(t);
    seriesOf(chart, runData(i)).forEach(([, , label], k) => series.push({
      label: run.name + " " + label,
      stroke: COLORS[i % COLORS.length], width: k === 0 ? 1.5 : 2.5, dash: k === 0 ? undefined : [6, 3],
      spanGaps: true, points: { show: label === "held-out" || label === "val loss" },
      value: (u, v) => (v == null ? "-" : Math.abs(v) >= 1000 ? v.toFixed(0) : v.toPrecision(4)),
    }));
  });
  const body = el.querySelector(".plot");
  if (tables.length === 0) {
    if (state.charts[chart.id]) { state.charts[chart.id].destroy(); delete state.charts[chart.id]; }
    body.innerHTML = '<div class="empty">no data yet</div>';
    el.hidden = chart.id !== "loss";
    return;
  }
  el.hidden = false;
  const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
  const key = JSON.stringify([series.map((s) => s.label), state.xmode, state.logy]);
  let u = state.charts[chart.id];
  if (u && u._key === key) {
    u.setData(data);
    return;
  }
  if (u) u.destroy();
  body.innerHTML = "";
  const logy = chart.logy && state.logy && data.slice(1).every((c) => c.every((v) => v == null || v > 0));
  u = new uPlot({
    width: Math.max(400, body.clientWidth || 560), height: 240, series,
    scales: { x: { time: false }, y: logy ? { distr: 3 } : {} },
    axes: [{ label: state.xmode === "time" ? "wall time (s)" : state.xmode,
             values: (u, vals) => vals.map(fmt) },
           { size: 70, values: (u, vals) => vals.map(fmt) }],
    hooks: { draw: [(u) => placeMarkers(u, chart)] },
  }, data, body);
  u._key = key;
  state.charts[chart.id] = u;
}

function placeMarkers(u, chart) {
  const el = document.getElementById("chart-" + chart.id);
  el.querySelectorAll(".marker").forEach((m) => m.remove());
  const over = u.over, top = over.offsetTop, left = over.offsetLeft, h = over.clientHeight;
  state.runs.forEach((run, i) => {
    if (run.error) return;
    const d = runData(i), fx = xMapper(d);
    for (const e of d.events) {
      if (!MARKED.has(e.event)) continue;
      if (e.event === "replay_check" && e.match !== false) continue;
      const s = eventStep(e, d);
      const x = s == null ? null : fx(s);
      if (x == null) continue;
      const px = u.valToPos(x, "x");
      if (!(px >= 0 && px <= over.clientWidth)) continue;
      const m = document.createElement("div");
      m.className = "marker";
      m.dataset.kind = e.event;
      m.dataset.run = run.name;
      m.style.left = left + px + "px";
      m.style.top = top + "px";
      m.style.height = h + "px";
      m.addEventListener("mouseenter", (ev) => showTip(ev, run.name, e));
      m.addEventListener("mouseleave", hideTip);
      el.appendChild(m);
    }
  });
}

function showTip(ev, name, e) {
  const tip = document.getElementById("tip");
  tip.textContent = name + "\n" + JSON.stringify(e, null, 1);
  tip.style.left = Math.min(ev.clientX + 12, innerWidth - 540) + "px";
  tip.style.top = ev.clientY + 12 + "px";
  tip.hidden = false;
}
function hideTip() { document.getElementById("tip").hidden = true; }

function renderRuns() {
  const box = document.getElementById("runs");
  box.innerHTML = "";
  state.runs.forEach((run, i) => {
    const div = document.createElement("div");
    div.className = "run" + (run.error ? " error" : "");
    div.style.borderLeftColor = COLORS[i % COLORS.length];
    div.dataset.run = run.name;
    const h = document.createElement("h3");
    h.textContent = run.name;
    div.appendChild(h);
    if (run.error) {
      const p = document.createElement("div");
      p.className = "err";
      p.textContent = run.error;
      div.appendChild(p);
    } else {
      const st = run.status, ws = st.world_sizes || [];
      const rows = [
        ["state", st.state], ["steps", st.steps_done + " / " + st.max_steps],
        ["restarts", st.restarts], ["rollbacks", st.rollbacks], ["skipped", st.skipped_batches],
        ["goodput", (100 * run.goodput).toFixed(1) + " %"],
        ["checkpoint", st.last_checkpoint || "none yet"],
        ["ranks", ws.length ? ws[ws.length - 1].ranks : 1], ["hardware", run.backend || "?"],
      ];
      const dl = document.createElement("dl");
      for (const [k, v] of rows) {
        const dt = document.createElement("dt"), dd = document.createElement("dd");
        dt.textContent = k;
        dd.textContent = v;
        dd.dataset.field = k;
        dl.append(dt, dd);
      }
      div.appendChild(dl);
    }
    box.appendChild(div);
  });
}

function renderEvents() {
  const ul = document.getElementById("events"), items = [];
  state.runs.forEach((run, i) => {
    for (const e of runData(i).events) items.push([e.t || 0, run.name, e]);
  });
  items.sort((a, b) => b[0] - a[0]);
  ul.innerHTML = "";
  for (const [t, name, e] of items.slice(0, 300)) {
    const li = document.createElement("li");
    li.dataset.kind = e.event;
    const { t: _t, event, pid, ...rest } = e;
    li.textContent = new Date(t * 1000).toLocaleTimeString() + "  " + name + "  " + event + "  " +
      JSON.stringify(rest);
    ul.appendChild(li);
  }
}

function render() {
  renderRuns();
  for (const c of CHARTS) buildChart(c);
  renderEvents();
}

async function poll() {
  try {
    state.runs = await getJSON("/api/runs");
    await Promise.all(state.runs.map(async (run, i) => {
      if (run.error) return;
      const d = runData(i), q = new URLSearchParams(d.offsets).toString();
      const got = await getJSON("/api/runs/" + i + "/data?" + q);
      for (const f of ["metrics", "timing", "events"]) {
        if (got[f + "_reset"]) d[f] = [];
        d[f].push(...got[f]);
      }
      d.offsets = got.offsets;
      run.warning = got.warning;
    }));
    state.polls++;
    render();
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    document.getElementById("updated").textContent = String(err);
  }
  setTimeout(poll, 1000);
}

function setup() {
  const box = document.getElementById("charts");
  for (const c of CHARTS) {
    const div = document.createElement("div");
    div.className = "chart";
    div.id = "chart-" + c.id;
    div.innerHTML = "<h4></h4><div class=plot></div>";
    div.querySelector("h4").textContent = c.title;
    box.appendChild(div);
  }
  const redraw = () => { for (const id in state.charts) { state.charts[id].destroy(); delete state.charts[id]; } render(); };
  document.getElementById("xmode").onchange = (e) => { state.xmode = e.target.value; redraw(); };
  document.getElementById("logy").onchange = (e) => { state.logy = e.target.checked; redraw(); };
  document.getElementById("smooth").oninput = (e) => {
    state.smooth = +e.target.value;
    document.getElementById("smooth-v").textContent = e.target.value;
    redraw();
  };
  poll();
}

setup();
