// A generic model's task metrics: for segmentation mean IoU and pixel accuracy (%), and the IoU
// of each class (named from the dataset's class labels); for regression RMSE and MAE.  On the
// model page the series come from model.js ("brewnet:series" after each of its draws); on the
// large graph page (#large-graph-boot) from /api/v1/jobs/<id>/metrics, with the loss too.
"use strict";
(function () {
  const B = window.brewnet;
  const boot = JSON.parse(document.getElementById("generic-boot").textContent);
  const $ = (id) => document.getElementById(id);
  const seg = boot.dataset_kind === "segmentation";
  const CONFIG = {responsive: true, displaylogo: false};
  const COLORS = ["#1f5fa8", "#d2691e", "#2a7a2a", "#b02a2a", "#7b4fa8", "#8c6d1f", "#1f8a8a", "#c2185b"];
  const IOU = /^(?:(.*)\/)?iou\[(\d+)\]$/;

  function className(k) {
    const names = boot.class_labels || [];
    return names[k] ? `${names[k]} (${k})` : `Class #${k}`;
  }

  // name -> {label, higher (is more better), percent}
  function describe(name) {
    const m = IOU.exec(name);
    if (m) return {label: `IoU ${className(Number(m[2]))}` + (m[1] ? ` · ${m[1]}` : ""), higher: true, percent: true, perClass: true};
    const base = name.split("/").pop();
    const prefix = name.includes("/") ? ` · ${name.slice(0, name.lastIndexOf("/"))}` : "";
    const known = {mean_iou: ["mean IoU", true], pixel_accuracy: ["pixel accuracy", true], rmse: ["RMSE", false], mae: ["MAE", false]};
    if (!known[base]) return null;
    return {label: known[base][0] + prefix, higher: known[base][1], percent: seg};
  }

  function draw(list, xOf, xTitle) {
    if (!window.Plotly) return;
    const main = [], perClass = [], rows = [];
    let n = 0, k = 0;
    for (const s of list) {
      const d = describe(s.name);
      if (!d) continue;
      const pts = s.points.filter((p) => p[1] !== null && isFinite(p[1]));
      if (!pts.length) continue;
      const scale = d.percent ? 100 : 1;
      const trace = {x: pts.map((p) => xOf(p[0])), y: pts.map((p) => p[1] * scale), name: d.label,
                     mode: pts.length < 30 ? "lines+markers" : "lines"};
      if (d.perClass) { trace.line = {color: COLORS[k++ % COLORS.length]}; perClass.push(trace); }
      else { trace.line = {color: COLORS[n++ % COLORS.length], width: 2}; main.push(trace); }
      let best = pts[0];
      for (const p of pts) if (d.higher ? p[1] > best[1] : p[1] < best[1]) best = p;
      const last = pts[pts.length - 1];
      const fmt = (v) => d.percent ? `${B.fmt.num(v * 100, 4)} %` : B.fmt.num(v, 4);
      rows.push({name: s.name, label: d.label, last: fmt(last[1]), best: fmt(best[1]), iter: best[0], perClass: Boolean(d.perClass)});
    }
    const yTitle = seg ? "%" : "error";
    window.Plotly.react("chart-task", main, {margin: {l: 60, r: 30, t: 20, b: 45}, height: 320, legend: {orientation: "h", y: -0.25},
      xaxis: {title: {text: xTitle}}, yaxis: seg ? {title: {text: yTitle}, range: [0, 100], ticksuffix: " %"} : {title: {text: yTitle}, rangemode: "tozero"}}, CONFIG);
    $("chart-task").dataset.points = String(main.reduce((a, t) => a + t.x.length, 0));
    $("chart-task").dataset.series = main.map((t) => t.name).join("|");
    if ($("chart-iou")) {
      window.Plotly.react("chart-iou", perClass, {margin: {l: 60, r: 30, t: 20, b: 45}, height: 300, legend: {orientation: "h", y: -0.25},
        xaxis: {title: {text: xTitle}}, yaxis: {title: {text: "IoU (%)"}, range: [0, 100], ticksuffix: " %"}}, CONFIG);
      $("chart-iou").dataset.points = String(perClass.reduce((a, t) => a + t.x.length, 0));
      $("chart-iou").dataset.series = perClass.map((t) => t.name).join("|");
    }
    const body = $("task-latest").querySelector("tbody");
    if (!rows.length) return;
    body.innerHTML = "";
    rows.sort((a, b) => (a.perClass - b.perClass) || (a.name < b.name ? -1 : 1));
    for (const r of rows) {
      const tr = document.createElement("tr");
      tr.dataset.metric = r.name;
      tr.innerHTML = `<td>${B.esc(r.label)}</td><td class="num">${B.esc(r.last)}</td><td class="num">${B.esc(r.best)}</td><td class="num">${B.esc(r.iter)}</td>`;
      body.appendChild(tr);
    }
  }

  const large = document.getElementById("large-graph-boot");
  if (!large) {
    window.addEventListener("brewnet:series", (ev) => {
      const {series, xOf, sortedOf, axis} = ev.detail;
      const list = Array.from(series.values()).filter((s) => s.phase === "test").map((s) => ({name: s.name, points: sortedOf(s)}));
      draw(list, xOf, axis === "epoch" ? "epoch" : "iteration");
    });
    return;
  }
  // the large graph page: its own data, the loss graph too
  const info = JSON.parse(large.textContent);
  B.api(`/api/v1/jobs/${encodeURIComponent(info.job_id)}/metrics`).then((m) => {
    const test = Object.entries(m.test || {}).map(([name, points]) => ({name, points}));
    draw(test, (it) => it, "iteration");
    const traces = [];
    for (const [phase, label] of [["train", "train"], ["test", "val"]]) {
      for (const [name, points] of Object.entries(m[phase] || {})) {
        if (name === "lr" || describe(name)) continue;
        traces.push({x: points.map((p) => p[0]), y: points.map((p) => p[1]), name: `${name} (${label})`, mode: "lines"});
      }
    }
    window.Plotly.react("chart-loss", traces, {margin: {l: 60, r: 30, t: 20, b: 45}, height: 420, legend: {orientation: "h", y: -0.2},
      xaxis: {title: {text: "iteration"}}, yaxis: {title: {text: "loss"}}}, CONFIG);
    $("chart-loss").dataset.points = String(traces.reduce((a, t) => a + t.x.length, 0));
  }).catch((err) => B.flash(`Metrics could not be loaded: ${err.message}`));
})();
