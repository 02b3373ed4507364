// The screens: sign-in (demo picker or token), and the main layout — a header
// (connection state, child picker, announcements, bell, preferences, archive,
// FR/EN, sign-out), the conversation list and the open conversation.

import { h, replaceChildren, srOnly } from "./dom.js";
import { icon } from "./icons.js";
import { formatSize, formatTime, language, pick, t } from "./i18n.js";

export const QUICK_EMOJI = ["👍", "❤️", "😂", "😮", "🙏", "✅"];
const MAX_ATTACHMENTS = 10; // R7
const MAX_FILE_BYTES = 20 * 1024 * 1024; // R7: 20 MB per file

export class Views {
  constructor(app) {
    this.app = app;
    this.el = {};
    this.nodes = new Map(); // timeline key → {sig, el}
    this.images = new Map(); // upload id → Promise<blob URL>
    this.paneFor = null;
    this.ui = { editing: null, confirming: null, picker: null };
    this.uploads = [];
  }

  // -- shared pieces -----------------------------------------------------------------------------
  languageSwitch() {
    const app = this.app;
    return h("div", { class: "lang-switch", role: "group", "aria-label": "Langue / Language" },
      ["fr", "en"].map((lang) => h("button", {
        type: "button", class: "lang-button", lang, "aria-pressed": String(language() === lang),
        onclick: () => { if (language() !== lang) app.toggleLanguage(); },
      }, lang.toUpperCase())));
  }

  name(conv, personId) {
    if (personId === this.app.me?.id) return t("msg.you");
    return conv?.names.get(personId) || t("someone");
  }

  title(conv) {
    const s = conv.summary;
    if (s.name) return s.name;
    const others = (s.members || []).filter((m) => m.id !== this.app.me.id).map((m) => m.name);
    return others.join(", ") || `#${s.id}`;
  }

  // -- sign-in -------------------------------------------------------------------------------------------
  // -- main layout ---------------------------------------------------------------------------------------
  renderMain() {
    const app = this.app;
    const me = app.me;
    this.nodes.clear();
    this.paneFor = null;
    document.title = t("app.title");
    const el = this.el = {};
    el.statusText = h("span", { class: "status-text" });
    el.status = h("div", { class: "status", role: "status", "aria-live": "polite" },
      h("span", { class: "dot", "aria-hidden": "true" }), el.statusText);
    let childPicker = null;
    if (me.role === "parent") {
      if ((me.children || []).length) {
        const select = el.childSelect = h("select", { id: "child", class: "input",
          onchange: (e) => app.setChild(Number(e.target.value)) },
        me.children.map((c) => h("option", { value: c.id, selected: c.id === app.childId,
          title: [c.school, c.group].filter(Boolean).join(" — ") }, c.name)));
        // Unread for the other children, each a shortcut to that child.
        el.otherChildren = h("span", { class: "other-children" });
        childPicker = h("div", { class: "child-picker" }, h("label", { for: "child" }, t("child.label")), select,
          el.otherChildren);
      } else {
        childPicker = h("p", { class: "help" }, t("child.none"));
      }
    }
    // R20: a parent adds the children the school has them on file for.
    const addChild = me.role === "parent"
      ? h("button", { type: "button", class: "ghost small add-child", onclick: () => app.openAddChild() },
        icon("plus"), h("span", { class: "add-child-text" }, t("child.add")))
      : null;
    el.annBadge = h("span", { class: "badge", "aria-hidden": "true" });
    el.bellBadge = h("span", { class: "badge", "aria-hidden": "true" });
    el.annButton = h("button", { type: "button", class: "icon-button", "data-focus-key": "ann",
      onclick: () => app.panels.openAnnouncements() }, icon("megaphone"), el.annBadge);
    el.bellButton = h("button", { type: "button", class: "icon-button", "data-focus-key": "bell",
      onclick: () => app.panels.openBell() }, icon("bell"), el.bellBadge);
    const prefsButton = h("button", { type: "button", class: "icon-button", "aria-label": t("prefs.label"),
      title: t("prefs.label"), onclick: () => app.panels.openPreferences() }, icon("sliders"));
    const archiveButton = me.role === "direction" && (me.schools || []).length
      ? h("button", { type: "button", class: "icon-button", "aria-label": t("archive.label"), title: t("archive.label"),
        onclick: () => app.panels.openArchive() }, icon("archive"))
      : null;
    // On a phone the tools flow into two rows (see style.css): title, state and
    // language first; then the child picker and the buttons.
    const header = h("header", { class: "topbar" },
      h("h1", { class: "brand" }, t("app.title")),
      el.status,
      h("div", { class: "who" }, h("span", { class: "who-name" }, me.name), " · ", t("role." + me.role)),
      h("div", { class: "break", "aria-hidden": "true" }),
      childPicker,
      h("nav", { class: "tools", "aria-label": t("tools.label") },
        addChild, el.annButton, el.bellButton, prefsButton, archiveButton, this.languageSwitch(),
        h("button", { type: "button", class: "ghost small sessions", title: t("sessions.title"),
          onclick: () => app.openSessions() }, icon("lock"), h("span", { class: "sessions-text" }, t("sessions.title"))),
        h("button", { type: "button", class: "ghost small signout", title: t("signout"), onclick: () => app.signOut() },
          icon("logout"), h("span", { class: "signout-text" }, t("signout")))));
    el.list = h("ul", { class: "conv-list" });
    const listPane = h("section", { class: "list-pane", "aria-labelledby": "list-title" },
      h("div", { class: "list-head" },
        h("h2", { id: "list-title" }, t("list.title")),
        me.role === "transport" ? null : h("button", { type: "button", class: "primary small new-conv",
          "aria-label": t("list.new"), onclick: () => app.panels.openNewConversation() },
        icon("plus"), t("list.new_short"))),
      el.list);
    el.pane = h("section", { class: "conv-pane", "aria-label": t("conv.messages_label") });
    el.layout = h("div", { class: "app", "data-view": "list" }, header, h("main", { class: "layout" }, listPane, el.pane));
    replaceChildren(app.root, el.layout);
    this.render();
  }

