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
  noteProbe(url, body);
  const response = await fetch(url, init);
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const err = (data && data.error) || { code: "error", message: `HTTP ${response.status}` };
    if (response.status === 401) await signInAgain();
    const e = new Error(explain(err, response.status)); e.field = err.field; e.code = err.code; e.detail = err.message; throw e;
  }
  return data;
}

// ----- errors in words: what happened, what to do, and the code for support ------------------------------
const HINTS = {
  unauthenticated: "Your session ended: taking you to the sign-in page; what you typed is kept.",
  bad_request: "Check what you entered and try again.",
  invalid: "Check what you entered and try again.",
  bad_image: "Choose another photo: a JPEG or PNG that opens on your computer.",
  conflict: "Choose another name, or reload the page to see how things stand now.",
  forbidden: "Your role or grants do not allow this: ask an admin if you need it.",
  csrf_failed: "Reload the page, then send it again.",
  password_change_required: "Choose a new password on your account page first.",
  not_found: "It may have been erased or have run out: reload the page.",
  too_large: "Send something smaller.",
  rate_limited: "Too many tries in a short time: wait a minute, then try again.",
  insufficient_storage: "The server's upload space is full: tell an admin.",
  internal: "Something failed on the server: try again, and tell an admin if it keeps failing.",
};

function explain(err, status) {
  if (status === 401) return HINTS.unauthenticated;
  let text = String(err.message || `the server answered HTTP ${status}`);
  text = text.charAt(0).toUpperCase() + text.slice(1);
  if (!/[.!?]$/.test(text)) text += ".";
  const hint = HINTS[err.code] || (status >= 500 ? HINTS.internal : "Try again; if it keeps failing, tell an admin.");
  return `${text} ${hint} (Error code: ${err.code || status}.)`;
}

function showError(form, message) {
  const box = form.querySelector(".form-error") || document.getElementById(form.dataset.error || "");
  if (box) { box.textContent = message || ""; box.hidden = !message; }
}

function markField(form, name) {
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  const field = name && form.elements[name];
  if (field && field.focus) { field.setAttribute("aria-invalid", "true"); field.focus(); }
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
      } catch (e) { showError(form, e.message); markField(form, e.field); }
      finally { if (button) button.disabled = false; }
    });
  }
  for (const button of document.querySelectorAll("button[data-api]")) {
    button.addEventListener("click", async () => {
      const method = button.dataset.method || "POST";
      const question = button.dataset.confirm || (method === "DELETE" ? "Are you sure?" : "");
      if (question && !window.confirm(question)) return;
      try {
        await api(method, button.dataset.api, button.dataset.body ? JSON.parse(button.dataset.body) : undefined);
        location.reload();
      } catch (e) { window.alert(e.message); }
    });
  }
}

