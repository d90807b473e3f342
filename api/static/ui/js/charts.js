// Charts: line charts with the vendored uPlot (window.uPlot), the prediction distribution and
// the confusion matrix as plain SVG/HTML. Every chart is redrawn from keyed data (epoch or
// step -> record), so a replayed epoch replaces its point instead of adding one.

import { clear, fmt, h, svg } from "./dom.js";

export const COLORS = {
  safe: "#2563eb", vulnerable: "#ea580c", actual: "#94a3b8", warn: "#d97706", stop: "#dc2626",
  ok: "#16a34a", f1: "#7c3aed", accuracy: "#0891b2", mcc: "#db2777", roc: "#65a30d",
  train: "#2563eb", val: "#ea580c", lr: "#0f766e",
};

const INTEGER_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000,
  10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000];

/** A short y-axis label: 3 significant digits, an exponent below 1e-3 ("7.5e-4"). */
function tick(t) {
  if (t === null || t === undefined) return "";
  if (t !== 0 && Math.abs(t) < 1e-3) return t.toExponential(1);
  return String(Number(t.toPrecision(3)));
}

/** Vertical lines at x values (epoch markers): [{x, color, label, dash}]. */
function markersPlugin(getMarkers) {
  return {
    hooks: {
      draw: [(u) => {
        const { ctx } = u;
        const { top, height, left, width } = u.bbox;
        ctx.save();
        for (const m of getMarkers()) {
          const x = Math.round(u.valToPos(m.x, "x", true));
          if (x < left - 1 || x > left + width + 1) continue;
          ctx.strokeStyle = m.color;
          ctx.lineWidth = 1.5 * devicePixelRatio;
          ctx.setLineDash(m.dash ? [4 * devicePixelRatio, 3 * devicePixelRatio] : []);
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
          if (m.label) {
            ctx.fillStyle = m.color;
            ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
            ctx.textAlign = x > left + width * 0.6 ? "right" : "left";
            const dx = ctx.textAlign === "right" ? -4 : 4;
            ctx.fillText(m.label, x + dx * devicePixelRatio, top + 12 * devicePixelRatio);
          }
        }
        ctx.restore();
      }],
    },
  };
}

/**
 * A uPlot line chart in `container`. series: [{label, color, scale?}]; setData(xs, ys[]).
 * `container.dataset.points` holds how many x values are drawn (for tests and people).
 */
export class LineChart {
  constructor(container, { xLabel, series, yLog = false, points = false, height = 220 }) {
    this.container = container;
    this.series = series;
    this.markers = [];
    this.data = [[], ...series.map(() => [])];
    this.height = height;
    this.options = {
      height,
      width: 300,
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: false }, y: yLog ? { distr: 3 } : {} },
      axes: [
        // epochs and steps are whole numbers: no 1.5-epoch ticks
        { label: xLabel, labelSize: 18, size: 36, incrs: INTEGER_INCRS,
          values: (u, ticks) => ticks.map((t) => fmt.num(t)) },
        { size: 64, values: (u, ticks) => ticks.map(tick) },
      ],
      series: [
        { label: xLabel, value: (u, v) => (v === null || v === undefined ? "–" : fmt.num(v)) },
        ...series.map((s) => ({
          label: s.label, stroke: s.color, width: 2, spanGaps: true,
          points: { show: points, size: 6, fill: s.color },
          value: (u, v) => (v === null || v === undefined ? "–" : fmt.num(v, 4)),
        })),
      ],
      plugins: [markersPlugin(() => this.markers)],
    };
    this.plot = null;
    this.observer = new ResizeObserver(() => this.resize());
    this.observer.observe(container);
  }

  width() {
    return Math.max(240, Math.floor(this.container.clientWidth));
  }

  resize() {
    if (this.plot && this.container.clientWidth) {
      this.plot.setSize({ width: this.width(), height: this.height });
    }
  }

  setMarkers(markers) {
    this.markers = markers;
    if (this.plot) this.plot.redraw(false, false);
  }

  setData(xs, ys) {
    this.data = [xs, ...ys];
    this.container.dataset.points = String(xs.length);
    if (!xs.length) return;
    if (!this.plot) {
      clear(this.container);
      this.plot = new window.uPlot({ ...this.options, width: this.width() }, this.data,
        this.container);
    } else {
      this.plot.setData(this.data);
    }
  }

  destroy() {
    this.observer.disconnect();
    if (this.plot) this.plot.destroy();
  }
}

