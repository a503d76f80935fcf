// The mailfault web UI: one page, hash routes, the API under /api/v1.
// No build step; i18n.js and timeline.js are loaded before this file.
"use strict";
const $main = document.getElementById("main");
const h = mfEl, t = mfT;
const ROUTES = [["deliveries", "deliveries"], ["sessions", "sessions"], ["messages", "messages"],
  ["scenarios", "scenarios"], ["findings", "findings"], ["explain", "explain"]];

// With --api-token, every API call carries it; the page asks once (on 401).
function token() { try { return localStorage.getItem("mailfault.token") || ""; } catch (_) { return ""; } }
async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (token()) headers.Authorization = "Bearer " + token();
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (r.status === 401) {
    const given = prompt(t("token_ask"));
    if (given) { localStorage.setItem("mailfault.token", given.trim()); live(); return api(path, opts); }
  }
  return r;
}
async function json(path) { const r = await api(path); if (!r.ok) throw new Error(`${r.status} ${await r.text()}`); return r.json(); }

function card(title, ...kids) { return h("section", { class: "card" }, title ? h("h3", {}, title) : null, ...kids); }
function table(cols, rows, onclick) {
  return h("table", { class: "cols-" + cols.join("-") }, h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, t(c))))),
    h("tbody", {}, rows.map((r, i) => h("tr", onclick ? { class: "click", onclick: () => onclick(i) } : {}, r.map((c) => h("td", {}, c))))));
}
const sessionLink = (a) => "#/sessions/" + a.session;

const VIEWS = {
  async deliveries() {
    const d = (await json("/api/v1/deliveries?limit=500")).items;
    if (!d.length) return [h("h2", {}, t("deliveries")), card(null, h("p", { class: "muted" }, t("none")))];
    const recent = d.slice().reverse();
    return [h("h2", {}, t("deliveries")),
      card(null, table(["rcpt", "from", "outcome", "attempts", "last_reply"], recent.map((x) => {
        const last = x.attempts[x.attempts.length - 1];
        return [h("b", {}, x.rcpt), h("span", { class: "mono" }, x.mail_from || "<>"),
          h("span", { class: "badge " + x.outcome }, t(x.outcome)), x.attempts.length,
          h("span", { class: "mono" }, last.reply || "")];
      }), (i) => { location.hash = sessionLink(recent[i].attempts[recent[i].attempts.length - 1]); })),
      card(t("timeline"), mfTimeline(d, sessionLink), mfLegend()),
      card(t("attempts"), mfAttemptsTable(d, sessionLink))];
  },
  async sessions() {
    const s = (await json("/api/v1/sessions?limit=200")).items.slice().reverse();
    return [h("h2", {}, t("sessions")), card(null, table(["session", "started", "client", "scenario", "commands", "last_reply"],
      s.map((x) => ["#" + x.id, x.started.slice(0, 23).replace("T", " "), h("span", { class: "mono" }, x.client), x.scenario,
        x.commands, h("span", { class: "mono" }, x.last_reply || "")]), (i) => { location.hash = "#/sessions/" + s[i].id; }))];
  },
  async session(id) {
    const s = await json("/api/v1/sessions/" + encodeURIComponent(id));
    const rows = s.events.filter((e) => e.type === "command" || e.type === "reply" || e.type === "connect" || e.type === "close")
      .map((e) => transcriptRow(e));
    const msgs = (await json("/api/v1/messages?session=" + encodeURIComponent(id))).items;
    return [h("h2", {}, t("session") + " #" + s.session.id),
      card(null, h("dl", { class: "kv inline" }, Object.entries({ client: s.session.client, listener: s.session.listener,
        scenario: s.session.scenario, started: s.session.started.slice(11, 23), ended: (s.session.ended || "…").slice(11, 23) })
        .flatMap(([k, v]) => [h("dt", {}, t(k)), h("dd", { class: "mono" }, v)]))),
      card(t("transcript"), h("table", { class: "transcript" }, h("tbody", {}, rows))),
      msgs.length ? card(t("messages"), table(["subject", "from", "rcpt", "reply"], msgs.map((m) => [m.subject || "(" + m.id + ")", m.mail_from, m.rcpts.join(", "),
        h("span", { class: "badge " + (m.accepted ? "ok" : String(m.reply_code).startsWith("4") ? "temp" : "perm") }, m.reply_code || "")]),
        (i) => { location.hash = "#/messages/" + msgs[i].id; })) : null];
  },
  async messages() {
    const m = (await json("/api/v1/messages?limit=200")).items.slice().reverse();
    return [h("h2", {}, t("messages")), card(null, table(["received", "from", "rcpt", "subject", "reply"],
      m.map((x) => [x.received.slice(0, 23).replace("T", " "), x.mail_from, x.rcpts.join(", "), x.subject || "",
        h("span", { class: "badge " + (x.accepted ? "ok" : "perm") }, x.reply_code || "")]),
      (i) => { location.hash = "#/messages/" + m[i].id; }))];
  },
  async message(id) {
    const m = await json("/api/v1/messages/" + encodeURIComponent(id));
    const raw = m.accepted ? await (await api("/api/v1/messages/" + encodeURIComponent(id) + "/raw")).text() : "";
    return [h("h2", {}, m.subject || m.id),
      card(null, kv({ from: m.mail_from, rcpt: m.rcpts.join(", "), received: m.received, size: m.size + " B",
        session: h("a", { href: "#/sessions/" + m.session }, "#" + m.session) })),
      card(t("headers"), table(["name", "value"], m.headers.map((x) => [h("b", {}, x.name), h("span", { class: "mono" }, x.value)]))),
      card(t("text"), h("pre", {}, m.text || "")), card(t("raw"), h("pre", { class: "raw" }, raw))];
  },
  scenarios: () => scenarioView(null),
  scenario: (name) => scenarioView(name),
  async findings() {
    const r = await json("/api/v1/report");
    return [h("h2", {}, t("findings")), card(null, mfFindingsTable(r))];
  },
  async explain() { return explainView(); },
};

