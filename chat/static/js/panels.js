// Dialogs over the main screen (native <dialog>: focus kept inside, Escape
// closes, focus returns to the opener): the notification bell (R16), the
// announcements with their megaphone (R13), notification preferences per child
// (R17), a new conversation (R2), adding people with or without history (R4),
// locking (R10) and direction's archive (R9).

import { h, replaceChildren } from "./dom.js";
import { icon } from "./icons.js";
import { formatSize, formatTime, language, pick, t } from "./i18n.js";
import { QUICK_EMOJI } from "./views.js";

const KIND_ICON = { announcement: "megaphone", transport: "bus", observation: "file", absence: "file" };

export class Panels {
  constructor(app) {
    this.app = app;
    this.stack = [];
  }

  // -- the dialog frame ---------------------------------------------------------------------------------
  open(kind, title, build, live = null) {
    const opener = document.activeElement;
    const id = `panel-${kind}`;
    const body = h("div", { class: "panel-body" });
    const dlg = h("dialog", { class: `panel panel-${kind}`, "aria-labelledby": id });
    const closeButton = h("button", { type: "button", class: "icon-button", "aria-label": t("close"),
      onclick: () => dlg.close() }, h("span", { "aria-hidden": "true" }, "✕"));
    dlg.append(h("div", { class: "panel-head" }, h("h2", { id }, title), closeButton), body);
    const entry = { kind, dlg, body, live, sig: null };
    dlg.addEventListener("close", () => {
      dlg.remove();
      this.stack = this.stack.filter((e) => e !== entry);
      if (opener && document.contains(opener)) opener.focus();
    });
    document.body.append(dlg);
    this.stack.push(entry);
    build(body, entry);
    dlg.showModal();
    return entry;
  }

  top(kind) {
    return this.stack.find((e) => e.kind === kind) || null;
  }

  close(kind) {
    this.top(kind)?.dlg.close();
  }

  closeAll() {
    for (const entry of [...this.stack].reverse()) entry.dlg.close();
  }

  /** After every state change: redraw the live parts of open dialogs. */
  refresh() {
    for (const entry of this.stack) if (entry.live) entry.live(entry);
  }

  // -- the bell (R16) -----------------------------------------------------------------------------------
  openBell() {
    const app = this.app;
    this.opened = null;
    this.open("bell", t("bell.title"), (body, entry) => {
      entry.list = h("ul", { class: "feed" });
      body.append(h("div", { class: "row end" }, h("button", { type: "button", class: "small", onclick: async () => {
        const child = app.isParent() ? app.childId : null;
        try {
          await app.api.post("/api/notifications/read", child === null ? {} : { child_id: child });
          for (const n of app.bell.items) n.read = true;
        } catch (err) { app.showError(err.message); }
        app.refreshBell(0);
      } }, t("bell.read_all"))), entry.list);
      app.refreshBell(0);
    }, (entry) => this.drawBell(entry));
    this.drawBell(this.top("bell"));
  }

  drawBell(entry) {
    const app = this.app;
    const items = app.bell.items;
    const sig = JSON.stringify([items.map((n) => [n.id, n.read]), this.opened?.id, document.documentElement.lang]);
    if (entry.sig === sig) return;
    entry.sig = sig;
    if (!items.length) {
      replaceChildren(entry.list, h("li", { class: "empty" }, t("bell.empty")));
      return;
    }
    replaceChildren(entry.list, items.map((n) => {
      const opened = this.opened && this.opened.id === n.id ? this.opened : null;
      return h("li", { class: "feed-item" + (n.read ? "" : " unread") },
        h("button", { type: "button", class: "feed-open", "aria-expanded": String(Boolean(opened)),
          "data-focus-key": `notif-${n.id}`, onclick: () => this.openNotification(n) },
        h("span", { class: "feed-text" }, pick(n.text)),
        h("span", { class: "feed-meta" },
          h("time", { datetime: n.delivered_at || n.created_at }, formatTime(n.delivered_at || n.created_at)),
          n.read ? null : h("span", { class: "tag" }, t("bell.new")),
          n.urgent ? h("span", { class: "tag urgent" }, t("bell.urgent")) : null)),
        opened ? h("div", { class: "feed-detail" },
          h("p", {}, pick(opened.text)),
          opened.child ? h("p", { class: "help" }, t("conv.about", { child: opened.child.name })) : null,
          opened.link?.conversation_id && app.convs.has(opened.link.conversation_id)
            ? h("button", { type: "button", class: "primary small", onclick: () => {
              this.close("bell");
              app.views.open(opened.link.conversation_id);
            } }, t("bell.open_conversation")) : null,
          opened.link?.announcement_id ? h("button", { type: "button", class: "primary small", onclick: () => {
            this.close("bell");
            this.openAnnouncements();
          } }, t("bell.open_announcement")) : null) : null);
    }));
  }

