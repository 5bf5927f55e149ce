// The workbench's evidence views: a cited tool call as a small table and, for a comparison
// (current against previous) or a series (rows by day), an inline SVG bar chart; the history
// list, kept in place across reloads; and the text helpers both files use. Everything is built as elements with text nodes, never from HTML.
// Money stays the API's exact decimal string (or integer cents); floats only size the bars.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const TABLE_ROWS = 12;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function groupThousands(whole) {
    return whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  // An exact decimal string in plain notation: "1.5E-7" -> "0.00000015" (no float involved).
  function plainDecimal(text) {
    const raw = String(text).trim();
    const match = /^(-?)(\d*)(?:\.(\d*))?[eE]([+-]?\d+)$/.exec(raw);
    if (!match) return raw;
    const [, sign, whole, fraction = "", exponent] = match;
    const digits = (whole + fraction).replace(/^0+/, "");
    if (!digits) return "0";
    // value = digits x 10^(exponent - fraction length): where the point falls in `digits`
    const point = digits.length + Number(exponent) - fraction.length;
    if (point <= 0) return sign + "0." + "0".repeat(-point) + digits;
    if (point >= digits.length) return sign + digits + "0".repeat(point - digits.length);
    return sign + digits.slice(0, point) + "." + digits.slice(point);
  }

  // "0.000123" -> "$0.000123", "0.300000" -> "$0.30": every significant digit the API gave,
  // at least cents.
  function usd(text) {
    const raw = plainDecimal(text);
    const negative = raw.startsWith("-");
    const [whole, fraction = ""] = (negative ? raw.slice(1) : raw).split(".");
    return (negative ? "-$" : "$") + groupThousands(whole.replace(/^0+(?=\d)/, "") || "0") +
      "." + fraction.replace(/0+$/, "").padEnd(2, "0");
  }

  // Integer cents (exact) as dollars: 123456 -> "$1,234.56".
  function centsText(value) {
    if (typeof value !== "number" || !Number.isInteger(value)) return String(value);
    const negative = value < 0;
    const digits = String(Math.abs(value)).padStart(3, "0");
    return (negative ? "-$" : "$") + groupThousands(digits.slice(0, -2)) + "." + digits.slice(-2);
  }

  function seconds(value) {
    return (Math.round(Number(value) * 10) / 10).toFixed(1) + " s";
  }

  function plainValue(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function argumentsText(args) {
    if (!args || typeof args !== "object") return plainValue(args);
    const parts = Object.entries(args).map(([k, v]) => k + "=" + plainValue(v));
    return parts.length ? "(" + parts.join(", ") + ")" : "()";
  }

  function toolCard(id, call) {
    const card = el("div", { class: "tool", "data-testid": "cited-tool-call", "data-evidence-id": id });
    if (!call) {
      card.append(el("p", { class: "error" }, "Tool call " + id + " is not in this run's record."));
      return card;
    }
    card.dataset.tool = call.tool_name;
    const title = el("h4");
    title.append(el("code", {}, call.tool_name), document.createTextNode(
      " " + argumentsText(call.arguments) + (call.duration_ms !== null ? " · " +
        call.duration_ms + " ms" : "") + " · step " + call.step));
    card.append(title);
    if (call.error) {
      card.append(el("p", { class: "error" }, "Error: " + call.error));
      return card;
    }
    if (call.truncated) card.append(el("p", { class: "muted" }, "The result was cut to fit."));
    const chart = chartFor(call.result);
    if (chart) card.append(chart);
    card.append(resultTable(call.result));
    return card;
  }

  // The first list of records in a result (its "rows"), or null.
  function recordsOf(result) {
    if (Array.isArray(result)) return result.filter((r) => r && typeof r === "object");
    if (!result || typeof result !== "object") return null;
    const lists = Object.entries(result).filter(([, v]) => Array.isArray(v) && v.length &&
                                                          v[0] && typeof v[0] === "object");
    const rows = lists.find(([k]) => k === "rows") || lists[0];
    return rows ? rows[1] : null;
  }

  function cellText(column, value) {
    if (/_cents$/.test(column) && typeof value === "number") return centsText(value);
    return plainValue(value);
  }

  function resultTable(result) {
    const wrap = el("div", { class: "scroll" });
    const rows = recordsOf(result);
    if (!rows) {
      const scalars = Object.entries(result || {}).filter(([, v]) => v === null ||
                                                          typeof v !== "object");
      if (!scalars.length) {
        wrap.append(el("p", { class: "muted" }, "No rows."));
        return wrap;
      }
      const table = el("table", { "data-testid": "result-table" });
      for (const [k, v] of scalars) {
        const tr = el("tr");
        tr.append(el("th", { scope: "row" }, k), el("td", {}, cellText(k, v)));
        table.append(tr);
      }
      wrap.append(table);
      return wrap;
    }
    const columns = [];
    for (const row of rows.slice(0, TABLE_ROWS)) {
      for (const [k, v] of Object.entries(row)) {
        if (!columns.includes(k) && (v === null || typeof v !== "object")) columns.push(k);
      }
    }
    const table = el("table", { "data-testid": "result-table" });
    const head = el("tr");
    for (const c of columns) head.append(el("th", { scope: "col" }, c.replace(/_/g, " ")));
    const thead = el("thead");
    thead.append(head);
    table.append(thead);
    const body = el("tbody");
    for (const row of rows.slice(0, TABLE_ROWS)) {
      const tr = el("tr", { "data-testid": "result-row" });
      for (const c of columns) {
        tr.append(el("td", { class: typeof row[c] === "number" ? "num" : null,
                             "data-column": c }, cellText(c, row[c])));
      }
      body.append(tr);
    }
    table.append(body);
    wrap.append(table);
    if (rows.length > TABLE_ROWS) {
      wrap.append(el("p", { class: "muted" }, (rows.length - TABLE_ROWS) + " more rows not shown."));
    }
    return wrap;
  }

  // Every list of records in a result, "rows" first.
  function recordLists(result) {
    if (!result || typeof result !== "object" || Array.isArray(result)) return [];
    return Object.entries(result)
      .filter(([, v]) => Array.isArray(v) && v.length && v[0] && typeof v[0] === "object")
      .sort(([a], [b]) => (b === "rows") - (a === "rows"))
      .map(([, v]) => v);
  }

  // A chart for a comparison (current_X against previous_X per row) or a series (rows by day).
  function chartFor(result) {
    const lists = recordLists(result);
    for (const rows of lists) {
      const first = rows[0];
      const pair = ["revenue_cents", "attributed_revenue_cents", "conversions", "events"]
        .find((k) => typeof first["current_" + k] === "number" &&
                     typeof first["previous_" + k] === "number");
      if (!pair) continue;
      const label = Object.keys(first).find((k) => typeof first[k] === "string" ||
                                                   first[k] === null);
      const points = rows.slice(0, 10).map((r) => ({
        label: plainValue(r[label] === null ? "all" : r[label]),
        values: [r["previous_" + pair], r["current_" + pair]],
      }));
      return barChart("comparison", pair, ["previous", "current"], points);
    }
    for (const rows of lists) {
      const first = rows[0];
      if (typeof first.day !== "string") continue;
      const measure = ["amount_cents", "revenue_cents", "events", "changes", "conversions"]
        .find((k) => typeof first[k] === "number") ||
        Object.keys(first).find((k) => k !== "day" && typeof first[k] === "number");
      if (!measure) continue;
      const points = rows.slice().sort((a, b) => String(a.day).localeCompare(String(b.day)))
        .slice(0, 40).map((r) => ({ label: String(r.day).slice(5), values: [r[measure]] }));
      return barChart("series", measure, [measure.replace(/_/g, " ")], points);
    }
    return null;
  }

  function barChart(kind, measure, series, points) {
    const box = el("figure", { "data-testid": "chart", "data-kind": kind, "data-measure": measure });
    const width = 560;
    const height = 200;
    const pad = { left: 70, right: 8, top: 10, bottom: 34 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const values = points.flatMap((p) => p.values.map(Number));
    const max = Math.max(0, ...values);
    const min = Math.min(0, ...values);
    const span = max - min || 1;
    const y = (v) => pad.top + (max - v) / span * plotH;
    const root = svg("svg", { class: "chart", viewBox: "0 0 " + width + " " + height,
                              role: "img", "aria-label": kind + " of " + measure.replace(/_/g, " ") });
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(0), y2: y(0),
                              stroke: "#8a93a5" }));
    const money = /_cents$/.test(measure);
    for (const v of [max, min].filter((v, i, a) => v !== 0 && a.indexOf(v) === i)) {
      root.append(svg("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" },
                      money ? centsText(Math.round(v)) : String(v)));
    }
    const colors = ["#9aa6bd", "#2550c4"];
    const slot = plotW / points.length;
    const barW = Math.max(2, (slot * 0.8) / series.length);
    // Series (dates) label every n-th bar in full; comparisons shorten each label to its slot.
    const longest = Math.max(...points.map((p) => p.label.length));
    const every = kind === "series" ? Math.max(1, Math.ceil((longest * 6.5) / slot)) : 1;
    const chars = kind === "series" ? 12 : Math.max(3, Math.floor(slot / 6.5));
    points.forEach((point, i) => {
      point.values.forEach((value, j) => {
        const v = Number(value);
        const x = pad.left + i * slot + slot * 0.1 + j * barW;
        const top = Math.min(y(v), y(0));
        const rect = svg("rect", { x: x.toFixed(2), y: top.toFixed(2), width: barW.toFixed(2),
                                   height: Math.abs(y(v) - y(0)).toFixed(2),
                                   fill: series.length === 1 ? colors[1] : colors[j % 2],
                                   "data-testid": "chart-bar", "data-label": point.label,
                                   "data-series": series[j], "data-value": String(value) });
        rect.append(svg("title", {}, point.label + " · " + series[j] + ": " +
                                     (money ? centsText(value) : String(value))));
        root.append(rect);
      });
      if (i % every === 0) {
        root.append(svg("text", { x: (pad.left + i * slot + slot / 2).toFixed(2),
                                  y: height - 18, "text-anchor": "middle" },
                        point.label.length > chars ? point.label.slice(0, chars - 1) + "…"
                                                   : point.label));
      }
    });
    box.append(root);
    if (series.length > 1) {
      const legend = el("figcaption", { class: "legend" });
      series.forEach((name, j) => {
        const item = el("span");
        item.append(el("i", { class: "swatch-" + (j === 0 ? 1 : 0) }),
                    document.createTextNode(name + " " + measure.replace(/_/g, " ")));
        legend.append(item);
      });
      box.append(legend);
    }
    return box;
  }

  // ---- the history list ----------------------------------------------------------------------

  // Updated in place: an item already shown keeps its element (only changed text is rewritten),
  // so a click that straddles a reload still lands (replacing the buttons between the press and
  // the release lost it).
  function renderHistory(list, runs, more, statusText) {
    if (!more) {
      const keep = new Set(runs.map((run) => run.id));
      for (const item of [...list.children]) {
        if (!item.dataset.runId || !keep.has(item.dataset.runId)) item.remove();
      }
    }
    const shown = new Map();
    for (const item of list.querySelectorAll("li[data-run-id]")) shown.set(item.dataset.runId, item);
    let position = more ? list.childElementCount : 0;
    for (const run of runs) {
      let item = shown.get(run.id);
      if (item) fillHistoryItem(item, run, statusText);
      else item = historyItem(run, statusText);
      if (list.children[position] !== item) list.insertBefore(item, list.children[position] || null);
      position += 1;
    }
    if (!list.childElementCount) list.append(el("li", { class: "muted" }, "No runs yet."));
  }

  function historyItem(run, statusText) {
    const item = el("li", { "data-testid": "history-item", "data-run-id": run.id });
    const button = el("button", { type: "button" });
    button.append(el("span", { class: "q" }), el("span", { class: "meta" }));
    item.append(button);
    fillHistoryItem(item, run, statusText);
    return item;
  }

  function fillHistoryItem(item, run, statusText) {
    if (item.dataset.status !== run.status) item.dataset.status = run.status;
    const when = new Date(run.created_at);
    const meta = (statusText[run.status] || run.status) + " · " + usd(run.cost_usd) + " of " +
      usd(run.max_cost_usd) + " · " + (run.elapsed_s === null ? "—" : seconds(run.elapsed_s)) +
      " · " + (Number.isNaN(when.getTime()) ? run.created_at : when.toLocaleString());
    const [question, details] = item.querySelectorAll("button > span");
    if (question.textContent !== run.question) question.textContent = run.question;
    if (details.textContent !== meta) details.textContent = meta;
  }

  window.WorkbenchEvidence = Object.freeze({
    el, svg, usd, seconds, plainValue, argumentsText, toolCard, renderHistory,
  });
})();