function kv(o) { return h("dl", { class: "kv" }, Object.entries(o).flatMap(([k, v]) => [h("dt", {}, t(k)), h("dd", {}, v)])); }

function transcriptRow(e) {
  if (e.type === "command") return h("tr", { class: "c" }, h("td", { class: "dir" }, "C:"), h("td", { class: "mono line" }, e.line), h("td", {}, ""), h("td", { class: "mono muted" }, e.ts.slice(11, 23)));
  if (e.type === "reply") return h("tr", { class: "s e" + String(e.code)[0] }, h("td", { class: "dir" }, "S:"),
    h("td", { class: "mono line" }, (e.text || "").replace(/\r?\n$/, "")), h("td", {}, e.rule ? h("span", { class: "rule mono", title: t("rule") }, e.rule) : ""), h("td", { class: "mono muted" }, e.ts.slice(11, 23)));
  return h("tr", { class: "muted" }, h("td", {}, "—"), h("td", { class: "muted" }, e.type + (e.client ? " " + e.client : "") + (e.reason ? " " + e.reason : "")), h("td", {}, ""), h("td", { class: "mono muted" }, e.ts.slice(11, 23)));
}

// The editor: a line-number gutter beside a textarea; a 422's diagnostics
// mark their lines in the gutter and are listed below, each with its line.
async function scenarioView(name) {
  const list = await json("/api/v1/scenarios");
  const current = name || (list[0] && list[0].name) || "default";
  let toml = "", prepended = [];
  try {
    const shown = await json("/api/v1/scenarios/" + encodeURIComponent(current));
    toml = shown.toml || ""; prepended = shown.prepended || [];
  } catch (_) { /* a new one */ }
  const area = h("textarea", { class: "code", id: "toml", spellcheck: "false", wrap: "off" });
  area.value = toml;
  const gutter = h("pre", { class: "gutter", id: "gutter" });
  const notes = h("div", { id: "notes" });
  const nameIn = h("input", { type: "text", id: "name", value: current });
  const paint = (bad = new Map()) => {
    const n = area.value.split("\n").length;
    gutter.replaceChildren(...Array.from({ length: n }, (_, i) => h("div", bad.has(i + 1) ?
      { class: "err", title: bad.get(i + 1), "data-line": i + 1 } : { "data-line": i + 1 }, i + 1)));
    gutter.scrollTop = area.scrollTop;
  };
  area.addEventListener("input", () => paint());
  area.addEventListener("scroll", () => { gutter.scrollTop = area.scrollTop; });
  const save = async () => {
    const r = await api("/api/v1/scenarios/" + encodeURIComponent(nameIn.value), { method: "PUT", headers: { "Content-Type": "text/plain" }, body: area.value });
    const body = await r.json().catch(() => ({}));
    if (r.status === 422) {
      const d = body.diagnostics || [];
      paint(new Map(d.map((x) => [x.line, x.message])));
      notes.replaceChildren(h("ul", { class: "diagnostics" }, d.map((x) => h("li", { "data-line": x.line, onclick: () => goLine(area, x.line) },
        h("b", {}, `${t("line")} ${x.line}:${x.col}`), " ", x.message))));
    } else if (r.ok) {
      paint();
      notes.replaceChildren(h("p", { class: "ok-note", id: "saved" }, `${t("saved")} ${body.port}`));
    } else notes.replaceChildren(h("p", { class: "error" }, `${r.status} ${body.error || ""}`));
  };
  paint();
  return [h("h2", {}, t("scenarios")),
    card(null, table(["name", "port", "rules", "file"], list.map((s) => [h("b", {}, s.name), s.port, s.rules, h("span", { class: "mono" }, s.file || "")]),
      (i) => { location.hash = "#/scenarios/" + encodeURIComponent(list[i].name); })),
    card(null, h("div", { class: "row" }, h("label", {}, t("name"), " ", nameIn), h("button", { class: "primary", id: "save", onclick: save }, t("save"))),
      // Rules added with POST .../rules are tried first; saving starts over without them.
      prepended.length ? h("div", { id: "prepended" }, h("h3", {}, t("prepended")), h("p", { class: "muted" }, t("prepended_hint")),
        prepended.map((r) => h("pre", { class: "code mono" }, r))) : "",
      h("div", { class: "editor" }, gutter, area), notes)];
}

