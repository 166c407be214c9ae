// facefinder web UI, search page: more photos of the person searched, searched together with the probe face as one
// search for one person (POST /api/searches `same_person`). Each photo added is analysed as the probe is (POST
// /api/probes); a photo with several faces asks which one is the person, a photo with one face gives it. Loaded by
// search.html after app.js, whose bindSearch calls samePerson.bind(ready) once, samePerson.ready(count, probe) each
// time it sets the Search button, samePerson.extend(body) before it sends a search and samePerson.failed(error)
// when the search is refused. The tab keeps the photos added (probe ids, names, faces picked) for Back, as it
// keeps the probe, for the user who added them.
"use strict";

window.samePerson = (() => {
  const KEY = "facefinder-same-person";
  const MAX = 7; // the server holds a user's newest 8 probes, the searched photo included
  const $ = (id) => document.getElementById(id);
  let added = []; // {probe_id, name, faces: [face numbers], face: the one picked, or null}
  let refresh = () => {};

  const picked = () => added.filter((entry) => entry.face !== null);
  const thumbnail = (entry, face) => `/api/probes/${encodeURIComponent(entry.probe_id)}/faces/${face}/thumbnail`;

  function save() {
    try { sessionStorage.setItem(KEY, JSON.stringify({ user: signedInAs(), added })); } catch (e) { /* not kept */ }
  }

  function changed() { save(); render(); refresh(); }

  async function addFiles(files) {
    const error = $("same-person-error"), add = $("same-person-add"), busy = $("same-person-busy");
    error.textContent = "";
    add.disabled = true;
    for (const file of files) {
      if (added.length >= MAX) { error.textContent = `At most ${MAX} more photos: the server holds 8 photos for you, the probe photo included.`; break; }
      busy.textContent = `Looking for faces in ${file.name}…`;
      const data = new FormData(); data.append("photo", file);
      try {
        const found = await api("POST", "/api/probes", data, true);
        if (!found.faces.length) { error.textContent = `No face was found in ${file.name}: choose another photo of the person.`; continue; }
        const faces = found.faces.map((f) => f.face);
        added.push({ probe_id: found.probe_id, name: file.name, faces, face: faces.length === 1 ? faces[0] : null });
        changed();
      } catch (e) { error.textContent = `${file.name}: ${e.message}`; }
    }
    busy.textContent = ""; add.disabled = false;
  }

  function render() {
    const list = $("same-person-list");
    list.replaceChildren(...added.map(item));
    list.hidden = !added.length;
  }

  function item(entry, i) {
    const li = document.createElement("li");
    li.className = "same-person-item";
    const title = document.createElement("p");
    title.className = "small"; title.id = `same-person-photo-${i}`;
    const several = entry.faces.length > 1;
    title.textContent = `Photo ${i + 2}: ${entry.name}` +
      (several ? ` · ${entry.faces.length} faces: pick the one of the person you search` : "");
    const faces = document.createElement("div");
    faces.className = "face-picker";
    if (several) { faces.setAttribute("role", "group"); faces.setAttribute("aria-labelledby", title.id); }
    faces.append(...entry.faces.map((face) => (several ? faceButton(entry, face) : faceImage(entry, face))));
    const remove = document.createElement("button");
    remove.type = "button"; remove.className = "link same-person-remove"; remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove photo ${i + 2}, ${entry.name}`);
    remove.addEventListener("click", () => {
      added = added.filter((other) => other !== entry);
      if (!added.length) $("same-person-restored").hidden = true;
      $("same-person-error").textContent = "";
      changed(); $("same-person-add").focus();
    });
    li.append(title, faces, remove);
    return li;
  }

  function faceImage(entry, face) {
    const img = document.createElement("img");
    img.src = thumbnail(entry, face); img.width = 72; img.height = 72;
    img.alt = `the face of the person in ${entry.name}`;
    return img;
  }

  function faceButton(entry, face) {
    const b = document.createElement("button");
    b.type = "button"; b.className = "face"; b.dataset.pick = face;
    b.setAttribute("aria-pressed", String(entry.face === face));
    b.classList.toggle("chosen", entry.face === face);
    const img = document.createElement("img");
    img.src = thumbnail(entry, face); img.alt = ""; img.width = 72; img.height = 72;
    const label = document.createElement("span");
    label.textContent = `Face ${face + 1}`;
    b.append(img, label);
    b.addEventListener("click", () => {
      entry.face = entry.face === face ? null : face;
      changed();
      $("same-person-list").children[added.indexOf(entry)]?.querySelector(`[data-pick="${face}"]`)?.focus();
    });
    return b;
  }

  // after app.js has set the Search button for the faces picked in the probe (count), if there is one
  function ready(count, probe) {
    const button = $("search-button"), hint = $("search-hint"), status = $("same-person-status");
    const n = picked().length, waiting = added.length - n;
    status.textContent = "";
    if (!added.length) return;
    if (waiting) {
      button.disabled = true;
      hint.textContent = status.textContent = "Pick the face of the person in each photo added, or remove the photo.";
    } else if (count > 1) {
      button.disabled = true;
      hint.textContent = status.textContent = `You picked ${count} faces in the probe photo: with more photos of the ` +
        "person, pick only the face of this person there (several faces are searched one by one), or remove the photos added.";
    } else {
      status.textContent = `One search for one person, from ${n + 1} photos` +
        (!probe ? ": choose the probe photo above too." : count === 1 ? "." : ": pick the person's face in the probe photo too.");
      if (probe && count === 1) button.textContent = "Search as one person";
    }
  }

  function extend(body) {
    const faces = picked();
    if (faces.length) body.same_person = faces.map((entry) => ({ probe_id: entry.probe_id, face: entry.face }));
  }

  function failed(e) {
    const error = $("same-person-error");
    error.textContent = "";
    if (e.field !== "same_person") return false;
    let message = e.message.replace(/^Same_person: (.)/, (_, first) => first.toUpperCase()); // said next to it
    for (const entry of added) message = message.replaceAll(entry.probe_id, entry.name); // the photo, not its id
    error.textContent = message;
    $("same-person-add").focus();
    return true;
  }

  async function restore() {
    let kept = null;
    try { kept = JSON.parse(sessionStorage.getItem(KEY) || "null"); } catch (e) { /* unreadable: none */ }
    if (!kept || kept.user !== signedInAs() || !kept.added?.length) return;
    const alive = [];
    for (const entry of kept.added) {
      try { await api("GET", `/api/probes/${encodeURIComponent(entry.probe_id)}`); alive.push(entry); }
      catch (e) { /* gone from the server: said below */ }
    }
    added = [...alive, ...added.filter((entry) => !alive.some((a) => a.probe_id === entry.probe_id))];
    $("same-person-restored").hidden = !alive.length;
    if (alive.length < kept.added.length) {
      $("same-person-error").textContent = "A photo of the person added before has expired on the server (probes are held for 30 minutes): add it again.";
    }
    changed();
  }

  function bind(readyAgain) {
    refresh = readyAgain;
    const input = $("same-person-file");
    $("same-person-add").addEventListener("click", () => input.click());
    input.addEventListener("change", () => { const files = [...input.files]; input.value = ""; addFiles(files); });
    document.querySelector('form[action="/logout"]')?.addEventListener("submit", () => sessionStorage.removeItem(KEY));
    restore();
  }

  return { bind, ready, extend, failed };
})();
