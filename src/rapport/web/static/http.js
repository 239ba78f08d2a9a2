// Shared by the agent UI's modules: calling our API with the session's CSRF token.

// The cookie first: it always belongs to the session the browser holds now (a change of
// password or two-factor starts a new one, and so may another tab's sign-in); the page's
// copy only where the cookie cannot be read.
const csrf = () => readCookie("rapport_csrf") || document.body.dataset.csrf;

export function readCookie(name) {
  const hit = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
}

// One request with the session's CSRF token; an error answer (problem JSON) is thrown with
// its detail and status.
async function send(method, path, headers, body, background = false) {
  const res = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { ...headers, "X-CSRF-Token": csrf() },
    body,
  });
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error(problemMessage(data) || res.statusText);
    err.status = res.status;
    throw err;
  }
  // Something the agent did went through: an error said of an earlier step is stale now.
  // (Not so for what the page does on its own: a heartbeat, a read receipt, typing.)
  if (method !== "GET" && !background) clearError();
  return data;
}

// A problem document as a person reads it: its detail, and for a request that is not
// valid, which field is wrong and why, in words ("name: must not be empty", not the
// validator's "String should have at least 1 character").
function problemMessage(data) {
  if (!data) return "";
  const fields = (data.errors || []).map((e) => {
    const field = (e.loc || []).filter((part) => part !== "body").join(".");
    const why = plainWords(String(e.msg || "").replace(/^Value error, /, ""));
    return field ? `${field}: ${why}` : why;
  });
  return fields.length ? fields.join("; ") : data.detail;
}

const PLAIN = [
  [/^String should have at least 1 character$/, () => "must not be empty"],
  [/^String should have at least (\d+) characters$/, (n) => `must be at least ${n} characters`],
  [/^String should have at most (\d+) characters?$/, (n) => `must be at most ${n} characters`],
  [/^Input should be less than or equal to (\S+)$/, (n) => `must be at most ${n}`],
  [/^Input should be greater than or equal to (\S+)$/, (n) => `must be at least ${n}`],
  [/^Input should be less than (\S+)$/, (n) => `must be less than ${n}`],
  [/^Input should be greater than (\S+)$/, (n) => `must be more than ${n}`],
  [/^Input should be a valid integer.*$/, () => "must be a whole number"],
  [/^Input should be a valid number.*$/, () => "must be a number"],
  [/^Field required$/, () => "is needed"],
  [/^List should have at least 1 item.*$/, () => "needs at least one"],
];

function plainWords(msg) {
  for (const [pattern, say] of PLAIN) {
    const m = msg.match(pattern);
    if (m) return say(m[1]);
  }
  return msg;
}

export function api(method, path, body) {
  return send(method, path, { "Content-Type": "application/json" },
    body === undefined ? undefined : JSON.stringify(body));
}

// A request the page makes on its own (presence, read receipts, typing): the same, but
// what was said to the agent above the page stays.
export function background(method, path, body) {
  return send(method, path, { "Content-Type": "application/json" },
    body === undefined ? undefined : JSON.stringify(body), true);
}

// A file as multipart (the browser sets the boundary).
export function upload(path, file) {
  const form = new FormData();
  form.append("file", file);
  return send("POST", path, {}, form);
}

// A file as the raw request body, of the given type (a customer import).
export function sendFile(path, file, type) {
  return send("POST", path, { "Content-Type": type }, file);
}

// As the server's pages write it (Jinja's filesizeformat: decimal units).
export function formatSize(bytes) {
  if (bytes === 1) return "1 Byte";
  if (bytes < 1000) return `${bytes} Bytes`;
  if (bytes < 1000 * 1000) return `${(bytes / 1000).toFixed(1)} kB`;
  return `${(bytes / (1000 * 1000)).toFixed(1)} MB`;
}

// An error of the agent's last step, above the page, until they dismiss it or a later step
// goes through.
export function showError(message) {
  let box = document.getElementById("flash");
  if (!box) {
    box = document.createElement("p");
    box.id = "flash";
    box.className = "error";
    box.setAttribute("role", "alert");
    const text = document.createElement("span");
    const close = document.createElement("button");
    close.type = "button";
    close.className = "dismiss";
    close.setAttribute("aria-label", "Dismiss");
    close.addEventListener("click", clearError);
    box.append(text, close);
    document.querySelector("main").prepend(box);
  }
  box.querySelector("span").textContent = message;
}

export function clearError() {
  document.getElementById("flash")?.remove();
}


// What triage found on an inbound message, as small badges (text only, never markup).
export function triageBadges(t) {
  const out = [];
  const add = (cls, text, title) => {
    const b = document.createElement("span");
    b.className = `triage ${cls}`;
    b.textContent = text;
    if (title) b.title = title;
    out.push(b);
  };
  if (t.sentiment && t.sentiment !== "neutral") add(`mood-${t.sentiment}`, t.sentiment, `sentiment ${t.sentiment_score}`);
  if (t.language && t.language !== "en") add("lang", t.language);
  if (t.priority) add(`prio-${t.priority}`, t.priority);
  if (t.category) add("category", t.category);
  if (t.spam) add("spam", "spam?", (t.spam_signals || []).join(", "));
  return out;
}

