"""WhatsApp media: stored from the bridge's events and Twilio's MediaUrls, served back to staff
(business-scoped, Range), refused when too large, too many or of a type not kept (the message is
still stored), sniffed from the bytes, kept in an S3 bucket (moto's server), and sent through
both transports (base64 to the bridge, a signed expiring link to Twilio)."""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
import requests
import sqlalchemy as sa
from moto.server import ThreadedMotoServer

from server.app_state import services
from server.db.models import Media, Message
from server.media import safe_file_name, sniff_mime
from server.providers.media_storage import MediaNotFound, S3MediaStorage
from server.providers.twilio_media import MediaFetchFailed
from server.security.media_token import media_token, read_media_token
from server.whatsapp.media_download import download_message_media
from server.whatsapp.webhooks import after_commit
from testkit.jobs import InProcessJobs
from tests.conftest import BASE_TEST_ENV, TEST_TWILIO_TOKEN, create_tenant
from tests.test_whatsapp_support import (  # noqa: F401  (fixtures: used by name)
    CUSTOMER,
    SEND,
    TWILIO_INBOUND,
    WA_SECRET,
    bridge,
    bridge_message,
    bridge_server,
    post_bridge,
    post_twilio,
    twilio_api,
    twilio_form,
    twilio_server,
    wa_env,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n" + b"0" * 3000 + b"\n%%EOF\n"
OGG = b"OggS\x00\x02" + b"\x00" * 20 + b"OpusHead" + b"\x01" * 400
EXE = b"MZ\x90\x00" + b"\x00" * 500


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("media"))


@pytest.fixture
def media_app(make_app, wa_env, media_dir):
    return make_app(**wa_env(MEDIA_DIR=media_dir, MEDIA_MAX_BYTES="8192", MEDIA_MAX_PER_MESSAGE="2"))


@pytest.fixture
def db(media_app):
    return services(media_app).database


@pytest.fixture
def client(media_app):
    return media_app.test_client()


@pytest.fixture
def tenant(db):
    return create_tenant(db)


@pytest.fixture
def other(db):
    return create_tenant(db, name="Other", phone="+97235550101", whatsapp="+97235550102")


def bridge_media(data: bytes, kind: str, mimetype: str, **extra) -> dict:
    return {
        "kind": kind,
        "mimetype": mimetype,
        "voice_note": False,
        "seconds": None,
        "file_name": None,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "data": base64.b64encode(data).decode(),
        **extra,
    }


def post_bridge_media(client, tenant, media: dict, text: str = "") -> None:
    event = {**bridge_message(tenant.whatsapp, text=text), "business_id": tenant.business_id, "media": media}
    response = post_bridge(client, event)
    assert response.status_code == 204, response.get_data(as_text=True)


def media_rows(db) -> list[Media]:
    with db.scope() as session:
        rows = session.scalars(sa.select(Media).order_by(Media.id)).all()
        session.expunge_all()
        return list(rows)


def api_messages(client, tenant) -> list[dict]:
    threads = client.get("/api/crm/threads", headers=tenant.headers).get_json()["items"]
    [thread] = threads
    return client.get(f"/api/crm/threads/{thread['id']}/messages", headers=tenant.headers).get_json()["items"]


