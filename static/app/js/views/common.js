// Pieces several screens share: labels, people's names, phone numbers, payment links.
import { get, hebrewCode, hebrewError, idempotencyKey, post } from '../api.js';
import { errorBox, field, h, openDialog, select } from '../dom.js';
import { amount, phone } from '../format.js';
import { on } from '../live.js';

export const THREAD_STATUS = { open: 'פתוחה', pending: 'ממתינה', resolved: 'סגורה' };
export const CHANNEL = { whatsapp: 'וואטסאפ', voice: 'שיחה טלפונית' };
export const MESSAGE_STATUS = {
  queued: 'בתור לשליחה', sent: 'נשלחה', delivered: 'נמסרה', read: 'נקראה', failed: 'נכשלה', received: 'התקבלה',
};
export const MESSAGE_STATUS_ICON = { sent: '✓', delivered: '✓✓', read: '✓✓' };
export const CALL_STATUS = {
  ringing: 'מצלצלת', 'in-progress': 'בשיחה', completed: 'הסתיימה', busy: 'תפוס', 'no-answer': 'לא נענתה',
  failed: 'נכשלה', canceled: 'בוטלה', queued: 'בתור', initiated: 'התחילה',
};
export const CALL_OUTCOME = {
  agent_goodbye: 'הסוכן סיים את השיחה', voicemail: 'הושארה הודעה קולית', transferred: 'הועברה לנציג',
  transfer_no_answer: 'הועברה לנציג ולא נענתה', transfer_busy: 'הועברה לנציג, הקו תפוס',
  transfer_failed: 'ההעברה לנציג נכשלה', transfer_canceled: 'ההעברה לנציג בוטלה',
};
export const PAYMENT_STATUS = {
  created: 'נוצר', pending: 'ממתין לתשלום', paid: 'שולם', failed: 'נכשל', expired: 'פג תוקף', refunded: 'הוחזר',
  awaiting_confirm: 'ממתין לאישור', refund_required: 'נדרש החזר', rejected: 'נדחה',
};
export const PROVIDERS = [['paypal', 'PayPal'], ['tranzila', 'Tranzila']];
export const ROLE = { owner: 'בעלים', agent: 'נציג/ה', admin: 'מנהל/ת מערכת' };

// A phone number keeps its left-to-right digit order inside Hebrew text.
export function phoneEl(e164) {
  return h('bdi', { dir: 'ltr', class: 'num' }, phone(e164));
}

export function customerName(customer) {
  if (!customer) return 'לקוח לא ידוע';
  return customer.name || phone(customer.phone) || customer.wa_lid || `לקוח ${customer.id}`;
}

// Staff names, from the staff directory every role may read (if it can't be had, at least oneself).
let usersPromise = null;
export function loadUsers(ctx) {
  if (!usersPromise) {
    const self = [{ ...ctx.session.user }];
    usersPromise = get('/api/crm/staff').then((r) => r.items).catch(() => self);
  }
  return usersPromise;
}
export function forgetUsers() { usersPromise = null; }

export function personName(users, id, selfId) {
  if (id === null || id === undefined) return null;
  if (id === selfId) return 'את/ה';
  const user = users.find((u) => u.id === id);
  return user ? (user.name || user.email) : `נציג/ה מס׳ ${id}`;
}

// Why a message failed, in words staff can act on.
export function failureReason(message) {
  if (message.error_code === '63016') {
    return 'עברו יותר מ־24 שעות מאז שהלקוח כתב; וואטסאפ מאפשר עכשיו רק תבנית מאושרת.';
  }
  if (message.error_code === '63003' || message.error_code === '63024') return 'המספר אינו זמין בוואטסאפ.';
  const detail = message.error_message || message.error_code;
  return detail ? `סיבה: ${detail}` : 'סיבה לא ידועה';
}

export function statusBadge(text, kind) {
  return h('span', { class: `badge ${kind || ''}` }, text);
}

