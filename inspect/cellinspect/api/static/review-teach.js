// cellinspect review page, "Teach" panel: teach the anomaly detector on good parts from the
// line (POST /teach), watch the session (GET /teach, polled while the panel is open), confirm
// or reject each collected part from its thumbnail, and see the version put in shadow.
// Shown to operator, qa and admin (the roles the API lets teach). The token is the review
// page's (sessionStorage, Authorization header, never a URL); thumbnails are fetched with it
// and shown from blob: URLs. Server text only ever goes through textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "cellinspect.token";
  const TEACHERS = new Set(["operator", "qa", "admin"]);
  const POLL_MS = 1000;
  const thumbs = new Map();  // result id -> blob: URL
  let timer = null;
  let me = null;

  function headers() {
    const tok = sessionStorage.getItem(TOKEN_KEY) || "";
    return tok ? { Authorization: `Bearer ${tok}` } : {};
  }

  async function call(path, options = {}) {
    const response = await fetch(path, {
      ...options,
      headers: { ...(options.headers || {}), ...headers() },
    });
    const type = response.headers.get("content-type") || "";
    const body = type.includes("application/json") ? await response.json() : null;
    if (!response.ok) {
      throw new Error(body && body.message ? body.message : `${response.status} ${response.statusText}`);
    }
    return body;
  }

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

  function say(message, isError = false) {
    const s = $("teach-state");
    s.textContent = message;
    s.classList.toggle("error", isError);
  }

  async function thumb(img, resultId) {
    let local = thumbs.get(resultId);
    if (!local) {
      try {
        const response = await fetch(`/teach/parts/${encodeURIComponent(resultId)}/image`, { headers: headers() });
        if (!response.ok) return;
        local = URL.createObjectURL(await response.blob());
        thumbs.set(resultId, local);
      } catch (err) {
        return;
      }
    }
    img.src = local;
  }

  async function decide(resultId, verb) {
    try {
      await call(`/teach/parts/${encodeURIComponent(resultId)}/${verb}`, { method: "POST" });
    } catch (err) {
      say(`${verb} failed: ${err.message}`, true);
      return;
    }
    refresh();
  }

  function partCard(part, open) {
    const img = el("img", { alt: `part ${part.part_id ?? ""}` });
    if (part.has_frame) thumb(img, part.result_id);
    const card = el("div", {
      class: `teach-part ${part.status}`,
      "data-result": part.result_id,
      "data-status": part.status,
      title: `line verdict ${part.verdict}` + (part.decided_by ? `, ${part.status} by ${part.decided_by}` : ""),
    }, [img, el("span", { class: "id", text: `#${part.part_id ?? "–"} ${part.verdict}` })]);
    if (open) {
      const good = el("button", { type: "button", class: "teach-confirm", text: "Good" });
      const bad = el("button", { type: "button", class: "teach-reject", text: "Reject" });
      good.disabled = part.status === "confirmed";
      bad.disabled = part.status === "rejected";
      good.addEventListener("click", () => decide(part.result_id, "confirm"));
      bad.addEventListener("click", () => decide(part.result_id, "reject"));
      card.append(el("div", { class: "row" }, [good, bad]));
    }
    return card;
  }

  function render(s) {
    const active = s.state === "collecting" || s.state === "fitting";
    $("teach-form").hidden = active;
    $("teach-cancel").hidden = !active;
    const slot = $("teach-slot");
    const current = slot.value;
    slot.replaceChildren(...(s.anomaly_slots || []).map((name) => el("option", { value: name, text: name })));
    if (current && (s.anomaly_slots || []).includes(current)) slot.value = current;
    const head = s.state === "idle"
      ? "No teach session yet."
      : `${s.state}: ${s.confirmed} of ${s.wanted} confirmed good, ${s.collected} collected, ${s.rejected} rejected (slot ${s.slot}, by ${s.operator})`;
    say(s.message ? `${head} — ${s.message}` : head, s.state === "failed");
    $("teach-state").dataset.state = s.state;
    const bar = $("teach-bar");
    bar.hidden = s.state !== "fitting";
    bar.value = s.progress ?? 0;
    $("teach-version").textContent = s.version ? `Version ${s.version} of ${s.slot} judges in shadow.` : "";
    const open = s.state === "collecting";
    $("teach-parts").replaceChildren(...(s.parts || []).slice().reverse().map((p) => partCard(p, open)));
    return active;
  }

  async function refresh() {
    let s;
    try {
      s = await call("/teach");
    } catch (err) {
      say(`cannot read the teach session: ${err.message}`, true);
      return;
    }
    const active = render(s);
    clearTimeout(timer);
    timer = null;
    if (active && !$("teach").hidden) timer = setTimeout(refresh, POLL_MS);
  }

  async function start(event) {
    event.preventDefault();
    const body = { wanted: Number($("teach-wanted").value) };
    if ($("teach-slot").value) body.slot = $("teach-slot").value;
    try {
      await call("/teach", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (err) {
      say(`cannot start: ${err.message}`, true);
      return;
    }
    refresh();
  }

  async function cancel() {
    try {
      await call("/teach/cancel", { method: "POST" });
    } catch (err) {
      say(`cannot cancel: ${err.message}`, true);
      return;
    }
    refresh();
  }

  function show(open) {
    $("teach").hidden = !open;
    if (open) refresh();
    else { clearTimeout(timer); timer = null; }
  }

  document.addEventListener("cellinspect:signed-in", (event) => {
    me = event.detail;
    $("teach-button").hidden = !(me && TEACHERS.has(me.role) && !me.read_only_station);
  });
  document.addEventListener("cellinspect:signed-out", () => {
    me = null;
    $("teach-button").hidden = true;
    show(false);
    for (const local of thumbs.values()) URL.revokeObjectURL(local);
    thumbs.clear();
  });
  $("teach-button").addEventListener("click", () => show(true));
  $("teach-close").addEventListener("click", () => show(false));
  $("teach-cancel").addEventListener("click", cancel);
  $("teach-form").addEventListener("submit", start);
  // Keys typed in the panel are the panel's, not the review page's shortcuts.
  $("teach").addEventListener("keydown", (event) => {
    if (event.key === "Escape") show(false);
    event.stopPropagation();
  });
})();
