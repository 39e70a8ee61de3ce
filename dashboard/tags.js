// Tags in the browser: the rule of protocol/tags.py (checked here before a request, the server checks it again)
// and suggestions from every tag in use across the fleet (GET /api/tags), not only the units on one page.
import { get } from "./api.js";
import { h } from "./dom.js";

// The same pattern and words as protocol/tags.py (a test keeps them equal).
export const TAG_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.:=-]{0,63}$";
export const TAG_RULE = "letters, digits and _.:=- only, at most 64 characters";
const TAG_RE = new RegExp(TAG_PATTERN);

/** null when `tag` keeps the rule, else a sentence that says why not. */
export function tagProblem(tag) {
  return TAG_RE.test(tag) ? null : `invalid tag ${JSON.stringify(tag)}: ${TAG_RULE}`;
}

/** Split what an operator typed ("a, b c") into tags. */
export const splitTags = (text) => text.split(/[\s,]+/).filter(Boolean);

/**
 * Keep `datalist` filled with the fleet's tags that start with what `input` holds (refreshed as it changes).
 * Returns a function that stops it.
 */
export function suggestTags(input, datalist) {
  let seq = 0;
  let timer = null;
  async function refresh() {
    const mine = ++seq;
    const typed = splitTags(input.value).pop() || "";
    try {
      const body = await get("/api/tags", { prefix: typed.slice(0, 64), limit: 50 });
      if (mine !== seq) return;
      datalist.replaceChildren(...body.items.map((t) => h("option", { value: t.tag,
        label: `${t.tag} · ${t.units} unit${t.units === 1 ? "" : "s"}` })));
    } catch {
      // suggestions are a help: without them the field still works
    }
  }
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 150);
  };
  input.addEventListener("input", later);
  input.addEventListener("focus", later);
  refresh();
  return () => {
    clearTimeout(timer);
    seq++;
    input.removeEventListener("input", later);
    input.removeEventListener("focus", later);
  };
}
