// moodle-offload dashboard: progressive enhancement only. Every page reads fine without it.
// - forms with data-confirm ask before they submit;
// - elements with data-refresh="URL" (a fragment URL of the same site) are replaced by
//   what that URL answers every data-every seconds (default 5), without reloading the page,
//   until what it answers holds an element marked data-final (a finished job); a fragment
//   redirected to /login means the session ended: the page goes there.
(function () {
  "use strict";
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      ev.preventDefault();
    }
  });
  function refresh(el) {
    var url = el.getAttribute("data-refresh");
    var every = parseFloat(el.getAttribute("data-every") || "5") * 1000;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) {
          // signed out meanwhile: the fragment was redirected to the sign-in page, go there
          if (r.redirected) { window.location.assign(r.url); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html !== null) {
            el.innerHTML = html;
            el.setAttribute("data-refreshed", String(Date.now()));
          }
        })
        .catch(function () { /* keep the last view; try again next tick */ })
        .finally(function () {
          if (el.querySelector("[data-final]")) {
            el.removeAttribute("data-refresh");
          } else {
            window.setTimeout(tick, every);
          }
        });
    }
    window.setTimeout(tick, every);
  }
  document.querySelectorAll("[data-refresh]").forEach(refresh);
})();
