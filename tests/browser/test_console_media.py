"""WhatsApp media in the console's conversation view (Chromium): a customer's picture shown inline,
voice notes with a player and their transcript (or "מתמלל…" while it is being written), a document
to download, and a file that was not kept, with the reason."""

from __future__ import annotations

import base64
import hashlib
import secrets
import struct
import time
import zlib

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from server.db.models import Media, Message
from testkit.fakes.twilio_rest import WAV_SILENCE
from tests.browser.conftest import BUSINESS_WHATSAPP, axe_violations, new_customer_phone, screenshot, sign_in

pytestmark = pytest.mark.slow


@pytest.fixture
def page(axe_page):
    return axe_page


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour, so the browser has a picture to draw."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def media_event(console, customer: str, media: dict, text: str = "", name: str = "מיכל") -> None:
    console.bridge_event(
        {
            "event": "message",
            "business_id": console.business_id,
            "id": "3EB0" + secrets.token_hex(8).upper(),
            "chat": f"{customer.lstrip('+')}@s.whatsapp.net",
            "from": customer,
            "lid": None,
            "push_name": name,
            "text": text,
            "timestamp": int(time.time()),
            "to": BUSINESS_WHATSAPP,
            "media": media,
        }
    )


def stored(data: bytes, kind: str, mimetype: str, **extra) -> dict:
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


def test_pictures_voice_notes_documents_and_refused_files_in_a_conversation(page, console):
    customer = new_customer_phone()
    picture = png(320, 180, (214, 92, 140))
    media_event(console, customer, stored(picture, "image", "image/jpeg"), text="ככה אני רוצה את הצבע")
    media_event(console, customer, stored(WAV_SILENCE, "audio", "audio/ogg", voice_note=True, seconds=2))
    media_event(console, customer, stored(WAV_SILENCE + b"\x00\x00", "audio", "audio/ogg", voice_note=True, seconds=2))
    media_event(
        console,
        customer,
        stored(b"%PDF-1.4\n" + b"0" * 4000 + b"\n%%EOF\n", "document", "application/pdf", file_name="הפניה.pdf"),
    )
    media_event(console, customer, {"kind": "video", "mimetype": "video/mp4", "size": 40_000_000, "error": "too_large"})

    # The first voice note's transcript is written (as the transcription job does); the second waits.
    first_note = console.execute(
        sa.select(Media.message_id).where(Media.kind == "audio").order_by(Media.id.desc()).limit(2)
    ).all()[-1][0]
    console.execute(
        sa.update(Message)
        .where(Message.id == first_note)
        .values(transcript="אפשר להזיז את התור ליום חמישי?", transcript_status="done")
    )

    sign_in(page, console)
    page.locator(".thread-item", has_text="מיכל").click()
    timeline = page.locator(".timeline")
    image = timeline.locator("figure.media.image img")
    expect(image).to_be_visible()
    page.wait_for_function(
        "() => { const i = document.querySelector('figure.media.image img'); return i && i.naturalWidth === 320; }"
    )
    expect(timeline.get_by_text("ככה אני רוצה את הצבע")).to_be_visible()

    players = timeline.locator(".media.audio audio")
    expect(players).to_have_count(2)
    expect(timeline.locator(".media.audio").nth(0)).to_contain_text("אפשר להזיז את התור ליום חמישי?")
    expect(timeline.locator(".media.audio").nth(1)).to_contain_text("מתמלל…")
    duration = page.evaluate(
        "async () => { const a = document.querySelector('.media.audio audio');"
        " if (a.readyState < 1) await new Promise((r) => { a.onloadedmetadata = r; a.onerror = r; a.load(); });"
        " return a.duration; }"
    )
    assert duration and duration > 0  # the player got real audio through the authenticated endpoint

    document = timeline.get_by_role("link", name="הפניה.pdf")
    expect(document).to_be_visible()
    with page.expect_download() as download:
        document.click()
    path = download.value.path()
    assert path is not None and open(path, "rb").read().startswith(b"%PDF-1.4")

    expect(timeline.locator(".media.rejected")).to_contain_text("הקובץ גדול מהמותר")
    assert axe_violations(page) == []
    screenshot(page, "conversation-media")
    page.set_viewport_size({"width": 1280, "height": 1700})  # the whole conversation, without scrolling
    expect(timeline.locator(".media.rejected")).to_be_in_viewport()
    screenshot(page, "conversation-media-all")


def test_staff_send_a_picture_from_the_conversation(page, console, tmp_path):
    customer = new_customer_phone()
    example = stored(png(40, 40, (20, 120, 200)), "image", "image/png")
    media_event(console, customer, example, text="יש לכם דוגמה?", name="רונית")
    picture = png(200, 120, (40, 160, 90))
    path = tmp_path / "דוגמה.png"
    path.write_bytes(picture)

    sign_in(page, console)
    page.locator(".thread-item", has_text="רונית").click()
    page.get_by_label("תשובה ללקוח").fill("ככה זה נראה")
    page.get_by_label("צירוף קובץ (תמונה, מסמך, הקלטה)").set_input_files(str(path))
    page.get_by_role("button", name="שליחה").click()
    sent = page.locator(".timeline .msg.out figure.media.image img")
    expect(sent).to_be_visible()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.msg.out figure.media.image img')].some((i) => i.naturalWidth === 200)"
    )
    send = [s for s in console.bridge.accepted if s.body.get("media")][-1]
    assert send.body["text"] == "ככה זה נראה"
    assert send.body["media"]["kind"] == "image" and send.body["media"]["file_name"] == "דוגמה.png"
    assert base64.b64decode(send.body["media"]["data"]) == picture
    assert page.get_by_label("צירוף קובץ (תמונה, מסמך, הקלטה)").input_value() == ""
    assert axe_violations(page) == []
    screenshot(page, "conversation-media-sent")
