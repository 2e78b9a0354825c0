"""amp from Python: plan model-parallel training where the model lives.

Every function here runs the ``amp`` command in-process (the same Rust core,
no re-implementation), so the numbers are the CLI's to the last bit and the
error messages are the CLI's::

    import amp_planner as amp

    result = amp.plan(model="llama3-8b", cluster="2x8xH100", global_batch=256, seq=4096)
    best = result.plans[0]
    print(best.tp, best.pp, best.dp, best.micro_batch, best.predicted_iteration_s)
    amp.evaluate(best).iteration_s
    amp.export(best, "megatron", "launch/")

Models are zoo names (``"gpt2-xl"``, ``"llama3-70b"``), paths (a Hugging
Face ``config.json`` or an amp layer list), a Hugging Face config as a dict,
or a ``transformers`` config object. Clusters are shorthands
(``"2x8xH100+4x8xA100-80GB@100Gbps"``), built-in names, paths or dicts in
amp's cluster format. Training options (``schedule="interleaved:2"``,
``recompute=True``, ``overlap_allreduce=True``, ``cost_model="amp-paper"``,
``top=20``, ...) are passed as keywords and become the CLI's flags
(``key_name=value`` -> ``--key-name value``; ``True`` -> ``--key-name``;
``False`` leaves the flag out, but ``fp32_allreduce=False``, whose default
depends on the inputs, is ``--fp32-allreduce=false``).

What the CLI says on standard error beside a result (its ``warning:`` and
``note:`` lines: a repaired input, a default it chose for you) reaches Python
as an :class:`AmpWarning`, through :mod:`warnings`.

The profiler, which measures your own GPUs for amp, is
``python -m amp_planner.profile`` (needs PyTorch).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import _amp
from ._amp import AmpError

__all__ = [
    "AmpError",
    "AmpWarning",
    "Evaluation",
    "Fit",
    "Plan",
    "PlanResult",
    "Validation",
    "evaluate",
    "export",
    "fit",
    "layers",
    "plan",
    "run_cli",
    "validate",
]

__version__: str = _amp.__version__

PathLike = Union[str, "os.PathLike[str]"]

# Keywords of plan() that say how to read the inputs and price them: a Plan
# carries them over to evaluate() and export() (a plan made on Sailor's data
# is priced and exported on it, with the constants it was ranked with). The
# training setup (schedule, recompute, precision, ...) is not carried over as
# flags: the plan's JSON records it, and amp reads it from there.
_INPUT_KEYS = frozenset(
    {
        "example",
        "cost_model",
        "partition",
        "no_analytic",
        "sailor_data",
        "calibration",
        "attention",
        "gelu",
    }
)


def run_cli(args: Sequence[str]) -> Tuple[int, str, str]:
    """Runs ``amp ARGS...`` in-process; returns (exit status, stdout, stderr).

    ``args`` are the arguments after the program name, as on a shell.
    """
    return _amp.run(["amp", *[str(a) for a in args]])


def _message(stderr: str) -> str:
    text = stderr.strip()
    return text[len("error: ") :] if text.startswith("error: ") else text


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


# Flags whose default depends on the inputs (`--fp32-allreduce` is on for the
# AMP artifact's inputs): ``False`` must say so (``--flag=false``) rather
# than leave the flag out.
_SAYS_FALSE = frozenset({"fp32_allreduce"})


def _setup_args(setup: Mapping[str, Any]) -> Tuple[List[str], Dict[str, str]]:
    """CLI arguments for keyword options, and flag -> key for error mapping."""
    args: List[str] = []
    flags: Dict[str, str] = {}
    for key, value in setup.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
            raise TypeError(f"unexpected keyword argument {key!r}")
        flag = _flag(key)
        flags[flag] = key
        if value is False and key in _SAYS_FALSE:
            args.append(flag + "=false")
            continue
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                args += [flag, str(v)]
        else:
            args += [flag, str(value)]
    return args, flags


class AmpWarning(UserWarning):
    """A ``warning:`` or ``note:`` line the CLI printed beside a result
    (for example a Sailor plan file's layer list read with a repair, or which
    blocks a DeepSpeed plan was priced with where the setup does not say)."""


def _check(code: int, out: str, err: str, flags: Mapping[str, str], func: str) -> str:
    if code == 0:
        for line in err.splitlines():
            for prefix in ("warning: ", "note: "):
                if line.startswith(prefix):
                    # stacklevel 3: the caller of plan(), evaluate(), ...
                    warnings.warn(line[len(prefix) :], AmpWarning, stacklevel=3)
        return out
    # A keyword the CLI does not know: a TypeError naming it, as Python does.
    m = re.search(r"unexpected argument '(--[A-Za-z0-9-]+)", err)
    if m and m.group(1) in flags:
        raise TypeError(
            f"{func}() got an unexpected keyword argument {flags[m.group(1)]!r} "
            f"(amp has no option {m.group(1)})"
        )
    raise AmpError(_message(err))


class _TempFiles:
    """Temporary JSON files for inputs given as Python objects."""

    def __init__(self) -> None:
        self._dir: Optional[tempfile.TemporaryDirectory] = None
        self._n = 0

    def write(self, stem: str, obj: Any) -> str:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="amp_planner_")
        self._n += 1
        path = Path(self._dir.name) / f"{stem}{self._n}.json"
        path.write_text(json.dumps(obj))
        return str(path)

    def close(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> "_TempFiles":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _as_dict(obj: Any) -> Optional[Dict[str, Any]]:
    """A mapping, or an object with ``to_dict()`` (a transformers config)."""
    if isinstance(obj, Mapping):
        return dict(obj)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict) and not isinstance(obj, (Plan, PlanResult)):
        d = to_dict()
        if isinstance(d, Mapping):
            return dict(d)
    return None


def _model_arg(model: Any, tmp: _TempFiles) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    d = _as_dict(model)
    if d is None:
        raise TypeError(
            "model must be a zoo name, a path, a dict (Hugging Face config or amp layer list) "
            f"or a transformers config object, not {type(model).__name__}"
        )
    return tmp.write("model", d)


def _cluster_arg(cluster: Any, tmp: _TempFiles) -> str:
    if isinstance(cluster, (str, os.PathLike)):
        return os.fspath(cluster)
    if isinstance(cluster, Mapping):
        return tmp.write("cluster", dict(cluster))
    raise TypeError(
        "cluster must be a shorthand, a built-in name, a path or a dict, "
        f"not {type(cluster).__name__}"
    )


def _profile_args(profile: Any, tmp: _TempFiles) -> List[str]:
    if profile is None:
        return []
    items = profile if isinstance(profile, (list, tuple)) else [profile]
    args: List[str] = []
    for p in items:
        if isinstance(p, (str, os.PathLike)):
            args += ["--profile", os.fspath(p)]
        elif isinstance(p, Mapping):
            args += ["--profile", tmp.write("profile", dict(p))]
        else:
            raise TypeError(f"profile must be a path or a dict, not {type(p).__name__}")
    return args


class _Inputs:
    """What a plan was made from, so that evaluate() and export() can reuse it."""

    def __init__(
        self, model: Any, cluster: Any, seq: Optional[int], profile: Any, setup: Mapping[str, Any]
    ) -> None:
        self.model = model
        self.cluster = cluster
        self.seq = seq
        self.profile = profile
        self.setup = {k: v for k, v in setup.items() if k in _INPUT_KEYS}


def _input_args(
    model: Any, cluster: Any, seq: Optional[int], profile: Any, tmp: _TempFiles
) -> List[str]:
    args = ["--model", _model_arg(model, tmp), "--cluster", _cluster_arg(cluster, tmp)]
    if seq is not None:
        args += ["--seq", str(int(seq))]
    return args + _profile_args(profile, tmp)


class _Record:
    """A JSON object of the CLI's output, with its keys as attributes."""

    def __init__(self, data: Dict[str, Any]) -> None:
        self._data = data

    def to_dict(self) -> Dict[str, Any]:
        """The CLI's JSON for this object, as parsed by ``json.loads``."""
        return self._data

    def __getattr__(self, name: str) -> Any:
        data = self.__dict__.get("_data")
        if data is not None and name in data:
            return data[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._data == other._data  # type: ignore[attr-defined]

    def __dir__(self) -> Iterable[str]:
        return list(super().__dir__()) + list(self._data)


class Plan(_Record):
    """One ranked plan of :func:`plan` (an entry of ``amp plan --json``'s ``plans``).

    Attributes are the JSON keys: ``rank``, ``tp``, ``dp``, ``pp``, ``micro_batch``,
    ``num_micro_batches``, ``predicted_iteration_s``, ``throughput_samples_per_s``,
    ``stage_boundaries``, ``placement``, ``stages``, ``breakdown``, ``memory``; under
    amp's own cost model ``breakdown_stage`` (the stage ``breakdown`` describes, whose last
    step ends the iteration) and ``stage_passes_s`` (each stage's forward and backward
    passes, seconds); and, with ``uneven_dp=True``, ``replica_micro_batches`` (each
    replica's micro-batches, when they differ).
    """

    def __init__(self, data: Dict[str, Any], inputs: Optional[_Inputs] = None) -> None:
        super().__init__(data)
        self._inputs = inputs

    @property
    def memory(self) -> List[Dict[str, Any]]:
        """Per-device memory (empty when the cost model has no memory model)."""
        return self._data.get("memory", [])

    def __repr__(self) -> str:
        d = self._data
        return (
            f"Plan(rank={d.get('rank')}, tp={d.get('tp')}, pp={d.get('pp')}, dp={d.get('dp')}, "
            f"micro_batch={d.get('micro_batch')}, "
            f"predicted_iteration_s={d.get('predicted_iteration_s')})"
        )


class PlanResult(_Record):
    """The result of :func:`plan`: ``amp plan --json``'s object.

    ``.plans`` are :class:`Plan` objects, fastest first; ``.to_dict()`` is the
    CLI's JSON exactly.
    """

    def __init__(self, data: Dict[str, Any], inputs: Optional[_Inputs] = None) -> None:
        super().__init__(data)
        self.plans: List[Plan] = [Plan(p, inputs) for p in data.get("plans", [])]
        hedge = data.get("sensitivity_hedge")
        #: With ``sensitivity=True``: the plan whose worst regret over the
        #: constants amp ships is least (``sensitivity_hedge``'s ``plan``), for
        #: :func:`evaluate` and :func:`export`; else ``None``.
        self.hedge: Optional[Plan] = None if hedge is None else Plan(hedge["plan"], inputs)

    def __repr__(self) -> str:
        d = self._data
        return (
            f"PlanResult(model={d.get('model')!r}, cluster={d.get('cluster')!r}, "
            f"plans={len(self.plans)}, candidates={d.get('candidates')})"
        )


class Evaluation(_Record):
    """The result of :func:`evaluate`: ``amp eval --json``'s object
    (``iteration_s``, ``throughput_samples_per_s``, ``breakdown``,
    ``fits_in_memory``, ``memory``, ``plan``, ...)."""

    def __repr__(self) -> str:
        return f"Evaluation(iteration_s={self._data.get('iteration_s')})"


class Validation(_Record):
    """The result of :func:`validate`: ``amp validate --json``'s object."""

    def __repr__(self) -> str:
        return f"Validation(keys={sorted(self._data)})"


def plan(
    model: Any = None,
    cluster: Any = None,
    global_batch: Optional[int] = None,
    seq: Optional[int] = None,
    profile: Any = None,
    **setup: Any,
) -> PlanResult:
    """Searches and ranks plans, as ``amp plan --json``.

    Args:
        model: a zoo name, a path (Hugging Face ``config.json``, amp TOML/JSON
            layer list), a Hugging Face config dict or a ``transformers``
            config object (anything with ``to_dict()``), or an amp layer list
            as a dict (``{"name": ..., "layers": [...]}``).
        cluster: a shorthand (``"4xp3.8xlarge+1xg4dn.12xlarge"``), a built-in
            name, a path, or a dict in amp's cluster format.
        global_batch: samples per iteration over all replicas.
        seq: sequence length for zoo models and Hugging Face configs.
        profile: a profile path (``.toml``/``.json``, AMP ``.npy`` or a
            directory of them), a profile dict, or a list of those.
        **setup: other ``amp plan`` options: ``schedule="interleaved:2"``,
            ``recompute=True``, ``overlap_allreduce=True``,
            ``cost_model="amp-paper"``, ``top=20``, ``example="het-cluster"``...

    Returns:
        A :class:`PlanResult`; ``.plans[0]`` is the fastest plan.

    Raises:
        AmpError: with the CLI's message, when amp refuses the inputs.
        TypeError: for a keyword ``amp plan`` has no option for.
    """
    with _TempFiles() as tmp:
        args = ["plan"]
        if model is not None or setup.get("example") is None:
            if model is None or cluster is None:
                raise TypeError("plan() needs model= and cluster= (or example=)")
            args += _input_args(model, cluster, seq, profile, tmp)
        else:
            args += _profile_args(profile, tmp)
        if global_batch is not None:
            args += ["--global-batch", str(int(global_batch))]
        extra, flags = _setup_args(setup)
        args += extra + ["--json", "-q"]
        out = _check(*run_cli(args), flags, "plan")
    inputs = _Inputs(model, cluster, seq, profile, setup) if model is not None else None
    if inputs is None:
        inputs = _Inputs(None, None, None, profile, setup)
    return PlanResult(json.loads(out), inputs)


def _plan_inputs(
    plan_: Any, model: Any, cluster: Any, seq: Optional[int], profile: Any, setup: Dict[str, Any]
) -> Tuple[Any, Any, Optional[int], Any, Dict[str, Any]]:
    inputs = plan_._inputs if isinstance(plan_, Plan) else None
    if inputs is not None:
        model = inputs.model if model is None else model
        cluster = inputs.cluster if cluster is None else cluster
        seq = inputs.seq if seq is None else seq
        profile = inputs.profile if profile is None else profile
        setup = {**inputs.setup, **setup}
    return model, cluster, seq, profile, setup


def _plan_arg(plan_: Any, tmp: _TempFiles) -> str:
    if isinstance(plan_, (str, os.PathLike)):
        return os.fspath(plan_)
    if isinstance(plan_, (Plan, PlanResult)):
        return tmp.write("plan", plan_.to_dict())
    if isinstance(plan_, Mapping):
        return tmp.write("plan", dict(plan_))
    raise TypeError(f"plan must be a Plan, a dict or a path, not {type(plan_).__name__}")


def _inputs_for(
    plan_: Any,
    model: Any,
    cluster: Any,
    seq: Optional[int],
    profile: Any,
    setup: Dict[str, Any],
    tmp: _TempFiles,
) -> Tuple[List[str], Dict[str, Any]]:
    model, cluster, seq, profile, setup = _plan_inputs(plan_, model, cluster, seq, profile, setup)
    if model is None and cluster is None and setup.get("example") is not None:
        return _profile_args(profile, tmp), setup
    if cluster is None and setup.get("sailor_data") is not None:
        # A Sailor plan file: priced on the nodes it names (the model from
        # model= or its folder).
        named = [] if model is None else ["--model", _model_arg(model, tmp)]
        return named + _profile_args(profile, tmp), setup
    if model is None or cluster is None:
        raise TypeError("give model= and cluster= (or pass a Plan returned by plan())")
    return _input_args(model, cluster, seq, profile, tmp), setup


def evaluate(
    plan: Any,
    model: Any = None,
    cluster: Any = None,
    seq: Optional[int] = None,
    profile: Any = None,
    **setup: Any,
) -> Evaluation:
    """Prices one plan, as ``amp eval --json``.

    Args:
        plan: a :class:`Plan` from :func:`plan` (which remembers its model,
            cluster and profile; its JSON records its training setup), a
            :class:`PlanResult` (its
            fastest plan, or ``rank=N``), a plan dict, or a path to a plan
            JSON or an ``amp plan --json`` output.
        model, cluster, seq, profile: as for :func:`plan`; needed unless
            ``plan`` is a :class:`Plan` or :class:`PlanResult`.
        **setup: other ``amp eval`` options (``rank=2``, ``force=True``, or
            training-setup options for a plan that records none).

    Raises:
        AmpError: with the CLI's message.
    """
    if isinstance(plan, PlanResult) and plan.plans:
        plan_inputs: Any = plan.plans[0]
    else:
        plan_inputs = plan
    with _TempFiles() as tmp:
        path = _plan_arg(plan, tmp)
        inputs, setup = _inputs_for(plan_inputs, model, cluster, seq, profile, dict(setup), tmp)
        extra, flags = _setup_args(setup)
        out = _check(*run_cli(["eval", path, *inputs, *extra, "--json"]), flags, "evaluate")
    return Evaluation(json.loads(out))


def export(
    plan: Any,
    engine: str,
    out_dir: PathLike,
    model: Any = None,
    cluster: Any = None,
    seq: Optional[int] = None,
    profile: Any = None,
    **setup: Any,
) -> List[str]:
    """Writes launch files for ``plan`` with ``engine`` (``"megatron"``,
    ``"deepspeed"``, ``"torchtitan"``), or with ``"sailor"`` a Sailor
    ``plan_config`` file, into ``out_dir``, as ``amp export``.

    ``report="report.html"`` also writes the HTML report. Returns the paths
    written, as the CLI prints them.

    Raises:
        AmpError: with the CLI's message (for example when the engine cannot
            run the plan, with the engines that can).
    """
    plan_inputs = plan.plans[0] if isinstance(plan, PlanResult) and plan.plans else plan
    with _TempFiles() as tmp:
        path = _plan_arg(plan, tmp)
        inputs, setup = _inputs_for(plan_inputs, model, cluster, seq, profile, dict(setup), tmp)
        extra, flags = _setup_args(setup)
        args = ["export", path, *inputs, "--to", str(engine), "--out", os.fspath(out_dir), *extra]
        out = _check(*run_cli(args), flags, "export")
    return [line for line in out.splitlines() if line.strip()]


def validate(dirs: Union[PathLike, Sequence[PathLike]], **options: Any) -> Validation:
    """Compares predictions with measured runs, as ``amp validate --json``.

    Args:
        dirs: measured runs, one or several: a folder holding amp's
            ``runs.toml`` (your runs of amp's plans; see the README, "Your own
            runs"), the file itself, or a folder in the AMP or Sailor
            artifact's layout.
        **options: ``cost_model="amp-paper"`` and other ``amp validate`` options.

    Raises:
        AmpError: with the CLI's message.
    """
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    paths = [os.fspath(d) for d in dirs]
    extra, flags = _setup_args(options)
    out = _check(*run_cli(["validate", *paths, *extra, "--json"]), flags, "validate")
    return Validation(json.loads(out))


class Fit(_Record):
    """The result of :func:`fit`: ``amp fit --json``'s object (``fit`` with the
    fitted ``calibration``, ``neutral``, ``sets`` with each set's neutral,
    in-sample and leave-one-set-out figures, ``at_grid_edge``)."""

    @property
    def calibration(self) -> Dict[str, float]:
        """The constants fitted on every set given, as ``--out`` writes them."""
        return dict(self._data["fit"]["calibration"])

    def __repr__(self) -> str:
        return f"Fit(calibration={self.calibration})"


def fit(
    dirs: Union[PathLike, Sequence[PathLike]],
    out: Optional[PathLike] = None,
    leave_one_run_out: bool = False,
) -> Fit:
    """Fits the cost model's constants to measured runs, as ``amp fit --json``.

    Args:
        dirs: measured runs, as for :func:`validate`: a folder holding amp's
            ``runs.toml`` (your runs of amp's plans), the file itself, or a
            folder in the AMP or Sailor artifact's layout; one or several.
        out: also write the fitted constants there, for ``calibration=out``
            in :func:`plan`, :func:`evaluate` and :func:`validate`.
        leave_one_run_out: also predict each run with the constants fitted
            on all the others (each set's ``leave_one_run_out`` figures).

    Raises:
        AmpError: with the CLI's message.
    """
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    args = ["fit", *[os.fspath(d) for d in dirs], "--json"]
    if out is not None:
        args += ["--out", os.fspath(out)]
    if leave_one_run_out:
        args.append("--leave-one-run-out")
    out_text = _check(*run_cli(args), {}, "fit")
    return Fit(json.loads(out_text))


def layers(model: Any, seq: Optional[int] = None) -> Dict[str, Any]:
    """amp's layer list for ``model`` (as :func:`plan` reads it), and the
    transformer architecture behind it.

    Returns ``{"model": {"name", "shape", "layers": [...]}, "arch": {...} or
    None}``; each layer has ``name``, ``kind`` (``embedding``,
    ``transformer_block``, ``vocab_projection``, ``noop``, ``other``),
    ``params``, ``output_elems_per_sample``... ``arch`` is None for layer-list
    files and AMP's own models.
    """
    with _TempFiles() as tmp:
        spec = _model_arg(model, tmp)
        info: Dict[str, Any] = json.loads(_amp.model_info(spec, None if seq is None else int(seq)))
    return info
