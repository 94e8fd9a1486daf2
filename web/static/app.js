// Parley's local UI. The token comes from the URL fragment (never sent to
// the server) or the login form, and rides on every API call as a bearer
// token; sessionStorage keeps it for reloads of this tab only.
"use strict";

const $ = (id) => document.getElementById(id);
let token = "";
let peer = "";
let lastState = null;

function loadToken() {
  const m = location.hash.match(/token=([A-Za-z0-9_-]+)/);
  if (m) {
    sessionStorage.setItem("parley-token", m[1]);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("parley-token") || "";
}

async function api(method, path, body, raw) {
  const opts = { method, headers: { Authorization: "Bearer " + token } };
  if (raw !== undefined) {
    opts.body = raw;
  } else if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const j = await r.json().catch(() => ({}));
  if (r.status === 401) { showLogin("The token is wrong or missing."); throw new Error("unauthorized"); }
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}

function showLogin(msg) {
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = msg || "";
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function ms(x) { return x < 1 ? "<1 ms" : x.toFixed(0) + " ms"; }

function pathText(c) {
  if (c.state !== "mutual") return c.state === "incoming" ? "asks to be your contact" : "request " + c.state;
  if (c.path === "direct") return "direct · " + ms(c.rtt_ms);
  if (c.path === "relayed") return "relayed via " + c.via + " · " + ms(c.rtt_ms);
  return c.online ? "online · no session yet" : "offline";
}

const fileStates = { 1: "offered", 2: "receiving", 3: "sending", 4: "done", 5: "declined", 6: "failed" };

function size(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function renderContacts(st) {
  $("me").textContent = (st.me || "not logged in") + " · " + (st.server_up ? "server connected" : "server unreachable") + " · NAT " + st.nat;
  const ul = $("contacts");
  ul.replaceChildren();
  for (const c of st.contacts) {
    const li = el("li");
    li.dataset.user = c.username;
    if (c.username === peer) li.classList.add("selected");
    const name = el("div", "name");
    name.append(el("span", "dot" + (c.online ? " online" : "")), el("span", "", c.username));
    if (c.unread > 0 && c.username !== peer) name.append(el("span", "badge", String(c.unread)));
    li.append(name, el("div", "path", pathText(c)));
    li.onclick = () => select(c.username);
    ul.append(li);
  }
  const cur = st.contacts.find((c) => c.username === peer);
  if (cur) {
    $("peer-path").textContent = pathText(cur) + (cur.why && cur.path !== "direct" ? " — " + cur.why : "");
  }
}

function renderTransfers(st) {
  const ul = $("transfers");
  ul.replaceChildren();
  if (st.transfers.length === 0) ul.append(el("li", "empty", "No files yet."));
  for (const t of st.transfers.slice().reverse()) {
    const li = el("li");
    const incoming = t.direction === 2;
    const state = fileStates[t.state] || "?";
    let text = (incoming ? "⬇ " + t.name + " from " : "⬆ " + t.name + " to ") + t.peer + " · " + size(t.size) + " · " + state;
    if (t.active && t.rate > 0) text += " · " + size(t.rate) + "/s · " + Math.round(t.eta / 1e9) + " s left";
    if (t.error && t.state !== 4) text += " · " + t.error;
    li.append(el("span", "", text));
    const actions = el("span");
    if (incoming && t.state === 1) {
      const a = el("button", "", "Accept");
      a.onclick = () => api("POST", "/api/files/" + t.id + "/accept").then(refresh);
      const d = el("button", "", "Decline");
      d.onclick = () => api("POST", "/api/files/" + t.id + "/decline").then(refresh);
      actions.append(a, d);
    }
    li.append(actions);
    const bar = el("div", "bar");
    const fill = el("div");
    fill.style.width = (t.size ? (100 * t.done) / t.size : 100) + "%";
    bar.append(fill);
    li.append(bar);
    ul.append(li);
  }
}

const marks = { pending: "…", sent: "✓", delivered: "✓✓", read: "✓✓ read" };

async function renderChat() {
  if (!peer) return;
  const h = await api("GET", "/api/history?peer=" + encodeURIComponent(peer));
  const ol = $("messages");
  const atBottom = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 40;
  ol.replaceChildren();
  let unread = false;
  for (const m of h.messages) {
    const li = el("li", m.outgoing ? "out" : "in");
    li.dataset.id = m.id;
    li.append(el("div", "body", m.body));
    const t = new Date(m.time).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    li.append(el("div", "meta", m.outgoing ? t + " " + (marks[m.state] || m.state) : t));
    if (m.outgoing) li.dataset.state = m.state;
    if (!m.outgoing && m.state !== "read") unread = true;
    ol.append(li);
  }
  if (atBottom) ol.scrollTop = ol.scrollHeight;
  if (unread && document.visibilityState === "visible") api("POST", "/api/read/" + encodeURIComponent(peer));
}

function select(name) {
  peer = name;
  $("peer-name").textContent = name;
  $("compose").hidden = false;
  $("messages").replaceChildren();
  if (lastState) renderContacts(lastState);
  renderChat();
  $("text").focus();
}

async function refresh() {
  try {
    const st = await api("GET", "/api/state");
    lastState = st;
    renderContacts(st);
    renderTransfers(st);
    await renderChat();
  } catch (e) {
    if (e.message !== "unauthorized") console.log(e);
  }
}

function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  refresh();
  setInterval(refresh, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  token = loadToken();
  $("login-form").onsubmit = (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("parley-token", token);
    api("GET", "/api/state").then(start, (e) => showLogin(e.message === "unauthorized" ? "The token is wrong." : e.message));
  };
  $("compose").onsubmit = async (ev) => {
    ev.preventDefault();
    const text = $("text").value.trim();
    if (!text || !peer) return;
    $("text").value = "";
    try { await api("POST", "/api/msg", { to: peer, text }); } catch (e) { alert(e.message); }
    renderChat();
  };
  let lastTyping = 0;
  $("text").oninput = () => {
    if (Date.now() - lastTyping > 3000 && peer) {
      lastTyping = Date.now();
      api("POST", "/api/typing/" + encodeURIComponent(peer)).catch(() => {});
    }
  };
  $("file").onchange = async () => {
    const f = $("file").files[0];
    $("file").value = "";
    if (!f || !peer) return;
    try {
      await api("POST", "/api/files?to=" + encodeURIComponent(peer) + "&name=" + encodeURIComponent(f.name), undefined, f);
    } catch (e) { alert(e.message); }
    refresh();
  };
  if (token) start(); else showLogin();
});
