// The unread badge, kept up to date without reloading, from /notifications/live
// (server-sent events: `unread` with the count, then `notification` for each new one).
// Pages work without it. The stream is open only while the tab is shown: a browser gives
// a site six connections, and hidden tabs or pages kept for "back" must not hold them.
"use strict";

const badge = document.getElementById("unread");
let live = null;

function show(count) {
  badge.dataset.count = String(count);
  badge.textContent = String(count);
  badge.hidden = count === 0 || count === "0";
}

function open() {
  if (live || document.visibilityState !== "visible") return;
  live = new EventSource("/notifications/live");
  live.addEventListener("unread", (event) => show(event.data));
  live.addEventListener("notification", () => {
    show((parseInt(badge.dataset.count || "0", 10) || 0) + 1);
  });
}

function close() {
  if (live) live.close();
  live = null;
}

if (badge && window.EventSource) {
  open();
  document.addEventListener("visibilitychange", () =>
    document.visibilityState === "visible" ? open() : close());
  window.addEventListener("pagehide", close);
  window.addEventListener("pageshow", open);
}
