"""Camera presets of the physics noise model: calibrated sensor noise, with source, citation and licence.

Every preset gives, for one camera, in digital numbers (DN) above the black level:

* the range of the system gain K (DN per electron), as natural logs ``log_k``;
* log-linear profiles ``log sigma = slope * log K + bias + N(0, sigma_jitter^2)`` for
  the Tukey-lambda read scale (``tukey``), the Gaussian read scale (``gauss``) and
  the row-noise scale (``row``), each a (slope, bias, sigma_jitter) triple;
* the Tukey-lambda shape ``lambdas`` and the colour bias ``biases`` (four DN values in
  the raster order of the 2x2 CFA cell: (0,0), (0,1), (1,0), (1,1), i.e. R, G, G, B),
  each a list with one entry per calibrated ISO, lowest ISO first;
* white level, black level and bit depth of the raw file.

Mapping per-ISO lists to K (``iso_index``): a camera's gain grows in proportion to
its ISO, and the calibrated ISOs are equally spaced in log ISO, so the n entries of
a list are laid over [log Kmin, log Kmax] in n equal bins; a pair whose K falls in
bin i uses entry i (a K outside the range, from ``noise.gain``, uses the nearest end).
ELD does not publish which ISO each entry belongs to; equal log-K bins are our
reading of "one entry per calibrated ISO, lowest first".

Sources:

* ELD (Wei et al., "A Physics-based Noise Formation Model for Extreme Low-light Raw
  Denoising", CVPR 2020), MIT licence, Copyright (c) 2020 Kaixuan Wei: the five
  ``camera_params/release/*_params.npy`` files of github.com/Vandermode/ELD, kept
  unchanged as JSON in ``eld_camera_params.json``.  ``G_scale`` is the Tukey-lambda
  read scale, ``g_scale`` the Gaussian read scale, ``R_scale`` the row scale
  (``Profile-1``).  ELD's ``color_bias`` vectors are in its packed order R, G(0,1),
  B(1,1), G(1,0) (``RawPacker.pack_raw_bayer``); we reorder them to raster order.
  ELD's ``noise.py`` works on the range ``saturation_level = 16383 - 800`` for every
  camera, so these presets use white 16383 and black 800 (ELD's convention, not each
  camera's own black level).
* PMN (Feng et al., "Learnability Enhancement for Low-light Raw Denoising: Where
  Paired Real Data Meets Noise Modeling", ACM MM 2022), Apache-2.0,
  github.com/megvii-research/PMN ``data_process/process.py``
  ``get_camera_noisy_params``: ``Kmin``/``Kmax`` are natural logs of K, ``sigTL*``,
  ``sigR*`` and ``sigGs*`` the (slope ``k``, bias ``b``, jitter ``sig``) of the
  Tukey, row and Gaussian scales, ``lam`` the Tukey shape, ``wp``/``bl`` white and
  black level, ``q = 2**-bits`` the ADC step as a fraction of full scale (one DN, which
  is what ``q`` rounds to).  PMN has no colour bias: zero.
* ``virtual`` spans them: K log-uniform over [0.1, 30], the range ELD's ``noise.py``
  samples (``log_K = uniform(log(1e-1), log(30))``); profiles are the means of the five
  ELD cameras' slopes and biases with the largest jitter; lambda is the mean of ELD's
  ``G_shape`` values; no colour bias; 14 bits, black 512, white 16383.

None of these calibrations includes a colour matrix, so every preset unprocesses with
Brooks et al.'s random CCM and gains (``params.sample_isp``).

Preset files: ``lowlight-gpu calibrate`` writes a camera as JSON with the fields of
``Camera`` (``to_dict``); ``noise.camera: path/to/CAMERA.json`` loads one (``load``), and
the config then holds its content, so a dataset's identity is the preset's content
(``preset_hash``), not its path.  Such a file's ``biases`` are in the model's R, G, G, B
order whatever its own ``cfa``.
"""

import hashlib
import json
import math
import numbers
from dataclasses import dataclass, fields
from pathlib import Path

from .synth import detmath

ELD_FILE = Path(__file__).resolve().parent / "eld_camera_params.json"
ELD_CITATION = ("Wei et al., A Physics-based Noise Formation Model for Extreme Low-light Raw Denoising, "
                "CVPR 2020 (github.com/Vandermode/ELD)")
