/* mmrag web page: search, ask, look at the evidence. Vanilla JS, no build step.
 * Everything from the server is put into the page with textContent (never innerHTML).
 * Test hooks: data-testid="hit" | "region" (data-bbox="x0,y0,x1,y1", 0-1) | "answer" | "citation". */
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { mode: "search", ready: false, image: null, es: null };
const KEY_COOKIE = "mmrag_key";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function basename(path) {
  const s = String(path || "");
  return s.split(/[\\/]/).pop() || s || "(unnamed)";
}

function pageOf(x) {
  return Number.isInteger(x && x.page) && x.page > 0 ? x.page : null;
}

function message(text, isError) {
  const m = $("#message");
  m.textContent = text || "";
  m.classList.toggle("error", !!isError);
}

/* ---- API ----------------------------------------------------------------------------------- */
async function api(path, options) {
  const res = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (res.status === 401) showKeyField();
  if (!res.ok) {
    const err = new Error((data && (data.error || data.detail)) || res.status + " " + res.statusText);
    err.status = res.status;
    throw err;
  }
  return data;
}

function showKeyField() {
  $("#key-row").hidden = false;
}

function setKey(value) {
  const v = encodeURIComponent(value || "");
  document.cookie = KEY_COOKIE + "=" + v + "; path=/; SameSite=Strict" + (v ? "" : "; max-age=0");
}

/* ---- pictures with region boxes -------------------------------------------------------------- */
/* The item's regions on ``page``; ``words`` keeps word boxes (the large view) or drops them (thumbnails,
 * evidence cards: the lines say enough). A picture-sized "image" region is left out: it frames nothing. */
function regionsFor(item, page, words) {
  const regions = Array.isArray(item && item.regions) ? item.regions : [];
  return regions.filter((r) => {
    if (!r || !Array.isArray(r.bbox) || r.bbox.length !== 4) return false;
    if (!(r.page === null || r.page === undefined || page === null || r.page === page)) return false;
    if (r.kind === "ocr_word" && !words) return false;
    const [x0, y0, x1, y1] = r.bbox.map(Number);
    return !(r.kind === "image" && (x1 - x0) * (y1 - y0) >= 0.9);
  });
}

function box(region) {
  const [x0, y0, x1, y1] = region.bbox.map(Number);
  const b = el("div", {
    class: "box k-" + (region.kind || "region"), "data-testid": "region",
    "data-bbox": [x0, y0, x1, y1].join(","), title: region.text || region.kind || "",
  });
  b.style.left = (x0 * 100) + "%";
  b.style.top = (y0 * 100) + "%";
  b.style.width = ((x1 - x0) * 100) + "%";
  b.style.height = ((y1 - y0) * 100) + "%";
  return b;
}

/* A picture (thumbnail or page render) with the item's regions drawn over it; a text card when
 * the asset has no picture (a text file). */
function figure(item, kind, words) {
  const page = pageOf(item);
  const id = encodeURIComponent(item.asset_id || "");
  const src = kind === "page"
    ? "/api/assets/" + id + "/pages/" + (page || 1) + ".png"
    : "/api/assets/" + id + "/thumbnail" + (page ? "?page=" + page : "");
  const frame = el("div", { class: "frame" });
  const img = el("img", { src, alt: basename(item.source) + (page ? " page " + page : ""), loading: "lazy" });
  const pic = el("div", { class: "pic" }, img);
  img.addEventListener("error", () => {
    frame.replaceChildren(textCard(item));
  });
  img.addEventListener("load", () => {
    for (const r of regionsFor(item, page, words)) pic.append(box(r));
  }, { once: true });
  frame.append(pic);
  return frame;
}

function textCard(item) {
  const ext = (basename(item.source).split(".").pop() || "text").slice(0, 6);
  return el("div", { class: "textcard" }, el("span", { class: "doc", text: ext }), snippetNode(item.snippet, "span"));
}

/* «marked» terms become <mark> elements. */
function snippetNode(text, tag) {
  const node = el(tag || "p", { class: "snippet" });
  const parts = String(text || "").split(/(«[^»]*»)/);
  for (const part of parts) {
    if (part.startsWith("«") && part.endsWith("»")) node.append(el("mark", { text: part.slice(1, -1) }));
    else if (part) node.append(document.createTextNode(part));
  }
  return node;
}

