// The school–family chat widget: the reference client of the hub's protocol
// (docs/protocol.md).  Plain ES modules, no build step, no framework.
//
//   app.js            state, the connection's frames, the outbox, actions
//   js/connection.js  WebSocket: resume, replies by id, reconnection, state
//   js/api.js         HTTP API with the bearer header; uploads with progress
//   js/store.js       what outlives a connection (positions, outbox) and a
//                     conversation's events → timeline
//   js/account.js     sign-in, the e-mailed code, account creation, forgotten
//                     password (R19); the session's tokens and their refresh;
//                     adding a child (R20) and my sessions (R21)
//   js/views.js       the conversation list and view
//   js/panels.js      dialogs: bell, announcements, preferences, new
//                     conversation, adding people, locking, archive
//   js/i18n.js        the widget's own texts, French (default) and English
//
// Embedding: any page of the hub's origin with <div data-chat-widget></div>
// and <script type="module" src="/app.js"></script> (the HTTP API sends no
// CORS headers, so another site embeds the hub's page in an iframe).

import { AccountViews, SessionTokens, childForm, sessionList } from "./js/account.js";
import { Api, ApiError } from "./js/api.js";
import { Connection } from "./js/connection.js";
import { chosenLanguage, initialLanguage, setLanguage, language, t } from "./js/i18n.js";
import { ConversationState, Persisted, newClientId } from "./js/store.js";
import { Views } from "./js/views.js";
import { Panels } from "./js/panels.js";

const TOKEN_KEY = "chat.token"; // a pasted token: sessionStorage, this tab only, never a URL
const CHILD_KEY = "chat.child";
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 4000;
// Errors after which a send is tried again by itself (nothing was stored).
const TRANSIENT = new Set(["internal.error", "rate_limited", "connection.lost", "timeout"]);

export class ChatApp {
  constructor(root) {
    this.root = root;
    setLanguage(initialLanguage());
    this.api = new Api("");
    this.token = null;
    this.me = null;
    this.conn = null;
    this.connState = "connecting";
    this.childId = null;
    this.convs = new Map();
    this.selectedId = null;
    this.persisted = null;
    this.acked = new Map(); // client_id → ok reply, until its message.new arrives
    this.orphans = new Map(); // conversation id → events that came before its summary
    this.announcements = new Map();
    this.announcementsLoaded = false;
    this.bell = { items: [], unread: 0 };
    this.errors = [];
    this.lastTypingSent = 0;
    this.drafts = new Map();
    this.tokens = new SessionTokens(this.api);
    this.tokens.onRenewed = (token) => this.renewed(token);
    this.api.renew = () => this.tokens.refresh();
    this.views = new Views(this);
    this.accountViews = new AccountViews(root, {
      signIn: (email, password) => this.step(() => this.api.post("/api/auth/signin", { email, password }),
        "signinCode", email),
      signInCode: (email, code) => this.step(() => this.api.post("/api/auth/signin/verify", { email, code })),
      signUp: (email, password) => this.step(() => this.api.post("/api/auth/signup", { email, password }),
        "signupCode", email),
      signUpCode: (email, code) => this.step(() => this.api.post("/api/auth/signup/verify", { email, code })),
      forgot: (email) => this.step(() => this.api.post("/api/auth/password/forgot", { email }), "reset", email),
      reset: (email, code, password) => this.step(() => this.api.post("/api/auth/password/reset",
        { email, code, password })),
      tokenSignIn: (token) => this.signIn(token),
      demoSignIn: (personId) => this.demoSignIn(personId),
    }, () => this.views.languageSwitch());
    this.panels = new Panels(this);
    this.renderQueued = false;
    this.bellTimer = null;
    document.addEventListener("visibilitychange", () => this.changed());
  }

  // -- start ----------------------------------------------------------------------------------
  async boot() {
    const saved = this.tokens.load();
    if (saved) {
      this.tokens.current = saved;
      try {
        const token = saved.expires_at > Date.now() + 5000 ? saved.access_token : await this.tokens.refresh();
        this.tokens.schedule();
        await this.signIn(token);
        return;
      } catch (_) {
        this.tokens.clear(); // the session ended meanwhile: sign in again
      }
    }
    let token = null;
    try { token = sessionStorage.getItem(TOKEN_KEY); } catch (_) { /* storage off */ }
    if (token) {
      await this.signIn(token);
      return;
    }
    await this.showSignIn();
  }

