"""Our models under a live ComfyUI's model management (0.3.64+): during a run the DiT, the VAE and the tokenizer
are in ``comfy.model_management.current_loaded_models`` as ModelPatchers, "Unload Models" (``POST /free``) takes
them out and the next run loads them again, and servers started with ``--lowvram`` / ``--novram`` run the 7B
workflows (on a CUDA machine: ComfyUI refuses these flags together with --cpu).

The test-only probe folder (``probe_pack``, installed by conftest) reports the server's loaded models.
"""

from __future__ import annotations

import time

import pytest

from .comfy_harness import start_server_like
from .run_checks import adapt, expected_video, probe_video, saved_files, to_api
from .workflow_assets import load_workflow, workflow_files

pytestmark = pytest.mark.integration

# what a ModelPatcher of ours holds (the VAE sits whole inside a plain container, reported as "inner"); the 17B
# samples with ComfyUI's own Wan VAE (comfy.ldm.wan.vae.WanVAE in the VAE's patcher), loaded by our sampler with it
OURS = {"MVDiT7B": "dit", "MVDiT17B": "dit", "MotionVQVAE": "tokenizer", "AutoencoderKLCogVideoX": "vae",
        "WanVAE": "vae"}
SAMPLERS = ("MTVSampler7B", "MTVSampler17B")


def ours(state: dict) -> dict[str, list[dict]]:
    """Our models among the server's loaded models, by kind."""
    found: dict[str, list[dict]] = {}
    for model in state["models"]:
        kind = OURS.get(model["inner"] or model["class"])
        if kind:
            found.setdefault(kind, []).append(model)
    return found


def _sampler(path) -> str | None:
    return next((n["type"] for n in load_workflow(path)["nodes"] if n.get("type") in SAMPLERS), None)


def sampler_workflows():
    """The shipped workflows that sample with an MV-DiT, the one driven by a motion file (the smallest) first."""
    ranked = sorted(workflow_files(), key=lambda p: (0 if "motion_file" in p.stem else 1, p.name))
    found = [p for p in ranked if _sampler(p)]
    assert {_sampler(p) for p in found} == set(SAMPLERS), f"not every sampler has a shipped workflow: {found}"
    return found


def first_workflow_per_sampler():
    return [next(p for p in sampler_workflows() if _sampler(p) == sampler) for sampler in SAMPLERS]


def free(comfy, server, **flags) -> None:
    """POST /free (the UI's "Unload Models" is {"unload_models": true}) and wait until none of ours is loaded."""
    status, _ = server.post_json("/free", flags)
    assert status == 200
    deadline = time.monotonic() + 60
    while ours(comfy.loaded_models(server)):
        assert time.monotonic() < deadline, f"still loaded after /free {flags}: {comfy.loaded_models(server)}"
        time.sleep(0.2)


@pytest.mark.parametrize("path", first_workflow_per_sampler(), ids=lambda p: p.stem)
def test_models_are_comfyui_managed_during_a_run_and_unload_models_frees_them(comfy, path):
    info = comfy.object_info
    api = adapt(to_api(load_workflow(path), info), info, prefix="it/managed")
    sampler = next(k for k, v in api.items() if v["class_type"] in SAMPLERS)
    native_vae = api[sampler]["class_type"] == "MTVSampler17B"  # ComfyUI's own Wan VAE, built from its own ops
    free(comfy, comfy.server, unload_models=True, free_memory=True)  # also drops cached outputs: all nodes run

    seen: dict = {}

    def probe_at_first_step(server, msg):
        if msg.get("type") == "progress" and msg.get("data", {}).get("node") == sampler and not seen:
            seen.update(comfy.loaded_models())

    result = comfy.server.run(api, timeout=600, on_message=probe_at_first_step)
    assert result.status == "success", result.error_text()
    assert seen, "the sampler reported no progress"
    during = ours(seen)
    assert sorted(during) == ["dit", "tokenizer", "vae"], seen
    for kind, entries in during.items():
        assert len(entries) == 1, f"{kind} loaded {len(entries)} times: {entries}"
        model = entries[0]
        assert model["model_patcher"] and model["load_device"] == "cpu", model
        assert 0 < model["loaded"] <= model["size"], model
    # built from ComfyUI's casting layers (partially loadable); the diffusers VAE is plain torch, loaded whole
    assert during["dit"][0]["layer_modules"] == ["comfy.ops"]
    assert during["tokenizer"][0]["layer_modules"] == ["comfy.ops"]
    if not native_vae:
        assert during["vae"][0]["layer_modules"] and "comfy.ops" not in during["vae"][0]["layer_modules"]
    comfy.timings[f"managed_during_run_{path.stem}"] = {k: v[0]["size"] for k, v in during.items()}

    free(comfy, comfy.server, unload_models=True)  # "Unload Models": cached loader outputs stay
    api[sampler]["inputs"]["seed"] = api[sampler]["inputs"]["seed"] + 1  # sampler and decoder run again
    again = comfy.server.run(api, timeout=600)
    assert again.status == "success", again.error_text()
    assert {"dit", "vae"} <= set(ours(comfy.loaded_models())), comfy.loaded_models()


VRAM_FLAGS = {"--lowvram": "LOW_VRAM", "--novram": "NO_VRAM"}


@pytest.fixture(scope="module", params=sorted(VRAM_FLAGS))
def vram_flag_server(request, comfy, tmp_path_factory):
    import torch

    if not torch.cuda.is_available():
        pytest.skip(f"ComfyUI refuses {request.param} together with --cpu: this server needs a CUDA GPU "
                    "(partial loading on CPU: test_partial_loading.py)")
    base = tmp_path_factory.mktemp(f"comfyui_{request.param.strip('-')}")
    server = start_server_like(comfy, base, (request.param,), cpu=False)
    try:
        yield request.param, server
    finally:
        server.stop()


@pytest.mark.parametrize("path", sampler_workflows(), ids=lambda p: p.stem)
def test_vram_flag_server_runs_the_7b_workflows(comfy, vram_flag_server, path):
    flag, server = vram_flag_server
    info = comfy.object_info
    workflow = load_workflow(path)
    api = adapt(to_api(workflow, info), info, prefix=f"it/{flag.strip('-')}_{path.stem}")
    result = server.run(api, timeout=600, workflow=workflow)
    assert result.status == "success", f"{result.error_text()}\n{server.log_tail(3000)}"
    state = comfy.loaded_models(server)
    assert state["vram_state"] == VRAM_FLAGS[flag], state
    comfy.timings[f"{flag.strip('-')}_{path.stem}"] = {"run_s": round(result.seconds, 1),
                                                      "models": ours(state)}
    found = ours(state)
    assert {"dit", "vae"} <= set(found), state
    if flag == "--novram":  # every comfy.ops layer is cast to the GPU per call: nothing of the DiT stays loaded
        assert found["dit"][0]["lowvram"] and found["dit"][0]["loaded"] < found["dit"][0]["size"], found
    for node_id in (k for k, v in api.items() if v["class_type"] == "SaveVideo"):
        files = saved_files(result.outputs, node_id)
        assert len(files) == 1, result.outputs.get(node_id)
        base = server.base_dir / "output"
        video = probe_video(base / files[0]["subfolder"] / files[0]["filename"])
        expect = expected_video(api, node_id, comfy.input_dir)
        assert video["frames"] == expect.get("frames", video["frames"]) and video["frames"] > 0
        assert video["size"] == expect.get("size", video["size"])
