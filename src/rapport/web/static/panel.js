// The customer panel beside a conversation and on the customer's own page: profile figures,
// tags, attributes, notes for colleagues, consent (recorded here by agents and above), conversations the customer opened on
// other channels at the same time (beside a conversation),
// duplicate suggestions, and erasing the customer (admins).
// Everything comes from the API and is written as text (never markup).

import { control, read, shown } from "./attributes.js";
import { api, background, conflictLines, mergeConflicts, showError, takenFrom } from "./http.js";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

// Totals as the API writes them in decimal text ("1234.50"): a JavaScript number rounds an
// amount past 2**53 minor units, and shows one past 1e21 in exponent notation.
function money(totals) {
  const parts = Object.entries(totals).map(([cur, amount]) => `${amount} ${cur}`);
  return parts.length ? parts.join(", ") : "—";
}

async function profile(box, customerId, canTag) {
  const p = await api("GET", `/api/v1/customers/${customerId}/profile`);
  const f = p.figures;
  const dl = el("dl");
  const row = (k, v) => dl.append(el("dt", k), el("dd", v));
  row("channels", f.channels.join(", ") || "—");
  row("conversations", String(f.conversations));
  row("orders", String(f.orders));
  row("total spend", money(f.total_spend));
  if (f.average_csat !== null) row("average CSAT", String(f.average_csat));
  if (!canTag) row("tags", p.tags.join(", ") || "—");
  else dl.append(el("dt", "tags"), tagEditor(customerId, p.tags));
  // Drawn again while the agent types a tag (a colleague changed the customer): what they
  // typed, and where, stays.
  const typing = box.querySelector("form.add-tag input");
  const focused = typing !== null && document.activeElement === typing;
  box.replaceChildren(el("h3", "Profile"), dl);
  const input = box.querySelector("form.add-tag input");
  if (typing && input) {
    input.value = typing.value;
    if (focused) {
      input.focus();
      input.setSelectionRange(typing.selectionStart, typing.selectionEnd);
    }
  }
  return p;
}

// The customer's tags, each removable, and a box to add one. Each change sends only
// itself (PATCH): a colleague's tag added meanwhile stays. The profile is read again when
// the change is told (customer.updated), redrawing this.
function tagEditor(customerId, tags) {
  const dd = el("dd", "", "tags");
  const change = async (body) => {
    try {
      await api("PATCH", `/api/v1/customers/${customerId}/tags`, body);
    } catch (e) { showError(e.message); }
  };
  for (const tag of tags) {
    const chip = el("span", tag, "tag");
    const x = el("button", "×", "remove-tag");
    x.type = "button";
    x.setAttribute("aria-label", `Remove tag ${tag}`);
    x.addEventListener("click", () => { x.disabled = true; change({ remove: [tag] }); });
    chip.append(x);
    dd.append(chip, " ");
  }
  const form = el("form", "", "add-tag");
  const input = el("input");
  Object.assign(input, { name: "tag", placeholder: "Add tag", maxLength: 64, required: true });
  input.setAttribute("aria-label", "Add tag");
  form.append(input);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const tag = input.value.trim();
    if (tag) change({ add: [tag] });
    input.value = "";
  });
  dd.append(form);
  return dd;
}

const CHANNELS = { email: "Email", sms: "SMS", whatsapp: "WhatsApp", phone: "Phone calls", push: "Push notifications" };
const PURPOSES = [
  ["all", "every message on the channel"],
  ["transactional", "replies to the customer"],
  ["marketing", "offers and newsletters"],
  ["surveys", "feedback requests"],
];

