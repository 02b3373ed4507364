// The hub's HTTP API (docs/protocol.md section 8).  The token goes in the
// Authorization header, never in a URL; errors come back as
// {"error": {"code", "message"}} and are thrown as ApiError.

export class ApiError extends Error {
  constructor(code, message, status = 0, fields = {}) {
    super(message || code);
    this.code = code;
    this.status = status;
    this.fields = fields;
  }
}

/** An ApiError from a response body (JSON error, or a plain-text one). */
async function errorFrom(response) {
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  const error = body && body.error;
  if (error) return new ApiError(error.code, error.message, response.status, error.fields || {});
  return new ApiError("http." + response.status, `HTTP ${response.status}`, response.status);
}

export class Api {
  constructor(base = "", token = null) {
    this.base = base;
    this.token = token;
    this.renew = null;
  }

  headers(extra = {}) {
    // R22: answers before sign-in (and refusals) come in the language shown.
    const headers = { "Accept-Language": document.documentElement.lang || "fr", ...extra };
    if (this.token) headers.Authorization = "Bearer " + this.token;
    return headers;
  }

  /** With `renew` set (a session's refresh, R21), an expired access token is
   *  renewed once and the request sent again. */
  async request(method, path, body, retried = false) {
    try {
      return await this.send(method, path, body);
    } catch (err) {
      if (retried || !this.renew || err.code !== "auth.expired_token") throw err;
      try { await this.renew(); } catch (_) { throw err; } // no session to refresh: the expiry stands
      return this.request(method, path, body, true);
    }
  }

  async send(method, path, body) {
    let response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers: this.headers(body === undefined ? {} : { "Content-Type": "application/json" }),
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch (_) {
      throw new ApiError("network", "", 0);
    }
    if (!response.ok) throw await errorFrom(response);
    return response.json();
  }

  get(path) { return this.request("GET", path); }
  post(path, body = {}) { return this.request("POST", path, body); }
  put(path, body = {}) { return this.request("PUT", path, body); }
  delete(path) { return this.request("DELETE", path); }

  /** A file the person may read, as a blob URL (images are shown with it). */
  async blobUrl(path) {
    const response = await fetch(this.base + path, { headers: this.headers(), credentials: "omit" });
    if (!response.ok) throw await errorFrom(response);
    return URL.createObjectURL(await response.blob());
  }

  /** Download a protected file under `name` (the link itself cannot carry the token). */
  async download(path, name) {
    const url = await this.blobUrl(path);
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  }

  /**
   * R7: POST the raw file to /api/uploads?name=…, reporting progress.
   * Returns {promise, abort}; the promise gives the upload view {id, name, size, type, …}.
   */
  upload(file, onProgress) {
    const xhr = new XMLHttpRequest();
    const promise = new Promise((resolve, reject) => {
      xhr.open("POST", `${this.base}/api/uploads?name=${encodeURIComponent(file.name)}`);
      if (this.token) xhr.setRequestHeader("Authorization", "Bearer " + this.token);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); };
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300 && body && body.upload) {
          onProgress(file.size, file.size);
          resolve(body.upload);
        } else if (body && body.error) {
          reject(new ApiError(body.error.code, body.error.message, xhr.status, body.error.fields || {}));
        } else {
          reject(new ApiError("http." + xhr.status, "", xhr.status));
        }
      };
      xhr.onerror = () => reject(new ApiError("network", "", 0));
      xhr.onabort = () => reject(new ApiError("aborted", "", 0));
      xhr.send(file);
    });
    return { promise, abort: () => xhr.abort() };
  }
}
