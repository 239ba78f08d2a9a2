// Knowledge base authoring: the article editor (live preview rendered and sanitized by the
// server, so it is exactly what readers get) and the collection and help-center forms.

import { api } from "./http.js";

const error = document.getElementById("kb-error");
const fail = (msg) => { error.textContent = msg; error.hidden = false; window.scrollTo(0, 0); };

function values(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) if (v !== "") out[k] = form.elements[k].type === "number" ? Number(v) : v;
  return out;
}

document.querySelectorAll("form[data-kb-api]").forEach((form) => form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await api(form.dataset.method || "POST", form.dataset.kbApi, values(form));
    location.reload();
  } catch (e) { fail(e.message); }
}));

const form = document.getElementById("kb-article");
if (form) {
  const preview = document.getElementById("kb-preview");
  const body = form.elements.body;
  const fields = () => {
    const out = { title: form.elements.title.value, body: body.value, collection_id: form.elements.collection_id.value || "" };
    if (form.elements.slug.value) out.slug = form.elements.slug.value;
    if (!form.dataset.id) {
      if (form.elements.locale.value) out.locale = form.elements.locale.value;
      if (form.dataset.translationOf) out.translation_of = form.dataset.translationOf;
    }
    return out;
  };
  // "Save draft" never changes what readers see: on a published article the server keeps
  // the changes as its draft, and on an unpublished one (its own draft) saves them to it.
  const save = async () => {
    if (form.dataset.id) return api("PUT", `/api/v1/kb/articles/${form.dataset.id}/draft`, fields());
    const made = await api("POST", "/api/v1/kb/articles", fields());
    form.dataset.id = made.id;
    return made;
  };
  const showPreview = async () => {
    const out = await api("POST", "/api/v1/kb/preview", { body: body.value });
    preview.innerHTML = out.html; // rendered and sanitized by the server
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
    const action = el.dataset.kbAction;
    try {
      if (action === "discard") {
        if (!confirm("Discard the unpublished changes? The article goes back to its published version.")) return;
        await api("DELETE", `/api/v1/kb/articles/${form.dataset.id}/draft`);
      } else {
        if (action === "publish") await save(); // what the form shows is what goes live
        await api("POST", `/api/v1/kb/articles/${form.dataset.id}/${action}`);
      }
      location.reload();
    } catch (e) { fail(e.message); }
  }));
}
