// wecombot admin panel: the token countdown, confirm dialogs, and the
// Messages page's pending rows kept up to date. Everything works without
// it; it only adds comfort.
(function () {
  "use strict";
  function clock(s) {
    var h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, r = s % 60;
    return h + ":" + (m < 10 ? "0" : "") + m + ":" + (r < 10 ? "0" : "") + r;
  }
  // Count down from the server's figure, not the browser's clock.
  document.querySelectorAll(".countdown[data-seconds]").forEach(function (el) {
    var end = Date.now() + Number(el.dataset.seconds) * 1000;
    function tick() {
      var left = Math.max(0, Math.round((end - Date.now()) / 1000));
      el.textContent = left > 0 ? clock(left) : el.dataset.expired;
      return left > 0;
    }
    if (tick()) {
      var timer = setInterval(function () { if (!tick()) clearInterval(timer); }, 1000);
    }
  });
  // Messages: rows still pending (received, answering, streaming) are asked
  // for again every few seconds (data-rows answers them as rendered) and
  // replaced in place, until none is pending. It stops on any error (the
  // session ended, the server went away): a reload shows the truth.
  var list = document.querySelector("[data-rows]");
  if (list && window.fetch) {
    var every = Number(list.dataset.every) || 2000;
    var poll = function () {
      var ids = [];
      list.querySelectorAll("article.status-pending[data-id]").forEach(function (a) { ids.push(a.dataset.id); });
      if (!ids.length) return;
      var url = list.dataset.rows + "?ids=" + ids.join(",") + "&back=" + encodeURIComponent(location.pathname + location.search);
      fetch(url, { credentials: "same-origin", redirect: "error" }).then(function (r) {
        if (!r.ok) throw new Error("rows: " + r.status);
        return r.text();
      }).then(function (html) {
        var t = document.createElement("template");
        t.innerHTML = html;
        t.content.querySelectorAll("article[id]").forEach(function (a) {
          var old = document.getElementById(a.id);
          if (old) old.replaceWith(a);
        });
        setTimeout(poll, every);
      }).catch(function () {});
    };
    setTimeout(poll, every);
  }
  // Forms with data-confirm ask first (reset conversation, re-send). Forms
  // with data-busy say so on their button while the answer is awaited
  // (the chat page waits for the bot).
  document.addEventListener("submit", function (e) {
    var msg = e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) {
      e.preventDefault();
      return;
    }
    var busy = e.target.getAttribute("data-busy"), button = e.target.querySelector("button[type=submit]");
    if (busy && button) {
      button.disabled = true;
      button.textContent = busy;
    }
  });
})();