// Email addresses as an agent types them: separated by commas, semicolons or lines, each
// an address or "Name <address>" (the address taken).
export function addressList(text) {
  return text.split(/[,;\n]+/).map((s) => {
    const named = s.match(/<([^<>]*)>/);
    return (named ? named[1] : s).trim();
  }).filter(Boolean);
}

// An email whose sender failed authentication at a trusted mail server, as a badge.
export function senderBadges(meta) {
  const auth = meta && meta.email && meta.email.sender_auth;
  if (!auth || auth.result !== "fail") return [];
  const b = document.createElement("span");
  b.className = "triage sender-unverified";
  b.textContent = "sender not verified";
  b.title = `${auth.by} found this email failed DMARC for ${auth.domain}: it may not come from that address`;
  return [b];
}

// What merging ``otherId`` into ``survivorId`` would choose between: the fields both hold
// with different values (GET .../merge-preview).
export async function mergeConflicts(survivorId, otherId) {
  const found = await api("GET", `/api/v1/customers/${encodeURIComponent(survivorId)}/merge-preview?merged_id=${encodeURIComponent(otherId)}`);
  return found.conflicts;
}

// Where two customers about to be merged hold different values (a merge's preview,
// rapport.customers.merge.conflicts): a line each with both, the survivor's chosen; and
// which the agent picked from the other record, as a merge's ``take``. ``group`` names the
// radios: unique on the page (radios outside a form share a group by name page-wide).
export function conflictLines(conflicts, group = "conflict") {
  const said = (v) => (Array.isArray(v) ? v.join(", ") : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v));
  return conflicts.map((c, i) => {
    const row = document.createElement("div");
    row.className = "merge-field";
    const name = document.createElement("span");
    name.textContent = `${c.field.replace(/^attributes\./, "")}:`;
    row.append(name, ...["survivor", "merged"].map((side) => {
      const radio = Object.assign(document.createElement("input"), { type: "radio", name: `${group}-${i}`, value: side, checked: side === "survivor" });
      const label = document.createElement("label");
      label.append(radio, ` ${said(c[side])}`);
      return label;
    }));
    return row;
  });
}

export function takenFrom(root, conflicts, group = "conflict") {
  return conflicts
    .filter((c, i) => root.querySelector(`input[name="${group}-${i}"]:checked`)?.value === "merged")
    .map((c) => c.field);
}

// --- canned responses: type /shortcut in a message's textarea -----------------------------
// ``rendered(item)``: the API path that fills the chosen one in (for a conversation, or for
// a customer before their conversation exists).
export function setupCanned(textarea, menu, rendered) {
  if (!menu || !textarea) return;
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
    const out = await api("GET", rendered(item));
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
    const found = await api("GET", `/api/v1/canned-responses?prefix=${encodeURIComponent(t.prefix)}`).catch(() => []);
    // An answer to an earlier keystroke, come late (or after one was chosen): not shown.
    if (token()?.prefix !== t.prefix) return;
    items = found;
    active = 0;
    render();
  });
  textarea.addEventListener("keydown", (ev) => {
    if (menu.hidden) return;
    if (ev.key === "ArrowDown") { ev.preventDefault(); active = (active + 1) % items.length; render(); }
    else if (ev.key === "ArrowUp") { ev.preventDefault(); active = (active + items.length - 1) % items.length; render(); }
    else if (ev.key === "Enter" || ev.key === "Tab") { ev.preventDefault(); ev.stopImmediatePropagation(); choose(items[active]); }
    else if (ev.key === "Escape") { ev.preventDefault(); close(); } // the menu first, then the field
  });
}

const MAX_FILE_BYTES = 10 * 1024 * 1024;

// Files the agent attaches (``input``): each uploads at once (to ``path``) and shows as a
// removable chip in ``chips``; the message names the uploads it sends.
export function setupAttachments(input, chips, path) {
  let items = [];
  const drop = (item) => { item.li.remove(); items = items.filter((i) => i !== item); };
  const addFile = (file) => {
    if (file.size > MAX_FILE_BYTES) { showError(`${file.name} is over 10 MB: it cannot be sent.`); return; }
    const li = document.createElement("li");
    li.className = "uploading";
    const name = document.createElement("span");
    name.textContent = file.name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove ${file.name}`);
    li.append(name, remove);
    chips.append(li);
    const item = { li, id: null };
    item.ready = upload(path, file)
      .then((up) => { item.id = up.id; li.dataset.upload = up.id; li.classList.remove("uploading"); })
      .catch((e) => { showError(`${file.name}: ${e.message}`); drop(item); });
    remove.addEventListener("click", () => drop(item));
    items.push(item);
  };
  input.addEventListener("change", () => {
    [...input.files].forEach(addFile);
    input.value = "";
  });
  return {
    // The ids of the uploads still attached, once every upload in flight has finished.
    ids: async () => {
      await Promise.all(items.map((i) => i.ready));
      return items.filter((i) => i.id).map((i) => i.id);
    },
    clear: () => { items = []; chips.replaceChildren(); },
  };
}
