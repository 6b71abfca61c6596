"use strict";
// HIL bench reports found under --hil-results DIR; each opens as the bench wrote it.
document.addEventListener("DOMContentLoaded", async () => {
  if (!(await Console.start("/hil"))) return;
  const el = Console.el.bind(Console);
  try {
    const { directory, reports } = await Console.get("/api/hil");
    document.getElementById("directory").textContent = directory ? `Reports under ${directory}` : "Start the console with --hil-results DIR to list bench reports.";
    document.querySelector("#reports tbody").replaceChildren(...reports.map((r) => el("tr", {},
      el("td", {}, el("a", { href: "/hil/files/" + r.path.split("/").map(encodeURIComponent).join("/"), target: "_blank", rel: "noopener" }, r.path)),
      el("td", {}, r.kind === "html" ? "HTML report with plots" : "JSON"), el("td", {}, r.modified.replace("T", " ")), el("td", { class: "num" }, Console.bytes(r.size)))));
    if (!reports.length) document.querySelector("#reports tbody").append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no reports found")));
  } catch (e) { Console.status(e.message); }
});
