// The operator page: polls /ui/api/* and redraws in place. No framework, no
// build step; every value goes in as text (never as HTML), so an external_id or
// a backend's error message cannot inject markup.
"use strict";

(() => {
  const REFRESH_MS = 3000;
  const PAGE = 50;
  const view = {
    state: "dead", // the replayable state listed
    backend: "", // "" = every backend
    before: null, // page cursor: list deliveries older than this id
    nextBefore: null,
    profileId: null,
    paused: false,
    lastOk: null,
    lastError: null,
    busy: false,
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "data") Object.assign(node.dataset, value);
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
    }
    return node;
  }

  async function api(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    const response = await fetch(path, { ...options, headers, cache: "no-store" });
    if (response.status === 401) {
      // The session ended (expired, or its token was removed): back to the form.
      window.location.reload();
      throw new Error("signed out");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const error = new Error(body && body.message ? body.message : `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function post(path, body) {
    return api(path, {
      method: "POST",
      // The page's own header: the server refuses a cookie-authenticated change without it.
      headers: { "Content-Type": "application/json", "X-Gateway-UI": "1" },
      body: JSON.stringify(body),
    });
  }

  // -- formatting ---------------------------------------------------------------

  function duration(seconds) {
    if (seconds == null) return "—";
    if (seconds < 1) return "0 s";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${Math.round(seconds / 86400)} d`;
  }

  function when(epochSeconds) {
    if (epochSeconds == null) return "—";
    const ago = Date.now() / 1000 - epochSeconds;
    return `${duration(Math.max(0, ago))} ago`;
  }

  function badge(state) {
    const name = state ?? "none";
    return el("span", { class: `badge state-${name}` }, state == null ? "not sent" : name);
  }

  function ratio(backend, dispatching) {
    if (!dispatching) return "—";
    if (backend.error_ratio == null) return el("span", { class: "hint" }, "no attempts");
    const pct = (backend.error_ratio * 100).toFixed(1);
    return el("span", {}, `${pct} % `, el("span", { class: "hint" }, `of ${backend.outcomes}`));
  }

  function headroom(limit, dispatching) {
    if (!dispatching) return "—";
    if (limit == null) return el("span", { class: "hint" }, "no limit");
    const cell = el("div");
    for (const w of limit.windows) {
      const share = w.limit ? w.remaining / w.limit : 0;
      const meter = el("span", { class: `meter${share === 0 ? " empty" : share < 0.2 ? " low" : ""}` });
      const bar = el("span");
      bar.style.width = `${Math.round(share * 100)}%`;
      meter.append(bar);
      const per = w.seconds === 1 ? "s" : `${w.seconds} s`;
      cell.append(
        el("div", {}, meter, `${w.remaining}/${w.limit} per ${per}, resets in ${duration(w.resets_in)}`),
      );
    }
    if (limit.blocked_for > 0) {
      cell.append(el("div", { class: "state-open" }, `held back ${duration(limit.blocked_for)} by the backend`));
    }
    cell.append(el("div", { class: "hint" }, `${limit.in_flight}/${limit.max_in_flight} in flight`));
    return cell;
  }

  function searchLink(externalId) {
    return el("button", { type: "button", class: "link mono", onclick: () => search(externalId) }, externalId);
  }

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  // -- sections -------------------------------------------------------------------

  function renderStatus(status) {
    const dispatching = status.dispatcher;
    $("dispatcher-note").textContent = dispatching
      ? `Error ratio: share of this process's delivery attempts that ended retry, failed or dead over the last ${duration(status.error_window_seconds)}.`
      : "No dispatcher runs in this process (an API-only replica): circuit, error ratio and rate limits are known only where deliveries are sent.";
    fill(
      $("backends").tBodies[0],
      status.backends.map((b) =>
        el(
          "tr",
          { data: { backend: b.backend } },
          el("td", { class: "mono" }, b.backend),
          el("td", { class: "circuit" }, badge(b.circuit)),
          el("td", {}, ratio(b, dispatching)),
          el("td", {}, headroom(b.rate_limit, dispatching)),
          el(
            "td",
            { class: "num queue" },
            b.queue_bulk ? `${b.queue_depth} (${b.queue_bulk} bulk)` : b.queue_depth,
          ),
          el("td", { class: "num" }, b.queue_depth ? duration(b.oldest_pending_seconds) : "—"),
          el("td", { class: "num dead" }, b.dead),
          el("td", { class: "num" }, b.failed),
          el("td", { class: "num" }, b.unconfirmed),
        ),
      ),
    );
    fill(
      $("recent").tBodies[0],
      status.recent_failures.map((d) =>
        el(
          "tr",
          {},
          el("td", { class: "num mono" }, d.delivery_id),
          el("td", {}, searchLink(d.external_id)),
          el("td", { class: "mono" }, d.backend),
          el("td", {}, badge(d.state)),
          el("td", { class: "num" }, d.attempts),
          el("td", { class: "error" }, d.last_error ?? ""),
          el("td", {}, when(d.updated_at)),
        ),
      ),
    );
    $("recent-empty").hidden = status.recent_failures.length > 0;
  }

  async function loadStatus() {
    renderStatus(await api("/ui/api/status"));
  }

  async function loadDeliveries() {
    const query = new URLSearchParams({ state: view.state, limit: String(PAGE) });
    if (view.backend) query.set("backend", view.backend);
    if (view.before != null) query.set("before", String(view.before));
    const page = await api(`/ui/api/deliveries?${query}`);
    view.nextBefore = page.next_before;
    fill(
      $("deliveries").tBodies[0],
      page.deliveries.map((d) =>
        el(
          "tr",
          { data: { deliveryId: String(d.delivery_id) } },
          el("td", { class: "num mono" }, d.delivery_id),
          el("td", {}, searchLink(d.external_id)),
          el("td", { class: "mono" }, d.backend),
          el("td", {}, badge(d.state)),
          el("td", { class: "num" }, d.attempts),
          el("td", { class: "error" }, d.last_error ?? ""),
          el("td", {}, when(d.updated_at)),
          el(
            "td",
            {},
            el(
              "button",
              { type: "button", class: "replay", onclick: (e) => replayOne(e.currentTarget, d) },
              "Replay",
            ),
          ),
        ),
      ),
    );
    $("deliveries-empty").hidden = page.deliveries.length > 0;
    $("older").disabled = view.nextBefore == null;
    $("newest").disabled = view.before == null;
    const all = $("replay-all");
    all.disabled = !view.backend;
    all.textContent = view.backend ? `Replay all ${view.state} of ${view.backend}` : "Replay all (choose a backend)";
  }

  function renderProfile(profile) {
    $("profile-missing").hidden = true;
    $("profile").hidden = false;
    const fields = profile.fields.length ? profile.fields.join(", ") : "none";
    $("profile-summary").textContent =
      `${profile.external_id}: latest write ${when(profile.updated_at)} (request ${profile.last_request_id}); ` +
      `fields present: ${fields} (values are not shown here).`;
    fill(
      $("profile-backends").tBodies[0],
      profile.backends.map((b) =>
        el(
          "tr",
          { data: { backend: b.backend } },
          el("td", { class: "mono" }, b.backend),
          el(
            "td",
            { class: "state" },
            badge(b.state),
            b.merged_into == null ? "" : ` into #${b.merged_into} `,
            b.merged_into == null ? "" : badge(b.carrier_state),
          ),
          el("td", { class: "num attempts" }, b.attempts),
          el("td", { class: "error" }, b.last_error ?? ""),
          el("td", {}, when(b.updated_at)),
          el("td", { class: "mono" }, b.backend_id ?? "—"),
        ),
      ),
    );
  }

  async function loadProfile() {
    if (view.profileId == null) return;
    try {
      renderProfile(await api(`/ui/api/profiles/${encodeURIComponent(view.profileId)}`));
    } catch (error) {
      if (error.status !== 404) throw error;
      $("profile").hidden = true;
      $("profile-missing").hidden = false;
      $("profile-missing").textContent = `No profile with external_id ${view.profileId}.`;
    }
  }

  // -- refreshing ---------------------------------------------------------------

  async function refresh() {
    if (view.busy) return;
    view.busy = true;
    try {
      await Promise.all([loadStatus(), loadDeliveries(), loadProfile()]);
      view.lastOk = Date.now();
      view.lastError = null;
    } catch (error) {
      view.lastError = error.message;
    } finally {
      view.busy = false;
      showUpdated();
    }
  }

  function showUpdated() {
    const node = $("updated");
    const age = view.lastOk == null ? null : Math.round((Date.now() - view.lastOk) / 1000);
    let text = age == null ? "not loaded yet" : `updated ${age} s ago`;
    if (view.paused) text += " (paused)";
    if (view.lastError) text += ` (refresh failed: ${view.lastError})`;
    node.textContent = text;
    node.classList.toggle("stale", Boolean(view.lastError) || (age != null && age > 15));
  }

  function notice(text, isError) {
    const node = $("notice");
    node.textContent = text;
    node.classList.toggle("error", Boolean(isError));
    node.hidden = false;
  }

  function replayed(result) {
    const n = result.requeued.length;
    let text = `Requeued ${n} deliver${n === 1 ? "y" : "ies"}.`;
    if (result.superseded.length) {
      text += ` Skipped ${result.superseded.length}: a newer write already reached the backend.`;
    }
    notice(text, false);
  }

  async function replayOne(button, delivery) {
    button.disabled = true;
    try {
      replayed(await post("/ui/api/replay", { delivery_id: delivery.delivery_id, state: delivery.state }));
    } catch (error) {
      notice(`Replay failed: ${error.message}`, true);
    }
    await refresh();
  }

  async function replayAll() {
    if (!view.backend) return;
    if (!window.confirm(`Send every ${view.state} delivery of ${view.backend} again?`)) return;
    try {
      replayed(await post("/ui/api/replay", { backend: view.backend, state: view.state }));
    } catch (error) {
      notice(`Replay failed: ${error.message}`, true);
    }
    view.before = null;
    await refresh();
  }

  function search(externalId) {
    $("search-id").value = externalId;
    view.profileId = externalId;
    loadProfile().catch((error) => notice(`Search failed: ${error.message}`, true));
    $("search-id").scrollIntoView({ block: "nearest" });
  }

  function selectState(state) {
    view.state = state;
    view.before = null;
    for (const tab of $("state-tabs").querySelectorAll("button")) {
      tab.setAttribute("aria-selected", String(tab.dataset.state === state));
    }
    loadDeliveries().catch((error) => notice(error.message, true));
  }

  // Read once: the mapping is fixed for the life of the process.
  async function loadMapping() {
    const body = await api("/ui/api/mapping");
    $("mapping-source").textContent = body.source
      ? `From ${body.source} (GATEWAY_MAPPING_FILE), defaults filled in.`
      : "The built-in mapping (GATEWAY_MAPPING_FILE is not set).";
    $("mapping").textContent = JSON.stringify(body.mapping, null, 2);
  }

  function start() {
    for (const tab of $("state-tabs").querySelectorAll("button")) {
      tab.addEventListener("click", () => selectState(tab.dataset.state));
    }
    $("backend-filter").addEventListener("change", (e) => {
      view.backend = e.target.value;
      view.before = null;
      loadDeliveries().catch((error) => notice(error.message, true));
    });
    $("older").addEventListener("click", () => {
      view.before = view.nextBefore;
      loadDeliveries().catch((error) => notice(error.message, true));
    });
    $("newest").addEventListener("click", () => {
      view.before = null;
      loadDeliveries().catch((error) => notice(error.message, true));
    });
    $("replay-all").addEventListener("click", replayAll);
    $("search-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const value = $("search-id").value.trim();
      if (value) search(value);
    });
    $("pause").addEventListener("change", (e) => {
      view.paused = e.target.checked;
      showUpdated();
    });
    $("sign-out").addEventListener("click", async () => {
      try {
        await post("/ui/sign-out", {});
      } finally {
        window.location.reload();
      }
    });
    refresh();
    loadMapping().catch((error) => notice(error.message, true));
    setInterval(() => {
      if (!view.paused && !document.hidden) refresh();
    }, REFRESH_MS);
    setInterval(showUpdated, 1000);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
