// Rapport agent UI: progressive enhancement of the server-rendered pages. No framework.

import { addressList, api, background, conflictLines, formatSize, mergeConflicts, sendFile, senderBadges, setupAttachments, setupCanned, showError, takenFrom, triageBadges, upload } from "./http.js";

// --- times, on the reader's clock ----------------------------------------------------------
// The server writes each time in UTC, the moment itself in the element's datetime; every
// <time datetime> on a page, drawn or added later (a redrawn list, a live message), is shown
// in the browser's own zone, the full moment in its title. (They read as local times, in
// UTC, while the snooze picker took local ones.)
function stamp(d, dateOnly = false) {
  const p = (n) => String(n).padStart(2, "0");
  const day = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
  return dateOnly ? day : `${day} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

function localizeTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]:not([data-local])")) {
    const d = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(d.getTime())) continue;
    el.dataset.local = "";
    el.textContent = stamp(d, !/\d:\d\d/.test(el.textContent));
    el.title = d.toLocaleString(undefined, { dateStyle: "full", timeStyle: "long" });
  }
}

function setupLocalTimes() {
  localizeTimes(document);
  new MutationObserver((records) => {
    for (const r of records) {
      for (const n of r.addedNodes) if (n.nodeType === 1) localizeTimes(n.parentNode || n);
    }
  }).observe(document.body, { childList: true, subtree: true });
}

// --- login, with the second factor when the account has one ---------------------------
// Where to go once signed in: the page that sent here (``?next=``, a path of this site
// only: never another site), else the inbox.
function afterLogin() {
  const next = new URLSearchParams(location.search).get("next") || "";
  // Read as the browser reads it (a tab or newline after the slash is dropped, so
  // "/\t/evil.example" is "//evil.example"): only a path of this very origin is followed.
  // The whole address is followed, never its path alone: "/.//evil.example" resolves to
  // this origin with the path "//evil.example", which read again is another site.
  if (!next.startsWith("/")) return "/app/inbox";
  const to = new URL(next, location.origin);
  return to.origin === location.origin && !to.pathname.startsWith("//") ? to.href : "/app/inbox";
}

function setupLogin() {
  const form = document.getElementById("login-form");
  if (!form) return;
  const totp = document.getElementById("totp-form");
  const error = document.getElementById("login-error");
  const fail = (msg) => { error.textContent = msg; error.hidden = false; };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const fd = new FormData(form);
    try {
      const out = await api("POST", "/api/v1/auth/login", { email: fd.get("email"), password: fd.get("password") });
      document.body.dataset.csrf = out.csrf_token;
      if (out.mfa_required) {
        form.hidden = true;
        totp.hidden = false;
        totp.querySelector("input").focus();
      } else {
        location.href = afterLogin();
      }
    } catch (e) { fail(e.message); }
  });
  totp.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    try {
      await api("POST", "/api/v1/auth/login/totp", { code: new FormData(totp).get("code") });
      location.href = afterLogin();
    } catch (e) { fail(e.message); }
  });
}

// The token of a link we emailed rides in the fragment (never sent to a server): taken out of
// the address bar and the history at once, the link being spent once used anyway.
function emailedLink(errorId, missing) {
  const token = location.hash.slice(1);
  history.replaceState(null, "", location.pathname);
  const error = document.getElementById(errorId);
  const fail = (msg) => { error.textContent = msg; error.hidden = false; };
  if (!token) fail(missing);
  return { token, error, fail };
}

// --- forgotten password: ask for a link, then choose a new password --------------------
function setupPasswordReset() {
  const forgot = document.getElementById("forgot-form");
  if (forgot) forgot.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const error = document.getElementById("forgot-error");
    error.hidden = true;
    try {
      const out = await api("POST", "/api/v1/auth/password-reset", { email: new FormData(forgot).get("email") });
      const done = document.getElementById("forgot-done");
      done.textContent = out.detail;
      done.hidden = false;
      forgot.hidden = true;
    } catch (e) { error.textContent = e.message; error.hidden = false; }
  });
  const form = document.getElementById("reset-form");
  if (!form) return;
  const { token, error, fail } = emailedLink("reset-error", "This page needs the link from the reset email.");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const fd = new FormData(form);
    if (fd.get("password") !== fd.get("again")) { fail("The two passwords differ."); return; }
    try {
      await api("POST", "/api/v1/auth/password-reset/confirm", { token, password: fd.get("password") });
      form.hidden = true;
      document.getElementById("reset-done").hidden = false;
    } catch (e) { fail(e.message); }
  });
}

// --- an invitation: a new account, or the existing one's password -----------------------
function setupInvitation() {
  const form = document.getElementById("invite-form");
  if (!form) return;
  const { token, error, fail } = emailedLink("invite-error", "This page needs the link from the invitation email.");
  if (!token) return;
  let existing = false;
  api("POST", "/api/v1/invitations/preview", { token }).then((inv) => {
    existing = inv.account_exists;
    document.getElementById("invite-title").textContent = `Join ${inv.workspace}`;
    const about = document.getElementById("invite-about");
    about.textContent = `You are invited as ${inv.role}, with the address ${inv.email}.`;
    about.hidden = false;
    document.getElementById("invite-existing").hidden = !existing;
    document.getElementById("invite-name").hidden = existing;
    const again = document.getElementById("invite-again");
    again.hidden = existing;
    again.querySelector("input").required = !existing;
    form.password.autocomplete = existing ? "current-password" : "new-password";
    if (!existing) form.password.minLength = 10;
    form.hidden = false;
  }).catch((e) => fail(e.message));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const fd = new FormData(form);
    if (!existing && fd.get("password") !== fd.get("again")) { fail("The two passwords differ."); return; }
    try {
      const out = await api("POST", "/api/v1/invitations/accept", {
        token, password: fd.get("password"), name: fd.get("name") || "",
      });
      form.hidden = true;
      document.getElementById("invite-workspace").textContent = out.workspace;
      document.getElementById("invite-done").hidden = false;
    } catch (e) { fail(e.message); }
  });
}

function setupLogout() {
  const btn = document.getElementById("logout");
  if (!btn) return;
  btn.addEventListener("click", async () => {
    await api("POST", "/api/v1/auth/logout").catch(() => null);
    signOutDrafts();
    location.href = "/login";
  });
}

// --- the live stream of workspace events ------------------------------------------------
// Where no socket opens (a proxy or firewall that drops WebSockets) the page asks for what
// is new every few seconds instead, until a socket opens again.
const POLL_MS = 3000;
const POLL_HIDDEN_MS = 15000;

function connectStream(onEvent) {
  // The page's first socket starts from the newest event when the page was rendered: what
  // committed meanwhile is sent first.
  const rendered = document.body.dataset.lastEventId;
  let last = rendered ? Number(rendered) : null;
  let fromPage = last !== null;
  let delay = 500;
  let unopened = 0;
  let polling = 0; // the running poll loop's number, 0 while none runs
  let loops = 0;
  let pollTimer = null;
  let cursor = null;
  let pending = null; // the ids below the cursor whose events may still come, as polls name them
  let saidAt = 0; // where the next poll's "what was said" (viewing, typing) begins
  // A replay after a reconnect (and each poll) may repeat events we have (ids commit out
  // of order on PostgreSQL, so the server resends recent ones): each id is handled once.
  const seen = new Set();
  const handle = (event) => {
    if (event.id) {
      if (seen.has(event.id)) return;
      seen.add(event.id);
      if (seen.size > 5000) seen.delete(seen.values().next().value);
      last = Math.max(last || 0, event.id);
    }
    onEvent(event);
    // Other modules of the page (the customer panel) follow the same stream.
    document.dispatchEvent(new CustomEvent("rapport:event", { detail: event }));
  };
  const poll = () => {
    if (polling) return;
    const mine = polling = ++loops; // a loop left behind by unpoll() stops at its next step
    cursor = last;
    // From the page: the ids pending as it rendered come if they commit (as to its socket).
    // After a socket: none known, and the first poll sends the recent ones again instead.
    pending = fromPage ? document.body.dataset.pendingEventIds || "" : null;
    fromPage = false; // the socket that opens later replays the recent ones too
    const tick = async () => {
      if (polling !== mine) return;
      let wait = document.visibilityState === "visible" ? POLL_MS : POLL_HIDDEN_MS;
      try {
        // A request a proxy leaves hanging must not stop the loop: given up after 20 s.
        const since = cursor === null ? ""
          : `?after=${cursor}${pending === null ? "&stragglers=1" : `&pending=${pending}`}&said_after=${saidAt}`;
        const page = await Promise.race([
          api("GET", `/api/v1/events${since}`),
          new Promise((_, fail) => setTimeout(() => fail(new Error("no answer")), 20000)),
        ]);
        if (polling !== mine) return;
        // Away longer than the server keeps events: what was missed is reloaded whole.
        if (page.reset) { location.reload(); return; }
        page.events.forEach(handle);
        // Each poll names the ids below its cursor still to come (PostgreSQL commits ids
        // out of order): the next one brings those that committed meanwhile.
        cursor = page.cursor;
        pending = (page.pending || []).join(",");
        // Who is viewing or typing, which a socket would have heard.
        (page.said || []).forEach(handle);
        saidAt = page.said_at || saidAt;
        if (page.more) wait = 0;
      } catch (e) { /* offline a moment, or no answer: the next tick asks again */ }
      if (polling === mine) pollTimer = setTimeout(tick, wait);
    };
    tick();
  };
  const unpoll = () => { polling = 0; clearTimeout(pollTimer); };
  // What the page tells its colleagues now and nobody keeps (viewing, typing: ``say``)
  // goes over the open socket; without one, ``say`` asks by request.
  let live = null;
  document.addEventListener("rapport:say", (ev) => {
    if (!live) return;
    live.send(JSON.stringify({ type: ev.detail.type, conversation_id: ev.detail.conversation_id }));
    ev.detail.sent = true;
  });
  const open = () => {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    // The ids below the page's newest event that were pending as it rendered come if they
    // commit (PostgreSQL numbers events before they commit); the rest the page shows.
    const pending = document.body.dataset.pendingEventIds || "";
    const query = last === null ? ""
      : `?last_event_id=${last}${fromPage ? `&from_page=1&pending=${pending}` : ""}`;
    const ws = new WebSocket(`${proto}//${location.host}/api/v1/stream${query}`);
    let opened = false;
    // The socket replays from the last event we saw whatever came while we polled.
    ws.onopen = () => {
      opened = true; delay = 500; fromPage = false; unopened = 0; unpoll();
      live = ws;
      // What is said only to those listening now (who is viewing) can reach this page from
      // here on: the customer panel tells its colleagues it is here (panel.js).
      document.body.dataset.streamOpen = "1";
      document.dispatchEvent(new CustomEvent("rapport:connected"));
    };
    ws.onmessage = (msg) => {
      const event = JSON.parse(msg.data);
      if (event.type === "hello") { last = event.last_event_id; return; }
      // Away longer than the server keeps events: what was missed is reloaded whole.
      if (event.type === "reset") { location.reload(); return; }
      handle(event);
    };
    // Reconnect with the last id we saw: the server replays whatever we missed. Twice no
    // socket at all: poll meanwhile.
    ws.onclose = () => {
      if (live === ws) live = null;
      delete document.body.dataset.streamOpen;
      if (!opened && ++unopened >= 2) poll();
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
    };
  };
  open();
}

// Tell the colleagues on a conversation that this agent is ``viewing`` it or ``typing`` in
// it: over the page's socket when one is open (``connectStream``), else by a request to
// ``path`` (a page that polls). Nothing of it is kept.
function say(type, conversationId, path) {
  const detail = { type, conversation_id: conversationId, sent: false };
  document.dispatchEvent(new CustomEvent("rapport:say", { detail }));
  if (!detail.sent) background("POST", path).catch(() => null);
}

// This page as the server draws it now (a live list is redrawn from it), or null when it
// does not answer well. A fetch that hangs (after the laptop slept, say) must not stop
// every later one: it is given up after 10 s.
// The session ended meanwhile (signed out elsewhere, expired): the server answers with
// its sign-in page (a redirect the fetch followed) or a 401, which drew nothing, each later
// event fetching it again while the page went stale. The agent is sent to sign in, coming
// back here after (``?next=``), as a reload would do; with words typed on the page (a
// note, a first message) she is told instead, and what she wrote stays.
let signingIn = false;
function signInAgain(to = `/login?next=${encodeURIComponent(location.pathname + location.search)}`) {
  if (signingIn) return;
  if ([...document.querySelectorAll("textarea")].some((t) => t.value.trim())) {
    showError("You are signed out: this page no longer follows what changes. Copy what you wrote, then sign in again.");
  } else {
    signingIn = true;
    location.assign(to);
  }
}

async function pageNow() {
  if (signingIn) return null;
  const res = await fetch(location.href, { credentials: "same-origin", signal: AbortSignal.timeout(10000) });
  const answered = new URL(res.url || location.href);
  if (res.status === 401 || (res.redirected && answered.origin === location.origin && answered.pathname === "/login")) {
    signInAgain(res.status === 401 ? undefined : answered.href);
    return null;
  }
  return res.ok ? new DOMParser().parseFromString(await res.text(), "text/html") : null;
}

function notify(title, body) {
  if (!("Notification" in window) || document.hasFocus()) return;
  if (Notification.permission === "granted") new Notification(title, { body });
}

// A select that acts once a choice is made: at once with the pointer; from the keyboard,
// on Enter or on leaving it (arrows step through the options, and Chromium fires "change"
// at each step: three presses made three assignments, each told to rules and webhooks).
// ``current()`` is what the page holds now (it may follow a colleague's change); Escape
// puts it back.
function onChoice(select, current, apply) {
  let keyed = false;
  const go = () => {
    keyed = false;
    if (select.value !== current()) apply();
  };
  select.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { ev.preventDefault(); go(); }
    else if (ev.key === "Escape") { keyed = false; select.value = current(); }
    else if (ev.key !== "Tab" && !ev.ctrlKey && !ev.metaKey && !ev.altKey) keyed = true;
  });
  select.addEventListener("change", () => { if (!keyed) go(); });
  select.addEventListener("blur", () => { if (keyed) go(); });
}

// --- keyboard: single keys on the inbox and a conversation --------------------------------
// What each key does on this page (its setup fills it in): a handler returning false did
// nothing, and the key goes on to the browser. "?" shows them all (base.html's dialog).
const pageKeys = {};

// Whether a key pressed on this element types into it: a text field, a select (a letter
// picks an option) or editable text; a checkbox, a button or a link takes no text.
function typingIn(el) {
  if (!(el instanceof Element)) return false;
  if (el.isContentEditable || el.matches("textarea, select")) return true;
  return el.matches("input") && !["checkbox", "radio", "button", "submit", "reset", "file", "range", "color", "image"].includes(el.type);
}

function setupKeys() {
  const help = document.getElementById("keys-help");
  if (!help) return;
  document.addEventListener("keydown", (ev) => {
    if (ev.defaultPrevented || ev.isComposing) return;
    if (ev.key === "Escape") {
      // Out of the field, back to the keys (the dialog closes itself on Escape).
      if (typingIn(ev.target)) ev.target.blur();
      return;
    }
    // Bare keys only (Ctrl/Cmd+E is the browser's find, Ctrl/Cmd+R its reload), and never
    // while typing: a "j" in a reply is a letter.
    if (ev.ctrlKey || ev.metaKey || ev.altKey || typingIn(ev.target)) return;
    if (help.open) return; // a modal dialog: its own keys only
    if (ev.key === "?") {
      ev.preventDefault();
      help.showModal();
      return;
    }
    if (ev.key === "/") {
      const search = document.querySelector("header .search input[name=q]");
      if (!search) return;
      ev.preventDefault(); // not typed into it
      search.focus();
      search.select();
      return;
    }
    const act = Object.hasOwn(pageKeys, ev.key) ? pageKeys[ev.key] : null;
    if (act && act(ev) !== false) ev.preventDefault();
  });
}

// The inbox's list from the keyboard: j/k (and the arrows, within the list) move the
// selection, Enter or o opens it. The selection is the focus itself, on the row's link, so a
// screen reader says which conversation it is and Tab goes on from there.
const QUEUE = "rapport.queue";
const SELECT = "rapport.select"; // the conversation u came back from, to select in the list

