// The admin status page: renders each `status` event of /status/events (the
// document /status.json serves) into the page. Plain JavaScript, no framework.
//
// Everything from the gateway is written with textContent, never as HTML: source
// keys, event ids and upstream errors come from configuration and from upstreams.
// Rows are kept by key and only changed cells are written, so text stays
// selectable while the page updates every second.
"use strict";

(function () {
  const STREAM = "/status/events";
  // The stream sends a document every second; this long without one means the
  // connection is stuck even if the browser still thinks it is open.
  const STALE_MS = 5000;
  const REOPEN_MS = 3000;

  const $ = (id) => document.getElementById(id);
  const number = new Intl.NumberFormat("en");

  let previous = null; // { uptime, received, delivered } of the last document
  let source = null;
  let staleTimer = 0;

  function setText(el, text) {
    text = String(text);
    if (el.textContent !== text) el.textContent = text;
  }

  function setAttr(el, name, value) {
    value = String(value);
    if (el.getAttribute(name) !== value) el.setAttribute(name, value);
  }

  function formatUptime(seconds) {
    let s = Math.floor(seconds);
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const pad = (n) => String(n).padStart(2, "0");
    if (d > 0) return `${d}d ${pad(h)}h ${pad(m)}m`;
    if (h > 0) return `${h}h ${pad(m)}m ${pad(s)}s`;
    if (m > 0) return `${m}m ${pad(s)}s`;
    return `${s}s`;
  }

  function formatRate(perSecond) {
    if (perSecond < 10) return perSecond.toFixed(1);
    return number.format(Math.round(perSecond));
  }

  // === connection state ===

  function showConnection(state) {
    const badge = $("connection");
    setAttr(badge, "data-connection", state);
    setText(badge, {
      live: "live",
      connecting: "connecting…",
      disconnected: "disconnected — retrying",
    }[state]);
    const lost = state === "disconnected";
    $("disconnected").hidden = !lost;
    document.querySelector("main").classList.toggle("stale", lost);
  }

  function armStaleTimer() {
    clearTimeout(staleTimer);
    staleTimer = setTimeout(() => {
      showConnection("disconnected");
      reopen(0);
    }, STALE_MS);
  }

  function reopen(delay) {
    if (source) source.close();
    source = null;
    setTimeout(open, delay);
  }

  function open() {
    if (source) return;
    source = new EventSource(STREAM);
    source.addEventListener("open", () => armStaleTimer());
    source.addEventListener("status", (event) => {
      let doc;
      try {
        doc = JSON.parse(event.data);
      } catch (error) {
        // A broken document is a gateway bug; say so once per document, keep the
        // last good view.
        console.warn("status: unreadable document", error);
        return;
      }
      showConnection("live");
      armStaleTimer();
      render(doc);
    });
    source.addEventListener("error", () => {
      showConnection("disconnected");
      // CONNECTING: the browser retries by itself. CLOSED: it gave up (an answer
      // other than 200 text/event-stream), so start over after a pause.
      if (source && source.readyState === EventSource.CLOSED) reopen(REOPEN_MS);
    });
  }

  // === rendering ===

  function render(doc) {
    setText($("version"), `v${doc.version}`);
    const readiness = $("readiness");
    setAttr(readiness, "data-ready", doc.ready);
    setText(readiness, doc.ready ? "ready" : "draining");
    setText($("uptime"), formatUptime(doc.uptime_seconds));
    const started = $("started-at");
    setText(started, doc.started_at);
    setAttr(started, "datetime", doc.started_at);

    const t = doc.totals;
    setText($("total-clients"), number.format(t.clients));
    setText($("total-upstreams"), number.format(t.upstream_connections));
    setText($("total-received"), number.format(t.events_received));
    setText($("total-delivered"), number.format(t.events_delivered));
    setText($("total-lagged"), number.format(t.clients_lagged));
    setText($("total-resume-misses"), number.format(t.resume_misses));
    setText($("total-reconnects"), number.format(t.upstream_reconnects));
    setText($("total-backfills"), number.format(t.backfills));
    renderRates(doc);

    syncRows("routes", doc.routes, (r) => r.path, [
      ["path", (r) => r.path, "path"],
      ["upstream", (r) => r.upstream, "key"],
      ["clients", (r) => number.format(r.clients), "num"],
    ]);
    syncRows("sources", doc.sources, (s) => s.key, [
      ["key", (s) => s.key, "key"],
      ["route", (s) => s.route, "path"],
      ["state", renderState, "state"],
      ["clients", (s) => number.format(s.clients), "num"],
      ["last-event-id", (s) => s.last_event_id ?? "—", "id"],
      ["buffer", renderBuffer, "buffer"],
      ["events-received", (s) => number.format(s.events_received), "num"],
      ["reconnects", (s) => number.format(s.reconnects), "num"],
      ["last-error", (s) => s.last_error ?? "", "error"],
    ]);
    // Failures have no identity of their own: the list is rebuilt when it changes.
    syncRows("failures", doc.recent_failures, (f, i) => `${i} ${f.at} ${f.source} ${f.reason}`, [
      ["at", (f) => f.at, "mono"],
      ["source", (f) => f.source, "key"],
      ["reason", (f) => f.reason, "error"],
    ]);
  }

  function renderRates(doc) {
    const now = {
      uptime: doc.uptime_seconds,
      received: doc.totals.events_received,
      delivered: doc.totals.events_delivered,
    };
    const dt = previous ? now.uptime - previous.uptime : 0;
    // dt <= 0: the first document, or a restarted gateway; wait for the next one.
    if (dt > 0 && now.received >= previous.received && now.delivered >= previous.delivered) {
      setText($("rate-received"), formatRate((now.received - previous.received) / dt));
      setText($("rate-delivered"), formatRate((now.delivered - previous.delivered) / dt));
    }
    previous = now;
  }

  // A cell renderer either returns text or fills the cell itself.
  function renderState(s, td) {
    let badge = td.firstElementChild;
    if (!badge) {
      badge = document.createElement("span");
      badge.className = "badge";
      td.appendChild(badge);
    }
    setAttr(badge, "data-state", s.state);
    setText(badge, s.state);
  }

  function renderBuffer(s, td) {
    let label = td.firstElementChild;
    let meter = label && label.nextElementSibling;
    if (!meter) {
      label = document.createElement("span");
      meter = document.createElement("meter");
      meter.min = 0;
      td.append(label, meter);
    }
    setText(label, `${number.format(s.buffered)} / ${number.format(s.capacity)}`);
    meter.max = Math.max(s.capacity, 1);
    meter.value = s.buffered;
    const percent = s.capacity ? Math.round((100 * s.buffered) / s.capacity) : 0;
    setText(meter, `${percent}%`);
    setAttr(meter, "aria-label", `buffer ${percent}% full`);
  }

  // Makes `#id tbody` hold one row per item, in order, keyed by `keyOf`.
  function syncRows(id, items, keyOf, columns) {
    const tbody = document.querySelector(`#${id} tbody`);
    const existing = new Map();
    for (const tr of tbody.rows) existing.set(tr.dataset.key, tr);
    let at = 0;
    items.forEach((item, index) => {
      const key = keyOf(item, index);
      let tr = existing.get(key);
      if (tr) {
        existing.delete(key);
      } else {
        tr = document.createElement("tr");
        tr.dataset.key = key;
        for (const [field, , className] of columns) {
          const td = document.createElement("td");
          td.dataset.field = field;
          td.className = className;
          tr.appendChild(td);
        }
      }
      columns.forEach(([, cell], i) => {
        const td = tr.cells[i];
        const text = cell(item, td);
        if (text !== undefined) setText(td, text);
      });
      if (tbody.rows[at] !== tr) tbody.insertBefore(tr, tbody.rows[at] || null);
      at += 1;
    });
    for (const tr of existing.values()) tr.remove();
    // An empty table is just its header: say "none" in words instead.
    tbody.closest(".scroll").hidden = items.length === 0;
    document.querySelector(`[data-empty-for="${id}"]`).hidden = items.length > 0;
  }

  showConnection("connecting");
  open();
})();
