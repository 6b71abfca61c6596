"use strict";
// Devices and interlocks, live; the e-stop engages every interlock (as `clove estop` does).
function draw(data) {
  const el = Console.el.bind(Console);
  if (data.interlocks) {
    document.querySelector("#interlocks tbody").replaceChildren(...data.interlocks.map((i) => el("tr", { id: "interlock-" + i.name },
      el("td", {}, i.name), el("td", { class: i.engaged ? "engaged" : "armed" }, i.engaged ? "ENGAGED" : "armed"),
      el("td", {}, JSON.stringify(i.trigger)), el("td", {}, i.actions.join("; ")), el("td", {}, (i.state || {}).cause || ""),
      el("td", {}, i.engaged && Console.canAct() ? el("button", { id: "release-" + i.name, onclick: () => release(i.name) }, "Release") : ""))));
    if (!data.interlocks.length) document.querySelector("#interlocks tbody").append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no interlocks configured")));
  }
  if (data.devices) {
    document.querySelector("#devices tbody").replaceChildren(...data.devices.map((d) => { const c = d.counters || {}; return el("tr", {},
      el("td", {}, d.name), el("td", {}, d.driver), el("td", { class: "state-" + (d.state === "ready" ? "running" : "failed") }, d.state),
      el("td", { class: "num" }, d.host_pid), el("td", { class: "num" }, d.restarts || 0), el("td", { class: "num" }, d.subscribers || 0),
      el("td", { class: "num" }, c.calls || 0), el("td", { class: "num" }, c.dropped || 0), el("td", { class: "num" }, c.errors || 0),
      el("td", {}, d.state !== "ready" ? (d.last_error || "").slice(0, 80) : "")); }));
    if (!data.devices.length) document.querySelector("#devices tbody").append(el("tr", {}, el("td", { colspan: 10, class: "muted" }, "no devices configured")));
  }
}

async function refresh() { try { draw(await Console.get("/api/devices")); } catch (e) { Console.status(e.message); } }

async function release(name) {
  try { await Console.post(`/api/interlocks/${encodeURIComponent(name)}/release`); Console.status(`released ${name}`); } catch (e) { Console.status(`release ${name}: ${e.message}`); }
  refresh();
}

document.addEventListener("DOMContentLoaded", async () => {
  if (!(await Console.start("/devices"))) return;
  const button = document.getElementById("estop");
  if (!Console.canAct()) { button.disabled = true; button.title = "read-only token"; }
  button.addEventListener("click", async () => {
    try {
      const r = await Console.post("/api/estop", { reason: "console e-stop" });
      const names = r.engaged.map((e) => e.name);
      Console.status(names.length ? "e-stop: engaged " + names.join(", ") : "e-stop: no interlocks configured");
    } catch (e) { Console.status("e-stop: " + e.message); }
    refresh();
  });
  await refresh();
  Console.live(draw);
});
