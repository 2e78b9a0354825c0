"""Type stubs of the native module built from crates/amp-py."""

from typing import List, Optional, Tuple

__version__: str

class AmpError(Exception):
    """An error reported by amp, with the message the `amp` command prints."""

def run(args: List[str]) -> Tuple[int, str, str]:
    """Runs the `amp` command line `args` (argv[0] first) in-process;
    returns (exit status, stdout, stderr)."""

def model_info(model: str, seq: Optional[int] = None) -> str:
    """amp's layer list for `model` (zoo name or path) and its architecture, as JSON."""

def catalog_gpu(name: str) -> str:
    """The catalog's canonical name of GPU `name`; raises AmpError when unknown."""

def catalog_gpus() -> List[Tuple[str, List[str], int]]:
    """Every GPU of the catalog as (name, aliases, memory bytes)."""
