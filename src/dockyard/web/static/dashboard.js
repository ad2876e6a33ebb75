// The app page: deploy by dropping an archive (with upload progress) and the live logs.
"use strict";

(function () {
  const dy = window.dockyard;

  function setupDeploy() {
    const form = document.getElementById("deploy-form");
    if (!form) return;
    const input = document.getElementById("archive");
    const progress = document.getElementById("upload-progress");
    const message = document.getElementById("deploy-message");
    const app = form.dataset.app;
    const maxBytes = Number(form.dataset.maxBytes);

    function say(text, isError) {
      message.textContent = text;
      message.classList.toggle("error", Boolean(isError));
    }

    function upload(url, file) {
      return new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        xhr.open("PUT", dy.samePath(url));
        xhr.setRequestHeader("Content-Type", "application/x-gzip");
        xhr.upload.addEventListener("progress", (event) => {
          if (event.lengthComputable) {
            const percent = Math.round((100 * event.loaded) / event.total);
            progress.value = percent;
            progress.textContent = `${percent}%`;
          }
        });
        xhr.addEventListener("load", () => {
          if (xhr.status === 200) {
            resolve();
            return;
          }
          let text = `The upload was refused (${xhr.status}).`;
          try {
            text = JSON.parse(xhr.responseText).error || text;
          } catch (_ignored) {
            // not JSON: keep the status
          }
          reject(new Error(text));
        });
        xhr.addEventListener("error", () => reject(new Error("The upload failed: the connection was lost.")));
        xhr.send(file);
      });
    }

    async function api(path, token, body) {
      const response = await fetch(path, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (!response.ok) throw new Error(await dy.describe(response));
      return response.json();
    }

    async function deploy(file) {
      if (!file) {
        say("Choose a .tar.gz archive first.", true);
        return;
      }
      if (!/\.(tar\.gz|tgz)$/i.test(file.name)) {
        say(`${file.name} is not a .tar.gz archive: compress your app with tar -czf app.tar.gz .`, true);
        return;
      }
      if (file.size > maxBytes) {
        say(`${file.name} is ${file.size} bytes; the limit is ${maxBytes} bytes.`, true);
        return;
      }
      try {
        progress.value = 0;
        say(`Uploading ${file.name}…`);
        const source = (await api("/v1/sources", await dy.token(), {})).source;
        await upload(source.upload_url, file);
        say("Uploaded. Starting the deployment…");
        const created = await api(`/v1/apps/${encodeURIComponent(app)}/deployments`, await dy.token(), {
          deployment: { source_url: source.download_url, git_ref: null },
        });
        window.location.assign(`/apps/${encodeURIComponent(app)}/deployments/${created.deployment.id}`);
      } catch (error) {
        say(error.message, true);
      }
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      deploy(input.files[0]);
    });
    form.addEventListener("dragover", (event) => {
      event.preventDefault();
      form.classList.add("dragging");
    });
    form.addEventListener("dragleave", () => form.classList.remove("dragging"));
    form.addEventListener("drop", (event) => {
      event.preventDefault();
      form.classList.remove("dragging");
      const file = event.dataTransfer.files[0];
      deploy(file);
    });
  }

  async function followLogs() {
    // As the official client does: the logs URL (a capability for this app's logs), its
    // history, then its WebSocket for new lines.
    const pre = document.getElementById("app-logs");
    if (!pre) return;
    const state = document.getElementById("logs-state");
    const keep = 500;
    const show = (text) => {
      pre.textContent += text.endsWith("\n") ? text : `${text}\n`;
      const lines = pre.textContent.split("\n");
      if (lines.length > keep) pre.textContent = lines.slice(-keep).join("\n");
      pre.scrollTop = pre.scrollHeight;
    };
    try {
      const response = await fetch(pre.dataset.logsUrl, {
        headers: { Authorization: `Bearer ${await dy.token()}` },
      });
      if (!response.ok) {
        state.textContent = await dy.describe(response);
        return;
      }
      // On this page's own origin (the page's policy allows no other): the URL names the
      // API's public address, which may not be the one this browser reached it by.
      const logsPath = dy.samePath((await response.json()).logs_url);
      const history = await fetch(`${logsPath}&n=100`);
      if (history.status === 200) show(await history.text());
      const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
      const socket = new WebSocket(`${scheme}//${window.location.host}${logsPath}&stream=true`);
      socket.addEventListener("open", () => {
        state.textContent = "Following the app's output live.";
      });
      socket.addEventListener("message", (event) => {
        const message = JSON.parse(event.data);
        if (message.event === "log") show(message.log);
      });
      socket.addEventListener("close", () => {
        state.textContent = "The log stream ended: reload the page to follow again.";
      });
    } catch (error) {
      state.textContent = `The logs could not be followed: ${error.message}`;
    }
  }

  setupDeploy();
  followLogs();
})();
