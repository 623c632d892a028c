// What the AI agent's tools leave for staff and how owners switch them: the open tasks panel of the
// inbox (messages the agent took, marked done here), the tool calls of a call turn, and the
// settings tab "כלים" with a switch per tool.
import { get, hebrewError, patch, put } from '../api.js';
import { announce, clear, errorBox, h, spinner } from '../dom.js';
import { dateTime, ms } from '../format.js';
import { debounce, on } from '../live.js';
import { phoneEl, statusBadge } from './common.js';

// The tools' Hebrew names, for rows that outlived a tool (the API gives the label of those it knows).
export const TOOL_LABEL = {
  find_slots: 'חיפוש תורים פנויים',
  book_appointment: 'קביעת תור',
  cancel_appointment: 'ביטול תור',
  take_message: 'השארת הודעה לצוות',
  send_payment_link: 'שליחת קישור לתשלום',
  end_call: 'סיום שיחה',
  transfer_to_person: 'העברה לנציג',
};
const CHANNEL_LABEL = { call: 'שיחות טלפון', whatsapp: 'וואטסאפ' };

// ---- the inbox's open tasks -------------------------------------------------------------------
export function tasksPanel() {
  const list = h('div', { class: 'tasks-list', 'aria-live': 'polite' }, spinner());
  const panel = h('section', { class: 'tasks', 'aria-labelledby': 'tasks-title' },
    h('h2', { id: 'tasks-title' }, 'משימות פתוחות'), list);
  async function load() {
    try {
      const { items } = await get('/api/crm/tasks?status=open');
      clear(list, items.length ? h('ul', { class: 'task-items' }, items.map((task) => taskItem(task, load)))
        : h('p', { class: 'empty' }, 'אין משימות פתוחות.'));
    } catch (error) {
      clear(list, errorBox(hebrewError(error)));
    }
  }
  load();
  // A call or a message may have left a task: look again when either changes.
  const refresh = debounce(load, 500);
  panel.stopLive = [on('call', refresh), on('message', refresh)];
  return panel;
}

function taskItem(task, reload) {
  const who = task.caller_name || (task.customer && task.customer.name) || 'לקוח/ה';
  const titleId = `task-${task.id}`;
  const done = h('button', { type: 'button', class: 'ghost', 'aria-describedby': titleId }, 'סימון כבוצע');
  done.addEventListener('click', async () => {
    done.disabled = true;
    try {
      await patch(`/api/crm/tasks/${task.id}`, { status: 'done' });
      announce('המשימה סומנה כבוצעה');
      reload();
    } catch (error) {
      done.disabled = false;
      announce(hebrewError(error), 'error');
    }
  });
  return h('li', { class: 'task', dataset: { taskId: task.id } },
    h('p', { class: 'task-title', id: titleId }, h('strong', {}, 'הודעה מ', h('bdi', {}, who)),
      task.phone ? [' · ', phoneEl(task.phone)] : null),
    h('p', { class: 'task-reason' }, task.reason),
    task.callback_time ? h('p', { class: 'muted' }, 'לחזור: ', task.callback_time) : null,
    h('p', { class: 'muted' }, dateTime(task.created_at),
      task.call_id ? ' · מתוך שיחה טלפונית' : task.thread_id ? ' · מתוך וואטסאפ' : ''),
    done);
}

// ---- a call turn's tool calls -----------------------------------------------------------------
export function toolCallItems(calls) {
  return calls.map((call) => h('li', { class: 'entry tool-call' },
    h('div', { class: 'bubble' },
      h('span', { class: 'speaker' }, 'פעולה של ה-AI: ', TOOL_LABEL[call.name] || call.name),
      call.error ? statusBadge('נכשלה', 'warn') : statusBadge('בוצעה', 'ok'),
      call.error ? h('p', { class: 'text' }, 'שגיאה: ', h('bdi', { dir: 'ltr' }, call.error)) : null,
      h('p', { class: 'timing' }, 'משך: ', h('bdi', { dir: 'ltr' }, ms(call.duration_ms))),
      h('details', {}, h('summary', {}, 'פרטים'),
        h('pre', { class: 'tool-json', dir: 'ltr' }, JSON.stringify({ arguments: call.arguments, result: call.result }, null, 2))))));
}

// ---- settings: the tools tab ------------------------------------------------------------------
export async function toolSettings(body) {
  const { tools } = await get('/api/crm/agent_tools');
  const problem = h('div');
  const inputs = tools.map((tool) => ({ tool, input: h('input', { type: 'checkbox', name: `tool-${tool.name}`, checked: tool.enabled }) }));
  const form = h('form', { class: 'stack settings-form tools-form' },
    h('h2', {}, 'כלים של ה-AI'),
    h('p', { class: 'muted' }, 'הפעולות שה-AI רשאי לבצע בעצמו בשיחות טלפון ובוואטסאפ. כלי כבוי: ה-AI לא משתמש בו ומציע שאיש צוות יחזור ללקוח.'),
    h('ul', { class: 'tool-list' }, inputs.map(({ tool, input }) => h('li', {},
      h('label', { class: 'check' }, input, tool.label),
      h('p', { class: 'muted' }, 'זמין ב', tool.channels.map((c) => CHANNEL_LABEL[c] || c).join(' וב'),
        tool.default_enabled ? '' : ' · כבוי כברירת מחדל')))),
    problem,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'שמירה')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    try {
      await put('/api/crm/agent_tools', { tools: Object.fromEntries(inputs.map(({ tool, input }) => [tool.name, input.checked])) });
      announce('הכלים נשמרו');
    } catch (error) {
      problem.append(errorBox(hebrewError(error)));
    }
  });
  clear(body, form);
  return null;
}
