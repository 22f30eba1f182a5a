// wecombot admin panel, chat page: sends the form without leaving the page
// and polls the page's JSON while an exchange runs, replacing the log with
// the server's rendering, so an AI bot's stream grows in place. Without it
// the form still works: the post waits for the answer and reloads.
(function () {
  "use strict";
  var log = document.getElementById("chat-log"), form = document.getElementById("chat-form");
  if (!log || !form || !window.fetch) return;
  var send = document.getElementById("chat-send"), label = send.textContent, text = document.getElementById("chat-text");
  var timer = null, busy = false, polling = false, shown = null;

  // The log is replaced only when it changed, so that what the reader has
  // selected or scrolled to stays put between refreshes.
  function show(state) {
    if (state && typeof state.html === "string" && state.html !== shown) {
      log.innerHTML = state.html;
      shown = state.html;
    }
  }
  function poll() {
    if (polling) return;
    polling = true;
    fetch(log.dataset.poll, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        show(s);
        if (s && !s.pending && !busy) stop();
      })
      .catch(function () {})
      .then(function () { polling = false; });
  }
  function start() { if (!timer) timer = setInterval(poll, 400); }
  function stop() { clearInterval(timer); timer = null; }
  function alertBox(msg) {
    var box = form.parentNode.querySelector(".alert");
    if (!msg) { if (box) box.remove(); return; }
    if (!box) {
      box = document.createElement("p");
      box.className = "alert";
      box.setAttribute("role", "alert");
      form.parentNode.insertBefore(box, form);
    }
    box.textContent = msg;
  }

  form.addEventListener("submit", function (e) {
    if (e.defaultPrevented) return;
    e.preventDefault();
    var data = new FormData(form, e.submitter);
    var file = form.querySelector("#chat-image");
    // With an image the form goes as multipart; otherwise as the plain
    // form it would be without the script.
    var body = file && file.files.length ? data : new URLSearchParams(data);
    busy = true;
    alertBox("");
    start();
    // Not form.action: the form has a control named "action".
    fetch(form.getAttribute("action"), { method: "POST", body: body, credentials: "same-origin",
      headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().then(function (s) {
          if (!r.ok) throw new Error(s && s.error || r.statusText);
          show(s);
          // Only a sent text is cleared; opening the chat and the
          // receptionist's buttons keep it.
          if (!(e.submitter && e.submitter.value)) text.value = "";
          if (file) { file.value = ""; text.required = true; }
          // A reload keeps the bot, the user and the chat just used.
          var q = new URLSearchParams();
          ["bot", "user", "chat"].forEach(function (k) { if (body.get(k)) q.set(k, body.get(k)); });
          history.replaceState(null, "", location.pathname + "?" + q);
        });
      })
      .catch(function (err) { alertBox(err.message); })
      .then(function () {
        busy = false;
        send.disabled = false;
        send.textContent = label;
        poll();
        text.focus();
      });
  });
  // The receptionist's buttons show while a 微信客服 account is chosen.
  var bot = document.getElementById("chat-bot"), kf = document.getElementById("chat-kf");
  if (bot && kf) {
    bot.addEventListener("change", function () { kf.hidden = bot.value.indexOf("kf:") !== 0; });
  }
  // An image may go without text.
  var picker = form.querySelector("#chat-image");
  if (picker) picker.addEventListener("change", function () { text.required = !picker.files.length; });
  if (log.hasAttribute("data-pending")) start();
})();
