// Telemetry chart of the device page: one capability over the chosen range, fetched from
// /api/v1/devices/<node>/telemetry/ and drawn with the vendored uPlot (static/vendor/uplot/).
// While the range ends at now, values pushed over /ws/live/ are appended: app.js announces
// every batch as a "meshhub:live" event on document, so this file never touches the socket.
(function () {
  "use strict";
  const root = document.querySelector("[data-telemetry]");
  const controls = root && root.querySelector("[data-url]");
  if (!controls || !window.uPlot) return;

  // Long ranges come as buckets computed by the database (avg/min/max per bucket), sized so a
  // series stays near 720 points; 1 h asks for raw samples (720 at the agents' default 5 s).
  // A range older than the hub keeps raw samples is answered from its hourly or daily
  // rollups, in buckets at least that wide: the answer's bucket_s says which, and the note too.
  const RANGES = {
    "1h": { seconds: 3600, bucket: null },
    "24h": { seconds: 86400, bucket: 120 },
    "7d": { seconds: 7 * 86400, bucket: 900 },
    "30d": { seconds: 30 * 86400, bucket: 3600 },
    "90d": { seconds: 90 * 86400, bucket: 21600 },
    "1y": { seconds: 365 * 86400, bucket: 86400 },
  };
  const MAX_POINTS = 1000; // more raw samples than this (a fast reporter): ask again in buckets
  const FALLBACK_BUCKET = 60;

  const node = root.closest("[data-node]").dataset.node;
  const chartEl = root.querySelector("[data-chart]");
  const emptyEl = root.querySelector("[data-chart-empty]");
  const noteEl = root.querySelector("[data-chart-note]");
  const csvLink = root.querySelector("[data-csv]");
  const seriesEl = root.querySelector("[data-series]");
  const rangeButtons = Array.from(root.querySelectorAll("button[data-range]"));
  const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const number = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  const when = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

  // x in unix seconds; a null y between two points far apart breaks the line over the gap.
  const view = { range: "24h", capability: "", unit: "", bucket: null, start: 0, end: 0, gap: Infinity, sources: [], retention: {}, xs: [], avg: [], min: [], max: [], count: [] };
  let plot = null;
  let loading = false;
  let pending = []; // live values that arrived while a fetch was in flight
  let controller = null;
  let snapshots = 0;

  function selected() {
    if (seriesEl.tagName === "SELECT") return { name: seriesEl.value, unit: seriesEl.selectedOptions[0].dataset.unit || "" };
    return { name: seriesEl.dataset.series, unit: seriesEl.dataset.unit || "" };
  }

  function query(start, end, format) {
    const params = new URLSearchParams({ capability: view.capability, start: new Date(start * 1000).toISOString(), end: new Date(end * 1000).toISOString() });
    if (view.bucket) params.set("bucket", String(view.bucket));
    if (format) params.set("format", format);
    return controls.dataset.url + "?" + params.toString();
  }

  async function fetchJSON(url, signal) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", signal: signal });
    const type = response.headers.get("Content-Type") || "";
    if (!type.includes("json")) throw new Error("the hub answered " + response.status + " " + (type || "without a body") + " (signed out? reload the page)");
    const body = await response.json();
    if (!response.ok) throw new Error(Object.values(body).flat().join("; ") || String(response.status));
    return body;
  }

  function median(values) {
    if (!values.length) return 0;
    const sorted = values.slice().sort((a, b) => a - b);
    return sorted[Math.floor(sorted.length / 2)];
  }

  function push(x, avg, min, max, count) {
    const n = view.xs.length;
    if (n && x - view.xs[n - 1] > view.gap) add((x + view.xs[n - 1]) / 2, null, null, null, 0);
    add(x, avg, min, max, count);
  }

  function add(x, avg, min, max, count) {
    view.xs.push(x);
    view.avg.push(avg);
    view.min.push(min);
    view.max.push(max);
    view.count.push(count);
  }

  function fill(body) {
    if (body.bucket_s) view.bucket = body.bucket_s; // widened to whole rollups past the raw window
    const buckets = view.bucket ? body.buckets.filter((b) => b.capability === view.capability) : [];
    view.sources = ["hour", "day"].filter((r) => buckets.some((b) => b.resolution === r));
    view.retention = body.retention || {};
    const rows = view.bucket
      ? buckets.map((b) => [Date.parse(b.ts) / 1000, b.avg, b.min, b.max, b.count])
      : body.samples.filter((s) => s.capability === view.capability && typeof s.value === "number").map((s) => [Date.parse(s.ts) / 1000, s.value, s.value, s.value, 1]);
    const steps = rows.slice(1).map((row, i) => row[0] - rows[i][0]);
    view.gap = Math.max(5 * (median(steps) || view.bucket || 60), 300, view.bucket ? 2 * view.bucket : 0);
    view.xs = [];
    view.avg = [];
    view.min = [];
    view.max = [];
    view.count = [];
    rows.forEach((row) => push(...row));
  }

  function trim() {
    let drop = 0;
    while (drop < view.xs.length && (view.xs[drop] < view.start || view.avg[drop] === null)) drop++;
    if (!drop) return;
    ["xs", "avg", "min", "max", "count"].forEach((key) => view[key].splice(0, drop));
  }

  function duration(seconds) {
    if (seconds % 86400 === 0) return seconds === 86400 ? "day" : seconds / 86400 + " days";
    return seconds % 3600 === 0 ? seconds / 3600 + " h" : seconds / 60 + " min";
  }

  // Which stretch of the chart comes from rollups rather than raw samples.
  function provenance() {
    const day = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
    const parts = [];
    if (view.sources.includes("hour") && view.retention.raw_from) parts.push("before " + day.format(new Date(view.retention.raw_from)) + " from hourly rollups");
    if (view.sources.includes("day") && view.retention.hourly_from) parts.push("before " + day.format(new Date(view.retention.hourly_from)) + " from daily rollups");
    return parts.length ? " Older values: " + parts.join(", ") + "." : "";
  }

  function rgba(hex, alpha) {
    const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
    return m ? "rgba(" + [1, 2, 3].map((i) => parseInt(m[i], 16)).join(",") + "," + alpha + ")" : hex;
  }

  function height() {
    return window.innerWidth < 700 ? 220 : 300;
  }

  // Where uPlot draws lines without dots (dense data), a sample between two gaps would not show at all.
  function isolated(u, seriesIdx, show) {
    if (show) return null;
    const ys = u.data[seriesIdx];
    const idxs = [];
    for (let i = 0; i < ys.length; i++) if (ys[i] !== null && (i === 0 || ys[i - 1] === null) && (i === ys.length - 1 || ys[i + 1] === null)) idxs.push(i);
    return idxs.length ? idxs : null;
  }

  // The value axis is as wide as its longest label ("19.58 °C", "-1,250 kWh"): a fixed
  // width clipped long labels at the chart's left edge. uPlot calls this per layout cycle;
  // after the first two it keeps the width it has, so the layout settles.
  function valueAxisSize(u, values, axisIdx, cycle) {
    const axis = u.axes[axisIdx];
    if (cycle > 1) return axis._size;
    let longest = "";
    for (const label of values || []) if (label.length > longest.length) longest = label;
    u.ctx.font = axis.font[0];
    const text = longest ? u.ctx.measureText(longest).width / devicePixelRatio : 0;
    return Math.max(48, Math.ceil(axis.ticks.size + axis.gap + text + 4));
  }

  function options() {
    const css = getComputedStyle(document.documentElement);
    const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    const accent = color("--accent", "#1f6feb");
    const muted = color("--muted", "#667085");
    const line = color("--line", "#e3e7ee");
    const unit = view.unit ? " " + view.unit : "";
    const value = (u, v) => (v == null ? "—" : number.format(v) + unit);
    const series = [
      { label: "time", value: (u, ts) => (ts == null ? "—" : when.format(new Date(ts * 1000))) },
      { label: view.bucket ? view.capability + " avg" : view.capability, stroke: accent, width: 2, value: value, points: { size: 5, fill: accent, filter: isolated } },
    ];
    const bands = [];
    if (view.bucket) {
      const edge = { stroke: rgba(accent, 0.35), width: 1, value: value, points: { show: false } };
      series.push(Object.assign({ label: "min" }, edge), Object.assign({ label: "max" }, edge));
      bands.push({ series: [3, 2], fill: rgba(accent, 0.12) });
    }
    const axis = { stroke: muted, font: "12px system-ui, sans-serif", grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 } };
    return {
      width: Math.max(chartEl.clientWidth, 200),
      height: height(),
      series: series,
      bands: bands,
      // uPlot formats time axes with the browser's local clock (its default tzDate).
      scales: { x: { time: true, range: () => [view.start, view.end] } },
      axes: [Object.assign({ space: 90 }, axis), Object.assign({ size: valueAxisSize, values: (u, splits) => splits.map((v) => number.format(v) + unit) }, axis)],
      cursor: { drag: { x: false, y: false } }, // the range buttons choose the window
    };
  }

  function lastValue() {
    for (let i = view.avg.length - 1; i >= 0; i--) if (view.avg[i] !== null) return view.avg[i];
    return null;
  }

  function render(rebuild) {
    const points = view.avg.filter((v) => v !== null).length;
    const last = lastValue();
    Object.assign(chartEl.dataset, { points: String(points), range: view.range, capability: view.capability, mode: view.bucket ? "bucket" : "raw", bucket: String(view.bucket || ""), sources: view.sources.join(","), last: last === null ? "" : String(last) });
    if (!points) {
      if (plot) plot.destroy();
      plot = null;
      chartEl.hidden = true;
      emptyEl.hidden = false;
      chartEl.dataset.state = "empty";
    } else {
      chartEl.hidden = false;
      emptyEl.hidden = true;
      const data = view.bucket ? [view.xs, view.avg, view.min, view.max] : [view.xs, view.avg];
      if (rebuild || !plot) {
        if (plot) plot.destroy();
        plot = new window.uPlot(options(), data, chartEl);
      } else {
        plot.setData(data);
      }
      chartEl.dataset.state = "ready";
    }
    chartEl.setAttribute("role", "img");
    chartEl.setAttribute("aria-label", view.capability + ", last " + view.range + ": " + points + " points" + (last === null ? "" : ", latest " + number.format(last) + (view.unit ? " " + view.unit : "")));
    noteEl.classList.remove("error");
    noteEl.textContent = (view.bucket ? "Average per " + duration(view.bucket) + "; the band spans min to max." + provenance() : "Raw samples.") + " Times in " + timeZone + ".";
  }

  async function load() {
    if (controller) controller.abort();
    controller = new AbortController();
    const signal = controller.signal;
    const chosen = selected();
    const range = RANGES[view.range];
    view.capability = chosen.name;
    view.unit = chosen.unit;
    view.bucket = range.bucket;
    view.end = Date.now() / 1000;
    view.start = view.end - range.seconds;
    loading = true;
    pending = [];
    chartEl.dataset.state = "loading";
    try {
      let body = await fetchJSON(query(view.start, view.end), signal);
      if (!view.bucket && body.samples.length > MAX_POINTS) {
        view.bucket = FALLBACK_BUCKET;
        body = await fetchJSON(query(view.start, view.end), signal);
      }
      fill(body);
    } catch (error) {
      if (signal.aborted) return; // a newer choice superseded this one
      loading = false;
      chartEl.dataset.state = "error";
      noteEl.classList.add("error");
      noteEl.textContent = "Could not load telemetry: " + error.message;
      return;
    }
    loading = false;
    render(true);
    const arrived = pending;
    pending = [];
    arrived.forEach((args) => append(...args));
  }

  // A live value at browser time t: a new raw point, or folded into the current bucket.
  function append(t, v) {
    if (loading) {
      pending.push([t, v]);
      return;
    }
    if (chartEl.dataset.state === "error") return;
    const n = view.xs.length;
    const lastX = n ? view.xs[n - 1] : -Infinity;
    if (view.bucket) {
      const bucket = Math.max(Math.floor(t / view.bucket) * view.bucket, lastX); // a browser clock behind the hub's
      if (bucket === lastX && view.avg[n - 1] !== null) {
        const count = view.count[n - 1];
        view.avg[n - 1] = (view.avg[n - 1] * count + v) / (count + 1);
        view.min[n - 1] = Math.min(view.min[n - 1], v);
        view.max[n - 1] = Math.max(view.max[n - 1], v);
        view.count[n - 1] = count + 1;
      } else {
        push(bucket, v, v, v, 1);
      }
    } else {
      push(Math.max(t, lastX), v, v, v, 1);
    }
    view.end = Math.max(t, view.xs[view.xs.length - 1]);
    view.start = view.end - RANGES[view.range].seconds; // the window slides with now
    trim();
    render(false);
  }

  document.addEventListener("meshhub:live", function (event) {
    if (event.detail.snapshot) {
      // The first snapshot repeats what the first fetch returned; a later one follows a
      // reconnect, and the database has whatever was reported in between.
      if (snapshots++ > 0) load();
      return;
    }
    const now = Date.now() / 1000;
    event.detail.events.forEach(function (e) {
      if (e.type === "state" && e.node_id === node && e.capability === view.capability && typeof e.value === "number" && isFinite(e.value)) append(now, e.value);
    });
  });

  rangeButtons.forEach(function (button) {
    button.addEventListener("click", function () {
      view.range = button.dataset.range;
      rangeButtons.forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
      load();
    });
  });
  if (seriesEl.tagName === "SELECT") seriesEl.addEventListener("change", load);

  // The export is what the chart shows (raw samples or the same buckets), up to this moment.
  csvLink.addEventListener("click", function () {
    const end = Date.now() / 1000;
    csvLink.href = query(end - RANGES[view.range].seconds, end, "csv");
  });

  let resizing = 0;
  new ResizeObserver(function () {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(function () {
      if (plot) plot.setSize({ width: Math.max(chartEl.clientWidth, 200), height: height() });
    });
  }).observe(root);

  load();
})();
