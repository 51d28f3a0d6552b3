// The transcript viewer: sign in with a key, the caller's sessions, a session with its
// recording and transcript in step, live while in progress.
//
// Views are chosen by the URL's fragment (#/, #/?q=…, #/session/<id>?t=<ts>&turn=<n>), so the
// back button and links work; the credential lives in sessionStorage and travels in a header.
// Every piece of text from the service is put into the page as text (the page's policy
// enforces Trusted Types: an HTML sink would throw).

import { Api, ApiError } from "./api.js";
import * as fmt from "./format.js";
import { follow } from "./live.js";

const CREDENTIAL = "transcripts.credential";
const REDACT = "transcripts.redact";
const PAGE_SIZE = 25;
const HISTORY = "api/billing/usage/";
const SEARCH = "api/agents/transcripts/search/";
const EXPORT_LABELS = {
  vtt: "WebVTT",
  srt: "SubRip",
  txt: "Text",
  md: "Markdown",
  jsonl: "JSON Lines",
};

const $ = (id) => document.getElementById(id);

/** The optional controls the service backs, as the page's <meta> lists them. */
const features = (() => {
  const meta = document.querySelector('meta[name="transcripts-features"]');
  const tokens = new Set();
  let exports = [];
  for (const token of (meta ? meta.content : "").split(/\s+/)) {
    if (token.startsWith("export=")) {
      exports = token.slice("export=".length).split(",").filter((f) => f in EXPORT_LABELS);
    } else if (token) {
      tokens.add(token);
    }
  }
  return { has: (name) => tokens.has(name), exports };
})();

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (name === "class") {
      node.className = value;
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

let api = null;
let view = null; // the AbortController of what the current view is loading

// --- errors ---------------------------------------------------------------------------

function showError(error) {
  const box = $("error");
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent =
    error instanceof ApiError
      ? error.message
      : "Something went wrong in the viewer. Reload the page and try again.";
  box.hidden = false;
}

function handle(error) {
  if (error && error.name === "AbortError") {
    return;
  }
  if (error instanceof ApiError && error.status === 401) {
    signOut(new ApiError(`${error.message} Sign in again.`, 401));
    return;
  }
  if (!(error instanceof ApiError)) {
    console.error(error);
  }
  showError(error);
}

// --- views ----------------------------------------------------------------------------

const SECTIONS = ["sign-in", "sessions", "session"];

function show(section, title) {
  for (const id of SECTIONS) {
    $(id).hidden = id !== section;
  }
  $("sign-out").hidden = api === null;
  document.title = title ? `${title} · Transcripts` : "Transcripts";
  if (section !== "session") {
    stopAudio();
  }
}

function route() {
  if (view) {
    view.abort();
  }
  view = new AbortController();
  showError(null);
  const fragment = location.hash.slice(1) || "/";
  const mark = fragment.indexOf("?");
  const path = mark === -1 ? fragment : fragment.slice(0, mark);
  const params = new URLSearchParams(mark === -1 ? "" : fragment.slice(mark + 1));
  if (api === null) {
    showSignIn();
    return;
  }
  const session = /^\/session\/([^/?]+)$/.exec(path);
  if (session) {
    showSession(decodeURIComponent(session[1]), params, view.signal).catch(handle);
  } else {
    showList(params, view.signal).catch(handle);
  }
}

// --- sign in --------------------------------------------------------------------------

function showSignIn() {
  show("sign-in", "Sign in");
  $("key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const credential = $("key").value.trim();
  if (!credential) {
    return;
  }
  const button = event.submitter || $("sign-in-form").querySelector("button");
  button.disabled = true;
  showError(null);
  const candidate = new Api(credential);
  try {
    // Any authenticated read tells whether the service takes this credential.
    await candidate.get(HISTORY, { params: { page_size: 1, ...leanList() } });
  } catch (error) {
    if (!(error instanceof ApiError)) {
      console.error(error);
    }
    showError(error);
    $("key").select();
    return;
  } finally {
    button.disabled = false;
  }
  sessionStorage.setItem(CREDENTIAL, credential);
  api = candidate;
  $("key").value = "";
  route();
}

function signOut(reason) {
  sessionStorage.removeItem(CREDENTIAL);
  api = null;
  list.key = null;
  if (view) {
    view.abort();
  }
  if (location.hash && location.hash !== "#/") {
    history.replaceState(null, "", "#/");
  }
  showSignIn();
  showError(reason || null);
}

// --- the sessions list ----------------------------------------------------------------

const list = { key: null, next: null, seen: new Set(), searching: false, params: null };

function leanList() {
  return features.has("include_transcript") ? { include_transcript: "false" } : {};
}

function filterParams(params) {
  const from = params.get("from");
  const to = params.get("to");
  return {
    character_slug: params.get("character") || undefined,
    start: from ? fmt.dayStart(from) : undefined,
    end: to ? fmt.dayEnd(to) : undefined,
  };
}

async function showList(params, signal) {
  show("sessions", "Sessions");
  for (const name of ["q", "character", "from", "to"]) {
    $(name).value = params.get(name) || "";
  }
  const key = params.toString();
  if (list.key === key) {
    return; // as it was left: pages loaded, scroll position
  }
  list.key = key;
  list.params = params;
  list.next = null;
  list.searching = features.has("search") && Boolean(params.get("q"));
  $("session-rows").replaceChildren();
  $("hits").replaceChildren();
  $("totals").textContent = "";
  $("session-table").hidden = list.searching;
  $("hits").hidden = !list.searching;
  $("list-empty").hidden = true;
  $("more").hidden = true;
  try {
    await loadPage(signal, false);
  } catch (error) {
    list.key = null; // try again next time
    throw error;
  }
}

async function loadPage(signal, focusNew) {
  const params = list.params;
  const more = $("more");
  more.disabled = true;
  let added;
  try {
    added = list.searching ? await loadHits(params, signal) : await loadSessions(params, signal);
  } finally {
    more.disabled = false;
  }
  more.hidden = list.next === null;
  const container = list.searching ? $("hits") : $("session-rows");
  const empty = $("list-empty");
  empty.hidden = container.childElementCount > 0;
  const filtered = [...params.keys()].length > 0;
  empty.textContent = list.searching
    ? "Nothing said in your sessions matches."
    : filtered
      ? "No sessions match these filters."
      : "No sessions yet.";
  if (focusNew && added[0]) {
    added[0].querySelector("a").focus();
  }
}

async function loadSessions(params, signal) {
  const data = await api.get(HISTORY, {
    params: { page_size: PAGE_SIZE, ...leanList(), ...filterParams(params), ...list.next },
    signal,
  });
  if (!list.next) {
    const count = data.total_sessions;
    $("totals").textContent =
      `${count} ${count === 1 ? "session" : "sessions"}, ` +
      `${fmt.cost(data.total_estimated_cost_usd)} in all`;
  }
  if ("next_cursor" in data) {
    list.next = data.next_cursor ? { cursor: data.next_cursor } : null;
  } else {
    list.next = data.page < data.total_pages ? { page: data.page + 1 } : null;
  }
  const rows = data.sessions.map(sessionRow);
  $("session-rows").append(...rows);
  for (const session of data.sessions) {
    rememberCharacter(session.character_slug);
  }
  return rows;
}

function rememberCharacter(slug) {
  if (slug && !list.seen.has(slug)) {
    list.seen.add(slug);
    $("characters").append(el("option", { value: slug }));
  }
}

function sessionLink(id, query) {
  return `#/session/${encodeURIComponent(id)}${query ? `?${query}` : ""}`;
}

function status(session) {
  const done = Boolean(session.finalized_at);
  return el("span", { class: `status ${done ? "done" : "active"}` }, done ? "Completed" : "Active");
}

function sessionRow(session) {
  const row = el(
    "tr",
    { dataset: { sessionId: session.session_id } },
    el(
      "td",
      { "data-label": "Started" },
      el("a", { href: sessionLink(session.session_id) }, fmt.when(session.created_at)),
    ),
    el("td", { "data-label": "Character" }, session.character_slug),
    el("td", { class: "num", "data-label": "Duration" }, fmt.duration(session.session_duration_seconds)),
    el("td", { class: "num", "data-label": "Turns" }, String(session.turn_count)),
    el("td", { class: "num", "data-label": "Cost" }, fmt.cost(session.estimated_cost_usd)),
    el("td", { "data-label": "Status" }, status(session)),
  );
  return row;
}

async function loadHits(params, signal) {
  const data = await api.get(SEARCH, {
    params: { q: params.get("q"), page_size: PAGE_SIZE, ...filterParams(params), ...list.next },
    signal,
  });
  list.next = data.next_cursor ? { cursor: data.next_cursor } : null;
  const items = data.results.map(hitItem);
  $("hits").append(...items);
  for (const hit of data.results) {
    rememberCharacter(hit.character_slug);
  }
  return items;
}

/** A search snippet: the service marks matches with <b> or <mark>; all else is text. */
function snippet(text) {
  const out = el("p", { class: "snippet" });
  let marked = false;
  for (const part of String(text).split(/(<\/?(?:b|mark|strong|em)>)/i)) {
    if (/^<(?:b|mark|strong|em)>$/i.test(part)) {
      marked = true;
    } else if (/^<\/(?:b|mark|strong|em)>$/i.test(part)) {
      marked = false;
    } else if (part) {
      out.append(marked ? el("mark", {}, part) : part);
    }
  }
  return out;
}

function hitItem(hit) {
  const query = new URLSearchParams({ t: String(hit.ts), turn: String(hit.turn_index) });
  return el(
    "li",
    { class: "hit" },
    el(
      "a",
      { href: sessionLink(hit.session_id, query.toString()) },
      el(
        "span",
        { class: "meta" },
        `${hit.character_slug} · ${fmt.when(hit.created_at)} · ${fmt.speaker(hit.role)} at ${fmt.clock(hit.ts)}`,
      ),
      snippet(hit.snippet),
    ),
  );
}

function applyFilters(event) {
  event.preventDefault();
  const query = new URLSearchParams();
  for (const name of ["q", "character", "from", "to"]) {
    const value = $(name).value.trim();
    if (value && (name !== "q" || features.has("search"))) {
      query.set(name, value);
    }
  }
  if (query.get("from") && query.get("to") && query.get("from") > query.get("to")) {
    showError(new ApiError("The “From” date is after the “To” date.", 400));
    $("from").focus();
    return;
  }
  list.key = null; // Apply always reads afresh
  const hash = query.size ? `#/?${query}` : "#/";
  if (location.hash === hash || (hash === "#/" && !location.hash)) {
    route();
  } else {
    location.hash = hash;
  }
}

// --- a session ------------------------------------------------------------------------

const audio = $("audio");
let current = null; // the session on screen: {id, session, items: Map, byTs: [], active}

function transcriptPath(id) {
  return `api/agents/agent-session/${encodeURIComponent(id)}/transcript/`;
}

function redacting() {
  return features.has("redact") && sessionStorage.getItem(REDACT) === "1";
}

function readParams() {
  return redacting() ? { redact: "pii" } : {};
}

function stopAudio() {
  if (audio.getAttribute("src")) {
    audio.pause();
    audio.removeAttribute("src");
    audio.load();
  }
}

async function showSession(id, params, signal, resumeAt) {
  show("session", "Session");
  current = null;
  $("session-title").textContent = "Session";
  $("facts").replaceChildren();
  $("turns").replaceChildren();
  $("turns").removeAttribute("aria-live");
  $("no-turns").hidden = true;
  $("live").hidden = true;
  $("exports").hidden = true;
  $("redact-control").hidden = true;
  stopAudio();
  audio.hidden = true;
  $("no-recording").hidden = true;

  let session;
  try {
    session = await api.get(transcriptPath(id), { params: readParams(), signal });
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      $("session-title").textContent = "Session not found";
    }
    throw error;
  }
  current = { id, session, items: new Map(), byTs: [], active: null, signal };
  const title = `${session.character_slug} · ${fmt.when(session.created_at)}`;
  document.title = `${title} · Transcripts`;
  $("session-title").textContent = title;
  renderFacts(session);
  setRecording(session, resumeAt);
  mergeTurns(session.transcript || [], false);
  renderTools(id);
  $("session-title").focus();

  const turn = params.get("turn");
  const at = params.get("t");
  if (turn !== null && current.items.has(Number(turn))) {
    const item = current.items.get(Number(turn));
    item.classList.add("hit");
    item.scrollIntoView({ block: "center" });
    (item.querySelector("button") || item).focus({ preventScroll: true });
  }
  if (at !== null && resumeAt === undefined && !audio.hidden && Number.isFinite(Number(at))) {
    seekWhenReady(Number(at));
  }
  if (!session.finalized_at) {
    goLive(id, signal);
  }
}

function fact(label, value, attributes = {}) {
  return el("div", {}, el("dt", {}, label), el("dd", attributes, value));
}

function renderFacts(session) {
  $("facts").replaceChildren(
    fact("Status", status(session)),
    fact("Started", fmt.when(session.created_at)),
    fact("Duration", fmt.duration(session.session_duration_seconds)),
    fact("Turns", String(session.turn_count), { id: "turn-count" }),
    fact("Cost", fmt.cost(session.estimated_cost_usd)),
    fact("Session", session.session_id, { class: "id" }),
  );
}

function setRecording(session, resumeAt) {
  const url = session.recording_presigned_url;
  if (!url) {
    stopAudio();
    audio.hidden = true;
    $("no-recording").hidden = false;
    $("no-recording").textContent = "No recording";
    return;
  }
  $("no-recording").hidden = true;
  audio.hidden = false;
  if (audio.getAttribute("src") !== url) {
    audio.src = url;
  }
  if (resumeAt !== undefined) {
    seekWhenReady(resumeAt);
  }
  audio.dataset.retried = "";
}

function seekWhenReady(seconds) {
  const apply = () => {
    audio.currentTime = seconds;
    sync();
  };
  if (audio.readyState >= HTMLMediaElement.HAVE_METADATA) {
    apply();
  } else {
    audio.addEventListener("loadedmetadata", apply, { once: true });
  }
}

function playable() {
  return current !== null && !audio.hidden && Boolean(audio.getAttribute("src"));
}

function turnItem(turn) {
  const at = fmt.clock(turn.ts);
  const who = fmt.speaker(turn.role);
  const time = playable()
    ? el("button", { type: "button", class: "at", "aria-label": `Play from ${at}, ${who}` }, at)
    : el("span", { class: "at" }, at);
  return el(
    "li",
    { class: `turn ${turn.role}`, dataset: { turnIndex: turn.turn_index, ts: turn.ts } },
    el("div", { class: "meta" }, el("span", { class: "who" }, who), time),
    el("p", { class: "text" }, turn.text),
  );
}

/** Turns into the list, in turn order, each once (a turn seen again replaces its text). */
function mergeTurns(turns, live) {
  const list = $("turns");
  const last = list.lastElementChild;
  const following = live && (last === null || inView(last));
  let newest = null;
  for (const turn of turns) {
    const index = Number(turn.turn_index);
    const known = current.items.get(index);
    if (known) {
      const text = known.querySelector(".text");
      if (text.textContent !== turn.text) {
        text.textContent = turn.text;
      }
      continue;
    }
    const item = turnItem(turn);
    current.items.set(index, item);
    let before = null;
    for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
      if (Number(node.dataset.turnIndex) < index) {
        break;
      }
      before = node;
    }
    list.insertBefore(item, before);
    newest = item;
  }
  current.byTs = [...current.items.values()]
    .map((item) => ({ ts: Number(item.dataset.ts), item }))
    .sort((a, b) => a.ts - b.ts || Number(a.item.dataset.turnIndex) - Number(b.item.dataset.turnIndex));
  $("no-turns").hidden = current.items.size > 0;
  const count = $("turn-count");
  if (count && live) {
    count.textContent = String(Math.max(current.items.size, Number(count.textContent) || 0));
  }
  if (following && newest) {
    newest.scrollIntoView({ block: "nearest" });
  }
}

