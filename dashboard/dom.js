// Small DOM helpers: element builder, replacing children, notifications.

/**
 * Build an element. `attrs` keys: class, text, html is not supported (no innerHTML anywhere),
 * on<event> handlers, dataset (object), style (object), and any other attribute (false/null = omitted).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Name each cell of a row after its column (`data-label`): a table of class "cards" shows them on a phone. */
export function labelCells(tr, labels) {
  [...tr.children].forEach((td, i) => {
    if (labels[i]) td.dataset.label = labels[i];
  });
  return tr;
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Set text only when it changed (cheap for thousands of cells updated every second). */
export function setText(el, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (el.textContent !== value) el.textContent = value;
}

const toastRoot = () => document.getElementById("toasts");

/** Show a message to the operator; errors stay until dismissed or 15 s pass. */
export function notify(message, kind = "error") {
  const root = toastRoot();
  const close = h("button", { type: "button", class: "toast-close", "aria-label": "Dismiss", text: "×" });
  const toast = h("div", { class: `toast ${kind}` }, h("span", { text: message }), close);
  const remove = () => toast.remove();
  close.addEventListener("click", remove);
  root.append(toast);
  while (root.children.length > 4) root.firstElementChild.remove();
  setTimeout(remove, kind === "error" ? 15000 : 6000);
  return toast;
}

/** Call `fn` at most once per `ms`, always with the latest arguments, trailing edge included. */
export function throttle(fn, ms) {
  let timer = null;
  let last = 0;
  let args = null;
  const run = () => {
    timer = null;
    last = Date.now();
    fn(...args);
  };
  const wrapped = (...a) => {
    args = a;
    if (timer) return;
    timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...a) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...a), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

/** Queue events while the first load runs, then replay them in order so nothing between fetch and stream is lost. */
export function gate(apply) {
  let queue = [];
  return {
    push(event) {
      if (!queue) apply(event);
      else if (queue.push(event) > 20000) queue.shift(); // a load that never finishes must not grow without end
    },
    open() {
      const pending = queue || [];
      queue = null;
      pending.forEach(apply);
    },
    close() {
      if (!queue) queue = [];
    },
  };
}