  render() {
    if (!this.el.layout) return;
    const focusKey = document.activeElement?.dataset?.focusKey || null;
    if (this.app.selectedId !== null) this.app.markRead(this.app.convs.get(this.app.selectedId));
    this.renderHeader();
    this.renderList();
    this.renderConversation();
    this.el.layout.dataset.view = this.app.selectedId === null ? "list" : "conversation";
    if (focusKey && document.activeElement === document.body) {
      const again = this.app.root.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
      if (again) again.focus();
    }
  }

  renderHeader() {
    const app = this.app;
    const el = this.el;
    const state = app.connState;
    el.status.className = `status status-${state}`;
    el.statusText.textContent = t("conn." + state);
    el.status.setAttribute("aria-label", t("conn.label", { state: t("conn." + state) }));
    const unreadAnn = app.unreadAnnouncements();
    el.annBadge.textContent = unreadAnn ? String(unreadAnn) : "";
    el.annBadge.hidden = !unreadAnn;
    el.annButton.setAttribute("aria-label", unreadAnn ? `${t("ann.label")} — ${t("ann.unread", { count: unreadAnn })}`
      : t("ann.label"));
    el.annButton.title = t("ann.label");
    const unread = app.bell.unread || 0;
    el.bellBadge.textContent = unread ? String(unread) : "";
    el.bellBadge.hidden = !unread;
    el.bellButton.setAttribute("aria-label", unread ? `${t("bell.label")} — ${t("bell.unread", { count: unread })}`
      : t("bell.label"));
    el.bellButton.title = t("bell.label");
    // One inbox: what is unread for each child shows on the picker, and the
    // title counts every conversation, whichever child is picked.
    const perChild = app.unreadPerChild();
    if (el.childSelect) {
      if (el.childSelect.value !== String(app.childId)) el.childSelect.value = String(app.childId);
      for (const option of el.childSelect.options) {
        const child = app.me.children.find((c) => c.id === Number(option.value));
        const count = perChild.get(child.id) || 0;
        const label = count ? t("child.with_unread", { name: child.name, count }) : child.name;
        if (option.textContent !== label) option.textContent = label;
      }
      const others = app.me.children.filter((c) => c.id !== app.childId && perChild.get(c.id));
      const signature = others.map((c) => `${c.id}:${perChild.get(c.id)}`).join() + language();
      if (el.otherChildren.dataset.sig !== signature) {
        el.otherChildren.dataset.sig = signature;
        replaceChildren(el.otherChildren, others.map((c) => h("button", {
          type: "button", class: "chip other-child", onclick: () => app.setChild(c.id),
          "aria-label": t("child.switch_unread", { name: c.name, count: perChild.get(c.id) }),
        }, c.name.split(" ")[0], " ", h("span", { class: "badge" }, String(perChild.get(c.id))))));
      }
    }
    const total = [...app.convs.values()].reduce((n, c) => n + (c.summary.unread || 0), 0);
    document.title = total ? `(${total}) ${t("app.title")}` : t("app.title");
  }

