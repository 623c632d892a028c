// The console's entry point: session, the shell (header and navigation), and the router.
import { ApiError, del, get, hebrewError, setUnauthorizedHandler } from './api.js';
import { clear, errorBox, h, spinner } from './dom.js';
import { setTimeZone } from './format.js';
import { startLive, stopLive } from './live.js';

const BASE = '/app';
const VIEWS = {
  login: () => import('./views/login.js'),
  inbox: () => import('./views/inbox.js'),
  calls: () => import('./views/calls.js'),
  customers: () => import('./views/customers.js'),
  documents: () => import('./views/documents.js'),
  settings: () => import('./views/settings.js'),
  diary: () => import('./views/diary.js'),
};

const NAV = [
  ['inbox', 'תיבת הודעות'],
  ['calls', 'שיחות'],
  ['diary', 'יומן תורים'],
  ['customers', 'לקוחות'],
  ['deals', 'עסקאות'],
  ['invoices', 'חשבוניות'],
  ['contracts', 'חוזים'],
  ['settings', 'הגדרות', 'owner'],
];

const state = { session: null, cleanup: null, renderToken: 0 };

export function isOwner(session = state.session) {
  return !!session && (session.user.role === 'owner' || session.user.role === 'admin');
}

// Only paths inside the console are followed after sign-in (no open redirect through ?next=).
function safeNext(value) {
  return typeof value === 'string' && value.startsWith(`${BASE}/`) && !value.startsWith('//')
    && !value.startsWith(`${BASE}/login`) ? value : `${BASE}/inbox`;
}

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  route();
}

function goToLogin(expired) {
  const here = location.pathname + location.search;
  const next = here.startsWith(`${BASE}/login`) ? '' : `?next=${encodeURIComponent(here)}`;
  const flag = expired ? `${next ? '&' : '?'}expired=1` : '';
  state.session = null;
  stopLive();
  history.replaceState(null, '', `${BASE}/login${next}${flag}`);
  route();
}

setUnauthorizedHandler(() => {
  if (state.session) goToLogin(true);
});