function inView(node) {
  const box = node.getBoundingClientRect();
  return box.top < window.innerHeight && box.bottom > 0;
}

/** The turn being spoken at `seconds`: the last whose ts has passed. */
function turnAt(seconds) {
  const byTs = current.byTs;
  let low = 0;
  let high = byTs.length - 1;
  let found = null;
  while (low <= high) {
    const middle = (low + high) >> 1;
    if (byTs[middle].ts <= seconds) {
      found = byTs[middle].item;
      low = middle + 1;
    } else {
      high = middle - 1;
    }
  }
  return found;
}

function sync() {
  if (!playable()) {
    return;
  }
  const item = turnAt(audio.currentTime);
  if (item === current.active) {
    return;
  }
  if (current.active) {
    current.active.removeAttribute("aria-current");
  }
  current.active = item;
  if (item) {
    item.setAttribute("aria-current", "true");
    item.scrollIntoView({ block: "nearest" });
  }
}

function seekTo(item) {
  audio.currentTime = Number(item.dataset.ts);
  sync();
  audio.play().catch(() => {}); // refused without a gesture: the position still moved
}

function onTurnClick(event) {
  if (!playable()) {
    return;
  }
  const item = event.target.closest(".turn");
  if (!item) {
    return;
  }
  const selection = window.getSelection();
  if (!event.target.closest("button") && selection && !selection.isCollapsed) {
    return; // selecting text to copy, not seeking
  }
  seekTo(item);
}

