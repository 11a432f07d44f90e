"""The 17B side-model modules import without transformers or diffusers (node packs must import fast)."""

import subprocess
import sys

from conftest import ROOT


def test_wan_modules_import_lazily():
    code = (
        "import sys\n"
        "import mtv_core.wan.text_encoder, mtv_core.wan.image_encoder, mtv_core.wan.vae\n"
        "import mtv_core.wan.conditioning, mtv_core.wan.buckets, mtv_core.wan.scheduler, mtv_core.wan.keymap\n"
        "heavy = sorted(m for m in ('transformers', 'diffusers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
