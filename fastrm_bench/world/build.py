"""The default data build of the embedded world: train / val / test in the official layouts.

Layout under the data root (the task specs point at these paths)::

    coco/annotations/instances_{split}2014.json
    coco/annotations/captions_{split}2014.json  (only with ``captions=True``: the describe task's)
    coco/images/{split}2014/COCO_{split}2014_{image_id:012d}.jpg
    vqav2/v2_OpenEnded_mscoco_{split}2014_questions.json
    vqav2/v2_mscoco_{split}2014_annotations.json
    gqa/{split}_balanced_questions.json      gqa/images/{imageId}.jpg
    pope/coco_pope_{random,popular,adversarial}.json   (built from the val instances)
    ..._counterfactual2014...  the val scenes with one object removed each (`fastrm_bench.world.counterfactual`)
    manifest.json

The build is deterministic, takes seconds, and is cached in a user folder
(``$FASTRM_BENCH_CACHE`` or ``~/.cache/fastrm-bench``); it is written to a temporary folder
and renamed, so an interrupted build never leaves a half-written data root behind.

Two options make variants of the world, each recorded in the manifest and absent from the default
build (which stays byte-identical): ``image_sizes`` renders every scene at its own seeded size and
aspect ratio (data source ``shapes-variable``), ``captions`` adds the describe captions.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fastrm_bench.cache import cache_root
from fastrm_bench.tasks.pope_builder import build_pope_files
from fastrm_bench.world import formats
from fastrm_bench.world.counterfactual import SPLIT as COUNTERFACTUAL_SPLIT
from fastrm_bench.world.counterfactual import write_counterfactual_split
from fastrm_bench.world.questions import questions_for_scene
from fastrm_bench.world.scenes import ImageSizes, SceneConfig, generate_scene, jpeg_bytes, scene_seed, scene_size

log = logging.getLogger(__name__)

WORLD_VERSION = "shapes-v1"
SPLIT_IMAGE_ID_BASE = {"train": 100_000, "val": 200_000, "test": 300_000}
VQA_TYPES, GQA_TYPES = formats.VQA_TYPES, formats.GQA_TYPES


@dataclass(frozen=True)
class WorldSizes:
    train: int = 2000
    val: int = 1000
    test: int = 1000
    pope_images: int = 500


def default_data_root(seed: int = 0, variant: str = "") -> Path:
    """The cached data root of the world of ``seed``; a ``variant`` (e.g. "describe") gets a folder of its own."""
    return cache_root() / "data" / (f"{WORLD_VERSION}-seed{seed}-{variant}" if variant else f"{WORLD_VERSION}-seed{seed}")


@dataclass(frozen=True)
class WorldVariant:
    """Which build options a world takes beyond the default one (each gets a cache folder of its own).

    The embedded models are trained on a variant (`variant_of_recipe`); their runs use it by default.
    """

    image_sizes: ImageSizes | None = None
    captions: bool = False

    @property
    def name(self) -> str:
        """"" for the default world, else e.g. "variable", "describe" or "variable-describe"."""
        return "-".join(name for name, on in (("variable", self.image_sizes is not None), ("describe", self.captions)) if on)

    def ensure(self, seed: int = 0, sizes: WorldSizes = WorldSizes()) -> Path:
        """The cached data root of this variant for ``seed``, built on first use."""
        return ensure_world(default_data_root(seed, self.name), seed, sizes, image_sizes=self.image_sizes,
                            captions=self.captions)


def variant_of_recipe(recipe: dict) -> WorldVariant:
    """The world a `train-vlm` recipe (a model's ``training.json`` "config") trains on.

    A recipe with ``image_sizes`` draws variable-size scenes and asks describe questions (the Qwen
    recipe); one without (the LLaVA recipe) uses the default world.
    """
    if recipe.get("image_sizes") is None:
        return WorldVariant()
    return WorldVariant(ImageSizes(**recipe["image_sizes"]), captions="describe" in recipe.get("type_weights", {}))


coco_file_name = formats.coco_file_name


def _write_split(root: Path, split: str, n: int, seed: int, scene_config: SceneConfig = SceneConfig(),
                 image_sizes: ImageSizes | None = None, captions: bool = False) -> None:
    rng = np.random.default_rng([seed, list(SPLIT_IMAGE_ID_BASE).index(split)])
    image_dir = root / "coco" / "images" / f"{split}2014"
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "gqa" / "images").mkdir(parents=True, exist_ok=True)
    coco_images, vqa_questions, vqa_annotations, gqa = [], [], [], {}
    for i in tqdm(range(n), desc=f"world {split}", leave=False):
        image_id = SPLIT_IMAGE_ID_BASE[split] + i
        seed_i = scene_seed(split, i, seed)
        scene = generate_scene(seed_i, scene_config, scene_size(seed_i, image_sizes) if image_sizes else None)
        data = jpeg_bytes(scene.image)
        file_name = coco_file_name(split, image_id)
        (image_dir / file_name).write_bytes(data)
        gqa_key = f"s{image_id}"
        (root / "gqa" / "images" / f"{gqa_key}.jpg").write_bytes(data)
        coco_images.append((image_id, file_name, scene))
        qs, anns = formats.vqa_records(image_id, questions_for_scene(scene, rng, VQA_TYPES), image_id * 100)
        vqa_questions += qs
        vqa_annotations += anns
        for j, q in enumerate(questions_for_scene(scene, rng, GQA_TYPES)):
            gqa[str(image_id * 100 + 50 + j)] = formats.gqa_record(gqa_key, image_id, q)
    common = {"data_subtype": f"{split}2014", "license": {}, "info": {"description": WORLD_VERSION}}
    formats.write_json(root / "coco" / "annotations" / f"instances_{split}2014.json", formats.coco_instances(coco_images))
    formats.write_json(
        root / "vqav2" / f"v2_OpenEnded_mscoco_{split}2014_questions.json",
        {**common, "task_type": "Open-Ended", "data_type": "mscoco", "questions": vqa_questions},
    )
    formats.write_json(root / "vqav2" / f"v2_mscoco_{split}2014_annotations.json",
                       {**common, "data_type": "mscoco", "annotations": vqa_annotations})
    formats.write_json(root / "gqa" / f"{split}_balanced_questions.json", gqa)
    if captions:
        formats.write_json(root / "coco" / "annotations" / f"captions_{split}2014.json", formats.coco_captions(coco_images))


def build_world(root: Path, seed: int = 0, sizes: WorldSizes = WorldSizes(), scene_config: SceneConfig = SceneConfig(),
                image_sizes: ImageSizes | None = None, captions: bool = False) -> Path:
    """Write the whole embedded world under ``root`` (atomically: temp folder, then rename).

    A non-default ``scene_config`` (more, smaller objects, more noise) makes a *shifted* world, one the
    shipped model was not trained on: its data source is "shapes-shifted", so runs on it stay apart.
    ``image_sizes`` draws each scene's height and width (`scene_size`) instead of the fixed square; its data
    source gains "-variable" ("shapes-variable"), the same seeds give the same objects at other scales.
    ``captions`` adds ``coco/annotations/captions_{split}2014.json`` (the describe task's files).
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root.parent))
    try:
        for split in ("train", "val", "test"):
            _write_split(tmp, split, getattr(sizes, split), seed, scene_config, image_sizes, captions)
        build_pope_files(tmp / "coco" / "annotations" / "instances_val2014.json", tmp / "pope", seed=seed,
                         num_images=sizes.pope_images)
        write_counterfactual_split(tmp, sizes.val, seed, scene_config, image_sizes, captions)
        manifest = {"world": WORLD_VERSION, "seed": seed, "sizes": asdict(sizes), "data_source": "shapes",
                    "counterfactual": COUNTERFACTUAL_SPLIT}
        if scene_config != SceneConfig():
            manifest.update(data_source="shapes-shifted", scenes=asdict(scene_config))
        if image_sizes is not None:
            manifest.update(data_source=f"{manifest['data_source']}-variable", image_sizes=asdict(image_sizes))
        if captions:
            manifest.update(captions=True)
        formats.write_json(tmp / "manifest.json", manifest)
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return root