// On a conversation opened from the inbox: j / k open the next / previous conversation of
// that list (as it was when this one was opened), u goes back to the list, the one left
// selected there. Only on the conversation opened from it, or reached by j / k: one reached
// another way (a link, the customer's page) has no place in an old list. Files chosen and
// not sent would be lost: asked first (what is written stays as a draft).
function setupQueueKeys(id, unsent, written = () => false) {
  let queue = null;
  try { queue = JSON.parse(sessionStorage.getItem(QUEUE) || "null"); } catch { /* none */ }
  const at = queue && queue.opened === id && Array.isArray(queue.ids) ? queue.ids.indexOf(id) : -1;
  if (at < 0) return;
  const leave = (to, opened) => {
    if (unsent() && !confirm("Leave this conversation? The files you chose are not sent.")) return;
    try { sessionStorage.setItem(QUEUE, JSON.stringify({ ...queue, opened })); } catch { /* off */ }
    location.assign(to);
  };
  const go = (by) => {
    const next = queue.ids[at + by];
    if (!next) return false; // the list's end: the key does nothing
    leave(`/app/conversations/${encodeURIComponent(next)}`, next);
  };
  pageKeys.j = () => go(1);
  pageKeys.k = () => go(-1);
  // Shift+E: resolve, then the next one (the last of the list: back to it).
  pageKeys.E = () => {
    if (unsent() && !confirm("Leave this conversation? The files you chose are not sent.")) return;
    if (written() && !confirm("Resolve it without sending what you wrote? It stays here as a draft.")) return;
    api("POST", `/api/v1/conversations/${encodeURIComponent(id)}/status`, { status: "resolved" }).then(
      () => {
        const next = queue.ids[at + 1];
        try { sessionStorage.setItem(QUEUE, JSON.stringify({ ...queue, opened: next || null })); } catch { /* off */ }
        if (!next) { try { sessionStorage.setItem(SELECT, id); } catch { /* off */ } }
        location.assign(next ? `/app/conversations/${encodeURIComponent(next)}` : queue.from);
      },
      (e) => showError(e.message),
    );
  };
  pageKeys.u = () => {
    try { sessionStorage.setItem(SELECT, id); } catch { /* off */ }
    leave(queue.from, null);
  };
  const where = document.getElementById("queue-place");
  if (where) {
    where.textContent = `${at + 1} of ${queue.ids.length} in the list`;
    where.hidden = false;
  }
}

function setupListKeys(list) {
  let current = null; // the id of the conversation selected
  const rows = () => [...list.querySelectorAll(":scope > li[data-id]")];
  // Kept in this page's history entry: back from a conversation, the list (drawn again)
  // selects it again, and j goes on from there, not from the top. Written at most once a
  // second, and at once when a row is opened: Safari refuses a page more than 100 writes
  // in 30 s (Firefox 200 in 10 s), and holding j down left the keys dead.
  let saved = null;
  let saving = null;
  const remember = () => {
    clearTimeout(saving);
    saving = null;
    if (saved === current) return;
    try {
      history.replaceState({ ...(history.state || {}), selected: current }, "");
      saved = current;
    } catch { /* over the browser's budget: the next write */ }
  };
  const rememberSoon = () => { if (!saving) saving = setTimeout(remember, 1000); };
  list.addEventListener("click", (ev) => {
    if (!ev.target.closest("li[data-id] a")) return;
    remember();
    // The list opened from, for the conversation page's j / k / u (this tab only).
    try {
      const opened = ev.target.closest("li[data-id]").dataset.id;
      sessionStorage.setItem(QUEUE, JSON.stringify({ ids: rows().map((li) => li.dataset.id), from: location.pathname + location.search, opened }));
    } catch { /* storage off: those keys do nothing */ }
  });
  const select = (li, focus) => {
    for (const row of list.querySelectorAll(":scope > li.selected")) {
      row.classList.remove("selected");
      row.querySelector("a")?.removeAttribute("aria-current");
    }
    current = li ? li.dataset.id : null;
    rememberSoon();
    if (!li) return;
    li.classList.add("selected");
    const link = li.querySelector("a");
    link.setAttribute("aria-current", "true");
    if (focus) link.focus();
  };
  const move = (by) => {
    const all = rows();
    if (!all.length) return false;
    const at = all.findIndex((li) => li.dataset.id === current);
    select(all[at < 0 ? 0 : Math.min(Math.max(at + by, 0), all.length - 1)], true);
  };
  const open = () => {
    const li = rows().find((row) => row.dataset.id === current);
    if (!li) return false;
    li.querySelector("a").click();
  };
  // Tabbing or clicking into a row selects it too: the keys go on from there.
  list.addEventListener("focusin", (ev) => {
    const li = ev.target.closest("li[data-id]");
    if (li) select(li, false);
  });
  const inList = () => list.contains(document.activeElement);
  let left = null;
  try { left = sessionStorage.getItem(SELECT); sessionStorage.removeItem(SELECT); } catch { /* off */ }
  const before = (history.state && history.state.selected) || left;
  const again = before && rows().find((row) => row.dataset.id === before);
  if (again) select(again, true);
  Object.assign(pageKeys, {
    j: () => move(1),
    k: () => move(-1),
    ArrowDown: () => (inList() ? move(1) : false),
    ArrowUp: () => (inList() ? move(-1) : false),
    o: open,
    // On the row's link Enter is the link's own, and elsewhere on the page another
    // control's (a button, the filters' summary).
    Enter: (ev) => ((ev.target === document.body || inList()) && !ev.target.closest("a, button") ? open() : false),
  });
  return {
    // What is selected and focused, before the list is drawn again (a live update)...
    held: () => ({
      id: current,
      at: rows().findIndex((li) => li.dataset.id === current),
      focus: inList() ? (document.activeElement.matches("input.pick") ? "pick" : "link") : null,
    }),
    // ...and the same after: the same conversation, or the one now in its place.
    restore: ({ id, at, focus }) => {
      if (id === null) return;
      const all = rows();
      const li = all.find((row) => row.dataset.id === id) || (at >= 0 ? all[Math.min(at, all.length - 1)] : null);
      select(li || null, false);
      if (li && focus) li.querySelector(focus === "pick" ? "input.pick" : "a")?.focus();
    },
  };
}

// --- inbox: the list refreshes itself when anything changes -----------------------------
function setupInbox() {
  const list = document.getElementById("conversation-list");
  if (!list) return;
  if ("Notification" in window && Notification.permission === "default") {
    document.addEventListener("click", () => Notification.requestPermission(), { once: true });
  }
  // The list is fetched again when something changes: the first event of a burst waits
  // 150 ms for the rest of it, and under a steady flow of events the list is fetched at
  // most once a second, one fetch at a time. (A plain debounce would never fire while a
  // busy workspace's events keep coming, and every open inbox re-fetching the page on
  // every message would load the server with each agent.)
  let timer = null;
  let running = false;
  let again = null; // asked for while a fetch ran: "now" or "soon"
  let last = 0;
  const refresh = ({ now = false } = {}) => {
    if (running) {
      again = now || again === "now" ? "now" : "soon";
      return;
    }
    if (timer && !now) return;
    clearTimeout(timer);
    timer = setTimeout(load, now ? 0 : Math.max(150, last + 1000 - Date.now()));
  };
  const load = async () => {
    timer = null;
    running = true;
    last = Date.now();
    try {
      const doc = await pageNow();
      if (!doc) return; // signed out or unavailable: the next event tries again
      const fresh = doc.getElementById("conversation-list");
      // Keep what the agent ticked: a live update must not drop a selection in progress
      // (nor the row the keys selected, nor the focus in the list).
      const picked = bulk.picked();
      const held = keys.held();
      if (fresh) list.replaceChildren(...fresh.children);
      paintLabels(list);
      bulk.restore(picked);
      keys.restore(held);
      const views = doc.querySelector("aside.views");
      if (views) {
        // The sidebar's counts are drawn anew: a link or button focused there stays so.
        const side = document.querySelector("aside.views");
        const key = (el) => el.getAttribute("href") || el.dataset.id;
        const focused = side.contains(document.activeElement) ? key(document.activeElement) : null;
        side.replaceChildren(...views.children);
        if (focused) [...side.querySelectorAll("a[href], button[data-id]")].find((el) => key(el) === focused)?.focus();
        counts.paint();
        counts.refresh();
      }
    } catch {
      // offline for a moment: the next event tries again
    } finally {
      running = false;
      const next = again;
      again = null;
      if (next) refresh({ now: next === "now" });
    }
  };
  const bulk = setupBulk(list, () => refresh({ now: true }));
  const keys = setupListKeys(list);
  const counts = setupViewCounts();
  counts.refresh();
  connectStream((event) => {
    setupNotifications(event);
    redrawMember(event);
    // SLA events change badges: a warning or breach, a policy deleted (its badges go); an
    // erased customer's conversations go (``erased``: the same, replayed after the erasure
    // removed its copies), and an inbox renamed or disabled is drawn anew.
    const changes = event.type.startsWith("conversation.") || event.type.startsWith("sla.")
      || event.type === "customer.erased" || event.type === "erased" || event.type === "inbox.updated";
    // A message deleted may have been a conversation's latest: its preview is drawn anew.
    if (changes || event.type === "message.created" || event.type === "message.deleted") refresh();
    if (event.type === "message.created" && event.payload.direction === "in") notify("New message", event.payload.text.slice(0, 80));
  });
}

// The saved views' counts beside them are asked for apart from the page, which never waits
// on them: once it is drawn, then as the list is redrawn, at most once every 5 s and one
// fetch at a time (the server keeps each count 5 s too). A redrawn sidebar shows the last
// counts until new ones come; a view too costly to count shows none.
function setupViewCounts() {
  let counts = {};
  let limit = 100;
  let timer = null;
  let running = false;
  let again = false;
  let last = 0;
  const paint = () => {
    for (const span of document.querySelectorAll(".saved-views .view-count[data-view]")) {
      const n = counts[span.dataset.view];
      const known = typeof n === "number";
      span.textContent = !known ? "" : n >= limit ? `${limit - 1}+` : String(n);
      span.title = !known ? "" : n >= limit ? `At least ${limit} conversations` : `${n} conversation${n === 1 ? "" : "s"}`;
      if (known) span.dataset.count = n; else delete span.dataset.count;
    }
  };
  const load = async () => {
    timer = null;
    running = true;
    last = Date.now();
    try {
      ({ counts, limit } = await background("GET", "/api/v1/saved-views/counts"));
      paint();
    } catch {
      // offline for a moment: the next redraw asks again
    } finally {
      running = false;
      if (again) { again = false; refresh(); }
    }
  };
  const refresh = () => {
    if (!document.querySelector(".saved-views .view-count")) return;
    if (running) { again = true; return; }
    if (!timer) timer = setTimeout(load, Math.max(0, last + 5000 - Date.now()));
  };
  return { paint, refresh };
}

// --- the inbox's filters: a choice applies at once; on a phone, folded while none is on ----
function setupFilterBox() {
  const box = document.getElementById("filter-box");
  if (box && box.dataset.on === "0" && window.matchMedia("(max-width: 760px)").matches) box.open = false;
  // Back to a list, the browser puts back what was picked on it before leaving (a status
  // chosen and applied): the form says what the list shows, as the server drew it.
  const form = document.getElementById("filters");
  if (!form) return;
  window.addEventListener("pageshow", () => form.reset());
  // A status, channel, priority, SLA state or sort chosen applies at once, as Apply would
  // (the address keeps it, to share and to go back to); words and dates wait for Apply,
  // or a list would be fetched at each key.
  for (const select of form.querySelectorAll("select")) {
    const drawn = select.value; // as the server drew the list
    onChoice(select, () => drawn, () => form.requestSubmit());
  }
}

// --- bulk actions: tick conversations, then assign, label or resolve them at once -------
function setupBulk(list, done) {
  const form = document.getElementById("bulk");
  const none = { picked: () => [], restore: () => {} };
  if (!form) return none;
  const all = document.getElementById("select-all");
  const count = document.getElementById("bulk-count");
  const boxes = () => [...list.querySelectorAll("input.pick")];
  const picked = () => boxes().filter((b) => b.checked).map((b) => b.value);
  const update = () => {
    const n = picked().length;
    count.textContent = `${n} selected`;
    form.classList.toggle("picking", n > 0);  // on a phone, the actions show once some are ticked
    all.checked = n > 0 && n === boxes().length;
    all.indeterminate = n > 0 && n < boxes().length;
  };
  list.addEventListener("change", (ev) => { if (ev.target.matches("input.pick")) update(); });
  all.addEventListener("change", () => { boxes().forEach((b) => { b.checked = all.checked; }); update(); });
  form.addEventListener("submit", (ev) => ev.preventDefault());
  form.querySelectorAll("button[data-bulk]").forEach((btn) => btn.addEventListener("click", async () => {
    const ids = picked();
    if (!ids.length) { showError("Select at least one conversation first."); return; }
    const kind = btn.dataset.bulk;
    let body;
    if (kind === "assign_agent") {
      const agent = form.elements.assignee_id.value;
      if (!agent) { showError("Choose an agent to assign."); return; }
      body = { ids, action: "assign", assignee_id: agent };
    } else if (kind === "assign_team") {
      const team = form.elements.team_id.value;
      if (!team) { showError("Choose a team to assign."); return; }
      body = { ids, action: "assign", team_id: team };
    } else if (kind === "label") {
      const label = form.elements.label.value.trim();
      if (!label) { showError("Type a label to add."); return; }
      body = { ids, action: "label", labels: [label] };
    } else if (kind === "macro") {
      const macro = form.elements.macro_id.value;
      if (!macro) { showError("Choose a macro to run."); return; }
      body = { ids, action: "macro", macro_id: macro };
    } else {
      body = { ids, action: "resolve" };
    }
    try {
      const out = await api("POST", "/api/v1/conversations/bulk", body);
      boxes().forEach((b) => { b.checked = false; });
      update();
      document.getElementById("bulk-result").textContent = `${out.items.length} updated`;
      // A macro's actions left out somewhere (what they name has gone): said, once each.
      const left = Object.values(out.skipped || {}).flat();
      const once = [...new Map(left.map((s) => [`${s.index}`, s])).values()];
      if (once.length) showError(macroSkipped(form.elements.macro_id.selectedOptions[0].textContent, once));
      done();
    } catch (e) {
      document.getElementById("bulk-result").textContent = "";
      showError(e.message);
    }
  }));
  return {
    picked,
    restore: (ids) => {
      boxes().forEach((b) => { b.checked = ids.includes(b.value); });
      update();
    },
  };
}

// --- drafts: a reply or note written and not sent is kept until it is ----------------------
// In this browser, per member and conversation: leaving the page (a link, Back, j / k, a
// reload, a closed tab) loses nothing, and the conversation opens with it again. Signing
// out forgets them all (a shared computer); any older than DRAFT_DAYS are dropped.
const DRAFT = "rapport.draft.";
const DRAFT_DAYS = 14;
const DRAFT_MS = DRAFT_DAYS * 24 * 3600 * 1000;
// Written when a member signs out, heard by the browser's other tabs (the storage event):
// from then on no page keeps a draft, not even one closed after (its composer still full).
const SIGNED_OUT = "rapport.signed-out";
let draftsOff = false;
window.addEventListener("storage", (ev) => { if (ev.key === SIGNED_OUT) draftsOff = true; });

function draftKey(id) { return `${DRAFT}${document.body.dataset.user}.${id}`; }

function readDraft(id) {
  try {
    const d = JSON.parse(localStorage.getItem(draftKey(id)) || "null");
    const fresh = d && Date.now() - (Number(d.at) || 0) <= DRAFT_MS;
    return fresh && typeof d.text === "string" && d.text.trim() ? d : null;
  } catch { return null; }
}

function keepDraft(id, { text, mode, cc, bcc }) {
  if (draftsOff) return;
  try {
    if (text.trim()) localStorage.setItem(draftKey(id), JSON.stringify({ text, mode, cc, bcc, at: Date.now() }));
    else localStorage.removeItem(draftKey(id));
  } catch { /* storage full or off: the draft lives as long as the page */ }
}

// Signing out: every draft in this browser forgotten, and no page (here or in another tab)
// keeps one again.
function signOutDrafts() {
  draftsOff = true;
  forgetDrafts();
  try { localStorage.setItem(SIGNED_OUT, String(Date.now())); } catch { /* storage off */ }
}

function forgetDrafts({ olderThan = 0 } = {}) {
  try {
    const now = Date.now();
    for (const key of Object.keys(localStorage)) {
      if (!key.startsWith(DRAFT)) continue;
      let at = 0;
      try { at = JSON.parse(localStorage.getItem(key)).at || 0; } catch { /* unreadable: dropped */ }
      if (!olderThan || now - at > olderThan) localStorage.removeItem(key);
    }
  } catch { /* storage off */ }
}

// A conversation list marks the conversations this member has a draft in (the rows are
// drawn again as the list follows the stream: marked again each time).
function setupDraftMarks() {
  forgetDrafts({ olderThan: DRAFT_MS });
  const mark = (list) => {
    for (const li of list.querySelectorAll(":scope > li[data-id]")) {
      const link = li.querySelector("a");
      const has = readDraft(li.dataset.id) !== null;
      const tag = link && link.querySelector(".draft-tag");
      if (has && link && !tag) {
        const t = document.createElement("span");
        t.className = "draft-tag";
        t.title = "You wrote something here and have not sent it";
        t.textContent = "Draft";
        link.querySelector(".who")?.after(t);
      } else if (!has && tag) tag.remove();
    }
  };
  for (const list of document.querySelectorAll("ul.conversations")) {
    mark(list);
    new MutationObserver(() => mark(list)).observe(list, { childList: true });
  }
}

