// The Compare page: pick model jobs, overlay their curves (plotly), their settings side by side.
// Data: GET /api/v1/jobs/<id> (status, spec, summary) and GET /api/v1/jobs/<id>/metrics
// ({phase: {name: [[iteration, value, time], ...]}}).  The picks, the output, the x axis, the
// smoothing and the filter live in the URL (?job=..&job=..&output=..&x=..&smooth=..&q=..).
"use strict";
(function () {
  const B = window.brewnet;
  const $ = (id) => document.getElementById(id);
  const boot = JSON.parse($("c-data").textContent);
  const models = new Map(boot.models.map((m) => [m.id, m]));
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                  "#7f7f7f", "#bcbd22", "#17becf"];
  const ACTIVE = ["Initialized", "Waiting", "Running"];
  const MAX_POINTS = 5000;   // per series (the API keeps the first, last and best points)
  const params = new URLSearchParams(location.search);
  const state = {
    selected: boot.selected.slice(),
    output: params.get("output") || "",
    x: params.get("x") === "time" ? "time" : "iteration",
    smooth: Math.min(0.99, Math.max(0, Number(params.get("smooth")) || 0)),
    filter: params.get("q") || "",
    onlyDiff: params.get("diff") === "1",
    data: new Map(),          // id -> {job, metrics, start}
  };
  let refreshTimer = null;
  // plotly reads names and titles as a little HTML and decodes &amp; &lt; &gt; only (not &quot;)
  const ptext = (s) => String(s ?? "").replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  let loadToken = 0;

  // ------------------------------------------------------------------ URL, picks, filter
  function writeUrl() {
    const p = new URLSearchParams();
    state.selected.forEach((id) => p.append("job", id));
    if (state.output) p.set("output", state.output);
    if (state.x !== "iteration") p.set("x", state.x);
    if (state.smooth) p.set("smooth", String(state.smooth));
    if (state.filter) p.set("q", state.filter);
    if (state.onlyDiff) p.set("diff", "1");
    const qs = p.toString();
    history.replaceState(null, "", location.pathname + (qs ? "?" + qs : ""));
    const jobs = new URLSearchParams();
    state.selected.forEach((id) => jobs.append("job", id));
    for (const [id, path] of [["c-csv", "/compare/export.csv"], ["c-tb-zip", "/compare/export-tensorboard.zip"],
                              ["c-tb-tgz", "/compare/export-tensorboard.tar.gz"]]) {
      const a = $(id);
      if (state.selected.length) { a.href = `${path}?${jobs}`; a.removeAttribute("aria-disabled"); }
      else { a.removeAttribute("href"); a.setAttribute("aria-disabled", "true"); }
    }
  }

  function pickBoxes() { return Array.from(document.querySelectorAll("input.c-pick")); }

  function syncPicks() {
    // selection order follows the list (newest first), as the checkboxes show it
    state.selected = pickBoxes().filter((b) => b.checked).map((b) => b.value);
    if (state.selected.length > boot.max_jobs) {
      B.flash(`At most ${boot.max_jobs} models at once.`);
      state.selected = state.selected.slice(0, boot.max_jobs);
    }
    pickBoxes().forEach((b) => b.closest("tr").classList.toggle("picked", b.checked));
    const count = $("c-count");
    if (count) count.textContent = `${state.selected.length} of ${models.size} picked`;
  }

  function applyFilter() {
    const q = state.filter.trim().toLowerCase();
    let shown = 0;
    document.querySelectorAll("#c-models tbody tr").forEach((tr) => {
      const hit = !q || tr.dataset.name.includes(q);
      tr.hidden = !hit;
      if (hit) shown += 1;
    });
    return shown;
  }

  // ------------------------------------------------------------------ loading
  function startOf(metrics) {
    let start = Infinity;
    for (const [phase, names] of Object.entries(metrics)) {
      if (phase === "job_id" || !names || typeof names !== "object") continue;
      for (const pts of Object.values(names)) {
        for (const p of pts) if (typeof p[2] === "number" && p[2] < start) start = p[2];
      }
    }
    return isFinite(start) ? start : null;
  }

  async function fetchJob(id) {
    const [job, metrics] = await Promise.all([
      B.api(`/api/v1/jobs/${encodeURIComponent(id)}`),
      B.api(`/api/v1/jobs/${encodeURIComponent(id)}/metrics?max_points=${MAX_POINTS}`)]);
    delete metrics.job_id;
    state.data.set(id, {job, metrics, start: startOf(metrics)});
  }

  async function load(ids) {
    const token = ++loadToken;
    const todo = ids.filter((id) => !state.data.has(id));
    const status = $("c-status"), bar = $("c-progress");
    if (todo.length) {
      let done = 0;
      bar.hidden = false; bar.max = todo.length; bar.value = 0;
      status.textContent = `Loading ${todo.length} model${todo.length > 1 ? "s" : ""}…`;
      $("c-plot").setAttribute("aria-busy", "true");
      const failures = [];
      await Promise.all(todo.map(async (id) => {
        try { await fetchJob(id); }
        catch (err) { failures.push(`${(models.get(id) || {}).name || id}: ${err.message}`); }
        done += 1;
        if (token === loadToken) { bar.value = done; status.textContent = `Loading… ${done} of ${todo.length}`; }
      }));
      $("c-plot").removeAttribute("aria-busy");
      if (failures.length) B.flash(`Could not load ${failures.join("; ")}`);
    }
    if (token !== loadToken) return;
    bar.hidden = true;
    status.textContent = "";
    render();
    scheduleRefresh();
  }

  // jobs still training: their data again every 10 s while the page shows them
  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    const running = state.selected.filter((id) => {
      const d = state.data.get(id);
      return d && ACTIVE.includes(d.job.status);
    });
    if (!running.length) return;
    refreshTimer = setTimeout(async () => {
      try { await Promise.all(running.map(fetchJob)); } catch (err) { /* next round */ }
      render();
      scheduleRefresh();
    }, 10000);
  }

  // ------------------------------------------------------------------ outputs and curves
  function loaded() { return state.selected.filter((id) => state.data.has(id)); }

  function outputs() {
    const byPhase = new Map();
    for (const id of loaded()) {
      for (const [phase, names] of Object.entries(state.data.get(id).metrics)) {
        if (!names || typeof names !== "object") continue;
        if (!byPhase.has(phase)) byPhase.set(phase, new Set());
        Object.keys(names).forEach((n) => byPhase.get(phase).add(n));
      }
    }
    const order = (p) => [p !== "train", p !== "test", p].join("|");
    return [...byPhase.keys()].sort((a, b) => order(a).localeCompare(order(b)))
      .filter((p) => byPhase.get(p).size)
      .map((p) => [p, [...byPhase.get(p)].sort()]);
  }

  function fillOutputs() {
    const sel = $("c-output");
    const groups = outputs();
    const all = groups.flatMap(([p, names]) => names.map((n) => `${p}/${n}`));
    if (!all.includes(state.output)) {
      state.output = ["test/accuracy", "train/loss"].find((o) => all.includes(o)) || all[0] || "";
    }
    sel.textContent = "";
    if (!all.length) {
      const o = document.createElement("option");
      o.value = ""; o.textContent = state.selected.length ? "— no metrics yet —" : "— pick models —";
      sel.appendChild(o);
      return;
    }
    for (const [phase, names] of groups) {
      const g = document.createElement("optgroup");
      g.label = phase;
      for (const n of names) {
        const o = document.createElement("option");
        o.value = `${phase}/${n}`; o.textContent = `${n} (${phase})`;
        o.selected = o.value === state.output;
        g.appendChild(o);
      }
      sel.appendChild(g);
    }
  }

  function colorOf(id) { return COLORS[Math.max(0, state.selected.indexOf(id)) % COLORS.length]; }

  function plot() {
    const div = $("c-plot");
    const slash = state.output.indexOf("/");
    const phase = state.output.slice(0, slash), name = state.output.slice(slash + 1);
    const traces = [], raw = [];
    for (const id of loaded()) {
      const d = state.data.get(id);
      const pts = ((d.metrics[phase] || {})[name]) || [];
      if (!pts.length) continue;
      const xs = pts.map((p) => state.x === "iteration" ? p[0]
        : (typeof p[2] === "number" && d.start !== null ? p[2] - d.start : null));
      const ys = pts.map((p) => (typeof p[1] === "number" ? p[1] : null));
      const label = (models.get(id) || {}).name || d.job.name || id;
      const mode = pts.length < 2 ? "markers" : "lines";
      traces.push({type: "scatter", mode, x: xs, y: B.smooth(ys, state.smooth), name: ptext(label), meta: id,
                   legendgroup: id, line: {color: colorOf(id), width: 2}, marker: {color: colorOf(id)},
                   hovertemplate: `${ptext(label)}<br>%{x}: %{y:.4g}<extra></extra>`});
      if (state.smooth > 0) {
        raw.push({type: "scatter", mode, x: xs, y: ys, name: ptext(`${label} (raw)`), meta: `${id}:raw`,
                  legendgroup: id, showlegend: false, hoverinfo: "skip", opacity: 0.25,
                  line: {color: colorOf(id), width: 1}, marker: {color: colorOf(id)}});
      }
    }
    const layout = {
      margin: {l: 60, r: 20, t: 30, b: 50}, height: 400, hovermode: "closest",
      title: {text: state.output ? ptext(`${name} (${phase})`) : "", font: {size: 14}},
      xaxis: {title: {text: state.x === "iteration" ? "iteration" : "wall time (s since the job's first point)"},
              zeroline: false},
      yaxis: {title: {text: ptext(name)}, zeroline: false},
      legend: {orientation: "h", y: -0.2},
      annotations: traces.length ? [] : [{text: state.selected.length ? "No points of this output yet"
                                                                       : "Pick models on the left",
                                          showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5}],
    };
    window.Plotly.react(div, raw.concat(traces), layout, {displaylogo: false});
    if (!div.dataset.observed && window.ResizeObserver) {
      // the plot follows its box (a window resize, the page's layout switching to one column)
      div.dataset.observed = "1";
      let pending = null;
      new ResizeObserver(() => {
        cancelAnimationFrame(pending);
        pending = requestAnimationFrame(() => { if (div._fullLayout) window.Plotly.Plots.resize(div); });
      }).observe(div);
    }
  }

  // ------------------------------------------------------------------ settings side by side
  function testAccuracy(metrics) {
    const test = metrics.test || {};
    const name = Object.keys(test).sort().find((n) => n.includes("accuracy"));
    if (!name) return null;
    const vals = test[name].map((p) => p[1]).filter((v) => typeof v === "number");
    return vals.length ? {name, value: vals[vals.length - 1]} : null;
  }

  function showBest(best) {
    if (!best || best.value === undefined || best.value === null) return "";
    const v = String(best.name || "").includes("accuracy") ? B.fmt.pct(best.value) : B.fmt.num(best.value);
    return `${v} (${best.name}, iteration ${best.iteration})`;
  }

  function flatten(obj, prefix, out) {
    for (const [k, v] of Object.entries(obj || {})) {
      const key = prefix ? `${prefix}.${k}` : k;
      if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) flatten(v, key, out);
      else out[key] = v;
    }
    return out;
  }

  function shown(key, v) {
    if (v === null || v === undefined || v === "") return "";
    if (key === "custom_network" && typeof v === "string") {
      const lines = v.split("\n").length;
      return `custom prototxt, ${lines} line${lines > 1 ? "s" : ""}`;
    }
    if (key === "lint_findings" && Array.isArray(v)) return v.length ? `${v.length} finding(s)` : "none";
    if (Array.isArray(v)) return v.length ? v.join(", ") : "";
    if (typeof v === "object") return Object.keys(v).length ? JSON.stringify(v) : "";
    return String(v);
  }

  function settingRows() {
    const ids = loaded();
    const rows = [];   // [key, label, [{raw, text, href?}]]
    const facts = ids.map((id) => {
      const d = state.data.get(id), job = d.job, m = models.get(id) || {};
      const summary = job.summary || {};
      const final = testAccuracy(d.metrics);
      return {
        "job id": {raw: job.id, text: job.id, href: `/models/${encodeURIComponent(job.id)}`},
        status: {raw: job.status, text: job.status},
        owner: {raw: job.owner, text: job.owner || ""},
        network: {raw: m.network, text: m.network || ""},
        dataset: {raw: job.dataset_id, text: m.dataset || job.dataset_id || "",
                  href: job.dataset_id ? `/datasets/${encodeURIComponent(job.dataset_id)}` : null},
        "final val accuracy": {raw: final && final.value, text: final ? B.fmt.pct(final.value) : ""},
        "best val": {raw: summary.best ? summary.best.value : null, text: showBest(summary.best)},
        "best val (moving-average BN)": {raw: summary.best_moving_bn ? summary.best_moving_bn.value : null,
                                          text: showBest(summary.best_moving_bn)},
        iterations: {raw: summary.iteration, text: summary.iteration === undefined || summary.iteration === null ? ""
          : `${summary.iteration}${summary.max_iter ? " of " + summary.max_iter : ""}`},
      };
    });
    const factKeys = Object.keys(facts[0] || {});
    for (const key of factKeys) {
      const cells = facts.map((f) => f[key]);
      if (cells.every((c) => !c.text)) continue;
      rows.push([key, key, cells]);
    }
    const specs = ids.map((id) => flatten(state.data.get(id).job.spec || {}, "", {}));
    const keys = [...new Set(specs.flatMap((s) => Object.keys(s)))].filter((k) => k !== "name").sort();
    for (const key of keys) {
      const cells = specs.map((s) => ({raw: s[key] === undefined ? null : s[key], text: shown(key, s[key])}));
      if (cells.every((c) => !c.text)) continue;   // unset for every job (e.g. a standard net's custom_network)
      rows.push([key, key, cells]);
    }
    return rows;
  }

  function renderSettings() {
    const table = $("c-settings");
    const ids = loaded();
    table.textContent = "";
    table.classList.toggle("only-diff", state.onlyDiff);
    if (!ids.length) {
      const tr = table.createTBody().insertRow();
      const td = tr.insertCell();
      td.className = "muted"; td.textContent = state.selected.length ? "Loading…" : "Pick models to compare their settings.";
      return;
    }
    const head = table.createTHead().insertRow();
    const corner = document.createElement("th");
    corner.scope = "col"; corner.textContent = "setting";
    head.appendChild(corner);
    for (const id of ids) {
      const th = document.createElement("th");
      th.scope = "col";
      const sw = document.createElement("span");
      sw.className = "swatch"; sw.style.background = colorOf(id);
      const a = document.createElement("a");
      a.href = `/models/${encodeURIComponent(id)}`;
      a.textContent = (models.get(id) || {}).name || state.data.get(id).job.name;
      th.append(sw, a);
      head.appendChild(th);
    }
    const body = table.createTBody();
    let differing = 0;
    for (const [key, label, cells] of settingRows()) {
      const tr = body.insertRow();
      tr.dataset.key = key;
      const th = document.createElement("th");
      th.scope = "row"; th.textContent = label;
      tr.appendChild(th);
      const distinct = new Set(cells.map((c) => JSON.stringify(c.raw === undefined ? null : c.raw)));
      if (ids.length > 1 && distinct.size > 1 && key !== "job id") { tr.classList.add("diff"); differing += 1; }
      for (const c of cells) {
        const td = tr.insertCell();
        if (c.href && c.text) {
          const a = document.createElement("a");
          a.href = c.href; a.textContent = c.text;
          td.appendChild(a);
        } else td.textContent = c.text;
        if (typeof c.raw === "number") td.classList.add("num");
      }
    }
    if (state.onlyDiff && !differing) {
      const td = body.insertRow().insertCell();
      td.colSpan = ids.length + 1; td.className = "muted";
      td.parentElement.classList.add("diff");
      td.textContent = ids.length > 1 ? "These models' settings are the same." : "Pick a second model to see differences.";
    }
  }

  function render() {
    fillOutputs();
    plot();
    renderSettings();
    writeUrl();
  }

  // ------------------------------------------------------------------ wiring
  function init() {
    const filter = $("c-filter");
    filter.value = state.filter;
    $("c-x").value = state.x;
    $("c-smooth").value = String(state.smooth);
    $("c-smooth-value").textContent = String(state.smooth);
    $("c-only-diff").checked = state.onlyDiff;
    const boxes = new Set(state.selected);
    pickBoxes().forEach((b) => { b.checked = boxes.has(b.value); });
    syncPicks();
    applyFilter();

    filter.addEventListener("input", () => { state.filter = filter.value; applyFilter(); writeUrl(); });
    pickBoxes().forEach((b) => b.addEventListener("change", () => { syncPicks(); writeUrl(); load(state.selected); }));
    $("c-output").addEventListener("change", (ev) => { state.output = ev.target.value; plot(); writeUrl(); });
    $("c-x").addEventListener("change", (ev) => { state.x = ev.target.value; plot(); writeUrl(); });
    $("c-smooth").addEventListener("input", (ev) => {
      state.smooth = Number(ev.target.value);
      $("c-smooth-value").textContent = ev.target.value;
      plot(); writeUrl();
    });
    $("c-only-diff").addEventListener("change", (ev) => {
      state.onlyDiff = ev.target.checked; renderSettings(); writeUrl();
    });
    load(state.selected);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
