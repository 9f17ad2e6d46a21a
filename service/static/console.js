// Rolegate console: plain JavaScript, no dependencies, no build step.
// Every value from the server is put into the page as a text node (textContent), never as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "rolegate.console.token";
  const ORGS_KEY = "rolegate.console.orgs";
  const body = document.body;
  const page = body.dataset.page;
  const org = body.dataset.org;
  const subject = body.dataset.subject;
  const statusBox = document.getElementById("status");

  // ------------------------------------------------------------------ small helpers

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setStatus(message, isError) {
    statusBox.textContent = message || "";
    statusBox.classList.toggle("error", Boolean(isError));
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function orgPath(suffix) {
    return "/v1/orgs/" + encodeURIComponent(org) + suffix;
  }

  function consoleSubjectUrl(name) {
    return "/console/orgs/" + encodeURIComponent(org) + "/subjects/" + encodeURIComponent(name);
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function authorization(value) {
    // API keys (rgk_<id>_<secret>) use their own scheme; everything else is a bearer JWT.
    return (/^rgk_/.test(value) ? "ApiKey " : "Bearer ") + value;
  }

  async function errorOf(response) {
    let code = "http_" + response.status;
    let message = response.statusText || "request failed (HTTP " + response.status + ")";
    try {
      const data = await response.json();
      code = data.error.code;
      message = data.error.message;
    } catch (ignored) {
      // not our JSON error shape
    }
    return new ApiError(response.status, code, message);
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = { Authorization: authorization(opts.token || token()), Accept: "application/json" };
    let payload;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(opts.json);
    }
    const response = await fetch(path, {
      method: opts.method || "GET", headers: headers, body: payload, cache: "no-store",
    });
    if (!response.ok) {
      const error = await errorOf(response);
      if (response.status === 401 && !opts.token) {
        signOut("Your token was refused (" + error.message + "). Sign in again.");
      }
      throw error;
    }
    return response;
  }

  async function send(method, path, json) {
    return (await api(path, { method: method, json: json })).json();
  }

  async function apiJson(path) {
    return (await api(path)).json();
  }

  function fail(error) {
    if (error instanceof ApiError && error.status === 401) return; // signOut() said why
    setStatus(error.message ? "Error: " + error.message : String(error), true);
  }

  function replaceRows(table, rows) {
    const tbody = table.tBodies[0];
    tbody.replaceChildren(...rows);
  }

  function emptyRow(columns, text) {
    return el("tr", { className: "empty" }, el("td", { colspan: String(columns), text: text }));
  }

  function subjectLink(name, kind) {
    if (kind === "owner" || kind === "anyone") {
      return el("em", { text: name === "(owner)" ? "the owner" : "any other subject" });
    }
    return el("a", { href: consoleSubjectUrl(name), className: "name", text: name });
  }

  function filterRows(table, query) {
    const needle = query.trim().toLowerCase();
    for (const row of table.tBodies[0].rows) {
      if (row.classList.contains("empty")) continue;
      row.hidden = needle !== "" && !row.textContent.toLowerCase().includes(needle);
    }
  }

  // ------------------------------------------------------------------ sign in / out

  let identity = null; // the caller as the server authenticated it (GET /v1/whoami)

  function claimOrg() {
    return identity && identity.org ? identity.org : null;
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    identity = null;
    showSignedIn(false);
    setStatus(message || "Signed out.", Boolean(message));
  }

  function describe(who) {
    return who.subject + (who.org ? " in " + who.org : "") + (who.kind === "api_key" ? " (API key)" : "");
  }

  function showSignedIn(signedIn) {
    document.getElementById("sign-in").hidden = signedIn;
    document.getElementById("sign-out").hidden = !signedIn;
    for (const node of document.querySelectorAll("[data-needs-token]")) node.hidden = !signedIn;
    const who = document.getElementById("whoami");
    who.hidden = !(signedIn && identity);
    who.textContent = signedIn && identity ? "signed in as " + describe(identity) : "";
    if (!signedIn) document.getElementById("token").focus();
  }

  async function verify(value) {
    return (await api("/v1/whoami", { token: value })).json();
  }

  document.getElementById("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    const message = document.getElementById("sign-in-message");
    const value = input.value.trim().replace(/^(Bearer|ApiKey)\s+/i, "");
    if (!value) return;
    message.textContent = "Checking the token…";
    try {
      identity = await verify(value);
    } catch (error) {
      message.textContent = "Not signed in: " + error.message;
      setStatus("Not signed in: " + error.message, true);
      input.focus();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    input.value = "";
    message.textContent = "";
    setStatus("Signed in as " + describe(identity) + ".");
    showSignedIn(true);
    start();
  });

  document.getElementById("sign-out").addEventListener("click", () => signOut());

  // ------------------------------------------------------------------ index: pick an org

  function rememberOrg(name) {
    const orgs = JSON.parse(sessionStorage.getItem(ORGS_KEY) || "[]").filter((o) => o !== name);
    orgs.unshift(name);
    sessionStorage.setItem(ORGS_KEY, JSON.stringify(orgs.slice(0, 10)));
  }

  function startIndex() {
    const input = document.getElementById("org-input");
    const list = document.getElementById("recent-orgs");
    const orgs = JSON.parse(sessionStorage.getItem(ORGS_KEY) || "[]");
    const fromToken = claimOrg();
    if (fromToken && !orgs.includes(fromToken)) orgs.unshift(fromToken);
    list.replaceChildren(...orgs.map((name) => el("option", { value: name })));
    if (!input.value && orgs.length) input.value = orgs[0];
    input.focus();
    document.getElementById("org-form").onsubmit = (event) => {
      event.preventDefault();
      const name = input.value.trim();
      if (!name) return;
      rememberOrg(name);
      window.location.assign("/console/orgs/" + encodeURIComponent(name));
    };
  }

  // ------------------------------------------------------------------ org page

  let matrixData = null;
  const loaded = new Set();

  async function loadMatrix() {
    if (!matrixData) matrixData = await apiJson(orgPath("/matrix"));
    return matrixData;
  }

  // ------------------------------------------------------------------ admin panels

  function say(id, message, isError) {
    const box = document.getElementById(id);
    box.textContent = message || "";
    box.classList.toggle("error", Boolean(isError));
  }

  function failIn(id) {
    return (error) => {
      if (error instanceof ApiError && error.status === 401) return; // signOut() said why
      say(id, "Refused: " + (error.message || String(error)), true);
    };
  }

  function roleList(text) {
    return text.split(",").map((name) => name.trim()).filter(Boolean);
  }

  const knownRoles = new Set();

  function learnRoles(names) {
    for (const name of names) knownRoles.add(name);
    document.getElementById("known-roles").replaceChildren(
      ...[...knownRoles].sort().map((name) => el("option", { value: name })));
  }

  function button(text, onClick, label) {
    const node = el("button", { type: "button", "aria-label": label || null, text: text });
    node.addEventListener("click", onClick);
    return node;
  }

  // A destructive action asks once more in place; the confirm button takes the focus.
  function confirmInCell(cell, question, action) {
    const previous = [...cell.childNodes];
    const trigger = document.activeElement;
    const cancel = button("Cancel", () => {
      cell.replaceChildren(...previous);
      (cell.contains(trigger) ? trigger : cell.querySelector("button")).focus();
    });
    const yes = button("Yes, " + question.toLowerCase(), action);
    yes.className = "danger";
    cell.replaceChildren(el("span", { className: "confirm", text: question + "?" }), " ", yes, " ", cancel);
    yes.focus();
  }

  function invalidateAudit() {
    matrixData = null;
    loaded.delete("matrix");
  }

  // -- members: GET/PUT/DELETE /v1/orgs/<org>/members[/<subject>]

  let membersNext = null;

  function memberPath(name) {
    return orgPath("/members/" + encodeURIComponent(name));
  }

  function memberRow(member) {
    const rolesCell = el("td", {}, member.roles.join(", "));
    const actions = el("td", { className: "actions" });
    const edit = button("Change roles", () => editRoles(member, rolesCell), "Change roles of " + member.subject);
    const remove = button("Remove", () => confirmInCell(actions, "Remove " + member.subject,
      () => removeMember(member.subject)), "Remove " + member.subject);
    remove.className = "danger";
    actions.append(edit, " ", remove);
    return el("tr", { "data-subject": member.subject },
      el("td", {}, subjectLink(member.subject, "user")),
      rolesCell,
      el("td", { className: "muted" }, member.inherited.join(", ")),
      actions);
  }

  function editRoles(member, cell) {
    const id = "edit-roles-" + Math.random().toString(36).slice(2);
    const input = el("input", { id: id, value: member.roles.join(", "), autocomplete: "off",
      list: "known-roles", spellcheck: "false" });
    const form = el("form", { className: "inline" },
      el("label", { for: id, className: "visually-hidden", text: "Roles of " + member.subject }),
      input, " ", el("button", { type: "submit", text: "Save" }), " ");
    form.append(button("Cancel", () => { showMembers().catch(failIn("members-message")); }));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      setMember(member.subject, roleList(input.value)).catch(failIn("members-message"));
    });
    cell.replaceChildren(form);
    input.focus();
    input.select();
  }

  async function setMember(name, roles) {
    const result = await send("PUT", memberPath(name), { roles: roles });
    invalidateAudit();
    await showMembers();
    say("members-message", name + " now has the roles " + result.roles.join(", ") +
      " (revision " + result.revision + ").");
    const row = [...document.querySelectorAll("#members-table tbody tr")]
      .find((r) => r.dataset.subject === name);
    (row ? row.querySelector("button") : document.getElementById("member-subject")).focus();
  }

  async function removeMember(name) {
    try {
      const result = await send("DELETE", memberPath(name));
      invalidateAudit();
      await showMembers();
      say("members-message", name + " was removed (revision " + result.revision + ").");
    } catch (error) {
      await showMembers().catch(() => null);
      failIn("members-message")(error);
    }
    document.getElementById("member-subject").focus();
  }

  async function showMembers(more) {
    const query = new URLSearchParams({ limit: "500" });
    if (more && membersNext) query.set("after", membersNext);
    const data = await apiJson(orgPath("/members?" + query.toString()));
    const rows = data.members.map(memberRow);
    const table = document.getElementById("members-table");
    if (more) table.tBodies[0].append(...rows);
    else replaceRows(table, rows.length ? rows : [emptyRow(4, "No members.")]);
    for (const member of data.members) learnRoles([...member.roles, ...member.inherited]);
    membersNext = data.next;
    document.getElementById("members-more").hidden = !data.next;
    filterRows(table, document.getElementById("members-filter").value);
    setStatus(table.tBodies[0].querySelectorAll("tr:not(.empty)").length +
      " members at revision " + data.revision + ".");
  }

  // -- API keys: GET/POST /v1/orgs/<org>/api-keys, DELETE .../api-keys/<id>

  function keyRow(key) {
    const actions = el("td", { className: "actions" });
    if (key.state === "active") {
      const revoke = button("Revoke", () => confirmInCell(actions, "Revoke " + key.name,
        () => revokeKey(key)), "Revoke key " + key.name);
      revoke.className = "danger";
      actions.append(revoke);
    }
    return el("tr", { "data-key": key.id },
      el("td", { className: "name", text: key.name }),
      el("td", {}, el("code", { text: key.id })),
      el("td", { text: key.roles.join(", ") }),
      el("td", { className: "state " + key.state, text: key.state }),
      el("td", { text: String(key.created_at || "").replace("T", " ").slice(0, 19) + " by " + key.created_by }),
      el("td", { text: key.expires_at ? String(key.expires_at).replace("T", " ").slice(0, 19) : "never" }),
      actions);
  }

  async function showKeys() {
    const data = await apiJson(orgPath("/api-keys"));
    const rows = data.api_keys.map(keyRow);
    replaceRows(document.getElementById("api-keys-table"), rows.length ? rows : [emptyRow(7, "No API keys.")]);
    setStatus(rows.length + " API keys.");
  }

  function showSecret(key) {
    const box = document.getElementById("new-key");
    document.getElementById("new-key-value").textContent = key;
    box.hidden = false;
    box.focus();
  }

  function forgetSecret() {
    document.getElementById("new-key-value").textContent = "";
    document.getElementById("new-key").hidden = true;
  }

  async function createKey(form) {
    const body = { name: form.elements.name.value.trim(), roles: roleList(form.elements.roles.value) };
    const expires = form.elements.expires_at.value.trim();
    if (expires) body.expires_at = expires;
    const created = await send("POST", orgPath("/api-keys"), body);
    form.reset();
    invalidateAudit();
    await showKeys();
    say("api-keys-message", "Created key " + created.name + " (" + created.id + ") with the roles " +
      created.roles.join(", ") + ".");
    showSecret(created.key);
  }

  async function revokeKey(key) {
    try {
      await send("DELETE", orgPath("/api-keys/" + encodeURIComponent(key.id)));
      invalidateAudit();
      say("api-keys-message", "Revoked key " + key.name + " (" + key.id + "): it is refused from now on.");
    } catch (error) {
      failIn("api-keys-message")(error);
    }
    await showKeys().catch(failIn("api-keys-message"));
    document.getElementById("key-name").focus();
  }

  // -- org rules: GET/POST/DELETE /v1/orgs/<org>/rules

  function ruleText(rule) {
    return rule.type === "p"
      ? ["p", rule.subject, org, rule.resource, rule.action, rule.effect].join(", ")
      : ["g", rule.member, rule.role, org].join(", ");
  }

  function ruleRow(rule) {
    const actions = el("td", { className: "actions" });
    const text = ruleText(rule);
    const remove = button("Remove", () => confirmInCell(actions, "Remove this rule",
      () => changeRule("DELETE", rule)), "Remove rule " + text);
    remove.className = "danger";
    actions.append(remove);
    return el("tr", {}, el("td", {}, el("code", { text: text })), actions);
  }

  async function showRules() {
    const data = await apiJson(orgPath("/rules"));
    const rows = data.rules.map(ruleRow);
    replaceRows(document.getElementById("rules-table"), rows.length ? rows : [emptyRow(2, "No org rules.")]);
    learnRoles(data.rules.map((rule) => rule.type === "p" ? rule.subject : rule.role));
    setStatus(rows.length + " org rules at revision " + data.revision + ".");
  }

  function ruleFromForm(form) {
    const value = (name) => form.elements[name].value.trim();
    return form.elements.type.value === "p"
      ? { type: "p", subject: value("subject"), resource: value("resource"), action: value("action"),
          effect: form.elements.effect.value }
      : { type: "g", member: value("member"), role: value("role") };
  }

  async function changeRule(method, rule) {
    try {
      const result = await send(method, orgPath("/rules"), { rules: [rule] });
      invalidateAudit();
      say("rules-message", (method === "POST" ? "Added " : "Removed ") + ruleText(rule) +
        " (revision " + result.revision + ").");
    } catch (error) {
      failIn("rules-message")(error);
      if (method === "POST") throw error;
    }
    await showRules().catch(failIn("rules-message"));
    if (method === "DELETE") document.getElementById("rule-type").focus();
  }

  function showRuleKind() {
    const kind = document.getElementById("rule-type").value;
    for (const group of document.querySelectorAll("[data-rule-kind]")) {
      group.hidden = group.dataset.ruleKind !== kind;
      for (const input of group.querySelectorAll("input")) input.required = !group.hidden;
    }
  }

  async function showMatrix() {
    const data = await loadMatrix();
    const table = document.getElementById("matrix-table");
    const head = el("tr", {}, el("th", { scope: "col", text: "Subject" }),
      ...data.columns.map((c) => el("th", { scope: "col", className: "column" },
        el("span", { className: "action", text: c.action }), " ",
        el("span", { className: "resource", text: c.resource }))));
    table.tHead.replaceChildren(head);
    const rows = data.rows.map((row) =>
      el("tr", {}, el("th", { scope: "row" }, subjectLink(row.subject, row.kind)),
        ...row.cells.map((cell) => el("td", { className: "cell " + cell,
          text: cell === "none" ? "·" : cell }))));
    replaceRows(table, rows.length ? rows : [emptyRow(data.columns.length + 1, "No subjects.")]);
    applyMatrixFilter();
    setStatus(data.rows.length + " subjects x " + data.columns.length +
      " permissions at revision " + data.revision + ".");
  }

  function applyMatrixFilter() {
    if (!matrixData) return;
    const needle = document.getElementById("matrix-filter").value.trim().toLowerCase();
    const table = document.getElementById("matrix-table");
    const columnMatches = matrixData.columns.map((c) =>
      needle === "" || (c.action + " " + c.resource).toLowerCase().includes(needle));
    const anyColumn = columnMatches.some(Boolean) && needle !== "";
    for (const row of table.tBodies[0].rows) {
      const name = row.cells[0].textContent.toLowerCase();
      row.hidden = needle !== "" && !anyColumn && !name.includes(needle);
      for (let i = 1; i < row.cells.length; i++) {
        row.cells[i].hidden = anyColumn && !columnMatches[i - 1];
      }
    }
    const headCells = table.tHead.rows[0] ? table.tHead.rows[0].cells : [];
    for (let i = 1; i < headCells.length; i++) headCells[i].hidden = anyColumn && !columnMatches[i - 1];
  }

  async function downloadCsv() {
    const response = await api(orgPath("/matrix?format=csv"));
    const blob = await response.blob();
    const link = el("a", { href: URL.createObjectURL(blob), download: org + "-access-matrix.csv" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  let whoCanQuery = null;

  async function searchWhoCan(cursor) {
    const query = new URLSearchParams(whoCanQuery);
    if (cursor) query.set("cursor", cursor);
    const data = await apiJson(orgPath("/who-can?" + query.toString()));
    const table = document.getElementById("who-can-table");
    const rows = data.subjects.map((entry) =>
      el("tr", {},
        el("td", {}, subjectLink(entry.subject, entry.kind)),
        el("td", { text: entry.kind }),
        el("td", { text: entry.via }),
        el("td", { className: "path", text: entry.path }),
        el("td", {}, el("code", { text: entry.rule || "" }))));
    if (cursor) table.tBodies[0].append(...rows);
    else replaceRows(table, rows.length ? rows : [emptyRow(5, "Nobody may do this." +
      (data.hint ? " Hint: " + data.hint + "." : ""))]);
    const more = document.getElementById("who-can-more");
    more.hidden = !data.next_cursor;
    more.onclick = () => searchWhoCan(data.next_cursor).catch(fail);
    const shown = table.tBodies[0].querySelectorAll("tr:not(.empty)").length;
    setStatus(shown + " allowed to " + data.action + " " + data.resource +
      (data.next_cursor ? " so far (more to load)." : ".") + (data.hint ? " Hint: " + data.hint + "." : ""),
      Boolean(data.hint));
  }

  async function showChanges() {
    const since = document.getElementById("changes-since").value;
    const query = new URLSearchParams({ limit: "1000" });
    if (since) query.set("since", since + "T00:00:00Z");
    let data = await apiJson(orgPath("/changes?" + query.toString()));
    const entries = data.changes.slice();
    while (data.next_since_revision !== null && entries.length < 5000) {
      query.set("since_revision", String(data.next_since_revision));
      data = await apiJson(orgPath("/changes?" + query.toString()));
      entries.push(...data.changes);
    }
    entries.reverse();
    const rows = entries.map((change) =>
      el("tr", {},
        el("td", { text: change.at.replace("T", " ").slice(0, 19) }),
        el("td", { text: String(change.revision) }),
        el("td", { text: change.actor }),
        el("td", { className: "op " + change.operation,
          text: change.operation === "add" ? "added" : "removed" }),
        el("td", {}, el("code", { text: change.rule }))));
    replaceRows(document.getElementById("changes-table"),
      rows.length ? rows : [emptyRow(5, "No changes.")]);
    setStatus(rows.length + " changes, newest first.");
  }

  async function showDecisions() {
    const form = document.getElementById("decisions-form");
    const query = new URLSearchParams({ limit: "200" });
    for (const [name, value] of new FormData(form).entries()) {
      if (String(value).trim()) query.set(name, String(value).trim());
    }
    let data;
    try {
      data = await apiJson(orgPath("/decisions?" + query.toString()));
    } catch (error) {
      if (error.code === "decision_log_disabled") {
        replaceRows(document.getElementById("decisions-table"), [emptyRow(8, error.message)]);
        setStatus("The decision log is not searchable on this server.");
        return;
      }
      throw error;
    }
    const rows = data.decisions.map((d) =>
      el("tr", {},
        el("td", { text: String(d.time).replace("T", " ").slice(0, 23) }),
        el("td", {}, subjectLink(d.subject, "user")),
        el("td", { text: d.action }),
        el("td", { text: d.resource }),
        el("td", { className: "cell " + (d.allowed ? "allow" : "deny"),
          text: d.allowed ? "allowed" : "denied" }),
        el("td", {}, el("code", { text: d.rule || "" })),
        el("td", { text: d.client || "" }),
        el("td", { className: "muted", text: d.request_id || "" })));
    replaceRows(document.getElementById("decisions-table"),
      rows.length ? rows : [emptyRow(8, "No decisions recorded.")]);
    setStatus(rows.length + " decisions, newest first.");
  }

  async function showShadow() {
    let data;
    try {
      data = await apiJson(orgPath("/shadow/disagreements?limit=200"));
    } catch (error) {
      if (error.code === "shadow_disabled") {
        replaceRows(document.getElementById("shadow-table"), [emptyRow(7, error.message)]);
        setStatus("No shadow policy on this server.");
        return;
      }
      throw error;
    }
    document.getElementById("shadow-revision").textContent =
      "Shadow policy " + (data.shadow.revision || "(not loaded)") +
      (data.shadow.error ? " — " + data.shadow.error : "") +
      ": decisions it answers differently, in this worker.";
    const rows = data.disagreements.map((d) =>
      el("tr", {},
        el("td", { text: String(d.time).replace("T", " ").slice(0, 23) }),
        el("td", {}, subjectLink(d.subject, "user")),
        el("td", { text: d.action }),
        el("td", { text: d.resource }),
        el("td", { className: "cell " + (d.shadow.allowed ? "allow" : "deny"),
          text: d.direction === "grant" ? "would allow" : "would deny" }),
        el("td", {}, el("code", { text: d.live.rule || "" })),
        el("td", {}, el("code", { text: d.shadow.rule || "" }))));
    replaceRows(document.getElementById("shadow-table"),
      rows.length ? rows : [emptyRow(7, "No disagreements.")]);
    setStatus(rows.length + " disagreements, newest first.");
  }

  const views = {
    members: () => showMembers(false),
    "api-keys": showKeys,
    rules: showRules,
    matrix: showMatrix,
    "who-can": async () => document.getElementById("who-can-resource").focus(),
    changes: showChanges,
    decisions: showDecisions,
    shadow: showShadow,
  };

  const CACHED_VIEWS = new Set(["matrix", "who-can"]); // the others reload when shown

  function selectView() {
    const name = (window.location.hash || "#members").slice(1);
    const view = views[name] ? name : "members";
    for (const section of document.querySelectorAll(".view")) {
      section.hidden = section.dataset.view !== view;
    }
    for (const tab of document.querySelectorAll("[data-tab]")) {
      if (tab.dataset.tab === view) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
    if (!loaded.has(view) || !CACHED_VIEWS.has(view)) {
      loaded.add(view);
      setStatus("Loading…");
      views[view]().catch(fail);
    }
  }

  function startOrg() {
    rememberOrg(org);
    window.addEventListener("hashchange", selectView);
    document.getElementById("members-filter").oninput = (event) =>
      filterRows(document.getElementById("members-table"), event.target.value);
    document.getElementById("members-more").onclick = () =>
      showMembers(true).catch(failIn("members-message"));
    document.getElementById("member-form").onsubmit = (event) => {
      event.preventDefault();
      const name = document.getElementById("member-subject").value.trim();
      const roles = roleList(document.getElementById("member-roles").value);
      setMember(name, roles).then(() => {
        document.getElementById("member-form").reset();
        document.getElementById("member-subject").focus();
      }).catch(failIn("members-message"));
    };
    document.getElementById("key-form").onsubmit = (event) => {
      event.preventDefault();
      createKey(event.target).catch(failIn("api-keys-message"));
    };
    document.getElementById("new-key-copy").onclick = () => {
      const value = document.getElementById("new-key-value").textContent;
      navigator.clipboard.writeText(value).then(
        () => say("api-keys-message", "Copied the key."),
        () => say("api-keys-message", "Copying failed: select the key and copy it.", true));
    };
    document.getElementById("new-key-done").onclick = () => {
      forgetSecret();
      document.getElementById("key-name").focus();
    };
    window.addEventListener("hashchange", forgetSecret);
    document.getElementById("rule-type").onchange = showRuleKind;
    showRuleKind();
    document.getElementById("rule-form").onsubmit = (event) => {
      event.preventDefault();
      const form = event.target;
      changeRule("POST", ruleFromForm(form)).then(() => {
        for (const input of form.querySelectorAll("input")) input.value = "";
        document.getElementById("rule-type").focus();
      }).catch(() => null);
    };
    document.getElementById("matrix-filter").oninput = applyMatrixFilter;
    document.getElementById("matrix-csv").onclick = () => downloadCsv().catch(fail);
    document.getElementById("who-can-form").onsubmit = (event) => {
      event.preventDefault();
      whoCanQuery = {
        resource: document.getElementById("who-can-resource").value.trim(),
        action: document.getElementById("who-can-action").value.trim(),
        limit: "100",
      };
      setStatus("Searching…");
      searchWhoCan(null).catch(fail);
    };
    document.getElementById("changes-form").onsubmit = (event) => {
      event.preventDefault();
      showChanges().catch(fail);
    };
    document.getElementById("decisions-form").onsubmit = (event) => {
      event.preventDefault();
      showDecisions().catch(fail);
    };
    document.getElementById("shadow-refresh").onclick = () => showShadow().catch(fail);
    selectView();
  }

  // ------------------------------------------------------------------ subject page

  async function showPermissions() {
    setStatus("Loading…");
    const query = new URLSearchParams();
    for (const name of ["resource", "action"]) {
      const value = document.getElementById("permissions-" + name).value.trim();
      if (value) query.set(name, value);
    }
    const suffix = query.toString() ? "?" + query.toString() : "";
    const data = await apiJson(orgPath("/subjects/" + encodeURIComponent(subject) + "/permissions" + suffix));
    const roles = document.getElementById("subject-roles");
    roles.replaceChildren(...(data.roles.length
      ? data.roles.map((r) => el("li", {}, el("strong", { text: r.role }), " ",
          el("span", { className: "path", text: r.path })))
      : [el("li", { className: "muted", text: "no roles" })]));
    const rows = data.permissions.map((p) =>
      el("tr", { className: p.effect },
        el("td", { text: p.resource }),
        el("td", { text: p.action }),
        el("td", { className: "cell " + p.effect, text: p.effect }),
        el("td", { text: p.condition === "owner" ? "when owner" : "" }),
        el("td", { className: "path", text: p.path }),
        el("td", {}, el("code", { text: p.rule }))));
    const table = document.getElementById("permissions-table");
    replaceRows(table, rows.length ? rows : [emptyRow(6, suffix
      ? "No rule held by this subject matches." : "No rules apply to this subject.")]);
    filterRows(table, document.getElementById("permissions-filter").value);
    say("permissions-message", data.hint ? "Hint: " + data.hint + "." : "", Boolean(data.hint));
    setStatus(data.permissions.length + " rules at revision " + data.revision + ".");
  }

  async function startSubject() {
    const table = document.getElementById("permissions-table");
    document.getElementById("permissions-filter").oninput = (event) =>
      filterRows(table, event.target.value);
    document.getElementById("permissions-query").onsubmit = (event) => {
      event.preventDefault();
      showPermissions().catch(fail);
    };
    await showPermissions();
  }

  // ------------------------------------------------------------------ start

  function start() {
    if (!token()) return;
    try {
      if (page === "index") startIndex();
      else if (page === "org") startOrg();
      else if (page === "subject") startSubject().catch(fail);
    } catch (error) {
      fail(error);
    }
  }

  async function resume() {
    if (!token()) {
      showSignedIn(false);
      return;
    }
    try {
      identity = await verify(token());
    } catch (error) {
      signOut("Your token was refused (" + error.message + "). Sign in again.");
      return;
    }
    showSignedIn(true);
    start();
  }

  // For panels added by other scripts (loaded after this one): an org-page view is a tab link
  // `<a data-tab=NAME>`, a `<section class="view" data-view=NAME>` and a loader registered here.
  window.RolegateConsole = Object.freeze({
    api: api,
    apiJson: apiJson,
    send: send,
    el: el,
    setStatus: setStatus,
    emptyRow: emptyRow,
    replaceRows: replaceRows,
    orgPath: orgPath,
    addView: (name, loader) => { views[name] = loader; },
  });

  resume();
})();