// A time as the API's refusals write it: "2026-11-22 14:03 UTC".
function utc(iso) {
  return `${new Date(iso).toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

// The decisions in force, per channel: "everything: withdrawn since 2026-11-22 14:03 UTC by
// SMS keyword STOP". A purpose given while everything is withdrawn is held back (the
// server's rule: `all` withdrawn governs every purpose until `all` is given again).
function consentState(current) {
  if (!current.length) return el("p", "No consent recorded yet.", "reason");
  const dl = el("dl");
  dl.className = "consents";
  const channels = [...new Set(current.map((c) => c.channel))];
  for (const channel of channels) {
    const rows = current.filter((c) => c.channel === channel);
    const every = rows.find((c) => c.purpose === "all");
    const held = every && !every.granted;
    const list = el("ul");
    for (const c of rows) {
      const what = c.purpose === "all" ? "everything" : c.purpose;
      let text = `${what}: ${c.granted ? "given" : "withdrawn"} since ${utc(c.recorded_at)}`;
      if (c.source) text += ` by ${c.source}`;
      if (c.granted && held && c.purpose !== "all") text += " (held back while everything is withdrawn)";
      list.append(el("li", text, c.granted ? "consent-given" : "consent-withdrawn"));
    }
    dl.append(el("dt", CHANNELS[channel] || channel), el("dd"));
    dl.lastChild.append(list);
  }
  return dl;
}

// The form an agent records a consent decision with (given or withdrawn, and why).
function consentForm(channel) {
  const form = el("form");
  form.id = "consent-form";
  form.className = "consent-form";
  const field = (label, control) => {
    const l = el("label", label);
    l.append(control);
    return l;
  };
  const channels = el("select");
  channels.name = "channel";
  channels.required = true;
  if (!channel) channels.append(new Option("Choose a channel", ""));
  for (const [value, name] of Object.entries(CHANNELS)) channels.append(new Option(name, value, false, value === channel));
  const purpose = el("input");
  Object.assign(purpose, { name: "purpose", value: "all", required: true, maxLength: 64 });
  purpose.setAttribute("list", "consent-purposes");
  purpose.setAttribute("aria-describedby", "consent-purpose-help");
  const options = el("datalist");
  options.id = "consent-purposes";
  for (const [value, label] of PURPOSES) options.append(new Option(label, value));
  const help = el("span", "all covers every message on the channel, replies included.", "reason");
  help.id = "consent-purpose-help";
  const decision = el("fieldset");
  decision.append(el("legend", "The customer"));
  for (const [value, label] of [["true", "agrees"], ["false", "withdraws"]]) {
    const radio = el("input");
    Object.assign(radio, { type: "radio", name: "granted", value, required: true });
    const l = el("label");
    l.append(radio, ` ${label}`);
    decision.append(l);
  }
  const note = el("input");
  Object.assign(note, { name: "note", maxLength: 190, placeholder: "e.g. asked on the phone" });
  const submit = el("button", "Record consent");
  submit.type = "submit";
  const done = el("p", "", "reason");
  done.setAttribute("role", "status");
  const box = el("fieldset");
  box.append(
    el("legend", "Record consent"),
    field("Channel ", channels),
    field("Purpose ", purpose), options, help,
    decision,
    field("Note (optional) ", note),
    submit, done,
  );
  form.append(box);
  return form;
}

// Shows the decisions in force and, for agents and above, the form; returns what redraws
// the decisions alone (a colleague recorded one), leaving a half-filled form as it is.
function consent(box, customerId, current, { canRecord, channel }) {
  const state = el("div");
  state.append(consentState(current));
  box.replaceChildren(el("h3", "Consent"), state);
  const redraw = (fresh) => state.replaceChildren(consentState(fresh));
  if (!canRecord) return redraw;
  const form = consentForm(channel);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const note = String(data.get("note") || "").trim();
    const body = {
      channel: data.get("channel"),
      purpose: String(data.get("purpose") || "").trim().toLowerCase(),
      granted: data.get("granted") === "true",
      // Who recorded it is kept too (the signed-in agent); the note says how they learnt it.
      source: note ? `agent: ${note}` : "agent",
    };
    const status = form.querySelector("[role=status]");
    try {
      const row = await api("POST", `/api/v1/customers/${customerId}/consents`, body);
      const fresh = await api("GET", `/api/v1/customers/${customerId}/consents`);
      redraw(fresh.current);
      const what = row.purpose === "all" ? "everything" : row.purpose;
      status.textContent = `Recorded: ${CHANNELS[row.channel] || row.channel}, ${what} ${row.granted ? "given" : "withdrawn"}.`;
      form.elements.note.value = "";
      for (const radio of form.querySelectorAll("input[name=granted]")) radio.checked = false;
    } catch (e) {
      status.textContent = "";
      showError(e.message);
    }
  });
  box.append(form);
  return redraw;
}

// Another agent changed this customer (a consent, tags, a handle), or a merge into them or
// its undo moved what they hold (figures, tags, consents): read the profile and the
// decisions again. Events of a burst while a read is on its way cost one more read.
function followCustomer(customerId, boxes, redrawConsent, canTag, signal) {
  let reading = null;
  let again = false;
  const read = () => {
    reading = profile(boxes.profile, customerId, canTag)
      .then((p) => redrawConsent(p.consents))
      .catch((e) => showError(e.message))
      .finally(() => {
        reading = null;
        if (again) { again = false; read(); }
      });
  };
  document.addEventListener("rapport:event", (ev) => {
    const e = ev.detail;
    const p = e.payload || {};
    if (e.type === "customer.updated") {
      if (p.id !== customerId || p.notes) return; // a note: the notes part reads those
    } else if (!mergedWith(e, customerId)) return;
    if (reading) again = true;
    else read();
  }, { signal });
}

// A merge into this customer, or the undo of one of theirs: what their record holds moved.
function mergedWith(e, customerId) {
  if (e.type !== "customer.merged" && e.type !== "customer.unmerged") return false;
  const p = e.payload || {};
  return p.survivor_id === customerId || (e.type === "customer.unmerged" && p.merged_id === customerId);
}

// A part of the panel read from the API and drawn again when a colleague changes it, but
// never under a form the agent has open in it (what they typed would go): the redraw waits
// until every such form is closed (saved or cancelled), then reads afresh.
function heldRedraw(load, paint) {
  const open = new Set();
  let stale = false;
  const redraw = async () => {
    if (open.size) { stale = true; return; }
    const data = await load();
    if (open.size) { stale = true; return; }
    paint(data);
  };
  return {
    redraw,
    hold: (key) => open.add(key),
    // Once per form: a second call (a double click's second answer) changes nothing.
    release: (key) => {
      if (!open.delete(key) || open.size || !stale) return;
      stale = false;
      redraw().catch((e) => showError(e.message));
    },
  };
}

// --- the customer's attributes: the workspace's defined ones (each shown and edited by its
// type), then any other the customer carries (from an import or the API). Agents edit them
// in place; only what they changed is sent. A colleague's change redraws them, but not
// under the form being filled.
function attributes(box, customerId, canEdit, signal) {
  let defs = [];
  const parts = heldRedraw(
    async () => {
      const [d, customer] = await Promise.all([
        api("GET", "/api/v1/attribute-definitions"),
        api("GET", `/api/v1/customers/${customerId}`),
      ]);
      return [d, customer.attributes];
    },
    ([d, values]) => { defs = d; render(values); },
  );
  const render = (values) => {
    const byKey = new Map(defs.map((d) => [d.key, d]));
    const keys = [...defs.map((d) => d.key), ...Object.keys(values).filter((k) => !byKey.has(k)).sort()];
    const head = el("h3", "Attributes");
    if (!keys.length) {
      box.replaceChildren(...(canEdit ? [head, el("p", "None defined: an admin defines them in Settings.", "reason")] : []));
      return;
    }
    const dl = el("dl", "", "customer-attributes");
    for (const k of keys) dl.append(el("dt", byKey.get(k)?.label || k), el("dd", shown(byKey.get(k), values[k])));
    box.replaceChildren(head, dl);
    if (!canEdit) return;
    const edit = el("button", "Edit attributes", "edit-attributes");
    edit.type = "button";
    edit.addEventListener("click", () => {
      parts.hold("form");
      box.replaceChildren(head, form(byKey, values, keys));
      box.querySelector("input:not([disabled]), select, textarea")?.focus();
    });
    box.append(edit);
  };
  const form = (byKey, values, keys) => {
    const f = el("form", "", "attributes-form");
    const controls = keys.map((k, i) => {
      const c = control(byKey.get(k), values[k], `attribute-${i}`);
      c.dataset.key = k;
      const label = el("label", byKey.get(k)?.label || k);
      label.htmlFor = c.id;
      f.append(label, c);
      return c;
    });
    const save = el("button", "Save");
    const cancel = el("button", "Cancel");
    cancel.type = "button";
    const buttons = el("div");
    buttons.append(save, " ", cancel);
    f.append(buttons);
    cancel.addEventListener("click", () => { render(values); parts.release("form"); });
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const changes = {};
      for (const c of controls) {
        if (c.disabled) continue; // shown, not editable here (an object a client stored)
        const now = read(c);
        if (JSON.stringify(now) !== c.dataset.was) changes[c.dataset.key] = now;
      }
      save.disabled = cancel.disabled = true;
      try {
        // Nothing changed: as Cancel (a colleague's change meanwhile is read afresh).
        if (Object.keys(changes).length) {
          const after = await api("PATCH", `/api/v1/customers/${customerId}`, { attributes: changes });
          values = after.attributes;
        }
        render(values);
        parts.release("form");
      } catch (e) {
        showError(e.message);
        save.disabled = cancel.disabled = false;
      }
    });
    return f;
  };
  document.addEventListener("rapport:event", (ev) => {
    const e = ev.detail;
    if (e.type === "customer.attribute_changed" && (e.payload || {}).id === customerId) {
      parts.redraw().catch((err) => showError(err.message));
    }
  }, { signal });
  return parts.redraw();
}

// --- notes about the customer: for colleagues, never sent to the customer ---------------
// Each note with its author and time; its author (or an admin) edits or deletes it in place.
// A colleague's change redraws the list (customer.updated), but not under a note being
// edited, nor the one being written.
function timeOf(iso) {
  const t = el("time", utc(iso)); // until app.js shows it on the reader's clock
  t.dateTime = iso;
  return t;
}

function notes(box, customerId, canWrite, signal) {
  const me = document.body.dataset.user;
  const admin = ["admin", "owner"].includes(document.body.dataset.role);
  const url = `/api/v1/customers/${customerId}/notes`;
  const list = el("ul", "", "customer-notes");
  list.setAttribute("aria-label", "Notes about this customer");
  const empty = () => { if (!list.children.length) list.append(el("li", "No notes yet.", "reason")); };
  const parts = heldRedraw(() => api("GET", url), (rows) => {
    list.replaceChildren(...rows.map(item));
    empty();
  });
  const item = (n) => {
    const li = el("li");
    li.dataset.note = n.id;
    const text = el("p", n.text, "note-text");
    const meta = el("div", "", "reason");
    meta.append(`${n.author_name || "A former member"} · `, timeOf(n.created_at));
    if (n.updated_at !== n.created_at) meta.append(" (edited)");
    li.append(text, meta);
    if (canWrite && (n.author_id === me || admin)) {
      const edit = el("button", "Edit", "edit-note");
      const del = el("button", "Delete", "delete-note");
      edit.type = del.type = "button";
      edit.setAttribute("aria-label", "Edit this note");
      del.setAttribute("aria-label", "Delete this note");
      edit.addEventListener("click", () => {
        parts.hold(n.id);
        const form = el("form", "", "edit-note-form");
        const area = el("textarea", n.text);
        Object.assign(area, { rows: 3, maxLength: 10000, required: true });
        area.setAttribute("aria-label", "Note");
        // A colleague's change made while this one was open: shown, never overwritten unasked.
        const theirs = el("p", "", "note-theirs");
        theirs.hidden = true;
        const save = el("button", "Save");
        const cancel = el("button", "Cancel");
        cancel.type = "button";
        form.append(theirs, area, save, cancel);
        li.replaceChildren(form, meta);
        area.focus();
        cancel.addEventListener("click", () => { li.replaceWith(item(n)); parts.release(n.id); });
        form.addEventListener("submit", async (ev) => {
          ev.preventDefault();
          save.disabled = cancel.disabled = true; // one request: a double click sends one
          try {
            const changed = await api("PATCH", `${url}/${n.id}`, { text: area.value, updated_at: n.updated_at });
            li.replaceWith(item(changed));
            parts.release(n.id);
          } catch (e) {
            if (e.status === 409) {
              // Changed meanwhile: the new text shown above this one, which stays; saved
              // again, it replaces the new one knowingly.
              const now = (await api("GET", url).catch(() => [])).find((r) => r.id === n.id);
              if (now) {
                n = now;
                theirs.textContent = `Changed meanwhile, it now reads: ${now.text}`;
                theirs.hidden = false;
              }
            }
            showError(e.message);
            save.disabled = cancel.disabled = false;
          }
        });
      });
      del.addEventListener("click", async () => {
        if (!confirm("Delete this note? It cannot be brought back.")) return;
        del.disabled = true;
        try {
          await api("DELETE", `${url}/${n.id}`);
          li.remove();
          empty();
        } catch (e) {
          showError(e.message);
          del.disabled = false;
        }
      });
      li.append(edit, " ", del);
    }
    return li;
  };
  box.replaceChildren(el("h3", "Notes"), list);
  if (canWrite) {
    const form = el("form", "", "add-note");
    form.id = "add-note";
    const area = el("textarea");
    Object.assign(area, { name: "text", rows: 2, maxLength: 10000, required: true });
    area.placeholder = "A note for colleagues (the customer never sees it)";
    area.setAttribute("aria-label", "New note about this customer");
    const add = el("button", "Add note");
    add.type = "submit";
    form.append(area, add);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      add.disabled = true;
      try {
        await api("POST", url, { text: area.value });
        area.value = "";
        await parts.redraw();
      } catch (e) {
        showError(e.message);
      } finally {
        add.disabled = false;
      }
    });
    box.append(form);
  }
  // A merge moves the other record's notes to this one, and its undo takes them back.
  document.addEventListener("rapport:event", (ev) => {
    const e = ev.detail;
    const told = e.type === "customer.updated" && (e.payload || {}).notes && (e.payload || {}).id === customerId;
    if (told || mergedWith(e, customerId)) parts.redraw().catch((err) => showError(err.message));
  }, { signal });
  return parts.redraw();
}

async function related(box, conversationId) {
  const rows = await api("GET", `/api/v1/conversations/${conversationId}/related`);
  if (!rows.length) { box.replaceChildren(); return; }
  const list = el("ul");
  for (const c of rows) {
    const li = el("li");
    const link = el("a", `${c.subject || "conversation"} · ${c.status}`);
    link.href = `/app/conversations/${c.id}`;
    const merge = el("button", "Merge into this one");
    merge.type = "button";
    merge.addEventListener("click", async () => {
      try {
        await api("POST", `/api/v1/conversations/${conversationId}/merge`, { merged_id: c.id });
        location.reload();
      } catch (e) { showError(e.message); }
    });
    li.append(link, " ", merge);
    list.append(li);
  }
  box.replaceChildren(el("h3", "Also writing on another channel"), list);
}

async function suggestions(box, customerId) {
  const rows = await api("GET", `/api/v1/merge-suggestions?customer_id=${encodeURIComponent(customerId)}`);
  if (!rows.length) { box.replaceChildren(); return; }
  const list = el("ul");
  // Who the other customer is: a merge decided on a percentage alone is a guess.
  const others = await Promise.all(rows.map((s) => api("GET", `/api/v1/customers/${s.left_id === customerId ? s.right_id : s.left_id}`)));
  for (const [i, s] of rows.entries()) {
    const li = el("li");
    const other = others[i];
    const link = el("a", other.name || other.email || other.phone || "Customer");
    link.href = `/app/customers/${encodeURIComponent(other.id)}`;
    const handles = [other.email, other.phone].filter(Boolean).join(" · ");
    const who = el("strong", `${Math.round(s.probability * 100)} % likely the same person as `);
    who.append(link);
    const why = el("div", handles ? `${handles}. ${s.reason}` : s.reason, "reason");
    const yes = el("button", "Merge");
    yes.type = "button";
    // Where the two differ, the first click shows it (this customer's value chosen), the
    // next merges with what was picked.
    let differ = null;
    const group = `conflict-${s.id}`;
    yes.addEventListener("click", async () => {
      try {
        if (differ === null) {
          differ = await mergeConflicts(customerId, other.id);
          if (differ.length) {
            const fields = el("fieldset", undefined, "merge-conflicts");
            fields.append(el("legend", "Where they differ, keep"), ...conflictLines(differ, group));
            why.after(fields);
            yes.textContent = "Merge, keeping what is chosen";
            return;
          }
        }
        await api("POST", `/api/v1/merge-suggestions/${s.id}/accept`, { survivor_id: customerId, take: takenFrom(li, differ, group) });
        location.reload();
      } catch (e) { showError(e.message); }
    });
    const no = el("button", "Not the same");
    no.type = "button";
    no.addEventListener("click", async () => {
      try {
        await api("POST", `/api/v1/merge-suggestions/${s.id}/dismiss`);
        li.remove();
      } catch (e) { showError(e.message); }
    });
    li.append(who, why, yes, " ", no);
    list.append(li);
  }
  const all = el("a", "All possible duplicates");
  all.href = "/app/customers/duplicates";
  box.replaceChildren(el("h3", "Possible duplicates"), list, all);
}

// Collision notice: who else has this conversation open, or is typing in it (a colleague,
// or the customer in the chat widget).
function collisions(box, conversationId) {
  const me = document.body.dataset.user;
  const others = new Map(); // user id (or "customer") -> {name, what, until}
  const render = () => {
    const now = Date.now();
    const lines = [...others.values()].filter((o) => o.until > now).map((o) => `${o.name} is ${o.what}`);
    box.replaceChildren(...lines.map((l) => el("p", l, "collision")));
    box.hidden = lines.length === 0;
  };
  document.addEventListener("rapport:event", (ev) => {
    const e = ev.detail;
    const p = e.payload || {};
    if (p.conversation_id !== conversationId) return;
    if (e.type === "visitor.typing") {
      others.set("customer", { name: "The customer", what: "typing", until: Date.now() + 5000 });
      setTimeout(render, 5100);
      render();
      return;
    }
    if (!p.user_id || p.user_id === me) return;
    // A colleague's page on it is gone (its socket closed): off the notice at once, not
    // 40 s later. Another page of theirs still on it says so again at its next ping.
    if (e.type === "agent.left") others.delete(p.user_id);
    if (e.type === "agent.viewing") {
      const known = others.get(p.user_id);
      const typing = known && known.what === "typing a reply" && known.until > Date.now();
      if (!typing) others.set(p.user_id, { name: p.name || "A colleague", what: "viewing this conversation", until: Date.now() + 40000 });
      // A colleague who just came: told at once that we are here too (they learnt it at
      // our next ping, up to 15 s later, and could reply over us meanwhile).
      if (!known || known.until <= Date.now()) answer();
    }
    if (e.type === "agent.typing") {
      const known = others.get(p.user_id);
      others.set(p.user_id, { name: (known && known.name) || p.name || "A colleague", what: "typing a reply", until: Date.now() + 5000 });
      setTimeout(render, 5100);
    }
    render();
  });
  let pinged = 0;
  // Over the page's socket when it is open (app.js's "rapport:say"), else by a request.
  const ping = () => {
    pinged = Date.now();
    const detail = { type: "viewing", conversation_id: conversationId, sent: false };
    document.dispatchEvent(new CustomEvent("rapport:say", { detail }));
    if (!detail.sent) background("POST", `/api/v1/conversations/${conversationId}/viewing`).catch(() => null);
  };
  const answer = () => { if (document.visibilityState === "visible" && Date.now() - pinged > 500) ping(); };
  // First told once our socket is open: a colleague's answer is said only to those
  // listening then (never replayed), and reached no page whose socket opened after it.
  // Without a socket within 3 s (a proxy that drops them), told anyway.
  let told = false;
  const tell = () => { told = true; ping(); };
  if (document.body.dataset.streamOpen) tell();
  document.addEventListener("rapport:connected", tell);
  setTimeout(() => { if (!told) ping(); }, 3000);
  setInterval(() => { if (document.visibilityState === "visible") ping(); }, 15000);
  setInterval(render, 5000);
}

async function suggested(box, conversationId) {
  const out = await api("GET", `/api/v1/conversations/${conversationId}/suggestions`);
  if (!out.articles.length && !out.answers.length) { box.replaceChildren(); return; }
  const composer = document.querySelector("#composer textarea");
  const use = (text) => {
    if (!composer) return;
    composer.value = composer.value ? `${composer.value}\n\n${text}` : text;
    composer.focus();
  };
  const list = el("ul");
  for (const a of out.articles) {
    const li = el("li");
    const link = el("a", a.title);
    if (a.url) link.href = a.url;
    const insert = el("button", "Insert link");
    insert.type = "button";
    insert.addEventListener("click", () => use(`${a.excerpt}\n${a.url}`));
    li.append(el("span", "Article: "), link, el("div", a.excerpt, "reason"), insert);
    list.append(li);
  }
  for (const a of out.answers) {
    const li = el("li");
    li.append(el("div", `Asked before: “${a.question}”`, "reason"), el("div", a.answer));
    const insert = el("button", "Use this answer");
    insert.type = "button";
    insert.addEventListener("click", () => use(a.answer));
    li.append(insert);
    list.append(li);
  }
  box.replaceChildren(el("h3", "Suggested answers"), list);
}

// An admin erases the customer for good, after typing "erase" (a click alone is too easy).
function eraseForm(form) {
  form?.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (form.elements.confirm.value.trim().toLowerCase() !== "erase") {
      showError("Type erase to confirm.");
      return;
    }
    try {
      await api("DELETE", `/api/v1/customers/${form.dataset.customer}`);
      window.location.assign("/app/inbox");
    } catch (e) {
      showError(e.message);
    }
  });
}

// The conversation on screen merged by a colleague: merged into another, its messages are
// there now, and a reply written here would go to an emptied thread; merged into, the
// other's messages are here but not on the screen. Said at once, with the way there (the
// page went on as if nothing had happened). Those merged into this one and taken back by
// their customers' merge undone (``conversation.parted`` from here to them) are no longer
// to show: once none is left, the notice says so, without its "Show them" (it stayed,
// offering messages that had gone).
function followMerges(notice, conversationId) {
  const unshown = new Set(); // the conversations merged into this one, their messages not drawn
  document.addEventListener("rapport:event", (ev) => {
    const e = ev.detail;
    const p = e.payload || {};
    if (e.type === "conversation.parted" && p.from_id === conversationId && unshown.delete(p.id)) {
      if (unshown.size) return;
      notice.replaceChildren(el("span", "Their customers' merge was undone: the conversation merged into this one took its messages back, and nothing of it is missing here."));
      notice.hidden = false;
      return;
    }
    if (e.type !== "conversation.merged") return;
    if (p.merged_id === conversationId) {
      const link = el("a", "Open that conversation");
      link.href = `/app/conversations/${encodeURIComponent(p.id)}`;
      notice.replaceChildren(el("span", "This conversation was merged into another: its messages are there now, and replies go there. What you wrote stays here as a draft. "), link);
      document.getElementById("composer").dataset.mergedAway = "1"; // until the merge is undone (app.js)
      for (const button of document.querySelectorAll("#composer button[type=submit], #composer input[type=file]")) button.disabled = true;
    } else if (p.id === conversationId) {
      unshown.add(p.merged_id);
      const again = el("button", "Show them");
      again.type = "button";
      again.addEventListener("click", () => location.reload()); // the draft is kept
      notice.replaceChildren(el("span", "Another conversation of this customer was merged into this one: its messages are not on the screen yet. "), again);
    } else return;
    notice.hidden = false;
  });
}

// The customer erased (an admin, here or in another tab): what the page shows of them goes
// at once, with the composer and forms that would write to records that are gone (they
// stayed until a reload). The messages they wrote in another customer's conversation
// (copied on their mail) go from its thread.
// Away from the stream a while, the page is replayed the erasure's events blanked once the
// erasure has removed its copies (``erased``, no payload, nothing saying whom): it asks
// whether its customer is still there.
function followErasure(customerId, signal) {
  document.addEventListener("rapport:event", async (ev) => {
    const e = ev.detail;
    if (e.type === "erased") {
      const gone = await background("GET", `/api/v1/customers/${encodeURIComponent(customerId)}`)
        .then(() => false, (err) => err.status === 404);
      if (gone) sayErased();
      return;
    }
    if (e.type !== "customer.erased") return;
    const p = e.payload || {};
    for (const id of p.message_ids || []) document.querySelector(`#messages li[data-id="${CSS.escape(id)}"]`)?.remove();
    if ((p.customer_ids || []).includes(customerId)) sayErased();
  }, { signal });
}

