// Rapport agent UI: progressive enhancement of the server-rendered pages. No framework.

const csrf = () => document.body.dataset.csrf || readCookie("rapport_csrf");

function readCookie(name) {
  const hit = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error((data && data.detail) || res.statusText);
    err.status = res.status;
    throw err;
  }
  return data;
}

function showError(message) {
  let box = document.getElementById("flash");
  if (!box) {
    box = document.createElement("p");
    box.id = "flash";
    box.className = "error";
    box.setAttribute("role", "alert");
    document.querySelector("main").prepend(box);
  }
  box.textContent = message;
}

// --- login, with the second factor when the account has one ---------------------------
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
        location.href = "/app/inbox";
      }
    } catch (e) { fail(e.message); }
  });
  totp.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    try {
      await api("POST", "/api/v1/auth/login/totp", { code: new FormData(totp).get("code") });
      location.href = "/app/inbox";
    } catch (e) { fail(e.message); }
  });
}

function setupLogout() {
  const btn = document.getElementById("logout");
  if (!btn) return;
  btn.addEventListener("click", async () => {
    await api("POST", "/api/v1/auth/logout").catch(() => null);
    location.href = "/login";
  });
}

// --- the live stream of workspace events ------------------------------------------------
function connectStream(onEvent) {
  let last = null;
  let delay = 500;
  const open = () => {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const query = last === null ? "" : `?last_event_id=${last}`;
    const ws = new WebSocket(`${proto}//${location.host}/api/v1/stream${query}`);
    ws.onopen = () => { delay = 500; };
    ws.onmessage = (msg) => {
      const event = JSON.parse(msg.data);
      if (event.type === "hello") { last = event.last_event_id; return; }
      last = event.id;
      onEvent(event);
    };
    // Reconnect with the last id we saw: the server replays whatever we missed.
    ws.onclose = () => { setTimeout(open, delay); delay = Math.min(delay * 2, 10000); };
  };
  open();
}

function notify(title, body) {
  if (!("Notification" in window) || document.hasFocus()) return;
  if (Notification.permission === "granted") new Notification(title, { body });
}

// --- inbox: the list refreshes itself when anything changes -----------------------------
function setupInbox() {
  const list = document.getElementById("conversation-list");
  if (!list) return;
  if ("Notification" in window && Notification.permission === "default") {
    document.addEventListener("click", () => Notification.requestPermission(), { once: true });
  }
  let pending = null;
  const refresh = () => {
    clearTimeout(pending);
    pending = setTimeout(async () => {
      const res = await fetch(location.href, { credentials: "same-origin" });
      const doc = new DOMParser().parseFromString(await res.text(), "text/html");
      const fresh = doc.getElementById("conversation-list");
      if (fresh) list.replaceChildren(...fresh.children);
      const views = doc.querySelector("aside.views");
      if (views) document.querySelector("aside.views").replaceChildren(...views.children);
    }, 150);
  };
  connectStream((event) => {
    setupNotifications(event);
    if (event.type.startsWith("conversation.") || event.type === "message.created") refresh();
    if (event.type === "message.created" && event.payload.direction === "in") notify("New message", event.payload.text.slice(0, 80));
  });
}

// --- conversation: thread, composer, assignment, status -------------------------------
function messageItem(m) {
  const li = document.createElement("li");
  li.className = `msg dir-${m.direction} kind-${m.kind}`;
  li.dataset.id = m.id;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `${m.sender_type} ${new Date(m.created_at).toISOString().slice(0, 16).replace("T", " ")}`;
  if (m.direction === "out" && m.kind === "message") {
    const st = document.createElement("span");
    st.className = `delivery st-${m.status}`;
    st.textContent = ` ${m.status}`;
    meta.append(st);
  }
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = m.text; // never innerHTML: customer text is data, not markup
  li.append(meta, body);
  return li;
}

