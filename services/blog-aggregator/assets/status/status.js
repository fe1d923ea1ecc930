// Polls /status.json and redraws the page; builds DOM nodes (never HTML strings), so no
// figure can inject markup.
"use strict";

const EVERY_MS = 2000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
}

function num(value, digits) {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}

function card(service) {
  const up = service.status === "SERVING";
  const facts = el("dl");
  const fact = (name, value) => facts.append(el("dt", {}, name), el("dd", {}, value));
  fact("version", service.version || "–");
  const total = service.total;
  if (total) {
    fact("req/s", num(total.requests_per_second, 1));
    fact("errors/s", num(total.errors_per_second, 2));
    fact("p50 / p99", `${num(total.p50_ms, 1)} / ${num(total.p99_ms, 1)} ms`);
  }
  if (service.outbox) {
    fact("outbox", `${service.outbox.backlog} pending, oldest ${num(service.outbox.oldest_pending_seconds, 1)} s`);
  }
  const consumed = Object.entries(service.consumed_per_second || {});
  if (consumed.length) {
    fact("consumes", consumed.map(([type, rate]) => `${type} ${num(rate, 1)}/s`).join(", "));
  }
  if (service.breaker_open) fact("breaker", "open: calls refused");
  return el("li", { class: up ? "up" : "down", "data-service": service.name },
    el("h3", {}, service.name),
    el("span", { class: "state" }, up ? "healthy" : `down (${service.status})`),
    facts);
}

function draw(report) {
  document.getElementById("map").replaceChildren(...report.services.map(card));
  const rows = [];
  for (const service of report.services) {
    for (const m of service.methods || []) {
      rows.push(el("tr", {},
        el("td", {}, service.name), el("td", {}, m.method.replace(/^\/oba\./, "")),
        el("td", { class: "n" }, num(m.requests_per_second, 1)),
        el("td", { class: "n" }, num(m.errors_per_second, 2)),
        el("td", { class: "n" }, num(m.p50_ms, 1)),
        el("td", { class: "n" }, num(m.p99_ms, 1))));
    }
  }
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", { colspan: "6" }, "No calls in the last window.")));
  }
  document.querySelector("#rpcs tbody").replaceChildren(...rows);
  drawTraces(report.traces);
  document.getElementById("updated").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
}

// Traces stay open across redraws: remember which the reader opened.
const opened = new Set();

function waterfall(trace) {
  const spans = el("ol", { class: "spans" });
  const total = Math.max(trace.duration_ms, 0.001);
  for (const span of trace.spans) {
    const bar = el("span", { class: `bar ${span.kind}${span.error ? " failed" : ""}` });
    bar.style.left = `${(100 * span.offset_ms) / total}%`;
    bar.style.width = `${(100 * span.duration_ms) / total}%`;
    const label = el("span", { class: "label", title: span.name },
      `${"\u00a0\u00a0".repeat(span.depth)}${span.name} · ${num(span.duration_ms, 2)} ms`);
    spans.append(el("li", { "data-span": span.name }, label, el("span", { class: "lane" }, bar)));
  }
  return spans;
}

function drawTraces(traces) {
  const list = document.getElementById("traces");
  if (traces === null || traces === undefined) {
    list.replaceChildren(el("li", {}, "This edge keeps no traces."));
    return;
  }
  if (!traces.length) {
    list.replaceChildren(el("li", {}, "No traced request yet."));
    return;
  }
  list.replaceChildren(...traces.map((trace) => {
    const details = el("details", {},
      el("summary", { class: trace.error ? "error" : "" },
        `${trace.root || "(no root span here)"} · ${num(trace.duration_ms, 2)} ms · ` +
        `${trace.spans.length} spans · ${new Date(trace.started_unix_ms).toLocaleTimeString()}`),
      waterfall(trace));
    details.open = opened.has(trace.trace_id);
    details.addEventListener("toggle", () => {
      if (details.open) opened.add(trace.trace_id); else opened.delete(trace.trace_id);
    });
    return el("li", { "data-trace-id": trace.trace_id }, details);
  }));
}

async function refresh() {
  try {
    const response = await fetch("/status.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`status ${response.status}`);
    draw(await response.json());
  } catch (error) {
    document.getElementById("updated").textContent = `The edge did not answer (${error.message}); retrying.`;
  } finally {
    setTimeout(refresh, EVERY_MS);
  }
}

refresh();
