"use strict";
// The overview: agents, devices and interlocks, redrawn on every live snapshot.
function drawOverview(snap) {
  const el = Console.el.bind(Console);
  const body = document.querySelector("#agents tbody");
  body.replaceChildren(...snap.agents.map((a) => el("tr", { id: "agent-" + a.name, "data-state": a.state },
    el("td", { class: "num" }, a.id),
    el("td", {}, el("a", { href: "/agents/" + encodeURIComponent(a.name) }, a.name)),
    el("td", { class: "state-" + a.state }, a.state),
    el("td", { class: "num" }, a.pid),
    el("td", {}, Console.bar(a.cpu_quota_percent ? a.cpu_percent / a.cpu_quota_percent : a.cpu_percent / 100),
      `${a.cpu_percent.toFixed(1)}%` + (a.cpu_quota_percent ? ` / ${a.cpu_quota_percent.toFixed(0)}%` : "")),
    el("td", {}, Console.bar(a.memory_limit ? a.memory / a.memory_limit : 0),
      Console.bytes(a.memory) + (a.memory_limit ? " / " + Console.bytes(a.memory_limit) : "")),
    el("td", { class: "num" }, a.restarts),
    el("td", { class: "num" }, a.syscalls_per_s == null ? "-" : a.syscalls_per_s.toFixed(1)),
    el("td", { class: "num" }, a.denied))));
  if (!snap.agents.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "no agents")));
  if (snap.devices) {
    document.querySelector("#devices tbody").replaceChildren(...snap.devices.map((d) => el("tr", {},
      el("td", {}, d.name), el("td", {}, d.driver), el("td", { class: "state-" + (d.state === "ready" ? "running" : "failed") }, d.state),
      el("td", { class: "num" }, (d.counters || {}).calls || 0), el("td", { class: "num" }, (d.counters || {}).errors || 0))));
    if (!snap.devices.length) document.querySelector("#devices tbody").append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no devices configured")));
  }
  if (snap.interlocks) {
    document.querySelector("#interlocks tbody").replaceChildren(...snap.interlocks.map((i) => el("tr", { id: "interlock-" + i.name },
      el("td", {}, i.name), el("td", { class: i.engaged ? "engaged" : "armed" }, i.engaged ? "ENGAGED" : "armed"), el("td", {}, i.actions.join("; ")))));
    if (!snap.interlocks.length) document.querySelector("#interlocks tbody").append(el("tr", {}, el("td", { colspan: 3, class: "muted" }, "no interlocks configured")));
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  if (!(await Console.start("/"))) return;
  try { drawOverview(await Console.get("/api/overview")); } catch (e) { Console.status(e.message); }
  Console.live(drawOverview);
});