function setupConversation() {
  const root = document.getElementById("conversation");
  if (!root) return;
  const id = root.dataset.id;
  const thread = document.getElementById("messages");
  const composer = document.getElementById("composer");
  const textarea = composer.querySelector("textarea");
  const add = (m) => {
    const existing = thread.querySelector(`[data-id="${m.id}"]`);
    if (existing) existing.replaceWith(messageItem(m));
    else thread.append(messageItem(m));
    thread.lastElementChild.scrollIntoView({ block: "end" });
  };
  const send = async () => {
    const text = textarea.value.trim();
    if (!text) return;
    const mode = new FormData(composer).get("mode");
    try {
      const m = await api("POST", `/api/v1/conversations/${id}/${mode === "note" ? "notes" : "messages"}`, { text });
      textarea.value = "";
      add(m);
    } catch (e) { showError(e.message); }
  };
  setupCanned(textarea, id);
  let lastTyping = 0;
  textarea.addEventListener("input", () => {
    // The customer's widget (and colleagues) see "typing…"; at most one ping every 3 s.
    if (Date.now() - lastTyping > 3000 && new FormData(composer).get("mode") !== "note") {
      lastTyping = Date.now();
      api("POST", `/api/v1/conversations/${id}/typing`).catch(() => null);
    }
  });
  const markRead = () => api("POST", `/api/v1/conversations/${id}/read`).catch(() => null);
  markRead();
  composer.addEventListener("submit", (ev) => { ev.preventDefault(); send(); });
  textarea.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); send(); }
  });
  root.querySelectorAll("button[data-status]").forEach((btn) => btn.addEventListener("click", async () => {
    try {
      const c = await api("POST", `/api/v1/conversations/${id}/status`, { status: btn.dataset.status });
      document.getElementById("status").textContent = c.status;
    } catch (e) { showError(e.message); }
  }));
  const assign = document.getElementById("assign");
  assign.addEventListener("change", async () => {
    try { await api("POST", `/api/v1/conversations/${id}/assign`, { assignee_id: assign.value || null }); }
    catch (e) { showError(e.message); }
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.target.closest("textarea, input, select")) return;
    if (ev.key === "r") { ev.preventDefault(); textarea.focus(); }
    if (ev.key === "e") document.getElementById("resolve").click();
  });
  connectStream((event) => {
    setupNotifications(event);
    const p = event.payload;
    if ((event.type === "message.created" || event.type === "message.updated") && p.conversation_id === id) {
      add(p);
      if (p.direction === "in") markRead();
    }
    if (event.type === "conversation.updated" && p.id === id) document.getElementById("status").textContent = p.status;
    if (event.type === "visitor.typing" || (event.type === "agent.typing" && p.conversation_id === id && p.user_id !== document.body.dataset.user)) {
      const who = event.type === "visitor.typing" ? "The customer is typing…" : "A colleague is typing…";
      showError(who);
      clearTimeout(window.__typingTimer);
      window.__typingTimer = setTimeout(() => { const f = document.getElementById("flash"); if (f) f.remove(); }, 4000);
    }
  });
}

// --- presence heartbeat and notifications, on every signed-in page ----------------------
function setupPresence() {
  const select = document.getElementById("presence");
  if (!select) return;
  const saved = localStorage.getItem("rapport.availability") || "online";
  select.value = saved;
  const beat = (availability) => api("PUT", "/api/v1/presence", { availability }).catch(() => null);
  beat(saved);
  // Routing counts an agent as online only while their browser keeps saying so.
  setInterval(() => beat(select.value), 60000);
  select.addEventListener("change", () => {
    localStorage.setItem("rapport.availability", select.value);
    beat(select.value);
  });
}

function setupNotifications(event) {
  const me = document.body.dataset.user;
  if (event.type !== "notification.created" || event.payload.user_id !== me) return;
  const badge = document.getElementById("notif-badge");
  if (badge) {
    badge.hidden = false;
    badge.textContent = String(Number(badge.textContent || "0") + 1);
    if (event.payload.conversation_id) badge.href = `/app/conversations/${event.payload.conversation_id}`;
  }
  notify(event.payload.kind === "mention" ? "You were mentioned" : "Assigned to you", event.payload.text);
}

// --- canned responses: type /shortcut in the composer -------------------------------------
function setupCanned(textarea, conversationId) {
  const menu = document.getElementById("canned-menu");
  if (!menu) return;
  let items = [];
  let active = 0;
  const token = () => {
    const upto = textarea.value.slice(0, textarea.selectionStart);
    const m = upto.match(/(^|\s)\/([\w-]*)$/);
    return m ? { prefix: m[2], start: upto.length - m[2].length - 1 } : null;
  };
  const close = () => { menu.hidden = true; items = []; };
  const choose = async (item) => {
    const t = token();
    close();
    if (!t) return;
    const out = await api("GET", `/api/v1/conversations/${conversationId}/canned/${item.id}`);
    const end = textarea.selectionStart;
    textarea.value = textarea.value.slice(0, t.start) + out.text + textarea.value.slice(end);
    textarea.focus();
  };
  const render = () => {
    menu.replaceChildren(...items.map((item, i) => {
      const li = document.createElement("li");
      li.setAttribute("role", "option");
      li.className = i === active ? "active" : "";
      li.textContent = `/${item.shortcut} — ${item.text.slice(0, 60)}`;
      li.addEventListener("mousedown", (ev) => { ev.preventDefault(); choose(item); });
      return li;
    }));
    menu.hidden = items.length === 0;
  };
  textarea.addEventListener("input", async () => {
    const t = token();
    if (!t) { close(); return; }
    items = await api("GET", `/api/v1/canned-responses?prefix=${encodeURIComponent(t.prefix)}`).catch(() => []);
    active = 0;
    render();
  });
  textarea.addEventListener("keydown", (ev) => {
    if (menu.hidden) return;
    if (ev.key === "ArrowDown") { ev.preventDefault(); active = (active + 1) % items.length; render(); }
    else if (ev.key === "ArrowUp") { ev.preventDefault(); active = (active + items.length - 1) % items.length; render(); }
    else if (ev.key === "Enter" || ev.key === "Tab") { ev.preventDefault(); ev.stopImmediatePropagation(); choose(items[active]); }
    else if (ev.key === "Escape") close();
  });
}

