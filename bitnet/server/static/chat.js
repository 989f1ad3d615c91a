// The chat page of `bitnet serve` (docs/serving.md). It talks to this server's own OpenAI API:
// POST /v1/chat/completions with stream: true, read as server-sent events through fetch and a
// ReadableStream; Stop aborts the fetch. Model text reaches the page only through textContent.
"use strict";

const STORAGE = { key: "bitnet.chat.apiKey", settings: "bitnet.chat.settings" };
// the sampling inputs: each id is also the request field it fills (empty: the server's default)
const NUMBER_SETTINGS = [["temperature", Number], ["top_p", Number],
                         ["max_tokens", (v) => parseInt(v, 10)], ["seed", (v) => parseInt(v, 10)]];
const SAVED_SETTINGS = ["temperature", "top_p", "max_tokens", "seed", "system"];

const chat = {
  history: [],       // the turns sent with the next request: {role, content}
  controller: null,  // the AbortController of the reply being streamed, or null
  modelId: null,     // the id the server serves (/v1/models, else /health)
  ready: false,      // /health said the model is loaded
};

const el = (id) => document.getElementById(id);

function notice(text) {
  el("notice").textContent = text;
}

function apiHeaders() {
  const headers = { "Content-Type": "application/json" };
  const key = el("api-key").value.trim();
  if (key) headers.Authorization = "Bearer " + key;
  return headers;
}

// The message of an error response (the server's errors are {"error": {"message": ...}}).
async function errorText(response) {
  const raw = await response.text();
  try {
    const message = JSON.parse(raw).error.message;
    if (message) return `${response.status}: ${message}`;
  } catch (_) {
    // not the OpenAI shape: the status and the raw body say what happened
  }
  return `${response.status} ${response.statusText} ${raw.slice(0, 200)}`.trim();
}

// ---- what the server runs ----

async function loadServerInfo() {
  let health;
  try {
    health = await (await fetch("/health")).json();
  } catch (e) {
    el("server-info").textContent = `cannot reach the server (${e.message}); retrying…`;
    setTimeout(loadServerInfo, 2000);
    return;
  }
  if (health.status === "loading") {
    el("server-info").textContent = "loading the model…";
    setTimeout(loadServerInfo, 1000);
    return;
  }
  if (health.status !== "ok") {
    el("server-info").textContent = `the model failed to load: ${health.error}`;
    return;
  }
  el("server-info").textContent =
    `model ${health.model} · backend ${health.backend} · device ${health.device}`;
  chat.modelId = health.model;
  chat.ready = true;
  updateButtons();
  await checkKey();
}

// /v1/models with the key: confirms the model id, and says at once when a key is needed.
async function checkKey() {
  let response;
  try {
    response = await fetch("/v1/models", { headers: apiHeaders() });
  } catch (e) {
    notice(`/v1/models: ${e.message}`);
    return;
  }
  if (response.ok) {
    chat.modelId = (await response.json()).data[0].id;
    notice("");
  } else if (response.status === 401) {
    notice("This server needs an API key: enter it under Settings.");
  } else {
    notice(`/v1/models: ${await errorText(response)}`);
  }
}

// ---- settings, kept in localStorage ----

function save(name, value) {
  try {
    if (value === null) localStorage.removeItem(name);
    else localStorage.setItem(name, value);
  } catch (e) {
    notice(`this browser does not keep settings (${e.message})`);
  }
}

function restoreSettings() {
  let saved = {};
  try {
    el("api-key").value = localStorage.getItem(STORAGE.key) || "";
    saved = JSON.parse(localStorage.getItem(STORAGE.settings) || "{}");
  } catch (e) {
    notice(`saved settings could not be read (${e.message})`);
  }
  for (const id of SAVED_SETTINGS) {
    if (typeof saved[id] === "string") el(id).value = saved[id];
  }
}

function saveSettings() {
  const values = {};
  for (const id of SAVED_SETTINGS) values[id] = el(id).value;
  save(STORAGE.settings, JSON.stringify(values));
}

// The request for the conversation so far; throws naming the setting that is not valid.
function requestBody() {
  const body = { messages: [], stream: true, stream_options: { include_usage: true } };
  if (chat.modelId) body.model = chat.modelId;
  const system = el("system").value.trim();
  if (system) body.messages.push({ role: "system", content: system });
  body.messages.push(...chat.history);
  for (const [id, parse] of NUMBER_SETTINGS) {
    const input = el(id);
    if (!input.checkValidity()) {
      throw new Error(`${input.labels[0].textContent.trim()}: ${input.validationMessage}`);
    }
    if (input.value !== "") body[id] = parse(input.value);
  }
  return body;
}

