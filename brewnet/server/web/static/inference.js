// The inference pages: a model's inference forms, the classify-one result (BatchNorm charts),
// and the report of an inference job (progress, accuracy, confusion matrix, per-class table,
// misclassified images, top images per class).  Uses window.brewnet (app.js) and plotly.js,
// loaded from /static/vendor only when a chart is drawn.
"use strict";
(function () {
  if (window.brewnetInference) return;   // included twice (a page and a fragment): once is enough
  window.brewnetInference = true;

  const B = () => window.brewnet;
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  let plotlyPromise = null;
  function plotly() {
    if (window.Plotly) return Promise.resolve(window.Plotly);
    if (!plotlyPromise) {
      plotlyPromise = new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = "/static/vendor/plotly.min.js";
        s.onload = () => resolve(window.Plotly);
        s.onerror = () => { plotlyPromise = null; reject(new Error("plotly.js did not load")); };
        document.head.appendChild(s);
      });
    }
    return plotlyPromise;
  }

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  const pct = (v) => (v === null || v === undefined) ? "–" : (100 * v).toFixed(1) + " %";

  function busy(form, on) {
    const b = $("[type=submit]", form), s = $(".inference-busy", form);
    if (b) b.disabled = on;
    if (s) s.hidden = !on;
  }

  // an error answer next to its field (or in the flash area)
  function showError(form, err) {
    if (err.errors) B().showFieldErrors(form, err.errors);
    else if (err.field && form.querySelector(`[name="${CSS.escape(err.field)}"]`)) B().showFieldErrors(form, {[err.field]: [err.message]});
    else { B().showFieldErrors(form, {}); B().flash(err.message || String(err)); }
  }

  // ------------------------------------------------------------------ the forms

  function initForms(section) {
    const one = $("#classify-one-form", section);
    if (one) one.addEventListener("submit", (ev) => classifyOne(ev, one, $("#classify-one-output", section)));
    $$(".inference-job-form", section).forEach((f) => f.addEventListener("submit", (ev) => startListJob(ev, f)));
    const test = $("#test-set-form", section);
    if (test) {
      test.addEventListener("submit", (ev) => startTest(ev, test));
      fillDatasets($("#test-dataset", test));
    }
  }

  async function fillDatasets(select) {
    if (!select || select.dataset.fill !== "yes") return;
    try {
      const answer = await B().api("/api/v1/jobs?kind=dataset&status=Done");
      for (const d of answer.jobs || []) select.append(el("option", {value: d.id, text: `${d.name} (${d.id})`}));
    } catch (err) { /* the model's own dataset stays available */ }
  }

  async function classifyOne(ev, form, output) {
    ev.preventDefault();
    const file = $("[name=image_file]", form).files[0];
    const path = $("[name=image_path]", form).value.trim();
    B().flash("");
    if (!file && !path) {
      B().showFieldErrors(form, {image_file: ["Choose an image to upload, or give an image on the server"]});
      return;
    }
    busy(form, true);
    try {
      const fd = new FormData(form);
      if (!file) fd.delete("image_file");
      let r;
      try {
        r = await B().send(form.getAttribute("action"), {method: "POST", form: fd, accept: "text/html"});
      } catch (err) {
        if (err.field === "image_path" && !path) err.field = "image_file";
        throw err;
      }
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const result = doc.getElementById("classify-one-result");
      if (!result) throw new Error("The server's answer has no result");
      B().showFieldErrors(form, {});
      const node = document.importNode(result, true);
      if (file) {
        const img = el("img", {class: "vis input original", src: URL.createObjectURL(file), alt: "the uploaded image"});
        const fig = el("figure", {}, img, el("figcaption", {class: "muted", text: `uploaded: ${file.name}`}));
        $(".c1-image", node).prepend(fig);
      }
      output.replaceChildren(el("h2", {text: "Result"}), node);
      initClassifyOne(node);
      output.scrollIntoView({behavior: "smooth", block: "start"});
    } catch (err) {
      showError(form, err);
    } finally {
      busy(form, false);
    }
  }

  async function startListJob(ev, form) {
    ev.preventDefault();
    B().flash("");
    const file = $("[name=image_list]", form).files[0];
    const serverPath = $("[name=image_list_path]", form).value.trim();
    if (!file && !serverPath) {
      B().showFieldErrors(form, {image_list: ["Choose a list file, or give a list on the server"]});
      return;
    }
    busy(form, true);
    try {
      const fd = new FormData(form);
      for (const k of ["image_list_path", "top_n", "job_id"]) fd.delete(k);
      if (!file) {
        const text = await B().api(`/inference/list-file?path=${encodeURIComponent(serverPath)}`);
        fd.set("image_list", new Blob([text], {type: "text/plain"}), serverPath.split("/").pop() || "list.txt");
      }
      const answer = await B().api(form.dataset.api, {form: fd});
      const topN = $("[name=top_n]", form);
      let url = `/jobs/${encodeURIComponent(answer.job_id)}`;
      if (topN && topN.value) url += `?top_n=${encodeURIComponent(topN.value)}`;
      if (form.dataset.anchor) url += `#${form.dataset.anchor}`;
      window.location.assign(url);
    } catch (err) {
      showError(form, err);
      busy(form, false);
    }
  }

  async function startTest(ev, form) {
    ev.preventDefault();
    B().flash("");
    busy(form, true);
    try {
      const body = {split: $("[name=split]", form).value};
      const ds = $("[name=dataset]", form).value;
      if (ds) body.dataset = ds;
      const snap = $("[name=snapshot_epoch]", form).value;
      if (snap !== "") body.snapshot_epoch = Number(snap);
      const answer = await B().api(form.getAttribute("action"), {json: body});
      window.location.assign(`/jobs/${encodeURIComponent(answer.job_id)}`);
    } catch (err) {
      showError(form, err);
      busy(form, false);
    }
  }

  // ------------------------------------------------------------------ classify one

  // BatchNorm layers: their running mean and variance per channel, from visualization.json
  async function initClassifyOne(root) {
    const charts = $$(".bn-chart", root);
    const dir = root.dataset.visDir;
    if (!charts.length || !dir) return;
    let info;
    try {
      info = await B().api(`/files/${dir.split("/").map(encodeURIComponent).join("/")}/visualization.json`);
    } catch (err) {
      charts.forEach((c) => { c.replaceChildren(el("p", {class: "muted", text: `per-channel values unavailable (${err.message})`})); });
      return;
    }
    const layers = Object.fromEntries((info.layers || []).map((l) => [l.name, l]));
    let Plotly;
    try { Plotly = await plotly(); } catch (err) { B().flash(err.message); return; }
    for (const box of charts) {
      const layer = layers[box.dataset.layer];
      const byKey = Object.fromEntries(((layer && layer.weights) || []).map((w) => [w.name, w]));
      const mean = byKey.running_mean && byKey.running_mean.values;
      const variance = byKey.running_var && byKey.running_var.values;
      if (!mean || !variance) {
        box.replaceChildren(el("p", {class: "muted", text: "too many channels to chart (see the histograms)"}));
        continue;
      }
      const x = mean.map((_, i) => i);
      box.replaceChildren();
      box.classList.add("chart");
      await Plotly.newPlot(box, [
        {type: "bar", name: "running mean ± √var", x, y: mean, marker: {color: "#1f5fa8"},
         error_y: {type: "data", array: variance.map((v) => Math.sqrt(Math.max(v, 0))), visible: true, color: "#8fa9c9", thickness: 1}},
        {type: "scatter", mode: "lines+markers", name: "running variance", x, y: variance, yaxis: "y2",
         marker: {color: "#a06a00", size: 4}, line: {color: "#a06a00", width: 1}},
      ], {
        height: 260, margin: {l: 55, r: 55, t: 10, b: 40}, bargap: 0.15,
        xaxis: {title: {text: "channel"}}, yaxis: {title: {text: "mean"}, zeroline: true},
        yaxis2: {title: {text: "variance"}, overlaying: "y", side: "right", rangemode: "tozero", showgrid: false},
        legend: {orientation: "h", y: 1.12}, showlegend: true,
      }, {displaylogo: false, responsive: true});
      const bn = layer.batchnorm || {};
      const note = $(`.bn-info[data-layer="${CSS.escape(box.dataset.layer)}"]`, root);
      if (note) {
        const n = (v) => B().fmt.num(v, 4);
        const parts = [`eps ${n(bn.eps)}`, `scale factor s = ${n(bn.scale_factor)}`,
                       `moving average fraction ${n(bn.moving_average_fraction)}`, `normalises with ${bn.normalizes_with}`];
        note.textContent = parts.join(" · ") + (bn.note ? `. ${bn.note}.` : "");
        if (bn.warning) note.append(el("strong", {class: "warn", text: ` ${bn.warning}`}));
      }
    }
  }

  // ------------------------------------------------------------------ an inference job

  function initJob(box) {
    const id = box.dataset.jobId;
    const finished = ["Done", "Aborted", "Error", "Interrupted"];
    const statusEl = $("#job-status", box);
    const setStatus = (s) => { statusEl.textContent = s; statusEl.className = `status-${s.toLowerCase()}`; box.dataset.status = s; };
    const abort = $("#job-abort", box);
    if (abort) {
      abort.addEventListener("click", async () => {
        abort.disabled = true;
        try { await B().api(`/api/v1/jobs/${encodeURIComponent(id)}/abort`, {method: "POST"}); }
        catch (err) { B().flash(err.message); abort.disabled = false; }
      });
    }
    const ended = (status, error) => {
      setStatus(status);
      $("#job-running", box).hidden = true;
      if (status === "Done") { loadReport($("#inference-report")); return; }
      hideReport();
      const failed = $("#job-failed", box);
      failed.hidden = false;
      if (error) $("#job-error", box).textContent = error;
      B().api(`/api/v1/jobs/${encodeURIComponent(id)}/log?lines=80`)
        .then((log) => { $("#job-log", box).textContent = (log.lines || []).join("\n"); })
        .catch(() => {});
    };
    const status = box.dataset.status;
    if (finished.includes(status)) { ended(status, null); return; }
    hideReport();
    const bar = $("#job-progress-bar", box), text = $("#job-progress-text", box);
    B().events(`/api/v1/jobs/${encodeURIComponent(id)}/events`, {
      status: (d) => { if (!finished.includes(d.status)) setStatus(d.status); },
      progress: (d) => { bar.style.width = `${(100 * d.progress).toFixed(1)}%`; text.textContent = `${(100 * d.progress).toFixed(0)} %`; },
      done: (d) => ended(d.status, d.error),
      deleted: () => { B().flash("This job was deleted."); },
    });
  }

  function hideReport() {
    const rep = $("#inference-report");
    if (rep) rep.hidden = true;
  }

  function thumb(jobId, item, caption, lazy) {
    const img = el("img", {src: `/inference/${encodeURIComponent(jobId)}/images/${item.index}`, alt: item.name,
                           loading: lazy ? "lazy" : null, title: item.name});
    return el("figure", {class: "thumb", title: item.name}, img, caption);
  }

  // the end of a long path: its last two parts
  const shortName = (name) => { const parts = String(name).split("/"); return parts.length > 2 ? "…/" + parts.slice(-2).join("/") : name; };

  async function loadReport(box) {
    if (!box) return;
    box.hidden = false;
    const id = box.dataset.jobId;
    let rep;
    try {
      rep = await B().api(`/inference/${encodeURIComponent(id)}/report.json?top_n=${encodeURIComponent(box.dataset.topN || 9)}`);
    } catch (err) {
      $(".report-loading", box).textContent = `The results cannot be shown: ${err.message}`;
      return;
    }
    $(".report-loading", box).hidden = true;
    $(".report-body", box).hidden = false;
    renderSummary(box, rep);
    renderPerClass(box, rep);
    renderMisclassified(box, rep);
    renderTopImages(box, rep);
    renderErrors(box, rep);
    renderImages(box, rep);
    await renderConfusion(box, rep);
    if (window.location.hash) {
      const target = document.getElementById(window.location.hash.slice(1));
      if (target) target.scrollIntoView({block: "start"});
    }
  }

  function renderSummary(box, rep) {
    const cards = $(".summary-cards", box);
    const card = (label, value, cls) => el("div", {class: `summary-card ${cls || ""}`}, el("span", {class: "value", text: value}), el("span", {class: "label muted", text: label}));
    cards.replaceChildren(
      card("top-1 accuracy", rep.labelled ? pct(rep.top1) : "–", "top1"),
      card(`top-${Math.min(5, rep.labels.length)} accuracy`, rep.labelled ? pct(rep.top5) : "–", "top5"),
      card("images classified", String(rep.count)),
      card("with a true class", String(rep.labelled)),
      card("misclassified", rep.labelled ? String(rep.misclassified_total) : "–"),
      card("unreadable", String(rep.error_count), rep.error_count ? "warn" : ""),
      card("images / s", B().fmt.num(rep.images_per_s, 3)),
    );
    if (!rep.labelled) {
      cards.after(el("p", {class: "muted no-labels", text: "No image had a true class (list lines 'path label'), so there is no accuracy, confusion matrix or per-class table."}));
    }
  }

  async function renderConfusion(box, rep) {
    const div = $("#confusion", box);
    if (!rep.confusion) {
      $("#report-confusion", box).hidden = true;
      return;
    }
    const labels = rep.labels;
    const z = rep.confusion.map((row) => { const n = row.reduce((a, b) => a + b, 0); return row.map((v) => n ? v / n : 0); });
    const text = rep.confusion.map((row) => row.map(String));
    const side = Math.min(900, 160 + 44 * labels.length);
    let Plotly;
    try { Plotly = await plotly(); } catch (err) { div.textContent = err.message; return; }
    await Plotly.newPlot(div, [{
      type: "heatmap", x: labels, y: labels, z, text, texttemplate: "%{text}", zmin: 0, zmax: 1,
      colorscale: [[0, "#f5f7fa"], [1, "#1f5fa8"]], colorbar: {title: {text: "share of row"}, tickformat: ".0%"},
      hovertemplate: "true %{y}<br>predicted %{x}<br>%{text} images (%{z:.1%} of the row)<extra></extra>",
      xgap: 1, ygap: 1,
    }], {
      height: side, width: Math.min(div.clientWidth || side + 160, side + 220),
      margin: {l: 20, r: 20, t: 20, b: 20},
      xaxis: {title: {text: "predicted class"}, automargin: true, type: "category", side: "bottom"},
      yaxis: {title: {text: "true class"}, automargin: true, type: "category", autorange: "reversed"},
    }, {displaylogo: false, responsive: true});
  }

  function renderPerClass(box, rep) {
    const body = $("#per-class tbody", box);
    if (!rep.per_class.length) { $("#report-per-class", box).hidden = true; return; }
    body.replaceChildren(...rep.per_class.map((c) => el("tr", {},
      el("td", {text: c.label}), el("td", {class: "num", text: String(c.count)}), el("td", {class: "num", text: String(c.predicted)}),
      el("td", {class: "num", text: pct(c.precision)}), el("td", {class: "num", text: pct(c.recall)}),
      el("td", {class: "num", text: c.f1 === null ? "–" : c.f1.toFixed(3)}))));
  }

  function renderMisclassified(box, rep) {
    const note = $(".misclassified-note", box), thumbs = $("#misclassified .thumbs", box);
    if (!rep.labelled) { note.textContent = "No image had a true class."; return; }
    if (!rep.misclassified_total) { note.textContent = "No misclassified images: every image with a true class got it first."; return; }
    note.textContent = rep.misclassified_total > rep.misclassified.length
      ? `The first ${rep.misclassified.length} of ${rep.misclassified_total} misclassified images.`
      : `${rep.misclassified_total} misclassified image${rep.misclassified_total === 1 ? "" : "s"}.`;
    thumbs.replaceChildren(...rep.misclassified.map((m) => thumb(rep.job_id, m, el("figcaption", {},
      el("span", {class: "name", text: shortName(m.name)}),
      el("span", {class: "truth", text: `true: ${m.label}`}),
      el("span", {class: "predicted bad", text: `predicted: ${m.predicted} (${m.confidence.toFixed(1)} %)`})), false)));
  }

  function renderTopImages(box, rep) {
    const t = rep.top_images, wrap = $("#top-images .top-classes", box);
    $(".top-images-note", box).textContent = `The ${t.top_n} image${t.top_n === 1 ? "" : "s"} given each class most confidently` +
      (t.exact ? "." : ` (ranked among the images whose top ${rep.top_kept} predictions include the class).`);
    wrap.replaceChildren(...t.classes.map((c) => el("div", {class: "top-class"},
      el("h3", {text: c.label}),
      c.images.length ? el("div", {class: "thumbs"}, ...c.images.map((i) => thumb(rep.job_id, {index: i.index, name: `${c.label} ${i.prob} %`},
        el("figcaption", {text: `${i.prob.toFixed(1)} %`}), true)))
        : el("p", {class: "muted", text: "no image"}))));
  }

  function renderErrors(box, rep) {
    if (!rep.error_count) return;
    const sec = $("#report-errors", box);
    sec.hidden = false;
    $("ul", sec).replaceChildren(...rep.errors.map((e) => el("li", {text: `${e.source || e.path || ""}: ${e.error || e.message || JSON.stringify(e)}`})));
  }

  function renderImages(box, rep) {
    $(".images-note", box).textContent = rep.images_total > rep.images.length
      ? `The first ${rep.images.length} of ${rep.images_total} images.` : `${rep.images_total} image${rep.images_total === 1 ? "" : "s"}.`;
    $("#image-predictions tbody", box).replaceChildren(...rep.images.map((i) => {
      const wrong = i.label !== undefined && i.top.length && i.top[0][0] !== i.label;
      return el("tr", {class: wrong ? "wrong" : null},
        el("td", {}, thumb(rep.job_id, i, null, true)),
        el("td", {class: "path", text: i.name}),
        el("td", {text: i.label === undefined ? "–" : i.label}),
        el("td", {text: i.top.map(([lab, p]) => `${lab} ${p.toFixed(2)} %`).join(", ")}));
    }));
  }

  // ------------------------------------------------------------------ start

  function start() {
    const forms = document.getElementById("inference");
    if (forms) initForms(forms);
    $$(".classify-one").forEach((root) => initClassifyOne(root));
    const job = document.getElementById("inference-job");
    if (job) initJob(job);
    else if (document.getElementById("inference-report")) loadReport(document.getElementById("inference-report"));
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
