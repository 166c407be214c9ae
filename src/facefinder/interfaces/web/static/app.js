// facefinder web UI: a little plain JavaScript over the JSON API. No framework, no build.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";

async function api(method, url, body, multipart) {
  const headers = { "X-CSRF-Token": CSRF, "Accept": "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    if (multipart) init.body = body;
    else { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  }
  const response = await fetch(url, init);
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const err = (data && data.error) || { code: "error", message: `HTTP ${response.status}` };
    if (response.status === 401) { window.location = "/login?next=" + encodeURIComponent(location.pathname); }
    const e = new Error(err.message); e.field = err.field; e.code = err.code; throw e;
  }
  return data;
}

function showError(form, message) {
  const box = form.querySelector(".form-error") || document.getElementById(form.dataset.error || "");
  if (box) { box.textContent = message || ""; box.hidden = !message; }
}

function formBody(form, skip) {
  const body = {};
  const multi = new Set();
  for (const el of form.querySelectorAll("input[type=checkbox][name]")) {
    if (form.querySelectorAll(`input[type=checkbox][name="${el.name}"]`).length > 1) multi.add(el.name);
  }
  for (const el of form.elements) {
    if (!el.name || skip.has(el.name) || el.disabled) continue;
    if (el.type === "checkbox") {
      if (multi.has(el.name)) { body[el.name] = body[el.name] || []; if (el.checked) body[el.name].push(el.value); }
      else body[el.name] = el.checked;
    } else if (el.type === "number") {
      if (el.value !== "") body[el.name] = Number(el.value);
    } else if (el.dataset.lines !== undefined) {
      body[el.name] = el.value.split("\n").map(s => s.trim()).filter(Boolean);
    } else if (el.type !== "submit" && el.type !== "button" && el.type !== "file") {
      body[el.name] = el.value;
    }
  }
  return body;
}

function bindApiForms() {
  for (const form of document.querySelectorAll("form[data-api]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      showError(form, "");
      const used = new Set();
      const url = form.dataset.api.replace(/\{(\w+)\}/g, (_, name) => {
        used.add(name);
        return encodeURIComponent(form.elements[name].value);
      });
      const button = form.querySelector("button[type=submit]");
      if (button) button.disabled = true;
      try {
        const multipart = form.dataset.multipart !== undefined;
        const body = multipart ? new FormData(form) : formBody(form, used);
        const result = await api(form.dataset.method || "POST", url, body, multipart);
        if (form.dataset.after === "jobs") { form.reset(); pollJobs(true); }
        else if (form.dataset.show === "token") {
          const box = document.getElementById("new-token");
          box.querySelector("code").textContent = result.token; box.hidden = false; form.reset();
        } else { location.reload(); }
      } catch (e) { showError(form, e.message); }
      finally { if (button) button.disabled = false; }
    });
  }
  for (const button of document.querySelectorAll("button[data-api]")) {
    button.addEventListener("click", async () => {
      const method = button.dataset.method || "POST";
      if (method === "DELETE" && !window.confirm(button.title || "Are you sure?")) return;
      try {
        await api(method, button.dataset.api, button.dataset.body ? JSON.parse(button.dataset.body) : undefined);
        location.reload();
      } catch (e) { window.alert(e.message); }
    });
  }
}

// ----- ingest jobs: live progress --------------------------------------------------------------------
let polling = false;
async function pollJobs(force) {
  const table = document.getElementById("jobs");
  if (!table || (polling && !force)) return;
  polling = true;
  try {
    const jobs = await api("GET", table.dataset.poll);
    const body = table.querySelector("tbody");
    body.replaceChildren(...jobs.map(jobRow));
    if (!jobs.length) body.innerHTML = '<tr class="empty"><td colspan="8" class="muted">No ingest jobs since the server started.</td></tr>';
    if (jobs.some(j => j.state === "queued" || j.state === "running")) { setTimeout(() => pollJobs(true), 800); return; }
    if (force && jobs.length) refreshCounts();
  } catch (e) { /* keep the last state shown */ }
  polling = false;
}

function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }

function jobRow(job) {
  const tr = document.createElement("tr");
  tr.dataset.job = job.id;
  const state = document.createElement("td");
  const badge = document.createElement("span");
  badge.className = `state state-${job.state}`; badge.textContent = job.state; state.append(badge);
  if (job.error) { state.append(" "); state.append(Object.assign(document.createElement("span"), { className: "small", textContent: job.error })); }
  const progress = document.createElement("td");
  const bar = document.createElement("progress");
  bar.max = Math.max(job.total, 1); bar.value = job.done;
  progress.append(bar, ` ${job.done} / ${job.total}`);
  tr.append(cell(job.created_at.slice(0, 19).replace("T", " "), "nowrap"), cell(job.owner), cell(job.collection), cell(job.source, "mono small"), state, progress,
            cell(job.faces, "num"), cell(job.failures, "num"));
  return tr;
}

