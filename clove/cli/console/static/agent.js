"use strict";
// An agent's page: its process, limits, usage chart (fed by the live stream), log tail,
// journal records and post-mortem bundles; kill/pause/resume for operators.
const NAME = decodeURIComponent(location.pathname.split("/").pop());
const cpu = [], mem = [];
const SAMPLES = 120;

function dl(target, pairs) {
  const el = Console.el.bind(Console);
  document.getElementById(target).replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v == null ? "-" : v)]));
}

function exitText(a) {
  if (!a) return "removed";
  if (a.exit_signal != null) return `signal ${a.exit_signal}`;
  if (a.exit_code != null) return `code ${a.exit_code}`;
  return "-";
}

async function load() {
  const el = Console.el.bind(Console);
  let page;
  try { page = await Console.get("/api/agents/" + encodeURIComponent(NAME)); } catch (e) { Console.status(e.message); return; }
  const a = page.agent;
  document.getElementById("title").firstChild.textContent = `Agent ${NAME} `;
  if (!a) Console.status(`${NAME} is not running on this kernel (killed or removed).`);
  dl("info", [["state", a ? a.state : "gone"], ["id", a && a.id], ["pid", a && a.pid], ["restarts", a && a.restarts],
    ["restart policy", a && a.restart_policy], ["level", a && a.level], ["script", a && a.script],
    ["exit", exitText(a)], ["exit reason", a && a.exit_reason], ["exit message", a && a.exit_message]]);
  const limits = (a && a.isolation && a.isolation.limits) || {};
  dl("limits", Object.entries(limits).map(([k, v]) => [k, `${k === "memory" ? Console.bytes(v.requested) : k === "cpu" ? v.requested / 1000 + "% of a core" : v.requested}${v.enforced ? "" : " (not enforced)"} via ${v.via}`]));
  const logs = page.logs;
  document.getElementById("log").textContent = logs ? (logs.error ? logs.error.message : logs.data) : "";
  const journal = Array.isArray(page.journal) ? page.journal : [];
  document.querySelector("#journal tbody").replaceChildren(...journal.slice().reverse().map((r) => el("tr", {},
    el("td", {}, Console.time(r.timestamp)), el("td", {}, r.category), el("td", {}, r.event_type), el("td", {}, r.syscall || ""),
    el("td", {}, r.decision), el("td", {}, r.code))));
  const bundles = Array.isArray(page.postmortems) ? page.postmortems : [];
  document.querySelector("#postmortems tbody").replaceChildren(...bundles.map((b) => el("tr", {},
    el("td", {}, b.bundle), el("td", {}, (b.time || "-").replace("T", " ")), el("td", {}, b.reason),
    el("td", {}, b.signal != null ? `signal ${b.signal}` : b.exit_code != null ? `code ${b.exit_code}` : "-"),
    el("td", {}, el("a", { href: `/api/agents/${encodeURIComponent(NAME)}/postmortem/${encodeURIComponent(b.bundle)}` }, "JSON")))));
  if (!bundles.length) document.querySelector("#postmortems tbody").append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "none")));
  drawActions(a);
}

function drawActions(a) {
  const el = Console.el.bind(Console);
  const box = document.getElementById("actions");
  if (!Console.canAct() || !a) { box.replaceChildren(Console.canAct() ? "" : el("span", { class: "muted" }, "read-only token: no actions")); return; }
  const act = (verb) => async () => {
    let said;
    try { await Console.post(`/api/agents/${encodeURIComponent(NAME)}/${verb}`); said = `${verb}: done`; } catch (e) { said = `${verb}: ${e.message}`; }
    await load();
    Console.status(said);
  };
  const kill = el("button", { class: "danger", id: "kill" }, "Kill");
  kill.addEventListener("click", () => {
    // Two presses: a kill must be meant.
    if (kill.dataset.armed) { act("kill")(); return; }
    kill.dataset.armed = "1"; kill.textContent = `Really kill ${NAME}?`; kill.id = "kill-confirm";
  });
  box.replaceChildren(el("button", { id: "pause", onclick: act("pause") }, "Pause"), " ", el("button", { id: "resume", onclick: act("resume") }, "Resume"), " ", kill);
}

document.addEventListener("DOMContentLoaded", async () => {
  if (!(await Console.start(""))) return;
  await load();
  Console.live((snap) => {
    const row = snap.agents.find((r) => r.name === NAME);
    if (!row) return;
    cpu.push(row.cpu_percent); mem.push(row.memory / 1048576);
    if (cpu.length > SAMPLES) { cpu.shift(); mem.shift(); }
    Console.chart(document.getElementById("cpu-chart"), [{ values: cpu, color: "#4c9be8", label: "CPU" }], ["%"]);
    Console.chart(document.getElementById("mem-chart"), [{ values: mem, color: "#4fbf73", label: "memory" }], [" MiB"]);
  });
});
