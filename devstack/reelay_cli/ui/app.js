// reelay's web page: plain JS, no build step. Every API call goes to this page's own server
// (/api/v1/...), which forwards it signed as the CLI signs; the page never sees a credential.
"use strict";

const API = "/api/v1";
const HEADERS = { "X-Reelay-UI": "1" };           // the proxy refuses requests without it (CSRF)
const FIRST_WAIT_MS = 1000, MAX_WAIT_MS = 10000;  // polling backs off from 1 s to 10 s, with jitter
const TERMINAL = new Set(["succeeded", "failed"]);

let providers = [];
let wait = FIRST_WAIT_MS;
let timer = null;
const shown = new Map();  // task id -> its <li>, kept so a playing video is not reloaded

const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const init = { method, headers: { ...HEADERS } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { /* an empty or non-JSON answer */ }
  return { ok: response.ok, status: response.status, data };
}

function errorText(answer) {
  const error = answer.data && answer.data.error;
  if (error) return `${error.code}: ${error.message}`;
  if (answer.data && answer.data.message) return `HTTP ${answer.status}: ${answer.data.message}`;
  return `HTTP ${answer.status}`;
}

function option(select, value, label, selected) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = label;
  element.selected = Boolean(selected);
  select.append(element);
}

// --- the form: options from the provider's capabilities -------------------------------------------

function showCapabilities() {
  const provider = providers.find((p) => p.name === $("provider").value);
  if (!provider) return;
  const caps = provider.capabilities;
  for (const id of ["duration", "orientation", "resolution"]) $(id).replaceChildren();
  option($("duration"), "", `default (${caps.default_duration})`, true);
  for (const d of caps.durations) option($("duration"), String(d), String(d));
  option($("orientation"), "", "default", true);
  for (const o of caps.orientations) option($("orientation"), o, o);
  $("resolution-label").hidden = caps.resolutions.length === 0;
  option($("resolution"), "", "default", true);
  for (const r of caps.resolutions) option($("resolution"), r, r);
  $("pro-label").hidden = !caps.pro;
  $("pro").checked = false;
  const balance = provider.account && provider.account.balance_cents != null
    ? ` · balance ${(provider.account.balance_cents / 100).toFixed(2)} ${provider.account.currency || ""}` : "";
  $("caps").textContent = `${provider.protocol} · ${caps.modes.join(", ")}${balance}` +
    (caps.notes.length ? ` · ${caps.notes.join("; ")}` : "");
}

function showFieldErrors(answer) {
  const box = $("form-errors");
  box.replaceChildren();
  const head = document.createElement("div");
  head.textContent = errorText(answer);
  box.append(head);
  const details = answer.data && answer.data.error && answer.data.error.details;
  if (Array.isArray(details) && details.length) {
    const list = document.createElement("ul");
    for (const detail of details) {
      const item = document.createElement("li");
      const field = detail.field || (Array.isArray(detail.loc) ? detail.loc.join(".") : detail.loc) || "";
      item.textContent = field ? `${field}: ${detail.message || detail.msg}` : (detail.message || detail.msg);
      item.className = "field-error";
      list.append(item);
    }
    box.append(list);
  }
}

async function submitTask(event) {
  event.preventDefault();
  $("form-errors").replaceChildren();
  const prompt = $("prompt").value.trim();
  if (!prompt) {  // the one rule the page checks itself; everything else is the API's to judge
    showFieldErrors({ status: 422, data: { error: { code: "VALIDATION_FAILED", message: "a prompt is required",
      details: [{ field: "prompt", message: "must not be empty" }] } } });
    return;
  }
  const body = { provider: $("provider").value, prompt };
  if ($("duration").value) body.duration = Number($("duration").value);
  if ($("orientation").value) body.orientation = $("orientation").value;
  if (!$("resolution-label").hidden && $("resolution").value) body.resolution = $("resolution").value;
  if (!$("pro-label").hidden && $("pro").checked) body.pro = true;
  $("submit").disabled = true;
  try {
    const answer = await api("POST", "/tasks", body);
    if (!answer.ok) { showFieldErrors(answer); return; }
    $("prompt").value = "";
    wait = FIRST_WAIT_MS;  // something new is running: look again soon
    await refresh();
  } finally {
    $("submit").disabled = false;
  }
}

