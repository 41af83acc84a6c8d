// Hermes CI's pages: live updates, the log viewer, the buttons. Plain JavaScript, no build step.
// What the server renders is trusted HTML (its templates escape every value); a log line never
// is: it becomes text nodes and styled spans, never markup.
"use strict";

const page = document.body.dataset.page;
const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

// ---- Times -------------------------------------------------------------------------------------

function ago(date) {
  const s = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (s < 45) return "just now";
  const m = Math.round(s / 60);
  if (m < 60) return m === 1 ? "1 minute ago" : `${m} minutes ago`;
  const h = Math.round(m / 60);
  if (h < 24) return h === 1 ? "1 hour ago" : `${h} hours ago`;
  const d = Math.round(h / 24);
  if (d < 30) return d === 1 ? "yesterday" : `${d} days ago`;
  return date.toLocaleDateString();
}

function span(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

// <time data-ago datetime="…"> shows its age; [data-from] (and [data-to]) a running duration.
function tick(root = document) {
  for (const t of root.querySelectorAll("time[data-ago]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) {
      t.textContent = ago(d);
      t.title = d.toLocaleString();
    }
  }
  for (const el of root.querySelectorAll("[data-from]")) {
    const from = new Date(el.dataset.from);
    const to = el.dataset.to ? new Date(el.dataset.to) : new Date();
    if (!isNaN(from)) el.textContent = span(to - from);
  }
}
tick();
setInterval(tick, 1000);

// An avatar that does not load (GitHub out of reach) leaves no broken image behind.
document.addEventListener("error", (event) => {
  if (event.target instanceof HTMLImageElement && event.target.matches("img.avatar, .account img")) {
    event.target.style.visibility = "hidden";
  }
}, true);

// ---- Commands ----------------------------------------------------------------------------------

function toast(text) {
  const t = document.createElement("div");
  t.className = "toast";
  t.setAttribute("role", "status");
  t.textContent = text;
  document.body.append(t);
  setTimeout(() => t.remove(), 4000);
}

async function post(url) {
  const res = await fetch(url, { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
  let body = null;
  try { body = await res.json(); } catch (_) { /* no body */ }
  if (!res.ok) throw new Error(body?.message || `${res.status} ${res.statusText}`);
  return body;
}

// <button data-post="/api/…" data-done="…"> sends the command; data-then says what follows.
// Listened for on the document, so that buttons of a part refreshed since still work.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-post]");
  if (!button || button.disabled) return;
  button.disabled = true;
  try {
    const answer = await post(button.dataset.post);
    toast(button.dataset.done || "Done.");
    const then = button.dataset.then;
    if (then === "reload") setTimeout(() => location.reload(), 400);
    if (then === "follow-build" && answer?.build) followNewBuild(answer.build);
    if (then === "refresh") refreshPart();
    if (then === "toggle-repo") toggleRepo(button, answer);
  } catch (e) {
    toast(e.message);
  } finally {
    button.disabled = false;
  }
});

// A restart makes a new build: go to its page once the read model has it.
async function followNewBuild(id) {
  for (let i = 0; i < 60; i++) {
    const res = await fetch(`/api/builds/${id}`, { credentials: "same-origin" });
    if (res.ok) {
      const b = await res.json();
      location.href = `/repos/${b.repo}/builds/${b.number}`;
      return;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  toast("The new build does not show yet; reload in a moment.");
}

function toggleRepo(button, answer) {
  const active = !!answer?.active;
  const name = button.dataset.repo;
  button.dataset.post = `/api/repos/${name}/${active ? "deactivate" : "activate"}`;
  button.textContent = active ? "Deactivate" : "Activate";
  button.dataset.done = active ? `${name} deactivated.` : `${name} activated.`;
  button.classList.toggle("primary", !active);
  const state = button.closest("li")?.querySelector(".active-state");
  if (state) state.textContent = active ? "active" : "";
}

// ---- Parts that refresh themselves -------------------------------------------------------------

// [data-refresh="URL"] is replaced by the server's fresh rendering of it every few seconds, while
// [data-live] says it may still change.
async function refreshPart() {
  for (const part of document.querySelectorAll("[data-refresh]")) {
    if (part.dataset.live !== "true") continue;
    try {
      const res = await fetch(part.dataset.refresh, { credentials: "same-origin" });
      if (!res.ok) continue;
      const html = await res.text();
      const fresh = document.createElement("template");
      fresh.innerHTML = html; // the server's template output: escaped values only
      const next = fresh.content.firstElementChild;
      if (next && next.outerHTML !== part.outerHTML) {
        part.replaceWith(next);
        tick(next);
      }
    } catch (_) { /* try again next time */ }
  }
}
setInterval(refreshPart, 2000);

// ---- The repositories list ----------------------------------------------------------------------

const filter = document.getElementById("repo-filter");
if (filter) {
  filter.addEventListener("input", () => {
    const q = filter.value.trim().toLowerCase();
    for (const li of document.querySelectorAll("#repos li")) {
      li.hidden = q !== "" && !li.dataset.name.toLowerCase().includes(q);
    }
  });
}

// ---- ANSI colours --------------------------------------------------------------------------------

// SGR codes become classes (colours, bold …) on spans of text; every other escape sequence is
// dropped. Returns the nodes of one line.
function ansiNodes(text) {
  const nodes = [];
  let style = { b: false, d: false, i: false, u: false, f: null, g: null, fg: null, bg: null };
  const re = /\x1b\[([0-9;]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[()][A-Za-z0-9]|\x1b./g;
  let last = 0;
  const emit = (s) => {
    if (!s) return;
    const plain = !style.b && !style.d && !style.i && !style.u && style.f === null && style.g === null && !style.fg && !style.bg;
    if (plain) { nodes.push(document.createTextNode(s)); return; }
    const el = document.createElement("span");
    const cls = [];
    if (style.b) cls.push("a-b");
    if (style.d) cls.push("a-d");
    if (style.i) cls.push("a-i");
    if (style.u) cls.push("a-u");
    if (style.f !== null) cls.push(`a-f${style.f}`);
    if (style.g !== null) cls.push(`a-g${style.g}`);
    el.className = cls.join(" ");
    if (style.fg) el.style.color = style.fg;
    if (style.bg) el.style.backgroundColor = style.bg;
    el.textContent = s;
    nodes.push(el);
  };
  for (let m; (m = re.exec(text)); ) {
    emit(text.slice(last, m.index).replace(/[\x00-\x08\x0b-\x1f\x7f]/g, ""));
    last = re.lastIndex;
    if (m[2] !== "m") continue;
    const codes = (m[1] === "" ? "0" : m[1]).split(";").map((c) => parseInt(c || "0", 10));
    for (let k = 0; k < codes.length; k++) {
      const c = codes[k];
      if (c === 0) style = { b: false, d: false, i: false, u: false, f: null, g: null, fg: null, bg: null };
      else if (c === 1) style.b = true;
      else if (c === 2) style.d = true;
      else if (c === 3) style.i = true;
      else if (c === 4) style.u = true;
      else if (c === 22) { style.b = false; style.d = false; }
      else if (c === 23) style.i = false;
      else if (c === 24) style.u = false;
      else if (c >= 30 && c <= 37) { style.f = c - 30; style.fg = null; }
      else if (c >= 90 && c <= 97) { style.f = c - 90 + 8; style.fg = null; }
      else if (c === 39) { style.f = null; style.fg = null; }
      else if (c >= 40 && c <= 47) { style.g = c - 40; style.bg = null; }
      else if (c >= 100 && c <= 107) { style.g = c - 100; style.bg = null; }
      else if (c === 49) { style.g = null; style.bg = null; }
      else if ((c === 38 || c === 48) && codes[k + 1] === 5 && k + 2 < codes.length) {
        const rgb = xterm(codes[k + 2]);
        if (c === 38) { style.fg = rgb; style.f = null; } else { style.bg = rgb; style.g = null; }
        k += 2;
      } else if ((c === 38 || c === 48) && codes[k + 1] === 2 && k + 4 < codes.length) {
        const [r, g, b] = codes.slice(k + 2, k + 5).map((v) => Math.min(255, Math.max(0, v | 0)));
        const rgb = `rgb(${r}, ${g}, ${b})`;
        if (c === 38) { style.fg = rgb; style.f = null; } else { style.bg = rgb; style.g = null; }
        k += 4;
      }
    }
  }
  emit(text.slice(last).replace(/[\x00-\x08\x0b-\x1f\x7f]/g, ""));
  return nodes;
}

// The colour of xterm's 256-colour palette entry n (16-255; 0-15 are close to the classes').
function xterm(n) {
  n = Math.min(255, Math.max(0, n | 0));
  if (n < 16) {
    const base = [[0,0,0],[205,49,49],[13,188,121],[229,229,16],[36,114,200],[188,63,188],[17,168,205],[229,229,229],
                  [102,102,102],[241,76,76],[35,209,139],[245,245,67],[59,142,234],[214,112,214],[41,184,219],[255,255,255]][n];
    return `rgb(${base.join(", ")})`;
  }
  if (n < 232) {
    const v = [0, 95, 135, 175, 215, 255];
    const i = n - 16;
    return `rgb(${v[Math.floor(i / 36)]}, ${v[Math.floor(i / 6) % 6]}, ${v[i % 6]})`;
  }
  const g = 8 + (n - 232) * 10;
  return `rgb(${g}, ${g}, ${g})`;
}

// ---- The log viewer ----------------------------------------------------------------------------

const CHUNK = 1000;
const OVERSCAN = 40;

function logViewer(view) {
  const build = view.dataset.build;
  const lh = parseFloat(getComputedStyle(document.documentElement).getPropertyValue("--lh")) || 20;
  const spacer = view.querySelector(".log-spacer");
  const lines = view.querySelector(".log-lines");
  const count = document.getElementById("log-count");
  const followBox = document.getElementById("log-follow");
  const state = {
    attempt: parseInt(view.dataset.attempt, 10) || 0,
    total: parseInt(view.dataset.total, 10) || 0,
    live: view.dataset.live === "true",
    pinned: view.dataset.pinned === "true", // an attempt chosen by the user: no live switching
    chunks: new Map(), // chunk index -> array of texts
    loading: new Set(),
    liveLines: new Map(), // line number -> text, heard live before its chunk came
    highlight: null,
    follow: true,
    drawn: "",
  };

  const text = (n) => {
    const c = state.chunks.get(Math.floor((n - 1) / CHUNK));
    if (c && c[(n - 1) % CHUNK] !== undefined) return c[(n - 1) % CHUNK];
    return state.liveLines.get(n);
  };

  async function load(chunk) {
    if (state.chunks.has(chunk) || state.loading.has(chunk) || state.attempt === 0) return;
    state.loading.add(chunk);
    const attempt = state.attempt;
    const from = chunk * CHUNK + 1;
    const to = from + CHUNK - 1;
    try {
      const res = await fetch(`/api/builds/${build}/logs?attempt=${attempt}&from=${from}&to=${to}&format=json`, { credentials: "same-origin" });
      if (!res.ok || attempt !== state.attempt) return;
      const body = await res.json();
      const texts = [];
      for (const l of body.lines) texts[l.n - from] = l.text;
      state.chunks.set(chunk, texts);
      if (body.total > state.total) setTotal(body.total);
      draw(true);
    } finally {
      state.loading.delete(chunk);
    }
  }

  function setTotal(n) {
    state.total = n;
    spacer.style.height = `${Math.max(1, n) * lh}px`;
    if (count) count.textContent = `${n.toLocaleString()} line${n === 1 ? "" : "s"}`;
  }

  function lineNode(n) {
    const row = document.createElement("div");
    row.className = "line" + (state.highlight === n ? " highlight" : "");
    row.id = `L${n}`;
    const ln = document.createElement("a");
    ln.className = "ln";
    ln.href = `#L${n}`;
    ln.textContent = n;
    ln.setAttribute("aria-label", `line ${n}`);
    const txt = document.createElement("span");
    txt.className = "txt";
    const t = text(n);
    if (t === undefined) txt.textContent = "…";
    else txt.append(...ansiNodes(t));
    row.append(ln, txt);
    return row;
  }

  function draw(force) {
    if (state.total === 0) {
      lines.replaceChildren();
      const empty = document.createElement("div");
      empty.className = "log-empty";
      empty.textContent = state.live ? "Waiting for the first line…" : "This attempt wrote no log.";
      lines.append(empty);
      return;
    }
    const first = Math.max(1, Math.floor(view.scrollTop / lh) + 1 - OVERSCAN);
    const last = Math.min(state.total, Math.ceil((view.scrollTop + view.clientHeight) / lh) + OVERSCAN);
    for (let c = Math.floor((first - 1) / CHUNK); c <= Math.floor((last - 1) / CHUNK); c++) load(c);
    const key = `${first}-${last}-${state.highlight}`;
    if (!force && key === state.drawn) return;
    state.drawn = key;
    const rows = [];
    for (let n = first; n <= last; n++) rows.push(lineNode(n));
    lines.style.transform = `translateY(${(first - 1) * lh}px)`;
    lines.replaceChildren(...rows);
  }

  let queued = false;
  const schedule = (force) => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; draw(force); });
  };

  function toBottom() {
    view.scrollTop = view.scrollHeight;
  }

  view.addEventListener("scroll", () => {
    const atBottom = view.scrollTop + view.clientHeight >= view.scrollHeight - lh * 2;
    state.follow = atBottom;
    if (followBox) followBox.checked = atBottom;
    schedule(false);
  });
  followBox?.addEventListener("change", () => {
    state.follow = followBox.checked;
    if (state.follow) toBottom();
  });

  function goToHash() {
    const m = /^#L(\d+)$/.exec(location.hash);
    if (!m) return false;
    const n = Math.min(Math.max(1, parseInt(m[1], 10)), Math.max(1, state.total));
    state.highlight = n;
    state.follow = false;
    if (followBox) followBox.checked = false;
    view.scrollTop = Math.max(0, (n - 1) * lh - view.clientHeight / 2);
    schedule(true);
    return true;
  }
  window.addEventListener("hashchange", goToHash);

  setTotal(state.total);
  if (!goToHash()) toBottom();
  draw(true);

  if (!state.live) return;
  // Lines after the last one shown, live; a dropped connection resumes after the last line it
  // had (the browser sends Last-Event-ID), so none is missed or shown twice.
  const source = new EventSource(`/api/builds/${build}/logs/stream?after=${state.attempt}.${state.total}`);
  source.onmessage = (e) => {
    const [a, n] = (e.lastEventId || "").split(".").map((v) => parseInt(v, 10));
    if (!a || !n) return;
    if (a !== state.attempt) {
      if (state.pinned || a < state.attempt) return;
      // A newer attempt: show it from its first line.
      state.attempt = a;
      state.chunks.clear();
      state.liveLines.clear();
      state.total = 0;
      document.getElementById("log-attempt")?.replaceChildren(`attempt ${a}`);
    }
    state.liveLines.set(n, e.data);
    if (n > state.total) setTotal(n);
    if (state.follow) toBottom();
    schedule(true);
  };
  source.addEventListener("end", (e) => {
    source.close();
    state.live = false;
    view.dataset.live = "false";
    const end = document.getElementById("log-end");
    if (end) end.textContent = `Finished: ${e.data}`;
    refreshPart();
    schedule(true);
  });
}

const view = document.getElementById("log");
if (view) logViewer(view);