function parseRoute(pathname) {
  const parts = pathname.replace(/^\/app\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const [first = '', second] = parts;
  if (first === 'login') return { view: 'login' };
  if (first === '' ) return { redirect: `${BASE}/inbox` };
  if (first === 'inbox') return { view: 'inbox', nav: 'inbox', params: { threadId: second } };
  if (first === 'calls') return { view: 'calls', nav: 'calls', params: { sid: second } };
  if (first === 'customers') return { view: 'customers', nav: 'customers', params: { id: second } };
  if (['deals', 'invoices', 'contracts'].includes(first)) {
    return { view: 'documents', nav: first, params: { kind: first, id: second } };
  }
  if (first === 'diary') return { view: 'diary', nav: 'diary', params: { mode: second } };
  if (first === 'settings') return { view: 'settings', nav: 'settings', owner: true, params: { tab: second } };
  return { view: null };
}

async function loadSession() {
  try {
    state.session = await get('/api/auth/me', { quiet401: true });
    setTimeZone(state.session.business && state.session.business.time_zone);
  } catch (error) {
    state.session = null;
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
  }
}

function shell(active) {
  const session = state.session;
  const links = NAV.filter(([, , role]) => !role || isOwner(session)).map(([key, text]) => h('li', {},
    h('a', { href: `${BASE}/${key}`, 'aria-current': key === active ? 'page' : null }, text)));
  const who = session.user.name || session.user.email;
  const header = h('header', { class: 'topbar' },
    h('div', { class: 'brand' },
      h('span', { class: 'business' }, (session.business && session.business.name) || 'AgentLocator'),
      h('span', { class: 'live', id: 'live-status', role: 'status' })),
    h('nav', { 'aria-label': 'ניווט ראשי' }, h('ul', {}, links)),
    h('div', { class: 'user' },
      h('bdi', { class: 'who', title: who, dir: session.user.name ? 'auto' : 'ltr' }, who),
      h('button', { type: 'button', class: 'ghost', onclick: signOut }, 'התנתקות')));
  const main = h('main', { id: 'main', tabindex: '-1' });
  return { header, main };
}

async function signOut() {
  try {
    await del('/api/auth/session');
  } catch { /* signed out either way: the cookie is gone or was already invalid */ }
  state.session = null;
  stopLive();
  history.pushState(null, '', `${BASE}/login`);
  route();
}

function setLiveStatus(status) {
  state.liveStatus = status;
  const el = document.getElementById('live-status');
  if (!el) return;
  el.textContent = status === 'open' ? 'עדכונים חיים פעילים' : 'מתחבר מחדש לעדכונים…';
  el.dataset.state = status;
}

async function route() {
  const token = ++state.renderToken;
  const root = document.getElementById('app');
  if (state.cleanup) { try { state.cleanup(); } catch { /* the old view is gone anyway */ } }
  state.cleanup = null;
  const target = parseRoute(location.pathname);
  if (target.redirect) { history.replaceState(null, '', target.redirect); return route(); }

  if (target.view === 'login') {
    if (state.session === null) await loadSession().catch(() => {});
    if (state.session) {
      const next = new URLSearchParams(location.search).get('next');
      history.replaceState(null, '', safeNext(next));
      return route();
    }
    const view = await VIEWS.login();
    if (token !== state.renderToken) return;
    const main = h('main', { id: 'main', class: 'login-main', tabindex: '-1' });
    clear(root, main);
    view.render(main, {}, {
      expired: new URLSearchParams(location.search).has('expired'),
      onSignedIn: (session) => {
        state.session = session;
        setTimeZone(session.business && session.business.time_zone);
        const next = new URLSearchParams(location.search).get('next');
        history.replaceState(null, '', safeNext(next));
        route();
      },
    });
    return;
  }

  if (!state.session) {
    try {
      await loadSession();
    } catch (error) {
      clear(root, h('main', { id: 'main' }, errorBox(hebrewError(error))));
      return;
    }
    if (!state.session) return goToLogin(false);
  }
  if (token !== state.renderToken) return;

  const { header, main } = shell(target.nav);
  clear(root, h('a', { href: '#main', class: 'skip' }, 'דילוג לתוכן'), header, main);
  if (state.liveStatus) setLiveStatus(state.liveStatus);  // the new header shows the stream's state
  startLive(setLiveStatus, () => { get('/api/auth/me').catch(() => {}); });

  if (!target.view) {
    main.append(h('h1', {}, 'הדף לא נמצא'), h('p', {}, h('a', { href: `${BASE}/inbox` }, 'חזרה לתיבת ההודעות')));
    return;
  }
  if (target.owner && !isOwner()) {
    main.append(h('h1', {}, 'אין הרשאה'), errorBox('ההגדרות זמינות רק לבעלי העסק.'));
    return;
  }
  main.append(spinner());
  try {
    const view = await VIEWS[target.view]();
    if (token !== state.renderToken) return;
    clear(main);
    state.cleanup = await view.render(main, target.params || {}, {
      session: state.session, owner: isOwner(), navigate,
    }) || null;
  } catch (error) {
    if (token !== state.renderToken) return;
    clear(main, h('h1', {}, 'שגיאה'), errorBox(hebrewError(error)));
  }
  if (state.focusMain) {
    const heading = main.querySelector('h1');
    (heading || main).setAttribute('tabindex', '-1');
    (heading || main).focus({ preventScroll: true });
  }
  state.focusMain = true;
}

// Links inside the console change the view without a reload.
document.addEventListener('click', (event) => {
  const link = event.target.closest('a[href]');
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey
      || link.target || link.hasAttribute('download') || link.getAttribute('href').startsWith('#')) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !(url.pathname === BASE || url.pathname.startsWith(`${BASE}/`))) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', route);
route();
