// facefinder person page: "Search like this person" (POST /api/people/{id}/search). The person's faces are
// the probe; the server checks the case, purpose and category, audits the search (people.search) and answers
// with the people and the single faces like them. Loaded after app.js, whose api() it uses. Every string
// from the server goes into the page as text (textContent), never as markup.
"use strict";

const LIKE_FIELDS = ["case_id", "category", "purpose"];

function likeElement(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// One result: a link (to a person's page or a photo's) holding a thumbnail and the facts, as result.html's cards.
function likeCard({ href, image, alt, band, rank, score, lines }) {
  const item = likeElement("li");
  const link = likeElement("a", `result band-${band}`);
  link.href = href;
  const img = likeElement("img");
  Object.assign(img, { src: image, alt, width: 72, height: 72, loading: "lazy" });
  const meta = likeElement("div", "meta");
  const head = likeElement("div");
  head.append(likeElement("span", "rank", `#${rank}`), " ", likeElement("span", "band", band));
  meta.append(head, likeElement("div", "score", score.toFixed(3)));
  meta.lastChild.title = "cosine similarity";
  for (const line of lines) meta.append(likeElement("div", "small break", line));
  link.append(img, meta);
  item.append(link);
  return item;
}

function personCard(p) {
  const name = p.label || `Person #${p.person_id}`;
  const faces = `${p.faces} face${p.faces === 1 ? "" : "s"}${p.confirmed ? ", confirmed" : ""}`;
  return likeCard({
    href: `/people/${p.person_id}`,
    image: `/api/people/${p.person_id}/faces/${p.nearest_face.face_id}/thumbnail`,
    alt: `${name}: their face nearest this person`,
    band: p.band, rank: p.rank, score: p.score,
    lines: [name, faces, `nearest face ${p.nearest_face.face_id}: ${p.nearest_face.source}`],
  });
}

function faceCard(f) {
  return likeCard({
    href: `/photos/${f.image_id}`,
    image: `/api/people/faces/${f.face_id}/thumbnail`,
    alt: `face ${f.face_id}`,
    band: f.band, rank: f.rank, score: f.score,
    lines: [`face ${f.face_id}, photo #${f.image_id}`, f.source],
  });
}

function showLike(result) {
  const people = document.getElementById("like-people");
  const faces = document.getElementById("like-faces");
  people.replaceChildren(...result.people.map(personCard));
  faces.replaceChildren(...result.faces.map(faceCard));
  if (!result.people.length) people.replaceChildren(likeElement("li", "muted", "No other person reached the threshold."));
  if (!result.faces.length) faces.replaceChildren(likeElement("li", "muted", "No single face reached the threshold."));
  document.getElementById("like-empty").hidden = Boolean(result.people.length || result.faces.length);
  document.getElementById("like-threshold").textContent = result.threshold == null ? ""
    : `Searched at the threshold ${result.threshold.toFixed(3)}: scores below it are not shown.`;
  document.getElementById("like-results").hidden = false;
}

// An error naming a field goes next to that field (marked invalid and focused); any other under the button.
function likeError(form, error) {
  const field = LIKE_FIELDS.includes(error.field) ? error.field : null;
  const box = document.getElementById(field ? `like-${field}-error` : "like-error");
  box.textContent = error.message;
  if (field) {
    form.elements[field].setAttribute("aria-invalid", "true");
    form.elements[field].focus();
  }
}

function bindPersonSearch() {
  const form = document.getElementById("like-form");
  if (!form) return;
  const button = document.getElementById("like-button");
  const status = document.getElementById("like-status");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const name of [...LIKE_FIELDS, null]) {
      document.getElementById(name ? `like-${name}-error` : "like-error").textContent = "";
      if (name) form.elements[name].removeAttribute("aria-invalid");
    }
    const body = Object.fromEntries(LIKE_FIELDS.map((name) => [name, form.elements[name].value]));
    button.disabled = true; status.textContent = "Searching…";
    try {
      const result = await api("POST", `/api/people/${form.dataset.person}/search`, body);
      showLike(result);
      const found = result.people.length + result.faces.length;
      const count = (n, one, many) => `${n} ${n === 1 ? one : many}`;
      status.textContent = found ? `Found ${count(result.people.length, "person", "people")} and ${count(result.faces.length, "face", "faces")}.`
        : "Nothing reached the threshold.";
    } catch (e) {
      status.textContent = "";
      likeError(form, e);
    } finally { button.disabled = false; }
  });
}

document.addEventListener("DOMContentLoaded", bindPersonSearch);