  renderList() {
    const app = this.app;
    const convs = app.visibleConversations();
    if (!convs.length) {
      replaceChildren(this.el.list, h("li", { class: "empty" }, t("list.empty")));
      return;
    }
    replaceChildren(this.el.list, convs.map((conv) => {
      const s = conv.summary;
      const last = s.last_message;
      let preview = t("list.no_message");
      if (last) {
        const author = last.author === app.me.id ? t("msg.you") : (conv.names.get(last.author) || "");
        const text = last.retracted ? t("msg.removed") : (last.text || t("list.attachment"));
        preview = author ? t("list.preview", { author, text }) : text;
      }
      const unread = s.unread || 0;
      return h("li", {},
        h("button", {
          type: "button", class: "conv-item" + (unread ? " has-unread" : ""), "data-focus-key": `conv-${s.id}`,
          "aria-current": app.selectedId === s.id ? "true" : false, onclick: () => this.open(s.id),
        },
          h("span", { class: "conv-title" }, s.locked ? icon("lock") : null, this.title(conv),
            s.locked ? srOnly(` (${t("list.locked")})`) : null),
          s.child && !app.isParent() ? h("span", { class: "conv-child" }, s.child.name) : null,
          h("span", { class: "conv-preview" }, preview),
          last ? h("time", { class: "conv-time", datetime: last.created_at }, formatTime(last.created_at)) : null,
          unread ? h("span", { class: "badge unread" }, String(unread), srOnly(" " + t("list.unread_suffix")))
            : null));
    }));
  }

  open(id) {
    this.ui = { editing: null, confirming: null, picker: null };
    this.app.select(id);
    setTimeout(() => this.el.pane?.querySelector(".conv-title-heading")?.focus(), 0);
  }

  back() {
    const id = this.app.selectedId;
    this.app.selectedId = null;
    this.app.changed();
    setTimeout(() => this.app.root.querySelector(`[data-focus-key="conv-${id}"]`)?.focus(), 0);
  }

  // -- the open conversation -----------------------------------------------------------------------------
  renderConversation() {
    const app = this.app;
    const conv = app.selectedId === null ? null : app.convs.get(app.selectedId);
    const pane = this.el.pane;
    const key = conv ? `${conv.id}/${language()}` : `none/${language()}`;
    if (this.paneFor !== key) {
      this.paneFor = key;
      this.nodes.clear();
      this.clearUploads();
      if (!conv) {
        replaceChildren(pane, h("p", { class: "placeholder" }, t("conv.pick")));
        return;
      }
      this.buildPane(conv);
    }
    if (!conv) return;
    this.renderConvHead(conv);
    this.renderLog(conv);
    this.renderTyping(conv);
    this.renderErrors();
    this.renderComposerState(conv);
  }

