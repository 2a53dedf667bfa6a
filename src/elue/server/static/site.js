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
})();
