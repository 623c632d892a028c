// The appointment diary: a day or a week of appointments in the business's time zone, booking from
// the free slots, moving and cancelling; and (for owners) the book's settings: services, opening
// hours, capacity, exceptions and the calendar feed's secret link.
import { get, hebrewError, patch, post, put, del, qs } from '../api.js';
import { announce, clear, errorBox, field, h, openDialog, select, spinner } from '../dom.js';
import { amount, phone as showPhone, time } from '../format.js';
import { debounce, on } from '../live.js';
import { customerName, phoneEl, statusBadge } from './common.js';

const DAYS = ['ראשון', 'שני', 'שלישי', 'רביעי', 'חמישי', 'שישי', 'שבת'];
const SOURCE = { call: 'שיחה', whatsapp: 'וואטסאפ', console: 'קונסולה' };
const MODES = [['day', 'יום'], ['week', 'שבוע'], ['settings', 'הגדרות היומן', 'owner']];
const ERRORS = {
  slot_taken: 'השעה הזו כבר תפוסה.',
  in_the_past: 'השעה הזו כבר עברה.',
  outside_opening_hours: 'העסק אינו פתוח בכל משך התור בשעה הזו.',
  not_booked: 'התור בוטל ולכן אי אפשר להעבירו.',
};

function problemText(error) {
  return ERRORS[error && error.code] || hebrewError(error);
}

// ---- dates: plain "YYYY-MM-DD" strings, counted at UTC noon (no DST edge inside a date) --------
function todayIn(zone) {
  try {
    return new Intl.DateTimeFormat('en-CA', { timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date());
  } catch {
    return new Date().toISOString().slice(0, 10);
  }
}
function addDays(date, days) {
  const d = new Date(`${date}T12:00:00Z`);
  d.setUTCDate(d.getUTCDate() + days);
  return d.toISOString().slice(0, 10);
}
function weekday(date) { return new Date(`${date}T12:00:00Z`).getUTCDay(); }
function weekStart(date) { return addDays(date, -weekday(date)); }
function shortDate(date) { return `${date.slice(8, 10)}.${date.slice(5, 7)}`; }
function longDate(date) { return `יום ${DAYS[weekday(date)]}, ${date.slice(8, 10)}.${date.slice(5, 7)}.${date.slice(0, 4)}`; }
// Times are typed as 24-hour HH:MM text: a time input follows the browser's locale (AM/PM on many).
function timeInput(name, value, label) {
  return h('input', { type: 'text', name, value: value || '', inputmode: 'numeric', maxlength: 5, dir: 'ltr',
    placeholder: 'HH:MM', class: 'time-text', autocomplete: 'off', 'aria-label': label || null });
}
function validDate(value) { return /^\d{4}-\d{2}-\d{2}$/.test(value || '') && !Number.isNaN(Date.parse(`${value}T12:00:00Z`)); }

export async function render(main, params, ctx) {
  const owner = ctx.owner;
  const mode = MODES.some(([key, , role]) => key === params.mode && (!role || owner)) ? params.mode : 'day';
  const zone = (ctx.session.business && ctx.session.business.time_zone) || 'Asia/Jerusalem';
  const query = new URLSearchParams(location.search);
  const date = validDate(query.get('date')) ? query.get('date') : todayIn(zone);
  document.title = `יומן תורים · ${MODES.find(([key]) => key === mode)[1]} · AgentLocator`;
  main.append(h('h1', {}, 'יומן תורים'),
    h('nav', { class: 'tabs', 'aria-label': 'תצוגות היומן' }, h('ul', {},
      MODES.filter(([, , role]) => !role || owner).map(([key, text]) => h('li', {},
        h('a', { href: `/app/diary/${key}${key === 'settings' ? '' : qs({ date })}`, 'aria-current': key === mode ? 'page' : null }, text))))));
  const body = h('div', { class: 'diary-body' }, spinner());
  main.append(body);
  if (mode === 'settings') return settings(body);
  return diary(body, mode, date, zone, ctx);
}

// ---- day and week -------------------------------------------------------------------------------
async function diary(body, mode, date, zone, ctx) {
  const first = mode === 'week' ? weekStart(date) : date;
  const days = mode === 'week' ? 7 : 1;
  const step = days;
  const go = (target) => ctx.navigate(`/app/diary/${mode}${qs({ date: target })}`);
  const picker = h('input', { type: 'date', name: 'date', value: date, onchange: (e) => { if (validDate(e.target.value)) go(e.target.value); } });
  const title = mode === 'week' ? `שבוע ${shortDate(first)}–${shortDate(addDays(first, 6))}` : longDate(date);
  const toolbar = h('div', { class: 'diary-toolbar' },
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'ghost', onclick: () => go(addDays(date, -step)) }, mode === 'week' ? 'השבוע הקודם' : 'היום הקודם'),
      h('button', { type: 'button', class: 'ghost', onclick: () => go(todayIn(zone)) }, 'היום'),
      h('button', { type: 'button', class: 'ghost', onclick: () => go(addDays(date, step)) }, mode === 'week' ? 'השבוע הבא' : 'היום הבא')),
    field('תאריך', picker),
    h('button', { type: 'button', class: 'primary', onclick: () => bookDialog(date, reload) }, 'תור חדש'));
  const list = h('div', { class: 'diary-list', 'aria-live': 'polite' }, spinner());
  clear(body, toolbar, h('h2', { class: 'diary-title' }, title), list);

  async function reload() {
    try {
      const page = await get(`/api/appointments${qs({ from: first, days })}`);
      clear(list, mode === 'week' ? weekGrid(first, page.items, reload) : dayList(page.items, reload));
    } catch (error) {
      clear(list, errorBox(hebrewError(error)));
    }
  }
  // A booking from a call or a WhatsApp chat (or another staff member) shows up at once.
  const stop = on('appointment', debounce(reload, 300));
  await reload();
  return stop;
}

