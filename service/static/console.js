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

  async function api(path, options) {
    const response = await fetch(path, {
      headers: { Authorization: "Bearer " + token(), Accept: "application/json" },
      cache: "no-store",
      ...(options || {}),
    });
    if (!response.ok) {
      let code = "http_" + response.status;
      let message = response.statusText;
      try {
        const data = await response.json();
        code = data.error.code;
        message = data.error.message;
      } catch (ignored) {
        // not our JSON error shape
      }
      if (response.status === 401) {
        signOut("Your token was refused (" + message + "). Sign in again.");
      }
      throw new ApiError(response.status, code, message);
    }
    return response;
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

  function decodeClaims(jwt) {
    try {
      const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(decodeURIComponent(escape(atob(part))));
    } catch (ignored) {
      return null;
    }
  }

  function claimOrg(claims) {
    if (!claims) return null;
    const candidates = [
      claims.org, claims.org_id, claims.organization,
      claims.o && claims.o.id, claims.app_metadata && claims.app_metadata.org_id,
    ];
    return candidates.find((value) => typeof value === "string" && value) || null;
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignedIn(false);
    setStatus(message || "Signed out.", Boolean(message));
  }

  function showSignedIn(signedIn) {
    document.getElementById("sign-in").hidden = signedIn;
    document.getElementById("sign-out").hidden = !signedIn;
    for (const node of document.querySelectorAll("[data-needs-token]")) node.hidden = !signedIn;
    const who = document.getElementById("whoami");
    const claims = signedIn ? decodeClaims(token()) : null;
    who.hidden = !claims;
    who.textContent = claims && claims.sub ? "signed in as " + claims.sub : "";
    if (!signedIn) document.getElementById("token").focus();
  }

  document.getElementById("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = document.getElementById("token").value.trim().replace(/^Bearer\s+/i, "");
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    document.getElementById("token").value = "";
    setStatus("Signed in.");
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
    const fromToken = claimOrg(decodeClaims(token()));
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

  async function showMembers() {
    const data = await loadMatrix();
    const rows = data.rows
      .filter((row) => row.kind !== "owner")
      .map((row) =>
        el("tr", {},
          el("td", {}, subjectLink(row.subject, row.kind)),
          el("td", { text: row.kind }),
          el("td", {},
            row.roles.length
              ? el("ul", { className: "roles" },
                  ...row.roles.map((r) => el("li", {}, el("strong", { text: r.role }), " ",
                    el("span", { className: "path", text: r.path }))))
              : el("span", { className: "muted", text: "no roles" }))));
    replaceRows(document.getElementById("members-table"),
      rows.length ? rows : [emptyRow(3, "No members.")]);
    setStatus(rows.length + " subjects at revision " + data.revision + ".");
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
    else replaceRows(table, rows.length ? rows : [emptyRow(5, "Nobody may do this.")]);
    const more = document.getElementById("who-can-more");
    more.hidden = !data.next_cursor;
    more.onclick = () => searchWhoCan(data.next_cursor).catch(fail);
    const shown = table.tBodies[0].querySelectorAll("tr:not(.empty)").length;
    setStatus(shown + " allowed to " + data.action + " " + data.resource +
      (data.next_cursor ? " so far (more to load)." : "."));
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
    members: showMembers,
    matrix: showMatrix,
    "who-can": async () => document.getElementById("who-can-resource").focus(),
    changes: showChanges,
    decisions: showDecisions,
    shadow: showShadow,
  };

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
    if (!loaded.has(view) || view === "changes" || view === "decisions" || view === "shadow") {
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

  async function startSubject() {
    setStatus("Loading…");
    const data = await apiJson(orgPath("/subjects/" + encodeURIComponent(subject) + "/permissions"));
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
    replaceRows(table, rows.length ? rows : [emptyRow(6, "No rules apply to this subject.")]);
    document.getElementById("permissions-filter").oninput = (event) =>
      filterRows(table, event.target.value);
    setStatus(data.permissions.length + " rules at revision " + data.revision + ".");
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

  showSignedIn(Boolean(token()));
  start();
})();