# ---- in through the bridge, out through the endpoint ---------------------------------------------------
def test_bridge_image_and_pdf_are_stored_and_served_back_byte_for_byte(client, db, tenant, other):
    post_bridge_media(client, tenant, bridge_media(PNG, "image", "image/png"), text="התמונה של השיער")
    post_bridge_media(client, tenant, bridge_media(PDF, "document", "application/pdf", file_name="הצעת מחיר.pdf"))
    image, pdf = media_rows(db)
    assert (image.kind, image.mime_type, image.size, image.status) == ("image", "image/png", len(PNG), "stored")
    assert image.storage_key == f"business-{tenant.business_id}/{hashlib.sha256(PNG).hexdigest()}"
    assert (pdf.kind, pdf.mime_type, pdf.file_name) == ("document", "application/pdf", "הצעת מחיר.pdf")

    items = api_messages(client, tenant)
    by_kind = {m["kind"]: m for m in items}
    assert by_kind["image"]["body"] == "התמונה של השיער"
    [listed] = by_kind["image"]["attachments"]
    assert listed["url"] == f"/api/crm/media/{image.id}" and listed["sha256"] == hashlib.sha256(PNG).hexdigest()

    got = client.get(f"/api/crm/media/{image.id}", headers=tenant.headers)
    assert got.status_code == 200 and got.data == PNG
    assert got.headers["Content-Type"] == "image/png" and got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["Content-Disposition"].startswith("inline;")
    assert got.headers["Accept-Ranges"] == "bytes"

    document = client.get(f"/api/crm/media/{pdf.id}/download", headers=tenant.headers)
    assert document.status_code == 200 and document.data == PDF
    disposition = document.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and "filename*=UTF-8''%D7%94" in disposition

    partial = client.get(f"/api/crm/media/{pdf.id}", headers={**tenant.headers, "Range": "bytes=100-199"})
    assert partial.status_code == 206 and partial.data == PDF[100:200]
    assert partial.headers["Content-Range"] == f"bytes 100-199/{len(PDF)}"
    tail = client.get(f"/api/crm/media/{pdf.id}", headers={**tenant.headers, "Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.data == PDF[-10:]
    beyond = client.get(f"/api/crm/media/{pdf.id}", headers={**tenant.headers, "Range": f"bytes={len(PDF) + 5}-"})
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(PDF)}"
    several = client.get(f"/api/crm/media/{pdf.id}", headers={**tenant.headers, "Range": "bytes=0-1,5-9"})
    assert several.status_code == 200 and several.data == PDF  # answered whole
    changed = client.get(
        f"/api/crm/media/{pdf.id}", headers={**tenant.headers, "Range": "bytes=0-9", "If-Range": '"x"'}
    )
    assert changed.status_code == 200 and changed.data == PDF

    assert client.get(f"/api/crm/media/{image.id}", headers=other.headers).status_code == 404
    assert client.get(f"/api/crm/media/{image.id}/download", headers=other.headers).status_code == 404
    anonymous = client.get(f"/api/crm/media/{image.id}")
    assert anonymous.status_code == 401 and anonymous.get_json()["error"]
    assert client.get("/api/crm/media/999999", headers=tenant.headers).status_code == 404


def test_the_bytes_decide_the_type_not_the_name(client, db, tenant):
    post_bridge_media(
        client, tenant, bridge_media(PNG, "document", "application/pdf", file_name="../../etc/passwd.pdf")
    )
    [row] = media_rows(db)
    assert (row.mime_type, row.kind, row.status) == ("image/png", "image", "stored")
    assert row.file_name == "passwd.pdf" and "passwd" not in row.storage_key
    served = client.get(f"/api/crm/media/{row.id}", headers=tenant.headers)
    assert served.headers["Content-Type"] == "image/png"


def test_oversized_refused_and_undecodable_media_leave_the_message_with_the_reason(client, db, tenant):
    post_bridge_media(client, tenant, bridge_media(PNG * 10, "image", "image/png"), text="תראי")
    refused_by_bridge = {"kind": "video", "mimetype": "video/mp4", "size": 90_000_000, "error": "too_large"}
    post_bridge_media(client, tenant, refused_by_bridge)
    post_bridge_media(client, tenant, {**bridge_media(PDF, "document", "application/pdf"), "data": "@@not base64@@"})
    post_bridge_media(client, tenant, bridge_media(EXE, "document", "application/octet-stream", file_name="setup.exe"))
    big, refused, broken, program = media_rows(db)
    assert (big.status, big.error_code, big.size, big.storage_key) == ("rejected", "too_large", len(PNG * 10), None)
    assert "8192" in big.error_message
    assert (refused.status, refused.error_code, refused.kind) == ("rejected", "too_large", "video")
    assert refused.size == 90_000_000
    assert (broken.status, broken.error_code) == ("rejected", "download_failed")
    assert (program.status, program.error_code) == ("rejected", "not_allowed")
    assert program.mime_type == "application/x-msdownload"

    items = api_messages(client, tenant)
    assert len(items) == 4  # every message is stored
    texts = {m["body"] for m in items}
    assert "תראי" in texts
    reasons = sorted(m["attachments"][0]["error_code"] for m in items)
    assert reasons == ["download_failed", "not_allowed", "too_large", "too_large"]
    assert all(m["attachments"][0]["url"] is None for m in items)
    assert client.get(f"/api/crm/media/{big.id}", headers=tenant.headers).status_code == 404


def test_malformed_media_in_an_event_is_a_400(client, db, tenant):
    event = {**bridge_message(tenant.whatsapp), "business_id": tenant.business_id, "media": {"kind": 5}}
    response = post_bridge(client, event)
    assert response.status_code == 400 and "media" in response.get_json()["message"]
    assert media_rows(db) == []


def test_a_stored_voice_note_waits_for_its_transcript(client, db, tenant):
    post_bridge_media(client, tenant, bridge_media(OGG, "audio", "audio/ogg; codecs=opus", voice_note=True, seconds=3))
    [row] = media_rows(db)
    assert (row.kind, row.mime_type, row.voice_note, row.duration_seconds) == ("audio", "audio/ogg", True, 3)
    with db.scope() as session:
        message = session.get_one(Message, row.message_id)
        assert message.transcript_status == "pending"
    [listed] = api_messages(client, tenant)
    assert listed["transcript_status"] == "pending" and listed["transcript"] is None


# ---- in through Twilio -------------------------------------------------------------------------------
def test_twilio_media_urls_are_downloaded_by_the_job_and_served(media_app, client, db, tenant, other, twilio_api):
    image_url = twilio_api.inbound_media(PNG, "image/png")
    pdf_url = twilio_api.inbound_media(PDF, "application/pdf")
    form = twilio_form(
        tenant.whatsapp,
        body="הנה המסמכים",
        NumMedia="2",
        MessageType="image",
        MediaUrl0=image_url,
        MediaContentType0="image/png",
        MediaUrl1=pdf_url,
        MediaContentType1="application/pdf",
    )
    assert post_twilio(client, TWILIO_INBOUND, form).status_code == 204
    pending = media_rows(db)
    assert [row.status for row in pending] == ["pending", "pending"]
    [listed] = api_messages(client, tenant)
    assert [item["status"] for item in listed["attachments"]] == ["pending", "pending"]

    assert InProcessJobs(media_app).run_due() >= 1
    image, pdf = media_rows(db)
    assert (image.status, image.mime_type, image.sha256) == ("stored", "image/png", hashlib.sha256(PNG).hexdigest())
    assert (pdf.status, pdf.mime_type, pdf.source_url) == ("stored", "application/pdf", None)
    downloads = twilio_api.requests_for("Media")
    assert len(downloads) == 2 and all(r.auth_user == BASE_TEST_ENV["TWILIO_ACCOUNT_SID"] for r in downloads)

    assert client.get(f"/api/crm/media/{image.id}", headers=tenant.headers).data == PNG
    ranged = client.get(f"/api/crm/media/{pdf.id}", headers={**tenant.headers, "Range": "bytes=0-7"})
    assert ranged.status_code == 206 and ranged.data == PDF[:8]
    assert client.get(f"/api/crm/media/{pdf.id}", headers=other.headers).status_code == 404
    assert client.get(f"/api/crm/media/{pdf.id}").status_code == 401


def test_twilio_media_needs_the_accounts_credentials(twilio_api):
    url = twilio_api.inbound_media(PDF, "application/pdf")
    assert requests.get(url, auth=(BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], "wrong"), timeout=5).status_code == 401
    assert requests.get(url, timeout=5).status_code == 401
    right = requests.get(url, auth=(BASE_TEST_ENV["TWILIO_ACCOUNT_SID"], TEST_TWILIO_TOKEN), timeout=5)
    assert right.status_code == 200 and right.content == PDF and len(right.history) == 1


