"""The FastRM page's (docs/fastrm.md) "FastRM in three lines" runs as written, from a folder outside the
repository, and ends with a picture."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "fastrm.md"

#: run after the page's code, in the same process: what it computed
CHECKS = """
import json as _json
from fastrm_bench.world.scenes import generate_scene, scene_seed
_scene = generate_scene(scene_seed("test", examples.SCENES["circle-and-triangles.png"][0]))
_circle = next(o for o in _scene.objects if o.shape == "circle")
_on = inputs.layout.mask_to_tokens(_circle.mask, 0.0)
_m = rm[0].detach().numpy()
print(_json.dumps({"answer": out.text, "shape": list(rm.shape), "heat": list(heat.shape), "on": float(_m[_on].mean()),
                   "off": float(_m[~_on].mean()), "peak_on_circle": bool(_on[_m.argmax()]), "colour": _circle.color}))
"""


def readme_snippet() -> str:
    section = GUIDE.read_text().split("<!-- fastrm-three-lines -->", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_fastrm_in_three_lines_runs_as_written_from_any_folder(tmp_path):
    code = readme_snippet()
    assert "fastrm_bench/checkpoints" not in code and "scene.jpg" not in code  # no path relative to the repository
    env = {**os.environ, "PYTHONPATH": "", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", code + CHECKS], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["answer"] == result["colour"] == "blue"  # the shipped model answers the shipped example right
    assert result["shape"] == [1, 64] and result["heat"] == [64, 64]
    assert result["peak_on_circle"] and result["on"] > 10 * result["off"]  # the map of "blue" is on the circle
    picture = Image.open(tmp_path / "fastrm_map.png")
    assert picture.format == "PNG" and picture.width >= 400 and len(set(picture.convert("L").getdata())) > 50