function sayErased() {
  const page = document.querySelector("div.conversation");
  const said = el("p", "This customer was erased: their conversations and everything Rapport held about them are gone. ", "collisions erased-notice");
  said.setAttribute("role", "alert");
  const back = el("a", "Back to the inbox");
  back.href = "/app/inbox";
  said.append(back);
  const thread = el("section", undefined, "thread"); // the page's layout, holding the notice alone
  thread.append(said);
  page?.replaceChildren(thread);
}

// The panel of the customer shown: every part that reads or follows them. Mounted again
// on the panel app.js draws anew when the conversation beside it passes to another record
// (their customers' merge, or its undo: ``rapport:customer-shown``); the parts of the one
// before stop following the stream with it (``signal``), else they read and drew a record
// the page no longer shows.
function mountPanel(root, signal) {
  const { customer, conversation, consentChannel, canRecordConsent } = root.dataset;
  const part = (name) => {
    const box = el("section");
    box.dataset.part = name;
    root.append(box);
    return box;
  };
  const boxes = {
    suggested: part("suggested"),
    profile: part("profile"),
    attributes: part("attributes"),
    notes: part("notes"),
    consent: part("consent"),
    related: part("related"),
    suggestions: part("suggestions"),
  };
  // On the customer's own page there is no conversation: no answers to suggest, nothing
  // open beside it.
  if (conversation) suggested(boxes.suggested, conversation).catch((e) => showError(e.message));
  const canAct = canRecordConsent === "true"; // agents and above
  profile(boxes.profile, customer, canAct)
    .then((p) => {
      if (signal.aborted) return; // another customer's panel by now
      const redraw = consent(boxes.consent, customer, p.consents, {
        canRecord: canAct,
        channel: consentChannel,
      });
      followCustomer(customer, boxes, redraw, canAct, signal);
    })
    .catch((e) => showError(e.message));
  attributes(boxes.attributes, customer, canAct, signal).catch((e) => showError(e.message));
  notes(boxes.notes, customer, canAct, signal).catch((e) => showError(e.message));
  if (conversation) related(boxes.related, conversation).catch((e) => showError(e.message));
  const candidates = () => suggestions(boxes.suggestions, customer).catch((e) => showError(e.message));
  candidates();
  // A merge of theirs, or its undo, settles or brings back the pairs it was suggested in.
  document.addEventListener("rapport:event", (ev) => {
    if (mergedWith(ev.detail, customer)) candidates();
  }, { signal });
  followErasure(customer, signal);
  const aside = root.closest("aside.customer");
  nameForm(aside?.querySelector("#customer-name"));
  handleForm(aside?.querySelector("#customer-handle"));
  eraseForm(aside?.querySelector("#erase-form"));
}

