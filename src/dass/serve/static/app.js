// dass serve: the page. Plain JavaScript, no library, nothing loaded from the network.
// State: the analysis `result` of the server, the visible window [view.t0, view.t0 + view.span) of the timeline.
"use strict";

const $ = (id) => document.getElementById(id);
const LABEL_WIDTH = 170;   // px of the class-name column of the heat map
const ROW_HEIGHT = 14;     // px per class row
const AXIS_HEIGHT = 18;    // px of the time axis under the rows

const view = { result: null, t0: 0, span: 1, duration: 1, drag: null };
window.dassView = view;    // read by the browser test (and handy in the console)

// ------------------------------------------------------------------------------------------- colours

const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

function colour(p) {
  const x = Math.min(1, Math.max(0, p)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const c = VIRIDIS[i].map((v, k) => Math.round(v + f * (VIRIDIS[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function clock(t) {
  const m = Math.floor(t / 60);
  return `${m}:${(t - 60 * m).toFixed(1).padStart(4, "0")}`;
}

// ------------------------------------------------------------------------------------- the analysis

async function startJob(request) {
  $("error").hidden = true;
  $("result").hidden = true;
  $("status").hidden = false;
  $("progress").value = 0;
  $("phase").textContent = "sending";
  const response = await request;
  const answer = await response.json();
  if (!response.ok) return showError(answer.error || response.statusText);
  poll(answer.job);
}

async function poll(job) {
  const response = await fetch(`/api/jobs/${job}`);
  const status = await response.json();
  if (!response.ok) return showError(status.error);
  $("progress").value = status.progress;
  $("phase").textContent = `${status.phase} (${Math.round(100 * status.progress)} %)`;
  if (status.state === "error") return showError(status.error);
  if (status.state !== "done") return setTimeout(() => poll(job), 250);
  $("status").hidden = true;
  show(job, status.result);
}

function showError(message) {
  $("status").hidden = true;
  $("error").textContent = message;
  $("error").hidden = false;
}

function show(job, result) {
  view.result = result;
  view.duration = Math.max(result.duration_s, 0.01);
  view.t0 = 0;
  view.span = view.duration;
  $("file-name").textContent = `${result.file}  (${result.duration_s.toFixed(2)} s, analysed in ${result.seconds} s)`;
  $("tags").replaceChildren(...result.top.map((t) => {
    const li = document.createElement("li");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(120 * t.probability)}px`;
    li.append(bar, `${t.probability.toFixed(3)}  ${t.label ?? "class " + t.index}`);
    return li;
  }));
  const rows = result.events.map((e, i) => {
    const tr = document.createElement("tr");
    tr.dataset.onset = e.onset_s;
    tr.dataset.index = i;
    for (const value of [e.onset_s.toFixed(2), e.offset_s.toFixed(2), (e.offset_s - e.onset_s).toFixed(2), e.label,
                         e.peak.toFixed(3)]) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    tr.addEventListener("click", () => seek(e.onset_s));
    return tr;
  });
  $("events").tBodies[0].replaceChildren(...rows);
  $("event-count").textContent = `(${rows.length})`;
  $("player").src = `/api/jobs/${job}/audio`;
  $("result").hidden = false;
  const canvas = $("timeline");
  canvas.height = result.heatmap.labels.length * ROW_HEIGHT + AXIS_HEIGHT;
  draw();
}

// -------------------------------------------------------------------------------------- the heat map

function plotWidth() { return $("timeline").width - LABEL_WIDTH; }
function xOf(t) { return LABEL_WIDTH + ((t - view.t0) / view.span) * plotWidth(); }
function timeAt(x) { return view.t0 + ((x - LABEL_WIDTH) / plotWidth()) * view.span; }
view.xOf = xOf;
view.rowY = (label) => view.result.heatmap.labels.indexOf(label) * ROW_HEIGHT + ROW_HEIGHT / 2;

function draw() {
  const result = view.result;
  if (!result) return;
  const canvas = $("timeline");
  canvas.width = canvas.clientWidth;
  const ctx = canvas.getContext("2d");
  const { labels, scores } = result.heatmap;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "middle";
  const t1 = view.t0 + view.span;
  labels.forEach((label, row) => {
    const y = row * ROW_HEIGHT;
    ctx.fillStyle = "#222";
    ctx.fillText(label.length > 26 ? label.slice(0, 25) + "…" : label, 4, y + ROW_HEIGHT / 2);
    result.times.forEach(([a, b], i) => {
      if (b < view.t0 || a > t1) return;
      const x0 = Math.floor(Math.max(LABEL_WIDTH, xOf(a)));  // whole pixels: no seams between cells
      const x1 = Math.ceil(Math.min(canvas.width, xOf(b)));
      ctx.fillStyle = colour(scores[row][i]);
      ctx.fillRect(x0, y, Math.max(1, x1 - x0), ROW_HEIGHT - 1);
    });
  });
  // events of the classes shown: a white frame around their span
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 1.5;
  for (const e of result.events) {
    const row = labels.indexOf(e.label);
    if (row < 0 || e.offset_s < view.t0 || e.onset_s > t1) continue;
    const x0 = Math.max(LABEL_WIDTH, xOf(e.onset_s));
    ctx.strokeRect(x0, row * ROW_HEIGHT + 0.75, Math.min(canvas.width, xOf(e.offset_s)) - x0, ROW_HEIGHT - 2.5);
  }
  // time axis
  const axisY = labels.length * ROW_HEIGHT;
  ctx.fillStyle = "#222";
  const tick = niceTick(view.span / 8);
  for (let t = Math.ceil(view.t0 / tick) * tick; t <= t1; t += tick) {
    const x = xOf(t);
    ctx.fillRect(x, axisY, 1, 4);
    ctx.fillText(clock(t), x + 2, axisY + 10);
  }
  // playback cursor
  const now = $("player").currentTime || 0;
  if (now >= view.t0 && now <= t1) {
    ctx.fillStyle = "#e53935";
    ctx.fillRect(xOf(now) - 1, 0, 2, axisY);
  }
  $("view-range").textContent = `${clock(view.t0)} – ${clock(t1)}`;
  const scroll = $("scroll");
  scroll.disabled = view.span >= view.duration;
  scroll.value = view.duration > view.span ? Math.round(1000 * view.t0 / (view.duration - view.span)) : 0;
}

function niceTick(raw) {
  const steps = [0.32, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
  return steps.find((s) => s >= raw) || 7200;
}

function setView(t0, span) {
  view.span = Math.min(view.duration, Math.max(1.28, span));
  view.t0 = Math.min(Math.max(0, t0), view.duration - view.span);
  draw();
}

function zoom(factor, centre) {
  const c = centre ?? view.t0 + view.span / 2;
  const span = view.span / factor;
  setView(c - ((c - view.t0) / view.span) * span, span);
}

function seek(t) {
  const player = $("player");
  player.currentTime = t;
  if (t < view.t0 || t > view.t0 + view.span) setView(t - view.span * 0.1, view.span);
  draw();
}

// -------------------------------------------------------------------------------------------- wiring

function upload(file) {
  startJob(fetch("/api/upload", { method: "POST", body: file,
                                  headers: { "X-Filename": encodeURIComponent(file.name) } }));
}

$("file").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]);
});
$("path-form").addEventListener("submit", (e) => {
  e.preventDefault();
  startJob(fetch("/api/path", { method: "POST", body: JSON.stringify({ path: $("server-path").value }),
                                headers: { "Content-Type": "application/json" } }));
});

$("zoom-in").addEventListener("click", () => zoom(2));
$("zoom-out").addEventListener("click", () => zoom(0.5));
$("zoom-fit").addEventListener("click", () => setView(0, view.duration));
$("scroll").addEventListener("input", (e) => setView((e.target.value / 1000) * (view.duration - view.span), view.span));

const canvas = $("timeline");
canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  const x = e.offsetX * (canvas.width / canvas.clientWidth);
  zoom(e.deltaY < 0 ? 1.25 : 0.8, x > LABEL_WIDTH ? timeAt(x) : undefined);
}, { passive: false });
canvas.addEventListener("mousedown", (e) => { view.drag = { x: e.offsetX, t0: view.t0, moved: false }; });
canvas.addEventListener("mousemove", (e) => {
  if (!view.drag) return;
  const dx = e.offsetX - view.drag.x;
  if (Math.abs(dx) > 3) view.drag.moved = true;
  if (view.drag.moved) setView(view.drag.t0 - (dx / plotWidth()) * view.span, view.span);
});
canvas.addEventListener("mouseup", (e) => {
  const moved = view.drag && view.drag.moved;
  view.drag = null;
  const x = e.offsetX * (canvas.width / canvas.clientWidth);
  if (moved || x < LABEL_WIDTH || !view.result) return;
  const t = timeAt(x);
  const cell = view.result.times.find(([a, b]) => t >= a && t < b);
  if (cell) seek(cell[0]);
});
window.addEventListener("resize", draw);

const player = $("player");
function followCursor() {
  const t = player.currentTime || 0;
  $("clock").textContent = clock(t);
  if (view.result && !player.paused && (t > view.t0 + view.span * 0.95 || t < view.t0)) {
    setView(t - view.span * 0.05, view.span);  // keep the cursor in sight while playing
  } else {
    draw();
  }
  for (const tr of $("events").tBodies[0].rows) {
    const e = view.result.events[tr.dataset.index];
    tr.classList.toggle("playing", t >= e.onset_s && t < e.offset_s);
  }
}
player.addEventListener("timeupdate", followCursor);
player.addEventListener("seeked", followCursor);

fetch("/api/info").then((r) => r.json()).then((info) => {
  $("model-name").textContent = `model: ${info.model} (${info.classes} classes)`;
  $("path-form").hidden = !info.root;
});
