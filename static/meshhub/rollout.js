// The rollout page's live view: every two seconds, the rollout from the API (the page's
// session authenticates it), drawn into the wave bars, the counts and the device rows.
(function () {
  "use strict";
  const root = document.querySelector("[data-rollout-live]");
  if (!root) return;
  const url = root.dataset.rolloutLive;
  const ACTIVE = ["offered", "transferring", "verifying", "installing", "rebooting", "health_check"];
  const BAD = ["failed", "rolled_back", "rejected"];

  function setText(el, text) {
    if (el && el.textContent !== String(text)) el.textContent = text;
  }

  function draw(body) {
    setText(root.querySelector("[data-field=state]"), body.state);
    root.querySelector("[data-field=state]").className = "state-" + body.state;
    setText(root.querySelector("[data-field=wave]"), body.wave + 1);
    const reason = root.querySelector("p[data-field=reason]");
    setText(reason, body.reason);
    reason.className = body.state === "paused" ? "error" : "muted";
    setText(root.querySelector("[data-count=succeeded]"), body.counts.succeeded || 0);
    setText(root.querySelector("[data-count=errors]"), BAD.reduce((n, s) => n + (body.counts[s] || 0), 0));
    const waves = {};
    body.deployments.forEach((d) => {
      const w = (waves[d.wave] = waves[d.wave] || { total: 0, done: 0, active: 0, bad: 0 });
      w.total += 1;
      if (d.state === "succeeded") w.done += 1;
      else if (ACTIVE.includes(d.state)) w.active += 1;
      else if (BAD.includes(d.state)) w.bad += 1;
      const row = root.querySelector('tr[data-node="' + d.node_id + '"]');
      if (row) {
        const pill = row.querySelector("[data-field=state] .pill");
        setText(pill, d.state);
        pill.className = "pill state-" + d.state;
        setText(row.querySelector("[data-field=reason]"), d.reason);
        setText(row.querySelector("[data-field=offset]"), d.offset);
      }
    });
    Object.keys(waves).forEach((wave) => {
      const w = waves[wave];
      const el = root.querySelector('[data-wave="' + wave + '"]');
      if (!el) return;
      ["done", "active", "bad"].forEach((seg) => {
        el.querySelector('[data-seg="' + seg + '"]').style.width = ((100 * w[seg]) / w.total).toFixed(1) + "%";
      });
      const bar = el.querySelector(".bar");
      bar.setAttribute("aria-valuenow", String(w.done));
      bar.dataset.done = String(w.done);
      setText(el.querySelector("[data-wave-summary]"), w.done + " of " + w.total + " succeeded" + (w.active ? ", " + w.active + " in flight" : "") + (w.bad ? ", " + w.bad + " failed" : ""));
    });
    root.dataset.state = body.state;
    root.dataset.refreshed = String(Date.now());
  }

  async function refresh() {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) draw(await response.json());
    } catch (error) {
      // the next tick tries again
    }
  }

  refresh();
  setInterval(refresh, 2000);
})();
