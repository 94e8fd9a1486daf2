// Parley directory dashboard: renders /v1/status/stream (Server-Sent Events).
"use strict";

function set(id, v) { document.getElementById(id).textContent = String(v); }

function render(st) {
  set("online", st.online_devices);
  set("here", st.streams_here);
  set("offers", st.offers_per_minute);
  set("direct", st.direct_sessions);
  set("relayed", st.relayed_sessions);
  const tbody = document.querySelector("#supernodes tbody");
  tbody.replaceChildren();
  for (const sn of st.supernodes) {
    const tr = document.createElement("tr");
    const key = document.createElement("td");
    key.textContent = sn.key + "…";
    const load = document.createElement("td");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.max(2, sn.load) + "px";
    load.append(bar, sn.load + "%");
    const sessions = document.createElement("td");
    sessions.textContent = String(sn.sessions);
    tr.append(key, load, sessions);
    tbody.append(tr);
  }
  document.getElementById("nosn").hidden = st.supernodes.length > 0;
  set("updated", new Date(st.server_time).toLocaleTimeString());
}

const es = new EventSource("/v1/status/stream");
es.onopen = () => { const b = document.getElementById("conn"); b.textContent = "live"; b.className = "badge live"; };
es.onerror = () => { const b = document.getElementById("conn"); b.textContent = "reconnecting…"; b.className = "badge"; };
es.onmessage = (e) => render(JSON.parse(e.data));
