// The occlusion-serve web page: pick a model and an image, then show the server's answers.
// Plain JS, no framework, no inline code (the page's Content-Security-Policy forbids it). Everything it asks for
// is relative to the page, so it works behind a path prefix too.
(() => {
  "use strict";

  const KEY_STORAGE = "occlusion-serve.api-key";
  const BUCKETS = ["b1", "b2", "b3", "b4", "b5", "b6"];
  const SEVERITIES = [1, 2, 3, 4, 5];
  const CORRUPTIONS = [
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
  ];
  const MASKS = 8;  // masked (or corrupted) copies per /robustness call of the curves
  const SEED = 0;
  const SALIENCY = { mask_ratio: "b3", n: "32" };  // RISE heatmaps need many masks (the server wants >= 8)
  const PERCENT = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 0 });
  const FINE_PERCENT = new Intl.NumberFormat(undefined, { style: "percent", maximumSignificantDigits: 2 });
  const TASK_GROUPS = [["classification", "Classifiers"], ["segmentation", "Segmenters"]];
  const BUSY_PARTS = ["labels-panel", "overlay-panel", "robustness-panel", "corruption-block", "saliency-panel"];

  const $ = (id) => document.getElementById(id);

  const state = {
    models: new Map(),  // name -> the /models entry
    image: null,        // { blob, name }
    previewUrl: null,
    overlayUrl: null,
    analysis: null,     // the run under way (see newRun) of the whole analysis...
    corruption: null,   // ...and of the corruption curve, which the corruption picker restarts alone
  };

  // ------------------------------------------------------------------ talking to the server

  class ApiError extends Error {
    constructor(status, code, detail) {
      super(`${code}: ${detail}`);
      this.status = status;
      this.code = code;
      this.detail = detail;
    }
  }

  function readKey() {
    try {
      return window.localStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return "";  // storage disabled: the page works without a key
    }
  }

  function writeKey(key) {
    try {
      if (key) window.localStorage.setItem(KEY_STORAGE, key);
      else window.localStorage.removeItem(KEY_STORAGE);
    } catch {
      // storage disabled: nothing to remember the key in
    }
  }

  function authHeaders() {
    const key = readKey();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function errorOf(response) {
    let code = `http_${response.status}`;
    let detail = response.statusText || "no detail";
    try {
      const body = await response.json();
      code = body.error || code;
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch {
      // not JSON (a proxy's page): keep the status line
    }
    return new ApiError(response.status, code, detail);
  }

  // GET (no image) or POST the current image as multipart `file`; JSON back, or a Blob with as: "blob".
  async function call(path, { params = {}, image = null, signal = undefined, as = "json" } = {}) {
    const query = new URLSearchParams(params).toString();
    const init = { method: image ? "POST" : "GET", headers: authHeaders(), signal };
    if (image) {
      const form = new FormData();
      form.append("file", image.blob, image.name);
      init.body = form;
    }
    const response = await fetch(query ? `${path}?${query}` : path, init);
    if (!response.ok) throw await errorOf(response);
    return as === "blob" ? response.blob() : response.json();
  }

  // ------------------------------------------------------------------ messages and loading state

  function setStatus(text) {
    $("status").textContent = text;
  }

  function clearErrors() {
    const box = $("error");
    box.replaceChildren();
    box.hidden = true;
  }

  function describeError(error) {
    if (error instanceof ApiError) {
      const hint = error.status === 401 ? " Enter the server's key under “API key” above." : "";
      return `${error.code} (HTTP ${error.status}): ${error.detail}.${hint}`;
    }
    return `The server could not be reached: ${error.message}`;
  }

  function showError(where, error) {
    if (error && error.name === "AbortError") return;
    const box = $("error");
    const line = document.createElement("p");
    const place = document.createElement("strong");
    place.textContent = `${where}: `;
    line.append(place, describeError(error));
    box.append(line);
    box.hidden = false;
    if (error instanceof ApiError && error.status === 401) document.querySelector(".api-key").open = true;
  }

  function setBusy(panelId, busy) {
    const panel = $(panelId);
    panel.setAttribute("aria-busy", busy ? "true" : "false");
    panel.classList.toggle("busy", busy);
  }

  function show(panelId, visible) {
    $(panelId).hidden = !visible;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const formatScore = (value) => (value === null || value === undefined ? "n/a" : Number(value).toFixed(3));

  // ------------------------------------------------------------------ models

  const isReady = (model) => model.state === undefined || model.state === "ready";

  function modelOption(model) {
    const option = new Option(isReady(model) ? model.name : `${model.name} (${model.state})`, model.name);
    option.disabled = !isReady(model);
    return option;
  }

  // One <optgroup> per task; a model that failed to load (no task) is listed, disabled, at the end.
  function fillModelPicker(models, defaults) {
    const picker = $("model-picker");
    const previous = picker.value;
    const groups = TASK_GROUPS.map(([task, title]) => {
      const group = el("optgroup");
      group.label = title;
      group.append(...models.filter((m) => m.task === task).map(modelOption));
      return group;
    }).filter((group) => group.children.length > 0);
    const others = models.filter((m) => !TASK_GROUPS.some(([task]) => task === m.task)).map(modelOption);
    picker.replaceChildren(...groups, ...others);
    const ready = models.filter(isReady).map((m) => m.name);
    const choice = [previous, defaults.classification, defaults.segmentation, ready[0]].find((n) => ready.includes(n));
    picker.value = choice || "";
    picker.disabled = ready.length === 0;
    describeModel();
  }

  async function loadModels() {
    try {
      const answer = await call("models");
      state.models = new Map(answer.models.map((m) => [m.name, m]));
      fillModelPicker(answer.models, answer.defaults || {});
      if (answer.models.length === 0) setStatus("This server serves no model.");
    } catch (error) {
      $("model-picker").replaceChildren(new Option("No models (see the error below)", ""));
      showError("GET /models", error);
    }
  }

  function currentModel() {
    return state.models.get($("model-picker").value) || null;
  }

  function describeModel() {
    const model = currentModel();
    const info = $("model-info");
    if (!model) {
      info.textContent = "";
      info.title = "";
      return;
    }
    const size = model.input && model.input.size ? `${model.input.size[0]}×${model.input.size[1]} input` : "";
    const classes = model.class_names ? `${model.class_names.length} classes` : "";
    const kind = model.task === "classification"
      ? (model.activation === "softmax" ? "single-label classifier (softmax)" : "multi-label classifier (sigmoid)")
      : model.task;
    const sigmoid = model.task === "classification" && model.activation === "sigmoid";
    const threshold = sigmoid && typeof model.threshold === "number" ? `threshold ${model.threshold}` : "";
    info.textContent = [kind, size, classes, threshold].filter(Boolean).join(" · ");
    info.title = threshold && model.threshold_source ? `threshold ${model.threshold_source}` : "";
  }

  // ------------------------------------------------------------------ samples and the image

  async function loadSamples() {
    const list = $("samples");
    try {
      const response = await fetch("static/samples/samples.json");
      if (!response.ok) throw await errorOf(response);
      const samples = await response.json();
      list.replaceChildren(...samples.map(sampleItem));
    } catch (error) {
      showError("samples", error);
    }
  }

  function sampleItem(sample) {
    const item = el("li");
    const button = el("button", "sample");
    button.type = "button";
    button.title = `${sample.title} (suits ${sample.model})`;
    button.setAttribute("aria-label", `Use the sample “${sample.title}”`);
    button.dataset.file = sample.file;
    button.setAttribute("aria-pressed", "false");
    const thumb = el("img");
    thumb.src = `static/samples/${sample.file}`;
    thumb.alt = "";
    thumb.loading = "lazy";
    button.append(thumb, el("span", "sample-title", sample.title));
    button.addEventListener("click", () => pickSample(sample, button));
    item.append(button);
    return item;
  }

  async function pickSample(sample, button) {
    clearErrors();
    try {
      const response = await fetch(`static/samples/${sample.file}`);
      if (!response.ok) throw await errorOf(response);
      const picker = $("model-picker");
      if (state.models.has(sample.model) && isReady(state.models.get(sample.model))) {
        picker.value = sample.model;
        describeModel();
      }
      for (const other of document.querySelectorAll(".sample")) other.setAttribute("aria-pressed", "false");
      button.setAttribute("aria-pressed", "true");
      setImage(await response.blob(), sample.file);
    } catch (error) {
      showError(`sample ${sample.file}`, error);
    }
  }

  function setImage(blob, name) {
    state.image = { blob, name };
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = URL.createObjectURL(blob);
    $("preview").src = state.previewUrl;
    $("preview-caption").textContent = name;
    show("preview-figure", true);
    analyse();
  }

  function onFileChosen(event) {
    const file = event.target.files && event.target.files[0];
    if (!file) return;
    for (const other of document.querySelectorAll(".sample")) other.setAttribute("aria-pressed", "false");
    clearErrors();
    setImage(file, file.name);
  }

  // ------------------------------------------------------------------ one analysis run

  // A run in a slot of `state` ("analysis" or "corruption"): starting one aborts the requests of the one before,
  // and a run's answers are shown only while it is still the slot's live run.
  function newRun(slot) {
    if (state[slot]) state[slot].controller.abort();
    const controller = new AbortController();
    const run = { controller, signal: controller.signal, live: () => state[slot] === run };
    state[slot] = run;
    return run;
  }

  async function analyse() {
    const model = currentModel();
    if (!model || !state.image) return;
    const run = newRun("analysis");
    run.beforeCorruption = true;  // the corruption picker need not restart anything yet
    if (state.corruption) state.corruption.controller.abort();
    clearErrors();
    resetResults(model);
    const started = performance.now();
    const first = model.task === "segmentation" ? segmentStep : predictStep;
    if (!(await first(model, run))) {  // the image or the model failed: the other sections would fail alike
      if (run.live()) setStatus("Stopped: see the error.");
      return;
    }
    for (const step of [occlusionStep, saliencyStep]) {
      if (!run.live()) return;
      await step(model, run);
    }
    if (!run.live()) return;
    run.beforeCorruption = false;
    const corruption = newRun("corruption");
    await corruptionStep(model, corruption);
    if (run.live() && corruption.live()) setStatus(`Done in ${((performance.now() - started) / 1000).toFixed(1)} s.`);
  }

  function resetResults(model) {
    const classifier = model.task === "classification";
    show("labels-panel", classifier);
    show("overlay-panel", !classifier);
    show("robustness-panel", true);
    show("saliency-panel", true);
    $("labels").replaceChildren();
    $("labels-note").textContent = "";
    $("legend").replaceChildren();
    $("overlay").removeAttribute("src");
    $("robustness-curve").replaceChildren();
    $("corruption-curve").replaceChildren();
    $("saliency").replaceChildren();
    for (const id of ["robustness-note", "corruption-note", "saliency-note"]) $(id).textContent = "";
    for (const id of BUSY_PARTS) setBusy(id, false);  // an aborted run leaves its parts as they were
  }

  // ------------------------------------------------------------------ labels (classifiers)

  async function predictStep(model, run) {
    setStatus(`Asking ${model.name} for labels…`);
    setBusy("labels-panel", true);
    try {
      const answer = await call("predict", { params: { model: model.name, scores: "true" }, image: state.image,
                                             signal: run.signal });
      if (run.live()) showLabels(answer);
      return true;
    } catch (error) {
      if (run.live()) showError("POST /predict", error);
      return false;
    } finally {
      if (run.live()) setBusy("labels-panel", false);
    }
  }

  function showLabels(answer) {
    const rows = answer.labels.map((label) => labelRow(label, answer.threshold));
    $("labels").replaceChildren(...rows);
    $("labels-note").textContent = labelsNote(answer);
  }

  function labelsNote(answer) {
    const single = answer.activation === "softmax";
    if (answer.labels.length > 0) {
      return single ? `The ${answer.labels.length} most probable classes (softmax).`
        : `Classes at or above the threshold ${answer.threshold} (sigmoid, multi-label).`;
    }
    const best = Object.entries(answer.scores || {}).sort((a, b) => b[1] - a[1]).slice(0, 3);
    const closest = best.map(([name, score]) => `${name} ${formatScore(score)}`).join(", ");
    return `No class reaches the threshold ${answer.threshold}.` + (closest ? ` Highest: ${closest}.` : "");
  }

  function labelRow(label, threshold) {
    const row = el("li", "label-row");
    row.dataset.label = label.name;
    row.dataset.score = String(label.score);
    const track = el("div", "track");
    track.setAttribute("role", "meter");
    track.setAttribute("aria-label", label.name);
    track.setAttribute("aria-valuemin", "0");
    track.setAttribute("aria-valuemax", "1");
    track.setAttribute("aria-valuenow", String(label.score));
    const bar = el("div", "bar");
    bar.style.width = `${Math.max(0, Math.min(1, label.score)) * 100}%`;
    track.append(bar);
    if (threshold !== null && threshold !== undefined) {
      const mark = el("div", "threshold");
      mark.style.left = `${threshold * 100}%`;
      mark.title = `threshold ${threshold}`;
      track.append(mark);
    }
    row.append(el("span", "label-name", label.name), track, el("span", "label-score", formatScore(label.score)));
    return row;
  }

  // ------------------------------------------------------------------ segmentation overlay

  async function segmentStep(model, run) {
    setStatus(`Segmenting with ${model.name}…`);
    setBusy("overlay-panel", true);
    const signal = run.signal;
    try {
      const params = { model: model.name };
      const overlay = await call("segment", { params: { ...params, format: "overlay", alpha: "0.6" },
                                              image: state.image, signal, as: "blob" });
      if (!run.live()) return false;
      if (state.overlayUrl) URL.revokeObjectURL(state.overlayUrl);
      state.overlayUrl = URL.createObjectURL(overlay);
      $("overlay").src = state.overlayUrl;
      const stats = await call("segment", { params: { ...params, format: "json" }, image: state.image, signal });
      if (run.live()) showLegend(stats.classes);
      return true;
    } catch (error) {
      if (run.live()) showError("POST /segment", error);
      return false;
    } finally {
      if (run.live()) setBusy("overlay-panel", false);
    }
  }

  // The standard 256-colour VOC palette, as the server draws class maps.
  function vocColour(id) {
    let [r, g, b] = [0, 0, 0];
    for (let bit = 7, c = id; c > 0; bit -= 1, c >>= 3) {
      r |= ((c >> 0) & 1) << bit;
      g |= ((c >> 1) & 1) << bit;
      b |= ((c >> 2) & 1) << bit;
    }
    return `rgb(${r}, ${g}, ${b})`;
  }

  function showLegend(classes) {
    const items = classes.map((entry) => {
      const item = el("li", "legend-item");
      const swatch = el("span", "swatch");
      swatch.style.background = entry.id === 0 ? "transparent" : vocColour(entry.id);
      const count = entry.instances ? ` · ${entry.instances.count} region${entry.instances.count === 1 ? "" : "s"}` : "";
      item.append(swatch, el("span", "", `${entry.name} ${FINE_PERCENT.format(entry.fraction)}${count}`));
      return item;
    });
    $("legend").replaceChildren(...items);
  }

  // ------------------------------------------------------------------ robustness curves

  // The figure a report leads with: read from robustness/occlusion_report.py's three report shapes.
  function headline(report) {
    if (report.task === "segmentation") {
      return { value: report.miou_foreground, name: "foreground mIoU against the clean map" };
    }
    if (report.activation === "softmax") return { value: report.top1_retention, name: "top-1 retention" };
    return { value: report.mean_retention, name: "mean retention of the clean labels" };
  }

  function robustnessParams(model, extra) {
    return { model: model.name, n: String(MASKS), seed: String(SEED), ...extra };
  }

  async function occlusionStep(model, run) {
    setBusy("robustness-panel", true);
    const points = BUCKETS.map((bucket) => ({ x: bucket, value: null, pending: true }));
    let figure = "";
    const warnings = new Set();
    try {
      for (const [i, bucket] of BUCKETS.entries()) {
        setStatus(`Occluding: bucket ${bucket} (${i + 1} of ${BUCKETS.length})…`);
        const report = await call("robustness", { params: robustnessParams(model, { mask_ratio: bucket }),
                                                  image: state.image, signal: run.signal });
        if (!run.live()) return;
        const top = headline(report);
        figure = top.name;
        if (report.warning) warnings.add(report.warning);
        const holes = report.hole_ratio ? report.hole_ratio.mean : null;
        points[i] = { x: bucket, sub: holes === null ? "" : `${PERCENT.format(holes)} hidden`, value: top.value };
        drawChart($("robustness-curve"), points, { xTitle: "hole-ratio bucket (mean area hidden)", yTitle: figure });
      }
      $("robustness-note").textContent = `${figure} under ${MASKS} seeded masks per bucket (b1 hides 1–10% of the `
        + "image, b6 50–60%)." + [...warnings].map((w) => ` Note: ${w}`).join("");
    } catch (error) {
      if (run.live()) {
        showError("POST /robustness", error);
        $("robustness-note").textContent = "The occlusion curve could not be measured (see the error above).";
      }
    } finally {
      if (run.live()) setBusy("robustness-panel", false);
    }
  }

  async function corruptionStep(model, run) {
    const name = $("corruption-picker").value;
    const note = $("corruption-note");
    const svg = $("corruption-curve");
    svg.replaceChildren();
    svg.classList.remove("unavailable");
    const points = SEVERITIES.map((s) => ({ x: String(s), value: null, pending: true }));
    setBusy("corruption-block", true);
    try {
      for (const [i, severity] of SEVERITIES.entries()) {
        setStatus(`Corrupting: ${name}, severity ${severity} of ${SEVERITIES.length}…`);
        const params = robustnessParams(model, { corruption: name, severity: String(severity) });  // no masks
        const report = await call("robustness", { params, image: state.image, signal: run.signal });
        if (!run.live()) return;
        if (!report.corruption) {
          markUnavailable(svg, note, "Corruption robustness: not available — this server's /robustness answer has "
            + "no “corruption” field (corruption= is not supported yet).");
          return;
        }
        const top = headline(report);
        points[i] = { x: String(severity), value: top.value };
        drawChart(svg, points, { xTitle: `${name} severity`, yTitle: top.name });
        note.textContent = `${top.name} under ${name} at severities 1–5 (${MASKS} corrupted copies each, `
          + `seeds ${SEED}–${SEED + MASKS - 1}, no masks).`;
      }
    } catch (error) {
      if (!run.live()) return;
      if (error instanceof ApiError && error.status === 422) {
        markUnavailable(svg, note, `Corruption robustness: not available (${error.detail}).`);
      } else {
        showError("POST /robustness (corruption)", error);
      }
    } finally {
      if (run.live()) setBusy("corruption-block", false);
    }
  }

  function markUnavailable(svg, note, text) {
    svg.replaceChildren();
    svg.classList.add("unavailable");
    note.textContent = text;
  }

  // A line chart of 0..1 figures over categories, drawn into an inline <svg> (viewBox 480 x 240).
  function drawChart(svg, points, { xTitle, yTitle }) {
    const ns = svg.namespaceURI;  // the HTML parser put the <svg> in the SVG namespace
    const make = (tag, attributes, text) => {
      const node = document.createElementNS(ns, tag);
      for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
      if (text !== undefined) node.textContent = text;
      return node;
    };
    const box = { left: 48, right: 464, top: 34, bottom: 188 };
    const x = (i) => box.left + ((i + 0.5) * (box.right - box.left)) / points.length;
    const y = (v) => box.bottom - v * (box.bottom - box.top);
    const parts = [];
    for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
      parts.push(make("line", { class: "grid", x1: box.left, x2: box.right, y1: y(tick), y2: y(tick) }));
      parts.push(make("text", { class: "tick", x: box.left - 6, y: y(tick) + 4, "text-anchor": "end" }, tick));
    }
    points.forEach((point, i) => {
      parts.push(make("text", { class: "tick", x: x(i), y: box.bottom + 16, "text-anchor": "middle" }, point.x));
      if (point.sub) {
        parts.push(make("text", { class: "tick sub", x: x(i), y: box.bottom + 29, "text-anchor": "middle" },
                        point.sub));
      }
    });
    const defined = points.map((p, i) => [p, i]).filter(([p]) => typeof p.value === "number");
    if (defined.length > 1) {
      const path = defined.map(([p, i]) => `${x(i).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
      parts.push(make("polyline", { class: "curve", points: path }));
    }
    for (const [point, i] of defined) {
      const dot = make("circle", { class: "point", cx: x(i), cy: y(point.value), r: 4.5 });
      dot.append(make("title", {}, `${point.x}: ${formatScore(point.value)}`));
      parts.push(dot, make("text", { class: "value", x: x(i), y: y(point.value) - 9, "text-anchor": "middle" },
                           formatScore(point.value)));
    }
    points.forEach((point, i) => {
      if (!point.pending && typeof point.value !== "number") {
        parts.push(make("text", { class: "tick missing", x: x(i), y: y(0.5), "text-anchor": "middle" }, "n/a"));
      }
    });
    parts.push(make("text", { class: "axis-title", x: (box.left + box.right) / 2, y: 236, "text-anchor": "middle" },
                    xTitle));
    parts.push(make("text", { class: "axis-title", x: 12, y: 14 }, yTitle));
    svg.replaceChildren(...parts);
  }

  // ------------------------------------------------------------------ saliency

  async function saliencyStep(model, run) {
    setBusy("saliency-panel", true);
    setStatus("Explaining the prediction…");
    const note = $("saliency-note");
    try {
      const params = robustnessParams(model, { ...SALIENCY, explain: "true" });
      const report = await call("robustness", { params, image: state.image, signal: run.signal });
      if (!run.live()) return;
      if (!Array.isArray(report.saliency)) {
        note.textContent = "Saliency: not available — this server's /robustness answer has no “saliency” field "
          + "(explain=true is not supported yet).";
        return;
      }
      $("saliency").replaceChildren(...report.saliency.map(saliencyFigure));
      note.textContent = report.saliency.length
        ? `RISE heatmaps from ${SALIENCY.n} masks of bucket ${SALIENCY.mask_ratio}: red where keeping the pixels `
          + "keeps the score; the ring marks the peak (model-input pixels)."
        : "No predicted label to explain.";
    } catch (error) {
      if (!run.live()) return;
      note.textContent = "Saliency: not available.";
      showError("POST /robustness?explain=true", error);
    } finally {
      if (run.live()) setBusy("saliency-panel", false);
    }
  }

  function saliencyFigure(entry) {
    const figure = el("figure", "saliency-item");
    const frame = el("div", "saliency-frame");
    const image = el("img");
    image.alt = `Saliency heatmap of ${entry.label}`;
    frame.append(image);
    if (entry.peak) {
      const marker = el("span", "peak");
      marker.setAttribute("aria-hidden", "true");
      frame.append(marker);
      image.addEventListener("load", () => placePeak(marker, entry.peak, image), { once: true });
    }
    image.src = `data:image/png;base64,${entry.png_base64}`;
    const peak = entry.peak ? ` · peak (${entry.peak.x}, ${entry.peak.y})` : "";
    figure.append(frame, el("figcaption", "", `${entry.label} ${formatScore(entry.score)}${peak}`));
    return figure;
  }

  // The heatmap is drawn at the model's input size, the size the peak is given in.
  function placePeak(marker, peak, image) {
    marker.style.left = `${((peak.x + 0.5) / image.naturalWidth) * 100}%`;
    marker.style.top = `${((peak.y + 0.5) / image.naturalHeight) * 100}%`;
    marker.classList.add("placed");
  }

  // ------------------------------------------------------------------ wiring

  function rerunCorruption() {
    const model = currentModel();
    if (!model || !state.image || !state.analysis || state.analysis.beforeCorruption) return;  // reads it later
    const run = newRun("corruption");  // the other sections keep what they show
    corruptionStep(model, run).then(() => {
      if (run.live()) setStatus("Done.");
    });
  }

  function setUpApiKey() {
    const input = $("api-key");
    input.value = readKey();
    if (input.value) document.querySelector(".api-key").open = false;
    $("api-key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      writeKey(input.value.trim());
      clearErrors();
      setStatus(input.value.trim() ? "API key saved in this browser." : "API key cleared.");
      loadModels().then(analyse);
    });
    $("api-key-clear").addEventListener("click", () => {
      input.value = "";
      writeKey("");
      setStatus("API key cleared.");
    });
  }

  function setUpCorruptions() {
    const picker = $("corruption-picker");
    picker.replaceChildren(...CORRUPTIONS.map((name) => new Option(name.replaceAll("_", " "), name)));
    picker.value = "gaussian_noise";
    picker.addEventListener("change", rerunCorruption);
  }

  function init() {
    setUpApiKey();
    setUpCorruptions();
    $("file-input").addEventListener("change", onFileChosen);
    $("model-picker").addEventListener("change", () => {
      describeModel();
      analyse();
    });
    setStatus("Pick a model, then upload an image or pick a sample.");
    loadModels();
    loadSamples();
  }

  document.addEventListener("DOMContentLoaded", init);
})();
