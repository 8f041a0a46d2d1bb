// cellinspect review page: gallery of results to review, keyboard-first labelling.
// The page asks for the user's API token once (sign-in form), keeps it in sessionStorage for
// this tab and sends it in the Authorization header of every request (never in a URL): images
// are fetched and shown from blob: URLs, live events read from a fetch stream. The reviewer is
// the token's user (GET /me); the server records it, the page has no name field. Plain browser
// JavaScript, no build step, nothing from a CDN. Text from the server is only ever set through
// textContent (never innerHTML), so reasons and class names cannot inject markup.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "cellinspect.token";
  const UNDO_KEY = "cellinspect.undo";
  const STATION_KEY = "cellinspect.station";  // the station picked here or on the dashboard
  const SORTS = ["newest", "oldest", "score-desc", "score-asc"];
  const state = {
    items: [],          // results shown, in gallery order
    index: -1,          // selected position in items
    cursor: null,       // next_cursor of the last page loaded
    classes: [],        // defect classes for keys 1-9
    picked: null,       // class picked with 1-9 for the selected result
    showOverlay: true,
    me: null,           // GET /me for the current token
    stations: new Map(),  // station id -> {results, line, site, state} (GET /stations, live)
  };
  const blobs = new Map();  // image URL -> blob: URL, fetched once with the token
  let queue = Promise.resolve();  // labels and undos, one after the other in key order
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

  // A span whose text may be cut by CSS (ellipsis): the full text is its tooltip.
  function clipped(className, text) {
    return el("span", { class: className, text, title: text });
  }

  function status(message, isError = false) {
    const s = $("status");
    s.textContent = message;
    s.title = message;
    s.classList.toggle("error", isError);
  }

  function fmtScore(score) {
    return score === null || score === undefined ? "–" : Number(score).toFixed(3);
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
  function authHeaders(tok = token()) { return tok ? { Authorization: `Bearer ${tok}` } : {}; }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function api(path, options = {}, tok = token()) {
    const headers = { ...(options.headers || {}), ...authHeaders(tok) };
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
    if ($("f-station").value) q.set("station_id", $("f-station").value);
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
      for (const c of body.classes) select.append(el("option", { value: c, text: c, title: c }));
      select.value = current;
    } catch (err) {
      status(`cannot load defect classes: ${err.message}`, true);
    }
    renderClasses();
  }

  // ------------------------------------------------------------------ stations (the hub)

  function stationLabel(id) {
    const s = state.stations.get(id) || {};
    const where = [s.line, s.site].filter(Boolean).join(" · ");
    return [id, where && `(${where})`, s.state === "offline" ? "· offline" : ""].filter(Boolean).join(" ");
  }

  // The selector shows once there is a choice: two stations or more (the hub).
  function renderStations() {
    $("f-station-field").hidden = state.stations.size < 2;
    const select = $("f-station");
    const current = select.value || sessionStorage.getItem(STATION_KEY) || "";
    select.replaceChildren(el("option", { value: "", text: "all stations" }));
    for (const id of [...state.stations.keys()].sort()) {
      const s = state.stations.get(id);
      const title = s.results === undefined ? id : `${id}: ${s.results} result(s), last ${s.last_seen}`;
      select.append(el("option", { value: id, text: stationLabel(id), title }));
    }
    select.value = state.stations.has(current) ? current : "";
  }

  // GET /stations: the stations with results in this store (every forwarding one on the hub).
  async function loadStations() {
    try {
      const body = await api("/stations");
      for (const s of body.items) state.stations.set(s.station_id, { ...state.stations.get(s.station_id), ...s });
    } catch (err) {
      status(`cannot load stations: ${err.message}`, true);
    }
    renderStations();
  }

  function pickStation() {
    sessionStorage.setItem(STATION_KEY, $("f-station").value);
    load(true);
  }

  // A station seen live (hub events from MQTT) joins the list; its state shows in it.
  function noteStation(data, fields = {}) {
    if (!data.station_id) return;
    const known = state.stations.get(data.station_id);
    if (known && Object.entries(fields).every(([k, v]) => known[k] === v)) return;  // nothing new
    state.stations.set(data.station_id, { ...(known || { line: data.line, site: data.site }), ...fields });
    renderStations();
  }

  function otherStation(data) {
    const picked = $("f-station").value;
    return Boolean(picked) && data.station_id !== picked;
  }

  async function load(reset = true) {
    const q = filterQuery();
    if (!reset && state.cursor) q.set("cursor", state.cursor);
    document.body.dataset.loading = "1";
    status("loading…");
    try {
      const page = await api(`/results?${q}`);
      const keep = reset ? null : selectedId();
      if (reset) {
        state.items = [];
        state.index = -1;
      }
      state.items.push(...page.items);
      state.cursor = page.next_cursor;
      sortItems(keep);
      renderGallery();
      if (state.index < 0 && state.items.length) select(0);
      else if (!state.items.length) renderDetail();
      $("more").hidden = !state.cursor;
      status(`${state.items.length} result(s)${state.cursor ? ", more available (m)" : ""}`);
    } catch (err) {
      status(`cannot load results: ${err.message}`, true);
    } finally {
      document.body.dataset.loading = "0";
    }
  }

  // ------------------------------------------------------------------ sorting

  const time = (item) => Date.parse(item.captured_wall) || 0;
  const byNewest = (a, b) => time(b) - time(a) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
  function byScore(direction) {
    return (a, b) => {
      const sa = a.score ?? null;
      const sb = b.score ?? null;
      if (sa === null || sb === null) return (sa === null) - (sb === null) || byNewest(a, b);
      return direction * (sa - sb) || byNewest(a, b);
    };
  }
  const COMPARE = {
    newest: byNewest,
    oldest: (a, b) => -byNewest(a, b),
    "score-desc": byScore(-1),
    "score-asc": byScore(1),
  };

  function selectedId() {
    const item = state.items[state.index];
    return item ? item.id : null;
  }

  // Sorts the loaded results (the API pages newest first); the selection stays on its result.
  function sortItems(keepId = selectedId()) {
    state.items.sort(COMPARE[$("sort").value] || byNewest);
    document.body.dataset.sort = $("sort").value;
    if (keepId !== null) state.index = state.items.findIndex((i) => i.id === keepId);
  }

  function resort() {
    sortItems();
    renderGallery();
    status(`${state.items.length} loaded result(s) sorted: ${$("sort").selectedOptions[0].textContent}`);
  }

  // ------------------------------------------------------------------ rendering

  function thumbUrl(item) {
    return item.overlay_url || item.image_url || "";
  }

  function labelText(review) {
    return review.label === "good" ? "false reject" : `defect: ${review.defect_class}`;
  }

  function card(item) {
    const review = item.review;
    const badges = el("div", { class: "row" }, [
      el("span", { class: `badge ${item.verdict}`, text: item.verdict }),
      clipped("cls", item.defect_class || ""),
      el("span", { class: "score", text: fmtScore(item.score) }),
    ]);
    const meta = el("div", { class: "meta" }, [
      badges,
      clipped("id", item.id),
      clipped("reason", item.reasons.join("; ")),
    ]);
    if (review) meta.append(clipped(`badge label-badge label-${review.label}`, labelText(review)));
    // No picture kept (a missed trigger, retention): an empty alt, not the id over a black box.
    const img = el("img", { alt: thumbUrl(item) ? `result ${item.id}` : "" });
    showImage(img, thumbUrl(item));
    const node = el(
      "article",
      {
        class: `card${review ? " reviewed" : ""}`,
        role: "option",
        "data-id": item.id,
        "data-score": item.score === null || item.score === undefined ? "" : String(item.score),
        "data-review-label": review ? review.label : "",
      },
      [img, meta],
    );
    node.addEventListener("click", () => select(state.items.indexOf(item)));
    return node;
  }

  function renderGallery() {
    const gallery = $("gallery");
    gallery.replaceChildren(...state.items.map((item) => card(item)));
    if (!state.items.length) gallery.append(el("p", { class: "empty", text: "Nothing to review with these filters." }));
    markSelected();
  }

  function rerenderCard(item) {
    const node = $("gallery").querySelector(`.card[data-id="${CSS.escape(item.id)}"]`);
    if (node) node.replaceWith(card(item));
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
        const b = el("button", { type: "button", text: `${i + 1} ${c}`, title: c, "data-class": c });
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
    zoom.expect(item.id);
    showImage(img, src);
    img.alt = src ? `result ${item.id}` : "no picture kept for this result";
    $("show-overlay").classList.toggle("on", state.showOverlay);
    $("show-image").classList.toggle("on", !state.showOverlay);
    $("detail-title").textContent = item.id;
    const r = item.review;
    const facts = [
      ["verdict", item.verdict],
      ["class", item.defect_class || "–"],
      ["score", fmtScore(item.score)],
      ["part id", item.part_id ?? "–"],
      ["captured", new Date(item.captured_wall).toLocaleString()],
      ["models", item.models.map((m) => `${m.name}@${m.version}`).join(", ") || "–"],
      ["review", r ? `${r.label}${r.defect_class ? " / " + r.defect_class : ""} by ${r.reviewer} (rev ${r.revision})` : "not yet"],
    ];
    $("detail-facts").replaceChildren(
      ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v), "data-fact": k })]),
    );
    $("detail-reasons").replaceChildren(...item.reasons.map((reason) => el("li", { text: reason })));
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

  // ------------------------------------------------------------------ zoom and pan

  // The detail image is placed with one transform (translate + scale, in image pixels) inside
  // a fixed box: "fit" shows it whole; wheel, +/- and 1:1 zoom about a point, dragging pans.
  const zoom = (() => {
    const box = $("zoom");
    const img = $("detail-image");
    let s = 1, x = 0, y = 0, fit = 1, forId = null, shownId = null, dims = "";

    function limits() { return [Math.min(fit, 1), Math.max(fit * 16, 8)]; }

    function clamp() {
      const w = img.naturalWidth * s, h = img.naturalHeight * s;
      const bw = box.clientWidth, bh = box.clientHeight;
      x = w <= bw ? (bw - w) / 2 : Math.min(0, Math.max(bw - w, x));
      y = h <= bh ? (bh - h) / 2 : Math.min(0, Math.max(bh - h, y));
    }

    function apply() {
      clamp();
      img.style.transform = `translate(${x}px, ${y}px) scale(${s})`;
      const fitted = Math.abs(s - fit) < 1e-6;
      box.classList.toggle("zoomed", !fitted);
      box.dataset.scale = String(s);
      $("zoom-level").textContent = fitted ? "fit" : `${Math.round(s * 100)}%`;
    }

    function toFit() {
      if (!img.naturalWidth) return;
      fit = Math.min(box.clientWidth / img.naturalWidth, box.clientHeight / img.naturalHeight) || 1;
      s = fit;
      apply();
    }

    function at(factor, px = box.clientWidth / 2, py = box.clientHeight / 2) {
      if (!img.naturalWidth) return;
      const [lo, hi] = limits();
      const next = Math.min(hi, Math.max(lo, s * factor));
      x = px - ((px - x) * next) / s;
      y = py - ((py - y) * next) / s;
      s = next;
      apply();
    }

    img.addEventListener("load", () => {
      const now = `${img.naturalWidth}x${img.naturalHeight}`;
      // Overlay and image of one result share a size: switching keeps the zoomed-in spot.
      if (forId === shownId && now === dims) { apply(); return; }
      shownId = forId;
      dims = now;
      toFit();
    });
    box.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = box.getBoundingClientRect();
      at(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    let drag = null;
    box.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      drag = { px: e.clientX, py: e.clientY, x, y };
      box.setPointerCapture(e.pointerId);
      box.classList.add("panning");
    });
    box.addEventListener("pointermove", (e) => {
      if (!drag) return;
      x = drag.x + e.clientX - drag.px;
      y = drag.y + e.clientY - drag.py;
      apply();
    });
    const stop = () => { drag = null; box.classList.remove("panning"); };
    box.addEventListener("pointerup", stop);
    box.addEventListener("pointercancel", stop);
    box.addEventListener("dblclick", (e) => {
      const r = box.getBoundingClientRect();
      if (Math.abs(s - fit) < 1e-6) at(2.5, e.clientX - r.left, e.clientY - r.top);
      else toFit();
    });
    window.addEventListener("resize", () => { if (img.naturalWidth) toFit(); });

    return {
      expect(id) { forId = id; },
      in() { at(1.5); },
      out() { at(1 / 1.5); },
      full() { at(1 / s); },
      fit: toFit,
    };
  })();

  // ------------------------------------------------------------------ reviewing

  // Runs label and undo requests one at a time in the order asked: a key pressed while a save
  // is on its way is not lost, and an undo never overtakes the label it takes back.
  function serially(task) {
    const run = queue.then(task);
    queue = run.catch(() => {});
    return run;
  }

  function undoStack() {
    try { return JSON.parse(sessionStorage.getItem(UNDO_KEY) || "[]"); } catch (err) { return []; }
  }

  function saveUndo(stack) {
    sessionStorage.setItem(UNDO_KEY, JSON.stringify(stack.slice(-200)));
    $("undo").disabled = !stack.length;
  }

  function needToken() {
    if (token() || (state.me && state.me.read_only_station)) return false;
    status("sign in with your API token first (kept for this tab)", true);
    showSignIn();
    return true;
  }

  function refused(err, what) {
    if (err.status === 401 || err.status === 403) status(`not allowed: ${err.message}`, true);
    else status(`cannot ${what}: ${err.message}`, true);
  }

  async function review(label) {
    const item = state.items[state.index];
    if (!item || needToken()) return;
    const defectClass = label === "defect" ? state.picked || item.defect_class : null;
    if (label === "defect" && !defectClass) {
      status("pick a defect class first (keys 1-9)", true);
      return;
    }
    const body = { label, comment: $("comment").value };  // the server records the token's user
    if (defectClass) body.defect_class = defectClass;
    try {
      const saved = await api(`/results/${encodeURIComponent(item.id)}/review`, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      item.review = saved;
      saveUndo([...undoStack(), { id: item.id, revision: saved.revision }]);
      const position = state.index;
      rerenderCard(item);
      status(`${item.id}: ${labelText(saved)} saved (u undoes)`);
      select(position + 1 < state.items.length ? position + 1 : position);
    } catch (err) {
      refused(err, "save review");
    }
  }

  // Takes back this tab's last label through the API, which restores the label before it and
  // records the undo in the audit trail.
  async function undo() {
    if (needToken()) return;
    const stack = undoStack();
    const last = stack[stack.length - 1];
    if (!last) {
      status("nothing to undo: no label made on this page yet", true);
      return;
    }
    try {
      const url = `/results/${encodeURIComponent(last.id)}/review/undo?expected_revision=${last.revision}`;
      const done = await api(url, { method: "POST" });
      stack.pop();
      // The label restored may be an earlier one of ours: it now stands at the undo's revision.
      const earlier = stack.map((e) => e.id).lastIndexOf(last.id);
      if (earlier >= 0 && done.review) stack[earlier].revision = done.revision;
      saveUndo(stack);
      let item = state.items.find((i) => i.id === last.id);
      if (!item) {
        item = await api(`/results/${encodeURIComponent(last.id)}`);
        state.items.unshift(item);
        sortItems(selectedId());
        renderGallery();
      }
      item.review = done.review;
      rerenderCard(item);
      select(state.items.indexOf(item));
      const now = done.review ? labelText(done.review) : "unreviewed";
      status(`${last.id}: undid revision ${done.undone_revision}; now ${now}`);
    } catch (err) {
      if (err.status === 403 || err.status === 404 || err.status === 409) {
        stack.pop();  // changed by someone else since, or already undone: not ours to take back
        saveUndo(stack);
      }
      refused(err, "undo");
    }
  }

  // ------------------------------------------------------------------ keyboard

  function toggleHelp(show) {
    const help = $("help");
    help.hidden = show === undefined ? !help.hidden : !show;
  }

  function nextSort() {
    const sort = $("sort");
    sort.value = SORTS[(SORTS.indexOf(sort.value) + 1) % SORTS.length];
    resort();
  }

  function onKey(event) {
    const target = event.target;
    const typing = target instanceof HTMLInputElement || target instanceof HTMLSelectElement || target instanceof HTMLTextAreaElement;
    if (event.key === "Escape") {
      toggleHelp(false);
      if (typing) target.blur();
      return;
    }
    if (typing || event.metaKey || event.altKey) return;
    const key = event.key;
    if (event.ctrlKey) {
      if (key === "z") { event.preventDefault(); serially(undo); }
      return;
    }
    let handled = true;
    if (key === "j" || key === "ArrowRight" || key === "ArrowDown") select(state.index + 1);
    else if (key === "k" || key === "ArrowLeft" || key === "ArrowUp") select(state.index - 1);
    else if (key === "c" || key === "b") serially(() => review("defect"));
    else if (key === "f" || key === "g") serially(() => review("good"));
    else if (key === "u") serially(undo);
    else if (/^[1-9]$/.test(key)) pick(Number(key) - 1);
    else if (key === "+" || key === "=") zoom.in();
    else if (key === "-") zoom.out();
    else if (key === "0") zoom.fit();
    else if (key === "o") { state.showOverlay = !state.showOverlay; renderDetail(); }
    else if (key === "s") nextSort();
    else if (key === "m") { if (state.cursor) load(false); }
    else if (key === "r") load(true);
    else if (key === "?") toggleHelp();
    else handled = false;
    if (handled) event.preventDefault();
  }

  // ------------------------------------------------------------------ live updates

  async function onResult(data) {
    noteStation(data);
    if (otherStation(data)) return;
    const verdicts = $("f-verdict").value.split(",").filter(Boolean);
    if ($("f-reviewed").value === "true") return;
    if (verdicts.length && !verdicts.includes(data.verdict)) return;
    if (state.items.some((i) => i.id === data.id)) return;
    try {
      const item = await fetchNew(data.id);
      if (state.items.some((i) => i.id === data.id)) return;
      state.items.unshift(item);
      sortItems(selectedId());
      renderGallery();
      if (state.index < 0) select(0);
      status(`new ${data.verdict}: ${data.id}`);
    } catch (err) {
      status(`live update failed: ${err.message}`, true);
    }
  }

  // On the hub a result's event (from MQTT) can come before the forwarder stored the result.
  async function fetchNew(id) {
    for (let wait = 500; ; wait *= 2) {
      try {
        return await api(`/results/${encodeURIComponent(id)}`);
      } catch (err) {
        if (err.status !== 404 || wait > 16000) throw err;
        await sleep(wait);
      }
    }
  }

  function onState(data) {
    noteStation(data, { state: data.state });
  }

  function onAlarm(data) {
    noteStation(data);
    if (otherStation(data)) return;
    status(`${data.active ? "alarm" : "cleared"} at ${data.station_id}: ${data.text || data.code}`, data.active);
  }

  function onReview(data) {
    const item = state.items.find((i) => i.id === data.id);
    if (!item || (item.review && item.review.revision >= data.revision)) return;
    api(`/results/${encodeURIComponent(data.id)}`).then((fresh) => {
      Object.assign(item, fresh);
      rerenderCard(item);
      if (state.items[state.index] === item) renderDetail();
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
    else if (kind === "state") onState(payload);
    else if (kind === "alarm") onAlarm(payload);
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
        if (!response.ok) return;  // token no longer accepted: signing in again restarts this
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

  // ------------------------------------------------------------------ images

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

  // ------------------------------------------------------------------ signing in

  function showSignIn(message = "") {
    $("signin").hidden = false;
    $("signin-error").textContent = message;
    $("token").focus();
  }

  function clearSession() {
    if (live) live.abort();
    for (const local of blobs.values()) URL.revokeObjectURL(local);
    blobs.clear();
    state.items = [];
    state.index = -1;
    state.cursor = null;
    state.me = null;
    renderGallery();
    renderDetail();
    $("more").hidden = true;
    document.dispatchEvent(new CustomEvent("cellinspect:signed-out"));
  }

  function signedIn(me) {
    state.me = me;
    $("whoami").textContent = me.read_only_station
      ? "read-only station (no users configured)"
      : `signed in as ${me.name} (${me.role})`;
    $("whoami").title = me.read_only_station
      ? "This station has no users: results can be browsed, not labelled"
      : `Labels are recorded as reviewed by ${me.name}; permissions: ${me.permissions.join(", ")}`;
    $("sign-out").hidden = me.read_only_station;
    $("signin").hidden = true;
    $("undo").disabled = !undoStack().length;
    Promise.all([loadClasses(), loadStations()]).then(() => load(true));
    listen();
    document.dispatchEvent(new CustomEvent("cellinspect:signed-in", { detail: me }));  // review-teach.js
  }

  // Checks a token with GET /me before keeping it; a refused one is not kept.
  async function signIn(tok) {
    clearSession();
    document.body.dataset.loading = "1";
    try {
      const me = await api("/me", {}, tok);
      if (tok) sessionStorage.setItem(TOKEN_KEY, tok);
      signedIn(me);
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      $("whoami").textContent = tok ? "token not accepted" : "not signed in";
      $("sign-out").hidden = true;
      if (err.status === 401) {
        showSignIn(tok ? err.message : "");
        status(tok ? `sign-in failed: ${err.message}` : "sign in with your API token to see results", !!tok);
      } else {
        status(`cannot reach the station: ${err.message}`, true);
      }
      document.body.dataset.loading = "0";
    }
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(UNDO_KEY);
    clearSession();
    $("whoami").textContent = "not signed in";
    $("sign-out").hidden = true;
    status("signed out");
    showSignIn();
  }

  // ------------------------------------------------------------------ start

  function init() {
    $("signin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const tok = $("token").value.trim();
      $("token").value = "";
      if (!tok) { showSignIn("type a token"); return; }
      sessionStorage.removeItem(UNDO_KEY);  // undo history belongs to the previous sign-in
      signIn(tok);
    });
    $("sign-out").addEventListener("click", signOut);
    $("filters").addEventListener("submit", (e) => { e.preventDefault(); load(true); });
    for (const id of ["f-verdict", "f-reviewed", "f-class"]) $(id).addEventListener("change", () => load(true));
    $("f-station").addEventListener("change", pickStation);
    $("sort").addEventListener("change", resort);
    $("confirm").addEventListener("click", () => serially(() => review("defect")));
    $("reject").addEventListener("click", () => serially(() => review("good")));
    $("undo").addEventListener("click", () => serially(undo));
    $("more").addEventListener("click", () => load(false));
    $("help-button").addEventListener("click", () => toggleHelp());
    $("help").addEventListener("click", () => toggleHelp(false));
    $("show-overlay").addEventListener("click", () => { state.showOverlay = true; renderDetail(); });
    $("show-image").addEventListener("click", () => { state.showOverlay = false; renderDetail(); });
    $("zoom-in").addEventListener("click", () => zoom.in());
    $("zoom-out").addEventListener("click", () => zoom.out());
    $("zoom-full").addEventListener("click", () => zoom.full());
    $("zoom-fit").addEventListener("click", () => zoom.fit());
    document.addEventListener("keydown", onKey);
    signIn(token());  // the token of an earlier sign-in in this tab, or none
  }

  init();
})();
