// Calls: the list with filters, and one call as a conversation of its turns, each with its timing,
// the outcome, and the recording or voicemail to play.
import { ApiError, get, hebrewError, keepQuery, qs } from '../api.js';
import { clear, errorBox, field, h, select, spinner } from '../dom.js';
import { dateTime, dayStart, ms, nextDay, seconds } from '../format.js';
import { debounce, on } from '../live.js';
import { CALL_OUTCOME, CALL_STATUS, customerName, phoneEl, statusBadge } from './common.js';
import { toolCallItems } from './agent.js';

export async function render(main, params) {
  if (params.sid) return renderCall(main, params.sid);
  document.title = 'שיחות · AgentLocator';
  const path = location.pathname;
  const args = new URLSearchParams(location.search);
  const state = { status: args.get('status') || '', phone: args.get('phone') || '', q: args.get('q') || '',
    from: args.get('from') || '', to: args.get('to') || '' };
  const list = h('div', { class: 'table-wrap', 'aria-live': 'polite' }, spinner());
  const more = h('div', { class: 'more' });
  const status = select([['', 'הכול'], ...Object.entries(CALL_STATUS)], state.status, { name: 'status' });
  const phone = h('input', { type: 'tel', name: 'phone', value: state.phone, dir: 'ltr', placeholder: '050-123-4567' });
  const q = h('input', { type: 'search', name: 'q', value: state.q, placeholder: 'מילה מהתמליל' });
  const from = h('input', { type: 'date', name: 'from', value: state.from });
  const to = h('input', { type: 'date', name: 'to', value: state.to });
  const problem = h('div');
  const form = h('form', { class: 'filters', role: 'search' },
    field('חיפוש בתמליל', q), field('טלפון המתקשר', phone), field('סטטוס', status), field('מתאריך', from),
    field('עד תאריך', to), h('button', { type: 'submit', class: 'primary' }, 'סינון'));
  main.append(h('h1', {}, 'שיחות'), form, problem, list, more);

  let cursor = null;
  async function load(append = false) {
    problem.replaceChildren();
    const query = { limit: 50, status: status.value, phone: phone.value.trim(), q: q.value.trim(),
      from: dayStart(from.value), to: to.value ? dayStart(nextDay(to.value)) : '', cursor: append ? cursor : '' };
    keepQuery(path, { status: status.value, phone: phone.value.trim(), q: q.value.trim(), from: from.value, to: to.value });
    try {
      const page = await get(`/api/crm/calls${qs(query)}`);
      cursor = page.next_cursor;
      const rows = page.items.map(callRow);
      if (append) list.querySelector('tbody').append(...rows);
      else clear(list, page.items.length ? table(rows) : h('p', { class: 'empty' }, 'אין שיחות שמתאימות לסינון.'));
      clear(more, cursor ? h('button', { type: 'button', class: 'ghost', onclick: () => load(true) }, 'עוד שיחות') : null);
    } catch (error) {
      if (!append) list.replaceChildren();
      problem.append(errorBox(hebrewError(error)));
    }
  }
  form.addEventListener('submit', (e) => { e.preventDefault(); load(); });
  load();
  return on('call', debounce(() => load(), 300));
}

