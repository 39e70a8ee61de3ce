// The live event stream (GET /api/events, Server-Sent Events) read with fetch so a pasted bearer token works too.
// Reconnects by itself, resuming with Last-Event-ID, and reports "live" / "reconnecting" to the page.
import { authHeaders } from "./api.js";

const STALL_MS = 45_000; // the server sends a keepalive comment every 15 s
const MAX_BACKOFF_MS = 10_000;

export class EventStream {
  /**
   * @param {object} opts
   * @param {Record<string,string>} [opts.query] device_id / types filters
   * @param {(event: object) => void} opts.onEvent called with the parsed JSON payload of each event
   * @param {(state: string, detail?: string) => void} [opts.onState] "connecting" | "live" | "reconnecting" | "closed"
   * @param {() => void} [opts.onResume] after a reconnect, so views can re-read what the gap may have missed
   * @param {() => void} [opts.onUnauthorized]
   */
  constructor({ query = {}, onEvent, onState = () => {}, onResume = () => {}, onUnauthorized = () => {} }) {
    const params = new URLSearchParams(Object.entries(query).filter(([, v]) => v));
    this.url = `/api/events${params.toString() ? `?${params}` : ""}`;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onResume = onResume;
    this.onUnauthorized = onUnauthorized;
    this.lastId = null;
    this.retryMs = 2000;
    this.failures = 0;
    this.stopped = false;
    this.controller = null;
    this.timer = null;
    this.stallTimer = null;
    this.everConnected = false;
  }

  start() {
    this.onState("connecting");
    this._connect();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.stallTimer);
    if (this.controller) this.controller.abort();
    this.onState("closed");
  }

  async _connect() {
    if (this.stopped) return;
    this.controller = new AbortController();
    const headers = { Accept: "text/event-stream", ...authHeaders() };
    if (this.lastId) headers["Last-Event-ID"] = this.lastId;
    let reason = "the connection was lost";
    try {
      const response = await fetch(this.url, {
        headers, credentials: "same-origin", cache: "no-store", signal: this.controller.signal,
      });
      if (response.status === 401) {
        this.stopped = true;
        this.onState("closed", "signed out");
        this.onUnauthorized();
        return;
      }
      if (!response.ok || !response.body) {
        reason = `the server answered HTTP ${response.status}`;
      } else {
        const resumed = this.everConnected;
        this.everConnected = true;
        this.failures = 0;
        this.onState("live");
        if (resumed) this.onResume();
        await this._read(response.body.getReader());
        reason = "the server closed the stream";
      }
    } catch (err) {
      if (this.stopped) return;
      reason = err && err.name === "AbortError" ? "no data for too long" : "the server cannot be reached";
    }
    clearTimeout(this.stallTimer);
    if (this.stopped) return;
    this.failures += 1;
    const wait = Math.min(MAX_BACKOFF_MS, this.retryMs * Math.min(this.failures, 5)) * (0.75 + Math.random() * 0.5);
    this.onState("reconnecting", reason);
    this.timer = setTimeout(() => this._connect(), wait);
  }

  _armStall() {
    clearTimeout(this.stallTimer);
    this.stallTimer = setTimeout(() => this.controller && this.controller.abort(), STALL_MS);
  }

  async _read(reader) {
    const decoder = new TextDecoder();
    let buffer = "";
    let event = { id: null, data: [] };
    this._armStall();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      this._armStall();
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        if (buffer[nl] === "\r" && nl === buffer.length - 1) break; // a CRLF split across chunks
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer[nl] === "\r" && buffer[nl + 1] === "\n" ? 2 : 1));
        if (line === "") {
          this._dispatch(event);
          event = { id: null, data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "data") event.data.push(val);
        else if (field === "id") event.id = val;
        else if (field === "retry" && /^\d+$/.test(val)) this.retryMs = Number(val);
      }
    }
  }

  _dispatch(event) {
    if (event.id !== null) this.lastId = event.id;
    if (!event.data.length) return;
    let payload;
    try {
      payload = JSON.parse(event.data.join("\n"));
    } catch {
      return;
    }
    try {
      this.onEvent(payload);
    } catch (err) {
      console.error("event handler failed", err);
    }
  }
}
