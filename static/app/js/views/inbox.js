// The inbox: conversations (WhatsApp threads, and calls as their own kind of entry) with filters,
// and the open conversation: messages and their delivery state, reply, assign, status, labels,
// and whether the AI answers. Live events refresh what changed without a reload.
import { ApiError, get, hebrewError, idempotencyKey, keepQuery, patch, post, qs } from '../api.js';
import { announce, clear, errorBox, field, h, icon, select, spinner } from '../dom.js';
import { dateTime, seconds, shortWhen } from '../format.js';
import { debounce, on } from '../live.js';
import {
  CALL_OUTCOME, CALL_STATUS, CHANNEL, MESSAGE_STATUS, MESSAGE_STATUS_ICON, THREAD_STATUS, customerName,
  failureReason, loadUsers, paymentLinkDialog, personName, phoneEl, statusBadge,
} from './common.js';
import { tasksPanel } from './agent.js';

const filters = { status: 'open', assignee: '', unread: false, channel: '', q: '' };

// Why a media item was not kept (`error_code` of a rejected or expired item).
const MEDIA_REJECTED = {
  too_large: 'הקובץ גדול מהמותר',
  too_many: 'בהודעה יותר קבצים מהמותר',
  not_allowed: 'סוג קובץ שאינו נשמר',
  download_failed: 'לא ניתן היה להוריד את הקובץ',
  empty: 'הקובץ ריק',
  expired: 'הקובץ נמחק בתום תקופת השמירה',
};

function fileSize(bytes) {
  if (bytes >= 1024 * 1024) return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  return `${Math.max(1, Math.round(bytes / 1024))} KB`;
}

function readFilters() {
  const params = new URLSearchParams(location.search);
  if (params.has('status')) filters.status = params.get('status');
  if (params.has('assignee')) filters.assignee = params.get('assignee');
  if (params.has('channel')) filters.channel = params.get('channel');
  if (params.has('q')) filters.q = params.get('q');
  filters.unread = params.get('unread') === 'true';
}

function writeFilters() {
  if (!location.pathname.startsWith('/app/inbox')) return;
  keepQuery(location.pathname, { status: filters.status === 'open' ? '' : filters.status || 'all', assignee: filters.assignee,
    channel: filters.channel, q: filters.q, unread: filters.unread ? 'true' : '' });
}

