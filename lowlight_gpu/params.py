"""Per-pair randomness: the pair seed and every scalar parameter drawn from it.

Sampling is kept apart from applying: ``sample_params`` returns plain data
that ``synth`` backends consume and the manifest records, so any pair can be
replayed from its row.  Each scalar has a fixed Philox slot (SLOTS), so adding
a parameter never shifts the values of the others.
"""

import math

from .synth import rng
from . import cameras, isp_ranges
from .synth import detmath
from .synth.signal import progressive_schedule

SLOTS = {
    "alpha": 0,
    "beta": 1,
    "gamma": 2,
    "peak": 3,
    "read_sigma": 4,
    "sigma": 5,
    "brooks_shot": 6,
    "brooks_read": 7,
    # noise.model physics (synth/physics.py); numbered apart so other models' new slots never collide.
    "physics_k": 100,
    "physics_read": 101,
    "physics_row": 102,
    "physics_ccm_01": 103,
    "physics_ccm_23": 104,
    "physics_rgb_gain": 105,
    "physics_red_gain": 106,
    "physics_blue_gain": 107,
}

# Brooks et al. 2019, "Unprocessing Images for Learned Raw Denoising", random_noise_levels():
# shot ~ logU(1e-4, 0.012); log(read variance) = 2.18 * log(shot) + 1.20 + N(0, 0.26).
BROOKS_SHOT = (1e-4, 0.012)
BROOKS_SLOPE, BROOKS_INTERCEPT, BROOKS_JITTER = 2.18, 1.20, 0.26


def uniform(seed, name, bounds):
    """A value drawn uniformly from bounds = (lo, hi); a fixed value when lo == hi."""
    lo, hi = bounds
    return float(lo) if lo == hi else lo + (hi - lo) * rng.scalar_uniform(seed, SLOTS[name])


def log_uniform(seed, name, bounds):
    """A value drawn log-uniformly from bounds = (lo, hi); a fixed value when lo == hi."""
    lo, hi = bounds
    if lo == hi:
        return float(lo)
    log_lo, log_hi = detmath.scalar(detmath.log, lo), detmath.scalar(detmath.log, hi)
    return detmath.scalar(detmath.exp, log_lo + (log_hi - log_lo) * rng.scalar_uniform(seed, SLOTS[name]))


def sample_darken(seed, darken):
    """alpha, beta and gamma of Lv et al.'s darkening for one pair."""
    return {
        "alpha": uniform(seed, "alpha", darken.alpha),
        "beta": uniform(seed, "beta", darken.beta),
        "gamma": uniform(seed, "gamma", darken.gamma),
    }


def sample_noise(seed, noise):
    """The noise levels of one pair for the configured model."""
    out = {"model": noise.model}
    if noise.model in ("poisson", "poisson-gaussian"):
        out["peak"] = log_uniform(seed, "peak", noise.peak)
    if noise.model == "poisson-gaussian":
        out["read_sigma"] = uniform(seed, "read_sigma", noise.read_sigma)
    if noise.model == "gaussian":
        out["sigma"] = uniform(seed, "sigma", noise.sigma)
    if noise.model == "brooks":
        shot = log_uniform(seed, "brooks_shot", BROOKS_SHOT)
        log_read = BROOKS_SLOPE * detmath.scalar(detmath.log, shot) + BROOKS_INTERCEPT + \
            BROOKS_JITTER * rng.scalar_normal(seed, SLOTS["brooks_read"])
        read = detmath.scalar(detmath.exp, log_read)
        # Brooks' shot is the variance per unit signal, i.e. 1 / peak; read is a variance.
        out.update(peak=1.0 / shot, read_sigma=math.sqrt(read), shot=shot, read=read)
    if noise.model == "physics":
        out.update(sample_physics(seed, noise))
    out["order"] = noise.order
    out["space"] = noise.space
    return out


def _slot_uniforms(seed, name):
    """Two U(0, 1) doubles, never 0 or 1, from the four words of a slot: (53-bit integer + 0.5) / 2**53."""
    w = rng.scalar_block(seed, SLOTS[name])
    return tuple((((a >> 5) * 67108864 + (b >> 6)) + 0.5) / 9007199254740992.0 for a, b in ((w[0], w[1]), (w[2], w[3])))


def _slot_normal(seed, name):
    """A N(0, 1) double for a slot: the deterministic inverse normal CDF of its first uniform."""
    return detmath.scalar(detmath.ndtri, _slot_uniforms(seed, name)[0])


