// convbridge explorer: one image through every model, with top-k scores, where the model
// looked (the explain API's Grad-CAM overlay, for any class), model card facts,
// server-measured latency and each layer's feature maps (the feature-maps API's PNG grids).
// Plain JavaScript, no build step and no network beyond this service.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const state = { models: [], image: null, run: 0 };

function token() {
  return $("#token").value.trim();
}

// fetch() against this service; a non-2xx answer throws its JSON "error" message.
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", `Bearer ${token()}`);
  const started = performance.now();
  const response = await fetch(path, { ...options, headers });
  const roundTrip = performance.now() - started;
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = `${response.status}: ${(await response.json()).error}`;
    } catch (ignored) { /* not JSON: keep the status line */ }
    throw new Error(message);
  }
  return { response, roundTrip };
}

// "decode;dur=0.41, queue;dur=1.2" -> 1.61 (milliseconds the server spent).
function serverMilliseconds(response) {
  const header = response.headers.get("Server-Timing") || "";
  return header.split(",").reduce((total, part) => {
    const match = /dur=([0-9.]+)/.exec(part);
    return total + (match ? parseFloat(match[1]) : 0);
  }, 0);
}

function setStatus(text, isError = false) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function loadModels() {
  try {
    const { response } = await api("/models");
    state.models = (await response.json()).models.filter((m) => m.served_version !== null);
  } catch (error) {
    $("#model-list").innerHTML = "";
    setStatus(`Could not list the models: ${error.message}`, true);
    return;
  }
  const list = $("#model-list");
  list.innerHTML = "";
  for (const model of state.models) {
    const label = document.createElement("label");
    label.innerHTML = `<input type="checkbox" name="model" checked> `;
    label.querySelector("input").value = model.name;
    label.append(`${model.name} `);
    const bridge = document.createElement("span");
    bridge.className = "hint";
    bridge.textContent = model.bridge || "";
    label.append(bridge);
    list.append(label);
  }
  if (!state.models.length) list.innerHTML = `<p class="hint">No model is ready yet.</p>`;
  document.body.dataset.models = String(state.models.length);
}

function selectedModels() {
  const names = [...document.querySelectorAll("input[name=model]:checked")].map((i) => i.value);
  return state.models.filter((model) => names.includes(model.name));
}

