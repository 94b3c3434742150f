// brewnet's shared page helpers (window.brewnet).  No framework; every page script uses these.
"use strict";
(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // An error answer of the server as an Error: .status, .field, .errors ({field: [messages]})
  async function errorOf(response) {
    let body = null;
    try { body = await response.json(); } catch (e) { /* not JSON */ }
    let message = `${response.status} ${response.statusText}`;
    const err = new Error(message);
    err.status = response.status;
    if (body && body.errors) {
      err.errors = body.errors;
      const [field, msgs] = Object.entries(body.errors)[0] || ["form", ["invalid"]];
      err.field = field; err.message = `${field}: ${msgs[0]}`;
    } else if (body && body.error) {
      err.message = body.error.description || body.error.message || message;
      err.field = body.error.field || null;
    }
    return err;
  }

  // A request to our own server; the Response when it succeeded, else throws its error answer
  // (see errorOf).  opts: {method, json (a body sent as JSON), form (a FormData or <form>),
  // accept, signal}.
  async function send(path, opts = {}) {
    const headers = {"Accept": opts.accept || "application/json"};
    const init = {method: opts.method || (opts.json || opts.form ? "POST" : "GET"), headers,
                  credentials: "same-origin", signal: opts.signal};
    if (init.method !== "GET" && csrf()) headers["X-CSRF-Token"] = csrf();
    if (opts.json !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(opts.json); }
    else if (opts.form) { init.body = opts.form instanceof FormData ? opts.form : new FormData(opts.form); }
    const r = await fetch(path, init);
    if (!r.ok) throw await errorOf(r);
    return r;
  }

  // JSON (or text) from our own server: send()'s answer, read
  async function api(path, opts = {}) {
    const r = await send(path, opts);
    const type = r.headers.get("content-type") || "";
    return type.includes("json") ? r.json() : r.text();
  }

  // Server-Sent Events: handlers {eventName: fn(data, event)}; closed on "done" (else the
  // browser reconnects and replays).  Returns the EventSource.
  function events(url, handlers) {
    const es = new EventSource(url);
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => {
        let data = ev.data;
        try { data = JSON.parse(ev.data); } catch (e) { /* plain text */ }
        fn(data, ev);
      });
    }
    es.addEventListener("done", () => es.close());
    return es;
  }

  // A message in the page's flash area (kind "error" or "info")
  function flash(message, kind = "error") {
    const el = document.getElementById("flash");
    if (!el) return;
    el.textContent = message;
    el.className = "flash" + (kind === "info" ? " info" : "");
    el.hidden = !message;
  }

  // Errors next to the fields that caused them: errors {field: [messages]} on <form> `form`.
  // A field's message goes into its .field-error element (made after the input when missing).
  function showFieldErrors(form, errors) {
    form.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
    const unplaced = [];
    for (const [field, msgs] of Object.entries(errors || {})) {
      const input = form.querySelector(`[name="${CSS.escape(field)}"]`);
      if (!input) { unplaced.push(`${field}: ${msgs.join(" ")}`); continue; }
      input.setAttribute("aria-invalid", "true");
      let slot = form.querySelector(`.field-error[data-for="${CSS.escape(field)}"]`);
      if (!slot) {
        slot = document.createElement("div");
        slot.className = "field-error"; slot.dataset.for = field;
        (input.closest(".field") || input.parentElement).appendChild(slot);
      }
      slot.textContent = msgs.join(" ");
      if (unplaced.length === 0 && !form.querySelector("[aria-invalid]:focus")) input.focus();
    }
    flash(unplaced.join("; "));
  }

  // Submit <form> over fetch as JSON-answering; on 400 show the errors next to the fields,
  // else call onDone(answer).  The submit button is disabled while it runs.
  function ajaxForm(form, onDone) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const button = form.querySelector("[type=submit]");
      if (button) button.disabled = true;
      flash("");
      try {
        const answer = await api(form.getAttribute("action"), {form});
        showFieldErrors(form, {});
        onDone(answer);
      } catch (err) {
        if (err.errors) showFieldErrors(form, err.errors);
        else if (err.field && form.querySelector(`[name="${CSS.escape(err.field)}"]`)) showFieldErrors(form, {[err.field]: [err.message]});
        else flash(err.message);
      } finally {
        if (button) button.disabled = false;
      }
    });
  }

  // Exponential moving average as TensorBoard smooths (weight 0..1), debiased at the start
  function smooth(values, weight) {
    if (!weight) return values.slice();
    let last = 0, n = 0;
    return values.map((v) => {
      if (v === null || !isFinite(v)) return v;
      last = last * weight + (1 - weight) * v; n += 1;
      return last / (1 - Math.pow(weight, n));
    });
  }

  const fmt = {
    num: (v, digits = 4) => (v === null || v === undefined || !isFinite(v)) ? "" : Number(v).toPrecision(digits).replace(/\.?0+($|e)/, "$1"),
    pct: (v) => (v === null || v === undefined) ? "" : (100 * v).toFixed(1) + " %",
    time: (t) => t ? new Date(t * 1000).toLocaleString() : "",
    bytes: (b) => b < 1024 ? `${b} B` : b < 1048576 ? `${(b / 1024).toFixed(1)} KB` : `${(b / 1048576).toFixed(1)} MB`,
  };

  // Escape text for innerHTML
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

  window.brewnet = {api, send, events, flash, showFieldErrors, ajaxForm, smooth, fmt, esc, csrf};
})();
