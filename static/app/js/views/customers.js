// Customers: search by name or phone in any format, create and edit, and the customer page with
// their conversations, calls, deals, invoices, contracts and payments.
import { ApiError, get, hebrewError, keepQuery, patch, post, qs } from '../api.js';
import { announce, clear, errorBox, field, h, openDialog, spinner } from '../dom.js';
import { amount, dateTime, phone as showPhone, seconds, shortWhen } from '../format.js';
import { debounce } from '../live.js';
import { CALL_OUTCOME, CALL_STATUS, CHANNEL, PAYMENT_STATUS, THREAD_STATUS, customerName, phoneEl, statusBadge } from './common.js';
import { DOC_STATUS, documentDialog } from './documents.js';

export async function render(main, params, ctx) {
  if (params.id) return renderCustomer(main, Number(params.id), ctx);
  document.title = 'לקוחות · AgentLocator';
  const path = location.pathname;
  const q = h('input', { type: 'search', name: 'q', value: new URLSearchParams(location.search).get('q') || '',
    placeholder: 'שם, טלפון (בכל צורה) או אימייל' });
  const list = h('div', { class: 'table-wrap', 'aria-live': 'polite' }, spinner());
  const more = h('div', { class: 'more' });
  const add = h('button', { type: 'button', class: 'primary', onclick: () => customerDialog(null, (c) => ctx.navigate(`/app/customers/${c.id}`)) }, 'לקוח חדש');
  main.append(h('div', { class: 'title-row' }, h('h1', {}, 'לקוחות'), add),
    h('form', { class: 'filters', role: 'search', onsubmit: (e) => { e.preventDefault(); load(); } }, field('חיפוש לקוח', q)),
    list, more);
  let cursor = null;
  async function load(append = false) {
    keepQuery(path, { q: q.value.trim() });
    try {
      const page = await get(`/api/crm/customers${qs({ q: q.value.trim(), limit: 50, cursor: append ? cursor : '' })}`);
      cursor = page.next_cursor;
      const rows = page.items.map((c) => h('tr', { dataset: { customerId: c.id } },
        h('td', { 'data-label': 'שם' }, h('a', { href: `/app/customers/${c.id}` }, c.name || '(ללא שם)')),
        h('td', { 'data-label': 'טלפון' }, c.phone ? phoneEl(c.phone) : '—'),
        h('td', { 'data-label': 'אימייל' }, c.email ? h('bdi', { dir: 'ltr' }, c.email) : '—'),
        h('td', { 'data-label': 'נוצר' }, shortWhen(c.created_at))));
      if (append) list.querySelector('tbody').append(...rows);
      else clear(list, rows.length ? h('table', { class: 'list' }, h('caption', { class: 'sr-only' }, 'רשימת לקוחות'),
        h('thead', {}, h('tr', {}, ['שם', 'טלפון', 'אימייל', 'נוצר'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, rows)) : h('p', { class: 'empty' }, 'לא נמצאו לקוחות.'));
      clear(more, cursor ? h('button', { type: 'button', class: 'ghost', onclick: () => load(true) }, 'עוד לקוחות') : null);
    } catch (error) {
      clear(list, errorBox(hebrewError(error)));
    }
  }
  q.addEventListener('input', debounce(() => load(), 300));
  load();
  return null;
}

export function customerDialog(customer, saved) {
  openDialog(customer ? 'עריכת לקוח' : 'לקוח חדש', (close) => {
    const name = h('input', { type: 'text', name: 'name', value: customer ? customer.name : '', maxlength: 200, autocomplete: 'off' });
    const phone = h('input', { type: 'tel', name: 'phone', value: customer && customer.phone ? showPhone(customer.phone) : '',
      required: true, dir: 'ltr', autocomplete: 'off' });
    const email = h('input', { type: 'email', name: 'email', value: (customer && customer.email) || '', dir: 'ltr', autocomplete: 'off' });
    const notes = h('textarea', { name: 'notes', rows: 3 }, (customer && customer.notes) || '');
    const problem = h('div');
    const form = h('form', { class: 'stack' }, field('שם', name), field('טלפון', phone, 'למשל 050-123-4567'),
      field('אימייל', email), field('הערות', notes), problem,
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'שמירה')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      const body = { name: name.value.trim(), phone: phone.value.trim(), email: email.value.trim() || null, notes: notes.value };
      if (!body.phone) { problem.append(errorBox('יש להזין מספר טלפון.')); phone.focus(); return; }
      try {
        const result = customer ? await patch(`/api/crm/customers/${customer.id}`, body) : await post('/api/crm/customers', body);
        close();
        announce('הלקוח נשמר');
        saved(result);
      } catch (error) {
        problem.append(errorBox(hebrewError(error)));
      }
    });
    return form;
  });
}

