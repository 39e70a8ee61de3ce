// Confirmation dialogs for actions that change units. Dangerous ones make the operator type a word first.
import { h } from "./dom.js";

/**
 * Ask before acting. Resolves with the entered value (or true when there is no input) or null when cancelled.
 * @param {object} o
 * @param {string} o.title
 * @param {string|Node|Array} o.body
 * @param {string} o.confirm label of the confirming button
 * @param {boolean} [o.danger]
 * @param {string} [o.typeToConfirm] the exact text the operator must type to enable the button
 * @param {{label:string, value?:string, placeholder?:string, required?:boolean, validate?:(v:string)=>string|null}} [o.input]
 */
export function confirmAction({ title, body, confirm, danger = false, typeToConfirm = null, input = null }) {
  return new Promise((resolve) => {
    const ok = h("button", { type: "submit", class: `btn ${danger ? "danger" : "primary"}`, text: confirm });
    const cancel = h("button", { type: "button", class: "btn", text: "Cancel", value: "cancel" });
    const problem = h("p", { class: "field-error", role: "alert" });
    let field = null;
    let typed = null;
    if (input) {
      field = h("input", { type: "text", class: "input", id: "dialog-input", autocomplete: "off", spellcheck: "false",
        placeholder: input.placeholder || "" });
      field.value = input.value || "";
    }
    if (typeToConfirm) {
      typed = h("input", { type: "text", class: "input", id: "dialog-typed", autocomplete: "off", spellcheck: "false",
        "aria-describedby": "dialog-typed-hint" });
    }
    const form = h("form", { method: "dialog", class: "dialog-form" },
      h("h2", { id: "dialog-title", text: title }),
      h("div", { class: "dialog-body" }, body),
      field && h("label", { for: "dialog-input", class: "field-label", text: input.label }),
      field,
      typed && h("label", { for: "dialog-typed", class: "field-label" }, "Type ", h("code", { text: typeToConfirm }),
        " to confirm"),
      typed,
      typed && h("p", { id: "dialog-typed-hint", class: "hint", text: "This protects against a click on the wrong unit." }),
      problem,
      h("div", { class: "dialog-actions" }, cancel, ok));
    const dialog = h("dialog", { class: `dialog${danger ? " danger" : ""}`, "aria-labelledby": "dialog-title" }, form);

    const check = () => {
      let message = null;
      if (field) {
        const v = field.value.trim();
        if (input.required !== false && !v) message = `${input.label} is required.`;
        else if (input.validate) message = input.validate(v);
      }
      const typedOk = !typed || typed.value.trim() === typeToConfirm;
      problem.textContent = field && field.value.trim() ? message || "" : "";
      ok.disabled = Boolean(message) || !typedOk;
      return !ok.disabled;
    };
    field && field.addEventListener("input", check);
    typed && typed.addEventListener("input", check);
    const finish = (value) => {
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (check()) finish(field ? field.value.trim() : true);
    });
    cancel.addEventListener("click", () => finish(null));
    dialog.addEventListener("cancel", (e) => {
      e.preventDefault();
      finish(null);
    });
    document.body.append(dialog);
    check();
    dialog.showModal();
    // Dangerous actions start on "Cancel" so a stray Enter never confirms them.
    (field || typed || (danger ? cancel : ok)).focus();
  });
}
