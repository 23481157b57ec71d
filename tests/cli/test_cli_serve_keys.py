"""``leakprobe serve --api-keys/--state/--admin-key/--defence``: bad input is one line, exit 2,
before the model is loaded (the --model here does not exist)."""

from __future__ import annotations

import pytest

from cli_runner import run_cli as cli

SECRET = "tiny-secret"  # too short: refused, and never echoed


def one_line_error(code: int, err: str, *parts: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for part in parts:
        assert part in err, err


def serve(kind: str, tmp, *options: str):
    return cli("serve", kind, "--model", str(tmp / "no-such-model.safetensors"), *options)


@pytest.mark.parametrize("kind", ["encoder", "image2image", "captioner"])
def test_a_missing_keys_file(tmp_path, kind):
    code, _, err = serve(kind, tmp_path, "--api-keys", str(tmp_path / "keys.txt"))
    one_line_error(code, err, "--api-keys", "keys.txt: no such file")


def test_bad_keys_files_name_the_line_never_the_key(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# ok\nalice:{SECRET}:10\n")
    code, _, err = serve("encoder", tmp_path, "--api-keys", str(keys))
    one_line_error(code, err, "keys.txt:2: the key is too short")
    assert SECRET not in err
    keys.write_text("")
    one_line_error(*serve("encoder", tmp_path, "--api-keys", str(keys))[::2], "no API keys")


def test_state_and_admin_key_need_keys_and_an_admin_file(tmp_path):
    code, _, err = serve("encoder", tmp_path, "--state", str(tmp_path / "s.json"))
    one_line_error(code, err, "--state and --admin-key need --api-keys")
    keys = tmp_path / "keys.txt"
    keys.write_text("alice:" + "k" * 20 + "\n")
    code, _, err = serve("captioner", tmp_path, "--api-keys", str(keys), "--admin-key",
                         str(tmp_path / "admin.txt"))
    one_line_error(code, err, "--admin-key", "admin.txt: no such file")
    code, _, err = serve("encoder", tmp_path, "--api-keys", str(keys), "--state",
                         str(tmp_path / "missing" / "s.json"))
    one_line_error(code, err, "does not exist")


@pytest.mark.parametrize("options, parts", [
    (["--defence", "b4d"], ["unknown answer defence 'b4d' (did you mean 'b4b'?)"]),
    (["--defence", "b4b:alfa=1"], ["did you mean 'alpha=1'?"]),
    (["--defence", "noise:0.1", "--noise", "0.2"], ["--noise set the same perturbation"]),
])
def test_a_bad_defence(tmp_path, options, parts):
    code, _, err = serve("encoder", tmp_path, *options)
    one_line_error(code, err, *parts)


@pytest.fixture
def served(monkeypatch):
    """``leakprobe serve`` with a tiny model and no server: the services it would run."""
    import torch
    from torch import nn

    import leakprobe.serving.server as server
    import leakprobe.targets.families as families
    from leakprobe.targets.encoder import ModuleEncoder

    services = []
    monkeypatch.setattr(server, "run_server", lambda service, *a, **k: services.append(service))
    torch.manual_seed(0)
    model = ModuleEncoder(nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1),
                                        nn.Flatten()), input_size=16, device="cpu")
    monkeypatch.setattr(families, "load_target", lambda *a, **k: model)
    return services


def test_the_start_up_line_says_who_can_query(tmp_path, served):
    code, _, err = serve("encoder", tmp_path)
    assert code == 0, err
    assert "no --api-keys: anyone who can reach http://127.0.0.1:8080 can query" in err
    assert not served[0].clients.keyed
    keys, admin = tmp_path / "keys.txt", tmp_path / "admin.txt"
    keys.write_text("alice:" + "a" * 20 + ":100\n" + "b" * 20 + "\n")
    admin.write_text("c" * 20)
    code, _, err = serve("encoder", tmp_path, "--api-keys", str(keys), "--admin-key",
                         str(admin), "--defence", "b4b:alpha=0.8+round:3")
    assert code == 0, err
    assert f"2 API keys from {keys}; usage kept in {keys}.state.json; admin key on" in err
    assert "defence b4b:alpha=0.8+round:3" in err and "anyone" not in err
    assert "a" * 20 not in err and "c" * 20 not in err
    service = served[1]
    assert [c.name for c in service.clients.clients] == ["alice", "key-2"]
    assert service.info()["defence"]["b4b"]["alpha"] == 0.8
