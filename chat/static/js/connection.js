// The WebSocket side of the protocol (docs/protocol.md sections 2–4, 7.5, 9):
// subprotocols ["chat.v1", "bearer.<token>"], `resume` as the first frame,
// replies matched by id, reconnection with a growing, jittered delay, and a
// connection state the page shows.
//
// States: connecting → connected → reconnecting | offline → connected …;
// signed_out is final (close 4401: a new token is needed).

import { ApiError } from "./api.js";

const PROTOCOL = "chat.v1";
// 0.5 s doubling to 30 s (docs/protocol.md 7.5), with jitter so that a restarted
// server is not hit by every client at once.
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 30_000;
// An application ping every 25 s; no answer within 10 s means the link is dead
// even if the browser has not noticed (a NAT dropped it, the Wi-Fi changed).
const HEARTBEAT_MS = 25_000;
const HEARTBEAT_TIMEOUT_MS = 10_000;

export class Connection {
  /**
   * @param {object} options
   *   url, token,
   *   resumeFrame(): the `resume` frame to send first (positions, announcements_after),
   *   onStarted(reply, hello): the `ok` of resume — the connection is live,
   *   onFrame(frame): every pushed frame (events, joined, read, typing, …),
   *   onState(state), onSignedOut(errorFrame|null).
   */
  constructor(options) {
    this.options = options;
    this.state = "connecting";
    this.ws = null;
    this.live = false;
    this.everLive = false;
    this.stopped = false;
    this.attempts = 0;
    this.nextId = 1;
    this.pending = new Map();
    this.timer = null;
    this.heartbeat = null;
    this.authError = null;
    this.onOnline = () => { if (!this.stopped && !this.ws) { this.clearTimer(); this.open(); } };
    this.onOffline = () => { if (!this.stopped) { this.drop(); this.setState("offline"); } };
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
  }

  start() {
    this.open();
  }

  stop() {
    this.stopped = true;
    this.clearTimer();
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    this.drop();
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.options.onState(state);
  }

  clearTimer() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  open() {
    if (this.stopped || this.ws) return;
    if (navigator.onLine === false) {
      this.setState("offline");
      return; // the "online" event opens it
    }
    this.setState(this.everLive ? "reconnecting" : "connecting");
    const url = this.options.url;
    let ws;
    try {
      ws = new WebSocket(url, [PROTOCOL, "bearer." + this.options.token]);
    } catch (_) {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.hello = null;
    this.authError = null;
    // Frames pushed before the `ok` of resume (replayed events may come first):
    // handed over right after it, so the client applies them knowing its conversations.
    this.early = [];
    ws.onmessage = (e) => this.receive(ws, e.data);
    ws.onclose = (e) => { if (this.ws === ws) this.closed(e.code, e.reason); };
    ws.onerror = () => { /* onclose follows */ };
  }

  /** Forget the socket now (offline, dead heartbeat): do not wait for a closing handshake. */
  drop() {
    const ws = this.ws;
    if (!ws) return;
    ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(1000); } catch (_) { /* already closed */ }
    this.closed(1006, "dropped");
  }

  closed(code, reason) {
    this.ws = null;
    this.live = false;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    for (const { reject, timer } of this.pending.values()) {
      if (timer) clearTimeout(timer);
      reject(new ApiError("connection.lost", "", 0));
    }
    this.pending.clear();
    if (this.stopped) return;
    if (code === 4401) {
      // Authentication failed or the person signed out (R21): a new token is needed.
      this.stopped = true;
      this.setState("signed_out");
      this.options.onSignedOut(this.authError || { code: reason || "auth.invalid_token", message: "" });
      return;
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    this.clearTimer();
    if (navigator.onLine === false) {
      this.setState("offline");
      return;
    }
    this.setState(this.everLive ? "reconnecting" : "connecting");
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempts);
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempts += 1;
    this.timer = setTimeout(() => { this.timer = null; this.open(); }, delay);
  }

  receive(ws, data) {
    let frame;
    try { frame = JSON.parse(data); } catch (_) { return; }
    if (frame.type === "hello") {
      this.hello = frame;
      const resume = { ...this.options.resumeFrame(), type: "resume", id: "resume" };
      ws.send(JSON.stringify(resume));
      return;
    }
    if ((frame.type === "ok" || frame.type === "error") && frame.id === "resume") {
      if (frame.type === "error") {
        // resume refused (should not happen): drop the socket and try again later.
        this.drop();
        return;
      }
      this.live = true;
      this.everLive = true;
      this.attempts = 0;
      this.startHeartbeat();
      this.setState("connected");
      this.options.onStarted(frame, this.hello);
      const early = this.early;
      this.early = [];
      for (const pushed of early) this.options.onFrame(pushed);
      return;
    }
    if ((frame.type === "ok" || frame.type === "error") && frame.id !== null && this.pending.has(frame.id)) {
      const { resolve, reject, timer } = this.pending.get(frame.id);
      this.pending.delete(frame.id);
      if (timer) clearTimeout(timer);
      if (frame.type === "ok") resolve(frame);
      else reject(new ApiError(frame.code, frame.message, 0, frame.fields || {}));
      return;
    }
    if (frame.type === "error" && frame.id === null && String(frame.code).startsWith("auth.")) {
      this.authError = frame; // the close 4401 follows
      return;
    }
    if (!this.live) this.early.push(frame);
    else this.options.onFrame(frame);
  }

  startHeartbeat() {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => {
      this.request({ type: "ping" }, HEARTBEAT_TIMEOUT_MS).catch((err) => {
        if (err.code === "timeout") this.drop();
      });
    }, HEARTBEAT_MS);
  }

  /** Send a request frame; resolves with its `ok`, rejects with an ApiError (its `error`). */
  request(frame, timeoutMs = 0) {
    if (!this.live || !this.ws) return Promise.reject(new ApiError("connection.lost", "", 0));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = timeoutMs ? setTimeout(() => {
        this.pending.delete(id);
        reject(new ApiError("timeout", "", 0));
      }, timeoutMs) : null;
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  /** Fire and forget (typing): no id, no reply. */
  notify(frame) {
    if (this.live && this.ws) this.ws.send(JSON.stringify(frame));
  }
}