def _log_linear(profile, log_k, z):
    """exp(slope * log K + bias + jitter * z): a camera profile's scale for gain K."""
    slope, bias, jitter = profile
    return detmath.scalar(detmath.exp, (slope * log_k + bias) + jitter * z)


def sample_physics(seed, noise):
    """Gain, read, row and bias of the camera, and Brooks' ISP parameters, for one physics pair (plain data)."""
    cam = cameras.resolve(noise.camera)  # a preset's name, or the content of a preset file
    comps = noise.components
    if noise.gain is None:
        lo, hi = cam.log_k
    else:
        lo, hi = (detmath.scalar(detmath.log, g) for g in noise.gain)
    log_k = lo + (hi - lo) * _slot_uniforms(seed, "physics_k")[0]
    out = {"camera": cam.name}
    if not isinstance(noise.camera, str):  # a preset file: its content, which its name alone does not pin
        out["camera_sha256"] = cameras.preset_hash(noise.camera)
    out.update({"components": comps, "K": detmath.scalar(detmath.exp, log_k),
                "black_level": cam.black_level, "white_level": cam.white_level, "bits": cam.bits, "cfa": cameras.CFA})
    z_read = _slot_normal(seed, "physics_read")
    out["read"] = "tukey" if "t" in comps else "gaussian" if "g" in comps else "none"
    out["read_scale"] = _log_linear(cam.tukey if "t" in comps else cam.gauss, log_k, z_read) if out["read"] != "none" \
        else 0.0
    out["read_lambda"] = cam.lambdas[cameras.iso_index(cam, log_k, len(cam.lambdas))] if "t" in comps else None
    out["row_sigma"] = _log_linear(cam.row, log_k, _slot_normal(seed, "physics_row")) if "r" in comps else 0.0
    bias = cam.biases[cameras.iso_index(cam, log_k, len(cam.biases))] if "c" in comps else (0.0, 0.0, 0.0, 0.0)
    out["bias"] = [float(b) for b in bias]
    out.update(sample_isp(seed))
    return out


def sample_isp(seed):
    """Brooks et al.'s random_ccm and random_gains for one pair: rgb2cam ("ccm"), rgb, red and blue gains."""
    lo, hi = isp_ranges.CCM_WEIGHTS
    weights = [lo + (hi - lo) * u for name in ("physics_ccm_01", "physics_ccm_23") for u in _slot_uniforms(seed, name)]
    mean, sd = isp_ranges.RGB_GAIN_MEAN_SD
    brightness = max(mean + sd * _slot_normal(seed, "physics_rgb_gain"), isp_ranges.RGB_GAIN_FLOOR)
    red_lo, red_hi = isp_ranges.RED_GAIN
    red = red_lo + (red_hi - red_lo) * _slot_uniforms(seed, "physics_red_gain")[0]
    blue = isp_ranges.BLUE_GAIN[0] + (isp_ranges.BLUE_GAIN[1] - isp_ranges.BLUE_GAIN[0]) * \
        _slot_uniforms(seed, "physics_blue_gain")[0]
    return {"ccm": isp_ranges.rgb2cam_from_weights(weights), "rgb_gain": 1.0 / brightness,
            "red_gain": red, "blue_gain": blue}


def size_problem(width, height, noise_model):
    """Why an image of width x height cannot get noise_model's noise (one line), or None when it can.

    Physics noise is made on an RGGB mosaic: an image narrower or lower than one full 2x2 cell has no
    complete cell, so its raw mosaic would be empty and its colours lost.  Such an input becomes an errors row.
    """
    if noise_model == "physics" and (width < 2 or height < 2):
        return (f"image is {width}x{height} pixels; noise.model physics needs at least 2x2 "
                "(one full RGGB cell of the raw mosaic)")
    return None


def sample_params(seed, config):
    """Every parameter of the pair with this pair seed, as plain, JSON-ready data."""
    config = _as_config(config)
    params = {"seed": int(seed)}
    params.update(sample_darken(seed, config.darken))
    params["noise"] = sample_noise(seed, config.noise)
    if config.progressive.enabled:
        params["progressive"] = progressive_schedule(
            params["alpha"], params["beta"], params["gamma"], config.progressive.steps)
    return params


def _as_config(config):
    """Accept a Config, a plain mapping, or None (the defaults)."""
    from .config import Config, config_from_dict

    if isinstance(config, Config):
        return config
    return config_from_dict(dict(config or {}))
