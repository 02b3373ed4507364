// Accounts in the widget (docs/protocol.md §8 "Accounts", R19–R21):
//
//   SessionTokens  the session's tokens in localStorage, refreshed before the
//                  access token expires, one refresh at a time across tabs
//                  (a refresh credential shown twice ends the session)
//   AccountViews   the screens before a session exists: sign in, the e-mailed
//                  code, create an account, forgotten password; beside them
//                  the demo picker and, folded, an access-token field
//   accountPanels  dialogs of a signed-in person: add a child (R20), my sessions
//
// Rendering here sends no request: every action is a callback of the app.

import { h, replaceChildren } from "./dom.js";
import { formatTime, t } from "./i18n.js";

const SESSION_KEY = "chat.session";
const REFRESH_LOCK = "chat.refresh";
const REFRESH_BEFORE_MS = 60_000; // refresh a minute before the access token expires

export class SessionTokens {
  constructor(api) {
    this.api = api;
    this.current = null;
    this.timer = null;
    this.onRenewed = () => {};
  }

  load() {
    try {
      const saved = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
      if (saved && saved.access_token && saved.refresh_token) return saved;
    } catch (_) { /* storage off or damaged */ }
    return null;
  }

  /** Keep the tokens of a sign-in or a refresh (expires_in seconds from now). */
  save(tokens) {
    this.current = {
      access_token: tokens.access_token,
      refresh_token: tokens.refresh_token,
      session_id: tokens.session_id,
      expires_at: Date.now() + (tokens.expires_in || 900) * 1000,
    };
    try { localStorage.setItem(SESSION_KEY, JSON.stringify(this.current)); } catch (_) { /* storage off */ }
    this.schedule();
    return this.current;
  }

  clear() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.current = null;
    try { localStorage.removeItem(SESSION_KEY); } catch (_) { /* ignore */ }
  }

  schedule() {
    if (this.timer) clearTimeout(this.timer);
    if (!this.current) return;
    const wait = Math.max(1000, this.current.expires_at - Date.now() - REFRESH_BEFORE_MS);
    this.timer = setTimeout(() => this.refresh().catch(() => { /* the next request or reconnect says so */ }), wait);
  }

  /** A new access token for the session.  Another tab may have refreshed it
   *  already: then its tokens are taken up instead of refreshing again. */
  async refresh() {
    const run = async () => {
      const stored = this.load();
      if (stored && this.current && stored.refresh_token !== this.current.refresh_token
          && stored.session_id === this.current.session_id && stored.expires_at > Date.now() + 5000) {
        this.current = stored;
        this.schedule();
      } else {
        const refresh = (this.current || stored)?.refresh_token;
        if (!refresh) throw new Error("no session");
        this.save(await this.api.post("/api/auth/refresh", { refresh_token: refresh }));
      }
      this.onRenewed(this.current.access_token);
      return this.current.access_token;
    };
    if (navigator.locks && navigator.locks.request) return navigator.locks.request(REFRESH_LOCK, run);
    return run();
  }
}

// -- the screens before a session ---------------------------------------------------------------
export class AccountViews {
  /** @param {object} actions  signIn, signInCode, signUp, signUpCode, forgot, reset, tokenSignIn, demoSignIn */
  constructor(root, actions, languageSwitch) {
    this.root = root;
    this.actions = actions;
    this.languageSwitch = languageSwitch;
    this.step = "signin";
    this.email = "";
    this.notice = null;
  }

  show(step, { error = null, notice = null, people = this.people } = {}) {
    this.step = step;
    this.people = people;
    this.notice = notice;
    document.title = t("app.title");
    const card = this[`${step}Card`]();
    replaceChildren(this.root, h("div", { class: "signin" },
      h("header", { class: "topbar" }, h("h1", { class: "brand" }, t("app.title")), this.languageSwitch()),
      h("main", { class: "signin-main" },
        h("h2", { class: "sr-only" }, t("signin.title")),
        error ? h("p", { class: "error", role: "alert", id: "account-error" }, error) : null,
        notice ? h("p", { class: "account-notice", role: "status" }, notice) : null,
        card,
        people ? this.demoCard(people) : null,
        this.tokenCard())));
    const first = this.root.querySelector(".account-card input");
    if (first) first.focus();
  }

  field(id, label, attrs = {}, help = null) {
    const input = h("input", { id, name: id, class: "input", required: true,
      "aria-describedby": help ? `${id}-help` : null, ...attrs });
    return [input, h("div", { class: "field" }, h("label", { for: id }, label), input,
      help ? h("p", { class: "help", id: `${id}-help` }, help) : null)];
  }

  form(id, titleKey, fields, submitKey, onsubmit, links = []) {
    const button = h("button", { type: "submit", class: "primary" }, t(submitKey));
    const form = h("form", { class: "account-form", novalidate: false, onsubmit: async (e) => {
      e.preventDefault();
      button.disabled = true;
      try { await onsubmit(); } finally { button.disabled = false; }
    } }, fields, button);
    return h("section", { class: "card account-card", "aria-labelledby": id },
      h("h2", { id }, t(titleKey)), form,
      links.length ? h("p", { class: "account-links" }, links) : null);
  }

