// Rapport chat widget. Embed: <script src="https://YOUR-RAPPORT/widget.js" data-token="INBOX_TOKEN" async></script>
// Optional, for signed-in users of the host site: data-user-id and data-user-hash
// (HMAC-SHA256 of the user id with the inbox's secret, computed on the host's server).
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.__rapportWidget) return;
  window.__rapportWidget = true;
  var base = new URL(script.src).origin;
  var token = script.dataset.token;
  var api = base + "/widget/api/" + encodeURIComponent(token);
  // A token per person: the anonymous visitor's, and one for each user the host site signs
  // in (data-user-id). The server resumes a signed-in visitor only with that user's proof,
  // so one key for all made each page without data-user-id (a user's own, on some sites)
  // trade the user's chat for a new anonymous one. A user with no token of their own yet
  // takes on the anonymous chat begun on this browser, signing it in.
  var anonKey = "rapport.visitor." + token;
  var storeKey = script.dataset.userId ? anonKey + ".user." + script.dataset.userId : anonKey;
  var state = { visitor: localStorage.getItem(storeKey), last: null, config: null, seen: {}, events: {}, unopened: 0 };
  if (!state.visitor && storeKey !== anonKey) state.visitor = localStorage.getItem(anonKey);

  var host = document.createElement("div");
  host.id = "rapport-widget";
  document.body.appendChild(host);
  var root = host.attachShadow({ mode: "open" });
  // The widget's styles as a constructed stylesheet, not a <style> element: a host page
  // whose Content-Security-Policy forbids inline styles (style-src 'self') still shows it
  // styled. Browsers without constructed stylesheets get the element.
  // ":host" important: a host page's own rules for the element (`* { all: unset }`, `div
  // { display: none }`, even with !important) lose to it, and nothing of the page's text
  // styles (hidden, transparent, upper case, right to left: "all" leaves out direction) is
  // inherited. A message reads in its own direction (an Arabic one right to left).
  var css =
    ":host{all:initial!important;direction:ltr!important}[hidden]{display:none!important}*{box-sizing:border-box;font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}" +
    ".launcher{position:fixed;right:20px;bottom:20px;width:56px;height:56px;border-radius:50%;border:0;background:#2f5bea;color:#fff;display:flex;align-items:center;justify-content:center;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.2)}" +
    ".panel{position:fixed;right:20px;bottom:88px;width:340px;max-width:calc(100vw - 40px);height:480px;max-height:calc(100vh - 120px);background:#fff;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.25);display:flex;flex-direction:column;overflow:hidden}" +
    ".panel[hidden]{display:none}header{background:#2f5bea;color:#fff;padding:12px 14px;position:relative}header b{display:block;font-size:15px}header small{opacity:.9}" +
    "button.close{position:absolute;right:8px;top:8px;background:none;border:0;color:#fff;font-size:20px;line-height:1;cursor:pointer;padding:4px 8px;border-radius:6px}button.close:focus-visible{outline:2px solid #fff}" +
    ".log{flex:1;overflow-y:auto;padding:10px;display:flex;flex-direction:column;gap:6px;background:#f7f8fa}" +
    ".m{max-width:80%;padding:7px 10px;border-radius:10px;white-space:pre-wrap;overflow-wrap:anywhere;unicode-bidi:plaintext}.in{align-self:flex-end;background:#2f5bea;color:#fff}.out{align-self:flex-start;background:#fff;border:1px solid #e3e6ec}" +
    ".who{font-size:11px;opacity:.7;display:block}.typing{font-size:12px;color:#6b7385;padding:0 12px;min-height:18px}" +
    "form{display:flex;gap:6px;padding:8px;border-top:1px solid #e3e6ec}input,textarea{flex:1;padding:7px;border:1px solid #d6dae3;border-radius:6px}" +
    "button.send{background:#2f5bea;color:#fff;border:0;border-radius:6px;padding:0 12px;cursor:pointer}" +
    ".pre{padding:14px;display:flex;flex-direction:column;gap:8px}.pre input{flex:none}.notice{font-size:12px;color:#6b7385;padding:6px 12px}" +
    ".file{display:block;margin-top:4px;background:none;border:0;padding:0;color:inherit;text-decoration:underline;cursor:pointer;text-align:left}" +
    ".rate{display:flex;gap:6px;margin-top:4px;font-size:12px}.rate button{background:#f0f2f7;border:1px solid #d6dae3;border-radius:4px;cursor:pointer;padding:1px 6px}" +
    "label.attach{display:flex;align-items:center;cursor:pointer;padding:0 4px;color:#6b7385}label.attach input{display:none}" +
    ".sr{position:absolute;left:-9999px}";
  root.innerHTML =
    "<button class='launcher' aria-label='Chat with us' aria-expanded='false'><svg viewBox='0 0 24 24' width='26' height='26' fill='currentColor' aria-hidden='true'><path d='M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z'/></svg></button>" +
    "<section class='panel' hidden role='dialog' aria-label='Chat'>" +
    "<header><b class='title'>Chat</b><small class='status'></small><button type='button' class='close' aria-label='Close chat'>&times;</button></header>" +
    "<form class='pre' hidden><span>Before we start:</span><input name='name' placeholder='Your name' autocomplete='name'>" +
    "<input name='email' type='email' placeholder='Your email' autocomplete='email'><button class='send' type='submit'>Start chat</button></form>" +
    "<div class='log' aria-live='polite'></div><div class='typing'></div>" +
    "<form class='say'><label class='attach' title='Send a file'><svg viewBox='0 0 24 24' width='18' height='18' fill='none' stroke='currentColor' stroke-width='2' aria-hidden='true'><path d='M21 11l-8.5 8.5a5 5 0 0 1-7-7L14 4a3.5 3.5 0 0 1 5 5l-8.5 8.5a2 2 0 0 1-3-3L15 7'/></svg><span class='sr'>Send a file</span><input type='file' name='file'></label>" +
    "<textarea name='text' rows='1' placeholder='Write a message' aria-label='Message'></textarea><button class='send' type='submit'>Send</button></form>" +
    "</section>";
  if ("adoptedStyleSheets" in root && "replaceSync" in CSSStyleSheet.prototype) {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
    root.adoptedStyleSheets = [sheet];
  } else {
    var styleEl = document.createElement("style");
    styleEl.textContent = css;
    root.appendChild(styleEl);
  }
  var $ = function (s) { return root.querySelector(s); };
  var log = $(".log"), panel = $(".panel"), pre = $(".pre"), say = $(".say"), typingEl = $(".typing");

  function call(method, path, body) {
    return fetch(api + path, {
      method: method,
      headers: Object.assign({ "Content-Type": "application/json" }, state.visitor ? { "X-Rapport-Visitor": state.visitor } : {}),
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (r) {
      if (!r.ok) { var e = new Error("HTTP " + r.status); e.status = r.status; throw e; }
      return r.status === 204 ? null : r.json();
    });
  }

  function show(m) {
    if (state.seen[m.id]) return;
    state.seen[m.id] = true;
    var newest = state.newest;
    if (!newest || m.created_at > newest.created_at || (m.created_at === newest.created_at && m.id > newest.id)) {
      state.newest = m; // what a poll asks for messages after
    }
    var div = document.createElement("div");
    div.className = "m " + (m.direction === "in" ? "in" : "out");
    div.dataset.id = m.id;
    if (m.direction !== "in") {
      var who = document.createElement("span");
      who.className = "who";
      who.textContent = m.sender_name || (state.config && state.config.name) || "Support";
      div.appendChild(who);
    }
    div.appendChild(document.createTextNode(m.text)); // text, never markup
    (m.attachments || []).forEach(function (a) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "file";
      b.textContent = "Attachment: " + a.filename;
      b.addEventListener("click", function () { download(a); });
      div.appendChild(b);
    });
    if (m.rateable) div.appendChild(rating(m));
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    if (m.direction !== "in") markRead(m.id);
  }

  // Files come with the visitor's token in a header, so not through a plain link.
  function download(a) {
    fetch(api + "/attachments/" + encodeURIComponent(a.id), { headers: { "X-Rapport-Visitor": state.visitor } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.blob(); })
      .then(function (blob) {
        var url = URL.createObjectURL(blob);
        var link = document.createElement("a");
        link.href = url;
        link.download = a.filename;
        root.appendChild(link);
        link.click();
        link.remove();
        setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
      });
  }

  function rating(m) {
    var box = document.createElement("div");
    box.className = "rate";
    box.appendChild(document.createTextNode("Did this help?"));
    [["Yes", true], ["No", false]].forEach(function (pair) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = pair[0];
      b.addEventListener("click", function () {
        call("POST", "/messages/" + encodeURIComponent(m.id) + "/rating", { helpful: pair[1] })
          .then(function () { box.textContent = "Thanks for telling us."; });
      });
      box.appendChild(b);
    });
    return box;
  }

  // Read receipts: what is on screen while the chat is open has been read.
  function markRead(id) {
    state.unread = id;
    if (panel.hidden || document.visibilityState !== "visible") return;
    clearTimeout(state.readTimer);
    state.readTimer = setTimeout(function () {
      if (!state.unread) return;
      var upto = state.unread;
      state.unread = null;
      call("POST", "/read", { message_id: upto }).catch(function () { state.unread = state.unread || upto; });
    }, 400);
  }

  function status() {
    var c = state.config;
    $(".title").textContent = c.name;
    $(".status").textContent = c.agents_online
      ? "We usually reply in " + c.reply_time
      : "We are away right now: leave a message" + (c.ask_email ? " and your email, we will answer there" : "");
  }

  // Where no socket can open (a proxy or firewall that drops WebSockets), replies would
  // never come: the chat asks for what is new every few seconds instead, until one opens.
  function poll() {
    if (state.polling) return;
    state.polling = true;
    (function tick() {
      if (!state.polling) return;
      var after = state.newest ? "?after=" + encodeURIComponent(state.newest.id) : "";
      call("GET", "/messages" + after)
        .then(function (messages) {
          messages.forEach(show);
          state.shown = true;
        })
        .catch(function (e) {
          if (e.status !== 404) return;
          if (after) state.newest = null; // that message is gone: read the chat again
          else { state.polling = false; forget(false); } // the visitor is gone
        })
        .then(function () {
          if (state.polling) state.pollTimer = setTimeout(tick, document.visibilityState === "visible" ? 3000 : 15000);
        });
    })();
  }

  function unpoll() {
    state.polling = false;
    clearTimeout(state.pollTimer);
  }

  // The visitor is gone (erased) or was never known: their token and what the chat showed
  // are forgotten, and a new visitor starts (its socket opened here with ``reconnect``; else
  // the reconnecting socket's next try waits for the new session).
  function forget(reconnect) {
    localStorage.removeItem(storeKey);
    state.visitor = null;
    state.last = null;
    state.newest = null;
    state.events = {};
    state.seen = {};
    log.textContent = "";
    state.shown = true;
    var fresh = session({});
    if (reconnect) fresh.then(connect);
  }

  function connect() {
    var q = "?visitor=" + encodeURIComponent(state.visitor) + (state.last !== null ? "&last_event_id=" + state.last : "");
    var ws = new WebSocket(base.replace(/^http/, "ws") + "/widget/ws/" + encodeURIComponent(token) + q);
    var opened = false;
    ws.onopen = function () {
      opened = true;
      state.retryDelay = 1000;
      state.unopened = 0;
      unpoll(); // the socket replays from the last event it saw what came meanwhile
      if (!state.shown) history().catch(function () {}); // it could not be read before
    };
    ws.onmessage = function (msg) {
      var e = JSON.parse(msg.data);
      if (e.type === "reset") {
        // Away longer than the server keeps events: the history is read again instead.
        state.last = e.last_event_id;
        history().catch(function () {});
        return;
      }
      if (e.id) {
        // A replay may repeat recent events (ids can commit out of order): once each.
        if (state.events[e.id]) return;
        state.events[e.id] = true;
        state.last = Math.max(state.last || 0, e.id);
      }
      if (e.type === "agent.typing") {
        typingEl.textContent = "Typing…";
        clearTimeout(state.typingTimer);
        state.typingTimer = setTimeout(function () { typingEl.textContent = ""; }, 4000);
        return;
      }
      if (e.type === "message.created") { typingEl.textContent = ""; show(e.payload); }
    };
    // Reconnect from the last event seen: the server replays what was missed.
    // The wait doubles while the server cannot be reached (every open widget of every site
    // would otherwise knock once a second), and starts again at a second once it answers.
    ws.onclose = function (ev) {
      if (ev.code === 4404) {
        unpoll();
        forget(true);
        return;
      }
      if (!opened && ++state.unopened >= 2) poll(); // twice no socket at all: poll meanwhile
      var delay = state.retryDelay || 1000;
      state.retryDelay = Math.min(delay * 2, 30000);
      setTimeout(function () { ready.then(connect); }, delay * (0.5 + Math.random() / 2));
    };
  }

  // Each request for a session becomes `ready`, and what the visitor sends waits for it:
  // a message typed while the page is still asking for one goes once it comes (it used to
  // be refused for want of a visitor, and put back in the box without a word).
  // A session that could not be had for a passing reason (offline, the server restarting,
  // busy) is asked for again, a little later each time; what waits on it waits on.
  var ready;
  function session(body) {
    var delay = 1000;
    ready = new Promise(function (resolve, reject) {
      (function ask() {
        call("POST", "/session", body).then(function (s) {
          state.visitor = s.visitor_token;
          localStorage.setItem(storeKey, s.visitor_token);
          // The anonymous chat this user took on is theirs now: not offered to whoever is
          // next here signed out (the server would refuse it them anyway).
          if (storeKey !== anonKey && localStorage.getItem(anonKey) === s.visitor_token) localStorage.removeItem(anonKey);
          state.config = s.config;
          state.last = s.last_event_id;
          status();
          resolve(s);
        }).catch(function (e) {
          if (e.status && e.status < 500 && e.status !== 429) { reject(e); return; }
          setTimeout(ask, delay * (0.5 + Math.random() / 2));
          delay = Math.min(delay * 2, 30000);
        });
      })();
    });
    return ready;
  }

  function history() {
    return call("GET", "/messages").then(function (messages) {
      messages.forEach(show);
      state.shown = true;
    });
  }

  function begin(extra) {
    var user = { user_id: script.dataset.userId || null, user_hash: script.dataset.userHash || null };
    return session(Object.assign({ visitor_token: state.visitor }, user, extra || {})).then(function () {
      // Live replies even when the history could not be read now: the socket reads it again.
      return history().catch(function () {}).then(connect);
    });
  }

  function notSent(what) {
    typingEl.textContent = what + " could not be sent. Please try again.";
    state.notice = true;
  }

  function sent(m) {
    if (state.notice) { typingEl.textContent = ""; state.notice = false; }
    show(m);
  }

  // Opened and closed by the launcher, closed by its own button or Escape too (the panel
  // had no way to close but the launcher beneath it, out of reach on a phone's keyboard).
  function toggle(open) {
    panel.hidden = !open;
    $(".launcher").setAttribute("aria-expanded", String(open));
    if (open) {
      $("textarea").focus();
      if (state.unread) markRead(state.unread);
    } else {
      $(".launcher").focus();
    }
  }
  $(".launcher").addEventListener("click", function () { toggle(panel.hidden); });
  $("button.close").addEventListener("click", function () { toggle(false); });
  panel.addEventListener("keydown", function (ev) { if (ev.key === "Escape") toggle(false); });
  document.addEventListener("visibilitychange", function () { if (state.unread) markRead(state.unread); });
  $("input[type=file]").addEventListener("change", function (ev) {
    var file = ev.target.files[0];
    if (!file) return;
    var form = new FormData();
    form.append("file", file);
    var box = $("textarea");
    if (box.value.trim()) { form.append("text", box.value.trim()); box.value = ""; }
    ready
      .then(function () { return fetch(api + "/attachments", { method: "POST", headers: { "X-Rapport-Visitor": state.visitor }, body: form }); })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(sent)
      .catch(function () { notSent("The file (10 MB at most)"); });
    ev.target.value = "";
  });
  pre.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var fd = new FormData(pre);
    begin({ name: fd.get("name") || "", email: fd.get("email") || null })
      .then(function () { pre.hidden = true; say.hidden = false; typingEl.textContent = ""; })
      .catch(function (e) { if (e.status === 422) typingEl.textContent = "Please check your email address."; });
  });
  say.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var box = $("textarea"), text = box.value.trim();
    if (!text) return;
    box.value = "";
    ready
      .then(function () { return call("POST", "/messages", { text: text }); })
      .then(sent)
      .catch(function () { if (!box.value) box.value = text; notSent("Your message"); });
  });
  var lastTyping = 0;
  $("textarea").addEventListener("input", function () {
    if (Date.now() - lastTyping > 3000) { lastTyping = Date.now(); ready.then(function () { return call("POST", "/typing"); }).catch(function () {}); }
  });
  $("textarea").addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); say.requestSubmit(); }
  });

  if (state.visitor || script.dataset.userId) {
    begin();
  } else {
    // A config peek without keeping a visitor yet is not possible: keep the token now.
    session({}).then(function (s) {
      state.shown = true; // a new visitor: no history to read
      if (s.config.ask_name || s.config.ask_email) {
        say.hidden = true;
        pre.hidden = false;
        if (!s.config.ask_name) pre.querySelector("[name=name]").remove();
        if (!s.config.ask_email) pre.querySelector("[name=email]").remove();
      }
      connect();
    });
  }
})();
