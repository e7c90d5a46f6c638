"""Regenerate the pictures in the README (docs/img/*.png) from the bundled samples.

    python scripts/make_figures.py

Deterministic: the same code and seed give the same pictures.
"""

import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from lowlight_gpu import imageio  # noqa: E402
from lowlight_gpu.config import config_from_dict  # noqa: E402
from lowlight_gpu.hashing import pair_seed  # noqa: E402
from lowlight_gpu.params import sample_params  # noqa: E402
from lowlight_gpu.synth import numpy_backend  # noqa: E402

OUT = os.path.join(REPO, "docs", "img")


def label(img, text):
    """img with a caption bar under it."""
    font = ImageFont.load_default(size=14)
    canvas = Image.new("RGB", (img.width, img.height + 22), "white")
    canvas.paste(img, (0, 0))
    ImageDraw.Draw(canvas).text((4, img.height + 3), text, fill="black", font=font)
    return canvas


def hstack(images, gap=4):
    """Images side by side on white."""
    w = sum(i.width for i in images) + gap * (len(images) - 1)
    h = max(i.height for i in images)
    canvas = Image.new("RGB", (w, h), "white")
    x = 0
    for i in images:
        canvas.paste(i, (x, 0))
        x += i.width + gap
    return canvas


def progressive_strip(name="coffee.png", steps=6):
    """x_0 and every step x_1..x_T of one photo, noise off and on."""
    dec = imageio.decode(os.path.join(REPO, "samples", name), 10**8)
    small = np.asarray(Image.fromarray(dec.rgb).resize((180, 120), Image.LANCZOS))
    rows = []
    for model in ("none", "poisson-gaussian"):
        cfg = config_from_dict({"progressive": {"enabled": True, "steps": steps, "save": "all"},
                                "darken": {"gamma": 3.5, "beta": 0.8, "alpha": 0.95},
                                "noise": {"model": model, "peak": 300, "read_sigma": 0.004}})
        params = sample_params(pair_seed(0, name), cfg)
        tiles = [label(Image.fromarray(small), "x0 (high)")]
        for t in range(1, steps + 1):
            tiles.append(label(Image.fromarray(numpy_backend.render(small, params, t, True)), f"t={t}"))
        rows.append(hstack(tiles))
    return Image.fromarray(np.concatenate([np.asarray(r) for r in rows], axis=0))


def noise_crop(name="astronaut.png", box=(180, 60, 340, 220), zoom=2):
    """A crop of one low image: noiseless vs Poisson-Gaussian, brightened x4 to show the noise."""
    dec = imageio.decode(os.path.join(REPO, "samples", name), 10**8)
    cfg = config_from_dict({"darken": {"gamma": 2.5, "beta": 0.7, "alpha": 0.95},
                            "noise": {"peak": 200, "read_sigma": 0.005}})
    params = sample_params(pair_seed(0, name), cfg)
    clean = numpy_backend.render(dec.rgb, params, None, False)
    noisy = numpy_backend.render(dec.rgb, params, None, True)
    x0, y0, x1, y1 = box

    def show(a, text, gain=4):
        crop = np.clip(a[y0:y1, x0:x1].astype(np.float32) * gain, 0, 255).astype(np.uint8)
        img = Image.fromarray(crop).resize(((x1 - x0) * zoom, (y1 - y0) * zoom), Image.NEAREST)
        return label(img, text)
    return hstack([show(dec.rgb, "high", gain=1), show(clean, "low, clean (shown x4)"),
                   show(noisy, "low, peak=200 e-, read 0.005 (x4)")])


def physics_crop(name="astronaut.png", box=(200, 90, 320, 210), zoom=3, gain=2.5):
    """One crop, one darkening: clean, poisson-gaussian and physics noise of about the same std, brightened x2.5.

    Poisson-Gaussian noise is independent per value; physics noise, born in the raw mosaic, comes out of
    demosaicing and the colour matrix spatially correlated and coloured (chroma blotches).
    """
    dec = imageio.decode(os.path.join(REPO, "samples", name), 10**8)
    darken = {"gamma": 3.0, "beta": 0.6, "alpha": 0.95}
    models = [("low, clean", {"model": "none"}),
              ("poisson-gaussian, peak 400, read 0.005", {"peak": 400, "read_sigma": 0.005}),
              ("physics, SonyA7S2, K=6", {"model": "physics", "camera": "SonyA7S2", "gain": [6.0, 6.0]})]
    x0, y0, x1, y1 = box
    tiles = []
    for text, noise in models:
        params = sample_params(pair_seed(0, name), config_from_dict({"darken": darken, "noise": noise}))
        low = numpy_backend.render(dec.rgb, params, None, noise.get("model") != "none")
        crop = np.clip(low[y0:y1, x0:x1].astype(np.float32) * gain, 0, 255).astype(np.uint8)
        img = Image.fromarray(crop).resize(((x1 - x0) * zoom, (y1 - y0) * zoom), Image.NEAREST)
        tiles.append(label(img, f"{text} (x{gain:g})"))
    return hstack(tiles)


def main():
    os.makedirs(OUT, exist_ok=True)
    progressive_strip().save(os.path.join(OUT, "progressive_strip.png"), optimize=True)
    noise_crop().save(os.path.join(OUT, "noise_crop.png"), optimize=True)
    physics_crop().save(os.path.join(OUT, "physics_crop.png"), optimize=True)
    print("wrote", ", ".join(sorted(os.listdir(OUT))))


if __name__ == "__main__":
    main()