async function onAudioError() {
  // A link signed an hour ago may have expired: sign a fresh one, once, and carry on.
  if (!current || audio.hidden || audio.dataset.retried) {
    return;
  }
  audio.dataset.retried = "1";
  const at = audio.currentTime;
  try {
    const session = await api.get(transcriptPath(current.id), {
      params: readParams(),
      signal: current.signal,
    });
    if (session.recording_presigned_url && session.recording_presigned_url !== audio.src) {
      audio.src = session.recording_presigned_url;
      seekWhenReady(at);
      audio.dataset.retried = "1";
      return;
    }
  } catch (error) {
    handle(error);
    return;
  }
  showError(new ApiError("The recording could not be played.", 0));
}

function renderTools(id) {
  const redact = $("redact");
  $("redact-control").hidden = !features.has("redact");
  redact.checked = redacting();
  const exports = $("exports");
  exports.replaceChildren(el("span", { class: "label", "aria-hidden": "true" }, "Download"));
  for (const format of features.exports) {
    const button = el(
      "button",
      { type: "button", class: "quiet", dataset: { format }, "aria-label": `Download ${EXPORT_LABELS[format]}` },
      EXPORT_LABELS[format],
    );
    button.addEventListener("click", () => download(id, format, button).catch(handle));
    exports.append(button);
  }
  exports.hidden = features.exports.length === 0;
}

