"""The amp profiler: measure your own GPUs and links for amp (needs PyTorch).

Two modes, as a command (``python -m amp_planner.profile --help``) or from
Python:

- layers: :func:`profile_layers` times every layer of amp's layer list for a
  model (forward, backward, the optimizer step, and the activations kept
  for the backward) at the micro-batch sizes and tensor-parallel slices the
  search needs, one rank's slice on one device as AMP's profiler does, and
  :func:`write_profile` writes amp's profile format for
  ``amp plan --profile``;
- links: :func:`profile_links` measures point-to-point and all-reduce
  bandwidth and latency with ``torch.distributed`` inside a node (and across
  nodes under ``torchrun``), and :func:`links_toml` writes them as amp's
  cluster format.
"""

from .layers import LayerProfile, measured_model, profile_layers, to_toml
from .layers import write as write_profile
from .links import LinkReport, profile_links
from .links import to_toml as links_toml

__all__ = [
    "LayerProfile",
    "LinkReport",
    "links_toml",
    "measured_model",
    "profile_layers",
    "profile_links",
    "to_toml",
    "write_profile",
]