// ----- search: probe photo -> faces (one or several) -> case + purpose -> results ----------------------------
// A video probe has no picture to draw boxes on: its faces (each face track's best, with when it was seen) are
// listed with their thumbnails and times, and the tab keeps only the probe id and the faces picked.
// Keyboard first: the file input is visually hidden but focusable (Enter or Space opens the dialog), the
// faces are toggle buttons numbered like the boxes on the photo. The probe outlives a trip to the results:
// the server holds it for its uploader (GET /api/probes/{id}) and this tab keeps its id, the faces picked
// and a small copy of the photo (sessionStorage, PROBE_KEY), so Back brings it back to pick another face.
// More photos of the searched person, for one fused search, are same_person.js's (hooks: window.samePerson).
const PROBE_KEY = "facefinder-probe";
const isVideo = (file) => /^video\//.test(file.type || "") || /\.(mp4|m4v|mov|mkv|avi|webm)$/i.test(file.name || "");
const clock = (seconds) => { const s = Math.floor(seconds); return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`; };

function keptProbe() {
  try { return JSON.parse(sessionStorage.getItem(PROBE_KEY) || "null"); } catch (e) { return null; }
}

function keepProbe(kept) {
  try { sessionStorage.setItem(PROBE_KEY, JSON.stringify(kept)); return; } catch (e) { /* over the quota */ }
  try { sessionStorage.setItem(PROBE_KEY, JSON.stringify({ ...kept, photo: null })); } catch (e) { /* give up */ }
}

async function smallCopy(url) {
  // a JPEG of at most 960 px: enough to draw the boxes on, small enough for sessionStorage
  const img = new Image();
  img.src = url;
  await img.decode();
  const scale = Math.min(1, 960 / Math.max(img.naturalWidth, img.naturalHeight, 1));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
  canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
  canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
  return canvas.toDataURL("image/jpeg", 0.8);
}

function bindSearch() {
  document.querySelector('form[action="/logout"]')?.addEventListener("submit", () => sessionStorage.removeItem(PROBE_KEY));
  const root = document.getElementById("search-app");
  if (!root) return;
  const input = document.getElementById("probe-file");
  const drop = document.getElementById("drop");
  const form = document.getElementById("search-form");
  const button = document.getElementById("search-button");
  const hint = document.getElementById("search-hint");
  const faceField = document.getElementById("face");
  const restored = document.getElementById("probe-restored");
  const faceHelp = document.getElementById("face-help");
  const photoHelp = faceHelp.textContent;
  let probe = null;
  let generation = 0; // a newer photo wins over an older answer (or a restore) still on its way

  const chosen = () => (faceField.value === "" ? [] : faceField.value.split(",").map(Number));

  const ready = () => {
    const count = chosen().length;
    const ok = probe && count > 0;
    button.disabled = !ok;
    button.textContent = count > 1 ? `Search ${count} faces` : "Search";
    hint.textContent = ok ? "" : (probe ? "Pick a face first." : "Upload a photo or video and pick a face first.");
    window.samePerson?.ready(count, Boolean(probe)); // more photos of the person (same_person.js)
  };

  async function analyze(file) {
    const error = document.getElementById("probe-error");
    error.textContent = ""; restored.hidden = true;
    const mine = ++generation;
    probe = null; faceField.value = ""; ready();
    const video = isVideo(file), cap = Number(root.dataset.maxProbe);
    if (file.size > cap) { error.textContent = `This ${video ? "video" : "photo"} is over the size cap of ${Math.round(cap / 1048576)} MB: choose a smaller one.`; return; }
    if (video) hint.textContent = "Looking for face tracks in the video…";
    drop.classList.add("busy");
    const data = new FormData(); data.append("photo", file);
    let found;
    try { found = await api("POST", "/api/probes", data, true); }
    catch (e) {
      if (mine !== generation) return;
      error.textContent = video ? e.message.replace(HINTS.bad_image, "Choose another video: an MP4, MOV, MKV, AVI or WebM file that plays on your computer.") : e.message;
      ready(); return;
    } finally { drop.classList.remove("busy"); }
    if (mine !== generation) return;
    if (video) { show(found, null, found.faces.length === 1 ? [0] : [], true); keepProbe({ id: found.probe_id, faces: chosen(), photo: null, video: true }); return; }
    const url = URL.createObjectURL(file);
    show(found, url, found.faces.length === 1 ? [0] : []);
    const kept = { id: found.probe_id, faces: chosen(), photo: null };
    keepProbe(kept);
    try { kept.photo = await smallCopy(url); } catch (e) { /* no copy: the faces come back without the photo */ }
    if (mine === generation) keepProbe({ ...kept, faces: chosen() });
  }

  function show(found, url, faces, video) {
    probe = { ...found, video: Boolean(video) };
    const image = document.getElementById("probe-image");
    document.querySelector(".probe-stage").hidden = !url;
    document.getElementById("probe-boxes").replaceChildren();
    image.onload = () => drawBoxes(image);
    if (url) image.src = url; else image.removeAttribute("src");
    document.getElementById("probe-view").hidden = false;
    const count = found.faces.length;
    const unit = (video ? "face track" : "face") + (count === 1 ? "" : "s");
    document.getElementById("face-count").textContent = `(${count} ${unit})`;
    faceHelp.textContent = video ? `${count} ${unit} found in the video, each shown by its best face and when it was seen. ` +
      "Pick the face to search, or several: each is searched for the case and kept as its own search record." : photoHelp;
    const picker = document.getElementById("probe-faces");
    picker.replaceChildren(...found.faces.map(faceButton));
    if (!count) document.getElementById("probe-error").textContent = video ? "No face was found in this video: choose another video, or a photo." : "No face was found in this photo.";
    faceField.value = faces.filter((n) => n < count).join(",");
    highlight(); ready();
  }

  function faceButton(face) {
    const b = document.createElement("button");
    b.type = "button"; b.className = "face"; b.dataset.face = face.face;
    const seen = face.video_time == null ? "" : `at ${clock(face.video_time)}`;
    b.title = `face ${face.face + 1}, ${seen ? `seen ${seen} in the video, ` : ""}quality ${face.quality.toFixed(2)}`;
    const img = document.createElement("img");
    img.src = `/api/probes/${encodeURIComponent(probe.probe_id)}/faces/${face.face}/thumbnail`; img.alt = "";
    img.width = 72; img.height = 72;
    const label = document.createElement("span");
    label.textContent = `Face ${face.face + 1} · ${seen || `q ${face.quality.toFixed(2)}`}`;
    b.append(img, label);
    b.addEventListener("click", () => pick(face.face));
    return b;
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
      const number = document.createElement("span");
      number.className = "box-number"; number.textContent = String(face.face + 1);
      box.append(number);
      box.addEventListener("click", () => pick(face.face));
      layer.append(box);
    }
    highlight();
  }

  function pick(n) {
    const faces = new Set(chosen());
    if (faces.has(n)) faces.delete(n); else faces.add(n);
    faceField.value = [...faces].sort((a, b) => a - b).join(",");
    highlight(); ready();
    const kept = keptProbe();
    if (kept && probe && kept.id === probe.probe_id) keepProbe({ ...kept, faces: chosen() });
  }

  function highlight() {
    const picked = new Set(chosen().map(String));
    for (const el of root.querySelectorAll("[data-face]")) {
      el.classList.toggle("chosen", picked.has(el.dataset.face));
      if (el.tagName === "BUTTON") el.setAttribute("aria-pressed", String(picked.has(el.dataset.face)));
    }
  }

  async function restore() {
    const kept = keptProbe();
    if (!kept || !kept.id) return;
    const mine = generation;
    let found;
    try { found = await api("GET", `/api/probes/${encodeURIComponent(kept.id)}`); }
    catch (e) {
      sessionStorage.removeItem(PROBE_KEY);
      if (mine === generation && e.code === "not_found") {
        restored.textContent = `Your last probe ${kept.video ? "video" : "photo"} has expired on the server (probes are held for 30 minutes): choose it again.`;
        restored.hidden = false;
      }
      return;
    }
    if (mine !== generation) return; // a photo was chosen meanwhile
    const video = Boolean(kept.video) || found.faces.some((f) => f.video_time != null);
    show(found, video ? null : kept.photo, kept.faces || [], video);
    if (video) restored.textContent = "The face tracks of your last probe video are back (the server holds them for 30 minutes): pick another face, or choose a new photo or video.";
    restored.hidden = false;
  }

  input.addEventListener("change", () => { if (input.files[0]) analyze(input.files[0]); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) analyze(e.dataTransfer.files[0]); });
  window.addEventListener("resize", () => { const img = document.getElementById("probe-image"); if (probe && img.complete && img.src) drawBoxes(img); });
  window.addEventListener("pageshow", (e) => { if (e.persisted) ready(); }); // back from the results, page kept

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("search-error");
    error.textContent = "";
    const boxes = form.querySelectorAll('input[name="collections"]');
    for (const box of boxes) box.removeAttribute("aria-invalid");
    const body = formBody(form, new Set(["face"]));
    const faces = chosen();
    if (faces.length > 1) body.faces = faces; else body.face = faces[0];
    body.probe_id = probe.probe_id;
    window.samePerson?.extend(body);
    // always a list (formBody makes a lone checkbox a boolean): [] when none is ticked, which the server refuses by name
    body.collections = Array.from(boxes).filter((box) => box.checked).map((box) => box.value);
    button.disabled = true; hint.textContent = "Searching…";
    try {
      const result = await api("POST", "/api/searches", body);
      window.location = `/searches/${result.id}`;
    } catch (e) {
      if (!window.samePerson?.failed(e)) error.textContent = e.message;
      ready();
      if (e.field === "collections") {
        for (const box of boxes) box.setAttribute("aria-invalid", "true");
        boxes[0]?.focus();
      } else if (typeof markField === "function") { markField(form, e.field); }
    }
  });
  window.samePerson?.bind(ready);
  ready();
  restore();
}

// ----- drafts: what was typed outlives a session that ends -----------------------------------------------
// When the API answers 401 (the session ended), the page's forms and its probe photo are kept in this tab's
// sessionStorage; the sign-in page says so, and the same page, signed in again as the same user, gets them
// back once. Signing out drops them.
const DRAFT_KEY = "facefinder-draft";
let draftProbe = null; // the last probe photo sent to /api/probes

function noteProbe(url, body) {
  if (url === "/api/probes" && body instanceof FormData && body.get("photo") instanceof Blob) draftProbe = body.get("photo");
}

function signedInAs() { return document.querySelector(".who")?.dataset.user || ""; }

function keepable(el) {
  return el.name && el.name !== "csrf_token" && !["hidden", "password", "file", "submit", "button", "reset"].includes(el.type);
}

function fileData(file) {
  return new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => resolve({ name: file.name || "probe", type: file.type, data: reader.result });
    reader.onerror = () => resolve(null);
    reader.readAsDataURL(file);
  });
}

async function keepDraft() {
  const forms = {};
  for (const form of document.querySelectorAll("main form[id]")) {
    forms[form.id] = Array.from(form.elements).filter(keepable).map((el) => [el.name, el.value, el.checked]);
  }
  const draft = { user: signedInAs(), path: location.pathname + location.search, forms, face: document.getElementById("face")?.value || "" };
  const pageKeepsProbe = typeof PROBE_KEY !== "undefined" && sessionStorage.getItem(PROBE_KEY); // the search page's own
  if (draftProbe && !pageKeepsProbe && document.getElementById("probe-file")) draft.probe = await fileData(draftProbe);
  try { sessionStorage.setItem(DRAFT_KEY, JSON.stringify(draft)); return; } catch (e) { /* over the quota: keep the rest */ }
  delete draft.probe; draft.probeLost = true;
  try { sessionStorage.setItem(DRAFT_KEY, JSON.stringify(draft)); } catch (e) { /* nothing more to do */ }
}

async function signInAgain() {
  await keepDraft();
  window.location = `/login?next=${encodeURIComponent(location.pathname + location.search)}&expired=1`;
}

function fillForm(form, entries) {
  for (const el of Array.from(form.elements).filter(keepable)) {
    const box = el.type === "checkbox" || el.type === "radio";
    const entry = entries.find(([name, value]) => name === el.name && (!box || value === el.value));
    if (!entry) continue;
    if (box) el.checked = entry[2]; else el.value = entry[1];
    el.dispatchEvent(new Event("input", { bubbles: true }));
    el.dispatchEvent(new Event("change", { bubbles: true }));
  }
}

function restoreProbe(probe, face) {
  const input = document.getElementById("probe-file");
  if (!input || !probe) return;
  const bytes = Uint8Array.from(atob(probe.data.split(",")[1]), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], probe.name, { type: probe.type }));
  input.files = transfer.files;
  input.dispatchEvent(new Event("change", { bubbles: true }));
  if (face === "") return;
  const pick = () => {
    const buttons = face.split(",").map((n) => document.querySelector(`#probe-faces [data-face="${CSS.escape(n)}"]`));
    if (!buttons.every(Boolean)) return false;
    for (const b of buttons) if (!b.classList.contains("chosen")) b.click();
    return true;
  };
  const watch = new MutationObserver(() => { if (pick()) watch.disconnect(); });
  watch.observe(document.body, { childList: true, subtree: true });
  setTimeout(() => watch.disconnect(), 60000);
}

