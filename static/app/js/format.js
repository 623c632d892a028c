// Display formats: the business's time zone, Hebrew, shekels with agorot, Israeli phone numbers.
let timeZone = 'Asia/Jerusalem';
const cache = new Map();

export function setTimeZone(zone) {
  timeZone = zone || 'Asia/Jerusalem';
  cache.clear();
}

function formatter(key, options) {
  if (!cache.has(key)) {
    try {
      cache.set(key, new Intl.DateTimeFormat('he-IL', { timeZone, ...options }));
    } catch {  // an unknown zone: fall back to Israel rather than a blank page
      cache.set(key, new Intl.DateTimeFormat('he-IL', { timeZone: 'Asia/Jerusalem', ...options }));
    }
  }
  return cache.get(key);
}

export function dateTime(iso) {
  if (!iso) return '';
  return formatter('dt', { dateStyle: 'short', timeStyle: 'short' }).format(new Date(iso));
}

export function time(iso) {
  if (!iso) return '';
  return formatter('t', { hour: '2-digit', minute: '2-digit' }).format(new Date(iso));
}

// Today: the time; earlier: the date (as a conversation list shows it).
export function shortWhen(iso) {
  if (!iso) return '';
  const day = formatter('d', { dateStyle: 'short' });
  const when = new Date(iso);
  return day.format(when) === day.format(new Date()) ? time(iso) : day.format(when);
}

const money = new Map();
export function amount(minor, currency = 'ILS') {
  if (minor === null || minor === undefined) return '';
  if (!money.has(currency)) {
    money.set(currency, new Intl.NumberFormat('he-IL', { style: 'currency', currency, minimumFractionDigits: 2 }));
  }
  return money.get(currency).format(Number(minor) / 100);
}

// "+972501234567" → "050-123-4567"; "+97235550001" → "03-555-0001". Anything else is shown as is.
export function phone(e164) {
  if (!e164) return '';
  const text = String(e164);
  const match = /^\+972(\d{8,9})$/.exec(text);
  if (!match) return text;
  const local = `0${match[1]}`;
  if (/^05\d{8}$/.test(local) || /^07\d{8}$/.test(local)) {
    return `${local.slice(0, 3)}-${local.slice(3, 6)}-${local.slice(6)}`;
  }
  if (local.length === 9) return `${local.slice(0, 2)}-${local.slice(2, 5)}-${local.slice(5)}`;
  return `${local.slice(0, 3)}-${local.slice(3, 6)}-${local.slice(6)}`;
}

export function seconds(total) {
  if (total === null || total === undefined) return '';
  const m = Math.floor(total / 60);
  const s = String(total % 60).padStart(2, '0');
  return `${m}:${s}`;
}

export function ms(value) {
  return value === null || value === undefined ? '—' : `${value} ms`;
}

// "2024-05-01" as the start of that day in the business's zone, e.g. "2024-05-01T00:00:00+03:00",
// so a date filter means the business's day, not UTC's.
export function dayStart(date) {
  if (!date) return '';
  const noon = new Date(`${date}T12:00:00Z`);
  let offset = '+00:00';
  try {
    const part = new Intl.DateTimeFormat('en-US', { timeZone, timeZoneName: 'longOffset' })
      .formatToParts(noon).find((p) => p.type === 'timeZoneName');
    const match = part && /GMT([+-]\d{2}:\d{2})/.exec(part.value);
    if (match) offset = match[1];
  } catch { /* keep UTC */ }
  return `${date}T00:00:00${offset}`;
}

export function nextDay(date) {
  const day = new Date(`${date}T12:00:00Z`);
  day.setUTCDate(day.getUTCDate() + 1);
  return day.toISOString().slice(0, 10);
}