const root = document.getElementById("panel-extra");
if (root) {
  let mounted = new AbortController();
  mountPanel(root, mounted.signal);
  const { conversation } = root.dataset;
  const notice = document.getElementById("collision");
  if (notice) collisions(notice, conversation);
  const merged = document.getElementById("merged-notice");
  if (merged && conversation) followMerges(merged, conversation);
  document.addEventListener("rapport:customer-shown", () => {
    const fresh = document.getElementById("panel-extra");
    if (!fresh || fresh.childElementCount) return; // mounted already
    mounted.abort();
    mounted = new AbortController();
    mountPanel(fresh, mounted.signal);
  });
}

// An agent corrects the customer's name, or adds an email or phone they were told: shown
// at once in the panel (the conversation beside it, and a half-written reply, stay).
function nameForm(form) {
  form?.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const c = await api("PATCH", `/api/v1/customers/${form.dataset.customer}`, { name: form.elements.name.value.trim() });
      // Called as every list calls a customer: by name, else by a handle (a blank name is none).
      const called = c.name || c.email || c.phone || "Customer";
      const heading = document.querySelector("aside.customer h2 a") || document.querySelector("aside.customer h2");
      heading.textContent = called;
      const page = document.querySelector(".customer-page h1");  // the customer's own page
      if (page) {
        page.textContent = called;
        document.title = `${c.name || "Customer"} · Rapport`;
      }
    } catch (e) { showError(e.message); }
  });
}