export async function render(main, params, ctx) {
  document.title = 'תיבת הודעות · AgentLocator';
  readFilters();
  const users = await loadUsers(ctx);
  const selfId = ctx.session.user.id;
  const threadId = params.threadId ? Number(params.threadId) : null;

  const listBox = h('div', { class: 'thread-list', 'aria-busy': 'true' });
  const pane = h('section', { class: 'conversation', 'aria-label': 'שיחה' });
  const tasks = tasksPanel();
  const layout = h('div', { class: `inbox${threadId ? ' has-selection' : ''}` },
    h('section', { class: 'threads', 'aria-labelledby': 'inbox-title' },
      h('h1', { id: 'inbox-title' }, 'תיבת הודעות'),
      filterBar(() => { writeFilters(); refreshList(); }),
      tasks,
      listBox),
    pane);
  main.append(layout);

  let listToken = 0;
  async function refreshList() {
    const token = ++listToken;
    const apiParams = { limit: 50, status: filters.status === 'all' ? '' : filters.status, channel: filters.channel,
      q: filters.q.trim(), unread: filters.unread ? 'true' : '',
      assignee: filters.assignee === 'mine' ? 'me' : filters.assignee === 'none' ? 'none' : '' };
    try {
      const page = await get(`/api/crm/threads${qs(apiParams)}`);
      if (token !== listToken) return;
      renderList(page.items);
    } catch (error) {
      if (token !== listToken) return;
      clear(listBox, errorBox(hebrewError(error)));
    }
    listBox.setAttribute('aria-busy', 'false');
  }

  function renderList(items) {
    if (!items.length) {
      clear(listBox, h('p', { class: 'empty' }, 'אין שיחות שמתאימות לסינון.'));
      return;
    }
    clear(listBox, h('ul', { class: 'items' }, items.map((t) => {
      const isCall = t.channel === 'voice';
      const last = t.last_message;
      const preview = last ? (last.kind === 'voicemail' ? `הודעה קולית${last.body ? `: ${last.body}` : ''}` : last.body) : '';
      const assignee = personName(users, t.assignee, selfId);
      return h('li', { class: t.id === currentId ? 'current' : '' },
        h('a', { href: `/app/inbox/${t.id}${location.search}`, class: `thread-item${t.unread_count ? ' unread' : ''}`,
          'aria-current': t.id === currentId ? 'true' : null, dataset: { threadId: t.id, channel: t.channel } },
          h('span', { class: `kind ${t.channel}` }, icon(isCall ? 'phone' : 'chat')),
          h('span', { class: 'who' }, customerName(t.customer)),
          h('span', { class: 'when' }, shortWhen(t.last_activity_at)),
          h('span', { class: 'preview' },
            h('span', { class: 'sr-only' }, `${isCall ? 'שיחה טלפונית' : 'וואטסאפ'}. `),
            preview || (isCall ? 'שיחה טלפונית' : '')),
          h('span', { class: 'meta' },
            statusBadge(THREAD_STATUS[t.status] || t.status, t.status),
            assignee ? statusBadge(`משויך: ${assignee}`, 'assignee') : null,
            (t.labels || []).map((l) => statusBadge(l, 'label')),
            t.unread_count ? h('span', { class: 'unread-count', 'aria-label': `${t.unread_count} לא נקראו` }, String(t.unread_count)) : null)));
    })));
  }

  let currentId = threadId;
  let conversation = null;
  if (threadId) {
    conversation = openConversation(pane, threadId, ctx, users, () => refreshList());
  } else {
    pane.append(h('div', { class: 'placeholder' }, h('p', {}, 'בחרו שיחה מהרשימה.')));
  }
  refreshList();

  const refreshListSoon = debounce(refreshList, 200);
  const offs = [
    on('message', (e) => { refreshListSoon(); if (conversation && e.thread_id === currentId) conversation.refresh(); }),
    on('message_status', (e) => { if (conversation && e.thread_id === currentId) conversation.statusChanged(e); }),
    on('thread', (e) => { refreshListSoon(); if (conversation && e.thread_id === currentId) conversation.refreshThread(); }),
    on('call', () => { refreshListSoon(); if (conversation) conversation.callChanged(); }),
    ...tasks.stopLive,
  ];
  return () => { offs.forEach((off) => off()); if (conversation) conversation.close(); };
}

function filterBar(changed) {
  const status = select([['open', 'פתוחות'], ['pending', 'ממתינות'], ['resolved', 'סגורות'], ['all', 'הכול']],
    filters.status || 'open', { name: 'status' });
  const assignee = select([['', 'כל השיחות'], ['mine', 'שלי'], ['none', 'לא משויכות']], filters.assignee, { name: 'assignee' });
  const channel = select([['', 'כל הערוצים'], ['whatsapp', 'וואטסאפ'], ['voice', 'שיחות טלפון']], filters.channel, { name: 'channel' });
  const unread = h('input', { type: 'checkbox', name: 'unread', checked: filters.unread });
  const search = h('input', { type: 'search', name: 'q', value: filters.q, placeholder: 'שם, טלפון או מילה' });
  status.addEventListener('change', () => { filters.status = status.value; changed(); });
  assignee.addEventListener('change', () => { filters.assignee = assignee.value; changed(); });
  channel.addEventListener('change', () => { filters.channel = channel.value; changed(); });
  unread.addEventListener('change', () => { filters.unread = unread.checked; changed(); });
  const typed = debounce(() => { filters.q = search.value; changed(); }, 300);
  search.addEventListener('input', typed);
  return h('form', { class: 'filters', role: 'search', onsubmit: (e) => { e.preventDefault(); filters.q = search.value; changed(); } },
    field('חיפוש', search), field('סטטוס', status), field('שיוך', assignee), field('ערוץ', channel),
    h('label', { class: 'check' }, unread, 'לא נקראו בלבד'));
}