  link(key, step) {
    return h("button", { type: "button", class: "link", onclick: () => this.show(step) }, t(key));
  }

  emailField() {
    const [input, field] = this.field("account-email", t("account.email"),
      { type: "email", autocomplete: "username", value: this.email, maxlength: 254 });
    input.addEventListener("input", () => { this.email = input.value.trim(); });
    return [input, field];
  }

  signinCard() {
    const [email, emailField] = this.emailField();
    const [password, passwordField] = this.field("account-password", t("account.password"),
      { type: "password", autocomplete: "current-password" });
    return this.form("signin-title", "account.signin_title", [emailField, passwordField], "account.continue",
      () => this.actions.signIn(email.value.trim(), password.value),
      [this.link("account.to_signup", "signup"), " · ", this.link("account.to_forgot", "forgot")]);
  }

  codeField() {
    return this.field("account-code", t("account.code"), { type: "text", inputmode: "numeric",
      autocomplete: "one-time-code", pattern: "[0-9]{6}", maxlength: 6 }, t("account.code_help", { email: this.email }));
  }

  /** The second step: the code e-mailed for `again` (the step that sends a new one). */
  codeCard(submitKey, verify, again) {
    const [code, codeField] = this.codeField();
    return this.form("code-title", "account.code_title", [codeField], submitKey,
      () => verify(this.email, code.value.trim()), [this.link("account.code_again", again)]);
  }

  signinCodeCard() {
    return this.codeCard("signin.submit", this.actions.signInCode, "signin");
  }

  signupCard() {
    const [email, emailField] = this.emailField();
    const [password, passwordField] = this.field("account-new-password", t("account.new_password"),
      { type: "password", autocomplete: "new-password", minlength: 8 }, t("account.password_rules"));
    return this.form("signup-title", "account.signup_title", [h("p", { class: "help" }, t("account.signup_help")),
      emailField, passwordField], "account.send_code",
    () => this.actions.signUp(email.value.trim(), password.value),
    [this.link("account.to_signin", "signin")]);
  }

  signupCodeCard() {
    return this.codeCard("account.activate", this.actions.signUpCode, "signup");
  }

  forgotCard() {
    const [email, emailField] = this.emailField();
    return this.form("forgot-title", "account.forgot_title", [h("p", { class: "help" }, t("account.forgot_help")),
      emailField], "account.send_code", () => this.actions.forgot(email.value.trim()),
    [this.link("account.to_signin", "signin")]);
  }

  resetCard() {
    const [code, codeField] = this.codeField();
    const [password, passwordField] = this.field("account-new-password", t("account.new_password"),
      { type: "password", autocomplete: "new-password", minlength: 8 }, t("account.password_rules"));
    return this.form("reset-title", "account.reset_title", [codeField, passwordField], "account.reset",
      () => this.actions.reset(this.email, code.value.trim(), password.value),
      [this.link("account.code_again", "forgot")]);
  }

  demoCard(people) {
    const list = h("div", { class: "people" });
    const filter = h("input", { id: "people-filter", type: "search", class: "input", autocomplete: "off" });
    const draw = () => {
      const q = filter.value.trim().toLowerCase();
      replaceChildren(list, ROLES.map((role) => {
        const group = people.filter((p) => p.role === role && (!q || `${p.name} ${p.email} ${t("role." + role)}`
          .toLowerCase().includes(q)));
        if (!group.length) return null;
        return h("section", { class: "people-group", "aria-labelledby": `role-${role}` },
          h("h3", { id: `role-${role}` }, t("role." + role)),
          h("ul", { class: "people-list" }, group.map((p) => h("li", {},
            h("button", { type: "button", class: "person", onclick: () => this.actions.demoSignIn(p.id) },
              h("span", { class: "person-name" }, p.name),
              h("span", { class: "person-email" }, p.email))))));
      }));
    };
    filter.addEventListener("input", draw);
    draw();
    return h("section", { class: "card demo", "aria-labelledby": "demo-title" },
      h("h2", { id: "demo-title" }, t("signin.demo_title")),
      h("p", { class: "help" }, t("signin.demo_help")),
      h("label", { for: "people-filter" }, t("signin.filter")),
      filter,
      list);
  }

  tokenCard() {
    const tokenInput = h("input", { id: "token", type: "password", autocomplete: "off", spellcheck: "false",
      required: true, class: "input" });
    const tokenForm = h("form", { class: "token-form", onsubmit: (e) => {
      e.preventDefault();
      const token = tokenInput.value.trim();
      if (token) this.actions.tokenSignIn(token);
    } },
      h("label", { for: "token" }, t("signin.token")),
      tokenInput,
      h("button", { type: "submit", class: "primary" }, t("signin.submit")));
    return h("details", { class: "card token-card" },
      h("summary", { id: "token-title" }, t("signin.token_title")),
      h("p", { class: "help" }, t("signin.token_help")),
      tokenForm);
  }
}