// --- conversation: thread, composer, assignment, status -------------------------------
// Who wrote a message, as the server-rendered thread says it (message.html).
function senderName(m) {
  const page = document.getElementById("conversation");
  const senders = JSON.parse(page?.dataset.senders || "{}");
  let who = "Rapport";
  if (m.sender_type === "user") who = senders[m.sender_id] || "Agent";
  // Another than the conversation's customer: someone their mail copied (a guest).
  else if (m.sender_type === "customer") who = m.sender_name || senders[m.sender_id] || page?.dataset.customerName || "Customer";
  else if (m.sender_type === "bot") who = "Bot";
  return m.kind === "note" ? `${who} · private note` : who;
}

function messageItem(m) {
  const li = document.createElement("li");
  li.className = `msg dir-${m.direction} kind-${m.kind}`;
  li.dataset.id = m.id;
  const meta = document.createElement("div");
  meta.className = "meta";
  const at = document.createElement("time");
  at.setAttribute("datetime", m.created_at);
  at.textContent = stamp(new Date(m.created_at));
  meta.append(`${senderName(m)} `, at);
  if (m.direction === "out" && m.kind === "message") {
    const st = document.createElement("span");
    st.className = `delivery st-${m.status}`;
    st.textContent = ` ${m.status === "queued" && m.error ? "retrying" : m.status}`;
    if (m.error) st.title = m.error; // why it failed or waits, as the server-rendered page shows it
    meta.append(st);
  }
  const triage = m.meta && m.meta.triage;
  if (m.direction === "in" && triage) meta.append(...triageBadges(triage));
  if (m.direction === "in") meta.append(...senderBadges(m.meta));
  li.append(meta);
  const copies = copiesLine(m);
  if (copies) li.append(copies);
  const received = receivedLine(m);
  if (received) li.append(received);
  if (m.direction === "out" && m.status === "failed") {
    // Why it failed, where the agent reads (it was a tooltip), and a way to send it again.
    const failure = document.createElement("p");
    failure.className = "failure";
    const why = document.createElement("span");
    why.className = "why";
    why.textContent = m.error || "The provider refused it.";
    failure.append(why);
    if (document.body.dataset.role !== "viewer") {
      const again = document.createElement("button");
      again.type = "button";
      again.className = "send-again";
      again.textContent = "Send again";
      failure.append(" ", again);
    }
    li.append(failure);
  }
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = m.text; // never innerHTML: customer text is data, not markup
  li.append(body);
  if (m.attachments && m.attachments.length) li.append(fileList(m));
  return li;
}

// A message's remote images, held by the server (their address in data-remote-src, which
// no browser loads: a tracking pixel tells its sender when and where it was read), loaded
// once the agent asks for this message's. The server wrote only https addresses there.
function showImages(li) {
  for (const img of li.querySelectorAll(".body img[data-remote-src]")) {
    const url = img.dataset.remoteSrc;
    img.removeAttribute("data-remote-src");
    if (url.startsWith("https://")) img.src = url;
  }
  li.querySelector(".held-images")?.remove();
}

// Whom an email copied (Cc), and for one of ours, whom it went to unseen (Bcc) and which
// copies did not arrive (refused, bounced); as message.html draws it.
function copiesLine(m) {
  const mail = (m.kind === "message" && m.meta && m.meta.email) || {};
  const said = [];
  if (mail.cc && mail.cc.length) said.push(`Cc: ${mail.cc.join(", ")}`);
  if (m.direction === "out") {
    if (mail.bcc && mail.bcc.length) said.push(`Bcc: ${mail.bcc.join(", ")}`);
    const missed = [...(m.meta?.delivery?.refused_copies || []), ...(mail.bounced || [])];
    if (missed.length) said.push(`Not delivered to: ${missed.join(", ")}`);
  }
  if (!said.length) return null;
  const p = document.createElement("p");
  p.className = "copies";
  p.textContent = said.join(" · ");
  return p;
}

// One mail to two of the workspace's inboxes is kept once: the others it came to, named as
// the page knows the workspace's inboxes (an id it does not know is not shown); as
// message.html draws it.
function receivedLine(m) {
  const ids = (m.kind === "message" && m.meta?.email?.also_received_by) || [];
  const known = JSON.parse(document.getElementById("conversation")?.dataset.inboxes || "{}");
  const names = ids.filter((i) => Object.hasOwn(known, i)).map((i) => known[i]);
  if (!names.length) return null;
  const p = document.createElement("p");
  p.className = "received-by";
  p.textContent = `Also received by: ${names.join(", ")}`;
  return p;
}

// A message's files, each a download through the API (never opened in our origin).
function fileList(m) {
  const ul = document.createElement("ul");
  ul.className = "files";
  ul.setAttribute("aria-label", "Files");
  for (const a of m.attachments) {
    const li = document.createElement("li");
    const link = document.createElement("a");
    link.className = "file";
    link.href = `/api/v1/conversations/${m.conversation_id}/messages/${m.id}/attachments/${a.id}`;
    link.download = a.filename;
    link.textContent = a.filename;
    const size = document.createElement("span");
    size.className = "size";
    size.textContent = formatSize(a.size);
    li.append(link, " ", size);
    ul.append(li);
  }
  return ul;
}

function setupConversation() {
  const root = document.getElementById("conversation");
  if (!root) return;
  const id = root.dataset.id;
  const thread = document.getElementById("messages");
  const composer = document.getElementById("composer");
  const textarea = composer.querySelector("textarea");
  // Opened at the newest message (the thread scrolls on its own on a desktop), unless the
  // address names one (#m-...), which the browser brings into view itself.
  if (!location.hash) thread.scrollTop = thread.scrollHeight;
  // Once the images are in, the newest is at the end still.
  window.addEventListener("load", () => { if (!location.hash) thread.scrollTop = thread.scrollHeight; }, { once: true });
  // ``version``: of the HTML an event says the message has now (null: none); an answer of
  // the API (the agent's own message, just sent) leaves the body drawn as it is.
  const add = (m, { reveal = false, version } = {}) => {
    const existing = thread.querySelector(`[data-id="${m.id}"]`);
    const atEnd = thread.scrollHeight - thread.scrollTop - thread.clientHeight < 80;
    const item = messageItem(m);
    // A status update carries no files: keep the ones shown.
    const shown = existing && existing.querySelector(".files");
    if (m.attachments === undefined && shown) item.append(shown);
    // Nor, from some senders, the copies: keep those shown too.
    const copied = existing && existing.querySelector(".copies");
    if (copied && !item.querySelector(".copies")) item.querySelector(".meta").after(copied);
    // And the other inboxes it came to, which only ever grow.
    const received = existing && existing.querySelector(".received-by");
    if (received && !item.querySelector(".received-by")) (item.querySelector(".copies") || item.querySelector(".meta")).after(received);
    // Nor its HTML, which the server sanitized as it drew it (an event carries the text
    // alone): a delivery receipt redrew an email as bare text. The body drawn stays, with
    // its remote images held, or shown if the agent asked, while it is the message's body
    // still: one whose HTML an event says changed (or is gone) goes, drawn anew below (it
    // stayed, whatever the event said).
    const drawn = existing && existing.querySelector(".body.html");
    if (drawn && (version === undefined || version === drawn.dataset.version)) {
      item.querySelector(".body").replaceWith(drawn);
      const held = existing.querySelector(".held-images");
      if (held) drawn.before(held);
    }
    if (existing) existing.replaceWith(item);
    else thread.append(item);
    // A new message comes into view if the agent was at the end (or sent it); an update (a
    // delivery receipt) never moves the thread under someone reading further up.
    if (reveal || (!existing && atEnd)) thread.lastElementChild.scrollIntoView({ block: "end" });
  };
  // A message with HTML (an email) arriving live: an event carries its text alone, drawn
  // at once; then its body as the server draws it (sanitized, remote images held, its own
  // images inline), asked of the server for that message alone (the whole page was, a long
  // thread's worth per email). Once per message and version of its HTML, however many
  // events name it meanwhile; one naming another version while it is asked for asks again
  // after (the first answer may be the older body). ``version`` null: the message has no
  // HTML now, and a body asked for before is not drawn over its text.
  const asking = new Map(); // message id -> the version of its HTML wanted now
  const drawHtml = async (mid, version) => {
    const running = asking.has(mid);
    if (!running && version === null) return;
    asking.set(mid, version);
    if (running) return;
    for (let wanted = null; asking.get(mid) !== null && wanted !== asking.get(mid);) {
      wanted = asking.get(mid);
      let drawn = null;
      try {
        const res = await fetch(`/app/conversations/${encodeURIComponent(id)}/messages/${encodeURIComponent(mid)}/body`, { credentials: "same-origin", signal: AbortSignal.timeout(10000) });
        // Not ok (the message gone): the text stays. Signed out (a 401): the agent is sent
        // to sign in and back, or told, as a page that redraws itself does; the body stayed
        // bare text, and nothing said why.
        if (res.status === 401) signInAgain();
        if (res.ok) drawn = new DOMParser().parseFromString(await res.text(), "text/html").body;
      } catch { /* offline a moment: the text stays */ }
      const body = drawn?.querySelector(".body.html");
      const item = thread.querySelector(`li[data-id="${CSS.escape(mid)}"]`);
      const now = item?.querySelector(".body");
      // Only the markup the latest event names: an answer written before the message
      // changed again (its markup replaced, or gone) was drawn over what that event drew.
      if (!body || !now || body.dataset.version !== asking.get(mid) || now.dataset.version === body.dataset.version) continue;
      const shown = document.importNode(body, true);
      item.querySelector(".held-images")?.remove();
      now.replaceWith(shown);
      const held = drawn.querySelector(".held-images");
      if (held) shown.before(document.importNode(held, true));
    }
    asking.delete(mid);
  };
  thread.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button.send-again");
    if (!button) return;
    button.disabled = true;
    const mid = encodeURIComponent(button.closest("li[data-id]").dataset.id);
    try {
      add(await api("POST", `/api/v1/conversations/${id}/messages/${mid}/retry`));
    } catch (e) {
      button.disabled = false;
      showError(e.message);
    }
  });
  thread.addEventListener("click", (ev) => {
    const button = ev.target.closest("button.show-images");
    if (button) showImages(button.closest("li[data-id]"));
  });
  const attachments = setupAttachments(document.getElementById("attach-input"), document.getElementById("attached"), `/api/v1/conversations/${id}/uploads`);
  // A reply by email takes copies: the Cc offered is whom the thread's latest mail copied,
  // followed as the customer writes (unless the agent changed it), and the fields are
  // there while a reply goes by email (the customer may write through another channel).
  // The Cc the agent changed is marked (``data-edited``): hers, kept with a draft; one she
  // did not is the thread's, and follows it.
  const copiesBox = document.getElementById("copies");
  const { cc, bcc } = composer.elements;
  cc.addEventListener("input", () => { cc.dataset.edited = "1"; });
  const followCopies = async () => {
    try {
      const now = await api("GET", `/api/v1/conversations/${id}/reply-copies`);
      copiesBox.hidden = !now.by_email;
      if (!cc.dataset.edited) cc.value = now.cc.join(", ");
      showReplyInbox(now.inbox); // the customer may have written through another inbox
    } catch { /* offline a moment: the next message asks again */ }
  };
  const send = async () => {
    const text = textarea.value.trim();
    const mode = new FormData(composer).get("mode");
    if (mode !== "note" && !replyInbox.enabled) return; // refused: the composer says why
    try {
      const attachment_ids = await attachments.ids();
      if (!text && !attachment_ids.length) return;
      const body = { text, attachment_ids };
      // A reply by email: whom it copies, as written (the server says which is no address).
      const byEmail = mode !== "note" && !copiesBox.hidden;
      if (byEmail) Object.assign(body, { cc: addressList(cc.value), bcc: addressList(bcc.value) });
      const m = await api("POST", `/api/v1/conversations/${id}/${mode === "note" ? "notes" : "messages"}`, body);
      if (byEmail) {
        bcc.value = ""; // unseen copies are this reply's; the Cc stays the thread's
        delete cc.dataset.edited;
      }
      textarea.value = "";
      draft.sent();
      attachments.clear();
      add(m, { reveal: true });
      // A note's @handle that fits several colleagues, or none, notified nobody: say so.
      const unclear = (m.ambiguous_mentions || []).map(
        (a) => `@${a.handle} (${a.members.map((p) => `${p.name || p.email} <${p.email}>`).join(", ")})`);
      const said = [];
      if (unclear.length) said.push(`Not notified, as it fits several colleagues: ${unclear.join("; ")}. Write the full name (@first.last) or the email.`);
      const nobody = (m.unknown_mentions || []).map((h) => `@${h}`);
      if (nobody.length) said.push(`Not notified: ${nobody.join(", ")} names no colleague who can be mentioned (agents and admins, by first name, @first.last or email).`);
      if (said.length) showError(said.join(" "));
    } catch (e) { showError(e.message); }
  };
  setupCanned(textarea, document.getElementById("canned-menu"), (item) => `/api/v1/conversations/${id}/canned/${item.id}`);
  let lastTyping = 0;
  textarea.addEventListener("input", () => {
    // The customer's widget (and colleagues) see "typing…"; at most one ping every 3 s.
    if (Date.now() - lastTyping > 3000 && new FormData(composer).get("mode") !== "note") {
      lastTyping = Date.now();
      say("typing", id, `/api/v1/conversations/${id}/typing`);
    }
  });
  const markRead = () => background("POST", `/api/v1/conversations/${id}/read`).catch(() => null);
  markRead();
  // Opening a conversation reads the member's notifications of it (mentions, assignment).
  const unread = document.getElementById("notif-badge");
  if (unread && !unread.hidden) {
    background("POST", "/api/v1/notifications/read", { conversation_id: id }).then(countNotifications, () => null);
  }
  composer.addEventListener("submit", (ev) => { ev.preventDefault(); send(); });
  textarea.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); send(); }
  });
  let shownStatus = document.getElementById("status").textContent.trim();
  const showStatus = (status) => {
    const badge = document.getElementById("status");
    badge.textContent = status;
    badge.className = `status st-${status}`;
    // One button for the way out of the state shown: Resolve, or Reopen once resolved.
    document.getElementById("resolve").hidden = status === "resolved";
    document.getElementById("reopen").hidden = status === "open";
    // Only a real change moves the form: an update of something else (a colleague's
    // label, this agent's own priority) must not undo a choice not yet submitted.
    if (status === shownStatus) return;
    shownStatus = status;
    document.getElementById("status-select").value = status;
    document.getElementById("snooze-until").hidden = status !== "snoozed";
  };
  root.querySelectorAll("button[data-status]").forEach((btn) => btn.addEventListener("click", async () => {
    try {
      const c = await api("POST", `/api/v1/conversations/${id}/status`, { status: btn.dataset.status });
      showStatus(c.status);
    } catch (e) { showError(e.message); }
  }));
  setupStatusForm(id, showStatus);
  const showLabels = setupLabels(id);
  const priority = document.getElementById("priority");
  let prioritySet = priority.value;
  onChoice(priority, () => prioritySet, async () => {
    try {
      await api("POST", `/api/v1/conversations/${id}/priority`, { priority: priority.value });
      prioritySet = priority.value;
    } catch (e) {
      priority.value = prioritySet; // what the conversation has
      showError(e.message);
    }
  });
  const showHeld = setupHolder(root, id);
  // A macro: its changes shown at once (the stream brings them to colleagues), what it left
  // out said; the menu's last entry leads to the page that makes them.
  const macro = document.getElementById("macro");
  onChoice(macro, () => "", async () => {
    const chosen = macro.value;
    const name = macro.selectedOptions[0]?.textContent || "";
    macro.value = "";
    if (chosen === "manage") { location.assign("/app/macros"); return; }
    try {
      const out = await api("POST", `/api/v1/conversations/${id}/macros/${encodeURIComponent(chosen)}`);
      const c = out.conversation;
      showStatus(c.status);
      priority.value = prioritySet = c.priority;
      await showHeld(c);
      showLabels(c.labels);
      for (const m of c.messages) if (!thread.querySelector(`[data-id="${m.id}"]`)) add(m, { reveal: true });
      const said = macroSkipped(name, out.skipped);
      if (said) showError(said);
    } catch (e) { showError(e.message); }
  });
  // A private note is written on the notes' colour, and says so: it looked like a reply,
  // and a note meant for colleagues went to the customer.
  const submit = composer.querySelector("button[type=submit]");
  // The inbox a reply goes through, disabled by an admin (here or anywhere): a reply is
  // refused while it is, and the page went on offering Send until the agent had written it.
  // Said at once, and undone once it is on again; a note still goes.
  const inboxOff = document.getElementById("inbox-off");
  let replyInbox = { id: composer.dataset.replyInbox, enabled: inboxOff.hidden };
  const showReplyInbox = (inbox = replyInbox) => {
    replyInbox = inbox;
    inboxOff.querySelector(".name").textContent = inbox.name ?? inboxOff.querySelector(".name").textContent;
    inboxOff.hidden = inbox.enabled;
    const refused = !inbox.enabled && new FormData(composer).get("mode") !== "note";
    // Never Send back on for a conversation merged away (panel.js switched it off), until
    // its merge is undone (``partedBack``).
    submit.disabled = refused || composer.dataset.mergedAway === "1";
  };
  const showMode = () => {
    const note = new FormData(composer).get("mode") === "note";
    composer.classList.toggle("note-mode", note);
    submit.textContent = note ? "Add note" : "Send";
    textarea.placeholder = note
      ? "Write a private note: only colleagues see it; @name tells one (Ctrl+Enter adds it)"
      : "Write a reply… type / for canned responses (Ctrl+Enter sends)";
    textarea.setAttribute("aria-label", note ? "Note for colleagues" : "Reply to the customer");
    showReplyInbox();
  };
  composer.addEventListener("change", (ev) => { if (ev.target.name === "mode") showMode(); });
  showMode();
  const compose = (mode) => {
    composer.querySelector(`input[name=mode][value=${mode}]`).checked = true;
    showMode();
    textarea.focus();
  };
  pageKeys.r = () => compose("reply");
  pageKeys.n = () => compose("note");
  // The macro menu, from the keyboard: the arrows choose, Enter runs it, Escape leaves it.
  pageKeys.m = () => {
    if (macro.disabled) return false; // a viewer's
    macro.focus();
  };
  const draft = setupDraft(id, composer, textarea, showMode);
  // What is written stays as a draft; files chosen and not sent would be lost.
  setupQueueKeys(id, () => document.querySelector("#attached li") !== null, () => textarea.value.trim() !== "");
  pageKeys.e = () => {
    const resolve = document.getElementById("resolve");
    if (resolve.hidden) return false; // resolved already
    resolve.click();
  };
  // Messages deleted while the page is open (an echo's copy that its send took over, a
  // "Reopened" line a merge undone took back), or gone to another conversation (a merge
  // undone takes them back to theirs), leave the thread; an event about one of them that
  // comes after (a late commit, replayed) does not draw it again.
  const gone = new Set();
  const drop = (mid) => {
    gone.add(mid);
    thread.querySelector(`li[data-id="${CSS.escape(mid)}"]`)?.remove();
  };
  // Messages that came into the conversation without an event of their own (a merge undone
  // gives it back those the merge took, and what its customer wrote meanwhile) are drawn
  // from the page as the server draws it now, each in its place in the thread; those shown
  // stay as drawn (an email's images the agent chose to see). One fetch at a time: asked
  // again meanwhile, once more after it.
  let fetching = false;
  let fetchAgain = false;
  const threadNow = async () => {
    if (fetching) { fetchAgain = true; return; }
    fetching = true;
    do {
      fetchAgain = false;
      const doc = await pageNow().catch(() => null);
      // Another page (merged away again meanwhile, the survivor's): nothing of it is drawn.
      if (doc?.getElementById("conversation")?.dataset.id !== id) continue;
      let after = null;
      for (const item of doc.querySelectorAll("#messages > li[data-id]")) {
        const shown = thread.querySelector(`:scope > li[data-id="${CSS.escape(item.dataset.id)}"]`);
        if (shown) { after = shown; continue; }
        if (gone.has(item.dataset.id)) continue;
        const added = document.importNode(item, true);
        if (after) after.after(added);
        else thread.prepend(added);
        after = added;
      }
    } while (fetchAgain);
    fetching = false;
  };
  // The customer beside the thread as the server has it now: their customers' merge, or
  // its undo, gives the conversation to another record (the header and panel showed the one
  // of when the page loaded until a reload), or changes the one it has. One fetch at a
  // time: asked again meanwhile, once more after it.
  let reading = false;
  let readAgain = false;
  const customerNow = async () => {
    if (reading) { readAgain = true; return; }
    reading = true;
    do {
      readAgain = false;
      const doc = await pageNow().catch(() => null);
      if (doc?.getElementById("conversation")?.dataset.id === id) showCustomer(doc);
    } while (readAgain);
    reading = false;
  };
  const shownCustomer = () => document.getElementById("panel-extra")?.dataset.customer;
  // Merged into another and given its messages back (its customers' merge undone): the
  // notice panel.js showed says so, and replies go from here again.
  const partedBack = () => {
    if (composer.dataset.mergedAway !== "1") return;
    delete composer.dataset.mergedAway;
    const file = composer.querySelector("input[type=file]");
    if (file) file.disabled = false;
    showReplyInbox();
    const notice = document.getElementById("merged-notice");
    notice.textContent = "Its customers' merge was undone: this conversation's messages are back here, and replies go here again.";
    notice.hidden = false;
  };
  connectStream((event) => {
    setupNotifications(event);
    redrawMember(event);
    const p = event.payload;
    if (event.type === "message.deleted" && p.conversation_id === id) drop(p.id);
    // A merge undone: the messages it moved leave the thread they were merged into, and
    // come back to their own (each page showed them where they were until a reload).
    if (event.type === "conversation.parted" && p.from_id === id) (p.message_ids || []).forEach(drop);
    if (event.type === "conversation.parted" && p.id === id) {
      for (const mid of p.message_ids || []) gone.delete(mid);
      partedBack();
      threadNow();
    }
    if ((event.type === "message.created" || event.type === "message.updated") && p.conversation_id === id && !gone.has(p.id)) {
      add(p, { version: p.html ? p.html_version : null });
      if (!p.html) drawHtml(p.id, null);
      else if (!thread.querySelector(`li[data-id="${CSS.escape(p.id)}"] .body.html`)) drawHtml(p.id, p.html_version);
      showGuest(p);
      if (p.direction === "in") markRead();
      if (p.direction === "in" && event.type === "message.created") followCopies();
    }
    if (event.type === "inbox.updated" && p.id === replyInbox.id) showReplyInbox(p);
    if (event.type === "customer.erased") forgetGuests(p.customer_ids || []);
    if (event.type === "conversation.updated" && p.id === id) {
      showStatus(p.status);
      if (p.priority) priority.value = prioritySet = p.priority;
      if ("assignee_id" in p && "team_id" in p) showHeld(p); // a colleague's, or a rule's
      // Gone whole to the record of the one who wrote it (their merge undone).
      if (p.customer_id && p.customer_id !== shownCustomer()) customerNow();
    }
    // Its customer merged into another (the conversation is the survivor's now), another
    // merged into its customer, or such a merge undone (it may be the restored record's).
    if ((event.type === "customer.merged" || event.type === "customer.unmerged")
      && [p.survivor_id, p.merged_id].includes(shownCustomer())) customerNow();
    // (The customer or colleagues typing, colleagues viewing: the notice in panel.js.)
  });
}

