"""Per-pair randomness: the pair seed and every scalar parameter drawn from it.

Sampling is kept apart from applying: ``sample_params`` returns plain data
that ``synth`` backends consume and the manifest records, so any pair can be
replayed from its row.  Each scalar has a fixed Philox slot (SLOTS), so adding
a parameter never shifts the values of the others.
"""

import hashlib
import math

from . import rng
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
}

# Brooks et al. 2019, "Unprocessing Images for Learned Raw Denoising", random_noise_levels():
# shot ~ logU(1e-4, 0.012); log(read variance) = 2.18 * log(shot) + 1.20 + N(0, 0.26).
BROOKS_SHOT = (1e-4, 0.012)
BROOKS_SLOPE, BROOKS_INTERCEPT, BROOKS_JITTER = 2.18, 1.20, 0.26

SEED_BITS = 53  # pair seeds stay exact in any JSON reader (IEEE doubles hold 53-bit integers)


def pair_seed(seed, source):
    """The seed of one pair: a hash of the run seed and the source's relative path."""
    digest = hashlib.blake2b(f"{int(seed)}\x00{source}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << SEED_BITS) - 1)


def uniform(seed, name, bounds):
    """A value drawn uniformly from bounds = (lo, hi); a fixed value when lo == hi."""
    lo, hi = bounds
    return float(lo) if lo == hi else lo + (hi - lo) * rng.scalar_uniform(seed, SLOTS[name])


def log_uniform(seed, name, bounds):
    """A value drawn log-uniformly from bounds = (lo, hi); a fixed value when lo == hi."""
    lo, hi = bounds
    if lo == hi:
        return float(lo)
    return math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * rng.scalar_uniform(seed, SLOTS[name]))


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
        log_read = BROOKS_SLOPE * math.log(shot) + BROOKS_INTERCEPT + \
            BROOKS_JITTER * rng.scalar_normal(seed, SLOTS["brooks_read"])
        read = math.exp(log_read)
        # Brooks' shot is the variance per unit signal, i.e. 1 / peak; read is a variance.
        out.update(peak=1.0 / shot, read_sigma=math.sqrt(read), shot=shot, read=read)
    out["order"] = noise.order
    out["space"] = noise.space
    return out


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
