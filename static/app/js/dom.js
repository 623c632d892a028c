// A tiny element builder: h('button', {class: 'primary', onclick}, 'text', child, ...).
// Text is always set as text nodes, never parsed as HTML, so data from the API can't inject markup.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name === 'class') el.className = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name === 'value' || name === 'checked' || name === 'selected' || name === 'disabled') el[name] = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
export function nextId(prefix = 'f') {
  uid += 1;
  return `${prefix}-${uid}`;
}

// A labelled form control: the label is tied to the control by id, so screen readers name it.
export function field(label, control, hint) {
  control.id = control.id || nextId();
  const hintEl = hint ? h('span', { class: 'hint', id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintEl);
}

export function select(options, value, attrs = {}) {
  return h('select', attrs, options.map(([v, text]) => h('option', { value: v, selected: String(v) === String(value ?? '') }, text)));
}

// The page's polite live region for short notices ("נשמר"), read out by screen readers.
export function announce(text, kind = 'info') {
  const region = document.getElementById('toast');
  if (!region) return;
  const item = h('div', { class: `toast ${kind}` }, text);
  region.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 8000 : 4000);
}

// An error box inside a view: role=alert so it is announced when it appears.
export function errorBox(text) {
  return h('div', { class: 'error-box', role: 'alert' }, text);
}

export function spinner(text = 'טוען…') {
  return h('p', { class: 'loading', role: 'status' }, text);
}

// A modal dialog on the native <dialog> element (focus trap and Escape come with it).
export function openDialog(title, build) {
  const titleId = nextId('dlg');
  const dialog = h('dialog', { 'aria-labelledby': titleId, class: 'dialog' });
  const close = () => { dialog.close(); dialog.remove(); };
  dialog.append(
    h('div', { class: 'dialog-head' },
      h('h2', { id: titleId }, title),
      h('button', { type: 'button', class: 'icon', 'aria-label': 'סגירה', onclick: close }, '✕')),
    build(close));
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, close };
}
