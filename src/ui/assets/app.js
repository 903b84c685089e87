// pipe ui: a single page over the JSON API (see src/ui/routes.rs). No framework, no build
// step: hash routes, fetch for data, EventSource for live updates, SVG for charts.
"use strict";

const main = document.getElementById("main");
let cleanup = [];            // closes the current page's live streams on navigation

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function status(s) { return `<span class="status ${esc(s)}">${esc(s)}</span>`; }
function num(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return esc(JSON.stringify(v));
  return Math.abs(v) >= 1000 || Number.isInteger(v) ? String(v) : v.toPrecision(4);
}
async function api(path, options) {
  const r = await fetch(path, options);
  const body = await r.json().catch(() => ({error: `${r.status} ${r.statusText}`}));
  if (!r.ok) throw new Error(body.error || `${r.status}`);
  return body;
}
function live(url, handlers) {
  const es = new EventSource(url);
  const conn = document.getElementById("conn");
  es.onopen = () => conn.classList.add("on");
  es.onerror = () => conn.classList.remove("on");
  for (const [name, fn] of Object.entries(handlers)) es.addEventListener(name, fn);
  cleanup.push(() => { es.close(); conn.classList.remove("on"); });
  return es;
}

// ---- charts -------------------------------------------------------------------------
const COLORS = ["#2457c5", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#0b7285", "#5f3dc4", "#e67700"];

// Draws `curves` ([{label, points: [[x, y]...], dashed}]) into the <svg> `svg`.
function drawChart(svg, curves, xLabel, yLabel) {
  const W = svg.clientWidth || 800, H = svg.clientHeight || 320, L = 56, R = 12, T = 12, B = 34;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const all = curves.flatMap(c => c.points);
  svg.dataset.points = String(all.length);
  if (!all.length) {
    svg.innerHTML = `<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no points yet</text>`;
    return;
  }
  let [x0, x1] = [Math.min(...all.map(p => p[0])), Math.max(...all.map(p => p[0]))];
  let [y0, y1] = [Math.min(...all.map(p => p[1])), Math.max(...all.map(p => p[1]))];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  let out = `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#999"/>` +
            `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#999"/>`;
  let lastX = null;
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4, x = Math.round(x0 + (x1 - x0) * i / 4);
    out += `<text x="${L - 6}" y="${sy(y) + 4}" text-anchor="end">${num(y)}</text>`;
    out += `<line x1="${L}" x2="${W - R}" y1="${sy(y)}" y2="${sy(y)}" stroke="#eee"/>`;
    if (x !== lastX) out += `<text x="${sx(x)}" y="${H - B + 16}" text-anchor="middle">${x}</text>`;
    lastX = x;
  }
  out += `<text x="${(L + W) / 2}" y="${H - 4}" text-anchor="middle">${esc(xLabel)}</text>`;
  out += `<text x="12" y="${(T + H - B) / 2}" transform="rotate(-90 12 ${(T + H - B) / 2})" text-anchor="middle">${esc(yLabel)}</text>`;
  curves.forEach((c, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = c.points.map(p => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    out += `<polyline class="curve" data-label="${esc(c.label)}" data-n="${c.points.length}" fill="none" stroke="${color}" stroke-width="1.8"${c.dashed ? ' stroke-dasharray="5 4"' : ""} points="${pts}"/>`;
    if (c.points.length < 60) for (const p of c.points) out += `<circle cx="${sx(p[0])}" cy="${sy(p[1])}" r="2.5" fill="${color}"/>`;
  });
  svg.innerHTML = out;
  const legend = svg.nextElementSibling;
  if (legend && legend.classList.contains("legend"))
    legend.innerHTML = curves.map((c, i) => `<span style="color:${COLORS[i % COLORS.length]}">■ ${esc(c.label)}</span>`).join("");
}

// ---- runs list ----------------------------------------------------------------------
// Replaces `body`'s rows with `html`'s, keeping each row (by `data-run`) and each cell
// whose markup did not change: a live update then never swaps the link under a click
// that is in progress, and a focused checkbox stays focused.
function patchRows(body, html) {
  const fresh = document.createElement("tbody");
  fresh.innerHTML = html;
  const old = new Map([...body.children].filter(tr => tr.dataset.run).map(tr => [tr.dataset.run, tr]));
  const rows = [...fresh.children].map(tr => {
    const kept = tr.dataset.run && old.get(tr.dataset.run);
    if (!kept || kept.cells.length !== tr.cells.length) return tr;
    [...tr.cells].forEach((cell, i) => {
      const have = kept.cells[i];
      if (have.innerHTML !== cell.innerHTML || have.className !== cell.className) have.replaceWith(cell.cloneNode(true));
    });
    return kept;
  });
  const same = rows.length === body.children.length && rows.every((tr, i) => body.children[i] === tr);
  if (!same) body.replaceChildren(...rows);
}
// ---- pipelines on their DAG ----------------------------------------------------------
const NODE_W = 150, NODE_H = 40, GAP_X = 46, GAP_Y = 12;
// Draws a pipeline's stages as columns by depth, edges from each stage to those it needs.
function drawDag(view) {
  const cols = new Map();
  for (const s of view.stages) { if (!cols.has(s.depth)) cols.set(s.depth, []); cols.get(s.depth).push(s); }
  const at = new Map();
  for (const [d, list] of cols) list.forEach((s, row) => at.set(s.stage, {x: 8 + d * (NODE_W + GAP_X), y: 8 + row * (NODE_H + GAP_Y)}));
  const width = 16 + Math.max(...[...cols.keys()].map(d => (d + 1) * (NODE_W + GAP_X) - GAP_X), NODE_W);
  const height = 16 + Math.max(...[...cols.values()].map(l => l.length * (NODE_H + GAP_Y) - GAP_Y), NODE_H);
  const edges = view.stages.flatMap(s => s.needs.filter(n => at.has(n)).map(n => {
    const a = at.get(n), b = at.get(s.stage), x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    return `<path class="edge" d="M${x1},${y1} C${x1 + GAP_X / 2},${y1} ${x2 - GAP_X / 2},${y2} ${x2},${y2}"/>`;
  }));
  const nodes = view.stages.map(s => {
    const p = at.get(s.stage);
    return `<g class="node ${esc(s.state)}" data-stage="${esc(s.stage)}" data-state="${esc(s.state)}"><title>${esc(s.stage)}: ${esc(s.state)}${s.why ? " (" + esc(s.why) + ")" : ""}</title>
      <rect x="${p.x}" y="${p.y}" width="${NODE_W}" height="${NODE_H}" rx="6"/>
      <text x="${p.x + 10}" y="${p.y + 16}" class="name">${esc(s.stage.length > 20 ? s.stage.slice(0, 19) + "…" : s.stage)}</text>
      <text x="${p.x + 10}" y="${p.y + 31}" class="kind">${esc(s.kind)} · ${esc(s.state)}</text></g>`;
  });
  return `<svg class="dag" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">${edges.join("")}${nodes.join("")}</svg>`;
}
function pipelineCard(v) {
  const notes = v.stages.filter(s => s.why).map(s => `<li data-stage="${esc(s.stage)}"><b>${esc(s.stage)}</b> ${status(s.state)} ${esc(s.why)}</li>`).join("");
  const counts = {};
  for (const s of v.stages) counts[s.state] = (counts[s.state] || 0) + 1;
  return `<div class="card pipeline" data-file="${esc(v.file)}">
    <div class="bar"><b>${esc(v.pipeline)}</b><code class="muted">${esc(v.file)}</code>
    <span class="muted">${Object.entries(counts).map(([k, n]) => `${n} ${esc(k)}`).join(", ")}</span>
    ${v.latest ? `<span>latest <a href="#/run/${esc(v.latest.id)}"><code>${esc(v.latest.id)}</code></a> ${status(v.latest.status)}</span>` : `<span class="muted">never run</span>`}
    <span class="spacer"></span><button class="run-pipeline">Run</button><a href="#/new/${encodeURIComponent(v.file)}">Run with changes…</a></div>
    <div class="dag-box">${drawDag(v)}</div>${notes ? `<ul class="why">${notes}</ul>` : ""}<div class="card-error"></div></div>`;
}
// Starts `file` with `sets` ({param: yaml text}) as `pipe run --set` would, and opens the run.
async function startRun(file, sets, errorBox) {
  errorBox.innerHTML = "";
  try {
    const started = await api("/api/runs", {method: "POST", headers: {"content-type": "application/json"},
      body: JSON.stringify({pipeline: file, sets})});
    location.hash = started.run ? `#/run/${started.run}` : "#/";
  } catch (e) { errorBox.innerHTML = `<div class="error start-error">${esc(e.message)}</div>`; }
}
// `--set` strings of a run record ("a.b=1") as the start request's map.
function setsOf(list) {
  const out = {};
  for (const s of list || []) { const i = s.indexOf("="); if (i > 0) out[s.slice(0, i)] = s.slice(i + 1); }
  return out;
}
async function pipelinesSection(box) {
  let files;
  try { files = (await api("/api/pipelines")).pipelines.map(p => p.file); }
  catch (e) { box.innerHTML = `<div class="error">${esc(e.message)}</div>`; return () => {}; }
  if (!files.length) { box.innerHTML = `<p class="muted">No pipeline files in this workspace yet.</p>`; return () => {}; }
  box.innerHTML = files.map(f => `<div class="slot" data-file="${esc(f)}"><p class="muted">${esc(f)}…</p></div>`).join("");
  const load = async file => {
    const slot = [...box.querySelectorAll(".slot")].find(el => el.dataset.file === file);
    if (!slot) return;
    try {
      const v = await api(`/api/workspace?file=${encodeURIComponent(file)}`);
      slot.innerHTML = pipelineCard(v);
      slot.querySelector(".run-pipeline").onclick = () => startRun(file, {}, slot.querySelector(".card-error"));
    } catch (e) {
      slot.innerHTML = `<div class="card pipeline" data-file="${esc(file)}"><div class="bar"><code>${esc(file)}</code></div><div class="error">${esc(e.message)}</div></div>`;
    }
  };
  const all = () => files.forEach(load);
  all();
  return all;
}

function runsPage(page) {
  main.innerHTML = `<h1>Pipelines</h1><p class="hint">Each stage as <code>pipe status</code> sees it, with the latest run's running and failed stages.</p>
    <div id="pipelines"><p>Loading…</p></div>
    <h1>Runs</h1>
    <div class="bar"><button id="compare" disabled>Compare selected</button>
    <span class="muted" id="runs-total"></span></div>
    <table id="runs"><thead><tr><th></th><th>run</th><th>pipeline</th><th>status</th><th>started</th><th>stages</th><th>--set</th></tr></thead><tbody></tbody></table>
    <div class="pager" id="pager"></div>`;
  const picked = new Set();
  const compare = document.getElementById("compare");
  compare.onclick = () => { location.hash = `#/compare/${[...picked].join(",")}`; };
  let reloadPipelines = null, pending = null;
  pipelinesSection(document.getElementById("pipelines")).then(f => { reloadPipelines = f; });
  live(`/api/runs/stream?page=${page}`, {
    runs: ev => {
      // A run started, settled a stage or ended: stage states may have moved.
      if (reloadPipelines && !pending) pending = setTimeout(() => { pending = null; reloadPipelines(); }, 300);
      const data = JSON.parse(ev.data);
      document.getElementById("runs-total").textContent = `${data.total} runs`;
      const body = document.querySelector("#runs tbody");
      patchRows(body, data.runs.map(r => `<tr data-run="${esc(r.id)}">
        <td><input type="checkbox" value="${esc(r.id)}" ${picked.has(r.id) ? "checked" : ""}></td>
        <td><a href="#/run/${esc(r.id)}"><code>${esc(r.id)}</code></a></td>
        <td>${esc(r.pipeline)}<br><span class="muted">${esc(r.pipeline_file)}</span></td>
        <td class="run-status">${status(r.status)}</td><td>${esc(r.started)}</td>
        <td>${esc(r.stages)}</td><td><code>${esc(r.sets.join(" "))}</code></td></tr>`).join("") ||
        `<tr><td colspan="7" class="muted">No runs yet: start one from the command line (<code>pipe run</code>) or from New run.</td></tr>`);
      for (const box of body.querySelectorAll("input[type=checkbox]")) box.onchange = () => {
        box.checked ? picked.add(box.value) : picked.delete(box.value);
        compare.disabled = picked.size < 2;
      };
      const pager = document.getElementById("pager");
      pager.innerHTML = data.pages > 1 ? Array.from({length: data.pages}, (_, i) =>
        i + 1 === data.page ? `<b>${i + 1}</b>` : `<a href="#/runs/${i + 1}">${i + 1}</a>`).join(" ") : "";
    },
  });
}

// ---- one run ------------------------------------------------------------------------
function runPage(id) {
  main.innerHTML = `<p>Loading run…</p>`;
  let curves = new Map();    // "stage/name" -> {stage, name, points}
  let ended = false;
  const key = (s, n) => `${s}/${n}`;
  const redraw = () => {
    const svg = document.getElementById("loss-chart");
    if (!svg) return;
    const list = [...curves.values()].filter(c => c.points.length).map(c => ({
      label: `${c.stage} ${c.name}`, points: c.points, dashed: c.name === "valid_loss"}));
    drawChart(svg, list, "step", "loss");
  };
  const render = view => {
    const r = view.run;
    r.sets = r.sets || [];   // the record leaves out what is empty
    curves = new Map(view.curves.map(c => [key(c.stage, c.name), {stage: c.stage, name: c.name, points: c.points}]));
    const progress = Object.entries(view.progress).map(([s, p]) =>
      `<b>${esc(s)}</b> step ${p.step}${p.total ? "/" + p.total : ""}${p.loss !== undefined ? " loss " + num(p.loss) : ""}${p.tokens_per_second !== undefined ? " · " + num(p.tokens_per_second) + " tok/s" : ""}`).join("<br>");
    const artifacts = r.stages.flatMap(s => (s.artifacts || []).map(a => ({stage: s.name, ...a})));
    main.innerHTML = `<h1>${esc(r.pipeline)} <span id="run-status">${status(r.status)}</span></h1>
      <div class="bar"><code>${esc(r.id)}</code><span class="muted">${esc(r.pipeline_file)} · started ${esc(r.started)}${r.ended ? " · ended " + esc(r.ended) : ""}</span>
      ${r.sets.length ? `<code>--set ${esc(r.sets.join(" --set "))}</code>` : ""}
      ${r.status === "running" ? `<button class="danger" id="stop">Stop</button>` :
        `<button id="rerun">Rerun</button><a id="rerun-edit" href="#/new/${encodeURIComponent(r.pipeline_file)}/${encodeURIComponent(JSON.stringify(setsOf(r.sets)))}">Rerun with changes…</a>`}</div>
      <div id="stop-error"></div>
      <div id="progress" class="muted">${progress}</div>
      <h2>Loss</h2><svg id="loss-chart" class="chart"></svg><div class="legend"></div>
      <h2>Stages</h2><table id="stages"><thead><tr><th>stage</th><th>kind</th><th>status</th><th>time</th><th>metrics</th></tr></thead><tbody>
      ${r.stages.map(s => `<tr data-stage="${esc(s.name)}"><td>${esc(s.name)}</td><td>${esc(s.kind)}</td><td>${status(s.status)}${s.error ? `<div class="hint">${esc(s.error)}</div>` : ""}</td>
        <td class="num">${s.duration_ms !== undefined ? (s.duration_ms / 1000).toFixed(1) + " s" : "–"}</td>
        <td>${Object.entries(s.metrics || {}).map(([k, v]) => `${esc(k)} <b>${num(v)}</b>`).join("<br>")}</td></tr>`).join("")}
      </tbody></table>
      <h2>Log</h2><div class="bar"><select id="log-stage">${r.stages.filter(s => s.log).concat(Object.keys(view.progress).filter(n => !r.stages.some(s => s.name === n)).map(n => ({name: n})))
        .map(s => `<option>${esc(s.name)}</option>`).join("")}</select><button id="log-show">Show log</button></div><pre class="preview" id="log"></pre>
      ${artifacts.length ? `<h2>Artifacts</h2><table id="artifacts"><tbody>${artifacts.map(a => `<tr><td>${esc(a.stage)}</td><td>${esc(a.role)}</td>
        <td><a class="download" href="/api/runs/${encodeURIComponent(r.id)}/download?path=${encodeURIComponent(a.path)}">${esc(a.path)}</a></td><td class="num">${a.bytes} B</td></tr>`).join("")}</tbody></table>` : ""}`;
    document.getElementById("log-show").onclick = async () => {
      const stage = document.getElementById("log-stage").value;
      const resp = await fetch(`/api/runs/${encodeURIComponent(r.id)}/log?stage=${encodeURIComponent(stage)}`);
      const text = await resp.text();
      document.getElementById("log").textContent = resp.ok ? text : (JSON.parse(text).error || text);
    };
    const rerun = document.getElementById("rerun");
    if (rerun) rerun.onclick = () => startRun(r.pipeline_file, setsOf(r.sets), document.getElementById("stop-error"));
    const stop = document.getElementById("stop");
    if (stop) stop.onclick = async () => {
      stop.disabled = true;
      try { await api(`/api/runs/${encodeURIComponent(r.id)}/stop`, {method: "POST"}); }
      catch (e) { document.getElementById("stop-error").innerHTML = `<div class="error">${esc(e.message)}</div>`; stop.disabled = false; }
    };
    redraw();
  };
  let refreshing = null;
  const refresh = () => {   // stage events change the table: reload the view, keep streaming
    if (refreshing) return;
    refreshing = setTimeout(async () => {
      refreshing = null;
      try { render(await api(`/api/runs/${encodeURIComponent(id)}`)); } catch (e) { /* next event retries */ }
    }, 150);
  };
  api(`/api/runs/${encodeURIComponent(id)}`).then(view => {
    render(view);
    if (view.run.status !== "running") return;
    live(`/api/runs/${encodeURIComponent(id)}/events?from=${view.offset}`, {
      message: ev => {
        const e = JSON.parse(ev.data);
        if (e.event === "stage-progress") {
          for (const name of ["loss", "valid_loss"]) {
            if (typeof e[name] !== "number") continue;
            const k = key(e.stage, name);
            if (!curves.has(k)) curves.set(k, {stage: e.stage, name, points: []});
            const pts = curves.get(k).points;
            if (!pts.length || pts[pts.length - 1][0] < e.step) pts.push([e.step, e[name]]);
          }
          const p = document.getElementById("progress");
          if (p) p.innerHTML = `<b>${esc(e.stage)}</b> step ${e.step}${e.total ? "/" + e.total : ""}${typeof e.loss === "number" ? " loss " + num(e.loss) : ""}`;
          redraw();
        } else {
          refresh();
        }
      },
      end: () => { ended = true; cleanup.forEach(f => f()); cleanup = []; refresh(); },
    });
  }).catch(e => { main.innerHTML = `<div class="error">${esc(e.message)}</div>`; });
}

// ---- compare ------------------------------------------------------------------------
async function comparePage(ids) {
  main.innerHTML = `<p>Loading…</p>`;
  try {
    const c = await api(`/api/compare?ids=${encodeURIComponent(ids)}`);
    const head = `<tr><th></th>${c.runs.map(r => `<th><a href="#/run/${esc(r.summary.id)}"><code>${esc(r.summary.id)}</code></a><br>${esc(r.summary.pipeline)}</th>`).join("")}</tr>`;
    const rows = list => list.map(row => `<tr class="${row.differs ? "differs" : ""}"><td><code>${esc(row.key)}</code></td>${row.values.map(v => `<td class="num">${num(v)}</td>`).join("")}</tr>`).join("");
    main.innerHTML = `<h1>Compare ${c.runs.length} runs</h1>
      <h2>Loss</h2><svg id="compare-chart" class="chart"></svg><div class="legend"></div>
      <h2>Metrics</h2><table id="compare-metrics">${head}${rows(c.metrics)}</table>
      <h2>Configuration</h2><p class="hint">Rows that differ are highlighted.</p><table id="compare-params">${head}${rows(c.params)}</table>`;
    const curves = c.runs.flatMap(r => r.curves.map(cv => ({
      label: `${r.summary.id.slice(-6)} ${cv.stage} ${cv.name}`, points: cv.points, dashed: cv.name === "valid_loss"})));
    drawChart(document.getElementById("compare-chart"), curves, "step", "loss");
  } catch (e) { main.innerHTML = `<div class="error">${esc(e.message)}</div>`; }
}

// ---- new run ------------------------------------------------------------------------
function inputFor(f) {
  const s = f.schema || {};
  const id = `field-${f.param}`;
  const value = typeof f.value === "string" ? f.value : JSON.stringify(f.value);
  if (Array.isArray(s.enum)) {
    return `<select id="${esc(id)}" data-param="${esc(f.param)}" data-initial="${esc(value)}">${s.enum.map(v => `<option ${v === f.value ? "selected" : ""}>${esc(v)}</option>`).join("")}</select>`;
  }
  if (s.type === "boolean") {
    return `<select id="${esc(id)}" data-param="${esc(f.param)}" data-initial="${esc(value)}"><option ${f.value === true ? "selected" : ""}>true</option><option ${f.value === false ? "selected" : ""}>false</option></select>`;
  }
  // Numbers are typed as text on purpose: `pipe run`'s checks judge the value, so the
  // page shows its message rather than the browser's.
  return `<input id="${esc(id)}" data-param="${esc(f.param)}" data-initial="${esc(value)}" value="${esc(value)}" ${s.type === "integer" || s.type === "number" ? 'inputmode="decimal"' : ""}>`;
}
function hintFor(f) {
  const s = f.schema || {};
  const bits = [];
  if (s.type) bits.push(Array.isArray(s.type) ? s.type.join(" or ") : s.type);
  if (s.minimum !== undefined) bits.push(`≥ ${s.minimum}`);
  if (s.exclusiveMinimum !== undefined) bits.push(`> ${s.exclusiveMinimum}`);
  if (s.maximum !== undefined) bits.push(`≤ ${s.maximum}`);
  if (s.exclusiveMaximum !== undefined) bits.push(`< ${s.exclusiveMaximum}`);
  const used = f.used_by.length ? ` · feeds ${f.used_by.map(esc).join(", ")}` : "";
  return `<div class="hint">${esc(bits.join(", "))}${used}${s.description ? `<br>${esc(s.description)}` : ""}</div>`;
}
async function newPage(file, presets) {
  main.innerHTML = `<h1>New run</h1><div class="bar"><label for="pipeline">Pipeline</label>
    <select id="pipeline"><option value="">…</option></select></div><div id="form"></div>`;
  const select = document.getElementById("pipeline");
  try {
    const {pipelines} = await api("/api/pipelines");
    select.innerHTML = `<option value="">choose a pipeline</option>` + pipelines.map(p =>
      `<option value="${esc(p.file)}">${esc(p.file)}${p.name ? " (" + esc(p.name) + ")" : ""}</option>`).join("");
  } catch (e) { document.getElementById("form").innerHTML = `<div class="error">${esc(e.message)}</div>`; }
  select.onchange = () => showForm(select.value, {});
  if (file) { select.value = file; showForm(file, presets || {}); }
}
// `presets` ({param: yaml text}) start the form changed from the file's values, as a rerun
// of a run with `--set` needs.
async function showForm(file, presets) {
  const box = document.getElementById("form");
  if (!file) { box.innerHTML = ""; return; }
  try {
    const {fields} = await api(`/api/pipelines/form?file=${encodeURIComponent(file)}`);
    box.innerHTML = `<h2>Params</h2>${fields.length ? `<div class="form" id="params">${fields.map(f =>
      `<label for="${esc("field-" + f.param)}">${esc(f.param)}</label><div>${inputFor(f)}${hintFor(f)}</div>`).join("")}</div>` :
      `<p class="muted">This pipeline has no params.</p>`}
      <div class="bar"><button class="primary" id="start">Start run</button></div><div id="form-error"></div>`;
    for (const el of box.querySelectorAll("[data-param]")) if (el.dataset.param in presets) el.value = presets[el.dataset.param];
    document.getElementById("start").onclick = async () => {
      const sets = {};
      for (const el of box.querySelectorAll("[data-param]")) if (el.value !== el.dataset.initial) sets[el.dataset.param] = el.value;
      const err = document.getElementById("form-error");
      err.innerHTML = "";
      try {
        const started = await api("/api/runs", {method: "POST", headers: {"content-type": "application/json"},
          body: JSON.stringify({pipeline: file, sets})});
        location.hash = started.run ? `#/run/${started.run}` : "#/";
      } catch (e) { err.innerHTML = `<div class="error" id="start-error">${esc(e.message)}</div>`; }
    };
  } catch (e) { box.innerHTML = `<div class="error" id="start-error">${esc(e.message)}</div>`; }
}

// ---- datasets -----------------------------------------------------------------------
async function dataPage() {
  main.innerHTML = `<h1>Datasets</h1>
    <p class="hint">JSONL, JSON, CSV or TSV in the chat, completions or text format; checked by the ingest stage's reader and stored under <code>data/uploads/</code>.</p>
    <div class="bar"><input type="file" id="upload" accept=".jsonl,.json,.csv,.tsv"></div>
    <div id="upload-result"></div><h2>Uploaded</h2><table id="datasets"><tbody></tbody></table>
    <h2>Tokens</h2><p class="hint">An upload through a model's chat template and tokenizer, as the tokenize and train stages see it.</p>
    <div class="bar"><select id="tok-file"></select><select id="tok-model"></select>
    <label>max_seq_len <input id="tok-len" value="2048" size="6" inputmode="numeric"></label><button id="tok-go">Count tokens</button></div>
    <div id="tokens"></div>`;
  const list = async () => {
    const {datasets, models} = await api("/api/datasets");
    document.querySelector("#datasets tbody").innerHTML = datasets.map(d =>
      `<tr><td><code>${esc(d.file)}</code></td><td class="num">${d.bytes} B</td></tr>`).join("") || `<tr><td class="muted">none yet</td></tr>`;
    const pick = document.getElementById("tok-file"), keep = pick.value;
    pick.innerHTML = datasets.map(d => { const name = d.file.split("/").pop(); return `<option value="${esc(name)}">${esc(name)}</option>`; }).join("")
      || `<option value="">upload a dataset first</option>`;
    if (keep) pick.value = keep;
    document.getElementById("tok-go").disabled = !datasets.length;
    document.getElementById("tok-model").innerHTML = models.map(m => `<option>${esc(m)}</option>`).join("");
  };
  document.getElementById("tok-go").onclick = async () => {
    const out = document.getElementById("tokens"), go = document.getElementById("tok-go");
    out.innerHTML = `<p class="muted">Tokenizing…</p>`;
    go.disabled = true;
    try {
      const t = await api("/api/datasets/tokens", {method: "POST", headers: {"content-type": "application/json"},
        body: JSON.stringify({name: document.getElementById("tok-file").value, model: document.getElementById("tok-model").value,
          max_seq_len: Number(document.getElementById("tok-len").value)})});
      const s = t.stats;
      out.innerHTML = `<div class="ok" id="tokens-ok">${s.examples} examples, <b>${s.tokens}</b> tokens (${s.loss_tokens} carry loss);
          length ${s.min_len}–${s.max_len}, mean ${num(s.mean_len)}, p95 ${s.p95_len};
          <b id="tokens-truncated">${s.truncated}</b> over max_seq_len ${s.max_seq_len}${t.chat_template ? "" : " · no chat template"}</div>
        <h2>Length histogram (tokens)</h2><table id="tokens-histogram">${t.histogram.map(([lo, n]) => `<tr><td class="num">≥ ${lo}</td><td class="num">${n}</td></tr>`).join("")}</table>
        <h2>As the model sees them</h2>${t.preview.map(p => `<pre class="preview template">${esc(p.text)}</pre><div class="hint">${p.tokens} tokens, ${p.loss_tokens} carry loss</div>`).join("")}`;
    } catch (e) { out.innerHTML = `<div class="error" id="tokens-error">${esc(e.message)}</div>`; }
    go.disabled = false;
  };
  document.getElementById("upload").onchange = async ev => {
    const file = ev.target.files[0];
    if (!file) return;
    const out = document.getElementById("upload-result");
    const r = await fetch(`/api/datasets?name=${encodeURIComponent(file.name)}`, {method: "POST", body: file});
    const v = await r.json().catch(() => ({errors: [`${r.status} ${r.statusText}`]}));
    if (v.error) v.errors = [v.error];
    if (v.kept) {
      await list();
      document.getElementById("tok-file").value = v.file.split("/").pop();
      const st = v.stats;
      out.innerHTML = `<div class="ok" id="upload-ok"><b>${esc(v.file)}</b>: ${st.examples} examples (${Object.entries(st.formats).map(([k, n]) => `${n} ${esc(k)}`).join(", ")}); length ${st.chars.min}–${st.chars.max} characters, mean ${st.chars.mean}</div>
        <h2>Length histogram (characters)</h2><table>${st.chars.buckets.map(([lo, n]) => `<tr><td class="num">≥ ${lo}</td><td class="num">${n}</td></tr>`).join("")}</table>
        <h2>Preview</h2><pre class="preview">${esc(v.preview.map(e => JSON.stringify(e)).join("\n"))}</pre>`;
    } else {
      out.innerHTML = `<div class="error" id="upload-errors">${(v.errors || []).map(esc).join("\n")}${v.bad_rows > (v.errors || []).length ? `\n… ${v.bad_rows} bad rows in all` : ""}</div>`;
    }
    list();
  };
  list();
}

// ---- models -------------------------------------------------------------------------
function adapterLabel(a) {
  return `${a.path} (${a.base_model || "?"}${a.method ? ", " + a.method : ""}${a.rank ? " r" + a.rank : ""})`;
}
function downloadUrl(run, path) {
  return `/api/runs/${encodeURIComponent(run)}/download?path=${encodeURIComponent(path)}`;
}
async function modelsPage() {
  main.innerHTML = `<h1>Models</h1><p class="hint">Adapters trained by this workspace's runs, newest first.</p><div id="models"><p>Loading…</p></div>`;
  try {
    const {adapters} = await api("/api/models");
    const box = document.getElementById("models");
    if (!adapters.length) { box.innerHTML = `<p class="muted">No trained adapters yet: run a pipeline with a train stage.</p>`; return; }
    box.innerHTML = `<table id="models-table"><thead><tr><th>adapter</th><th>base model</th><th>method</th><th>metrics</th><th>run</th><th></th></tr></thead><tbody>
      ${adapters.map(a => `<tr data-adapter="${esc(a.path)}"><td><code>${esc(a.path)}</code><div class="hint">${esc(a.stage)} · ${(a.bytes / 1048576).toFixed(1)} MiB</div></td>
        <td>${esc(a.base_model || "–")}</td><td>${esc(a.method || "–")}${a.rank ? " · rank " + esc(a.rank) : ""}</td>
        <td>${Object.entries(a.metrics).filter(([k]) => /loss|match|accuracy/.test(k)).slice(0, 4).map(([k, v]) => `${esc(k)} <b>${num(v)}</b>`).join("<br>") || "–"}</td>
        <td><a href="#/run/${esc(a.run)}"><code>${esc(a.run)}</code></a><div class="hint">${esc(a.pipeline)}</div></td>
        <td class="actions"><a href="#/play/${encodeURIComponent(a.path)}">Try in playground</a>
          <br><a class="download mlx-lm" href="${downloadUrl(a.run, a.path)}">Download (mlx-lm)</a>
          ${a.peft ? `<br><a class="download peft" href="${downloadUrl(a.run, a.path + "/peft")}">Download (PEFT)</a>` : ""}
          ${EXPORTS.map(([f, what]) => exportCell(a, f, what)).join("")}</td></tr>`).join("")}</tbody></table>`;
    box.querySelectorAll("button.build").forEach(b => b.onclick = async () => {
      b.disabled = true;
      try { await api("/api/models/export", {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify({path: b.dataset.path, format: b.dataset.format})}); }
      catch (e) { b.insertAdjacentHTML("afterend", `<div class="error">${esc(e.message)}</div>`); return; }
      modelsPage();
    });
    // A build takes a minute or so: look again until none is left building.
    if (adapters.some(a => Object.values(a.exports || {}).some(x => x.state === "building"))) {
      const timer = setTimeout(() => { if (location.hash.startsWith("#/models")) modelsPage(); }, 2000);
      cleanup.push(() => clearTimeout(timer));
    }
  } catch (e) { document.getElementById("models").innerHTML = `<div class="error">${esc(e.message)}</div>`; }
}
const EXPORTS = [["fused", "fused model (float32, Hugging Face)"], ["gguf", "GGUF (q8_0, llama.cpp)"]];
function exportCell(a, format, what) {
  const x = (a.exports || {})[format] || {state: "missing"};
  const url = `/api/models/download?path=${encodeURIComponent(a.path)}&format=${format}`;
  const button = label => `<br><button class="build ${format}" data-path="${esc(a.path)}" data-format="${format}">${label}</button>`;
  if (x.state === "ready") return `<br><a class="download ${format}" href="${url}">Download ${what}</a> <span class="hint">${(x.bytes / 1048576).toFixed(0)} MiB</span>`;
  if (x.state === "building") return `<br><span class="building ${format}">Building ${what}…</span>`;
  if (x.state === "failed") return `${button("Build " + what + " again")}<div class="error">${esc(x.error)}</div>`;
  return button("Build " + what);
}

// ---- monitors -----------------------------------------------------------------------
async function monitorsPage() {
  main.innerHTML = `<h1>Monitors</h1><p class="hint">Each monitor stage's history: accuracy per evaluation, one line per model; the nightly report has the same chart.</p><div id="monitors"><p>Loading…</p></div>`;
  const box = document.getElementById("monitors");
  try {
    const {monitors} = await api("/api/monitors");
    if (!monitors.length) { box.innerHTML = `<p class="muted">No monitor stage has run in this workspace yet (see <code>pipelines/nightly.yaml</code>).</p>`; return; }
    box.innerHTML = monitors.map((m, i) => `<div class="card monitor" data-history="${esc(m.history)}">
      <div class="bar"><b>${esc(m.pipeline)}</b> · ${esc(m.stage)} <code class="muted">${esc(m.history)}</code>
        ${m.decision ? status(m.decision) : ""}<span class="muted">${m.points.length} evaluations · last run <a href="#/run/${esc(m.run)}"><code>${esc(m.run)}</code></a></span></div>
      ${m.error ? `<div class="error">${esc(m.error)}</div>` : `<svg id="monitor-chart-${i}" class="chart"></svg><div class="legend"></div>
      <table class="monitor-points"><thead><tr><th>#</th><th>when</th><th>model</th><th class="num">accuracy</th><th class="num">examples</th><th>regressed</th></tr></thead><tbody>
      ${m.points.map((p, j) => ({p, j})).reverse().slice(0, 50).map(({p, j}) => `<tr class="${p.regressed ? "differs" : ""}"><td>${j + 1}</td><td>${esc(p.at)}</td>
        <td>${esc(p.model)}<div class="hint">${esc(p.model_hash)}</div></td><td class="num">${num(p.accuracy)}</td><td class="num">${p.examples}</td><td>${p.regressed ? "yes" : "no"}</td></tr>`).join("")}</tbody></table>`}</div>`).join("");
    monitors.forEach((m, i) => {
      if (m.error) return;
      const byModel = new Map();
      m.points.forEach((p, j) => {
        if (!byModel.has(p.model_hash)) byModel.set(p.model_hash, {label: `model ${p.model_hash}`, points: []});
        byModel.get(p.model_hash).points.push([j + 1, p.accuracy]);
      });
      drawChart(document.getElementById(`monitor-chart-${i}`), [...byModel.values()], "evaluation", "accuracy");
    });
  } catch (e) { box.innerHTML = `<div class="error">${esc(e.message)}</div>`; }
}

// ---- playground ---------------------------------------------------------------------
// Reads the server-sent events of a POST answer (EventSource only does GET).
async function postStream(url, body, onEvent, signal) {
  const r = await fetch(url, {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body), signal});
  if (!r.ok) {
    const e = await r.json().catch(() => ({error: `${r.status} ${r.statusText}`}));
    throw new Error(e.error || `${r.status}`);
  }
  const reader = r.body.getReader(), dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buf += dec.decode(value, {stream: true});
    let at;
    while ((at = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, at);
      buf = buf.slice(at + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trimStart();
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}
async function playPage(pick) {
  main.innerHTML = `<h1>Playground</h1>
    <p class="hint">One prompt, answered by the base model and by a trained adapter side by side, through <code>pipe serve</code> (started on first use, one model in memory, stopped when idle or when a training needs the accelerator).</p>
    <div class="bar"><label for="pg-adapter">Adapter</label><select id="pg-adapter"></select><span class="muted" id="pg-base"></span></div>
    <div id="pg-slot"></div>
    <textarea id="pg-prompt" rows="3" placeholder="Ask something…">What is the past tense of the verb 'walk'? Answer with one word.</textarea>
    <div class="sampling">
      <label>temperature <input id="pg-temperature" value="0" inputmode="decimal"></label>
      <label>top_p <input id="pg-top_p" value="1" inputmode="decimal"></label>
      <label>max tokens <input id="pg-max_tokens" value="64" inputmode="numeric"></label>
      <label>seed <input id="pg-seed" value="" placeholder="random" inputmode="numeric"></label>
      <label class="wide">system <input id="pg-system" value="" placeholder="optional system message"></label>
    </div>
    <div class="bar"><button class="primary" id="pg-go">Generate</button><span class="muted" id="pg-state"></span></div>
    <div class="answers">
      <section><h2>Base <span class="muted" id="pg-base-name"></span></h2><pre class="answer" id="pg-out-base"></pre><div class="hint" id="pg-meta-base"></div></section>
      <section><h2>Adapter <span class="muted" id="pg-adapter-name"></span></h2><pre class="answer" id="pg-out-adapter"></pre><div class="hint" id="pg-meta-adapter"></div></section>
    </div>`;
  const select = document.getElementById("pg-adapter");
  let adapters = [];
  try {
    adapters = (await api("/api/models")).adapters;
    const st = await api("/api/playground");
    if (st.mlx_slot) document.getElementById("pg-slot").innerHTML = `<div class="error">The accelerator is busy (${esc(st.mlx_slot)}): answers wait until it ends.</div>`;
  } catch (e) { document.getElementById("pg-slot").innerHTML = `<div class="error">${esc(e.message)}</div>`; }
  if (!adapters.length) {
    select.innerHTML = `<option value="">no trained adapters yet</option>`;
    document.getElementById("pg-go").disabled = true;
    return;
  }
  select.innerHTML = adapters.map(a => `<option value="${esc(a.path)}" ${a.path === pick ? "selected" : ""}>${esc(adapterLabel(a))}</option>`).join("");
  const current = () => adapters.find(a => a.path === select.value);
  const showNames = () => {
    const a = current();
    document.getElementById("pg-base").textContent = `base: ${a.base_model || "?"}`;
    document.getElementById("pg-base-name").textContent = a.base_model || "";
    document.getElementById("pg-adapter-name").textContent = a.path;
  };
  select.onchange = showNames;
  showNames();
  const go = document.getElementById("pg-go");
  go.onclick = async () => {
    const a = current();
    const settings = {prompt: document.getElementById("pg-prompt").value};
    const system = document.getElementById("pg-system").value;
    if (system) settings.system = system;
    for (const [k, parse] of [["temperature", Number], ["top_p", Number], ["max_tokens", Number], ["seed", Number]]) {
      const v = document.getElementById(`pg-${k}`).value.trim();
      if (v !== "") settings[k] = parse(v);
    }
    const abort = new AbortController();
    cleanup.push(() => abort.abort());
    go.disabled = true;
    const stateEl = document.getElementById("pg-state");
    stateEl.textContent = "starting the model server (the first answer loads the model)…";
    const one = async (which, body) => {
      const out = document.getElementById(`pg-out-${which}`), meta = document.getElementById(`pg-meta-${which}`);
      out.textContent = ""; meta.textContent = ""; out.dataset.pieces = "0"; out.dataset.done = ""; out.classList.remove("failed");
      const t0 = performance.now();
      try {
        await postStream("/api/playground/generate", body, (name, d) => {
          if (name === "delta") {
            out.textContent += d.text;
            out.dataset.pieces = String(Number(out.dataset.pieces) + 1);
            stateEl.textContent = "generating…";
          } else if (name === "done") {
            const u = d.usage || {};
            meta.textContent = `${u.completion_tokens ?? "?"} tokens · ${((performance.now() - t0) / 1000).toFixed(1)} s · ${d.finish_reason || ""}`;
            out.dataset.done = "1";
          } else if (name === "error") {
            throw new Error(d.error);
          }
        }, abort.signal);
      } catch (e) {
        if (e.name === "AbortError") return;
        out.classList.add("failed");
        out.textContent = e.message;
        out.dataset.done = "error";
      }
    };
    await Promise.all([
      one("base", {model: a.base_model, ...settings}),
      one("adapter", {adapter: a.path, ...settings}),
    ]);
    stateEl.textContent = "";
    go.disabled = false;
  };
}

// ---- routing ------------------------------------------------------------------------
function route() {
  cleanup.forEach(f => f());
  cleanup = [];
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  if (parts[0] === "run" && parts[1]) runPage(decodeURIComponent(parts[1]));
  else if (parts[0] === "compare" && parts[1]) comparePage(decodeURIComponent(parts[1]));
  else if (parts[0] === "new") {
    let presets = {};
    try { presets = parts[2] ? JSON.parse(decodeURIComponent(parts[2])) : {}; } catch (e) { /* a hand-edited link: no presets */ }
    newPage(parts[1] ? decodeURIComponent(parts[1]) : null, presets);
  }
  else if (parts[0] === "data") dataPage();
  else if (parts[0] === "models") modelsPage();
  else if (parts[0] === "monitors") monitorsPage();
  else if (parts[0] === "play") playPage(parts[1] ? decodeURIComponent(parts[1]) : null);
  else runsPage(parts[0] === "runs" && parts[1] ? Number(parts[1]) : 1);
}
window.addEventListener("hashchange", route);
route();
