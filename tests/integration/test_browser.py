"""Every template in the real web frontend, in a headless Chromium, against the real server (marker ``browser``).

What a new user sees: the template opens from the template API like the template browser does
(``app.loadGraphData`` with the served JSON) with every tiny model installed, so no "Missing Models" or
missing-nodes dialog may appear (the template is opened unchanged; only the prompt sent to run it swaps the native
loaders that know just the released sizes for the probe folder's stand-ins, ``run_checks.STAND_INS``); the opening view shows the note and the first group; the template runs
(steps and sizes lowered like the integration runs); afterwards no two nodes overlap, every node is still
inside its group, every Preview as Text node shows its text in the page, and the screenshots (opening
view, whole graph, each group) are saved in the test's temporary folder (also copied to
``MTV_BROWSER_SHOTS`` when set).

Needs ``COMFYUI_DIR`` (see ``conftest.py``), ``selenium`` and a Chromium with its driver (Debian:
``apt-get install chromium chromium-driver``; ``MTV_CHROME`` / ``MTV_CHROMEDRIVER`` point at others);
skipped otherwise. Run: ``COMFYUI_DIR=... python -m pytest -q -m browser tests``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .comfy_harness import PACK_FOLDER
from .frontend_rules import CANVAS_MARGINS, overlap
from .run_checks import FAST_CORE_INPUTS, FAST_INPUTS, STAND_INS
from .workflow_assets import load_workflow, workflow_files

pytestmark = pytest.mark.browser

WORKFLOWS = workflow_files()
WINDOW = (1280, 800)  # the smallest window the templates are laid out for
SHOT_WINDOW = (1920, 1080)  # screenshots after the run
RUN_TIMEOUT_S = 600
EXPECTED_TEXT = {"MTVEncodeMotion": "MPJPE", "MTVMotionInfo": "frames:", "MTVSaveMotion": ".npz"}


def _executable(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    return next((path for name in names if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def driver(comfy):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chrome = _executable("MTV_CHROME", "chromium", "chromium-browser", "google-chrome")
    chromedriver = _executable("MTV_CHROMEDRIVER", "chromedriver")
    if not chrome or not chromedriver:
        pytest.skip("no Chromium and chromedriver (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-proxy-server",
                "--proxy-bypass-list=*", "--hide-scrollbars"):
        options.add_argument(arg)
    options.binary_location = chrome
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A returning user: no first-run template browser over the canvas (the dialogs under test stay on).
    _post_setting(comfy.server.url, "Comfy.TutorialCompleted", True)
    browser = webdriver.Chrome(service=Service(chromedriver), options=options)
    browser.set_script_timeout(RUN_TIMEOUT_S + 60)
    try:
        yield browser
    finally:
        browser.quit()


def _post_setting(url: str, key: str, value: Any) -> None:
    request = urllib.request.Request(f"{url}/settings/{key}", data=json.dumps(value).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30).read()


def _window(driver, size: tuple[int, int]) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False})


def _open_app(driver, url: str) -> None:
    _window(driver, WINDOW)
    driver.get(url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if driver.execute_script("return !!(window.app && window.app.graph && window.app.canvas && window.comfyAPI)"):
            time.sleep(1.0)  # let the extensions finish their setup
            return
        time.sleep(0.5)
    raise AssertionError("the ComfyUI frontend did not start within 120 s")


# One script: the browser-side helpers every call below uses.
HELPERS = """
window.__mtv = {
  boxes() {
    return window.app.graph._nodes.map(n => ({id: n.id, type: n.type, title: n.title,
      box: Array.from(n.getBounding()), mode: n.mode}));
  },
  groups() {
    return window.app.graph._groups.map(g => ({title: g.title, box: Array.from(g._bounding || g.bounding)}));
  },
  dialogs() {
    return Array.from(document.querySelectorAll('.p-dialog')).map(e => e.innerText.slice(0, 600));
  },
  texts() {
    return window.app.graph._nodes.filter(n => n.type === 'PreviewAny').map(n => {
      const w = (n.widgets || []).find(w => w.name === 'preview' && !w.hidden);
      const src = n.getInputNode ? n.getInputNode(0) : null;
      return {id: n.id, source: src ? src.type : null, value: w ? w.value : null,
              dom: w && w.element ? w.element.value : null, connected: !!(w && w.element && w.element.isConnected)};
    });
  },
  view(box, margin, maxScale = 1.2) {
    const c = window.app.canvas, el = c.canvas, r = el.getBoundingClientRect();
    const [l, t, rm, bm] = margin;
    const s = Math.min((r.width - l - rm) / box[2], (r.height - t - bm) / box[3], maxScale);
    c.ds.scale = s;
    c.ds.offset = [l / s - box[0] + ((r.width - l - rm) / s - box[2]) / 2, t / s - box[1]];
    c.setDirty(true, true);
  },
  onScreen(box) {
    const ds = window.app.canvas.ds;
    return [(box[0] + ds.offset[0]) * ds.scale, (box[1] + ds.offset[1]) * ds.scale,
            (box[0] + box[2] + ds.offset[0]) * ds.scale, (box[1] + box[3] + ds.offset[1]) * ds.scale];
  },
};
"""

LOAD_TEMPLATE = """
const [module, name, done] = arguments;
(async () => {
  const api = window.comfyAPI.api.api;
  const json = await fetch(api.apiURL(`/workflow_templates/${module}/${name}.json`)).then(r => r.json());
  await window.app.loadGraphData(json, true, true, name, {openSource: 'template'});
  await new Promise(r => setTimeout(r, 1500));  // dialogs and input previews appear asynchronously
  window.app.canvas.setDirty(true, true);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const note = window.app.graph._nodes.find(n => n.type === 'MarkdownNote');
  const group = window.app.graph._groups[0];
  done({dialogs: window.__mtv.dialogs(), missingModels: !!document.querySelector('.comfy-missing-models'),
        note: note ? window.__mtv.onScreen(Array.from(note.getBounding())) : null,
        group: group ? window.__mtv.onScreen(Array.from(group._bounding || group.bounding)) : null,
        window: [window.innerWidth, window.innerHeight], boxes: window.__mtv.boxes(), groups: window.__mtv.groups()});
})().catch(e => done({error: String(e && e.stack || e)}));
"""

RUN = """
const [fast, fastCore, standIns, margin, done] = arguments;
(async () => {
  const api = window.comfyAPI.api.api;
  for (const n of window.app.graph._nodes) {
    if (!String(n.type).startsWith('MTV')) continue;
    for (const w of n.widgets || []) if (w.name in fast) w.value = Math.max(fast[w.name], w.options?.min ?? 0);
  }
  // As the integration runs: native loaders that know only released sizes become their test stand-ins, and the
  // native sampler and video size are lowered, in the prompt the frontend sends (the graph on screen is unchanged).
  if (!api.__mtvWrapped) {
    const send = api.queuePrompt.bind(api);
    api.queuePrompt = (number, data, options) => {
      for (const node of Object.values(data.output)) {
        if (node.class_type in standIns) node.class_type = standIns[node.class_type];
        for (const [k, v] of Object.entries(fastCore[node.class_type] || {}))
          if (k in node.inputs && !Array.isArray(node.inputs[k])) node.inputs[k] = v;
      }
      return send(number, data, options);
    };
    api.__mtvWrapped = true;
  }
  const finished = new Promise(resolve => {
    api.addEventListener('execution_success', () => resolve('success'));
    api.addEventListener('execution_error', e => resolve('error: ' + JSON.stringify(e.detail).slice(0, 3000)));
    api.addEventListener('execution_interrupted', () => resolve('interrupted'));
  });
  const started = performance.now();
  await window.app.queuePrompt(0, 1);
  const status = await finished;
  const seconds = (performance.now() - started) / 1000;
  // A node loads its outputs' pictures when it is drawn: show the whole graph (as a user scrolling over it
  // would), wait for every picture and video preview to load and the nodes to take their new size, then
  // go back to the opening view.
  const c = window.app.canvas, saved = [Array.from(c.ds.offset), c.ds.scale];
  const all = window.app.graph._nodes.map(n => n.getBounding());
  const x0 = Math.min(...all.map(b => b[0])), y0 = Math.min(...all.map(b => b[1]));
  window.__mtv.view([x0, y0, Math.max(...all.map(b => b[0] + b[2])) - x0, Math.max(...all.map(b => b[1] + b[3])) - y0],
                    margin);
  const deadline = performance.now() + 30000;
  const media = () => window.app.graph._nodes.filter(n => ['PreviewImage', 'SaveVideo'].includes(n.type));
  while (performance.now() < deadline && !media().every(n => (n.imgs && n.imgs.length) || n.videoContainer))
    await new Promise(r => setTimeout(r, 250));
  for (let i = 0; i < 8; i++) {
    window.app.canvas.setDirty(true, true);
    await new Promise(r => setTimeout(r, 250));
  }
  c.ds.offset = saved[0];
  c.ds.scale = saved[1];
  c.setDirty(true, true);
  await new Promise(r => setTimeout(r, 500));
  done({status, seconds, media: media().map(n => [n.id, !!(n.imgs && n.imgs.length), !!n.videoContainer]),
        boxes: window.__mtv.boxes(), groups: window.__mtv.groups(), texts: window.__mtv.texts()});
})().catch(e => done({error: String(e && e.stack || e)}));
"""


def _xywh_to_box(b: list[float]) -> tuple[float, float, float, float]:
    return b[0], b[1], b[0] + b[2], b[1] + b[3]


def _overlaps(boxes: list[dict[str, Any]]) -> list[str]:
    found = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if overlap(_xywh_to_box(a["box"]), _xywh_to_box(b["box"])):
                found.append(f"{a['id']} {a['type']} {[round(v) for v in a['box']]} overlaps "
                             f"{b['id']} {b['type']} {[round(v) for v in b['box']]}")
    return found


def _membership(boxes: list[dict[str, Any]], groups: list[dict[str, Any]]) -> dict[int, str]:
    """Node id -> title of the group whose area holds the node's top-left corner."""
    members = {}
    for node in boxes:
        x, y = node["box"][:2]
        for group in groups:
            gx, gy, gw, gh = group["box"]
            if gx <= x <= gx + gw and gy <= y <= gy + gh:
                members[node["id"]] = group["title"]
    return members


