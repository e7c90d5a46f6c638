"""--preview: OUTPUT/preview.png, a contact sheet of a few pairs (Pillow only).

One row per sampled pair (``rows`` of them, spread evenly over the manifest):
a label column (source, split, alpha, beta, gamma, noise levels), then the
high image, then the low image -- or, for a progressive dataset, its saved
steps, the last of which is the low image (at most MAX_STEP_COLUMNS of them,
spread evenly and always ending with the last).  Every image is fitted into a
cell CELL_H pixels tall (and at most MAX_CELL_W wide), so the sheet size
depends only on the number of rows and columns and the widest aspect ratio.
"""

import io

from PIL import Image, ImageDraw, ImageFont

from .. import containers, paths, storage
from ..containers.readers import shared_reader
from ..errors import ConfigError, UntrustedDataset
from . import sample, spread, write_file

CELL_H = 256
MAX_CELL_W = 384
MIN_CELL_W = 96
LABEL_W = 260
CAPTION_H = 20
PAD = 8
MAX_STEP_COLUMNS = 8
FONT_SIZE = 14
BACKGROUND, TEXT, DIM, EMPTY = (24, 24, 24), (235, 235, 235), (160, 160, 160), (64, 64, 64)


def write_preview(output_dir, rows=8):
    """Draw the contact sheet of `rows` pairs of output_dir into output_dir/preview.png; returns its path."""
    _, picked = sample(output_dir, rows)
    picked = list(picked)
    if not picked:
        raise ConfigError(f"output: the manifest in '{output_dir}' has no pairs; nothing to preview")
    columns = [row_columns(row) for row in picked]
    cell_w = cell_width(picked)
    sheet = Image.new("RGB", sheet_size(len(picked), max(map(len, columns)), cell_w), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = load_font(FONT_SIZE)
    for i, (row, cols) in enumerate(zip(picked, columns)):
        top = PAD + i * (CAPTION_H + CELL_H + PAD)
        draw_label(draw, font, row, PAD, top)
        for j, (caption, rel) in enumerate(cols):
            left = PAD + LABEL_W + j * (cell_w + PAD)
            draw.text((left, top + 2), fit_text(draw, font, caption, cell_w), fill=DIM, font=font)
            paste_cell(sheet, draw, font, image_source(output_dir, row, rel), left, top + CAPTION_H, cell_w)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", compress_level=6)
    return write_file(output_dir, "preview.png", buf.getvalue())


def image_source(output_dir, row, rel):
    """What paste_cell opens: the file's path, or (tar, LMDB) a callable returning the image's bytes."""
    if containers.container_of(row) == "files" and not storage.is_url(output_dir):
        return paths.Root(output_dir).path(rel)
    reader = shared_reader(output_dir)
    return lambda: io.BytesIO(reader.for_row(row, rel))


def sheet_size(n_rows, n_columns, cell_w):
    """(width, height) of a sheet with n_rows pairs of n_columns images in cells cell_w wide."""
    return (PAD + LABEL_W + n_columns * (cell_w + PAD), PAD + n_rows * (CAPTION_H + CELL_H + PAD))


def cell_width(rows):
    """The cell width: the widest image scaled to CELL_H tall, within [MIN_CELL_W, MAX_CELL_W]."""
    widest = max(row.get("width", 1) / max(1, row.get("height", 1)) for row in rows)
    return max(MIN_CELL_W, min(MAX_CELL_W, round(CELL_H * widest)))


def row_columns(row):
    """[(caption, relative path)] of one pair: high, then low or its saved steps (at most MAX_STEP_COLUMNS)."""
    steps = row.get("steps")
    if not steps:
        return [("high", row["high"]), ("low", row["low"])]
    if len(steps) > MAX_STEP_COLUMNS:  # an even spread of the earlier steps, always ending with the last
        steps = [steps[i] for i in spread(len(steps) - 1, MAX_STEP_COLUMNS - 1)] + [steps[-1]]
    return [("high", row["high"])] + [(f"t={s['t']}" + (" (low)" if s is steps[-1] else ""), s["path"])
                                      for s in steps]


def label_lines(row):
    """The text of a pair's label: source, split, darkening and noise parameters."""
    p = row.get("params", {})
    noise = p.get("noise", {})
    lines = [row.get("source", "?")]
    if row.get("split"):
        lines.append(f"split {row['split']}")
    lines.append(f"alpha {p.get('alpha', 0):.3f}  beta {p.get('beta', 0):.3f}")
    lines.append(f"gamma {p.get('gamma', 0):.3f}")
    lines.append(noise_label(noise))
    levels = [f"{k} {noise[k]:.4g}" for k in ("peak", "read_sigma", "sigma") if k in noise]
    if levels:
        lines.append("  ".join(levels[:2]))
        lines.extend(levels[2:])
    if "progressive" in p:
        lines.append(f"progressive T={p['progressive']['steps']} eta {p['progressive']['eta']:.3f}")
    lines.append(f"{row.get('width', '?')}x{row.get('height', '?')}, seed {row.get('seed', '?')}")
    return lines


def noise_label(noise):
    """The noise line of a label: physics names its camera and gain K (order and space do not apply to it)."""
    model = noise.get("model", "?")
    if model == "physics":
        k = noise.get("K")
        return f"noise physics {noise.get('camera', '?')}, K " + (f"{k:.3g}" if isinstance(k, (int, float)) else "?")
    return f"noise {model} ({noise.get('space', '?')}, {noise.get('order', '?')})"


def draw_label(draw, font, row, left, top):
    """Draw the label lines of one pair in the label column."""
    step = line_height(font)
    for k, line in enumerate(label_lines(row)):
        draw.text((left, top + 2 + k * step), fit_text(draw, font, line, LABEL_W - PAD),
                  fill=TEXT if k == 0 else DIM, font=font)


def paste_cell(sheet, draw, font, path, left, top, cell_w):
    """Paste the image at path (or from a callable) fitted and centred in a cell; a grey cell saying why when it cannot be read."""
    try:
        with Image.open(path() if callable(path) else path) as im:
            im = im.convert("RGB")
            scale = min(cell_w / im.width, CELL_H / im.height)
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            # Nearest when enlarging keeps single pixels (and their noise) visible; box when shrinking averages.
            thumb = im.resize(size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BOX)
    except UntrustedDataset:
        raise
    except (OSError, ValueError) as exc:
        draw.rectangle((left, top, left + cell_w - 1, top + CELL_H - 1), fill=EMPTY)
        reason = "missing" if isinstance(exc, FileNotFoundError) else "unreadable"
        draw.text((left + 6, top + 6), fit_text(draw, font, reason, cell_w - 12), fill=TEXT, font=font)
        return
    sheet.paste(thumb, (left + (cell_w - size[0]) // 2, top + (CELL_H - size[1]) // 2))


def load_font(size):
    """Pillow's default font at size (Pillow >= 10.1 with FreeType), else its fixed bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # older Pillow, or built without FreeType
        return ImageFont.load_default()


def line_height(font):
    """The height of one line of text in font, with a little leading."""
    box = font.getbbox("Ag|")
    return box[3] - box[1] + 4


def fit_text(draw, font, text, width):
    """text, cut with '...' so it fits width pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