def test_twilio_oversized_too_many_and_failing_downloads(media_app, client, db, tenant, twilio_api):
    big_url = twilio_api.inbound_media(PNG * 10, "image/png")
    form = twilio_form(
        tenant.whatsapp,
        body="",
        NumMedia="3",
        MediaUrl0=big_url,
        MediaContentType0="image/png",
        MediaUrl1=twilio_api.inbound_media(PDF, "application/pdf"),
        MediaContentType1="application/pdf",
        MediaUrl2=twilio_api.inbound_media(PDF, "application/pdf"),
        MediaContentType2="application/pdf",
    )
    assert post_twilio(client, TWILIO_INBOUND, form).status_code == 204
    assert [(r.status, r.error_code) for r in media_rows(db)] == [
        ("pending", None),
        ("pending", None),
        ("rejected", "too_many"),
    ]
    InProcessJobs(media_app).run_due()
    big, pdf, extra = media_rows(db)
    assert (big.status, big.error_code) == ("rejected", "too_large")
    assert pdf.status == "stored" and extra.status == "rejected"

    # Twilio failing: retried while attempts remain, then recorded as failed, the message kept.
    failing = twilio_form(
        tenant.whatsapp,
        NumMedia="1",
        MediaUrl0=twilio_api.inbound_media(PNG, "image/png"),
        MediaContentType0="image/png",
    )
    twilio_api.fail("Media", code=20500, status=500)
    assert post_twilio(client, TWILIO_INBOUND, failing).status_code == 204
    row = media_rows(db)[-1]
    settings = media_app.config["SETTINGS"]
    with pytest.raises(MediaFetchFailed):
        download_message_media(db, settings, None, row.message_id, last_attempt=False)
    assert media_rows(db)[-1].status == "pending"
    download_message_media(db, settings, None, row.message_id, last_attempt=True)
    failed = media_rows(db)[-1]
    assert (failed.status, failed.error_code) == ("rejected", "download_failed") and "500" in failed.error_message
    twilio_api.succeed("Media")


