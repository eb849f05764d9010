"""Maps drawn in image space on tiled and non-square layouts: the geometry check you can look at.

For a tiny random model of each family (built offline, as the tests build them) and one 80x48 image
with a red block on its top-left quadrant and a blue bar on its right quarter, the map shown is the layout's own
projection of the two objects' masks (tokens at least half covered: block 1.0, bar 0.5; others 0): drawn back over the image
through the same `draw_map` the report uses, the colours must sit on the objects whatever the
family's tiles, crops or merged grids. Writes docs/layout_overlays.png.

    python docs/diagnostics/layout_overlays.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from fastrm_bench.embedded.tiny_random import build_tiny_random  # noqa: E402
from fastrm_bench.models.adapter import HFVisionLanguageAdapter  # noqa: E402
from fastrm_bench.report import draw_map  # noqa: E402

FAMILIES = ("llava", "llava_next", "qwen2_vl", "idefics3", "gemma3")
OUT = Path(__file__).resolve().parent.parent / "layout_overlays.png"

pixels = np.full((48, 80, 3), 110, dtype=np.uint8)
square = np.zeros((48, 80), dtype=bool)
square[0:24, 0:40] = True  # the top-left quadrant
bar = np.zeros((48, 80), dtype=bool)
bar[:, 60:80] = True  # the right quarter
pixels[square] = (220, 30, 30)
pixels[bar] = (30, 60, 220)
image = Image.fromarray(pixels)  # what the model sees
shown = np.full_like(pixels, 235)  # what the figure shows under the map: the objects' outlines only
for mask in (square, bar):
    edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
    shown[edge] = 0

fig, axes = plt.subplots(1, len(FAMILIES), figsize=(3.2 * len(FAMILIES), 2.6), constrained_layout=True)
with tempfile.TemporaryDirectory() as tmp:
    for ax, family in zip(axes, FAMILIES):
        adapter = HFVisionLanguageAdapter.from_pretrained(build_tiny_random(family, Path(tmp) / family), device="cpu",
                                                          check_eager=False)
        layout = adapter.build_inputs([image], ["What color is the square?"]).layout
        values = 1.0 * layout.mask_to_tokens(square) + 0.5 * layout.mask_to_tokens(bar)
        overlay = draw_map(ax, shown, layout, values, vmin=0, vmax=1, alpha=0.6)
        grids = " + ".join(f"{r}x{c}" for r, c in (g.grid for g in layout.groups))
        ax.set_title(f"{family}\n{len(layout.groups)} group(s): {grids}", fontsize=8)
        ax.set_xlim(-0.5, 79.5)
        ax.set_xticks([])
        ax.set_yticks([])
fig.colorbar(overlay, ax=axes, shrink=0.8, label="map value (block 1, bar 0.5)")
fig.suptitle("Object masks -> image tokens -> image space, per family (80x48 image; objects outlined; "
             "uncoloured: pixels no token sees)", fontsize=9)
fig.savefig(OUT, dpi=130)
print(f"wrote {OUT}")
