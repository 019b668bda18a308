"""Procedural 48x48 grayscale faces, one look per emotion, in the FER2013 download layout.

They stand in for the real data wherever it is not available (tests, the offline demo, CI):
a small model learns them in seconds, but they are not trivial, because every face gets its
own pose (shift, rotation, scale), face shape, skin tone, hair, lighting and noise, and
every expression parameter is jittered so that neighbouring emotions overlap a little.

Each emotion is an `Expression`: how the brows sit, how open the eyes are and what the
mouth does. Faces are drawn with PIL at `SUPERSAMPLE` times the final size (so strokes are
antialiased when shrunk), then posed with one affine transform and shrunk to `size`.

Everything is a function of the seed: each image has its own random generator derived from
(seed, split, class, index), so the same call always writes byte-identical JPEGs.

Long on purpose: one `Expression` and one drawing routine per facial feature; split up,
the geometry of a face would be spread over files that always change together.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ferflow.errors import FerflowError
from ferflow.progress import bar

log = logging.getLogger(__name__)

SUPERSAMPLE = 4  # draw at 4x the final size, then shrink: smooth strokes at 48 px
JPEG_QUALITY = 92  # fixed, so the JPEG bytes depend on the pixels only
SPLIT_PREFIXES = {"train": "Training", "test": "PublicTest"}  # file names of the real download
_SPLIT_STREAM = {"train": 0, "test": 1, "preview": 2}  # independent random streams per split


class SynthError(FerflowError, ValueError):
    """A synthetic dataset cannot be drawn as asked; the message names the value."""


@dataclass(frozen=True)
class Expression:
    """One emotion's look, in units of the face height (positive = up / more)."""

    brow_raise: float  # both brows up (+) or down (-)
    brow_tilt: float  # inner ends up (+: sad, fear) or down (-: angry)
    brow_arch: float  # middle of the brow lifted (+: surprise)
    eye_open: float  # eye height relative to a relaxed eye
    mouth_width: float  # relative to the face width
    mouth_curve: float  # corners up (+: smile) or down (-)
    mouth_open: float  # height of the opening
    mouth_skew: float  # one corner raised (disgust)
    round_mouth: bool = False  # an "O" instead of lips (surprise)
    nose_wrinkle: bool = False  # lines on the nose bridge (disgust)
    teeth: bool = False  # a light band inside an open mouth (happy)


EXPRESSIONS: dict[str, Expression] = {
    "angry": Expression(
        brow_raise=-0.035, brow_tilt=-0.07, brow_arch=0.0, eye_open=0.55,
        mouth_width=0.34, mouth_curve=-0.012, mouth_open=0.0, mouth_skew=0.0,
    ),
    "disgust": Expression(
        brow_raise=-0.025, brow_tilt=-0.025, brow_arch=0.0, eye_open=0.5,
        mouth_width=0.38, mouth_curve=-0.02, mouth_open=0.018, mouth_skew=0.07,
        nose_wrinkle=True,
    ),
    "fear": Expression(
        brow_raise=0.045, brow_tilt=0.045, brow_arch=0.0, eye_open=1.45,
        mouth_width=0.48, mouth_curve=-0.02, mouth_open=0.045, mouth_skew=0.0,
    ),
    "happy": Expression(
        brow_raise=0.01, brow_tilt=-0.005, brow_arch=0.012, eye_open=0.7,
        mouth_width=0.56, mouth_curve=0.09, mouth_open=0.05, mouth_skew=0.0, teeth=True,
    ),
    "neutral": Expression(
        brow_raise=0.0, brow_tilt=0.0, brow_arch=0.004, eye_open=1.0,
        mouth_width=0.4, mouth_curve=0.0, mouth_open=0.0, mouth_skew=0.0,
    ),
    "sad": Expression(
        brow_raise=0.01, brow_tilt=0.06, brow_arch=0.0, eye_open=0.75,
        mouth_width=0.38, mouth_curve=-0.06, mouth_open=0.0, mouth_skew=0.0,
    ),
    "surprise": Expression(
        brow_raise=0.075, brow_tilt=0.0, brow_arch=0.035, eye_open=1.6,
        mouth_width=0.2, mouth_curve=0.0, mouth_open=0.17, mouth_skew=0.0, round_mouth=True,
    ),
}  # fmt: skip


# --- public API -------------------------------------------------------------------------


