"""server.device_images on device "cpu": the Pillow path's input within measured bounds, the same ImageNet labels,
batching, which uploads may take the device path, and corrupt bytes."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as samples

from common.preprocess import InputNormaliser
from models.factory import build_model
from models.presets import get_preset
from models.pretrained import load_pretrained
from server.device_images import DeviceImageRejectedError, DevicePreparer, default_device, device_decodable
from server.images import ImageRejectedError, open_untrusted, prepare_image
from tests.server.conftest import IMAGENET

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

PRESET = get_preset(IMAGENET)
SIZE = (PRESET.image_size, PRESET.image_size)  # 224
SMALL = (128, 128)  # where Pillow's draft decodes the 512 px astronaut at 1/4 scale
MAX_PIXELS = 10_000_000
NORMALISER = InputNormaliser(PRESET.mean, PRESET.std)
ONE_LEVEL = 1 / (255 * min(PRESET.std))  # one uint8 level in normalised units, at the smallest std: 0.0175

# Largest per-image differences to prepare_image (normalised units), measured over the photos below at 224 and
# 128 px: without a draft both sides decode the same pixels and differ only in resize rounding, by at most one
# level (mean 0.0031); with Pillow's draft (a reduced-scale DCT decode) against its block-mean imitation, mean
# 0.0087 (0.50 levels) and max 0.244 (14 levels, at the astronaut's sharp edges).
BOUNDS = {False: (0.0035, ONE_LEVEL + 1e-6), True: (0.010, 0.27)}  # draft -> (mean, max) abs difference
# Largest softmax difference on the same photos (ImageNet MobileNetV2, 224 px): measured 0.0124 without the
# draft (the enlarged 100x80 coffee, top score 0.41), 0.0315 with it (astronaut, top score 0.37).
SCORE_BOUNDS = {False: 0.014, True: 0.035}


def jpeg(image: Image.Image, **options) -> bytes:
    """``image`` as JPEG bytes at quality 90."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Real photos as JPEGs: as shipped, stretched to 640x480 and to odd or small sizes, progressive, greyscale."""
    originals = {name: Image.fromarray(getattr(samples, name)()) for name in ("chelsea", "astronaut", "coffee")}
    encoded = {}
    for name, image in originals.items():
        encoded[name] = jpeg(image)
        encoded[f"{name}-640"] = jpeg(image.resize((640, 480), Image.BICUBIC))
    encoded["astronaut-1003x999"] = jpeg(originals["astronaut"].resize((1003, 999), Image.BICUBIC))  # odd, 1/4 draft
    encoded["coffee-100x80"] = jpeg(originals["coffee"].resize((100, 80), Image.BICUBIC))  # enlarged
    encoded["chelsea-progressive"] = jpeg(originals["chelsea"], progressive=True)
    encoded["chelsea-grey"] = jpeg(originals["chelsea"].convert("L"))
    encoded["coffee-grey-640"] = jpeg(originals["coffee"].convert("L").resize((640, 480), Image.BICUBIC))
    return encoded


@pytest.fixture(scope="module")
def imagenet_model() -> torch.nn.Module:
    """torchvision's ImageNet MobileNetV2 from the packaged weights (nothing is downloaded)."""
    model = build_model(PRESET).eval()
    load_pretrained(model, PRESET.pretrained)
    return model


def pillow_batch(jpegs: list[bytes], size: tuple[int, int], draft: bool) -> torch.Tensor:
    """What the server feeds the model today: prepare_image per upload, stacked."""
    return torch.from_numpy(np.stack([prepare_image(data, size, NORMALISER, MAX_PIXELS, draft=draft).tensor
                                      for data in jpegs]))


def device_batch(jpegs: list[bytes], size: tuple[int, int], draft: bool) -> torch.Tensor:
    """The device path's input for the same uploads, on the CPU."""
    return DevicePreparer(size, PRESET.mean, PRESET.std, "cpu", draft=draft).prepare(jpegs)


@pytest.mark.parametrize("size", [SIZE, SMALL])
@pytest.mark.parametrize("draft", [True, False])
def test_input_matches_the_pillow_path(photos: dict[str, bytes], size: tuple[int, int], draft: bool) -> None:
    names = list(photos)
    device = device_batch([photos[name] for name in names], size, draft)
    pillow = pillow_batch([photos[name] for name in names], size, draft)
    assert device.shape == pillow.shape == (len(names), 3, *size) and device.dtype == torch.float32
    assert device.is_contiguous() and device.device.type == "cpu"
    mean_bound, max_bound = BOUNDS[draft]
    for name, ours, theirs in zip(names, device, pillow, strict=True):
        difference = (ours - theirs).abs()
        assert difference.mean() <= mean_bound and difference.max() <= max_bound, (name, difference.mean(),
                                                                                    difference.max())


@pytest.mark.parametrize("size", [SIZE, SMALL])
def test_imitating_the_draft_is_closer_than_resizing_from_full_size(photos: dict[str, bytes],
                                                                    size: tuple[int, int]) -> None:
    """Against the server's drafted input, a plain resize of the full decode is further off: measured 1.47 to 6.2
    times in mean and 1.4 to 11 times in max over the drafted photos."""
    preparer = DevicePreparer(size, PRESET.mean, PRESET.std, "cpu")
    drafted = [name for name, data in photos.items()
               if preparer.draft_scale(*reversed(Image.open(io.BytesIO(data)).size)) > 1]
    assert len(drafted) >= 4
    jpegs = [photos[name] for name in drafted]
    pillow = pillow_batch(jpegs, size, draft=True)
    imitated = (device_batch(jpegs, size, draft=True) - pillow).abs()
    direct = (device_batch(jpegs, size, draft=False) - pillow).abs()
    for name, ours, plain in zip(drafted, imitated, direct, strict=True):
        assert ours.mean() * 1.4 < plain.mean() and ours.max() < plain.max(), (name, ours.mean(), plain.mean())