async function download(id, format, button) {
  button.disabled = true;
  try {
    const { blob, name } = await api.download(
      `${transcriptPath(id)}${format}/`,
      { download: 1, ...readParams() },
      `transcript-${id}.${format}`,
    );
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } finally {
    button.disabled = false;
  }
}

const LIVE_TEXT = {
  live: "Live: turns appear as they are spoken.",
  polling: "Live: checking for new turns every 2 seconds.",
  reconnecting: "Reconnecting…",
};

function goLive(id, signal) {
  const status = $("live");
  status.hidden = false;
  status.className = "live on";
  status.textContent = "In progress.";
  $("turns").setAttribute("aria-live", "polite");
  follow({
    api,
    sessionId: id,
    stream: features.has("stream"),
    params: readParams(),
    signal,
    onTurns: (turns) => {
      if (!signal.aborted) {
        mergeTurns(turns, true);
      }
    },
    onStatus: (mode) => {
      status.textContent = LIVE_TEXT[mode];
    },
    onFinalized: async () => {
      status.className = "live";
      status.textContent = "The session has ended.";
      $("turns").removeAttribute("aria-live");
      try {
        const session = await api.get(transcriptPath(id), { params: readParams(), signal });
        current.session = session;
        renderFacts(session);
        mergeTurns(session.transcript || [], true);
        if (!playable() && session.recording_presigned_url) {
          setRecording(session);
          // Turns drawn before there was a recording to seek in get their buttons now.
          const turns = session.transcript || [];
          current.items.clear();
          $("turns").replaceChildren();
          mergeTurns(turns, false);
        }
      } catch (error) {
        handle(error);
      }
    },
    onError: handle,
  }).catch(handle);
}

