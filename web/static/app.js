// wecombot admin panel: the token countdown and confirm dialogs. Everything
// works without it; it only adds comfort.
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
