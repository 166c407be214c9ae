// facefinder admin pages (a collection, privacy) and the ingest forms: plain JavaScript over the JSON API.
// Loaded after app.js, whose api(), explain() and CSRF it uses. Every action here is one API call, which
// the server audits; nothing is decided in the browser.
"use strict";

function el(tag, props, ...children) {
  const { dataset, ...rest } = props || {};
  const node = Object.assign(document.createElement(tag), rest);
  Object.assign(node.dataset, dataset || {});
  node.append(...children.filter(c => c !== null && c !== undefined));
  return node;
}

function say(box, text, kind) {
  if (!box) return;
  box.textContent = text || "";
  box.className = text ? `alert ${kind || "ok"}` : "";
  box.hidden = !text;
}

function photoOf(form) {
  const file = form.elements.photo && form.elements.photo.files[0];
  if (!file) throw new Error("Choose a photo of the person first.");
  return file;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const v of [].concat(value)) if (v !== "" && v !== null && v !== undefined) q.append(key, v);
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

function erasedText(result) {
  return `Erased ${result.faces} face${result.faces === 1 ? "" : "s"} and ${result.images} photo${result.images === 1 ? "" : "s"}.`;
}

// ----- ingest forms: the server folder offered follows the collection chosen ------------------------------
function bindPathForm() {
  const select = document.getElementById("path-collection");
  if (!select) return;
  const path = select.form.elements.path;
  const roots = () => Array.from(select.options).map(o => o.dataset.root);
  select.addEventListener("change", () => {
    if (!path.value || roots().includes(path.value)) path.value = select.selectedOptions[0].dataset.root;
  });
}

// ----- a collection: erase it behind a typed confirmation ---------------------------------------------------
function bindEraseCollection() {
  const form = document.getElementById("erase-collection-form");
  if (!form) return;
  const name = form.dataset.collection;
  const button = form.querySelector("button[type=submit]");
  form.elements.confirm.addEventListener("input", () => { button.disabled = form.elements.confirm.value !== name; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (form.elements.confirm.value !== name) return;
    button.disabled = true;
    try {
      await api("DELETE", `/api/collections/${encodeURIComponent(name)}`);
      window.location = "/collections";
    } catch (e) { showError(form, e.message); button.disabled = false; }
  });
}

// ----- matches of a person: thumbnails to review, checkboxes to choose ------------------------------------
function matchList(matches, name) {
  if (!matches.length) return el("p", { className: "muted" }, "No face held matches at the privacy threshold.");
  const list = el("ul", { className: "matches" });
  for (const m of matches) {
    const box = el("input", { type: "checkbox", name, value: String(m.face_id), checked: true });
    const img = el("img", { src: `/api/faces/${m.face_id}/thumbnail`, alt: `face ${m.face_id}`, width: 72, height: 72, loading: "lazy" });
    const facts = el("span", { className: "small" },
      el("strong", {}, `face ${m.face_id}`), ` · score ${m.score.toFixed(3)} · ${m.collection}`, el("br"),
      el("code", {}, m.source));
    list.append(el("li", {}, el("label", { className: "match" }, box, img, facts)));
  }
  return list;
}

function chosen(container, name) {
  return Array.from(container.querySelectorAll(`input[name="${name}"]:checked`)).map(b => Number(b.value));
}

// ----- privacy: erasure by person -------------------------------------------------------------------------
function bindPersonErasure() {
  const form = document.getElementById("person-form");
  if (!form) return;
  const out = document.getElementById("person-matches");
  const result = document.getElementById("person-result");
  let found = null;  // the photo and face the matches were found with: erasure sends the same
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(form, ""); say(result, ""); out.replaceChildren();
    try {
      const photo = photoOf(form), face = form.elements.face.value;
      const data = await api("POST", `/api/privacy/persons/find${query({ face })}`, photo, true);
      found = { photo, face };
      out.append(el("p", {}, `${data.matches.length} face${data.matches.length === 1 ? "" : "s"} held match (threshold ${data.threshold.toFixed(3)}). Untick any that are not this person, then erase.`),
                 matchList(data.matches, "person-face"));
      if (data.matches.length) out.append(el("button", { type: "button", className: "danger", id: "person-erase", textContent: "Erase the chosen faces" }));
    } catch (e) { showError(form, e.message); }
  });
  out.addEventListener("click", async (event) => {
    if (event.target.id !== "person-erase" || !found) return;
    const ids = chosen(out, "person-face");
    if (!ids.length) { say(result, "Tick at least one face to erase.", "warn"); return; }
    if (!window.confirm(`Erase ${ids.length} face${ids.length === 1 ? "" : "s"}? This cannot be undone.`)) return;
    try {
      const erased = await api("POST", `/api/privacy/persons/erase${query({ face_id: ids, face: found.face })}`, found.photo, true);
      out.replaceChildren(); found = null;
      say(result, erasedText(erased));
    } catch (e) { say(result, e.message, "error"); }
  });
}

// ----- privacy: the opt-out list ----------------------------------------------------------------------------
function bindOptOuts() {
  const form = document.getElementById("optout-form");
  if (form) form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(form, "");
    try {
      const params = { reference: form.elements.reference.value, face: form.elements.face.value };
      const added = await api("POST", `/api/privacy/optouts${query(params)}`, photoOf(form), true);
      window.location = `/privacy?added=${added.id}#optouts`;
    } catch (e) { showError(form, e.message); }
  });
  const table = document.getElementById("optout-table");
  if (!table) return;
  table.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-optout]");
    if (!button) return;
    const id = button.dataset.optout, row = document.getElementById(`optout-review-${id}`);
    const box = row.querySelector(".review"), result = row.querySelector("[role=status]");
    row.hidden = false; say(result, "");
    try {
      if (button.dataset.do === "review") await reviewOptOut(id, box);
      else if (button.dataset.do === "erase") await eraseOptOut(id, box, result);
      else if (button.dataset.do === "remove") await removeOptOut(id, row, result);
    } catch (e) { say(result, e.message, "error"); }
  });
}