function toggleRedaction() {
  sessionStorage.setItem(REDACT, $("redact").checked ? "1" : "0");
  if (!current) {
    return;
  }
  const at = playable() ? audio.currentTime : undefined;
  const checked = $("redact").checked;
  view.abort();
  view = new AbortController();
  showSession(current.id, new URLSearchParams(), view.signal, at)
    .then(() => $("redact").focus())
    .catch(handle)
    .finally(() => {
      $("redact").checked = checked;
    });
}

// --- wiring ---------------------------------------------------------------------------

$("sign-in-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", () => signOut());
$("filters").addEventListener("submit", applyFilters);
$("clear-filters").addEventListener("click", (event) => {
  $("filters").reset();
  applyFilters(event);
});
$("more").addEventListener("click", () => loadPage(view.signal, true).catch(handle));
$("session-rows").addEventListener("click", (event) => {
  // The whole row opens its session (the date is the link keyboards reach).
  const row = event.target.closest("tr");
  if (row && !event.target.closest("a")) {
    location.hash = sessionLink(row.dataset.sessionId);
  }
});
$("turns").addEventListener("click", onTurnClick);
$("redact").addEventListener("change", toggleRedaction);
audio.addEventListener("timeupdate", () => sync());
audio.addEventListener("seeked", () => sync());
audio.addEventListener("error", () => onAudioError());
for (const field of document.querySelectorAll(".search-field")) {
  field.hidden = !features.has("search");
}
window.addEventListener("hashchange", route);

const saved = sessionStorage.getItem(CREDENTIAL);
if (saved) {
  api = new Api(saved);
}
route();
