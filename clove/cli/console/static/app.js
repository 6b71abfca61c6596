// The console's shared script: the session (role and CSRF token), JSON calls, POSTed actions,
// the live stream and a small SVG line chart. No framework, no build step.
"use strict";

const Console = {
  session: null,

  async start(here) {
    const r = await fetch("/api/session", { credentials: "same-origin" });
    if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); return null; }
    this.session = await r.json();
    this.header(here);
    return this.session;
  },

  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
    return node;
  },

  header(here) {
    const s = this.session, el = this.el.bind(this);
    const links = [["/", "Overview"], ["/audit", "Audit"], ["/devices", "Devices & interlocks"]];
    if (s.hil) links.push(["/hil", "HIL results"]);
    const nav = el("nav", {}, ...links.map(([href, text]) => el("a", { href, class: href === here ? "here" : "" }, text)));
    const out = el("form", { method: "post", action: "/logout" }, el("input", { type: "hidden", name: "csrf", value: s.csrf || "" }), el("button", { type: "submit" }, "Log out"));
    const who = el("span", { class: "who", id: "who" }, `${s.role} · kernel ${s.kernel.version} pid ${s.kernel.pid} `, s.csrf ? out : "");
    document.body.prepend(el("header", {}, el("span", { class: "brand" }, "CLOVE"), nav, who));
  },

  canAct() { return this.session && this.session.role === "operator"; },

  async get(url) {
    const r = await fetch(url, { credentials: "same-origin" });
    const data = await r.json();
    if (!r.ok) throw new Error(data.error ? `${data.error.message} [${data.error.code}]` : r.statusText);
    return data;
  },

  async post(url, fields) {
    const r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": this.session.csrf || "" },
      body: JSON.stringify(fields || {}),
    });
    const data = await r.json();
    if (!r.ok) throw new Error(data.error ? `${data.error.message} [${data.error.code}]` : r.statusText);
    return data;
  },

  status(text) { const s = document.getElementById("status"); if (s) s.textContent = text; },

  live(onSnapshot) {
    const source = new EventSource("/api/events");
    const mark = document.getElementById("live");
    source.addEventListener("snapshot", (e) => {
      const snap = JSON.parse(e.data);
      if (mark) mark.textContent = snap.ok ? "live · " + new Date().toLocaleTimeString() : "kernel: " + snap.error;
      if (snap.ok) onSnapshot(snap);
    });
    source.onerror = () => { if (mark) mark.textContent = "reconnecting…"; };
    return source;
  },

  bytes(n) {
    if (n == null) return "-";
    const units = ["B", "K", "M", "G"]; let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + units[i];
  },

  bar(fraction) {
    const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
    const bar = this.el("span", { class: "bar" }); const fill = this.el("i"); fill.style.width = pct + "%"; bar.append(fill);
    return bar;
  },

  time(ts) { return ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) : "-"; },

  // A line chart of series [{values, color, label}] over the same samples, drawn as SVG.
  chart(svg, series, unit) {
    const NS = "http://www.w3.org/2000/svg", w = 600, h = 160, pad = 24;
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    while (svg.firstChild) svg.firstChild.remove();
    const all = series.flatMap((s) => s.values); const top = Math.max(1, ...all);
    series.forEach((s, k) => {
      const n = s.values.length; if (!n) return;
      const points = s.values.map((v, i) => `${pad + (i * (w - 2 * pad)) / Math.max(1, n - 1)},${h - pad - (v / top) * (h - 2 * pad)}`);
      const line = document.createElementNS(NS, "polyline");
      line.setAttribute("points", points.join(" ")); line.setAttribute("stroke", s.color); svg.append(line);
      const label = document.createElementNS(NS, "text");
      label.setAttribute("x", pad + k * 180); label.setAttribute("y", 14); label.setAttribute("fill", s.color);
      label.textContent = `${s.label}: ${s.values[n - 1].toFixed(1)}${unit[k] || ""}`; svg.append(label);
    });
    const scale = document.createElementNS(NS, "text");
    scale.setAttribute("x", w - pad - 60); scale.setAttribute("y", h - 6); scale.textContent = `${series[0].values.length} samples`;
    svg.append(scale);
  },
};
