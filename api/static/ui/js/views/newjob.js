// New job: upload or pick the datasets (with their inspection), and a config form generated
// from the app's own OpenAPI document (JobCreate -> JobConfig), prefilled with its defaults.
// The browser does not validate (`novalidate`): the API's messages are shown beside the
// fields they name (`error.details[].field`, a dotted path such as `config.lr`).

import { api, ApiError, openapi, query } from "../api.js";
import { clear, fmt, h, message } from "../dom.js";

const ROLES = [["train", "Training split", true], ["val", "Validation split", true],
  ["test", "Test split (optional)", false]];

function resolve(doc, schema) {
  let s = schema || {};
  if (s.$ref) s = { ...doc.components.schemas[s.$ref.split("/").pop()], ...s, $ref: undefined };
  if (s.allOf && s.allOf.length === 1) s = { ...resolve(doc, s.allOf[0]), ...s, allOf: undefined };
  if (s.anyOf) {
    const rest = s.anyOf.filter((v) => v.type !== "null");
    if (rest.length === 1) {
      return { ...resolve(doc, rest[0]), ...s, anyOf: undefined,
        nullable: rest.length < s.anyOf.length };
    }
  }
  return s;
}

function rangeText(s) {
  const lo = s.exclusiveMinimum !== undefined ? `> ${s.exclusiveMinimum}`
    : s.minimum !== undefined ? `≥ ${s.minimum}` : null;
  const hi = s.exclusiveMaximum !== undefined ? `< ${s.exclusiveMaximum}`
    : s.maximum !== undefined ? `≤ ${s.maximum}` : null;
  return [lo, hi].filter(Boolean).join(", ");
}

/** A form control for one schema property; returns {wrap, read()} (read: value or undefined). */
function fieldFor(doc, path, name, rawSchema, errorSlots) {
  const s = resolve(doc, rawSchema);
  const id = `f-${path.replace(/\./g, "-")}`;
  // The field's own name, as the API's messages and the CLI flags spell it.
  const title = name;
  let input;
  let read;
  const hasDefault = Object.prototype.hasOwnProperty.call(s, "default");
  if (s.enum) {
    input = h("select", { id, name: path },
      s.nullable ? h("option", { value: "", text: "(default)" }) : null,
      s.enum.map((v) => h("option", { value: v, text: String(v), selected: v === s.default })));
    read = () => (input.value === "" ? undefined : input.value);
  } else if (s.type === "array" && resolve(doc, s.items).enum) {
    // a list of choices (`trackers`): a multiple select, nothing chosen = the default
    const choices = resolve(doc, s.items).enum;
    input = h("select", { id, name: path, multiple: true, size: String(choices.length) },
      choices.map((v) => h("option", { value: v, text: String(v),
        selected: (s.default || []).includes(v) })));
    read = () => {
      const chosen = [...input.selectedOptions].map((o) => o.value);
      return chosen.length ? chosen : undefined;
    };
  } else if (s.type === "boolean") {
    input = h("input", { id, name: path, type: "checkbox", checked: Boolean(s.default) });
    read = () => input.checked;
  } else if (s.type === "integer" || s.type === "number") {
    input = h("input", { id, name: path, type: "text", inputmode: s.type === "integer"
      ? "numeric" : "decimal", autocomplete: "off",
    value: hasDefault && s.default !== null ? String(s.default) : "",
    placeholder: s.nullable ? "default" : "" });
    read = () => {
      const text = input.value.trim();
      if (text === "") return undefined;
      const n = Number(text);
      return Number.isFinite(n) ? n : text; // not a number: the API says what it accepts
    };
  } else {
    input = h("input", { id, name: path, type: "text", autocomplete: "off",
      value: hasDefault && s.default !== null ? String(s.default) : "" });
    read = () => (input.value === "" ? undefined : input.value);
  }
  const hint = [s.description, rangeText(s), hasDefault ? `default ${JSON.stringify(s.default)}`
    : s.nullable ? "default: none" : null].filter(Boolean).join(" · ");
  const error = h("div", { class: "field-error", "data-field": path, role: "alert" });
  errorSlots.set(path, error);
  const wrap = h("div", { class: `field ${s.type === "boolean" ? "check" : ""}`,
    "data-field": path },
  h("label", { for: id, class: "mono", text: title }), input, h("small", { class: "hint", text: hint }), error);
  return { wrap, input, read, default: s.default };
}

function statsLine(ds) {
  const s = ds.stats;
  const chars = s.chars ? ` · length p50 ${fmt.num(s.chars.p50)}, p90 ${fmt.num(s.chars.p90)}, `
    + `max ${fmt.num(s.chars.max)} chars` : "";
  return `${fmt.num(s.rows)} rows · ${fmt.num(s.n_safe)} safe / ${fmt.num(s.n_vulnerable)} `
    + `vulnerable (${fmt.pct(s.vulnerable_fraction)}) · duplicates ${fmt.num(s.duplicates.rows)} `
    + `rows in ${fmt.num(s.duplicates.groups)} groups, ${fmt.num(s.duplicates.conflicting_groups)} `
    + `with both labels${chars}`;
}