function handleForm(form) {
  form?.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const h = await api("POST", `/api/v1/customers/${form.dataset.customer}/identities`, {
        kind: form.elements.kind.value,
        value: form.elements.value.value.trim(),
        verified: form.elements.verified.checked,
      });
      const list = document.getElementById("customer-handles");
      // The same handle shown already (a dd after a dt of its kind, not an attribute's).
      const shown = [...list.querySelectorAll("dt")]
        .filter((dt) => dt.textContent === h.kind)
        .map((dt) => dt.nextElementSibling)
        .find((dd) => dd && dd.textContent.replace(" ✓", "") === h.value);
      const text = h.verified ? `${h.value} ✓` : h.value;
      if (shown) shown.textContent = text; // theirs already: now proved
      else {
        const before = [...list.querySelectorAll("dt")].find((dt) => dt.textContent === "first seen");
        list.insertBefore(el("dt", h.kind), before);
        list.insertBefore(el("dd", text), before);
      }
      form.elements.value.value = "";
      form.elements.verified.checked = false;
    } catch (e) { showError(e.message); }
  });
}

// The customer's own page: a record merged into this one by mistake is given back.
const merges = document.getElementById("merges");
merges?.addEventListener("click", async (ev) => {
  const button = ev.target.closest("button.undo-merge");
  if (!button) return;
  const item = button.closest("li");
  const name = item.querySelector("strong").textContent;
  if (!confirm(`Undo the merge of ${name}? Their handles, conversations and events go back to them.`)) return;
  const error = document.getElementById("merges-error");
  error.hidden = true;
  button.disabled = true;
  try {
    await api("POST", `/api/v1/customer-merges/${encodeURIComponent(item.dataset.merge)}/undo`);
    location.reload(); // their conversations, handles and timeline leave this page
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
    button.disabled = false;
  }
});

