// The customer's own page: an agent writes to the customer first (canned responses by
// "/shortcut" and files, as in a reply), through one of the inboxes the page offers (those that can reach them, by the API's own rule), gives it to
// themself, a colleague or nobody, leaves it open, pending or resolved, and lands on the
// new conversation. A refusal (the inbox disabled meanwhile, say) is said above the page.

import { addressList, api, setupAttachments, setupCanned, showError } from "./http.js";

const form = document.getElementById("new-conversation-form");
if (form) {
  const inbox = form.elements.inbox_id;
  // A subject and copies are an email's: offered when the message goes by email.
  const emailOnly = form.querySelectorAll("label.by-email");
  const nobody = form.querySelector("option.nobody");
  const inboxTeam = form.querySelector("option.inbox-team"); // none when the workspace has no team
  const follow = () => {
    const chosen = inbox.selectedOptions[0];
    for (const label of emailOnly) label.hidden = chosen?.dataset.channel !== "email";
    form.elements.subject.required = chosen?.dataset.channel === "email"; // an email needs one
    // Given to nobody, an inbox that assigns by itself gives it to an agent at once.
    nobody.textContent = chosen?.dataset.autoAssign !== undefined ? "Nobody: the inbox assigns an agent" : "Nobody";
    if (inboxTeam) inboxTeam.textContent = chosen?.dataset.team ? `The inbox's (${chosen.dataset.team})` : "The inbox's (none)";
  };
  inbox.addEventListener("change", follow);
  follow();
  // An inbox disabled meanwhile (by an admin, anywhere) is offered no more: the page went
  // on offering it, and the message written was refused.
  document.addEventListener("rapport:event", (ev) => {
    const { type, payload } = ev.detail;
    if (type !== "inbox.updated" || payload.enabled) return;
    [...inbox.options].find((o) => o.value === payload.id)?.remove();
    follow();
  });
  // "/shortcut" offers canned responses, filled in for this customer (first, so that Enter
  // in its menu chooses one rather than anything else).
  setupCanned(form.elements.text, document.getElementById("canned-menu"),
    (item) => `/api/v1/canned-responses/${encodeURIComponent(item.id)}/for-customer/${encodeURIComponent(form.dataset.customer)}`);
  form.elements.text.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  // Files for the first message: uploaded for the customer now, sent with it.
  const files = setupAttachments(document.getElementById("attach-input"), document.getElementById("attached"),
    `/api/v1/customers/${encodeURIComponent(form.dataset.customer)}/uploads`);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = form.querySelector("button[type=submit]");
    const body = {
      customer_id: form.dataset.customer,
      inbox_id: inbox.value,
      text: form.elements.text.value,
      assignee_id: form.elements.assignee_id.value || null, // "Nobody": null, not the caller
      status: form.elements.status.value,
    };
    // The inbox's team unless another (or none) is chosen: left out, the API takes it.
    const team = form.elements.team_id?.value;
    if (team) body.team_id = team === "none" ? null : team;
    const about = form.elements.subject.value.trim();
    if (inbox.selectedOptions[0]?.dataset.channel === "email") {
      if (about) body.subject = about;
      Object.assign(body, { cc: addressList(form.elements.cc.value), bcc: addressList(form.elements.bcc.value) });
    }
    button.disabled = true; // one click, one conversation
    try {
      body.attachment_ids = await files.ids(); // those still uploading are waited for
      const started = await api("POST", "/api/v1/conversations", body);
      location.assign(`/app/conversations/${encodeURIComponent(started.id)}`);
    } catch (e) {
      showError(e.message);
      button.disabled = false;
    }
  });
}
