// The SLC edge console: plain JavaScript over the documented API (openapi/detector.json).
// No framework, no build step, nothing from another origin. Text from the API is always set
// with textContent, never parsed as HTML.
"use strict";

const KEY_STORAGE = "slc-api-key";
const PAGES = ["concepts", "ask", "status"];
let concepts = [];

// ---------- API ----------

class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const key = apiKey();
  if (key) headers.Authorization = "Bearer " + key;
  return headers;
}

/** A fetch to the edge; a 401 shows the key prompt, any other error body becomes ApiError. */
async function api(path, options) {
  const init = Object.assign({}, options || {});
  init.headers = authHeaders(init.headers);
  const response = await fetch(path, init);
  if (response.status === 401) {
    askForKey();
    throw new ApiError(401, "unauthorized", "This edge needs an API key.");
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function errorOf(response) {
  let type = "http_" + response.status;
  let message = response.status + " " + response.statusText;
  try {
    const body = await response.json();
    if (body && body.error) {
      type = body.error.type;
      message = body.error.message;
    }
  } catch (_) {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, type, message);
}

async function apiJson(path, options) {
  const response = await api(path, options);
  return response.status === 204 ? null : response.json();
}

function postJson(path, body, method) {
  return api(path, {
    method: method || "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

// ---------- small helpers ----------

function $(id) {
  return document.getElementById(id);
}

function element(tag, attributes, children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "text") node.textContent = value;
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children || []) node.append(child);
  return node;
}

function notify(message, ok) {
  const notice = $("notice");
  notice.textContent = message;
  notice.className = ok ? "ok" : "";
  notice.hidden = false;
}

function clearNotice() {
  $("notice").hidden = true;
}

function showError(error) {
  if (error instanceof ApiError && error.status === 401) return;
  const prefix = error instanceof ApiError ? error.status + " " + error.type + ": " : "";
  notify(prefix + error.message);
}

/** A file or blob as a data URL, the form the API takes images in. */
function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("cannot read " + (file.name || "the photo")));
    reader.readAsDataURL(file);
  });
}

function plural(count, noun) {
  return count + " " + noun + (count === 1 ? "" : "s");
}

function ms(value) {
  return value < 1000 ? value.toFixed(0) + " ms" : (value / 1000).toFixed(2) + " s";
}

// ---------- pages ----------

function showPage(name) {
  const page = PAGES.includes(name) ? name : "concepts";
  for (const other of PAGES) $("page-" + other).hidden = other !== page;
  $("page-key").hidden = true;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (page === "concepts" || page === "ask") loadConcepts().catch(showError);
  if (page === "status") loadStatus().catch(showError);
}

function currentPage() {
  return location.hash.replace("#", "") || "concepts";
}

function askForKey() {
  for (const other of PAGES) $("page-" + other).hidden = true;
  $("page-key").hidden = false;
  $("key-input").focus();
}

function useKey(event) {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("key-input").value = "";
  $("forget-key").hidden = false;
  clearNotice();
  showPage(currentPage());
}

function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
  $("forget-key").hidden = true;
  askForKey();
}

// ---------- concepts ----------

async function loadConcepts() {
  const list = await apiJson("/v1/concepts");
  concepts = list.concepts;
  renderConcepts();
  renderAskConcepts();
}

function renderConcepts() {
  const list = $("concept-list");
  list.replaceChildren(...concepts.map(conceptItem));
  $("concept-count").textContent =
    concepts.length === 0 ? "No concepts registered yet." : plural(concepts.length, "concept");
}

function conceptItem(concept) {
  const cover = element("img", { className: "cover", alt: "Reference photo of <" + concept.id + ">" });
  loadThumbnail(concept.id, 0, cover);
  const heading = element("h3", { text: "<" + concept.id + ">" });
  if (concept.adapter) {
    heading.append(
      element("span", {
        className: "badge",
        text: concept.adapter.name + " · " + concept.adapter.similarity.toFixed(3),
        title: "The meta-adapter this concept maps to (Eq. 1) and its cosine similarity",
      }),
    );
  }
  const descriptionId = "description-" + concept.id;
  const description = element("textarea", { id: descriptionId, rows: "2", maxlength: "4000" });
  description.value = concept.description;
  const thumbs = element("div", { className: "thumbs" });
  concept.images.forEach((image, index) => {
    const img = element("img", { alt: "Photo " + (index + 1) + " of <" + concept.id + ">" });
    loadThumbnail(concept.id, image.index, img);
    const remove = element("button", {
      type: "button",
      className: "danger",
      text: "×",
      "aria-label": "Remove photo " + (index + 1) + " of <" + concept.id + ">",
    });
    remove.addEventListener("click", () => replaceImages(concept, index, []).catch(showError));
    thumbs.append(element("div", { className: "thumb" }, [img, remove]));
  });
  const addId = "add-" + concept.id;
  const add = element("input", { id: addId, type: "file", accept: "image/*", multiple: "" });
  add.addEventListener("change", () =>
    replaceImages(concept, null, Array.from(add.files)).catch(showError),
  );
  const save = element("button", { type: "button", className: "small", text: "Save description" });
  save.addEventListener("click", () => saveDescription(concept, description.value).catch(showError));
  const remove = element("button", {
    type: "button",
    className: "small danger",
    text: "Delete",
    "data-delete": concept.id,
  });
  remove.addEventListener("click", () => deleteConcept(concept, remove).catch(showError));
  const body = element("div", {}, [
    heading,
    element("label", { for: descriptionId, text: "Description" }),
    description,
    element("p", {
      className: "hint",
      text: plural(concept.images.length, "photo") + " · updated " + new Date(concept.updated_at).toLocaleString(),
    }),
    thumbs,
    element("label", { for: addId, text: "Add photos" }),
    add,
    element("div", { className: "actions" }, [save, remove]),
  ]);
  return element("li", { className: "concept", "data-concept": concept.id }, [cover, body]);
}

