// Postern Remote UI: small progressive enhancements. Every page works without this script.
(function () {
  'use strict';

  // Typed work is never lost silently: once a form marked data-guard has been changed, pressing another
  // form's button or leaving the page asks first (the page's language gives the words).
  var dirty = null;
  var leaving = false;
  var unsaved = document.body.getAttribute('data-unsaved-confirm') || '';
  document.addEventListener('input', function (event) {
    var form = event.target && event.target.form;
    if (form && form.hasAttribute('data-guard')) dirty = form;
  });
  document.addEventListener('change', function (event) {
    var form = event.target && event.target.form;
    if (form && form.hasAttribute('data-guard')) dirty = form;
  });

  // Forms that ask before doing something destructive; and before another form's button discards typed work.
  document.addEventListener('submit', function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (dirty && dirty !== form && document.body.contains(dirty)) {
      if (!window.confirm(unsaved)) { event.preventDefault(); return; }
    }
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      return;
    }
    leaving = true;
  });
  window.addEventListener('beforeunload', function (event) {
    if (dirty && !leaving && document.body.contains(dirty)) {
      event.preventDefault();
      event.returnValue = unsaved;
      return unsaved;
    }
  });
  window.addEventListener('pageshow', function () { leaving = false; });

  // "Add CN to Verification Items" only means something while "Verify Server Certificate" is on.
  document.querySelectorAll('input[data-controls]').forEach(function (box) {
    var target = document.getElementById(box.dataset.controls);
    if (!target) return;
    var sync = function () { target.disabled = !box.checked; };
    box.addEventListener('change', sync);
    sync();
  });

  // Countdowns (User Code Expires In), corrected for the difference between server and browser clocks.
  var offset = 0;
  function readOffset(root) {
    var table = root.querySelector('[data-server-now]');
    if (table) offset = Number(table.getAttribute('data-server-now')) - Date.now();
  }
  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function tick() {
    document.querySelectorAll('[data-expires-at]').forEach(function (el) {
      var left = Math.max(0, Math.floor((Number(el.getAttribute('data-expires-at')) - (Date.now() + offset)) / 1000));
      el.textContent = left > 0 ? pad(Math.floor(left / 60)) + ':' + pad(left % 60) : (document.body.getAttribute('data-expired-word') || 'Expired');
    });
  }
  readOffset(document);
  tick();
  setInterval(tick, 1000);

  // The status block updates itself; the Refresh button stays for those who prefer it.
  var block = document.getElementById('status-block');
  if (block && block.dataset.statusUrl && window.fetch) {
    var last = null;
    var refresh = function () {
      fetch(block.dataset.statusUrl, { credentials: 'same-origin', headers: { accept: 'text/html' } })
        .then(function (response) {
          if (response.redirected || !response.ok) throw new Error('status ' + response.status);
          return response.text();
        })
        .then(function (html) {
          if (html !== last) {
            last = html;
            block.innerHTML = html;
            readOffset(block);
            tick();
          }
        })
        .catch(function () { /* keep the last status; the next attempt may work */ });
    };
    setInterval(refresh, 2000);
  }
  // E-Mail Settings: choosing another sending account shows its saved settings; once something was typed,
  // it fills in that provider's SMTP defaults instead, unless the administrator changed them
  // (smtp.office365.com:587 STARTTLS / smtp.gmail.com:465 SSL/TLS).
  var account = document.querySelector('select[data-smtp-defaults]');
  if (account) {
    var defaults = {};
    try { defaults = JSON.parse(account.getAttribute('data-smtp-defaults')); } catch (e) { defaults = {}; }
    var host = document.getElementById('smtpHost');
    var port = document.getElementById('smtpPort');
    var mode = document.getElementById('tlsMode');
    var rate = document.getElementById('messagesPerMinute');
    // Account ids start with their provider's name ('microsoft', 'google-3fa9…').
    var providerOf = function (id) { return id.indexOf('google') === 0 ? 'google' : 'microsoft'; };
    var previous = account.value;
    account.addEventListener('change', function () {
      // Nothing typed yet: show the chosen account's own saved settings (saving still makes it the Default).
      if (!dirty && account.dataset.showUrl) {
        leaving = true;
        window.location.href = account.dataset.showUrl + encodeURIComponent(account.value);
        return;
      }
      var from = defaults[providerOf(previous)], to = defaults[providerOf(account.value)];
      previous = account.value;
      if (!from || !to) return;
      if (host && (host.value === '' || host.value === from.host)) host.value = to.host;
      if (port && (port.value === '' || Number(port.value) === from.port)) port.value = String(to.port);
      if (mode && mode.value === from.tlsMode) mode.value = to.tlsMode;
      if (rate && (rate.value === '' || Number(rate.value) === from.messagesPerMinute)) rate.value = String(to.messagesPerMinute);
    });
  }
})();
