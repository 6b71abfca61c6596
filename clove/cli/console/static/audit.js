"use strict";
// The audit journal with filters, and the chain check `clove audit --verify` makes.
async function query() {
  const el = Console.el.bind(Console);
  const q = new URLSearchParams();
  for (const f of ["agent", "category", "since", "limit"]) { const v = document.getElementById("f-" + f).value.trim(); if (v) q.set(f, v); }
  history.replaceState(null, "", "?" + q.toString());
  try {
    const { entries } = await Console.get("/api/audit?" + q.toString());
    Console.status(`${entries.length} records`);
    document.querySelector("#entries tbody").replaceChildren(...entries.slice().reverse().map((r) => el("tr", {},
      el("td", { class: "num" }, r.id == null ? "" : r.id), el("td", {}, Console.time(r.timestamp)), el("td", {}, r.category),
      el("td", {}, r.event_type), el("td", {}, r.agent_name || (r.syscall ? "operator" : "kernel")), el("td", {}, r.syscall || ""), el("td", {}, r.decision), el("td", {}, r.code))));
  } catch (e) { Console.status(e.message); }
}

async function verify() {
  const out = document.getElementById("verify-result");
  out.hidden = false; out.textContent = "verifying…";
  try {
    const r = await Console.get("/api/audit/verify");
    out.textContent = (r.complete ? "CHAIN INTACT" : "CHAIN BROKEN OR INCOMPLETE") + "\n" + JSON.stringify(r, null, 2);
    out.className = r.complete ? "state-running" : "engaged";
  } catch (e) { out.textContent = e.message; }
}

document.addEventListener("DOMContentLoaded", async () => {
  if (!(await Console.start("/audit"))) return;
  const q = new URLSearchParams(location.search);
  for (const f of ["agent", "category", "since", "limit"]) if (q.get(f)) document.getElementById("f-" + f).value = q.get(f);
  document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); query(); });
  document.getElementById("verify").addEventListener("click", verify);
  query();
});
