// The console's only script (the Content-Security-Policy allows no other): live refresh of the
// parts marked data-live, a confirmation before cancelling a run, and focus on a form's error.
"use strict";

(function () {
  var REFRESH_MS = 2000;

  function refresh(element) {
    var url = element.getAttribute("data-live");
    if (!url) { return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        // The server renders the fragment with autoescaping; the same template as the first load.
        var focused = document.activeElement && element.contains(document.activeElement);
        if (!focused) { element.innerHTML = html; }
        var finished = element.querySelector("[data-finished]") || (element.id === "run" && !element.querySelector("form.cancel"));
        if (finished && element.id === "run") { element.removeAttribute("data-live"); return; }
        window.setTimeout(function () { refresh(element); }, REFRESH_MS);
      })
      .catch(function () { window.setTimeout(function () { refresh(element); }, REFRESH_MS * 3); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(function (element) {
      window.setTimeout(function () { refresh(element); }, REFRESH_MS);
    });
    document.addEventListener("submit", function (event) {
      var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
      if (message && !window.confirm(message)) { event.preventDefault(); }
    });
    var problem = document.querySelector("[aria-invalid=true]") || document.getElementById("form-error");
    var result = document.getElementById("result");
    if (problem) { problem.focus(); } else if (result) { result.focus(); }
  });
})();