@pytest.mark.parametrize("draft", [True, False])
def test_imagenet_labels_agree(photos: dict[str, bytes], imagenet_model: torch.nn.Module, draft: bool) -> None:
    names = [name for name in photos if name != "chelsea-progressive"]  # the same pixels as "chelsea"
    with torch.no_grad():
        ours = imagenet_model(device_batch([photos[name] for name in names], SIZE, draft)).softmax(1)
        theirs = imagenet_model(pillow_batch([photos[name] for name in names], SIZE, draft)).softmax(1)
    classes = PRESET.class_names
    for name, mine, reference in zip(names, ours, theirs, strict=True):
        top5, ours_top5 = ([classes[i] for i in scores.topk(5).indices] for scores in (reference, mine))
        assert ours_top5[0] == top5[0] and set(ours_top5) == set(top5), name  # lower places may swap
    assert (ours - theirs).abs().max() <= SCORE_BOUNDS[draft]
    top1 = dict(zip(names, (classes[i] for i in theirs.argmax(1)), strict=True))
    assert top1["chelsea"] == top1["chelsea-grey"] == "Egyptian cat" and top1["coffee-640"] == "espresso"


@pytest.mark.parametrize("draft", [True, False])
def test_a_batch_equals_its_images_prepared_one_by_one(photos: dict[str, bytes], draft: bool) -> None:
    # Three decoded sizes, two images sharing one of them; grey among them.
    jpegs = [photos[name] for name in ("chelsea-640", "astronaut", "coffee-grey-640", "chelsea-grey", "coffee")]
    preparer = DevicePreparer(SIZE, PRESET.mean, PRESET.std, "cpu", draft=draft)
    batch = preparer.prepare(jpegs)
    singles = torch.cat([preparer.prepare([data]) for data in jpegs])
    torch.testing.assert_close(batch, singles, rtol=0, atol=1e-6)
    assert preparer.prepare([]).shape == (0, 3, *SIZE)


def header(data: bytes) -> Image.Image:
    """The image as the server opens an upload: header only."""
    return open_untrusted(data, MAX_PIXELS, "image")


def test_only_upright_rgb_and_grey_jpegs_take_the_device_path() -> None:
    rgb = Image.fromarray(samples.chelsea())
    assert device_decodable(header(jpeg(rgb)))
    assert device_decodable(header(jpeg(rgb, subsampling=0)))  # 4:4:4
    assert device_decodable(header(jpeg(rgb.convert("L"))))
    png = io.BytesIO()
    rgb.save(png, "PNG")
    assert not device_decodable(header(png.getvalue()))
    cmyk = header(jpeg(rgb.convert("CMYK")))
    assert cmyk.mode == "CMYK" and not device_decodable(cmyk)
    adobe_rgb = header(jpeg(rgb, keep_rgb=True))  # RGB components (Adobe transform 0), not YCbCr
    assert adobe_rgb.mode == "RGB" and not device_decodable(adobe_rgb)
    for orientation, upright in ((1, True), (6, False), (3, False)):
        exif = Image.Exif()
        exif[0x0112] = orientation
        assert device_decodable(header(jpeg(rgb, exif=exif))) is upright, orientation


def test_corrupt_bytes_are_rejected_with_the_index_of_the_image(photos: dict[str, bytes]) -> None:
    preparer = DevicePreparer(SIZE, PRESET.mean, PRESET.std, "cpu")
    truncated = photos["coffee"][: len(photos["coffee"]) // 2]
    with pytest.raises(ImageRejectedError) as pillow:
        prepare_image(truncated, SIZE, NORMALISER, MAX_PIXELS)
    for bad, code in ((truncated, "invalid_image"), (b"\xff\xd8\xff\xe0 not a jpeg", "invalid_image"),
                      (b"", "empty_body")):
        with pytest.raises(DeviceImageRejectedError) as caught:
            preparer.prepare([photos["chelsea"], bad, photos["astronaut"]])
        assert isinstance(caught.value, ImageRejectedError) and caught.value.index == 1
        assert (caught.value.status, caught.value.code) == (400, code)
        assert ".cpp" not in caught.value.detail
    assert pillow.value.status == 400  # the Pillow path refuses the same truncated bytes


def test_default_device_is_cuda_only_when_torch_sees_one() -> None:
    assert default_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert DevicePreparer(SIZE, PRESET.mean, PRESET.std, default_device()).device.type == default_device()
    with pytest.raises(ValueError, match="std"):
        DevicePreparer(SIZE, PRESET.mean, (0.2, 0.0, 0.2), "cpu")


def test_throughput_on_the_cpu_is_reported(photos: dict[str, bytes]) -> None:
    """Prints images/s for 32 640x480 JPEGs (run with -s to see it); nothing is asserted about speed."""
    jpegs = [photos[("chelsea-640", "astronaut-640", "coffee-640")[i % 3]] for i in range(32)]
    preparer = DevicePreparer(SIZE, PRESET.mean, PRESET.std, "cpu")
    timings = {"device path on the cpu": lambda: preparer.prepare(jpegs),
               "prepare_image (Pillow)": lambda: [prepare_image(data, SIZE, NORMALISER, MAX_PIXELS) for data in jpegs]}
    for label, run in timings.items():
        best = min(_seconds(run) for _ in range(3))
        print(f"{label}: {len(jpegs) / best:.0f} images/s ({len(jpegs)} 640x480 JPEGs to {SIZE[0]} px, draft)")


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start
