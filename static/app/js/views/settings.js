// Settings (owners only): the business profile and what the AI says, feature switches, numbers
// (read-only), payment gateways with write-only secrets, the WhatsApp connection by QR code,
// users, and the audit log.
import { get, hebrewError, patch, post, put, qs } from '../api.js';
import { announce, clear, errorBox, field, h, openDialog, select, spinner } from '../dom.js';
import { dateTime } from '../format.js';
import { PROVIDERS, ROLE, forgetUsers, phoneEl, statusBadge } from './common.js';
import { toolSettings } from './agent.js';

const TABS = [
  ['business', 'פרטי העסק וה-AI'],
  ['payments', 'תשלומים'],
  ['whatsapp', 'חיבור וואטסאפ'],
  ['tools', 'כלים'],
  ['users', 'משתמשים'],
  ['audit', 'יומן פעולות'],
];

export async function render(main, params) {
  const tab = TABS.some(([key]) => key === params.tab) ? params.tab : 'business';
  document.title = `הגדרות · ${TABS.find(([key]) => key === tab)[1]} · AgentLocator`;
  const body = h('div', { class: 'settings-body' }, spinner());
  main.append(h('h1', {}, 'הגדרות'),
    h('nav', { class: 'tabs', 'aria-label': 'חלקי ההגדרות' }, h('ul', {}, TABS.map(([key, text]) =>
      h('li', {}, h('a', { href: `/app/settings/${key}`, 'aria-current': key === tab ? 'page' : null }, text))))),
    body);
  const views = { business, payments, whatsapp, tools: toolSettings, users, audit };
  return views[tab](body);
}

// ---- business profile, AI, features, numbers -------------------------------------------------
async function business(body) {
  const b = await get('/api/crm/business');
  const name = h('input', { type: 'text', name: 'name', value: b.name, required: true, maxlength: 200 });
  const timezone = h('input', { type: 'text', name: 'timezone', value: b.timezone, dir: 'ltr', list: 'tz-list' });
  const zones = h('datalist', { id: 'tz-list' }, ['Asia/Jerusalem', 'Europe/London', 'America/New_York'].map((z) => h('option', { value: z })));
  const instructions = h('textarea', { name: 'ai_instructions', rows: 8, maxlength: 8000 }, b.ai_instructions || '');
  const opening = h('textarea', { name: 'opening_line', rows: 2, maxlength: 500 }, b.opening_line || '');
  const greeting = h('input', { type: 'checkbox', name: 'greeting_enabled', checked: !!b.greeting_enabled });
  const features = Object.entries(b.features || {}).map(([key, on]) => ({ key, input: h('input', { type: 'checkbox', name: `feature-${key}`, checked: !!on }) }));
  const FEATURE_NAMES = {
    wa_auto_reply: 'מענה אוטומטי של ה-AI בוואטסאפ',
    // Writing the reply while the caller's last words are still being transcribed: a faster answer, some extra model tokens.
    preemptive_generation: 'מענה מהיר בשיחות: ה-AI מתחיל לנסח תשובה עוד לפני סוף התמלול',
  };
  const transferNumber = h('input', { type: 'tel', name: 'transfer_number', value: b.transfer_number || '', dir: 'ltr', maxlength: 40, autocomplete: 'off' });
  const transferAnnouncement = h('textarea', { name: 'transfer_announcement', rows: 2, maxlength: 300 }, b.transfer_announcement || '');
  const problem = h('div');
  const form = h('form', { class: 'stack settings-form' },
    h('h2', {}, 'פרטי העסק'),
    field('שם העסק', name), field('אזור זמן', timezone, 'למשל Asia/Jerusalem'), zones,
    h('h2', {}, 'ה-AI'),
    field('הנחיות ל-AI (מה לדעת ואיך לענות)', instructions),
    field('משפט הפתיחה בשיחות טלפון', opening, 'ריק: ברכה בשם העסק'),
    h('label', { class: 'check' }, greeting, 'להשמיע ברכה מוקלטת לפני שה-AI מדבר'),
    h('h2', {}, 'העברת שיחה לנציג'),
    field('מספר להעברת שיחות', transferNumber, 'בשעות הפתיחה ה-AI יכול להעביר אליו שיחה, אחרי שמפעילים את „העברה לנציג אנושי” בלשונית הכלים; ריק: ה-AI לא מעביר שיחות ומציע להשאיר הודעה'),
    field('מה ישמע מי שעונה לפני החיבור', transferAnnouncement, 'ריק: "שיחה מועברת מהמענה הדיגיטלי של" ושם העסק. אחריו נאמרים מספר המתקשר וסיבת הפנייה'),
    h('h2', {}, 'תכונות'),
    features.length ? features.map(({ key, input }) => h('label', { class: 'check' }, input, FEATURE_NAMES[key] || key)) : h('p', { class: 'empty' }, 'אין תכונות להפעלה.'),
    problem,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'שמירה')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    try {
      await patch('/api/crm/business', { name: name.value.trim(), timezone: timezone.value.trim(),
        ai_instructions: instructions.value, opening_line: opening.value, greeting_enabled: greeting.checked,
        transfer_number: transferNumber.value.trim() || null, transfer_announcement: transferAnnouncement.value,
        features: Object.fromEntries(features.map(({ key, input }) => [key, input.checked])) });
      announce('ההגדרות נשמרו');
    } catch (error) {
      problem.append(errorBox(hebrewError(error)));
    }
  });
  const numbers = h('section', { class: 'related' }, h('h2', {}, 'מספרי הטלפון של העסק'),
    h('p', { class: 'muted' }, 'המספרים מוגדרים על ידי התמיכה ואינם ניתנים לשינוי כאן.'),
    h('dl', { class: 'facts' },
      h('dt', {}, 'שיחות'), h('dd', {}, (b.voice_numbers || []).length ? b.voice_numbers.map((n) => [phoneEl(n), ' ']) : '—'),
      h('dt', {}, 'וואטסאפ'), h('dd', {}, (b.whatsapp_numbers || []).length ? b.whatsapp_numbers.map((n) => [phoneEl(n), ' ']) : '—')));
  clear(body, form, numbers);
  return null;
}