PMN_CITATION = ("Feng et al., Learnability Enhancement for Low-light Raw Denoising, ACM MM 2022 "
                "(github.com/megvii-research/PMN, data_process/process.py get_camera_noisy_params)")
CFA = "RGGB"
CFAS = ("RGGB", "BGGR", "GRBG", "GBRG")


@dataclass(frozen=True)
class Camera:
    """One camera's calibrated noise: gain range, log-linear profiles, per-ISO lists, raw levels, provenance."""

    name: str
    bits: int
    black_level: int
    white_level: int
    log_k: tuple     # (log Kmin, log Kmax), natural logs of DN per electron
    tukey: tuple     # (slope, bias, jitter) of log sigma_TL
    gauss: tuple     # (slope, bias, jitter) of log sigma_g
    row: tuple       # (slope, bias, jitter) of log sigma_R
    lambdas: tuple   # Tukey-lambda shape per calibrated ISO, lowest first
    biases: tuple    # colour bias per calibrated ISO: four DN values, raster order of the CFA cell
    source: str
    citation: str
    licence: str
    cfa: str = CFA   # the camera's own CFA; biases are always in the model's R, G, G, B order
    note: str = ""   # how a calibrated preset was made (frames, settings)

    def describe(self):
        """One line for --list-cameras."""
        kmin, kmax = (detmath.scalar(detmath.exp, v) for v in self.log_k)
        return (f"{self.name:<18} K {kmin:.3g}-{kmax:.3g} DN/e-  {self.bits}-bit  black {self.black_level}  "
                f"white {self.white_level}  {self.source} ({self.licence})")


