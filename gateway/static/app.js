"use strict";
const $ = (id) => document.getElementById(id);
let features = [];

function fieldError(name, message) {
  const input = $("f-" + name), err = $("e-" + name);
  if (!input) return false;
  input.setAttribute("aria-invalid", message ? "true" : "false");
  err.textContent = message || "";
  return true;
}

function showSync(registry) {
  const el = $("sync");
  if (!registry) { el.textContent = "Model registry status: unknown (no registry-watcher)."; el.className = "sub"; return; }
  const live = registry.live.filter((v) => v.weight > 0).map((v) => "v" + (v.model_package_version ?? "?")).join(", ") || "none";
  el.textContent = registry.in_sync
    ? `Live model ${live} is the latest approved version.`
    : `Live model ${live} is NOT the latest approved version (v${registry.latest_approved_version ?? "?"})` +
      (registry.endpoint_status === "InService" ? "." : ` — endpoint ${registry.endpoint_status}.`);
  el.className = registry.in_sync ? "sub ok" : "sub banner";
}

async function refreshSync() {
  try { showSync((await (await fetch("/v1/model")).json()).registry); } catch (_) { /* keep the last one */ }
}

async function loadModel() {
  const r = await fetch("/v1/model");
  const model = await r.json();
  features = model.features;
  $("endpoint").textContent = model.endpoint_name;
  showSync(model.registry);
  $("fields").replaceChildren();
  // Built as elements, never as HTML: a feature name is data (it comes from the registry).
  for (const name of features) {
    const div = document.createElement("div");
    const label = document.createElement("label");
    label.htmlFor = "f-" + name;
    label.textContent = name.replaceAll("_", " ");
    const input = document.createElement("input");
    input.id = "f-" + name;
    input.name = name;
    input.inputMode = "decimal";
    input.autocomplete = "off";
    const err = document.createElement("div");
    err.className = "err";
    err.id = "e-" + name;
    div.append(label, input, err);
    $("fields").appendChild(div);
  }
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("form-error").textContent = "";
  const values = {};
  let ok = true;
  for (const name of features) {
    fieldError(name, "");
    const raw = $("f-" + name).value.trim();
    if (raw === "") { values[name] = null; continue; }
    const n = Number(raw);
    if (!Number.isFinite(n)) { fieldError(name, "Enter a number, or leave it empty."); ok = false; continue; }
    values[name] = n;
  }
  if (!ok) return;
  $("submit").disabled = true;
  try {
    const headers = { "content-type": "application/json", "x-requested-by": "mlops-web" };
    const key = $("api-key").value.trim() || sessionStorage.getItem("api-key");
    if (key) headers.authorization = "Bearer " + key;
    const r = await fetch("/v1/predict", { method: "POST", headers, body: JSON.stringify({ features: values }) });
    const body = await r.json();
    if (r.status === 401) {
      sessionStorage.removeItem("api-key");
      $("key-row").hidden = false;
      $("form-error").textContent = body.detail;
      return;
    }
    if (key) sessionStorage.setItem("api-key", key);
    if (!r.ok) {
      const name = (body.field || "").replace(/^features\./, "");
      if (!fieldError(name, body.detail)) $("form-error").textContent = `${body.title}: ${body.detail}`;
      return;
    }
    const p = body.predictions[0];
    $("probability").textContent = (p.probability * 100).toFixed(1) + " %";
    $("model-version").textContent = body.model.model_package_version ?? "unknown";
    $("model-package").textContent = body.model.model_package_arn ?? "unknown";
    $("variant").textContent = `${body.model.endpoint_name} / ${body.model.variant_name}`;
    $("interaction-id").textContent = p.interaction_id;
    $("latency").textContent = body.latency_ms.toFixed(1) + " ms";
    $("result").hidden = false;
    refreshSync();
  } catch (e) {
    $("form-error").textContent = "The service could not be reached: " + e.message;
  } finally {
    $("submit").disabled = false;
  }
});

loadModel().catch((e) => { $("form-error").textContent = "Could not load the model's features: " + e.message; });
