// Shared by the dashboard's pages: the page's short-lived API token and error wording.
"use strict";

window.dockyard = {
  csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  },

  // A JWT for this session's user, valid a few minutes: what the page sends to the API.
  async token() {
    const response = await fetch("/session/token", {
      method: "POST",
      headers: { "X-CSRF-Token": window.dockyard.csrf() },
      credentials: "same-origin",
    });
    const body = await response.json();
    if (!response.ok) {
      throw new Error(body.error || "Could not get a token: sign in again.");
    }
    return body.token;
  },

  // The words of an API error body ({"error"}, {"errors": {field: [..]}}, not found).
  async describe(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (_ignored) {
      return `The server answered ${response.status}.`;
    }
    if (body && body.errors) {
      return Object.entries(body.errors)
        .map(([field, messages]) => `${field} ${messages.join(", ")}`)
        .join("; ");
    }
    if (body && body.resource) {
      return `${body.resource} not found`;
    }
    return (body && body.error) || `The server answered ${response.status}.`;
  },

  // A same-origin path for one of the API's absolute URLs (its public URL may name the
  // host differently from the address bar, and the page may only talk to its own origin).
  samePath(url) {
    const parsed = new URL(url, window.location.href);
    return parsed.pathname + parsed.search;
  },
};