def iso_index(camera, log_k, n):
    """Which of n per-ISO entries a gain exp(log_k) uses: equal bins over [log Kmin, log Kmax], ends clamped."""
    lo, hi = camera.log_k
    if n <= 1 or hi <= lo:
        return 0
    i = int((log_k - lo) / (hi - lo) * n // 1)  # floor, in basic float operations
    return min(max(i, 0), n - 1)


def _profile(entry):
    """(slope, bias, jitter) of an ELD profile entry."""
    return (float(entry["slope"]), float(entry["bias"]), float(entry["sigma"]))


def _eld_presets():
    """The five ELD cameras from eld_camera_params.json."""
    data = json.loads(ELD_FILE.read_text())
    out = {}
    for name, cam in data["cameras"].items():
        prof = cam["Profile-1"]
        # ELD packs R, G(0,1), B(1,1), G(1,0); raster order of the cell is R, G(0,1), G(1,0), B.
        biases = tuple((float(b[0]), float(b[1]), float(b[3]), float(b[2])) for b in cam["color_bias"])
        out[name] = Camera(
            name=name, bits=14, black_level=800, white_level=16383,
            log_k=(detmath.scalar(detmath.log, cam["Kmin"]), detmath.scalar(detmath.log, cam["Kmax"])),
            tukey=_profile(prof["G_scale"]), gauss=_profile(prof["g_scale"]), row=_profile(prof["R_scale"]),
            lambdas=tuple(float(v) for v in cam["G_shape"]), biases=biases,
            source="ELD", citation=ELD_CITATION, licence="MIT")
    return out


# PMN data_process/process.py get_camera_noisy_params, numbers copied as published (Apache-2.0).
_PMN = {
    "NikonD850": {'Kmin': 1.2, 'Kmax': 2.4828, 'lam': -0.26, 'q': 1 / (2 ** 14), 'wp': 16383, 'bl': 512,
                  'sigTLk': 0.906, 'sigTLb': -0.6754, 'sigTLsig': 0.035165,
                  'sigRk': 0.8322, 'sigRb': -2.3326, 'sigRsig': 0.301333,
                  'sigGsk': 0.8322, 'sigGsb': -0.1754, 'sigGssig': 0.035165},
    "IMX686": {'Kmin': -0.19118, 'Kmax': 2.16820, 'lam': 0.102, 'q': 1 / (2 ** 10), 'wp': 1023, 'bl': 64,
               'sigTLk': 0.85187, 'sigTLb': 0.07991, 'sigTLsig': 0.02921,
               'sigRk': 0.87611, 'sigRb': -2.11455, 'sigRsig': 0.03274,
               'sigGsk': 0.85187, 'sigGsb': 0.67991, 'sigGssig': 0.02921},
    "SonyA7S2_lowISO": {'Kmin': -1.67214, 'Kmax': 0.42228, 'lam': -0.026, 'q': 1 / (2 ** 14), 'wp': 16383,
                        'bl': 512,
                        'sigRk': 0.78782, 'sigRb': -0.34227, 'sigRsig': 0.02832,
                        'sigTLk': 0.74043, 'sigTLb': 0.86182, 'sigTLsig': 0.00712,
                        'sigGsk': 0.82966, 'sigGsb': 1.49343, 'sigGssig': 0.00359},
    "SonyA7S2_highISO": {'Kmin': 0.64567, 'Kmax': 2.51606, 'lam': -0.025, 'q': 1 / (2 ** 14), 'wp': 16383,
                         'bl': 512,
                         'sigRk': 0.62945, 'sigRb': -1.51040, 'sigRsig': 0.02609,
                         'sigTLk': 0.74901, 'sigTLb': -0.12348, 'sigTLsig': 0.00638,
                         'sigGsk': 0.82878, 'sigGsb': 0.44162, 'sigGssig': 0.00153},
    "CRVD": {'Kmin': 1.31339, 'Kmax': 3.95448, 'lam': 0.015, 'q': 1 / (2 ** 12), 'wp': 4095, 'bl': 240,
             'sigRk': 0.93368, 'sigRb': -2.19692, 'sigRsig': 0.02473,
             'sigGsk': 0.95387, 'sigGsb': 0.01552, 'sigGssig': 0.00855,
             'sigTLk': 0.95495, 'sigTLb': 0.01618, 'sigTLsig': 0.00790},
}


def _pmn_presets():
    """PMN's presets; the names carry a PMN_ prefix where ELD already has the camera."""
    out = {}
    for name, p in _PMN.items():
        bits = {2 ** -14: 14, 2 ** -12: 12, 2 ** -10: 10}[p["q"]]
        key = f"PMN_{name}" if name == "NikonD850" else name
        out[key] = Camera(
            name=key, bits=bits, black_level=p["bl"], white_level=p["wp"], log_k=(p["Kmin"], p["Kmax"]),
            tukey=(p["sigTLk"], p["sigTLb"], p["sigTLsig"]), gauss=(p["sigGsk"], p["sigGsb"], p["sigGssig"]),
            row=(p["sigRk"], p["sigRb"], p["sigRsig"]), lambdas=(p["lam"],), biases=((0.0, 0.0, 0.0, 0.0),),
            source="PMN", citation=PMN_CITATION, licence="Apache-2.0")
    return out


def _virtual(eld):
    """A camera spanning the others (see the module docstring)."""
    cams = list(eld.values())

    def mean_profile(attr):
        rows = [getattr(c, attr) for c in cams]
        return (sum(r[0] for r in rows) / len(rows), sum(r[1] for r in rows) / len(rows), max(r[2] for r in rows))

    shapes = [v for c in cams for v in c.lambdas]
    return Camera(
        name="virtual", bits=14, black_level=512, white_level=16383,
        log_k=(detmath.scalar(detmath.log, 0.1), detmath.scalar(detmath.log, 30.0)),
        tukey=mean_profile("tukey"), gauss=mean_profile("gauss"), row=mean_profile("row"),
        lambdas=(sum(shapes) / len(shapes),), biases=((0.0, 0.0, 0.0, 0.0),),
        source="ELD+PMN span", citation=f"{ELD_CITATION}; {PMN_CITATION}", licence="MIT (ELD numbers)")


def _presets():
    """Every preset by name, in listing order."""
    eld = _eld_presets()
    return {**eld, **_pmn_presets(), "virtual": _virtual(eld)}


PRESETS = _presets()


def get(name):
    """The preset called name; KeyError with the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown camera {name!r}; known: {', '.join(PRESETS)}") from None


def listing():
    """One line per preset, for --list-cameras."""
    return [cam.describe() for cam in PRESETS.values()]


# ---------------------------------------------------------------- preset files (lowlight-gpu calibrate)

_REQUIRED = ("name", "bits", "black_level", "white_level", "log_k", "tukey", "gauss", "row", "lambdas", "biases")
_OPTIONAL = {"cfa": CFA, "source": "file", "citation": "", "licence": "", "note": ""}
EXTRA_KEY = "calibration"  # a file's measurements per setting: kept in the file, never read by the model


def to_dict(camera):
    """A camera as plain JSON-ready data (the fields of a preset file)."""
    out = {}
    for f in fields(camera):
        v = getattr(camera, f.name)
        out[f.name] = [list(b) for b in v] if f.name == "biases" else list(v) if isinstance(v, tuple) else v
    return out


def _numbers(data, key, n=None):
    """data[key] as a tuple of finite floats (n of them when given); ValueError naming the field otherwise."""
    v = data[key]
    ok = isinstance(v, (list, tuple)) and (len(v) == n if n else len(v) > 0) and all(
        isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) for x in v)
    if not ok:
        what = f"a list of {n} finite numbers" if n else "a non-empty list of finite numbers"
        raise ValueError(f"field '{key}' must be {what}, got {v!r:.80}")
    return tuple(float(x) for x in v)


def _integer(data, key, lo):
    """data[key] as an int >= lo; ValueError naming the field otherwise."""
    v = data[key]
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < lo:
        raise ValueError(f"field '{key}' must be an integer >= {lo}, got {v!r:.80}")
    return int(v)


def from_dict(data):
    """The Camera of a preset mapping (as to_dict writes it); ValueError with one line naming a bad field."""
    if not isinstance(data, dict):
        raise ValueError(f"a preset must be a JSON object of fields, got {type(data).__name__}")
    missing = [k for k in _REQUIRED if k not in data]
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL) - {EXTRA_KEY})
    if missing or unknown:
        raise ValueError("preset " + (f"lacks field(s) {', '.join(missing)}" if missing else
                                      f"has unknown field(s) {', '.join(unknown)}") +
                         f"; a preset has {', '.join(_REQUIRED + tuple(_OPTIONAL))}")
    text = {k: data.get(k, d) for k, d in _OPTIONAL.items()}
    for k, v in [("name", data["name"]), *text.items()]:
        if not isinstance(v, str) or (k == "name" and not v.strip()):
            raise ValueError(f"field '{k}' must be a{' non-empty' if k == 'name' else ''} string, got {v!r:.80}")
    if text["cfa"] not in CFAS:
        raise ValueError(f"field 'cfa' must be one of {', '.join(CFAS)}, got {text['cfa']!r:.80}")
    black, white = _integer(data, "black_level", 0), _integer(data, "white_level", 1)
    if white <= black:
        raise ValueError(f"field 'white_level' ({white}) must be above 'black_level' ({black})")
    log_k = _numbers(data, "log_k", 2)
    if log_k[0] > log_k[1]:
        raise ValueError(f"field 'log_k' must be [log Kmin, log Kmax] with Kmin <= Kmax, got {list(log_k)}")
    profiles = {k: _numbers(data, k, 3) for k in ("tukey", "gauss", "row")}
    for k, (_, _, jitter) in profiles.items():
        if jitter < 0:
            raise ValueError(f"field '{k}' must be [slope, bias, jitter] with jitter >= 0, got {list(profiles[k])}")
    biases = data["biases"]
    if not isinstance(biases, (list, tuple)) or not biases:
        raise ValueError(f"field 'biases' must be a non-empty list of [R, G, G, B] DN lists, got {biases!r:.80}")
    biases = tuple(_numbers({"biases": b}, "biases", 4) for b in biases)
    return Camera(name=data["name"], bits=_integer(data, "bits", 1), black_level=black, white_level=white,
                  log_k=log_k, lambdas=_numbers(data, "lambdas"), biases=biases, **profiles, **text)


def preset_hash(data):
    """The sha256 (hex) of a preset's fields as canonical JSON: its identity, whatever its path or layout."""
    blob = json.dumps(to_dict(from_dict(data)), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_mapping(data):
    """A preset mapping normalised (to_dict of its Camera: the measurements left out); ValueError if not valid."""
    return to_dict(from_dict(data))


def load(path):
    """The preset of a JSON file as a normalised mapping (load_mapping); OSError or ValueError otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    return load_mapping(data)


def resolve(camera):
    """The Camera of noise.camera: a preset name or a preset mapping (a loaded file)."""
    return get(camera) if isinstance(camera, str) else from_dict(camera)
