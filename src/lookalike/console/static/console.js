// The lookalike console: four views over the worker's HTTP API, no framework, no build step.
// Every call goes through api() (bearer token from localStorage when there is one); images are
// fetched from /thumbnails with the same header and shown as blob URLs.
"use strict";

(() => {
  const TOKEN_KEY = "lookalike.token";
  const SESSION_KEY = "lookalike.session";
  const THUMB = 200;

  // --- small helpers ---------------------------------------------------------------------------
  const $ = (selector) => document.querySelector(selector);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const fmt = {
    score: (x) => (typeof x === "number" ? x.toFixed(3) : "–"),
    pct: (x) => (typeof x === "number" ? `${(100 * x).toFixed(0)}%` : "–"),
    num: (x) => (typeof x === "number" ? x.toLocaleString("en") : "–"),
    secs: (x) => {
      if (typeof x !== "number") return "–";
      if (x < 90) return `${x.toFixed(x < 10 ? 1 : 0)} s`;
      if (x < 5400) return `${Math.round(x / 60)} min`;
      return `${(x / 3600).toFixed(1)} h`;
    },
    time: (iso) => (iso ? new Date(iso).toLocaleString() : "–"),
  };

  function table(headers, rows, empty = "nothing yet") {
    if (!rows.length) return el("p", { class: "muted" }, empty);
    return el(
      "table",
      {},
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.map((row) => el("tr", {}, row.map((cell) => el("td", {}, cell))))),
    );
  }

  function fill(target, ...children) {
    const node = typeof target === "string" ? $(target) : target;
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  }

  let messageTimer = null;
  function say(text, kind = "info") {
    const box = $("#message");
    box.textContent = text;
    box.className = kind;
    box.hidden = false;
    clearTimeout(messageTimer);
    messageTimer = setTimeout(() => (box.hidden = true), kind === "error" ? 8000 : 3000);
  }

  // --- the API -----------------------------------------------------------------------------
  const token = () => localStorage.getItem(TOKEN_KEY) || "";

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, { method = "GET", json, form, raw } = {}) {
    const headers = {};
    if (token()) headers.Authorization = `Bearer ${token()}`;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form;
    }
    const response = await fetch(path, { method, headers, body });
    if (raw) {
      if (!response.ok) throw new ApiError(response.status, `${response.status}`);
      return response;
    }
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      const message = (data && data.error) || `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message);
    }
    return data;
  }

  function explain(error) {
    if (error.status === 401) return "This needs a token: enter one above.";
    if (error.status === 403) return "This needs an admin token.";
    return error.message || String(error);
  }

  // Thumbnails: one fetch per image and size, kept as blob URLs until the token changes.
  const thumbs = new Map();
  function forgetThumbnails() {
    for (const url of thumbs.values()) url.then((u) => u && URL.revokeObjectURL(u));
    thumbs.clear();
  }
  function thumbnail(imageId, size = THUMB) {
    const key = `${imageId}@${size}`;
    if (!thumbs.has(key)) {
      const path = `/thumbnails/${encodeURIComponent(imageId)}?size=${size}`;
      thumbs.set(
        key,
        api(path, { raw: true })
          .then((r) => r.blob())
          .then((blob) => URL.createObjectURL(blob))
          .catch(() => null),
      );
    }
    return thumbs.get(key);
  }

  function thumbImage(imageId, label, size = THUMB) {
    const img = el("img", { class: "thumb loading", alt: label || imageId, dataset: { imageId } });
    thumbnail(imageId, size).then((url) => {
      img.classList.remove("loading");
      if (url) img.src = url;
      else img.classList.add("missing");
    });
    return img;
  }

  function session() {
    let id = sessionStorage.getItem(SESSION_KEY);
    if (!id) {
      id = `console-${Math.random().toString(36).slice(2, 10)}`;
      sessionStorage.setItem(SESSION_KEY, id);
    }
    return id;
  }

  // --- token and role --------------------------------------------------------------------------
  async function showRole() {
    const badge = $("#role");
    try {
      await api("/stats");
      badge.textContent = token() ? "admin" : "open API";
      badge.dataset.role = "admin";
    } catch (error) {
      if (error.status === 403) {
        badge.textContent = "read";
        badge.dataset.role = "read";
      } else if (error.status === 401) {
        badge.textContent = token() ? "token refused" : "token needed";
        badge.dataset.role = "none";
      } else {
        badge.textContent = "worker unreachable";
        badge.dataset.role = "none";
      }
    }
  }

  function setupToken() {
    $("#token").value = token();
    $("#token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("#token").value.trim();
      if (value) localStorage.setItem(TOKEN_KEY, value);
      else localStorage.removeItem(TOKEN_KEY);
      forgetThumbnails();
      showRole();
      route();
      say(value ? "Token saved in this browser." : "Token forgotten.");
    });
    $("#token-forget").addEventListener("click", () => {
      localStorage.removeItem(TOKEN_KEY);
      $("#token").value = "";
      forgetThumbnails();
      showRole();
      route();
      say("Token forgotten.");
    });
  }

  // --- Search ----------------------------------------------------------------------------------
  const search = {
    last: null, // {kind: "image", file} or {kind: "id", id}
    categories: new Set(),

    filters() {
      const value = (id) => $(id).value.trim();
      const filters = {};
      if (value("#filter-category")) filters.category = value("#filter-category");
      if (value("#filter-seller")) filters.seller_id = value("#filter-seller");
      if (value("#filter-listing")) filters.listing_id = value("#filter-listing");
      return filters;
    },

    k() {
      const k = parseInt($("#k").value, 10);
      return Number.isFinite(k) && k > 0 ? Math.min(k, 100) : 12;
    },

    async byImage(file) {
      search.last = { kind: "image", file };
      const preview = $("#query-preview");
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
      const form = new FormData();
      form.append("image", file, file.name || "query.jpg");
      form.append("k", String(search.k()));
      form.append("session_id", session());
      for (const [key, value] of Object.entries(search.filters())) form.append(key, value);
      await search.run(() => api("/search", { method: "POST", form }), `your image`);
    },

    async byId(imageId) {
      search.last = { kind: "id", id: imageId };
      $("#image-id").value = imageId;
      const preview = $("#query-preview");
      preview.hidden = false;
      preview.removeAttribute("src");
      thumbnail(imageId).then((url) => url && (preview.src = url));
      const body = { image_id: imageId, k: search.k(), session_id: session() };
      const filters = search.filters();
      if (Object.keys(filters).length) body.filter = filters;
      await search.run(() => api("/search", { method: "POST", json: body }), imageId);
    },

    async run(call, what) {
      const status = $("#search-status");
      status.textContent = `Searching for ${what}…`;
      const started = performance.now();
      try {
        const answer = await call();
        const seconds = (performance.now() - started) / 1000;
        search.show(answer, seconds);
      } catch (error) {
        status.textContent = explain(error);
        fill("#results");
      }
    },

    show(answer, seconds) {
      const results = answer.results || [];
      $("#search-status").textContent =
        `${results.length} results from ${answer.model_version} in ${seconds.toFixed(2)} s` +
        (answer.logged ? "" : " (not logged: the click loop will miss this search)");
      $("#search-status").dataset.searchId = answer.search_id;
      for (const r of results) if (r.category) search.categories.add(r.category);
      fill("#categories", [...search.categories].sort().map((c) => el("option", { value: c })));
      fill("#results", results.map((r) => search.card(answer.search_id, r, answer.model_version)));
    },

    card(searchId, result, serving) {
      // A place kept for the anchor version's top matches (LOOKALIKE_SEARCH_ANCHOR_SLOTS).
      const anchored = result.ranked_by && result.ranked_by !== serving;
      const card = el("article", {
        class: anchored ? "result anchored" : "result",
        dataset: { imageId: result.image_id, rank: String(result.rank) },
      });
      const open = el(
        "button",
        {
          class: "open",
          title: "open this result (reported as a click, as a marketplace front end would)",
          onclick: () => search.click(card, searchId, result),
        },
        thumbImage(result.image_id, `${result.category || ""} ${result.image_id}`),
      );
      card.append(
        open,
        el(
          "div",
          { class: "meta" },
          el("span", { class: "rank" }, `#${result.rank}`),
          el("span", { class: "score", title: "cosine similarity" }, fmt.score(result.score)),
          el("span", { class: "category" }, result.category || "–"),
          anchored ? el("span", { class: "anchor", title: `placed by the anchor ${result.ranked_by}` }, "anchor") : false,
        ),
        el("div", { class: "meta muted small" }, el("span", { class: "seller" }, result.seller_id || "–"),
          el("span", { class: "id", title: result.image_id }, result.image_id)),
        el(
          "button",
          { class: "more quiet", onclick: () => search.byId(result.image_id) },
          "more like this",
        ),
      );
      return card;
    },

    async click(card, searchId, result) {
      try {
        await api("/clicks", {
          method: "POST",
          json: {
            search_id: searchId,
            image_id: result.image_id,
            rank: result.rank,
            session_id: session(),
          },
        });
        card.classList.add("clicked");
        say(`Click on ${result.image_id} (rank ${result.rank}) sent to the click loop.`);
      } catch (error) {
        say(`The click was not taken: ${explain(error)}`, "error");
      }
    },

    setup() {
      const drop = $("#drop");
      const take = (files) => {
        const file = [...(files || [])].find((f) => f.type.startsWith("image/")) || files?.[0];
        if (file) search.byImage(file);
      };
      $("#pick").addEventListener("change", (event) => take(event.target.files));
      for (const name of ["dragenter", "dragover"]) {
        drop.addEventListener(name, (event) => {
          event.preventDefault();
          drop.classList.add("over");
        });
      }
      drop.addEventListener("dragleave", () => drop.classList.remove("over"));
      drop.addEventListener("drop", (event) => {
        event.preventDefault();
        drop.classList.remove("over");
        take(event.dataTransfer.files);
      });
      $("#search-form").addEventListener("submit", (event) => {
        event.preventDefault();
        const id = $("#image-id").value.trim();
        if (id) search.byId(id);
        else $("#search-status").textContent = "Give an image id, or drop an image.";
      });
      $("#search-again").addEventListener("click", () => {
        if (!search.last) return;
        if (search.last.kind === "image") search.byImage(search.last.file);
        else search.byId(search.last.id);
      });
    },
  };

  // --- Alerts ------------------------------------------------------------------------------------
  const alerts = {
    loads: 0,

    async load() {
      const status = $("#alert-status").value;
      const query = status ? `?status=${status}&limit=50` : "?limit=50";
      // Entering the view and changing the filter each load: only the latest answer may fill the
      // list, or a slower earlier one (another filter) overwrites it.
      const mine = ++alerts.loads;
      try {
        const answer = await api(`/alerts${query}`);
        if (mine !== alerts.loads) return;
        $("#alerts-count").textContent = `${answer.alerts.length} shown`;
        fill("#alerts", answer.alerts.length ? answer.alerts.map(alerts.card) : el("p", { class: "muted" }, "No alerts here."));
      } catch (error) {
        if (mine !== alerts.loads) return;
        $("#alerts-count").textContent = "";
        fill("#alerts", el("p", { class: "muted" }, explain(error)));
      }
    },

    votes(alert) {
      const rows = Object.entries(alert.votes || {}).sort((a, b) => b[1] - a[1]);
      return el(
        "div",
        { class: "votes" },
        rows.map(([category, share]) => {
          const bar = el("span", { class: "bar" });
          bar.style.width = `${Math.max(2, 100 * share)}%`;
          const kind =
            category === alert.declared_category ? "declared" : category === alert.predicted_category ? "predicted" : "";
          return el(
            "div",
            { class: `vote ${kind}`, dataset: { category } },
            el("span", { class: "label" }, category),
            el("span", { class: "track" }, bar),
            el("span", { class: "share" }, fmt.pct(share)),
          );
        }),
      );
    },

    evidence(alert) {
      return el(
        "div",
        { class: "evidence" },
        (alert.evidence || []).slice(0, 8).map((n) =>
          el(
            "figure",
            { class: n.exemplar ? "neighbour exemplar" : "neighbour", dataset: { imageId: n.image_id } },
            n.exemplar ? el("div", { class: "thumb missing" }, "exemplar") : thumbImage(n.image_id, n.category, 120),
            el("figcaption", {}, el("span", {}, n.category), el("span", { class: "muted" }, fmt.score(n.score))),
          ),
        ),
      );
    },

    card(alert) {
      const card = el("article", { class: `alert ${alert.status}`, dataset: { alertId: alert.alert_id, imageId: alert.image_id } });
      const note = el("input", { class: "note", placeholder: "note (optional)" });
      const review = async (decision) => {
        try {
          const result = await api(`/alerts/${encodeURIComponent(alert.alert_id)}/review`, {
            method: "POST",
            json: note.value.trim() ? { decision, note: note.value.trim() } : { decision },
          });
          card.className = `alert ${result.status}`;
          fill(
            card.querySelector(".actions"),
            el("span", { class: "reviewed" }, `${result.status}` + (result.index_corrected ? `: category corrected to ${alert.predicted_category} in the index` : "")),
          );
          say(`Alert ${result.status}.`);
        } catch (error) {
          say(`Review failed: ${explain(error)}`, "error");
        }
      };
      const actions =
        alert.status === "open"
          ? el(
              "div",
              { class: "actions" },
              note,
              el("button", { class: "confirm", onclick: () => review("confirmed"), title: `set the category to ${alert.predicted_category}` }, "Confirm"),
              el("button", { class: "dismiss quiet", onclick: () => review("dismissed") }, "Dismiss"),
            )
          : el("div", { class: "actions" }, el("span", { class: "reviewed" }, `${alert.status}${alert.note ? `: ${alert.note}` : ""}`));
      card.append(
        el(
          "div",
          { class: "upload" },
          thumbImage(alert.image_id, `upload ${alert.image_id}`, 240),
          el("div", { class: "small" }, el("strong", {}, alert.image_id), " by ", alert.seller_id),
        ),
        el(
          "div",
          { class: "verdict" },
          el(
            "p",
            {},
            "declared ",
            el("strong", { class: "declared" }, alert.declared_category),
            ", looks like ",
            el("strong", { class: "predicted" }, alert.predicted_category),
            ` (confidence ${fmt.pct(alert.confidence)})`,
          ),
          el("p", { class: "muted small" }, `raised ${fmt.time(alert.raised_at)}, model ${alert.model_version}`),
          alerts.votes(alert),
          actions,
        ),
        alerts.evidence(alert),
      );
      return card;
    },

    setup() {
      $("#alert-status").addEventListener("change", alerts.load);
      $("#alerts-refresh").addEventListener("click", alerts.load);
    },
  };

  // --- Pipeline ----------------------------------------------------------------------------------
  const pipeline = {
    previous: null, // {at, consumed} of the last poll, for events/s

    async load() {
      let ready;
      try {
        ready = await fetch("/ready").then((r) => r.json());
      } catch (error) {
        fill("#ready", el("p", { class: "bad" }, "The worker does not answer."));
        return;
      }
      fill(
        "#ready",
        el("p", { class: ready.ready ? "good big" : "bad big", id: "ready-state" }, ready.ready ? "Ready" : "Not ready"),
        table(
          ["part", "state", "why"],
          Object.entries(ready.checks || {}).map(([part, check]) => [
            part,
            el("span", { class: check.ok ? "good" : "bad" }, check.ok ? "ok" : "failing"),
            check.reason || "",
          ]),
        ),
      );
      let stats;
      try {
        stats = await api("/stats");
      } catch (error) {
        for (const id of ["#throughput", "#indexed", "#lag", "#dead-letter-stages", "#loop", "#dead-letters"]) {
          fill(id, el("p", { class: "muted" }, explain(error)));
        }
        return;
      }
      pipeline.show(stats);
      try {
        const letters = await api("/dead-letters?limit=20");
        pipeline.letters(letters.dead_letters);
      } catch (error) {
        fill("#dead-letters", el("p", { class: "muted" }, explain(error)));
      }
    },

    show(stats) {
      const worker = stats.worker || {};
      const now = performance.now();
      let rate = null;
      if (pipeline.previous && now > pipeline.previous.at) {
        rate = ((worker.events_consumed - pipeline.previous.consumed) * 1000) / (now - pipeline.previous.at);
      } else if (worker.uptime_seconds > 0) {
        rate = null;
      }
      pipeline.previous = { at: now, consumed: worker.events_consumed };
      fill(
        "#throughput",
        el("p", { class: "big", id: "events-rate" }, rate === null ? "– events/s" : `${rate.toFixed(1)} events/s`),
        table(
          ["since the worker started", ""],
          [
            ["events consumed", fmt.num(worker.events_consumed)],
            ["images indexed", fmt.num(worker.images_indexed)],
            ["updated / removed", `${fmt.num(worker.images_updated)} / ${fmt.num(worker.images_removed)}`],
            ["stale (superseded)", fmt.num(worker.stale_events)],
            ["batches", fmt.num(worker.batches)],
            ["last batch", fmt.secs(worker.last_batch_seconds)],
            ["uptime", fmt.secs(worker.uptime_seconds)],
          ],
        ),
      );
      fill(
        "#indexed",
        table(
          ["model version", "images", ""],
          Object.entries(stats.indexed || {}).map(([version, count]) => [
            el("code", {}, version),
            el("span", { class: "count" }, fmt.num(count)),
            version === stats.serving_version ? el("span", { class: "badge" }, "serving") : "",
          ]),
        ),
      );
      const lag = stats.consumer_lag || {};
      const topics = new Map();
      for (const p of lag.partitions || []) {
        if (!topics.has(p.topic)) topics.set(p.topic, []);
        topics.get(p.topic).push(p);
      }
      const sum = (ps, key) => ps.reduce((total, p) => total + (p[key] || 0), 0);
      fill(
        "#lag",
        table(
          ["topic", "end", "committed", "lag", "by partition"],
          [...topics].map(([topic, ps]) => [
            topic.split(".").pop(),
            fmt.num(sum(ps, "end_offset")),
            fmt.num(sum(ps, "committed")),
            el("strong", { class: "lag", dataset: { topic } }, fmt.num(sum(ps, "lag"))),
            el("span", { class: "muted small" }, ps.map((p) => `${p.partition}: ${p.lag ?? "–"}`).join(" · ")),
          ]),
          lag.error ? `not measured: ${lag.error}` : "not measured yet",
        ),
        el("p", { class: "muted small" }, lag.measured_at ? `measured ${fmt.time(lag.measured_at)}; ${lag.note}` : ""),
      );
      fill(
        "#dead-letter-stages",
        el("p", { class: "big" }, `${fmt.num(stats.dead_letters)} in all`),
        table(["stage", "dead letters"], Object.entries(stats.dead_letters_by_stage || {}).map(([stage, n]) => [stage, fmt.num(n)])),
      );
      const online = Object.entries(stats.online || {});
      fill(
        "#loop",
        table(["alerts", ""], Object.entries(stats.alerts || {}).map(([status, n]) => [status, fmt.num(n)]), "no alerts"),
        table(
          ["version", "searches", "CTR", "MRR"],
          online.map(([version, row]) => [el("code", {}, version), fmt.num(row.searches), fmt.pct(row.ctr), fmt.score(row.mrr)]),
          "no searches seen by the click loop yet",
        ),
        el("p", { class: "muted small" }, `training pairs written: ${fmt.num((stats.clicks || {}).training_pairs)}`),
      );
    },

    letters(letters) {
      fill(
        "#dead-letters",
        table(
          ["when", "stage", "reason", "image", "from"],
          letters.map((d) => [
            fmt.time(d.failed_at),
            el("span", { class: "badge" }, d.stage),
            el("span", { class: "reason" }, d.reason),
            d.image_id || "–",
            `${d.source_topic}:${d.source_partition}@${d.source_offset}`,
          ]),
          "no dead letters",
        ),
      );
    },
  };

  // --- Rollout -------------------------------------------------------------------------------------
  const rollout = {
    full: null, // the last full status (gate, agreement): quick polls keep showing them
    polls: 0,

    async load(full = true) {
      let status;
      // Quick polls keep the progress moving; the gate and the agreement (which query the
      // index) are asked for on entering the view, after a step, and every fifth poll.
      full = full || ++rollout.polls % 5 === 0;
      try {
        status = await api(`/rollout/status${full ? "" : "?quick=1"}`);
        const finished = (s) => Boolean(s && s.backfill && s.backfill.done);
        if (!full && rollout.full && finished(status) !== finished(rollout.full)) {
          status = await api("/rollout/status"); // the backfill just ended: the gate changed
          full = true;
        }
        if (full) rollout.full = status;
        else if (rollout.full && rollout.full.candidate === status.candidate) {
          status.gate = rollout.full.gate;
          status.agreement = rollout.full.agreement;
        }
      } catch (error) {
        fill("#versions", el("p", { class: "muted" }, explain(error)));
        fill("#candidate");
        return;
      }
      fill(
        "#versions",
        table(
          ["version", "state", "encoder", "created", "promoted"],
          (status.versions || []).map((v) => [
            el("code", {}, v.version),
            el("span", { class: `badge state-${v.state}` }, v.state),
            v.encoder,
            fmt.time(v.created_at),
            fmt.time(v.promoted_at),
          ]),
        ),
      );
      if (full) rollout.learn();
      if (!status.candidate) {
        fill("#candidate", el("p", { class: "muted" }, "No candidate: start one below (an encoder name, or a fine-tuned model.pt)."));
        return;
      }
      const backfill = status.backfill || {};
      const bar = el("span", { class: "bar" });
      bar.style.width = `${backfill.percent || 0}%`;
      const parts = [
        el("p", {}, "Candidate ", el("code", {}, status.candidate), backfill.done ? " — backfill done" : ""),
        el("div", { class: "progress", id: "backfill-progress" }, el("span", { class: "track" }, bar), el("span", {}, `${(backfill.percent || 0).toFixed(1)}%`)),
        table(
          ["backfill", ""],
          [
            ["scanned", `${fmt.num(backfill.scanned || 0)} of ${fmt.num(backfill.total)}`],
            ["candidate holds", fmt.num(backfill.candidate_holds)],
            ["images/s", backfill.images_per_second ?? "–"],
            ["ETA", backfill.done ? "done" : fmt.secs(backfill.eta_seconds)],
          ],
        ),
      ];
      if (status.gate) {
        parts.push(
          el("h3", {}, "Gate"),
          el("p", { class: status.gate.ready ? "good" : "bad", id: "gate" }, status.gate.ready ? "passes: may be promoted" : "does not pass yet"),
          el("ul", {}, (status.gate.reasons || []).map((r) => el("li", {}, r))),
        );
      }
      const evaluation = status.evaluation;
      if (evaluation) {
        parts.push(
          el("h3", {}, "Evaluation"),
          table(
            ["", "mAP", "Recall@1", "Precision@10"],
            ["serving", "candidate"].map((side) => [
              side,
              fmt.score(evaluation[side]?.map),
              fmt.score(evaluation[side]?.recall_at_1),
              fmt.score(evaluation[side]?.precision_at_10),
            ]),
          ),
          el("p", { class: "muted small" }, `on ${evaluation.eval_dir}: ${evaluation.passed ? "passed" : "not passed"}`),
        );
      }
      const agreement = status.agreement;
      if (agreement) {
        const k = agreement.k;
        const recent = agreement.recent_searches || {};
        const sample = agreement.sample || {};
        parts.push(
          el("h3", {}, "Agreement with the serving version"),
          table(
            ["on", "queries", `overlap of the top ${k}`, `clicked results in the candidate's top ${k}`],
            [
              ["recent searches by id", fmt.num(recent.n), fmt.pct(recent[`overlap@${k}`]), fmt.pct(recent[`clicked_in_candidate_top${k}`])],
              ["a sample of the catalogue", fmt.num(sample.n), fmt.pct(sample[`overlap@${k}`]), "–"],
            ],
          ),
        );
      }
      fill("#candidate", parts);
    },

    // The learning loop's decisions (`lookalike learn run` on this worker's data dir).
    async learn() {
      let answer;
      try {
        answer = await api("/learn?limit=10");
      } catch (error) {
        fill("#learn", el("p", { class: "muted" }, explain(error)));
        return;
      }
      const decisions = answer.decisions || [];
      if (!decisions.length) {
        fill("#learn", el("p", { class: "muted" }, "No decisions yet: run `lookalike learn run` (or on a schedule)."));
        return;
      }
      fill(
        "#learn",
        table(
          ["#", "when", "decision", "candidate", "why"],
          decisions.map((d) => [String(d.id), fmt.time(d.at), el("span", { class: `badge learn-${d.kind}` }, d.kind.replaceAll("_", " ")), d.candidate ? el("code", {}, d.candidate) : "–", d.reason]),
        ),
      );
    },

    async step(path, body, question) {
      if (question && !window.confirm(question)) return;
      const out = $("#rollout-result");
      out.hidden = false;
      out.textContent = `${path}…`;
      try {
        const answer = await api(path, { method: "POST", json: body });
        out.textContent = JSON.stringify(answer, null, 2);
        say(`${path.split("/").pop()}: done.`);
      } catch (error) {
        out.textContent = explain(error);
        say(explain(error), "error");
      }
      rollout.load();
    },

    setup() {
      $("#rollout-start").addEventListener("submit", (event) => {
        event.preventDefault();
        rollout.step("/rollout/start", { encoder: $("#rollout-encoder").value.trim() });
      });
      $("#rollout-promote").addEventListener("submit", (event) => {
        event.preventDefault();
        const body = { force: $("#rollout-force").checked };
        if ($("#rollout-eval-dir").value.trim()) body.eval_dir = $("#rollout-eval-dir").value.trim();
        rollout.step("/rollout/promote", body, "Serve the candidate? Searches switch to it at once.");
      });
      $("#rollout-rollback").addEventListener("click", () =>
        rollout.step("/rollout/rollback", {}, "Serve the previous version again?"),
      );
      $("#rollout-abort").addEventListener("click", () =>
        rollout.step("/rollout/abort", {}, "Drop the candidate and its backfill?"),
      );
      $("#rollout-retire").addEventListener("click", () =>
        rollout.step("/rollout/retire", { drop: $("#rollout-drop").checked }, "Stop writing the previous version?"),
      );
    },
  };

  // --- views and polling -------------------------------------------------------------------------
  const views = {
    search: { enter: () => {} },
    alerts: { enter: alerts.load },
    pipeline: { enter: pipeline.load, poll: pipeline.load, every: 2000 },
    rollout: { enter: () => rollout.load(true), poll: () => rollout.load(false), every: 3000 },
  };
  let poller = null;

  function route() {
    const name = (location.hash || "#search").slice(1);
    const view = views[name] ? name : "search";
    for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
    for (const link of document.querySelectorAll(".tabs a[data-view]")) {
      link.classList.toggle("active", link.dataset.view === view);
    }
    clearInterval(poller);
    poller = null;
    views[view].enter();
    if (views[view].poll) poller = setInterval(() => document.hidden || views[view].poll(), views[view].every);
  }

  window.addEventListener("hashchange", route);
  document.addEventListener("DOMContentLoaded", () => {
    setupToken();
    search.setup();
    alerts.setup();
    rollout.setup();
    showRole();
    route();
  });
})();
