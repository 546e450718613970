/* The live preview of a correction (executions.admin_corrections): as you edit the form
   (debounced) or on "Preview", it posts the form's values to the preview view, shows the
   fragment that answers (stale set, what runs, what is reused, predicted values) and puts its
   preview token in the form, so the save applies only what was shown or is refused. An edit
   clears the token until its own preview arrives: a save without one is checked as a save
   without JavaScript is. */
"use strict";
(function () {
  const panel = document.getElementById("correction-live-preview");
  if (!panel) return;
  const form = panel.closest("form");
  const body = document.getElementById("correction-preview-body");
  const status = document.getElementById("correction-preview-status");
  const button = document.getElementById("correction-preview-button");
  const token = form.elements.namedItem("preview_token");
  const PREVIEWED = ["status", "output", "error", "execute_flow"]; // what the token covers
  const DELAY_MS = 600;
  let timer = null;
  let sequence = 0; // a response is shown only if nothing was edited since its request

  button.hidden = false;
  document.getElementById("correction-preview-nojs").hidden = true;

  function shown(result) {
    // The static "Tasks a changed output marks stale" is a guess; the live preview is exact.
    const guess = form.querySelector(".field-correction_preview");
    if (guess) guess.hidden = true;
    token.value = result.dataset.previewToken || "";
    // Seen: whether the preview is current; heard (the status is live): what it says.
    const heard = document.createElement("span");
    heard.className = "visually-hidden";
    heard.textContent = ` ${result.dataset.summary || ""}`;
    const seen = token.value
      ? "✓ Up to date with the values above."
      : "✗ This correction cannot be saved as it is (see below).";
    status.replaceChildren(seen, heard);
  }

  async function preview() {
    clearTimeout(timer);
    const mine = ++sequence;
    token.value = "";
    const invalid = form.querySelector('textarea[data-json-editor][data-json-valid="false"]');
    if (invalid) {
      status.textContent = `Fix the JSON in “${invalid.name}” to see the preview.`;
      return;
    }
    status.textContent = "Previewing…";
    body.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(panel.dataset.url, {
        method: "POST",
        body: new FormData(form),
        credentials: "same-origin",
      });
      if (mine !== sequence) return;
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      body.innerHTML = await response.text(); // the admin's own escaped fragment
      const result = body.querySelector("[data-preview-token]");
      if (result) shown(result);
    } catch (error) {
      if (mine === sequence) {
        status.textContent = `The preview could not be loaded (${error.message}); saving still works.`;
      }
    } finally {
      if (mine === sequence) body.removeAttribute("aria-busy");
    }
  }

  form.addEventListener("input", (event) => {
    if (!PREVIEWED.includes(event.target.name)) return;
    sequence++;
    token.value = "";
    clearTimeout(timer);
    timer = setTimeout(preview, DELAY_MS);
  });
  button.addEventListener("click", preview);
  // A refused save shows its fresh preview, whose token the form already carries.
  const refused = body.querySelector("[data-preview-token]");
  if (refused) shown(refused);
})();
