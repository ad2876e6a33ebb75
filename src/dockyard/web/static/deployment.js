// The deployment page: the build log and status, live from the API's deployment stream.
"use strict";

(function () {
  const dy = window.dockyard;
  const pre = document.getElementById("build-log");
  const status = document.getElementById("deployment-status");
  const state = document.getElementById("stream-state");
  const deploymentId = pre.dataset.deployment;
  const finals = new Set(["success", "build-error", "crashed-error", "timeout-error", "hook-error", "aborted"]);

  const duration = document.getElementById("deployment-duration");
  let ended = finals.has(status.textContent);

  // Once the deployment ends, its duration as the API reports it.
  async function showDuration() {
    const response = await fetch(pre.dataset.deploymentUrl, {
      headers: { Authorization: `Bearer ${await dy.token()}` },
    });
    if (response.ok) {
      const seconds = (await response.json()).deployment.duration;
      duration.textContent = seconds >= 60 ? `${Math.floor(seconds / 60)} min ${seconds % 60} s` : `${seconds} s`;
    }
  }

  function showStatus(value) {
    status.textContent = value;
    status.className = `status status-${value}`;
    if (finals.has(value)) {
      state.textContent = `The deployment ended: ${value}.`;
      if (!ended) {
        ended = true;
        showDuration().catch((error) => {
          duration.textContent = `unknown (${error.message})`;
        });
      }
    }
  }

  function append(line) {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent += `${line}\n`;
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  async function connect() {
    const token = await dy.token();
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${window.location.host}${pre.dataset.streamPath}`);
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "auth", data: { token } }));
    });
    socket.addEventListener("message", (message) => {
      const frame = JSON.parse(message.data);
      if (frame.id !== deploymentId) return;
      if (frame.type === "new") {
        // The stream replays this deployment's whole log: it replaces the stored copy.
        pre.textContent = "";
        showStatus(frame.data.deployment.status);
        if (!finals.has(frame.data.deployment.status)) state.textContent = "Following the build live.";
      } else if (frame.type === "log") {
        append(frame.data.content);
      } else if (frame.type === "status") {
        showStatus(frame.data.status);
      }
    });
    socket.addEventListener("close", (event) => {
      if (!finals.has(status.textContent)) {
        state.textContent = `The live stream closed (${event.reason || event.code}): reload the page to follow again.`;
      }
    });
  }

  connect().catch((error) => {
    state.textContent = `The build log could not be followed live: ${error.message}`;
  });
})();