async function refreshCounts() {
  const table = document.getElementById("collections");
  if (!table) return;
  try {
    const rows = await api("GET", "/api/collections");
    for (const tr of table.querySelectorAll("tbody tr")) {
      const name = tr.querySelector("strong")?.textContent;
      const c = rows.find(r => r.name === name);
      if (c) { const tds = tr.querySelectorAll("td"); tds[2].textContent = c.images; tds[3].textContent = c.faces; tds[4].textContent = c.failures; tds[5].textContent = c.model_id || "–"; }
    }
  } catch (e) { /* ignore */ }
}

// ----- search: probe photo -> faces -> pick one -> case + purpose -> results ----------------------------
function bindSearch() {
  const root = document.getElementById("search-app");
  if (!root) return;
  const input = document.getElementById("probe-file");
  const drop = document.getElementById("drop");
  const form = document.getElementById("search-form");
  const button = document.getElementById("search-button");
  const hint = document.getElementById("search-hint");
  let probe = null;

  const ready = () => {
    const ok = probe && document.getElementById("face").value !== "";
    button.disabled = !ok;
    hint.textContent = ok ? "" : (probe ? "Pick a face first." : "Upload a photo and pick a face first.");
  };

  async function analyze(file) {
    const error = document.getElementById("probe-error");
    error.textContent = ""; probe = null; document.getElementById("face").value = ""; ready();
    if (file.size > Number(root.dataset.maxProbe)) { error.textContent = "This photo is over the size cap."; return; }
    drop.classList.add("busy");
    const data = new FormData(); data.append("photo", file);
    try { probe = await api("POST", "/api/probes", data, true); }
    catch (e) { error.textContent = e.message; return; }
    finally { drop.classList.remove("busy"); }
    const image = document.getElementById("probe-image");
    image.src = URL.createObjectURL(file);
    document.getElementById("probe-view").hidden = false;
    document.getElementById("face-count").textContent = `(${probe.faces.length})`;
    const picker = document.getElementById("probe-faces");
    picker.replaceChildren();
    if (!probe.faces.length) { error.textContent = "No face was found in this photo."; }
    for (const face of probe.faces) {
      const b = document.createElement("button");
      b.type = "button"; b.className = "face"; b.dataset.face = face.face;
      b.title = `face ${face.face}, quality ${face.quality.toFixed(2)}`;
      const img = document.createElement("img");
      img.src = `/api/probes/${encodeURIComponent(probe.probe_id)}/faces/${face.face}/thumbnail`; img.alt = `face ${face.face}`;
      img.width = 72; img.height = 72;
      const label = document.createElement("span"); label.textContent = `face ${face.face} · q ${face.quality.toFixed(2)}`;
      b.append(img, label);
      b.addEventListener("click", () => pick(face.face));
      picker.append(b);
    }
    image.onload = () => drawBoxes(image);
    if (probe.faces.length === 1) pick(0);
  }

  function drawBoxes(image) {
    const layer = document.getElementById("probe-boxes");
    layer.replaceChildren();
    const sx = image.clientWidth / probe.width, sy = image.clientHeight / probe.height;
    for (const face of probe.faces) {
      const [x1, y1, x2, y2] = face.box;
      const box = document.createElement("div");
      box.className = "box"; box.dataset.face = face.face;
      Object.assign(box.style, { left: `${x1 * sx}px`, top: `${y1 * sy}px`, width: `${(x2 - x1) * sx}px`, height: `${(y2 - y1) * sy}px` });
      box.addEventListener("click", () => pick(face.face));
      layer.append(box);
    }
    highlight();
  }

  function pick(n) { document.getElementById("face").value = String(n); highlight(); ready(); }

  function highlight() {
    const chosen = document.getElementById("face").value;
    for (const el of document.querySelectorAll("[data-face]")) el.classList.toggle("chosen", el.dataset.face === chosen);
  }

  input.addEventListener("change", () => { if (input.files[0]) analyze(input.files[0]); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) analyze(e.dataTransfer.files[0]); });
  window.addEventListener("resize", () => { const img = document.getElementById("probe-image"); if (probe && img.complete) drawBoxes(img); });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("search-error");
    error.textContent = "";
    const body = formBody(form, new Set(["face"]));
    body.face = Number(document.getElementById("face").value);
    body.probe_id = probe.probe_id;
    if (!body.collections || !body.collections.length) delete body.collections;
    button.disabled = true; hint.textContent = "Searching…";
    try {
      const result = await api("POST", "/api/searches", body);
      window.location = `/searches/${result.id}`;
    } catch (e) { error.textContent = e.message; ready(); }
  });
  ready();
}

document.addEventListener("DOMContentLoaded", () => {
  bindApiForms();
  bindSearch();
  const jobs = document.getElementById("jobs");
  if (jobs && jobs.querySelector(".state-queued, .state-running")) pollJobs(true);
});