// ---- payments: business switch, default provider, gateways -----------------------------------
const GATEWAY_FIELDS = {
  paypal: [['client_id', 'Client ID', false], ['client_secret', 'Client secret', true], ['webhook_id', 'Webhook ID', false]],
  tranzila: [['terminal', 'שם המסוף', false], ['app_key', 'App key', false], ['secret', 'Secret', true]],
};

async function payments(body) {
  const [prefs, gateways] = await Promise.all([get('/api/crm/payments/settings'), get('/api/crm/payments/gateways')]);
  const enabled = h('input', { type: 'checkbox', name: 'payments_enabled', checked: !!prefs.payments_enabled });
  const provider = select([['', 'ברירת המחדל של המערכת'], ...PROVIDERS], prefs.default_payment_provider || '', { name: 'default_payment_provider' });
  const problem = h('div');
  const prefsForm = h('form', { class: 'stack settings-form' }, h('h2', {}, 'תשלומים לעסק'),
    h('label', { class: 'check' }, enabled, 'לאפשר שליחת קישורי תשלום'), field('ספק ברירת מחדל', provider), problem,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'שמירה')));
  prefsForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    try {
      await put('/api/crm/payments/settings', { payments_enabled: enabled.checked, default_payment_provider: provider.value || null });
      announce('הגדרות התשלום נשמרו');
    } catch (error) { problem.append(errorBox(hebrewError(error))); }
  });
  clear(body, prefsForm, (gateways.gateways || []).map(gatewayForm));
  return null;
}

function gatewayForm(gateway) {
  const name = gateway.provider === 'paypal' ? 'PayPal' : 'Tranzila';
  const enabled = h('input', { type: 'checkbox', name: `${gateway.provider}-enabled`, checked: gateway.enabled !== false });
  const inputs = (GATEWAY_FIELDS[gateway.provider] || []).map(([key, label, secret]) => {
    const isSet = secret && gateway.secrets_set && gateway.secrets_set[key];
    const input = h('input', { type: secret ? 'password' : 'text', name: `${gateway.provider}-${key}`, dir: 'ltr', autocomplete: secret ? 'new-password' : 'off',
      value: secret ? '' : ((gateway.settings || {})[key] || ''), placeholder: isSet ? '•••••• שמור. השאירו ריק כדי לא לשנות' : '' });
    return { key, secret, input, node: field(label, input, secret ? (isSet ? 'הסוד שמור ואינו מוצג.' : 'לא הוגדר.') : null) };
  });
  const mode = gateway.provider === 'tranzila'
    ? select([['iframe', 'דף תשלום (iframe)'], ['payment_request', 'בקשת תשלום']], (gateway.settings || {}).mode || 'iframe', { name: 'tranzila-mode' })
    : null;
  const problem = h('div');
  const state = gateway.business_credentials_complete ? 'פרטי החיבור של העסק מלאים'
    : gateway.system_credentials_available ? 'משתמש בחשבון המערכת' : 'לא מוגדר';
  const form = h('form', { class: 'stack settings-form gateway', dataset: { provider: gateway.provider } },
    h('h2', {}, name, ' ', statusBadge(state, gateway.business_credentials_complete || gateway.system_credentials_available ? 'ok' : 'warn')),
    h('label', { class: 'check' }, enabled, `להפעיל את ${name}`),
    inputs.map((i) => i.node), mode ? field('אופן התשלום', mode) : null, problem,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, `שמירת ${name}`)));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    const payload = { enabled: enabled.checked };
    for (const { key, secret, input } of inputs) {
      const value = input.value.trim();
      if (secret) { if (value) payload[key] = value; } else payload[key] = value || null;
    }
    if (mode) payload.mode = mode.value;
    try {
      const saved = await put(`/api/crm/payments/gateways/${gateway.provider}`, payload);
      form.replaceWith(gatewayForm(saved));
      announce(`${name} נשמר`);
    } catch (error) { problem.append(errorBox(hebrewError(error))); }
  });
  return form;
}

