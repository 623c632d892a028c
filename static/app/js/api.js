// The one way the pages talk to the server: JSON over fetch with the session cookie.
// The page never holds a token; the cookie is HttpOnly and travels with `credentials: 'same-origin'`.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error) || (status === 0 ? 'network_error' : `http_${status}`);
    this.field = body && body.field;
    this.body = body || {};
  }
}

// Error codes the server answers → what staff read. Anything unknown gets the generic text by status.
const MESSAGES = {
  invalid_credentials: 'האימייל או הסיסמה שגויים.',
  account_disabled: 'החשבון הושבת על ידי בעלי העסק.',
  unauthorized: 'פג תוקף ההתחברות. יש להתחבר מחדש.',
  forbidden: 'אין לך הרשאה לפעולה הזו.',
  csrf_failed: 'הבקשה נחסמה מטעמי אבטחה. יש לרענן את הדף ולנסות שוב.',
  not_found: 'הפריט לא נמצא (ייתכן שנמחק).',
  no_qr: 'אין כרגע קוד QR להצגה. ממתינים לקוד חדש…',
  no_recording: 'אין הקלטה לשיחה הזו.',
  recording_unavailable: 'לא הצלחנו להביא את ההקלטה כרגע. נסו שוב בעוד רגע.',
  bridge_unavailable: 'שירות החיבור לוואטסאפ אינו זמין כרגע.',
  baileys_disabled: 'חיבור וואטסאפ דרך קוד QR אינו מופעל בשרת.',
  no_whatsapp_recipient: 'ללקוח אין מספר טלפון או כתובת וואטסאפ, ולכן אי אפשר לשלוח לו.',
  cannot_disable_self: 'אי אפשר להשבית את המשתמש שלך.',
  invalid_json: 'הבקשה לא תקינה.',
  invalid_request: 'יש למלא את כל השדות הנדרשים.',
  invalid_field: 'אחד השדות אינו תקין.',
  validation_error: 'אחד השדות אינו תקין.',
  invalid_phone: 'מספר הטלפון אינו תקין.',
  invalid_to: 'מספר הטלפון אינו תקין.',
  invalid_amount: 'הסכום אינו תקין.',
  invalid_currency: 'המטבע אינו נתמך.',
  invalid_description: 'התיאור אינו תקין.',
  invalid_provider: 'ספק התשלום אינו נתמך.',
  duplicate_phone: 'כבר קיים לקוח עם מספר הטלפון הזה.',
  duplicate_email: 'כבר קיים משתמש עם האימייל הזה.',
  number_taken: 'המספר כבר משויך לעסק אחר.',
  illegal_transition: 'אי אפשר לעבור לסטטוס הזה מהסטטוס הנוכחי.',
  document_locked: 'המסמך כבר לא בטיוטה: אפשר לשנות רק את ההערות.',
  conflict: 'הנתונים השתנו בינתיים. יש לרענן ולנסות שוב.',
  no_address: 'ללקוח אין מספר טלפון או מזהה וואטסאפ.',
  media_too_large: 'הקובץ גדול מדי לשליחה בוואטסאפ.',
  media_not_allowed: 'אי אפשר לשלוח קובץ מהסוג הזה.',
  template_required: 'עברו יותר מ־24 שעות מההודעה האחרונה של הלקוח. לפי כללי וואטסאפ אפשר לשלוח עכשיו רק תבנית הודעה מאושרת; הודעה חופשית תתאפשר שוב אחרי שהלקוח יכתוב.',
  text_too_long: 'ההודעה ארוכה מדי.',
  missing_text: 'יש לכתוב הודעה.',
  no_provider_available: 'אי אפשר לשלוח בוואטסאפ כרגע (החיבור לוואטסאפ אינו פעיל).',
  whatsapp_not_configured: 'וואטסאפ אינו מוגדר במערכת.',
  provider_disabled: 'ערוץ השליחה שנבחר אינו מופעל.',
  unsupported_by_provider: 'ערוץ השליחה שנבחר לא יכול לשלוח את ההודעה הזו.',
  send_failed: 'השליחה נכשלה. ההודעה נשמרה כ״נכשלה״.',
  outcome_unknown: 'לא ברור אם ההודעה נשלחה. כדאי לבדוק מול הלקוח לפני שליחה חוזרת.',
  idempotency_key_in_use: 'השליחה עדיין מתבצעת.',
  idempotency_key_reused: 'הבקשה כבר נשלחה.',
  payments_disabled: 'תשלומים כבויים במערכת.',
  payments_disabled_for_business: 'תשלומים אינם מופעלים לעסק. אפשר להפעיל אותם בהגדרות.',
  provider_not_configured: 'ספק התשלום אינו מוגדר. יש להזין פרטי חיבור בהגדרות.',
  invoice_already_paid: 'החשבונית כבר שולמה.',
  invoice_not_payable: 'אפשר לשלוח קישור לתשלום רק לחשבונית שהונפקה.',
  payment_not_awaiting_confirmation: 'התשלום כבר אינו ממתין לאישור (ייתכן שמישהו אחר כבר טיפל בו). המצב המעודכן מוצג כעת.',
  not_configured: 'התכונה אינה מוגדרת בשרת.',
  payload_too_large: 'התוכן גדול מדי.',
  too_many_requests: 'יותר מדי ניסיונות. יש לנסות שוב בעוד מעט.',
  rate_limited: 'יותר מדי ניסיונות. יש לנסות שוב בעוד מעט.',
  sign_in_busy: 'יותר מדי ניסיונות כניסה כרגע, נסו שוב בעוד רגע.',
  database_busy: 'המערכת עמוסה כרגע. נסו שוב בעוד רגע.',
  database_unavailable: 'אין כרגע חיבור למסד הנתונים. נסו שוב בעוד רגע.',
  jobs_unavailable: 'המערכת לא יכולה לקבל את הפעולה כרגע. נסו שוב בעוד רגע.',
  secret_unreadable: 'אי אפשר לקרוא את פרטי החיבור השמורים: מפתח ההצפנה בשרת השתנה. יש לפנות למנהל המערכת.',
  secrets_not_configured: 'השרת אינו מוגדר לשמירת פרטי חיבור סודיים. יש לפנות למנהל המערכת.',
  invalid_idempotency_key: 'הבקשה לא תקינה. יש לרענן את הדף ולנסות שוב.',
  invalid_content_variables: 'ערכי תבנית ההודעה אינם תקינים.',
  method_not_allowed: 'הפעולה אינה נתמכת.',
  network_error: 'אין חיבור לשרת. יש לבדוק את החיבור לאינטרנט ולנסות שוב.',
  slot_taken: 'השעה הזו כבר נתפסה. אפשר לבחור אחת מהשעות הפנויות.',
  outside_opening_hours: 'השעה הזו מחוץ לשעות הפעילות של העסק.',
  in_the_past: 'אי אפשר לקבוע תור לזמן שכבר עבר.',
  too_far_ahead: 'אי אפשר לקבוע תור רחוק כל כך קדימה.',
  not_booked: 'התור הזה כבר אינו קבוע (ייתכן שבוטל).',
  bad_timezone: 'אזור הזמן אינו מוכר.',
  invalid_body: 'הבקשה לא תקינה.',
  not_a_business_number: 'המספר אינו אחד ממספרי הוואטסאפ של העסק.',
  media_not_stored: 'הקובץ לא נשמר במערכת, ולכן אי אפשר לשלוח אותו.',
  media_storage_unavailable: 'אחסון הקבצים אינו זמין כרגע. נסו שוב בעוד רגע.',
  unknown_instance: 'לעסק אין עדיין חיבור וואטסאפ בשרת. יש לפנות למנהל המערכת.',
  internal_error: 'אירעה שגיאה בשרת. נסו שוב בעוד רגע.',
};