def _outside_groups(boxes: list[dict[str, Any]], groups: list[dict[str, Any]], members: dict[int, str]) -> list[str]:
    problems = []
    by_title = {g["title"]: g for g in groups}
    for node in boxes:
        group = by_title.get(members.get(node["id"], ""))
        if group is None:
            continue
        x0, y0, x1, y1 = _xywh_to_box(node["box"])
        gx0, gy0, gx1, gy1 = _xywh_to_box(group["box"])
        if not (gx0 <= x0 and x1 <= gx1 and gy0 <= y0 and y1 <= gy1):
            problems.append(f"{node['id']} {node['type']} {[round(v) for v in node['box']]} sticks out of "
                            f"{group['title']!r} {[round(v) for v in group['box']]}")
    return problems


def _shot(driver, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    extra = os.environ.get("MTV_BROWSER_SHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_template_opens_runs_and_shows_its_results(comfy, driver, path, tmp_path):
    _open_app(driver, comfy.server.url)
    driver.execute_script(HELPERS)
    opened = driver.execute_async_script(LOAD_TEMPLATE, PACK_FOLDER, path.stem)
    assert "error" not in opened, opened.get("error")
    _shot(driver, tmp_path, f"{path.stem}_1_opened")

    # 1. Opened like the template browser does, with every model installed: no dialog about missing things.
    assert not opened["missingModels"], f"Missing Models dialog: {opened['dialogs']}"
    assert not [d for d in opened["dialogs"] if "missing" in d.lower()], opened["dialogs"]
    # The view opens on the note and the first group, clear of the side bar and the menus.
    width, height = opened["window"]
    left, top, right, bottom = CANVAS_MARGINS[0], CANVAS_MARGINS[1], width - CANVAS_MARGINS[2], height - CANVAS_MARGINS[3]
    for what in ("note", "group"):
        x0, y0, x1, y1 = opened[what]
        assert left <= x0 and x1 <= right and top <= y0 and y1 <= bottom, (what, opened[what], opened["window"])
    # Loaded sizes (nodes grow to fit their widgets and input previews) still leave them apart.
    assert not _overlaps(opened["boxes"]), _overlaps(opened["boxes"])
    members = _membership(opened["boxes"], opened["groups"])

    # 2. Run it (the integration runs' lowered steps and sizes) and wait for its previews.
    ran = driver.execute_async_script(RUN, FAST_INPUTS, FAST_CORE_INPUTS, STAND_INS, list(CANVAS_MARGINS))
    assert "error" not in ran, ran.get("error")
    comfy.timings[f"browser_run_{path.stem}_s"] = round(ran["seconds"], 1)
    assert ran["status"] == "success", f"{ran['status']}\n{comfy.server.log_tail(3000)}"
    assert all(has_img or has_video for _, has_img, has_video in ran["media"]), f"previews not shown: {ran['media']}"
    assert not _overlaps(ran["boxes"]), "after the run:\n" + "\n".join(_overlaps(ran["boxes"]))
    assert not _outside_groups(ran["boxes"], ran["groups"], members), _outside_groups(ran["boxes"], ran["groups"], members)

    # 3. Text results are on the canvas: each Preview as Text node holds its text in the page.
    workflow = load_workflow(path)
    assert len(ran["texts"]) == sum(n["type"] == "PreviewAny" for n in workflow["nodes"])
    for text in ran["texts"]:
        assert text["value"] and text["dom"] == text["value"] and text["connected"], text
        assert EXPECTED_TEXT.get(text["source"], "") in text["value"], text
    comfy.timings[f"browser_texts_{path.stem}"] = {t["source"]: t["value"][:120] for t in ran["texts"]}

    # 4. Screenshots: the opening view after the run, the whole graph, each group.
    _shot(driver, tmp_path, f"{path.stem}_2_after_run")
    _window(driver, SHOT_WINDOW)
    boxes = [_xywh_to_box(b["box"]) for b in ran["boxes"]] + [_xywh_to_box(g["box"]) for g in ran["groups"]]
    whole = [min(b[0] for b in boxes), min(b[1] for b in boxes)]
    whole += [max(b[2] for b in boxes) - whole[0], max(b[3] for b in boxes) - whole[1]]
    driver.execute_script("window.__mtv.view(arguments[0], arguments[1])", whole, list(CANVAS_MARGINS))
    time.sleep(1.0)
    _shot(driver, tmp_path, f"{path.stem}_3_whole_graph")
    for i, group in enumerate(ran["groups"], 1):
        driver.execute_script("window.__mtv.view(arguments[0], arguments[1])", group["box"], list(CANVAS_MARGINS))
        time.sleep(1.0)
        _shot(driver, tmp_path, f"{path.stem}_4_group{i}")
    errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE" and PACK_FOLDER in
              e.get("message", "")]
    assert not errors, errors