function restoreDraft() {
  let draft = null;
  try { draft = JSON.parse(sessionStorage.getItem(DRAFT_KEY) || "null"); } catch (e) { /* unreadable: none */ }
  const kept = document.getElementById("draft-kept");
  if (kept) { kept.hidden = !draft; return; }
  document.querySelector('form[action="/logout"]')?.addEventListener("submit", () => sessionStorage.removeItem(DRAFT_KEY));
  if (!draft || !signedInAs()) return;
  if (draft.user !== signedInAs()) { sessionStorage.removeItem(DRAFT_KEY); return; } // never someone else's
  if (draft.path !== location.pathname + location.search) return;
  sessionStorage.removeItem(DRAFT_KEY);
  for (const [id, entries] of Object.entries(draft.forms || {})) {
    const form = document.getElementById(id);
    if (form) fillForm(form, entries);
  }
  restoreProbe(draft.probe, draft.face);
  const note = Object.assign(document.createElement("p"), { className: "alert info", id: "draft-restored" });
  note.setAttribute("role", "status");
  note.textContent = "What you had typed before your session ended is back: check it, then carry on." +
    (draft.probeLost ? " The photo or video was too large to keep: choose it again." : "");
  document.querySelector("main")?.prepend(note);
}

// ----- wide tables scroll inside their own box on narrow screens: make that box reachable by keyboard ------
function markScrollables() {
  for (const table of document.querySelectorAll("table.data")) {
    if (table.scrollWidth > table.clientWidth + 1) table.setAttribute("tabindex", "0");
    else table.removeAttribute("tabindex");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  markScrollables();
  window.addEventListener("resize", markScrollables);
  setTimeout(restoreDraft, 0); // once every page script is bound, so that what is filled in updates it
  bindApiForms();
  bindSearch();
});
