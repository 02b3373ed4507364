// Client state that must outlive a connection or a page: per conversation the
// last applied seq (for `resume`), the outbox of unsent messages, the newest
// announcement seen.  Kept in localStorage under the person's id, so two people
// on one browser never mix.  The token itself is in sessionStorage (app.js).

const PREFIX = "chat.v1.";

function read(key, fallback) {
  try {
    const raw = localStorage.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch (_) {
    return fallback;
  }
}

function write(key, value) {
  try { localStorage.setItem(key, JSON.stringify(value)); } catch (_) { /* full or off: memory only */ }
}

export class Persisted {
  constructor(personId) {
    this.key = `${PREFIX}p${personId}.`;
    this.positions = read(this.key + "positions", {});
    this.outbox = read(this.key + "outbox", []);
    this.announcementsAfter = read(this.key + "announcements_after", null);
  }

  position(conversationId) {
    return this.positions[conversationId] || 0;
  }

  /** Move a conversation's position forward (never back); true if it moved. */
  advance(conversationId, seq) {
    if (seq <= this.position(conversationId)) return false;
    this.positions[conversationId] = seq;
    write(this.key + "positions", this.positions);
    return true;
  }

  setPosition(conversationId, seq) {
    this.positions[conversationId] = seq;
    write(this.key + "positions", this.positions);
  }

  forget(conversationId) {
    delete this.positions[conversationId];
    write(this.key + "positions", this.positions);
  }

  /** The positions as `resume` wants them: string keys, integer values. */
  resumePositions() {
    const out = {};
    for (const [id, seq] of Object.entries(this.positions)) {
      if (Number.isInteger(seq) && seq >= 0) out[String(id)] = seq;
    }
    return out;
  }

  saveOutbox() {
    // inFlight is per connection: never persisted.
    write(this.key + "outbox", this.outbox.map(({ inFlight, ...item }) => item));
  }

  setAnnouncementsAfter(id) {
    if (this.announcementsAfter !== null && id <= this.announcementsAfter) return;
    this.announcementsAfter = id;
    write(this.key + "announcements_after", id);
  }
}

/** A client id for message.send: a UUID (crypto.randomUUID needs a secure context). */
export function newClientId() {
  if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * One conversation as the client holds it: the server's summary, and the
 * events it has, by seq.  Events arrive live, replayed, or paged over HTTP, in
 * any order and possibly twice: keyed by seq, each is kept once.
 */
export class ConversationState {
  constructor(summary) {
    this.summary = summary;
    this.events = new Map();
    this.historyLoaded = false;
    this.loading = false;
    this.typing = new Map(); // person id → until (ms)
    this.names = new Map();
    this.activity = Date.parse(summary.last_message?.created_at || "") || 0;
    this.learnMembers(summary.members);
  }

  get id() { return this.summary.id; }

  learnMembers(members) {
    for (const m of members || []) this.names.set(m.id, m.name);
  }

  update(summary) {
    this.summary = { ...this.summary, ...summary };
    this.learnMembers(summary.members);
    const at = Date.parse(summary.last_message?.created_at || "") || 0;
    if (at > this.activity) this.activity = at;
  }

  /** Keep an event; false if this seq was already there (a duplicate). */
  add(event) {
    if (this.events.has(event.seq)) return false;
    this.events.set(event.seq, event);
    if (event.members) this.learnMembers(event.members);
    return true;
  }

  minSeq() {
    let min = Infinity;
    for (const seq of this.events.keys()) if (seq < min) min = seq;
    return min === Infinity ? 0 : min;
  }

  maxSeq() {
    let max = 0;
    for (const seq of this.events.keys()) if (seq > max) max = seq;
    return max;
  }

  /** Are there events before the ones held that this person may see? */
  hasOlder() {
    const min = this.minSeq();
    const from = this.summary.visible_from_seq || 1;
    return this.events.size > 0 && min > from;
  }

  /**
   * The timeline to show, oldest first: messages (with their current text,
   * reactions and whether they were edited or retracted) and system lines.
   */
  timeline() {
    const seqs = [...this.events.keys()].sort((a, b) => a - b);
    const items = [];
    const messages = new Map();
    for (const seq of seqs) {
      const e = this.events.get(seq);
      const m = e.message;
      switch (e.kind) {
        case "message.new": {
          const msg = {
            kind: "message", id: m.id, seq, clientId: m.client_id || null, author: m.author ?? e.actor,
            text: m.text || "", createdAt: m.created_at || e.at, version: m.version || 1, edited: false,
            retracted: Boolean(m.retracted), attachments: m.attachments || [], reactions: new Map(),
          };
          messages.set(m.id, msg);
          items.push(msg);
          break;
        }
        case "message.edited": {
          const msg = messages.get(m.id);
          if (!msg) break;
          if (m.retracted) { msg.retracted = true; msg.text = ""; break; }
          msg.text = m.text;
          msg.version = m.version;
          msg.edited = true;
          break;
        }
        case "message.retracted": {
          const msg = messages.get(m.id);
          if (msg) { msg.retracted = true; msg.text = ""; msg.attachments = []; msg.reactions.clear(); }
          break;
        }
        case "reaction.added":
        case "reaction.removed": {
          const r = e.reaction;
          const msg = messages.get(r.message_id);
          if (!msg) break;
          const entry = msg.reactions.get(r.emoji) || { count: 0, people: new Set() };
          entry.count = r.count;
          if (e.kind === "reaction.added") entry.people.add(r.person);
          else entry.people.delete(r.person);
          if (entry.count > 0) msg.reactions.set(r.emoji, entry);
          else msg.reactions.delete(r.emoji);
          break;
        }
        case "conversation.locked":
        case "conversation.unlocked":
          items.push({ kind: "system", seq, code: e.kind, actor: e.actor, reason: e.reason || null, at: e.at });
          break;
        default:
          if (e.system) items.push({ kind: "system", seq, system: e.system, at: e.at });
      }
    }
    return items;
  }
}
