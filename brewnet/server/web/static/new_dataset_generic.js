// The New Dataset pages of the generic kinds (DIGITS' "Other" and its data extensions): the
// sections that follow a choice, the form sent over fetch with errors next to their fields.
"use strict";
(function () {
  const B = window.brewnet;
  const form = document.getElementById("dataset-form");
  const $ = (id) => document.getElementById(id);
  const field = (name) => form.elements.namedItem(name);

  // a section not in use is hidden and disabled: its fields are not sent
  function show(el, on) {
    if (!el) return;
    el.hidden = !on;
    el.querySelectorAll("input, select, textarea").forEach((i) => { i.disabled = !on; });
  }
  function sync() {
    const hasVal = $("f-has_val_folder");
    if (hasVal) {
      show($("val-folders"), hasVal.checked);
      field("folder_pct_val").disabled = hasVal.checked;
    }
    const cmap = $("f-colormap_method");
    if (cmap) show($("colormap-file"), cmap.value === "textfile");
    // a file: an upload or a server path, never both
    form.querySelectorAll(".file-or-path").forEach((box) => {
      if (box.closest(".sub") && box.closest(".sub").hidden) return;
      const choice = box.querySelector("input[type=radio]:checked");
      const server = choice && choice.value === "server";
      box.querySelector("input.upload").hidden = server;
      box.querySelector("input.upload").disabled = server;
      box.querySelector("input.server").hidden = !server;
      box.querySelector("input.server").disabled = !server;
    });
  }
  form.addEventListener("change", (ev) => {
    if (ev.target.matches("#f-has_val_folder, #f-colormap_method, .file-or-path input[type=radio]")) sync();
  });
  sync();

  // a field's error goes once the field is changed
  form.addEventListener("input", (ev) => {
    const name = ev.target.name;
    if (!name || ev.target.getAttribute("aria-invalid") !== "true") return;
    ev.target.removeAttribute("aria-invalid");
    const slot = form.querySelector(`.field-error[data-for="${CSS.escape(name)}"]`);
    if (slot) slot.textContent = "";
  });

  // the label encoding a gradients dataset needs, said before the server says it
  const labelEnc = field("dsopts_label_encoding");
  if (labelEnc && form.dataset.kind === "gradients") {
    labelEnc.addEventListener("change", () => {
      B.showFieldErrors(form, labelEnc.value === "none" ? {} :
        {dsopts_label_encoding: ["Float labels (image gradients) need label encoding none"]});
    });
  }

  B.ajaxForm(form, (answer) => {
    $("create-status").textContent = "Created: opening its page…";
    window.location.assign(`/datasets/${encodeURIComponent(answer.id)}`);
  });
})();