/** x values and aligned y arrays from a Map keyed by x (sorted; missing values as null). */
export function columns(map, getters) {
  const xs = [...map.keys()].sort((a, b) => a - b);
  return [xs, getters.map((get) => xs.map((x) => {
    const v = get(map.get(x));
    return v === undefined || v === null || !Number.isFinite(v) ? null : v;
  }))];
}

/** The y-axis top: 4 × a round whole step, so that the quarter ticks are round counts. */
function niceMax(value) {
  const quarter = Math.max(1, value / 4);
  const p = 10 ** Math.floor(Math.log10(quarter));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5, 8, 10]) {
    if (m * p >= quarter && Number.isInteger(m * p)) return 4 * m * p;
  }
  return 40 * p;
}

const CLASSES = [
  { key: "safe", label: "safe", predicted: "predicted_safe", actual: "actual_safe" },
  { key: "vulnerable", label: "vulnerable", predicted: "predicted_vulnerable",
    actual: "actual_vulnerable" },
];

/**
 * The validation prediction distribution per epoch: for each class, the actual count (grey)
 * beside the predicted count (colour), with the collapse guard's warn and stop lines
 * (ratio × that class's actual count), a ⚠ over every epoch with warnings, and the stop
 * reason at the epoch the job ended.
 *
 * epochs: sorted EpochMetrics; warnings: Map epoch -> [messages];
 * stop: {epoch, status, message, ok} or null; ratios: {warn, stop}.
 */
