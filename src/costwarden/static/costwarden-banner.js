/*
 * <costwarden-banner>: the degradation banner of a costwarden gateway, live.
 *
 *   <script src="https://gw.example.com/v1/costwarden/banner.js" defer></script>
 *   <costwarden-banner src="https://gw.example.com/v1/costwarden/status/events"
 *                      key="cw-..."></costwarden-banner>
 *
 * It reads the gateway's status stream with fetch (the key goes in the Authorization header,
 * never in a URL), shows the operator's message while the service is "degraded" or
 * "disabled" and hides itself while it is "ok". The key is visible to anyone who can read
 * the page: give it a virtual key meant for the browser (its own key, with a small budget).
 *
 * Attributes: src (the events URL), key, degraded-text and disabled-text (shown when the
 * operator gave no message). Each status is also dispatched as a "costwarden-status" event
 * (detail: the status object). No dependencies.
 */
(() => {
  "use strict";
  if (typeof customElements === "undefined" || customElements.get("costwarden-banner")) {
    return;
  }
  const STYLE =
    ":host{display:block}" +
    ".b{font:14px/1.4 system-ui,sans-serif;padding:.6em 1em;border-bottom:1px solid}" +
    ".b[hidden]{display:none}" +
    ".degraded{background:#fff4ce;color:#3d2e00;border-color:#c9a400}" +
    ".disabled{background:#fde7e9;color:#5c0011;border-color:#c50f1f}";
  const TEXT = {
    degraded: "Some AI features may be slow or unavailable right now.",
    disabled: "AI features are temporarily unavailable.",
  };

  class CostwardenBanner extends HTMLElement {
    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      const style = document.createElement("style");
      style.textContent = STYLE;
      this._box = document.createElement("div");
      this._box.className = "b";
      this._box.setAttribute("role", "status");
      this._box.setAttribute("aria-live", "polite");
      this._box.hidden = true;
      root.append(style, this._box);
      this._abort = null;
      this._delay = 1000;
      this._timer = 0;
    }

    static get observedAttributes() {
      return ["src", "key"];
    }

    connectedCallback() {
      this._start();
    }

    disconnectedCallback() {
      this._stop();
    }

    attributeChangedCallback() {
      if (this.isConnected) {
        this._start();
      }
    }

    _stop() {
      clearTimeout(this._timer);
      if (this._abort) {
        this._abort.abort();
        this._abort = null;
      }
    }

    _start() {
      this._stop();
      const src = this.getAttribute("src");
      const key = this.getAttribute("key");
      if (!src || !key) {
        return;
      }
      const abort = new AbortController();
      this._abort = abort;
      this._read(src, key, abort.signal).then(
        (again) => again && this._retry(abort),
        () => this._retry(abort),
      );
    }

    _retry(abort) {
      if (this._abort !== abort) {
        return; // stopped or restarted meanwhile
      }
      this._timer = setTimeout(() => this._start(), this._delay);
      this._delay = Math.min(this._delay * 2, 30000);
    }

    async _read(src, key, signal) {
      const res = await fetch(src, {
        headers: { Authorization: "Bearer " + key, Accept: "text/event-stream" },
        cache: "no-store",
        signal,
      });
      if (res.status === 401 || res.status === 403) {
        console.warn("costwarden-banner: the gateway refused the key (" + res.status + ")");
        return false; // no retry with a key refused
      }
      if (!res.ok || !res.body) {
        return true;
      }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          return true;
        }
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          this._frame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    }

    _frame(text) {
      let kind = "message";
      const data = [];
      for (const line of text.split("\n")) {
        if (line.startsWith("event:")) {
          kind = line.slice(6).trim();
        } else if (line.startsWith("data:")) {
          data.push(line.slice(5).replace(/^ /, ""));
        }
      }
      if (kind !== "status" || !data.length) {
        return; // a keep-alive comment, or not ours
      }
      let status;
      try {
        status = JSON.parse(data.join("\n"));
      } catch (_) {
        return;
      }
      this._delay = 1000;
      this._show(status);
    }

    _show(status) {
      const box = this._box;
      const state = status.status;
      if (state === "degraded" || state === "disabled") {
        const text = status.message || this.getAttribute(state + "-text") || TEXT[state];
        box.className = "b " + state;
        box.setAttribute("aria-live", state === "disabled" ? "assertive" : "polite");
        box.textContent = text;
        box.hidden = false;
      } else {
        box.hidden = true;
        box.textContent = "";
      }
      this.setAttribute("status", state || "ok");
      this.dispatchEvent(new CustomEvent("costwarden-status", { detail: status, bubbles: true }));
    }
  }

  customElements.define("costwarden-banner", CostwardenBanner);
})();
