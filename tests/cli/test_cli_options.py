"""The shared option types (leakprobe.cli.options) check their values while the command line
is parsed: a bad value is a one-line error with exit status 2 before any data is loaded."""

from __future__ import annotations

import pytest

from cli_runner import run_cli as cli


def forbid(*_args, **_kwargs):
    raise AssertionError("the command ran before its options were checked")


def one_line_error(code: int, err: str, *parts: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for part in parts:
        assert part in err, err


@pytest.mark.parametrize("command", [
    ["defend", "encoder", "--defence", "scsr", "--out", "{tmp}/d"],
    # on a Ray cluster the workers judge their devices, but the name must still be one
    ["study", "--config", "{tmp}/no-such-study.yaml", "--workers", "2", "--dry-run"],
])
def test_device_gpu_is_a_one_line_error(tmp_path, monkeypatch, command):
    import leakprobe.data.loaders

    monkeypatch.setattr(leakprobe.data.loaders, "load_dataset", forbid)
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    code, out, err = cli(*args, "--device", "gpu")
    one_line_error(code, err, "--device gpu: unknown device", "use auto, cpu, cuda or cuda:N")
    assert "Traceback" not in out + err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--crop-scale", "0.5", "--crop-scale must be 'LOW,HIGH'"),
    ("--arch-kwargs", "[1]", "--arch-kwargs must be a JSON object"),
    ("--method-kwargs", "{", "--method-kwargs must be a JSON object"),
    ("--amp", "maybe", "--amp must be one of auto, on, off"),
    ("--threads", "0", "--threads must be 'auto' or a positive integer"),
])
@pytest.mark.parametrize("command", [["train", "encoder"], ["defend", "encoder", "--defence",
                                                            "scsr"]])
def test_shared_options_are_checked_before_any_data_loads(tmp_path, monkeypatch, command,
                                                          option, value, message):
    import leakprobe.data.loaders

    monkeypatch.setattr(leakprobe.data.loaders, "load_dataset", forbid)
    code, _, err = cli(*command, option, value, "--device", "cpu", "--out", str(tmp_path / "o"))
    one_line_error(code, err, message)
    assert not (tmp_path / "o").exists()
