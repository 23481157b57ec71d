"""`leakprobe defend encoder` end to end on a tiny data set: the combined report's keys."""

from __future__ import annotations

import json

from cli_runner import run_cli as cli
from leakprobe.data.splits import make_split
from leakprobe.data.synthetic import make_synthetic
from leakprobe.training.encoder import EncoderRecipe
from leakprobe.training.trainer import TrainConfig
from leakprobe.workflows.defend import defend_encoder

TINY = ["--data", "synthetic:40", "--members", "20", "--epochs", "2", "--batch-size", "10",
        "--image-size", "16", "--num-parts", "4", "--n-views", "2", "--repeats", "1",
        "--attacks", "partcrop,encodermi-vector", "--device", "cpu", "--seed", "0"]
SETTING_KEYS = {"name", "setting", "strength", "utility", "epsilon", "results", "report",
                "model"}




def test_defend_dp_writes_the_combined_report(tmp_path):
    out = tmp_path / "dp"
    code, stdout, stderr = cli("defend", "encoder", "--defence", "dp", "--values", "none,1.0",
                               *TINY, "--out", str(out))
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "encoder-defence" and report["defence"] == "dp"
    assert [s["name"] for s in report["settings"]] == ["no_dp", "dp_noise_1"]
    for s in report["settings"]:
        assert set(s) >= SETTING_KEYS
        assert {"knn_accuracy", "linear_probe_accuracy"} <= set(s["utility"])
        per_setting = json.loads((out / s["report"]).read_text())
        assert s["results"] == per_setting["results"]  # identical to the audit report
        assert {r["attack"] for r in s["results"]} >= {"partcrop", "encodermi-vector"}
        assert all(0 <= r["metrics"]["auc"] <= 1 for r in s["results"])
    no_dp, dp = report["settings"]
    assert no_dp["epsilon"] is None and no_dp["setting"] == {"dp": False}
    assert no_dp["epsilon_nominal"] is None and no_dp["epsilon_caveat"] is None
    assert dp["dp"]["steps"] == 4 and dp["dp"]["sample_rate"] == 0.5
    # SimCLR: no guarantee; the accountant's number is kept as nominal, with the caveat
    assert dp["epsilon"] is None and dp["epsilon_nominal"] > 0
    assert dp["epsilon_caveat"] == dp["dp"]["caveat"] and "SimCLR" in dp["epsilon_caveat"]
    meta = json.loads((out / dp["model"]).with_name("model.json").read_text())
    assert meta["arch_kwargs"]["norm"] == "group" and meta["dp"]["epsilon"] is None
    for name in ("report.html", "tradeoff.png"):
        assert (out / name).is_file()
    page = (out / "report.html").read_text()
    nominal = f"{dp['epsilon_nominal']:.3g}"
    assert "dp_noise_1" in page and f"none (nominal {nominal}, not a guarantee)" in page
    assert "epsilon is not a DP guarantee here: SimCLR: each image is a negative" in page
    row = next(line for line in stdout.splitlines() if line.startswith("dp_noise_1"))
    assert "none*" in row and nominal not in row  # never a bare nominal epsilon
    assert f"* dp_noise_1: no DP guarantee, nominal epsilon {nominal} (SimCLR:" in stdout
    assert "dp_noise_1" in stdout and "no_dp" in stdout

    code, _, stderr = cli("report", str(out), "--out", str(tmp_path / "combined"))
    assert code == 0, stderr  # `leakprobe report` renders every setting's audit
    assert (tmp_path / "combined" / "r2_roc.png").is_file()

    code, _, stderr = cli("defend", "encoder", "--defence", "dropout", "--values", "1", *TINY,
                          "--out", str(tmp_path / "bad"))
    assert code == 2 and "unknown defence" in stderr


def test_early_stopping_sweep_audits_the_snapshots(tmp_path):
    data = make_synthetic(40, 16, 0)
    split = make_split(data, 20, seed=0)
    recipe = EncoderRecipe("simclr", "resnet-tiny", {}, (0.08, 1.0), {"proj_dim": 0})
    report = defend_encoder(split, defence="early-stopping", values=[1, 3], recipe=recipe,
                            config=TrainConfig(batch_size=10, device="cpu"), out_dir=tmp_path,
                            attacks="partcrop", repeats=1, num_parts=4)
    names = [s["name"] for s in report["settings"]]
    assert names == ["epoch_0001", "epoch_0003"]
    assert [s["model"] for s in report["settings"]] == [
        f"target/snapshots/{n}/encoder.safetensors" for n in names]
    assert [s["epoch"] for s in report["settings"]] == [1, 3]
    assert (tmp_path / "strength.png").is_file()
    aucs = [s["results"][0]["metrics"]["auc"] for s in report["settings"]]
    assert aucs[0] != aucs[1]  # different models, different scores


def test_train_encoder_dp_prints_a_guarantee_or_the_caveat(tmp_path):
    common = ["--data", "synthetic:48", "--members", "24", "--epochs", "1", "--batch-size", "12",
              "--image-size", "16", "--device", "cpu", "--seed", "0", "--dp",
              "--arch-kwargs", '{"width": 8}', "--method-kwargs",
              '{"hidden_dim": 32, "proj_dim": 16}']
    lines = {}
    for method in ("byol", "simclr"):
        code, stdout, stderr = cli("train", "encoder", "--method", method, *common,
                                   "--out", str(tmp_path / method))
        assert code == 0, stderr
        lines[method] = [ln for ln in stdout.splitlines() if ln.startswith("DP-SGD")]
        meta = json.loads((tmp_path / method / "model.json").read_text())
        assert meta["dp"]["sampling"] == "poisson" and meta["dp"]["epsilon_nominal"] > 0
    nominal = f"{meta['dp']['epsilon_nominal']:.3g}"  # the same accounting for both methods
    assert lines["byol"] == [f"DP-SGD: epsilon {nominal} at delta 1e-05 (noise multiplier 1, "
                             "clip 1, 2 steps, Poisson sample rate 0.5)"]
    assert lines["simclr"][0].startswith(
        f"DP-SGD: epsilon none (nominal {nominal}, not a guarantee) at delta 1e-05")
    assert lines["simclr"][1].startswith("DP-SGD: not a guarantee: SimCLR: each image")
