// One job, live: the record (GET /v1/jobs/{id}), epoch and step history (/metrics, /steps),
// then the SSE stream from the start (replay, then tail) until the terminal status event.
//
// Chart data is keyed: epochs by epoch number, steps by step number. A `replayed` epoch or step
// (a resumed attempt ran it again) replaces the earlier values; nothing is appended blindly,
// so the initial page loads and the stream's replay can overlap safely.

import { allMetrics, allSteps, api, ApiError, downloadWithKey, openapi, sha256Hex }
  from "../api.js";
import { columns, COLORS, LineChart, renderConfusion, renderDistribution } from "../charts.js";
import { clear, fmt, h, message, progressBar, statusBadge, TERMINAL } from "../dom.js";
import { followEvents } from "../sse.js";

const JOB_POLL_MS = 5000;
const OK_ENDINGS = new Set(["completed", "early_stopped"]);

function card(title, body, { wide = false, testid } = {}) {
  return h("section", { class: `card chart-card${wide ? " wide" : ""}`, "data-testid": testid },
    h("h2", { text: title }), body);
}

export function jobView(root, jobId) {
  let stopped = false;
  let stream = null;
  let pollTimer = null;
  let renderTimer = null;
  const state = {
    job: null,
    epochs: new Map(), // epoch -> EpochMetrics (the later record wins)
    steps: new Map(), // step -> StepMetrics (the later record wins)
    warnings: new Map(), // epoch -> Set of messages
    trackerNotes: new Set(), // an experiment tracker that failed (the job trains on)
    test: null,
    checkpoints: [],
    // name -> { sha256, text, verified, busy }: a download's outcome outlives re-renders (every
    // stream message re-renders the table) and is dropped once the listing's sha256 changes
    downloads: new Map(),
    connection: "connecting",
    selectedEpoch: null,
    pickedEpoch: false, // until the user picks one, the matrix follows the best (else latest)
    reportPath: null,
  };

  // --- layout -----------------------------------------------------------------------------
  const header = h("div", { class: "job-header" });
  const summary = h("dl", { class: "summary", "data-testid": "job-summary" });
  const notes = h("div");
  const live = h("span", { class: "live", "data-testid": "connection" });
  const cancelButton = h("button", { type: "button", class: "danger", text: "Cancel job",
    "data-testid": "cancel", hidden: true, onclick: cancel });
  const reportButton = h("button", { type: "button", class: "secondary", hidden: true,
    text: "Report (PNG)", "data-testid": "report", onclick: downloadReport });

  const stepLossEl = h("div", { class: "chart", "data-testid": "chart-train-loss" });
  const epochLossEl = h("div", { class: "chart", "data-testid": "chart-val-loss" });
  const scoresEl = h("div", { class: "chart", "data-testid": "chart-scores" });
  const lrEl = h("div", { class: "chart", "data-testid": "chart-lr" });
  const distEl = h("div", { class: "dist", "data-testid": "chart-distribution" });
  const epochSelect = h("select", { id: "cm-epoch", "data-testid": "cm-epoch",
    onchange: () => {
      state.selectedEpoch = Number(epochSelect.value);
      state.pickedEpoch = true; // stop following the best epoch
      render();
    } });
  const confusionEl = h("div");
  const warningsEl = h("ul", { class: "warnings", "data-testid": "warnings" });
  const transitionsEl = h("tbody", { "data-testid": "transitions" });
  const checkpointsEl = h("tbody", { "data-testid": "checkpoints" });
  const testEl = h("div", { "data-testid": "test-metrics" });
  const configEl = h("pre", { class: "config" });

  root.append(
    h("section", { class: "card" }, header, summary, notes),
    h("div", { class: "grid" },
      card("Training loss (per logged step)", stepLossEl, { testid: "card-train-loss" }),
      card("Loss per epoch", epochLossEl, { testid: "card-val-loss" }),
      card("Validation scores per epoch", scoresEl, { testid: "card-scores" }),
      card("Learning rate", lrEl, { testid: "card-lr" }),
      card("Prediction distribution on validation (per epoch)", distEl,
        { wide: true, testid: "card-distribution" }),
      card("Confusion matrix", h("div", {}, h("label", { for: "cm-epoch", text: "Epoch " }),
        epochSelect, confusionEl), { testid: "card-confusion" }),
      card("Warnings and stop reason", warningsEl, { testid: "card-warnings" }),
      card("State history", h("div", { class: "scroll-x" }, h("table", { class: "compact" },
        h("thead", {}, h("tr", {}, ["From", "To", "Reason", "When"].map((t) => h("th", { text: t })))),
        transitionsEl)), { testid: "card-transitions" }),
      card("Checkpoints", h("div", { class: "scroll-x" }, h("table", { class: "compact" },
        h("thead", {}, h("tr", {}, ["Name", "Epoch", "Size", "sha256", ""].map((t) => h("th",
          { text: t })))), checkpointsEl)), { testid: "card-checkpoints" }),
      card("Test split (best checkpoint)", testEl, { testid: "card-test" }),
      card("Configuration", configEl, { wide: true, testid: "card-config" })));

  const charts = {
    stepLoss: new LineChart(stepLossEl, { xLabel: "step", series: [
      { label: "train loss", color: COLORS.train }] }),
    epochLoss: new LineChart(epochLossEl, { xLabel: "epoch", points: true, series: [
      { label: "validation loss", color: COLORS.val },
      { label: "train loss (epoch)", color: COLORS.train }] }),
    scores: new LineChart(scoresEl, { xLabel: "epoch", points: true, series: [
      { label: "F1 (vulnerable)", color: COLORS.f1 }, { label: "accuracy", color: COLORS.accuracy },
      { label: "MCC", color: COLORS.mcc }, { label: "ROC-AUC", color: COLORS.roc }] }),
    lr: new LineChart(lrEl, { xLabel: "step", series: [
      { label: "learning rate", color: COLORS.lr }] }),
  };

  // --- data -------------------------------------------------------------------------------
  function putEpoch(record) {
    state.epochs.set(record.epoch, record);
    const known = record.replayed ? new Set() : (state.warnings.get(record.epoch) || new Set());
    for (const w of record.warnings || []) known.add(w);
    state.warnings.set(record.epoch, known);
  }

  function onEvent({ kind, payload }) {
    if (kind === "epoch") putEpoch(payload);
    else if (kind === "step") state.steps.set(payload.step, payload);
    else if (kind === "warning" && payload.source === "tracker") {
      state.trackerNotes.add(payload.message); // not a collapse warning: no chart marker
    } else if (kind === "warning") {
      const known = state.warnings.get(payload.epoch) || new Set();
      known.add(payload.message);
      state.warnings.set(payload.epoch, known);
    } else if (kind === "evaluation" || kind === "rollback") {
      // a mid-epoch evaluation's warnings, and the guard's rollbacks, join the epoch's list
      const known = state.warnings.get(payload.epoch) || new Set();
      if (kind === "rollback") {
        known.add(`rollback ${payload.rollback}/${payload.max_rollbacks} at step ${payload.step}: `
          + `${payload.reason}; back to epoch ${payload.to_epoch} (step ${payload.to_step}), `
          + `LR x${payload.lr_factor}`);
      } else {
        for (const w of payload.warnings || []) known.add(`step ${payload.step}: ${w}`);
      }
      state.warnings.set(payload.epoch, known);
    } else if (kind === "test") state.test = payload;
    else if (kind === "checkpoint") refreshCheckpoints();
    else if (kind === "status") {
      if (state.job) state.job.status = payload.status;
      refreshJob();
      if (TERMINAL.has(payload.status)) refreshCheckpoints();
    }
    scheduleRender();
  }

  async function refreshJob() {
    try {
      const job = await api(`/v1/jobs/${jobId}`);
      if (stopped) return;
      state.job = job;
      if (job.test_metrics) state.test = job.test_metrics;
      scheduleRender();
    } catch (err) {
      if (!stopped) clear(notes).append(message("error", err instanceof ApiError ? err.describe()
        : err.message));
    }
  }

  async function refreshCheckpoints() {
    try {
      const list = await api(`/v1/jobs/${jobId}/checkpoints`);
      if (stopped) return;
      state.checkpoints = list.items;
      scheduleRender();
    } catch { /* shown on the next successful refresh */ }
  }

  function poll() {
    clearTimeout(pollTimer);
    if (stopped) return;
    if (state.job && TERMINAL.has(state.job.status)) return;
    pollTimer = setTimeout(async () => { await refreshJob(); poll(); }, JOB_POLL_MS);
  }

  async function cancel() {
    cancelButton.disabled = true;
    try {
      state.job = await api(`/v1/jobs/${jobId}/cancel`, { method: "POST" });
      scheduleRender();
    } catch (err) {
      clear(notes).append(message("error", err instanceof ApiError ? err.describe() : err.message));
    } finally {
      cancelButton.disabled = false;
    }
  }

  async function downloadReport() {
    try {
      await downloadWithKey(state.reportPath, `job-${jobId}-report.png`);
    } catch (err) {
      clear(notes).append(message("error", err instanceof ApiError ? err.describe() : err.message));
    }
  }

  async function download(checkpoint) {
    const mark = (fields) => {
      state.downloads.set(checkpoint.name, { sha256: checkpoint.sha256, ...fields });
      scheduleRender();
    };
    mark({ text: "downloading …", busy: true });
    try {
      const { blob } = await downloadWithKey(
        `/v1/jobs/${jobId}/checkpoints/${checkpoint.name}/download`,
        `job-${jobId}-${checkpoint.name}.tar.gz`);
      const digest = await sha256Hex(blob);
      mark({
        text: digest === null ? `${fmt.bytes(blob.size)} saved`
          : digest === checkpoint.sha256 ? "✓ sha256 matches" : "✗ sha256 differs from the listing",
        verified: digest === null ? undefined : String(digest === checkpoint.sha256),
      });
    } catch (err) {
      mark({ text: err instanceof ApiError ? err.describe() : err.message });
    }
  }

  // --- rendering --------------------------------------------------------------------------
  function scheduleRender() {
    if (renderTimer === null) renderTimer = setTimeout(() => { renderTimer = null; render(); }, 80);
  }

  function stopInfo(job) {
    if (!job || !TERMINAL.has(job.status)) return null;
    const last = Math.max(0, ...state.epochs.keys());
    return { epoch: last || null, status: job.status, message: job.outcome_message,
      ok: OK_ENDINGS.has(job.status) };
  }

  function renderHeader(job) {
    clear(header).append(
      h("h1", {}, job.name || "Job", " ", statusBadge(job.status)),
      h("div", { class: "muted mono", text: job.id }),
      h("div", { class: "actions" }, live, reportButton, cancelButton));
    cancelButton.hidden = TERMINAL.has(job.status) || job.cancel_requested;
    reportButton.hidden = !state.reportPath;
    const p = job.progress;
    const steps = p.total_steps ? `, step ${p.step} of ${p.total_steps}` : "";
    const best = job.best_metric === null ? "–"
      : `${job.selection_metric} ${fmt.num(job.best_metric)} at epoch ${job.best_epoch}`;
    const items = [
      ["Progress", h("span", {}, progressBar(p.percent),
        ` ${p.percent.toFixed(0)} % (epoch ${p.epoch} of ${p.epochs}${steps})`)],
      ["ETA", job.status === "running" ? fmt.duration(job.eta_s) : "–"],
      ["Best", best],
      ["Outcome", job.outcome_message || (TERMINAL.has(job.status) ? job.status : "–")],
      ["Attempts", String(job.attempts)],
      ["Created", fmt.date(job.created_at)],
      ["Started", fmt.date(job.started_at)],
      ["Finished", fmt.date(job.finished_at)],
    ];
    clear(summary).append(...items.flatMap(([k, v]) => [h("dt", { text: k }),
      h("dd", { "data-testid": `summary-${k.toLowerCase()}` }, v)]));
    clear(notes);
    if (job.cancel_requested && !TERMINAL.has(job.status)) {
      notes.append(message("info", "Cancel requested: the worker stops after its current step."));
    }
    for (const w of job.warnings || []) notes.append(message("warn", `At submit: ${w}`));
    for (const n of state.trackerNotes) notes.append(message("warn", n));
  }

  function render() {
    if (stopped) return;
    const job = state.job;
    live.textContent = { connecting: "connecting …", live: "● live", reconnecting:
      "reconnecting …", finished: "finished", error: "stream error" }[state.connection]
      || state.connection;
    live.dataset.state = state.connection;
    if (job) renderHeader(job);

    const [stepXs, [stepLoss, stepLr]] = columns(state.steps, [(s) => s.train_loss, (s) => s.lr]);
    charts.stepLoss.setData(stepXs, [stepLoss]);
    const [epochXs, epochYs] = columns(state.epochs, [(e) => e.val_loss, (e) => e.train_loss,
      (e) => e.f1, (e) => e.accuracy, (e) => e.mcc, (e) => e.roc_auc, (e) => e.lr]);
    charts.epochLoss.setData(epochXs, epochYs.slice(0, 2));
    charts.scores.setData(epochXs, epochYs.slice(2, 6));
    if (stepXs.length) charts.lr.setData(stepXs, [stepLr]);
    else if (epochXs.length) charts.lr.setData(epochXs, [epochYs[6]]);

    const stop = stopInfo(job);
    const markers = [];
    for (const [epoch, messages] of state.warnings) {
      if (messages.size) markers.push({ x: epoch, color: COLORS.warn, dash: true, label: "⚠" });
    }
    if (stop && stop.epoch) {
      markers.push({ x: stop.epoch, color: stop.ok ? COLORS.ok : COLORS.stop,
        label: stop.status.replace(/_/g, " ") });
    }
    charts.epochLoss.setMarkers(markers);
    charts.scores.setMarkers(markers);

    const epochs = [...state.epochs.values()].sort((a, b) => a.epoch - b.epoch);
    const config = job ? job.config : {};
    const warnings = new Map([...state.warnings].map(([e, s]) => [e, [...s]]));
    renderDistribution(distEl, { epochs, warnings, stop,
      ratios: { warn: config.collapse_warn_ratio, stop: config.collapse_stop_ratio } });

    // confusion matrix: the epoch picked, else the best, else the latest
    const epochNumbers = epochs.map((e) => e.epoch);
    if (!state.pickedEpoch || !epochNumbers.includes(state.selectedEpoch)) {
      state.selectedEpoch = job && epochNumbers.includes(job.best_epoch) ? job.best_epoch
        : epochNumbers[epochNumbers.length - 1] ?? null;
    }
    const labels = epochNumbers.map((e) => `${e}${job && job.best_epoch === e ? " (best)" : ""}`);
    if ([...epochSelect.options].map((o) => o.text).join() !== labels.join()) {
      clear(epochSelect).append(...epochNumbers.map((e, i) => h("option", { value: String(e),
        text: labels[i] })));
    }
    if (state.selectedEpoch !== null) epochSelect.value = String(state.selectedEpoch);
    renderConfusion(confusionEl, state.epochs.get(state.selectedEpoch));

    clear(warningsEl);
    for (const [epoch, messages] of [...warnings].sort((a, b) => a[0] - b[0])) {
      for (const m of messages) {
        warningsEl.append(h("li", { class: "warn", dataset: { epoch: String(epoch) } },
          h("strong", { text: `epoch ${epoch}: ` }), m));
      }
    }
    if (stop) {
      warningsEl.append(h("li", { class: stop.ok ? "ok" : "bad", "data-testid": "outcome" },
        h("strong", { text: `${stop.status.replace(/_/g, " ")}: ` }),
        stop.message || "no message"));
    }
    if (!warningsEl.childNodes.length) {
      warningsEl.append(h("li", { class: "muted", text: "No warnings so far." }));
    }

    if (job) {
      clear(transitionsEl).append(...job.transitions.map((t) => h("tr", {},
        h("td", { text: t.from_status || "–" }), h("td", {}, statusBadge(t.to_status)),
        h("td", { text: t.reason }), h("td", { text: fmt.date(t.created_at) }))));
      configEl.textContent = JSON.stringify({ datasets: job.datasets, config: job.config,
        max_runtime_s: job.max_runtime_s }, null, 2);
    }

    clear(checkpointsEl);
    for (const c of state.checkpoints) {
      let done = state.downloads.get(c.name);
      if (done && done.sha256 !== c.sha256) { // re-published since: the old outcome is stale
        state.downloads.delete(c.name);
        done = undefined;
      }
      const status = h("small", { class: "dl-status", "data-testid": `download-status-${c.name}`,
        text: done ? done.text : "" });
      if (done && done.verified !== undefined) status.dataset.verified = done.verified;
      const button = h("button", { type: "button", class: "secondary", text: "Download",
        "data-testid": `download-${c.name}`, disabled: Boolean(done && done.busy) });
      button.addEventListener("click", () => download(c));
      checkpointsEl.append(h("tr", { dataset: { name: c.name } },
        h("td", { text: c.name }),
        h("td", { text: c.step ? `${c.epoch} (step ${c.step})` : String(c.epoch) }),
        h("td", { text: fmt.bytes(c.size_bytes), title: `${c.size_bytes} bytes` }),
        h("td", { class: "mono sha", "data-testid": `sha256-${c.name}`, text: c.sha256 }),
        h("td", {}, button, " ", status)));
    }
    if (!state.checkpoints.length) {
      checkpointsEl.append(h("tr", {}, h("td", { colspan: "5", class: "empty",
        text: "No checkpoint yet." })));
    }

    clear(testEl);
    if (state.test) {
      const t = state.test;
      testEl.append(h("dl", { class: "summary" }, [["Best epoch", t.best_epoch], ["F1", t.f1],
        ["Accuracy", t.accuracy], ["MCC", t.mcc], ["ROC-AUC", t.roc_auc], ["Loss", t.loss]]
        .flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: fmt.num(v) })])));
      renderConfusion(testEl.appendChild(h("div")), { ...t, epoch: "test" });
    } else {
      testEl.append(h("p", { class: "empty", text: "Tested once the run ends (needs a test "
        + "split)." }));
    }
  }

  // --- start ------------------------------------------------------------------------------
  (async () => {
    try {
      const [job, epochs, steps] = await Promise.all([api(`/v1/jobs/${jobId}`),
        allMetrics(jobId), allSteps(jobId, 0)]);
      if (stopped) return;
      state.job = job;
      if (job.test_metrics) state.test = job.test_metrics;
      epochs.forEach(putEpoch);
      for (const s of steps) state.steps.set(s.step, s);
      render();
    } catch (err) {
      clear(notes).append(message("error", err instanceof ApiError ? err.describe()
        : err.message));
      if (err instanceof ApiError && err.status === 404) return;
    }
    refreshCheckpoints();
    openapi().then((doc) => {
      const path = "/v1/jobs/{job_id}/report.png";
      if (doc.paths[path] && doc.paths[path].get) {
        state.reportPath = path.replace("{job_id}", jobId);
        scheduleRender();
      }
    }).catch(() => {});
    if (stopped) return;
    stream = followEvents(jobId, {
      onEvent,
      onState: (s) => { state.connection = s; scheduleRender(); },
    });
    poll();
  })();

  return () => {
    stopped = true;
    clearTimeout(pollTimer);
    clearTimeout(renderTimer);
    if (stream) stream.close();
    Object.values(charts).forEach((c) => c.destroy());
  };
}
