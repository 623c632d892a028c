// Deals, invoices and contracts: lists, create, status changes, and from an invoice a payment link
// sent on WhatsApp in one action, whose status then updates live. An owner confirms or rejects an
// invoice's payment that waits for confirmation (a charge the server could not check with the gateway).
import { ApiError, get, hebrewError, keepQuery, patch, post, qs } from '../api.js';
import { announce, clear, errorBox, field, h, openDialog, select, spinner } from '../dom.js';
import { amount, dateTime } from '../format.js';
import { debounce, on } from '../live.js';
import { PAYMENT_STATUS, customerName, paymentLinkDialog, statusBadge } from './common.js';

export const KIND = {
  deals: { one: 'עסקה', many: 'עסקאות', add: 'עסקה חדשה' },
  invoices: { one: 'חשבונית', many: 'חשבוניות', add: 'חשבונית חדשה' },
  contracts: { one: 'חוזה', many: 'חוזים', add: 'חוזה חדש' },
};
export const DOC_STATUS = {
  deals: { open: 'פתוחה', won: 'נסגרה בהצלחה', lost: 'לא נסגרה' },
  invoices: { draft: 'טיוטה', issued: 'הונפקה', paid: 'שולמה', void: 'בוטלה' },
  contracts: { draft: 'טיוטה', sent: 'נשלח', signed: 'נחתם', cancelled: 'בוטל' },
};
const MOVES = {
  deals: { open: ['won', 'lost'], won: ['open'], lost: ['open'] },
  invoices: { draft: ['issued', 'void'], issued: ['paid', 'void'], paid: [], void: [] },
  contracts: { draft: ['sent', 'cancelled'], sent: ['signed', 'cancelled'], signed: [], cancelled: [] },
};
const MOVE_LABEL = {
  deals: { won: 'סימון כזכייה', lost: 'סימון כהפסד', open: 'פתיחה מחדש' },
  invoices: { issued: 'הנפקה', void: 'ביטול', paid: 'סימון כשולמה' },
  contracts: { sent: 'סימון כנשלח', signed: 'סימון כנחתם', cancelled: 'ביטול' },
};

let customersCache = null;
async function customers() {
  if (!customersCache) {
    customersCache = get('/api/crm/customers?limit=200').then((p) => p.items).catch((e) => { customersCache = null; throw e; });
  }
  return customersCache;
}

