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

// The control a value is edited with, by its definition's type (none: text). Each carries
// the key it sets (data-key), and how it was (data-was) to tell what the agent changed.
export function control(definition, value, id) {
  const type = definition ? definition.type : "text";
  let node;
  if (type === "boolean") {
    node = document.createElement("select");
    for (const [v, text] of [["", "—"], ["true", "yes"], ["false", "no"]]) node.append(new Option(text, v));
    node.value = value === true ? "true" : value === false ? "false" : "";
  } else if (type === "list" && definition.options.length) {
    node = document.createElement("select");
    node.multiple = true;
    node.size = Math.min(definition.options.length, 5);
    const chosen = new Set(Array.isArray(value) ? value : []);
    for (const o of definition.options) node.append(new Option(o, o, false, chosen.has(o)));
  } else {
    node = document.createElement("input");
    node.type = { number: "number", date: "date" }[type] || "text";
    if (type === "number") node.step = "any";
    if (type === "list") node.placeholder = "comma-separated";
    node.value = value === undefined || value === null ? "" : Array.isArray(value) ? value.join(", ")
      : typeof value === "object" ? JSON.stringify(value) : String(value);
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
  return text; // numbers and dates as typed: the server checks and converts them
}

// The settings page: define an attribute (a list's allowed values comma-separated), or
// delete a definition (customers keep their values, no longer checked).
const create = document.getElementById("attribute-create");
create?.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = create.elements;
  const body = { key: f.key.value.trim(), label: f.label.value.trim(), type: f.type.value };
  if (body.type === "list") body.options = f.options.value.split(",").map((v) => v.trim()).filter(Boolean);
  try {
    await api("POST", "/api/v1/attribute-definitions", body);
    location.reload();
  } catch (e) { showError(e.message); }
});
document.getElementById("attribute-definitions")?.addEventListener("click", async (ev) => {
  const button = ev.target.closest("button.delete");
  if (!button) return;
  const row = button.closest("tr[data-id]");
  if (!confirm(`${button.getAttribute("aria-label")}? Customers keep their values, no longer checked.`)) return;
  try {
    await api("DELETE", `/api/v1/attribute-definitions/${encodeURIComponent(row.dataset.id)}`);
    row.remove();
  } catch (e) { showError(e.message); }
});