async function reviewOptOut(id, box) {
  const matches = await api("GET", `/api/privacy/optouts/${id}/matches`);
  box.replaceChildren(matchList(matches, `optout-${id}`));
  if (matches.length) box.append(el("button", { type: "button", className: "danger", textContent: "Erase the chosen faces", dataset: { optout: id, do: "erase" } }));
}

async function eraseOptOut(id, box, result) {
  const ids = chosen(box, `optout-${id}`);
  if (!ids.length) { say(result, "Tick at least one face to erase.", "warn"); return; }
  if (!window.confirm(`Erase ${ids.length} face${ids.length === 1 ? "" : "s"}? This cannot be undone.`)) return;
  const erased = await api("POST", `/api/privacy/optouts/${id}/erase`, { face_ids: ids });
  box.replaceChildren();
  say(result, erasedText(erased));
}

async function removeOptOut(id, row, result) {
  const note = row.querySelector("input[name=note]").value;
  if (!window.confirm("Take this person off the opt-out list? Their faces will be found by search again.")) return;
  await api("DELETE", `/api/privacy/optouts/${id}${query({ note })}`);
  window.location = "/privacy#optouts";
}

// ----- privacy: consent records -----------------------------------------------------------------------------
function bindConsents() {
  const form = document.getElementById("consent-form");
  if (form) form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(form, "");
    const body = formBody(form, new Set());
    if (!body.collection) delete body.collection;
    try { await api("POST", "/api/privacy/consents", body); window.location = "/privacy#consents"; }
    catch (e) { showError(form, e.message); markField(form, e.field); }
  });
  for (const withdraw of document.querySelectorAll("form.withdraw-form")) {
    withdraw.addEventListener("submit", async (event) => {
      event.preventDefault();
      showError(withdraw, "");
      const photos = Number(withdraw.dataset.images);
      if (!window.confirm(`Withdraw consent ${withdraw.dataset.consent}? ${photos} photo${photos === 1 ? "" : "s"} held under it will be erased.`)) return;
      try {
        const erased = await api("POST", `/api/privacy/consents/${encodeURIComponent(withdraw.dataset.consent)}/withdraw`, { note: withdraw.elements.note.value || null });
        window.location = `/privacy?withdrawn=${erased.images}#consents`;
      } catch (e) { showError(withdraw, e.message); }
    });
  }
}

// ----- privacy: the retention purge, a dry run first --------------------------------------------------------
function purgeReport(report) {
  const rows = report.collections.map(c => el("tr", {},
    el("td", {}, c.collection), el("td", {}, c.retention_days ? `${c.retention_days} days` : "not set"),
    el("td", { className: "num" }, String(c.images)), el("td", { className: "num" }, String(c.faces))));
  const head = el("tr", {}, ...["Collection", "Kept", "Photos", "Faces"].map(t => el("th", {}, t)));
  const verb = report.dry_run ? "would erase" : "erased";
  return [el("p", {}, `${report.dry_run ? "Dry run: the purge" : "The purge"} ${verb} ${report.images} photo${report.images === 1 ? "" : "s"} and ${report.faces} face${report.faces === 1 ? "" : "s"}.`),
          el("table", { className: "data" }, el("thead", {}, head), el("tbody", {}, ...rows))];
}

function bindPurge() {
  const dry = document.getElementById("purge-dry-run"), real = document.getElementById("purge-now");
  if (!dry) return;
  const out = document.getElementById("purge-report");
  const run = async (dryRun) => {
    try {
      const report = await api("POST", "/api/privacy/purge", { dry_run: dryRun });
      out.replaceChildren(...purgeReport(report));
      real.disabled = !dryRun || !report.images;
    } catch (e) { out.replaceChildren(el("p", { className: "alert error" }, e.message)); }
  };
  dry.addEventListener("click", () => run(true));
  real.addEventListener("click", () => {
    if (window.confirm("Erase every photo past its collection's retention period now? This cannot be undone.")) run(false);
  });
}

// ----- privacy: the subject access report, downloaded --------------------------------------------------------
function bindAccess() {
  const form = document.getElementById("access-form");
  if (!form) return;
  const link = document.getElementById("access-download");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(form, ""); link.hidden = true;
    try {
      const photo = photoOf(form), format = form.elements.format.value;
      const response = await fetch(`/api/privacy/access${query({ face: form.elements.face.value, format })}`, {
        method: "POST", credentials: "same-origin", body: photo,
        headers: { "X-CSRF-Token": CSRF, "Content-Type": photo.type || "application/octet-stream" },
      });
      if (!response.ok) {
        const data = await response.json().catch(() => null);
        throw new Error(explain((data && data.error) || {}, response.status));
      }
      const blob = format === "html" ? await response.blob() : new Blob([JSON.stringify(await response.json(), null, 2)], { type: "application/json" });
      link.href = URL.createObjectURL(blob);
      link.download = `subject-access.${format}`;
      link.hidden = false;
      link.click();
    } catch (e) { showError(form, e.message); }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  bindPathForm();
  bindEraseCollection();
  bindPersonErasure();
  bindOptOuts();
  bindConsents();
  bindPurge();
  bindAccess();
});
