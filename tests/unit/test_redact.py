from __future__ import annotations

from clove.kernel.audit.redact import REDACTED, redact


def test_secrets_are_redacted_and_the_rest_kept() -> None:
    body = {
        "url": "https://user:pw@api.example.com/v1?q=clove&api_key=abc123",
        "method": "GET",
        "headers": {"Authorization": "Bearer s3cr3t", "Accept": "application/json", "X-Api-Key": "k"},
        "password": "hunter2",
        "msg": "hello",
    }
    out = redact(body)
    assert out["headers"] == {"Authorization": REDACTED, "Accept": "application/json", "X-Api-Key": REDACTED}
    assert out["password"] == REDACTED and out["msg"] == "hello" and out["method"] == "GET"
    assert "abc123" not in out["url"] and "pw@" not in out["url"] and "q=clove" in out["url"]
    assert body["headers"]["Authorization"] == "Bearer s3cr3t"  # the request itself is untouched


def test_plain_bodies_are_returned_as_they_are() -> None:
    body = {"msg": "x", "limits": {"memory": "64M"}}
    assert redact(body) is body
