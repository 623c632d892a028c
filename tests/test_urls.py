import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.urls import abs_url, ws_url

segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=8)
slashes = st.text(alphabet="/", max_size=3)


@st.composite
def bases(draw):
    scheme = draw(st.sampled_from(["http", "https"]))
    host = draw(st.sampled_from(["agent.example.com", "localhost:5000", "10.0.0.5:8443", "xn--4dbrk0ce.co.il"]))
    prefix = "".join("/" + draw(slashes) + s for s in draw(st.lists(segment, max_size=2)))
    return f"{scheme}://{host}{prefix}{draw(slashes)}", scheme, host, [s for s in prefix.split("/") if s]


@settings(max_examples=300, deadline=None)
@given(bases(), st.lists(segment, min_size=1, max_size=3), slashes, slashes)
def test_abs_url_never_has_an_empty_segment(base, path_segments, lead, mid):
    base_url, scheme, host, prefix = base
    path = lead + mid.join(path_segments)
    url = abs_url(base_url, path)
    assert url.startswith(f"{scheme}://{host}/")
    assert "//" not in url.split("://", 1)[1]
    assert url.split("://", 1)[1].split("/")[1:] == prefix + [s for s in path.split("/") if s]


@settings(max_examples=200, deadline=None)
@given(bases(), st.lists(segment, min_size=1, max_size=3))
def test_ws_url_is_the_websocket_twin(base, path_segments):
    base_url, scheme, host, _ = base
    path = "/" + "/".join(path_segments)
    url = ws_url(base_url, path)
    assert url == ("wss" if scheme == "https" else "ws") + abs_url(base_url, path)[len(scheme) :]
    assert not re.search(r"[^:]//", url)


@pytest.mark.parametrize(
    "base", ["https://agent.example.com", "https://agent.example.com/", "https://agent.example.com//"]
)
def test_trailing_slashes_on_the_base_do_not_matter(base):
    assert abs_url(base, "/static/tts/greeting_he.mp3") == "https://agent.example.com/static/tts/greeting_he.mp3"
    assert ws_url(base, "/ws/twilio-media") == "wss://agent.example.com/ws/twilio-media"


def test_path_prefix_query_and_trailing_slash_are_kept():
    assert abs_url("https://h.example/app/", "//webhook/x?a=1&b=2") == "https://h.example/app/webhook/x?a=1&b=2"
    assert ws_url("http://h.example:8080", "/ws/twilio-media/") == "ws://h.example:8080/ws/twilio-media/"


@pytest.mark.parametrize("bad", ["", "agent.example.com", "ftp://x.example", "https://"])
def test_a_base_that_is_not_absolute_http_is_refused(bad):
    with pytest.raises(ValueError):
        abs_url(bad, "/x")