// --- settings: forms post JSON to the API, then the page shows the result -----------------
function formJson(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled) continue;
    if (el.type === "checkbox") out[el.name] = el.checked;
    else if (el.type === "number") { if (el.value !== "") out[el.name] = Number(el.value); }
    else if (el.name === "settings") { if (el.value.trim()) out.settings = JSON.parse(el.value); }
    else if (el.value !== "") out[el.name] = el.value;
  }
  return form.dataset.wrap ? { [form.dataset.wrap]: out } : out;
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
  const enrol = document.getElementById("enrol-2fa");
  if (enrol) enrol.addEventListener("click", async () => {
    try {
      const out = await api("POST", "/api/v1/auth/totp/enroll");
      document.getElementById("totp-secret").textContent = out.secret;
      document.getElementById("enrol-box").hidden = false;
    } catch (e) { fail(e.message); }
  });
  const activate = document.getElementById("totp-activate");
  if (activate) activate.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const out = await api("POST", "/api/v1/auth/totp/activate", { code: new FormData(activate).get("code") });
      const box = document.getElementById("recovery");
      box.querySelector("code").textContent = out.recovery_codes.join("  ");
      box.hidden = false;
    } catch (e) { fail(e.message); }
  });
  const all = document.getElementById("logout-all");
  if (all) all.addEventListener("click", async () => {
    await api("POST", "/api/v1/auth/logout-all").catch(() => null);
    location.href = "/login";
  });
}

// --- knowledge base: the article editor and the collection form ----------------------------
function setupKb() {
  const error = document.getElementById("kb-error");
  if (!error) return;
  const fail = (msg) => { error.textContent = msg; error.hidden = false; window.scrollTo(0, 0); };
  document.querySelectorAll("form[data-kb-api]").forEach((form) => form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api(form.dataset.method || "POST", form.dataset.kbApi, formJson(form));
      location.reload();
    } catch (e) { fail(e.message); }
  }));
  const form = document.getElementById("kb-article");
  if (!form) return;
  const preview = document.getElementById("kb-preview");
  const body = form.elements.body_markdown;
  const fields = () => {
    const out = { title: form.elements.title.value, body_markdown: body.value,
      collection_id: form.elements.collection_id.value || null };
    if (form.elements.slug.value) out.slug = form.elements.slug.value;
    if (!form.dataset.id) {
      if (form.elements.locale.value) out.locale = form.elements.locale.value;
      if (form.dataset.translationOf) out.translation_of = form.dataset.translationOf;
    }
    return out;
  };
  const save = async () => {
    if (form.dataset.id) return api("PATCH", `/api/v1/kb/articles/${form.dataset.id}`, fields());
    const made = await api("POST", "/api/v1/kb/articles", fields());
    form.dataset.id = made.id;
    return made;
  };
  // The server renders and sanitizes: the preview is exactly what readers will get.
  const showPreview = async () => {
    const out = await api("POST", "/api/v1/kb/preview", { body_markdown: body.value });
    preview.innerHTML = out.body_html;
  };
  const button = document.getElementById("kb-preview-button");
  if (button) button.addEventListener("click", () => showPreview().catch((e) => fail(e.message)));
  let timer = null;
  body.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => showPreview().catch(() => null), 400);
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!form.reportValidity()) return;
    try {
      const saved = await save();
      location.href = `/app/kb/articles/${saved.id}`;
    } catch (e) { fail(e.message); }
  });
  form.querySelectorAll("[data-kb-action]").forEach((el) => el.addEventListener("click", async () => {
    try {
      if (el.dataset.kbAction === "publish") await save();
      await api("POST", `/api/v1/kb/articles/${form.dataset.id}/${el.dataset.kbAction}`);
      location.reload();
    } catch (e) { fail(e.message); }
  }));
}

setupLogin();
setupLogout();
setupKb();
setupSettings();
setupPresence();
setupInbox();
setupConversation();