function actions(appointment, reload) {
  return [
    h('button', { type: 'button', class: 'ghost', onclick: () => moveDialog(appointment, reload) }, 'העברה'),
    h('button', { type: 'button', class: 'ghost danger', onclick: () => cancelDialog(appointment, reload) }, 'ביטול'),
  ];
}

function dayList(items, reload) {
  if (!items.length) return h('p', { class: 'empty' }, 'אין תורים ביום הזה.');
  const rows = items.map((a) => h('tr', { dataset: { appointmentId: a.id } },
    h('td', { 'data-label': 'שעה' }, h('span', { class: 'num' }, `${time(a.starts_at)}–${time(a.ends_at)}`)),
    h('td', { 'data-label': 'לקוח' }, customerName(a.customer), a.customer.phone ? [' ', phoneEl(a.customer.phone)] : null),
    h('td', { 'data-label': 'שירות' }, a.service.name),
    h('td', { 'data-label': 'מקור' }, statusBadge(SOURCE[a.source] || a.source)),
    h('td', { 'data-label': 'הערות' }, a.notes || '—'),
    h('td', { class: 'row-actions', 'data-label': 'פעולות' }, actions(a, reload))));
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list' },
    h('caption', { class: 'sr-only' }, 'התורים של היום'),
    h('thead', {}, h('tr', {}, ['שעה', 'לקוח', 'שירות', 'מקור', 'הערות', 'פעולות'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows)));
}

