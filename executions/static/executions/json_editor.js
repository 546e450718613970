/* The JSON editor (executions.admin_corrections.JSONEditor): checks a textarea's JSON as you
   type. The line under it says "valid JSON", or where the text stops being JSON (line and
   column) and why; the textarea gets aria-invalid while it is not JSON. An empty textarea is
   valid: it is saved as null. No dependencies; without JavaScript the form checks on save. */
"use strict";
(function () {
  const SPACE = " \t\n\r";

  /* The offset at which `text` stops being JSON (RFC 8259), or null if it is JSON. The
     browser's JSON.parse decides validity; this says where, the same in every browser. */
  function errorOffset(text) {
    let i = 0;
    const fail = () => { throw i; };
    const skipSpace = () => { while (i < text.length && SPACE.includes(text[i])) i++; };
    const string = () => {
      i++;
      while (i < text.length) {
        const c = text[i];
        if (c === '"') { i++; return; }
        if (c < " ") fail();
        if (c === "\\") {
          i++;
          if (text[i] === "u") {
            if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 1, i + 5))) fail();
            i += 4;
          } else if (i >= text.length || !'"\\/bfnrt'.includes(text[i])) fail();
        }
        i++;
      }
      fail();
    };
    const value = () => {
      skipSpace();
      const c = text[i];
      if (c === "{" || c === "[") {
        const close = c === "{" ? "}" : "]";
        i++;
        skipSpace();
        if (text[i] === close) { i++; return; }
        for (;;) {
          if (c === "{") {
            skipSpace();
            if (text[i] !== '"') fail();
            string();
            skipSpace();
            if (text[i] !== ":") fail();
            i++;
          }
          value();
          skipSpace();
          if (text[i] === ",") { i++; continue; }
          if (text[i] === close) { i++; return; }
          fail();
        }
      }
      if (c === '"') return string();
      for (const word of ["true", "false", "null"]) {
        if (text.startsWith(word, i)) { i += word.length; return; }
      }
      const number = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(i));
      if (!number) fail();
      i += number[0].length;
    };
    try {
      value();
      skipSpace();
      if (i < text.length) fail();
      return null;
    } catch (offset) {
      if (typeof offset !== "number") throw offset;
      return offset;
    }
  }

  function lineAndColumn(text, offset) {
    const lines = text.slice(0, offset).split("\n");
    return { line: lines.length, column: lines[lines.length - 1].length + 1 };
  }

  function check(textarea, status, initial) {
    const text = textarea.value;
    let problem = null;
    if (text.trim() !== "") {
      try {
        JSON.parse(text);
      } catch (error) {
        // The browser's reason, without its own (browser-specific) account of where.
        problem = error.message.replace(/\s*(in JSON )?at position \d+.*$/s, "");
      }
    }
    if (problem === null) {
      status.textContent = text.trim() === "" ? "✓ empty: saved as null" : "✓ valid JSON";
      status.className = "json-editor-status json-editor-valid";
      // A server-side error stays marked until the person edits the field.
      if (!initial) textarea.removeAttribute("aria-invalid");
      textarea.dataset.jsonValid = "true";
      return;
    }
    const offset = errorOffset(text);
    let where = "";
    if (offset !== null) {
      const at = lineAndColumn(text, offset);
      where = ` at line ${at.line}, column ${at.column}`;
    }
    status.textContent = `✗ not valid JSON${where}: ${problem}`;
    status.className = "json-editor-status json-editor-invalid";
    textarea.setAttribute("aria-invalid", "true");
    textarea.dataset.jsonValid = "false";
  }

  for (const textarea of document.querySelectorAll("textarea[data-json-editor]")) {
    const status = document.getElementById(textarea.dataset.jsonEditor);
    if (!status) continue;
    check(textarea, status, true);
    textarea.addEventListener("input", () => check(textarea, status, false));
  }
})();
