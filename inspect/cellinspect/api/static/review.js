// cellinspect review page: gallery of results to review, keyboard-first labelling.
// Every request carries the token from the token field in its Authorization header (never in
// a URL): images are fetched and shown from blob: URLs, live events read from a fetch stream.
// The reviewer is the token's user, shown next to the field. Plain browser JavaScript, no build step. Text from the server is only ever set through
// textContent (never innerHTML), so reasons and class names cannot inject markup.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    items: [],          // results shown, in gallery order
    index: -1,          // selected position in items
    cursor: null,       // next_cursor of the last page loaded
    classes: [],        // defect classes for keys 1-9
    picked: null,       // class picked with 1-9 for the selected result
    showOverlay: true,
    busy: false,
    me: null,           // GET /me for the current token
  };
  const blobs = new Map();  // image URL -> blob: URL, fetched once with the token
  let live = null;          // AbortController of the events stream

  // ------------------------------------------------------------------ helpers

  function el(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) node.append(child);
    return node;
  }

  function status(message, isError = false) {
    const s = $("status");
    s.textContent = message;
    s.classList.toggle("error", isError);
  }

  function fmtScore(score) {
    return score === null || score === undefined ? "–" : Number(score).toFixed(3);
  }

  function token() { return sessionStorage.getItem("cellinspect.token") || ""; }
  function authHeaders() { return token() ? { Authorization: `Bearer ${token()}` } : {}; }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function api(path, options = {}) {
    const headers = { ...(options.headers || {}), ...authHeaders() };
    const response = await fetch(path, { ...options, headers });
    let body = null;
    const type = response.headers.get("content-type") || "";
    if (type.includes("application/json")) body = await response.json();
    if (!response.ok) {
      const message = body && body.message ? body.message : `${response.status} ${response.statusText}`;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // ------------------------------------------------------------------ loading

  function filterQuery() {
    const q = new URLSearchParams();
    for (const v of $("f-verdict").value.split(",").filter(Boolean)) q.append("verdict", v);
    if ($("f-reviewed").value) q.set("reviewed", $("f-reviewed").value);
    if ($("f-class").value) q.append("defect_class", $("f-class").value);
    if ($("f-part").value) q.set("part_id", $("f-part").value);
    if ($("f-since").value) q.set("since", new Date($("f-since").value).toISOString());
    q.set("limit", "60");
    return q;
  }

  async function loadClasses() {
    try {
      const body = await api("/defect-classes");
      state.classes = body.classes.slice(0, 9);
      const select = $("f-class");
      const current = select.value;
      select.replaceChildren(el("option", { value: "", text: "any" }));
      for (const c of body.classes) select.append(el("option", { value: c, text: c }));
      select.value = current;
    } catch (err) {
      status(`cannot load defect classes: ${err.message}`, true);
    }
    renderClasses();
  }

  async function load(reset = true) {
    const q = filterQuery();
    if (!reset && state.cursor) q.set("cursor", state.cursor);
    document.body.dataset.loading = "1";
    status("loading…");
    try {
      const page = await api(`/results?${q}`);
      if (reset) {
        state.items = [];
        state.index = -1;
      }
      state.items.push(...page.items);
      state.cursor = page.next_cursor;
      renderGallery();
      if (state.index < 0 && state.items.length) select(0);
      else if (!state.items.length) renderDetail();
      $("more").hidden = !state.cursor;
      status(`${state.items.length} result(s)${state.cursor ? ", more available (m)" : ""}`);
    } catch (err) {
      if (err.status === 401 && !token()) status("type your API token to see results (saved for this tab)", true);
      else status(`cannot load results: ${err.message}`, true);
    } finally {
      document.body.dataset.loading = "0";
    }
  }

  // ------------------------------------------------------------------ rendering

  function thumbUrl(item) {
    return item.overlay_url || item.image_url || "";
  }

  function card(item, position) {
    const review = item.review;
    const badges = el("div", { class: "row" }, [
      el("span", { class: `badge ${item.verdict}`, text: item.verdict }),
      el("span", { text: item.defect_class || "" }),
      el("span", { text: fmtScore(item.score) }),
    ]);
    const meta = el("div", { class: "meta" }, [
      badges,
      el("span", { class: "id", text: item.id }),
      el("span", { class: "reason", text: item.reasons.join("; ") }),
    ]);
    if (review) {
      meta.append(
        el("span", {
          class: `badge label-${review.label}`,
          text: review.label === "good" ? "false reject" : `defect: ${review.defect_class}`,
        }),
      );
    }
    const img = el("img", { alt: `result ${item.id}` });
    showImage(img, thumbUrl(item));
    const node = el(
      "article",
      {
        class: `card${review ? " reviewed" : ""}`,
        role: "option",
        "data-id": item.id,
        "data-review-label": review ? review.label : "",
      },
      [img, meta],
    );
    node.addEventListener("click", () => select(position));
    return node;
  }

  function renderGallery() {
    const gallery = $("gallery");
    gallery.replaceChildren(...state.items.map((item, i) => card(item, i)));
    if (!state.items.length) gallery.append(el("p", { class: "empty", text: "Nothing to review with these filters." }));
    markSelected();
  }

  function markSelected() {
    const cards = $("gallery").querySelectorAll(".card");
    cards.forEach((node, i) => {
      const on = i === state.index;
      node.classList.toggle("selected", on);
      node.setAttribute("aria-selected", on ? "true" : "false");
      if (on) node.scrollIntoView({ block: "nearest" });
    });
  }

  function renderClasses() {
    const box = $("classes");
    box.replaceChildren(
      ...state.classes.map((c, i) => {
        const b = el("button", { type: "button", text: `${i + 1} ${c}`, "data-class": c });
        if (state.picked === c) b.classList.add("picked");
        b.addEventListener("click", () => pick(i));
        return b;
      }),
    );
  }

  function renderDetail() {
    const item = state.items[state.index];
    $("detail-empty").hidden = !!item;
    $("detail-body").hidden = !item;
    if (!item) return;
    const src = state.showOverlay ? thumbUrl(item) : item.image_url || thumbUrl(item);
    const img = $("detail-image");
    showImage(img, src);
    img.alt = `result ${item.id}`;
    $("show-overlay").classList.toggle("on", state.showOverlay);
    $("show-image").classList.toggle("on", !state.showOverlay);
    $("detail-title").textContent = item.id;
    const facts = [
      ["verdict", item.verdict],
      ["class", item.defect_class || "–"],
      ["score", fmtScore(item.score)],
      ["part id", item.part_id ?? "–"],
      ["captured", new Date(item.captured_wall).toLocaleString()],
      ["models", item.models.map((m) => `${m.name}@${m.version}`).join(", ") || "–"],
      ["review", item.review ? `${item.review.label}${item.review.defect_class ? " / " + item.review.defect_class : ""} by ${item.review.reviewer} (rev ${item.review.revision})` : "not yet"],
    ];
    $("detail-facts").replaceChildren(
      ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]),
    );
    $("detail-reasons").replaceChildren(...item.reasons.map((r) => el("li", { text: r })));
    renderClasses();
  }

  function select(position) {
    if (!state.items.length) return;
    state.index = Math.max(0, Math.min(position, state.items.length - 1));
    state.picked = null;
    $("comment").value = "";
    markSelected();
    renderDetail();
  }

  function pick(classIndex) {
    const c = state.classes[classIndex];
    if (!c) {
      status(`no defect class on key ${classIndex + 1}`, true);
      return;
    }
    state.picked = c;
    renderClasses();
    status(`class picked: ${c}`);
  }

  // ------------------------------------------------------------------ reviewing

  async function review(label) {
    const item = state.items[state.index];
    if (!item || state.busy) return;
    if (!token()) {
      status("type your API token first (saved for this tab)", true);
      $("token").focus();
      return;
    }
    const defectClass = label === "defect" ? state.picked || item.defect_class : null;
    if (label === "defect" && !defectClass) {
      status("pick a defect class first (keys 1-9)", true);
      return;
    }
    const body = { label, comment: $("comment").value };  // the reviewer is the token's user
    if (defectClass) body.defect_class = defectClass;
    state.busy = true;
    try {
      const saved = await api(`/results/${encodeURIComponent(item.id)}/review`, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      item.review = saved;
      const position = state.index;
      const node = $("gallery").querySelectorAll(".card")[position];
      if (node) node.replaceWith(card(item, position));
      status(`${item.id}: ${label === "good" ? "false reject" : "defect " + defectClass} saved`);
      select(position + 1 < state.items.length ? position + 1 : position);
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        status(`not allowed: ${err.message}`, true);
        $("token").focus();
      } else {
        status(`cannot save review: ${err.message}`, true);
      }
    } finally {
      state.busy = false;
    }
  }

  // ------------------------------------------------------------------ keyboard

  function toggleHelp(show) {
    const help = $("help");
    help.hidden = show === undefined ? !help.hidden : !show;
  }

  function onKey(event) {
    const target = event.target;
    const typing = target instanceof HTMLInputElement || target instanceof HTMLSelectElement || target instanceof HTMLTextAreaElement;
    if (event.key === "Escape") {
      toggleHelp(false);
      if (typing) target.blur();
      return;
    }
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    let handled = true;
    if (key === "j" || key === "ArrowRight" || key === "ArrowDown") select(state.index + 1);
    else if (key === "k" || key === "ArrowLeft" || key === "ArrowUp") select(state.index - 1);
    else if (key === "c") review("defect");
    else if (key === "f") review("good");
    else if (/^[1-9]$/.test(key)) pick(Number(key) - 1);
    else if (key === "o") { state.showOverlay = !state.showOverlay; renderDetail(); }
    else if (key === "m") { if (state.cursor) load(false); }
    else if (key === "r") load(true);
    else if (key === "?") toggleHelp();
    else handled = false;
    if (handled) event.preventDefault();
  }

  // ------------------------------------------------------------------ live updates

  async function onResult(data) {
    const verdicts = $("f-verdict").value.split(",").filter(Boolean);
    if ($("f-reviewed").value === "true") return;
    if (verdicts.length && !verdicts.includes(data.verdict)) return;
    if (state.items.some((i) => i.id === data.id)) return;
    try {
      const item = await api(`/results/${encodeURIComponent(data.id)}`);
      state.items.unshift(item);
      if (state.index >= 0) state.index += 1;
      renderGallery();
      if (state.index < 0) select(0);
      status(`new ${data.verdict}: ${data.id}`);
    } catch (err) {
      status(`live update failed: ${err.message}`, true);
    }
  }

  function onReview(data) {
    const item = state.items.find((i) => i.id === data.id);
    if (!item || (item.review && item.review.revision >= data.revision)) return;
    api(`/results/${encodeURIComponent(data.id)}`).then((fresh) => {
      Object.assign(item, fresh);
      renderGallery();
      renderDetail();
    }).catch(() => {});
  }

  function dispatch(block) {
    let kind = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(": connected")) document.body.dataset.live = "on";
      else if (line.startsWith("event: ")) kind = line.slice(7);
      else if (line.startsWith("data: ")) data.push(line.slice(6));
    }
    if (!data.length) return;
    const payload = JSON.parse(data.join("\n"));
    if (kind === "result") onResult(payload);
    else if (kind === "review") onReview(payload);
  }

  // Server-sent events over fetch (EventSource cannot send the token in a header).
  async function listen() {
    if (live) live.abort();
    const controller = new AbortController();
    live = controller;
    document.body.dataset.live = "off";
    while (!controller.signal.aborted) {
      try {
        const response = await fetch("/events", { headers: authHeaders(), signal: controller.signal });
        if (!response.ok) return;  // no or a wrong token: listen() runs again when it changes
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            dispatch(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
        }
      } catch (err) {
        if (controller.signal.aborted) return;
      }
      document.body.dataset.live = "off";
      await sleep(2000);
    }
  }

  // ------------------------------------------------------------------ images and identity

  async function showImage(img, url) {
    img.dataset.want = url || "";
    if (!url) { img.removeAttribute("src"); return; }
    let local = blobs.get(url);
    if (!local) {
      try {
        const response = await fetch(url, { headers: authHeaders() });
        if (!response.ok) return;
        local = URL.createObjectURL(await response.blob());
        blobs.set(url, local);
      } catch (err) {
        return;
      }
    }
    if (img.dataset.want === url) img.src = local;  // still the image wanted here
  }

  async function whoami() {
    try {
      state.me = await api("/me");
      const me = state.me;
      $("whoami").textContent = me.read_only_station
        ? "read-only station (no users configured)"
        : `signed in as ${me.name} (${me.role})`;
    } catch (err) {
      state.me = null;
      $("whoami").textContent = token() ? "token not accepted" : "not signed in";
    }
  }

  function signIn() {
    for (const local of blobs.values()) URL.revokeObjectURL(local);
    blobs.clear();
    document.body.dataset.loading = "1";  // until the gallery for this token is in
    whoami();
    loadClasses().then(() => load(true));
    listen();
  }

  // ------------------------------------------------------------------ start

  function init() {
    $("token").value = token();
    $("token").addEventListener("input", (e) => sessionStorage.setItem("cellinspect.token", e.target.value.trim()));
    $("token").addEventListener("change", signIn);
    $("filters").addEventListener("submit", (e) => { e.preventDefault(); load(true); });
    for (const id of ["f-verdict", "f-reviewed", "f-class"]) $(id).addEventListener("change", () => load(true));
    $("confirm").addEventListener("click", () => review("defect"));
    $("reject").addEventListener("click", () => review("good"));
    $("more").addEventListener("click", () => load(false));
    $("help-button").addEventListener("click", () => toggleHelp());
    $("help").addEventListener("click", () => toggleHelp(false));
    $("show-overlay").addEventListener("click", () => { state.showOverlay = true; renderDetail(); });
    $("show-image").addEventListener("click", () => { state.showOverlay = false; renderDetail(); });
    document.addEventListener("keydown", onKey);
    signIn();
  }

  init();
})();
