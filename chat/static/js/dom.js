// A tiny DOM builder.  Every text goes through textContent, never innerHTML:
// messages are "stored and sent as given, never interpreted as HTML".

/**
 * h("button", {class: "x", onclick: fn, "aria-label": "…"}, "text", child, …)
 * Attributes whose value is false, null or undefined are left out; `true` gives "".
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "value" || name === "checked" || name === "disabled" || name === "selected") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replace every child of `el`. */
export function replaceChildren(el, ...children) {
  el.textContent = "";
  append(el, children);
}

/** Text only a screen reader reads. */
export function srOnly(text) {
  return h("span", { class: "sr-only" }, text);
}
