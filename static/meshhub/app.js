// meshhub operator pages: local times with relative hints, and confirmation of dangerous forms.
(function () {
  "use strict";
  const units = [["year", 31536000], ["month", 2592000], ["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  function relative(date) {
    const diff = (date.getTime() - Date.now()) / 1000;
    for (const [unit, seconds] of units) {
      if (Math.abs(diff) >= seconds || unit === "second") return rtf.format(Math.round(diff / seconds), unit);
    }
    return "";
  }
  function localize(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      const date = new Date(el.getAttribute("datetime"));
      if (isNaN(date)) return;
      el.textContent = fmt.format(date) + " (" + relative(date) + ")";
      el.title = date.toISOString();
    });
  }
  window.meshhub = { localize: localize };
  document.addEventListener("DOMContentLoaded", function () {
    localize(document);
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
  });
})();