function weekGrid(first, items, reload) {
  const byDay = new Map();
  for (const a of items) {
    const day = (a.local_start || a.starts_at).slice(0, 10);
    if (!byDay.has(day)) byDay.set(day, []);
    byDay.get(day).push(a);
  }
  const columns = [];
  for (let i = 0; i < 7; i += 1) {
    const day = addDays(first, i);
    const appointments = byDay.get(day) || [];
    columns.push(h('section', { class: 'week-day', 'aria-labelledby': `day-${day}` },
      h('h3', { id: `day-${day}` }, h('a', { href: `/app/diary/day${qs({ date: day })}` }, `${DAYS[i]} ${shortDate(day)}`)),
      appointments.length
        ? h('ul', { class: 'week-items' }, appointments.map((a) => h('li', { class: 'appt-card', dataset: { appointmentId: a.id } },
          h('div', { class: 'appt-time' }, h('span', { class: 'num' }, `${time(a.starts_at)}–${time(a.ends_at)}`)),
          h('div', { class: 'appt-who' }, customerName(a.customer)),
          h('div', { class: 'muted' }, a.service.name),
          h('div', { class: 'actions' }, actions(a, reload)))))
        : h('p', { class: 'empty' }, 'אין תורים')));
  }
  return h('div', { class: 'week-grid' }, columns);
}

// ---- booking, moving, cancelling ------------------------------------------------------------------
// A date field and the free start times of the service on it (asked from the server each change).
function slotPicker(serviceSelect, date, currentId) {
  const day = h('input', { type: 'date', name: 'slot_date', value: date, required: true });
  const slot = h('select', { name: 'start', required: true }, h('option', { value: '' }, 'בחרו תאריך ושירות'));
  const status = h('p', { class: 'hint', role: 'status' });
  async function load() {
    clear(slot, h('option', { value: '' }, 'טוען…'));
    status.textContent = '';
    if (!serviceSelect.value || !validDate(day.value)) return;
    try {
      const page = await get(`/api/appointments/slots${qs({ service_id: serviceSelect.value, from: day.value })}`);
      if (!page.items.length) {
        clear(slot, h('option', { value: '' }, 'אין שעות פנויות'));
        status.textContent = 'אין שעות פנויות ביום הזה.';
        return;
      }
      clear(slot, page.items.map((s) => h('option', { value: s.start }, time(s.start))));
      status.textContent = `${page.items.length} שעות פנויות`;
    } catch (error) {
      clear(slot, h('option', { value: '' }, '—'));
      status.textContent = hebrewError(error);
    }
  }
  day.addEventListener('change', load);
  serviceSelect.addEventListener('change', load);
  return { day, slot, status, load, currentId };
}

async function bookDialog(date, saved) {
  let services = [];
  try {
    services = (await get('/api/appointments/services')).items;
  } catch (error) {
    announce(hebrewError(error), 'error');
    return;
  }
  openDialog('תור חדש', (close) => {
    const problem = h('div');
    if (!services.length) {
      return h('div', { class: 'stack dialog-pad' }, h('p', {}, 'עדיין לא הוגדרו שירותים.'),
        h('p', {}, h('a', { href: '/app/diary/settings', onclick: () => close() }, 'להגדרות היומן')));
    }
    const phone = h('input', { type: 'tel', name: 'phone', required: true, dir: 'ltr', autocomplete: 'off' });
    const name = h('input', { type: 'text', name: 'name', maxlength: 200, autocomplete: 'off' });
    // An existing customer, found by name or phone, fills both fields; a new phone makes a new customer.
    const found = new Map();
    const options = h('datalist', { id: 'diary-customers' });
    const search = h('input', { type: 'search', name: 'customer_search', list: 'diary-customers', autocomplete: 'off' });
    search.addEventListener('input', debounce(async () => {
      const text = search.value.trim();
      const picked = found.get(text);
      if (picked) {
        phone.value = showPhone(picked.phone);
        name.value = picked.name || '';
        return;
      }
      if (text.length < 2) return;
      try {
        const page = await get(`/api/crm/customers${qs({ q: text, limit: 8 })}`);
        found.clear();
        clear(options, page.items.filter((c) => c.phone).map((c) => {
          const label = `${c.name || 'ללא שם'} · ${showPhone(c.phone)}`;
          found.set(label, c);
          return h('option', { value: label });
        }));
      } catch { /* searching is a convenience: the phone field still works */ }
    }, 250));
    const service = select(services.map((s) => [s.id, `${s.name} (${s.duration_minutes} דק׳)`]), services[0].id, { name: 'service_id' });
    const picker = slotPicker(service, date);
    const notes = h('textarea', { name: 'notes', rows: 2, maxlength: 2000 });
    const notify = h('input', { type: 'checkbox', name: 'notify', checked: true });
    const submit = h('button', { type: 'submit', class: 'primary' }, 'קביעת התור');
    const form = h('form', { class: 'stack' },
      field('לקוח קיים (חיפוש לפי שם או טלפון)', search), options,
      field('טלפון הלקוח', phone, 'למשל 050-123-4567'), field('שם הלקוח', name),
      field('שירות', service), field('תאריך', picker.day), field('שעה', picker.slot), picker.status,
      field('הערות', notes), h('label', { class: 'check' }, notify, 'לשלוח ללקוח אישור בוואטסאפ'),
      problem, h('div', { class: 'actions' }, submit));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      if (!phone.value.trim() || !picker.slot.value) {
        problem.append(errorBox('יש למלא טלפון ולבחור שעה פנויה.'));
        return;
      }
      submit.disabled = true;
      try {
        await post('/api/appointments', { service_id: Number(service.value), start: picker.slot.value,
          phone: phone.value.trim(), name: name.value.trim() || null, notes: notes.value.trim() || null, notify: notify.checked });
        close();
        announce('התור נקבע');
        saved();
      } catch (error) {
        problem.append(errorBox(problemText(error)));
        submit.disabled = false;
        picker.load();
        if (error && error.code === 'slot_taken') saved();  // the diary behind shows who took it
      }
    });
    picker.load();
    return form;
  });
}

