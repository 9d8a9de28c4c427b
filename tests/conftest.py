"""Test-wide settings.

Tiny models on a shared 2-core machine run many times faster on one intra-op
thread (no thread-pool hand-offs for kernels of a few microseconds), and one
thread keeps CPU results bit-for-bit reproducible across machines.
"""

import torch

torch.set_num_threads(1)
