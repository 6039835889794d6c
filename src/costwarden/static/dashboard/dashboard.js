// costwarden dashboard: charts from JSON data blocks, confirmation dialogs. No inline script
// anywhere (the pages' Content-Security-Policy forbids it): behaviour hangs on data-*
// attributes, and is set up again on content htmx swaps in.
(function () {
  "use strict";
  var charts = new WeakMap();

  function drawCharts(root) {
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (charts.has(canvas) || typeof Chart === "undefined") return;
      var block = document.getElementById(canvas.dataset.chart);
      if (!block) return;
      var spec = JSON.parse(block.textContent);
      var chart = new Chart(canvas, {
        type: spec.type || "line",
        data: {
          labels: spec.labels,
          datasets: spec.datasets.map(function (d, i) {
            var colors = ["#1d4ed8", "#b45309", "#047857", "#7c3aed", "#be123c", "#0e7490"];
            return Object.assign({ borderColor: colors[i % colors.length],
              backgroundColor: colors[i % colors.length], tension: 0.2 }, d);
          }),
        },
        options: {
          responsive: true, maintainAspectRatio: false, animation: false,
          plugins: { legend: { display: spec.datasets.length > 1 } },
          scales: { y: { beginAtZero: true, title: { display: !!spec.yTitle, text: spec.yTitle } } },
        },
      });
      charts.set(canvas, chart);
    });
  }

  function wireDialogs(root) {
    root.querySelectorAll("[data-opens]").forEach(function (button) {
      if (button.dataset.wired) return;
      button.dataset.wired = "1";
      button.addEventListener("click", function () {
        var dialog = document.getElementById(button.dataset.opens);
        if (dialog) dialog.showModal();
      });
    });
    root.querySelectorAll("[data-closes]").forEach(function (button) {
      if (button.dataset.wired) return;
      button.dataset.wired = "1";
      button.addEventListener("click", function () {
        var dialog = button.closest("dialog");
        if (dialog) dialog.close();
      });
    });
  }

  function setUp(root) { drawCharts(root); wireDialogs(root); }
  document.addEventListener("DOMContentLoaded", function () { setUp(document); });
  document.addEventListener("htmx:afterSwap", function (e) { setUp(e.target); });
  // Signed out meanwhile (a fragment answered 401): go to sign-in.
  document.addEventListener("htmx:responseError", function (e) {
    if (e.detail.xhr.status === 401) window.location.reload();
  });
})();