/** Images need the key, so they are fetched and shown as blob URLs, not linked. */
async function loadThumbnail(id, index, img) {
  try {
    const response = await api("/v1/concepts/" + encodeURIComponent(id) + "/images/" + index);
    img.src = URL.createObjectURL(await response.blob());
  } catch (error) {
    img.alt = "(photo unavailable: " + error.message + ")";
  }
}

async function currentImages(concept) {
  return Promise.all(
    concept.images.map(async (image) => {
      const path = "/v1/concepts/" + encodeURIComponent(concept.id) + "/images/" + image.index;
      return readAsDataUrl(await (await api(path)).blob());
    }),
  );
}

/** Adds `files`, or removes the photo at `removeIndex`: the API replaces all photos at once. */
async function replaceImages(concept, removeIndex, files) {
  const images = await currentImages(concept);
  if (removeIndex !== null) images.splice(removeIndex, 1);
  for (const file of files) images.push(await readAsDataUrl(file));
  if (images.length === 0) {
    notify("A concept needs at least one photo; delete it instead.");
    return;
  }
  await postJson("/v1/concepts/" + encodeURIComponent(concept.id), {
    description: concept.description,
    images,
  }, "PUT");
  notify("Updated the photos of <" + concept.id + ">.", true);
  await loadConcepts();
}

async function saveDescription(concept, description) {
  if (!mentionsId(description, concept.id)) {
    notify("The description must name the concept as <" + concept.id + ">.");
    return;
  }
  await postJson("/v1/concepts/" + encodeURIComponent(concept.id), { description }, "PUT");
  notify("Saved the description of <" + concept.id + ">.", true);
  await loadConcepts();
}

async function deleteConcept(concept, button) {
  // Two steps instead of a modal dialog: the first click arms, the second deletes.
  if (button.dataset.armed !== "yes") {
    button.dataset.armed = "yes";
    button.textContent = "Really delete <" + concept.id + ">?";
    return;
  }
  await api("/v1/concepts/" + encodeURIComponent(concept.id), { method: "DELETE" });
  notify("Deleted <" + concept.id + ">.", true);
  await loadConcepts();
}

function mentionsId(description, id) {
  return description.includes("<" + id + ">");
}

async function register(event) {
  event.preventDefault();
  clearNotice();
  const id = $("register-id").value.trim();
  const description = $("register-description").value.trim();
  const files = Array.from($("register-images").files);
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
    notify("The id must be 1 to 64 of A–Z, a–z, 0–9, _ and -.");
    return;
  }
  if (!mentionsId(description, id)) {
    notify("The description must name the concept as <" + id + ">, for example: <" + id + "> is a Shiba Inu.");
    return;
  }
  if (files.length === 0) {
    notify("Choose or drop at least one photo.");
    return;
  }
  const button = event.submitter || $("register-form").querySelector("button");
  button.disabled = true;
  try {
    const images = await Promise.all(files.map(readAsDataUrl));
    await postJson("/v1/concepts", { id, description, images });
    $("register-form").reset();
    notify("Registered <" + id + ">.", true);
    await loadConcepts();
  } catch (error) {
    showError(error);
  } finally {
    button.disabled = false;
  }
}

// ---------- ask ----------

function renderAskConcepts() {
  const fieldset = $("ask-concepts");
  const checked = new Set(
    Array.from(fieldset.querySelectorAll("input:checked")).map((input) => input.value),
  );
  for (const old of fieldset.querySelectorAll(".choice")) old.remove();
  $("ask-no-concepts").hidden = concepts.length > 0;
  for (const concept of concepts) {
    const id = "ask-concept-" + concept.id;
    const input = element("input", { type: "checkbox", id, value: concept.id });
    input.checked = checked.has(concept.id);
    fieldset.append(
      element("span", { className: "choice" }, [
        input,
        element("label", { for: id, text: "<" + concept.id + ">" }),
      ]),
    );
  }
}

