// Keyboard shortcuts and in-place actions for the review queue. Without JavaScript the forms
// still work (post, then back to the queue); with it an action updates the item and moves on.
(function () {
  "use strict";
  var items = [];
  var current = -1;

  function focusItem(index) {
    if (!items.length) return;
    index = Math.max(0, Math.min(items.length - 1, index));
    if (current >= 0 && items[current]) items[current].classList.remove("current");
    current = index;
    items[current].classList.add("current");
    items[current].scrollIntoView({ block: "nearest" });
  }

  function inItem(selector) {
    return current >= 0 ? items[current].querySelector(selector) : null;
  }

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA";
  }

  function submit(form, action) {
    var body = new URLSearchParams(new FormData(form));
    body.set("action", action);
    var item = form.closest(".item");
    var outcome = form.querySelector(".outcome");
    // getAttribute: `form.action` would be the button named "action"
    return fetch(form.getAttribute("action"), {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-Requested-With": "fetch" },
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) throw new Error(data.error || response.statusText);
        return data;
      });
    }).then(function (data) {
      var r = data.request;
      item.classList.add("done", "reviewed");
      item.querySelector(".meta .status").textContent = r.status.replace("_", " ");
      outcome.textContent = (action === "confirm" ? "dikonfirmasi: " : "disimpan: ") +
        (r.corrected_agency || r.agency.label) + " / " + (r.corrected_category || r.category.label);
      item.dataset.done = "1";
      if (items.indexOf(item) === current) focusItem(current + 1);
    }).catch(function (error) {
      outcome.textContent = "gagal: " + error.message;
      outcome.classList.add("error");
    });
  }

  function explain(button) {
    var target = button.parentElement.querySelector(".loo");
    target.textContent = "menghitung…";
    fetch(button.dataset.url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        return response.json().then(function (data) {
          if (!response.ok) throw new Error(data.error || response.statusText);  // 429: wait
          return data;
        });
      })
      .then(function (data) {
        target.textContent = "";
        (data.terms || []).forEach(function (t) {
          var span = document.createElement("span");
          span.className = "term";
          span.textContent = t.term + " −" + Math.round(t.weight * 100) + "%";
          target.appendChild(span);
        });
        if (!(data.terms || []).length) target.textContent = "tidak ada kata yang menonjol";
      })
      .catch(function (error) { target.textContent = "gagal: " + error.message; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    items = Array.prototype.slice.call(document.querySelectorAll(".item"));
    document.querySelectorAll("form.act").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var action = event.submitter ? event.submitter.value : "save";
        focusItem(items.indexOf(form.closest(".item")));
        submit(form, action);
      });
    });
    document.querySelectorAll("button.explain").forEach(function (button) {
      button.addEventListener("click", function () { explain(button); });
    });
    items.forEach(function (item, index) {
      item.addEventListener("click", function () { if (current !== index) focusItem(index); });
    });
    if (items.length) focusItem(0);
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Escape") { if (document.activeElement) document.activeElement.blur(); return; }
    if (typing(event.target)) return;
    var element = null;
    switch (event.key) {
      case "j": focusItem(current + 1); break;
      case "k": focusItem(current - 1); break;
      case "c": element = inItem("button.confirm"); if (element) element.click(); break;
      case "s": element = inItem("button.save"); if (element) element.click(); break;
      case "w": element = inItem("button.explain"); if (element) element.click(); break;
      case "a": element = inItem("select.agency"); if (element) element.focus(); break;
      case "g": element = inItem("select.category"); if (element) element.focus(); break;
      case "x": element = inItem("select.status-select"); if (element) element.focus(); break;
      case "n": element = inItem("input.note"); if (element) element.focus(); break;
      case "/": element = document.querySelector("#filters select, #filters input"); if (element) element.focus(); break;
      default: return;
    }
    event.preventDefault();
  });
})();