// The conversation's customer drawn from ``doc``, the page as the server has it now: the
// header's name and the names the thread gives the customer's messages; the panel whole
// when the conversation has another record now (panel.js mounts its parts on it,
// ``rapport:customer-shown``: those of the one before stop), else what the server draws of
// the record that holds nothing typed (its name, handles, timeline, other conversations),
// the panel's own parts reading theirs again as they follow the merge.
function showCustomer(doc) {
  const page = document.getElementById("conversation");
  const fresh = doc.getElementById("conversation");
  const aside = page?.querySelector("aside.customer");
  const drawn = fresh?.querySelector("aside.customer");
  if (!aside || !drawn) return;
  const take = (selector, from = fresh, into = page) => {
    const now = from.querySelector(selector);
    const shown = into.querySelector(selector);
    if (now && shown) shown.replaceWith(document.importNode(now, true));
  };
  take(".thread > header > h1");
  take("#guests");
  document.title = doc.title;
  for (const key of ["customer", "customerName", "senders"]) {
    if (fresh.dataset[key] !== undefined) page.dataset[key] = fresh.dataset[key];
  }
  for (const item of fresh.querySelectorAll("#messages > li[data-id]")) {
    const sender = page.querySelector(`#messages > li[data-id="${CSS.escape(item.dataset.id)}"] .meta .sender`);
    const now = item.querySelector(".meta .sender");
    if (sender && now) sender.textContent = now.textContent;
  }
  const was = aside.querySelector("#panel-extra")?.dataset.customer;
  if (drawn.querySelector("#panel-extra")?.dataset.customer !== was) {
    aside.replaceWith(document.importNode(drawn, true));
    document.dispatchEvent(new CustomEvent("rapport:customer-shown"));
    return;
  }
  for (const selector of [":scope > h2", "#customer-handles", "#timeline", "#previous-conversations"]) take(selector, drawn, aside);
  // Their name in the form that corrects it, unless the agent is changing it.
  const name = aside.querySelector("#customer-name input[name=name]");
  const named = drawn.querySelector("#customer-name input[name=name]");
  if (name && named && name.value === name.defaultValue) name.value = name.defaultValue = named.defaultValue;
}

// Someone copied on the thread who writes in it (a guest: the live message names them) joins
// the header's "Also writing here" line, linked to their page, unless already there.
function showGuest(m) {
  const line = document.getElementById("guests");
  if (!line || !m.sender_name || m.sender_type !== "customer" || !m.sender_id) return;
  const names = line.querySelector(".names");
  const href = `/app/customers/${encodeURIComponent(m.sender_id)}`;
  if ([...names.querySelectorAll("a")].some((a) => a.getAttribute("href") === href)) return;
  const link = document.createElement("a");
  link.href = href;
  link.textContent = m.sender_name;
  if (names.children.length) names.append(", ");
  names.append(link);
  line.hidden = false;
}

// Someone copied on the thread erased (by an admin, here or elsewhere): no longer named on
// the "Also writing here" line (the line goes with the last of them), nor kept among the
// page's names for messages to come. Their messages leave the thread (panel.js). Each link
// is to the record their merges ended in, whose id the event names with the others.
function forgetGuests(ids) {
  const line = document.getElementById("guests");
  const page = document.getElementById("conversation");
  if (!line || !page || !ids.length) return;
  const gone = new Set(ids.map((cid) => `/app/customers/${encodeURIComponent(cid)}`));
  const names = line.querySelector(".names");
  const left = [...names.querySelectorAll("a")].filter((a) => !gone.has(a.getAttribute("href")));
  names.replaceChildren(...left.flatMap((a, i) => (i ? [", ", a] : [a])));
  line.hidden = left.length === 0;
  const senders = JSON.parse(page.dataset.senders || "{}");
  for (const cid of ids) delete senders[cid];
  page.dataset.senders = JSON.stringify(senders);
}

// The composer keeps what is written as the conversation's draft (each keystroke, and as
// the page goes: a canned response put in without typing counts), and opens with it again,
// saying so, with a way to throw it away.
function setupDraft(id, composer, textarea, showMode) {
  const note = document.getElementById("draft-note");
  const mode = () => new FormData(composer).get("mode");
  // What this page last read or kept: only a change made here is kept (a second tab on the
  // conversation, its composer empty, must not erase the draft written in the first).
  // A reply by email keeps whom it copies with it: the Bcc, and the Cc if the agent
  // changed it (an address taken out stays out; one she left follows the thread).
  const { cc, bcc } = composer.elements;
  const now = () => ({ text: textarea.value, mode: mode(), cc: cc.dataset.edited ? cc.value : undefined, bcc: bcc.value });
  let kept = null;
  const keep = () => {
    const here = now();
    if (["text", "mode", "cc", "bcc"].every((k) => here[k] === kept[k])) return;
    // Nothing written here, nor before: another tab's draft is not this page's to erase.
    const nothing = !here.text.trim() && !kept.text.trim();
    kept = here;
    if (nothing) return;
    keepDraft(id, kept);
    if (note && !textarea.value.trim()) note.hidden = true;
  };
  const found = readDraft(id);
  if (found && !textarea.value.trim()) {
    textarea.value = found.text;
    const radio = composer.querySelector(`input[name=mode][value=${found.mode === "note" ? "note" : "reply"}]`);
    if (radio) radio.checked = true;
    if (typeof found.cc === "string") {
      cc.value = found.cc;
      cc.dataset.edited = "1"; // the agent's, not the thread's to follow
    }
    if (typeof found.bcc === "string") bcc.value = found.bcc;
    showMode();
    if (note) {
      note.querySelector("time").textContent = stamp(new Date(found.at || Date.now()));
      note.hidden = false;
    }
  }
  kept = now();
  textarea.addEventListener("input", keep);
  cc.addEventListener("input", keep);
  bcc.addEventListener("input", keep);
  composer.addEventListener("change", (ev) => { if (ev.target.name === "mode") keep(); });
  window.addEventListener("pagehide", keep);
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "hidden") keep(); });
  note?.querySelector("button")?.addEventListener("click", () => {
    textarea.value = "";
    keep();
    note.hidden = true;
    textarea.focus();
  });
  // Sent: the composer is empty, and so is the draft.
  return { sent: keep };
}

// --- who has the conversation: an agent and a team, each chosen on its own -------------
// Each change sends only itself (the API keeps what is left out), so a colleague changing
// the other at the same moment keeps theirs; both selects follow the stream.
function setupHolder(root, id) {
  const assign = document.getElementById("assign");
  const team = document.getElementById("team");
  const held = { assignee_id: root.dataset.assignee || null, team_id: root.dataset.team || null };
  const has = (select, value) => [...select.options].some((o) => o.value === value);
  // A team made since the page was drawn: the workspace's teams asked again.
  const teamsNow = async () => {
    const teams = await api("GET", "/api/v1/teams");
    team.replaceChildren(new Option("No team", ""), ...teams.map((t) => new Option(t.name, t.id)));
  };
  const show = async (c) => {
    held.assignee_id = c.assignee_id || null;
    held.team_id = c.team_id || null;
    // One no longer an agent (a resolved conversation keeps who handled it) is not
    // offered: shown as the page draws it, unassigned.
    assign.value = held.assignee_id && has(assign, held.assignee_id) ? held.assignee_id : "";
    if (held.team_id && !has(team, held.team_id)) await teamsNow().catch(() => null);
    team.value = held.team_id || "";
  };
  const change = async (to) => {
    try {
      await show(await api("POST", `/api/v1/conversations/${id}/assign`, to));
    } catch (e) {
      await show(held); // the selects back to what the conversation has
      showError(e.message);
    }
  };
  onChoice(assign, () => held.assignee_id || "", () => change({ assignee_id: assign.value || null }));
  onChoice(team, () => held.team_id || "", () => change({ team_id: team.value || null }));
  return show;
}

// --- status with "snoozed until", and labels, on the conversation page ------------------
function localInputValue(date) {
  // A datetime-local input speaks the browser's local time, without an offset.
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function setupStatusForm(id, showStatus) {
  const form = document.getElementById("status-form");
  if (!form) return;
  const select = document.getElementById("status-select");
  const input = document.getElementById("snooze-input");
  const box = document.getElementById("snooze-until");
  const tomorrow = new Date(Date.now() + 24 * 3600 * 1000);
  tomorrow.setHours(9, 0, 0, 0);
  input.value = localInputValue(input.dataset.utc ? new Date(input.dataset.utc) : tomorrow);
  input.min = localInputValue(new Date());
  select.addEventListener("change", () => {
    box.hidden = select.value !== "snoozed";
    if (!box.hidden) input.focus();
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { status: select.value };
    if (select.value === "snoozed") {
      const when = new Date(input.value);
      if (!input.value || Number.isNaN(when.getTime())) { showError("Choose when the snooze ends."); return; }
      body.snoozed_until = when.toISOString();
    }
    try {
      const c = await api("POST", `/api/v1/conversations/${id}/status`, body);
      showStatus(c.status);
    } catch (e) { showError(e.message); }
  });
}

function setupLabels(id) {
  const list = document.getElementById("label-list");
  const form = document.getElementById("label-form");
  if (!list || !form) return () => null;
  const colours = JSON.parse(list.dataset.colours || "{}");
  const render = (labels) => {
    list.replaceChildren(...labels.map((label) => {
      const li = document.createElement("li");
      const chip = document.createElement("span");
      chip.className = "label";
      chip.textContent = label;
      if (Object.hasOwn(colours, label)) chip.dataset.colour = colours[label];
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove-label";
      remove.dataset.label = label;
      remove.setAttribute("aria-label", `Remove label ${label}`);
      remove.textContent = "×";
      li.append(chip, remove);
      return li;
    }));
    paintLabels(list);
  };
  list.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button.remove-label");
    if (!btn) return;
    try {
      render(await api("DELETE", `/api/v1/conversations/${id}/labels/${encodeURIComponent(btn.dataset.label)}`));
    } catch (e) { showError(e.message); }
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = form.elements.label;
    try {
      render(await api("POST", `/api/v1/conversations/${id}/labels`, { labels: [input.value] }));
      input.value = "";
    } catch (e) { showError(e.message); }
  });
  return render;
}

