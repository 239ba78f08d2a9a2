// Customer attributes the workspace defines (customers.profile: text, number, date,
// boolean, list): each value shown and edited as its type says, in the customer panel
// (panel.js), and the definitions themselves on the settings page.

import { api, showError } from "./http.js";

// A value as the panel shows it: a list joined, a flag in words, a missing one as a dash.
export function shown(definition, value) {
  if (value === undefined || value === null || value === "") return "—";
  if (Array.isArray(value)) return value.length ? value.join(", ") : "—";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// What an attribute without a definition holds, read off its value: edited as that, so a
// number stays a number and a flag a flag (as text, "false" would read as true).
function untyped(value) {
  if (typeof value === "number") return "number";
  if (typeof value === "boolean") return "boolean";
  if (Array.isArray(value)) return "list";
  if (value !== null && typeof value === "object") return "object";
  return "text";
}

// The control a value is edited with, by its definition's type (none: by the value's own).
// Each carries the key it sets (data-key), and how it was (data-was) to tell what the agent
// changed. An object a client stored is shown, not edited here.
export function control(definition, value, id) {
  const type = definition ? definition.type : untyped(value);
  let node;
  if (type === "boolean") {
    node = document.createElement("select");
    for (const [v, text] of [["", "—"], ["true", "yes"], ["false", "no"]]) node.append(new Option(text, v));
    node.value = value === true ? "true" : value === false ? "false" : "";
  } else if (type === "list" && definition && definition.options.length) {
    node = document.createElement("select");
    node.multiple = true;
    const chosen = Array.isArray(value) ? value.map(String) : [];
    for (const o of definition.options) node.append(new Option(o, o, false, chosen.includes(o)));
    // Kept from before the allowed values were set: shown and chosen, so a change of the
    // others does not drop it unseen (the server refuses it only if it is kept).
    for (const v of chosen.filter((c) => !definition.options.includes(c))) {
      node.append(new Option(`${v} (not an allowed value)`, v, true, true));
    }
    node.size = Math.min(node.options.length, 5);
  } else if (type === "text" && /\n/.test(String(value ?? ""))) {
    node = document.createElement("textarea"); // its lines kept: an input drops them
    node.rows = Math.min(String(value).split("\n").length, 6);
    node.value = String(value);
  } else {
    node = document.createElement("input");
    node.type = { number: "number", date: "date" }[type] || "text";
    if (type === "number") node.step = "any";
    if (type === "list") node.placeholder = "comma-separated";
    node.value = value === undefined || value === null ? "" : Array.isArray(value) ? value.join(", ")
      : typeof value === "object" ? JSON.stringify(value) : String(value);
    if (type === "object") node.disabled = true;
  }
  node.id = id;
  node.dataset.type = type;
  node.dataset.was = JSON.stringify(read(node));
  return node;
}

// What a control holds, as the API takes it: null removes the attribute.
export function read(node) {
  if (node.multiple) {
    const picked = [...node.selectedOptions].map((o) => o.value);
    return picked.length ? picked : null;
  }
  const text = node.value.trim();
  if (text === "") return null;
  if (node.dataset.type === "boolean") return text === "true";
  if (node.dataset.type === "list") return text.split(",").map((v) => v.trim()).filter(Boolean);
  if (node.dataset.type === "number") {
    // A number, unless past what JavaScript holds exactly: then as typed, which a defined
    // attribute's check converts exactly (an undefined one keeps the text).
    const n = Number(text);
    return Number.isSafeInteger(n) || (Number.isFinite(n) && !Number.isInteger(n)) ? n : text;
  }
  return text; // dates as typed: the server checks and converts them
}

// The settings page: define an attribute (a list's allowed values comma-separated), edit
// a definition's label and a list's values in its row, or delete a definition (customers
// keep their values, no longer checked).
const splitValues = (text) => text.split(",").map((v) => v.trim()).filter(Boolean);

const create = document.getElementById("attribute-create");
create?.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = create.elements;
  const body = { key: f.key.value.trim(), label: f.label.value.trim(), type: f.type.value };
  if (body.type === "list") body.options = splitValues(f.options.value);
  try {
    await api("POST", "/api/v1/attribute-definitions", body);
    location.reload();
  } catch (e) { showError(e.message); }
});

// A row's cells as drawn before its Edit, put back by Cancel.
const drawn = new WeakMap();

function input(value, label, size) {
  const node = document.createElement("input");
  node.value = value;
  node.maxLength = size;
  node.setAttribute("aria-label", label);
  return node;
}

function button(kind, text, label) {
  const node = document.createElement("button");
  node.type = "button";
  node.className = kind;
  node.textContent = text;
  node.setAttribute("aria-label", label);
  return node;
}

// The label, and a list's allowed values comma-separated, become fields; the key and the
// type stay text, as neither changes.
function edit(row) {
  const { key, type } = row.dataset;
  drawn.set(row, [...row.cells].map((cell) => cell.cloneNode(true)));
  const [, labelCell, , optionsCell, actions] = row.cells;
  const label = input(row.dataset.label, `Label of ${key}`, 200);
  labelCell.replaceChildren(label);
  if (type === "list") {
    const options = input(JSON.parse(row.dataset.options).join(", "), `Allowed values of ${key}`, 4000);
    options.placeholder = "any value: leave empty";
    optionsCell.replaceChildren(options);
  }
  actions.replaceChildren(button("save", "Save", `Save attribute ${key}`), " ",
    button("cancel", "Cancel", `Cancel editing ${key}`));
  label.focus();
}

// The row as drawn before, the focus back on its Edit (it fell to the page).
function cancel(row) {
  row.replaceChildren(...drawn.get(row));
  row.querySelector("button.edit")?.focus();
}

async function save(row) {
  const body = { label: row.cells[1].querySelector("input").value.trim() };
  const options = row.cells[3].querySelector("input");
  if (options) {
    const values = splitValues(options.value);
    // Sent only when changed: a value with a comma in it (set through the API) would
    // come back from this field as two.
    const was = JSON.parse(row.dataset.options);
    if (JSON.stringify(values) !== JSON.stringify(was)) body.options = values;
  }
  try {
    await api("PATCH", `/api/v1/attribute-definitions/${encodeURIComponent(row.dataset.id)}`, body);
    location.reload();
  } catch (e) { showError(e.message); }
}

const table = document.getElementById("attribute-definitions");
table?.addEventListener("keydown", (ev) => {
  const row = ev.target.closest("tr[data-id]");
  if (!row || ev.target.tagName !== "INPUT") return;
  if (ev.key === "Enter") { ev.preventDefault(); save(row); }
  if (ev.key === "Escape") cancel(row);
});
table?.addEventListener("click", async (ev) => {
  const clicked = ev.target.closest("button");
  const row = clicked?.closest("tr[data-id]");
  if (!row) return;
  if (clicked.matches(".edit")) return edit(row);
  if (clicked.matches(".cancel")) return cancel(row);
  if (clicked.matches(".save")) return save(row);
  if (!clicked.matches(".delete")) return;
  if (!confirm(`${clicked.getAttribute("aria-label")}? Customers keep their values, no longer checked.`)) return;
  try {
    await api("DELETE", `/api/v1/attribute-definitions/${encodeURIComponent(row.dataset.id)}`);
    const body = row.parentElement;
    row.remove();
    if (!body.children.length) {
      const none = body.insertRow().insertCell();
      none.colSpan = 5;
      none.textContent = "None defined yet.";
    }
  } catch (e) { showError(e.message); }
});