// ---- WhatsApp connection by QR code -----------------------------------------------------------
const WA_STATUS = { connected: 'מחובר', qr: 'ממתין לסריקת קוד QR', connecting: 'מתחבר…', logged_out: 'מנותק', not_set_up: 'טרם הוגדר לעסק; מנהל המערכת יוסיף אותו', disabled: 'לא מופעל' };
// No QR code will come in these states: nothing to show or poll for.
const WA_SETTLED = ['connected', 'not_set_up', 'disabled'];

function whatsapp(body) {
  const status = h('p', { class: 'wa-status', role: 'status' });
  const qrBox = h('div', { class: 'qr' });
  const problem = h('div');
  const howTo = h('p', { class: 'muted' }, 'בטלפון: וואטסאפ ← הגדרות ← מכשירים מקושרים ← קישור מכשיר, וסרקו את הקוד.');
  clear(body, h('section', { class: 'settings-form' }, h('h2', {}, 'חיבור חשבון וואטסאפ'), status, qrBox, howTo, problem));
  let timer = null;
  let stopped = false;
  async function poll() {
    if (stopped) return;
    try {
      const c = await get('/api/crm/whatsapp/connection');
      problem.replaceChildren();
      status.textContent = `מצב: ${WA_STATUS[c.status] || c.status}`;
      status.dataset.status = c.status;
      howTo.hidden = WA_SETTLED.includes(c.status);
      if (WA_SETTLED.includes(c.status)) {
        qrBox.replaceChildren();
        return;  // nothing to refresh once connected
      }
      if (c.qr_available) {
        const img = h('img', { src: `/api/crm/whatsapp/qr.svg?t=${Date.now()}`, alt: 'קוד QR לחיבור וואטסאפ', width: 264, height: 264 });
        img.addEventListener('error', () => { img.remove(); });
        qrBox.replaceChildren(img);
      } else {
        qrBox.replaceChildren(h('p', { class: 'muted' }, 'ממתינים לקוד QR…'));
      }
    } catch (error) {
      problem.replaceChildren(errorBox(hebrewError(error)));
    }
    if (!stopped) timer = setTimeout(poll, 3000);
  }
  poll();
  return () => { stopped = true; clearTimeout(timer); };
}

// ---- users ------------------------------------------------------------------------------------
async function users(body) {
  const me = await get('/api/auth/me').catch(() => null);
  async function load() {
    let list;
    try { list = (await get('/api/crm/users')).items; } catch (error) { clear(body, errorBox(hebrewError(error))); return; }
    forgetUsers();
    const add = h('button', { type: 'button', class: 'primary', onclick: () => addUser(load) }, 'הוספת נציג/ה');
    clear(body, h('div', { class: 'title-row' }, h('h2', {}, 'משתמשים'), add),
      h('div', { class: 'table-wrap' }, h('table', { class: 'list' }, h('caption', { class: 'sr-only' }, 'משתמשי העסק'),
        h('thead', {}, h('tr', {}, ['אימייל', 'תפקיד', 'מצב', 'נוצר', 'פעולות'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, list.map((u) => userRow(u, me && me.user && me.user.id === u.id, load))))));
  }
  await load();
  return null;
}

function userRow(u, isMe, changed) {
  const who = u.name || u.email;
  const toggle = isMe ? null : h('button', { type: 'button', class: 'ghost small', 'aria-label': `${u.disabled ? 'הפעלה' : 'השבתה'}: ${who}`,
    onclick: async () => {
      try {
        await patch(`/api/crm/users/${u.id}`, { disabled: !u.disabled });
        announce(u.disabled ? 'המשתמש הופעל' : 'המשתמש הושבת');
        changed();
      } catch (error) { announce(hebrewError(error), 'error'); }
    } }, u.disabled ? 'הפעלה' : 'השבתה');
  const reset = h('button', { type: 'button', class: 'ghost small', 'aria-label': `איפוס סיסמה: ${who}`, onclick: () => resetPassword(u) }, 'איפוס סיסמה');
  return h('tr', { dataset: { userId: u.id } },
    h('td', { 'data-label': 'אימייל' }, h('bdi', { dir: 'ltr' }, u.email), u.name ? ` (${u.name})` : ''),
    h('td', { 'data-label': 'תפקיד' }, ROLE[u.role] || u.role),
    h('td', { 'data-label': 'מצב' }, u.disabled ? statusBadge('מושבת', 'warn') : statusBadge('פעיל', 'ok')),
    h('td', { 'data-label': 'נוצר' }, dateTime(u.created_at)),
    h('td', { 'data-label': 'פעולות', class: 'row-actions' }, toggle, reset));
}

function addUser(saved) {
  openDialog('הוספת נציג/ה', (close) => {
    const email = h('input', { type: 'email', name: 'email', required: true, dir: 'ltr', autocomplete: 'off' });
    const password = h('input', { type: 'password', name: 'password', required: true, minlength: 8, dir: 'ltr', autocomplete: 'new-password' });
    const problem = h('div');
    const form = h('form', { class: 'stack' }, field('אימייל', email), field('סיסמה ראשונית', password, 'לפחות 8 תווים'), problem,
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'הוספה')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      try {
        await post('/api/crm/users', { email: email.value.trim(), password: password.value, role: 'agent' });
        close();
        announce('הנציג/ה נוספו');
        saved();
      } catch (error) { problem.append(errorBox(hebrewError(error))); }
    });
    return form;
  });
}

