// A shell on a unit (#/units/ID/terminal): xterm.js on the service's terminal WebSocket. Keystrokes go as binary
// frames, the window's size as resize messages; the unit's output is written as it comes; the end (the exit status,
// or why the service refused or closed the session) is shown in words.
import { enc, hasToken } from "../api.js";
import { h, notify } from "../dom.js";
import { unitHref } from "../router.js";
import { createTerminal } from "../xterm_load.js";

const REFUSED = {
  4400: "the request was not valid",
  4401: "you are not signed in",
  4403: "not allowed",
  4404: "no such unit",
  4409: "the unit is offline",
  4410: "remote shell is disabled on this unit",
  4422: "the unit refused",
  4429: "too many sessions",
  4503: "the service has no broker connection",
  4504: "the unit did not answer",
};

const ENDED = {
  operator: "You ended the session.",
  idle: "no input for too long (the unit's idle timeout)",
  max_duration: "the session reached its maximum length",
  agent_stopping: "the unit's agent stopped",
  unit_offline: "the unit went offline",
  timeout: "the unit stopped answering",
  error: "a transport error",
  service_stopping: "the service stopped",
};

/** What ended the session, in words, from the `exit` event (if any) and the socket's close. */
export function endText(exit, code, reason, closedByUs) {
  if (exit && exit.reason === "exited") return `Session ended: the shell exited with status ${exit.status}.`;
  if (closedByUs || (exit && exit.reason === "operator")) return ENDED.operator;
  if (exit) {
    const why = ENDED[exit.reason] || exit.reason;
    return `Session ended: ${why}${exit.message && exit.message !== why ? ` (${exit.message})` : ""}.`;
  }
  if (REFUSED[code]) return `Could not open a shell: ${reason || REFUSED[code]}${reason ? "" : "."}`;
  if (code === 1000) return `Session ended${reason ? `: ${reason}` : "."}`;
  return `The connection to the service was lost${reason ? ` (${reason})` : ""} (code ${code}).`;
}

