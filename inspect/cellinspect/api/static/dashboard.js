// cellinspect dashboard: yield, throughput, defect Pareto, SPC control charts (flagged points
// in red), Cp/Cpk, camera health and score drift, link states. Charts are drawn by Chart.js,
// vendored under /static/vendor (no CDN). The token is asked once, checked with GET /me, kept
// in sessionStorage for this tab and sent in the Authorization header, never in a URL. Text
// from the server is only set through textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "cellinspect.token";
  const STATION_KEY = "cellinspect.station";  // the station picked here or on the review page
  const FLAG = "#e5484d";
  const LINE = "#3e8ef7";
  const LIMIT = "#9aa3ad";
  const charts = {};           // canvas id -> Chart
  const healthHistory = [];    // {t, stats: {name: change}} polled from /station/health
  window.cellinspectDashboard = { charts, flagged: {} };

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  async function api(path, tok = token()) {
    const headers = tok ? { Authorization: `Bearer ${tok}` } : {};
    const response = await fetch(path, { headers });
    const type = response.headers.get("content-type") || "";
    const body = type.includes("application/json") ? await response.json() : null;
    if (!response.ok) {
      const error = new Error(body && body.message ? body.message : `${response.status}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function status(message, isError = false) {
    $("status").textContent = message;
    $("status").classList.toggle("error", isError);
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) tr.append(c);
    return tr;
  }

  const fmt = (v, digits = 3) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  const shortTime = (iso) => new Date(iso).toISOString().slice(5, 16).replace("T", " ");

  function draw(id, config) {
    if (charts[id]) charts[id].destroy();
    config.options = Object.assign({ animation: false, responsive: true, aspectRatio: 2.2 },
      config.options || {});
    const x = { ticks: { maxTicksLimit: 8, maxRotation: 0 } };
    config.options.scales = Object.assign({ x }, config.options.scales || {});
    charts[id] = new Chart($(id), config);
  }

  function limitLine(label, values, dash = [6, 4]) {
    return { label, data: values, borderColor: LIMIT, borderDash: dash, pointRadius: 0,
      borderWidth: 1, fill: false };
  }

  // A control chart: the series, its limits, and the flagged points as their own dataset.
  function controlChart(id, labels, values, flags, centre, ucl, lcl, yLabel) {
    const each = (v) => (Array.isArray(v) ? v : labels.map(() => v));
    const flagged = values.map((v, i) => (flags[i].length ? v : null));
    window.cellinspectDashboard.flagged[id] = flagged.filter((v) => v !== null).length;
    draw(id, {
      type: "line",
      data: {
        labels,
        datasets: [
          { label: yLabel, data: values, borderColor: LINE, pointRadius: 2, borderWidth: 1.5 },
          { label: "flagged", data: flagged, borderColor: FLAG, backgroundColor: FLAG,
            showLine: false, pointRadius: 5, pointStyle: "rectRot" },
          limitLine("UCL", each(ucl)),
          limitLine("centre", each(centre), []),
          limitLine("LCL", each(lcl)),
        ],
      },
      options: {
        plugins: {
          tooltip: { callbacks: { afterLabel: (ctx) =>
            (ctx.datasetIndex === 1 ? flags[ctx.dataIndex].join(", ") : "") } },
        },
      },
    });
  }

  function filters() {
    const q = new URLSearchParams();
    const since = $("f-since").value;
    if (since) q.set("since", new Date(since).toISOString());
    if ($("f-station").value) q.set("station_id", $("f-station").value);
    if ($("f-recipe").value) q.set("recipe", $("f-recipe").value);
    return q;
  }

  async function loadStats() {
    const q = filters();
    q.delete("recipe");  // /stats takes since and station_id, not recipe
    const stats = await api(`/stats?${q}`);
    const labels = stats.timeline.map((b) => shortTime(b.start));
    const yields = stats.timeline.map((b) => (b.count ? (b.by_verdict.pass || 0) / b.count : null));
    draw("chart-yield", {
      data: {
        labels,
        datasets: [
          { type: "line", label: "yield", data: yields, borderColor: "#30a46c", yAxisID: "y" },
          { type: "bar", label: "parts / min", data: stats.timeline.map((b) => b.per_minute),
            backgroundColor: "rgba(62, 142, 247, .45)", yAxisID: "rate" },
        ],
      },
      options: { scales: { y: { min: 0, max: 1, position: "left" },
        rate: { min: 0, position: "right", grid: { drawOnChartArea: false } } } },
    });
    draw("chart-pareto", {
      data: {
        labels: stats.pareto.map((p) => p.defect_class),
        datasets: [
          { type: "bar", label: "count", data: stats.pareto.map((p) => p.count),
            backgroundColor: "rgba(229, 72, 77, .6)", yAxisID: "y" },
          { type: "line", label: "cumulative share", data: stats.pareto.map((p) => p.cumulative_share),
            borderColor: "#f5a524", yAxisID: "share" },
        ],
      },
      options: { scales: { y: { min: 0 }, share: { min: 0, max: 1, position: "right",
        grid: { drawOnChartArea: false } } } },
    });
  }

  async function loadRejectRate() {
    const q = filters();
    q.set("subgroup", $("f-subgroup").value || "25");
    const chart = await api(`/spc/reject-rate?${q}`);
    const groups = chart.subgroups;
    controlChart("chart-reject", groups.map((g) => shortTime(g.end)), groups.map((g) => g.p),
      groups.map((g) => g.rules), chart.centre, groups.map((g) => g.ucl), groups.map((g) => g.lcl),
      "reject fraction");
  }

  async function loadMeasurements() {
    const q = filters();
    const list = await api(`/spc/measurements?${q}`);
    const body = $("capability").tBodies[0];
    body.replaceChildren();
    const box = $("imr");
    box.replaceChildren();
    for (const m of list.items) {
      const cap = m.capability;
      body.append(row([cell(m.name), cell(String(m.count)), cell(fmt(m.mean)),
        cell(String(m.flagged), m.flagged ? "level-alarm" : ""), cell(fmt(cap && cap.cp, 2)),
        cell(fmt(cap && cap.cpk, 2), cap && cap.cpk !== null && cap.cpk < 1.33 ? "level-warn" : "")]));
      if (m.count < 2) continue;
      const chart = await api(`/spc/measurements/${encodeURIComponent(m.name)}?${q}`);
      const wrap = document.createElement("div");
      const canvas = document.createElement("canvas");
      canvas.id = `chart-imr-${m.name}`;
      canvas.className = "imr";
      const title = document.createElement("h2");
      title.textContent = m.name;
      wrap.append(title, canvas);
      box.append(wrap);
      const pts = chart.points;
      controlChart(canvas.id, pts.map((p) => shortTime(p.captured_wall)), pts.map((p) => p.value),
        pts.map((p) => p.rules), chart.centre, chart.ucl, chart.lcl, m.name);
    }
  }

  async function loadStation() {
    let station;
    try {
      station = await api("/station");
    } catch (error) {
      if (error.status !== 404) throw error;
      $("station-note").textContent = "Not a running station (cellinspect serve): no links or health.";
      $("station-detail").hidden = true;
      return;
    }
    const links = $("links").tBodies[0];
    links.replaceChildren();
    for (const [name, link] of Object.entries(station.links || {})) {
      const state = link.state || (link.connected ? "connected" : "–");
      links.append(row([cell(name), cell(String(state))]));
    }
    let health;
    try {
      health = await api("/station/health");
    } catch (error) {
      if (error.status !== 404) throw error;
      $("station-note").textContent = "This station follows no camera health.";
      $("health-detail").hidden = true;
      return;
    }
    $("station-detail").hidden = false;
    $("health-detail").hidden = false;
    const table = $("health").tBodies[0];
    table.replaceChildren();
    const sample = { t: new Date().toISOString(), stats: {} };
    for (const a of health.alarms) {
      const level = String(a.level);
      table.append(row([cell(a.name), cell(level, `level-${level.toLowerCase()}`), cell(fmt(a.change)),
        cell(fmt(a.warn_at)), cell(fmt(a.alarm_at)), cell(a.prediction ? a.prediction.text : "–")]));
      sample.stats[a.name] = a.change;
    }
    healthHistory.push(sample);
    if (healthHistory.length > 240) healthHistory.shift();
    const names = Object.keys(sample.stats);
    draw("chart-health", {
      type: "line",
      data: {
        labels: healthHistory.map((h) => shortTime(h.t)),
        datasets: names.map((n, i) => ({ label: n, data: healthHistory.map((h) => h.stats[n] ?? null),
          borderColor: `hsl(${(i * 67) % 360} 70% 60%)`, pointRadius: 2 })),
      },
      options: { aspectRatio: 4, plugins: { legend: { position: "right" } } },
    });
  }

  // The station field offers the stations with results in the store (GET /stations).
  async function loadStations() {
    const body = await api("/stations");
    let list = $("f-station-list");
    if (!list) {
      list = document.createElement("datalist");
      list.id = "f-station-list";
      document.body.append(list);
      $("f-station").setAttribute("list", list.id);
    }
    list.replaceChildren(...body.items.map((s) => {
      const option = document.createElement("option");
      option.value = s.station_id;
      option.textContent = [s.line, s.site].filter(Boolean).join(" · ");
      return option;
    }));
  }

  async function refresh() {
    document.body.dataset.loading = "1";
    status("Loading…");
    sessionStorage.setItem(STATION_KEY, $("f-station").value);
    try {
      await Promise.all([loadStations(), loadStats(), loadRejectRate(), loadMeasurements(), loadStation()]);
      status(`Updated ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      if (error.status === 401) return signIn();
      status(error.message, true);
    } finally {
      document.body.dataset.loading = "0";
    }
  }

  function signIn(message = "") {
    $("signin").hidden = false;
    $("signin-error").textContent = message;
    $("token").focus();
  }

  async function start() {
    Chart.defaults.color = "#e6e8eb";
    Chart.defaults.borderColor = "#2c323c";
    $("signin-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const tok = $("token").value.trim();
      try {
        const me = await api("/me", tok);
        sessionStorage.setItem(TOKEN_KEY, tok);
        $("signin").hidden = true;
        $("whoami").textContent = `${me.name} (${me.role})`;
        refresh();
      } catch (error) {
        $("signin-error").textContent = error.status === 401 ? "That token is not valid." : error.message;
      }
    });
    $("signout").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      signIn();
    });
    $("filters").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
    $("f-station").value = sessionStorage.getItem(STATION_KEY) || "";
    try {
      const me = await api("/me");
      $("whoami").textContent = `${me.name} (${me.role})`;
    } catch (error) {
      if (error.status === 401) return signIn();
    }
    await refresh();
    setInterval(() => { if ($("signin").hidden) loadStation().catch(() => {}); }, 30000);
  }

  start();
})();
