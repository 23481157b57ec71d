"""`leakprobe serve encoder` as a process, and `leakprobe steal encoder` end to end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch
import torch.nn.functional as F

from leakprobe.data.loaders import save_image_folder
from leakprobe.data.synthetic import make_synthetic
from leakprobe.models import create_model

ENV = {**os.environ, "LEAKPROBE_PROGRESS": "0", "LEAKPROBE_QUIET": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, log: Path) -> None:
    """Until ``url``/v1/info answers (a server that exits fails the test with its log)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/v1/info", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not start")


def test_serve_then_steal_through_the_url(tmp_path):
    torch.manual_seed(0)
    torch.jit.script(create_model("resnet-tiny").eval()).save(str(tmp_path / "enc.pt"))
    data = make_synthetic(150, 32, seed=2)
    save_image_folder(data.subset(range(90)), tmp_path / "query")
    save_image_folder(data.subset(range(90, 120)), tmp_path / "probe_train")
    save_image_folder(data.subset(range(120, 150)), tmp_path / "probe_test")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "leakprobe.cli", "serve", "encoder", "--model",
         str(tmp_path / "enc.pt"), "--port", str(port), "--max-queries", "100000"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(url + "/v1/info", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        assert httpx.get(url + "/v1/info").json()["max_queries"] == 100000
        out = tmp_path / "steal"
        proc = subprocess.run(
            [sys.executable, "-m", "leakprobe.cli", "steal", "encoder", "--model", url,
             "--query-data", str(tmp_path / "query"), "--budget", "40,80",
             "--method", "contsteal,mse", "--epochs", "1", "--probe-train",
             str(tmp_path / "probe_train"), "--probe-test", str(tmp_path / "probe_test"),
             "--out", str(out)], env=ENV, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        report = json.loads((out / "report.json").read_text())
        assert report["kind"] == "encoder-stealing"
        assert [(r["method"], r["budget"]) for r in report["results"]] == [
            ("contsteal", 40), ("contsteal", 80), ("mse", 40), ("mse", 80)]
        # one query stream per view count, paid once for the largest budget
        assert report["context"]["attack_queries_total"] == 80 + 80
        assert (out / "steal_surrogate_probe_accuracy.png").exists()
        assert (out / "contsteal_b80" / "encoder.torchscript.pt").exists()
    finally:
        server.terminate()
        server.wait(timeout=20)


class PoolEncoder(torch.nn.Module):
    """A 224-px encoder that costs nothing: 4x4 average pooling and a linear map."""

    def __init__(self) -> None:
        super().__init__()
        self.input_size = 224
        self.linear = torch.nn.Linear(48, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(F.adaptive_avg_pool2d(x, 4).flatten(1))


def test_a_224px_steal_through_serve_with_default_limits(tmp_path):
    """Issue #22: a 224-px batch once went out as 80 MB of float32 and got a 413 from the
    64 MiB default. Now the client sizes its requests from /v1/info and the steal's views
    travel as uint8: the 120 views of budget 120 go in one 24 MB request (96 MB as float32).
    The server logs one JSON line per request, without the key a client sent."""
    torch.manual_seed(0)
    torch.jit.script(PoolEncoder().eval()).save(str(tmp_path / "enc224.pt"))
    data = make_synthetic(200, 32, seed=4)
    save_image_folder(data.subset(range(120)), tmp_path / "query")
    save_image_folder(data.subset(range(120, 160)), tmp_path / "probe_train")
    save_image_folder(data.subset(range(160, 200)), tmp_path / "probe_test")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "leakprobe.cli", "serve", "encoder", "--model",
             str(tmp_path / "enc224.pt"), "--port", str(port)],
            env=ENV, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    secret = "sk-never-in-the-log-42"
    try:
        wait_for(url, server, log)
        info = httpx.get(url + "/v1/info", headers={"Authorization": f"Bearer {secret}"}).json()
        assert info["input_size"] == 224 and info["max_body_bytes"] == 64 * 2**20
        assert "npy-uint8" in info["encodings"]
        out = tmp_path / "steal"
        proc = subprocess.run(
            [sys.executable, "-m", "leakprobe.cli", "steal", "encoder", "--model", url,
             "--query-data", str(tmp_path / "query"), "--budget", "120", "--method", "mse",
             "--epochs", "1", "--surrogate-kwargs", '{"width": 4, "blocks": [1, 1]}',
             "--probe-train", str(tmp_path / "probe_train"), "--probe-test",
             str(tmp_path / "probe_test"), "--out", str(out), "--threads", "1"],
            env=ENV, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        report = json.loads((out / "report.json").read_text())
        assert report["results"][0]["queries_used"] == 120
        assert report["context"]["attack_queries_total"] == 120
    finally:
        server.terminate()
        server.wait(timeout=20)
    text = log.read_text()
    assert "413" not in text and secret not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    posts = [e for e in lines if e["method"] == "POST"]
    assert posts and all(e["status"] == 200 for e in lines)
    assert all(e["body_bytes"] <= 64 * 2**20 for e in posts)
    assert sum(e["images"] for e in posts) == 120 + 40 + 40  # attack + probe queries
    attack = max(posts, key=lambda e: e["images"])
    assert attack["images"] == 120 and attack["body_bytes"] < 120 * 3 * 224 * 224 * 4 / 3 * 1.01
    assert {"time", "client", "path", "ms", "queries_used"} <= set(attack)