// --- presence heartbeat and notifications, on every signed-in page ----------------------
function setupPresence() {
  const select = document.getElementById("presence");
  if (!select) return;
  const saved = localStorage.getItem("rapport.availability") || "online";
  select.value = saved;
  const beat = (availability) => background("PUT", "/api/v1/presence", { availability }).catch(() => null);
  beat(saved);
  // Routing counts an agent as online only while their browser keeps saying so.
  setInterval(() => beat(select.value), 60000);
  select.addEventListener("change", () => {
    localStorage.setItem("rapport.availability", select.value);
    beat(select.value);
  });
}

// The count beside "Notifications" is asked of the server on each change: counting events
// up and down would count one twice when a replay repeats it.
async function countNotifications() {
  const badge = document.getElementById("notif-badge");
  if (!badge) return;
  try {
    const { unread } = await api("GET", "/api/v1/notifications/unread-count");
    const cap = Number(badge.dataset.cap);
    badge.textContent = unread >= cap ? `${cap - 1}+` : String(unread);
    badge.hidden = unread === 0;
  } catch (e) { /* offline a moment: the count stays until the next change */ }
}

// Whether the event is about the signed-in member's own notifications.
function mineNotifications(event) {
  const personal = event.type === "notification.created" || event.type === "notifications.read";
  return personal && event.payload.user_id === document.body.dataset.user;
}

function setupNotifications(event) {
  if (!mineNotifications(event)) return;
  countNotifications();
  if (event.type === "notification.created") {
    notify(event.payload.kind === "mention" ? "You were mentioned" : "Assigned to you", event.payload.text);
  }
}

// The notifications page: drawn again (as the server draws it) when one comes or is read.
function setupNotificationsPage() {
  const list = document.getElementById("notification-list");
  if (!list) return;
  const allRead = document.getElementById("notifications-all-read");
  const error = document.getElementById("notifications-error");
  const redraw = async () => {
    const doc = await pageNow();
    if (!doc) return;
    const fresh = doc.getElementById("notification-list");
    if (fresh) list.replaceChildren(...fresh.children);
    // As the server counts them, on every page: an older page may show no unread one
    // while newer ones wait (the button went grey with those still unread).
    const freshAllRead = doc.getElementById("notifications-all-read");
    if (freshAllRead) {
      allRead.disabled = freshAllRead.disabled;
      allRead.dataset.upTo = freshAllRead.dataset.upTo || "";
    }
  };
  allRead.addEventListener("click", async () => {
    error.hidden = true;
    try {
      // Up to the newest drawn: one that came since (its redraw not in yet) stays unread.
      const upTo = allRead.dataset.upTo;
      await api("POST", "/api/v1/notifications/read", upTo ? { up_to: upTo } : {});
      await redraw();
      countNotifications();
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    }
  });
  connectStream((event) => {
    setupNotifications(event);
    if (mineNotifications(event)) redraw().catch(() => null);
  });
}

// --- settings: forms post JSON to the API, then the page shows the result -----------------
function formJson(form) {
  const out = {};
  for (const el of form.elements) {
    // :disabled, not .disabled: inside a disabled fieldset (another channel's settings)
    // an input is disabled without its own attribute saying so.
    if (!el.name || el.matches(":disabled")) continue;
    if (el.name.startsWith("settings.")) {
      const value = settingValue(el);
      if (value !== null && !(Array.isArray(value) && !value.length)) {
        (out.settings ||= {})[el.name.slice(9)] = value;
      }
    } else if (el.type === "checkbox") out[el.name] = el.checked;
    else if (el.type === "number") { if (el.value !== "") out[el.name] = Number(el.value); }
    else if (el.value !== "") out[el.name] = el.value;
  }
  return form.dataset.wrap ? { [form.dataset.wrap]: out } : out;
}

// An inbox setting's input as the API takes it (channels.base.Setting's kinds); null clears.
function settingValue(el) {
  const kind = el.dataset.kind;
  if (kind === "flag") return el.checked;
  if (kind === "number") return el.value === "" ? null : Number(el.value);
  if (kind === "list") return el.value.split(/[\n,]/).map((v) => v.trim()).filter(Boolean);
  if (kind === "secret") return el.value === "" ? null : el.value;  // a credential as typed
  return el.value.trim() === "" ? null : el.value.trim();
}

// The settings an inbox's form changed: each input whose value moved, and each credential
// typed anew or ticked to be cleared. What was not touched is not sent.
function changedSettings(form) {
  const out = {};
  for (const el of form.querySelectorAll("[name^='settings.']")) {
    const name = el.name.slice(9);
    const clear = form.querySelector(`[data-clear='${el.name}']`);
    if (el.dataset.kind === "secret") {
      if (clear && clear.checked) out[name] = null;
      else if (el.value !== "") out[name] = el.value;
      continue;
    }
    const moved = el.type === "checkbox" ? el.checked !== el.defaultChecked
      : el.tagName === "SELECT" ? el.value !== el.dataset.was
      : el.value !== el.defaultValue;
    if (moved) out[name] = settingValue(el);
  }
  return out;
}

// The new-inbox form shows (and sends) the settings of the channel chosen.
function setupNewInbox() {
  const form = document.getElementById("new-inbox");
  if (!form) return;
  const show = () => {
    for (const set of form.querySelectorAll("fieldset[data-channel]")) {
      const on = set.dataset.channel === form.elements.channel.value;
      set.hidden = !on;
      set.disabled = !on;
    }
  };
  form.elements.channel.addEventListener("change", show);
  show();
}

function setupSettings() {
  const error = document.getElementById("settings-error");
  if (!error) return;
  const fail = (msg) => { error.textContent = msg; error.hidden = false; window.scrollTo(0, 0); };
  document.querySelectorAll("form[data-api]").forEach((form) => form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api(form.dataset.method || "POST", form.dataset.api, formJson(form));
      location.reload();
    } catch (e) { fail(e.message); }
  }));
}

// --- your account: name, password, two-factor, every member's own ---------------------
function setupAccount() {
  const nameForm = document.getElementById("account-name");
  if (!nameForm) return;
  const say = (id, msg) => {
    const box = document.getElementById(id);
    box.textContent = msg;
    box.hidden = !msg;
  };
  nameForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    say("account-name-error", "");
    document.getElementById("account-name-done").hidden = true;
    try {
      const me = await api("PATCH", "/api/v1/auth/me", { name: nameForm.elements.name.value });
      nameForm.elements.name.value = me.name;
      document.querySelectorAll("header .me").forEach((el) => { el.textContent = me.name; });
      document.getElementById("account-name-done").hidden = false;
    } catch (e) { say("account-name-error", e.message); }
  });
  const pw = document.getElementById("account-password");
  pw.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    say("account-password-error", "");
    document.getElementById("account-password-done").hidden = true;
    const fd = new FormData(pw);
    if (fd.get("new_password") !== fd.get("again")) { say("account-password-error", "The two new passwords differ."); return; }
    const body = { current_password: fd.get("current_password"), new_password: fd.get("new_password") };
    if (fd.has("totp_code")) body.totp_code = fd.get("totp_code");
    try {
      const me = await api("POST", "/api/v1/auth/password", body);
      // This browser's session was renewed with the change: its new CSRF token is in the answer.
      if (me.csrf_token) document.body.dataset.csrf = me.csrf_token;
      pw.reset();
      document.getElementById("account-password-done").hidden = false;
    } catch (e) { say("account-password-error", e.message); }
  });
  const fail = (msg) => say("account-error", msg);
  document.getElementById("enrol-2fa").addEventListener("click", async () => {
    try {
      const out = await api("POST", "/api/v1/auth/totp/enroll");
      document.getElementById("totp-secret").textContent = out.secret;
      document.getElementById("totp-qr").src = out.qr_code;  // drawn by Rapport itself
      document.getElementById("enrol-box").hidden = false;
    } catch (e) { fail(e.message); }
  });
  const activate = document.getElementById("totp-activate");
  activate.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const fd = new FormData(activate);
      const out = await api("POST", "/api/v1/auth/totp/activate", { code: fd.get("code"), password: fd.get("password") });
      activate.reset();
      const box = document.getElementById("recovery");
      box.querySelector("code").textContent = out.recovery_codes.join("  ");
      box.hidden = false;
    } catch (e) { fail(e.message); }
  });
  document.getElementById("logout-all").addEventListener("click", async () => {
    await api("POST", "/api/v1/auth/logout-all").catch(() => null);
    signOutDrafts();
    location.href = "/login";
  });
  setupTokens(say);
}

// --- account: the member's API tokens in this workspace ------------------------------------
function setupTokens(say) {
  const form = document.getElementById("token-create");
  const table = document.querySelector("#tokens tbody");
  const row = (t) => {
    const tr = document.createElement("tr");
    tr.dataset.token = t.id;
    const cells = [t.name || "—", `${t.prefix}…`, t.role, t.created_at.slice(0, 16).replace("T", " "), "active"];
    cells.forEach((text, i) => {
      const td = tr.insertCell();
      if (i === 1) td.append(Object.assign(document.createElement("code"), { textContent: text }));
      else td.textContent = text; // a name is data, never markup
      if (i === 4) td.className = "state";
    });
    const revoke = Object.assign(document.createElement("button"), { type: "button", className: "revoke-token", textContent: "Revoke" });
    revoke.dataset.id = t.id;
    tr.insertCell().append(revoke);
    return tr;
  };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    say("token-error", "");
    try {
      const t = await api("POST", "/api/v1/tokens", { name: form.elements.name.value.trim(), role: form.elements.role.value });
      table.querySelector("tr.empty")?.remove();
      table.append(row(t));
      document.getElementById("token-value").textContent = t.token;
      document.getElementById("token-made").hidden = false;
      form.elements.name.value = "";
    } catch (e) { say("token-error", e.message); }
  });
  table.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button.revoke-token");
    if (!button) return;
    const tr = button.closest("tr");
    const name = tr.cells[0].textContent;
    if (!confirm(`Revoke the token “${name}”? What uses it is refused from now on.`)) return;
    say("token-error", "");
    try {
      await api("DELETE", `/api/v1/tokens/${encodeURIComponent(button.dataset.id)}`);
      tr.querySelector(".state").textContent = "revoked";
      button.remove();
    } catch (e) { say("token-error", e.message); }
  });
}

// --- members: every open page redraws a colleague who joined, changed or left ----------
function redrawMember(event) {
  if (!event.type.startsWith("member.")) return;
  const p = event.payload;
  const gone = event.type === "member.removed";
  const table = document.querySelector("#members tbody");
  if (table) {
    const row = table.querySelector(`tr[data-user="${CSS.escape(p.user_id)}"]`);
    if (gone) { if (row) row.remove(); }
    else {
      const fresh = document.createElement("tr");
      fresh.dataset.user = p.user_id;
      for (const v of [p.name, p.email, p.role, p.capacity, p.totp_enabled ? "on" : "off", p.presence]) {
        fresh.insertCell().textContent = String(v); // names are data, never markup
      }
      manageMember(fresh, p);
      if (row) row.replaceWith(fresh);
      else table.append(fresh);
    }
  }
  if (event.type === "member.joined") { // their invitation was spent
    document.querySelectorAll("#invitations tbody tr").forEach((tr) => {
      if (tr.cells[0] && tr.cells[0].textContent === p.email) tr.remove();
    });
  }
  // Who conversations can be assigned to: agents and above, by name and presence.
  document.querySelectorAll("select#assign, select[name=assignee_id]").forEach((select) => {
    const option = select.querySelector(`option[value="${CSS.escape(p.user_id)}"]`);
    if (gone || p.role === "viewer") {
      if (option && !option.selected) option.remove();
      return;
    }
    const label = `${p.name || p.email} · ${p.presence || "offline"}`;
    if (option?.dataset.fixed !== undefined) return; // "Me"
    if (option) option.textContent = label;
    else select.append(new Option(label, p.user_id));
  });
  if (!gone && p.user_id === document.body.dataset.user) {
    document.querySelectorAll("header .me").forEach((el) => { el.textContent = p.name; });
  }
}

// An admin changes a member's role and capacity, or removes them, from their row. The
// row is drawn again when the change is told (member.updated / member.removed).
function manageMember(tr, member) {
  const table = tr.closest("table") || document.getElementById("members");
  if (!table || table.dataset.me === undefined) return;
  const cell = tr.insertCell();
  cell.className = "manage";
  if (member.user_id === table.dataset.me) { cell.textContent = "you"; return; }
  const role = document.createElement("select");
  role.setAttribute("aria-label", `Role of ${member.name || member.email}`);
  const roles = ["viewer", "agent", "admin", ...(table.dataset.owner === "true" ? ["owner"] : [])];
  for (const r of roles) role.append(new Option(r, r, false, r === member.role));
  if (!roles.includes(member.role)) role.append(new Option(member.role, member.role, false, true));
  const capacity = Object.assign(document.createElement("input"), { type: "number", min: 0, max: 1000, value: member.capacity, className: "capacity" });
  capacity.setAttribute("aria-label", `Capacity of ${member.name || member.email}`);
  const save = Object.assign(document.createElement("button"), { type: "button", textContent: "Save" });
  const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "Remove" });
  save.addEventListener("click", async () => {
    try {
      await api("PATCH", `/api/v1/members/${encodeURIComponent(member.user_id)}`, { role: role.value, capacity: Number(capacity.value) });
    } catch (e) { settingsFail(e.message); }
  });
  remove.addEventListener("click", async () => {
    if (!confirm(`Remove ${member.name || member.email} from the workspace? Their open conversations go back to the queue, and their API tokens stop working.`)) return;
    try {
      await api("DELETE", `/api/v1/members/${encodeURIComponent(member.user_id)}`);
    } catch (e) { settingsFail(e.message); }
  });
  cell.append(role, " ", capacity, " ", save, " ", remove);
  // For a member who lost their phone and recovery codes (an admin never resets an
  // owner's; the server says why when it refuses, an account other workspaces share).
  // The server asks for the acting member's own password: a browser left signed in must
  // not open a colleague's account to a password alone.
  if (member.totp_enabled && (member.role !== "owner" || table.dataset.owner === "true")) {
    const who = member.name || member.email;
    const reset = Object.assign(document.createElement("button"), { type: "button", textContent: "Reset 2FA" });
    reset.addEventListener("click", () => {
      if (cell.querySelector("form.totp-reset")) return;
      const form = Object.assign(document.createElement("form"), { className: "totp-reset" });
      const password = Object.assign(document.createElement("input"), {
        type: "password", name: "password", required: true, autocomplete: "current-password", placeholder: "Your password",
      });
      password.setAttribute("aria-label", `Your password, to reset the two-factor authentication of ${who}`);
      const go = Object.assign(document.createElement("button"), { type: "submit", textContent: "Confirm reset" });
      form.append(password, " ", go);
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        if (!confirm(`Turn off two-factor authentication for ${who}? They are signed out everywhere and sign in with their password alone until they enrol again.`)) return;
        try {
          await api("POST", `/api/v1/members/${encodeURIComponent(member.user_id)}/totp/reset`, { password: password.value });
          form.remove();
        } catch (e) { settingsFail(e.message); }
      });
      cell.append(" ", form);
      password.focus();
    });
    cell.append(" ", reset);
  }
}