function resetPassword(u) {
  openDialog(`איפוס סיסמה ל־${u.email}`, (close) => {
    const password = h('input', { type: 'password', name: 'new-password', required: true, minlength: 8, dir: 'ltr', autocomplete: 'new-password' });
    const problem = h('div');
    const form = h('form', { class: 'stack' }, field('סיסמה חדשה', password, 'לפחות 8 תווים'), problem,
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'איפוס')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      try {
        await post(`/api/crm/users/${u.id}/password`, { password: password.value });
        close();
        announce('הסיסמה אופסה');
      } catch (error) { problem.append(errorBox(hebrewError(error))); }
    });
    return form;
  });
}

// ---- audit log --------------------------------------------------------------------------------
const ACTIONS = {
  'customer.created': 'לקוח נוצר', 'customer.updated': 'לקוח עודכן', 'thread.updated': 'שיחה עודכנה',
  'business.updated': 'הגדרות העסק עודכנו', 'user.created': 'משתמש נוסף', 'token.created': 'אסימון נוצר',
  'token.revoked': 'אסימון בוטל', 'payment.created': 'תשלום נוצר', 'payment.paid': 'תשלום התקבל',
  'invoice.paid': 'חשבונית שולמה', 'payment_gateway.updated': 'ספק תשלום עודכן',
  'whatsapp.instance_added': 'חשבון וואטסאפ נוסף לעסק', 'whatsapp.instance_logged_out': 'חשבון הוואטסאפ נותק',
  'whatsapp.instance_removed': 'חשבון הוואטסאפ הוסר',
  'call.transferred': 'שיחה הועברה לנציג', 'call.transfer_answered': 'הנציג ענה לשיחה שהועברה',
  'call.transfer_unanswered': 'שיחה שהועברה לא נענתה',
};

async function audit(body) {
  const list = h('div', { class: 'table-wrap' });
  const more = h('div', { class: 'more' });
  clear(body, h('h2', {}, 'יומן פעולות'), list, more);
  let cursor = null;
  async function load(append = false) {
    try {
      const page = await get(`/api/crm/audit${qs({ limit: 50, cursor: append ? cursor : '' })}`);
      cursor = page.next_cursor;
      const rows = page.items.map((r) => h('tr', {},
        h('td', { 'data-label': 'מתי' }, dateTime(r.created_at)),
        h('td', { 'data-label': 'פעולה' }, ACTIONS[r.action] || r.action),
        h('td', { 'data-label': 'מי' }, h('bdi', { dir: 'ltr' }, r.actor)),
        h('td', { 'data-label': 'פריט' }, h('bdi', { dir: 'ltr' }, `${r.entity_type} ${r.entity_id ?? ''}`))));
      if (append) list.querySelector('tbody').append(...rows);
      else clear(list, rows.length ? h('table', { class: 'list' }, h('caption', { class: 'sr-only' }, 'יומן פעולות'),
        h('thead', {}, h('tr', {}, ['מתי', 'פעולה', 'מי', 'פריט'].map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows))
        : h('p', { class: 'empty' }, 'היומן ריק.'));
      clear(more, cursor ? h('button', { type: 'button', class: 'ghost', onclick: () => load(true) }, 'עוד') : null);
    } catch (error) { clear(list, errorBox(hebrewError(error))); }
  }
  await load();
  return null;
}

