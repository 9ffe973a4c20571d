// breakwater dashboard: follows /dashboard/events (one JSON snapshot per
// second) and redraws. No framework, no build step; every value goes
// through textContent, never innerHTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const COLORS = {
    req: "#4e79a7", err: "#e15759", p50: "#59a14f", p99: "#f28e2b",
    retry: "#b07aa1", fail: "#e15759", hedge: "#76b7b2",
    closed: "#59a14f", half_open: "#f2b447", open: "#e15759",
  };
  const STRIP_S = 120;

  const fmt = {
    num(v, digits) {
      if (v === null || v === undefined || Number.isNaN(v)) return "–";
      return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 1 : digits });
    },
    pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(1) + " %"; },
    usd(v) { return v === null || v === undefined ? "–" : "$" + Number(v).toFixed(v < 1 ? 4 : 2); },
    time(ms) { return new Date(ms).toLocaleTimeString(); },
    dur(s) {
      if (s < 120) return s + " s";
      if (s < 7200) return Math.round(s / 60) + " min";
      return (s / 3600).toFixed(1) + " h";
    },
  };

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function setText(id, text) {
    const e = $(id);
    if (e && e.textContent !== String(text)) e.textContent = String(text);
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "–" : String(c);
      tr.appendChild(td);
    }
    return tr;
  }

  function fillBody(table, rows) {
    const body = table.tBodies[0];
    body.replaceChildren(...rows);
  }

  // A line chart on a canvas: series = [{color, values: [number|null]}].
  function lineChart(canvas, series) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 300;
    const h = canvas.clientHeight || 140;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const pad = { l: 44, r: 8, t: 8, b: 18 };
    const n = Math.max(1, ...series.map((s) => s.values.length));
    let max = 0;
    for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
    max = max <= 0 ? 1 : niceMax(max);
    const x = (i) => pad.l + (i / Math.max(1, n - 1)) * (w - pad.l - pad.r);
    const y = (v) => h - pad.b - (v / max) * (h - pad.t - pad.b);
    ctx.strokeStyle = "#ddd"; ctx.fillStyle = "#777"; ctx.lineWidth = 1;
    ctx.font = "11px system-ui, sans-serif";
    for (let k = 0; k <= 2; k++) {
      const v = (max * k) / 2;
      ctx.beginPath(); ctx.moveTo(pad.l, y(v)); ctx.lineTo(w - pad.r, y(v)); ctx.stroke();
      ctx.fillText(fmt.num(v, 1), 2, y(v) + 4);
    }
    ctx.fillText(Math.round(n) + " s ago", pad.l, h - 4);
    ctx.fillText("now", w - pad.r - 22, h - 4);
    for (const s of series) {
      ctx.strokeStyle = s.color; ctx.lineWidth = 1.6; ctx.beginPath();
      let drawing = false;
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) { drawing = false; return; }
        if (!drawing) { ctx.moveTo(x(i), y(v)); drawing = true; } else ctx.lineTo(x(i), y(v));
      });
      ctx.stroke();
    }
  }

  function niceMax(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // The states of one breaker over the last STRIP_S seconds, from its
  // changes (oldest first) and its current state.
  function strip(canvas, changes, current, nowMs) {
    const w = 160, h = 14;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = w * dpr; canvas.height = h * dpr;
    canvas.style.width = w + "px"; canvas.style.height = h + "px";
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const start = nowMs - STRIP_S * 1000;
    const xs = (ms) => Math.max(0, Math.min(w, ((ms - start) / (STRIP_S * 1000)) * w));
    let state = changes.length ? changes[0].from : current;
    let from = start;
    for (const c of changes) {
      if (c.at_ms > start) {
        ctx.fillStyle = COLORS[state] || "#999";
        ctx.fillRect(xs(from), 0, xs(c.at_ms) - xs(from) + 0.5, h);
        from = c.at_ms;
      }
      state = c.to;
    }
    ctx.fillStyle = COLORS[current] || COLORS[state] || "#999";
    ctx.fillRect(xs(from), 0, w - xs(from), h);
  }

  function badge(state) {
    const b = el("span", state.replace("_", "-"), "badge s-" + state);
    b.dataset.state = state;
    return b;
  }

  function renderTargets(snap) {
    const table = $("targets");
    const rows = snap.targets.map((t) => {
      const canvas = document.createElement("canvas");
      canvas.className = "strip";
      strip(canvas, t.history || [], t.state, snap.at_ms);
      const b = badge(t.state);
      const breakerCell = document.createElement("span");
      breakerCell.appendChild(b);
      if (t.state === "open" && t.open_remaining_ms !== null) {
        breakerCell.appendChild(el("span", " " + Math.ceil(t.open_remaining_ms / 1000) + " s left", "muted"));
      }
      if (t.trips) breakerCell.appendChild(el("span", " · trips " + t.trips, "muted"));
      const kinds = Object.entries(t.errors_by_kind || {}).map(([k, n]) => k + " " + n).join(", ") || "none";
      const tr = row([
        el("code", t.id),
        breakerCell,
        canvas,
        fmt.pct(t.error_rate_recent) + " · " + fmt.pct(t.error_rate),
        kinds,
        t.in_flight,
        fmt.num(t.latency_ms, 0) + " / " + fmt.num(t.ttft_ms, 0),
      ]);
      tr.dataset.target = t.id;
      tr.dataset.state = t.state;
      tr.className = "target";
      return tr;
    });
    fillBody(table, rows);
    $("targets-empty").hidden = snap.targets.length > 0;
    const changes = snap.breaker_changes || [];
    setText("changes-count", changes.length);
    $("changes").replaceChildren(...changes.map((c) =>
      el("li", fmt.time(c.at_ms) + " — " + c.target + ": " + c.from + " → " + c.to + " (" + c.why.replace(/_/g, " ") + ")")));
  }

  function renderCache(snap) {
    const w = snap.cache.window_300s;
    const tiers = snap.cache.tiers;
    setText("hit-rate", fmt.pct(w.hit_rate));
    setText("tokens-saved", fmt.num(tiers ? tiers.tokens_saved : w.tokens_saved, 0));
    setText("usd-saved", fmt.usd(tiers ? tiers.usd_saved : w.usd_saved));
    $("cache-none").hidden = tiers !== null;
    $("cache-tiers").hidden = tiers === null;
    if (!tiers) return;
    const lookups = tiers.l1_hits + tiers.l2_hits + tiers.semantic_hits + tiers.misses;
    const share = (n) => (lookups ? fmt.pct(n / lookups) : "–");
    fillBody($("cache-tiers"), [
      row(["exact, memory (L1)", fmt.num(tiers.l1_hits, 0), share(tiers.l1_hits)]),
      row(["exact, Redis (L2)", fmt.num(tiers.l2_hits, 0), share(tiers.l2_hits)]),
      row(["semantic", fmt.num(tiers.semantic_hits, 0), share(tiers.semantic_hits)]),
      row(["stale (degraded)", fmt.num(tiers.stale_hits, 0), "–"]),
      row(["miss", fmt.num(tiers.misses, 0), share(tiers.misses)]),
      row(["bypass", fmt.num(tiers.bypasses, 0), "–"]),
    ]);
  }

  function headroomCell(r) {
    if (r.rpm === null || r.rpm === undefined) return "unlimited";
    const wrap = el("span", null, "headroom");
    const bar = el("span", null, "bar");
    const fill = el("span", null, "fill");
    const ratio = r.headroom_ratio === null || r.headroom_ratio === undefined ? 1 : r.headroom_ratio;
    fill.style.width = Math.round(ratio * 100) + "%";
    fill.classList.add(ratio < 0.1 ? "low" : ratio < 0.3 ? "mid" : "ok");
    bar.appendChild(fill);
    wrap.appendChild(bar);
    wrap.appendChild(el("span", " " + fmt.num(r.headroom, 0)));
    return wrap;
  }

  function renderLimits(snap) {
    const l = snap.limits;
    setText("limit-window", l.window_s);
    const rows = [];
    for (const k of l.keys) {
      const other = [];
      if (k.rejected) other.push(k.rejected + " refused");
      if (k.tpm) other.push("tpm " + fmt.num(k.tpm, 0));
      if (k.budget) other.push("budget");
      rows.push(row(["key", k.name, fmt.num(k.rpm, 0), fmt.num(k.used_recent, 0), headroomCell(k), other.join(" · ")]));
    }
    for (const u of l.upstream) {
      const other = [];
      if (u.max_in_flight) other.push("in flight " + u.in_flight + " / " + u.max_in_flight);
      if (u.tpm) other.push("tpm " + fmt.num(u.tpm, 0));
      rows.push(row([u.scope, u.name, fmt.num(u.rpm, 0), fmt.num(u.used_recent, 0), headroomCell(u), other.join(" · ")]));
    }
    fillBody($("limits"), rows);
    $("limits").hidden = rows.length === 0;
    $("limits-empty").hidden = rows.length > 0;
  }

  function renderKinds(snap) {
    const kinds = Object.entries(snap.traffic.errors_by_kind_300s || {});
    $("kinds-empty").hidden = kinds.length > 0;
    $("kinds").replaceChildren(...kinds.map(([k, n]) => el("li", k.replace(/_/g, " ") + " " + n, "chip")));
    const upstream = {};
    for (const t of snap.targets) {
      for (const [k, n] of Object.entries(t.errors_by_kind || {})) upstream[k] = (upstream[k] || 0) + n;
    }
    const up = Object.entries(upstream).sort((a, b) => b[1] - a[1]);
    $("upstream-kinds-empty").hidden = up.length > 0;
    $("upstream-kinds").replaceChildren(...up.map(([k, n]) => el("li", k.replace(/_/g, " ") + " " + n, "chip")));
  }

  function commandsText(r) {
    return (r.commands || []).map((c) => {
      const cmd = c.command || {};
      return (cmd.device || cmd.device_id || "?") + " " + (cmd.action || "") + " → " + c.status;
    }).join("; ");
  }

  function renderIot(snap) {
    const iot = snap.iot;
    $("iot").hidden = !iot;
    if (!iot) return;
    const conn = $("iot-conn");
    conn.textContent = iot.connected ? "MQTT connected" : "MQTT disconnected";
    conn.className = "badge " + (iot.connected ? "s-closed" : "s-open");
    $("iot-error").hidden = !iot.error;
    if (iot.error) $("iot-error").textContent = "Could not read the command store: " + iot.error;
    $("iot-recent-empty").hidden = iot.recent.length > 0;
    fillBody($("iot-recent"), iot.recent.map((r) =>
      row([fmt.time(r.created_at), r.user, r.text, r.status.replace(/_/g, " ") + (r.message ? " — " + r.message : ""), commandsText(r)])));
    $("iot-pending-empty").hidden = iot.pending.length > 0;
    fillBody($("iot-pending"), iot.pending.map((r) =>
      row([el("code", r.id), r.user, r.text, r.confirm_deadline ? fmt.time(r.confirm_deadline) : "–"])));
    fillBody($("iot-devices"), iot.devices.map((d) =>
      row([d.name + " (" + d.id + ")", d.room, d.type, d.state === null ? "unknown" : JSON.stringify(d.state)])));
  }

  function renderCharts(snap) {
    const s = snap.series;
    lineChart($("chart-rps"), [
      { color: COLORS.req, values: s.map((p) => p.requests) },
      { color: COLORS.err, values: s.map((p) => p.errors) },
    ]);
    lineChart($("chart-latency"), [
      { color: COLORS.p50, values: s.map((p) => p.p50_ms) },
      { color: COLORS.p99, values: s.map((p) => p.p99_ms) },
    ]);
    lineChart($("chart-retries"), [
      { color: COLORS.retry, values: s.map((p) => p.retries) },
      { color: COLORS.fail, values: s.map((p) => p.failovers) },
      { color: COLORS.hedge, values: s.map((p) => p.hedges) },
    ]);
  }

  function render(snap) {
    const t = snap.traffic;
    setText("origin", snap.providers || "");
    setText("uptime", "up " + fmt.dur(snap.uptime_s));
    setText("rps", fmt.num(t.rps, 2));
    setText("p50", fmt.num(t.latency_ms.p50, 1));
    setText("p99", fmt.num(t.latency_ms.p99, 1));
    setText("ttft", fmt.num(t.ttft_ms.p50, 1));
    setText("requests", fmt.num(t.requests_300s, 0));
    setText("total-requests", fmt.num(snap.totals.requests, 0));
    setText("errors", fmt.num(t.errors_10s, 0));
    setText("retries", fmt.num(t.retries_300s, 0) + " · " + fmt.num(t.failovers_300s, 0));
    const empty = snap.totals.requests === 0 && t.requests_300s === 0;
    $("banner-empty").hidden = !empty;
    if (empty) {
      setText("try-curl", "curl -s " + location.origin + "/v1/chat/completions -H 'content-type: application/json'" +
        (snap.admin_key ? " -H 'authorization: Bearer YOUR_KEY'" : "") +
        " -d '{\"model\":\"default\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'");
    }
    renderCharts(snap);
    renderTargets(snap);
    renderCache(snap);
    renderLimits(snap);
    renderKinds(snap);
    renderIot(snap);
    setText("last-update", "Last snapshot " + fmt.time(snap.at_ms) + ".");
    document.body.dataset.snapshots = String(Number(document.body.dataset.snapshots || 0) + 1);
  }

  function connState(state, text) {
    const c = $("conn");
    c.className = "conn " + state;
    c.textContent = text;
    $("banner-lost").hidden = state !== "lost";
  }

  function connect() {
    const es = new EventSource("/dashboard/events");
    es.onopen = () => connState("live", "live");
    es.addEventListener("snapshot", (ev) => {
      connState("live", "live");
      let snap;
      try { snap = JSON.parse(ev.data); } catch (e) { connState("lost", "bad snapshot"); return; }
      if (snap.version !== 1) { connState("lost", "the gateway speaks a newer dashboard: reload the page"); return; }
      try { render(snap); } catch (e) { console.error(e); }
    });
    es.onerror = () => {
      // EventSource reconnects by itself (retry: 1 s) unless the server
      // answered with an error status; then it is CLOSED and we retry.
      connState("lost", "connection lost, retrying…");
      if (es.readyState === EventSource.CLOSED) {
        setTimeout(connect, 2000);
      }
    };
  }

  document.addEventListener("DOMContentLoaded", connect);
})();
