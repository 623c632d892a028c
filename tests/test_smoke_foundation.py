def test_root(client):
    assert client.get("/").data == b"ok"
