// One terminal session (#/terminal-sessions/ID, admins): its audit facts and its recording replayed in the browser
// (play/pause, 1x/2x/8x, restart), with the .cast file to download.
import { authHeaders, enc, get } from "../api.js";
import { h, notify } from "../dom.js";
import { bytes, dateTime, duration, toMs } from "../format.js";
import { unitHref } from "../router.js";
import { can } from "../session.js";
import { CastPlayer, parseCast } from "../cast_player.js";
import { createTerminal } from "../xterm_load.js";
import { downloadLink, outcome, recordingUrl } from "./sessions.js";

const SPEEDS = [1, 2, 8];

function fact(label, value) {
  return h("div", { class: "fact" }, h("dt", { text: label }), h("dd", {}, value));
}

function clock(seconds, total) {
  if (total < 60) return `${Math.max(0, seconds).toFixed(1)} s`; // a short recording: tenths show it moving
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export function mount(root, route) {
  const sessionId = route.id;
  document.title = "Terminal session · Fleet";
  if (!can("admin")) {
    root.replaceChildren(h("section", { class: "panel" }, h("h1", { text: "Terminal session" }),
      h("p", { text: "Only admins may see terminal sessions and their recordings." })));
    return {};
  }
  let player = null;
  let term = null;
  let disposed = false;

  const facts = h("dl", { class: "facts", id: "replay-facts" });
  const state = h("p", { class: "term-status", id: "replay-state", role: "status", "aria-live": "polite",
    text: "Loading the recording…" });
  const progress = h("span", { class: "mono replay-time", id: "replay-time", text: "0:00 / 0:00" });
  const playBtn = h("button", { type: "button", class: "btn primary", id: "replay-play", text: "Play", disabled: true,
    onclick: () => (player.state === "playing" ? player.pause() : player.play()) });
  const restartBtn = h("button", { type: "button", class: "btn", id: "replay-restart", text: "Restart",
    disabled: true, onclick: () => player.restart() });
  const speedBtns = SPEEDS.map((n) => h("button", { type: "button", class: "btn small", id: `replay-speed-${n}`,
    text: `${n}×`, "aria-pressed": n === 1 ? "true" : "false", "aria-label": `Speed ${n} times`,
    onclick: () => setSpeed(n) }));
  const screen = h("div", { class: "replay-screen", id: "replay-screen" });
  const download = h("span", { class: "replay-download" });
  const title = h("h1", { id: "replay-title", text: "Terminal session" });

  root.replaceChildren(h("div", { class: "replay-view" },
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/terminal-sessions",
      text: "← Terminal sessions" })),
    h("section", { class: "panel", "aria-labelledby": "replay-title" },
      h("div", { class: "panel-head" }, title, download), facts),
    h("section", { class: "panel replay-panel", "aria-label": "Replay" },
      h("div", { class: "replay-controls", role: "group", "aria-label": "Playback" }, playBtn, restartBtn,
        h("span", { class: "speeds", role: "group", "aria-label": "Speed" }, ...speedBtns), progress),
      state, screen)));

  let speed = 1;
  function setSpeed(n) {
    speed = n;
    speedBtns.forEach((b, i) => b.setAttribute("aria-pressed", SPEEDS[i] === n ? "true" : "false"));
    if (player) player.setSpeed(n);
  }

  function paint(p) {
    const words = { ready: "Ready to play.", playing: `Playing at ${p.speed}×.`, paused: "Paused.",
      finished: "Finished." };
    if (state.textContent !== words[p.state]) state.textContent = words[p.state];
    playBtn.textContent = p.state === "playing" ? "Pause" : p.state === "finished" ? "Play again" : "Play";
    const total = p.cast.duration;
    progress.textContent = `${clock(Math.min(p.now(), total), total)} / ${clock(total, total)}`;
    screen.dataset.state = p.state;
  }

  function showFacts(row) {
    title.replaceChildren("Session on ", h("a", { class: "mono", href: unitHref(row.device_id), text: row.device_id }));
    const started = toMs(row.started_at);
    const ended = toMs(row.ended_at);
    facts.replaceChildren(
      fact("Who", `${row.actor} (${row.role})${row.source_ip ? ` from ${row.source_ip}` : ""}`),
      fact("Shell user", row.remote_user || "–"),
      fact("Command", row.command || "login shell"),
      fact("Started", dateTime(started)),
      fact("Length", ended ? duration(Math.round((ended - started) / 1000)) : "still open"),
      fact("Bytes in / out", `${bytes(row.bytes_in)} / ${bytes(row.bytes_out)}`),
      fact("Result", outcome(row)),
      fact("Recording", row.recording_available ? `${bytes(row.recording_bytes)}${row.recording_truncated
        ? " (truncated at the size limit)" : ""}` : "none"));
    if (row.recording_available) download.replaceChildren(downloadLink(row, "Download .cast"));
  }

  async function load() {
    let row;
    try {
      row = await get(`/api/terminal-sessions/${enc(sessionId)}`);
    } catch (err) {
      state.textContent = err.message;
      return;
    }
    showFacts(row);
    if (!row.recording_available) {
      state.textContent = "This session has no recording (none was made, or its retention ended).";
      return;
    }
    let cast;
    try {
      const response = await fetch(recordingUrl(sessionId), { headers: authHeaders(), credentials: "same-origin",
        cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      cast = parseCast(await response.text());
      ({ term } = await createTerminal({ cols: cast.header.width || 80, rows: cast.header.height || 24,
        disableStdin: true, cursorBlink: false }));
    } catch (err) {
      state.textContent = `Could not load the recording: ${err.message}`;
      notify(`Could not load the recording: ${err.message}`);
      return;
    }
    if (disposed) {
      term.dispose();
      return;
    }
    term.open(screen);
    player = new CastPlayer(term, cast, paint);
    player.setSpeed(speed);
    playBtn.disabled = false;
    restartBtn.disabled = false;
    paint(player);
  }

  load();
  return {
    unmount() {
      disposed = true;
      if (player) player.dispose();
      if (term) term.dispose();
    },
  };
}
