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

// Live updates over /ws/live/: presence, values and command results of what the page shows,
// the rows of devices that enroll while a device list is open, and the runs of the rules shown.
// Reconnects with backoff and asks for a snapshot of the shown devices each time, so a page
// that lost its connection catches up without a reload. Every batch is also announced as a
// "meshhub:live" event on document ({events, snapshot}) for page scripts such as chart.js.
(function () {
  "use strict";
  const path = document.body && document.body.dataset.live;
  if (!path || !window.WebSocket) return;
  let delay = 500;
  function shownNodes() {
    return Array.from(new Set(Array.from(document.querySelectorAll("[data-node]")).map((el) => el.dataset.node)));
  }
  // A denied attempt: a new first row of the overview's list (at most 8 kept) and the count.
  function showAlert(event) {
    const list = document.querySelector('[data-alerts="' + CSS.escape(event.kind) + '"]');
    if (!list || list.querySelector('[data-seq="' + event.seq + '"]')) return;
    const row = document.createElement("tr");
    row.dataset.seq = event.seq;
    const when = document.createElement("time");
    when.setAttribute("datetime", event.ts);
    [when, event.who, event.action, event.reason].forEach(function (value) {
      const cell = document.createElement("td");
      if (typeof value === "string") cell.textContent = value.length > 100 ? value.slice(0, 99) + "…" : value;
      else cell.appendChild(value);
      row.appendChild(cell);
    });
    list.prepend(row);
    window.meshhub.localize(row);
    while (list.children.length > 8) list.lastElementChild.remove();
    list.closest("table").hidden = false;
    const empty = document.querySelector("[data-alerts-empty]");
    if (empty) empty.remove();
    const count = document.querySelector("[data-denied-count]");
    if (count) {
      count.textContent = String(Number(count.textContent) + 1);
      count.closest("[data-denied-stat]").classList.add("bad");
    }
  }
  // A device that enrolled while /devices/ is open (devices/views.py device_list decides how
  // the list takes it): an unfiltered list adds its row, with the cells the template renders,
  // where node id order puts it on the shown page; a filtered list, or a device that sorts
  // onto another page, counts it in a notice with a reload link. A known row is refreshed.
  const listed = new Set();
  function deviceRow(event) {
    const row = document.createElement("tr");
    row.dataset.node = event.node_id;
    row.className = "added";
    const link = document.createElement("a");
    link.href = event.url;
    link.textContent = event.node_id;
    const presence = document.createElement("span");
    presence.className = "dot " + (event.online ? "on" : "off");
    presence.dataset.presence = "";
    presence.textContent = event.online ? "online" : "offline";
    let seen;
    if (event.last_seen) {
      seen = document.createElement("time");
      seen.setAttribute("datetime", event.last_seen);
    } else {
      seen = document.createElement("span");
      seen.className = "muted";
      seen.textContent = "never";
    }
    [link, event.name, event.device_type, event.status, presence, seen, event.firmware_version].forEach(function (value) {
      const cell = document.createElement("td");
      if (typeof value === "string") cell.textContent = value;
      else cell.appendChild(value);
      row.appendChild(cell);
    });
    window.meshhub.localize(row);
    return row;
  }
  function addDevice(event) {
    const table = document.querySelector("table[data-device-list]");
    if (!table) return;
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    const known = rows.find((row) => row.dataset.node === event.node_id);
    if (known) {
      known.replaceWith(deviceRow(event)); // re-enrolled: its status changed
      return;
    }
    // Node ids are lowercase letters, digits and hyphens: code-unit order is the list's order.
    const first = rows[0];
    const last = rows[rows.length - 1];
    const fits =
      table.dataset.deviceList === "insert" &&
      (!("before" in table.dataset) || (first && event.node_id > first.dataset.node)) &&
      (!("after" in table.dataset) || (last && event.node_id < last.dataset.node));
    if (!fits) {
      const notice = document.querySelector("[data-new-devices]");
      if (!notice || listed.has(event.node_id)) return;
      listed.add(event.node_id);
      notice.querySelector("[data-new-devices-count]").textContent = listed.size + (listed.size === 1 ? " device" : " devices");
      notice.hidden = false;
      return;
    }
    body.insertBefore(deviceRow(event), rows.find((row) => row.dataset.node > event.node_id) || null);
    table.hidden = false;
    document.querySelectorAll("[data-devices-empty]").forEach((el) => el.remove());
  }
  // A device value as the protocol spells it (true, 21.5, auto): the same text as the
  // templates' `wire` filter (hub/templatetags/meshhub.py) renders on a reload.
  function pill(outcome) {
    const span = document.createElement("span");
    span.className = "pill state-" + outcome;
    span.textContent = outcome;
    return span;
  }
  function timeOf(iso) {
    const el = document.createElement("time");
    el.dateTime = iso;
    el.title = iso;
    el.textContent = iso;
    const holder = document.createElement("span");
    holder.appendChild(el);
    if (window.meshhub) window.meshhub.localize(holder); // the same local time as the server-rendered ones
    return el;
  }
  // A rule's run started, waited, finished or was cancelled: the rules list's row (last
  // fired, last outcome) and the rule page's runs (the row updated, or a new first row).
  function ruleRun(event) {
    document.querySelectorAll('[data-rule="' + event.rule_id + '"]').forEach(function (row) {
      row.querySelectorAll("[data-last-fired]").forEach((el) => el.replaceChildren(timeOf(event.started_at)));
      row.querySelectorAll("[data-last-outcome]").forEach((el) => el.replaceChildren(pill(event.outcome)));
    });
    document.querySelectorAll('[data-runs-of="' + event.rule_id + '"]').forEach(function (body) {
      let row = body.querySelector('[data-run="' + event.run_id + '"]');
      if (!row) {
        row = document.createElement("tr");
        row.dataset.run = event.run_id;
        ["started", "trigger", "outcome", "reason", "actions"].forEach(function (name) {
          const cell = document.createElement("td");
          cell.dataset[name] = "";
          row.appendChild(cell);
        });
        row.children[0].appendChild(timeOf(event.started_at));
        row.children[1].textContent = event.trigger;
        body.prepend(row);
        body.closest("table").hidden = false;
        const none = body.closest("[data-runs]").querySelector("[data-no-runs]");
        if (none) none.hidden = true;
      }
      row.querySelector("[data-outcome]").replaceChildren(pill(event.outcome));
      row.querySelector("[data-reason]").textContent = event.reason;
      row.querySelector("[data-actions]").textContent = event.actions;
    });
  }
  function shown(value, absent) {
    if (value === null || value === undefined) return absent;
    return typeof value === "string" ? value : JSON.stringify(value);
  }
  function apply(event) {
    const scopes = document.querySelectorAll('[data-node="' + CSS.escape(event.node_id || "") + '"]');
    if (event.type === "presence") {
      scopes.forEach(function (scope) {
        scope.querySelectorAll("[data-presence]").forEach(function (el) {
          if (el.closest("[data-node]") !== scope) return;
          el.classList.toggle("on", event.online);
          el.classList.toggle("off", !event.online);
          el.textContent = event.online ? "online" : "offline";
        });
      });
    } else if (event.type === "state") {
      scopes.forEach(function (scope) {
        scope.querySelectorAll('[data-capability="' + CSS.escape(event.capability) + '"] [data-value]').forEach(function (el) {
          el.textContent = shown(event.value, "—");
        });
      });
    } else if (event.type === "alert") {
      showAlert(event);
    } else if (event.type === "enrolled") {
      scopes.forEach(function (scope) {
        scope.querySelectorAll("[data-enrollment]").forEach(function (el) {
          el.dataset.enrollment = "enrolled";
          el.textContent = "enrolled: waiting for its first connection";
        });
      });
    } else if (event.type === "device") {
      addDevice(event);
    } else if (event.type === "rule_run") {
      ruleRun(event);
    } else if (event.type === "command") {
      document.querySelectorAll('[data-command="' + CSS.escape(event.id) + '"]').forEach(function (row) {
        row.querySelectorAll("[data-status]").forEach((el) => (el.textContent = event.status));
        const result = event.result || {};
        const text = [shown(result.value, ""), result.reason || ""].filter(Boolean).join(" ");
        row.querySelectorAll("[data-result]").forEach((el) => (el.textContent = text));
      });
    }
  }
  let current = null;
  function watch(socket) {
    const commands = Array.from(document.querySelectorAll("[data-command]")).map((el) => el.dataset.command);
    const enrolling = Array.from(document.querySelectorAll("[data-enrollment]")).map((el) => el.closest("[data-node]").dataset.node);
    const list = document.querySelector("table[data-device-list]");
    const since = list ? list.dataset.since : undefined; // a device list: rows of devices enrolled since it was rendered
    const rules = Array.from(document.querySelectorAll("[data-rule], [data-runs-of]")).map((el) => Number(el.dataset.rule || el.dataset.runsOf));
    const runsShown = document.querySelector("[data-runs-since]"); // a rules page: runs of its rules since it was rendered
    const runsSince = runsShown ? runsShown.dataset.runsSince : undefined;
    socket.send(JSON.stringify({ type: "watch", nodes: shownNodes(), commands: commands, enrolling: enrolling, rules: rules, devices_since: since, runs_since: runsSince }));
  }
  // A page script added rows to follow (the Ask box's commands): watch again.
  document.addEventListener("meshhub:rewatch", function () {
    if (current && current.readyState === WebSocket.OPEN) watch(current);
  });
  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + path);
    current = socket;
    socket.onopen = function () {
      delay = 500;
      document.body.dataset.liveState = "open";
      watch(socket);
    };
    socket.onmessage = function (message) {
      const data = JSON.parse(message.data);
      if (data.type !== "events") return;
      data.events.forEach(apply);
      // The server marks the answer to "watch": it repeats known values, it is not new reports.
      document.dispatchEvent(new CustomEvent("meshhub:live", { detail: { events: data.events, snapshot: data.snapshot === true } }));
    };
    socket.onclose = function (event) {
      document.body.dataset.liveState = "closed";
      if (event.code === 4403) return; // signed out or no longer allowed: stay closed
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    };
  }
  document.addEventListener("DOMContentLoaded", connect);
})();