export const ROLES = ["direction", "teacher", "staff", "transport", "parent"];

// -- dialogs of a signed-in person ------------------------------------------------------------------
/** The "add a child" form (R20).  `organisations` are fetched by the caller;
 *  `submit(body)` sends it and resolves to an error text or null. */
export function childForm(body, organisations, submit) {
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const org = h("select", { id: "child-org", class: "input", required: true },
    organisations.map((o) => h("option", { value: o.code }, o.name)));
  const input = (id, attrs = {}) => h("input", { id, class: "input", required: true, ...attrs });
  const first = input("child-first", { autocomplete: "off" });
  const last = input("child-last", { autocomplete: "off" });
  const born = input("child-born", { type: "date" });
  const number = input("child-number", { autocomplete: "off", maxlength: 20 });
  const nip = input("child-nip", { autocomplete: "off", maxlength: 20 });
  const way = { value: "fiche" };
  const numberLabel = h("label", { for: "child-number" }, t("child.fiche"));
  const byDetails = h("div", { class: "by-details" },
    h("div", { class: "field" }, h("label", { for: "child-org" }, t("child.organisation")), org),
    h("div", { class: "field" }, h("label", { for: "child-first" }, t("child.first_name")), first),
    h("div", { class: "field" }, h("label", { for: "child-last" }, t("child.last_name")), last),
    h("div", { class: "field" }, h("label", { for: "child-born" }, t("child.born")), born),
    h("div", { class: "field" }, numberLabel, number));
  const byNip = h("div", { class: "by-nip", hidden: true },
    h("div", { class: "field" }, h("label", { for: "child-nip" }, t("child.nip")), nip));
  const choose = (value) => {
    way.value = value;
    byDetails.hidden = value === "nip";
    byNip.hidden = value !== "nip";
    for (const el of byDetails.querySelectorAll("input, select")) el.disabled = value === "nip";
    nip.disabled = value !== "nip";
    numberLabel.textContent = t(value === "code" ? "child.code_permanent" : "child.fiche");
  };
  const ways = h("fieldset", { class: "ways" }, h("legend", {}, t("child.how")),
    ["fiche", "code", "nip"].map((value) => h("label", { class: "choice" },
      h("input", { type: "radio", name: "child-way", value, checked: value === "fiche",
        onchange: () => choose(value) }), " ", t(`child.by_${value}`))));
  const button = h("button", { type: "submit", class: "primary" }, t("child.add"));
  choose("fiche");
  replaceChildren(body, h("form", { class: "child-form", onsubmit: async (e) => {
    e.preventDefault();
    const request = way.value === "nip" ? { nip: nip.value } : {
      organisation: org.value, first_name: first.value, last_name: last.value, date_of_birth: born.value,
      [way.value === "code" ? "code_permanent" : "fiche"]: number.value };
    button.disabled = true;
    const problem = await submit(request);
    button.disabled = false;
    error.hidden = !problem;
    error.textContent = problem || "";
  } }, h("p", { class: "help" }, t("child.help")), ways, byDetails, byNip, error, button));
}

/** My sessions (R21): each device, when last used, and a button to end it. */
export function sessionList(body, sessions, end, endAll) {
  replaceChildren(body,
    h("p", { class: "help" }, t("sessions.help")),
    h("ul", { class: "session-list" }, sessions.map((s) => h("li", { class: "session" },
      h("span", { class: "session-device" }, describeDevice(s.user_agent)),
      h("span", { class: "session-when" }, t("sessions.last_used", { when: formatTime(new Date(s.last_used_at * 1000)) })),
      s.current ? h("span", { class: "session-current" }, t("sessions.current"))
        : h("button", { type: "button", class: "ghost small", onclick: () => end(s.id) }, t("sessions.end"))))),
    h("button", { type: "button", class: "ghost", onclick: endAll }, t("sessions.end_all")));
}

function describeDevice(agent) {
  if (!agent) return t("sessions.unknown_device");
  if (agent === "demo" || agent === "cli" || agent === "test") return agent;
  const browser = /Edg\//.test(agent) ? "Edge" : /Firefox\//.test(agent) ? "Firefox"
    : /Chrome\//.test(agent) ? "Chrome" : /Safari\//.test(agent) ? "Safari" : t("sessions.browser");
  const system = /iPhone|iPad/.test(agent) ? "iOS" : /Android/.test(agent) ? "Android" : /Windows/.test(agent) ? "Windows"
    : /Mac OS X/.test(agent) ? "macOS" : /Linux/.test(agent) ? "Linux" : "";
  return system ? `${browser} · ${system}` : browser;
}
