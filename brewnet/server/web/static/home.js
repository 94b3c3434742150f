// The home page: job tables kept live from /api/v1/events, filters, loss sparklines.
"use strict";
(function () {
  const B = window.brewnet;
  const CSS = {Initialized: "warning", Waiting: "warning", Running: "info", Done: "success",
               Aborted: "danger", Error: "danger", Interrupted: "warning"};
  const ACTIVE = ["Initialized", "Waiting", "Running"];
  const URL_OF = {dataset: "/datasets/", model: "/models/"};
  const rows = () => document.querySelectorAll("tr.job");
  const rowOf = (id) => document.querySelector(`tr.job[data-id="${CSS_ID(id)}"]`);
  function CSS_ID(id) { return window.CSS.escape(id); }

  // ------------------------------------------------------------------ rows
  function setStatus(tr, status, error) {
    tr.dataset.status = status;
    const cell = tr.querySelector(".status");
    cell.textContent = status;
    cell.className = `status status-${CSS[status] || "default"}`;
    cell.title = error || "";
  }
  function setProgress(tr, progress) {
    const pct = Math.round(progress * 1000) / 10;
    tr.querySelector(".progress > span").style.width = `${pct}%`;
    tr.querySelector(".progress").setAttribute("aria-valuenow", String(Math.round(pct)));
    tr.querySelector(".pct").textContent = `${Math.round(pct)} %`;
  }
  function newRow(job) {
    const tr = document.createElement("tr");
    tr.className = "job";
    Object.assign(tr.dataset, {id: job.id, kind: job.kind, status: job.status, owner: job.owner || "",
                               name: job.name, group: job.group || ""});
    tr.innerHTML = `<td class="pick"><input type="checkbox" class="pick-job" aria-label="Select ${B.esc(job.name)}"></td><td><a href="${(URL_OF[job.kind] || "/jobs/") + encodeURIComponent(job.id)}">${B.esc(job.name)}</a></td>
      ${job.kind === "model" ? '<td class="spark"></td>' : ""}
      <td class="status"></td>
      <td class="progress-cell"><span class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="100"><span></span></span> <span class="pct"></span></td>
      <td class="queue num">${job.queue_position || ""}</td><td class="group">${B.esc(job.group)}</td>
      <td class="owner">${B.esc(job.owner || "")}</td><td class="time" data-time="${job.created}">${B.fmt.time(job.created)}</td>`;
    setStatus(tr, job.status, job.error);
    setProgress(tr, job.progress);
    const body = document.querySelector(`table.jobs[data-kind="${job.kind}"] tbody`);
    if (body) body.prepend(tr);   // newest first
    return tr;
  }
  const fetching = new Set();
  async function ensureRow(id) {
    const tr = rowOf(id);
    if (tr || fetching.has(id)) return tr;
    fetching.add(id);
    try {
      const job = await B.api(`/api/v1/jobs/${encodeURIComponent(id)}`);
      if (!rowOf(id)) { const made = newRow(job); counts(); applyFilters(); spark(made); }
    } catch (err) {
      if (err.status !== 404) B.flash(`Could not load job ${id}: ${err.message}`);
    } finally { fetching.delete(id); }
    return rowOf(id);
  }
  function counts() {
    document.querySelectorAll(".job-section").forEach((sec) => {
      const n = sec.querySelectorAll("tr.job").length;
      sec.querySelector(".count").textContent = `(${n})`;
      sec.querySelector(".empty").hidden = n > 0;
    });
  }

  // ------------------------------------------------------------------ sparklines (train loss)
  const LOSS_NAMES = ["loss", "smoothed_loss"];
  async function spark(tr) {
    if (tr.dataset.kind !== "model") return;
    const cell = tr.querySelector(".spark");
    let series;
    try { series = await B.api(`/api/v1/jobs/${encodeURIComponent(tr.dataset.id)}/metrics?max_points=60`); }
    catch (err) { return; }
    const train = series.train || {};
    const name = LOSS_NAMES.find((n) => train[n] && train[n].length) || Object.keys(train).find((n) => /loss/.test(n));
    const pts = name ? train[name].filter((p) => p[1] !== null && isFinite(p[1])) : [];
    if (pts.length < 2) { cell.innerHTML = ""; cell.dataset.points = "0"; return; }
    const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    const W = 90, H = 22;
    const line = pts.map((p) => `${((p[0] - x0) / ((x1 - x0) || 1) * W).toFixed(1)},${(H - 1 - (p[1] - y0) / ((y1 - y0) || 1) * (H - 2)).toFixed(1)}`).join(" ");
    cell.innerHTML = `<svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${B.esc(name)}: last ${B.fmt.num(ys[ys.length - 1])}"><title>${B.esc(name)}: ${B.fmt.num(ys[0])} → ${B.fmt.num(ys[ys.length - 1])}</title><polyline fill="none" stroke="currentColor" stroke-width="1.3" points="${line}"/></svg>`;
    cell.dataset.points = String(pts.length);
  }
  const sparkDue = new Map();   // throttle: a running model's sparkline at most every 5 s
  function sparkSoon(tr) {
    if (!tr || tr.dataset.kind !== "model" || sparkDue.has(tr.dataset.id)) return;
    sparkDue.set(tr.dataset.id, setTimeout(() => { sparkDue.delete(tr.dataset.id); spark(tr); }, 5000));
  }

  // ------------------------------------------------------------------ filters
  const text = document.getElementById("filter-text");
  const state = document.getElementById("filter-status");
  const mine = document.getElementById("filter-mine");
  function applyFilters() {
    const q = text.value.trim().toLowerCase();
    const s = state.value;
    const me = mine && mine.checked ? mine.dataset.user : null;
    rows().forEach((tr) => {
      const hay = `${tr.dataset.name} ${tr.dataset.group} ${tr.dataset.owner}`.toLowerCase();
      const st = tr.dataset.status;
      const okState = !s || (s === "active" ? ACTIVE.includes(st) : s === "finished" ? !ACTIVE.includes(st) : st === s);
      tr.hidden = !(hay.includes(q) && okState && (!me || tr.dataset.owner === me));
    });
    const params = new URLSearchParams();
    if (q) params.set("q", q);
    if (s) params.set("state", s);
    if (me) params.set("mine", "1");
    history.replaceState(null, "", params.toString() ? `/?${params}` : "/");
  }
  const initial = new URLSearchParams(location.search);
  text.value = initial.get("q") || "";
  state.value = initial.get("state") || "";
  if (mine) mine.checked = initial.get("mine") === "1";
  [text, state, mine].forEach((el) => el && el.addEventListener("input", applyFilters));
  [state, mine].forEach((el) => el && el.addEventListener("change", applyFilters));

  // ------------------------------------------------------------------ the queue
  function showQueue(queue) {
    const ol = document.getElementById("queue");
    ol.innerHTML = queue.map((q) => `<li data-id="${B.esc(q.id)}"><a href="/jobs/${encodeURIComponent(q.id)}">${B.esc(q.name)}</a>
      <span class="muted">waits for ${B.esc(q.waiting_for || "its turn")}</span></li>`).join("");
    document.getElementById("queue-empty").hidden = queue.length > 0;
    const pos = new Map(queue.map((q) => [q.id, q.position]));
    rows().forEach((tr) => { tr.querySelector(".queue").textContent = pos.get(tr.dataset.id) || ""; });
  }
  async function refreshSlots() {
    try {
      const slots = await B.api("/api/v1/resources");
      document.getElementById("cpu-used").textContent = slots.cpu.used;
    } catch (err) { /* shown on the next event */ }
  }

  // ------------------------------------------------------------------ selected jobs (DIGITS' bulk actions)
  const bulk = document.getElementById("bulk");
  const picked = () => [...document.querySelectorAll("tr.job:not([hidden]) input.pick-job:checked")].map((c) => c.closest("tr"));
  function showBulk() {
    const n = picked().length;
    bulk.hidden = n === 0;
    document.getElementById("bulk-count").textContent = `${n} job${n === 1 ? "" : "s"} selected`;
  }
  document.addEventListener("change", (ev) => {
    if (ev.target.classList.contains("pick-all")) {
      ev.target.closest("table").querySelectorAll("tr.job:not([hidden]) input.pick-job").forEach((c) => { c.checked = ev.target.checked; });
    }
    if (ev.target.matches("input.pick-job, input.pick-all")) showBulk();
  });
  async function act(path, method, message, extra = {}) {
    const rows = picked();
    const fd = new FormData();
    rows.forEach((tr) => fd.append("job_ids[]", tr.dataset.id));
    for (const [k, v] of Object.entries(extra)) fd.append(k, v);
    bulk.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    B.flash("");
    try {
      await B.api(path, {method, form: fd});
      B.flash(message(rows.length), "info");
      return rows;
    } catch (err) {
      B.flash(err.message);   // the server says how many it could not do, and why
      return null;
    } finally {
      bulk.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    }
  }
  document.getElementById("bulk-abort").addEventListener("click", () =>
    act("/abort_jobs", "POST", (n) => `Abort asked of ${n} job${n === 1 ? "" : "s"}.`));
  document.getElementById("bulk-delete").addEventListener("click", async () => {
    const n = picked().length;
    if (!confirm(`Delete ${n} job${n === 1 ? "" : "s"} and their files?`)) return;
    await act("/jobs", "DELETE", (k) => `${k} job${k === 1 ? "" : "s"} deleted.`);
  });
  document.getElementById("bulk-set-group").addEventListener("click", async () => {
    const group = document.getElementById("bulk-group").value.trim();
    const rows = await act("/group", "POST", (n) => `Group of ${n} job${n === 1 ? "" : "s"} set.`, {group_name: group});
    (rows || []).forEach((tr) => { tr.dataset.group = group; tr.querySelector(".group").textContent = group; });
  });
  document.getElementById("bulk-clear").addEventListener("click", () => {
    document.querySelectorAll("input.pick-job, input.pick-all").forEach((c) => { c.checked = false; });
    showBulk();
  });

  // ------------------------------------------------------------------ live
  const live = document.getElementById("live");
  document.querySelectorAll("td.time").forEach((td) => { td.textContent = B.fmt.time(Number(td.dataset.time)); });
  rows().forEach((tr) => spark(tr));
  applyFilters();
  const es = B.events("/api/v1/events", {
    status: async (d) => {
      const tr = rowOf(d.id) || await ensureRow(d.id);
      if (!tr) return;
      setStatus(tr, d.status, d.error);
      applyFilters();
      refreshSlots();
      if (tr.dataset.kind === "model") spark(tr);
    },
    progress: async (d) => {
      const tr = rowOf(d.id) || await ensureRow(d.id);
      if (!tr) return;
      setProgress(tr, d.progress);
      if (tr.dataset.status === "Running") sparkSoon(tr);
    },
    deleted: (d) => { const tr = rowOf(d.id); if (tr) { tr.remove(); counts(); showBulk(); } },
    queue: (d) => showQueue(d.queue),
  });
  es.addEventListener("open", () => { live.textContent = "live"; live.className = "ok"; });
  es.addEventListener("error", () => { live.textContent = "reconnecting…"; live.className = "warn"; });
})();