function moveDialog(appointment, saved) {
  openDialog('העברת תור', (close) => {
    const service = h('input', { type: 'hidden', name: 'service_id', value: appointment.service.id });
    const picker = slotPicker(service, (appointment.local_start || appointment.starts_at).slice(0, 10));
    const notify = h('input', { type: 'checkbox', name: 'notify', checked: true });
    const problem = h('div');
    const submit = h('button', { type: 'submit', class: 'primary' }, 'העברה');
    const form = h('form', { class: 'stack' },
      h('p', {}, `${customerName(appointment.customer)} · ${appointment.service.name} · עכשיו ב־`, h('span', { class: 'num' }, time(appointment.starts_at))),
      field('תאריך חדש', picker.day), field('שעה חדשה', picker.slot), picker.status,
      h('label', { class: 'check' }, notify, 'לעדכן את הלקוח בוואטסאפ'), problem, h('div', { class: 'actions' }, submit));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      if (!picker.slot.value) { problem.append(errorBox('יש לבחור שעה פנויה.')); return; }
      submit.disabled = true;
      try {
        await post(`/api/appointments/${appointment.id}/move`, { start: picker.slot.value, notify: notify.checked });
        close();
        announce('התור הועבר');
        saved();
      } catch (error) {
        problem.append(errorBox(problemText(error)));
        submit.disabled = false;
        picker.load();
        if (error && error.code === 'slot_taken') saved();  // the diary behind shows who took it
      }
    });
    picker.load();
    return form;
  });
}

function cancelDialog(appointment, saved) {
  openDialog('ביטול תור', (close) => {
    const notify = h('input', { type: 'checkbox', name: 'notify', checked: true });
    const problem = h('div');
    const form = h('form', { class: 'stack' },
      h('p', {}, `לבטל את התור של ${customerName(appointment.customer)} ל${appointment.service.name} ב־`,
        h('span', { class: 'num' }, time(appointment.starts_at)), '?'),
      h('label', { class: 'check' }, notify, 'להודיע ללקוח בוואטסאפ'), problem,
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary danger' }, 'ביטול התור'),
        h('button', { type: 'button', class: 'ghost', onclick: () => close() }, 'חזרה')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      try {
        await post(`/api/appointments/${appointment.id}/cancel`, { notify: notify.checked });
        close();
        announce('התור בוטל');
        saved();
      } catch (error) {
        problem.append(errorBox(problemText(error)));
      }
    });
    return form;
  });
}

