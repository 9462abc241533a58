// The demo page: the session lives in an HttpOnly cookie this script never sees; the CSRF token
// and the access token live in the variables below only, never in storage, so a reload asks
// GET /auth/me for the CSRF token again and mints a fresh access token.
"use strict";

const AUDIENCE = "orders";
// Mint a new token this long before the old one expires, so no request goes out with a dying one.
const RENEW_MARGIN_SECONDS = 10;

const state = { user: null, csrfToken: null, accessToken: null, claims: null, timer: null };

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, body) {
    const code = body && body.error ? body.error : `HTTP ${status}`;
    super(body && body.detail ? `${code}: ${body.detail}` : code);
    this.status = status;
    this.code = code;
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

function showLoggedOut(message) {
  clearToken();
  state.user = null;
  state.csrfToken = null;
  $("app").hidden = true;
  $("whoami").hidden = true;
  $("login-panel").hidden = false;
  $("orders").replaceChildren();
  $("sessions").replaceChildren();
  say(message);
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
}

function secondsLeft() {
  return state.claims ? state.claims.exp - Math.floor(Date.now() / 1000) : 0;
}

function tick() {
  const left = secondsLeft();
  const countdown = $("countdown");
  countdown.classList.toggle("expired", left <= 0);
  if (left <= 0) {
    countdown.textContent = "expired";
    clearInterval(state.timer);
    return;
  }
  const minutes = Math.floor(left / 60);
  countdown.textContent = `${minutes}:${String(left % 60).padStart(2, "0")}`;
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
}

async function ensureToken() {
  if (state.accessToken === null || secondsLeft() <= RENEW_MARGIN_SECONDS) await mintToken();
}

async function loadOrders() {
  await ensureToken();
  const { orders } = await api("GET", "/api/orders", { bearer: true });
  const rows = orders.map((order) => {
    const row = document.createElement("tr");
    cell(row, order.item);
    cell(row, String(order.quantity));
    cell(row, new Date(order.created_at).toLocaleString());
    cell(row, order.id, "id");
    return row;
  });
  $("orders").replaceChildren(...rows);
}

async function createOrder(item, quantity) {
  await ensureToken();
  await api("POST", "/api/orders", { body: { item, quantity }, bearer: true });
  await loadOrders();
}

async function revokeSession(session) {
  await api("DELETE", `/auth/sessions/${encodeURIComponent(session.handle)}`, { csrf: true });
  if (session.current) {
    showLoggedOut("This session was revoked: log in again.");
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
    cell(row, session.user_agent);
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
  showLoggedOut("Logged out: the session is gone, and no new token can be minted.");
}

async function start() {
  $("login-form").addEventListener("submit", (event) => logIn(event).catch(report));
  $("logout").addEventListener("click", () => logOut().catch(report));
  $("mint").addEventListener("click", () => mintToken().then(() => say("Token minted.")).catch(report));
  $("refresh-orders").addEventListener("click", () => loadOrders().catch(report));
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