// --- the task list ------------------------------------------------------------------------------

function age(iso) {
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 5) return "just now";
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
    if (seconds >= size) return `${Math.floor(seconds / size)} ${unit} ago`;
  }
  return `${seconds} s ago`;
}

function media(task) {
  const box = document.createElement("div");
  box.className = "media";
  for (const output of task.outputs) {
    if (!output.url) continue;
    let element;
    if (output.content_type.startsWith("video/")) {
      element = document.createElement("video");
      element.controls = true;
      element.preload = "metadata";
      element.dataset.sha256 = output.sha256;
    } else if (output.content_type.startsWith("image/")) {
      element = document.createElement("img");
      element.alt = task.prompt || task.id;
    } else {
      element = document.createElement("a");
      element.textContent = output.s3_uri;
      element.href = output.url;
    }
    if (element.tagName !== "A") element.src = output.url;
    box.append(element);
  }
  return box;
}

function render(task) {
  let item = shown.get(task.id);
  const key = `${task.status}/${task.progress}`;
  if (item && item.dataset.key === key) {
    item.querySelector(".age").textContent = age(task.created_at);
    return item;
  }
  const fresh = document.createElement("li");
  fresh.className = "task";
  fresh.id = `task-${task.id}`;
  fresh.dataset.status = task.status;
  fresh.dataset.key = key;
  fresh.innerHTML = `<div><span class="status"></span> <progress max="100"></progress> <span class="pct dim"></span></div>
    <div class="meta"><span class="id"></span> · <span class="provider"></span> · <span class="age"></span></div>
    <div class="prompt"></div>`;
  fresh.querySelector(".status").textContent = task.status;
  fresh.querySelector(".status").classList.add(task.status);
  fresh.querySelector("progress").value = task.status === "succeeded" ? 100 : task.progress;
  fresh.querySelector(".pct").textContent = `${task.progress}%`;
  fresh.querySelector(".id").textContent = task.id;
  fresh.querySelector(".provider").textContent = task.provider;
  fresh.querySelector(".age").textContent = age(task.created_at);
  fresh.querySelector(".prompt").textContent = task.prompt || "";
  if (task.error) {
    const error = document.createElement("div");
    error.className = "error";
    error.textContent = `${task.error.code}: ${task.error.message}`;
    fresh.append(error);
  }
  if (task.status === "succeeded") fresh.append(media(task));
  if (item) item.replaceWith(fresh);
  shown.set(task.id, fresh);
  return fresh;
}

async function refresh() {
  clearTimeout(timer);
  const answer = await api("GET", "/tasks?limit=25");
  if (!answer.ok) {
    $("list-error").textContent = errorText(answer);
  } else {
    $("list-error").textContent = "";
    const list = $("tasks");
    const items = answer.data.tasks.map(render);
    list.replaceChildren(...items);
    const moving = answer.data.tasks.some((t) => !TERMINAL.has(t.status));
    wait = moving ? Math.min(MAX_WAIT_MS, wait * 1.5) : MAX_WAIT_MS;
  }
  const next = wait * (0.8 + Math.random() * 0.4);
  $("refresh").textContent = `· next look in ${(next / 1000).toFixed(0)} s`;
  timer = setTimeout(refresh, next);
}

async function start() {
  const config = await fetch("/config.json").then((r) => r.json());
  $("api").textContent = config.api_url;
  const answer = await api("GET", "/providers");
  if (!answer.ok) {
    $("form-errors").textContent = `cannot list providers: ${errorText(answer)}`;
  } else {
    providers = answer.data.providers;
    for (const p of providers) option($("provider"), p.name, p.name);
    showCapabilities();
  }
  $("provider").addEventListener("change", showCapabilities);
  $("submit-form").addEventListener("submit", submitTask);
  await refresh();
}

start();
