// The delivery timeline: each attempt of each sender and recipient on one
// time axis, coloured by its reply. Shared by the UI and `report --html`
// (embedded there), so it only builds DOM from the report's JSON.
"use strict";

// The class of an attempt: its reply's first digit, or how it ended.
function mfAttemptClass(a) {
  if (a.code >= 200 && a.code < 300) return "ok";
  if (a.code >= 400 && a.code < 500) return "temp";
  if (a.code >= 500) return "perm";
  return a.outcome === "abandoned" ? "hung" : "dropped";
}

function mfEl(tag, attrs, ...kids) {
  const svg = ["svg", "g", "line", "circle", "text", "title", "rect"].includes(tag);
  const e = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}

function mfDuration(ms) {
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  if (ms < 3600000) return (ms / 60000).toFixed(1) + " min";
  return (ms / 3600000).toFixed(1) + " h";
}

// An SVG with one row per delivery; `link(attempt)` gives a session's URL.
function mfTimeline(deliveries, link) {
  const W = 1100, left = 300, right = 40, rowH = 46, top = 28;
  const times = deliveries.flatMap((d) => d.attempts.map((a) => Date.parse(a.time)));
  const t0 = Math.min(...times), t1 = Math.max(...times);
  const span = Math.max(t1 - t0, 1);
  const x = (t) => left + ((Date.parse(t) - t0) / span) * (W - left - right);
  const H = top + rowH * deliveries.length + 8;
  const svg = mfEl("svg", { class: "timeline", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
  svg.append(mfEl("text", { x: left, y: 16, class: "axis" }, new Date(t0).toISOString().slice(11, 23)));
  svg.append(mfEl("text", { x: W - right, y: 16, class: "axis", "text-anchor": "end" },
    "+" + mfDuration(t1 - t0)));
  deliveries.forEach((d, i) => svg.append(mfRow(d, top + i * rowH + rowH / 2, x, left, W - right, link)));
  return svg;
}

function mfRow(d, y, x, left, end, link) {
  const g = mfEl("g", { class: "delivery outcome-" + d.outcome, "data-rcpt": d.rcpt });
  g.append(mfEl("text", { x: 8, y: y - 4, class: "who" }, d.rcpt));
  g.append(mfEl("text", { x: 8, y: y + 12, class: "from" }, (d.mail_from || "<>") + " · " + mfT(d.outcome)));
  g.append(mfEl("line", { x1: left, x2: end, y1: y, y2: y, class: "track" }));
  d.attempts.forEach((a, i) => {
    const cx = x(a.time);
    if (i > 0) {
      const px = x(d.attempts[i - 1].time);
      g.append(mfEl("line", { x1: px, x2: cx, y1: y, y2: y, class: "span" }));
      g.append(mfEl("text", { x: (px + cx) / 2, y: y - 8, class: "gap", "text-anchor": "middle" },
        "+" + mfDuration(d.intervals_ms[i - 1] || 0)));
    }
    const tip = [a.time, a.reply || mfT(mfAttemptClass(a)), a.rule ? mfT("rule") + ": " + a.rule : "",
      mfT("session") + " " + a.session].filter(Boolean).join("\n");
    const dot = mfEl("circle", { cx, cy: y, r: 8, class: "attempt " + mfAttemptClass(a),
      "data-code": a.code || "", "data-reply": a.reply || "" }, mfEl("title", {}, tip));
    const label = mfEl("text", { x: cx, y: y + 22, class: "code", "text-anchor": "middle" },
      a.code || mfT(mfAttemptClass(a)));
    const href = link && link(a);
    const node = mfEl("g", {}, dot, label);
    if (href) {
      // An SVG link: created in the SVG namespace, or it is not drawn.
      const a = document.createElementNS("http://www.w3.org/2000/svg", "a");
      a.setAttribute("href", href);
      a.append(node);
      g.append(a);
    } else g.append(node);
  });
  return g;
}

// What the colours of the timeline mean.
function mfLegend() {
  return mfEl("div", { class: "legend" }, ["ok", "temp", "perm", "dropped", "hung"].map((c) =>
    mfEl("span", { class: c }, { ok: "2xx", temp: "4xx", perm: "5xx" }[c] || mfT(c))));
}

// The attempts of the deliveries as a table: the same facts in words.
function mfAttemptsTable(deliveries, link) {
  const head = ["rcpt", "time", "code", "reply", "rule", "interval", "session"].map((k) => mfEl("th", {}, mfT(k)));
  const rows = deliveries.flatMap((d) => d.attempts.map((a, i) => mfEl("tr", { class: "attempt-row" },
    mfEl("td", {}, i === 0 ? d.rcpt : ""),
    mfEl("td", { class: "mono" }, a.time.slice(11, 23)),
    mfEl("td", {}, mfEl("span", { class: "badge " + mfAttemptClass(a) }, a.code || mfT(mfAttemptClass(a)))),
    mfEl("td", { class: "mono reply" }, a.reply || ""),
    mfEl("td", { class: "mono" }, a.rule || ""),
    mfEl("td", { class: "mono" }, i > 0 ? "+" + mfDuration(d.intervals_ms[i - 1] || 0) : ""),
    mfEl("td", {}, link ? mfEl("a", { href: link(a) }, "#" + a.session) : "#" + a.session))));
  return mfEl("table", { class: "attempts" }, mfEl("thead", {}, mfEl("tr", {}, head)), mfEl("tbody", {}, rows));
}

function mfFindingsTable(report) {
  if (!report.findings.length && !report.expectations.length) return mfEl("p", { class: "muted" }, mfT("no_findings"));
  const f = mfEl("table", { class: "findings" },
    mfEl("thead", {}, mfEl("tr", {}, ["severity", "time", "client", "session", "message"].map((k) => mfEl("th", {}, mfT(k))))),
    mfEl("tbody", {}, report.findings.map((x) => mfEl("tr", {},
      mfEl("td", {}, mfEl("span", { class: "badge " + (x.severity === "error" ? "perm" : "temp") }, x.severity)),
      mfEl("td", { class: "mono" }, x.time.slice(11, 23)), mfEl("td", { class: "mono" }, x.client),
      mfEl("td", {}, "#" + x.session), mfEl("td", {}, mfEl("b", {}, x.kind), " ", x.message)))));
  const v = report.expectations.map((e) => mfEl("li", {},
    mfEl("span", { class: "badge " + (e.passed ? "ok" : "perm") }, mfT(e.passed ? "passed" : "not_passed")),
    " ", mfEl("b", {}, e.name), " ", e.detail));
  return mfEl("div", {}, f, v.length ? mfEl("h3", {}, mfT("expectations")) : null, v.length ? mfEl("ul", {}, v) : null);
}