async function previewAskImage() {
  const file = $("ask-image").files[0];
  $("ask-preview").hidden = !file;
  if (file) $("ask-preview-image").src = await readAsDataUrl(file);
}

async function ask(event) {
  event.preventDefault();
  clearNotice();
  const question = $("ask-question").value.trim();
  if (!question) {
    notify("Type a question.");
    return;
  }
  // Before the first await: the previous turn's result must not look like this one's.
  const answer = $("answer");
  answer.textContent = "";
  answer.dataset.events = "";
  answer.dataset.turn = String(Number(answer.dataset.turn || 0) + 1);
  $("trace").hidden = true;
  $("ask-submit").disabled = true;
  setAskState("Asking…");
  const file = $("ask-image").files[0];
  const body = {
    question,
    concepts: Array.from($("ask-concepts").querySelectorAll("input:checked")).map((i) => i.value),
    mode: $("ask-mode").value,
    pseudonymize: $("ask-pseudonymize").checked,
    stream: true,
  };
  try {
    if (file) body.image = await readAsDataUrl(file);
    const response = await postJson("/v1/ask", body);
    await readEvents(response, onAskEvent);
  } catch (error) {
    setAskState("Failed.");
    showError(error);
  } finally {
    $("ask-submit").disabled = false;
  }
}

function setAskState(text) {
  $("ask-state").textContent = text;
}

/** Server-sent events from a POST response (EventSource cannot POST or send a key). */
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length > 0) onEvent(name, data.join("\n"));
    }
  }
}

function onAskEvent(name, data) {
  const answer = $("answer");
  answer.dataset.events = (answer.dataset.events ? answer.dataset.events + "," : "") + name;
  if (name === "detection") {
    const detection = JSON.parse(data);
    const present = Object.entries(detection.cues).filter(([, cue]) => cue.present).map(([id]) => id);
    setAskState("Detected " + (present.length ? present.join(", ") : "no concept") + "; asking the cloud…");
  } else if (name === "verification") {
    setAskState("Cues verified; the answer is being written…");
  } else if (name === "delta") {
    answer.textContent += JSON.parse(data).text;
    setAskState("Writing the answer…");
  } else if (name === "done") {
    const response = JSON.parse(data);
    answer.textContent = response.answer;
    setAskState("Done in " + ms(response.timings.total_ms) + ".");
    renderTrace(response);
  } else if (name === "error") {
    const failure = JSON.parse(data);
    setAskState("Failed.");
    notify(failure.error.type + ": " + failure.error.message);
  }
}

function table(headers, rows) {
  const head = element("tr", {}, headers.map((h) => element("th", { scope: "col", text: h })));
  const body = rows.map((cells) =>
    element("tr", {}, cells.map((cell) => (cell instanceof Node ? element("td", {}, [cell]) : element("td", { text: String(cell) })))),
  );
  return element("div", { className: "table-wrap" }, [
    element("table", {}, [element("thead", {}, [head]), element("tbody", {}, body)]),
  ]);
}

function cueRows(cues) {
  return Object.entries(cues || {}).map(([id, cue]) => [
    id,
    cue.present ? "yes" : "no",
    cue["location-absolute"] || "—",
    cue["location-relative"] || "—",
  ]);
}

