// facefinder people pages: the review queue's "assign to" forms and drawing a missed face on a photo.
// Loaded after app.js, whose api() and showError() it uses. Each action is one API call, which the server
// audits; nothing is decided in the browser.
"use strict";

// ----- review queue: put a face in the chosen person, or a new one -------------------------------------
function bindAssignForms() {
  for (const form of document.querySelectorAll("form.assign-form")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const chosen = form.elements.person_id.value;
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        await api("POST", `/api/people/faces/${form.dataset.face}/assign`, { person_id: chosen ? Number(chosen) : null });
        location.reload();
      } catch (e) {
        const box = document.getElementById("review-error");
        box.textContent = e.message; box.hidden = false; button.disabled = false;
      }
    });
  }
}

// ----- a photo: drag a box (or type it), then add the face ---------------------------------------------
function bindDrawing() {
  const area = document.getElementById("draw-area");
  const form = document.getElementById("draw-form");
  if (!area || !form) return;
  const photo = document.getElementById("draw-photo");
  const shown = document.getElementById("new-box");
  const width = Number(area.dataset.width), height = Number(area.dataset.height);
  const fields = ["x1", "y1", "x2", "y2"].map(name => form.elements[name]);
  let start = null;
  const place = (node, [x1, y1, x2, y2]) => Object.assign(node.style, {  // CSSOM: the CSP allows no inline style
    left: `${100 * x1 / width}%`, top: `${100 * y1 / height}%`,
    width: `${100 * (x2 - x1) / width}%`, height: `${100 * (y2 - y1) / height}%`,
  });
  for (const found of area.querySelectorAll(".face-box[data-box]")) place(found, found.dataset.box.split(",").map(Number));

  const toPhoto = (event) => {  // pointer position -> the photo's own pixels
    const r = photo.getBoundingClientRect();
    const x = Math.min(Math.max(event.clientX - r.left, 0), r.width);
    const y = Math.min(Math.max(event.clientY - r.top, 0), r.height);
    return [Math.round(x * width / r.width), Math.round(y * height / r.height)];
  };
  const show = () => {
    const [x1, y1, x2, y2] = fields.map(f => Number(f.value));
    if (!fields.every(f => f.value !== "") || x2 <= x1 || y2 <= y1) { shown.hidden = true; return; }
    place(shown, [x1, y1, x2, y2]);
    shown.hidden = false;
  };
  const setBox = (a, b) => {
    const box = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
    fields.forEach((f, i) => { f.value = box[i]; });
    show();
  };
  area.addEventListener("pointerdown", (event) => {
    if (event.target.closest("a")) return;  // a found face's box links to its person
    event.preventDefault();
    start = toPhoto(event);
    area.setPointerCapture(event.pointerId);
  });
  area.addEventListener("pointermove", (event) => { if (start) setBox(start, toPhoto(event)); });
  area.addEventListener("pointerup", (event) => { if (start) { setBox(start, toPhoto(event)); start = null; } });
  fields.forEach(f => f.addEventListener("input", show));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(form, "");
    const button = form.querySelector("button[type=submit]");
    const person = form.elements.person_id.value;
    button.disabled = true;
    try {
      const result = await api("POST", `/api/people/images/${form.dataset.image}/faces`, {
        box: fields.map(f => Number(f.value)), person_id: person ? Number(person) : null,
      });
      const how = result.aligned_by === "landmarks" ? "aligned on the face's landmarks"
        : "no landmarks found in the box: aligned by the box itself, a rougher embedding";
      const where = result.person ? ` and put in person #${result.person.person_id}` : "";
      const box = document.getElementById("draw-result");
      box.textContent = `Added face ${result.face_id} (${how})${where}. Reloading…`; box.hidden = false;
      setTimeout(() => location.reload(), 1200);
    } catch (e) { showError(form, e.message); button.disabled = false; }
  });
}

document.addEventListener("DOMContentLoaded", () => { bindAssignForms(); bindDrawing(); });
