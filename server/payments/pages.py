"""The customer's Hebrew pages: small, right-to-left, self-contained (no external assets, no scripts)."""

from __future__ import annotations

from html import escape

from flask import Response
from sqlalchemy.orm import Session

from server.db.models import Business
from server.money import display
from server.payments.links import Page, Redirect

TEXTS = {
    "not_found": ("הקישור לא נמצא", "קישור התשלום אינו תקין. בדקו את הקישור שקיבלתם או פנו לעסק."),
    "expired": ("תוקף הקישור פג", "קישור התשלום כבר אינו בתוקף. פנו לעסק כדי לקבל קישור חדש."),
    "failed": ("התשלום נכשל", "התשלום לא הושלם. פנו לעסק כדי לקבל קישור חדש."),
    "refunded": ("התשלום הוחזר", "התשלום בוטל והכסף הוחזר אליכם. לשאלות פנו לעסק."),
    "paid": ("התשלום התקבל", "תודה! התשלום התקבל בהצלחה."),
    "processing": ("התשלום בבדיקה", "אנחנו ממתינים לאישור סופי של התשלום. הדף יתעדכן מעצמו."),
    "awaiting_confirm": ("התשלום התקבל לבדיקה", "העסק יאשר את התשלום בהקדם. אין צורך לשלם שוב."),
    "refund_required": (
        "לא ניתן להשלים את התשלום",
        "החיוב התקבל אבל אינו נדרש עוד. העסק יחזיר לכם את הכסף. לשאלות פנו לעסק.",
    ),
    "cancelled": ("התשלום בוטל", "לא בוצע חיוב. אפשר לחזור לתשלום בכל עת."),
    "declined": ("התשלום לא הושלם", "התשלום לא אושר. אפשר לנסות שוב, גם באמצעי תשלום אחר."),
    "unavailable": ("התשלום אינו זמין כרגע", "לא ניתן לשלם כרגע בקישור הזה. נסו שוב מאוחר יותר או פנו לעסק."),
    "provider_error": ("שירות התשלומים אינו זמין כרגע", "לא הצלחנו להתחבר לחברת הסליקה. נסו שוב בעוד כמה דקות."),
    "rejected": ("לא הצלחנו לאשר את התשלום", "אירעה בעיה באישור התשלום. פנו לעסק ונבדוק זאת."),
    "preview": ("בקשת תשלום", "לחצו על הקישור כדי לשלם בצורה מאובטחת."),
}
REFRESH_SECONDS = {"processing": 5}
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    # The link token is in our URL: never send it on to the provider as a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
}
_STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',Arial,sans-serif;background:#f4f5f7;color:#1d2330;"
    "margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}"
    "main{background:#fff;border-radius:12px;box-shadow:0 1px 4px rgba(0,0,0,.12);padding:2rem;"
    "max-width:26rem;margin:1rem;text-align:center}h1{font-size:1.4rem;margin:0 0 .75rem}"
    "p{line-height:1.6;margin:.5rem 0}.business{color:#5b6472}.amount{font-size:1.6rem;font-weight:600}"
    "a{display:inline-block;margin-top:1rem;padding:.7rem 1.6rem;background:#1a56db;color:#fff;"
    "border-radius:8px;text-decoration:none}"
)


def render(session: Session, outcome: Page | Redirect) -> Response:
    if isinstance(outcome, Redirect):
        response = Response(status=302, headers={"Location": outcome.url})
    else:
        response = Response(_html(session, outcome), status=outcome.status, mimetype="text/html")
    response.headers.update(SECURITY_HEADERS)
    return response


def _html(session: Session, page: Page) -> str:
    title, text = TEXTS[page.kind]
    payment = page.payment
    parts = []
    if payment is not None:
        business = session.get_one(Business, payment.business_id)
        parts.append(f'<p class="business">{escape(business.name)}</p>')
    parts.append(f"<h1>{escape(title)}</h1>")
    if payment is not None and page.kind in (
        "paid",
        "preview",
        "processing",
        "awaiting_confirm",
        "declined",
        "cancelled",
    ):
        parts.append(f'<p class="amount"><bdi>{escape(display(payment.amount_minor, payment.currency))}</bdi></p>')
        if payment.description:
            parts.append(f"<p>{escape(payment.description)}</p>")
    parts.append(f"<p>{escape(text)}</p>")
    if payment is not None and (page.retry or page.kind == "preview"):
        parts.append(f'<a href="/pay/{escape(payment.link_token)}">לתשלום</a>')
    refresh = REFRESH_SECONDS.get(page.kind)
    head = (
        '<meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        + (f'<meta http-equiv="refresh" content="{refresh}">' if refresh else "")
        + f"<title>{escape(title)}</title><style>{_STYLE}</style>"
    )
    body = "".join(parts)
    return f'<!doctype html>\n<html lang="he" dir="rtl"><head>{head}</head><body><main>{body}</main></body></html>\n'