def ensure_world(root: Path | None = None, seed: int = 0, sizes: WorldSizes = WorldSizes(),
                 scene_config: SceneConfig = SceneConfig(), image_sizes: ImageSizes | None = None,
                 captions: bool = False) -> Path:
    """The data root, built on first use (a fresh install works offline), or rebuilt if its manifest
    records another world version, size, scene geometry, image sizes or captions."""
    root = Path(root) if root else default_data_root(seed)
    manifest = root / "manifest.json"
    if manifest.exists():
        found = json.loads(manifest.read_text())
        scenes = asdict(scene_config) if scene_config != SceneConfig() else None
        variable = asdict(image_sizes) if image_sizes is not None else None
        if (found.get("world"), found.get("seed"), found.get("sizes"), found.get("scenes"), found.get("image_sizes"),
                found.get("captions", False), found.get("counterfactual")) == (WORLD_VERSION, seed, asdict(sizes), scenes,
                                                                            variable, captions, COUNTERFACTUAL_SPLIT):
            return root
    log.info("building the embedded world in %s (first use; a few seconds)", root)
    return build_world(root, seed, sizes, scene_config, image_sizes, captions)


#: the scenes of the shifted world: more, smaller objects and more noise than the shipped models learnt
SHIFTED_SCENES = SceneConfig(min_objects=4, max_objects=7, min_size=10, max_size=16, noise_std=36.0)
#: the shifted world is for evaluation only: 400 val scenes (and their counterfactuals), few of the rest
SHIFTED_SIZES = WorldSizes(train=10, val=400, test=10, pope_images=50)


def shifted_world(seed: int = 0, captions: bool = False) -> Path:
    """The cached shifted world of ``seed`` (`SHIFTED_SCENES`), with the describe captions or not, built on first use."""
    name = f"{WORLD_VERSION}-seed{seed}-shifted" + ("-describe" if captions else "")
    return ensure_world(cache_root() / "data" / name, seed, SHIFTED_SIZES, SHIFTED_SCENES, captions=captions)


def rebuild_named_world(name: str) -> Path | None:
    """The embedded world whose cache folder is called ``name``, built in this machine's cache: the default world of
    a seed, or its shifted one (with captions or not). None for any other name (a variant a model's recipe defines,
    `variant_of_recipe`, or files that are not the embedded world). A run recorded on another machine finds its
    images again this way: the world is deterministic."""
    import re

    found = re.fullmatch(rf"{re.escape(WORLD_VERSION)}-seed(\d+)(-shifted(-describe)?)?", name)
    if found is None:
        return None
    seed = int(found.group(1))
    if found.group(2):
        return shifted_world(seed, captions=bool(found.group(3)))
    return ensure_world(seed=seed)