async function renderCustomer(main, id, ctx) {
  document.title = 'לקוח · AgentLocator';
  const body = h('div', { class: 'customer-page' }, spinner());
  main.append(h('a', { href: '/app/customers', class: 'back' }, '→ כל הלקוחות'), body);
  async function load() {
    let c;
    try {
      c = await get(`/api/crm/customers/${id}`);
    } catch (error) {
      clear(body, h('h1', {}, 'לקוח'), errorBox(error instanceof ApiError && error.status === 404 ? 'הלקוח לא נמצא.' : hebrewError(error)));
      return;
    }
    document.title = `${customerName(c)} · AgentLocator`;
    const edit = h('button', { type: 'button', class: 'ghost', onclick: () => customerDialog(c, load) }, 'עריכה');
    const newInvoice = ctx.owner ? h('button', { type: 'button', class: 'ghost',
      onclick: () => documentDialog('invoices', { customer_id: c.id }, () => load()) }, 'חשבונית חדשה') : null;
    const newDeal = ctx.owner ? h('button', { type: 'button', class: 'ghost',
      onclick: () => documentDialog('deals', { customer_id: c.id }, () => load()) }, 'עסקה חדשה') : null;
    clear(body,
      h('div', { class: 'title-row' }, h('h1', {}, customerName(c)), h('div', { class: 'actions' }, edit, newDeal, newInvoice)),
      h('dl', { class: 'facts' },
        h('dt', {}, 'טלפון'), h('dd', {}, c.phone ? phoneEl(c.phone) : '—'),
        h('dt', {}, 'אימייל'), h('dd', {}, c.email ? h('bdi', { dir: 'ltr' }, c.email) : '—'),
        h('dt', {}, 'לקוח מאז'), h('dd', {}, dateTime(c.created_at)),
        h('dt', {}, 'הערות'), h('dd', { class: 'notes' }, c.notes || '—')),
      section('שיחות בתיבה', c.threads, (t) => h('li', {}, h('a', { href: `/app/inbox/${t.id}` },
        `${CHANNEL[t.channel] || t.channel} · ${THREAD_STATUS[t.status] || t.status} · ${shortWhen(t.last_activity_at)}`))),
      section('שיחות טלפון', c.calls, (call) => h('li', {}, h('a', { href: `/app/calls/${encodeURIComponent(call.call_sid)}` },
        `${dateTime(call.started_at || call.created_at)} · ${call.duration_seconds !== null ? `${seconds(call.duration_seconds)} דק׳` : ''} · ${CALL_OUTCOME[call.outcome] || CALL_STATUS[call.status] || call.status}`))),
      docSection('עסקאות', 'deals', c.deals),
      docSection('חשבוניות', 'invoices', c.invoices),
      docSection('חוזים', 'contracts', c.contracts),
      section('תשלומים', c.payments, (p) => h('li', {}, `${amount(p.amount_minor, p.currency)} · `,
        statusBadge(PAYMENT_STATUS[p.status] || p.status, p.status), ` · ${p.description || ''} · ${dateTime(p.created_at)}`)));
  }
  await load();
  return null;
}

function section(title, items, row) {
  return h('section', { class: 'related' }, h('h2', {}, title),
    items && items.length ? h('ul', {}, items.map(row)) : h('p', { class: 'empty' }, 'אין.'));
}

function docSection(title, kind, items) {
  return section(title, items, (d) => h('li', {}, h('a', { href: `/app/${kind}/${d.id}` }, d.title || `#${d.id}`),
    ` · ${amount(d.amount_minor, d.currency)} · `, statusBadge(DOC_STATUS[kind][d.status] || d.status, d.status)));
}
