// Sign-in page: user name + password (session cookie), or a pasted API token kept for this tab only.
import { clear, h } from "../dom.js";
import { login, loginWithToken } from "../session.js";

let messageEl = null;

export function showMessage(text, kind = "info") {
  if (!messageEl) return;
  messageEl.className = `login-message ${kind}`;
  messageEl.textContent = text || "";
}

export function mount(root, { message, onSignedIn }) {
  messageEl = h("p", { class: "login-message info", role: "alert", id: "login-message" });
  const user = h("input", { class: "input", id: "login-user", name: "username", autocomplete: "username", required: true });
  const pass = h("input", { class: "input", id: "login-password", name: "password", type: "password",
    autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit", class: "btn primary", text: "Sign in" });
  const token = h("input", { class: "input", id: "login-token", type: "password", autocomplete: "off",
    spellcheck: "false", placeholder: "flt_…" });
  const tokenSubmit = h("button", { type: "submit", class: "btn", text: "Use token" });

  const run = async (button, action) => {
    button.disabled = true;
    showMessage("Signing in…");
    try {
      await action();
      messageEl = null;
      onSignedIn();
    } catch (err) {
      showMessage(err.message, "error");
    } finally {
      button.disabled = false;
    }
  };

  const form = h("form", { class: "login-form", "aria-labelledby": "login-title",
    onsubmit: (e) => {
      e.preventDefault();
      run(submit, () => login(user.value.trim(), pass.value));
    } },
  h("label", { for: "login-user", class: "field-label", text: "User name" }), user,
  h("label", { for: "login-password", class: "field-label", text: "Password" }), pass,
  submit);

  const tokenForm = h("form", { class: "login-form", onsubmit: (e) => {
    e.preventDefault();
    if (token.value.trim()) run(tokenSubmit, () => loginWithToken(token.value));
  } },
  h("label", { for: "login-token", class: "field-label", text: "API token" }), token,
  h("p", { class: "hint", text: "Kept in this browser tab only and forgotten when you sign out or close it." }),
  tokenSubmit);

  clear(root, h("section", { class: "login panel" },
    h("h1", { id: "login-title", text: "Sign in to Fleet" }),
    messageEl,
    form,
    h("details", { class: "token-login" }, h("summary", { text: "Use an API token instead" }), tokenForm)));
  showMessage(message || "");
  user.focus();
  return {};
}
