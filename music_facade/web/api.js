// The service's HTTP API: every call sends the credential in the Authorization header and
// turns an error answer (application/problem+json) into an ApiProblem.

export class ApiProblem extends Error {
  constructor(status, body, headers) {
    super(body.title || `HTTP ${status}`);
    this.status = status;
    this.code = body.code || null;
    this.title = body.title || null;
    this.detail = body.detail || null;
    this.trackStatus = body.track_status || null;
    this.requestId = body.request_id || headers.get("X-Request-ID");
    this.retryAfter = waitSeconds(headers);
  }
}

// The service could not be reached at all (down, wrong URL, or this origin not allowed by CORS:
// the browser hides which).
export class Unreachable extends Error {}

// How long to wait before trying again: Retry-After, else the RateLimit header's t=.
function waitSeconds(headers) {
  const after = headers.get("Retry-After");
  if (after && /^\d+$/.test(after)) return Number(after);
  const limit = /(?:^|;)\s*t=(\d+)/.exec(headers.get("RateLimit") || "");
  return limit ? Number(limit[1]) : null;
}

export class Api {
  constructor(base) {
    this.base = base.replace(/\/+$/, "");
    this.credential = null;
  }

  // The credential is a client key here. With an identity provider (OIDC), put the signed-in
  // user's access token here instead: it travels the same way, as "Authorization: Bearer …".
  signIn(credential) {
    this.credential = credential;
  }

  signOut() {
    this.credential = null;
  }

  async request(path, { method = "GET", body } = {}) {
    const headers = { Accept: "application/json" };
    if (this.credential) headers.Authorization = `Bearer ${this.credential}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new Unreachable(String(err));
    }
    const text = await resp.text();
    let parsed = {};
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch (err) {
      parsed = {};
    }
    if (!resp.ok) throw new ApiProblem(resp.status, parsed, resp.headers);
    return parsed;
  }

  // GET /tracks: the mirror's search, filters, sort and paging. `user`: one account alias, or
  // none for every account the credential may read (an alias outside its scope is a 403).
  tracks({ q, user, status, type, cursor, limit = 12 }) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (q) query.set("q", q);
    if (user) query.set("user", user);
    if (status) query.set("status", status);
    if (type) query.set("type", type);
    if (cursor) query.set("cursor", cursor);
    return this.request(`/tracks?${query}`);
  }

  // GET /music/{id}/audio in JSON mode: {url, format, expires_at}. An <audio> element cannot
  // send a header, so the page asks for the temporary link and plays that.
  audio(track, format = "mp3") {
    const query = new URLSearchParams({ user: track.user, format });
    return this.request(`/music/${encodeURIComponent(track.id)}/audio?${query}`);
  }

  // GET /changes from `since`, one change: whether the change log still holds that position
  // (a 410 changes_expired otherwise, which an EventSource could not show).
  changesSince(since) {
    const query = new URLSearchParams({ since, limit: "1" });
    return this.request(`/changes?${query}`);
  }

  // POST /events/tickets: a single-use ticket to open /events with (EventSource cannot send
  // an Authorization header, and a credential never goes in a URL).
  ticket() {
    return this.request("/events/tickets", { method: "POST", body: {} });
  }
}