/* ---- search ------------------------------------------------------------------------------------- */
function renderHits(results) {
  const grid = $("#results");
  grid.replaceChildren();
  results.forEach((hit, i) => {
    const page = pageOf(hit);
    const score = Math.max(0, Math.min(1, Number(hit.score) || 0));
    const card = el("article", {
      class: "hit", "data-testid": "hit", tabindex: 0, role: "button",
      "data-asset": hit.asset_id, "data-page": page || "",
      onclick: () => openViewer(hit), onkeydown: (e) => { if (e.key === "Enter") openViewer(hit); },
    },
      figure(hit, "thumb"),
      el("div", { class: "meta" },
        el("div", { class: "title-row" },
          el("span", { class: "rank", text: "#" + (i + 1) }),
          el("span", { class: "fname", text: basename(hit.source), title: hit.source || "" }),
          page ? el("span", { class: "page", text: "p. " + page }) : null),
        el("div", { class: "score" }, el("span", { class: "bar" }, barFill(score)), el("span", { text: score.toFixed(2) })),
        hit.snippet ? snippetNode(hit.snippet) : (hit.why ? el("div", { class: "why", text: hit.why }) : null)));
    grid.append(card);
  });
}

function barFill(score) {
  const s = el("span");
  s.style.width = Math.round(score * 100) + "%";
  return s;
}

async function search(q) {
  let data;
  if (state.image) {
    const form = new FormData();
    form.append("q", q);
    form.append("k", "12");
    form.append("image", state.image);
    data = await api("/api/search", { method: "POST", body: form });
  } else {
    data = await api("/api/search?" + new URLSearchParams({ q, k: "12" }));
  }
  const results = (data && data.results) || [];
  renderHits(results);
  message(results.length ? results.length + " result" + (results.length === 1 ? "" : "s") : "Nothing found.");
}

/* ---- ask --------------------------------------------------------------------------------------- */
const CITE = /\[(?:source:\s*)?(E\d+(?:\s*[,;]\s*E\d+)*)\]/g;

function renderAnswer(text, withCitations) {
  const node = $("#answer");
  node.replaceChildren();
  if (!withCitations) { node.textContent = text; return; }
  let last = 0;
  for (const m of text.matchAll(CITE)) {
    node.append(document.createTextNode(text.slice(last, m.index)));
    for (const id of m[1].split(/\s*[,;]\s*/)) {
      node.append(el("button", {
        type: "button", class: "cite", "data-testid": "citation", "data-evidence": id, text: id,
        onclick: () => focusEvidence(id),
      }));
    }
    last = m.index + m[0].length;
  }
  node.append(document.createTextNode(text.slice(last)));
}

function verdictText(data) {
  const v = (data && typeof data.verification === "object" && !Array.isArray(data.verification)) ? data.verification : {};
  const reasons = [].concat(v.reasons || [], Array.isArray(data.verification) ? data.verification : []);
  const checks = (v.checks || []).map((c) => (typeof c === "object" ? (c.detail || c.message || JSON.stringify(c)) : String(c)));
  const supported = v.supported !== undefined ? v.supported : data.verified;
  if (v.answered === false) return { ok: false, label: "No answer in the evidence", detail: reasons.join(" ") };
  if (v.citations_valid === false) return { ok: false, label: "Citations do not match the evidence", detail: checks.concat(reasons).join(" ") };
  if (supported) return { ok: true, label: "Verified", detail: "Every cited claim was checked against its evidence." };
  return { ok: false, label: "Not verified", detail: checks.concat(reasons).join(" ") || "The answer could not be checked against the evidence." };
}

function evidenceItems(data) {
  const byId = new Map();
  for (const s of data.sources || []) if (s && s.id) byId.set(s.id, Object.assign({}, s));
  for (const c of data.citations || []) {
    if (c && typeof c === "object" && c.id) byId.set(c.id, Object.assign(byId.get(c.id) || {}, c, { cited: true }));
  }
  const cited = new Set(data.citation_ids || []);
  return [...byId.values()].map((e) => Object.assign(e, { cited: e.cited || cited.has(e.id) }));
}

