// xterm.js (vendored under vendor/xterm/) loaded on first use: its module and its stylesheet, and one look for
// every terminal in the dashboard (the live shell and the replay of a recording).
import { h } from "./dom.js";

const BASE = new URL("./vendor/xterm/", import.meta.url);

// Light text on a dark screen in both colour schemes, as terminals usually are; contrast above 4.5:1.
const THEME = {
  background: "#0b1220",
  foreground: "#e5e7eb",
  cursor: "#e5e7eb",
  cursorAccent: "#0b1220",
  selectionBackground: "#3b82f680",
};

let loading = null;

/** The Terminal and FitAddon classes, and the stylesheet in the page (loaded once). */
export function loadXterm() {
  if (!loading) {
    if (!document.getElementById("xterm-css")) {
      document.head.append(h("link", { id: "xterm-css", rel: "stylesheet", href: new URL("xterm.css", BASE).href }));
    }
    loading = Promise.all([import(new URL("xterm.js", BASE).href), import(new URL("addon-fit.js", BASE).href)])
      .then(([xterm, fit]) => ({ Terminal: xterm.Terminal, FitAddon: fit.FitAddon }))
      .catch((err) => {
        loading = null;
        throw err;
      });
  }
  return loading;
}

/** A new terminal with the dashboard's look; `options` are xterm.js options (cols, rows, disableStdin...). */
export async function createTerminal(options = {}) {
  const { Terminal, FitAddon } = await loadXterm();
  const term = new Terminal({
    fontFamily: 'ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace',
    fontSize: 14,
    theme: THEME,
    scrollback: 5000,
    allowProposedApi: false,
    ...options,
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  return { term, fit };
}