// Inboxes (name, enabled, assignment, team, settings), teams (rename, members, delete),
// canned responses and SLA policies (delete).
function setupSettingsLists() {
  const teams = document.getElementById("teams");
  if (!teams) return;
  const error = document.getElementById("settings-error");
  for (const form of document.querySelectorAll("form.inbox-form")) {
    form.querySelectorAll("select[name^='settings.']").forEach((el) => { el.dataset.was = el.value; });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = {
        name: form.elements.name.value.trim(),
        enabled: form.elements.enabled.checked,
        auto_assign: form.elements.auto_assign.checked,
        team_id: form.elements.team_id.value || null,
      };
      const settings = changedSettings(form);
      if (Object.keys(settings).length) body.settings = settings;
      try {
        await api("PATCH", `/api/v1/inboxes/${encodeURIComponent(form.dataset.id)}`, body);
        location.reload();
      } catch (e) { settingsFail(e.message); }
    });
  }
  teams.addEventListener("click", async (ev) => {
    const li = ev.target.closest("li[data-id]");
    if (!li) return;
    const url = `/api/v1/teams/${encodeURIComponent(li.dataset.id)}`;
    try {
      if (ev.target.matches("button.team-save")) {
        const member_ids = [...li.querySelectorAll(".team-members input:checked")].map((c) => c.value);
        await api("PATCH", url, { name: li.querySelector("input[name=name]").value.trim(), member_ids });
        location.reload();
      } else if (ev.target.matches("button.team-delete")) {
        if (!confirm(`Delete the team ${li.querySelector("input[name=name]").value}? Its conversations keep their agent and leave the team.`)) return;
        await api("DELETE", url);
        li.remove();
      }
    } catch (e) { settingsFail(e.message); }
  });
  document.getElementById("canned")?.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button.save");
    if (!button) return;
    const li = button.closest("li[data-id]");
    try {
      const row = await api("PUT", `/api/v1/canned-responses/${encodeURIComponent(li.dataset.id)}`, {
        shortcut: li.querySelector("input[name=shortcut]").value.trim(),
        text: li.querySelector("textarea[name=text]").value,
      });
      li.querySelector("input[name=shortcut]").value = row.shortcut; // as kept: "/Bye" is "bye"
      error.hidden = true;
    } catch (e) { settingsFail(e.message); }
  });
  for (const [id, path] of [["canned", "/api/v1/canned-responses"], ["sla-policies", "/api/v1/sla-policies"]]) {
    document.getElementById(id)?.addEventListener("click", async (ev) => {
      const button = ev.target.closest("button.delete");
      if (!button) return;
      const li = button.closest("li[data-id]");
      if (!confirm(`${button.getAttribute("aria-label")}?`)) return;
      try {
        await api("DELETE", `${path}/${encodeURIComponent(li.dataset.id)}`);
        li.remove();
      } catch (e) { settingsFail(e.message); }
    });
  }
}

// An SLA policy's form as the API takes it: an empty target is none.
function slaPolicyJson(form) {
  const minutes = (name) => {
    const raw = form.elements[name].value.trim();
    return raw === "" ? null : Number(raw);
  };
  const ticked = (name) => [...form.querySelectorAll(`input[name=${name}]:checked`)].map((i) => i.value);
  return {
    name: form.elements.name.value.trim(),
    position: Number(form.elements.position.value || 0),
    priorities: ticked("priorities"),
    inbox_ids: ticked("inbox_ids"),
    labels: form.elements.labels.value.split(",").map((x) => x.trim()).filter(Boolean),
    first_response_minutes: minutes("first_response_minutes"),
    next_response_minutes: minutes("next_response_minutes"),
    resolution_minutes: minutes("resolution_minutes"),
    warn_before_minutes: minutes("warn_before_minutes") ?? 0,
  };
}

function setupSlaPolicies() {
  const list = document.getElementById("sla-policies");
  if (!list) return;
  list.addEventListener("submit", async (ev) => {
    const form = ev.target.closest("form.sla-policy");
    if (!form) return;
    ev.preventDefault();
    const li = form.closest("li[data-id]");
    const saved = li.querySelector(".saved");
    saved.hidden = true;
    try {
      const row = await api("PATCH", `/api/v1/sla-policies/${encodeURIComponent(li.dataset.id)}`, slaPolicyJson(form));
      form.elements.labels.value = row.labels.join(", "); // as kept: " VIP" is "vip"
      li.querySelector("button.delete").setAttribute("aria-label", `Delete policy ${row.name}`);
      document.getElementById("settings-error").hidden = true;
      saved.hidden = false;
    } catch (e) { settingsFail(e.message); }
  });
  document.getElementById("sla-create").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("POST", "/api/v1/sla-policies", slaPolicyJson(ev.target));
      location.reload();
    } catch (e) { settingsFail(e.message); }
  });
}

// The Customers page: what is done to the customers ticked, all at once: tag (or untag)
// them, merge two of them (keeping the one chosen), or erase them (admins and owners).
function setupCustomerBulk() {
  const bar = document.getElementById("customer-bulk");
  const table = document.getElementById("customer-list");
  if (!bar || !table) return;
  const count = document.getElementById("customer-bulk-count");
  const said = document.getElementById("customer-bulk-said");
  const tags = document.getElementById("customer-tags");
  const merging = document.getElementById("customer-merge");
  const erasing = document.getElementById("customer-erase"); // drawn for admins and owners only
  const ticked = () => [...table.querySelectorAll("tr[data-customer]")].filter((tr) => tr.querySelector("input.pick:checked"));
  const picked = () => ticked().map((tr) => tr.dataset.customer);
  const nameOf = (tr) => tr.querySelector("td a").textContent;
  const handleOf = (tr) => tr.querySelector("td.email").textContent || tr.querySelector("td.phone").textContent;
  const calledOf = (tr) => calledWith(nameOf(tr), handleOf(tr));
  const plural = (n) => `${n} customer${n === 1 ? "" : "s"}`;
  // Which of the two stays: each named with a handle, as two records of one person often
  // share a name; none is chosen for the agent.
  const choose = (rows) => {
    const before = merging.elements.survivor?.value;
    const choices = rows.map((tr) => {
      const radio = Object.assign(document.createElement("input"), { type: "radio", name: "survivor", value: tr.dataset.customer, required: true });
      radio.checked = radio.value === before;
      const handle = handleOf(tr);
      const label = document.createElement("label");
      label.append(radio, ` ${nameOf(tr)}`, handle ? ` (${handle})` : "");
      return label;
    });
    merging.querySelector(".choices").replaceChildren(...choices);
    showConflicts(rows);
  };
  // Where both records hold a different value (a name, an email, an attribute), the agent
  // chooses which stays: the survivor's unless the other's is picked (sent as ``take``).
  const conflictBox = merging.querySelector(".merge-conflicts");
  let conflicts = [];
  let asking = 0; // only the newest preview is shown: the pair or the survivor may change
  let previewing = Promise.resolve(); // the newest preview, until it is shown
  const showConflicts = (rows) => {
    previewing = (async () => {
      const keptId = merging.elements.survivor?.value;
      const gone = rows.find((tr) => tr.dataset.customer !== keptId);
      const asked = ++asking;
      conflicts = [];
      conflictBox.hidden = true;
      if (!keptId || !gone) return;
      try {
        const found = await mergeConflicts(keptId, gone.dataset.customer);
        if (asked !== asking) return; // asked again meanwhile
        conflicts = found;
      } catch (e) { showError(e.message); return; }
      conflictBox.querySelector(".fields").replaceChildren(...conflictLines(conflicts));
      conflictBox.hidden = conflicts.length === 0;
    })();
    return previewing;
  };
  merging.addEventListener("change", (ev) => { if (ev.target.name === "survivor") showConflicts(ticked()); });
  const update = () => {
    const rows = ticked();
    const n = rows.length;
    bar.hidden = n === 0;
    count.textContent = `${n} selected`;
    merging.hidden = n !== 2;
    if (n === 2) choose(rows);
    if (erasing) erasing.querySelector(".erase-count").textContent = `the ${plural(n)} selected`;
  };
  // The list as the server draws it now, nothing ticked (those ticked still, after a tag
  // change).
  const redraw = (gone, { keep = false } = {}) => customerTableNow(table, { gone, keep: keep ? picked() : [] });
  table.addEventListener("rapport:rows-changed", update); // drawn again, or some gone elsewhere
  table.addEventListener("change", (ev) => {
    if (ev.target.matches("input.pick-all")) {
      for (const box of table.querySelectorAll("input.pick")) box.checked = ev.target.checked;
    }
    said.textContent = "";
    update();
  });
  tags.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const tag = tags.elements.tag.value.trim();
    const adding = ev.submitter?.value !== "remove";
    const ids = picked();
    try {
      const out = await api("POST", "/api/v1/customers/bulk-tags", {
        customer_ids: ids, add: adding ? [tag] : [], remove: adding ? [] : [tag],
      });
      said.textContent = `${adding ? "Tagged" : "Untagged"} ${plural(out.changed)}.`;
      await redraw([], { keep: true }); // the Tags column says it too
    } catch (e) { showError(e.message); }
  });
  merging.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    // Merged before the choices were shown, the survivor's values would win unasked:
    // the preview is awaited, and where it shows choices the agent makes them first.
    const shown = !conflictBox.hidden;
    await previewing;
    if (!shown && !conflictBox.hidden) return;
    const rows = ticked();
    const keptId = merging.elements.survivor.value;
    const kept = rows.find((tr) => tr.dataset.customer === keptId);
    const gone = rows.find((tr) => tr !== kept);
    if (rows.length !== 2 || !kept) return;
    if (!confirm(mergeQuestion(calledOf(gone), calledOf(kept)))) return;
    const button = merging.querySelector("button");
    button.disabled = true;
    try {
      await api("POST", `/api/v1/customers/${encodeURIComponent(keptId)}/merge`, {
        merged_id: gone.dataset.customer,
        reason: "merged by hand",
        take: takenFrom(conflictBox, conflicts),
      });
      said.replaceChildren(...mergedSaid(calledOf(gone), calledOf(kept), keptId));
      await redraw([gone.dataset.customer]);
    } catch (e) {
      showError(e.message);
    } finally {
      button.disabled = false;
    }
  });
  const eraseForm = document.getElementById("customer-erase-form");
  // Typed, as on the customer's panel (a click alone is too easy); each one tried, however
  // many fail, and every failure named.
  eraseForm?.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (eraseForm.elements.confirm.value.trim().toLowerCase() !== "erase") {
      showError("Type erase to confirm.");
      return;
    }
    const rows = ticked();
    const button = eraseForm.querySelector("button");
    button.disabled = true;
    const failed = [];
    const erased = [];
    for (const tr of rows) {
      try {
        await api("DELETE", `/api/v1/customers/${encodeURIComponent(tr.dataset.customer)}`);
        erased.push(tr.dataset.customer);
      } catch (e) {
        failed.push(`${nameOf(tr)} (${e.message})`);
      }
    }
    eraseForm.reset();
    erasing.open = false;
    await redraw(erased);
    said.textContent = `Erased ${plural(erased.length)}.`;
    // After every request: one that went through clears what was said above the page.
    if (failed.length) showError(`Not erased: ${failed.join("; ")}.`);
    button.disabled = false;
  });
}

// A table of customers (the Customers page, search results) as the server draws it now:
// those merged or erased gone from it, one a merge gave back where the page's query finds
// it, and the Customers page's count of possible duplicates with them; the ids in ``keep``
// still ticked. If the page does not answer, the rows ``gone`` are taken out here.
async function customerTableNow(table, { gone = [], keep = [] } = {}) {
  let now = null;
  try { now = await pageNow(); } catch { /* offline a moment */ }
  const fresh = now?.getElementById(table.id);
  const hint = now?.getElementById("duplicates-hint");
  if (hint) document.getElementById("duplicates-hint")?.replaceWith(hint);
  if (fresh) table.replaceChildren(...fresh.children);
  else dropCustomers(table, gone);
  // The search page's conversations too: their customers' names as they are now.
  const hits = now?.getElementById("conversation-hits");
  if (hits) document.getElementById("conversation-hits")?.replaceChildren(...hits.children);
  const held = new Set(keep);
  for (const box of table.querySelectorAll("input.pick, input.pick-all")) box.checked = held.has(box.value);
  table.dispatchEvent(new CustomEvent("rapport:rows-changed")); // the ticked ones counted again
}

// These customers' rows out of a table of customers, which says so when none is left.
function dropCustomers(table, ids) {
  const rows = ids.map((cid) => table.querySelector(`tr[data-customer="${CSS.escape(cid)}"]`)).filter(Boolean);
  if (!rows.length) return;
  for (const tr of rows) tr.remove();
  const body = table.tBodies[0];
  if (!body.rows.length) {
    const cell = Object.assign(document.createElement("td"), { colSpan: table.tHead.rows[0].cells.length, textContent: table.dataset.empty });
    const empty = Object.assign(document.createElement("tr"), { className: "empty" });
    empty.append(cell);
    body.append(empty);
  }
  table.dispatchEvent(new CustomEvent("rapport:rows-changed"));
}

// These conversations' rows out of a list of them (the search page's), which says so when
// none is left.
function dropConversations(list, ids) {
  const rows = ids.map((id) => list.querySelector(`:scope > li[data-id="${CSS.escape(id)}"]`)).filter(Boolean);
  if (!rows.length) return;
  for (const li of rows) li.remove();
  if (!list.querySelector(":scope > li[data-id]")) {
    list.replaceChildren(Object.assign(document.createElement("li"), { className: "empty", textContent: list.dataset.empty }));
  }
}

// The Customers page and the search page's customers follow the stream: a customer erased,
// or merged into another (by a colleague, or in another tab), leaves the table at once (they
// stayed listed until a reload, their link to a page that is no more, still offered to tag,
// merge or erase); the survivor of a merge stays as drawn. A merge undone draws the table
// anew as the server has it, ticks kept: the record given back is listed again where the
// page's query finds it (it was not until a reload), the survivor as it is now. The search
// page's conversations of a customer erased go too (they stayed, linking to nothing).
// Away from the stream a while (a reconnect's replay), the events about those erased come
// blanked once the erasure has removed its copies (``erased``, no payload): what was erased
// is not said, so the page is drawn anew.
// The search page's conversations follow the stream too. One merged into another leaves at
// once (its link opened the other, found as well); one whose matched message, shown in its
// row, is deleted or erased leaves at once (the row showed what is gone), and comes back
// with the redraw if it is still found. A change to one listed (its status, agent, a
// message, a merge undone taking messages out of it or back) draws the results anew as the
// server finds them now, at most every half second: a burst of events is one fetch, not one
// each. A conversation that comes to match later is found by searching again. A customer
// listed, or one whose conversation is, changed (renamed, say) draws them anew the same way.
function setupCustomerList() {
  const table = document.querySelector(".customers-list #customer-list, .search-results #customer-hits");
  if (!table) return;
  const hits = document.getElementById("conversation-hits");
  let drawing = null; // one page fetch at a time; undos meanwhile, one more after it
  let again = false;
  const drawAnew = async () => {
    if (drawing) { again = true; return; }
    do {
      again = false;
      const ticked = [...table.querySelectorAll("input.pick:checked")].map((box) => box.value);
      drawing = customerTableNow(table, { keep: ticked });
      await drawing;
    } while (again);
    drawing = null;
  };
  let soon = null;
  const drawSoon = () => {
    if (soon) return;
    soon = setTimeout(() => { soon = null; drawAnew(); }, 500);
  };
  const listed = (cid) => hits && cid && hits.querySelector(`:scope > li[data-id="${CSS.escape(cid)}"]`);
  const showing = (mid) => hits && mid && hits.querySelector(`:scope > li[data-match="${CSS.escape(mid)}"]`);
  const unmatched = (ids) => ids.map(showing).filter(Boolean).map((li) => li.dataset.id);
  const named = (cid) => cid && (table.querySelector(`tr[data-customer="${CSS.escape(cid)}"]`)
    || hits?.querySelector(`:scope > li .who[data-customer="${CSS.escape(cid)}"]`));
  connectStream((event) => {
    setupNotifications(event);
    const p = event.payload || {};
    if (event.type === "customer.unmerged" || event.type === "erased") { drawAnew(); return; }
    if (event.type === "customer.erased" && hits) {
      const shown = unmatched(p.message_ids || []);
      dropConversations(hits, [...(p.conversation_ids || []), ...shown]);
      if (shown.length) drawSoon();
    }
    dropCustomers(table, event.type === "customer.erased" ? p.customer_ids || []
      : event.type === "customer.merged" ? [p.merged_id] : []);
    // A customer listed, or whose conversation is, changed (renamed, a handle or tag): the
    // rows name them as they are now (not for a note, which no row shows).
    if (event.type === "customer.updated" && !p.notes && named(p.id)) drawSoon();
    if (!hits) return;
    // Dropped at once; drawn anew after, the survivor found now if it was not (it holds
    // the messages that matched), the row of one still found by another message back.
    const gone = event.type === "conversation.merged" ? [p.merged_id].filter(listed)
      : event.type === "message.deleted" ? unmatched([p.id]) : [];
    if (gone.length) {
      dropConversations(hits, gone);
      drawSoon();
    }
    const theirs =
      event.type === "conversation.merged" ? listed(p.id)
      : event.type === "conversation.parted" ? listed(p.id) || listed(p.from_id)
      : event.type === "message.deleted" ? listed(p.conversation_id)
      : event.type.startsWith("conversation.") ? listed(p.id)
      : event.type === "message.created" ? listed(p.conversation_id)
      : event.type === "message.updated" && showing(p.id); // the text it matched may be another now
    if (theirs) drawSoon();
  });
}