  async showSignIn(error = null, step = "signin", notice = null) {
    let people = null;
    try {
      people = (await this.api.get("/api/demo/people")).people;
    } catch (_) {
      people = null; // 404 demo.off: outside demo mode there is no picker
    }
    this.accountViews.show(step, { error, notice, people });
  }

  /** One step of signing in or up (R19): `next` is the screen after a code was
   *  sent; without it the answer is a session's tokens. */
  async step(request, next = null, email = null) {
    const views = this.accountViews;
    let answer;
    try {
      answer = await request();
    } catch (err) {
      views.show(views.step, { error: err.message || t("error.generic") });
      return;
    }
    if (next) {
      if (email) views.email = email;
      views.show(next, { notice: t("account.code_sent", { email: views.email }) });
      return;
    }
    await this.startSession(answer);
  }

  async startSession(tokens) {
    this.tokens.save(tokens);
    await this.signIn(tokens.access_token);
  }

  async demoSignIn(personId) {
    try {
      await this.startSession(await this.api.post("/api/demo/people", { person_id: personId }));
    } catch (err) {
      await this.showSignIn(err.message || t("error.generic"));
    }
  }

  /** A refreshed access token (R21): requests use it, and the open socket keeps going with it. */
  renewed(token) {
    this.token = token;
    this.api.token = token;
    if (this.conn) {
      this.conn.options.token = token;
      if (this.conn.live) this.conn.request({ type: "token.renew", token }).catch(() => { /* it reconnects if need be */ });
    }
  }