def draw_faces(
    n_per_class: int,
    classes: Sequence[str],
    seed: int,
    size: int = 48,
    split: str = "train",
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `n_per_class` faces of every class.

    Returns images uint8 (N, size, size) and label indices int64 (N,) into `classes`,
    ordered by class, then by index. `split` picks an independent random stream, so train
    and test faces of the same seed differ.
    """
    _check_request(classes, size, n_per_class)
    total = n_per_class * len(classes)
    images = np.empty((total, size, size), dtype=np.uint8)
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), n_per_class)
    jobs = [(label, index) for label in range(len(classes)) for index in range(n_per_class)]
    for row, (label, index) in enumerate(bar(jobs, desc=f"synth {split}", unit="img")):
        rng = _face_rng(seed, split, label, index)
        images[row] = draw_face(EXPRESSIONS[classes[label]], rng, size)
    return images, labels


def write_synthetic_dataset(
    out: Path,
    classes: Sequence[str],
    per_class: int,
    test_per_class: int,
    seed: int,
    size: int = 48,
) -> Path:
    """Write `out/train/<class>/Training_<n>.jpg` and `out/test/<class>/PublicTest_<n>.jpg`.

    Grayscale ("L") JPEGs of `size` x `size`, like the real download. Returns `out`.
    An existing `out` is only added to: files of the same name are overwritten with the
    same bytes, so rerunning with the same arguments leaves it unchanged.
    """
    out = Path(out)
    for split, count in (("train", per_class), ("test", test_per_class)):
        images, labels = draw_faces(count, classes, seed, size, split=split)
        for number, (image, label) in enumerate(zip(images, labels, strict=True), start=1):
            folder = out / split / classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            save_jpeg(image, folder / f"{SPLIT_PREFIXES[split]}_{number}.jpg")
    log.info(
        "wrote %d train and %d test synthetic faces (%d classes, seed %d) to %s",
        per_class * len(classes),
        test_per_class * len(classes),
        len(classes),
        seed,
        out,
    )
    return out


def save_jpeg(image: np.ndarray, path: Path) -> None:
    """Save one uint8 (S, S) image as a grayscale JPEG with fixed settings (deterministic)."""
    Image.fromarray(image, mode="L").save(path, format="JPEG", quality=JPEG_QUALITY)


def save_preview(
    path: Path,
    classes: Sequence[str],
    per_class: int = 8,
    seed: int = 0,
    size: int = 48,
    zoom: int = 2,
) -> Path:
    """Save a PNG grid: one row per class (named on the left), `per_class` faces per row."""
    images, _ = draw_faces(per_class, classes, seed, size, split="preview")
    tile = size * zoom
    label_width = 80
    grid = Image.new("L", (label_width + per_class * tile, len(classes) * tile), color=255)
    draw = ImageDraw.Draw(grid)
    for row, name in enumerate(classes):
        draw.text((6, row * tile + tile // 2 - 6), name, fill=0)
        for column in range(per_class):
            face = Image.fromarray(images[row * per_class + column], mode="L")
            face = face.resize((tile, tile), Image.Resampling.NEAREST)
            grid.paste(face, (label_width + column * tile, row * tile))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, format="PNG", optimize=True)
    return path


# --- one face ---------------------------------------------------------------------------


def draw_face(expression: Expression, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """One face with `expression`, random identity, pose and lighting: uint8 (size, size)."""
    canvas = size * SUPERSAMPLE
    look = _jitter(expression, rng)
    skin = rng.uniform(95, 215)
    background = _background_level(skin, rng)
    image = Image.new("L", (canvas, canvas), color=int(background))
    draw = ImageDraw.Draw(image)
    face = _draw_head(draw, canvas, skin, rng)
    _draw_brows(draw, face, look, skin, rng)
    _draw_eyes(draw, face, look, skin, rng)
    _draw_nose(draw, face, look, skin)
    _draw_mouth(draw, face, look, skin, rng)
    # Pose straight into a 2x-size image (a quarter of the canvas's pixels: the transform
    # is the slowest step), then average 2x2 blocks down to the final size.
    image = _pose(image, rng, background, out_side=2 * size)
    image = image.reduce(2)
    return _light_and_noise(np.asarray(image, dtype=np.float32), rng)


@dataclass(frozen=True)
class _Face:
    """Where the face sits on the canvas: centre and half-axes, in canvas pixels."""

    cx: float
    cy: float
    half_width: float
    half_height: float

    @property
    def height(self) -> float:
        return 2 * self.half_height

    @property
    def width(self) -> float:
        return 2 * self.half_width


def _face_rng(seed: int, split: str, label: int, index: int) -> np.random.Generator:
    """An independent generator per image, so each face depends only on its own coordinates."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM[split], label, index]))


def _jitter(expression: Expression, rng: np.random.Generator) -> Expression:
    """Per-face variation of the expression (people do not all smile the same)."""

    def vary(value: float, spread: float) -> float:
        return float(value + rng.normal(0.0, spread))

    skew_side = 1.0 if rng.random() < 0.5 else -1.0  # disgust raises either corner
    return Expression(
        brow_raise=vary(expression.brow_raise, 0.012),
        brow_tilt=vary(expression.brow_tilt, 0.012),
        brow_arch=vary(expression.brow_arch, 0.006),
        eye_open=max(0.3, vary(expression.eye_open, 0.12)),
        mouth_width=max(0.12, vary(expression.mouth_width, 0.04)),
        mouth_curve=vary(expression.mouth_curve, 0.012),
        mouth_open=max(0.0, vary(expression.mouth_open, 0.008)),
        mouth_skew=skew_side * vary(expression.mouth_skew, 0.01),
        round_mouth=expression.round_mouth,
        nose_wrinkle=expression.nose_wrinkle,
        teeth=expression.teeth and rng.random() < 0.75,
    )


def _background_level(skin: float, rng: np.random.Generator) -> float:
    """A background gray that keeps some contrast with the skin."""
    while True:
        level = rng.uniform(10, 245)
        if abs(level - skin) > 30:
            return level


def _draw_head(draw: ImageDraw.ImageDraw, canvas: int, skin: float, rng: np.random.Generator) -> _Face:
    """Hair (sometimes), neck and the face oval; returns the face geometry."""
    face = _Face(
        cx=canvas / 2,
        cy=canvas * rng.uniform(0.52, 0.56),
        half_width=canvas * rng.uniform(0.30, 0.36),
        half_height=canvas * rng.uniform(0.40, 0.45),
    )
    neck_half = face.half_width * 0.55
    draw.rectangle(
        (face.cx - neck_half, face.cy + face.half_height * 0.6, face.cx + neck_half, canvas),
        fill=int(skin * 0.85),
    )
    if rng.random() < 0.7:  # hair: a darker (or lighter) cap behind the top of the face
        hair = rng.uniform(15, 90) if rng.random() < 0.8 else rng.uniform(170, 235)
        grow = rng.uniform(1.04, 1.15)
        draw.ellipse(
            (
                face.cx - face.half_width * grow,
                face.cy - face.half_height * rng.uniform(1.05, 1.15),
                face.cx + face.half_width * grow,
                face.cy + face.half_height * rng.uniform(0.0, 0.5),
            ),
            fill=int(hair),
        )
    draw.ellipse(
        (
            face.cx - face.half_width,
            face.cy - face.half_height,
            face.cx + face.half_width,
            face.cy + face.half_height,
        ),
        fill=int(skin),
    )
    return face


def _feature_shade(skin: float, rng: np.random.Generator) -> int:
    """Brows, lids and lips: clearly darker than the skin."""
    return int(skin * rng.uniform(0.2, 0.45))


def _draw_brows(
    draw: ImageDraw.ImageDraw, face: _Face, look: Expression, skin: float, rng: np.random.Generator
) -> None:
    shade = _feature_shade(skin, rng)
    thickness = max(2, int(face.height * rng.uniform(0.03, 0.045)))
    base_y = face.cy - face.height * (0.20 + look.brow_raise)
    for side in (-1, 1):
        inner = (face.cx + side * face.width * 0.07, base_y - face.height * look.brow_tilt)
        middle = (face.cx + side * face.width * 0.19, base_y - face.height * look.brow_arch)
        outer = (face.cx + side * face.width * 0.32, base_y + face.height * 0.01)
        draw.line([inner, middle, outer], fill=shade, width=thickness, joint="curve")


def _draw_eyes(
    draw: ImageDraw.ImageDraw, face: _Face, look: Expression, skin: float, rng: np.random.Generator
) -> None:
    eye_y = face.cy - face.height * 0.09
    half_w = face.width * 0.1
    half_h = face.height * 0.03 * look.eye_open
    white = int(min(255, skin + rng.uniform(20, 60)))
    pupil = int(skin * rng.uniform(0.05, 0.25))
    look_x = rng.normal(0.0, 0.25) * half_w  # gaze direction
    for side in (-1, 1):
        cx = face.cx + side * face.width * 0.19
        draw.ellipse(
            (cx - half_w, eye_y - half_h, cx + half_w, eye_y + half_h),
            fill=white,
            outline=pupil,
            width=max(1, int(face.height * 0.008)),
        )
        radius = min(half_w * 0.45, max(half_h * 0.9, face.height * 0.015))
        px = cx + look_x
        draw.ellipse(
            (px - radius, eye_y - min(radius, half_h), px + radius, eye_y + min(radius, half_h)), fill=pupil
        )


def _draw_nose(draw: ImageDraw.ImageDraw, face: _Face, look: Expression, skin: float) -> None:
    shade = int(skin * 0.6)
    width = max(1, int(face.height * 0.015))
    tip_y = face.cy + face.height * 0.1
    draw.line(
        [
            (face.cx, face.cy - face.height * 0.02),
            (face.cx - face.width * 0.04, tip_y),
            (face.cx + face.width * 0.03, tip_y),
        ],
        fill=shade,
        width=width,
        joint="curve",
    )
    if look.nose_wrinkle:  # short horizontal creases across the bridge
        for step in range(3):
            y = face.cy - face.height * (0.05 - 0.03 * step)
            draw.line(
                [(face.cx - face.width * 0.06, y), (face.cx + face.width * 0.06, y - face.height * 0.01)],
                fill=int(skin * 0.45),
                width=width,
            )


def _draw_mouth(
    draw: ImageDraw.ImageDraw, face: _Face, look: Expression, skin: float, rng: np.random.Generator
) -> None:
    shade = _feature_shade(skin, rng)
    mouth_y = face.cy + face.height * rng.uniform(0.24, 0.27)
    half_w = face.width * look.mouth_width / 2
    lip = max(2, int(face.height * 0.025))
    if look.round_mouth:
        half_h = face.height * look.mouth_open / 2
        draw.ellipse(
            (face.cx - half_w, mouth_y - half_h, face.cx + half_w, mouth_y + half_h),
            fill=int(skin * 0.15),
            outline=shade,
            width=lip,
        )
        return
    curve = face.height * look.mouth_curve
    skew = face.height * look.mouth_skew
    left = (face.cx - half_w, mouth_y - curve - skew)
    right = (face.cx + half_w, mouth_y - curve + skew * 0.2)
    # Quadratic Bezier lips through both corners, bulging toward a control point below
    # (smile) or above (frown) the corners.
    opening = face.height * look.mouth_open
    upper = _bezier(left, (face.cx, mouth_y + curve - opening), right)
    lower = _bezier(left, (face.cx, mouth_y + curve + opening), right)
    if opening < 1.0:
        draw.line(upper, fill=shade, width=lip, joint="curve")
        return
    draw.polygon(upper + lower[::-1], fill=int(skin * 0.15), outline=shade, width=lip)
    if look.teeth:
        teeth = _bezier(left, (face.cx, mouth_y + curve - opening * 0.2), right)
        draw.polygon(upper + teeth[::-1], fill=int(min(255, skin + 45)))


def _bezier(
    start: tuple[float, float], control: tuple[float, float], end: tuple[float, float], points: int = 16
) -> list[tuple[float, float]]:
    result = []
    for t in np.linspace(0.0, 1.0, points):
        x = (1 - t) ** 2 * start[0] + 2 * (1 - t) * t * control[0] + t**2 * end[0]
        y = (1 - t) ** 2 * start[1] + 2 * (1 - t) * t * control[1] + t**2 * end[1]
        result.append((float(x), float(y)))
    return result


# --- pose, light, noise -----------------------------------------------------------------


def _pose(image: Image.Image, rng: np.random.Generator, background: float, out_side: int) -> Image.Image:
    """Rotate, scale and shift the face about the centre, resampling to `out_side` pixels."""
    side = image.size[0]
    angle = math.radians(rng.normal(0.0, 6.0))
    scale = rng.uniform(0.88, 1.12)
    shift_x, shift_y = rng.normal(0.0, 0.04 * side, size=2)
    # PIL's affine maps each output pixel back to an input pixel: the inverse of the pose,
    # composed with the shrink from `side` to `out_side`.
    shrink = side / out_side
    a, b = math.cos(angle) * shrink / scale, math.sin(angle) * shrink / scale
    d, e = -b, a
    centre = side / 2
    c = centre - a * (centre + shift_x) / shrink - b * (centre + shift_y) / shrink
    f = centre - d * (centre + shift_x) / shrink - e * (centre + shift_y) / shrink
    return image.transform(
        (out_side, out_side),
        Image.Transform.AFFINE,
        (a, b, c, d, e, f),
        resample=Image.Resampling.BILINEAR,
        fillcolor=int(background),
    )


def _light_and_noise(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast, brightness, a light gradient from a random side, and sensor noise."""
    size = pixels.shape[0]
    contrast = rng.uniform(0.7, 1.2)
    brightness = rng.normal(0.0, 15.0)
    pixels = (pixels - 128.0) * contrast + 128.0 + brightness
    direction = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    gradient = math.cos(direction) * ramp[None, :] + math.sin(direction) * ramp[:, None]
    pixels = pixels * (1.0 + rng.uniform(0.0, 0.3) * gradient)
    pixels = pixels + rng.normal(0.0, rng.uniform(2.0, 9.0), size=pixels.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _check_request(classes: Sequence[str], size: int, n_per_class: int) -> None:
    unknown = [name for name in classes if name not in EXPRESSIONS]
    if unknown:
        raise SynthError(
            f"no synthetic expression for class(es) {unknown}; base.classes must be among "
            f"{sorted(EXPRESSIONS)}"
        )
    if size < 16:
        raise SynthError(f"image size {size} is too small to draw a face; use base.image_size >= 16")
    if n_per_class < 0:
        raise SynthError(f"images per class must be >= 0, got {n_per_class}")