// The customer's own page: another record of the same person (found by name, email or
// phone) merged into this one by an agent, when detection did not suggest it.
const mergeWith = document.getElementById("merge-with");
if (mergeWith) {
  const survivor = mergeWith.dataset.customer;
  const found = document.getElementById("merge-candidates");
  const error = document.getElementById("merge-error");
  const fail = (message) => { error.textContent = message; error.hidden = false; };
  // Where the two hold different values, the first click on Merge shows them (this
  // customer's chosen) and the next merges with what was picked.
  const differing = new Map(); // candidate id -> its conflicts, once shown
  document.getElementById("merge-search").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    differing.clear();
    const q = ev.target.elements.q.value.trim();
    try {
      const page = await api("GET", `/api/v1/customers?q=${encodeURIComponent(q)}&limit=10`);
      const others = page.items.filter((c) => c.id !== survivor && !c.merged_into_id);
      found.replaceChildren(...others.map((c) => {
        const item = el("li");
        item.dataset.customer = c.id;
        const link = el("a", c.name || c.email || c.phone || "Customer");
        link.href = `/app/customers/${c.id}`;
        const handles = [c.email, c.phone].filter(Boolean).join(" · ");
        const merge = el("button", `Merge into ${mergeWith.dataset.name}`, "merge");
        merge.type = "button";
        item.append(link, el("span", handles ? ` ${handles} ` : " ", "hint"), merge);
        return item;
      }));
      if (!others.length) found.replaceChildren(el("li", "No other customer matches.", "empty"));
    } catch (e) { fail(e.message); }
  });
  found.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button.merge");
    if (!button) return;
    const item = button.closest("li");
    const other = item.dataset.customer;
    const name = item.querySelector("a").textContent;
    error.hidden = true;
    if (!differing.has(other)) {
      try {
        const conflicts = await mergeConflicts(survivor, other);
        differing.set(other, conflicts);
        if (conflicts.length) {
          const box = el("fieldset", "", "merge-conflicts");
          box.append(el("legend", "Where they differ, keep"), ...conflictLines(conflicts, `conflict-${other}`));
          item.append(box);
          button.textContent = `Merge, keeping what is chosen`;
          return;
        }
      } catch (e) { fail(e.message); return; }
    }
    if (!confirm(`Merge ${name} into ${mergeWith.dataset.name}? Their conversations, handles and timeline come here; it can be undone.`)) return;
    button.disabled = true;
    try {
      await api("POST", `/api/v1/customers/${encodeURIComponent(survivor)}/merge`, {
        merged_id: other,
        reason: "merged by hand",
        take: takenFrom(item, differing.get(other), `conflict-${other}`),
      });
      location.reload(); // their conversations, handles and the merge (with its undo) show here
    } catch (e) {
      fail(e.message);
      button.disabled = false;
    }
  });
}
