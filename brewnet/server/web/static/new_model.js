// The New Model page: network tabs, lint findings as you type, the network's picture, the
// learning-rate preview, and the form sent over fetch (errors next to their fields).
"use strict";
(function () {
  const B = window.brewnet;
  const form = document.getElementById("model-form");
  const method = document.getElementById("f-method");
  const editor = document.getElementById("f-custom_network");
  const gutter = document.getElementById("gutter");
  // (form.dataset is the form's "dataset" field, not its data-* attributes)
  const generic = Boolean(form.getAttribute("data-generic"));
  const networksUrl = form.getAttribute("data-networks-url") || "/api/v1/networks/";

  // ------------------------------------------------------------------ tabs (the "method" field)
  function selectTab(m) {
    method.value = m;
    document.querySelectorAll("[role=tab]").forEach((t) => {
      const on = t.dataset.method === m;
      t.setAttribute("aria-selected", on ? "true" : "false");
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
    });
    if (m === "custom") { renderGutter(); scheduleLint(0); }
  }
  document.querySelectorAll("[role=tab]").forEach((t) => t.addEventListener("click", () => selectTab(t.dataset.method)));

  // "Customize" a standard network: its prototxt goes into the custom editor
  document.querySelectorAll("button.customize").forEach((b) => b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      const net = await B.api(`${networksUrl}${encodeURIComponent(b.dataset.network)}`);
      editor.value = net.prototxt;
      if (!form.elements.model_name.value) form.elements.model_name.value = `${b.dataset.network}-custom`;
      selectTab("custom");
    } catch (err) { B.flash(err.message); } finally { b.disabled = false; }
  }));

  // The generic form: only the standard networks fitting the chosen dataset's kind are offered
  const datasetSelect = document.getElementById("f-dataset");
  function filterNetworks() {
    if (!generic) return;
    const opt = datasetSelect.selectedOptions[0];
    const kind = opt && opt.value ? opt.dataset.kind : null;
    let shown = 0;
    document.querySelectorAll("#pane-standard tr[data-kinds]").forEach((tr) => {
      const fits = !kind || tr.dataset.kinds.split(" ").includes(kind);
      tr.hidden = !fits;
      const radio = tr.querySelector("input[type=radio]");
      if (!fits && radio.checked) radio.checked = false;
      if (fits) shown += 1;
    });
    document.getElementById("no-standard").hidden = shown > 0;
  }
  datasetSelect.addEventListener("change", filterNetworks);
  filterNetworks();

  // ------------------------------------------------------------------ the editor and its lint
  function lines() { return editor.value.split("\n").length; }
  let marked = new Map();   // line -> severity
  function renderGutter() {
    const n = lines();
    const out = [];
    for (let i = 1; i <= n; i++) {
      const sev = marked.get(i);
      out.push(sev ? `<span class="mark ${sev}" title="${B.esc(sev)}">${i}</span>` : String(i));
    }
    gutter.innerHTML = out.join("\n");
    gutter.scrollTop = editor.scrollTop;
  }
  editor.addEventListener("scroll", () => { gutter.scrollTop = editor.scrollTop; });

  function goToLine(line) {
    const text = editor.value.split("\n");
    let start = 0;
    for (let i = 0; i < line - 1 && i < text.length; i++) start += text[i].length + 1;
    editor.focus();
    editor.setSelectionRange(start, start + (text[line - 1] || "").length);
    const lineHeight = editor.scrollHeight / Math.max(1, text.length);
    editor.scrollTop = Math.max(0, (line - 5) * lineHeight);
  }

  const status = document.getElementById("lint-status");
  const list = document.getElementById("lint-findings");
  let lintTimer = null, lintSeq = 0;
  function scheduleLint(delay = 400) {
    clearTimeout(lintTimer);
    lintTimer = setTimeout(runLint, delay);
  }
  async function runLint() {
    const text = editor.value;
    const seq = ++lintSeq;
    if (!text.trim()) {
      marked = new Map(); renderGutter(); list.innerHTML = "";
      status.textContent = "Findings appear here as you type."; status.className = "muted";
      return;
    }
    status.textContent = "Checking…";
    let answer;
    try {
      answer = await B.api("/api/v1/lint", {json: {prototxt: text, digits: true, generic}});
    } catch (err) {
      if (seq === lintSeq) { status.textContent = `Could not check: ${err.message}`; status.className = "bad"; }
      return;
    }
    if (seq !== lintSeq) return;   // an older answer than the text shown
    marked = new Map();
    const items = [];
    if (!answer.valid && answer.parse_error) {
      const pe = answer.parse_error;
      if (pe.line) marked.set(pe.line, "error");
      items.push({severity: "error", line: pe.line, rule: "parse", layer: "", message: pe.message, fix: ""});
    }
    for (const f of answer.findings) {
      if (f.line) marked.set(f.line, marked.get(f.line) === "error" ? "error" : f.severity);
      items.push(f);
    }
    items.sort((a, b) => (a.line || 1e9) - (b.line || 1e9));
    list.innerHTML = items.map((f) => `<li class="finding ${B.esc(f.severity)}" data-line="${f.line || ""}">
      ${f.line ? `<a href="#" class="line">line ${f.line}</a>` : ""} <strong>${B.esc(f.severity)}</strong>
      <code>${B.esc(f.rule)}</code>${f.layer ? ` layer <code>${B.esc(f.layer)}</code>` : ""}: ${B.esc(f.message)}
      ${f.fix ? `<div class="fix">Fix: ${B.esc(f.fix)}</div>` : ""}</li>`).join("");
    list.querySelectorAll("a.line").forEach((a) => a.addEventListener("click", (ev) => {
      ev.preventDefault(); goToLine(Number(a.closest("li").dataset.line));
    }));
    const errors = items.filter((f) => f.severity === "error").length;
    status.textContent = items.length === 0 ? "No findings." :
      `${items.length} finding${items.length === 1 ? "" : "s"}${errors ? `, ${errors} error${errors === 1 ? "" : "s"}` : ""}.`;
    status.className = errors ? "bad" : items.length ? "warn" : "ok";
    renderGutter();
  }
  editor.addEventListener("input", () => { renderGutter(); scheduleLint(); });

  // ------------------------------------------------------------------ the network's picture
  const drawStatus = document.getElementById("draw-status");
  const picture = document.getElementById("network-picture");
  let pictureUrl = null;
  document.getElementById("draw-network").addEventListener("click", async (ev) => {
    const button = ev.currentTarget;
    button.disabled = true;
    drawStatus.textContent = "Drawing…";
    try {
      const r = await B.send("/models/network.svg", {json: {prototxt: editor.value, phase: "train"}, accept: "image/svg+xml"});
      if (pictureUrl) URL.revokeObjectURL(pictureUrl);
      pictureUrl = URL.createObjectURL(await r.blob());
      picture.innerHTML = "";
      const img = document.createElement("img");
      img.alt = "The network's layers and blobs (training phase)";
      img.src = pictureUrl;
      picture.appendChild(img);
      drawStatus.textContent = "Training phase; arrows run from bottom blobs through layers to top blobs.";
    } catch (err) {
      drawStatus.textContent = err.message;
      drawStatus.className = "bad";
      return;
    } finally { button.disabled = false; }
    drawStatus.className = "muted";
  });

  // ------------------------------------------------------------------ solver fields
  const policy = document.getElementById("f-lr_policy");
  const solverType = document.getElementById("f-solver_type");
  function showPolicyFields() {
    document.querySelectorAll(".lr-param").forEach((el) => {
      el.hidden = !el.dataset.policies.split(" ").includes(policy.value);
    });
    document.getElementById("rms-row").hidden = solverType.value !== "RMSPROP";
  }
  policy.addEventListener("change", showPolicyFields);
  solverType.addEventListener("change", showPolicyFields);

  const lrChart = document.getElementById("lr-chart");
  const lrCaption = document.getElementById("lr-caption");
  let lrTimer = null, lrSeq = 0;
  function lrBody() {
    const body = {learning_rate: form.elements.learning_rate.value.split(/[,\s]+/).filter(Boolean), lr_policy: policy.value};
    document.querySelectorAll(".lr-param:not([hidden]) input").forEach((i) => { body[i.name] = i.value; });
    return body;
  }
  async function drawLr() {
    const seq = ++lrSeq;
    let answer;
    try {
      answer = await B.api("/api/v1/lr-curve", {json: lrBody()});
    } catch (err) {
      if (seq !== lrSeq) return;
      if (err.errors) B.showFieldErrors(form, err.errors);
      lrCaption.textContent = `No preview: ${err.message}`;
      return;
    }
    if (seq !== lrSeq) return;
    B.showFieldErrors(form, {});
    const epochs = Number(form.elements.train_epochs.value) || 30;
    const x = answer.curves[0].map((_, i) => i * epochs / 100);
    const traces = answer.curves.map((c, k) => ({x, y: c, mode: "lines", name: `lr ${answer.learning_rates[k]}`,
                                                 hovertemplate: "epoch %{x:.2f}: %{y:.3g}<extra></extra>"}));
    Plotly.react(lrChart, traces, {margin: {l: 60, r: 10, t: 10, b: 40}, height: 220,
      xaxis: {title: {text: "epoch"}}, yaxis: {title: {text: "learning rate"}, exponentformat: "e"},
      showlegend: answer.curves.length > 1}, {displayModeBar: false, responsive: true});
    lrChart.dataset.points = String(x.length * traces.length);
    lrCaption.textContent = `The learning rate over ${epochs} epoch${epochs === 1 ? "" : "s"} (${policy.value}).`;
  }
  function scheduleLr() { clearTimeout(lrTimer); lrTimer = setTimeout(drawLr, 300); }
  form.querySelectorAll("#f-learning_rate, #f-lr_policy, #f-train_epochs, .lr-param input").forEach((el) => {
    el.addEventListener("input", scheduleLr); el.addEventListener("change", scheduleLr);
  });

  // ------------------------------------------------------------------ create
  const createStatus = document.getElementById("create-status");
  B.ajaxForm(form, (answer) => {
    const jobs = answer.jobs || [answer];
    createStatus.textContent = `Created ${jobs.length} model${jobs.length === 1 ? "" : "s"}; opening…`;
    window.location.assign(jobs.length === 1 ? `/models/${encodeURIComponent(jobs[0].id)}` : "/");
  });
  form.addEventListener("submit", () => {
    // a field error on a hidden tab: show that tab
    setTimeout(() => {
      const bad = form.querySelector("[aria-invalid=true]");
      const pane = bad && bad.closest("[role=tabpanel]");
      if (pane && pane.hidden) selectTab(pane.id.replace("pane-", ""));
    }, 50);
  });

  selectTab(method.value || "standard");
  showPolicyFields();
  drawLr();
})();