function table(rows) {
  return h('table', { class: 'list' },
    h('caption', { class: 'sr-only' }, 'רשימת שיחות'),
    h('thead', {}, h('tr', {}, ['מתי', 'מתקשר', 'משך', 'סטטוס', 'תוצאה', 'תמליל'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows));
}

function callRow(call) {
  return h('tr', { dataset: { callSid: call.call_sid } },
    h('td', { 'data-label': 'מתי' }, h('a', { href: `/app/calls/${encodeURIComponent(call.call_sid)}` }, dateTime(call.started_at || call.created_at))),
    h('td', { 'data-label': 'מתקשר' }, phoneEl(call.from_number)),
    h('td', { 'data-label': 'משך' }, call.duration_seconds !== null ? seconds(call.duration_seconds) : '—'),
    h('td', { 'data-label': 'סטטוס' }, CALL_STATUS[call.status] || call.status),
    h('td', { 'data-label': 'תוצאה' }, CALL_OUTCOME[call.outcome] || call.outcome || '—'),
    h('td', { 'data-label': 'תמליל', class: 'preview' }, call.transcript_preview || '—'));
}

async function renderCall(main, sid) {
  document.title = 'שיחה · AgentLocator';
  main.append(h('a', { href: '/app/calls', class: 'back' }, '→ כל השיחות'));
  let call;
  try {
    call = await get(`/api/crm/calls/${encodeURIComponent(sid)}`);
  } catch (error) {
    main.append(h('h1', {}, 'שיחה'), errorBox(error instanceof ApiError && error.status === 404 ? 'השיחה לא נמצאה.' : hebrewError(error)));
    return null;
  }
  const body = h('div', { class: 'call-detail' });
  main.append(body);
  const draw = async () => {
    let customer = null;
    if (call.customer_id) {
      try { customer = await get(`/api/crm/customers/${call.customer_id}`); } catch { customer = null; }
    }
    clear(body, ...callDetail(call, customer));
  };
  await draw();
  return on('call', async (event) => {
    if (event.call_sid !== sid) return;
    try { call = await get(`/api/crm/calls/${encodeURIComponent(sid)}`); await draw(); } catch { /* keep what is shown */ }
  });
}

function callDetail(call, customer) {
  const hasAudio = call.recording_url || call.recording_sid || call.voicemail;
  const facts = [
    ['מתקשר', phoneEl(call.from_number)],
    ['לקוח', customer ? h('a', { href: `/app/customers/${customer.id}` }, customerName(customer)) : '—'],
    ['התחילה', dateTime(call.started_at || call.created_at)],
    ['הסתיימה', call.ended_at ? dateTime(call.ended_at) : '—'],
    ['משך', call.duration_seconds !== null ? `${seconds(call.duration_seconds)} דק׳` : '—'],
    ['סטטוס', CALL_STATUS[call.status] || call.status],
    ['תוצאה', CALL_OUTCOME[call.outcome] || call.outcome || '—'],
  ];
  if (call.stream_error) facts.push(['תקלה בשיחה', call.stream_error]);
  const turns = call.turns || [];
  return [
    h('h1', {}, 'שיחה עם ', customer ? customerName(customer) : phoneEl(call.from_number)),
    h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    hasAudio ? h('section', { class: 'recording', 'aria-labelledby': 'rec-title' },
      h('h2', { id: 'rec-title' }, call.voicemail ? 'הודעה קולית' : 'הקלטה'),
      h('audio', { controls: true, preload: 'metadata', src: `/api/crm/calls/${encodeURIComponent(call.call_sid)}/recording`,
        'aria-label': call.voicemail ? 'השמעת ההודעה הקולית' : 'השמעת הקלטת השיחה' }),
      call.voicemail && call.voicemail.body ? h('p', {}, 'תמלול: ', call.voicemail.body) : null) : null,
    h('section', { 'aria-labelledby': 'turns-title' },
      h('h2', { id: 'turns-title' }, 'מהלך השיחה'),
      turns.length ? h('ol', { class: 'timeline turns' }, turns.flatMap((turn) => [...turnEntries(turn),
        ...toolCallItems((call.tool_calls || []).filter((t) => t.turn_index === turn.turn_index))]))
        : call.transcript ? h('pre', { class: 'transcript' }, call.transcript) : h('p', { class: 'empty' }, 'אין תמליל לשיחה הזו.')),
  ];
}

function turnEntries(turn) {
  const m = turn.metrics || {};
  const items = [];
  if (turn.user_text) {
    items.push(h('li', { class: 'entry msg in' }, h('div', { class: 'bubble' },
      h('span', { class: 'speaker' }, 'מתקשר/ת'), h('p', { class: 'text' }, turn.user_text))));
  }
  if (turn.agent_text || turn.interrupted) {
    items.push(h('li', { class: 'entry msg out' }, h('div', { class: 'bubble' },
      h('span', { class: 'speaker' }, turn.turn_index === 0 ? 'ה-AI (פתיחה)' : 'ה-AI'),
      h('p', { class: 'text' }, turn.agent_text || '…'),
      turn.interrupted ? statusBadge('נקטע על ידי המתקשר', 'warn') : null,
      h('p', { class: 'timing' }, [['עד תחילת התשובה', m.t_first_audio_ms], ['זיהוי דיבור', m.t_audio_ms],
        ['מודל', m.t_nlp_ms], ['הקראה', m.t_tts_ms]].map(([label, value], i) => [i ? ' · ' : '', `${label}: `,
        h('bdi', { dir: 'ltr' }, ms(value))])))));
  }
  return items;
}
