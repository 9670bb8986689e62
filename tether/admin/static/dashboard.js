// The live page: reads the operators' API of this origin every few seconds and
// writes what it reads with textContent (the chart is SVG drawn by the server).
"use strict";

(function () {
  const base = document.body.dataset.base || "";
  const STORAGE = "tether.operatorKey";
  const EVERY_MS = 5000;
  const TIMEOUT_MS = 10000;
  // What a header can carry: printable ASCII on one line. Anything else makes fetch
  // throw, for this refresh and every one after it.
  const KEY_LONGEST = 8192;
  const KEY_SHAPE = new RegExp(`^[\\x20-\\x7e]{1,${KEY_LONGEST}}$`);
  // Why a key is refused: one that is only too long is told so, not that it is no
  // printable ASCII.
  function notAKey(given) {
    return given.length > KEY_LONGEST
      ? `that is not a key: a key or token is at most ${KEY_LONGEST.toLocaleString("en")}` +
          ` characters, and this is ${given.length.toLocaleString("en")}`
      : "that is not a key: a key or token is printable ASCII, on one line";
  }
  let timer = null;
  // Bumped at every sign-in and sign-out: what a refresh begun before brings is dropped.
  let generation = 0;
  let inFlight = null; // the generation of the refresh under way
  let shownAt = null; // when what the board shows was read

  const $ = (selector) => document.querySelector(selector);
  const metric = (name) => document.querySelector(`[data-metric="${name}"]`);

  function setText(name, value) {
    const node = metric(name);
    if (node) node.textContent = value;
  }

  // #key=<key> (a fragment never leaves the browser: no server, proxy or log sees it),
  // or ?key=<key> as older links have it, once: kept in this tab's sessionStorage, then
  // taken out of the address bar. Read as written, %xx decoded: a '+' is a plus, as
  // base64 keys hold them, not a space as a form would have it.
  // Read at load and at every change of the fragment: a #key= link opened in a tab
  // already on the page (signed out, say) changes only the fragment, and the browser
  // does not load the page again for it. What is wrong with a key, or "" if all is well.
  function keyFromAddress() {
    const fragment = window.location.hash.slice(1);
    const query = window.location.search.slice(1).split("&").filter((part) => part);
    const queried = query.find((part) => part.startsWith("key="));
    const written = fragment.startsWith("key=") ? fragment.slice(4) : queried?.slice(4);
    if (written === undefined) return "";
    let problem = "";
    let given = written;
    try {
      given = decodeURIComponent(written);
    } catch (ignored) {
      /* a lone '%': the key as written */
    }
    given = given.trim();
    if (KEY_SHAPE.test(given)) {
      sessionStorage.setItem(STORAGE, given);
    } else {
      sessionStorage.removeItem(STORAGE);
      problem = notAKey(given);
    }
    const rest = query.filter((part) => !part.startsWith("key=")).join("&");
    history.replaceState(null, "", window.location.pathname + (rest ? `?${rest}` : ""));
    return problem;
  }
  const keyProblem = keyFromAddress();

  class AuthError extends Error {}

  async function api(path, type, signal) {
    let response;
    try {
      response = await fetch(base + path, {
        headers: {
          Authorization: `Bearer ${sessionStorage.getItem(STORAGE) || ""}`,
          Accept: type || "application/json",
        },
        cache: "no-store",
        signal,
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      // No answer at all: each browser says it its own way ("Failed to fetch"), none
      // says what failed.
      throw new Error("the API could not be reached: its server stopped, or the network is down");
    }
    // 401 is always about the credentials; a 403 is only when the API says so (its
    // problem document): one from a proxy or a firewall on the way says nothing of
    // the key, which is kept.
    const fromTheApi = (response.headers.get("Content-Type") || "").startsWith(
      "application/problem+json",
    );
    if (response.status === 401 || (response.status === 403 && fromTheApi)) {
      let detail = "the key was not accepted";
      try {
        detail = (await response.json()).detail || detail;
      } catch (ignored) {
        /* not a problem document */
      }
      throw new AuthError(detail);
    }
    if (!response.ok) {
      // Over HTTP/2, as API Gateway serves browsers, statusText is empty: the body says
      // what came (the API's problem document its detail, API Gateway's own answer, a
      // throttle's 429 or a 502, its message).
      let detail = `${response.status} ${response.statusText}`.trim();
      try {
        const body = await response.json();
        detail = body.detail || (body.message ? `${response.status} ${body.message}` : detail);
      } catch (ignored) {
        /* no JSON body */
      }
      throw new Error(detail);
    }
    // Something on the way (a proxy's sign-in page, a captive portal) may answer 200 in
    // the API's place: its page must not be drawn into the board, nor read as JSON.
    const wanted = type || "application/json";
    const came = (response.headers.get("Content-Type") || "").split(";")[0].trim().toLowerCase();
    if (came !== wanted) {
      throw new Error(
        `${came || "an answer of no type"} came instead of the API's ${wanted}` +
          " (a proxy or a sign-in page on the way?)",
      );
    }
    return wanted === "image/svg+xml" ? response.text() : response.json();
  }

  // The rules of tether.durations.describe_seconds, so that the page and the
  // commands say a duration the same way: "90 seconds", "1 hour", "2.5 hours".
  function amount(value, unit) {
    const text = value.toFixed(1).replace(/\.0$/, "");
    return text === "1" ? `${text} ${unit}` : `${text} ${unit}s`;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Number(seconds);
    const whole = Math.max(0, Math.round(s));
    if (whole < 120) return whole === 60 ? amount(1, "minute") : amount(whole, "second");
    const minutes = Math.round(s / 60);
    if (minutes < 120) return minutes === 60 ? amount(1, "hour") : amount(minutes, "minute");
    const hours = Math.round(s / 360) / 10;
    if (hours < 48) return amount(hours, "hour");
    return amount(Math.round(s / 8640) / 10, "day");
  }

  function ago(iso, now) {
    if (!iso) return "never";
    const seconds = Math.max(0, (now - new Date(iso).getTime()) / 1000);
    return `${duration(seconds)} ago`;
  }

  function shortId(id) {
    return id ? `${String(id).slice(0, 8)}…` : "–";
  }

  function cell(row, text, title) {
    const td = document.createElement("td");
    td.textContent = text;
    if (title) td.title = title;
    row.appendChild(td);
    return td;
  }

  function showLogin(message) {
    shownAt = null;
    $("#board").hidden = true;
    $("#board").classList.remove("stale");
    $("#login").hidden = false;
    $("#sign-out").hidden = true;
    const error = $("#login-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("#status").textContent = "signed out";
    $("#status").classList.remove("error"); // a failed refresh's red is not this one's
    $("#key").focus();
  }

  function renderLive(live) {
    const now = new Date(live.checked_at).getTime();
    setText("active_sessions", live.active_sessions.toLocaleString("en"));
    setText("oldest_active", live.oldest_active_start ? ago(live.oldest_active_start, now) : "–");
    setText("ended_last_hour", live.ended_last_hour.toLocaleString("en"));
    setText("orphaned_sessions", live.orphaned_sessions.toLocaleString("en"));
    setText("unannounced", live.unannounced.toLocaleString("en"));
    setText("idle_limit", duration(live.sweep.idle_limit_seconds));
    setText("max_age", duration(live.sweep.max_age_seconds));
    $("#orphan-card").classList.toggle("alert", live.orphaned_sessions > 0);

    const reasons = $("#reasons");
    reasons.replaceChildren();
    const entries = Object.entries(live.ended_last_hour_by_reason);
    if (entries.length === 0) {
      const li = document.createElement("li");
      li.className = "dim";
      li.textContent = "none";
      reasons.appendChild(li);
    }
    for (const [reason, count] of entries) {
      const li = document.createElement("li");
      li.dataset.reason = reason;
      const name = document.createElement("span");
      name.textContent = reason.replaceAll("_", " ");
      const value = document.createElement("b");
      value.textContent = String(count);
      li.append(name, value);
      reasons.appendChild(li);
    }

    const sweep = live.sweep;
    setText("sweep_last", sweep.last_finished_at ? ago(sweep.last_finished_at, now) : "never ran");
    const report = sweep.last_report;
    setText(
      "sweep_report",
      report
        ? `ended ${report.ended}, checked ${report.checked}, announced ${report.announced}` +
            (report.interrupted
              ? " (interrupted)"
              : report.stopped_for_time
                ? " (stopped for time)"
                : "")
        : "no report yet",
    );
  }

  function renderDaily(daily) {
    const today = daily.stats[0];
    setText("today_sessions", today ? today.total_sessions.toLocaleString("en") : "–");
    setText("today_average", today ? duration(today.avg_duration_seconds) : "–");
    const body = $("#days");
    body.replaceChildren();
    for (const day of daily.stats) {
      const row = document.createElement("tr");
      row.dataset.day = day.day;
      cell(row, day.day);
      cell(row, day.total_sessions.toLocaleString("en"));
      cell(row, day.still_active.toLocaleString("en"));
      cell(row, day.ended_sessions.toLocaleString("en"));
      cell(row, duration(day.avg_duration_seconds));
      cell(row, duration(day.max_duration_seconds));
      body.appendChild(row);
    }
  }

  function renderSessions(page, now) {
    const body = $("#live");
    body.replaceChildren();
    if (page.sessions.length === 0) {
      const row = document.createElement("tr");
      const td = cell(row, "no live session");
      td.colSpan = 5;
      td.className = "dim";
      body.appendChild(row);
    }
    for (const session of page.sessions) {
      const row = document.createElement("tr");
      row.dataset.sessionId = session.session_id;
      cell(row, shortId(session.session_id), session.session_id);
      cell(row, session.user_id ? shortId(session.user_id) : "anonymous", session.user_id || "");
      cell(row, ago(session.session_start, now), session.session_start);
      cell(row, ago(session.last_seen_at, now), session.last_seen_at);
      cell(row, session.source_ip || "–", session.user_agent || "");
      body.appendChild(row);
    }
  }

  async function refresh() {
    const key = sessionStorage.getItem(STORAGE);
    if (!key || !KEY_SHAPE.test(key)) {
      // Shown once: a tick must not wipe the reason a key was refused.
      if (key) sessionStorage.removeItem(STORAGE);
      if ($("#login").hidden) showLogin(key ? notAKey(key) : "");
      return;
    }
    const started = generation;
    if (inFlight === started) return; // the last refresh still waits: no pile of requests
    inFlight = started;
    // One signal for the refresh's requests: a hung one ends at the timeout, and those
    // still out when another fails end with the refresh, so none outlives it.
    const abort = new AbortController();
    let timedOut = false;
    const timeout = setTimeout(() => {
      timedOut = true;
      abort.abort();
    }, TIMEOUT_MS);
    try {
      const [live, daily, chart, sessions] = await Promise.all([
        api("/stats/live", undefined, abort.signal),
        api("/stats/daily?days=14", undefined, abort.signal),
        api("/dashboard/chart.svg?days=14", "image/svg+xml", abort.signal),
        api("/sessions?active=true&limit=10", undefined, abort.signal),
      ]);
      if (started !== generation) return; // signed out (or in again) meanwhile
      renderLive(live);
      renderDaily(daily);
      $("#chart").innerHTML = chart; // drawn by this server, every text escaped
      renderSessions(sessions, new Date(live.checked_at).getTime());
      $("#login").hidden = true;
      $("#board").hidden = false;
      $("#sign-out").hidden = false;
      shownAt = new Date();
      $("#status").textContent = `updated ${shownAt.toLocaleTimeString("en-GB")}`;
      $("#status").classList.remove("error");
      $("#board").classList.remove("stale");
      document.body.dataset.loaded = "true";
    } catch (error) {
      if (started !== generation) return;
      if (error instanceof AuthError) {
        sessionStorage.removeItem(STORAGE);
        showLogin(error.message);
        return;
      }
      const why = timedOut ? `the API did not answer within ${TIMEOUT_MS / 1000} s` : error.message;
      // What the board shows is no longer live ("last seen 3 s ago" is not true for
      // long): it is greyed, and said to be as it was read then.
      const then = shownAt ? `; showing what was read at ${shownAt.toLocaleTimeString("en-GB")}` : "";
      $("#status").textContent = `could not refresh: ${why}${then}`;
      $("#status").classList.add("error");
      $("#board").classList.add("stale");
      // A key is kept and tried again: it can be forgotten now, not only once the API
      // answers (a tab opened or reloaded while the database is down showed no way to).
      $("#sign-out").hidden = false;
      if (!$("#login").hidden) {
        // Signed in while the API fails: the form came back empty, as if the key had
        // been refused. It was not: it is kept, and the page shows the board once the
        // API answers.
        const error = $("#login-error");
        error.hidden = false;
        error.textContent =
          `the API could not be read (${why}); the key is kept, and tried again` +
          ` every ${EVERY_MS / 1000} s`;
      }
    } finally {
      clearTimeout(timeout);
      abort.abort();
      if (inFlight === started) inFlight = null;
    }
  }

  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const given = $("#key").value.trim();
    $("#key").value = "";
    if (!KEY_SHAPE.test(given)) {
      showLogin(notAKey(given));
      return;
    }
    generation += 1;
    sessionStorage.setItem(STORAGE, given);
    refresh();
  });
  $("#sign-out").addEventListener("click", () => {
    generation += 1;
    sessionStorage.removeItem(STORAGE);
    showLogin("");
  });

  window.addEventListener("hashchange", () => {
    if (!window.location.hash.startsWith("#key=")) return;
    const problem = keyFromAddress();
    generation += 1; // what a refresh under the key before brings is dropped
    if (problem) showLogin(problem);
    else refresh();
  });

  if (keyProblem) showLogin(keyProblem);
  refresh();
  timer = setInterval(refresh, EVERY_MS);
  window.addEventListener("pagehide", () => clearInterval(timer));
})();
