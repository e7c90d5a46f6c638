"""Online low-light augmentation in a training loop, with lowlight_gpu's library API.

    python examples/online_augmentation.py            # on the photos in samples/, in about a second

Each step draws the params of a (epoch, photo) pair with the CLI's own sampler
and renders the low image with the CLI's own backend, so with the run's seed
and the source's relative path it rebuilds exactly the pair ``generate.py``
writes; with other seeds (here: the epoch) every epoch sees new darkening and
noise.  The same call takes numpy arrays, CuPy arrays, and torch tensors (CPU
or CUDA, through DLPack without a copy).
"""

import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

import lowlight_gpu as ll  # noqa: E402
from lowlight_gpu.imageio import is_image_name  # noqa: E402


def random_crop(image, size, rng):
    """A size x size crop at a random position (the whole image when it is smaller)."""
    h, w = image.shape[:2]
    y, x = rng.integers(0, max(1, h - size + 1)), rng.integers(0, max(1, w - size + 1))
    return image[y:y + size, x:x + size]


def main():
    """Two epochs of crops -> (low, high) pairs, then the check that the API rebuilds the CLI's pair."""
    start = time.perf_counter()
    config = ll.load_config(os.path.join(REPO, "config.yaml"), check_paths=False)  # load once, not per sample
    folder = os.path.join(REPO, "samples")
    names = sorted(n for n in os.listdir(folder) if not n.startswith(".") and is_image_name(n))
    photos = {n: ll.load_image(os.path.join(folder, n)) for n in names}  # decoded as the CLI decodes
    rng = np.random.default_rng(0)

    for epoch in range(2):
        for name in names:
            high = random_crop(photos[name], 128, rng)
            params = ll.sample_params(ll.pair_seed(epoch, name), config)  # new darkening and noise each epoch
            low = ll.synthesize(high, params)  # numpy in, numpy out: uint8, same shape
            print(f"epoch {epoch} {name:14s} gamma {params['gamma']:.2f} peak {params['noise']['peak']:6.1f}: "
                  f"mean {high.mean():5.1f} -> {low.mean():5.1f}")

    # The offline pair: the run's seed and the source's relative path give the row's pair seed, and the
    # whole decoded source gives the low image generate.py writes to OUTPUT/low/ (crops draw other noise).
    name = names[0]
    params = ll.sample_params(ll.pair_seed(config.seed, name), config)
    low = ll.synthesize(photos[name], params)
    print(f"offline pair of {name}: seed {params['seed']}, low {low.shape} "
          f"(equals OUTPUT/low/{os.path.splitext(name)[0]}.png of `python generate.py`)")

    try:
        import torch
    except ImportError:
        print("torch is not installed: skipping the tensor example")
    else:
        tensor = torch.from_numpy(photos[name].copy())  # writable (load_image's arrays are read-only); or .cuda()
        low_t = ll.synthesize(tensor, params)  # a uint8 HWC tensor on the same device
        assert torch.equal(low_t.cpu(), torch.from_numpy(low))
        print(f"torch: {tuple(low_t.shape)} {low_t.dtype} on {low_t.device}, equal to the numpy result")
    print(f"done in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
