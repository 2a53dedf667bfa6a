// What the pages once did in inline scripts and handlers: the Content-Security-Policy runs scripts from this
// site's own files only (see app.SecurityHeaders).
(function () {
  // <form data-confirm="Delete this submission?">: ask first
  document.addEventListener("submit", function (ev) {
    const msg = ev.target.getAttribute && ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });
  // <a data-back href="/">: back where the visitor came from (the link's address without history)
  document.addEventListener("click", function (ev) {
    const a = ev.target.closest && ev.target.closest("a[data-back]");
    if (a && window.history.length > 1) {
      ev.preventDefault();
      window.history.back();
    }
  });
  // <span data-replace-url="/account">: the address bar shows that page, so a reload is a GET, not a re-post
  const here = document.querySelector("[data-replace-url]");
  if (here) window.history.replaceState(null, "", here.getAttribute("data-replace-url"));
  // <p data-poll="queued">: a submission being scored. The page is fetched every 2 s and its log updated in
  // place; it reloads only when scoring ends or the no-worker notice comes or goes (a reload every 2 s sent a keyboard
  // user's focus back to the top and had a screen reader start reading the page again)
  const poll = document.querySelector("[data-poll]");
  if (poll) {
    const stalled = () => document.getElementById("stalled") !== null;
    const tick = function () {
      fetch(window.location.href, { cache: "no-store", credentials: "same-origin" })
        .then((r) => (r.status < 500 ? r.text() : Promise.reject(r.status)))  // a 404 or a log-in page: reload to it
        .then(function (html) {
          const doc = new DOMParser().parseFromString(html, "text/html");
          const next = doc.querySelector("[data-poll]");
          if (!next || (doc.getElementById("stalled") !== null) !== stalled()) {
            window.location.reload();  // scoring ended (the page now has results and a form), or a notice came or went
            return;
          }
          const now = next.getAttribute("data-poll");
          if (now !== poll.getAttribute("data-poll")) {  // queued -> running: said in place, announced (aria-live)
            poll.setAttribute("data-poll", now);
            const status = document.getElementById("status");
            if (status) { status.textContent = now; status.className = "status " + now; }
            poll.textContent = "Now " + now + ". " + next.textContent;
          }
          const log = document.getElementById("log"), nextLog = doc.getElementById("log");
          if (log && nextLog && log.textContent !== nextLog.textContent) log.textContent = nextLog.textContent;
          window.setTimeout(tick, 2000);
        })
        .catch(function () { window.setTimeout(tick, 2000); });
    };
    window.setTimeout(tick, 2000);
  }
})();
