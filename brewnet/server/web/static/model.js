// The model page: live training graphs, BatchNorm health, resources, log, snapshots, actions.
// Data: /api/v1/jobs/<id>/metrics once, then the job's event stream (status, progress, metric,
// done) from the byte offset the page was rendered at; /models/<id>/batchnorm.json,
// /models/<id>/usage.json and /api/v1/jobs/<id>/log while it runs.
"use strict";
(function () {
  const B = window.brewnet;
  const boot = JSON.parse(document.getElementById("model-boot").textContent);
  const jobId = boot.job.id;
  const ipe = boot.iters_per_epoch || null;
  const $ = (id) => document.getElementById(id);
  const PHASE_LABEL = {train: "train", test: "val", test_moving_bn: "val, moving-average BN"};

  const state = {
    job: boot.job,
    series: new Map(),        // "phase|name" -> {phase, name, pts: Map(iter -> value), sorted, dirty}
    points: 0,
    lastId: boot.metrics_offset || 0,
    stream: null, watcher: null, following: false,
    snapshotCount: null, bn: null, bnTimer: null, drawTimer: null,
    pollTimer: null, loaded: false,
  };

  const isActive = (s) => boot.active.includes(s);
  const isResumable = (s) => boot.resumable.includes(s);
  const isFinished = (s) => boot.finished.includes(s);
  const xOf = (it) => (axisMode() === "epoch" && ipe) ? it / ipe : it;
  const axisMode = () => $("x-axis").value;

  // ------------------------------------------------------------------ series

  function phaseKey(rec) {
    const phase = String(rec.phase || "train");
    return (rec.test_net !== undefined && rec.test_net !== null && rec.test_net !== 0) ? `${phase}#${rec.test_net}` : phase;
  }

  function addPoint(phase, name, iter, value) {
    const key = `${phase}|${name}`;
    let s = state.series.get(key);
    if (!s) { s = {phase, name, pts: new Map(), sorted: [], dirty: false}; state.series.set(key, s); }
    if (!s.pts.has(iter)) state.points += 1;
    s.pts.set(iter, (value === null || value === undefined) ? null : Number(value));
    s.dirty = true;
    $("charts").dataset.points = String(state.points);
  }

  function sortedOf(s) {
    if (s.dirty) { s.sorted = Array.from(s.pts.entries()).sort((a, b) => a[0] - b[0]); s.dirty = false; }
    return s.sorted;
  }

  function label(s) {
    const base = s.phase.split("#")[0];
    const net = s.phase.includes("#") ? ` #${s.phase.split("#")[1]}` : "";
    return `${s.name} (${PHASE_LABEL[base] || base}${net})`;
  }

  const isAccuracy = (name) => name.toLowerCase().includes("accuracy");
  // a generic model's task metrics (brewnet's test-phase metrics) have their own graphs
  // (generic_model.js); the main graph keeps the net's outputs
  const TASK_METRIC = /^(.*\/)?(mean_iou|pixel_accuracy|iou\[\d+\]|rmse|mae)$/;
  const isTaskMetric = (s) => Boolean(document.getElementById("generic-boot")) && s.phase !== "train" && TASK_METRIC.test(s.name);

  // The best validation point: the highest of the first 'accuracy' output, else the lowest 'loss'
  function bestPoint() {
    const test = Array.from(state.series.values()).filter((s) => s.phase === "test").sort((a, b) => a.name < b.name ? -1 : 1);
    for (const [word, sign] of [["accuracy", 1], ["loss", -1]]) {
      for (const s of test) {
        if (!s.name.toLowerCase().includes(word)) continue;
        let best = null;
        for (const [it, v] of sortedOf(s)) {
          if (v === null || !isFinite(v)) continue;
          if (best === null || sign * v > sign * best[1]) best = [it, v];
        }
        if (best) return {series: s, iter: best[0], value: best[1], accuracy: word === "accuracy"};
      }
    }
    return null;
  }

  // ------------------------------------------------------------------ charts

  const COLORS = ["#1f5fa8", "#d2691e", "#2a7a2a", "#b02a2a", "#7b4fa8", "#8c6d1f", "#1f8a8a", "#c2185b"];
  const PLOT_CONFIG = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"]};

  function scheduleDraw() {
    if (state.drawTimer) return;
    state.drawTimer = setTimeout(() => { state.drawTimer = null; draw(); }, 250);
  }

  function draw() {
    if (!window.Plotly) return;
    const weight = Number($("smoothing").value);
    const logScale = $("log-scale").checked;
    const traces = [];
    let i = 0;
    let lr = null;
    const all = Array.from(state.series.values()).sort((a, b) => (a.phase + a.name < b.phase + b.name ? -1 : 1));
    for (const s of all) {
      if (s.phase === "train" && s.name === "lr") { lr = s; continue; }
      if (isTaskMetric(s)) continue;
      const pts = sortedOf(s);
      const acc = isAccuracy(s.name);
      const scale = acc ? 100 : 1;
      const xs = pts.map((p) => xOf(p[0]));
      const raw = pts.map((p) => (p[1] === null ? null : p[1] * scale));
      const color = COLORS[i++ % COLORS.length];
      const yaxis = acc ? "y2" : "y";
      const dash = s.phase.startsWith("test_moving_bn") ? "dot" : (s.phase === "train" ? "solid" : "dash");
      if (weight > 0) {
        traces.push({x: xs, y: raw, name: label(s) + " raw", yaxis, mode: "lines", showlegend: false,
                     hoverinfo: "skip", line: {color, width: 1, dash}, opacity: 0.25});
      }
      traces.push({x: xs, y: weight > 0 ? B.smooth(raw, weight) : raw, name: label(s), yaxis,
                   mode: pts.length < 30 && s.phase !== "train" ? "lines+markers" : "lines",
                   line: {color, width: 2, dash}});
    }
    const best = bestPoint();
    const annotations = [];
    if (best) {
      const y = best.accuracy ? best.value * 100 : best.value;
      const yaxis = best.accuracy ? "y2" : "y";
      traces.push({x: [xOf(best.iter)], y: [y], name: "best val", yaxis, mode: "markers",
                   marker: {symbol: "star", size: 14, color: "#e0a800", line: {color: "#5a4500", width: 1}}});
      const text = `best val ${best.series.name}: ${best.accuracy ? B.fmt.num(best.value * 100, 4) + " %" : B.fmt.num(best.value)}`;
      annotations.push({x: xOf(best.iter), y, xref: "x", yref: yaxis, text, showarrow: true, arrowhead: 2, ax: 0, ay: -30,
                        bgcolor: "rgba(255,255,255,.85)", bordercolor: "#e0a800"});
      $("charts").dataset.best = String(best.iter);
      $("best-text").textContent = `${text} at iteration ${best.iter}` + (ipe ? ` (epoch ${B.fmt.num(best.iter / ipe, 4)})` : "");
    }
    const xTitle = axisMode() === "epoch" ? "epoch" : "iteration";
    const layout = {
      margin: {l: 60, r: 70, t: 40, b: 45}, height: 380, hovermode: "x unified",
      legend: {orientation: "h", y: -0.2},
      xaxis: {title: {text: xTitle}},
      yaxis: {title: {text: "loss"}, type: logScale ? "log" : "linear"},
      yaxis2: {title: {text: "accuracy (%)"}, overlaying: "y", side: "right", range: [0, 100], ticksuffix: " %", showgrid: false,
               tickmode: "linear", tick0: 0, dtick: 20},
      annotations,
    };
    window.Plotly.react("chart-main", traces, layout, PLOT_CONFIG);
    const lrPts = lr ? sortedOf(lr) : [];
    const lrValues = lrPts.map((p) => p[1]).filter((v) => v !== null && isFinite(v));
    const lrMax = lrValues.length ? Math.max(...lrValues) : 0;
    // a constant rate would get plotly's ±1 range around it: start the axis at 0 instead
    const lrAxis = lrMax > 0 && Math.min(...lrValues) === lrMax ? {range: [0, lrMax * 1.5]} : {rangemode: "tozero"};
    window.Plotly.react("chart-lr", lrPts.length ? [{x: lrPts.map((p) => xOf(p[0])), y: lrPts.map((p) => p[1]),
                                                    name: "learning rate", mode: "lines", line: {color: "#7b4fa8"}}] : [],
      {margin: {l: 60, r: 60, t: 10, b: 40}, height: 200, xaxis: {title: {text: xTitle}},
       yaxis: {title: {text: "learning rate"}, exponentformat: "e", ...lrAxis}, showlegend: false}, PLOT_CONFIG);
    $("chart-status").textContent = state.points ? `${state.points} points` : "no points yet";
    window.dispatchEvent(new CustomEvent("brewnet:series", {detail: {series: state.series, xOf, sortedOf, axis: axisMode()}}));
    updateSnapshotAccuracy();
    drawBnAccuracy();
  }

  async function loadMetrics() {
    try {
      const m = await B.api(`/api/v1/jobs/${encodeURIComponent(jobId)}/metrics?max_points=${boot.max_points}`);
      for (const [phase, names] of Object.entries(m)) {
        if (phase === "job_id" || !names || typeof names !== "object") continue;
        for (const [name, pts] of Object.entries(names)) {
          for (const p of pts) addPoint(phase, name, p[0], p[1]);
        }
      }
    } catch (err) {
      B.flash(`Metrics could not be loaded: ${err.message}`);
    }
    state.loaded = true;
    draw();
    drawBatchNorm();
  }

  // ------------------------------------------------------------------ the job's state

  function setStatus(status, extra = {}) {
    const before = state.job.status;
    state.job.status = status;
    if (extra.error !== undefined) state.job.error = extra.error;
    const badge = $("status");
    badge.textContent = status;
    const css = {Running: "info", Done: "success", Error: "danger", Aborted: "danger", Interrupted: "danger"}[status] || "warning";
    badge.className = `status-badge status-${css}`;
    $("model").dataset.status = status;
    $("error-text").textContent = state.job.error || "";
    if (before !== status && !isActive(status)) B.flash("");   // "Aborting…" and the like are over
    updateButtons();
    if (before !== status) refreshJob();
    if (status !== "Waiting") $("queue-text").textContent = "";
    if (isActive(status)) startPolling(); else stopPolling();
  }

  // The job as /api/v1 has it: its status history (every change, even those the stream's polling
  // stepped over) and its place in the queue
  let jobTimer = null;
  function refreshJob() {
    if (jobTimer) return;
    jobTimer = setTimeout(async () => {
      jobTimer = null;
      let job;
      try { job = await B.api(`/api/v1/jobs/${encodeURIComponent(jobId)}`); } catch (err) { return; }
      const body = $("history").querySelector("tbody");
      body.innerHTML = "";
      for (const [status, t] of job.status_history || []) {
        const tr = document.createElement("tr");
        const td1 = document.createElement("td"); td1.textContent = status;
        const td2 = document.createElement("td"); td2.className = "time"; td2.textContent = B.fmt.time(t);
        tr.append(td1, td2); body.appendChild(tr);
      }
      $("queue-text").textContent = job.queue_position ? `queue position ${job.queue_position}` +
        (job.waiting_for ? ` (waiting for ${job.waiting_for})` : "") : "";
    }, 200);
  }

  function setProgress(p) {
    const pct = Math.max(0, Math.min(100, 100 * Number(p || 0)));
    const bar = $("progress");
    bar.querySelector("span").style.width = `${pct}%`;
    bar.setAttribute("aria-valuenow", pct.toFixed(1));
    $("progress-text").textContent = `${pct.toFixed(1)} %`;
  }

  let busy = false;
  function updateButtons() {
    const s = state.job.status;
    const can = boot.can_change && !busy;
    $("btn-abort").disabled = !can || !isActive(s);
    $("btn-resume").disabled = !can || !isResumable(s);
    $("btn-delete").disabled = !can || !isFinished(s);
    $("action-busy").hidden = !busy;
  }

  // The job's event stream from the last metric seen; on "done" a resumable job is watched on the
  // server-wide stream, so a resume (here or elsewhere) reopens it.
  function follow() {
    if (state.stream) return;
    stopWatching();
    const url = `/api/v1/jobs/${encodeURIComponent(jobId)}/events?last_event_id=${state.lastId}`;
    const es = B.events(url, {
      status: (d) => setStatus(d.status, d),
      progress: (d) => setProgress(d.progress),
      metric: (rec, ev) => {
        if (ev.lastEventId) state.lastId = Number(ev.lastEventId) || state.lastId;
        if (rec && rec.name !== undefined && rec.iter !== undefined) {
          addPoint(phaseKey(rec), String(rec.name), Number(rec.iter), rec.value);
          scheduleDraw();
        }
      },
      done: (d) => {
        state.stream = null;
        setStatus(d.status, d);
        afterFinish();
      },
      deleted: () => {
        es.close(); state.stream = null;
        B.flash("This job was deleted.", "info");
        setTimeout(() => { window.location.href = "/"; }, 1500);
      },
    });
    state.stream = es;
  }

  function watchForResume() {
    if (state.watcher || !isResumable(state.job.status)) return;
    const es = B.events("/api/v1/events", {
      status: (d) => {
        if (d.id !== jobId) return;
        if (isActive(d.status)) { setStatus(d.status, d); follow(); }
      },
      deleted: (d) => {
        if (d.id !== jobId) return;
        B.flash("This job was deleted.", "info");
        setTimeout(() => { window.location.href = "/"; }, 1500);
      },
    });
    state.watcher = es;
  }

  function stopWatching() {
    if (state.watcher) { state.watcher.close(); state.watcher = null; }
  }

  function afterFinish() {
    busy = false; updateButtons();
    draw(); drawBatchNorm();
    refreshLog(); refreshSnapshots(); refreshUsage();
    watchForResume();
  }

  // ------------------------------------------------------------------ actions

  async function act(path, opts, message) {
    busy = true; updateButtons(); B.flash("");
    try {
      const job = await B.api(path, opts);
      if (job && job.status) setStatus(job.status, job);
      if (message) B.flash(message, "info");
      return job;
    } catch (err) {
      B.flash(err.message);
      return null;
    } finally {
      busy = false; updateButtons();
    }
  }

  $("btn-abort").addEventListener("click", async () => {
    const job = await act(`/api/v1/jobs/${encodeURIComponent(jobId)}/abort`, {method: "POST"}, "Aborting: the training writes a snapshot, then stops…");
    if (job && isActive(job.status)) { busy = true; updateButtons(); }   // until the stream says it ended
  });

  $("btn-resume").addEventListener("click", async () => {
    const job = await act(`/api/v1/jobs/${encodeURIComponent(jobId)}/resume`, {method: "POST"}, "Resumed: it continues from its last snapshot.");
    if (job) follow();
  });

  $("btn-delete").addEventListener("click", async () => {
    if (!window.confirm(`Delete "${state.job.name}" and all its files?`)) return;
    busy = true; updateButtons();
    try {
      await B.api(`/api/v1/jobs/${encodeURIComponent(jobId)}`, {method: "DELETE"});
      if (state.stream) state.stream.close();
      stopWatching();
      window.location.href = "/";
    } catch (err) {
      B.flash(err.message);
      busy = false; updateButtons();
    }
  });

  $("edit-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const button = $("edit-save");
    button.disabled = true; $("edit-saved").textContent = "saving…";
    B.showFieldErrors(form, {});
    try {
      const job = await B.api(`/api/v1/jobs/${encodeURIComponent(jobId)}`, {method: "PATCH",
        json: {name: $("edit-name").value, notes: $("edit-notes").value}});
      state.job.name = job.name;
      $("job-name").textContent = job.name;
      document.title = `${job.name} · brewnet`;
      $("edit-saved").textContent = "saved";
    } catch (err) {
      $("edit-saved").textContent = "";
      if (err.errors) B.showFieldErrors(form, err.errors);
      else if (err.field === "name" || err.field === "job_name") B.showFieldErrors(form, {job_name: [err.message]});
      else if (err.field === "notes") B.showFieldErrors(form, {notes: [err.message]});
      else B.flash(err.message);
    } finally {
      button.disabled = !boot.can_change;
    }
  });

  // ------------------------------------------------------------------ log, usage, snapshots

  async function refreshLog() {
    try {
      const r = await B.api(`/api/v1/jobs/${encodeURIComponent(jobId)}/log?lines=80`);
      const pre = $("log-text");
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = r.lines.join("\n");
      if (atEnd) pre.scrollTop = pre.scrollHeight;
      $("log-state").textContent = isActive(state.job.status) ? "(refreshed while it runs)" : "";
    } catch (err) { /* the next refresh tries again */ }
  }

  async function refreshUsage() {
    let u;
    try { u = await B.api(`/models/${encodeURIComponent(jobId)}/usage.json`); } catch (err) { return; }
    const slots = u.slots || {};
    $("usage-slots").textContent = `CPU jobs ${slots.cpu ? slots.cpu.used : "?"}/${slots.cpu ? slots.cpu.total : "?"}` +
      ((slots.gpus || []).length ? ` · GPUs ${(slots.gpus || []).map((g) => `${g.index}${g.job_id ? " (busy)" : ""}`).join(", ")}` : " · no GPU");
    const gpus = (u.assigned && u.assigned.gpus) || u.gpus || [];
    if (!u.running) {
      $("usage-process").textContent = "not running";
      $("usage-cpu").textContent = ""; $("usage-rss").textContent = "";
      $("usage-gpu").textContent = gpus.length ? `assigned ${gpus.join(", ")}` : "";
      return;
    }
    $("usage-process").textContent = `pid ${u.pid}` + (u.processes > 1 ? ` + ${u.processes - 1} more` : "") + `, ${u.threads} threads`;
    $("usage-cpu").textContent = `${u.cpu_percent.toFixed(0)} % (100 % = one of ${u.cpu_count} cores)`;
    $("usage-rss").textContent = B.fmt.bytes(u.rss_bytes);
    const mem = Object.values(u.gpu_memory_mib || {});
    $("usage-gpu").textContent = gpus.length ? `GPU ${gpus.join(", ")}` + (mem.length ? `, ${mem.reduce((a, b) => a + b, 0)} MiB` : "")
                                             : "CPU only";
  }

  function accuracyAt(iter) {
    const test = Array.from(state.series.values()).filter((s) => s.phase === "test" && isAccuracy(s.name))
      .sort((a, b) => a.name < b.name ? -1 : 1)[0];
    if (!test || !test.pts.has(iter)) return null;
    return test.pts.get(iter);
  }

  function updateSnapshotAccuracy() {
    for (const tr of $("snapshot-table").querySelectorAll("tbody tr")) {
      const v = accuracyAt(Number(tr.dataset.iteration));
      if (v !== null && v !== undefined) tr.children[2].textContent = `${(v * 100).toFixed(1)} %`;
    }
  }

  function snapshotRow(s) {
    const tr = document.createElement("tr");
    tr.dataset.iteration = String(s.iteration);
    const q = `epoch=${encodeURIComponent(s.epoch)}`;
    const id = encodeURIComponent(jobId);
    tr.innerHTML = `<td class="num">${B.esc(s.epoch)}</td><td class="num">${B.esc(s.iteration)}</td><td class="num"></td>` +
      `<td><a class="dl-bundle" href="/api/v1/models/${id}/bundle.tar.gz?${q}">deploy bundle</a>` +
      ` · <a class="dl-digits" href="/models/${id}/download.tar.gz?${q}">.tar.gz</a>` +
      ` · <a class="dl-digits" href="/models/${id}/download.zip?${q}">.zip</a></td>`;
    return tr;
  }

  async function refreshSnapshots() {
    let snaps;
    try { snaps = await B.api(`/api/v1/models/${encodeURIComponent(jobId)}/snapshots`); } catch (err) { return; }
    const body = $("snapshot-table").querySelector("tbody");
    const have = new Set(Array.from(body.children).map((tr) => tr.dataset.iteration));
    const want = new Set(snaps.map((s) => String(s.iteration)));
    for (const tr of Array.from(body.children)) if (!want.has(tr.dataset.iteration)) tr.remove();
    for (const s of snaps) if (!have.has(String(s.iteration))) body.appendChild(snapshotRow(s));
    $("no-snapshots").hidden = snaps.length > 0;
    updateSnapshotAccuracy();
    const noSnapshot = document.getElementById("inference-no-snapshot");
    if (noSnapshot && snaps.length > 0 && !noSnapshot.dataset.ready) {
      // the inference forms were rendered without snapshots to choose from: offer them now
      noSnapshot.dataset.ready = "1";
      noSnapshot.innerHTML = 'Snapshots are ready: <a href="">reload the page</a> to classify images with them.';
    }
    if (state.snapshotCount !== snaps.length) { state.snapshotCount = snaps.length; loadBatchNorm(); }
  }

  let pollCount = 0;
  function startPolling() {
    if (state.pollTimer) return;
    state.pollTimer = setInterval(() => {
      pollCount += 1;
      refreshLog();
      if (state.job.status === "Running") refreshUsage();
      if (pollCount % 5 === 0) refreshSnapshots();
    }, 3000);
    refreshUsage();
  }

  function stopPolling() {
    if (state.pollTimer) { clearInterval(state.pollTimer); state.pollTimer = null; }
  }

  // ------------------------------------------------------------------ BatchNorm health

  async function loadBatchNorm() {
    if (state.bnTimer) { clearTimeout(state.bnTimer); state.bnTimer = null; }
    let bn;
    try { bn = await B.api(`/models/${encodeURIComponent(jobId)}/batchnorm.json`); } catch (err) {
      $("bn-body").textContent = `BatchNorm statistics could not be read: ${err.message}`;
      return;
    }
    state.bn = bn;
    drawBatchNorm();
    if (bn.gap && bn.gap.status === "computing") state.bnTimer = setTimeout(loadBatchNorm, 2000);
  }

  function fmtPct(v) { return (v === null || v === undefined) ? "" : `${(100 * v).toFixed(1)} %`; }

  function lastCommon(a, b) {
    if (!a || !b) return null;
    const its = Array.from(a.pts.keys()).filter((it) => b.pts.has(it)).sort((x, y) => x - y);
    return its.length ? its[its.length - 1] : null;
  }

  function drawBatchNorm() {
    const bn = state.bn;
    if (!bn || !window.Plotly) return;
    const body = $("bn-body");
    if (!bn.snapshots.length) { body.innerHTML = `<p class="muted">No snapshot yet: the statistics come from the snapshots.</p>`; $("bn-panels").hidden = true; return; }
    if (!bn.layers.length) { body.innerHTML = `<p class="muted">This net has no BatchNorm layer.</p>`; $("bn-panels").hidden = true; return; }
    body.innerHTML = "";
    $("bn-panels").hidden = false;
    const sel = $("bn-layer");
    const chosen = sel.value;
    if (sel.options.length !== bn.layers.length || Array.from(sel.options).some((o, i) => o.value !== bn.layers[i])) {
      sel.innerHTML = bn.layers.map((n) => `<option value="${B.esc(n)}">${B.esc(n)}</option>`).join("");
      if (bn.layers.includes(chosen)) sel.value = chosen;
    }
    const layer = sel.value || bn.layers[0];
    const rows = bn.snapshots.filter((s) => s.layers[layer]);
    const xs = rows.map((s) => xOf(s.iteration));
    window.Plotly.react("chart-bn", [
      {x: xs, y: rows.map((s) => s.layers[layer].mean), name: "running mean (channel mean)", mode: "lines+markers", line: {color: "#1f5fa8"}},
      {x: xs, y: rows.map((s) => s.layers[layer].var), name: "running variance (channel mean)", mode: "lines+markers", yaxis: "y2", line: {color: "#d2691e"}},
    ], {margin: {l: 60, r: 60, t: 10, b: 45}, height: 300, legend: {orientation: "h", y: -0.3},
        xaxis: {title: {text: axisMode() === "epoch" ? "epoch" : "iteration"}},
        yaxis: {title: {text: "mean"}}, yaxis2: {title: {text: "variance"}, overlaying: "y", side: "right", showgrid: false}},
    PLOT_CONFIG);

    const gap = bn.gap || {status: "none"};
    const shown = gap.status === "ready" ? gap : (gap.status === "computing" ? gap.previous : null);
    const st = $("bn-gap-state");
    if (gap.status === "computing") st.textContent = `(measuring snapshot ${gap.file}…${shown ? " showing the previous one" : ""})`;
    else if (gap.status === "error") st.textContent = `(could not be measured: ${gap.error})`;
    else if (gap.status === "ready") st.textContent = `(snapshot ${gap.file}, ${gap.batches} validation batches)`;
    else st.textContent = "";
    const tbody = $("bn-gap").querySelector("tbody");
    tbody.innerHTML = "";
    for (const r of (shown && shown.layers) || []) {
      const tr = document.createElement("tr");
      tr.dataset.layer = r.name;
      const cls = r.output_gap > 0.2 ? "bad" : (r.output_gap > 0.05 ? "warn" : "ok");
      tr.innerHTML = `<td>${B.esc(r.name)}</td><td class="num">${B.esc(r.channels)}</td>` +
        `<td class="num ${cls}">${B.esc(B.fmt.num(r.output_gap, 3))}</td><td class="num">${B.esc(B.fmt.num(r.mean_shift_max, 3))}</td>` +
        `<td class="num">${B.esc(B.fmt.num(r.var_rel_median, 3))}</td>`;
      tbody.appendChild(tr);
    }
    drawBnAccuracy();
  }

  // Validation accuracy: the doctor's global vs batch statistics, and the trainer's recalibrated
  // ("test") vs moving-average ("test_moving_bn") statistics at their last common iteration
  function drawBnAccuracy() {
    const bn = state.bn;
    if (!bn) return;
    const gap = bn.gap || {status: "none"};
    const shown = gap.status === "ready" ? gap : (gap.status === "computing" ? gap.previous : null);
    const acc = $("bn-accuracy").querySelector("tbody");
    acc.innerHTML = "";
    const addRow = (text, value) => {
      const tr = document.createElement("tr");
      const a = document.createElement("td"); a.textContent = text;
      const b = document.createElement("td"); b.className = "num"; b.textContent = value;
      tr.append(a, b); acc.appendChild(tr);
    };
    if (shown) {
      for (const [k, v] of Object.entries(shown.accuracy_global || {})) {
        addRow(`${k}, stored global statistics`, fmtPct(v));
        addRow(`${k}, batch statistics (train mode)`, fmtPct((shown.accuracy_batch || {})[k]));
      }
    }
    const tests = Array.from(state.series.values()).filter((s) => s.phase === "test" && isAccuracy(s.name));
    for (const t of tests) {
      const m = state.series.get(`test_moving_bn|${t.name}`);
      const it = lastCommon(t, m);
      if (it === null) continue;
      addRow(`${t.name} at iteration ${it}, recalibrated statistics (precise BN)`, fmtPct(t.pts.get(it)));
      addRow(`${t.name} at iteration ${it}, moving-average statistics`, fmtPct(m.pts.get(it)));
    }
    if (!acc.children.length) addRow(gap.status === "computing" ? "measuring…" : "no accuracy output", "");
  }

  // ------------------------------------------------------------------ controls

  $("smoothing").addEventListener("input", () => {
    $("smoothing-value").textContent = Number($("smoothing").value).toFixed(2);
    draw();
  });
  $("log-scale").addEventListener("change", draw);
  $("x-axis").addEventListener("change", () => { draw(); drawBatchNorm(); });
  $("bn-layer").addEventListener("change", drawBatchNorm);
  for (const td of document.querySelectorAll("#history td.time")) td.textContent = B.fmt.time(Number(td.dataset.time));

  // ------------------------------------------------------------------ start

  updateButtons();
  loadMetrics().then(() => {
    follow();
    refreshSnapshots();
  });
  if (isActive(state.job.status)) startPolling();
  else refreshUsage();
})();
