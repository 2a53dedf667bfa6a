"""Who sees an entry: only scored public entries have public pages; the owner sees the rest."""

from __future__ import annotations

from server_helpers import SUB
from server_helpers import api_upload as upload


def test_queued_and_failed_entries_have_no_public_page(client, auth, drain):  # noqa: ANN001
    h = auth("alice")
    queued = upload(client, h, name="queued one", public=True)
    failed = upload(client, h, name="failed one", public=True, files={**SUB, "model.py": "# HOSTILE\n"})
    for sid in (queued["id"], failed["id"]):
        assert client.get(f"/models/{sid}").status_code == 404
        assert client.get(f"/api/models/{sid}").status_code == 404
        assert client.get(f"/api/submissions/{sid}").status_code == 404
        assert client.get(f"/api/submissions/{sid}", headers=h).status_code == 200  # the owner sees it
    drain()
    assert client.get(f"/api/submissions/{failed['id']}", headers=h).json()["status"] == "failed"
    assert client.get(f"/models/{failed['id']}").status_code == 404
    ok = upload(client, h, name="good one", public=True)
    drain()
    assert client.get(f"/models/{ok['id']}").status_code == 200
