"""The dataset format version: which revision of the model made a dataset's bytes.

A dataset is reproducible from its manifest only by the model that made it, so
``dataset.json`` records ``format_version``.  Bump FORMAT_VERSION whenever any
output byte changes for the same config, input and seed; tests/test_golden.py
pins the decoded pixels of a fixed set of outputs together with this number and
fails until both are updated (``python tests/test_golden.py --regenerate``).

History:
1. (not recorded in dataset.json) numpy's SIMD log/exp/sin/cos/pow and libm: the
   last bits depended on the CPU and on whether numba was installed.
2. Every transcendental that reaches an output byte is detmath's (deterministic on
   every IEEE-754 machine); log-factorials summed exactly.  (Since then the model's
   source moved from numpy and numba to the C headers both backends run, with
   not one byte moved: tests/model_cases.py pins the bytes of version 2.)
"""

FORMAT_VERSION = 2
