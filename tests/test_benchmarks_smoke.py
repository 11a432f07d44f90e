"""Every benchmark script and the GPU check run end to end on tiny configurations (``--tiny``), in seconds.

No timing or memory figure is asserted here (those are what the benchmarks print); these tests only make sure
the scripts run, print their tables and, for the GPU check, that every section ran (or was skipped for a stated
reason) so that the real run on a GPU does not fail for a silly reason.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _script(name):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_smoke_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "argv", "header"),
    [
        ("bench_tokenizer", ["--tiny"], "4DMoT tiny"),
        ("bench_dit", ["--tiny"], "MV-DiT-7B step"),
        ("bench_sampling", ["--tiny"], "MV-DiT-7B sampling loop"),
        ("bench_vae", ["--tiny"], "CogVideoX VAE"),
        ("bench_pipeline7b", ["--tiny"], "tiny MV-DiT-7B"),
        ("bench_load", ["--tiny", "--in-process"], "MV-DiT-7B loading"),
    ],
)
def test_benchmark_runs_and_prints_its_table(name, argv, header, capsys):
    assert _script(name).main(argv) == 0
    out = capsys.readouterr().out
    assert header in out and "cores" in out  # the machine line and the table
    assert "failed" not in out


def test_load_benchmark_measures_in_a_fresh_process(capsys):
    assert _script("bench_load").main(["--tiny", "--cases", "fp32 single"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "fp32 single safetensors" in line)
    assert row.split()[3] not in ("", "failed")  # weights MiB column filled from the child's JSON


def test_record_appends_a_dated_table(tmp_path):
    benchlib = _script("benchlib")
    table = benchlib.Table("title", ["a", "b"])
    table.add(1, 0.5)
    benchlib.record([table], "bench_x.py", ["--tiny"], notes="n", path=tmp_path / "R.md")
    text = (tmp_path / "R.md").read_text()
    assert "### bench_x.py" in text and "- commit: " in text and "| 1 | 0.5 |" in text


def _gpu_check(tmp_path):
    out = tmp_path / "gpu_check.json"
    rc = _script("gpu_check").main(["--tiny", "--out", str(out)])
    return rc, json.loads(out.read_text())


def test_gpu_check_dry_run_runs_every_7b_section(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mtv_core.dit.transformer_17b", None)  # as on a branch without the 17B
    rc, results = _gpu_check(tmp_path)
    assert rc == 0
    for section in ("environment", "load_7b", "build_7b", "step_7b", "drift_7b", "budget_7b"):
        assert results[section]["status"] == "ok", (section, results[section])
    backends = results["step_7b"]["backends"]
    assert backends["sdpa"]["status"] == "ok" and backends["sdpa"]["s_per_step"] > 0
    assert results["budget_7b"]["offloaded"]["status"] == "ok"
    assert results["load_7b"]["fp32 safetensors"]["bit_identical_to_cpu_load"] is True
    assert 0 < results["drift_7b"]["rel_err"] < 0.05  # bf16 against fp32: close, and not trivially equal
    for section in ("build_17b", "step_17b", "budget_17b"):
        assert results[section]["status"].startswith("skipped"), results[section]
    out = capsys.readouterr().out
    assert "step time per attention backend" in out and "not available" in out


def test_gpu_check_dry_run_with_a_17b_model(tmp_path, monkeypatch):
    import _dit17b_standin

    monkeypatch.setitem(sys.modules, "mtv_core.dit.transformer_17b", _dit17b_standin)
    rc, results = _gpu_check(tmp_path)
    assert rc == 0
    for section in ("build_17b", "step_17b", "budget_17b"):
        assert results[section]["status"] == "ok", (section, results[section])
    assert results["budget_17b"]["storage_dtype"] == "torch.float8_e4m3fn"
    assert results["step_17b"]["backends"]["sdpa"]["status"] == "ok"


def test_load_benchmark_takes_the_17b_kind(monkeypatch, capsys):
    import _dit17b_standin

    monkeypatch.setitem(sys.modules, "mtv_core.dit.transformer_17b", _dit17b_standin)
    assert _script("bench_load").main(["--model", "17b", "--tiny", "--in-process", "--cases", "fp32 single"]) == 0
    assert "MV-DiT-17B loading" in capsys.readouterr().out
