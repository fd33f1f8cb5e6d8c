// The API reference: draws /openapi.json (generated from the models that validate requests).
"use strict";

(() => {
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Docstrings use ``code`` (and descriptions `code`): show it as code.
  function prose(text) {
    if (!text) return null;
    const parts = String(text).split(/``?([^`]+)``?/);
    return el("span", {}, parts.map((part, i) => (i % 2 ? el("code", {}, part) : part)));
  }

  const refName = (ref) => ref.split("/").pop();

  function typeOf(schema) {
    if (!schema) return "any";
    if (schema.$ref) return el("a", { href: `#schema-${refName(schema.$ref)}` }, refName(schema.$ref));
    if (schema.const !== undefined) return JSON.stringify(schema.const);
    if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
    const union = schema.anyOf || schema.oneOf;
    if (union) {
      const parts = [];
      union.forEach((s, i) => {
        if (i) parts.push(" | ");
        parts.push(typeOf(s));
      });
      return el("span", {}, parts);
    }
    if (schema.type === "array") return el("span", {}, typeOf(schema.items), "[]");
    if (schema.type === "object" && schema.additionalProperties && typeof schema.additionalProperties === "object") {
      return el("span", {}, "map of ", typeOf(schema.additionalProperties));
    }
    if (schema.format === "binary") return "file";
    if (schema.format) return `${schema.type} (${schema.format})`;
    return schema.type || "any";
  }

  function limits(schema) {
    const found = [];
    const s = schema.anyOf ? schema.anyOf.find((x) => x.type && x.type !== "null") || schema : schema;
    if (s.minLength !== undefined) found.push(`≥ ${s.minLength} chars`);
    if (s.maxLength !== undefined) found.push(`≤ ${s.maxLength} chars`);
    if (s.minimum !== undefined) found.push(`≥ ${s.minimum}`);
    if (s.exclusiveMinimum !== undefined) found.push(`> ${s.exclusiveMinimum}`);
    if (s.maximum !== undefined) found.push(`≤ ${s.maximum}`);
    if (s.maxItems !== undefined) found.push(`≤ ${s.maxItems} items`);
    if (schema.default !== undefined && schema.default !== null) found.push(`default ${JSON.stringify(schema.default)}`);
    return found.join(", ");
  }

  function fields(schema) {
    const required = new Set(schema.required || []);
    const rows = Object.entries(schema.properties || {}).map(([name, prop]) =>
      el(
        "tr",
        {},
        el("td", {}, el("code", {}, name), required.has(name) ? " *" : ""),
        el("td", {}, typeOf(prop)),
        el("td", {}, limits(prop)),
        el("td", {}, prose(prop.description)),
      ),
    );
    if (!rows.length) return el("p", { class: "muted" }, typeOf(schema));
    return el(
      "table",
      {},
      el("thead", {}, el("tr", {}, ["field (* required)", "type", "limits", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows),
    );
  }

  function parameters(list) {
    if (!list || !list.length) return null;
    return el(
      "div",
      {},
      el("h4", {}, "Parameters"),
      el(
        "table",
        {},
        el("thead", {}, el("tr", {}, ["name", "in", "type", "limits", ""].map((h) => el("th", {}, h)))),
        el(
          "tbody",
          {},
          list.map((p) =>
            el(
              "tr",
              {},
              el("td", {}, el("code", {}, p.name), p.required ? " *" : ""),
              el("td", {}, p.in),
              el("td", {}, typeOf(p.schema)),
              el("td", {}, limits(p.schema || {})),
              el("td", {}, prose(p.description)),
            ),
          ),
        ),
      ),
    );
  }

  function body(requestBody) {
    if (!requestBody) return null;
    return el(
      "div",
      {},
      el("h4", {}, requestBody.required ? "Body" : "Body (optional)"),
      Object.entries(requestBody.content).map(([media, { schema }]) =>
        el("div", {}, el("p", {}, el("code", {}, media)), schema.properties ? fields(schema) : el("p", {}, typeOf(schema))),
      ),
    );
  }

  function responses(all) {
    const ok = Object.entries(all).filter(([code]) => code < "400");
    return el(
      "div",
      {},
      el("h4", {}, "Answers"),
      ok.map(([code, response]) =>
        el(
          "p",
          {},
          el("strong", {}, code),
          " ",
          Object.entries(response.content || {}).map(([media, { schema }]) => el("span", {}, el("code", {}, media), " ", typeOf(schema), " ")),
        ),
      ),
      el("p", { class: "muted small" }, "Errors: ", Object.keys(all).filter((c) => c >= "400").join(", "), ", as ", el("code", {}, '{"error": "..."}'), "."),
    );
  }

  function draw(doc) {
    const root = document.getElementById("doc");
    const operations = [];
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(methods)) operations.push({ path, method, op });
    }
    const anchor = (o) => `op-${o.op.operationId}`;
    const children = [
      el("h1", {}, doc.info.title, " ", el("span", { class: "muted" }, doc.info.version)),
      el("p", {}, prose(doc.info.description)),
      el("p", { class: "muted" }, `${operations.length} operations. Roles: `, (doc.tags || []).map((t) => el("span", {}, el("span", { class: "badge" }, t.name), ` ${t.description} `))),
      el("nav", { class: "toc" }, operations.map((o) => el("a", { href: `#${anchor(o)}` }, `${o.method.toUpperCase()} ${o.path}`))),
      operations.map((o) =>
        el(
          "section",
          { class: "operation", id: anchor(o), "data-path": o.path, "data-method": o.method },
          el("h3", {}, el("span", { class: `method ${o.method}` }, o.method.toUpperCase()), el("code", {}, o.path), el("span", { class: "badge role" }, o.op["x-role"])),
          el("p", {}, o.op.summary),
          el("p", { class: "muted small" }, o.op.description),
          parameters(o.op.parameters),
          body(o.op.requestBody),
          responses(o.op.responses),
        ),
      ),
      el("h2", {}, "Schemas"),
      Object.entries(doc.components.schemas).map(([name, schema]) =>
        el("section", { class: "schema operation", id: `schema-${name}` }, el("h3", {}, name), el("p", {}, prose(schema.description)), fields(schema)),
      ),
    ];
    root.replaceChildren(...children.flat());
    if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
  }

  document.addEventListener("DOMContentLoaded", () => {
    fetch("/openapi.json")
      .then((r) => r.json())
      .then(draw)
      .catch((error) => {
        document.getElementById("doc").textContent = `Cannot read /openapi.json: ${error}`;
      });
  });
})();
