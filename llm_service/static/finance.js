// The finance page: fetches the month with the finance token and renders the table, the chart
// and the tenants nearest their caps. Money stays an exact decimal string from the API: it is
// displayed as given and compared exactly (BigInt), floats are used only for chart geometry.
"use strict";

(function () {
  const TOKEN_KEY = "llm-service-finance-token";
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2f5bd3", "#f79009", "#12b76a", "#d92d20", "#7a5af8", "#0ba5ec",
                   "#ee46bc", "#667085", "#a15c07", "#099250"];
  const NEAREST = 5;
  const $ = (id) => document.getElementById(id);
  const state = { monthly: null, daily: null, sortKey: "total_cost_cents", sortKind: "decimal",
                  descending: true, loads: 0 }; // loads: the latest load, or a forget, wins

  // ---- exact decimals -------------------------------------------------------------------------

  function splitDecimal(text) {
    const negative = text.startsWith("-");
    const [whole, fraction = ""] = (negative ? text.slice(1) : text).split(".");
    return { negative, whole: whole.replace(/^0+(?=\d)/, ""), fraction };
  }

  // Compare two decimal strings exactly (null sorts lowest).
  function compareDecimal(a, b) {
    if (a === b) return 0;
    if (a === null || a === undefined) return -1;
    if (b === null || b === undefined) return 1;
    const x = splitDecimal(String(a));
    const y = splitDecimal(String(b));
    const places = Math.max(x.fraction.length, y.fraction.length);
    const big = (d) => BigInt((d.negative ? "-" : "") + d.whole + d.fraction.padEnd(places, "0"));
    const diff = big(x) - big(y);
    return diff > 0n ? 1 : diff < 0n ? -1 : 0;
  }

  function groupThousands(whole) {
    return whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  // "0.00000015" -> "$0.00000015", "20" -> "$20.00": every digit the API gave, at least cents.
  function usd(text) {
    const d = splitDecimal(text);
    return (d.negative ? "-$" : "$") + groupThousands(d.whole) + "." + d.fraction.padEnd(2, "0");
  }

  function integer(value) {
    return groupThousands(String(value));
  }

  // A fraction as a percentage rounded half-up to `places` decimals, from its exact string.
  function percent(fraction, places) {
    if (fraction === null || fraction === undefined) return "no cap";
    const d = splitDecimal(fraction);
    const digits = d.whole + d.fraction.padEnd(2 + places + 1, "0");
    const keep = d.whole.length + 2 + places;
    let scaled = BigInt(digits.slice(0, keep) || "0");
    if (Number(digits.charAt(keep) || "0") >= 5) scaled += 1n;
    const text = scaled.toString().padStart(places + 1, "0");
    return text.slice(0, text.length - places) + "." + text.slice(text.length - places) + "%";
  }

  // ---- token and month ------------------------------------------------------------------------

  function takeToken() {
    const hash = new URLSearchParams(location.hash.slice(1));
    const given = hash.get("token");
    if (given) {
      sessionStorage.setItem(TOKEN_KEY, given);
      hash.delete("token");
      const rest = hash.toString();
      history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function currentMonth() {
    const asked = new URLSearchParams(location.search).get("month");
    if (asked && /^\d{4}-\d{2}$/.test(asked)) return asked;
    return new Date().toISOString().slice(0, 7);
  }

  function setStatus(text, kind) {
    const status = $("status");
    status.textContent = text;
    status.className = kind || "";
    status.hidden = !text;
  }

  // Every tenant's figures leave the page with the token: hidden is not gone (devtools, "view
  // selection" or the next person at a shared machine would read them).
  function forgetFigures() {
    state.loads += 1; // a load still in flight shows nothing when it answers
    state.monthly = null;
    state.daily = null;
    const content = $("content");
    for (const node of content.querySelectorAll("b[id], td[id], #chart, #legend, #nearest")) {
      node.replaceChildren();
    }
    document.querySelector("#tenants tbody").replaceChildren();
    for (const node of content.querySelectorAll("[data-value]")) delete node.dataset.value;
  }

  function askForToken(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    forgetFigures();
    document.body.dataset.state = "auth";
    $("content").hidden = true;
    $("forget").hidden = true;
    $("auth").hidden = false;
    setStatus(message, "error");
  }

  async function getJson(path, token) {
    const response = await fetch(path, { headers: { Authorization: "Bearer " + token },
                                         cache: "no-store" });
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) {
      const message = (body && body.error && body.error.message) || "HTTP " + response.status;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  async function load() {
    const token = takeToken();
    const month = $("month").value || currentMonth();
    if (!token) {
      askForToken("");
      return;
    }
    document.body.dataset.state = "loading";
    setStatus("Loading " + month + "…");
    const ticket = ++state.loads;
    try {
      const query = "?month=" + encodeURIComponent(month);
      const [monthly, daily] = await Promise.all([
        getJson("v1/finance/monthly-costs" + query, token),
        getJson("v1/finance/daily-costs" + query, token),
      ]);
      if (ticket !== state.loads) return; // forgotten, or another month asked for, meanwhile
      state.monthly = monthly;
      state.daily = daily;
      render();
      $("auth").hidden = true;
      $("forget").hidden = false;
      $("content").hidden = false;
      setStatus("");
      document.body.dataset.state = "ready";
    } catch (error) {
      if (ticket !== state.loads) return;
      if (error.status === 401 || error.status === 403) {
        askForToken(error.message);
      } else {
        document.body.dataset.state = "error";
        setStatus("Could not load " + month + ": " + error.message, "error");
      }
    }
  }

  // ---- rendering ------------------------------------------------------------------------------

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, value);
    }
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function render() {
    const m = state.monthly;
    $("sum-total").textContent = usd(m.total_cost_usd);
    $("sum-total").dataset.value = m.total_cost_usd;
    $("sum-estimated").textContent = usd(m.estimated_cost_usd);
    $("sum-estimated").dataset.value = m.estimated_cost_usd;
    $("sum-calls").textContent = integer(m.calls);
    $("sum-calls").dataset.value = String(m.calls);
    $("sum-tenants").textContent = integer(m.tenant_count);
    // Cached beside uncached spend, and what caching saved (negative: writes cost more).
    for (const [id, field] of [["sum-uncached", "uncached_cost_usd"],
                               ["sum-cached", "cached_cost_usd"],
                               ["sum-saved", "caching_saved_usd"]]) {
      $(id).textContent = usd(m[field]);
      $(id).dataset.value = m[field];
    }
    $("foot-total").textContent = usd(m.total_cost_usd);
    $("foot-estimated").textContent = usd(m.estimated_cost_usd);
    $("foot-calls").textContent = integer(m.calls);
    $("foot-input").textContent = integer(m.input_tokens);
    $("foot-output").textContent = integer(m.output_tokens);
    renderTable();
    renderNearest();
    renderChart();
  }

  function cell(field, value, display, numeric) {
    return el("td", { "data-field": field, "data-value": value, class: numeric ? "num" : null },
              display);
  }

  function breakdown(tenant) {
    const cellNode = el("td", { "data-field": "breakdown" });
    if (!tenant.by_model.length) {
      cellNode.append(el("span", { class: "empty" }, "no calls"));
      return cellNode;
    }
    const details = el("details");
    details.append(el("summary", {}, tenant.by_model.length + " models, " +
                      tenant.by_endpoint.length + " endpoints"));
    const list = el("ul");
    for (const line of tenant.by_model) {
      list.append(el("li", { "data-model": line.model, "data-value": line.cost_usd },
                     line.model + ": " + usd(line.cost_usd) + " (" + integer(line.calls) + " calls)"));
    }
    for (const line of tenant.by_endpoint) {
      list.append(el("li", { "data-endpoint": line.endpoint, "data-value": line.cost_usd },
                     line.endpoint + ": " + usd(line.cost_usd) + " (" + integer(line.calls) +
                     " calls)"));
    }
    for (const line of tenant.by_kind || []) {
      list.append(el("li", { "data-kind": line.kind, "data-value": line.cost_usd },
                     line.kind.replace("_", " ") + ": " + usd(line.cost_usd) + " (" +
                     integer(line.tokens) + " tokens; uncached " + usd(line.uncached_usd) + ")"));
    }
    details.append(list);
    cellNode.append(details);
    return cellNode;
  }

  function sortedTenants() {
    const key = state.sortKey;
    const rows = state.monthly.tenants.slice();
    rows.sort((a, b) => {
      let order;
      if (state.sortKind === "text") {
        order = String(a[key]).localeCompare(String(b[key]));
      } else {
        order = compareDecimal(a[key] === null ? null : String(a[key]),
                               b[key] === null ? null : String(b[key]));
      }
      if (state.descending) order = -order;
      return order || String(a.tenant_id).localeCompare(String(b.tenant_id));
    });
    return rows;
  }

  function renderTable() {
    const body = document.querySelector("#tenants tbody");
    body.replaceChildren();
    for (const t of sortedTenants()) {
      const row = el("tr", { "data-testid": "tenant-row", "data-tenant-id": t.tenant_id });
      const name = el("td", { "data-field": "tenant_name", "data-value": t.tenant_name },
                      t.tenant_name);
      name.append(el("small", {}, t.tenant_id));
      row.append(
        name,
        cell("total_cost_usd", t.total_cost_usd, usd(t.total_cost_usd), true),
        cell("estimated_cost_usd", t.estimated_cost_usd, usd(t.estimated_cost_usd), true),
        cell("calls", String(t.calls), integer(t.calls), true),
        cell("input_tokens", String(t.input_tokens), integer(t.input_tokens), true),
        cell("output_tokens", String(t.output_tokens), integer(t.output_tokens), true),
        cell("cap_usd", t.cap_usd, usd(t.cap_usd), true),
        cell("cap_used_fraction", t.cap_used_fraction === null ? "" : t.cap_used_fraction,
             percent(t.cap_used_fraction, 4), true),
        breakdown(t),
      );
      body.append(row);
    }
    for (const th of document.querySelectorAll("#tenants th")) {
      const active = th.dataset.sort === state.sortKey;
      if (active) th.setAttribute("aria-sort", state.descending ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    }
  }

  function renderNearest() {
    const list = $("nearest");
    list.replaceChildren();
    const capped = state.monthly.tenants.filter((t) => t.cap_used_fraction !== null);
    capped.sort((a, b) => compareDecimal(b.cap_used_fraction, a.cap_used_fraction) ||
                          String(a.tenant_id).localeCompare(String(b.tenant_id)));
    const top = capped.slice(0, NEAREST);
    if (!top.length) {
      list.append(el("li", { class: "empty" }, "No tenant has a cap this month."));
      return;
    }
    for (const t of top) {
      const item = el("li", { "data-testid": "nearest-cap", "data-tenant-id": t.tenant_id,
                              "data-fraction": t.cap_used_fraction });
      item.append(el("div", {}, t.tenant_name));
      item.append(el("small", { class: "empty" },
                     usd(t.total_cost_usd) + " of " + usd(t.cap_usd) + " · " +
                     percent(t.cap_used_fraction, 4)));
      const meter = el("div", { class: "meter" });
      const used = Math.min(1, Number(t.cap_used_fraction));
      meter.append(el("div", { class: used >= 0.8 ? "hot" : null,
                               style: "width:" + (used * 100).toFixed(2) + "%" }));
      item.append(meter);
      list.append(item);
    }
  }

  function renderChart() {
    const d = state.daily;
    const chart = $("chart");
    const legend = $("legend");
    chart.replaceChildren();
    legend.replaceChildren();
    const width = 760;
    const height = 280;
    const pad = { left: 74, right: 10, top: 12, bottom: 26 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const root = svg("svg", { viewBox: "0 0 " + width + " " + height, width: "100%",
                              role: "img", "aria-label": "daily spend by model",
                              "data-testid": "daily-chart", "data-month": d.month,
                              "data-total-usd": d.total_cost_usd });
    const color = {};
    d.models.forEach((model, i) => { color[model] = PALETTE[i % PALETTE.length]; });
    const max = Math.max(0, ...d.days.map((day) => Number(day.cost_cents)));
    const scale = max > 0 ? plotH / max : 0;
    for (const fraction of [0, 0.5, 1]) {
      const y = pad.top + plotH - fraction * plotH;
      root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y,
                                stroke: "#e4e7ec" }));
      const cents = max * fraction;
      root.append(svg("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end" },
                      "$" + (cents / 100).toFixed(cents > 0 && cents < 100 ? 6 : 2)));
    }
    const slot = plotW / d.days.length;
    const barW = Math.max(2, slot * 0.72);
    d.days.forEach((day, i) => {
      const x = pad.left + i * slot + (slot - barW) / 2;
      const group = svg("g", { "data-testid": "chart-day", "data-day": day.day,
                               "data-value": day.cost_usd, "data-calls": String(day.calls) });
      let y = pad.top + plotH;
      for (const part of day.by_model) {
        const h = Number(part.cost_cents) * scale;
        y -= h;
        const rect = svg("rect", { x: x.toFixed(2), y: y.toFixed(2), width: barW.toFixed(2),
                                   height: Math.max(h, 0).toFixed(2), fill: color[part.model],
                                   "data-testid": "chart-bar", "data-day": day.day,
                                   "data-model": part.model, "data-value": part.cost_usd,
                                   "data-calls": String(part.calls) });
        rect.append(svg("title", {}, day.day + " · " + part.model + ": " + usd(part.cost_usd) +
                                     " (" + part.calls + " calls)"));
        group.append(rect);
      }
      root.append(group);
      const dayNumber = Number(day.day.slice(8, 10));
      if (dayNumber === 1 || dayNumber % 5 === 0) {
        root.append(svg("text", { x: (x + barW / 2).toFixed(2), y: height - 8,
                                  "text-anchor": "middle" }, String(dayNumber)));
      }
    });
    chart.append(root);
    if (!d.models.length) {
      legend.append(el("span", { class: "empty" }, "No settled calls this month."));
    }
    for (const model of d.models) {
      const item = el("span", { "data-testid": "legend-item", "data-model": model });
      item.append(el("i", { style: "background:" + color[model] }));
      item.append(document.createTextNode(model));
      legend.append(item);
    }
  }

  // ---- wiring ---------------------------------------------------------------------------------

  function start() {
    $("month").value = currentMonth();
    $("month").addEventListener("change", () => {
      if (!$("month").value) return;
      const url = new URL(location.href);
      url.searchParams.set("month", $("month").value);
      history.replaceState(null, "", url.pathname + url.search + url.hash);
      load();
    });
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
      $("token").value = "";
      load();
    });
    $("forget").addEventListener("click", () => askForToken("Token forgotten."));
    for (const th of document.querySelectorAll("#tenants th[data-sort]")) {
      th.addEventListener("click", () => {
        if (state.sortKey === th.dataset.sort) {
          state.descending = !state.descending;
        } else {
          state.sortKey = th.dataset.sort;
          state.sortKind = th.dataset.kind;
          state.descending = th.dataset.kind !== "text";
        }
        if (state.monthly) renderTable();
      });
    }
    load();
  }

  start();
})();
