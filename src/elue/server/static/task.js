// Task page chart: each model a series (performance vs MFLOPs or params), the baseline curve as a
// thick line, the Pareto front of all points as a dashed step line. Plotly is served by this site.
(function () {
  const view = JSON.parse(document.getElementById("task-data").textContent);
  document.getElementById("chart-area").hidden = false;  // hidden for visitors without JavaScript
  const state = { x: "mflops", scale: "linear" };
  const xOf = (s, p) => (state.x === "mflops" ? p.mflops : s.params_m);
  const xTitle = () => (state.x === "mflops" ? "MFLOPs per example" : "Parameters (millions)");
  // Plotly renders names and hover text as pseudo-HTML (<a href>, <b>, ...): user-given text must be
  // escaped so that a model called '<a href="...">' shows as text, not as a live link.
  const fixed = (v, digits) => (v == null ? "—" : v.toFixed(digits));
  const esc = (t) => String(t == null ? "" : t).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

  function pareto(points) {
    const sorted = points.slice().sort((a, b) => a.x - b.x || b.y - a.y);
    const front = [];
    let best = -Infinity;
    for (const p of sorted) if (p.y > best) { front.push(p); best = p.y; }
    return front;
  }

  function traces() {
    const out = [];
    const all = [];
    for (const s of view.series) {
      const pts = s.points.filter((p) => xOf(s, p) != null);
      if (!pts.length) continue;
      const xs = pts.map((p) => xOf(s, p));
      pts.forEach((p, i) => all.push({ x: xs[i], y: p.performance, name: esc(s.name) }));
      out.push({
        type: "scatter", mode: "lines+markers", name: esc(s.name) + (s.origin === "reported" ? " (reported)" : ""),
        x: xs, y: pts.map((p) => p.performance),
        line: s.is_baseline ? { width: 4, color: "#222" } : { width: 1.5 },
        marker: { size: s.is_baseline ? 8 : 7 },
        // params and score as text: Plotly formats a missing number (no baseline on this dataset: no score) as 0;
        // params as the site's pages write them (params_text: 0.0054M, not 0.0M)
        customdata: pts.map((p) => [esc(s.name), esc(p.file), p.mflops, s.params_text, fixed(s.score, 2)]),
        hovertemplate: "<b>%{customdata[0]}</b><br>%{customdata[1]}<br>MFLOPs %{customdata[2]:,.4~g}" +
          "<br>performance %{y:.2f}<br>params %{customdata[3]}<br>ELUE score %{customdata[4]}<extra></extra>",
        meta: { role: s.is_baseline ? "baseline" : "model", id: s.id },
      });
    }
    if (view.baseline && state.x === "mflops" && !view.series.some((s) => s.is_baseline)) {
      const b = view.baseline.points;
      out.push({ type: "scatter", mode: "lines", name: "Baseline: " + esc(view.baseline.name),
        x: b.map((p) => p[0]), y: b.map((p) => p[1]), line: { width: 4, color: "#222" },
        meta: { role: "baseline" } });
    }
    const front = pareto(all);
    if (front.length) {
      out.push({
        type: "scatter", mode: "lines+markers", name: "Pareto front",
        x: front.map((p) => p.x), y: front.map((p) => p.y), line: { dash: "dash", shape: "hv", color: "#d62728" },
        marker: { symbol: "circle-open", size: 14, color: "#d62728", line: { width: 2 } },
        customdata: front.map((p) => p.name),
        // x as the models' hover writes it (".1f" read a 0.0481 MFLOPs point as "x 0.0")
        hovertemplate: "Pareto front: %{customdata}<br>" + (state.x === "mflops" ? "MFLOPs %{x:,.4~g}" : "params %{x:,.4~g}M") +
          "<br>performance %{y:.2f}<extra></extra>",
        meta: { role: "pareto" },
      });
    }
    return out;
  }

  function layout(empty) {
    const narrow = window.innerWidth < 640;  // a phone: the legend goes under the plot, not beside it
    return {
      margin: { t: 20, r: 10, b: 50, l: 60 },
      xaxis: { title: { text: xTitle() }, type: state.scale, visible: !empty },
      yaxis: { title: { text: "Performance" }, visible: !empty },
      // Plotly's colours without its red, the Pareto front's: a model drawn in it looked like part of the front
      colorway: ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"],
      hovermode: "closest",
      legend: narrow ? { orientation: "h", y: -0.25 } : { orientation: "v" },
      annotations: empty ? [{ text: "No points on this dataset yet", showarrow: false, xref: "paper",
        yref: "paper", x: 0.5, y: 0.5, font: { size: 16, color: "#667" } }] : [],
    };
  }

  function draw() {
    const data = traces();
    // showSendToCloud: Plotly's "Share chart" button would upload the chart to plotly.com
    Plotly.react("chart", data, layout(!data.length), { responsive: true, displaylogo: false, showSendToCloud: false });
    const mark = (b, on) => { b.classList.toggle("on", on); b.setAttribute("aria-pressed", String(on)); };
    document.querySelectorAll("[data-x]").forEach((b) => mark(b, b.dataset.x === state.x));
    document.querySelectorAll("[data-scale]").forEach((b) => mark(b, b.dataset.scale === state.scale));
    document.getElementById("chart").dataset.x = state.x;
    document.getElementById("chart").dataset.scale = state.scale;
  }

  document.querySelectorAll("[data-x]").forEach((b) => b.addEventListener("click", () => { state.x = b.dataset.x; draw(); }));
  document.querySelectorAll("[data-scale]").forEach((b) => b.addEventListener("click", () => { state.scale = b.dataset.scale; draw(); }));
  draw();
})();