function goLine(area, line) {
  const lines = area.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  area.focus();
  area.setSelectionRange(start, start + (lines[line - 1] || "").length);
}

function explainView() {
  const input = h("textarea", { class: "code", id: "explain-input", rows: 5, style: "min-height:110px;border:1px solid var(--line);border-radius:6px" });
  const out = h("div", { id: "explain-out" });
  const go = async () => {
    const r = await api("/api/v1/explain", { method: "POST", headers: { "Content-Type": "text/plain" }, body: input.value });
    const b = await r.json().catch(() => ({}));
    if (!r.ok) { out.replaceChildren(h("p", { class: "error" }, b.error || r.status)); return; }
    out.replaceChildren(...(b.kind === "bounce" ? bounceOut(b) : replyOut(b.explain, input.value)));
  };
  return [h("h2", {}, t("explain")), card(null, h("p", { class: "muted" }, t("explain_hint")), input,
    h("div", { class: "row", style: "margin-top:10px" }, h("button", { class: "primary", id: "explain-go", onclick: go }, t("explain")))), out];
}
const txt = (x) => (x && typeof x === "object" ? x[mfLang()] || x.en || JSON.stringify(x) : x);
// A rule that gives the same reply, at the stage where a receiver most
// often says it (RCPT before MAIL before the end of data...).
const STAGES = [["RCPT", "rcpt"], ["MAIL", "mail"], ["END_OF_DATA", "message"], ["DATA", "data"], ["EHLO", "ehlo"], ["HELO", "helo"]];
function reproduce(e, pasted) {
  const cmds = e.commands || [];
  const on = (STAGES.find(([c]) => cmds.includes(c)) || ["", cmds.length ? "connect" : "rcpt"])[1];
  return `[[rule]]\non = "${on}"\nreply = ${JSON.stringify(pasted.trim().split("\n")[0])}\n`;
}
function replyOut(e, pasted) {
  const rows = { code: e.reply && e.reply.code, meaning: e.meaning, status: e.status && [e.status.code, mfLang() === "ja" && e.status.class_ja || e.status.class, e.status.detail].filter(Boolean).join(" · "),
    category: txt(e.category_text), bounce: txt(e.bounce), advice: txt(e.advice) };
  return [card(null, h("p", {}, h("span", { class: "badge " + (e.temporary ? "temp" : e.kind === "success" ? "ok" : "perm") }, e.kind)),
    kv(Object.fromEntries(Object.entries(rows).filter(([, v]) => v)))), card(t("reproduce"), h("pre", { id: "reproduce" }, e.scenario || reproduce(e, pasted)))];
}
function bounceOut(b) {
  return [card(t("failures"), table(["rcpt", "reply"], (b.failures || []).map((f) => [f.recipient || f.rcpt || "", h("span", { class: "mono" }, f.reply || f.status || JSON.stringify(f))]))),
    card(t("reproduce"), h("pre", { id: "reproduce" }, b.scenario || ""))];
}

