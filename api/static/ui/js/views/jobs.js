// The jobs list: name, status, progress and ETA, best metric, outcome; filter by status;
// refreshed every few seconds while shown (one small request: the first page).

import { api, ApiError, openapi, query } from "../api.js";
import { clear, fmt, h, message, progressBar, statusBadge, TERMINAL } from "../dom.js";

const POLL_MS = 3000;
const FALLBACK_STATUSES = ["queued", "running", ...TERMINAL];

function row(job) {
  const p = job.progress;
  const steps = p.total_steps ? ` · step ${p.step}/${p.total_steps}` : "";
  return h("tr", { dataset: { jobId: job.id, status: job.status } },
    h("td", { "data-label": "Name" }, h("a", { href: `#/jobs/${job.id}`, text: job.name || job.id,
      "data-testid": "job-link" }), h("div", { class: "muted mono", text: job.id.slice(0, 8) })),
    h("td", { "data-label": "Status" }, statusBadge(job.status),
      job.cancel_requested && !TERMINAL.has(job.status) ? h("small", { text: " cancelling" }) : null),
    h("td", { "data-label": "Progress" }, progressBar(p.percent),
      h("small", { text: ` ${p.percent.toFixed(0)} % · epoch ${p.epoch}/${p.epochs}${steps}` })),
    h("td", { "data-label": "ETA", text: job.status === "running" ? fmt.duration(job.eta_s) : "–" }),
    h("td", { "data-label": "Best", "data-testid": "best-metric" },
      job.best_metric === null ? "–"
        : `${job.selection_metric} ${fmt.num(job.best_metric)} (epoch ${job.best_epoch})`),
    h("td", { "data-label": "Outcome", class: "outcome", text: job.outcome_message || "–" }),
    h("td", { "data-label": "Created", text: fmt.date(job.created_at) }));
}

export function jobsView(root) {
  let stopped = false;
  let timer = null;
  let status = "";
  let extra = []; // older pages the user asked for ("Load more"); not re-polled
  let nextCursor = null;

  const select = h("select", { id: "status-filter", "data-testid": "status-filter",
    onchange: () => { status = select.value; extra = []; refresh(); } },
  h("option", { value: "", text: "all statuses" }));
  openapi().then((doc) => doc.components.schemas.JobStatus.enum)
    .catch(() => FALLBACK_STATUSES)
    .then((statuses) => select.append(...statuses.map((s) => h("option", { value: s,
      text: s.replace(/_/g, " ") }))));

  const body = h("tbody", { "data-testid": "jobs-body" });
  const note = h("div");
  const more = h("button", { type: "button", class: "secondary", text: "Load more", hidden: true,
    onclick: async () => {
      if (!nextCursor) return;
      const page = await api(`/v1/jobs${query({ status, cursor: nextCursor, limit: 50 })}`);
      extra.push(...page.items);
      nextCursor = page.next_cursor;
      refresh();
    } });

  root.append(h("section", { class: "card" },
    h("div", { class: "toolbar" }, h("h1", { text: "Jobs" }),
      h("label", { for: "status-filter", text: "Status " }), select,
      h("a", { class: "button", href: "#/new", text: "New job" })),
    note,
    h("div", { class: "scroll-x" }, h("table", { class: "jobs responsive", "data-testid": "jobs" },
      h("thead", {}, h("tr", {}, ["Name", "Status", "Progress", "ETA", "Best", "Outcome",
        "Created"].map((t) => h("th", { text: t })))), body)),
    more));

  async function refresh() {
    clearTimeout(timer);
    try {
      const page = await api(`/v1/jobs${query({ status, limit: 50 })}`);
      if (stopped) return;
      if (!extra.length) nextCursor = page.next_cursor;
      const seen = new Set(page.items.map((j) => j.id));
      const jobs = [...page.items, ...extra.filter((j) => !seen.has(j.id))];
      clear(note);
      clear(body).append(...jobs.map(row));
      if (!jobs.length) {
        body.append(h("tr", {}, h("td", { colspan: "7", class: "empty",
          text: status ? `No ${status.replace(/_/g, " ")} jobs.` : "No jobs yet." })));
      }
      more.hidden = !nextCursor;
    } catch (err) {
      if (stopped) return;
      clear(note).append(message("error", err instanceof ApiError ? err.describe()
        : `Could not load the jobs: ${err.message}`));
    }
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
