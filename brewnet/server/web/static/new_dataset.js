// The New Dataset page: DIGITS' form (folder or list files), sent over fetch with errors next to
// their fields, and the example picture resized in each of the four modes as the size changes.
"use strict";
(function () {
  const B = window.brewnet;
  const form = document.getElementById("dataset-form");
  const $ = (id) => document.getElementById(id);
  const field = (name) => form.elements.namedItem(name);

  // ------------------------------------------------------------------ sections that follow a choice
  // A section not in use is hidden and disabled: its fields are not sent.
  function show(el, on) {
    if (!el) return;
    el.hidden = !on;
    el.querySelectorAll("input, select, textarea").forEach((i) => { i.disabled = !on; });
  }
  function method() { return form.querySelector("input[name=method]:checked").value; }
  function sync() {
    const m = method();
    show($("method-folder"), m === "folder");
    show($("method-textfile"), m === "textfile");
    if (m === "folder") {
      show($("val-folder"), field("has_val_folder").checked);
      show($("test-folder"), field("has_test_folder").checked);
      // a separate folder replaces the percentage
      field("folder_pct_val").disabled = field("has_val_folder").checked;
      field("folder_pct_test").disabled = field("has_test_folder").checked;
    } else {
      const local = field("textfile_use_local_files").checked;
      show($("textfile-upload"), !local);
      show($("textfile-local"), local);
      show($("textfile-val"), field("textfile_use_val").checked);
      show($("textfile-test"), field("textfile_use_test").checked);
      // an upload or a server path, in the parts of the form in use
      $("method-textfile").querySelectorAll(".upload-only, .local-only").forEach((e) => {
        const sub = e.closest(".sub");
        show(e, (!sub || !sub.hidden) && (e.classList.contains("local-only") ? local : !local));
      });
    }
  }
  form.querySelectorAll("input[name=method], #f-has_val_folder, #f-has_test_folder, #f-textfile_use_local_files, #f-textfile_use_val, #f-textfile_use_test")
    .forEach((e) => e.addEventListener("change", sync));
  sync();

  // a field's error goes once the field is changed
  form.addEventListener("input", (ev) => {
    const name = ev.target.name;
    if (!name || ev.target.getAttribute("aria-invalid") !== "true") return;
    ev.target.removeAttribute("aria-invalid");
    const slot = form.querySelector(`.field-error[data-for="${CSS.escape(name)}"]`);
    if (slot) slot.textContent = "";
  });

  // ------------------------------------------------------------------ submit
  const button = $("create");
  const status = $("create-status");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    status.textContent = "Creating the dataset job…";
    B.flash("");
    try {
      const answer = await B.api(form.getAttribute("action"), {form: new FormData(form)});
      B.showFieldErrors(form, {});
      status.textContent = "Created: opening its page…";
      window.location.assign(`/datasets/${encodeURIComponent(answer.id)}`);
    } catch (err) {
      status.textContent = "";
      if (err.errors) B.showFieldErrors(form, err.errors);
      else if (err.field && field(err.field)) B.showFieldErrors(form, {[err.field]: [err.message]});
      else B.flash(err.message || String(err));
      button.disabled = false;
    }
  });

  // ------------------------------------------------------------------ resize examples
  const box = document.querySelector(".resize-examples");
  const maxSide = Number(box.dataset.max) || 1024;
  const FRAME = 150;   // px: every example drawn in the same box, its aspect ratio kept
  const note = $("example-note");
  const source = $("example-source");
  const images = [$("example-original"), ...document.querySelectorAll("img.resized")];
  let controller = null;
  let timer = null;

  function intOf(name) {
    const v = String(field(name).value || "").trim();
    return /^\d+$/.test(v) ? Number(v) : NaN;
  }

  function fit(img, w, h) {
    const k = FRAME / Math.max(w, h);
    img.style.width = `${Math.max(1, Math.round(w * k))}px`;
    img.style.height = `${Math.max(1, Math.round(h * k))}px`;
  }

  async function load(img, url, signal) {
    const r = await B.send(url, {signal, accept: "image/png"});
    const name = r.headers.get("X-Example-Source") || "built-in";
    const blob = await r.blob();
    const old = img.dataset.blob;
    img.src = URL.createObjectURL(blob);
    img.dataset.blob = img.src;
    if (old) URL.revokeObjectURL(old);
    return name;
  }

  async function update() {
    const w = intOf("resize_width"), h = intOf("resize_height");
    const channels = field("resize_channels").value;
    if (!(w >= 1 && h >= 1 && w <= maxSide && h <= maxSide)) {
      note.textContent = `The examples are drawn for widths and heights from 1 to ${maxSide}.`;
      return;
    }
    note.textContent = "";
    if (controller) controller.abort();
    controller = new AbortController();
    const signal = controller.signal;
    const q = new URLSearchParams({width: w, height: h, channels});
    const folder = field("folder_train");
    if (method() === "folder" && folder && folder.value.trim()) q.set("folder", folder.value.trim());
    box.setAttribute("aria-busy", "true");
    try {
      const names = await Promise.all(images.map((img) => {
        const mode = img.dataset.mode || "original";
        const p = new URLSearchParams(q); p.set("mode", mode);
        return load(img, `/datasets/resize-example.png?${p}`, signal);
      }));
      images.forEach((img) => {
        if (img.dataset.mode) fit(img, w, h);
        else fit(img, img.naturalWidth || 1, img.naturalHeight || 1);
      });
      source.textContent = names[0] === "built-in" ? "Example picture: built-in (give a training folder to see its first image)."
        : `Example picture: ${names[0]}, the first image of the training folder.`;
      box.dataset.size = `${w}x${h}x${channels}`;
    } catch (err) {
      if (err.name !== "AbortError") note.textContent = `The examples could not be drawn: ${err.message}`;
    } finally {
      if (!signal.aborted) box.removeAttribute("aria-busy");
    }
  }
  function later(ms = 250) { clearTimeout(timer); timer = setTimeout(update, ms); }
  // the original's box follows its own size, known once it loaded
  $("example-original").addEventListener("load", (ev) => fit(ev.target, ev.target.naturalWidth, ev.target.naturalHeight));
  ["resize_width", "resize_height", "folder_train"].forEach((n) => field(n).addEventListener("input", () => later()));
  field("resize_channels").addEventListener("change", () => later(0));
  form.querySelectorAll("input[name=method]").forEach((e) => e.addEventListener("change", () => later(0)));

  // the chosen mode is marked; a click on an example chooses it
  function markMode() {
    const m = field("resize_mode").value;
    box.querySelectorAll("figure[data-mode]").forEach((f) => f.classList.toggle("chosen", f.dataset.mode === m));
  }
  field("resize_mode").addEventListener("change", markMode);
  box.querySelectorAll("button.pick-mode").forEach((b) => b.addEventListener("click", () => {
    field("resize_mode").value = b.dataset.mode;
    markMode();
  }));
  markMode();
  update();
})();