function renderEvidence(data) {
  const list = $("#evidence");
  list.replaceChildren();
  const items = evidenceItems(data);
  $("#evidence-title").hidden = !items.length;
  for (const e of items) {
    const page = pageOf(e);
    list.append(el("article", { class: "ev" + (e.cited ? "" : " uncited"), id: "ev-" + e.id, "data-evidence": e.id },
      el("div", { class: "ev-head" },
        el("span", { class: "ev-id", text: e.id }),
        el("span", { class: "fname", text: basename(e.source), title: e.source || "" }),
        page ? el("span", { class: "page", text: "p. " + page }) : null,
        el("span", { class: "ev-cited", text: e.cited ? "cited" : "not cited" })),
      figure(e, "page"),
      e.snippet ? el("div", { class: "meta" }, snippetNode(e.snippet)) : null));
  }
}

function focusEvidence(id) {
  const card = document.getElementById("ev-" + id);
  if (!card) return;
  document.querySelectorAll(".ev.highlight").forEach((c) => c.classList.remove("highlight"));
  card.classList.add("highlight");
  card.scrollIntoView({ behavior: "smooth", block: "center" });
}

function showAnswer(data) {
  renderAnswer(String(data.answer || ""), true);
  $("#answer").classList.remove("streaming");
  const v = verdictText(data);
  const badge = $("#verdict");
  badge.textContent = v.label;
  badge.className = "verdict " + (v.ok ? "ok" : "warn");
  $("#verdict-detail").textContent = v.ok ? v.detail : v.detail;
  renderEvidence(data);
}

function ask(q) {
  const panel = $("#answer-panel");
  panel.hidden = false;
  $("#verdict").textContent = "";
  $("#verdict").className = "verdict";
  $("#verdict-detail").textContent = "";
  $("#evidence").replaceChildren();
  $("#evidence-title").hidden = true;
  $("#results").replaceChildren();
  const answer = $("#answer");
  answer.textContent = "";
  answer.classList.add("streaming");
  if (state.image) {
    const form = new FormData();
    form.append("question", q);
    form.append("image", state.image);
    return api("/api/query", { method: "POST", body: form }).then(showAnswer);
  }
  return new Promise((resolve, reject) => {
    if (state.es) state.es.close();
    const es = new EventSource("/api/query/stream?" + new URLSearchParams({ q }));
    state.es = es;
    let text = "";
    es.addEventListener("token", (ev) => {
      text += JSON.parse(ev.data).text || "";
      renderAnswer(text, false);
    });
    es.addEventListener("done", (ev) => { es.close(); showAnswer(JSON.parse(ev.data)); resolve(); });
    es.addEventListener("error", (ev) => {
      es.close();
      answer.classList.remove("streaming");
      let msg = "the answer stream failed";
      try { msg = JSON.parse(ev.data).error || msg; } catch (e) { /* a network error has no data */ }
      reject(new Error(msg));
    });
  });
}

/* ---- viewer -------------------------------------------------------------------------------------- */
async function openViewer(hit) {
  const page = pageOf(hit);
  $("#viewer-title").textContent = basename(hit.source);
  $("#viewer-sub").textContent = [page ? "page " + page : null, "score " + (Number(hit.score) || 0).toFixed(3)]
    .filter(Boolean).join(" · ");
  $("#viewer-page").replaceChildren(figure(hit, "page", true));
  const info = $("#viewer-info");
  info.replaceChildren();
  if (hit.snippet) info.append(el("h3", { text: "Match" }), snippetNode(hit.snippet));
  const regions = regionsFor(hit, page, true);
  if (regions.length) {
    info.append(el("h3", { text: "Regions" }), el("ul", { class: "regions" },
      regions.map((r) => el("li", { class: "k-" + (r.kind || ""), text: (r.text || r.kind || "") }))));
  }
  const scores = Object.entries(hit.scores || {});
  if (scores.length) {
    info.append(el("h3", { text: "Why it matched" }), el("dl", { class: "kv" },
      scores.map(([name, s]) => [el("dt", { text: name }),
        el("dd", { text: Number(s).toFixed(3) + ((hit.ranks || {})[name] ? "  (#" + hit.ranks[name] + ")" : "") })])));
  }
  if (hit.why) info.append(el("div", { class: "why", text: hit.why }));
  info.append(el("div", { class: "why", text: hit.source || "" }));
  $("#viewer").hidden = false;
  $("#viewer-close").focus();
  const frame = $("#viewer-page .frame");
  frame && frame.querySelector("img") && frame.querySelector("img").addEventListener("error", () => loadText(hit), { once: true });
}