function setImage(blob) {
  state.image = blob;
  const preview = $("#preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(blob);
  preview.hidden = false;
  run();
}

async function run() {
  if (!state.image) return;
  const runId = ++state.run;
  const models = selectedModels();
  const results = $("#results");
  results.innerHTML = "";
  document.body.dataset.state = "running";
  setStatus(`Classifying with ${models.length} model(s)…`);
  const cards = models.map((model) => {
    const card = modelCard(model);
    results.append(card);
    return classify(model, card, runId);
  });
  const outcomes = await Promise.allSettled(cards);
  if (runId !== state.run) return; // a newer image replaced this one
  const failed = outcomes.filter((o) => o.status === "rejected").length;
  setStatus(failed ? `${failed} model(s) failed; see their cards.` : "Done.", failed > 0);
  document.body.dataset.state = "done";
}

function modelCard(model) {
  const card = $("#model-card").content.firstElementChild.cloneNode(true);
  card.dataset.model = model.name;
  $(".name", card).textContent = model.name;
  const facts = [
    model.bridge && `bridge: ${model.bridge}`,
    model.parameters != null && `${model.parameters.toLocaleString()} parameters`,
    model.accuracy != null && `held-out accuracy ${(100 * model.accuracy).toFixed(1)}%`,
    `version ${model.served_version}`,
    model.device,
  ].filter(Boolean);
  $(".facts", card).textContent = facts.join(" · ");
  return card;
}

async function classify(model, card, runId) {
  const topK = $("#top-k").value || "3";
  try {
    const { response, roundTrip } = await api(
      `/models/${encodeURIComponent(model.name)}/classify?top_k=${topK}`, imagePost());
    const answer = await response.json();
    showScores(card, answer, roundTrip);
    await showExplanation(model, card);
  } catch (error) {
    $(".latency", card).innerHTML = "";
    const text = document.createElement("span");
    text.className = "error-text";
    text.textContent = error.message;
    $(".latency", card).append(text);
    card.dataset.error = error.message;
    throw error;
  }
  for (const layer of model.layers || []) {
    if (runId !== state.run) return;
    await showLayer(model, layer, card);
  }
  card.dataset.mapsLoaded = "true";
}

// The chosen image as a raw POST body, typed when the browser knows its image type.
function imagePost() {
  const type = state.image.type && state.image.type.startsWith("image/")
    ? state.image.type : "application/octet-stream";
  return { method: "POST", body: state.image, headers: { "Content-Type": type } };
}

function pageSize() {
  return Math.max(1, parseInt($("#page-size").value, 10) || 16);
}

function showScores(card, answer, roundTrip) {
  const list = $(".scores", card);
  const prediction = answer.predictions[0];
  for (const entry of prediction.top_k) {
    const item = document.createElement("li");
    item.innerHTML = `<span class="label"></span><span class="bar"></span><span class="score"></span>`;
    $(".label", item).textContent = entry.label;
    $(".bar", item).style.width = `${(100 * entry.score).toFixed(1)}%`;
    $(".score", item).textContent = `${(100 * entry.score).toFixed(1)}%`;
    list.append(item);
  }
  card.dataset.topLabel = prediction.top_k[0].label;
  const t = answer.timings_ms;
  const server = Object.values(t).reduce((a, b) => a + b, 0);
  $(".latency", card).textContent =
    `server ${server.toFixed(1)} ms (decode ${t.decode.toFixed(1)}, queue ${t.queue.toFixed(1)}, ` +
    `compute ${t.compute.toFixed(1)}, encode ${t.encode.toFixed(1)}) · ` +
    `round trip ${roundTrip.toFixed(1)} ms · ${prediction.image.original_size.join("×")} ` +
    `${prediction.image.original_mode} → ${prediction.image.model_size.join("×")}`;
}

// The Grad-CAM overlay of the picked class (the top one at first) beside the scores.
async function showExplanation(model, card) {
  const figure = $("figure.explanation", card);
  const picker = $(".class-picker", card);
  const note = $(".explain-note", card);
  if (!(model.endpoints && model.endpoints.explain)) {
    figure.hidden = true;
    card.dataset.overlay = "unavailable";
    note.textContent = "exported before explanations: re-export with make models";
    return;
  }
  if (!picker.options.length) {
    picker.append(new Option("its top class", ""));
    (model.classes || []).forEach((label, index) => picker.append(new Option(label, String(index))));
    picker.addEventListener("change", () => loadExplanation(model, card));
  }
  await loadExplanation(model, card);
}

async function loadExplanation(model, card) {
  const picker = $(".class-picker", card);
  const note = $(".explain-note", card);
  const image = $("img.overlay", card);
  const chosen = picker.value === "" ? "" : `&class=${encodeURIComponent(picker.value)}`;
  card.dataset.overlay = "loading";
  try {
    const { response } = await api(
      `/models/${encodeURIComponent(model.name)}/explain?format=png${chosen}`, imagePost());
    if (image.src) URL.revokeObjectURL(image.src);
    const loaded = new Promise((resolve) => { image.onload = resolve; image.onerror = resolve; });
    image.src = URL.createObjectURL(await response.blob());
    const label = response.headers.get("X-Class-Label");
    const score = parseFloat(response.headers.get("X-Class-Score"));
    image.alt = `${model.name}: where it looked for class ${label}`;
    note.textContent = `class ${label}, p = ${score.toFixed(3)} · Grad-CAM at ` +
      `${response.headers.get("X-Explain-Layer")} · server ` +
      `${serverMilliseconds(response).toFixed(1)} ms`;
    await loaded;
    card.dataset.overlay = image.naturalWidth > 0 ? "loaded" : "failed";
    card.dataset.overlayClass = label;
  } catch (error) {
    card.dataset.overlay = "failed";
    note.textContent = error.message;
  }
}

async function showLayer(model, layer, card) {
  const figure = $("#layer-card").content.firstElementChild.cloneNode(true);
  figure.dataset.layer = layer.name;
  $(".layer-name", figure).textContent = layer.name;
  $(".layer-shape", figure).textContent = `${layer.kind} ${layer.shape.join("×")}`;
  $(".layers", card).append(figure);
  const total = layer.shape[layer.shape.length - 1];
  const pager = { start: 0 };
  const load = async () => {
    const stop = Math.min(total, pager.start + pageSize());
    $(".channels", figure).textContent = `channels ${pager.start}–${stop - 1} of ${total}`;
    $(".prev", figure).disabled = pager.start === 0;
    $(".next", figure).disabled = stop >= total;
    const query = `layers=${encodeURIComponent(layer.name)}&format=png&channels=${pager.start}:${stop}`;
    try {
      const { response } = await api(
        `/models/${encodeURIComponent(model.name)}/feature-maps?${query}`, imagePost());
      const image = $("img.grid", figure);
      if (image.src) URL.revokeObjectURL(image.src);
      const loaded = new Promise((resolve) => { image.onload = resolve; image.onerror = resolve; });
      image.src = URL.createObjectURL(await response.blob());
      image.alt = `${model.name} ${layer.name}, channels ${pager.start} to ${stop - 1}`;
      image.title = `server ${serverMilliseconds(response).toFixed(1)} ms`;
      await loaded;
      figure.dataset.loaded = String(image.naturalWidth > 0);
    } catch (error) {
      figure.dataset.loaded = "false";
      $(".channels", figure).textContent = error.message;
    }
  };
  $(".prev", figure).addEventListener("click", () => {
    pager.start = Math.max(0, pager.start - pageSize());
    load();
  });
  $(".next", figure).addEventListener("click", () => {
    pager.start += pageSize();
    load();
  });
  await load();
}

function setUpDrop() {
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) setImage(file);
  });
  $("#file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) setImage(file);
  });
}

function setUpCanvas() {
  const canvas = $("#canvas");
  const context = canvas.getContext("2d");
  const clear = () => { context.fillStyle = "#000"; context.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  context.strokeStyle = "#fff";
  context.lineWidth = 22;
  context.lineCap = context.lineJoin = "round";
  let drawing = false;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
      (event.clientY - box.top) * canvas.height / box.height];
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    canvas.setPointerCapture(event.pointerId);
    context.beginPath();
    context.moveTo(...point(event));
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    context.lineTo(...point(event));
    context.stroke();
  });
  canvas.addEventListener("pointerup", () => { drawing = false; });
  $("#clear").addEventListener("click", clear);
  $("#use-drawing").addEventListener("click", () => canvas.toBlob((blob) => setImage(blob), "image/png"));
}

document.addEventListener("DOMContentLoaded", () => {
  $("#token").value = sessionStorage.getItem("convbridge-token") || "";
  $("#token").addEventListener("change", () => {
    sessionStorage.setItem("convbridge-token", token());
    loadModels();
  });
  $("#options").addEventListener("change", (event) => {
    if (event.target.id !== "token") run();
  });
  $("#options").addEventListener("submit", (event) => event.preventDefault());
  setUpDrop();
  setUpCanvas();
  loadModels();
});