  buildPane(conv) {
    const el = this.el;
    el.head = h("div", { class: "conv-head" });
    el.banners = h("div", { class: "banners" });
    el.older = h("div", { class: "older" });
    el.log = h("ol", { class: "log", role: "log", "aria-label": t("conv.messages_label"), tabindex: "0" });
    el.logWrap = h("div", { class: "log-wrap" }, el.older, el.log);
    el.typing = h("p", { class: "typing", "aria-live": "polite" });
    el.errors = h("div", { class: "errors", role: "alert" });
    el.composer = this.buildComposer(conv);
    replaceChildren(el.pane, el.head, el.banners, el.logWrap, el.typing, el.errors, el.composer);
  }

  renderConvHead(conv) {
    const app = this.app;
    const s = conv.summary;
    const me = app.me;
    const isDirection = me.role === "direction" && (me.schools || []).some((x) => x.id === s.school_id);
    const names = (s.members || []).map((m) => m.name).join(", ");
    const headSig = JSON.stringify([s.name, names, s.locked, s.child?.id, language(), conv.loading, conv.hasOlder()]);
    if (this.el.head.dataset.sig !== headSig) {
      this.el.head.dataset.sig = headSig;
      replaceChildren(this.el.head,
        h("button", { type: "button", class: "back icon-button", "aria-label": t("conv.back"), title: t("conv.back"),
          onclick: () => this.back() }, icon("back")),
        h("div", { class: "conv-heading" },
          h("h2", { class: "conv-title-heading", tabindex: "-1" }, s.locked ? icon("lock") : null, this.title(conv)),
          s.child ? h("p", { class: "conv-sub" }, t("conv.about", { child: s.child.name })) : null,
          h("p", { class: "conv-sub" }, t("conv.members", { names }))),
        h("div", { class: "conv-actions" },
          me.role === "transport" ? null : h("button", { type: "button", class: "small", "data-focus-key": "add",
            disabled: s.locked, onclick: () => app.panels.openAddPeople(conv) }, t("conv.add")),
          h("button", { type: "button", class: "small", "data-focus-key": "manage",
            onclick: () => app.panels.openManage(conv) }, t("conv.manage")),
          isDirection ? (s.locked
            ? h("button", { type: "button", class: "small", "data-focus-key": "lock",
              onclick: () => app.panels.unlock(conv.id) }, icon("unlock"), t("conv.unlock"))
            : h("button", { type: "button", class: "small danger", "data-focus-key": "lock",
              onclick: () => app.panels.openLock(conv.id) }, icon("lock"), t("conv.lock"))) : null));
      // R11: the response-delay notice; R10: the lock.
      replaceChildren(this.el.banners,
        s.notice ? h("p", { class: "notice", role: "note" },
          icon("clock"), h("strong", {}, t("conv.notice_label")), pick(s.notice)) : null,
        s.locked ? h("p", { class: "locked-banner", role: "status" }, icon("lock"),
          t("conv.locked_banner"), s.lock_reason ? " " + t("conv.lock_reason", { reason: s.lock_reason }) : "") : null);
      replaceChildren(this.el.older,
        conv.loading ? h("p", { class: "help" }, t("conv.loading"))
          : conv.hasOlder() ? h("button", { type: "button", class: "ghost small", onclick: () => app.loadOlder(conv) },
            t("conv.older")) : null);
    }
  }

