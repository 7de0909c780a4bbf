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
//
// `auth.fetch` adds the token only to requests for the page's own origin, the issuer's and the
// origins listed in `apiOrigins`; a request anywhere else is refused before it is sent, so the
// token never leaks to a third party.
//
// With `dpop: true` (for clients registered with `require_dpop`), every token is bound to a
// non-extractable WebCrypto P-256 key (RFC 9449): the page can sign with it but no script can
// read it, so a stolen access token or cookie is useless elsewhere. The key is kept in
// IndexedDB, shared by the tabs, so a reload still proves the key the session is bound to.

const DB = "latchkey-dpop";

function idb(mode, work) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore("keys");
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const tx = open.result.transaction("keys", mode);
      const request = work(tx.objectStore("keys"));
      tx.oncomplete = () => { open.result.close(); resolve(request.result); };
      tx.onerror = () => { open.result.close(); reject(tx.error); };
    };
  });
}

const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
  .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const encode = (json) => b64url(new TextEncoder().encode(JSON.stringify(json)));

// The client's DPoP key: created once per browser profile and client, never extractable.
async function dpopKey(clientId) {
  const stored = await idb("readonly", (keys) => keys.get(clientId));
  if (stored) return stored;
  const pair = await crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
  const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", pair.publicKey);
  const key = { privateKey: pair.privateKey, jwk: { kty, crv, x, y } };
  // Two tabs creating at once: the first stored wins, and both use it.
  await idb("readwrite", (keys) => keys.add(key, clientId)).catch(() => {});
  return idb("readonly", (keys) => keys.get(clientId));
}

// A proof (RFC 9449 §4.2) for `method url`, with `ath` when it accompanies an access token.
async function proof(key, method, url, accessToken, nonce) {
  const htu = new URL(url, location.href);
  htu.search = ""; htu.hash = "";
  const claims = { jti: crypto.randomUUID(), htm: method, htu: htu.href, iat: Math.floor(Date.now() / 1000) };
  if (nonce) claims.nonce = nonce;
  if (accessToken) {
    claims.ath = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(accessToken)));
  }
  const signed = `${encode({ typ: "dpop+jwt", alg: "ES256", jwk: key.jwk })}.${encode(claims)}`;
  const signature = await crypto.subtle.sign(
    { name: "ECDSA", hash: "SHA-256" }, key.privateKey, new TextEncoder().encode(signed));
  return `${signed}.${b64url(signature)}`;
}

export function createClient({
  issuer = "", clientId, refreshBeforeSeconds = 30, onChange, dpop = false, apiOrigins = [],
} = {}) {
  if (!clientId) throw new Error("latchkey: clientId is required");
  const tokenOrigins = new Set([
    location.origin,
    new URL(issuer || location.href, location.href).origin,
    ...apiOrigins.map((o) => new URL(o).origin),
  ]);
  let token = null; // { value, type (Bearer | DPoP), expiresAt (ms), scope }
  let timer = null;
  let nonce = null; // the server's latest DPoP-Nonce
  const key = dpop ? dpopKey(clientId) : null;
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

  // A request to the issuer, with a fresh proof when bound; asked for a nonce, once more with it.
  async function post(path, body) {
    const url = new URL(`${issuer}${path}`, location.href).href;
    const send = async () => {
      const headers = { "content-type": "application/json" };
      if (key) headers.dpop = await proof(await key, "POST", url, null, nonce);
      const response = await fetch(url, {
        method: "POST", credentials: "include", headers, body: JSON.stringify(body),
      });
      nonce = response.headers.get("dpop-nonce") || nonce;
      return response;
    };
    let response = await send();
    if (key && response.status === 400 && response.headers.get("dpop-nonce")) {
      const error = await response.clone().json().catch(() => ({}));
      if (error.error === "use_dpop_nonce") response = await send();
    }
    return response;
  }

  function accept(body) {
    set({
      value: body.access_token,
      type: body.token_type === "DPoP" ? "DPoP" : "Bearer",
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
    /** `DPoP` when the access token is bound to this browser's key, else `Bearer`. */
    get tokenType() { return token?.type ?? null; },

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

    /** `fetch` with the access token (and its proof when bound): refreshed shortly before
     *  expiry, and once after a 401. */
    async fetch(input, init = {}) {
      const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url,
        location.href);
      if (!tokenOrigins.has(url.origin)) {
        throw new Error(`latchkey: auth.fetch sends the access token only to this page's origin, ` +
          `the issuer's and apiOrigins; not to ${url.origin} (use fetch for it)`);
      }
      if (!token || token.expiresAt - Date.now() < refreshBeforeSeconds * 1000) await refresh();
      const call = async () => {
        const headers = new Headers(init.headers || (input instanceof Request ? input.headers : {}));
        if (token?.type === "DPoP") {
          headers.set("authorization", `DPoP ${token.value}`);
          headers.set("dpop", await proof(await key, (init.method || "GET").toUpperCase(),
            url.href, token.value));
        } else {
          headers.set("authorization", `Bearer ${token?.value}`);
        }
        return fetch(input, { ...init, headers });
      };
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
