// facefinder web UI: the ingest jobs on the collections page, with live progress (loaded after app.js, whose
// api() it calls; app.js starts pollJobs after an ingest form is sent).
"use strict";

let polling = false;
async function pollJobs(force) {
  const table = document.getElementById("jobs");
  if (!table || (polling && !force)) return;
  polling = true;
  try {
    const jobs = await api("GET", table.dataset.poll);
    const body = table.querySelector("tbody");
    body.replaceChildren(...jobs.map(jobRow));
    if (!jobs.length) body.innerHTML = '<tr class="empty"><td colspan="11" class="muted">No ingest jobs yet.</td></tr>';
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
  // the source opens the job's page (what it stored, its duplicates, photos without a face, failed files)
  const source = cell("", "mono small");
  source.append(Object.assign(document.createElement("a"), { href: `/ingests/${encodeURIComponent(job.id)}`, textContent: job.source }));
  const done = job.state === "done";
  tr.append(cell(job.created_at.slice(0, 19).replace("T", " "), "nowrap"), cell(job.owner), cell(job.collection), source, state, progress,
            cell(done ? job.ingested : "–", "num"), cell(job.faces, "num"), cell(done ? job.duplicates : "–", "num"),
            cell(done ? job.photos_without_faces : "–", "num"), cell(job.failures, "num"));
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

document.addEventListener("DOMContentLoaded", () => {
  const jobs = document.getElementById("jobs");
  if (jobs && jobs.querySelector(".state-queued, .state-running")) pollJobs(true);
});
