// Sign-in: e-mail and password → a cookie session (the page never sees a token).
import { ApiError, hebrewError, post } from '../api.js';
import { errorBox, field, h } from '../dom.js';

export function render(main, _params, { expired, onSignedIn }) {
  document.title = 'התחברות · AgentLocator';
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true, dir: 'ltr' });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true, dir: 'ltr' });
  const problem = h('div', { class: 'problem' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'כניסה');
  const form = h('form', { class: 'card login', novalidate: true },
    h('h1', {}, 'כניסה למערכת'),
    expired ? h('p', { class: 'notice', role: 'status' }, 'פג תוקף ההתחברות. יש להתחבר שוב כדי להמשיך מאותו מקום.') : null,
    field('אימייל', email),
    field('סיסמה', password),
    problem,
    submit);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    if (!email.value.trim() || !password.value) {
      problem.append(errorBox('יש להזין אימייל וסיסמה.'));
      (email.value.trim() ? password : email).focus();
      return;
    }
    submit.disabled = true;
    try {
      const session = await post('/api/auth/session', { email: email.value.trim(), password: password.value },
        { quiet401: true });
      onSignedIn(session);
    } catch (error) {
      problem.append(errorBox(error instanceof ApiError && error.status === 401 && error.code !== 'too_many_requests'
        ? 'האימייל או הסיסמה שגויים.' : hebrewError(error)));
      password.select();
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });
  main.append(h('div', { class: 'login-wrap' }, h('p', { class: 'product' }, 'AgentLocator'), form));
  email.focus();
}
