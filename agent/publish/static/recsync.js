// recsync day page: the filter box narrows the calls as you type.
// Loaded as a file (the pages' Content-Security-Policy allows no inline script).
"use strict";
(function () {
  var box = document.getElementById("filter-box");
  var input = document.getElementById("filter");
  var table = document.getElementById("calls");
  if (!box || !input || !table) {
    return;
  }
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  var shown = document.getElementById("shown");
  var noMatch = document.getElementById("no-match");
  var texts = null; // each row's visible text, lower case, read once on first use

  function rowText(row) {
    var parts = [];
    for (var i = 0; i < row.cells.length; i++) {
      if (!row.cells[i].classList.contains("rec")) {
        parts.push(row.cells[i].textContent);
      }
    }
    return parts.join(" ").replace(/\s+/g, " ").toLowerCase();
  }

  function apply() {
    var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    if (texts === null) {
      texts = rows.map(rowText);
    }
    var count = 0;
    for (var i = 0; i < rows.length; i++) {
      var match = words.every(function (word) {
        return texts[i].indexOf(word) !== -1;
      });
      if (rows[i].hidden === match) {
        rows[i].hidden = !match;
      }
      if (match) {
        count++;
      }
    }
    shown.textContent = words.length ? count + " of " + rows.length : "";
    noMatch.hidden = count !== 0;
  }

  box.hidden = false;
  input.addEventListener("input", apply);
  if (input.value) {
    apply(); // the browser kept the text when coming back to the page
  }
})();

// The shared root page of several sites: it is static, written by whichever agent had a
// heartbeat last, so a site that fell silent since then (or every site, when all agents
// stopped) is marked here, by the reader's clock, as the page itself would have.
(function () {
  var table = document.getElementById("sites");
  if (!table) {
    return;
  }
  var silentAfter = Number(table.getAttribute("data-silent-seconds")) * 1000;
  var rows = table.tBodies[0].rows;
  for (var i = 0; i < rows.length; i++) {
    var row = rows[i];
    var seen = row.querySelector("time[datetime]");
    var at = seen ? Date.parse(seen.getAttribute("datetime")) : NaN;
    if (row.classList.contains("silent") || isNaN(at) || Date.now() - at <= silentAfter) {
      continue;
    }
    row.classList.add("silent");
    var badge = document.createElement("span");
    badge.className = "badge d-failed";
    badge.textContent = "silent";
    var name = row.querySelector(".name");
    name.appendChild(document.createTextNode(" "));
    name.appendChild(badge);
  }
})();
