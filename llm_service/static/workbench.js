// The analyst's workbench: ask within limits, watch the run's events arrive (SSE over fetch, so
// the key travels in a header, never in a URL), read the result, open each finding's cited tool
// calls (drawn by workbench-evidence.js). All model and data text is set as text; the CSP requires
// Trusted Types with no policy, so HTML from a string would throw. Money stays exact strings.
"use strict";

(function () {
  const KEY_STORE = "llm-service-tenant-key";
  const TERMINAL = new Set(["succeeded", "budget_exhausted", "timed_out", "failed", "cancelled"]);
  const STATUS_TEXT = {
    queued: "queued", running: "running", succeeded: "succeeded",
    budget_exhausted: "budget exhausted", timed_out: "timed out", failed: "failed",
    cancelled: "cancelled",
  };
  const { el, usd, seconds, plainValue, argumentsText, toolCard, renderHistory } =
    window.WorkbenchEvidence;
  const $ = (id) => document.getElementById(id);
  const state = {
    key: null, limits: null, run: null, stream: null, draftKey: null, submitting: false,
    historyNext: null, historyToken: 0, historyLoads: 0, historyRuns: new Map(), ticker: null,
    session: 0, // bumped when the tenant's data is forgotten: an answer from before is dropped
  };

  function setStatus(text, kind) {
    const status = $("status");
    status.textContent = text || "";
    status.className = kind || ""; // its line is always kept: nothing below it moves
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

  // Nothing of the tenant stays in the page once its key is gone: hidden is not gone (devtools,
  // "view selection" or the next person at a shared machine would read it).
  function forgetTenantData() {
    state.run = null; // a stream, result or history answer still in flight renders nothing
    state.session += 1; // so does a sign-in or a start still in flight
    state.historyToken += 1;
    state.historyNext = null;
    state.historyRuns = new Map();
    state.limits = null;
    state.draftKey = null;
    const run = $("run");
    run.hidden = true;
    delete run.dataset.runId;
    delete run.dataset.status;
    delete document.body.dataset.run;
    for (const id of ["run-question", "run-status", "money-text", "clock-text", "progress-count",
      "outcome", "summary"]) {
      $(id).textContent = "";
    }
    for (const id of ["timeline", "findings", "history-list"]) $(id).replaceChildren();
    $("result").hidden = true;
    $("history-more").hidden = true;
    $("question").value = "";
    // The meters' figures live in attributes too (the run's spend and limits, its status).
    for (const id of ["money", "clock"]) {
      const meter = $(id);
      meter.max = 1;
      meter.value = 0;
      delete meter.dataset.value;
      delete meter.dataset.max;
    }
    delete $("money-text").dataset.value;
    delete $("run-status").dataset.status;
    for (const key of ["kind", "status", "degraded"]) delete $("outcome").dataset[key];
  }

  function askForKey(message) {
    sessionStorage.removeItem(KEY_STORE);
    stopStream();
    forgetTenantData();
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
    const session = state.session;
    try {
      const [me, limits] = await Promise.all([
        api("v1/tenants/me"), api("v1/investigations/limits"),
      ]);
      if (session !== state.session) return; // signed out meanwhile
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
    const session = state.session;
    try {
      const { status, body: run } = await request("v1/investigations", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": state.draftKey },
        body: JSON.stringify({
          question, max_cost_usd: $("max-cost").value, timeout_s: Number($("timeout").value),
        }),
      });
      // Signed out while the start was on its way: the answer is the old tenant's.
      if (session !== state.session) return;
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
      if (session !== state.session) return;
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

  // ---- history --------------------------------------------------------------------------------

  async function loadHistory(more) {
    const token = ++state.historyToken;
    const params = new URLSearchParams({ limit: "20" });
    const filter = $("history-filter").value;
    if (filter) params.set("status", filter);
    if (more && state.historyNext) params.set("before", state.historyNext);
    historyLoading(+1);
    let page;
    try {
      page = await api("v1/investigations?" + params.toString());
    } catch (error) {
      if (error.status === 401) askForKey(error.message);
      else setStatus("Could not load the history: " + error.message, "error");
      return;
    } finally {
      historyLoading(-1);
    }
    if (token !== state.historyToken) return; // a newer load (another filter) won
    for (const run of page.items) state.historyRuns.set(run.id, run);
    renderHistory($("history-list"), page.items, more, STATUS_TEXT);
    state.historyNext = page.next_before;
    $("history-more").hidden = !page.next_before;
    markCurrent();
    document.body.dataset.history = filter || "all";
  }

  function historyLoading(delta) { // body[data-history-idle]: no load in flight (tests wait on it)
    state.historyLoads += delta;
    document.body.dataset.historyIdle = String(state.historyLoads === 0);
  }

  // One listener on the list (the items come and go): opens the run whose button was clicked.
  function onHistoryClick(event) {
    const button = event.target.closest("button");
    const item = button && button.closest("li[data-run-id]");
    if (!item || !event.currentTarget.contains(item)) return;
    const run = state.historyRuns.get(item.dataset.runId);
    openRun(item.dataset.runId, run || null);
    $("run").focus();
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
    $("sign-out").addEventListener("click", () => {
      setHashRun(null); // the run shown was the signed-out tenant's (a link's run is kept)
      askForKey("Signed out.");
    });
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
    $("history-list").addEventListener("click", onHistoryClick);
    showLimits();
    signIn();
  }

  start();
})();