export function renderDistribution(container, { epochs, warnings, stop, ratios }) {
  clear(container);
  container.dataset.epochs = String(epochs.length);
  if (!epochs.length) {
    container.append(h("p", { class: "empty", text: "No evaluated epoch yet." }));
    return;
  }
  const bar = 16;
  const gap = 4;
  const classGap = 14;
  const group = 2 * (2 * bar + gap) + classGap + 26;
  const margin = { left: 52, right: 16, top: 48, bottom: 34 };
  const plotH = 200;
  const width = margin.left + margin.right + group * epochs.length;
  const height = margin.top + plotH + margin.bottom;
  const yMax = niceMax(Math.max(...epochs.flatMap((e) => {
    const d = e.prediction_distribution;
    return [d.predicted_safe, d.predicted_vulnerable, d.actual_safe, d.actual_vulnerable];
  })));
  const y = (v) => margin.top + plotH - (v / yMax) * plotH;

  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "dist-chart",
    role: "img", "aria-label": "Predicted against actual count per class and epoch",
    "data-testid": "dist-svg" });
  // 1.3 px per unit where there is room; never narrower than 1 px per unit up to 640 px (a
  // long run scrolls sideways on a phone instead of shrinking to unreadable bars)
  root.style.width = `${Math.round(width * 1.3)}px`;
  root.style.maxWidth = "100%";
  root.style.minWidth = `${Math.min(width, 640)}px`;

  for (let i = 0; i <= 4; i += 1) { // grid and y axis
    const v = (yMax * i) / 4;
    root.append(svg("line", { x1: margin.left, x2: width - margin.right, y1: y(v), y2: y(v),
      class: "gridline" }));
    root.append(svg("text", { x: margin.left - 6, y: y(v) + 4, class: "tick",
      "text-anchor": "end", text: fmt.num(Math.round(v)) }));
  }

  epochs.forEach((record, i) => {
    const d = record.prediction_distribution;
    const x0 = margin.left + i * group + 13;
    const g = svg("g", { class: "epoch", "data-epoch": record.epoch });
    CLASSES.forEach((cls, c) => {
      const cx = x0 + c * (2 * bar + gap + classGap);
      const actual = d[cls.actual];
      const predicted = d[cls.predicted];
      const title = `epoch ${record.epoch}, ${cls.label}: predicted ${predicted} of ${actual} `
        + `actual (${actual ? fmt.pct(predicted / actual, 0) : "–"})`;
      g.append(svg("rect", { x: cx, y: y(actual), width: bar, height: y(0) - y(actual),
        class: "bar actual", "data-class": cls.key, "data-kind": "actual", "data-value": actual },
      svg("title", { text: title })));
      g.append(svg("rect", { x: cx + bar + gap, y: y(predicted), width: bar,
        height: y(0) - y(predicted), class: `bar predicted ${cls.key}`, "data-class": cls.key,
        "data-kind": "predicted", "data-value": predicted }, svg("title", { text: title })));
      g.append(svg("text", { x: cx + bar + gap + bar / 2, y: y(predicted) - 3,
        class: `count ${predicted === 0 ? "zero" : ""}`, "text-anchor": "middle",
        text: fmt.num(predicted) }));
      for (const [kind, ratio] of [["warn", ratios.warn], ["stop", ratios.stop]]) {
        if (ratio === null || ratio === undefined) continue;
        const ty = y(ratio * actual);
        g.append(svg("line", { x1: cx - 3, x2: cx + 2 * bar + gap + 3, y1: ty, y2: ty,
          class: `threshold ${kind}`, "data-class": cls.key, "data-kind": kind,
          "data-value": ratio * actual },
        svg("title", { text: `${kind} line: ${ratio} × ${actual} actual ${cls.label} = `
          + `${fmt.num(ratio * actual, 1)}` })));
      }
    });
    const center = x0 + (group - 26) / 2;
    g.append(svg("text", { x: center, y: height - margin.bottom + 16, class: "tick",
      "text-anchor": "middle", text: `epoch ${record.epoch}${record.replayed ? " ↻" : ""}` }));
    const messages = warnings.get(record.epoch) || [];
    if (messages.length) {
      g.append(svg("text", { x: center, y: margin.top - 18, class: "warn-marker",
        "text-anchor": "middle", "data-epoch": record.epoch, "data-testid": "warn-marker",
        text: "⚠" }, svg("title", { text: messages.join("\n") })));
    }
    root.append(g);
  });

  if (stop) {
    const index = epochs.findIndex((e) => e.epoch === stop.epoch);
    const at = index < 0 ? epochs.length : index + 1;
    const x = margin.left + at * group - 6;
    root.append(svg("line", { x1: x, x2: x, y1: 4, y2: margin.top + plotH,
      class: `stop-line ${stop.ok ? "ok" : "bad"}` }));
    root.append(svg("text", { x: x - 4, y: 14, class: `stop-label ${stop.ok
      ? "ok" : "bad"}`, "text-anchor": "end", "data-testid": "stop-marker", "data-status": stop.status,
    text: stop.status.replace(/_/g, " ") }, svg("title", { text: stop.message || stop.status })));
  }
  container.append(h("div", { class: "scroll-x" }, root));
  container.append(h("ul", { class: "legend" },
    h("li", {}, h("span", { class: "swatch actual" }), "actual count"),
    h("li", {}, h("span", { class: "swatch safe" }), "predicted safe"),
    h("li", {}, h("span", { class: "swatch vulnerable" }), "predicted vulnerable"),
    h("li", {}, h("span", { class: "swatch line warn" }), `warn: ${ratios.warn} × actual`),
    h("li", {}, h("span", { class: "swatch line stop" }), `stop: ${ratios.stop} × actual`),
    h("li", {}, "⚠ collapse-guard warning")));
  if (stop) {
    container.append(h("p", { class: `stop-reason ${stop.ok ? "ok" : "bad"}`,
      "data-testid": "stop-reason" },
    h("strong", { text: `${stop.ok ? "Ended" : "Stopped"} after epoch ${stop.epoch ?? "–"}: `
      + `${stop.status.replace(/_/g, " ")}` }), stop.message ? ` — ${stop.message}` : ""));
  }
}

/** The confusion matrix of one epoch, counts with the share of each actual class. */
export function renderConfusion(container, record) {
  clear(container);
  if (!record) {
    container.append(h("p", { class: "empty", text: "No evaluated epoch yet." }));
    return;
  }
  const cm = record.confusion_matrix;
  const rows = [["safe", cm.true_negative, cm.false_positive],
    ["vulnerable", cm.false_negative, cm.true_positive]];
  const table = h("table", { class: "confusion", "data-testid": "confusion",
    "data-epoch": record.epoch },
  h("thead", {}, h("tr", {}, h("th", { text: "actual ↓ / predicted →" }),
    h("th", { text: "safe" }), h("th", { text: "vulnerable" }))),
  h("tbody", {}, rows.map(([label, a, b]) => {
    const total = a + b;
    return h("tr", {}, h("th", { text: label }), [a, b].map((n, j) => {
      const share = total ? n / total : 0;
      const correct = (label === "safe") === (j === 0);
      const cell = h("td", { class: correct ? "hit" : "miss" },
        h("strong", { text: fmt.num(n) }), h("small", { text: ` ${fmt.pct(share, 0)}` }));
      cell.style.setProperty("--share", String(share));
      return cell;
    }));
  })));
  container.append(table);
}