  renderLog(conv) {
    const app = this.app;
    const log = this.el.log;
    const wrap = this.el.logWrap;
    const atBottom = wrap.scrollHeight - wrap.scrollTop - wrap.clientHeight < 40;
    const items = conv.timeline();
    const seenClientIds = new Set(items.filter((i) => i.kind === "message" && i.clientId).map((i) => i.clientId));
    const wanted = [];
    for (const item of items) {
      if (item.kind === "message") wanted.push(this.node(`m${item.id}`, this.messageSig(item, conv), () => this.messageEl(item, conv)));
      else wanted.push(this.node(`s${item.seq}`, language(), () => this.systemEl(item, conv)));
    }
    for (const [clientId, ack] of app.acked) {
      if (ack.conversation_id === conv.id && !seenClientIds.has(clientId)) {
        wanted.push(this.node(`a${clientId}`, "sent" + language(), () => this.pendingEl(ack.item, "sent")));
      }
    }
    for (const item of app.persisted.outbox) {
      if (item.conversation_id !== conv.id || seenClientIds.has(item.client_id)) continue;
      const sig = JSON.stringify([item.state, item.error, language()]);
      wanted.push(this.node(`o${item.client_id}`, sig, () => this.pendingEl(item, item.state)));
    }
    const keep = new Set(wanted);
    for (const child of [...log.children]) if (!keep.has(child)) child.remove();
    wanted.forEach((el, i) => { if (log.children[i] !== el) log.insertBefore(el, log.children[i] || null); });
    if (atBottom) wrap.scrollTop = wrap.scrollHeight;
  }