# ---- out through both transports ------------------------------------------------------------------------
def test_a_document_goes_to_the_bridge_as_base64(client, db, tenant, bridge):
    response = client.post(
        SEND,
        headers=tenant.headers,
        data={"to": CUSTOMER, "text": "הצעת המחיר", "provider": "baileys", "file": (_file(PDF), "הצעה.pdf")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_json()
    [send] = bridge.accepted
    assert send.body["text"] == "הצעת המחיר"
    media = send.body["media"]
    assert (media["kind"], media["mimetype"], media["file_name"]) == ("document", "application/pdf", "הצעה.pdf")
    assert base64.b64decode(media["data"]) == PDF
    [row] = media_rows(db)
    assert row.message_id == response.get_json()["message_id"] and row.status == "stored"

    # The same stored file again, by its id, in a thread reply.
    thread_id = client.get("/api/crm/threads", headers=tenant.headers).get_json()["items"][0]["id"]
    reply = client.post(
        f"/api/crm/threads/{thread_id}/messages",
        headers=tenant.headers,
        json={"media_id": row.id, "provider": "baileys"},
    )
    assert reply.status_code == 200, reply.get_json()
    assert base64.b64decode(bridge.accepted[-1].body["media"]["data"]) == PDF
    assert reply.get_json()["stored_message"]["attachments"][0]["sha256"] == hashlib.sha256(PDF).hexdigest()


def test_a_document_goes_to_twilio_as_a_signed_expiring_link(media_app, client, db, tenant, twilio_api):
    # The customer wrote through Twilio, so its 24-hour window is open.
    assert post_twilio(client, TWILIO_INBOUND, twilio_form(tenant.whatsapp)).status_code == 204
    response = client.post(
        SEND,
        headers=tenant.headers,
        data={"to": CUSTOMER, "provider": "twilio", "file": (_file(PDF), "quote.pdf")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_json()
    [url] = twilio_api.sent_media[response.get_json()["provider_message_id"]]
    link = urlsplit(url)
    fetched = client.get(link.path)  # as Twilio fetches it: no session, no token but the link's own
    assert fetched.status_code == 200 and fetched.data == PDF
    assert fetched.headers["Content-Type"] == "application/pdf"

    token = link.path.rsplit("/", 1)[1]
    forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
    assert client.get(f"/media/public/{forged}").status_code == 404
    secret = media_app.config["APP_SECRET"]
    media_id = read_media_token(secret, token)
    expired = media_token(secret, media_id, now=time.time() - 7200)
    assert client.get(f"/media/public/{expired}").status_code == 404
    assert client.get("/media/public/garbage").status_code == 404


def test_bad_uploads_are_refused_with_a_reason(client, db, tenant, bridge):
    too_big = client.post(
        SEND,
        headers=tenant.headers,
        data={"to": CUSTOMER, "provider": "baileys", "file": (_file(PNG * 10), "big.png")},
        content_type="multipart/form-data",
    )
    assert too_big.status_code == 413 and too_big.get_json()["error"] == "media_too_large"
    program = client.post(
        SEND,
        headers=tenant.headers,
        data={"to": CUSTOMER, "provider": "baileys", "file": (_file(EXE), "invoice.pdf")},
        content_type="multipart/form-data",
    )
    assert program.status_code == 415 and program.get_json()["field"] == "file"
    unknown = client.post(SEND, headers=tenant.headers, json={"to": CUSTOMER, "media_id": 987654})
    assert unknown.status_code == 404
    for wrong in ("abc", True, -3, [1]):
        answer = client.post(SEND, headers=tenant.headers, json={"to": CUSTOMER, "media_id": wrong})
        assert answer.status_code == 400 and answer.get_json()["field"] == "media_id", wrong
    post_bridge_media(client, tenant, {"kind": "image", "mimetype": "image/png", "size": 10**8, "error": "too_large"})
    [refused] = media_rows(db)
    not_kept = client.post(SEND, headers=tenant.headers, json={"to": CUSTOMER, "media_id": refused.id})
    assert not_kept.status_code == 409 and not_kept.get_json()["error"] == "media_not_stored"
    assert bridge.accepted == []


# ---- the S3 store -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_server():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    ).create_bucket(Bucket="agentlocator-media")
    yield url
    server.stop()


def test_s3_store_round_trip_through_moto(s3_server):
    store = S3MediaStorage("agentlocator-media", s3_server, "us-east-1", "test", "test")
    key = f"business-7/{hashlib.sha256(PDF).hexdigest()}"
    store.put(key, PDF, "application/pdf")
    assert store.get(key) == PDF
    store.delete(key)
    with pytest.raises(MediaNotFound):
        store.get(key)
    with pytest.raises(ValueError):
        store.put("../escape", b"x", "text/plain")


def test_an_app_keeping_media_in_s3_stores_and_serves_them(make_app, wa_env, s3_server):
    app = make_app(
        **wa_env(
            MEDIA_S3_BUCKET="agentlocator-media",
            MEDIA_S3_ENDPOINT_URL=s3_server,
            MEDIA_S3_REGION="us-east-1",
            MEDIA_S3_ACCESS_KEY_ID="test",
            MEDIA_S3_SECRET_ACCESS_KEY="test",
        )
    )
    client, db = app.test_client(), services(app).database
    tenant = create_tenant(db)
    data = PNG + secrets.token_bytes(16)
    post_bridge_media(client, tenant, bridge_media(data, "image", "image/png"))
    [row] = media_rows(db)
    stored = boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    ).get_object(Bucket="agentlocator-media", Key=row.storage_key)
    assert stored["Body"].read() == data and stored["ContentType"] == "image/png"
    assert client.get(f"/api/crm/media/{row.id}", headers=tenant.headers).data == data


# ---- small parts -----------------------------------------------------------------------------------------
def test_file_names_are_cleaned_for_display_only():
    assert safe_file_name("..\\..\\windows\\evil.exe") == "evil.exe"
    assert safe_file_name('a"b\r\nc.pdf') == "a_b_c.pdf"
    assert safe_file_name("\u202egpj.exe") == "gpj.exe"
    assert safe_file_name("") is None and safe_file_name("...") is None
    assert len(safe_file_name("א" * 300 + ".pdf")) == 120 and safe_file_name("א" * 300 + ".pdf").endswith(".pdf")
    assert sniff_mime(b"name,phone\n", "text/csv") == "text/csv"
    assert sniff_mime(b"<html><script>", "text/html") == "application/octet-stream"


def _file(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


# ---- the AI reply waits for the media ---------------------------------------------------------------
def queued(app) -> list[str]:
    return sorted(task.name for task in services(app).jobs.huey.pending())


def test_the_ai_reply_is_asked_for_only_once_the_media_is_kept(media_app, client, db, twilio_api):
    tenant = create_tenant(db, features={"wa_auto_reply": True})
    services(media_app).jobs.huey.flush()
    form = twilio_form(
        tenant.whatsapp,
        body="מה דעתך על הצבע?",
        NumMedia="1",
        MediaUrl0=twilio_api.inbound_media(PNG, "image/png"),
        MediaContentType0="image/png",
    )
    assert post_twilio(client, TWILIO_INBOUND, form).status_code == 204
    assert queued(media_app) == ["wa_media_download"]  # the webhook asked for no reply
    [row] = media_rows(db)
    download_message_media(db, media_app.config["SETTINGS"], services(media_app).jobs, row.message_id)
    assert media_rows(db)[0].status == "stored"
    assert queued(media_app) == ["wa_auto_reply", "wa_media_download"]

    services(media_app).jobs.huey.flush()
    post_bridge_media(client, tenant, bridge_media(PNG, "image", "image/png"), text="ומה עם זה?")
    assert queued(media_app) == ["wa_auto_reply"]  # stored with the message: answered at once

    services(media_app).jobs.huey.flush()
    post_bridge_media(client, tenant, bridge_media(OGG, "audio", "audio/ogg", voice_note=True))
    assert queued(media_app) == ["voice_note_transcription"]  # its transcription asks for the reply

    # A voice note through Twilio: downloaded, then transcribed, then answered.
    services(media_app).jobs.huey.flush()
    note = twilio_form(
        tenant.whatsapp,
        body="",
        NumMedia="1",
        MediaUrl0=twilio_api.inbound_media(OGG, "audio/ogg"),
        MediaContentType0="audio/ogg",
    )
    assert post_twilio(client, TWILIO_INBOUND, note).status_code == 204
    assert queued(media_app) == ["wa_media_download"]
    audio = media_rows(db)[-1]
    download_message_media(db, media_app.config["SETTINGS"], services(media_app).jobs, audio.message_id)
    assert queued(media_app) == ["voice_note_transcription", "wa_media_download"]
    with db.scope() as session:
        assert session.get_one(Message, audio.message_id).transcript_status == "pending"


# ---- retention ---------------------------------------------------------------------------------------
def test_media_purge_deletes_old_files_and_keeps_the_rows(make_app, wa_env, media_dir):
    app = make_app(**wa_env(MEDIA_DIR=media_dir, MEDIA_RETENTION_DAYS="30"))
    client, db = app.test_client(), services(app).database
    tenant = create_tenant(db)
    old_only = PNG + b"old"
    shared = PDF + b"shared"
    post_bridge_media(client, tenant, bridge_media(old_only, "image", "image/png"))
    post_bridge_media(client, tenant, bridge_media(shared, "document", "application/pdf"))
    post_bridge_media(client, tenant, bridge_media(shared, "document", "application/pdf"))  # the same bytes, new
    first, second, third = media_rows(db)
    with db.scope() as session:
        when = datetime.now(timezone.utc) - timedelta(days=40)
        for row_id in (first.id, second.id):  # older than MEDIA_RETENTION_DAYS
            session.get_one(Media, row_id).created_at = when
    result = app.test_cli_runner().invoke(args=["media-purge"])
    assert result.exit_code == 0 and '"expired": 2' in result.output
    first, second, third = media_rows(db)
    assert (first.status, first.storage_key, first.error_code) == ("expired", None, "expired")
    assert second.status == "expired" and third.status == "stored"
    assert client.get(f"/api/crm/media/{first.id}", headers=tenant.headers).status_code == 404
    assert client.get(f"/api/crm/media/{third.id}", headers=tenant.headers).data == shared  # still shared
    assert not (Path(media_dir) / f"business-{tenant.business_id}" / hashlib.sha256(old_only).hexdigest()).exists()


def test_work_asked_for_after_the_commit_is_forgotten_on_a_rollback(db):
    ran = []
    with db.scope() as session:
        after_commit(session, lambda: ran.append("rolled back"))
        with session.begin_nested():  # a savepoint's rollback does not count
            after_commit(session, lambda: ran.append("kept"))
        session.rollback()
        assert ran == []
        after_commit(session, lambda: ran.append("committed"))
        with pytest.raises(RuntimeError), session.begin_nested():
            raise RuntimeError("a savepoint rolled back")
    assert ran == ["committed"]
