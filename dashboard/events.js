// The live event stream (GET /api/events, Server-Sent Events) read with fetch so a pasted bearer token works too.
// Reconnects by itself, resuming with Last-Event-ID (any replica replays exactly what was missed), and reports
// "live" / "reconnecting" to the page. When the server cannot replay the gap it sends a `reset` event first, and
// the page re-reads what it shows (`onReset`); a gap it replayed needs nothing more.
import { authHeaders } from "./api.js";

const STALL_MS = 45_000; // the server sends a keepalive comment every 15 s
const MAX_BACKOFF_MS = 10_000;

/**
 * The stream's address. `always` names event types wanted from every unit whatever the view narrows its stream to
 * (the header's alert count): added to `types` when the view names types, and to `fleet_types` when it names units.
 */
function eventsUrl(query, always = []) {
  const merged = { ...query };
  const add = (list, extra) => [...new Set([...(list ? list.split(",") : []), ...extra])].join(",");
  if (always.length && merged.types) merged.types = add(merged.types, always);
  if (always.length && merged.device_id) merged.fleet_types = add(merged.fleet_types, always);
  const params = new URLSearchParams(Object.entries(merged).filter(([, v]) => v));
  return `/api/events${params.toString() ? `?${params}` : ""}`;
}

export class EventStream {
  /**
   * @param {object} opts
   * @param {Record<string,string>} [opts.query] device_id / types / fleet_types filters
   * @param {string[]} [opts.always] event types wanted from every unit, whatever the filters (see eventsUrl)
   * @param {(event: object) => void} opts.onEvent called with the parsed JSON payload of each event
   * @param {(state: string, detail?: string) => void} [opts.onState] "connecting" | "live" | "reconnecting" | "closed"
   * @param {(reason: string) => void} [opts.onReset] events were missed that the server could not replay (`reset`
   *   event: "expired", "unknown", "gap"; or "no resume point" after a reconnect without an id): re-read the view
   * @param {() => void} [opts.onUnauthorized]
   */
  constructor({ query = {}, always = [], onEvent, onState = () => {}, onReset = () => {}, onUnauthorized = () => {} }) {
    this.always = always;
    this.url = eventsUrl(query, always);
    this.onEvent = onEvent;
    this.onState = onState;
    this.onReset = onReset;
    this.onUnauthorized = onUnauthorized;
    this.lastId = null;
    this.retryMs = 2000;
    this.failures = 0;
    this.stopped = false;
    this.controller = null;
    this.timer = null;
    this.stallTimer = null;
    this.everConnected = false;
    this.generation = 0; // each connection's number: a replaced connection's late callbacks do nothing
    this.waiting = false; // between a failure and the next try
    this.quiet = false; // the next connection replaces one on purpose (new filters), not a gap
  }

  /**
   * Follow other filters (a view whose units changed). Resumes from the last event seen, so what happened between
   * the two connections to units of the new filter is replayed and nothing is delivered twice.
   */
  retarget(query) {
    const url = eventsUrl(query, this.always);
    if (url === this.url) return;
    this.url = url;
    if (this.stopped || this.waiting) return; // the next try uses the new filters
    this.quiet = true;
    this._connect();
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
    this.waiting = false;
    const gen = ++this.generation;
    if (this.controller) this.controller.abort();
    const controller = (this.controller = new AbortController());
    const headers = { Accept: "text/event-stream", ...authHeaders() };
    if (this.lastId) headers["Last-Event-ID"] = this.lastId;
    let reason = "the connection was lost";
    try {
      const response = await fetch(this.url, {
        headers, credentials: "same-origin", cache: "no-store", signal: controller.signal,
      });
      if (gen !== this.generation) return;
      if (response.status === 401) {
        this.stopped = true;
        this.onState("closed", "signed out");
        this.onUnauthorized();
        return;
      }
      if (!response.ok || !response.body) {
        reason = `the server answered HTTP ${response.status}`;
      } else {
        // Only a server that never gave an id leaves nothing to resume from: then the gap is unknown.
        const blind = this.everConnected && !this.quiet && !headers["Last-Event-ID"];
        this.everConnected = true;
        this.quiet = false;
        this.failures = 0;
        this.onState("live");
        if (blind) this._reset("no resume point");
        await this._read(response.body.getReader(), gen);
        reason = "the server closed the stream";
      }
    } catch (err) {
      if (this.stopped || gen !== this.generation) return;
      reason = err && err.name === "AbortError" ? "no data for too long" : "the server cannot be reached";
    }
    if (this.stopped || gen !== this.generation) return;
    clearTimeout(this.stallTimer);
    this.quiet = false; // the replacement failed: whatever comes next follows a gap
    this.failures += 1;
    const wait = Math.min(MAX_BACKOFF_MS, this.retryMs * Math.min(this.failures, 5)) * (0.75 + Math.random() * 0.5);
    this.onState("reconnecting", reason);
    this.waiting = true;
    this.timer = setTimeout(() => this._connect(), wait);
  }

  _armStall() {
    clearTimeout(this.stallTimer);
    this.stallTimer = setTimeout(() => this.controller && this.controller.abort(), STALL_MS);
  }

  async _read(reader, gen) {
    const decoder = new TextDecoder();
    let buffer = "";
    let event = { id: null, data: [] };
    this._armStall();
    for (;;) {
      const { value, done } = await reader.read();
      if (done || gen !== this.generation) return;
      this._armStall();
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        if (buffer[nl] === "\r" && nl === buffer.length - 1) break; // a CRLF split across chunks
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer[nl] === "\r" && buffer[nl + 1] === "\n" ? 2 : 1));
        if (line === "") {
          this._dispatch(event);
          if (gen !== this.generation) return; // the handler replaced this connection
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
    if (payload && payload.type === "reset") {
      this._reset(payload.reason || "reset");
      return;
    }
    try {
      this.onEvent(payload);
    } catch (err) {
      console.error("event handler failed", err);
    }
  }

  _reset(reason) {
    try {
      this.onReset(reason);
    } catch (err) {
      console.error("reset handler failed", err);
    }
  }
}
