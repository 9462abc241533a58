// The demo page: the session lives in an HttpOnly cookie this script never sees; the CSRF token
// and the access token live in the variables below only, never in storage, so a reload asks
// GET /auth/me for the CSRF token again and mints a fresh access token.
"use strict";

const AUDIENCE = "orders";
// Mint a new token this long before the old one expires, so no request goes out with a dying one.
const RENEW_MARGIN_SECONDS = 10;
// Auth keeps a session's browser label to this many characters (services/auth/domain.py:
// MAX_USER_AGENT_LENGTH; the docs tier checks the two agree): one that long may have been cut.
const USER_AGENT_LABEL_MAX = 64;

const state = {
  user: null,
  csrfToken: null,
  accessToken: null,
  claims: null,
  timer: null,
  // The query of the next page of orders (`?cursor=...&limit=...`), or null on the last page.
  ordersNext: null,
  // The last access token of a session that has ended, kept to show that logout revokes it too.
  oldToken: null,
  oldClaims: null,
  oldTimer: null,
  // When the session ended (performance.now()), and whether the page is still watching for the
  // kept token's refusal.
  endedAt: null,
  watching: false,
};
// After logout the page tries the kept token this often until it is refused, for at most this long.
const WATCH_EVERY_MS = 100;
const WATCH_FOR_MS = 10000;

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, body) {
    const code = body && body.error ? body.error : `HTTP ${status}`;
    super(body && body.detail ? `${code}: ${body.detail}` : code);
    this.status = status;
    this.code = code;
    this.detail = body && body.detail ? String(body.detail) : "";
  }
}

