// The unread badge, kept up to date without reloading: counts the notifications that
// /notifications/live announces (server-sent events). Pages work without it.
"use strict";

const badge = document.getElementById("unread");
if (badge && window.EventSource) {
  const live = new EventSource("/notifications/live");
  live.addEventListener("notification", () => {
    const count = (parseInt(badge.dataset.count || "0", 10) || 0) + 1;
    badge.dataset.count = String(count);
    badge.textContent = String(count);
    badge.hidden = false;
  });
}