// The payment link dialog: create the link (and send it on WhatsApp) in one action, then watch it.
export function paymentLinkDialog({ title, endpoint, body, onPaid }) {
  return openDialog(title, (close) => {
    const provider = select(PROVIDERS, 'paypal', { name: 'provider' });
    const extra = body.askAmount ? {
      amount: h('input', { type: 'text', inputmode: 'decimal', name: 'amount', required: true, dir: 'ltr', placeholder: '0.00' }),
      description: h('input', { type: 'text', name: 'description', required: true, maxlength: 500 }),
    } : null;
    const sendWa = h('input', { type: 'checkbox', name: 'send_whatsapp', checked: true });
    const problem = h('div');
    const result = h('div', { class: 'payment-result', 'aria-live': 'polite' });
    const submit = h('button', { type: 'submit', class: 'primary' }, body.askAmount ? 'יצירה ושליחה בוואטסאפ' : 'יצירת קישור');
    let unsubscribe = null;
    const form = h('form', { class: 'stack' },
      extra ? field('סכום (₪)', extra.amount) : null,
      extra ? field('תיאור', extra.description) : null,
      field('ספק תשלום', provider),
      body.askAmount ? null : h('label', { class: 'check' }, sendWa, 'לשלוח ללקוח בוואטסאפ'),
      problem, h('div', { class: 'actions' }, submit), result);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      const payload = { provider: provider.value };
      if (extra) {
        if (!extra.amount.value.trim() || !extra.description.value.trim()) {
          problem.append(errorBox('יש למלא סכום ותיאור.'));
          return;
        }
        Object.assign(payload, { amount: extra.amount.value.trim(), currency: 'ILS', description: extra.description.value.trim() });
      } else {
        payload.send_whatsapp = sendWa.checked;
      }
      submit.disabled = true;
      try {
        const answer = await post(endpoint, payload, { headers: { 'Idempotency-Key': idempotencyKey() } });
        showResult(answer);
        submit.hidden = true;
      } catch (error) {
        problem.append(errorBox(hebrewError(error)));
        submit.disabled = false;
      }
    });

    function showResult(answer) {
      const payment = answer.payment || {};
      const paymentId = payment.payment_id ?? payment.id;
      const status = h('strong', { class: 'payment-status', dataset: { status: payment.status || '' } },
        PAYMENT_STATUS[payment.status] || payment.status || '');
      const wa = answer.whatsapp;
      let waLine = null;
      if (wa) {
        waLine = wa.status === 'failed' || wa.error
          ? errorBox(`הקישור נוצר אך השליחה בוואטסאפ נכשלה.${wa.error ? ` ${hebrewCode(wa.error)}` : ''}`)
          : h('p', { class: 'ok' }, 'הקישור נשלח ללקוח בוואטסאפ.');
      }
      const url = answer.url || payment.url;
      const copy = h('button', { type: 'button', class: 'ghost', onclick: async () => {
        try { await navigator.clipboard.writeText(url); copy.textContent = 'הועתק'; } catch { copy.textContent = 'לא ניתן להעתיק'; }
      } }, 'העתקת הקישור');
      result.replaceChildren(
        h('p', {}, 'הקישור לתשלום: ', h('a', { href: url, target: '_blank', rel: 'noopener', dir: 'ltr' }, url), ' ', copy),
        payment.amount_minor !== undefined ? h('p', {}, 'סכום: ', amount(payment.amount_minor, payment.currency)) : null,
        waLine,
        h('p', {}, 'מצב התשלום: ', status));
      unsubscribe = on('payment', (event) => {
        if (event.payment_id !== paymentId) return;
        status.textContent = PAYMENT_STATUS[event.status] || event.status;
        status.dataset.status = event.status;
        if (event.status === 'paid' && onPaid) onPaid(event);
      });
    }
    queueMicrotask(() => {
      const dialog = form.closest('dialog');
      if (dialog) dialog.addEventListener('close', () => unsubscribe && unsubscribe());
    });
    return form;
  });
}