  async signIn(token) {
    this.api.token = token;
    let me;
    try {
      me = await this.api.get("/api/me");
    } catch (err) {
      this.api.token = null;
      try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* ignore */ }
      await this.showSignIn(err.status === 401 ? (err.message || t("signin.bad_token")) : t("error.generic"));
      return;
    }
    this.token = token;
    if (!this.tokens.current) {
      try { sessionStorage.setItem(TOKEN_KEY, token); } catch (_) { /* ignore */ }
    }
    this.me = me;
    // R22: French unless this browser chose otherwise or the person reads English.
    setLanguage(chosenLanguage() || me.language || "fr");
    this.persisted = new Persisted(me.id);
    let saved = null;
    try { saved = Number(localStorage.getItem(CHILD_KEY + "." + me.id)); } catch (_) { /* storage off */ }
    const children = me.children || [];
    this.childId = children.some((c) => c.id === saved) ? saved : (children[0]?.id ?? null);
    this.views.renderMain();
    this.connect();
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.conn = new Connection({
      url: `${scheme}//${location.host}/ws`,
      token: this.token,
      resumeFrame: () => this.resumeFrame(),
      onStarted: (reply) => this.started(reply),
      onFrame: (frame) => this.frame(frame),
      onState: (state) => { this.connState = state; this.changed(); },
      onSignedOut: (error) => this.signedOut(error),
    });
    this.conn.start();
  }

  async signOut() {
    // R21: ends the session everywhere (every token of the person is revoked).
    try { await this.api.post("/api/auth/signout"); } catch (_) { /* offline: forget locally anyway */ }
    this.signedOut(null);
  }

  signedOut(error) {
    if (this.conn) this.conn.stop();
    this.conn = null;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* ignore */ }
    this.tokens.clear();
    this.token = null;
    this.api.token = null;
    this.me = null;
    this.convs.clear();
    this.selectedId = null;
    this.announcements.clear();
    this.announcementsLoaded = false;
    this.panels.closeAll();
    setLanguage(initialLanguage());
    this.showSignIn(error && error.message ? error.message : null);
  }

  // -- resume -------------------------------------------------------------------------------------
  resumeFrame() {
    const frame = { positions: this.persisted.resumePositions() };
    // The first connection of a page pages announcements over HTTP; later ones
    // get only what they missed, replayed by the server.
    if (this.announcementsLoaded && this.persisted.announcementsAfter !== null) {
      frame.announcements_after = this.persisted.announcementsAfter;
    }
    return frame;
  }

  started(reply) {
    this.sendLanguage();
    const resumed = new Set(reply.resumed || []);
    const reset = new Map((reply.reset || []).map((r) => [r.conversation_id, r]));
    for (const [id, r] of reset) {
      const conv = this.convs.get(id);
      if (r.reason === "not_member") {
        this.convs.delete(id);
        this.persisted.forget(id);
        continue;
      }
      // unknown_position / too_old: reload over HTTP; live delivery starts after last_seq.
      if (conv) { conv.events.clear(); conv.historyLoaded = false; }
      this.persisted.setPosition(id, r.last_seq || 0);
    }
    const present = new Set();
    for (const summary of reply.conversations || []) {
      present.add(summary.id);
      let conv = this.convs.get(summary.id);
      if (!conv) {
        conv = new ConversationState(summary);
        this.convs.set(summary.id, conv);
      } else {
        conv.update(summary);
      }
      if (!resumed.has(summary.id) && !reset.has(summary.id)) {
        // Live from now: what came before is paged over HTTP when it is opened.
        if (this.persisted.position(summary.id) < summary.last_seq) conv.historyLoaded = false;
        this.persisted.advance(summary.id, summary.last_seq);
      }
    }
    for (const id of [...this.convs.keys()]) {
      if (!present.has(id)) { this.convs.delete(id); this.persisted.forget(id); }
    }
    if (this.selectedId !== null && !this.convs.has(this.selectedId)) this.selectedId = null;
    if (!this.announcementsLoaded) this.loadAnnouncements();
    this.refreshBell();
    this.flushOutbox();
    if (this.selectedId !== null) this.ensureHistory(this.convs.get(this.selectedId));
    this.changed();
  }

  // -- pushed frames --------------------------------------------------------------------------------
  frame(frame) {
    switch (frame.type) {
      case "event": this.event(frame); break;
      case "conversation.joined": this.joined(frame.conversation); break;
      case "conversation.left":
        this.convs.delete(frame.conversation_id);
        this.persisted.forget(frame.conversation_id);
        if (this.selectedId === frame.conversation_id) this.selectedId = null;
        break;
      case "read": {
        const conv = this.convs.get(frame.conversation_id);
        if (conv) conv.update({ read_seq: frame.seq, unread: frame.unread });
        break;
      }
      case "typing": {
        const conv = this.convs.get(frame.conversation_id);
        if (conv && frame.person !== this.me.id) {
          conv.typing.set(frame.person, Date.now() + TYPING_SHOW_MS);
          setTimeout(() => this.changed(), TYPING_SHOW_MS + 50);
        }
        break;
      }
      case "announcement": this.announcementArrived(frame.announcement); break;
      case "announcement.reaction": {
        const a = this.announcements.get(frame.announcement_id);
        if (a) a.reactions = { ...(a.reactions || {}), [frame.emoji]: frame.count };
        break;
      }
      case "notification.digest":
        // R15: held notifications released now that working hours resumed.
        if (this.childId === null) this.bell.unread = frame.unread;
        this.refreshBell(0);
        break;
      case "error":
        this.showError(frame.message || frame.code);
        break;
      default:
        break; // clients ignore what they do not know
    }
    this.changed();
  }

  joined(summary) {
    const conv = this.convs.get(summary.id);
    if (conv) conv.update(summary);
    else {
      const fresh = new ConversationState(summary);
      fresh.activity = Date.now();
      this.convs.set(summary.id, fresh);
    }
    const waiting = this.orphans.get(summary.id) || [];
    this.orphans.delete(summary.id);
    for (const e of waiting) this.event(e);
  }

  event(e) {
    const conv = this.convs.get(e.conversation_id);
    if (!conv) {
      // An event before its conversation's summary (not expected: conversation.joined
      // comes first): keep it, fetch the summary, then apply it.
      const waiting = this.orphans.get(e.conversation_id);
      if (waiting) { waiting.push(e); return; }
      this.orphans.set(e.conversation_id, [e]);
      this.api.get(`/api/conversations/${e.conversation_id}`).then((s) => { this.joined(s); this.changed(); },
        () => this.orphans.delete(e.conversation_id));
      return;
    }
    const fresh = conv.add(e);
    this.persisted.advance(e.conversation_id, e.seq);
    if (!fresh) return;
    const s = conv.summary;
    const newer = e.seq > (s.last_seq || 0);
    if (newer) s.last_seq = e.seq;
    conv.typing.delete(e.actor);
    switch (e.kind) {
      case "message.new": {
        const m = e.message;
        if (m.client_id) this.acked.delete(m.client_id);
        if (newer) {
          s.last_message = { id: m.id, seq: e.seq, author: m.author, text: m.text || "", retracted: Boolean(m.retracted),
            created_at: m.created_at };
          conv.activity = Date.now();
          if (m.author !== this.me.id && !this.reading(conv)) s.unread = (s.unread || 0) + 1;
          if (m.author !== this.me.id) this.refreshBell();
        }
        break;
      }
      case "message.edited":
        if (s.last_message && s.last_message.id === e.message.id) s.last_message.text = e.message.text;
        break;
      case "message.retracted":
        if (s.last_message && s.last_message.id === e.message.id) {
          s.last_message.text = "";
          s.last_message.retracted = true;
        }
        break;
      case "conversation.renamed": s.name = e.name; break;
      case "conversation.locked": if (newer) { s.locked = true; s.lock_reason = e.reason || null; } break;
      case "conversation.unlocked": if (newer) { s.locked = false; s.lock_reason = null; } break;
      case "member.added":
        if (newer) s.members = [...(s.members || []).filter((m) => !e.members.some((n) => n.id === m.id)), ...e.members];
        break;
      case "member.removed":
      case "member.left":
        if (newer) s.members = (s.members || []).filter((m) => m.id !== e.person);
        break;
      default:
        break;
    }
  }

  // -- reading ------------------------------------------------------------------------------------
  /** Is this conversation on screen, so that what arrives is read at once? */
  reading(conv) {
    return this.selectedId === conv.id && document.visibilityState === "visible";
  }

  select(id) {
    this.selectedId = id;
    const conv = this.convs.get(id);
    if (conv) this.ensureHistory(conv);
    this.changed();
  }

  async ensureHistory(conv) {
    if (!conv || conv.historyLoaded || conv.loading) return;
    conv.loading = true;
    this.changed();
    try {
      const { events } = await this.api.get(`/api/conversations/${conv.id}/events?limit=50`);
      for (const e of events) conv.add(e);
      const max = events.length ? events[events.length - 1].seq : 0;
      this.persisted.advance(conv.id, max);
      conv.historyLoaded = true;
    } catch (err) {
      if (err.code !== "network") this.showError(err.message);
    } finally {
      conv.loading = false;
      this.changed();
    }
  }

  async loadOlder(conv) {
    if (conv.loading) return;
    conv.loading = true;
    this.changed();
    try {
      const { events } = await this.api.get(`/api/conversations/${conv.id}/events?before=${conv.minSeq()}&limit=50`);
      for (const e of events) conv.add(e);
    } catch (err) {
      this.showError(err.message || t("error.generic"));
    } finally {
      conv.loading = false;
      this.changed();
    }
  }

  /** Move the read marker to what is on screen (one request at a time). */
  markRead(conv) {
    if (!conv || !this.reading(conv) || !this.conn || !this.conn.live) return;
    if (conv.summary.unread) conv.summary.unread = 0; // on screen is read; the server confirms below
    const seq = Math.min(this.persisted.position(conv.id), conv.summary.last_seq || 0);
    if (seq <= (conv.summary.read_seq || 0) || conv.readPending) return;
    conv.readPending = true;
    setTimeout(() => {
      const now = Math.min(this.persisted.position(conv.id), conv.summary.last_seq || 0);
      (this.conn && this.conn.live ? this.conn.request({ type: "read", conversation_id: conv.id, seq: now })
        : Promise.reject(new ApiError("connection.lost", ""))).then((ok) => {
        conv.update({ read_seq: ok.seq, unread: this.reading(conv) ? 0 : ok.unread });
      }, () => {}).finally(() => { conv.readPending = false; this.changed(); });
    }, 250);
  }

  // -- sending: the outbox ------------------------------------------------------------------------------
  /** Queue a message; it is sent now if connected, else on reconnection (same client_id). */
  send(conversationId, text, attachments = []) {
    const item = {
      client_id: newClientId(), conversation_id: conversationId, text, created_at: new Date().toISOString(),
      attachments: attachments.map((a) => a.id), attachment_views: attachments, state: "sending", error: null,
    };
    this.persisted.outbox.push(item);
    this.persisted.saveOutbox();
    this.transmit(item);
    this.changed();
  }

  flushOutbox() {
    for (const item of this.persisted.outbox) {
      if (item.state === "sending") this.transmit(item);
    }
  }

  transmit(item) {
    if (item.inFlight || !this.conn || !this.conn.live) return;
    item.inFlight = true;
    const frame = { type: "message.send", conversation_id: item.conversation_id, client_id: item.client_id,
      text: item.text };
    if (item.attachments.length) frame.attachments = item.attachments;
    this.conn.request(frame).then((ok) => {
      item.inFlight = false;
      this.persisted.outbox = this.persisted.outbox.filter((i) => i.client_id !== item.client_id);
      this.persisted.saveOutbox();
      const conv = this.convs.get(item.conversation_id);
      if (!conv || !conv.events.has(ok.seq)) this.acked.set(item.client_id, { ...ok, item });
      this.changed();
    }, (err) => {
      item.inFlight = false;
      if (err.code === "connection.lost" || err.code === "timeout") return; // resent on reconnection
      if (TRANSIENT.has(err.code)) {
        const wait = Math.max(1, Number(err.fields?.retry_after) || 2) * 1000;
        setTimeout(() => this.transmit(item), wait);
        return;
      }
      item.state = "failed";
      item.error = err.message || err.code;
      this.persisted.saveOutbox();
      this.changed();
    });
  }

  retry(clientId) {
    const item = this.persisted.outbox.find((i) => i.client_id === clientId);
    if (!item) return;
    item.state = "sending";
    item.error = null;
    this.persisted.saveOutbox();
    this.transmit(item);
    this.changed();
  }

  discard(clientId) {
    this.persisted.outbox = this.persisted.outbox.filter((i) => i.client_id !== clientId);
    this.persisted.saveOutbox();
    this.changed();
  }

  typing(conversationId) {
    const now = Date.now();
    if (now - this.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    this.lastTypingSent = now;
    this.conn?.notify({ type: "typing", conversation_id: conversationId });
  }

  /** A request that needs the connection; refusals are shown with the server's text. */
  async request(frame) {
    if (!this.conn || !this.conn.live) {
      this.showError(t("error.offline"));
      throw new ApiError("connection.lost", t("error.offline"));
    }
    try {
      return await this.conn.request(frame);
    } catch (err) {
      this.showError(err.code === "connection.lost" ? t("error.offline") : (err.message || t("error.generic")));
      throw err;
    }
  }

  edit(messageId, text) { return this.request({ type: "message.edit", message_id: messageId, text }); }
  retract(messageId) { return this.request({ type: "message.retract", message_id: messageId }); }
  react(messageId, emoji, add) {
    return this.request({ type: add ? "reaction.add" : "reaction.remove", message_id: messageId, emoji });
  }

  // -- children, announcements, bell ---------------------------------------------------------------------
  // -- R20, R21: a child, my sessions ------------------------------------------------------------
  async openAddChild() {
    let organisations = [];
    try { organisations = (await this.api.get("/api/organisations")).organisations; } catch (_) { /* shown empty */ }
    this.panels.open("child", t("child.add_title"), (body) => childForm(body, organisations, async (request) => {
      try {
        const { child } = await this.api.post("/api/children", request);
        this.panels.close("child");
        await this.reloadMe(child.id);
        return null;
      } catch (err) {
        return err.message || t("error.generic");
      }
    }));
  }

  /** Who I am again (a child was added): the picker shows the child, chosen. */
  async reloadMe(childId) {
    this.me = await this.api.get("/api/me");
    this.views.renderMain();
    if (childId !== undefined) this.setChild(childId);
  }

  async openSessions() {
    const draw = async (body) => {
      let sessions = [];
      try { sessions = (await this.api.get("/api/sessions")).sessions; } catch (_) { /* shown empty */ }
      sessionList(body, sessions, async (id) => {
        try { await this.api.delete(`/api/sessions/${encodeURIComponent(id)}`); } catch (_) { /* gone already */ }
        await draw(body);
      }, () => this.signOut());
    };
    this.panels.open("sessions", t("sessions.title"), (body) => { draw(body); });
  }

  setChild(childId) {
    this.childId = childId;
    try { localStorage.setItem(CHILD_KEY + "." + this.me.id, String(childId)); } catch (_) { /* ignore */ }
    if (this.selectedId !== null) {
      const conv = this.convs.get(this.selectedId);
      if (conv && conv.summary.child && conv.summary.child.id !== childId) this.selectedId = null;
    }
    this.refreshBell(0);
    this.changed();
  }

  isParent() { return this.me && this.me.role === "parent"; }

  /** The conversations for the child picked (parents act for one child at a time). */
  visibleConversations() {
    let list = [...this.convs.values()];
    if (this.isParent() && this.childId !== null) {
      list = list.filter((c) => !c.summary.child || c.summary.child.id === this.childId);
    }
    return list.sort((a, b) => b.activity - a.activity || b.id - a.id);
  }

  /** A conversation I am in with exactly these other people, about this child (or none). */
  sameConversation(ids, childId) {
    const wanted = new Set([...ids, this.me.id]);
    for (const conv of this.convs.values()) {
      const s = conv.summary;
      const members = new Set((s.members || []).map((m) => m.id));
      if ((s.child?.id ?? null) === childId && members.size === wanted.size
          && [...wanted].every((id) => members.has(id))) return conv;
    }
    return null;
  }

  /** Child id → unread messages and announcements about that child (R16's one inbox). */
  unreadPerChild() {
    const counts = new Map();
    const add = (id, n) => { if (n) counts.set(id, (counts.get(id) || 0) + n); };
    for (const conv of this.convs.values()) {
      if (conv.summary.child) add(conv.summary.child.id, conv.summary.unread || 0);
    }
    for (const a of this.announcements.values()) {
      if (a.read === false) for (const c of a.children || []) add(c.id, 1);
    }
    return counts;
  }

  async loadAnnouncements() {
    try {
      const { announcements } = await this.api.get("/api/announcements?limit=50");
      for (const a of announcements) this.announcements.set(a.id, a);
      const newest = announcements.reduce((max, a) => Math.max(max, a.id), 0);
      if (newest) this.persisted.setAnnouncementsAfter(newest);
      this.announcementsLoaded = true;
    } catch (_) {
      /* retried at the next connection */
    }
    this.changed();
  }

  async announcementArrived(view) {
    this.persisted.setAnnouncementsAfter(view.id);
    if (!("reactions" in view)) {
      // A live frame carries the announcement only; the detail adds the
      // per-child label, reactions and read state.
      try { view = await this.api.get(`/api/announcements/${view.id}`); } catch (_) { /* keep the frame */ }
    }
    this.announcements.set(view.id, { ...(this.announcements.get(view.id) || {}), ...view });
    this.refreshBell();
    this.changed();
  }

  visibleAnnouncements() {
    let list = [...this.announcements.values()];
    if (this.isParent() && this.childId !== null) {
      list = list.filter((a) => !a.children || a.children.some((c) => c.id === this.childId));
    }
    return list.sort((a, b) => b.id - a.id);
  }

  unreadAnnouncements() {
    return this.visibleAnnouncements().filter((a) => a.read === false).length;
  }

  /** Re-read the bell (debounced): R16's feed, for the child picked when a parent. */
  refreshBell(delay = 400) {
    clearTimeout(this.bellTimer);
    this.bellTimer = setTimeout(async () => {
      if (!this.me) return;
      const query = this.isParent() && this.childId !== null ? `?child_id=${this.childId}` : "";
      try {
        const feed = await this.api.get("/api/notifications" + query);
        this.bell = { items: feed.notifications, unread: feed.unread };
      } catch (_) { /* offline: keep what we have */ }
      this.changed();
    }, delay);
  }

  // -- errors and rendering ---------------------------------------------------------------------------
  showError(text) {
    if (!text) return;
    this.errors = [text];
    this.changed();
  }

  clearError() {
    this.errors = [];
    this.changed();
  }

  toggleLanguage() {
    setLanguage(language() === "fr" ? "en" : "fr", true);
    this.sendLanguage();
    this.panels.closeAll();
    if (this.me) this.views.renderMain();
    else this.boot();
  }

  /** R22: the server writes to the person (errors, system texts, e-mails) in the
   *  language the widget shows; the choice is stored with the person. */
  sendLanguage() {
    if (!this.me || this.me.language === language()) return;
    const chosen = language();
    const request = this.conn && this.conn.live
      ? this.conn.request({ type: "language.set", language: chosen })
      : this.api.put("/api/me/language", { language: chosen });
    request.then((reply) => { if (this.me) this.me.language = reply.language; })
      .catch(() => { /* tried again at the next connection */ });
  }

  changed() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    // A timer, not requestAnimationFrame: a hidden tab must still keep its state current.
    setTimeout(() => {
      this.renderQueued = false;
      if (!this.me) return;
      this.views.render();
      this.panels.refresh();
    }, 0);
  }
}

function mount() {
  const root = document.querySelector("[data-chat-widget]");
  if (!root) return;
  const app = new ChatApp(root);
  window.chatWidget = app; // for debugging in the console
  app.boot();
}

mount();
