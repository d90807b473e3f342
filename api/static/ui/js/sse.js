// Server-Sent Events over fetch: EventSource cannot send an Authorization header, and a key
// in the URL would end up in logs and history. `SSEParser` implements the text/event-stream
// rules (https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream):
// lines end in CRLF, LF or CR (possibly split across chunks), `:` starts a comment, `data`
// lines join with "\n", and a blank line dispatches. `followEvents` reconnects with the
// `Last-Event-ID` header until the job's terminal `status` event.

import { authHeaders } from "./api.js";
import { TERMINAL } from "./dom.js";

export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.lastEventId = "";
    this.reset();
  }

  reset() {
    this.data = [];
    this.type = "";
    this.id = null;
  }

  /** Feed decoded text; complete events go to onEvent({id, event, data}). */
  feed(text) {
    this.buffer += text;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i += 1) {
      const c = this.buffer[i];
      if (c !== "\n" && c !== "\r") continue;
      if (c === "\r" && i === this.buffer.length - 1) break; // maybe CRLF split across chunks
      this.line(this.buffer.slice(start, i));
      if (c === "\r" && this.buffer[i + 1] === "\n") i += 1;
      start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") {
      if (this.id !== null) this.lastEventId = this.id;
      if (this.data.length) {
        this.onEvent({ id: this.lastEventId, event: this.type || "message",
          data: this.data.join("\n") });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") this.data.push(value);
    else if (name === "event") this.type = value;
    else if (name === "id" && !value.includes("\0")) this.id = value;
  }
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

/**
 * Follow a job's event stream until its terminal status event (or `close()`).
 *
 * onEvent({id, kind, payload}) for each message; onState(state, detail) with "connecting",
 * "live", "reconnecting", "finished" or "error". Returns {close()}.
 */
export function followEvents(jobId, { onEvent, onState = () => {}, lastEventId = "" }) {
  const controller = new AbortController();
  const { signal } = controller;
  let last = lastEventId;
  let finished = false;

  async function once() {
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (last) headers["Last-Event-ID"] = last;
    const response = await fetch(`/v1/jobs/${jobId}/events`, { headers, signal,
      cache: "no-store" });
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch { /* not JSON */ }
      const err = new Error((body && body.error && body.error.message) || `HTTP ${response.status}`);
      err.status = response.status;
      throw err;
    }
    onState("live");
    const parser = new SSEParser((message) => {
      if (finished) return;
      last = message.id || last;
      let payload;
      try { payload = JSON.parse(message.data); } catch { return; }
      onEvent({ id: Number(message.id), kind: message.event, payload });
      if (message.event === "status" && TERMINAL.has(payload.status)) finished = true;
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    try {
      while (!finished) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(decoder.decode(value, { stream: true }));
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  (async () => {
    let backoff = 500;
    while (!signal.aborted && !finished) {
      onState(last ? "reconnecting" : "connecting");
      const before = last;
      try {
        await once();
      } catch (err) {
        if (signal.aborted) return;
        if (err.status && [401, 403, 404, 422].includes(err.status)) {
          onState("error", err.message);
          return;
        }
      }
      if (finished || signal.aborted) break;
      backoff = last !== before ? 500 : Math.min(backoff * 2, 10_000); // progress resets it
      onState("reconnecting");
      await sleep(backoff, signal);
    }
    if (finished) onState("finished");
  })();

  return { close: () => controller.abort(), get lastEventId() { return last; } };
}
