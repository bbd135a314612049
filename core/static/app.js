// feeservice pages. Every page loads this one file (deferred): the Content-Security-Policy allows no
// inline script, so each behaviour finds its page by an id or a data- attribute and does nothing
// elsewhere. Texts come from the page (data- attributes written through gettext), never from here.
(function () {
  'use strict';

  // --- cashier: scanning (payments/_scan.html) ----------------------------------------------------
  // A new scan always starts a new lookup: the number left in the box (after a refusal) is selected,
  // so that the next scan replaces it instead of being added to it; digits typed while the focus is
  // elsewhere go to the emptied box.
  var scanBox = document.querySelector('input[data-scan]');
  if (scanBox) {
    scanBox.addEventListener('focus', function () { scanBox.select(); });
    if (document.activeElement === scanBox) scanBox.select();
    document.addEventListener('keydown', function (e) {
      if (e.ctrlKey || e.altKey || e.metaKey) return;
      var t = document.activeElement;
      var typing = t && (t.tagName === 'INPUT' && t.type !== 'radio' || t.tagName === 'TEXTAREA');
      if (/^[0-9]$/.test(e.key) && !typing) { scanBox.value = ''; scanBox.focus(); }
    });
  }

  // --- cashier: paying (payments/cashier.html) -----------------------------------------------------
  // Enter on a method moves to the confirm button: taking money always needs a second, deliberate Enter.
  var payForm = document.getElementById('pay-form');
  if (payForm) {
    var confirmButton = document.getElementById('confirm');
    var showMethod = function () {
      var chosen = payForm.querySelector('input[type=radio]:checked');
      document.getElementById('confirm-method').textContent = chosen ? chosen.dataset.label : '';
    };
    payForm.querySelectorAll('input[type=radio]').forEach(function (r) {
      r.addEventListener('keydown', function (e) {
        if (e.key === 'Enter') { e.preventDefault(); confirmButton.focus(); }
      });
      r.addEventListener('change', showMethod);
    });
    showMethod();
    payForm.addEventListener('submit', function () {
      setTimeout(function () { confirmButton.disabled = true; }, 0);
    });
  }

  // --- cashier: closing the shift (payments/shift.html) -------------------------------------------
  var cashBox = document.getElementById('declared_cash');
  var cashPreview = document.getElementById('cash-preview');
  if (cashBox && cashPreview) {
    var recorded = parseInt(cashBox.dataset.recorded, 10);
    cashBox.addEventListener('input', function () {
      var m = /^\s*(\d+)(?:\.(\d{1,2}))?\s*$/.exec(cashBox.value);
      cashPreview.classList.remove('diff-none', 'diff-some');
      if (!m) { cashPreview.textContent = ''; return; }
      var diff = parseInt(m[1], 10) * 100 + parseInt(((m[2] || '') + '00').slice(0, 2), 10) - recorded;
      var yuan = (Math.abs(diff) / 100).toFixed(2);
      var d = cashPreview.dataset;
      cashPreview.textContent = diff === 0 ? d.same : (diff < 0 ? d.short : d.over) + ' ' + yuan + ' ' + d.unit;
      cashPreview.classList.add(diff === 0 ? 'diff-none' : 'diff-some');
    });
  }

  // --- window: issuing a notice (notices/new.html) ------------------------------------------------
  var noticeForm = document.getElementById('notice-form');
  if (noticeForm) {
    var firstInvalid = noticeForm.querySelector('[aria-invalid="true"]');
    if (firstInvalid) { firstInvalid.focus(); }
    var fen = function (text) {
      text = (text || '').trim();
      if (!/^\d+(\.\d{1,2})?$/.test(text)) { return null; }
      return Math.round(parseFloat(text) * 100);
    };
    var yuanText = function (value) {
      return (value / 100).toLocaleString('zh-CN', {minimumFractionDigits: 2, maximumFractionDigits: 2});
    };
    var update = function () {
      var total = 0;
      noticeForm.querySelectorAll('tr[data-line]').forEach(function (row) {
        var option = row.querySelector('select').selectedOptions[0];
        var cell = row.querySelector('[data-standard]');
        var quantity = row.querySelector('input[name$="-quantity"]').value.trim();
        if (!option || !option.value || !/^\d+$/.test(quantity)) { cell.textContent = ''; return; }
        var standard = parseInt(option.dataset.amount, 10) * parseInt(quantity, 10);
        cell.textContent = yuanText(standard);
        var reduced = fen(row.querySelector('input[name$="-override_amount"]').value);
        total += reduced === null ? standard : reduced;
      });
      document.getElementById('form-total').textContent = yuanText(total);
    };
    noticeForm.addEventListener('input', update);
    noticeForm.addEventListener('change', update);
    update();
    // One press, one notice: a second click while the first is on its way issues nothing.
    var submitNotice = document.getElementById('submit-notice');
    noticeForm.addEventListener('submit', function () { submitNotice.disabled = true; });
    window.addEventListener('pageshow', function () { submitNotice.disabled = false; });
  }

  // --- finance desk: slow forms (reconciliation/*.html) -------------------------------------------
  // A run or an import takes a while: the button says so and cannot be pressed twice.
  document.querySelectorAll('form[data-busy]').forEach(function (form) {
    form.addEventListener('submit', function () {
      var button = form.querySelector('button[type=submit]');
      if (!button) return;
      button.dataset.label = button.textContent;
      setTimeout(function () { button.disabled = true; button.textContent = form.dataset.busy; }, 0);
      form.setAttribute('aria-busy', 'true');
    });
  });
  // Back to a page left while it was working (bfcache): the buttons work again.
  window.addEventListener('pageshow', function () {
    document.querySelectorAll('form[data-busy] button[type=submit]').forEach(function (button) {
      if (button.dataset.label) { button.textContent = button.dataset.label; button.disabled = false; }
    });
  });

  // --- finance desk: a run is working (here or started elsewhere) ---------------------------------
  // Look again in a few seconds, unless a form is being filled in or sent.
  var reload = document.querySelector('[data-reload-after]');
  if (reload) {
    var touched = false;
    document.addEventListener('input', function () { touched = true; });
    document.addEventListener('change', function () { touched = true; });
    setTimeout(function () {
      if (!touched && !document.querySelector('form[aria-busy]')) location.reload();
    }, parseInt(reload.dataset.reloadAfter, 10));
  }
})();