// ---- streaming ----

// Yields the JSON of each `data:` event until `data: [DONE]`; a stream that ends before it is
// an error (the reply was cut off).
async function* serverEvents(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the server closed the stream before the reply ended");
      buffered += value;
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const data = buffered.slice(0, end).split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        buffered = buffered.slice(end + 2);
        if (data === "[DONE]") return;
        if (data !== "") yield JSON.parse(data);
      }
    }
  } finally {
    reader.cancel().catch(() => {});  // frees the connection; after an abort there is none
  }
}

function addMessage(role, text) {
  const box = document.createElement("div");
  box.className = `msg ${role}`;
  const who = document.createElement("span");
  who.className = "role";
  who.textContent = role;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  box.append(who, body);
  el("messages").append(box);
  box.scrollIntoView({ block: "end" });
  return box;
}

function showStats(t, outcome) {
  const tokens = t.usage ? t.usage.completion_tokens : t.pieces;
  const parts = [`${t.usage ? "" : "≈"}${tokens} tokens`];
  if (tokens > 1 && t.last > t.first) {
    parts.push(`${((tokens - 1) / ((t.last - t.first) / 1000)).toFixed(1)} tokens/s`);
  }
  if (t.first !== null) parts.push(`first token after ${Math.round(t.first - t.start)} ms`);
  el("stats").textContent = (outcome === "stopped" ? "stopped: " : "") + parts.join(" · ");
}

function updateButtons() {
  const busy = chat.controller !== null;
  el("send").disabled = busy || !chat.ready;
  el("stop").disabled = !busy;
}

async function send() {
  const text = el("prompt").value;
  if (!text.trim() || chat.controller !== null || !chat.ready) return;
  const turns = chat.history;  // this conversation, even if New chat starts another meanwhile
  turns.push({ role: "user", content: text });
  let body;
  try {
    body = requestBody();
  } catch (e) {
    turns.pop();
    notice(e.message);
    return;
  }
  notice("");
  el("prompt").value = "";
  const userBox = addMessage("user", text);
  const replyBox = addMessage("assistant", "");
  const replyText = replyBox.querySelector(".text");
  replyBox.dataset.state = "streaming";
  chat.controller = new AbortController();
  updateButtons();

  const t = { start: performance.now(), first: null, last: null, pieces: 0, usage: null };
  let content = "";
  let outcome = "done";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: apiHeaders(), body: JSON.stringify(body),
      signal: chat.controller.signal,
    });
    if (!response.ok) throw new Error(await errorText(response));
    for await (const event of serverEvents(response.body)) {
      if (event.error) throw new Error(event.error.message);
      if (event.usage) t.usage = event.usage;
      const choice = event.choices && event.choices[0];
      const piece = choice && choice.delta && choice.delta.content;
      if (piece) {
        const now = performance.now();
        if (t.first === null) t.first = now;
        t.last = now;
        t.pieces += 1;
        content += piece;
        replyText.textContent = content;
        replyBox.scrollIntoView({ block: "end" });
      }
    }
  } catch (e) {
    if (e.name === "AbortError") {
      outcome = "stopped";
    } else {
      outcome = "error";
      notice(e.message);
    }
  }
  chat.controller = null;
  replyBox.dataset.state = outcome;
  if (outcome === "error" || content === "") {
    // the turn is not kept: the next request is sent without it, and its text can be sent again
    turns.pop();
    userBox.classList.add("dropped");
    if (outcome === "error") replyText.textContent = "(no reply: see the message below)";
    if (el("prompt").value === "") el("prompt").value = text;
  } else {
    turns.push({ role: "assistant", content });
  }
  if (outcome !== "error" && turns === chat.history) showStats(t, outcome);
  updateButtons();
  el("prompt").focus();
}

function stop() {
  if (chat.controller !== null) chat.controller.abort();
}

function newChat() {
  stop();
  chat.history = [];
  el("messages").replaceChildren();
  el("stats").textContent = "";
  notice("");
  el("prompt").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  restoreSettings();
  el("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  el("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  el("settings-form").addEventListener("submit", (e) => e.preventDefault());
  el("stop").addEventListener("click", stop);
  el("new-chat").addEventListener("click", newChat);
  for (const id of SAVED_SETTINGS) el(id).addEventListener("change", saveSettings);
  el("api-key").addEventListener("change", () => {
    save(STORAGE.key, el("api-key").value.trim() || null);
    if (chat.ready) checkKey();
  });
  loadServerInfo();
});
