"""Image payloads for load tests: real photographs (scikit-image's samples) and embedded-dataset scenes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

# name -> (width, height); every source image is stretched to these sizes.
SIZES = {"small": (160, 120), "vga": (640, 480), "1080p": (1920, 1080)}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    """Encode an RGB image as JPEG."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def scene_image(size: int, seed: int) -> Image.Image:
    """One procedural scene from the embedded dataset generator."""
    from training.datasets.scenes import SceneConfig, render_scene

    scene = render_scene(np.random.default_rng(seed), SceneConfig(image_size=size))
    return Image.fromarray(scene.image)


def build_payloads(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write JPEG payloads (every photo and one scene at every size) and an index; return name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = {name: Image.fromarray(getattr(skimage.data, name)()) for name in PHOTOS}
    sources["scene"] = scene_image(512, seed)
    paths = {}
    for source, image in sources.items():
        for size_name, size in SIZES.items():
            path = out / f"{source}-{size_name}.jpg"
            if not path.exists():
                path.write_bytes(jpeg_bytes(image.resize(size, Image.BILINEAR)))
            paths[f"{source}-{size_name}"] = path
    (out / "index.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return paths


def load_payloads(out_dir: str | Path) -> dict[str, bytes]:
    """Read the payloads written by ``build_payloads`` (building them first if missing)."""
    index = Path(out_dir) / "index.json"
    paths = json.loads(index.read_text()) if index.exists() else build_payloads(out_dir)
    return {name: Path(p).read_bytes() for name, p in paths.items()}
