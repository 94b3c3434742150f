// The account page (password, API tokens) and the admins' users page.
"use strict";
(function () {
  const B = window.brewnet;
  const me = (document.getElementById("me-name") || {}).textContent;

  async function send(form, path, method, body, done) {
    const button = form.querySelector("[type=submit]");
    button.disabled = true;
    B.flash("");
    try {
      const answer = await B.api(path, {method, json: body});
      B.showFieldErrors(form, {});
      await done(answer);
    } catch (err) {
      if (err.errors) B.showFieldErrors(form, err.errors);
      else if (err.field && form.querySelector(`[name="${CSS.escape(err.field)}"]`)) B.showFieldErrors(form, {[err.field]: [err.message]});
      else B.flash(err.message);
    } finally { button.disabled = false; }
  }

  // ------------------------------------------------------------------ the account page
  const passwordForm = document.getElementById("password-form");
  if (passwordForm) passwordForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = passwordForm.elements.password.value;
    if (p !== passwordForm.elements.password2.value) {
      B.showFieldErrors(passwordForm, {password2: ["The two passwords differ."]});
      return;
    }
    send(passwordForm, `/api/v1/users/${encodeURIComponent(me)}`, "PATCH", {password: p}, () => {
      passwordForm.reset();
      document.getElementById("password-status").textContent = "Password changed.";
    });
  });

  const tokens = document.getElementById("tokens");
  async function loadTokens() {
    const rows = await B.api("/api/v1/tokens");
    tokens.querySelector("tbody").innerHTML = rows.map((t) => `<tr data-id="${t.id}"><td>${B.esc(t.name)}</td>
      <td><code>bnt_${B.esc(t.prefix)}…</code></td><td>${B.fmt.time(t.created)}</td>
      <td>${t.expires ? B.fmt.time(t.expires) : "never"}</td><td>${t.last_used ? B.fmt.time(t.last_used) : "never"}</td>
      <td><button type="button" class="danger revoke">Revoke</button></td></tr>`).join("");
    document.getElementById("no-tokens").hidden = rows.length > 0;
    tokens.querySelectorAll("button.revoke").forEach((b) => b.addEventListener("click", async () => {
      const tr = b.closest("tr");
      if (!confirm("Revoke this token? Scripts using it stop working at once.")) return;
      b.disabled = true;
      try { await B.api(`/api/v1/tokens/${tr.dataset.id}`, {method: "DELETE"}); await loadTokens(); }
      catch (err) { B.flash(err.message); b.disabled = false; }
    }));
  }
  const tokenForm = document.getElementById("token-form");
  if (tokenForm) {
    tokenForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const ttl = tokenForm.elements.ttl_days.value;
      send(tokenForm, "/api/v1/tokens", "POST", {name: tokenForm.elements.name.value, ttl_days: ttl ? Number(ttl) : null},
           async (answer) => {
             document.getElementById("new-token-value").textContent = answer.token;
             document.getElementById("new-token").hidden = false;
             tokenForm.reset();
             await loadTokens();
           });
    });
    loadTokens().catch((err) => B.flash(err.message));
  }

  // ------------------------------------------------------------------ the users page (admins)
  const users = document.getElementById("users");
  async function loadUsers() {
    const rows = await B.api("/api/v1/users");
    users.querySelector("tbody").innerHTML = rows.map((u) => `<tr data-name="${B.esc(u.name)}"><td>${B.esc(u.name)}</td>
      <td><label><input type="checkbox" class="admin" ${u.is_admin ? "checked" : ""}> admin</label></td>
      <td>${u.has_password ? "set" : "<span class=warn>none</span>"}
        <label class="sr-only" for="pw-${B.esc(u.name)}">New password for ${B.esc(u.name)}</label>
        <input id="pw-${B.esc(u.name)}" type="password" class="new-password" autocomplete="new-password" placeholder="new password">
        <button type="button" class="set-password">Set</button></td>
      <td><button type="button" class="danger delete">Delete</button></td></tr>`).join("");
    users.querySelectorAll("tr").forEach((tr) => {
      const name = tr.dataset.name;
      if (!name) return;
      const url = `/api/v1/users/${encodeURIComponent(name)}`;
      const act = async (button, fn) => {
        button.disabled = true; B.flash("");
        try { await fn(); B.flash("Saved.", "info"); await loadUsers(); }
        catch (err) { B.flash(err.message); await loadUsers(); }
      };
      tr.querySelector("input.admin").addEventListener("change", (ev) =>
        act(ev.target, () => B.api(url, {method: "PATCH", json: {is_admin: ev.target.checked}})));
      tr.querySelector("button.set-password").addEventListener("click", (ev) => {
        const pw = tr.querySelector("input.new-password").value;
        if (!pw) { B.flash(`Type the new password for ${name} first.`); return; }
        act(ev.target, () => B.api(url, {method: "PATCH", json: {password: pw}}));
      });
      tr.querySelector("button.delete").addEventListener("click", (ev) => {
        if (!confirm(`Delete user ${name}? Their jobs stay.`)) return;
        act(ev.target, () => B.api(url, {method: "DELETE"}));
      });
    });
  }
  const userForm = document.getElementById("user-form");
  if (userForm) {
    userForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      send(userForm, "/api/v1/users", "POST", {username: userForm.elements.username.value,
        password: userForm.elements.password.value, is_admin: userForm.elements.is_admin.checked},
        async () => { userForm.reset(); B.flash("User added.", "info"); await loadUsers(); });
    });
    loadUsers().catch((err) => B.flash(err.message));
  }
})();