// ---- settings (owners) ----------------------------------------------------------------------------
async function settings(body) {
  const [book, services, exceptions] = await Promise.all([
    get('/api/appointments/settings'), get('/api/appointments/services'), get(`/api/appointments/exceptions${qs({ days: 366 })}`)]);
  clear(body, capacityForm(book), hoursForm(book.hours), servicesSection(services.items, body),
    exceptionsSection(exceptions.items, body), feedSection(book));
  return null;
}

function capacityForm(book) {
  const capacity = h('input', { type: 'number', name: 'capacity', min: 1, max: 50, value: book.capacity, required: true, dir: 'ltr' });
  const grid = select([5, 10, 15, 20, 30, 60].map((m) => [m, `${m} דקות`]), book.slot_minutes, { name: 'slot_minutes' });
  const problem = h('div');
  const form = h('form', { class: 'stack settings-form', 'aria-labelledby': 'capacity-title' },
    h('h2', { id: 'capacity-title' }, 'קיבולת'),
    field('כמה תורים יכולים לחפוף (אנשי צוות)', capacity), field('מרווח בין שעות התחלה מוצעות', grid),
    h('p', { class: 'hint' }, `אזור הזמן של העסק: ${book.timezone}`),
    problem, h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'שמירת הקיבולת')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    try {
      await patch('/api/appointments/settings', { capacity: Number(capacity.value), slot_minutes: Number(grid.value) });
      announce('הקיבולת נשמרה');
    } catch (error) {
      problem.append(errorBox(hebrewError(error)));
    }
  });
  return form;
}

function hoursForm(hours) {
  const rows = DAYS.map((dayName, weekdayIndex) => {
    const mine = hours.filter((x) => x.weekday === weekdayIndex);
    const open = h('input', { type: 'checkbox', name: `open-${weekdayIndex}`, checked: mine.length > 0, 'aria-label': `${dayName}: פתוח` });
    const opens = timeInput(`opens-${weekdayIndex}`, mine[0] ? mine[0].opens : '09:00', `${dayName}: משעה`);
    const closes = timeInput(`closes-${weekdayIndex}`, mine[0] ? mine[0].closes : '17:00', `${dayName}: עד שעה`);
    const opens2 = timeInput(`opens2-${weekdayIndex}`, mine[1] ? mine[1].opens : '', `${dayName}: משמרת שנייה משעה`);
    const closes2 = timeInput(`closes2-${weekdayIndex}`, mine[1] ? mine[1].closes : '', `${dayName}: משמרת שנייה עד שעה`);
    const sync = () => { for (const input of [opens, closes, opens2, closes2]) input.disabled = !open.checked; };
    open.addEventListener('change', sync);
    sync();
    return { weekdayIndex, open, opens, opens2, closes, closes2,
      row: h('tr', {}, h('th', { scope: 'row' }, dayName), h('td', { 'data-label': 'פתוח' }, open),
        h('td', { 'data-label': 'שעות' }, h('span', { class: 'range' }, opens, '–', closes)),
        h('td', { 'data-label': 'משמרת שנייה' }, h('span', { class: 'range' }, opens2, '–', closes2))) };
  });
  const problem = h('div');
  const form = h('form', { class: 'stack', 'aria-labelledby': 'hours-title' },
    h('h2', { id: 'hours-title' }, 'שעות פתיחה'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'list hours' },
      h('caption', { class: 'sr-only' }, 'שעות הפתיחה לפי ימים'),
      h('thead', {}, h('tr', {}, ['יום', 'פתוח', 'שעות', 'משמרת שנייה (לא חובה)'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows.map((r) => r.row)))),
    problem, h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'שמירת שעות הפתיחה')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    const intervals = [];
    for (const r of rows) {
      if (!r.open.checked) continue;
      intervals.push({ weekday: r.weekdayIndex, opens: r.opens.value, closes: r.closes.value });
      if (r.opens2.value && r.closes2.value) intervals.push({ weekday: r.weekdayIndex, opens: r.opens2.value, closes: r.closes2.value });
    }
    try {
      await put('/api/appointments/hours', { hours: intervals });
      announce('שעות הפתיחה נשמרו');
    } catch (error) {
      problem.append(errorBox(error.field ? 'שעות הפתיחה אינן תקינות: שעת הסגירה חייבת להיות אחרי שעת הפתיחה, והמשמרות לא יחפפו.' : hebrewError(error)));
    }
  });
  return form;
}