function datasetRow(ds) {
  const s = ds.stats;
  return h("tr", { dataset: { datasetId: ds.id } },
    h("td", { "data-label": "Name", text: ds.name }),
    h("td", { "data-label": "Rows", text: fmt.num(s.rows) }),
    h("td", { "data-label": "Safe / vulnerable",
      text: `${fmt.num(s.n_safe)} / ${fmt.num(s.n_vulnerable)} (${fmt.pct(s.vulnerable_fraction)})` }),
    h("td", { "data-label": "Duplicates",
      text: `${fmt.num(s.duplicates.rows)} rows, ${fmt.num(s.duplicates.conflicting_groups)} `
        + "conflicting" }),
    h("td", { "data-label": "Length (chars)", text: s.chars
      ? `p50 ${fmt.num(s.chars.p50)} · p90 ${fmt.num(s.chars.p90)} · max ${fmt.num(s.chars.max)}`
      : "–" }),
    h("td", { "data-label": "Size", text: fmt.bytes(ds.size_bytes) }),
    h("td", { "data-label": "sha256", class: "mono", title: ds.sha256,
      text: ds.sha256.slice(0, 12) }));
}

export function newJobView(root) {
  let stopped = false;
  const errorSlots = new Map();
  let datasets = [];
  const roleSelects = {};
  const roleInfo = {};

  // --- datasets ---------------------------------------------------------------------------
  const dsBody = h("tbody", { "data-testid": "datasets-body" });
  const fileInput = h("input", { type: "file", id: "upload-file", accept: ".jsonl,.json,.txt",
    "data-testid": "upload-file" });
  const nameInput = h("input", { type: "text", id: "upload-name", placeholder: "file name",
    "data-testid": "upload-name" });
  const useAs = h("select", { id: "upload-role", "data-testid": "upload-role" },
    h("option", { value: "", text: "(just upload)" }),
    ROLES.map(([role]) => h("option", { value: role, text: role })));
  const uploadStatus = h("div", { "data-testid": "upload-status" });
  const uploadButton = h("button", { type: "submit", text: "Upload", "data-testid": "upload" });
  const uploadForm = h("form", { class: "upload", "data-testid": "upload-form",
    onsubmit: async (event) => {
      event.preventDefault();
      clear(uploadStatus);
      const file = fileInput.files[0];
      if (!file) {
        uploadStatus.append(message("error", "Choose a JSONL file first."));
        return;
      }
      const form = new FormData();
      form.append("file", file, file.name);
      if (nameInput.value.trim()) form.append("name", nameInput.value.trim());
      uploadButton.disabled = true;
      uploadStatus.append(message("info", `Uploading ${file.name} (${fmt.bytes(file.size)}) …`));
      try {
        const ds = await api("/v1/datasets", { method: "POST", form });
        await loadDatasets();
        if (useAs.value) {
          roleSelects[useAs.value].value = ds.id;
          showRole(useAs.value);
        }
        clear(uploadStatus).append(message("ok", `${ds.name}: ${statsLine(ds)}`));
        fileInput.value = "";
        nameInput.value = "";
      } catch (err) {
        clear(uploadStatus).append(message("error", err instanceof ApiError ? err.describe()
          : err.message));
        if (err instanceof ApiError && err.details.length) {
          uploadStatus.append(h("ul", { class: "details" }, err.details.map((d) => h("li", {
            text: `${d.line ? `line ${d.line}: ` : ""}${d.field ? `${d.field}: ` : ""}${d.message}`,
          }))));
        }
      } finally {
        uploadButton.disabled = false;
      }
    } },
  h("label", { for: "upload-file", text: "JSONL file ({func, target} per line)" }), fileInput,
  h("label", { for: "upload-name", text: "Name" }), nameInput,
  h("label", { for: "upload-role", text: "Use as" }), useAs, uploadButton);

  function showRole(role) {
    const ds = datasets.find((d) => d.id === roleSelects[role].value);
    clear(roleInfo[role]).append(ds ? statsLine(ds) : "");
  }

  async function loadDatasets() {
    const page = await api(`/v1/datasets${query({ limit: 200 })}`);
    if (stopped) return;
    datasets = page.items;
    clear(dsBody).append(...datasets.map(datasetRow));
    if (!datasets.length) {
      dsBody.append(h("tr", {}, h("td", { colspan: "7", class: "empty",
        text: "No datasets yet: upload a JSONL split above." })));
    }
    for (const [role] of ROLES) {
      const select = roleSelects[role];
      const current = select.value;
      clear(select).append(h("option", { value: "", text: "— choose —" }),
        ...datasets.map((d) => h("option", { value: d.id,
          text: `${d.name} · ${fmt.num(d.stats.rows)} rows · ${d.id.slice(0, 8)}` })));
      select.value = datasets.some((d) => d.id === current) ? current : "";
      showRole(role);
    }
  }

  // --- the job form -----------------------------------------------------------------------
  const general = h("div", { "data-testid": "form-error" });
  const roleFields = ROLES.map(([role, label]) => {
    const select = h("select", { id: `role-${role}`, "data-testid": `role-${role}`,
      onchange: () => showRole(role) });
    roleSelects[role] = select;
    roleInfo[role] = h("small", { class: "hint", "data-testid": `role-${role}-stats` });
    const error = h("div", { class: "field-error", "data-field": `datasets.${role}`,
      role: "alert" });
    errorSlots.set(`datasets.${role}`, error);
    return h("div", { class: "field wide", "data-field": `datasets.${role}` },
      h("label", { for: `role-${role}`, text: label }), select, roleInfo[role], error);
  });
  const datasetsError = h("div", { class: "field-error", "data-field": "datasets", role: "alert" });
  errorSlots.set("datasets", datasetsError);
  const configError = h("div", { class: "field-error", "data-field": "config", role: "alert" });
  errorSlots.set("config", configError);
  const topFields = h("div", { class: "fields" });
  const configFields = h("div", { class: "fields" });
  const submit = h("button", { type: "submit", text: "Submit job", "data-testid": "submit-job" });
  let controls = { top: [], config: [] };

  const form = h("form", { class: "card", novalidate: true, "data-testid": "job-form",
    onsubmit: async (event) => {
      event.preventDefault();
      for (const slot of errorSlots.values()) clear(slot);
      clear(general);
      const body = { datasets: {} };
      for (const [role] of ROLES) {
        if (roleSelects[role].value) body.datasets[role] = { dataset_id: roleSelects[role].value };
      }
      for (const c of controls.top) {
        const v = c.read();
        if (v !== undefined) body[c.name] = v;
      }
      body.config = {};
      for (const c of controls.config) {
        const v = c.read();
        if (v !== undefined && v !== c.default) body.config[c.name] = v;
      }
      submit.disabled = true;
      try {
        const job = await api("/v1/jobs", { method: "POST", json: body });
        location.hash = `#/jobs/${job.id}`;
      } catch (err) {
        if (!(err instanceof ApiError)) {
          general.append(message("error", `Could not submit: ${err.message}`));
          return;
        }
        showErrors(err);
      } finally {
        submit.disabled = false;
      }
    } },
  h("h2", { text: "Job" }), general, topFields,
  h("h3", { text: "Datasets" }), h("div", { class: "fields" }, roleFields), datasetsError,
  h("h3", { text: "Training config" }),
  h("p", { class: "muted", text: "Generated from the API's JobConfig schema; every value starts "
    + "at its default. Only changed values are sent." }),
  configError, configFields, submit);

  function showErrors(err) {
    const items = err.details.length ? err.details : [{ field: err.field, message: err.message }];
    const unplaced = [];
    for (const item of items) {
      const field = item.field || "";
      let best = null;
      for (const key of errorSlots.keys()) {
        if ((field === key || field.startsWith(`${key}.`)) && (!best || key.length > best.length)) {
          best = key;
        }
      }
      if (best) errorSlots.get(best).append(h("div", { text: item.message }));
      else unplaced.push(item);
    }
    general.append(message("error", err.describe()));
    if (unplaced.length) {
      general.append(h("ul", { class: "details" }, unplaced.map((d) => h("li", {
        text: `${d.field ? `${d.field}: ` : ""}${d.message}` }))));
    }
    const first = form.querySelector(".field-error:not(:empty)");
    if (first) first.scrollIntoView({ block: "center" });
  }

  root.append(h("section", { class: "card" }, h("h1", { text: "New job" }),
    h("h2", { text: "Datasets" }), uploadForm, uploadStatus,
    h("div", { class: "scroll-x" }, h("table", { class: "datasets responsive",
      "data-testid": "datasets" },
    h("thead", {}, h("tr", {}, ["Name", "Rows", "Safe / vulnerable", "Duplicates",
      "Length (chars)", "Size", "sha256"].map((t) => h("th", { text: t })))), dsBody))), form);

  Promise.all([openapi(), loadDatasets()]).then(([doc]) => {
    if (stopped) return;
    const create = doc.components.schemas.JobCreate;
    const config = resolve(doc, create.properties.config);
    controls = { top: [], config: [] };
    for (const name of ["name", "max_runtime_s"]) {
      const c = fieldFor(doc, name, name, create.properties[name], errorSlots);
      topFields.append(c.wrap);
      controls.top.push({ ...c, name });
    }
    for (const [name, schema] of Object.entries(config.properties)) {
      const c = fieldFor(doc, `config.${name}`, name, schema, errorSlots);
      configFields.append(c.wrap);
      controls.config.push({ ...c, name });
    }
  }).catch((err) => {
    general.append(message("error", err instanceof ApiError ? err.describe()
      : `Could not load the form: ${err.message}`));
  });

  return () => { stopped = true; };
}
