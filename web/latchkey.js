// latchkey.js: a dependency-free ES module for single-page apps in front of latchkey.
//
// The refresh token lives only in latchkey's HttpOnly cookie; this module never sees it. The
// access token lives in memory only (never in localStorage, sessionStorage or a cookie). Tabs
// share one refresh: a Web Lock serialises refreshes across tabs, and a BroadcastChannel hands
// the fresh access token (and logouts) to every tab, so one refresh serves them all.
//
//   import { createClient } from "/sdk/latchkey.js";
//   const auth = createClient({ clientId: "spa" });
//   await auth.restore();                       // a reload keeps the session (the cookie does)
//   await auth.login(username, password);
//   const response = await auth.fetch("/api/things");   // Bearer added, refreshed as needed
//   await auth.logout();

export function createClient({ issuer = "", clientId, refreshBeforeSeconds = 30, onChange } = {}) {
  if (!clientId) throw new Error("latchkey: clientId is required");
  let token = null; // { value, expiresAt (ms), scope }
  let timer = null;
  const channel = typeof BroadcastChannel === "function"
    ? new BroadcastChannel(`latchkey:${clientId}`) : null;
  const lockName = `latchkey-refresh:${clientId}`;

  function set(next, announce) {
    token = next;
    clearTimeout(timer);
    if (token) {
      const wait = Math.max(1000, token.expiresAt - Date.now() - refreshBeforeSeconds * 1000);
      timer = setTimeout(() => refresh().catch(() => {}), wait);
    }
    if (announce && channel) channel.postMessage(token ? { type: "token", token } : { type: "logout" });
    if (onChange) onChange(token);
  }

  if (channel) {
    channel.onmessage = ({ data }) => {
      if (data?.type === "token" && (!token || data.token.expiresAt > token.expiresAt)) set(data.token, false);
      if (data?.type === "logout") set(null, false);
    };
  }

  async function post(path, body) {
    return fetch(`${issuer}${path}`, {
      method: "POST",
      credentials: "include",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  }

  function accept(body) {
    set({
      value: body.access_token,
      expiresAt: Date.now() + body.expires_in * 1000,
      scope: body.scope || "",
    }, true);
    return token;
  }

  async function withLock(work) {
    if (navigator.locks?.request) return navigator.locks.request(lockName, work);
    return work();
  }

  // One refresh for every tab: whoever holds the lock refreshes; a tab that waited finds the
  // token the other tab broadcast and uses it instead of refreshing again.
  async function refresh() {
    const before = token;
    return withLock(async () => {
      if (token && token !== before && token.expiresAt - Date.now() > refreshBeforeSeconds * 1000) {
        return token;
      }
      const response = await post("/auth/refresh", { client_id: clientId });
      if (!response.ok) {
        if (response.status === 401) set(null, true);
        throw new Error(`latchkey: refresh answered ${response.status}`);
      }
      return accept(await response.json());
    });
  }

  return {
    get accessToken() { return token?.value ?? null; },
    get expiresAt() { return token?.expiresAt ?? null; },
    get scope() { return token?.scope ?? ""; },

    /** Logs in; the refresh token goes to the cookie, the access token stays here. */
    async login(username, password, scope) {
      const response = await post("/auth/login", { username, password, client_id: clientId, scope });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error_description || body.error);
      return accept(body);
    },

    /** At page load: a live cookie gives a fresh access token; `null` when there is none. */
    async restore() {
      try { return await refresh(); } catch { return null; }
    },

    refresh,

    /** `fetch` with the Bearer token: refreshed shortly before expiry, and once after a 401. */
    async fetch(input, init = {}) {
      if (!token || token.expiresAt - Date.now() < refreshBeforeSeconds * 1000) await refresh();
      const call = () => fetch(input, {
        ...init,
        headers: { ...(init.headers || {}), authorization: `Bearer ${token?.value}` },
      });
      let response = await call();
      if (response.status === 401) {
        await refresh();
        response = await call();
      }
      return response;
    },

    /** Ends the session everywhere in this browser: the cookie is cleared, every tab told. */
    async logout() {
      await post("/auth/logout", { client_id: clientId }).catch(() => {});
      set(null, true);
    },
  };
}