function openConversation(pane, threadId, ctx, users, listChanged) {
  const selfId = ctx.session.user.id;
  let thread = null;
  let messages = [];
  let calls = [];
  let olderCursor = null;
  let closed = false;
  const head = h('div', { class: 'conv-head' });
  const timeline = h('ol', { class: 'timeline', 'aria-label': 'הודעות', 'aria-live': 'polite', 'aria-relevant': 'additions' });
  const older = h('div', { class: 'older' });
  const composer = h('div', { class: 'composer' });
  clear(pane, spinner());

  async function load() {
    try {
      const body = await get(`/api/crm/threads/${threadId}?limit=50`);
      if (closed) return;
      thread = body;
      messages = body.messages.items.slice().reverse();
      olderCursor = body.messages.next_cursor;
      calls = await loadCalls(body.customer);
      if (closed) return;
      clear(pane, h('a', { href: `/app/inbox${location.search}`, class: 'back' }, '→ חזרה לרשימה'), head, older, timeline, composer);
      renderHead();
      renderTimeline();
      renderComposer();
      timeline.lastElementChild && timeline.lastElementChild.scrollIntoView({ block: 'end' });
      if (thread.unread_count) {
        post(`/api/crm/threads/${threadId}/read`).then(listChanged).catch(() => {});
      }
    } catch (error) {
      if (closed) return;
      clear(pane, h('a', { href: `/app/inbox${location.search}`, class: 'back' }, '→ חזרה לרשימה'),
        errorBox(error instanceof ApiError && error.status === 404 ? 'השיחה לא נמצאה.' : hebrewError(error)));
    }
  }

  async function loadCalls(customer) {
    if (!customer || !customer.phone) return [];
    try {
      const page = await get(`/api/crm/calls${qs({ phone: customer.phone, limit: 50 })}`);
      return page.items;
    } catch { return []; }  // the conversation still shows without its calls
  }

  let labelsDraft = null;  // labels being typed: a live redraw of the header must not wipe them
  function renderHead() {
    // A live update redraws the header: keep what the person was doing (focus, open labels).
    // The box's state is read from the element itself: its `toggle` event comes a task later,
    // so a redraw right after a click would otherwise close the box again.
    const labelsOpen = Boolean(head.querySelector('details.labels-box')?.open);
    const active = document.activeElement;
    const focused = active && head.contains(active) ? (active.name || active.textContent) : null;
    const statusSel = select(Object.entries(THREAD_STATUS), thread.status, { name: 'thread-status' });
    statusSel.addEventListener('change', () => update({ status: statusSel.value }, 'הסטטוס עודכן'));
    const resolve = h('button', { type: 'button', class: thread.status === 'resolved' ? 'ghost' : 'primary',
      onclick: () => update({ status: thread.status === 'resolved' ? 'open' : 'resolved' },
        thread.status === 'resolved' ? 'השיחה נפתחה מחדש' : 'השיחה נסגרה') },
    thread.status === 'resolved' ? 'פתיחה מחדש' : 'סימון כטופלה');
    const assigneeOptions = [['', 'ללא שיוך'], ...users.map((u) => [String(u.id), u.id === selfId ? `אני (${u.name || u.email})` : (u.name || u.email)])];
    if (thread.assignee && !users.some((u) => u.id === thread.assignee)) {
      assigneeOptions.push([String(thread.assignee), personName(users, thread.assignee, selfId)]);
    }
    const assignee = select(assigneeOptions, thread.assignee ?? '', { name: 'assignee' });
    assignee.addEventListener('change', () => update({ assignee: assignee.value ? Number(assignee.value) : null }, 'השיוך עודכן'));
    const takeMine = thread.assignee === selfId ? null : h('button', { type: 'button', class: 'ghost',
      onclick: () => update({ assignee: selfId }, 'השיחה שויכה אלייך') }, 'שיוך אליי');
    const labels = h('input', { type: 'text', name: 'labels', value: labelsDraft ?? (thread.labels || []).join(', '),
      placeholder: 'למשל: VIP, החזר', oninput: (e) => { labelsDraft = e.target.value; } });
    const saveLabels = h('button', { type: 'submit', class: 'ghost' }, 'שמירת תוויות');
    const labelForm = h('details', { class: 'labels-box', open: labelsOpen },
      h('summary', {}, 'תוויות', ' ', (thread.labels || []).length ? (thread.labels || []).map((l) => statusBadge(l, 'label')) : h('span', { class: 'muted' }, '(אין)')),
      h('form', { class: 'inline', onsubmit: (e) => {
        e.preventDefault();
        const list = labels.value.split(/[,،]/).map((s) => s.trim()).filter(Boolean);
        labelsDraft = null;
        update({ labels: list }, 'התוויות נשמרו');
      } }, field('תוויות (מופרדות בפסיק)', labels), saveLabels));
    // Taking a conversation over from the AI needs the server to know the thread's AI state
    // (`ai_paused`); where it doesn't, the switch shows as unavailable rather than failing on use.
    const aiKnown = Object.prototype.hasOwnProperty.call(thread, 'ai_paused');
    const aiOn = aiKnown && !thread.ai_paused;
    const aiSwitch = h('button', { type: 'button', role: 'switch', 'aria-checked': aiOn ? 'true' : 'false', class: 'switch',
      disabled: !aiKnown, 'aria-describedby': aiKnown ? null : `ai-hint-${threadId}`,
      onclick: () => update({ ai_paused: aiOn }, aiOn ? 'השתלטת על השיחה: ה-AI לא יענה בה' : 'השיחה הוחזרה ל-AI') },
    h('span', { class: 'knob', 'aria-hidden': 'true' }), aiOn ? 'ה-AI עונה בשיחה' : aiKnown ? 'נציג/ה מטפל/ת (ה-AI מושהה)' : 'לא זמין');
    const aiHint = aiKnown ? null : h('span', { class: 'hint', id: `ai-hint-${threadId}` }, 'השתלטות על שיחה אינה זמינה בשרת הזה.');
    const customer = thread.customer;
    clear(head,
      h('div', { class: 'conv-title' },
        h('h2', {}, h('a', { href: `/app/customers/${customer.id}` }, customerName(customer))),
        customer.phone ? phoneEl(customer.phone) : null,
        statusBadge(CHANNEL[thread.channel] || thread.channel, thread.channel)),
      h('div', { class: 'conv-controls' },
        field('סטטוס', statusSel), resolve,
        field('משויך ל', assignee), takeMine,
        h('div', { class: 'field ai-field' }, h('span', { class: 'label-like', id: `ai-${threadId}` }, 'מענה אוטומטי'), aiSwitch, aiHint)),
      labelForm);
    aiSwitch.setAttribute('aria-labelledby', `ai-${threadId}`);
    if (focused) {
      const again = [...head.querySelectorAll('select, input, button, summary')]
        .find((el) => (el.name || el.textContent) === focused);
      if (again) again.focus();
    }
  }

  async function update(change, done) {
    try {
      const updated = await patch(`/api/crm/threads/${threadId}`, change);
      thread = { ...thread, ...updated, customer: thread.customer };
      renderHead();
      announce(done);
      listChanged();
    } catch (error) {
      announce(hebrewError(error), 'error');
      renderHead();
    }
  }

  function entries() {
    const list = messages.map((m) => ({ at: m.created_at, message: m }));
    for (const call of calls) list.push({ at: call.created_at, call });
    const oldest = messages.length && olderCursor ? messages[0].created_at : null;
    return list.filter((e) => !oldest || e.at >= oldest).sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  }

  function renderTimeline() {
    const byId = new Map(calls.map((c) => [c.id, c]));
    clear(timeline, entries().map((e) => (e.call ? callEntry(e.call) : messageEntry(e.message, byId))));
    clear(older, olderCursor ? h('button', { type: 'button', class: 'ghost', onclick: loadOlder }, 'הודעות קודמות') : null);
  }

  function callEntry(call) {
    return h('li', { class: 'entry call', dataset: { callSid: call.call_sid } },
      h('div', { class: 'call-card' },
        h('strong', {}, icon('phone'), ' שיחה טלפונית'), ' ',
        h('span', {}, dateTime(call.started_at || call.created_at)),
        call.duration_seconds !== null ? h('span', {}, ` · ${seconds(call.duration_seconds)} דק׳`) : null,
        h('span', {}, ` · ${CALL_OUTCOME[call.outcome] || CALL_STATUS[call.status] || call.status}`),
        call.transcript_preview ? h('p', { class: 'preview' }, call.transcript_preview) : null,
        h('a', { href: `/app/calls/${encodeURIComponent(call.call_sid)}` }, 'תמליל השיחה והקלטה')));
  }

  function messageEntry(m, callsById) {
    const out = m.direction === 'out';
    let who = null;
    if (out) {
      const staff = personName(users, m.sender_user_id, selfId);
      who = staff ? `נשלח על ידי ${staff}` : 'נענה על ידי ה-AI';
    }
    const call = m.call_id ? callsById.get(m.call_id) : null;
    const body = m.kind === 'voicemail'
      ? [h('strong', {}, icon('mic'), ' הודעה קולית'), m.body ? h('p', {}, m.body) : h('p', { class: 'muted' }, 'ללא תמלול'),
        call ? h('audio', { controls: true, preload: 'none', src: `/api/crm/calls/${encodeURIComponent(call.call_sid)}/recording`,
          'aria-label': 'השמעת ההודעה הקולית' }) : null]
      : [m.body ? h('p', { class: 'text' }, m.body) : null];
    const attachments = m.attachments || [];
    // The provider's own description is shown only for what has no stored item (a location).
    const described = m.kind === 'voicemail' ? [] : (m.media || []).filter((item) => !attachments.length || item.type === 'location');
    const media = [
      ...attachments.map((item) => attachmentView(item, m)),
      ...described.map((item) => h('p', { class: 'media' }, icon(item.type === 'location' ? 'pin' : 'clip'), ' ', mediaLabel(item))),
    ];
    const status = out ? h('span', { class: `msg-status ${m.status}`, dataset: { status: m.status } },
      m.status === 'failed' ? icon('alert') : m.status === 'queued' ? icon('clock')
        : h('span', { 'aria-hidden': 'true' }, `${MESSAGE_STATUS_ICON[m.status] || ''} `),
      MESSAGE_STATUS[m.status] || m.status) : null;
    return h('li', { class: `entry msg ${out ? 'out' : 'in'}${m.status === 'failed' ? ' failed' : ''}`,
      dataset: { messageId: m.id } },
    h('div', { class: 'bubble' }, body, media,
      h('div', { class: 'msg-meta' }, h('time', { datetime: m.created_at }, dateTime(m.created_at)),
        who ? h('span', { class: 'who' }, who) : null, status),
      m.status === 'failed' ? h('p', { class: 'fail-reason' }, failureReason(m)) : null));
  }

  // One stored media item: the picture, a player, or a download link; why it was not kept; or that it is on its way.
  function attachmentView(item, message) {
    const label = mediaLabel(item);
    if (item.status === 'pending') {
      return h('p', { class: 'media pending', dataset: { mediaId: item.id } }, icon('clock'), ` ${label} בהורדה…`);
    }
    if (item.status !== 'stored') {
      return h('p', { class: 'media rejected', dataset: { mediaId: item.id } }, icon('alert'),
        ` ${label} לא נשמר: ${MEDIA_REJECTED[item.error_code] || item.error_message || 'סיבה לא ידועה'}`);
    }
    const name = item.file_name || label;
    const caption = item.caption && item.caption !== message.body ? h('p', { class: 'caption' }, item.caption) : null;
    if (item.kind === 'image' || item.kind === 'sticker') {
      return h('figure', { class: `media ${item.kind}`, dataset: { mediaId: item.id } },
        h('a', { href: item.url, target: '_blank', rel: 'noopener' },
          h('img', { src: item.url, alt: item.caption || `${label} מהשיחה`, loading: 'lazy' })), caption);
    }
    if (item.kind === 'audio') {
      return h('div', { class: 'media audio', dataset: { mediaId: item.id } },
        h('audio', { controls: true, preload: 'metadata', src: item.url,
          'aria-label': item.voice_note ? 'השמעת ההודעה הקולית' : `השמעת ${name}` }),
        transcriptView(message));
    }
    if (item.kind === 'video') {
      return h('figure', { class: 'media video', dataset: { mediaId: item.id } },
        h('video', { controls: true, preload: 'metadata', src: item.url, 'aria-label': `סרטון: ${name}` }), caption);
    }
    return h('p', { class: 'media document', dataset: { mediaId: item.id } }, icon('clip'), ' ',
      h('a', { href: item.download_url, download: name }, name), h('span', { class: 'muted' }, ` · ${fileSize(item.size)}`));
  }

  function transcriptView(message) {
    if (message.transcript) return h('p', { class: 'transcript' }, message.transcript);
    if (message.transcript_status === 'pending') return h('p', { class: 'transcript muted' }, 'מתמלל…');
    if (message.transcript_status === 'failed') {
      return h('p', { class: 'transcript fail-reason' }, 'לא ניתן היה לתמלל את ההקלטה');
    }
    return null;
  }

  function mediaLabel(item) {
    const kind = item.kind || item.type || '';
    if (kind === 'location') return `מיקום${item.address || item.label ? `: ${item.address || item.label}` : ''}`;
    return { image: 'תמונה', audio: 'הקלטה', video: 'וידאו', document: 'מסמך', sticker: 'מדבקה' }[kind] || 'קובץ מצורף';
  }

  async function loadOlder() {
    try {
      const page = await get(`/api/crm/threads/${threadId}/messages${qs({ limit: 50, cursor: olderCursor })}`);
      messages = [...page.items.slice().reverse(), ...messages];
      olderCursor = page.next_cursor;
      renderTimeline();
    } catch (error) { announce(hebrewError(error), 'error'); }
  }

  function renderComposer() {
    const text = h('textarea', { name: 'reply', rows: 3, maxlength: 4096, placeholder: 'כתבו תשובה ללקוח…' });
    const send = h('button', { type: 'submit', class: 'primary' }, 'שליחה');
    const problem = h('div', { class: 'problem' });
    const payLink = h('button', { type: 'button', class: 'ghost', onclick: () => paymentLinkDialog({
      title: 'קישור לתשלום בשיחה', endpoint: `/api/crm/threads/${threadId}/payment-link`, body: { askAmount: true } }) },
    'קישור לתשלום');
    const file = h('input', { type: 'file', name: 'file' });
    const form = h('form', { class: 'reply' },
      field('תשובה ללקוח', text), field('צירוף קובץ (תמונה, מסמך, הקלטה)', file), problem,
      h('div', { class: 'actions' }, send, payLink));
    text.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
    });
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      problem.replaceChildren();
      const chosen = file.files && file.files[0];
      if (!text.value.trim() && !chosen) { problem.append(errorBox('יש לכתוב הודעה או לצרף קובץ.')); text.focus(); return; }
      send.disabled = true;
      let body = { text: text.value };
      if (chosen) { // the text goes with the file as its caption
        body = new FormData();
        body.append('text', text.value);
        body.append('file', chosen);
      }
      try {
        const answer = await post(`/api/crm/threads/${threadId}/messages`, body,
          { headers: { 'Idempotency-Key': idempotencyKey() } });
        text.value = '';
        file.value = '';
        if (answer.stored_message && answer.thread_id === threadId) {
          upsert(answer.stored_message);
          renderTimeline();
          timeline.lastElementChild && timeline.lastElementChild.scrollIntoView({ block: 'end' });
        } else if (answer.thread_id && answer.thread_id !== threadId) {
          announce('התשובה נשלחה בוואטסאפ ונשמרה בשיחת הוואטסאפ של הלקוח.');
        }
        announce('ההודעה נשלחה');
      } catch (error) {
        const why = error instanceof ApiError && error.code === 'template_required'
          ? h('div', { class: 'error-box rule24', role: 'alert' },
            h('strong', {}, 'חלון 24 השעות של וואטסאפ נסגר. '),
            'וואטסאפ מאפשר לעסק לשלוח הודעה חופשית רק בתוך 24 שעות מההודעה האחרונה של הלקוח. עכשיו אפשר לשלוח רק תבנית הודעה מאושרת, או לחכות שהלקוח יכתוב שוב.')
          : errorBox(hebrewError(error));
        problem.append(why);
        if (error instanceof ApiError && error.body && error.body.message_id) refresh();
      } finally {
        send.disabled = false;
      }
    });
    clear(composer, form);
  }

  function upsert(message) {
    const index = messages.findIndex((m) => m.id === message.id);
    if (index >= 0) messages[index] = message; else messages.push(message);
  }

  // New messages and statuses: re-read the newest page and merge (a page is one indexed query);
  // the customer's calls only when a call changed.
  let callsChanged = false;
  const refresh = debounce(async () => {
    if (!thread || closed) return;
    try {
      const withCalls = callsChanged;
      callsChanged = false;
      const [page, newCalls] = await Promise.all([get(`/api/crm/threads/${threadId}/messages?limit=50`),
        withCalls ? loadCalls(thread.customer) : Promise.resolve(calls)]);
      if (closed) return;
      for (const m of page.items) upsert(m);
      messages.sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id - b.id));
      calls = newCalls;
      const atBottom = isNearBottom();
      renderTimeline();
      if (atBottom && timeline.lastElementChild) timeline.lastElementChild.scrollIntoView({ block: 'end' });
      if (document.visibilityState === 'visible' && page.items.some((m) => m.direction === 'in')) {
        post(`/api/crm/threads/${threadId}/read`).then(listChanged).catch(() => {});
      }
    } catch { /* the next event or a reload will try again */ }
  }, 30);
  const callChanged = () => { callsChanged = true; refresh(); };

  function isNearBottom() {
    const last = timeline.lastElementChild;
    if (!last) return true;
    const rect = last.getBoundingClientRect();
    return rect.top < window.innerHeight + 200;
  }

  // Show the new state at once when the event carries it; the re-read brings the rest (error text).
  function statusChanged(event) {
    const message = messages.find((m) => m.id === event.message_id);
    if (message && event.status) {
      message.status = event.status;
      if (event.error) message.error_message = event.error;
      renderTimeline();
    }
    refresh();
  }

  async function refreshThread() {
    try {
      const body = await get(`/api/crm/threads/${threadId}?limit=1`);
      if (closed) return;
      thread = { ...thread, ...body, messages: undefined };
      renderHead();
    } catch { /* keep what is shown */ }
  }

  load();
  return { refresh, callChanged, statusChanged, refreshThread, close: () => { closed = true; } };
}
