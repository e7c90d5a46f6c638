"""Where each image of a pair goes: LOL or MBLLEN folders, progressive steps, hash splits."""

from dataclasses import dataclass

from .hashing import split_fraction

# role -> folder, per layout.  "{split}" is the split name when a split is configured.
LAYOUTS = {
    "lol": {"high": "high", "low": "low", "clean_low": "low_clean", "raw_clean": "raw_clean", "raw_low": "raw_low"},
    "mbllen": {"high": "train", "low": "train_lowlight", "clean_low": "train_dark",
               "raw_clean": "train_raw_clean", "raw_low": "train_raw_low"},
}
RAW_ROLES = ("raw_clean", "raw_low")  # physics noise with save.raw: uint16 RGGB mosaics as .npy


@dataclass(frozen=True)
class Output:
    """One planned image of a pair: its role (high, low, clean_low), progressive step, whether it is noisy, its path."""

    role: str
    t: int | None  # the progressive step; None without progressive (and for high)
    noisy: bool
    rel: str  # relative to the output folder, in the files layout


@dataclass(frozen=True)
class RawOutput:
    """One planned raw mosaic of a pair (save.raw): its role (raw_clean, raw_low), progressive step and .npy path."""

    role: str
    t: int | None
    rel: str


def split_of(rel, split):
    """The split (train/val/test) of a source id, by a stable hash compared with the cumulative ratios."""
    if not split:
        return None
    u = split_fraction(rel)
    total = 0.0
    for name, ratio in split:
        total += ratio
        if u < total:
            return name
    return split[-1][0]  # guards the last ulp of rounding in the ratio sum


def folder(layout, role, split_name):
    """The folder of one role (high, low, clean_low) for a layout and split."""
    base = LAYOUTS[layout][role]
    if split_name is None:
        return base
    if layout == "mbllen":  # MBLLEN names its folders train, train_dark, ...: val, val_dark, ... follow suit
        return base.replace("train", split_name, 1)
    return f"{split_name}/{base}"


def step_folder(t, steps):
    """The sub-folder of progressive step t: t01 ... tNN, zero-padded to the width of T."""
    return f"t{t:0{max(2, len(str(steps)))}d}"


def plan_outputs(out_rel, config, split_name):
    """The images to write for one pair: a list of Output, high first."""
    layout = config.layout
    clean = config.save.clean_low or layout == "mbllen"
    plan = [Output("high", None, False, f"{folder(layout, 'high', split_name)}/{out_rel}")]
    if config.progressive.enabled:
        steps = config.progressive.steps
        saved = config.progressive.saved_steps()
    else:
        steps, saved = None, (None,)
    for role, noisy in (("low", True), ("clean_low", False)):
        if role == "clean_low" and not clean:
            continue
        base = folder(layout, role, split_name)
        for t in saved:
            sub = f"{step_folder(t, steps)}/" if t is not None else ""
            plan.append(Output(role, t, noisy, f"{base}/{sub}{out_rel}"))
    return plan


def plan_raw(out_rel, config, split_name):
    """The raw mosaics to write for one pair (save.raw with noise.model physics): a list of RawOutput.

    One raw_clean and one raw_low per saved low image, in the same step sub-folders, named like the image
    with the suffix .npy.
    """
    if not (config.save.raw and config.noise.model == "physics"):
        return []
    stem = out_rel.rsplit(".", 1)[0] if "." in out_rel.rsplit("/", 1)[-1] else out_rel
    if config.progressive.enabled:
        steps, saved = config.progressive.steps, config.progressive.saved_steps()
    else:
        steps, saved = None, (None,)
    plan = []
    for t in saved:
        sub = f"{step_folder(t, steps)}/" if t is not None else ""
        plan += [RawOutput(role, t, f"{folder(config.layout, role, split_name)}/{sub}{stem}.npy")
                 for role in RAW_ROLES]
    return plan