async function render() {
  const [, view = "deliveries", id] = location.hash.split("/");
  const name = id ? view.replace(/s$/, "") : view;
  document.documentElement.lang = mfLang();
  document.getElementById("lang").textContent = t("language");
  const dot = document.getElementById("live");
  dot.textContent = t(dot.classList.contains("on") ? "live" : "offline");
  document.getElementById("nav").replaceChildren(...ROUTES.map(([r, k]) => h("a", { href: "#/" + r, class: r === view ? "on" : "" }, t(k))));
  const fn = VIEWS[name] || VIEWS.deliveries;
  try {
    const nodes = await fn(id && decodeURIComponent(id));
    $main.replaceChildren(...nodes.filter(Boolean));
  } catch (e) { $main.replaceChildren(card(null, h("p", { class: "error" }, String(e.message || e)))); }
  document.body.dataset.view = name;
}

// Live: the change feed re-renders lists (not the editor, not explain),
// at most every 500 ms. EventSource cannot send a token: poll then.
let pending = null;
function changed() {
  const view = (location.hash.split("/")[1] || "deliveries");
  if (["scenarios", "explain"].includes(view) || pending) return;
  pending = setTimeout(() => { pending = null; render(); }, 500);
}
let stream = null, poll = null, counts = null;
function live() {
  const dot = document.getElementById("live");
  const mark = (on) => { dot.className = "live " + (on ? "on" : "off"); dot.textContent = t(on ? "live" : "offline"); };
  if (stream) stream.close();
  clearInterval(poll);
  if (token()) { mark(true); poll = setInterval(changed, 3000); return; }
  // The change feed: the counts, whenever they moved (every 250 ms at
  // most), not the events themselves, so a tab open beside a busy server
  // costs its sessions nothing.
  stream = new EventSource("/api/v1/changes");
  stream.onopen = () => mark(true);
  stream.onerror = () => mark(false);
  // The feed's first line is the counts as they are, which the page has
  // just drawn: redraw only when a later line differs (after a reconnect
  // too, when something happened meanwhile).
  stream.onmessage = (e) => {
    if (counts !== null && e.data !== counts) changed();
    counts = e.data;
  };
}

document.getElementById("lang").addEventListener("click", () => {
  localStorage.setItem("mailfault.lang", mfLang() === "ja" ? "en" : "ja");
  render();
});
window.addEventListener("hashchange", render);
render();
live();
