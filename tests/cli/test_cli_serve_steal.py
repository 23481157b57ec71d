"""`leakprobe serve encoder` as a process, and `leakprobe steal encoder` end to end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import torch

from leakprobe.data.loaders import save_image_folder
from leakprobe.data.synthetic import make_synthetic
from leakprobe.models import create_model

ENV = {**os.environ, "LEAKPROBE_PROGRESS": "0", "LEAKPROBE_QUIET": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