function socketUrl(deviceId, cols, rows) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/api/devices/${enc(deviceId)}/terminal?cols=${cols}&rows=${rows}`;
}

export function mount(root, route) {
  const deviceId = route.id;
  document.title = `Terminal · ${deviceId} · Fleet`;
  const encoder = new TextEncoder();
  let term = null;
  let fit = null;
  let ws = null;
  let exit = null;
  let closedByUs = false;
  let disposed = false;
  let observer = null;

  const status = h("p", { class: "term-status", id: "term-status", role: "status", "aria-live": "polite",
    text: "Connecting…" });
  const screen = h("div", { class: "term-screen", id: "terminal" });
  const closeBtn = h("button", { type: "button", class: "btn danger", id: "term-close", text: "End session",
    onclick: () => end() });
  const againBtn = h("button", { type: "button", class: "btn primary", id: "term-reconnect", hidden: true,
    text: "Open a new session", onclick: () => connect() });
  const copyBtn = h("button", { type: "button", class: "btn small", id: "term-copy", text: "Copy",
    title: "Copy the selected text (Ctrl+Shift+C)", onclick: () => copy() });
  const pasteBtn = h("button", { type: "button", class: "btn small", id: "term-paste", text: "Paste",
    title: "Paste from the clipboard (Ctrl+Shift+V)", onclick: () => paste() });

  root.replaceChildren(h("div", { class: "terminal-view" },
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: unitHref(deviceId), text: `← ${deviceId}` })),
    h("section", { class: "panel term-panel", "aria-labelledby": "term-title" },
      h("div", { class: "panel-head" }, h("h1", { id: "term-title" }, "Terminal on ", h("span", { class: "mono",
        text: deviceId })), h("div", { class: "term-actions" }, copyBtn, pasteBtn, closeBtn, againBtn)),
      status, screen,
      h("p", { class: "hint term-hint", text: "Everything you type goes to the unit, Ctrl+C included. Select text to " +
        "copy it; Ctrl+Shift+C copies, Ctrl+Shift+V pastes. The session's output is recorded for the admins." }))));

  function say(text, tone = "") {
    status.textContent = text;
    status.dataset.tone = tone;
  }

  function send(data) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(data);
  }

  async function copy() {
    const text = term && term.getSelection();
    if (!text) {
      notify("Select some text in the terminal first.", "info");
      return;
    }
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      notify("The browser did not allow writing to the clipboard.");
    }
  }

  async function paste() {
    try {
      const text = await navigator.clipboard.readText();
      if (text && term) term.paste(text);
    } catch {
      notify("The browser did not allow reading the clipboard: use Ctrl+Shift+V or the context menu.");
    }
    term && term.focus();
  }

  function keys(e) {
    if (e.type !== "keydown" || !e.ctrlKey || !e.shiftKey || e.altKey || e.metaKey) return true;
    if (e.code === "KeyC") {
      e.preventDefault();
      copy();
      return false;
    }
    // Ctrl+Shift+V: let the browser paste into xterm's input, which sends it as typed text.
    return e.code !== "KeyV";
  }

  function ended(code, reason) {
    const text = endText(exit, code, reason, closedByUs);
    say(text, exit && exit.reason === "exited" && exit.status === 0 ? "ok" : closedByUs ? "" : "bad");
    closeBtn.hidden = true;
    againBtn.hidden = false;
    if (term) term.options.disableStdin = true;
    ws = null;
  }

  function connect() {
    if (disposed || !term) return;
    exit = null;
    closedByUs = false;
    closeBtn.hidden = false;
    againBtn.hidden = true;
    term.options.disableStdin = false;
    term.reset();
    fit.fit();
    say("Connecting…");
    const socket = new WebSocket(socketUrl(deviceId, term.cols, term.rows));
    socket.binaryType = "arraybuffer";
    ws = socket;
    socket.onmessage = (m) => {
      if (typeof m.data !== "string") {
        term.write(new Uint8Array(m.data));
        return;
      }
      const event = JSON.parse(m.data);
      if (event.type === "opened") {
        say(`Connected to ${event.unit} as ${event.user}.`, "ok");
        send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows })); // in case it changed meanwhile
        term.focus();
      } else if (event.type === "exit") {
        exit = event;
      }
    };
    socket.onclose = (e) => {
      if (ws === socket && !disposed) ended(e.code, e.reason);
    };
  }

  function end() {
    closedByUs = true;
    if (ws) ws.close(1000, "closed by the operator");
  }

  async function start() {
    if (hasToken()) {
      say("The terminal needs a password sign-in: a browser cannot send an API token on a WebSocket. " +
        "Use `fleet shell` with the token instead.", "bad");
      closeBtn.hidden = true;
      return;
    }
    try {
      ({ term, fit } = await createTerminal());
    } catch (err) {
      say(`Could not load the terminal: ${err.message}`, "bad");
      return;
    }
    if (disposed) {
      term.dispose();
      return;
    }
    term.open(screen);
    term.attachCustomKeyEventHandler(keys);
    term.onData((data) => send(encoder.encode(data)));
    term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    term.onResize(({ cols, rows }) => send(JSON.stringify({ type: "resize", cols, rows })));
    let pending = 0;
    observer = new ResizeObserver(() => {
      cancelAnimationFrame(pending);
      pending = requestAnimationFrame(() => term && !disposed && fit.fit());
    });
    observer.observe(screen);
    connect();
  }

  start();

  return {
    stream: { device_id: deviceId },
    onEvent(e) {
      if (e.type === "presence" && !e.online && ws) say("The unit went offline; the session will end.", "bad");
    },
    unmount() {
      disposed = true;
      if (observer) observer.disconnect();
      if (ws) ws.close(1000, "left the page");
      ws = null;
      if (term) term.dispose();
    },
  };
}
