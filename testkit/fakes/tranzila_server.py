"""A local fake of Tranzila: the API (Handshake V2, Payment Request, transaction query) and the hosted page.

Point the app at it with the production settings `TRANZILA_API_BASE_URL=<fake.url>` and
`TRANZILA_IFRAME_BASE_URL=<fake.url>`.

    POST /v2/handshake/create   {"terminal_name", "sum": <number>}      → {"error_code": 0, "message", "thtk"}
    POST /v1/pr/create          {"terminal_name", "items": [...], ...}  → {"error_code": 0, "pr_id", "pr_link"}
    POST /v1/transactions       {"terminal_name", "transaction_index"}  → {"transactions": [...], "total", "rows"}
    GET  /{terminal}/iframenew.php?sum=…&currency=…&thtk=…&notify_url_address=…   the hosted payment page

Every API call must carry the four `X-tranzila-api-*` headers; the fake recomputes the access token
itself (HMAC-SHA256, message = app key, key = secret + request time + nonce, lowercase hex), wants
the time within 5 minutes in Unix seconds and an 80-hex-character nonce never seen before, and
answers 401 otherwise. The body must be sent as `application/json`, and sums must be JSON numbers, as
Tranzila's schema requires (error_code 20004 otherwise).

The payer is simulated by `pay(hosted_page_url)` / `pay_request(pr_link)`: they check the amount
against the handshake (Tranzila's error 912791 otherwise), record the transaction (so the query
finds it) and return the notify POST Tranzila would send (`Notification.url`, `.form`), which the
test delivers to the app. Unsigned, exactly like the real one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Optional
from urllib.parse import parse_qsl, urlsplit

from flask import jsonify, request

from testkit.fakes.payment_fake_http import FakeHttpServer

_NONCE = re.compile(r"^[0-9a-f]{80}$")
_ISO_TO_NUMERIC = {"ILS": "1", "USD": "2", "EUR": "978", "GBP": "826"}


class HandshakeMismatch(AssertionError):
    """Tranzila's error 912791: the amount paid differs from the handshake's."""


@dataclass
class Notification:
    url: str  # notify_url_address, absolute
    form: dict[str, str]  # the POSTed fields
    browser_url: str  # where the payer's browser goes next (success or fail URL)


class FakeTranzila(FakeHttpServer):
    name = "fake-tranzila"

    def __init__(
        self, *, terminal: str = "faketerminal", app_key: str = "fake-app-key", secret: str = "fake-app-secret"
    ):
        super().__init__()
        self.terminal, self.app_key, self.secret = terminal, app_key, secret
        self._used_nonces: set[str] = set()
        self._state_lock = threading.Lock()
        self._routes()
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.handshakes: dict[str, Decimal] = {}
        self.payment_requests: dict[int, dict[str, Any]] = {}
        self.transactions: dict[int, dict[str, Any]] = {}
        self.hosted_pages: list[dict[str, str]] = []
        self.require_handshake = False
        self._next_index = 1000

    def error_body(self, status: int) -> dict[str, Any]:
        return {"error_code": status, "message": "Internal error"}

    # ---- the payer ----------------------------------------------------------------------------
    def pay(self, hosted_page_url: str, *, response: str = "000") -> Notification:
        parts = urlsplit(hosted_page_url)
        terminal = parts.path.strip("/").split("/")[0]
        params = dict(parse_qsl(parts.query))
        assert terminal == self.terminal, f"hosted page of unknown terminal {terminal!r}"
        amount = Decimal(params["sum"])
        if "thtk" in params:
            if self.handshakes.get(params["thtk"]) != amount:
                raise HandshakeMismatch("912791: the sum differs from the handshake (or the thtk is unknown)")
        elif self.require_handshake:
            raise HandshakeMismatch("912791: this terminal requires a handshake token")
        index = self._record(amount, params["currency"], response)
        form = {
            **{k: v for k, v in params.items() if k != "thtk"},
            **self._result(response, index),
            "sum": params["sum"],
            "currency": params["currency"],
            "supplier": self.terminal,
            "tranmode": params.get("tranmode", "A"),
        }
        approved = response == "000"
        return Notification(
            params["notify_url_address"], form, params["success_url_address" if approved else "fail_url_address"]
        )

    def pay_request(self, pr_link: str, *, response: str = "000") -> Notification:
        pr_id = int(pr_link.rstrip("/").rsplit("/", 1)[-1])
        pr = self.payment_requests[pr_id]
        index = self._record(pr["sum"], _ISO_TO_NUMERIC[pr["currency"]], response)
        form = {
            **self._result(response, index),
            "sum": format(pr["sum"], "f"),
            "currency": pr["currency"],
            "supplier": self.terminal,
            "pr_id": str(pr_id),
        }
        approved = response == "000"
        return Notification(pr["notify_url"], form, pr["success_url" if approved else "failure_url"])

    def _record(self, amount: Decimal, currency_code: str, response: str) -> int:
        with self._state_lock:
            index = self._next_index
            self._next_index += 1
        now = datetime.now(timezone.utc)
        self.transactions[index] = {
            "index": str(index),
            "transaction_date": now.strftime("%Y-%m-%d"),
            "transaction_time": now.strftime("%H:%M:%S"),
            "amount": format(amount, "f"),
            "currency": currency_code,
            "processor_response_code": response,
            "child_terminal": self.terminal,
            "tranmode": "A",
            "payment_plan": "1",
            "number_of_payments": "0",
            "authorization_number": f"{index % 10000000:07d}",
            "card_brand": "1",
            "expiration_month": "12",
            "expiration_year": "30",
            "txn_type": "DEBIT",
            "txn_payment_method": "CC",
            "processor": "SHVA",
            "transtatus": "1",
            **{f"user_defined_{n}": "" for n in range(1, 21)},
        }
        return index

    @staticmethod
    def _result(response: str, index: int) -> dict[str, str]:
        return {
            "Response": response,
            "index": str(index),
            "ConfirmationCode": f"{index % 10000000:07d}",
            "Tempref": f"{index:08d}",
            "ccno": "4580",
            "expmonth": "12",
            "expyear": "30",
            "cardtype": "1",
            "cardissuer": "1",
            "cardaquirer": "6",
            "lang": "il",
        }

    # ---- the API ------------------------------------------------------------------------------
    def _authorised(self) -> bool:
        headers = request.headers
        app_key = headers.get("X-tranzila-api-app-key", "")
        request_time = headers.get("X-tranzila-api-request-time", "")
        nonce = headers.get("X-tranzila-api-nonce", "")
        token = headers.get("X-tranzila-api-access-token", "")
        if app_key != self.app_key or not request_time.isdigit() or abs(time.time() - int(request_time)) > 300:
            return False
        if not _NONCE.match(nonce):
            return False
        expected = hmac.new((self.secret + request_time + nonce).encode(), app_key.encode(), hashlib.sha256).hexdigest()
        with self._state_lock:
            if not hmac.compare_digest(expected, token) or nonce in self._used_nonces:
                return False
            self._used_nonces.add(nonce)
        return True

    def _body(self) -> Optional[dict[str, Any]]:
        # Only a body declared as JSON is read as JSON; any other (text/plain, a form) doesn't match the schema.
        if request.mimetype != "application/json":
            return None
        try:
            body = json.loads(request.get_data(), parse_float=Decimal)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    @staticmethod
    def _schema_error():
        return jsonify({"error_code": 20004, "message": "Json does not match validation schema"})

    @staticmethod
    def _unauthorised():
        response = jsonify({"error_code": 401, "message": "Unauthorized"})
        response.status_code = 401
        return response

    @staticmethod
    def _is_number(value: Any) -> bool:
        return isinstance(value, (int, Decimal)) and not isinstance(value, bool) and value > 0

    def _routes(self) -> None:
        app = self.app

        @app.post("/v2/handshake/create", endpoint="handshake")
        def handshake():
            if not self._authorised():
                return self._unauthorised()
            body = self._body()
            if body is None or body.get("terminal_name") != self.terminal or not self._is_number(body.get("sum")):
                return self._schema_error()
            thtk = secrets.token_urlsafe(36)
            self.handshakes[thtk] = Decimal(body["sum"])
            return jsonify({"error_code": 0, "message": "Success", "thtk": thtk})

        @app.post("/v1/pr/create", endpoint="payment_request")
        def payment_request():
            if not self._authorised():
                return self._unauthorised()
            body = self._body()
            items = (body or {}).get("items")
            if (
                body is None
                or body.get("terminal_name") != self.terminal
                or not items
                or not all(self._is_number(item.get("unit_price")) for item in items)
                or body.get("request_currency") not in _ISO_TO_NUMERIC
            ):
                return self._schema_error()
            with self._state_lock:
                pr_id = 5000 + len(self.payment_requests) + 1
                self.payment_requests[pr_id] = {
                    "sum": sum(Decimal(item["unit_price"]) * int(item.get("units_number", 1)) for item in items),
                    "currency": body["request_currency"],
                    "notify_url": body.get("notify_url", ""),
                    "success_url": body.get("success_url", ""),
                    "failure_url": body.get("failure_url", ""),
                    "body": body,
                }
            return jsonify({"error_code": 0, "message": "Success", "pr_id": pr_id, "pr_link": f"{self.url}/pr/{pr_id}"})

        @app.post("/v1/transactions", endpoint="transactions")
        def transactions():
            if not self._authorised():
                return self._unauthorised()
            body = self._body()
            if (
                body is None
                or body.get("terminal_name") != self.terminal
                or not isinstance(body.get("transaction_index"), int)
            ):
                return self._schema_error()
            found = [t for i, t in self.transactions.items() if i == body["transaction_index"]]
            return jsonify({"transactions": found, "total": len(found), "rows": len(found)})

        @app.get("/<terminal>/iframenew.php", endpoint="hosted_page")
        def hosted_page(terminal: str):
            if terminal != self.terminal:
                return "page not found", 404
            self.hosted_pages.append(request.args.to_dict())
            return f"<html><body>Tranzila (fake) payment page: {request.args.get('sum')}</body></html>"