function servicesSection(services, body) {
  const rows = services.map((s) => h('tr', { dataset: { serviceId: s.id } },
    h('td', { 'data-label': 'שירות' }, s.name),
    h('td', { 'data-label': 'משך' }, `${s.duration_minutes} דק׳`),
    h('td', { 'data-label': 'מחיר' }, amount(s.price_minor, s.currency)),
    h('td', { class: 'row-actions', 'data-label': 'פעולות' },
      h('button', { type: 'button', class: 'ghost', onclick: () => serviceDialog(s, () => settings(body)) }, 'עריכה'),
      h('button', { type: 'button', class: 'ghost danger', onclick: async () => {
        try { await del(`/api/appointments/services/${s.id}`); announce('השירות הוסר'); settings(body); } catch (error) { announce(hebrewError(error), 'error'); }
      } }, 'הסרה'))));
  return h('section', { class: 'stack', 'aria-labelledby': 'services-title' },
    h('div', { class: 'title-row' }, h('h2', { id: 'services-title' }, 'שירותים'),
      h('button', { type: 'button', class: 'primary', onclick: () => serviceDialog(null, () => settings(body)) }, 'שירות חדש')),
    rows.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'list' },
      h('caption', { class: 'sr-only' }, 'השירותים'),
      h('thead', {}, h('tr', {}, ['שירות', 'משך', 'מחיר', 'פעולות'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows))) : h('p', { class: 'empty' }, 'עדיין אין שירותים.'));
}

function serviceDialog(service, saved) {
  openDialog(service ? 'עריכת שירות' : 'שירות חדש', (close) => {
    const name = h('input', { type: 'text', name: 'name', value: service ? service.name : '', required: true, maxlength: 200 });
    const minutes = h('input', { type: 'number', name: 'duration_minutes', min: 5, max: 720, step: 5, value: service ? service.duration_minutes : 30, required: true, dir: 'ltr' });
    const price = h('input', { type: 'text', name: 'price', inputmode: 'decimal', value: service ? service.price : '', dir: 'ltr', placeholder: '0.00' });
    const problem = h('div');
    const form = h('form', { class: 'stack' }, field('שם השירות', name), field('משך בדקות', minutes, 'כפולה של 5'),
      field('מחיר (₪)', price), problem, h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'שמירה')));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      const payload = { name: name.value.trim(), duration_minutes: Number(minutes.value), price: price.value.trim() || '0' };
      try {
        if (service) await patch(`/api/appointments/services/${service.id}`, payload);
        else await post('/api/appointments/services', payload);
        close();
        announce('השירות נשמר');
        saved();
      } catch (error) {
        problem.append(errorBox(error.field === 'duration_minutes' ? 'משך השירות חייב להיות כפולה של 5 דקות (עד 12 שעות).' : hebrewError(error)));
      }
    });
    return form;
  });
}