function setupMembers() {
  // The settings page follows the stream for its members table (the inbox and a
  // conversation already follow it, and redraw members from their own handlers); a
  // customer's page follows it for its panel (a colleague's tag, consent or merge).
  const table = document.getElementById("members");
  if (table) {
    // The rows as the page drew them: each gets its controls.
    for (const tr of table.querySelectorAll("tbody tr[data-user]")) {
      const [name, email, role, capacity, totp] = [...tr.cells].map((c) => c.textContent);
      manageMember(tr, { user_id: tr.dataset.user, name, email, role, capacity: Number(capacity), totp_enabled: totp === "on" });
    }
    connectStream((event) => { setupNotifications(event); redrawMember(event); });
  } else if (document.querySelector(".customer-page")) {
    const list = document.getElementById("customer-conversations");
    const customer = document.getElementById("panel-extra")?.dataset.customer;
    // Their conversations follow the stream: one a colleague starts, a status, an agent or
    // a message changed or deleted, a merge of theirs or its undo taking messages out of
    // one of them, is drawn from the page as the server draws it
    // now, at most every half second (a burst of events is one fetch; one that comes while
    // a fetch runs, another after it). Merged into another, the page becomes the survivor's.
    let pending = null;
    let again = false;
    const redraw = () => {
      if (pending) { again = true; return; }
      pending = setTimeout(async () => {
        let now = null;
        try { now = await pageNow(); } catch { /* offline a moment */ }
        pending = null;
        const fresh = now?.getElementById("customer-conversations");
        if (fresh && list) list.replaceChildren(...fresh.children);
        const timeline = now?.getElementById("timeline"); // their messages there too
        if (timeline) document.getElementById("timeline")?.replaceChildren(...timeline.children);
        if (again) { again = false; redraw(); }
      }, 500);
    };
    const listed = (cid) => cid && list?.querySelector(`li[data-id="${CSS.escape(cid)}"]`);
    connectStream((event) => {
      setupNotifications(event);
      redrawMember(event);
      const p = event.payload || {};
      if (event.type === "customer.merged" && p.merged_id === customer) {
        location.reload(); // its page is now the survivor's
        return;
      }
      const theirs =
        event.type === "conversation.merged" ? listed(p.id) || listed(p.merged_id)
        : event.type === "conversation.parted" ? listed(p.id) || listed(p.from_id)
        : event.type.startsWith("conversation.") ? p.customer_id === customer
        : event.type === "customer.merged" || event.type === "customer.unmerged" ? p.survivor_id === customer || p.merged_id === customer
        : (event.type === "message.created" || event.type === "message.deleted") && listed(p.conversation_id);
      if (theirs) redraw();
    });
  }
}

// --- settings: business hours, automation rules, webhooks --------------------------------
// A refusal is said under the settings menu until the admin does something else: the
// next button or form takes it away (and says its own, if refused too). The sections a
// menu link scrolls to stop below the menu, however tall it is with a refusal in it.
function setupSettingsError() {
  const error = document.getElementById("settings-error");
  const top = document.querySelector(".settings-top");
  if (!error || !top) return;
  const page = top.parentElement;
  page.addEventListener("click", (ev) => { if (ev.target.closest("button")) error.hidden = true; }, true);
  page.addEventListener("submit", () => { error.hidden = true; }, true);
  new ResizeObserver(() => page.style.setProperty("--settings-top", `${top.offsetHeight}px`)).observe(top);
}

function settingsFail(msg) {
  const error = document.getElementById("settings-error");
  error.textContent = msg;
  error.hidden = false; // under the menu, kept in view with it: the page stays where it was
}

function setupBusinessHours() {
  const form = document.getElementById("hours-form");
  if (!form) return;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const hours = {};
    for (const input of form.querySelectorAll("input[data-day]")) {
      const spans = input.value.split(",").map((x) => x.trim()).filter(Boolean)
        .map((span) => span.split("-").map((t) => t.trim().padStart(5, "0")));
      if (spans.length) hours[input.dataset.day] = spans;
    }
    const holidays = form.elements.holidays.value.split(/\s+/).filter(Boolean);
    try {
      await api("PUT", "/api/v1/business-hours", { timezone: form.elements.timezone.value.trim(), hours, holidays });
      location.reload();
    } catch (e) { settingsFail(e.message); }
  });
}

// --- automation rules: every part chosen from what the server takes ----------------------
function ruleOption(value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  return o;
}

// A value a rule holds that its select no longer offers (an agent removed, a team deleted)
// is shown as such and kept selected: the admin sees what the rule's last error names.
function selectKeeping(select, value) {
  if (![...select.options].some((o) => o.value === value)) select.append(ruleOption(value, `(gone: ${value})`));
  select.value = value;
}

// The control a condition's value is given in: by its op first (yes or no, a number), then
// by what the field holds (one of its choices, labels, a text).
function conditionControl(spec, op) {
  const labelled = (el, label) => { el.setAttribute("aria-label", label); return el; };
  if (op === "is" || op === "exists") {
    const yesNo = labelled(document.createElement("select"), "Value");
    yesNo.append(ruleOption("true", "yes"), ruleOption("false", "no"));
    yesNo.dataset.kind = "flag";
    return yesNo;
  }
  if (op === "gt" || op === "lt") {
    const number = labelled(document.createElement("input"), "Number");
    Object.assign(number, { type: "number", step: "any", required: true });
    return number;
  }
  if (spec.kind === "pick" && op === "in") {
    const group = labelled(document.createElement("span"), "Values");
    group.setAttribute("role", "group");
    group.className = "rule-picks";
    for (const [value, text] of spec.choices) group.append(rulePick(value, text));
    return group;
  }
  if (spec.kind === "pick") {
    const select = labelled(document.createElement("select"), "Value");
    select.required = true;
    select.append(ruleOption("", "Choose…"), ...spec.choices.map(([value, text]) => ruleOption(value, text)));
    return select;
  }
  const text = labelled(document.createElement("input"), op === "in" ? "Values, separated by commas" : "Value");
  if (spec.kind === "labels") { text.setAttribute("list", "rule-labels"); text.required = true; }
  if (op === "regex") { text.maxLength = 200; text.required = true; text.placeholder = "pattern"; }
  if (op === "in") { text.required = true; text.placeholder = "one, another"; }
  return text;
}

function rulePick(value, text) {
  const label = document.createElement("label");
  const box = document.createElement("input");
  Object.assign(box, { type: "checkbox", value });
  label.append(box, ` ${text}`);
  return label;
}

// What a condition's control holds, as the rule stores it.
function conditionValue(control, op) {
  if (control.classList.contains("rule-picks")) return [...control.querySelectorAll("input:checked")].map((box) => box.value);
  if (control.dataset.kind === "flag") return control.value === "true";
  if (control.type === "number") return Number(control.value);
  if (op === "in") return control.value.split(",").map((x) => x.trim()).filter(Boolean);
  return control.value;
}

// Show a stored value in a condition's control; one it does not offer is kept, as gone.
function showConditionValue(control, value) {
  if (control.classList.contains("rule-picks")) {
    for (const v of (Array.isArray(value) ? value : [value]).map(String)) {
      let box = [...control.querySelectorAll("input")].find((b) => b.value === v);
      if (!box) { control.append(rulePick(v, `(gone: ${v})`)); box = control.lastElementChild.querySelector("input"); }
      box.checked = true;
    }
  } else if (control.dataset.kind === "flag") control.value = value === false ? "false" : "true";
  else if (control.tagName === "SELECT") selectKeeping(control, String(value ?? ""));
  else control.value = Array.isArray(value) ? value.join(", ") : String(value ?? "");
}

// A list of actions (a rule's, a macro's), each row from ``template``: its type chosen; of
// its value controls, only the one that type takes is shown and enabled (a disabled control
// is neither checked nor sent).
function actionList(list, template) {
  const part = (li, name) => li.querySelector(`[name=${name}]`);
  const draw = (li) => {
    const type = part(li, "type").value;
    const controls = [...li.querySelectorAll("[name=value]")];
    const fits = controls.find((el) => el.dataset.types.split(" ").includes(type)) || controls.find((el) => !el.dataset.types);
    for (const el of controls) el.hidden = el.disabled = el !== fits;
    return fits;
  };
  const add = (a) => {
    const li = document.getElementById(template).content.firstElementChild.cloneNode(true);
    if (a) selectKeeping(part(li, "type"), String(a.type ?? ""));
    const control = draw(li);
    if (a && control.tagName === "SELECT") selectKeeping(control, String(a.value ?? ""));
    else if (a) control.value = String(a.value ?? "");
    part(li, "type").addEventListener("change", () => draw(li));
    li.querySelector(".remove-row").addEventListener("click", () => li.remove());
    list.append(li);
    return li;
  };
  const read = () => [...list.children].map((li) => {
    const control = li.querySelector("[name=value]:enabled");
    const value = control.tagName === "TEXTAREA" ? control.value : control.value.trim();
    const type = part(li, "type").value;
    return value ? { type, value } : { type };
  });
  return { add, read };
}

function setupRules() {
  const form = document.getElementById("rule-form");
  if (!form) return;
  const { fields, attribute, events, op_names: opNames } = JSON.parse(document.getElementById("rule-conditions").textContent);
  const conditions = document.getElementById("conditions");
  const actions = document.getElementById("actions");
  const specOf = (name) => (name in fields ? fields[name] : attribute); // an unknown field: any op
  const part = (li, name) => li.querySelector(`[name=${name}]`);

  // A condition: its field chosen, then the ops that field takes and the control its value
  // is given in; what was typed or chosen stays while it still fits.
  const fieldOf = (li) => {
    const picked = part(li, "field").value;
    return picked === attribute.prefix ? picked + part(li, "attribute").value.trim() : picked;
  };
  const drawCondition = (li) => {
    const picked = part(li, "field").value;
    const spec = picked === attribute.prefix ? attribute : specOf(picked);
    const name = part(li, "attribute");
    name.hidden = name.disabled = picked !== attribute.prefix;
    const op = part(li, "op");
    const was = op.value;
    op.replaceChildren(...spec.ops.map((o) => ruleOption(o, opNames[o] || o)));
    if (spec.ops.includes(was)) op.value = was;
    const box = li.querySelector(".rule-value");
    const old = box.firstElementChild;
    const control = conditionControl(spec, op.value);
    if (old && old.tagName === control.tagName && old.type === control.type && !old.classList.contains("rule-picks")) {
      if (control.tagName !== "SELECT" || [...control.options].some((o) => o.value === old.value)) control.value = old.value;
    }
    box.replaceChildren(control);
  };
  // Fields the chosen event does not come with (a message's, on conversation.created) are
  // offered no more; a rule that names one anyway is refused by the server, saying so.
  const markFields = (li) => {
    const has = events[form.elements.event.value] || [];
    for (const o of part(li, "field").options) o.disabled = !has.includes(specOf(o.value).of);
  };
  const addCondition = (c) => {
    const li = document.getElementById("condition-row").content.firstElementChild.cloneNode(true);
    const field = part(li, "field");
    markFields(li);
    if (c) {
      if (c.field in fields) field.value = c.field;
      else if (typeof c.field === "string" && c.field.startsWith(attribute.prefix) && c.field.length > attribute.prefix.length) {
        field.value = attribute.prefix;
        part(li, "attribute").value = c.field.slice(attribute.prefix.length);
      } else selectKeeping(field, String(c.field ?? ""));
    } else if (field.selectedOptions[0]?.disabled) {
      field.value = [...field.options].find((o) => !o.disabled)?.value ?? field.value;
    }
    drawCondition(li);
    if (c) {
      selectKeeping(part(li, "op"), String(c.op ?? ""));
      li.querySelector(".rule-value").replaceChildren(conditionControl(specOf(fieldOf(li)), c.op));
      showConditionValue(li.querySelector(".rule-value").firstElementChild, c.value);
    }
    field.addEventListener("change", () => drawCondition(li));
    part(li, "op").addEventListener("change", () => drawCondition(li));
    li.querySelector(".remove-row").addEventListener("click", () => li.remove());
    conditions.append(li);
    return li;
  };

  const { add: addAction, read: readActions } = actionList(actions, "action-row");

  const reset = () => {
    form.reset();
    form.elements.id.value = "";
    conditions.replaceChildren();
    actions.replaceChildren();
    addAction();
    document.getElementById("rule-form-title").textContent = "New rule";
  };
  reset();
  form.elements.event.addEventListener("change", () => conditions.querySelectorAll(":scope > li").forEach(markFields));
  document.getElementById("add-condition").addEventListener("click", () => part(addCondition(), "field").focus());
  document.getElementById("add-action").addEventListener("click", () => part(addAction(), "type").focus());
  document.getElementById("rule-reset").addEventListener("click", reset);
  const body = () => ({
    name: form.elements.name.value,
    event: form.elements.event.value,
    conditions: [...conditions.children].map((li) => {
      const op = part(li, "op").value;
      return { field: fieldOf(li), op, value: conditionValue(li.querySelector(".rule-value").firstElementChild, op) };
    }),
    actions: readActions(),
    position: Number(form.elements.position.value || 0),
    stop_processing: form.elements.stop_processing.checked,
    enabled: form.elements.enabled.checked,
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const id = form.elements.id.value;
    try {
      await api(id ? "PUT" : "POST", id ? `/api/v1/automation-rules/${id}` : "/api/v1/automation-rules", body());
      location.reload();
    } catch (e) { settingsFail(e.message); } // the form keeps all it holds, to mend and send again
  });
  const find = async (id) => (await api("GET", "/api/v1/automation-rules")).find((r) => r.id === id);
  const strip = ({ id, ...rest }) => rest;
  document.querySelectorAll("#rule-rows tr[data-id]").forEach((tr) => {
    const id = tr.dataset.id;
    tr.querySelector(".rule-edit").addEventListener("click", async () => {
      const rule = await find(id);
      reset();
      actions.replaceChildren();
      form.elements.id.value = rule.id;
      form.elements.name.value = rule.name;
      form.elements.event.value = rule.event;
      form.elements.position.value = rule.position;
      form.elements.stop_processing.checked = rule.stop_processing;
      form.elements.enabled.checked = rule.enabled;
      rule.conditions.forEach((c) => addCondition(c));
      rule.actions.forEach((a) => addAction(a));
      document.getElementById("rule-form-title").textContent = `Edit rule: ${rule.name}`;
      form.elements.name.focus();
    });
    tr.querySelector(".rule-delete").addEventListener("click", async () => {
      if (!confirm("Delete this rule?")) return;
      try { await api("DELETE", `/api/v1/automation-rules/${id}`); location.reload(); }
      catch (e) { settingsFail(e.message); }
    });
    const toggle = tr.querySelector(".rule-enabled");
    toggle.addEventListener("change", async () => {
      try {
        const rule = await find(id);
        await api("PUT", `/api/v1/automation-rules/${id}`, { ...strip(rule), enabled: toggle.checked });
      } catch (e) { toggle.checked = !toggle.checked; settingsFail(e.message); }
    });
  });
}

// --- saved views: a page's filters under a name, listed beside it -------------------------
// The form saves what the page's filter form holds (a label typed and not yet applied too;
// the server puts it in canonical form, the one the list marks), then opens the view.
// Deleting is delegated, and a view deleted stays out of the inbox's sidebar when the live
// list draws it again from a fetch begun before the delete.
function setupSavedViews() {
  const gone = new Set();
  const dropGone = () => {
    for (const button of document.querySelectorAll("button.view-delete")) {
      if (gone.has(button.dataset.id)) button.closest("li").remove();
    }
  };
  const sidebar = document.querySelector("aside.views");
  if (sidebar) new MutationObserver(dropGone).observe(sidebar, { childList: true });
  for (const form of document.querySelectorAll("form.save-view-form")) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const filters = document.querySelector("form.filters");
      const held = filters
        ? new URLSearchParams([...new FormData(filters)].filter(([, v]) => typeof v === "string" && v.trim())).toString()
        : form.dataset.query;
      const body = {
        page: form.dataset.page,
        name: form.elements.name.value,
        query: held,
        shared: Boolean(form.elements.shared && form.elements.shared.checked),
      };
      try {
        const saved = await api("POST", "/api/v1/saved-views", body);
        location.assign(`${location.pathname}?${saved.query}`);
      } catch (e) { showError(e.message); } // the name stays, to mend and save again
    });
  }
  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button.view-delete");
    if (!button) return;
    const name = button.closest("li").querySelector("a").textContent;
    if (!confirm(`Delete the view “${name}”?`)) return;
    try {
      await api("DELETE", `/api/v1/saved-views/${encodeURIComponent(button.dataset.id)}`);
      gone.add(button.dataset.id);
      dropGone();
    } catch (e) { showError(e.message); }
  });
}

