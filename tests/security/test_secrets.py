"""A webhook's signing secret (which a user may have chosen, and reused elsewhere) is shown
in full once, on creation; afterwards at most its first 4 characters."""

from __future__ import annotations

from tests.server.helpers import AppClient

SECRET = "correct-horse-battery-staple-42"


def test_the_secret_hint_shows_at_most_four_characters(client: AppClient) -> None:
    made = client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "secret": SECRET})
    assert made.status_code == 201, made.text
    assert made.json()["secret"] == SECRET
    hook_id = made.json()["id"]
    answers = [
        client.get("/api/v1/webhooks"),
        client.get(f"/api/v1/webhooks/{hook_id}"),
        client.patch(f"/api/v1/webhooks/{hook_id}", json={"enabled": False}),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert SECRET[:5] not in answer.text
    assert answers[1].json()["secret_hint"] == SECRET[:4] + "..."
