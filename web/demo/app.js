// The demo SPA: log in, show the user and the access token's remaining life, call a protected
// endpoint, refresh silently, survive a reload (the cookie restores the session), log out.
import { createClient } from "/sdk/latchkey.js";

const $ = (id) => document.getElementById(id);
const config = await (await fetch("/demo/config.json")).json();
let auth;

function show(token) {
  $("login").hidden = !!token;
  $("session").hidden = !token;
  $("status").textContent = token ? "signed in" : "signed out";
  // The last characters of the token's signature: enough to see it change on refresh.
  $("token-id").textContent = token ? token.value.slice(-8) : "";
  $("token-type").textContent = token ? token.type : "";
  if (token) whoAmI();
}

async function whoAmI() {
  const response = await auth.fetch("/auth/userinfo");
  if (response.ok) {
    const info = await response.json();
    $("user").textContent = info.username;
    $("result").textContent = JSON.stringify(info);
  }
}

auth = createClient({
  clientId: config.client_id,
  refreshBeforeSeconds: config.refresh_before_seconds,
  dpop: config.dpop,
  onChange: show,
});

setInterval(() => {
  if (auth.expiresAt) $("remaining").textContent = Math.max(0, Math.round((auth.expiresAt - Date.now()) / 1000));
}, 250);

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("error").textContent = "";
  try {
    await auth.login($("username").value, $("password").value);
  } catch (e) {
    $("error").textContent = e.message;
  }
});
$("call").addEventListener("click", whoAmI);
$("logout").addEventListener("click", () => auth.logout());

// For tests and the curious: the client, and a way to refresh now.
window.latchkeyDemo = { auth, refreshNow: () => auth.refresh() };

if (!(await auth.restore())) show(null);
