/* Sign in with ShotGrid (App Session Launcher) on the broker's login page.
 *
 * An enhancement of plain HTML. Without this script, the "Sign in with ShotGrid" link starts
 * the request; the next page links to ShotGrid's approval page and has a Continue button. With
 * it, the click opens ShotGrid's approval page in a new tab at once, and this page checks
 * every few seconds and continues by itself once the person approved. The checks are the
 * same form posts answered in JSON; the broker polls ShotGrid at most every 2 s per
 * sign-in however often this asks. Same origin only (CSP script-src/connect-src 'self').
 */
(function () {
  "use strict";

  var waiting = document.getElementById("shotgrid-waiting");
  if (!waiting) {
    return;
  }
  var pollMs = Math.max(200, parseInt(waiting.getAttribute("data-poll-ms"), 10) || 2000);
  var statusLine = document.getElementById("shotgrid-status");
  var alertBox = document.getElementById("form-error");
  var startLink = document.getElementById("shotgrid-sign-in");
  var passwordForm = document.getElementById("password-form");
  var checkForm = document.getElementById("shotgrid-check");
  var timer = null;
  var checking = false;
  var handle = null;
  var action = null;
  var carried = null;

  function hiddenFields(form) {
    var fields = new URLSearchParams();
    var inputs = form.querySelectorAll("input[type=hidden]");
    for (var i = 0; i < inputs.length; i++) {
      fields.append(inputs[i].name, inputs[i].value);
    }
    return fields;
  }

  function say(text) {
    statusLine.textContent = text || "";
  }

  function showError(text) {
    var line = document.createElement("p");
    line.textContent = text;
    alertBox.textContent = "";
    alertBox.appendChild(line);
  }

  function post(fields) {
    return fetch(action, {
      method: "POST",
      body: fields,
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      redirect: "manual",
      cache: "no-store"
    }).then(function (response) {
      if (response.type === "opaqueredirect") {
        throw new Error("redirected");
      }
      return response.json();
    });
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(check, ms);
  }

  function stop(text) {
    clearTimeout(timer);
    handle = null;
    say("");
    showError(text);
  }

  function check() {
    if (checking || !handle) {
      return;
    }
    checking = true;
    var fields = new URLSearchParams(carried);
    fields.set("signin", "shotgrid_check");
    fields.set("signin_handle", handle);
    post(fields).then(
      function (answer) {
        checking = false;
        if (answer.status === "approved" && answer.redirect) {
          say("Approved. Continuing…");
          window.location.assign(answer.redirect);
        } else if (answer.status === "pending") {
          say(answer.message);
          schedule(pollMs);
        } else if (answer.status === "unavailable") {
          say(answer.message);
          schedule(Math.max(pollMs, (answer.retry_after || 5) * 1000));
        } else {
          stop(answer.message || "ShotGrid sign-in could not continue. Start again.");
        }
      },
      function () {
        checking = false;
        say("The sign-in service did not answer. Trying again…");
        schedule(Math.max(pollMs, 5000));
      }
    );
  }

  function showWaiting(answer) {
    document.getElementById("shotgrid-app-name").textContent = answer.app_name;
    document.getElementById("shotgrid-open").href = answer.url;
    var choices = document.getElementById("signin-choices");
    if (choices) {
      choices.hidden = true;
    }
    waiting.hidden = false;
    say(answer.message);
  }

  if (startLink && passwordForm) {
    action = passwordForm.action;
    carried = hiddenFields(passwordForm);
    startLink.addEventListener("click", function (event) {
      event.preventDefault();
      // Open the tab while the click still counts as the person's (browsers block windows
      // opened later); it is sent to ShotGrid once the request exists.
      var tab = window.open("", "_blank");
      var fields = new URLSearchParams(carried);
      fields.set("signin", "shotgrid");
      alertBox.textContent = "";
      post(fields).then(
        function (answer) {
          if (answer.status !== "started") {
            if (tab) {
              tab.close();
            }
            showError(answer.message || "ShotGrid sign-in could not start.");
            return;
          }
          handle = answer.handle;
          showWaiting(answer);
          if (tab) {
            tab.opener = null;
            tab.location.href = answer.url;
          }
          schedule(pollMs);
        },
        function () {
          if (tab) {
            tab.close();
          }
          showError("The sign-in service did not answer. Try again.");
        }
      );
    });
    document.getElementById("shotgrid-continue").addEventListener("click", function () {
      schedule(0);
    });
  } else if (checkForm) {
    // The plain-form waiting page (started without this script, or reloaded): check by
    // itself as well; its Continue button still submits the form.
    action = checkForm.action;
    carried = hiddenFields(checkForm);
    handle = carried.get("signin_handle");
    schedule(pollMs);
  }
})();
