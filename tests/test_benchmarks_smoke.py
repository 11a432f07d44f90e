"""Every benchmark script and the GPU check run end to end on tiny configurations (``--tiny``), in seconds.

No timing or memory figure is asserted here (those are what the benchmarks print); these tests only make sure
the scripts run, print their tables and, for the GPU check, that every section ran (or was skipped for a stated
reason) so that the real run on a GPU does not fail for a silly reason.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _run(name: str, *argv: str) -> str:
    """Run ``benchmarks/<name>.py`` as users do, in its own process (the scripts import the core as ``mtv_core``,
    which this test process refuses: see conftest); returns its output, failing with it on a non-zero exit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *argv], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{name} {argv} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.parametrize(
    ("name", "argv", "header"),
    [
        ("bench_tokenizer", ["--tiny"], "4DMoT tiny"),
        ("bench_dit", ["--tiny"], "MV-DiT-7B step"),
        ("bench_dit", ["--tiny", "--compare-fused"], "fusion speed-up"),
        ("bench_sampling", ["--tiny"], "MV-DiT-7B sampling loop"),
        ("bench_sampling", ["--tiny", "--cache-threshold", "0", "1e9"], "first-block step caching"),
        ("bench_vae", ["--tiny"], "CogVideoX VAE"),
        ("bench_pipeline7b", ["--tiny"], "tiny MV-DiT-7B"),
        ("bench_load", ["--tiny", "--cases", "fp32 single"], "MV-DiT-7B loading"),
        ("bench_load", ["--model", "17b", "--tiny", "--cases", "fp32 single"], "MV-DiT-17B loading"),
        ("bench_load_17b", ["--tiny"], "MV-DiT-17B layout loading"),
    ],
)
def test_benchmark_runs_and_prints_its_table(name, argv, header):
    out = _run(name, *argv)
    assert header in out and "cores" in out  # the machine line and the table
    assert "failed" not in out
    if name == "bench_load":  # measured in a fresh process: the weights column is filled from the child's JSON
        row = next(line for line in out.splitlines() if "fp32 single safetensors" in line)
        assert row.split()[3] not in ("", "failed")


def test_record_appends_a_dated_table(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import benchlib  # plain helpers, no import of the core
    finally:
        sys.path.remove(str(BENCH))
    table = benchlib.Table("title", ["a", "b"])
    table.add(1, 0.5)
    benchlib.record([table], "bench_x.py", ["--tiny"], notes="n", path=tmp_path / "R.md")
    text = (tmp_path / "R.md").read_text()
    assert "### bench_x.py" in text and "- commit: " in text and "| 1 | 0.5 |" in text


def test_gpu_check_dry_run_runs_every_section(tmp_path):
    out_file = tmp_path / "gpu_check.json"
    out = _run("gpu_check", "--tiny", "--out", str(out_file))
    results = json.loads(out_file.read_text())
    for section in ("environment", "load_7b", "build_7b", "step_7b", "drift_7b", "options_7b", "fp8_matmul", "budget_7b",
                    "build_17b", "step_17b", "budget_17b"):
        assert results[section]["status"] == "ok", (section, results[section])
    for model in ("7b", "17b"):
        assert results[f"step_{model}"]["backends"]["sdpa"]["status"] == "ok"
        assert results[f"step_{model}"]["backends"]["sdpa"]["s_per_step"] > 0
    assert results["budget_7b"]["offloaded"]["status"] == "ok"
    assert results["budget_17b"]["storage_dtype"] == "torch.float8_e4m3fn"
    assert results["load_7b"]["fp32 safetensors"]["bit_identical_to_cpu_load"] is True
    assert 0 < results["drift_7b"]["rel_err"] < 0.05  # bf16 against fp32: close, and not trivially equal
    assert "step time per attention backend" in out
    options = results["options_7b"]
    assert options["fused_qkv"]["layers"] > 0 and options["fused_qkv"]["vs_unfused_rel_err"] < 1e-5
    assert {"0.05", "0.1", "0.2"} <= options["step_cache"].keys()
    assert 0 < results["fp8_matmul"]["fp8_vs_fp32_rel_err"] < 0.1
