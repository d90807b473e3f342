// The dashboard's entry point: sign-in, and a hash router over three views
// (#/jobs, #/new, #/jobs/<id>). Each view returns a cleanup function that stops its polling
// and streams when the view is left.

import { api, ApiError, clearKey, getKey, setKey } from "./api.js";
import { clear, h, message } from "./dom.js";
import { jobView } from "./views/job.js";
import { jobsView } from "./views/jobs.js";
import { newJobView } from "./views/newjob.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
let cleanup = null;
let signInNote = null;

function signInView() {
  nav.hidden = true;
  const input = h("input", { type: "password", id: "api-key", name: "api-key",
    autocomplete: "off", required: true, placeholder: "sg_…", "data-testid": "api-key" });
  const status = h("div");
  const form = h("form", { class: "card sign-in", "data-testid": "sign-in",
    onsubmit: async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      setKey(key);
      clear(status);
      try {
        await api("/v1/jobs?limit=1");
        input.value = "";
        if (!location.hash || location.hash === "#/" || location.hash === "#/sign-in") {
          location.hash = "#/jobs";
        }
        route();
      } catch (err) {
        clearKey();
        status.append(message("error", err instanceof ApiError ? err.describe()
          : `Could not reach the API: ${err.message}`));
      }
    } },
  h("h1", { text: "Sign in" }),
  h("p", { text: "Paste an API key (streamguard keys create --tenant NAME prints one). It is "
    + "kept in this browser tab only and sent as an Authorization header, never in a URL." }),
  h("label", { for: "api-key", text: "API key" }), input,
  h("button", { type: "submit", text: "Sign in", "data-testid": "sign-in-submit" }), status);
  if (signInNote) {
    form.insertBefore(message("error", signInNote), status);
    signInNote = null;
  }
  return form;
}

function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  clear(view);
  if (!getKey()) {
    view.append(signInView());
    input_focus();
    return;
  }
  nav.hidden = false;
  const hash = location.hash || "#/jobs";
  const jobMatch = /^#\/jobs\/([0-9a-f]{32})$/.exec(hash);
  for (const a of nav.querySelectorAll("a")) {
    a.classList.toggle("active", hash.startsWith(a.getAttribute("href")) && !jobMatch);
  }
  let result;
  if (jobMatch) result = jobView(view, jobMatch[1]);
  else if (hash === "#/new") result = newJobView(view);
  else result = jobsView(view);
  cleanup = typeof result === "function" ? result : null;
}

function input_focus() {
  const input = document.getElementById("api-key");
  if (input) input.focus();
}

document.getElementById("sign-out").addEventListener("click", () => {
  clearKey();
  route();
});

window.addEventListener("sg:unauthorized", () => {
  if (!getKey()) return;
  clearKey();
  signInNote = "The API refused the key (401). Sign in again.";
  route();
});

window.addEventListener("hashchange", route);
route();