const BY_STATUS = {
  400: 'הבקשה אינה תקינה.', 401: MESSAGES.unauthorized, 403: MESSAGES.forbidden, 404: MESSAGES.not_found,
  409: MESSAGES.conflict, 413: MESSAGES.payload_too_large, 422: 'אי אפשר לבצע את הבקשה.',
  429: MESSAGES.too_many_requests, 501: 'התכונה אינה זמינה בשרת הזה.', 502: 'שירות חיצוני נכשל. נסו שוב.',
  503: 'השירות אינו זמין כרגע. נסו שוב בעוד רגע.',
};

// Field names as staff know them, for "which field is wrong".
const FIELDS = {
  phone: 'טלפון', name: 'שם', email: 'אימייל', notes: 'הערות', title: 'כותרת', amount: 'סכום',
  amount_minor: 'סכום', currency: 'מטבע', customer_id: 'לקוח', deal_id: 'עסקה', number: 'מספר חשבונית',
  due_date: 'תאריך לתשלום', body: 'תוכן', status: 'סטטוס', labels: 'תוויות', assignee: 'שיוך', text: 'הודעה',
  password: 'סיסמה', role: 'תפקיד', timezone: 'אזור זמן', ai_instructions: 'הנחיות ל-AI',
  opening_line: 'משפט פתיחה', description: 'תיאור', provider: 'ספק', client_id: 'Client ID',
  client_secret: 'Client secret', terminal: 'מסוף', app_key: 'App key', secret: 'סוד', note: 'הערה',
  transfer_number: 'מספר להעברת שיחות', transfer_announcement: 'מה ישמע מי שעונה',
};

// The Hebrew for an error code alone (e.g. a failed WhatsApp send inside a successful answer).
export function hebrewCode(code) {
  return MESSAGES[code] || 'אירעה שגיאה. נסו שוב.';
}

export function hebrewError(error) {
  if (!(error instanceof ApiError)) return 'אירעה שגיאה לא צפויה. נסו שוב.';
  let text = MESSAGES[error.code] || BY_STATUS[error.status] || 'אירעה שגיאה. נסו שוב.';
  if (error.field && (error.code === 'validation_error' || error.code === 'invalid_field'
      || error.code === 'invalid_request')) {
    const name = FIELDS[error.field] || FIELDS[String(error.field).split('.').pop()];
    if (name) text = `השדה „${name}” אינו תקין.`;
  }
  return text;
}

// Called once by main.js: what to do when the session is gone (back to sign-in, keeping the place).
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export async function api(method, path, body, { headers = {}, quiet401 = false } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } };
  if (body instanceof FormData) {
    init.body = body; // a file upload: the browser writes the multipart boundary itself
  } else if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, null);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (response.status === 401 && !quiet401) onUnauthorized();
  // A failed WhatsApp send answers {success: false, error, …} with a 4xx/5xx: the same error shape.
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path, opts) => api('GET', path, undefined, opts);
export const post = (path, body, opts) => api('POST', path, body ?? {}, opts);
export const patch = (path, body) => api('PATCH', path, body);
export const put = (path, body) => api('PUT', path, body);
export const del = (path) => api('DELETE', path);

export function qs(params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') search.set(k, v);
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

export function idempotencyKey() {
  return (crypto.randomUUID && crypto.randomUUID()) || `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

// Keep a screen's filters in the address (a reload or a shared link keeps them), but only while
// that screen is still shown: a late answer must not rewrite the address of the next screen.
export function keepQuery(path, params) {
  if (location.pathname !== path) return;
  history.replaceState(null, '', path + qs(params));
}
