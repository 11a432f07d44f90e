"""Write the template-browser thumbnail of every shipped workflow: ``workflows/<name>.jpg``.

ComfyUI's template browser shows ``<name>.jpg`` beside ``<name>.json``. The picture is a strip of
skeleton frames of a demo motion (drawn with the pack's own renderer) over the workflow's node graph,
with the workflow's name. Run after adding or renaming a workflow:

    python scripts/make_thumbnails.py            # all workflows without a thumbnail
    python scripts/make_thumbnails.py --force    # redraw all
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import conftest  # noqa: E402,F401  (imports the pack as ``mtv_pack``)

WIDTH, HEIGHT = 512, 384
# Which demo motion each workflow shows (default: dance).
MOTION_FOR = {"mtvcrafter_7b_motion_file": "wave"}


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def _graph(draw, workflow: dict, box: tuple[int, int, int, int]) -> None:
    """The workflow's nodes and links, scaled into ``box`` (x0, y0, x1, y1)."""
    nodes = [n for n in workflow.get("nodes", []) if isinstance(n.get("pos"), list)]
    if not nodes:
        return
    xs = [n["pos"][0] for n in nodes] + [n["pos"][0] + n["size"][0] for n in nodes]
    ys = [n["pos"][1] for n in nodes] + [n["pos"][1] + n["size"][1] for n in nodes]
    x0, y0, x1, y1 = box
    sx = (x1 - x0) / max(max(xs) - min(xs), 1)
    sy = (y1 - y0) / max(max(ys) - min(ys), 1)
    s = min(sx, sy)

    def at(x, y):
        return x0 + (x - min(xs)) * s, y0 + (y - min(ys)) * s

    by_id = {n["id"]: n for n in nodes}
    for link in workflow.get("links", []):
        a, b = by_id.get(link[1]), by_id.get(link[3])
        if a and b:
            ax, ay = at(a["pos"][0] + a["size"][0], a["pos"][1] + 10)
            bx, by = at(b["pos"][0], b["pos"][1] + 10)
            draw.line([ax, ay, bx, by], fill=(120, 170, 230), width=2)
    for n in nodes:
        ax, ay = at(*n["pos"])
        bx, by = at(n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
        ours = str(n.get("type", "")).startswith("MTV")
        draw.rounded_rectangle([ax, ay, bx, by], radius=3, fill=(70, 50, 110) if ours else (55, 55, 60),
                               outline=(190, 160, 255) if ours else (130, 130, 130))


def thumbnail(path: Path) -> Path:
    from PIL import Image, ImageDraw

    from mtv_pack.mtv_core.motion import procedural_motion, render_skeleton
    from mtv_pack.mtv_core.video import to_uint8

    workflow = json.loads(path.read_text())
    seq = procedural_motion(MOTION_FOR.get(path.stem, "dance"), frames=49, fps=20.0)
    picks = [0, 12, 24, 36]
    frames = render_skeleton(seq, width=WIDTH // len(picks), height=220, line_width=3, point_radius=3)
    strip = np.concatenate([frames[i] for i in picks], axis=1)
    canvas = Image.new("RGB", (WIDTH, HEIGHT), (24, 24, 28))
    canvas.paste(Image.fromarray(to_uint8(strip)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    _graph(draw, workflow, (16, 232, WIDTH - 16, HEIGHT - 44))
    title = path.stem.replace("_", " ").replace("mtvcrafter", "MTVCrafter").replace(" 7b", " 7B")
    draw.text((16, HEIGHT - 36), title, fill=(235, 235, 240), font=_font(22))
    out = path.with_suffix(".jpg")
    canvas.save(out, quality=82, optimize=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="redraw existing thumbnails")
    args = parser.parse_args()
    for path in sorted((ROOT / "workflows").glob("*.json")):
        if args.force or not path.with_suffix(".jpg").exists():
            out = thumbnail(path)
            sys.stdout.write(f"{out.relative_to(ROOT)} ({out.stat().st_size // 1024} kB)\n")


if __name__ == "__main__":
    main()