function exceptionsSection(exceptions, body) {
  const day = h('input', { type: 'date', name: 'exception_date', required: true });
  const closed = h('input', { type: 'checkbox', name: 'closed', checked: true });
  const opens = timeInput('exception_opens');
  const closes = timeInput('exception_closes');
  const note = h('input', { type: 'text', name: 'exception_note', maxlength: 200 });
  // A closed day has no hours: the hour fields only count (and can only be typed in) when it opens.
  const syncHours = () => { opens.disabled = closed.checked; closes.disabled = closed.checked; };
  closed.addEventListener('change', syncHours);
  syncHours();
  const problem = h('div');
  const form = h('form', { class: 'filters' },
    field('תאריך', day), h('label', { class: 'check' }, closed, 'סגור כל היום'),
    field('פתוח משעה', opens), field('עד שעה', closes), field('הערה', note),
    h('button', { type: 'submit', class: 'primary' }, 'הוספת חריגה'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    if (!validDate(day.value)) { problem.append(errorBox('יש לבחור תאריך.')); return; }
    const payload = closed.checked ? { closed: true, note: note.value.trim() }
      : { closed: false, opens: opens.value, closes: closes.value, note: note.value.trim() };
    try {
      await put(`/api/appointments/exceptions/${day.value}`, payload);
      announce('החריגה נשמרה');
      settings(body);
    } catch (error) {
      problem.append(errorBox(error.field ? 'יש למלא שעות פתיחה תקינות, או לסמן "סגור כל היום".' : hebrewError(error)));
    }
  });
  const list = exceptions.length ? h('ul', { class: 'exceptions' }, exceptions.map((x) => h('li', { dataset: { date: x.date } },
    h('span', {}, longDate(x.date), ': ', x.closed ? 'סגור' : h('span', { class: 'num' }, `${x.opens}–${x.closes}`), x.note ? ` · ${x.note}` : ''),
    ' ', h('button', { type: 'button', class: 'ghost', 'aria-label': `מחיקת החריגה של ${longDate(x.date)}`, onclick: async () => {
      try { await del(`/api/appointments/exceptions/${x.date}`); announce('החריגה נמחקה'); settings(body); } catch (error) { announce(hebrewError(error), 'error'); }
    } }, 'מחיקה')))) : h('p', { class: 'empty' }, 'אין ימים חריגים.');
  return h('section', { class: 'stack', 'aria-labelledby': 'exceptions-title' },
    h('h2', { id: 'exceptions-title' }, 'ימים חריגים (חגים, שעות מיוחדות)'), list, form, problem);
}

function feedSection(book) {
  const result = h('div', { 'aria-live': 'polite' });
  const state = h('p', { class: 'muted' }, book.feed_active ? 'קיים קישור פעיל.' : 'עדיין לא נוצר קישור.');
  const rotate = h('button', { type: 'button', class: 'primary', onclick: async () => {
    try {
      const answer = await post('/api/appointments/feed/rotate');
      const url = h('input', { type: 'text', readonly: true, value: answer.url, dir: 'ltr', class: 'feed-url', 'aria-label': 'קישור היומן' });
      const copy = h('button', { type: 'button', class: 'ghost', onclick: async () => {
        try { await navigator.clipboard.writeText(answer.url); copy.textContent = 'הועתק'; } catch { url.select(); copy.textContent = 'סמנו והעתיקו'; }
      } }, 'העתקה');
      clear(result, h('p', {}, 'הקישור החדש (מוצג פעם אחת בלבד; שמרו אותו):'), h('div', { class: 'actions' }, url, copy));
      rotate.textContent = 'יצירת קישור חדש';
      state.textContent = 'קיים קישור פעיל; הקישור הקודם, אם היה, כבר אינו פועל.';
    } catch (error) {
      clear(result, errorBox(hebrewError(error)));
    }
  } }, book.feed_active ? 'יצירת קישור חדש' : 'יצירת קישור');
  return h('section', { class: 'stack', 'aria-labelledby': 'feed-title' },
    h('h2', { id: 'feed-title' }, 'קישור ליומן (Google Calendar, Outlook)'),
    h('p', {}, 'הוסיפו את הקישור ביומן שלכם כ"יומן מכתובת URL" כדי לראות בו את התורים. כל מי שיש לו את הקישור רואה את התורים: יצירת קישור חדש מבטלת את הקודם.'),
    state, h('div', { class: 'actions' }, rotate), result);
}
