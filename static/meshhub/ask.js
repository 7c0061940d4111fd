// The overview's Ask box: a sentence to POST /api/v1/assistant/ (the session's rights), then
// what was understood, who handled it (local intents or which model), the answer, the
// choices when a name fits several things, and the commands it sent, whose status and result
// the live socket updates (app.js watches the new [data-command] rows on "meshhub:rewatch").
(function () {
  "use strict";
  function cell(row, text, name) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : typeof text === "string" ? text : JSON.stringify(text);
    if (name) td.dataset[name] = "";
    row.appendChild(td);
    return td;
  }
  function show(box, status, body) {
    const answer = box.querySelector("[data-ask-answer]");
    answer.hidden = false;
    const refusal = box.querySelector("[data-ask-refusal]");
    const by = box.querySelector("[data-ask-by]");
    const choices = box.querySelector("[data-ask-choices]");
    const table = box.querySelector("[data-ask-commands]");
    const rows = table.querySelector("tbody");
    choices.replaceChildren();
    rows.replaceChildren();
    refusal.hidden = status === 200;
    refusal.textContent = status === 200 ? "" : body.reason || "refused";
    refusal.dataset.askRefusal = status === 200 ? "" : String(status);
    by.textContent = body.handled_by === "llm" ? "model: " + body.provider : "local";
    by.style.display = status !== 200 && !body.handled_by ? "none" : ""; // .pill's display would override `hidden`
    box.querySelector("[data-ask-understood]").textContent = body.understood || "";
    box.querySelector("[data-ask-text]").textContent = body.answer || "";
    (body.choices || []).forEach(function (choice) {
      const item = document.createElement("li");
      item.textContent = (choice.name || "") + (choice.node_id && choice.node_id !== choice.name ? " (" + choice.node_id + ")" : "");
      choices.appendChild(item);
    });
    (body.commands || []).forEach(function (command) {
      const row = document.createElement("tr");
      if (command.id) row.dataset.command = command.id;
      cell(row, command.device);
      cell(row, command.capability);
      cell(row, command.action === "set" ? command.value : command.action);
      cell(row, command.status, "status");
      cell(row, command.reason, "result");
      rows.appendChild(row);
    });
    table.hidden = !(body.commands || []).length;
    document.dispatchEvent(new CustomEvent("meshhub:rewatch"));
  }
  document.addEventListener("DOMContentLoaded", function () {
    const box = document.querySelector("[data-ask]");
    if (!box) return;
    const form = box.querySelector("[data-ask-form]");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      const text = form.elements.text.value.trim();
      if (!text) return;
      form.querySelector("button").disabled = true;
      fetch("/api/v1/assistant/", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": form.elements.csrfmiddlewaretoken.value },
        body: JSON.stringify({ text: text }),
      })
        .then((response) => response.json().then((body) => show(box, response.status, body)))
        .catch((error) => show(box, 0, { reason: "the hub did not answer: " + error }))
        .finally(() => (form.querySelector("button").disabled = false));
    });
  });
})();