function renderTrace(response) {
  const parts = [];
  const reasoning = response.reasoning;
  const facts = element("dl", { className: "facts" });
  const fact = (term, value) => facts.append(element("dt", { text: term }), element("dd", { text: value }));
  fact("Mode", response.mode);
  const adapter = response.detection && response.detection.adapter;
  fact("Adapter", adapter ? adapter.name + " (similarity " + adapter.similarity.toFixed(3) + ")" : "base model");
  fact("Large model", reasoning.upstream.model || "—");
  fact("Large-model calls", String(reasoning.upstream.calls) + (reasoning.upstream.retries ? " (" + reasoning.upstream.retries + " retries)" : ""));
  fact("Tokens", reasoning.upstream.prompt_tokens + " prompt · " + reasoning.upstream.completion_tokens + " completion");
  fact("Identity cache hits", String(reasoning.upstream.identity_cache_hits));
  parts.push(facts);

  if (response.raw_cues) {
    parts.push(element("h4", { text: "Cues from the edge" }));
    parts.push(table(["Concept", "Present", "Where (absolute)", "Where (relative)"], cueRows(response.raw_cues)));
  }
  if (reasoning.verifications.length > 0) {
    parts.push(element("h4", { text: "Verification" }));
    parts.push(
      table(
        ["Concept", "Checks", "Question", "Answer"],
        reasoning.verifications.map((v) => [
          v.concept,
          v.about,
          v.question,
          element("span", { className: v.answer, text: v.answer + (v.raw_answer ? " (“" + v.raw_answer + "”)" : "") }),
        ]),
      ),
    );
  }
  const actions = Object.entries(reasoning.actions || {});
  if (actions.length > 0) {
    parts.push(element("h4", { text: "Actions" }));
    parts.push(
      table(
        ["Concept", "Action"],
        actions.map(([id, action]) => [id, element("span", { className: "action-" + action, text: action.replace(/_/g, " ") })]),
      ),
    );
  }
  if (reasoning.refined_cues) {
    parts.push(element("h4", { text: "Refined cues" }));
    parts.push(table(["Concept", "Present", "Where (absolute)", "Where (relative)"], cueRows(reasoning.refined_cues)));
  }
  const identities = Object.entries(reasoning.identities || {});
  if (identities.length > 0) {
    parts.push(element("h4", { text: "Identities" }));
    parts.push(table(["Concept", "Category", "Attributes"], identities.map(([id, identity]) => [id, identity.category, identity.attributes])));
  }
  parts.push(element("h4", { text: "Timings" }));
  parts.push(timingBars(response));
  $("trace-body").replaceChildren(...parts);
  $("trace").hidden = false;
}

function timingBars(response) {
  const t = response.reasoning.timings;
  const rows = [
    ["Detection", response.timings.detect_ms],
    ["Identities", t.identity_ms],
    ["Verification", t.verification_ms],
    ["Answer", t.answer_ms],
    ["Total", response.timings.total_ms],
  ];
  const longest = Math.max(1, ...rows.map(([, value]) => value));
  return element(
    "div",
    { className: "bars", role: "list" },
    rows.map(([label, value]) => {
      const fill = element("div", { className: "fill" });
      // CSSOM, not a style attribute: allowed under the console's Content-Security-Policy.
      fill.style.width = ((100 * value) / longest).toFixed(1) + "%";
      return element("div", { className: "bar", role: "listitem" }, [
        element("span", { text: label }),
        element("div", { className: "track", "aria-hidden": "true" }, [fill]),
        element("span", { text: ms(value) }),
      ]);
    }),
  );
}

// ---------- status ----------

async function loadStatus() {
  const ready = await fetch("/readyz").then((r) => r.json()).catch(() => ({ status: "unreachable" }));
  const status = await apiJson("/v1/status");
  const list = $("status-list");
  const rows = [
    ["Readiness", ready.status + (ready.reason ? ": " + ready.reason : "")],
    ["Model", status.base_model || "(loading)"],
    ["Adapters", status.adapters.length ? status.adapters.join(", ") : "none"],
    ["CLIP", status.clip_model || "(loading)"],
    ["Workers", String(status.workers)],
    ["Queue", status.queue_depth + " of " + status.queue_capacity],
    ["Vision cache", hitRate(status.vision_cache_hits, status.vision_cache_misses)],
    ["Prefix cache", reuseRate(status.prefix_reused_tokens, status.prefill_tokens)],
  ];
  list.replaceChildren(...rows.flatMap(([term, value]) => [element("dt", { text: term }), element("dd", { text: value })]));
}

function hitRate(hits, misses) {
  const total = hits + misses;
  return total === 0 ? "no images yet" : ((100 * hits) / total).toFixed(0) + "% hits (" + hits + " of " + total + " images)";
}

function reuseRate(reused, prefilled) {
  const total = reused + prefilled;
  return total === 0 ? "no prompts yet" : ((100 * reused) / total).toFixed(0) + "% of prompt tokens reused (" + reused + " of " + total + ")";
}

// ---------- drag and drop ----------

function wireDropZone(zone) {
  const input = $(zone.dataset.drop);
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const transfer = new DataTransfer();
    const files = Array.from(event.dataTransfer.files).filter((f) => f.type.startsWith("image/"));
    for (const file of input.multiple ? files : files.slice(0, 1)) transfer.items.add(file);
    input.files = transfer.files;
    input.dispatchEvent(new Event("change"));
  });
}

// ---------- start ----------

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", useKey);
  $("forget-key").addEventListener("click", forgetKey);
  $("forget-key").hidden = !apiKey();
  $("register-form").addEventListener("submit", register);
  $("ask-form").addEventListener("submit", (event) => ask(event).catch(showError));
  $("ask-image").addEventListener("change", () => previewAskImage().catch(showError));
  $("status-refresh").addEventListener("click", () => loadStatus().catch(showError));
  for (const zone of document.querySelectorAll("[data-drop]")) wireDropZone(zone);
  window.addEventListener("hashchange", () => showPage(currentPage()));
  showPage(currentPage());
});
