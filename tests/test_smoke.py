from fastapi.testclient import TestClient

from tests.conftest import auth
from tests.factories import World


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").text == "ok"
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["migration"] == ready["head"]


def test_world_builds(client: TestClient, world: World) -> None:
    r = client.get("/api/v1/conversations", headers=auth(world.alice))
    assert r.status_code == 200
    assert len(r.json()["items"]) == 1
