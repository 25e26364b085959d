// Auto-refresh for the dashboard: every data-refresh seconds (on <body>), while the page is
// visible and not paused, fetch the page again and swap in its #live part. Focus stays on the
// same link when it is still there; a session that ended sends the browser to the sign-in page.
(function () {
  "use strict";
  var seconds = Number(document.body.getAttribute("data-refresh")) || 0;
  var live = document.getElementById("live");
  if (!seconds || !live || !window.fetch || !window.DOMParser) return;
  var status = document.getElementById("refresh-status");
  var toggle = document.getElementById("refresh-toggle");
  var paused = false;
  function say(text) { if (status) status.textContent = text; }
  if (toggle) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.setAttribute("aria-pressed", paused ? "true" : "false");
      toggle.textContent = paused ? "Resume updates" : "Pause updates";
      say(paused ? "Updates paused." : "Updates every " + seconds + " seconds while this page is open.");
    });
  }
  function focusKey() {
    var el = document.activeElement;
    if (!el || !live.contains(el)) return null;
    if (el.id) return { id: el.id };
    var href = el.getAttribute("href");
    return href ? { href: href } : null;
  }
  function refocus(key) {
    if (!key) return;
    var el = key.id ? document.getElementById(key.id)
      : live.querySelector('[href="' + key.href.replace(/["\\]/g, "\\$&") + '"]');
    if (el) el.focus({ preventScroll: true });
  }
  function tick() {
    if (paused || document.hidden) return;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store", headers: { "X-Dropzone-UI": "refresh" } })
      .then(function (r) {
        if (r.redirected && new URL(r.url).pathname === "/ui/login") { window.location.assign(r.url); return null; }
        if (!r.ok) { say("Update failed (HTTP " + r.status + "); retrying."); return null; }
        return r.text();
      })
      .then(function (text) {
        if (text === null || text === undefined) return;
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
        if (!fresh) return;
        if (fresh.innerHTML !== live.innerHTML) {
          var key = focusKey();
          live.innerHTML = fresh.innerHTML;
          refocus(key);
        }
        say("Updated " + new Date().toLocaleTimeString() + "; updates every " + seconds + " seconds.");
      })
      .catch(function () { say("Update failed (no answer); retrying."); });
  }
  window.setInterval(tick, seconds * 1000);
})();