async function loadText(hit) {
  try {
    const data = await api("/api/assets/" + encodeURIComponent(hit.asset_id));
    const text = (data.nodes || []).filter((n) => n.modality === "text").map((n) => n.text).join("\n\n");
    $("#viewer-page").replaceChildren(el("div", { class: "textcard doctext", text: text || "(no text)" }));
  } catch (e) { /* keep the text card */ }
}

function closeViewer() {
  $("#viewer").hidden = true;
}

/* ---- wiring ------------------------------------------------------------------------------------ */
function setMode(mode) {
  state.mode = mode;
  document.querySelectorAll(".mode").forEach((b) => {
    const on = b.dataset.mode === mode;
    b.classList.toggle("active", on);
    b.setAttribute("aria-selected", on ? "true" : "false");
  });
  $("#go").textContent = mode === "ask" ? "Ask" : "Search";
  $("#q").placeholder = mode === "ask" ? "Ask a question about your files…" : "Search images, scans and documents…";
  if (mode === "search") $("#answer-panel").hidden = true;
}

async function submit(ev) {
  ev.preventDefault();
  const q = $("#q").value.trim();
  if (!q && !state.image) { message("Type something to search for, or attach an image."); return; }
  if (state.mode === "ask" && !q) { message("Type a question."); return; }
  const go = $("#go");
  go.disabled = true;
  message(state.mode === "ask" ? "Thinking…" : "Searching…");
  try {
    if (state.mode === "ask") { await ask(q); message(""); } else { $("#answer-panel").hidden = true; await search(q); }
  } catch (e) {
    message(e.message || String(e), true);
  } finally {
    go.disabled = false;
  }
}

async function poll() {
  const status = $("#status");
  try {
    const res = await fetch("/healthz");
    const h = await res.json();
    if (h.ready) {
      state.ready = true;
      status.dataset.state = "ready";
      status.textContent = "Ready";
      try {
        const s = await api("/api/stats");
        if (s && typeof s.assets === "number") status.textContent = s.assets + " assets · ready";
      } catch (e) { /* restricted or no store yet */ }
      return;
    }
    status.dataset.state = h.status === "failed" ? "failed" : "loading";
    status.textContent = h.status === "failed" ? "Failed to start" : "Loading models…";
    if (h.status === "failed") { message(h.error || "the server could not start", true); return; }
  } catch (e) {
    status.dataset.state = "failed";
    status.textContent = "Server unreachable";
  }
  setTimeout(poll, 1000);
}

function init() {
  $("#search-form").addEventListener("submit", submit);
  document.querySelectorAll(".mode").forEach((b) => b.addEventListener("click", () => setMode(b.dataset.mode)));
  $("#image").addEventListener("change", (e) => {
    state.image = e.target.files[0] || null;
    $("#image-chip").hidden = !state.image;
    $("#image-chip .chip-name").textContent = state.image ? state.image.name : "";
  });
  $("#image-chip .chip-x").addEventListener("click", () => {
    state.image = null;
    $("#image").value = "";
    $("#image-chip").hidden = true;
  });
  $("#api-key").addEventListener("change", (e) => { setKey(e.target.value.trim()); poll(); });
  if (document.body.dataset.keysRequired === "true") showKeyField();
  $("#viewer-close").addEventListener("click", closeViewer);
  $("#viewer").addEventListener("click", (e) => { if (e.target.id === "viewer") closeViewer(); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeViewer(); });
  const params = new URLSearchParams(location.search);
  if (params.get("mode") === "ask") setMode("ask");
  if (params.get("q")) $("#q").value = params.get("q");
  poll();
}

document.addEventListener("DOMContentLoaded", init);
