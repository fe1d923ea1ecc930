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
  if (service.events_pending !== null && service.events_pending !== undefined) {
    fact("lag", `${service.events_pending} events not yet applied`);
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

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// The map, drawn: the edge calls every service over gRPC; services with an outbox publish
// to the bus; services with a consumer apply what the bus delivers. Drawn from the report,
// so a service that gains an outbox or a consumer shows it without a change here.
function drawGraph(services) {
  const edge = services[0];
  const rest = services.slice(1);
  const W = 144, H = 44, GAP = 12, TOP = 8, ROW = 96, BUS_Y = 212;
  const width = Math.max(rest.length * (W + GAP) - GAP, W) + 2 * GAP;
  const graph = svg("svg", { viewBox: `0 0 ${width} ${BUS_Y + 40}`, role: "img",
    "aria-label": "edge, services and event bus, coloured by health" });
  graph.append(svg("defs", {}), svg("title", {}, "Service map"));
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
    markerWidth: "6", markerHeight: "6", orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "tip" }));
  graph.firstChild.append(marker);
  const node = (service, x, y) => {
    const up = service.status === "SERVING";
    const g = svg("g", { class: `node ${up ? "up" : "down"}`, "data-node": service.name });
    g.append(svg("rect", { x, y, width: W, height: H, rx: 6 }),
      svg("text", { x: x + W / 2, y: y + 18, "text-anchor": "middle", class: "name" }, service.name),
      svg("text", { x: x + W / 2, y: y + 34, "text-anchor": "middle", class: "rate" },
        up ? `${num(service.total ? service.total.requests_per_second : null, 0)} req/s` : service.status));
    return g;
  };
  const line = (x1, y1, x2, y2, kind, label) => {
    const g = svg("g", { class: `link ${kind}` });
    g.append(svg("line", { x1, y1, x2, y2, "marker-end": "url(#arrow)" }));
    if (label) g.append(svg("text", { x: (x1 + x2) / 2 + 3, y: (y1 + y2) / 2, class: "label" }, label));
    return g;
  };
  const edgeX = (width - W) / 2;
  rest.forEach((service, i) => {
    const x = GAP + i * (W + GAP);
    graph.append(line(edgeX + W / 2, TOP + H, x + W / 2, TOP + ROW, "grpc"));
    if (service.outbox) {
      graph.append(line(x + W / 3, TOP + ROW + H, x + W / 3, BUS_Y, "publish",
        `${service.outbox.backlog}`));
    }
    if (service.events_pending !== null && service.events_pending !== undefined) {
      graph.append(line(x + (2 * W) / 3, BUS_Y, x + (2 * W) / 3, TOP + ROW + H, "consume",
        `${service.events_pending}`));
    }
    graph.append(node(service, x, TOP + ROW));
  });
  graph.append(node(edge, edgeX, TOP));
  graph.append(svg("rect", { x: GAP, y: BUS_Y, width: width - 2 * GAP, height: 28, rx: 6, class: "bus" }),
    svg("text", { x: width / 2, y: BUS_Y + 19, "text-anchor": "middle", class: "name" },
      "event bus (outbox → bus: events waiting to be published; bus → service: its lag)"));
  document.getElementById("graph").replaceChildren(graph);
}

function draw(report) {
  drawGraph(report.services);
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