// One request to the gateway. Cookie-authenticated unsafe requests carry X-CSRF-Token; the
// browser adds Origin itself. Calls to orders carry the bearer token instead of the cookie.
async function api(method, path, { body, csrf = false, bearer = false } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (csrf) headers["X-CSRF-Token"] = state.csrfToken;
  if (bearer) headers["Authorization"] = `Bearer ${state.accessToken}`;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function say(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

// Login from another origin than the configured one (127.0.0.1 for localhost, another port) is
// refused by design; say where the page works instead of a bare error code.
function sayWrongOrigin(error) {
  const named = /https?:\/\/[^\s"',;)]+/.exec(error.detail || "");
  const origin = named ? named[0].replace(/[.]$/, "") : `http://localhost${location.port ? `:${location.port}` : ""}`;
  const link = document.createElement("a");
  link.href = `${origin}/`;
  link.textContent = origin;
  $("status").replaceChildren(
    `Login refused: this page is open at ${location.origin}, but the gateway only accepts its configured origin. Open `,
    link,
    " instead.",
  );
  $("status").classList.add("error");
}

function decodeSegment(segment) {
  const binary = atob(segment.replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function when(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

function countdown(element, claims) {
  const left = claims ? claims.exp - Math.floor(Date.now() / 1000) : 0;
  element.classList.toggle("expired", left <= 0);
  element.textContent = left <= 0 ? "expired" : `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
  return left;
}

function showLoggedOut(message) {
  clearToken();
  state.user = null;
  state.csrfToken = null;
  $("app").hidden = true;
  $("whoami").hidden = true;
  $("login-panel").hidden = false;
  $("orders").replaceChildren();
  state.ordersNext = null;
  $("more-orders").hidden = true;
  $("sessions").replaceChildren();
  say(message);
}

// Called before the session ends: keeps the page's last token to try after logout.
function keepOldToken() {
  clearInterval(state.oldTimer);
  state.oldToken = state.accessToken;
  state.oldClaims = state.claims;
  $("old-token-result").textContent = "";
  $("after-logout").hidden = state.oldToken === null;
  if (state.oldToken === null) return;
  const tickOld = () => {
    if (countdown($("old-countdown"), state.oldClaims) <= 0) clearInterval(state.oldTimer);
  };
  tickOld();
  state.oldTimer = setInterval(tickOld, 1000);
}

function forgetOldToken() {
  clearInterval(state.oldTimer);
  state.oldToken = null;
  state.oldClaims = null;
  state.watching = false;
  $("after-logout").hidden = true;
}

function sinceEnded() {
  return state.endedAt === null ? "" : ` ${((performance.now() - state.endedAt) / 1000).toFixed(1)} s after logout`;
}

// The old token against orders, as any client holding it could send it: the answer says
// whether the gateway and orders still accept it. Returns whether it was refused.
async function tryOldToken() {
  const token = state.oldToken;
  if (token === null) return false;
  const result = $("old-token-result");
  const response = await fetch("/api/orders", {
    headers: { Authorization: `Bearer ${token}` },
    credentials: "omit",
    cache: "no-store",
  });
  const body = await response.json().catch(() => null);
  // A later logout may have replaced the kept token while this one was in flight.
  if (token !== state.oldToken) return false;
  const verdict = response.ok ? "accepted" : "refused";
  result.classList.toggle("error", !response.ok);
  result.dataset.verdict = verdict;
  if (response.ok) {
    const count = body && Array.isArray(body.orders) ? body.orders.length : 0;
    result.textContent = `Accepted${sinceEnded()}: ${response.status}, ${count} order(s) listed with a token whose session is gone.`;
  } else {
    const reason = body && body.error ? ` ${body.error}: ${body.detail}` : "";
    result.textContent = `Refused${sinceEnded()}: ${response.status}${reason}`;
  }
  return !response.ok;
}

// Right after the session ends: try the kept token until the revocation reaches the verifiers,
// so the page shows how long that took.
async function watchOldToken() {
  if (state.oldToken === null) return;
  state.endedAt = performance.now();
  state.watching = true;
  const token = state.oldToken;
  while (state.watching && token === state.oldToken && performance.now() - state.endedAt < WATCH_FOR_MS) {
    if (await tryOldToken()) break;
    await new Promise((resolve) => setTimeout(resolve, WATCH_EVERY_MS));
  }
  if (token === state.oldToken) state.watching = false;
}

function showLoggedIn(user, csrfToken) {
  state.user = user;
  state.csrfToken = csrfToken;
  $("user").textContent = `${user.email} (${user.role})`;
  $("login-panel").hidden = true;
  $("whoami").hidden = false;
  $("app").hidden = false;
}

// Any answer saying the session is gone sends the page back to the login form.
function report(error) {
  if (error instanceof ApiError && error.code === "no_session") {
    showLoggedOut("Your session has ended: log in again.");
  } else if (error instanceof ApiError && error.code === "cross_origin") {
    sayWrongOrigin(error);
  } else {
    say(error.message, true);
  }
}

function clearToken() {
  clearInterval(state.timer);
  state.accessToken = null;
  state.claims = null;
  state.timer = null;
  $("countdown").textContent = "no token";
  $("countdown").classList.remove("expired");
  $("token-header").textContent = "";
  $("token-claims").textContent = "";
  $("token-kid").textContent = "none";
  $("kid-published").textContent = "not checked yet";
}

function secondsLeft() {
  return state.claims ? state.claims.exp - Math.floor(Date.now() / 1000) : 0;
}

function tick() {
  if (countdown($("countdown"), state.claims) <= 0) clearInterval(state.timer);
}

// What a verifier does with the token's `kid`: look it up among the published public keys.
async function showSigningKey(kid) {
  $("token-kid").textContent = kid;
  const { keys } = await api("GET", "/.well-known/jwks.json");
  const published = keys.some((key) => key.kid === kid);
  $("kid-published").textContent = published
    ? `published in the JWKS (${keys.length} key(s)), so a verifier can check the signature without auth`
    : "not in the JWKS yet: a verifier refetches it once, then refuses the token";
}

async function mintToken() {
  const { access_token: token } = await api("POST", "/auth/token", { body: { audience: AUDIENCE }, csrf: true });
  const [header, claims] = token.split(".", 2).map(decodeSegment);
  clearToken();
  state.accessToken = token;
  state.claims = claims;
  $("token-header").textContent = JSON.stringify(header, null, 2);
  $("token-claims").textContent = JSON.stringify(claims, null, 2);
  tick();
  state.timer = setInterval(tick, 1000);
  await showSigningKey(header.kid).catch(report);
}

async function ensureToken() {
  if (state.accessToken === null || secondsLeft() <= RENEW_MARGIN_SECONDS) await mintToken();
}

function orderRow(order) {
  const row = document.createElement("tr");
  cell(row, order.item);
  cell(row, String(order.quantity));
  cell(row, new Date(order.created_at).toLocaleString());
  cell(row, order.id, "id");
  return row;
}

// One page of orders. `next` is a query-only link (`?cursor=...`): anything else is ignored, so
// an answer can never send the bearer token to another path or host.
async function fetchOrders(query) {
  await ensureToken();
  const { orders, next } = await api("GET", `/api/orders${query}`, { bearer: true });
  state.ordersNext = typeof next === "string" && next.startsWith("?") ? next : null;
  $("more-orders").hidden = state.ordersNext === null;
  return orders.map(orderRow);
}

async function loadOrders() {
  $("orders").replaceChildren(...(await fetchOrders("")));
}

async function loadMoreOrders() {
  if (state.ordersNext === null) return;
  $("orders").append(...(await fetchOrders(state.ordersNext)));
}

async function createOrder(item, quantity) {
  await ensureToken();
  await api("POST", "/api/orders", { body: { item, quantity }, bearer: true });
  await loadOrders();
}

async function revokeSession(session) {
  await api("DELETE", `/auth/sessions/${encodeURIComponent(session.handle)}`, { csrf: true });
  if (session.current) {
    keepOldToken();
    showLoggedOut("This session was revoked: log in again.");
    watchOldToken().catch(report);
  } else {
    await loadSessions();
    say("Session revoked.");
  }
}

async function loadSessions() {
  const { sessions } = await api("GET", "/auth/sessions");
  const rows = sessions.map((session) => {
    const row = document.createElement("tr");
    if (session.current) row.className = "current";
    cell(row, when(session.created_at));
    cell(row, when(session.last_seen));
    cell(row, session.ip);
    // A label at the maximum length was cut by auth: say so rather than end mid-word.
    const label = session.user_agent || "";
    const shown = cell(row, label.length >= USER_AGENT_LABEL_MAX ? `${label}…` : label, "agent");
    shown.title = label;
    const revoke = document.createElement("button");
    revoke.type = "button";
    revoke.className = "secondary";
    revoke.textContent = session.current ? "Revoke (this one)" : "Revoke";
    revoke.addEventListener("click", () => revokeSession(session).catch(report));
    row.insertCell().append(revoke);
    return row;
  });
  $("sessions").replaceChildren(...rows);
}

async function afterLogin(user, csrfToken) {
  forgetOldToken();
  showLoggedIn(user, csrfToken);
  say(`Logged in as ${user.email}.`);
  await Promise.all([loadOrders().catch(report), loadSessions().catch(report)]);
}

async function logIn(event) {
  event.preventDefault();
  const password = $("password");
  const body = { email: $("email").value, password: password.value };
  password.value = "";
  const { user, csrf_token: csrfToken } = await api("POST", "/auth/login", { body });
  await afterLogin(user, csrfToken);
}

async function logOut() {
  await api("POST", "/auth/logout", { csrf: true });
  keepOldToken();
  showLoggedOut("Logged out: the session is gone, and no new token can be minted.");
  await watchOldToken();
}

// Every session of this user ends, in every browser: each one's tokens are refused too.
async function logOutEverywhere() {
  await api("POST", "/auth/logout-all", { csrf: true });
  keepOldToken();
  showLoggedOut("Logged out everywhere: every session of yours is gone, in every browser.");
  await watchOldToken();
}

async function start() {
  $("login-form").addEventListener("submit", (event) => logIn(event).catch(report));
  $("logout").addEventListener("click", () => logOut().catch(report));
  $("logout-all").addEventListener("click", () => logOutEverywhere().catch(report));
  $("mint").addEventListener("click", () => mintToken().then(() => say("Token minted.")).catch(report));
  $("refresh-orders").addEventListener("click", () => loadOrders().catch(report));
  $("more-orders").addEventListener("click", () => loadMoreOrders().catch(report));
  $("try-old-token").addEventListener("click", () => tryOldToken().catch(report));
  $("refresh-sessions").addEventListener("click", () => loadSessions().catch(report));
  $("order-form").addEventListener("submit", (event) => {
    event.preventDefault();
    createOrder($("item").value, Number($("quantity").value))
      .then(() => { $("item").value = ""; say("Order created."); })
      .catch(report);
  });
  try {
    const me = await api("GET", "/auth/me");
    await afterLogin(me.user, me.csrf_token);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) showLoggedOut("");
    else report(error);
  }
}

document.addEventListener("DOMContentLoaded", () => start());