// --- macros: the page that makes them (run from a conversation, or the inbox's ticks) -----
function setupMacros() {
  const form = document.getElementById("macro-form");
  if (!form) return;
  const actions = document.getElementById("macro-actions");
  const { add, read } = actionList(actions, "macro-action-row");
  const reset = () => {
    form.reset();
    form.elements.id.value = "";
    actions.replaceChildren();
    add();
    document.getElementById("macro-form-title").textContent = "New macro";
  };
  reset();
  document.getElementById("add-macro-action").addEventListener("click", () => add().querySelector("[name=type]").focus());
  document.getElementById("macro-reset").addEventListener("click", reset);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const id = form.elements.id.value;
    const body = { name: form.elements.name.value, visibility: form.elements.visibility.value, actions: read() };
    try {
      await api(id ? "PATCH" : "POST", id ? `/api/v1/macros/${encodeURIComponent(id)}` : "/api/v1/macros", body);
      location.reload();
    } catch (e) { settingsFail(e.message); } // the form keeps what it holds, to mend and save again
  });
  document.querySelectorAll("#macro-rows tr[data-id]").forEach((tr) => {
    const id = encodeURIComponent(tr.dataset.id);
    tr.querySelector(".macro-edit")?.addEventListener("click", async () => {
      try {
        const macro = await api("GET", `/api/v1/macros/${id}`);
        reset();
        actions.replaceChildren();
        form.elements.id.value = macro.id;
        form.elements.name.value = macro.name;
        form.elements.visibility.value = macro.visibility;
        macro.actions.forEach((a) => add(a));
        document.getElementById("macro-form-title").textContent = `Edit macro: ${macro.name}`;
        form.elements.name.focus();
      } catch (e) { settingsFail(e.message); }
    });
    tr.querySelector(".macro-delete")?.addEventListener("click", async () => {
      if (!confirm("Delete this macro?")) return;
      try { await api("DELETE", `/api/v1/macros/${id}`); location.reload(); }
      catch (e) { settingsFail(e.message); }
    });
  });
}

// What a macro run left out (what its actions name has gone since it was saved), said.
function macroSkipped(name, skipped) {
  if (!skipped.length) return "";
  return `Macro “${name}”: ${skipped.map((s) => `${s.type.replace(/_/g, " ")} was left out (${s.reason})`).join("; ")}. The rest was done.`;
}

// What deleting a label did to the saved views that filtered on it, as the answer names
// them ("view 'VIP queue'", "your own view 'Mine'", "Ann's own view 'Mine'").
function labelDeletedText(name, views) {
  const n = views.length;
  return `Label “${name}” deleted. ${n === 1 ? "1 saved view" : `${n} saved views`} filtered on it and now ${n === 1 ? "filters" : "filter"} on no label: ${views.join(", ")}.`;
}

// Said across the reload that draws the page without the label (its rule and policy
// choices too), then forgotten.
const LABEL_SAID = "rapport.settings.label-said";

function setupLabelSettings() {
  const create = document.getElementById("label-create");
  if (!create) return;
  const said = document.getElementById("label-said");
  const say = (text) => { said.textContent = text; said.hidden = false; };
  try {
    const text = sessionStorage.getItem(LABEL_SAID);
    sessionStorage.removeItem(LABEL_SAID);
    if (text) say(text);
  } catch { /* storage off: nothing was kept */ }
  create.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("POST", "/api/v1/labels", { name: create.elements.name.value, colour: create.elements.colour.value });
      location.reload();
    } catch (e) { settingsFail(e.message); }
  });
  document.querySelectorAll("#labels-settings tr[data-id]").forEach((tr) => {
    const id = tr.dataset.id;
    tr.querySelector(".label-save").addEventListener("click", async () => {
      try {
        await api("PATCH", `/api/v1/labels/${id}`, { name: tr.querySelector("[name=name]").value, colour: tr.querySelector("[name=colour]").value });
        location.reload();
      } catch (e) { settingsFail(e.message); }
    });
    tr.querySelector(".label-delete").addEventListener("click", async () => {
      if (!confirm("Delete this label from every conversation? Saved views that filter on it will filter on no label.")) return;
      let out;
      try { out = await api("DELETE", `/api/v1/labels/${id}`); }
      catch (e) { settingsFail(e.message); return; }
      const views = (out && out.saved_views) || [];
      if (views.length) {
        const text = labelDeletedText(tr.querySelector("[name=name]").defaultValue, views);
        try { sessionStorage.setItem(LABEL_SAID, text); }
        catch { tr.remove(); say(text); return; } // no storage: said here, without the reload
      }
      location.reload();
    });
  });
}

// Label colours come as data: set through the CSSOM, which the CSP allows (style attributes it does not).
function paintLabels(root = document) {
  root.querySelectorAll(".label[data-colour]").forEach((el) => {
    if (/^#[0-9a-f]{6}$/i.test(el.dataset.colour)) el.style.backgroundColor = el.dataset.colour;
  });
}

function setupWebhooks() {
  const form = document.getElementById("webhook-form");
  if (!form) return;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const events = [...form.querySelectorAll("input[name=events]:checked")].map((box) => box.value);
      const hook = await api("POST", "/api/v1/webhooks", { url: form.elements.url.value, events });
      const box = document.getElementById("webhook-secret");
      box.querySelector("code").textContent = hook.secret;
      box.hidden = false;
      form.reset();
    } catch (e) { settingsFail(e.message); }
  });
  document.querySelectorAll("#webhooks tr[data-id]").forEach((tr) => {
    tr.querySelector(".hook-toggle").addEventListener("click", async (ev) => {
      const on = ev.currentTarget.dataset.enabled !== "true";
      try {
        await api("PATCH", `/api/v1/webhooks/${tr.dataset.id}`, { enabled: on });
        location.reload();
      } catch (e) { settingsFail(e.message); }
    });
    tr.querySelector(".hook-delete").addEventListener("click", async () => {
      if (!confirm("Delete this webhook and its delivery log?")) return;
      try {
        await api("DELETE", `/api/v1/webhooks/${tr.dataset.id}`);
        location.reload();
      } catch (e) { settingsFail(e.message); }
    });
    tr.querySelector(".hook-log").addEventListener("click", async () => {
      const row = document.getElementById(`log-${tr.dataset.id}`);
      if (!row.hidden) { row.hidden = true; return; }
      try {
        const log = await api("GET", `/api/v1/webhooks/${tr.dataset.id}/deliveries`);
        const table = document.createElement("table");
        table.className = "delivery-log";
        const head = table.createTHead().insertRow();
        for (const h of ["When", "Event", "Status", "HTTP", "Attempts", "Error"]) {
          const th = document.createElement("th");
          th.textContent = h;
          head.append(th);
        }
        const tbody = table.createTBody();
        for (const d of log) {
          const r = tbody.insertRow();
          for (const v of [d.created_at.slice(0, 16).replace("T", " "), d.event, d.status, d.response_status ?? "–", d.attempts, d.error || ""]) {
            r.insertCell().textContent = String(v);
          }
        }
        if (!log.length) tbody.insertRow().insertCell().textContent = "No deliveries yet.";
        row.firstElementChild.replaceChildren(table);
        row.hidden = false;
      } catch (e) { settingsFail(e.message); }
    });
  });
}

// --- possible duplicates: merge a pair (keeping the side chosen) or keep it apart ------
// A customer as a merge names them: by name and handle, two records of one person often
// sharing a name ("Merge Liam O'Brien into Liam O'Brien?" told nothing).
function calledWith(name, handle) {
  return handle && handle !== name ? `${name} (${handle})` : name;
}

// What a merge does, asked before it (in the words of the customer page's merge and undo).
function mergeQuestion(gone, kept) {
  return `Merge ${gone} into ${kept}? Their handles, conversations and timeline move to ${kept}; it can be undone from ${kept}'s page.`;
}

// Said once merged: where it can be undone (the survivor's page lists the merge, with its
// undo), as text and a link, never markup.
function mergedSaid(gone, kept, keptId) {
  const link = document.createElement("a");
  link.href = `/app/customers/${encodeURIComponent(keptId)}#merges`;
  link.textContent = `${kept}'s page`;
  return [`Merged ${gone} into ${kept}: it can be undone from `, link, "."];
}

function setupDuplicates() {
  const section = document.getElementById("duplicates");
  if (!section) return;
  const error = document.getElementById("duplicates-error");
  const fail = (msg) => { error.textContent = msg; error.hidden = !msg; };
  const count = document.getElementById("duplicates-count");
  const left = () => section.querySelectorAll("li.pair:not(.decided)").length;
  const recount = () => { const n = left(); count.textContent = `${n} pair${n === 1 ? "" : "s"} to review.`; };
  section.addEventListener("click", async (ev) => {
    const button = ev.target.closest("li.pair button");
    if (!button) return;
    const pair = button.closest("li.pair");
    const id = encodeURIComponent(pair.dataset.suggestion);
    const merging = button.classList.contains("merge");
    const side = button.closest(".side");
    const other = [...pair.querySelectorAll(".side")].find((s) => s !== side);
    const kept = side ? calledWith(side.querySelector("a").textContent, side.dataset.handle) : "";
    const gone = other ? calledWith(other.querySelector("a").textContent, other.dataset.handle) : "";
    // Where the two hold different values, the first click shows them (the one kept's
    // chosen) and the next merges with what was picked, as the customer page's merge does.
    let box = pair.querySelector("fieldset.merge-conflicts");
    if (merging && box?.dataset.survivor !== button.dataset.survivor) {
      box?.remove();
      fail("");
      try {
        const conflicts = await mergeConflicts(button.dataset.survivor, other.dataset.customer);
        box = document.createElement("fieldset");
        box.className = "merge-conflicts";
        box.dataset.survivor = button.dataset.survivor;
        box.conflicts = conflicts;
        if (conflicts.length) {
          const legend = document.createElement("legend");
          legend.textContent = `Where they differ, keep (merging into ${kept})`;
          box.append(legend, ...conflictLines(conflicts, `conflict-${pair.dataset.suggestion}`));
          pair.querySelector(".sides").after(box);
          for (const b of pair.querySelectorAll("button.merge")) b.textContent = b === button ? "Merge, keeping what is chosen" : "Merge, keeping this one";
          return;
        }
      } catch (e) { fail(e.message); return; }
    }
    // A click merges two people's records: said first, as the customer page's merge is.
    if (merging && !confirm(mergeQuestion(gone, kept))) return;
    fail("");
    for (const b of pair.querySelectorAll("button")) b.disabled = true;
    try {
      const said = document.createElement("p");
      said.setAttribute("role", "status");
      if (merging) {
        await api("POST", `/api/v1/merge-suggestions/${id}/accept`, {
          survivor_id: button.dataset.survivor,
          take: box && box.isConnected ? takenFrom(box, box.conflicts, `conflict-${pair.dataset.suggestion}`) : [],
        });
        said.append(...mergedSaid(gone, kept, button.dataset.survivor));
      } else {
        await api("POST", `/api/v1/merge-suggestions/${id}/dismiss`);
        said.textContent = "Kept apart: this pair is not suggested again.";
      }
      for (const b of pair.querySelectorAll("button")) b.remove();
      pair.classList.add("decided");
      pair.append(said);
      recount();
    } catch (e) {
      for (const b of pair.querySelectorAll("button")) b.disabled = false;
      fail(e.message);
    }
  });
  const scan = document.getElementById("scan-duplicates");
  scan?.addEventListener("click", async () => {
    fail("");
    try {
      const out = await api("POST", "/api/v1/merge-suggestions/scan");
      document.getElementById("scan-said").textContent = out.queued
        ? "A scan is queued: reload this page in a minute for what it finds."
        : "A scan is already waiting to run.";
    } catch (e) { fail(e.message); }
  });
}

// --- customers: import a file (checked first, if asked), each bad row named ---------------
function setupCustomerFiles() {
  const form = document.getElementById("customer-import");
  if (!form) return;
  const report = document.getElementById("import-report");
  const run = async (dryRun) => {
    const file = form.elements.file.files[0];
    if (!file) { report.textContent = "Choose a CSV or JSONL file first."; return; }
    const jsonl = /\.(jsonl|ndjson)$/i.test(file.name);
    const query = new URLSearchParams({ format: jsonl ? "jsonl" : "csv", dry_run: String(dryRun) });
    report.textContent = dryRun ? "Checking…" : "Importing…";
    for (const b of form.querySelectorAll("button")) b.disabled = true;
    try {
      const out = await sendFile(`/api/v1/customer-files/import?${query}`, file, jsonl ? "application/x-ndjson" : "text/csv");
      const head = document.createElement("p");
      const verb = dryRun ? "would be" : "";
      head.textContent = `${out.rows} row${out.rows === 1 ? "" : "s"}: ${out.created} new, ${out.updated} updated ${verb}`.trim()
        + (out.to_review ? `, ${out.to_review} given a handle another customer had only typed (both in duplicate review)` : "")
        + (out.errors.length ? `, ${out.errors.length} with errors (${dryRun ? "they would be skipped" : "skipped"}).` : ".");
      const list = document.createElement("ul");
      for (const e of out.errors.slice(0, 100)) {
        const li = document.createElement("li");
        li.textContent = `line ${e.line}: ${e.reason}`; // text, never markup
        list.append(li);
      }
      if (out.errors.length > 100) list.append(Object.assign(document.createElement("li"), { textContent: `and ${out.errors.length - 100} more` }));
      report.replaceChildren(head, list);
    } catch (e) {
      report.textContent = e.message;
    } finally {
      for (const b of form.querySelectorAll("button")) b.disabled = false;
    }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); run(false); });
  form.querySelector("button.check").addEventListener("click", () => run(true));
}

// --- customers by a custom attribute: the values a list or a boolean takes, offered -------
function setupAttributeFilter() {
  const key = document.querySelector(".customers-list select[name=attr]");
  if (!key) return;
  const value = key.form.elements.value;
  const offered = document.getElementById("attribute-values");
  const follow = () => {
    const chosen = key.selectedOptions[0];
    const kind = chosen?.dataset.type;
    const values = kind === "boolean" ? ["true", "false"] : kind === "list" ? chosen.dataset.options.split("\n").filter(Boolean) : [];
    offered.replaceChildren(...values.map((v) => new Option(v, v)));
    value.placeholder = kind === "date" ? "is YYYY-MM-DD" : kind === "number" ? "is (a number)" : "is…";
    value.disabled = !key.value; // no attribute chosen: no value sent
  };
  key.addEventListener("change", follow);
  follow();
}

// --- inbox health, for admins: a banner while an inbox is failing ----------------------
// Read once a page, for admins only (the API refuses anyone else). Dismissed, it stays
// away in this tab until another inbox fails, or for another reason.
const HEALTH_DISMISSED = "rapport.health-dismissed.";

async function setupHealthBanner() {
  const role = document.body.dataset.role;
  const header = document.querySelector("header.top");
  if (!header || (role !== "admin" && role !== "owner")) return;
  let items;
  try {
    items = (await background("GET", "/api/v1/inboxes/health")).items;
  } catch { return; } // said nowhere: the page works without it
  document.body.dataset.health = "read"; // (what a test waits for)
  const failing = items.filter((i) => i.status === "failing");
  if (!failing.length) return;
  const key = HEALTH_DISMISSED + document.body.dataset.user;
  const seen = failing.map((i) => `${i.inbox_id}:${i.reasons.map((r) => r.code).join(",")}`).join("|");
  if (sessionStorage.getItem(key) === seen) return;
  const banner = document.createElement("div");
  banner.className = "health-banner";
  banner.id = "health-banner";
  banner.setAttribute("role", "status");
  const list = document.createElement("ul");
  for (const inbox of failing) {
    const li = document.createElement("li");
    const name = document.createElement("strong");
    name.textContent = `“${inbox.name}”`;
    const why = inbox.reasons.find((r) => r.level === "failing");
    li.append(`Inbox `, name, ` is failing: ${why ? why.detail : ""}`);
    list.append(li);
  }
  const link = document.createElement("a");
  link.href = "/app/settings#inbox-settings";
  link.textContent = "See the inboxes";
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "Dismiss";
  close.addEventListener("click", () => {
    sessionStorage.setItem(key, seen);
    banner.remove();
  });
  banner.append(list, link, close);
  header.after(banner);
}

setupLogin();
setupLocalTimes();
setupHealthBanner();
setupAttributeFilter();
setupSettingsError();
setupFilterBox();
setupPasswordReset();
setupInvitation();
setupLogout();
setupSettings();
setupAccount();
setupMembers();
setupBusinessHours();
setupRules();
setupLabelSettings();
setupMacros();
setupSavedViews();
setupWebhooks();
setupSettingsLists();
setupNewInbox();
setupSlaPolicies();
setupDuplicates();
setupCustomerFiles();
setupCustomerBulk();
setupCustomerList();
paintLabels();
setupPresence();
setupInbox();
setupConversation();
setupDraftMarks();
setupNotificationsPage();
setupKeys();
