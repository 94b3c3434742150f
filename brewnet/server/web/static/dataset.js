// A dataset job's page: status and progress live (the job's event stream), the images per class
// and split (plotly), a gallery per class read from the LMDBs, the mean image, the job's files
// and its log; clone and delete.
"use strict";
(function () {
  const B = window.brewnet;
  const root = document.getElementById("dataset");
  const id = root.dataset.id;
  const $ = (x) => document.getElementById(x);
  const data = JSON.parse($("dataset-data").textContent);
  const CSS = {Initialized: "warning", Waiting: "warning", Running: "info", Done: "success",
               Aborted: "danger", Error: "danger", Interrupted: "warning"};
  const SPLIT_NAMES = {train: "Training", val: "Validation", test: "Test"};
  const SPLIT_COLOURS = {train: "#1f5fa8", val: "#e07b1a", test: "#2a8a4a"};
  let status = root.dataset.status;

  document.querySelectorAll("td.time").forEach((td) => { td.textContent = B.fmt.time(Number(td.dataset.time)); });

  // ------------------------------------------------------------------ status and progress
  function showStatus(s, error) {
    status = s;
    root.dataset.status = s;
    const el = $("status");
    el.textContent = s;
    el.className = `status-${CSS[s] || "default"}`;
    const err = $("error");
    err.hidden = !error;
    err.textContent = error || "";
  }
  function showProgress(p) {
    const pct = Math.max(0, Math.min(100, 100 * (Number(p) || 0)));
    $("progress").firstElementChild.style.width = `${pct.toFixed(1)}%`;
    $("progress").setAttribute("aria-valuenow", String(Math.round(pct)));
    $("progress-text").textContent = `${Math.round(pct)} %`;
  }

  // ------------------------------------------------------------------ counts per class
  const splitsOf = (perClass) => ["train", "val", "test"].filter((s) => perClass[s] && Object.keys(perClass[s]).length);

  function renderCounts() {
    const perClass = data.per_class || {};
    const splits = splitsOf(perClass);
    const labels = data.labels && data.labels.length ? data.labels : Object.keys(perClass.train || {});
    $("counts-empty").hidden = splits.length > 0;
    document.querySelector(".ds-counts").hidden = !splits.length;
    const table = $("counts-table");
    if (!splits.length) { table.innerHTML = ""; return; }
    const total = (s) => labels.reduce((a, l) => a + (perClass[s][l] || 0), 0);
    table.innerHTML = `<thead><tr><th>Class</th>${splits.map((s) => `<th class="num">${SPLIT_NAMES[s]}</th>`).join("")}</tr></thead>
      <tbody>${labels.map((l) => `<tr><td>${B.esc(l)}</td>${splits.map((s) => `<td class="num">${perClass[s][l] || 0}</td>`).join("")}</tr>`).join("")}</tbody>
      <tfoot><tr><th>Total</th>${splits.map((s) => `<th class="num">${total(s)}</th>`).join("")}</tr></tfoot>`;
    const div = $("counts-chart");
    if (!window.Plotly) return;
    const traces = splits.map((s) => ({type: "bar", name: SPLIT_NAMES[s], x: labels, y: labels.map((l) => perClass[s][l] || 0),
                                       marker: {color: SPLIT_COLOURS[s]}, hovertemplate: "%{x}: %{y} images<extra>" + SPLIT_NAMES[s] + "</extra>"}));
    const layout = {barmode: "group", margin: {l: 50, r: 10, t: 10, b: 60}, height: 320,
                    xaxis: {type: "category", automargin: true}, yaxis: {title: {text: "images"}, rangemode: "tozero"},
                    legend: {orientation: "h", y: 1.12}};
    window.Plotly.react(div, traces, layout, {displaylogo: false, responsive: true});
    div.dataset.traces = String(traces.length);
    if (!div.dataset.observed && window.ResizeObserver) {
      div.dataset.observed = "1";
      new ResizeObserver(() => { if (div.data) window.Plotly.Plots.resize(div); }).observe(div);
    }
  }

  // ------------------------------------------------------------------ gallery
  const gSplit = $("g-split"), gClass = $("g-class"), gallery = $("gallery");
  const gPerPage = $("g-per-page");
  let gPage = 1, gPages = 1, gRequest = 0;

  function fillSelectors() {
    const perClass = data.per_class || {};
    const splits = splitsOf(perClass);
    const keepSplit = gSplit.value, keepClass = gClass.value;
    gSplit.innerHTML = splits.map((s) => `<option value="${s}">${SPLIT_NAMES[s]}</option>`).join("");
    if (splits.includes(keepSplit)) gSplit.value = keepSplit;
    gClass.innerHTML = (data.labels || []).map((l, i) => `<option value="${i}">${B.esc(l)}</option>`).join("");
    if (keepClass) gClass.value = keepClass;
    const ready = splits.length > 0;
    [gSplit, gClass, gPerPage].forEach((e) => { e.disabled = !ready; });
    $("gallery-empty").hidden = ready;
    return ready;
  }

  function classCount(split, label) {
    const name = (data.labels || [])[label];
    return ((data.per_class || {})[split] || {})[name] || 0;
  }

  async function loadGallery() {
    const split = gSplit.value, label = Number(gClass.value);
    const n = ++gRequest;
    gallery.setAttribute("aria-busy", "true");
    $("g-page").textContent = "Loading…";
    try {
      const q = new URLSearchParams({split, label, page: gPage, per_page: Number(gPerPage.value) || 48});
      const g = await B.api(`/datasets/${encodeURIComponent(id)}/gallery.json?${q}`);
      if (n !== gRequest) return;   // a newer request was made meanwhile
      gPage = g.page; gPages = g.pages;
      gallery.innerHTML = "";
      for (const item of g.items) {
        const img = document.createElement("img");
        img.src = item.url;
        img.alt = `${g.label_name}, record ${item.index} of the ${SPLIT_NAMES[g.split].toLowerCase()} set`;
        img.title = `${g.label_name} · record ${item.index}`;
        img.loading = "lazy";
        img.dataset.index = String(item.index);
        const a = document.createElement("a");
        a.href = `${item.url}?full=1`;
        a.target = "_blank";
        a.rel = "noopener";
        a.appendChild(img);
        gallery.appendChild(a);
      }
      if (!g.items.length) gallery.innerHTML = `<p class="muted">No image of this class in this set.</p>`;
      const first = g.total ? (g.page - 1) * g.per_page + 1 : 0;
      const last = Math.min(g.total, g.page * g.per_page);
      $("g-page").textContent = `Page ${g.page} of ${g.pages} · images ${first}–${last} of ${g.total}`;
      gallery.dataset.page = String(g.page);
    } catch (err) {
      if (n === gRequest) { $("g-page").textContent = ""; B.flash(`The images could not be loaded: ${err.message}`); }
    } finally {
      if (n === gRequest) gallery.removeAttribute("aria-busy");
      $("g-prev").disabled = gPage <= 1;
      $("g-next").disabled = gPage >= gPages;
    }
  }
  gSplit.addEventListener("change", () => { gPage = 1; loadGallery(); });
  gClass.addEventListener("change", () => { gPage = 1; loadGallery(); });
  gPerPage.addEventListener("change", () => { gPage = 1; loadGallery(); });
  $("g-prev").addEventListener("click", () => { if (gPage > 1) { gPage -= 1; loadGallery(); } });
  $("g-next").addEventListener("click", () => { if (gPage < gPages) { gPage += 1; loadGallery(); } });

  // ------------------------------------------------------------------ mean image
  function showMean() {
    const img = $("mean");
    if (!data.has_mean) { img.hidden = true; $("mean-empty").hidden = false; return; }
    img.onload = () => {
      img.hidden = false; $("mean-empty").hidden = true;
      const scale = Math.max(1, Math.floor(256 / Math.max(img.naturalWidth, img.naturalHeight)));
      img.style.width = `${img.naturalWidth * scale}px`;
      $("mean-caption").textContent = `${img.naturalWidth} × ${img.naturalHeight} pixels (mean.binaryproto)`;
    };
    img.src = `/datasets/${encodeURIComponent(id)}/mean.png?t=${Date.now()}`;
  }

  // ------------------------------------------------------------------ files and log
  async function loadFiles() {
    try {
      const f = await B.api(`/api/v1/jobs/${encodeURIComponent(id)}/files`);
      const body = $("files").tBodies[0];
      body.innerHTML = f.files.map((x) => `<tr><td><a href="${B.esc(x.url)}" download>${B.esc(x.path)}</a></td><td class="num">${B.fmt.bytes(x.size)}</td></tr>`).join("")
        + (f.truncated ? `<tr><td colspan="2" class="muted">… more files not listed</td></tr>` : "");
    } catch (err) { B.flash(`The files could not be listed: ${err.message}`); }
  }
  async function loadLog() {
    try {
      const l = await B.api(`/api/v1/jobs/${encodeURIComponent(id)}/log?lines=300`);
      const pre = $("log");
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = l.lines.length ? l.lines.join("\n") : "(empty)";
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    } catch (err) { B.flash(`The log could not be read: ${err.message}`); }
  }

  // ------------------------------------------------------------------ when the job finishes
  async function refreshAll() {
    try {
      const job = await B.api(`/api/v1/jobs/${encodeURIComponent(id)}`);
      showStatus(job.status, job.error);
      showProgress(job.progress);
      const s = job.summary || {};
      data.labels = s.labels || data.labels || [];
      data.per_class = s.per_class || data.per_class || {};
      data.has_mean = Boolean(s.mean_file);
    } catch (err) { B.flash(`The dataset could not be read: ${err.message}`); }
    renderAll();
  }
  function renderAll() {
    renderCounts();
    if (fillSelectors()) loadGallery();
    showMean();
    loadFiles();
    loadLog();
  }

  let ticker = null;
  renderAll();
  if (root.dataset.finished !== "true") {
    ticker = setInterval(() => { loadLog(); loadFiles(); }, 3000);
    const es = B.events(`/api/v1/jobs/${encodeURIComponent(id)}/events`, {
      status: (d) => showStatus(d.status, d.error),
      progress: (d) => showProgress(d.progress),
      done: (d) => { clearInterval(ticker); showStatus(d.status, d.error); if (d.status === "Done") showProgress(1); refreshAll(); },
      deleted: () => { es.close(); clearInterval(ticker); B.flash("This dataset was deleted.", "info"); },
    });
  }

  // ------------------------------------------------------------------ delete
  $("delete").addEventListener("click", async () => {
    if (!window.confirm("Delete this dataset and its files?")) return;
    const b = $("delete");
    b.disabled = true;
    B.flash("Deleting…", "info");
    try {
      await B.api(`/api/v1/jobs/${encodeURIComponent(id)}`, {method: "DELETE"});
      window.location.assign("/");
    } catch (err) {
      B.flash(`Not deleted: ${err.message}`);
      b.disabled = false;
    }
  });
})();
