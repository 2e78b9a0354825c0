"""Shared fixtures: the `amp` binary the Python results are compared with,
and the repository's paths."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO / ".." / "shared" / "data"

# A tiny Llama-style Hugging Face config: small enough to profile on a CPU in
# seconds, shaped like the real thing (GQA, SwiGLU, RMSNorm, untied).
TINY_LLAMA: Dict[str, Any] = {
    "model_type": "llama",
    "_name_or_path": "tiny-llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}


def _find_amp() -> str:
    env = os.environ.get("AMP_BIN")
    if env:
        return env
    for profile in ("release", "debug"):
        p = REPO / "target" / profile / "amp"
        if p.is_file():
            return str(p)
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("no amp binary to compare with (set AMP_BIN or build amp-cli)")
    subprocess.run([cargo, "build", "-q", "-p", "amp-cli", "--bin", "amp"], cwd=REPO, check=True)
    return str(REPO / "target" / "debug" / "amp")


@pytest.fixture(scope="session")
def amp_bin() -> str:
    return _find_amp()


@pytest.fixture(scope="session")
def cli(amp_bin: str):
    """Runs the amp binary; returns (status, stdout, stderr)."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([amp_bin, *args], capture_output=True, text=True, cwd=REPO)

    return run


@pytest.fixture(scope="session")
def cli_json(cli):
    def run(*args: str) -> Dict[str, Any]:
        r = cli(*args)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    return run


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    p = tmp_path / "config.json"
    p.write_text(json.dumps(TINY_LLAMA))
    return p


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def shared_dirs(*names: str) -> List[str]:
    return [str(SHARED_DATA / n) for n in names]
