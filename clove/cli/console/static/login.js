"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const q = new URLSearchParams(location.search);
  const next = q.get("next") || "/";
  document.getElementById("next").value = next.startsWith("/") && !next.startsWith("//") ? next : "/";
  if (q.get("failed")) document.getElementById("status").textContent = "That token is not valid.";
});
