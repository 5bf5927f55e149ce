// The analyst's workbench: ask a question within limits, watch the run's events arrive (SSE over
// fetch, so the API key travels in a header, never in a URL), read the result and open the tool
// calls each finding cites. Everything from the model or the data is set as text (textContent,
// SVG text nodes); the page's CSP requires Trusted Types with no policy, so HTML from a string
// would throw. Money stays the API's exact decimal string; floats only size meters and bars.
"use strict";

(function () {
  const KEY_STORE = "llm-service-tenant-key";
  const SVG = "http://www.w3.org/2000/svg";
  const TERMINAL = new Set(["succeeded", "budget_exhausted", "timed_out", "failed", "cancelled"]);
  const STATUS_TEXT = {
    queued: "queued", running: "running", succeeded: "succeeded",
    budget_exhausted: "budget exhausted", timed_out: "timed out", failed: "failed",
    cancelled: "cancelled",
  };
  const TABLE_ROWS = 12;
  const $ = (id) => document.getElementById(id);
  const state = {
    key: null, limits: null, run: null, stream: null, draftKey: null, submitting: false,
    historyNext: null, historyToken: 0, ticker: null,
  };

  // ---- small helpers --------------------------------------------------------------------------

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

  function setStatus(text, kind) {
    const status = $("status");
    status.textContent = text || "";
    status.className = kind || ""; // its line is always kept: nothing below it moves
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

  // A random Idempotency-Key (crypto.getRandomValues works outside secure contexts too).
  function newKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return "workbench-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ---- the API --------------------------------------------------------------------------------

  async function request(path, options) {
    const opts = options || {};
    const headers = Object.assign({ Authorization: "Bearer " + state.key }, opts.headers || {});
    const response = await fetch(path, Object.assign({}, opts, { headers, cache: "no-store" }));
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) {
      const error = new Error((body && body.error && body.error.message) ||
                              "HTTP " + response.status);
      error.status = response.status;
      throw error;
    }
    return { status: response.status, body };
  }

  async function api(path, options) {
    return (await request(path, options)).body;
  }

  function hashParams() {
    return new URLSearchParams(location.hash.slice(1));
  }

  function setHashRun(id) {
    const hash = hashParams();
    hash.delete("key");
    if (id) hash.set("run", id); else hash.delete("run");
    const rest = hash.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }

  // The key may come in the URL fragment (never sent to a server); it is moved to this tab's
  // sessionStorage and removed from the address at once.
  function takeKey() {
    const given = hashParams().get("key");
    if (given) {
      sessionStorage.setItem(KEY_STORE, given);
      setHashRun(hashParams().get("run"));
    }
    return sessionStorage.getItem(KEY_STORE);
  }

  function askForKey(message) {
    sessionStorage.removeItem(KEY_STORE);
    stopStream();
    state.key = null;
    document.body.dataset.state = "auth";
    $("content").hidden = true;
    $("sign-out").hidden = true;
    $("tenant").textContent = "";
    $("auth").hidden = false;
    setStatus(message, message ? "error" : "");
    $("api-key").focus();
  }

  async function signIn() {
    state.key = takeKey();
    if (!state.key) {
      askForKey("");
      return;
    }
    document.body.dataset.state = "loading";
    setStatus("Signing in…");
    try {
      const [me, limits] = await Promise.all([
        api("v1/tenants/me"), api("v1/investigations/limits"),
      ]);
      state.limits = limits;
      $("tenant").textContent = me.name;
      applyLimits(limits);
      $("auth").hidden = true;
      $("sign-out").hidden = false;
      $("content").hidden = false;
      setStatus("");
      document.body.dataset.state = "ready";
      await loadHistory(false);
      const run = hashParams().get("run");
      if (run) openRun(run, null);
    } catch (error) {
      if (error.status === 401 || error.status === 403) askForKey(error.message);
      else setStatus("Could not sign in: " + error.message, "error");
    }
  }

  // ---- asking ---------------------------------------------------------------------------------

  function applyLimits(limits) {
    const cost = $("max-cost");
    const ceiling = Number(limits.max_cost_usd);
    const step = Math.min(0.01, ceiling);
    cost.min = String(step);
    cost.step = String(step);
    cost.max = limits.max_cost_usd;
    cost.value = limits.max_cost_usd;
    $("max-cost-help").textContent = "the service allows at most " + usd(limits.max_cost_usd);
    const time = $("timeout");
    time.min = String(Math.min(5, limits.timeout_s));
    time.max = String(limits.timeout_s);
    time.value = String(limits.timeout_s);
    $("timeout-help").textContent = "the service allows at most " + limits.timeout_s + " s";
    showLimits();
  }

  function showLimits() {
    $("max-cost-value").textContent = usd($("max-cost").value);
    $("timeout-value").textContent = $("timeout").value + " s";
  }

  async function submit(event) {
    event.preventDefault();
    if (state.submitting) return; // a second click while the first is on its way
    const question = $("question").value.trim();
    if (question.length < 3) {
      setStatus("The question needs at least 3 characters.", "error");
      $("question").focus();
      return;
    }
    state.submitting = true;
    $("submit").setAttribute("aria-disabled", "true");
    // One key per draft: a retry after an error, a second click, or submitting the same
    // unchanged draft again is the same run; editing the question or a limit makes a new draft.
    state.draftKey = state.draftKey || newKey();
    setStatus("Starting the investigation…");
    try {
      const { status, body: run } = await request("v1/investigations", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": state.draftKey },
        body: JSON.stringify({
          question, max_cost_usd: $("max-cost").value, timeout_s: Number($("timeout").value),
        }),
      });
      // 200: this draft's run exists. A double click lands here too: only a finished run is
      // worth a word (asking the same again needs an edit).
      if (status === 200 && TERMINAL.has(run.status)) {
        setStatus("This question was already started: here is its run. Edit the question or a " +
                  "limit to start another.");
      } else {
        setStatus("");
      }
      if (!state.run || state.run.id !== run.id) openRun(run.id, run);
      loadHistory(false);
    } catch (error) {
      if (error.status === 401) askForKey(error.message);
      else setStatus("Could not start the investigation: " + error.message, "error");
    } finally {
      state.submitting = false;
      $("submit").removeAttribute("aria-disabled");
    }
  }

  // ---- one run: live progress -----------------------------------------------------------------

  function stopStream() {
    if (state.stream) state.stream.abort();
    state.stream = null;
    if (state.ticker) clearInterval(state.ticker);
    state.ticker = null;
  }

  function openRun(id, initial) {
    stopStream();
    const run = {
      id, status: initial ? initial.status : "queued", maxCost: initial ? initial.max_cost_usd : "0",
      timeout: initial ? initial.timeout_s : 0, spent: "0", startedAt: null, lastAt: null,
      lastLocal: 0, elapsed: 0, events: 0, tools: new Map(), final: null, detail: null,
    };
    state.run = run;
    setHashRun(id);
    $("run").hidden = false;
    $("run").dataset.runId = id;
    $("run-question").textContent = initial ? initial.question : "";
    $("timeline").replaceChildren();
    $("result").hidden = true;
    $("findings").replaceChildren();
    $("summary").textContent = "";
    $("outcome").textContent = "";
    delete document.body.dataset.run;
    $("cancel").disabled = false;
    $("cancel").textContent = "Cancel run";
    markCurrent();
    renderStatus(run);
    renderMeters(run);
    state.ticker = setInterval(() => renderMeters(run), 250);
    follow(run);
  }

  // Reads the SSE stream with fetch (a header can carry the key); resumes with Last-Event-ID.
  async function follow(run) {
    const controller = new AbortController();
    state.stream = controller;
    let lastSeq = 0;
    let failures = 0;
    while (!controller.signal.aborted && !run.final) {
      try {
        const headers = { Authorization: "Bearer " + state.key, Accept: "text/event-stream" };
        if (lastSeq) headers["Last-Event-ID"] = String(lastSeq);
        const response = await fetch("v1/investigations/" + encodeURIComponent(run.id) + "/events",
                                     { headers, signal: controller.signal, cache: "no-store" });
        if (!response.ok) {
          let message = "HTTP " + response.status;
          try { message = (await response.json()).error.message; } catch (_) { /* keep */ }
          const error = new Error(message);
          error.status = response.status;
          throw error;
        }
        const feed = sseParser((event) => {
          const data = JSON.parse(event.data);
          lastSeq = Math.max(lastSeq, Number(data.seq) || 0);
          if (state.run === run) onEvent(run, data);
        });
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        failures = 0;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          feed(decoder.decode(value, { stream: true }));
          if (run.final) {
            reader.cancel().catch(() => {});
            break;
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error.status === 401) { askForKey(error.message); return; }
        if (error.status === 404 || error.status === 422) {
          setStatus("No such investigation.", "error");
          $("run").hidden = true;
          stopStream();
          return;
        }
        failures += 1;
      }
      if (!run.final && !controller.signal.aborted) {
        await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 300 * (failures + 1))));
      }
    }
    if (run.final && state.run === run) await loadResult(run);
  }

  function sseParser(onEvent) {
    let buffer = "";
    let data = [];
    let type = "";
    return function feed(chunk) {
      buffer += chunk;
      for (;;) {
        const match = /\r\n|\r|\n/.exec(buffer);
        if (!match) return;
        if (match[0] === "\r" && match.index === buffer.length - 1) return; // maybe "\r\n"
        const line = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        if (line === "") {
          if (data.length) onEvent({ type: type || "message", data: data.join("\n") });
          data = [];
          type = "";
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "data") data.push(value);
          else if (field === "event") type = value;
        }
      }
    };
  }

  function onEvent(run, event) {
    const at = Date.parse(event.at);
    if (!Number.isNaN(at)) {
      if (event.type === "started" && run.startedAt === null) run.startedAt = at;
      if (run.startedAt !== null) {
        run.elapsed = Math.max(run.elapsed, (at - run.startedAt) / 1000);
        run.lastAt = at;
        run.lastLocal = performance.now();
      }
    }
    run.events += 1;
    let line = null;
    switch (event.type) {
      case "queued":
        run.maxCost = event.max_cost_usd;
        run.timeout = Number(event.timeout_s);
        if (!$("run-question").textContent) $("run-question").textContent = event.question;
        line = timelineItem(event, "Queued with a ceiling of " + usd(event.max_cost_usd) +
                            " and " + event.timeout_s + " s");
        break;
      case "started":
        run.status = "running";
        if (event.limits) {
          run.maxCost = event.limits.max_cost_usd;
          run.timeout = Number(event.limits.timeout_s);
        }
        if (historyStatus(run.id) === "queued") loadHistory(false);
        line = timelineItem(event, "Started (at most " +
                            (event.limits ? event.limits.max_steps : "?") + " steps)");
        break;
      case "step":
        run.status = "running";
        line = timelineItem(event, "Step " + event.step + " · " + event.budget + " · " +
                            event.time_left_s + " s left");
        break;
      case "tool_call":
        run.tools.set(String(event.evidence_id), event);
        line = toolLine(event);
        break;
      case "llm_call":
        if (event.spent_usd !== undefined) run.spent = event.spent_usd;
        line = timelineItem(event, "Model call (" + event.model + "): " + usd(event.cost_usd) +
                            ", " + event.input_tokens + " in / " + event.output_tokens +
                            " out tokens" + (event.tool_calls && event.tool_calls.length
                              ? " → asks for " + event.tool_calls.join(", ") : " → answers"));
        line.dataset.costUsd = event.cost_usd;
        break;
      case "note":
        line = timelineItem(event, "Note: " + event.message);
        break;
      case "final":
        run.status = event.status;
        run.final = event;
        run.spent = event.cost_usd;
        run.elapsed = Number(event.elapsed_s);
        line = timelineItem(event, "Ended: " + (STATUS_TEXT[event.status] || event.status) +
                            " (" + event.reason + ") after " + seconds(event.elapsed_s) +
                            ", " + usd(event.cost_usd));
        if (state.ticker) clearInterval(state.ticker);
        state.ticker = null;
        break;
      default:
        line = timelineItem(event, event.type);
    }
    $("timeline").append(line);
    line.scrollIntoView({ block: "nearest" });
    $("progress-count").textContent = "(" + run.events + " events)";
    renderStatus(run);
    renderMeters(run);
  }

  function timelineItem(event, text) {
    return el("li", { "data-type": event.type, "data-seq": event.seq, "data-testid": "event" },
              text);
  }

  function toolLine(event) {
    const item = timelineItem(event, "");
    item.dataset.evidenceId = event.evidence_id;
    item.dataset.tool = event.tool;
    if (event.error) item.className = "error";
    item.append(document.createTextNode("Tool "), el("code", {}, event.tool),
                document.createTextNode(" " + argumentsText(event.arguments) +
                  (event.duration_ms !== null && event.duration_ms !== undefined
                    ? " · " + event.duration_ms + " ms" : "") +
                  (event.truncated ? " · truncated" : "") +
                  (event.error ? " · error: " + event.error : "")));
    return item;
  }

  function argumentsText(args) {
    if (!args || typeof args !== "object") return plainValue(args);
    const parts = Object.entries(args).map(([k, v]) => k + "=" + plainValue(v));
    return parts.length ? "(" + parts.join(", ") + ")" : "()";
  }

  function renderStatus(run) {
    const badge = $("run-status");
    badge.textContent = STATUS_TEXT[run.status] || run.status;
    badge.dataset.status = run.status;
    $("run").dataset.status = run.status;
    $("cancel").hidden = TERMINAL.has(run.status);
  }

  function renderMeters(run) {
    let elapsed = run.elapsed;
    if (!run.final && run.startedAt !== null && run.lastLocal) {
      elapsed = run.elapsed + (performance.now() - run.lastLocal) / 1000;
    }
    if (run.timeout) elapsed = Math.min(elapsed, run.timeout);
    const money = $("money");
    money.max = Number(run.maxCost) || 1;
    money.value = Math.min(Number(run.spent), money.max);
    money.dataset.value = run.spent;
    money.dataset.max = run.maxCost;
    $("money-text").textContent = usd(run.spent) + " of " + usd(run.maxCost);
    $("money-text").dataset.value = run.spent;
    const clock = $("clock");
    clock.max = run.timeout || 1;
    clock.value = elapsed;
    clock.dataset.value = elapsed.toFixed(3);
    $("clock-text").textContent = seconds(elapsed) + " of " + seconds(run.timeout);
  }

  async function cancelRun() {
    const run = state.run;
    if (!run || TERMINAL.has(run.status)) return;
    $("cancel").disabled = true;
    $("cancel").textContent = "Cancelling…";
    try {
      await api("v1/investigations/" + encodeURIComponent(run.id) + "/cancel", { method: "POST" });
      setStatus("Cancel requested; the run stops within a second or two.");
    } catch (error) {
      $("cancel").disabled = false;
      $("cancel").textContent = "Cancel run";
      setStatus("Could not cancel: " + error.message, "error");
    }
  }

  // ---- one run: the result --------------------------------------------------------------------

  async function loadResult(run) {
    try {
      run.detail = await api("v1/investigations/" + encodeURIComponent(run.id));
    } catch (error) {
      setStatus("Could not load the result: " + error.message, "error");
      return;
    }
    if (state.run !== run) return;
    renderResult(run);
    loadHistory(false);
    if (TERMINAL.has(run.status)) setStatus("");
  }

  function renderResult(run) {
    const d = run.detail;
    run.status = d.status;
    run.spent = d.cost_usd;
    if (d.elapsed_s !== null) run.elapsed = Number(d.elapsed_s);
    renderStatus(run);
    renderMeters(run);
    $("run-question").textContent = d.question;
    const outcome = $("outcome");
    if (d.status !== "succeeded") {
      outcome.dataset.kind = d.status === "cancelled" ? "warn" : "bad";
      outcome.textContent = "The run ended " + (STATUS_TEXT[d.status] || d.status) + ": " +
        (d.reason || "no reason recorded") + ". " +
        (d.findings.length ? "What it found before it stopped is below."
                           : "It found nothing before it stopped.") +
        (d.degraded ? " Degraded: the findings were compiled without a model." : "");
    } else if (d.degraded) {
      outcome.dataset.kind = "warn";
      outcome.textContent = "Degraded: " + (d.reason || "no model was used") +
        ". The findings were compiled from the tool results by templates, without a model.";
    } else {
      outcome.dataset.kind = "";
      outcome.textContent = "";
    }
    outcome.dataset.status = d.status;
    outcome.dataset.degraded = String(d.degraded);
    $("summary").textContent = d.summary || "No summary.";
    const byId = new Map((d.tool_calls || []).map((t) => [String(t.id), t]));
    const list = $("findings");
    list.replaceChildren();
    if (!d.findings.length) list.append(el("li", { class: "muted" }, "No findings."));
    d.findings.forEach((finding, index) => list.append(findingItem(finding, index, byId)));
    $("result").hidden = false;
    document.body.dataset.run = d.status;
  }

  function findingItem(finding, index, byId) {
    const evidence = Array.isArray(finding.evidence) ? finding.evidence.map(String) : [];
    const item = el("li", { "data-testid": "finding", "data-evidence": evidence.join(" ") });
    const panelId = "finding-panel-" + index;
    const button = el("button", { type: "button", class: "finding", "aria-expanded": "false",
                                  "aria-controls": panelId, "data-testid": "finding-toggle" });
    button.append(el("span", { "data-testid": "claim" }, finding.claim));
    button.append(el("span", { class: "cites" }, " · cites " + evidence.length + " tool call" +
                                                  (evidence.length === 1 ? "" : "s")));
    const panel = el("div", { id: panelId, class: "evidence", hidden: "",
                              "data-testid": "evidence" });
    button.addEventListener("click", () => {
      const open = button.getAttribute("aria-expanded") !== "true";
      button.setAttribute("aria-expanded", String(open));
      if (open && !panel.childElementCount) {
        for (const id of evidence) panel.append(toolCard(id, byId.get(id)));
      }
      panel.hidden = !open;
    });
    item.append(button, panel);
    return item;
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

  // ---- history --------------------------------------------------------------------------------

  async function loadHistory(more) {
    const token = ++state.historyToken;
    const params = new URLSearchParams({ limit: "20" });
    const filter = $("history-filter").value;
    if (filter) params.set("status", filter);
    if (more && state.historyNext) params.set("before", state.historyNext);
    let page;
    try {
      page = await api("v1/investigations?" + params.toString());
    } catch (error) {
      if (error.status === 401) askForKey(error.message);
      else setStatus("Could not load the history: " + error.message, "error");
      return;
    }
    if (token !== state.historyToken) return; // a newer load (another filter) won
    const list = $("history-list");
    if (!more) list.replaceChildren();
    for (const run of page.items) list.append(historyItem(run));
    if (!list.childElementCount) list.append(el("li", { class: "muted" }, "No runs yet."));
    state.historyNext = page.next_before;
    $("history-more").hidden = !page.next_before;
    markCurrent();
    document.body.dataset.history = filter || "all";
  }

  function historyItem(run) {
    const item = el("li", { "data-testid": "history-item", "data-run-id": run.id,
                            "data-status": run.status });
    const button = el("button", { type: "button" });
    button.append(el("span", { class: "q" }, run.question));
    const when = new Date(run.created_at);
    button.append(el("span", { class: "meta" },
      (STATUS_TEXT[run.status] || run.status) + " · " + usd(run.cost_usd) + " of " +
      usd(run.max_cost_usd) + " · " + (run.elapsed_s === null ? "—" : seconds(run.elapsed_s)) +
      " · " + (Number.isNaN(when.getTime()) ? run.created_at : when.toLocaleString())));
    button.addEventListener("click", () => {
      openRun(run.id, run);
      $("run").focus();
    });
    item.append(button);
    return item;
  }

  function historyStatus(id) {
    for (const item of document.querySelectorAll("#history-list li[data-run-id]")) {
      if (item.dataset.runId === id) return item.dataset.status;
    }
    return null;
  }

  function markCurrent() {
    for (const item of document.querySelectorAll("#history-list li[data-run-id]")) {
      const button = item.querySelector("button");
      if (state.run && item.dataset.runId === state.run.id) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
  }

  // ---- wiring ---------------------------------------------------------------------------------

  function start() {
    $("run").tabIndex = -1;
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("api-key").value.trim();
      $("api-key").value = "";
      if (key) sessionStorage.setItem(KEY_STORE, key);
      signIn();
    });
    $("sign-out").addEventListener("click", () => askForKey("Signed out."));
    $("ask-form").addEventListener("submit", submit);
    for (const id of ["question", "max-cost", "timeout"]) {
      $(id).addEventListener("input", () => { state.draftKey = null; showLimits(); });
    }
    $("question").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("ask-form").requestSubmit();
    });
    $("cancel").addEventListener("click", cancelRun);
    $("history-filter").addEventListener("change", () => loadHistory(false));
    $("history-more").addEventListener("click", () => loadHistory(true));
    showLimits();
    signIn();
  }

  start();
})();