  async openNotification(n) {
    const app = this.app;
    if (this.opened && this.opened.id === n.id) {
      this.opened = null;
      app.changed();
      return;
    }
    try {
      // R16: opening one shows its details and marks it read.
      const detail = await app.api.get(`/api/notifications/${n.id}`);
      this.opened = detail;
      // The feed may have been re-read since it was drawn: mark the current entry.
      const current = app.bell.items.find((item) => item.id === n.id) || n;
      if (!current.read) {
        current.read = true;
        app.bell.unread = Math.max(0, (app.bell.unread || 0) - 1);
      }
      app.refreshBell();
    } catch (err) {
      app.showError(err.message);
    }
    app.changed();
  }

  // -- announcements (R13) --------------------------------------------------------------------------------
  audiences() {
    const me = this.app.me;
    const out = [];
    for (const g of me.groups || []) out.push({ label: t("ann.audience_group", { name: g.name }), value: { groups: [g.id] } });
    if (me.role === "staff" || me.role === "direction") {
      for (const s of me.schools || []) out.push({ label: t("ann.audience_school", { name: s.name }), value: { school: s.id } });
    }
    return out;
  }

  openAnnouncements() {
    const app = this.app;
    this.open("announcements", [icon("megaphone"), " ", t("ann.title")], (body, entry) => {
      const audiences = this.audiences();
      if (audiences.length) {
        const select = h("select", { id: "ann-audience", class: "input" },
          audiences.map((a, i) => h("option", { value: String(i) }, a.label)));
        const text = h("textarea", { id: "ann-text", class: "input", rows: "3", maxlength: "4000", required: true });
        const urgent = app.me.role === "direction" ? h("input", { id: "ann-urgent", type: "checkbox" }) : null;
        const status = h("p", { class: "help", role: "status" });
        body.append(h("form", { class: "card post-form", onsubmit: async (e) => {
          e.preventDefault();
          if (!text.value.trim()) return;
          const frame = { type: "announcement.post", audience: audiences[Number(select.value)].value, text: text.value.trim() };
          if (urgent?.checked) frame.urgent = true;
          try {
            const ok = await app.request(frame);
            text.value = "";
            status.textContent = t("ann.posted", { count: ok.announcement.recipient_count });
            app.announcementArrived(ok.announcement);
          } catch (_) { /* shown */ }
        } },
          h("h3", {}, t("ann.post_title")),
          h("label", { for: "ann-audience" }, t("ann.audience")), select,
          h("label", { for: "ann-text" }, t("ann.text")), text,
          urgent ? h("div", { class: "check" }, urgent, h("label", { for: "ann-urgent" }, t("ann.urgent"))) : null,
          h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, icon("megaphone"), t("ann.post"))),
          status));
      }
      if (app.isParent()) body.append(h("p", { class: "help" }, t("ann.no_reply")));
      entry.list = h("ul", { class: "announcements" });
      body.append(entry.list);
    }, (entry) => this.drawAnnouncements(entry));
    this.drawAnnouncements(this.top("announcements"));
  }

  drawAnnouncements(entry) {
    const app = this.app;
    const list = app.visibleAnnouncements();
    // Shown is read (recipients only: a.read is set for them).
    for (const a of list) {
      if (a.read === false && !a.marking) {
        a.marking = true;
        app.conn?.request({ type: "announcement.read", announcement_id: a.id })
          .then(() => { a.read = true; app.changed(); }, () => {}).finally(() => { a.marking = false; });
      }
    }
    const sig = JSON.stringify([list.map((a) => [a.id, a.reactions, a.my_reactions]), document.documentElement.lang]);
    if (entry.sig === sig) return;
    entry.sig = sig;
    if (!list.length) {
      replaceChildren(entry.list, h("li", { class: "empty" }, t("ann.empty")));
      return;
    }
    replaceChildren(entry.list, list.map((a) => {
      const recipient = "read" in a;
      const mine = new Set(a.my_reactions || []);
      const counts = a.reactions || {};
      const emojis = recipient ? QUICK_EMOJI : Object.keys(counts);
      return h("li", { class: "announcement" + (a.urgent ? " urgent" : "") },
        h("article", { "aria-labelledby": `ann-${a.id}` },
          h("header", {},
            h("span", { class: "megaphone kind-" + a.kind },
              icon(a.megaphone ? "megaphone" : (KIND_ICON[a.kind] || "megaphone"),
                a.megaphone ? t("ann.megaphone") : t("kind." + a.kind))),
            h("h3", { id: `ann-${a.id}` }, t("ann.from", { name: a.author?.name || a.source || "" })),
            h("time", { datetime: a.created_at }, formatTime(a.created_at)),
            a.urgent ? h("span", { class: "tag urgent" }, t("bell.urgent")) : null),
          a.children && a.children.length ? h("p", { class: "help" },
            t("ann.for_child", { names: a.children.map((c) => c.name).join(", ") })) : null,
          h("p", { class: "text" }, a.text),
          emojis.length ? h("div", { class: "reactions", role: recipient ? "group" : null,
            "aria-label": recipient ? t("msg.react") : null }, emojis.map((emoji) => {
            const count = counts[emoji] || 0;
            if (!recipient) return h("span", { class: "chip" }, emoji, " ", h("span", { class: "count" }, String(count)));
            const pressed = mine.has(emoji);
            return h("button", { type: "button", class: "chip" + (pressed ? " mine" : ""), "aria-pressed": String(pressed),
              "aria-label": t("msg.reaction_chip", { emoji, count,
                mine: pressed ? t("msg.reaction_mine") : t("msg.reaction_not_mine") }),
              onclick: async () => {
                try {
                  const ok = await app.request({ type: pressed ? "announcement.unreact" : "announcement.react",
                    announcement_id: a.id, emoji });
                  a.reactions = { ...(a.reactions || {}), [emoji]: ok.count };
                  a.my_reactions = pressed ? (a.my_reactions || []).filter((x) => x !== emoji)
                    : [...(a.my_reactions || []), emoji];
                  app.changed();
                } catch (_) { /* shown */ }
              } }, emoji, count ? h("span", { class: "count" }, " ", String(count)) : null);
          })) : null));
    }));
  }

  // -- preferences (R17) -------------------------------------------------------------------------------------
  openPreferences() {
    const app = this.app;
    const child = app.isParent() ? (app.me.children || []).find((c) => c.id === app.childId) || null : null;
    this.open("prefs", t("prefs.title"), async (body) => {
      const status = h("p", { class: "help", role: "status" });
      body.append(h("p", { class: "help" }, t("prefs.help")));
      let prefs;
      try { prefs = await app.api.get("/api/preferences"); } catch (err) { app.showError(err.message); return; }
      const childId = child ? child.id : null;
      const enabled = (kind) => {
        const row = prefs.preferences.find((p) => (p.child_id ?? null) === childId && p.kind === kind);
        return row ? row.enabled : prefs.default;
      };
      body.append(h("fieldset", { class: "prefs" },
        h("legend", {}, child ? t("prefs.for_child", { child: child.name }) : t("prefs.for_me")),
        prefs.kinds.map((kind) => {
          const box = h("input", { type: "checkbox", id: `pref-${kind}`, checked: enabled(kind), onchange: async () => {
            try {
              await app.api.put("/api/preferences", { child_id: childId, kind, enabled: box.checked });
              status.textContent = t("prefs.saved");
            } catch (err) {
              box.checked = !box.checked;
              status.textContent = err.message || t("error.generic");
            }
          } });
          return h("div", { class: "check" }, box, h("label", { for: `pref-${kind}` }, t("kind." + kind)));
        })), status);
    });
  }

  // -- conversations: create (R2), add (R4), lock (R10) --------------------------------------------------
  async contacts(childId) {
    const query = childId ? `?child_id=${childId}` : "";
    return (await this.app.api.get("/api/contacts" + query)).contacts;
  }

  peopleFieldset(people, legend) {
    return h("fieldset", { class: "people-pick" }, h("legend", {}, legend), people.map((p) => h("div", { class: "check" },
      h("input", { type: "checkbox", id: `person-${p.id}`, value: String(p.id), name: "person" }),
      h("label", { for: `person-${p.id}` }, p.name, h("span", { class: "role" }, " · ", t("role." + p.role))))));
  }

  openNewConversation() {
    const app = this.app;
    const childId = app.isParent() ? app.childId : null;
    this.open("new", t("new.title"), async (body) => {
      let people;
      try { people = await this.contacts(childId); } catch (err) {
        body.append(h("p", { class: "error", role: "alert" }, err.message || t("error.generic")));
        return;
      }
      if (!people.length) { body.append(h("p", {}, t("new.no_contacts"))); return; }
      const name = h("input", { id: "new-name", class: "input", maxlength: "100", autocomplete: "off" });
      const error = h("p", { class: "error", role: "alert" });
      const form = h("form", { onsubmit: async (e) => {
        e.preventDefault();
        const ids = [...form.querySelectorAll("input[name=person]:checked")].map((b) => Number(b.value));
        if (form.dataset.pickedSig !== ids.join()) delete form.dataset.confirmed; // another choice: ask again
        form.dataset.pickedSig = ids.join();
        const frame = { type: "conversation.create", participants: ids };
        if (childId !== null) frame.child_id = childId;
        if (name.value.trim()) frame.name = name.value.trim();
        // The same people about the same child: offer the conversation they already have.
        const same = form.dataset.confirmed ? null : app.sameConversation(ids, childId);
        if (same) {
          form.dataset.confirmed = "1";
          replaceChildren(error, t("new.exists", { title: app.views.title(same) }), " ",
            h("button", { type: "button", class: "small primary", onclick: () => {
              this.close("new");
              app.views.open(same.id);
            } }, t("new.open_existing")));
          return;
        }
        try {
          const ok = await app.conn.request(frame);
          app.joined(ok.conversation);
          this.close("new");
          app.views.open(ok.conversation.id);
        } catch (err) {
          error.textContent = err.message || t("error.offline");
        }
      } },
        h("label", { for: "new-name" }, t("new.name")), name,
        this.peopleFieldset(people, t("new.people")),
        error,
        h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, t("new.create"))));
      body.append(form);
    });
  }

  openAddPeople(conv) {
    const app = this.app;
    this.open("add", t("add.title"), async (body) => {
      let people;
      try { people = await this.contacts(conv.summary.child?.id); } catch (err) {
        body.append(h("p", { class: "error", role: "alert" }, err.message || t("error.generic")));
        return;
      }
      const members = new Set((conv.summary.members || []).map((m) => m.id));
      people = people.filter((p) => !members.has(p.id));
      if (!people.length) { body.append(h("p", {}, t("add.nobody"))); return; }
      const error = h("p", { class: "error", role: "alert" });
      const form = h("form", { onsubmit: async (e) => {
        e.preventDefault();
        const ids = [...form.querySelectorAll("input[name=person]:checked")].map((b) => Number(b.value));
        const share = form.querySelector("input[name=history]:checked")?.value === "with";
        try {
          await app.conn.request({ type: "conversation.add", conversation_id: conv.id, participants: ids,
            share_history: share });
          this.close("add");
        } catch (err) {
          error.textContent = err.message || t("error.offline");
        }
      } },
        this.peopleFieldset(people, t("new.people")),
        // R4: the adder chooses whether the newcomers see the earlier history.
        h("fieldset", { class: "history" }, h("legend", {}, t("add.history")),
          h("div", { class: "check" }, h("input", { type: "radio", name: "history", id: "history-without", value: "without",
            checked: true }), h("label", { for: "history-without" }, t("add.without_history"))),
          h("div", { class: "check" }, h("input", { type: "radio", name: "history", id: "history-with", value: "with" }),
            h("label", { for: "history-with" }, t("add.with_history")))),
        error,
        h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, t("add.submit"))));
      body.append(form);
    });
  }

  // -- managing a conversation: rename (R3), remove (R5, the creator), leave (R5) ----------------------
  openManage(conv) {
    const app = this.app;
    const status = h("p", { class: "status-line", role: "status" });
    const error = h("p", { class: "error", role: "alert" });
    const members = h("ul", { class: "member-list" });
    const leaveArea = h("div", { class: "leave-area" });
    const ask = async (frame, done) => {
      error.textContent = "";
      try {
        await app.conn.request(frame);
        status.textContent = done;
      } catch (err) {
        status.textContent = "";
        error.textContent = err.message || t("error.offline");
      }
    };
    const drawMembers = (entry) => {
      const s = conv.summary;
      const sig = JSON.stringify([(s.members || []).map((m) => m.id), language()]);
      if (entry.sig === sig) return;
      entry.sig = sig;
      const creator = s.creator_id === app.me.id;
      replaceChildren(members, (s.members || []).map((m) => h("li", {},
        h("span", {}, m.id === app.me.id ? t("msg.you") : m.name, h("span", { class: "role" }, " · ", t("role." + m.role))),
        creator && m.id !== app.me.id ? h("button", { type: "button", class: "small ghost",
          "aria-label": t("manage.remove_person", { name: m.name }),
          onclick: () => ask({ type: "conversation.remove", conversation_id: conv.id, person_id: m.id },
            t("manage.removed", { name: m.name })) }, t("manage.remove")) : null)));
    };
    const drawLeave = (confirming) => replaceChildren(leaveArea, confirming
      ? [h("p", {}, t("manage.leave_confirm")),
        h("div", { class: "row" },
          h("button", { type: "button", class: "danger", onclick: async () => {
            try {
              await app.conn.request({ type: "conversation.leave", conversation_id: conv.id });
              this.close("manage");
            } catch (err) {
              error.textContent = err.message || t("error.offline");
              drawLeave(false);
            }
          } }, t("manage.leave_yes")),
          h("button", { type: "button", class: "ghost", onclick: () => drawLeave(false) }, t("manage.leave_no")))]
      : h("button", { type: "button", class: "danger", onclick: () => drawLeave(true) }, t("manage.leave")));
    this.open("manage", t("manage.title"), (body, entry) => {
      const name = h("input", { id: "manage-name", class: "input", maxlength: "100", autocomplete: "off",
        value: conv.summary.name || "" });
      body.append(
        h("form", { class: "rename", onsubmit: (e) => {
          e.preventDefault();
          const frame = { type: "conversation.rename", conversation_id: conv.id };
          if (name.value.trim()) frame.name = name.value.trim();
          ask(frame, t("manage.renamed"));
        } },
          h("label", { for: "manage-name" }, t("new.name")),
          h("div", { class: "row" }, name, h("button", { type: "submit", class: "primary" }, t("manage.rename")))),
        h("h3", {}, t("manage.members")), members, status, error, leaveArea);
      drawMembers(entry);
      drawLeave(false);
    }, drawMembers);
  }

  openLock(conversationId) {
    const app = this.app;
    this.open("lock", t("lock.title"), (body) => {
      const reason = h("textarea", { id: "lock-reason", class: "input", rows: "2", maxlength: "500" });
      const error = h("p", { class: "error", role: "alert" });
      body.append(h("form", { onsubmit: async (e) => {
        e.preventDefault();
        const frame = { type: "conversation.lock", conversation_id: conversationId };
        if (reason.value.trim()) frame.reason = reason.value.trim();
        try {
          await app.conn.request(frame);
          this.close("lock");
          this.lockChanged(conversationId, true);
        } catch (err) {
          error.textContent = err.message || t("error.offline");
        }
      } },
        h("label", { for: "lock-reason" }, t("lock.reason")), reason, error,
        h("div", { class: "row" }, h("button", { type: "submit", class: "danger" }, icon("lock"), t("lock.submit")))));
    });
  }

  async unlock(conversationId) {
    try {
      await this.app.request({ type: "conversation.unlock", conversation_id: conversationId });
      this.lockChanged(conversationId, false);
    } catch (_) { /* shown */ }
  }

  lockChanged(conversationId, locked) {
    const conv = this.app.convs.get(conversationId);
    if (conv) conv.update({ locked });
    const archive = this.top("archive");
    if (archive && archive.results) {
      const row = archive.results.find((c) => c.id === conversationId);
      if (row) { row.locked = locked; archive.drawList(); }
    }
    this.app.changed();
  }

  // -- direction's archive (R9) ------------------------------------------------------------------------------
  openArchive() {
    const app = this.app;
    const schools = app.me.schools || [];
    this.open("archive", t("archive.title"), (body, entry) => {
      const school = h("select", { id: "archive-school", class: "input" },
        schools.map((s) => h("option", { value: String(s.id) }, s.name)));
      const q = h("input", { id: "archive-q", type: "search", class: "input", maxlength: "200" });
      const area = h("div", { class: "archive-area" });
      const search = async () => {
        const params = new URLSearchParams();
        if (q.value.trim()) params.set("q", q.value.trim());
        try {
          const { conversations } = await app.api.get(
            `/api/archive/schools/${school.value}/conversations?${params}`);
          entry.results = conversations;
          entry.drawList();
        } catch (err) {
          replaceChildren(area, h("p", { class: "error", role: "alert" }, err.message || t("error.generic")));
        }
      };
      entry.drawList = () => replaceChildren(area, entry.results.length ? h("ul", { class: "archive-list" },
        entry.results.map((c) => this.archiveRow(c, entry, area))) : h("p", {}, t("archive.empty")));
      body.append(h("form", { class: "archive-search", onsubmit: (e) => { e.preventDefault(); search(); } },
        schools.length > 1 ? [h("label", { for: "archive-school" }, t("archive.school")), school] : null,
        h("label", { for: "archive-q" }, t("archive.search")), q,
        h("button", { type: "submit", class: "primary small" }, t("archive.search_button"))), area);
      search();
    });
  }

  archiveRow(c, entry, area) {
    const app = this.app;
    const title = c.name || c.members.map((m) => m.name).join(", ");
    return h("li", { class: "archive-item" },
      h("h3", {}, c.locked ? icon("lock", t("list.locked")) : null, title),
      h("p", { class: "help" }, [c.child ? t("conv.about", { child: c.child.name }) : null,
        t("archive.messages", { count: c.message_count }), formatTime(c.last_message_at || c.created_at)]
        .filter(Boolean).join(" · ")),
      h("div", { class: "row" },
        h("button", { type: "button", class: "small", onclick: () => this.archiveRead(c.id, entry, area) }, t("archive.read")),
        c.locked
          ? h("button", { type: "button", class: "small", onclick: () => this.unlock(c.id) }, icon("unlock"), t("conv.unlock"))
          : h("button", { type: "button", class: "small danger", onclick: () => this.openLock(c.id) }, icon("lock"), t("conv.lock")),
        h("button", { type: "button", class: "small ghost", onclick: () => app.api.download(
          `/api/archive/conversations/${c.id}/export?format=html`, `conversation-${c.id}.html`)
          .catch((err) => app.showError(err.message)) }, t("archive.export_html")),
        h("button", { type: "button", class: "small ghost", onclick: () => app.api.download(
          `/api/archive/conversations/${c.id}/export?format=json`, `conversation-${c.id}.json`)
          .catch((err) => app.showError(err.message)) }, t("archive.export_json"))));
  }

  async archiveRead(conversationId, entry, area) {
    const app = this.app;
    let doc;
    try { doc = await app.api.get(`/api/archive/conversations/${conversationId}`); } catch (err) {
      app.showError(err.message);
      return;
    }
    const back = h("button", { type: "button", class: "small", onclick: () => entry.drawList() }, "← ", t("archive.back"));
    const lines = [
      ...doc.messages.map((m) => ({ seq: m.seq, el: h("li", { class: "archive-msg" + (m.retracted ? " retracted" : "") },
        h("div", { class: "meta" }, h("span", { class: "author" }, m.author?.name || ""), " ",
          h("time", { datetime: m.created_at }, formatTime(m.created_at)),
          m.edited ? h("span", { class: "edited" }, " ", t("msg.edited")) : null,
          m.retracted ? h("span", { class: "tag" }, t("archive.retracted")) : null),
        h("p", { class: "text" }, m.text),
        m.attachments.length ? h("ul", { class: "attachments" }, m.attachments.map((a) => h("li", {},
          h("button", { type: "button", class: "link", onclick: () => app.api.download(a.url, a.name)
            .catch((err) => app.showError(err.message)) }, icon("file"), a.name, ` (${formatSize(a.size)})`)))) : null,
        m.versions.length > 1 ? h("details", {}, h("summary", {}, t("archive.versions")),
          h("ol", {}, m.versions.slice(0, -1).map((v) => h("li", {}, h("time", { datetime: v.created_at },
            formatTime(v.created_at)), " — ", v.text)))) : null,
        m.reactions.length ? h("p", { class: "help" }, m.reactions.map((r) => `${r.emoji} ${r.count}`).join("  ")) : null) })),
      ...doc.events.map((e) => ({ seq: e.seq, el: h("li", { class: "system" },
        e.system ? pick(e.system) : e.kind === "conversation.locked"
          ? t("event.locked", { actor: e.actor?.name || "" }) + (e.reason ? " " + t("conv.lock_reason", { reason: e.reason }) : "")
          : e.kind === "conversation.unlocked" ? t("event.unlocked", { actor: e.actor?.name || "" }) : e.kind) })),
    ].sort((a, b) => a.seq - b.seq);
    replaceChildren(area, back,
      h("h3", {}, doc.name || doc.participants.map((p) => p.name).join(", ")),
      doc.child ? h("p", { class: "help" }, t("conv.about", { child: doc.child.name })) : null,
      h("ol", { class: "log archive-log" }, lines.map((l) => l.el)));
    back.focus();
  }
}