  node(key, sig, build) {
    const cached = this.nodes.get(key);
    if (cached && cached.sig === sig) return cached.el;
    const el = build();
    if (cached && cached.el.contains(document.activeElement)) {
      // Keep keyboard focus on the same control of the rebuilt message.
      const focusKey = document.activeElement.dataset.focusKey;
      queueMicrotask(() => { if (focusKey) el.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`)?.focus(); });
    }
    this.nodes.set(key, { sig, el });
    return el;
  }

  messageSig(msg, conv) {
    const ui = this.ui;
    return JSON.stringify([msg.text, msg.edited, msg.retracted, [...msg.reactions].map(([e, r]) => [e, r.count,
      r.people.has(this.app.me.id)]), msg.attachments.map((a) => a.id), ui.editing === msg.id, ui.confirming === msg.id,
    ui.picker === msg.id, conv.summary.locked, language(), conv.names.get(msg.author)]);
  }

  systemEl(item, conv) {
    let text;
    if (item.code === "conversation.locked" || item.code === "conversation.unlocked") {
      // Direction locks without being a member: the role is named when the name is unknown.
      const verb = item.code === "conversation.locked" ? "event.locked" : "event.unlocked";
      const name = conv.names.get(item.actor);
      text = item.actor === this.app.me.id ? t(verb + "_self")
        : name ? t(verb, { actor: name }) : t(verb + "_direction");
      if (item.code === "conversation.locked" && item.reason) text += " " + t("conv.lock_reason", { reason: item.reason });
    } else {
      text = pick(item.system);
    }
    return h("li", { class: "system" }, h("span", {}, text), " ",
      item.at ? h("time", { datetime: item.at }, formatTime(item.at)) : null);
  }

  messageEl(msg, conv) {
    const app = this.app;
    const mine = msg.author === app.me.id;
    const locked = conv.summary.locked;
    const ui = this.ui;
    const body = [];
    if (msg.retracted) {
      body.push(h("p", { class: "text removed" }, t("msg.removed")));
    } else if (ui.editing === msg.id) {
      const area = h("textarea", { id: `edit-${msg.id}`, class: "input", rows: "3", "data-focus-key": `edit-${msg.id}` });
      area.value = ui.editDraft ?? msg.text;
      area.addEventListener("input", () => { ui.editDraft = area.value; });
      body.push(h("form", { class: "edit-form", onsubmit: async (e) => {
        e.preventDefault();
        const text = area.value.trim();
        if (!text) return;
        try { await app.edit(msg.id, text); ui.editing = null; ui.editDraft = null; app.changed(); } catch (_) { /* shown */ }
      } },
        h("label", { for: `edit-${msg.id}`, class: "sr-only" }, t("msg.edit_label")),
        area,
        h("div", { class: "row" },
          h("button", { type: "submit", class: "primary small" }, t("msg.save")),
          h("button", { type: "button", class: "small", onclick: () => { ui.editing = null; ui.editDraft = null; app.changed(); } },
            t("msg.cancel")))));
      setTimeout(() => area.focus(), 0);
    } else if (msg.text) {
      body.push(h("p", { class: "text" }, msg.text));
    }
    if (!msg.retracted && msg.attachments.length) body.push(this.attachmentsEl(msg.attachments));
    const reactions = !msg.retracted && msg.reactions.size ? h("div", { class: "reactions" },
      [...msg.reactions].map(([emoji, r]) => {
        const minePressed = r.people.has(app.me.id);
        return h("button", {
          type: "button", class: "chip" + (minePressed ? " mine" : ""), "aria-pressed": String(minePressed),
          "data-focus-key": `chip-${msg.id}-${emoji}`, disabled: locked,
          "aria-label": t("msg.reaction_chip", { emoji, count: r.count,
            mine: minePressed ? t("msg.reaction_mine") : t("msg.reaction_not_mine") }),
          onclick: () => app.react(msg.id, emoji, !minePressed).catch(() => {}),
        }, emoji, " ", h("span", { class: "count" }, String(r.count)));
      })) : null;
    let actions = null;
    if (!msg.retracted && !locked && ui.editing !== msg.id) {
      if (ui.confirming === msg.id) {
        actions = h("div", { class: "actions confirm" }, h("span", {}, t("msg.retract_confirm")),
          h("button", { type: "button", class: "small danger", "data-focus-key": `yes-${msg.id}`, onclick: async () => {
            try { await app.retract(msg.id); } catch (_) { /* shown */ }
            ui.confirming = null; app.changed();
          } }, t("msg.retract_yes")),
          h("button", { type: "button", class: "small", onclick: () => { ui.confirming = null; app.changed(); } },
            t("msg.cancel")));
        setTimeout(() => actions.querySelector("button")?.focus(), 0);
      } else {
        actions = h("div", { class: "actions" },
          h("button", { type: "button", class: "link", "aria-expanded": String(ui.picker === msg.id),
            "data-focus-key": `react-${msg.id}`, onclick: () => { ui.picker = ui.picker === msg.id ? null : msg.id; app.changed(); } },
          icon("smile"), t("msg.react")),
          mine ? h("button", { type: "button", class: "link", "data-focus-key": `edit-btn-${msg.id}`, onclick: () => {
            ui.editing = msg.id; ui.editDraft = msg.text; ui.picker = null; app.changed();
          } }, t("msg.edit")) : null,
          mine ? h("button", { type: "button", class: "link", "data-focus-key": `retract-${msg.id}`, onclick: () => {
            ui.confirming = msg.id; ui.picker = null; app.changed();
          } }, t("msg.retract")) : null);
      }
    }
    const picker = ui.picker === msg.id && !locked && !msg.retracted
      ? h("div", { class: "picker", role: "group", "aria-label": t("msg.react") }, QUICK_EMOJI.map((emoji) =>
        h("button", { type: "button", class: "emoji", "aria-label": t("msg.react_with", { emoji }), onclick: () => {
          ui.picker = null;
          const had = msg.reactions.get(emoji)?.people.has(app.me.id);
          app.react(msg.id, emoji, !had).catch(() => {});
          app.changed();
        } }, emoji)))
      : null;
    return h("li", { class: "msg " + (mine ? "mine" : "theirs"), "data-message-id": msg.id },
      h("div", { class: "meta" },
        h("span", { class: "author" }, this.name(conv, msg.author)), " ",
        h("time", { datetime: msg.createdAt }, formatTime(msg.createdAt)),
        msg.edited && !msg.retracted ? h("span", { class: "edited" }, " ", t("msg.edited")) : null),
      body, reactions, actions, picker,
      mine && !msg.retracted ? h("p", { class: "msg-status sent" }, "✓ ", t("msg.status.sent")) : null);
  }

  pendingEl(item, state) {
    const app = this.app;
    const views = item.attachment_views || [];
    return h("li", { class: `msg mine pending state-${state}`, "data-client-id": item.client_id },
      h("div", { class: "meta" }, h("span", { class: "author" }, t("msg.you")), " ",
        h("time", { datetime: item.created_at }, formatTime(item.created_at))),
      item.text ? h("p", { class: "text" }, item.text) : null,
      views.length ? h("ul", { class: "attachments" }, views.map((a) => h("li", { class: "file" }, icon("paperclip"), a.name))) : null,
      h("p", { class: "msg-status " + state },
        state === "sending" ? icon("clock") : state === "failed" ? "⚠ " : "✓ ",
        t("msg.status." + state),
        item.error ? h("span", { class: "why" }, " — ", item.error) : null),
      state === "failed" ? h("div", { class: "actions" },
        h("button", { type: "button", class: "link", onclick: () => app.retry(item.client_id) }, t("msg.retry")),
        h("button", { type: "button", class: "link", onclick: () => app.discard(item.client_id) }, t("msg.discard")))
        : null);
  }

  attachmentsEl(attachments) {
    const app = this.app;
    return h("ul", { class: "attachments" }, attachments.map((a) => {
      if (a.type === "image/jpeg" || a.type === "image/png") {
        const img = h("img", { alt: t("msg.image_alt", { name: a.name }), class: "thumb",
          width: a.width ? Math.min(a.width, 240) : false, loading: "lazy" });
        if (!this.images.has(a.id)) this.images.set(a.id, app.api.blobUrl(a.url));
        this.images.get(a.id).then((url) => { img.src = url; }, () => { this.images.delete(a.id); });
        return h("li", { class: "image" }, img, h("span", { class: "file-name" }, a.name));
      }
      return h("li", { class: "file" }, h("button", { type: "button", class: "link",
        "aria-label": t("msg.attachment_download", { name: a.name, size: formatSize(a.size) }),
        onclick: () => app.api.download(a.url, a.name).catch((err) => app.showError(err.message)) },
      icon("file"), a.name, " ", h("span", { class: "size" }, `(${formatSize(a.size)})`)));
    }));
  }

  renderTyping(conv) {
    const now = Date.now();
    const names = [...conv.typing].filter(([, until]) => until > now).map(([id]) => this.name(conv, id));
    this.el.typing.textContent = names.length ? t("conv.typing", { name: names.join(", ") }) : "";
  }

  renderErrors() {
    const errors = this.app.errors;
    const sig = JSON.stringify([errors, language()]);
    if (this.el.errors.dataset.sig === sig) return;
    this.el.errors.dataset.sig = sig;
    replaceChildren(this.el.errors, errors.map((text) => h("p", { class: "error" },
      h("span", {}, "⚠ ", text), " ",
      h("button", { type: "button", class: "link", onclick: () => this.app.clearError() }, t("close")))));
  }

  // -- the composer ---------------------------------------------------------------------------------------
  buildComposer(conv) {
    const app = this.app;
    const el = this.el;
    el.text = h("textarea", { id: "composer-text", class: "input", rows: "2", placeholder: t("composer.placeholder"),
      maxlength: "4000" });
    el.text.value = app.drafts.get(conv.id) || "";
    el.text.addEventListener("input", () => {
      app.drafts.set(conv.id, el.text.value);
      if (el.text.value.trim()) app.typing(conv.id);
    });
    el.text.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        el.composer.requestSubmit();
      }
    });
    el.file = h("input", { id: "composer-file", type: "file", multiple: true, class: "sr-only", tabindex: "-1",
      accept: ".jpg,.jpeg,.png,.pdf,.docx,image/jpeg,image/png,application/pdf,"
        + "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
      onchange: () => { this.addFiles([...el.file.files], conv); el.file.value = ""; } });
    el.attach = h("button", { type: "button", class: "icon-button attach", "aria-label": t("composer.attach"),
      title: t("composer.attach"), onclick: () => el.file.click() }, icon("paperclip"));
    el.send = h("button", { type: "submit", class: "primary" }, t("composer.send"));
    el.uploadList = h("ul", { class: "uploads", "aria-live": "polite" });
    el.composerNote = h("p", { class: "composer-note", role: "status" });
    return h("form", { class: "composer", onsubmit: (e) => { e.preventDefault(); this.submit(conv); } },
      el.composerNote,
      el.uploadList,
      h("div", { class: "composer-row" },
        el.attach, el.file,
        h("label", { for: "composer-text", class: "sr-only" }, t("composer.label")),
        el.text,
        el.send));
  }

  renderComposerState(conv) {
    const el = this.el;
    const locked = Boolean(conv.summary.locked);
    el.text.disabled = locked;
    el.attach.disabled = locked;
    el.send.disabled = locked || this.uploads.some((u) => !u.view && !u.error);
    let note = "";
    if (locked) note = t("composer.locked");
    else if (this.app.connState !== "connected") note = t("composer.offline_hint");
    el.composerNote.textContent = note;
    el.composerNote.className = "composer-note" + (locked ? " locked" : note ? " offline" : "");
    el.composer.classList.toggle("is-locked", locked);
  }

  submit(conv) {
    const el = this.el;
    if (conv.summary.locked) return;
    if (this.uploads.some((u) => !u.view && !u.error)) return; // still uploading
    const text = el.text.value.trim();
    const attachments = this.uploads.filter((u) => u.view).map((u) => u.view);
    if (!text && !attachments.length) return;
    this.app.send(conv.id, text, attachments);
    el.text.value = "";
    this.app.drafts.delete(conv.id);
    this.uploads = [];
    this.renderUploads();
    el.text.focus();
  }

  // -- attachments (R7): checked here for size and count, by content on the server --------------------------
  addFiles(files, conv) {
    const app = this.app;
    for (const file of files) {
      const entry = { id: Math.random().toString(36).slice(2), name: file.name, loaded: 0, total: file.size,
        view: null, error: null, abort: null };
      this.uploads.push(entry);
      if (this.uploads.filter((u) => !u.error).length > MAX_ATTACHMENTS) {
        entry.error = t("upload.too_many");
      } else if (file.size > MAX_FILE_BYTES) {
        entry.error = t("upload.too_large", { name: file.name });
      } else if (app.connState === "offline") {
        entry.error = t("upload.offline");
      } else {
        const { promise, abort } = app.api.upload(file, (loaded, total) => {
          entry.loaded = loaded;
          entry.total = total;
          this.renderUploads();
        });
        entry.abort = abort;
        promise.then((view) => { entry.view = view; }, (err) => {
          if (err.code === "aborted") return;
          // A refused type names the file, not what the server's content check saw (R7).
          entry.error = err.code === "attachment.type_not_allowed" ? t("upload.type_refused", { name: file.name })
            : err.message || t("upload.failed", { name: file.name, status: err.status || t("upload.network") });
        }).finally(() => { this.renderUploads(); this.renderComposerState(conv); });
      }
    }
    this.renderUploads();
    this.renderComposerState(conv);
  }

  removeUpload(entry) {
    if (entry.abort && !entry.view && !entry.error) entry.abort();
    this.uploads = this.uploads.filter((u) => u !== entry);
    this.renderUploads();
    const conv = this.app.convs.get(this.app.selectedId);
    if (conv) this.renderComposerState(conv);
  }

  clearUploads() {
    for (const u of this.uploads) if (u.abort && !u.view && !u.error) u.abort();
    this.uploads = [];
  }

  renderUploads() {
    if (!this.el.uploadList) return;
    replaceChildren(this.el.uploadList, this.uploads.map((u) => h("li", { class: "upload" + (u.error ? " failed" : "") },
      h("span", { class: "file-name" }, u.view ? icon("paperclip") : null, u.name),
      !u.view && !u.error ? h("progress", { max: String(u.total || 1), value: String(u.loaded),
        "aria-label": t("composer.uploading", { name: u.name }) }) : null,
      u.view ? h("span", { class: "size" }, formatSize(u.view.size)) : null,
      u.error ? h("span", { class: "error", role: "alert" }, "⚠ ", u.error) : null,
      h("button", { type: "button", class: "link", "aria-label": t("composer.remove_attachment", { name: u.name }),
        onclick: () => this.removeUpload(u) }, "✕"))));
  }
}
