// Plateau dashboard: the convergence chart (uPlot), webhook deliveries, small helpers.
// Pages are rendered by the server and refreshed by htmx; this file only adds
// what HTML cannot do. No build step: plain ES2019 in one file.
(function () {
  "use strict";

  // every chart drawn, by its element id (tests and the console can inspect them)
  const charts = (window.plateauCharts = window.plateauCharts || {});

  const COLOURS = {
    band: "rgba(31, 111, 235, 0.14)",
    bandEdge: "rgba(31, 111, 235, 0.25)",
    delta: "rgba(31, 111, 235, 0.45)",
    smoothed: "#1f6feb",
    expected: "#6e7781",
    projection: "#d9480f",
    interval: "rgba(217, 72, 15, 0.10)",
    tolerance: "#c62828",
    kStar: "#1a7f37",
  };

  function within(root, selector) {
    const found = Array.from(root.querySelectorAll ? root.querySelectorAll(selector) : []);
    if (root.matches && root.matches(selector)) found.unshift(root);
    return found;
  }

  function count(value) {
    return value == null ? "—" : Math.round(value).toLocaleString("en-US");
  }

  function small(value) {
    if (value == null) return "—";
    return Math.abs(value) >= 0.01 && Math.abs(value) < 1e4
      ? String(Number(value.toPrecision(3)))
      : value.toExponential(2);
  }

  // axis labels: 1,000 for sizes; 0.01 or 1e-4 for deltas
  function tick(value) {
    if (value == null) return "";
    if (value >= 1 && value < 1e6) return count(value);
    if (value >= 0.01 && value < 1) return String(Number(value.toPrecision(2)));
    return value.toExponential(0).replace("e+", "e");
  }

  // -- the convergence chart ------------------------------------------------

  function chartHeight(width) {
    return Math.round(Math.min(420, Math.max(240, width * 0.55)));
  }

  // tolerance, k*, the projected size and its interval, drawn over the series
  function marks(d) {
    return function (u) {
      const ctx = u.ctx;
      const box = u.bbox;
      const px = u.pxRatio || 1;
      ctx.save();
      ctx.beginPath();
      ctx.rect(box.left, box.top, box.width, box.height);
      ctx.clip();
      // uPlot leaves its axes' text alignment and its last series' dash behind
      ctx.font = 12 * px + "px system-ui, sans-serif";
      ctx.textAlign = "left";
      ctx.textBaseline = "bottom";
      ctx.setLineDash([]);

      function vertical(k, colour, dash, text) {
        const x = u.valToPos(k, "x", true);
        ctx.strokeStyle = colour;
        ctx.lineWidth = 1.5 * px;
        ctx.setLineDash(dash.map((v) => v * px));
        ctx.beginPath();
        ctx.moveTo(x, box.top);
        ctx.lineTo(x, box.top + box.height);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.fillStyle = colour;
        const width = ctx.measureText(text).width;
        const left = x + 4 * px + width > box.left + box.width ? x - 4 * px - width : x + 4 * px;
        ctx.fillText(text, left, box.top + 16 * px);
      }

      if (d.projected_interval) {
        const x0 = u.valToPos(d.projected_interval[0], "x", true);
        const x1 = u.valToPos(d.projected_interval[1], "x", true);
        ctx.fillStyle = COLOURS.interval;
        ctx.fillRect(Math.min(x0, x1), box.top, Math.abs(x1 - x0), box.height);
      }

      const y = u.valToPos(d.tolerance, "y", true);
      ctx.strokeStyle = COLOURS.tolerance;
      ctx.lineWidth = 1.5 * px;
      ctx.beginPath();
      ctx.moveTo(box.left, y);
      ctx.lineTo(box.left + box.width, y);
      ctx.stroke();
      ctx.fillStyle = COLOURS.tolerance;
      ctx.fillText("tolerance " + tick(d.tolerance), box.left + 6 * px, y - 3 * px);

      if (d.sufficient_size) {
        vertical(d.sufficient_size, COLOURS.kStar, [], "k* = " + count(d.sufficient_size));
      }
      if (d.projected_size) {
        vertical(d.projected_size, COLOURS.projection, [6, 4], "needed ≈ " + count(d.projected_size));
      }
      ctx.restore();
    };
  }

  function drawChart(el) {
    if (charts[el.id] || typeof uPlot === "undefined") return;
    const source = document.getElementById(el.dataset.chart);
    if (!source) return;
    const d = JSON.parse(source.textContent);
    if (!d.k || d.k.length < 2) {
      el.textContent = "The curve has too few points to draw.";
      return;
    }

    const data = [d.k];
    const series = [{ label: "k", value: (u, v) => count(v) }];
    function add(values, options) {
      data.push(values);
      series.push(Object.assign({ value: (u, v) => small(v), points: { show: false } }, options));
      return series.length - 1;
    }
    const bands = [];
    if (d.has_band) {
      const high = add(d.high, { label: "band high", stroke: COLOURS.bandEdge, width: 1 });
      const low = add(d.low, { label: "band low", stroke: COLOURS.bandEdge, width: 1 });
      bands.push({ series: [high, low], fill: COLOURS.band });
    }
    add(d.delta, { label: "delta", stroke: COLOURS.delta, width: 1 });
    add(d.smoothed, { label: "smoothed", stroke: COLOURS.smoothed, width: 2.5 });
    if (d.has_expected) {
      add(d.expected, { label: "expected", stroke: COLOURS.expected, width: 1.5, dash: [2, 4] });
    }
    if (d.projection.some((v) => v != null)) {
      add(d.projection, { label: "projection", stroke: COLOURS.projection, width: 2, dash: [8, 5] });
    }

    const width = Math.max(el.clientWidth, 280);
    const options = {
      width: width,
      height: chartHeight(width),
      series: series,
      bands: bands,
      scales: {
        // the measured sizes (and the projection), not whole powers of ten
        x: { time: false, distr: 3, range: (u, min, max) => [min, max] },
        y: {
          distr: 3,
          // keep the tolerance line in view even when the curve is far from it
          range: (u, min, max) =>
            uPlot.rangeLog(Math.min(min, d.tolerance), Math.max(max, d.tolerance), 10, true),
        },
      },
      axes: [
        { label: "sample size k", values: (u, splits) => splits.map(tick) },
        {
          // on a phone the caption names the axis; the plot needs the room
          label: width < 500 ? null : "delta (log)",
          size: 56,
          values: (u, splits) => splits.map(tick),
        },
      ],
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
      hooks: { draw: [marks(d)] },
    };
    el.textContent = "";
    const chart = new uPlot(options, data, el);
    charts[el.id] = chart;
    el.dataset.series = String(series.length - 1);

    let lastWidth = el.clientWidth;
    if (window.ResizeObserver) {
      new ResizeObserver(() => {
        const now = el.clientWidth;
        if (Math.abs(now - lastWidth) < 2 || !el.isConnected) return;
        lastWidth = now;
        chart.setSize({ width: Math.max(now, 280), height: chartHeight(now) });
      }).observe(el);
    }
  }

  // -- webhook deliveries, read from the API with the page's session ---------

  // the columns a reader looks at first; any other field the API returns follows
  const DELIVERY_COLUMNS = {
    created_at: "Time",
    event_type: "Event",
    attempt: "Attempt",
    outcome: "Outcome",
    status: "State",
    status_code: "HTTP status",
    error: "Error",
    next_attempt_at: "Next attempt",
    duration_ms: "Took (ms)",
  };
  const DELIVERY_HIDDEN = ["id", "url"]; // the URL is shown above the table

  function outcomeClass(value) {
    const text = String(value).toLowerCase();
    if (/deliver|succe|^ok/.test(text)) return "delivery-ok";
    if (/retry|pending|queued|sending/.test(text)) return "delivery-wait";
    return "delivery-bad";
  }

  function cellText(key, value) {
    if (value == null || value === "") return "—";
    if (/_at$/.test(key) && typeof value === "string") {
      const when = new Date(value);
      if (!isNaN(when)) return when.toLocaleString();
    }
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  async function loadDeliveries(section) {
    const out = section.querySelector("[data-deliveries-body]");
    let items;
    try {
      const response = await fetch(section.dataset.deliveriesUrl, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error("HTTP " + response.status);
      items = await response.json();
    } catch (error) {
      out.textContent = "Could not load the deliveries (" + error.message + ").";
      return;
    }
    if (!Array.isArray(items)) items = (items && items.items) || [];
    if (!items.length) {
      out.innerHTML = "";
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "No delivery attempts yet.";
      out.append(p);
      return;
    }
    // the known columns first, then whatever else the API returns
    const keys = Object.keys(DELIVERY_COLUMNS).filter((k) => items.some((i) => k in i));
    items.forEach((item) =>
      Object.keys(item).forEach((k) => {
        if (!keys.includes(k) && !DELIVERY_HIDDEN.includes(k)) keys.push(k);
      })
    );
    const table = document.createElement("table");
    table.className = "deliveries";
    const head = table.createTHead().insertRow();
    const labels = keys.map((k) => DELIVERY_COLUMNS[k] || k.replace(/_/g, " "));
    labels.forEach((label) => {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = label;
      head.append(th);
    });
    const body = table.createTBody();
    items.forEach((item) => {
      const row = body.insertRow();
      keys.forEach((k, i) => {
        const cell = row.insertCell();
        cell.dataset.label = labels[i]; // shown beside the value on a phone
        cell.className = "col-" + k.replace(/[^\w-]/g, "");
        const value = document.createElement("span");
        value.textContent = cellText(k, item[k]);
        if (k === "status_code" && item[k] != null) {
          value.className = item[k] >= 200 && item[k] < 300 ? "delivery-ok" : "delivery-bad";
        } else if ((k === "outcome" || k === "status") && item[k] != null) {
          value.className = outcomeClass(item[k]);
        }
        cell.append(value);
      });
    });
    const wrap = document.createElement("div");
    wrap.className = "deliveries-wrap";
    wrap.append(table);
    out.replaceChildren(wrap);
  }

  // -- small helpers ----------------------------------------------------------

  function localTimes(root) {
    within(root, "time[data-local]").forEach((el) => {
      const when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      el.title = el.textContent.trim();
      el.textContent = when.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
    });
  }

  function kindFields(root) {
    within(root, "[data-kind-select]").forEach((select) => {
      const form = select.form;
      const sync = () =>
        form.querySelectorAll(".kind-fields").forEach((group) => {
          group.hidden = group.dataset.kind !== select.value;
        });
      select.addEventListener("change", sync);
      sync();
    });
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const source = document.getElementById(button.dataset.copy);
    try {
      await navigator.clipboard.writeText(source.textContent);
      button.textContent = "Copied";
    } catch (error) {
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      button.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => (button.textContent = "Copy"), 2500);
  });

  function onLoad(root) {
    within(root, "[data-chart]").forEach(drawChart);
    localTimes(root);
    kindFields(root);
    within(root, "#error-summary").forEach((el) => el.focus());
    // on the first load, and once more when the job ends (its events go out then)
    const ended = within(root, "#job-live").some((el) => !el.hasAttribute("hx-get"));
    const section = document.getElementById("deliveries");
    if (section && (root === document.body || ended)) loadDeliveries(section);
  }

  // deliveries are retried for hours: keep the table current while it is watched
  setInterval(() => {
    const section = document.getElementById("deliveries");
    if (section && document.visibilityState === "visible") loadDeliveries(section);
  }, 5000);

  if (window.htmx) {
    htmx.onLoad(onLoad);
  } else {
    document.addEventListener("DOMContentLoaded", () => onLoad(document.body));
  }
})();
