"""API keys of ``leakprobe serve``: the keys file, 401/429 before any work, budgets that
survive a restart, usage, keys never logged or stored, the HTTP client's side, and B4B's
per-key coverage."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import torch
from serve_helpers import running
from torch import nn

from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.preflight import check_query_budget, remaining_queries
from leakprobe.serving.client import HTTPEncoder
from leakprobe.serving.keys import Clients, read_admin_key, read_api_keys
from leakprobe.serving.server import EncoderService, ServeConfig, create_app
from leakprobe.serving.wire import encode_uint8
from leakprobe.targets.encoder import ModuleEncoder

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-fedcba9876543210xyz"
CAROL = "carol-key-ZZZZZZZZZZZZZZZZ"
ADMIN = "admin-key-AAAAAAAAAAAAAAAA"
SECRETS = (ALICE, BOB, CAROL, ADMIN)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


class Counting(ModuleEncoder):
    """A local encoder that counts how often the model ran."""

    calls = 0

    def embed(self, images):
        self.calls += 1
        return super().embed(images)


def encoder() -> Counting:
    torch.manual_seed(0)
    return Counting(Tiny(), input_size=16, device="cpu", name="tiny")


def write_keys(folder, text: str):
    path = folder / "keys.txt"
    path.write_text(text)
    return path


def keyed_service(folder, keys_text=f"alice:{ALICE}:5\nbob:{BOB}\n", *, admin=True,
                  **config) -> EncoderService:
    keys = write_keys(folder, keys_text)
    admin_path = None
    if admin:
        admin_path = folder / "admin.txt"
        admin_path.write_text(ADMIN + "\n")
    clients = Clients.from_files(api_keys=keys, admin_key=admin_path)
    return EncoderService(encoder(), ServeConfig(max_batch=64, **config), clients=clients)


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def embed(url, key=None, n=2, seed=0, **kw):
    x = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    return httpx.post(url + "/v1/embed", json={"array": encode_uint8(x)},
                      headers=auth(key) if key else None, timeout=30, **kw)


# -- the keys file -------------------------------------------------------------------------


def test_the_three_forms_comments_and_default_names(tmp_path):
    keys = read_api_keys(write_keys(tmp_path, f"# c\n\n{ALICE}\nbob:{BOB}\n"
                                              f"carol:{CAROL}:0\n"))
    assert [(k.name, k.budget, k.line) for k in keys] == [
        ("key-3", None, 3), ("bob", None, 4), ("carol", 0, 5)]
    assert keys[1].key == BOB and BOB not in repr(keys[1])


@pytest.mark.parametrize("text, message", [
    ("", "no API keys"),
    ("# only a comment\n\n", "no API keys"),
    (f"alice:{ALICE}:many\n", ":1: the budget must be an integer >= 0"),
    (f"alice:{ALICE}:-3\n", ":1: the budget must be an integer >= 0"),
    ("alice:short-key\n", ":1: the key is too short (9 characters, at least 16)"),
    (f"al ice:{ALICE}\n", ":1: the name 'al ice' must be"),
    (f"alice:{ALICE}\nalice:{BOB}\n", ":2: the name 'alice' is already used on line 1"),
    (f"alice:{ALICE}\nbob:{ALICE}\n", ":2: the same key as line 1"),
    (f"a:{ALICE}:1:2\n", ":1: expected KEY, NAME:KEY or NAME:KEY:BUDGET"),
    (f"alice:{ALICE[:-1]}\"\n", ":1: the key has a character outside"),
])
def test_a_bad_keys_file_is_one_line_naming_the_line_never_the_key(tmp_path, text, message):
    with pytest.raises(LeakprobeError) as info:
        read_api_keys(write_keys(tmp_path, text))
    error = str(info.value)
    assert message in error and "\n" not in error
    assert not any(k in error for k in (*SECRETS, ALICE[:-1], "short-key"))


def test_missing_files_and_bad_admin_keys(tmp_path):
    with pytest.raises(LeakprobeError, match=r"^--api-keys .*nope\.txt: no such file$"):
        read_api_keys(tmp_path / "nope.txt")
    (tmp_path / "two.txt").write_text(f"{ALICE}\n{BOB}\n")
    with pytest.raises(LeakprobeError, match="expected one key, found 2 lines"):
        read_admin_key(tmp_path / "two.txt")
    (tmp_path / "same.txt").write_text(ALICE)
    with pytest.raises(LeakprobeError, match="the admin key is also a client key"):
        Clients.from_files(api_keys=write_keys(tmp_path, f"alice:{ALICE}\n"),
                           admin_key=tmp_path / "same.txt")
    with pytest.raises(LeakprobeError, match="--state and --admin-key need --api-keys"):
        Clients.from_files(state=tmp_path / "s.json")
    with pytest.raises(LeakprobeError, match="does not exist"):
        Clients.from_files(api_keys=tmp_path / "keys.txt", state=tmp_path / "no" / "s.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LeakprobeError, match="not a leakprobe serve state file"):
        Clients.from_files(api_keys=tmp_path / "keys.txt", state=tmp_path / "bad.json")


# -- 401 and 429, before any work ------------------------------------------------------------


def test_missing_or_unknown_keys_get_401_and_the_model_never_runs(tmp_path):
    service = keyed_service(tmp_path)
    with running(create_app(service)) as url:
        for headers in (None, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"},
                        auth("not-a-key-at-all-0000"), auth(ALICE + "x")):
            for resp in (httpx.get(url + "/v1/info", headers=headers),
                         httpx.get(url + "/v1/usage", headers=headers),
                         httpx.post(url + "/v1/embed", headers=headers, content=b"{junk")):
                assert resp.status_code == 401, resp.text
                assert "API key" in resp.json()["error"]
                assert resp.headers["www-authenticate"].startswith("Bearer")
        assert service.encoder.calls == 0 and service.queries_used == 0
        assert embed(url, ALICE).status_code == 200 and service.encoder.calls == 1


def test_a_spent_budget_is_429_with_the_remaining_count_and_runs_nothing(tmp_path):
    service = keyed_service(tmp_path)
    with running(create_app(service)) as url:
        assert embed(url, ALICE, n=4).status_code == 200
        calls = service.encoder.calls
        over = embed(url, ALICE, n=2)
        assert over.status_code == 429
        assert over.json() | {"error": ""} == {"error": "", "remaining": 1, "budget": 5,
                                                "used": 4}
        assert "'alice' allows 1 more queries" in over.json()["error"]
        assert "retry-after" not in over.headers  # not a rate limit: do not retry
        assert embed(url, ALICE, n=1).status_code == 200
        spent = httpx.post(url + "/v1/embed", headers=auth(ALICE), content=b"{junk")
        assert spent.status_code == 429 and spent.json()["remaining"] == 0  # body unread
        assert service.encoder.calls == calls + 1
        assert embed(url, BOB, n=8).status_code == 200  # other keys are unaffected
        assert service.queries_used == 13


def test_the_services_own_budget_still_answers_403(tmp_path):
    service = keyed_service(tmp_path, max_queries=3)
    with running(create_app(service)) as url:
        assert embed(url, BOB, n=3).status_code == 200
        resp = embed(url, BOB, n=1)
        assert resp.status_code == 403 and "budget exhausted" in resp.json()["error"]


def test_budgets_survive_a_restart_and_a_renamed_key_keeps_its_usage(tmp_path):
    service = keyed_service(tmp_path)
    with running(create_app(service)) as url:
        assert embed(url, ALICE, n=5).status_code == 200
        assert embed(url, BOB, n=3).status_code == 200
    state = json.loads((tmp_path / "keys.txt.state.json").read_text())
    assert sorted((r["name"], r["queries"]) for r in state["clients"]) == [("alice", 5),
                                                                           ("bob", 3)]
    restarted = keyed_service(tmp_path, f"alice:{ALICE}:5\nrobert:{BOB}:10\n")
    with running(create_app(restarted)) as url:
        resp = embed(url, ALICE, n=1)
        assert resp.status_code == 429 and resp.json()["used"] == 5
        usage = httpx.get(url + "/v1/usage", headers=auth(BOB)).json()
        assert (usage["name"], usage["queries"], usage["remaining"]) == ("robert", 3, 7)
        assert restarted.encoder.calls == 0
    # a key taken out of the file keeps its record; put back, it finds its usage again
    keyed_service(tmp_path, f"robert:{BOB}:10\n").clients.save()
    back = keyed_service(tmp_path, f"alice:{ALICE}:6\nrobert:{BOB}:10\n")
    assert back.clients.usage(back.clients.clients[0])["remaining"] == 1


def test_usage_is_the_callers_own_and_every_keys_for_the_admin(tmp_path):
    service = keyed_service(tmp_path)
    with running(create_app(service)) as url:
        embed(url, ALICE, n=2)
        own = httpx.get(url + "/v1/usage", headers=auth(ALICE)).json()
        assert own["name"] == "alice" and own["queries"] == 2 and own["budget"] == 5
        assert own["remaining"] == 3 and own["first_seen"] and own["last_seen"]
        assert own["coverage"] is None  # no B4B
        bob = httpx.get(url + "/v1/usage", headers=auth(BOB)).json()
        assert bob["name"] == "bob" and bob["queries"] == 0 and bob["first_seen"] is None
        every = httpx.get(url + "/v1/usage", headers=auth(ADMIN)).json()
        assert [(c["name"], c["queries"]) for c in every["clients"]] == [("alice", 2),
                                                                         ("bob", 0)]
        info = httpx.get(url + "/v1/info", headers=auth(ALICE)).json()
        assert info["client"]["remaining"] == 3 and info["kind"] == "encoder"
        refused = embed(url, ADMIN)
        assert refused.status_code == 403 and "admin key" in refused.json()["error"]


def test_without_keys_anyone_queries_and_usage_is_the_anonymous_clients():
    service = EncoderService(encoder(), ServeConfig())
    with running(create_app(service)) as url:
        assert embed(url, n=3).status_code == 200
        assert embed(url, "whatever-key-0000000", n=1).status_code == 200
        usage = httpx.get(url + "/v1/usage").json()
        assert (usage["name"], usage["queries"], usage["budget"]) == ("anonymous", 4, None)
        assert "client" not in httpx.get(url + "/v1/info").json()


def test_keys_never_reach_the_log_or_the_state_file(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="leakprobe.serve")
    service = keyed_service(tmp_path)
    with running(create_app(service)) as url:
        embed(url, ALICE, n=5)
        embed(url, ALICE, n=1)  # 429
        embed(url, BOB + "x")  # 401
        httpx.get(url + "/v1/usage", headers=auth(ADMIN))
        httpx.get(url + "/v1/info", headers=auth(BOB))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "leakprobe.serve"]
    assert [(e["status"], e["client_key"]) for e in lines] == [
        (200, "alice"), (429, "alice"), (401, None), (200, "admin"), (200, "bob")]
    text = "\n".join(r.getMessage() for r in caplog.records)
    state = (tmp_path / "keys.txt.state.json").read_text()
    for secret in SECRETS:
        assert secret not in text and secret not in state
        assert secret[:12] not in state
    records = json.loads(state)["clients"]
    assert all(len(r["key_sha256"]) == 64 for r in records)


def test_a_flood_of_bad_keys_is_refused_and_the_server_stays_up(tmp_path):
    service = keyed_service(tmp_path)
    with running(create_app(service)) as url, httpx.Client(timeout=30) as http:
        codes = [http.post(url + "/v1/embed", headers=auth(f"bad-key-{i:016d}"),
                           json={"array": "AAAA"}).status_code for i in range(200)]
        assert codes == [401] * 200
        assert service.encoder.calls == 0
        assert embed(url, BOB).status_code == 200


# -- the HTTP client -----------------------------------------------------------------------


def test_the_client_sends_the_key_from_the_environment(tmp_path, monkeypatch):
    service = keyed_service(tmp_path)
    x = torch.rand(3, 3, 16, 16)
    with running(create_app(service)) as url:
        monkeypatch.delenv("LEAKPROBE_API_KEY", raising=False)
        with pytest.raises(LeakprobeError, match="the server needs an API key: set "
                                                 "LEAKPROBE_API_KEY"):
            HTTPEncoder(url, retries=0)
        monkeypatch.setenv("LEAKPROBE_API_KEY", ALICE + "wrong")
        with pytest.raises(LeakprobeError) as info:
            HTTPEncoder(url, retries=0)
        assert "rejected the API key in $LEAKPROBE_API_KEY" in str(info.value)
        assert ALICE not in str(info.value)
        monkeypatch.setenv("LEAKPROBE_API_KEY", ALICE)
        client = HTTPEncoder(url, retries=0)
        assert all(ALICE not in str(v) for v in vars(client).values())
        assert remaining_queries(client) == 5  # the key's budget, announced at /v1/info
        with pytest.raises(LeakprobeError, match="the target's budget allows 5"):
            check_query_budget(client, 6, "this run needs 6 queries", "ask for fewer")
        assert torch.equal(client.embed(x), service.encoder.embed(x))
        with pytest.raises(BudgetExceededError) as spent:
            client.embed(x)
        assert "budget allows 2 more queries (3 of 5 used)" in str(spent.value)
        assert ALICE not in str(spent.value)


# -- B4B: coverage per key, kept across restarts ----------------------------------------------


def test_b4b_coverage_is_per_key_grows_with_spread_queries_and_survives_a_restart(tmp_path):
    service = keyed_service(tmp_path, f"thief:{ALICE}\nuser:{BOB}\n", defence="b4b")
    info_defence = service.info()["defence"]
    assert info_defence["b4b"] == {"lambda": 1e-6, "alpha": 1.0, "beta": 80.0,
                                   "transform": "none", "hashes": 20, "bits": 12}
    g = torch.Generator().manual_seed(5)
    one = torch.rand(1, 3, 16, 16, generator=g)
    with running(create_app(service)) as url:
        for _ in range(4):  # the thief's images spread over colours, the user's are alike
            spread = 0.8 * torch.rand(50, 3, 1, 1, generator=g) + \
                0.2 * torch.rand(50, 3, 16, 16, generator=g)
            narrow = (one + 0.002 * torch.rand(50, 3, 16, 16, generator=g)).clamp(0, 1)
            for key, x in ((ALICE, spread), (BOB, narrow)):
                resp = httpx.post(url + "/v1/embed", headers=auth(key), timeout=30,
                                  json={"array": encode_uint8(x)})
                assert resp.status_code == 200
        thief = httpx.get(url + "/v1/usage", headers=auth(ALICE)).json()
        user = httpx.get(url + "/v1/usage", headers=auth(BOB)).json()
        tokens = httpx.post(url + "/v1/embed", headers=auth(BOB), timeout=30,
                            json={"array": encode_uint8(one), "tokens": True})
        assert tokens.status_code == 400 and "tokens" in tokens.json()["error"]
    assert thief["coverage"] > 10 * user["coverage"] > 0  # measured: 0.54% vs 0.024%
    assert thief["noise_std"] > user["noise_std"] >= 0
    restarted = keyed_service(tmp_path, f"thief:{ALICE}\nuser:{BOB}\n", defence="b4b")
    usage = restarted.clients.usage(restarted.clients.clients[0])
    assert usage["coverage"] == thief["coverage"]
    with pytest.raises(LeakprobeError, match="16-wide embeddings, this encoder answers 8"):
        restarted.clients.check_b4b_width(8)
