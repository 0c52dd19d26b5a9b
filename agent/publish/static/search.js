// recsync search page: finds calls across days in the day files under search/ (written
// by the agent, agent/publish/search.py), newest day first, a few fetched ahead, each
// day's matches put at their place as soon as its file is in. The query lives in the
// URL, so a search can be bookmarked or sent; opening such a URL runs it. Loaded as a
// file (the Content-Security-Policy allows no inline script); data reaches the page only
// through textContent.
"use strict";
(function () {
  var form = document.getElementById("search");
  var table = document.getElementById("results");
  var found = document.getElementById("found");
  if (!form || !table || !found) {
    return;
  }
  var body = table.tBodies[0];
  var siteField = form.elements.site || null; // a shared root's search page only
  var FIELDS = ["number", "name", "ext", "from", "to", "dir", "disp", "min"]
    .concat(siteField ? ["site"] : []);
  var LIMIT = 500; // rows shown at most: each has a player
  var DISPOSITIONS = {
    "ANSWERED": "answered", "NO ANSWER": "missed", "BUSY": "missed",
    "CONGESTION": "failed", "FAILED": "failed"
  };
  var WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
    "Nov", "Dec"];
  var run = 0; // the newest search: an older one still fetching stops adding rows

  function queryOf(search) {
    var params = new URLSearchParams(search);
    var query = {};
    FIELDS.forEach(function (name) {
      query[name] = (params.get(name) || "").trim();
    });
    return query;
  }

  function fill(query) {
    FIELDS.forEach(function (name) {
      form.elements[name].value = query[name];
    });
  }

  function urlOf(query) {
    var params = new URLSearchParams();
    FIELDS.forEach(function (name) {
      if (query[name]) {
        params.set(name, query[name]);
      }
    });
    var text = params.toString();
    return "search.html" + (text ? "?" + text : "");
  }

  function matcher(query) {
    var digits = query.number.replace(/[^0-9]/g, "");
    var noDigits = query.number !== "" && digits === "";
    var name = query.name.toLowerCase();
    var min = query.min === "" ? -1 : Number(query.min);
    return function (row, kinds) {
      if (noDigits) {
        return false;
      }
      if (digits && row[1].indexOf(digits) === -1 && row[2].indexOf(digits) === -1) {
        return false;
      }
      if (name && row[3].toLowerCase().indexOf(name) === -1) {
        return false;
      }
      // the extension took part: the calling one, or the one called
      if (query.ext && row[4] !== query.ext && row[1] !== query.ext && row[2] !== query.ext) {
        return false;
      }
      if (query.dir && kindOf(row, kinds)[1] !== query.dir) {
        return false;
      }
      if (query.disp && row[6].toUpperCase() !== query.disp) {
        return false;
      }
      return !(min >= 0 && row[7] < min);
    };
  }

  function kindOf(row, kinds) {
    return Object.prototype.hasOwnProperty.call(kinds, row[5]) ? kinds[row[5]]
      : [row[5] || "Unknown", "int"];
  }

  function text(tag, value, className) {
    var element = document.createElement(tag);
    element.textContent = value;
    if (className) {
      element.className = className;
    }
    return element;
  }

  function cell(className) {
    var td = document.createElement("td");
    td.className = className;
    return td;
  }

  function two(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function clock(seconds) {
    var h = Math.floor(seconds / 3600);
    var m = Math.floor(seconds / 60) % 60;
    var s = seconds % 60;
    return h ? h + ":" + two(m) + ":" + two(s) : m + ":" + two(s);
  }

  function hours(seconds) { // as the day pages say it (agent/publish/index.py _hours)
    var h = Math.floor(seconds / 3600);
    var m = Math.floor(seconds / 60) % 60;
    if (h) {
      return h + " h " + two(m) + " min";
    }
    return m ? m + " min" : seconds + " s";
  }

  function dayLabel(day) {
    var parts = day.split("/").map(Number);
    var when = new Date(Date.UTC(parts[0], parts[1] - 1, parts[2]));
    return WEEKDAYS[when.getUTCDay()] + " " + parts[2] + " " + MONTHS[parts[1] - 1] + " " +
      parts[0];
  }

  function rowOf(day, row, kinds, source) {
    var tr = document.createElement("tr");
    tr.tabIndex = -1; // focusable: the player keys (static/player.js) act on its call
    var base = source.base + day;
    var page = base + "/index.html" + (row[9] ? "#" + encodeURIComponent(row[9]) : "");
    var link = text("a", dayLabel(day));
    link.href = page;
    var td = cell("day");
    td.appendChild(link);
    tr.appendChild(td);
    if (siteField) {
      tr.appendChild(text("td", source.name, "site"));
    }
    td = cell("time");
    if (row[0] >= 0) {
      td.textContent = two(Math.floor(row[0] / 3600)) + ":" + two(Math.floor(row[0] / 60) % 60) +
        ":" + two(row[0] % 60);
    }
    tr.appendChild(td);
    var kind = kindOf(row, kinds);
    td = cell("kind");
    td.appendChild(text("span", kind[0], "badge k-" + kind[1]));
    tr.appendChild(td);
    td = cell("caller");
    td.appendChild(text("span", row[3], "name"));
    td.appendChild(document.createTextNode(" "));
    td.appendChild(text("span", row[1] || (row[3] ? "" : "unknown"), "number"));
    tr.appendChild(td);
    td = cell("dst");
    td.appendChild(text("span", row[2], "number"));
    tr.appendChild(td);
    tr.appendChild(text("td", row[7] >= 0 ? clock(row[7]) : "", "dur"));
    td = cell("disp");
    td.appendChild(text("span", row[6], "badge d-" + (DISPOSITIONS[row[6].toUpperCase()] || "none")));
    tr.appendChild(td);
    td = cell("rec");
    var file = base + "/" + row[8]; // row[8] is URL-encoded already
    if (row[10]) {
      var audio = document.createElement("audio");
      audio.controls = true;
      audio.preload = "none";
      audio.src = file;
      td.appendChild(audio);
    } else {
      td.appendChild(text("span", "download only", "noplay"));
    }
    td.appendChild(document.createTextNode(" "));
    var download = text("a", "Download", "dl");
    download.href = file;
    download.setAttribute("download", "");
    td.appendChild(download);
    tr.appendChild(td);
    return tr;
  }

  function getJson(url) {
    return fetch(url, { cache: "no-cache" }).then(function (response) {
      if (!response.ok) {
        throw new Error(url + ": " + response.status);
      }
      return response.json();
    });
  }

  // Where the calls are: this folder's search files, or, on a shared root's search page
  // (destination.layout = "sites"), each site's under its folder (the site field lists
  // them; a site asked narrows the search to it).
  function sourcesOf(query) {
    if (!siteField) {
      return [{ base: "", name: "" }];
    }
    return Array.prototype.filter.call(siteField.options, function (option) {
      return option.value && (!query.site || option.value === query.site);
    }).map(function (option) {
      return { base: encodeURIComponent(option.value) + "/", name: option.textContent };
    });
  }

  var AHEAD = 6; // day files fetched at once

  function search(query) {
    var mine = ++run;
    var matches = matcher(query);
    var from = query.from.replace(/-/g, "/");
    var to = query.to.replace(/-/g, "/");
    var count = 0;
    var seconds = 0; // the matching calls' talk, all of them (not only those shown)
    while (body.firstChild) {
      body.removeChild(body.firstChild);
    }
    table.hidden = true;
    found.textContent = "Searching…";

    function summary(done) {
      var words = count === 1 ? "1 call" : count.toLocaleString("en") + " calls";
      found.textContent = (count > LIMIT ? "The newest " + LIMIT + " of " : "") + words +
        (seconds ? ", " + hours(seconds) + " in all" : "") + (done ? "" : " so far…");
    }

    var days = []; // the days asked, newest first
    var shown = []; // day index -> the rows of its matches in the table, newest first
    var rowsShown = 0;

    // One day of every source: its matching calls, newest first (the sites' merged by
    // the time of day), put in the table at their place as soon as the day is in, even
    // while newer days are still loading; only the newest LIMIT of those found are kept.
    function addDay(i, files) {
      if (mine !== run) {
        return;
      }
      var hits = [];
      files.forEach(function (file) {
        var rows = file.rows;
        for (var r = rows.length - 1; r >= 0; r--) { // newest first
          if (matches(rows[r], file.kinds)) {
            hits.push({ row: rows[r], file: file });
          }
        }
      });
      if (files.length > 1) {
        hits.sort(function (a, b) {
          return b.row[0] - a.row[0];
        });
      }
      var newer = 0; // rows of newer days shown: what is left of LIMIT is this day's
      for (var j = 0; j < i; j++) {
        newer += shown[j] ? shown[j].length : 0;
      }
      var rows = hits.slice(0, Math.max(LIMIT - newer, 0)).map(function (hit) {
        return rowOf(days[i], hit.row, hit.file.kinds, hit.file.source);
      });
      var before = null; // the first row of the next older day shown
      for (j = i + 1; j < days.length && !before; j++) {
        before = shown[j] && shown[j].length ? shown[j][0] : null;
      }
      var fragment = document.createDocumentFragment();
      rows.forEach(function (row) {
        fragment.appendChild(row);
      });
      body.insertBefore(fragment, before);
      shown[i] = rows;
      rowsShown += rows.length;
      for (j = days.length - 1; j > i && rowsShown > LIMIT; j--) { // older rows give way
        while (shown[j] && shown[j].length && rowsShown > LIMIT) {
          body.removeChild(shown[j].pop());
          rowsShown--;
        }
      }
      hits.forEach(function (hit) {
        count++;
        seconds += hit.row[7] > 0 ? hit.row[7] : 0;
      });
      if (count) {
        table.hidden = false;
      }
      summary(false);
    }

    var sources = sourcesOf(query);
    return Promise.all(sources.map(function (source) {
      return getJson(source.base + "search/months.json").then(function (listing) {
        return { source: source, listing: listing };
      });
    })).then(function (listings) {
      // The days asked, newest first, each with the sources that have it.
      var byDay = {};
      listings.forEach(function (item) {
        item.listing.months.forEach(function (month) {
          if ((from && month.last < from) || (to && month.first > to)) {
            return;
          }
          month.days.forEach(function (day) {
            if ((!from || day >= from) && (!to || day <= to)) {
              (byDay[day] = byDay[day] || []).push(item);
            }
          });
        });
      });
      days = Object.keys(byDay).sort().reverse();
      var loads = [];
      var flat = []; // [day index, item], in the order they are needed
      var last = []; // day index -> the index in flat of its last file
      days.forEach(function (day, i) {
        byDay[day].forEach(function (item) {
          flat.push([i, item]);
        });
        last[i] = flat.length - 1;
      });
      var added = []; // day index -> its files in and shown
      var started = 0;
      function startUpTo(n) {
        while (started < Math.min(n, flat.length)) {
          var job = flat[started++];
          var item = job[1];
          loads[started - 1] = getJson(item.source.base + "search/" + days[job[0]] + ".json")
            .then(function (item) {
              return function (file) {
                return { rows: file.rows, kinds: item.listing.kinds || {}, source: item.source };
              };
            }(item));
          if (started - 1 === last[job[0]]) { // the day's files all asked: shown once in
            var i = job[0];
            added[i] = Promise.all(loads.slice(last[i] - byDay[days[i]].length + 1, started))
              .then(addDay.bind(null, i));
            added[i].catch(function () {}); // a failure is the chain's to report
          }
        }
      }
      var next = 0;
      // The days are awaited in order only to keep AHEAD files in flight at most.
      return days.reduce(function (chain, day, i) {
        return chain.then(function () {
          if (mine !== run) {
            return undefined;
          }
          next = last[i] + 1;
          // The newest day is fetched alone: its first calls come sooner without five
          // other files sharing the line; the rest are started once it is in.
          startUpTo(i === 0 ? next : next + AHEAD);
          return added[i].then(function () {
            startUpTo(next + AHEAD);
          });
        });
      }, Promise.resolve());
    }).then(function () {
      if (mine === run) {
        summary(true);
        if (count === 0) {
          found.textContent = "No call matches.";
        }
        table.setAttribute("data-done", "1");
      }
    }, function (error) {
      if (mine === run) {
        found.textContent = "Search failed: " + error.message;
      }
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault(); // the CSP allows no form action: the script searches
    var query = {};
    FIELDS.forEach(function (name) {
      query[name] = String(form.elements[name].value || "").trim();
    });
    history.pushState(null, "", urlOf(query));
    table.removeAttribute("data-done");
    search(query);
  });

  function fromUrl() {
    var query = queryOf(location.search);
    fill(query);
    table.removeAttribute("data-done");
    if (location.search.length > 1) {
      search(query);
    }
  }

  window.addEventListener("popstate", fromUrl);
  fromUrl();
})();