export async function render(main, params, ctx) {
  const kind = params.kind;
  if (params.id) return renderOne(main, kind, Number(params.id), ctx);
  document.title = `${KIND[kind].many} · AgentLocator`;
  const path = location.pathname;
  const status = select([['', 'הכול'], ...Object.entries(DOC_STATUS[kind])], new URLSearchParams(location.search).get('status') || '',
    { name: 'status' });
  const list = h('div', { class: 'table-wrap', 'aria-live': 'polite' }, spinner());
  const more = h('div', { class: 'more' });
  const add = ctx.owner ? h('button', { type: 'button', class: 'primary', onclick: () => documentDialog(kind, {}, () => load()) }, KIND[kind].add) : null;
  main.append(h('div', { class: 'title-row' }, h('h1', {}, KIND[kind].many), add),
    h('form', { class: 'filters', onsubmit: (e) => e.preventDefault() }, field('סטטוס', status)), list, more);
  let cursor = null;
  let names = new Map();
  async function load(append = false) {
    keepQuery(path, { status: status.value });
    try {
      const [page, people] = await Promise.all([
        get(`/api/crm/${kind}${qs({ status: status.value, limit: 50, cursor: append ? cursor : '' })}`),
        customers().catch(() => [])]);
      names = new Map(people.map((c) => [c.id, customerName(c)]));
      cursor = page.next_cursor;
      const rows = page.items.map((d) => docRow(kind, d, names, ctx, () => load()));
      if (append) list.querySelector('tbody').append(...rows);
      else clear(list, rows.length ? h('table', { class: 'list' }, h('caption', { class: 'sr-only' }, KIND[kind].many),
        h('thead', {}, h('tr', {}, ['כותרת', 'לקוח', 'סכום', 'סטטוס', 'עודכן', 'פעולות'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, rows)) : h('p', { class: 'empty' }, `אין ${KIND[kind].many} להצגה.`));
      clear(more, cursor ? h('button', { type: 'button', class: 'ghost', onclick: () => load(true) }, 'עוד') : null);
    } catch (error) {
      clear(list, errorBox(hebrewError(error)));
    }
  }
  status.addEventListener('change', () => load());
  await load();
  if (kind !== 'invoices') return null;
  return on('payment', debounce((event) => { if (event.invoice_id) load(); }, 200));
}

function docRow(kind, d, names, ctx, changed) {
  return h('tr', { dataset: { documentId: d.id, status: d.status } },
    h('td', { 'data-label': 'כותרת' }, h('a', { href: `/app/${kind}/${d.id}` }, d.title || `${KIND[kind].one} #${d.id}`),
      kind === 'invoices' && d.number ? h('span', { class: 'muted' }, ' (', h('bdi', { dir: 'ltr' }, d.number), ')') : null),
    h('td', { 'data-label': 'לקוח' }, d.customer_id ? h('a', { href: `/app/customers/${d.customer_id}` }, names.get(d.customer_id) || `#${d.customer_id}`) : '—'),
    h('td', { 'data-label': 'סכום' }, amount(d.amount_minor, d.currency)),
    h('td', { 'data-label': 'סטטוס' }, statusBadge(DOC_STATUS[kind][d.status] || d.status, d.status)),
    h('td', { 'data-label': 'עודכן' }, dateTime(d.updated_at)),
    h('td', { 'data-label': 'פעולות', class: 'row-actions' }, actions(kind, d, ctx, changed)));
}

function actions(kind, d, ctx, changed) {
  const buttons = [];
  if (ctx.owner) {
    for (const target of MOVES[kind][d.status] || []) {
      if (kind === 'invoices' && target === 'paid') continue;  // paid comes from the payment itself
      buttons.push(h('button', { type: 'button', class: 'ghost small', 'aria-label': `${MOVE_LABEL[kind][target]}: ${d.title || `#${d.id}`}`,
        onclick: async () => {
          try {
            await post(`/api/crm/${kind}/${d.id}/status`, { status: target });
            announce('הסטטוס עודכן');
            changed();
          } catch (error) { announce(hebrewError(error), 'error'); }
        } }, MOVE_LABEL[kind][target]));
    }
  }
  if (kind === 'invoices' && (d.status === 'issued' || d.status === 'draft')) {
    buttons.push(h('button', { type: 'button', class: 'primary small', 'aria-label': `קישור לתשלום בוואטסאפ: ${d.title || `#${d.id}`}`,
      onclick: () => paymentLinkDialog({ title: `קישור לתשלום: ${d.title || `חשבונית #${d.id}`}`,
        endpoint: `/api/crm/invoices/${d.id}/payment-link`, body: {}, onPaid: changed }) }, 'קישור לתשלום'));
  }
  return buttons;
}

async function renderOne(main, kind, id, ctx) {
  document.title = `${KIND[kind].one} · AgentLocator`;
  const body = h('div', {}, spinner());
  main.append(h('a', { href: `/app/${kind}`, class: 'back' }, `→ כל ה${KIND[kind].many}`), body);
  // Payment events come in bursts (a link opened, then paid): only the latest load may draw, so an
  // older answer arriving last can't put back a status that has moved on.
  let latest = 0;
  async function load() {
    const mine = ++latest;
    let d;
    try {
      d = await get(`/api/crm/${kind}/${id}`);
    } catch (error) {
      clear(body, h('h1', {}, KIND[kind].one), errorBox(error instanceof ApiError && error.status === 404 ? 'המסמך לא נמצא.' : hebrewError(error)));
      return;
    }
    let customer = null;
    if (d.customer_id) { try { customer = await get(`/api/crm/customers/${d.customer_id}`); } catch { customer = null; } }
    const payments = customer ? (customer.payments || []).filter((p) => kind === 'invoices' && p.invoice_id === d.id) : [];
    if (kind === 'invoices' && d.payment_id && !payments.some((p) => p.id === d.payment_id)) {
      // An invoice without a customer (or a payment the customer's list doesn't reach): its link's payment.
      try {
        const p = await get(`/api/crm/payments/${d.payment_id}`);
        payments.push({ ...p, id: p.payment_id });
      } catch { /* the facts above still show */ }
    }
    if (mine !== latest) return;
    const editable = ctx.owner && ['open', 'draft'].includes(d.status);
    clear(body,
      h('div', { class: 'title-row' }, h('h1', {}, d.title || `${KIND[kind].one} #${d.id}`),
        h('div', { class: 'actions' }, actions(kind, d, ctx, load),
          editable ? h('button', { type: 'button', class: 'ghost', onclick: () => documentDialog(kind, d, load) }, 'עריכה') : null)),
      h('dl', { class: 'facts' },
        h('dt', {}, 'סטטוס'), h('dd', { class: 'doc-status' }, statusBadge(DOC_STATUS[kind][d.status] || d.status, d.status)),
        h('dt', {}, 'לקוח'), h('dd', {}, customer ? h('a', { href: `/app/customers/${customer.id}` }, customerName(customer)) : '—'),
        h('dt', {}, 'סכום'), h('dd', {}, amount(d.amount_minor, d.currency)),
        kind === 'invoices' ? [h('dt', {}, 'מספר'), h('dd', {}, d.number ? h('bdi', { dir: 'ltr' }, d.number) : '—'), h('dt', {}, 'לתשלום עד'), h('dd', {}, d.due_date || '—')] : null,
        h('dt', {}, 'נוצר'), h('dd', {}, dateTime(d.created_at)),
        h('dt', {}, 'הערות'), h('dd', { class: 'notes' }, d.notes || '—')),
      kind === 'contracts' && d.body ? h('section', {}, h('h2', {}, 'נוסח החוזה'), h('pre', { class: 'transcript' }, d.body)) : null,
      payments.length ? h('section', { class: 'related payments' }, h('h2', {}, 'תשלומים'), h('ul', {}, payments.map((p) =>
        h('li', { dataset: { paymentId: p.id, status: p.status } },
          `${amount(p.amount_minor, p.currency)} · ${p.provider} · `, statusBadge(PAYMENT_STATUS[p.status] || p.status, p.status),
          ` · ${dateTime(p.created_at)}`,
          ctx.owner && p.status === 'awaiting_confirm' ? settleButtons(p, load) : null)))) : null);
  }
  await load();
  return on('payment', debounce((event) => { if (event.invoice_id === id) load(); }, 200));
}

// Confirming or rejecting a payment that waits for confirmation: the server could not check the
// charge with the gateway, so the owner looks for it in the terminal's own reports first.
const SETTLE = {
  confirm: {
    label: 'אישור תשלום', submit: 'אישור התשלום', kind: 'primary', done: 'התשלום אושר',
    text: 'יש לאשר רק אחרי שהחיוב נמצא בדוחות המסוף של חברת הסליקה. התשלום יסומן כשולם, וגם החשבונית.',
  },
  reject: {
    label: 'דחיית תשלום', submit: 'דחיית התשלום', kind: 'danger', done: 'התשלום נדחה',
    text: 'יש לדחות רק כשהחיוב אינו מופיע בדוחות המסוף (הודעת תשלום מזויפת). התשלום יסומן כנדחה והחשבונית תישאר פתוחה, כך שאפשר לשלוח ללקוח קישור חדש.',
  },
};

function settleButtons(p, changed) {
  const what = amount(p.amount_minor, p.currency);
  return h('div', { class: 'actions payment-actions' }, Object.entries(SETTLE).map(([action, text]) =>
    h('button', { type: 'button', class: `${text.kind} small`, 'aria-label': `${text.label}: ${what}`,
      onclick: () => settleDialog(p, action, changed) }, text.label)));
}

function settleDialog(p, action, changed) {
  const text = SETTLE[action];
  openDialog(`${text.label}: ${amount(p.amount_minor, p.currency)}`, (close) => {
    const note = h('textarea', { name: 'note', rows: 2, maxlength: 500 });
    const problem = h('div');
    const submit = h('button', { type: 'submit', class: text.kind }, text.submit);
    const form = h('form', { class: 'stack' }, h('p', {}, text.text),
      field('הערה (לא חובה)', note, 'מה נבדק בדוחות המסוף; נשמר ביומן הפעולות.'), problem,
      h('div', { class: 'actions' }, submit, h('button', { type: 'button', class: 'ghost', onclick: close }, 'ביטול')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      submit.disabled = true;
      const written = note.value.trim();
      try {
        await post(`/api/crm/payments/${p.id}/${action}`, written ? { note: written } : {});
        close();
        announce(text.done);
        changed();
      } catch (error) {
        problem.append(errorBox(hebrewError(error)));
        submit.disabled = false;
        // Someone else settled it meanwhile: the view behind the dialog shows where it is now.
        if (error instanceof ApiError && error.status === 409) changed();
      }
    });
    return form;
  });
}

// Create (values without id) or edit a document. `preset` may carry customer_id.
export function documentDialog(kind, preset, saved) {
  const editing = !!preset.id;
  openDialog(editing ? `עריכת ${KIND[kind].one}` : KIND[kind].add, (close) => {
    const title = h('input', { type: 'text', name: 'title', value: preset.title || '', maxlength: 200, required: true });
    const customer = select([['', 'טוען לקוחות…']], '', { name: 'customer_id' });
    const sum = h('input', { type: 'text', name: 'amount', inputmode: 'decimal', dir: 'ltr',
      value: preset.amount_minor !== undefined ? (preset.amount_minor / 100).toFixed(2) : '', placeholder: '0.00' });
    const notes = h('textarea', { name: 'notes', rows: 2 }, preset.notes || '');
    const number = kind === 'invoices' ? h('input', { type: 'text', name: 'number', value: preset.number || '', dir: 'ltr' }) : null;
    const due = kind === 'invoices' ? h('input', { type: 'date', name: 'due_date', value: preset.due_date || '' }) : null;
    const text = kind === 'contracts' ? h('textarea', { name: 'body', rows: 6 }, preset.body || '') : null;
    const problem = h('div');
    customers().then((list) => {
      clear(customer, h('option', { value: '' }, 'ללא לקוח'),
        list.map((c) => h('option', { value: c.id, selected: c.id === preset.customer_id }, customerName(c))));
    }).catch(() => clear(customer, h('option', { value: preset.customer_id || '' }, preset.customer_id ? `#${preset.customer_id}` : 'ללא לקוח')));
    const form = h('form', { class: 'stack' }, field('כותרת', title), field('לקוח', customer), field('סכום (₪)', sum),
      number ? field('מספר חשבונית', number) : null, due ? field('לתשלום עד', due) : null,
      text ? field('נוסח', text) : null, field('הערות', notes), problem,
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'שמירה')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      if (!title.value.trim()) { problem.append(errorBox('יש להזין כותרת.')); title.focus(); return; }
      const body = { title: title.value.trim(), notes: notes.value,
        customer_id: customer.value ? Number(customer.value) : null };
      if (sum.value.trim()) body.amount = sum.value.trim().replace(/[₪,\s]/g, '');
      if (number) body.number = number.value.trim() || null;
      if (due) body.due_date = due.value || null;
      if (text) body.body = text.value;
      try {
        const result = editing ? await patch(`/api/crm/${kind}/${preset.id}`, body) : await post(`/api/crm/${kind}`, body);
        close();
        announce('נשמר');
        saved(result);
      } catch (error) {
        problem.append(errorBox(hebrewError(error)));
      }
    });
    return form;
  });
}
