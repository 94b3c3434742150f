// Generic inference: the view picker of the model page's forms (each view's options shown with it)
// and the regression charts of a result page (Plotly, served by the app from the plotly package).
(function () {
  "use strict";

  function syncView(form) {
    const select = form.querySelector(".view-select");
    if (!select) return;
    form.querySelectorAll("fieldset.view-config").forEach(function (fs) {
      const on = fs.getAttribute("data-view") === select.value;
      fs.hidden = !on;
      fs.disabled = !on;   // a hidden view's fields are not sent
    });
  }

  document.querySelectorAll(".generic-inference form").forEach(function (form) {
    const select = form.querySelector(".view-select");
    if (select) select.addEventListener("change", function () { syncView(form); });
    syncView(form);
  });

  const data = document.getElementById("regression-data");
  if (data && window.Plotly) {
    const r = JSON.parse(data.textContent);
    const lo = r.range[0], hi = r.range[1];
    const traces = r.scatter.map(function (s) {
      return {x: s.true, y: s.predicted, mode: "markers", type: "scatter", name: s.name, marker: {size: 5, opacity: 0.7}};
    });
    traces.push({x: [lo, hi], y: [lo, hi], mode: "lines", name: "predicted = true", line: {dash: "dot", color: "#888"}});
    const layout = {margin: {t: 30, r: 10, b: 45, l: 55}, xaxis: {title: {text: "true"}}, yaxis: {title: {text: "predicted"}},
                    title: {text: "Predicted vs true", font: {size: 14}}, legend: {orientation: "h"}};
    Plotly.newPlot("regression-scatter", traces, layout, {displaylogo: false, responsive: true});
    const h = r.histogram;
    const centres = h.counts.map(function (_, i) { return (h.edges[i] + h.edges[i + 1]) / 2; });
    Plotly.newPlot("regression-errors", [{x: centres, y: h.counts, type: "bar", name: "items", marker: {color: "#6d8fb8"}}],
                   {margin: {t: 30, r: 10, b: 45, l: 55}, xaxis: {title: {text: "predicted − true"}},
                    yaxis: {title: {text: "values"}}, title: {text: "Error histogram", font: {size: 14}}, bargap: 0.05},
                   {displaylogo: false, responsive: true});
    document.getElementById("regression-charts").setAttribute("data-drawn", "1");
  }
})();
