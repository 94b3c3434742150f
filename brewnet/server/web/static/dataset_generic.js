// A generic dataset's page: status and progress live (the job's event stream), entries and
// shapes per stage, the mean image, the pixels per class (segmentation; plotly), a gallery of
// records read from the LMDBs, the log; delete.
"use strict";
(function () {
  const B = window.brewnet;
  const root = document.getElementById("dataset");
  const id = root.dataset.id;
  const kind = root.dataset.kind;
  const $ = (x) => document.getElementById(x);
  let data = JSON.parse($("dataset-data").textContent);
  const CSS = {Initialized: "warning", Waiting: "warning", Running: "info", Done: "success",
               Aborted: "danger", Error: "danger", Interrupted: "warning"};
  const NAMES = {train: "Training", val: "Validation", test: "Test"};
  const COLOURS = {train: "#1f5fa8", val: "#e07b1a", test: "#2a8a4a"};
  const shape = (s) => (Array.isArray(s) ? s.join(" × ") : "varies");

  function showStatus(s, error) {
    root.dataset.status = s;
    $("status").textContent = s;
    $("status").className = `status-${CSS[s] || "default"}`;
    $("error").hidden = !error;
    $("error").textContent = error || "";
  }
  function showProgress(p) {
    const pct = Math.max(0, Math.min(100, 100 * (Number(p) || 0)));
    $("progress").firstElementChild.style.width = `${pct.toFixed(1)}%`;
    $("progress").setAttribute("aria-valuenow", String(Math.round(pct)));
    $("progress-text").textContent = `${Math.round(pct)} %`;
  }
  const stagesOf = () => ["train", "val", "test"].filter((s) => (data.stages || {})[s]);

  function renderStages() {
    const stages = stagesOf();
    $("stages-empty").hidden = stages.length > 0;
    $("stages").innerHTML = stages.length ? `<thead><tr><th>Stage</th><th class="num">Entries</th><th>Feature shape</th><th>Label shape</th></tr></thead>
      <tbody>${stages.map((s) => { const st = data.stages[s]; return `<tr data-stage="${s}"><td>${NAMES[s]}</td><td class="num">${st.entries}</td><td>${shape(st.feature_shape)}</td><td>${st.labels ? shape(st.label_shape) : "scalar (in the feature Datum)"}</td></tr>`; }).join("")}</tbody>` : "";
    const parts = [];
    if (data.feature_dims) parts.push(`Feature dims (H × W × C): ${data.feature_dims.join(" × ")}`);
    if (data.label_range) parts.push(`Label range: ${data.label_range.map((v) => Number(v).toFixed(4)).join(" … ")}`);
    $("dims").textContent = parts.join(" · ");
  }

  function renderPixels() {
    if (kind !== "segmentation") return;
    const counts = data.pixel_counts || {};
    const stages = ["train", "val", "test"].filter((s) => counts[s]);
    $("pixels-empty").hidden = stages.length > 0;
    const classes = data.classes || [];
    const table = $("pixels-table");
    if (!stages.length) { table.innerHTML = ""; return; }
    table.innerHTML = `<thead><tr><th>Class</th>${stages.map((s) => `<th class="num">${NAMES[s]}</th>`).join("")}</tr></thead>
      <tbody>${classes.map((c) => `<tr><td><span class="swatch" style="background:${c.color}"></span>${B.esc(c.name)}</td>${stages.map((s) => `<td class="num">${counts[s][c.index] || 0}</td>`).join("")}</tr>`).join("")}</tbody>`;
    const div = $("pixels-chart");
    if (!window.Plotly) return;
    const names = classes.map((c) => c.name);
    const traces = stages.map((s) => ({type: "bar", name: NAMES[s], x: names, y: classes.map((c) => counts[s][c.index] || 0),
                                       marker: {color: COLOURS[s]}, hovertemplate: "%{x}: %{y} pixels<extra>" + NAMES[s] + "</extra>"}));
    window.Plotly.react(div, traces, {barmode: "group", margin: {l: 60, r: 10, t: 10, b: 60}, height: 300,
                                      xaxis: {type: "category", automargin: true}, yaxis: {title: {text: "pixels"}, rangemode: "tozero"},
                                      legend: {orientation: "h", y: 1.12}}, {displaylogo: false, responsive: true});
    div.dataset.traces = String(traces.length);
  }

  function showMean() {
    const img = $("mean");
    if (!data.has_mean) { img.hidden = true; $("mean-empty").hidden = false; return; }
    img.onload = () => {
      img.hidden = false; $("mean-empty").hidden = true;
      const scale = Math.max(1, Math.floor(256 / Math.max(img.naturalWidth, img.naturalHeight)));
      img.style.width = `${img.naturalWidth * scale}px`;
      $("mean-caption").textContent = `${img.naturalWidth} × ${img.naturalHeight} pixels`;
    };
    img.src = `/datasets/${encodeURIComponent(id)}/generic/mean.png?t=${Date.now()}`;
  }

  // ------------------------------------------------------------------ gallery
  const gStage = $("g-stage"), gallery = $("gallery"), gView = $("g-view");
  const perPage = Number(root.dataset.perPage) || 24;
  let gPage = 1, gPages = 1, gRequest = 0;
  function img(url, alt) {
    const i = document.createElement("img");
    i.src = url; i.alt = alt; i.loading = "lazy";
    return i;
  }
  function labelNode(item) {
    const l = item.label;
    if (l.type === "mask") {
      const overlay = gView && gView.value === "overlay";
      return img(overlay ? l.overlay : l.url, `Record ${item.key}: its mask ${overlay ? "over the image" : "coloured"}`);
    }
    if (l.type === "image") return img(l.url, `Record ${item.key}: its target`);
    const span = document.createElement("span");
    span.className = "values";
    span.textContent = l.type === "values" ? `[${l.values.map((v) => v.toFixed(4)).join(", ")}]` : `label ${l.value}`;
    return span;
  }
  async function loadGallery() {
    const stage = gStage.value;
    const n = ++gRequest;
    $("g-explore").href = `/datasets/generic/explore?job_id=${encodeURIComponent(id)}&db=${stage}_db%2Ffeatures&page=0&size=25`;
    gallery.setAttribute("aria-busy", "true");
    try {
      const q = new URLSearchParams({stage, page: gPage, per_page: perPage});
      const g = await B.api(`/datasets/${encodeURIComponent(id)}/generic/records.json?${q}`);
      if (n !== gRequest) return;
      gPage = g.page; gPages = g.pages;
      gallery.innerHTML = "";
      for (const item of g.items) {
        const fig = document.createElement("figure");
        fig.className = "record";
        fig.dataset.index = String(item.index);
        const pair = document.createElement("div");
        pair.className = "pair";
        const overlay = item.label.type === "mask" && gView && gView.value === "overlay";
        if (!overlay) pair.appendChild(img(item.feature, `Record ${item.key}: the ${kind === "processing" ? "input" : "image"}`));
        const label = labelNode(item);
        if (item.label.type === "values" || item.label.type === "scalar") {
          fig.appendChild(pair);
          const cap = document.createElement("figcaption");
          cap.append(`${item.key} `, label);
          fig.appendChild(cap);
        } else {
          pair.appendChild(label);
          fig.appendChild(pair);
          const cap = document.createElement("figcaption");
          cap.textContent = item.key;
          fig.appendChild(cap);
        }
        gallery.appendChild(fig);
      }
      const first = g.total ? (g.page - 1) * g.per_page + 1 : 0;
      $("g-page").textContent = `Page ${g.page} of ${g.pages} · records ${first}–${Math.min(g.total, g.page * g.per_page)} of ${g.total}`;
      gallery.dataset.page = String(g.page);
    } catch (err) {
      if (n === gRequest) B.flash(`The records could not be loaded: ${err.message}`);
    } finally {
      if (n === gRequest) gallery.removeAttribute("aria-busy");
      $("g-prev").disabled = gPage <= 1;
      $("g-next").disabled = gPage >= gPages;
    }
  }
  function fillStages() {
    const stages = stagesOf();
    const keep = gStage.value;
    gStage.innerHTML = stages.map((s) => `<option value="${s}">${NAMES[s]}</option>`).join("");
    if (stages.includes(keep)) gStage.value = keep;
    $("gallery-empty").hidden = stages.length > 0;
    return stages.length > 0;
  }
  gStage.addEventListener("change", () => { gPage = 1; loadGallery(); });
  if (gView) gView.addEventListener("change", () => loadGallery());
  $("g-prev").addEventListener("click", () => { if (gPage > 1) { gPage -= 1; loadGallery(); } });
  $("g-next").addEventListener("click", () => { if (gPage < gPages) { gPage += 1; loadGallery(); } });

  async function loadLog() {
    try {
      const l = await B.api(`/api/v1/jobs/${encodeURIComponent(id)}/log?lines=300`);
      $("log").textContent = l.lines.length ? l.lines.join("\n") : "(empty)";
    } catch (err) { B.flash(`The log could not be read: ${err.message}`); }
  }
  function renderAll() {
    renderStages();
    renderPixels();
    showMean();
    if (fillStages()) loadGallery();
    loadLog();
  }
  async function refreshAll() {
    // the page's data again, now that the job has ended (the server renders it)
    try {
      const r = await B.send(window.location.pathname, {accept: "text/html"});
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      data = JSON.parse(doc.getElementById("dataset-data").textContent);
    } catch (err) { B.flash(`The dataset could not be read: ${err.message}`); }
    renderAll();
  }

  renderAll();
  if (root.dataset.finished !== "true") {
    const ticker = setInterval(loadLog, 3000);
    const es = B.events(`/api/v1/jobs/${encodeURIComponent(id)}/events`, {
      status: (d) => showStatus(d.status, d.error),
      progress: (d) => showProgress(d.progress),
      done: (d) => { clearInterval(ticker); showStatus(d.status, d.error); if (d.status === "Done") showProgress(1); refreshAll(); },
      deleted: () => { es.close(); clearInterval(ticker); B.flash("This dataset was deleted.", "info"); },
    });
  }

  $("delete").addEventListener("click", async () => {
    if (!window.confirm("Delete this dataset and its files?")) return;
    $("delete").disabled = true;
    try {
      await B.api(`/api/v1/jobs/${encodeURIComponent(id)}`, {method: "DELETE"});
      window.location.assign("/");
    } catch (err) {
      B.flash(`Not deleted: ${err.message}`);
      $("delete").disabled = false;
    }
  });
})();
