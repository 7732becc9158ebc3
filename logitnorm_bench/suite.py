"""Suites: YAML files that enumerate grids, validated completely before anything runs.

Every error is one line ``FILE:KEY.PATH: got VALUE; expected ...``.  The format::

    suite: quick                # name
    version: 1
    defaults:
      train: {...}              # training recipe (TrainRecipe fields)
      evaluation: {...}         # evaluation protocol (EvalProtocol fields)
      loading: {...}            # how sets are read (Loading fields; never part of a run's identity)
    experiments:
      table1:
        matrix:                 # lists; the grid is their product (GitHub Actions semantics)
          id_dataset: [my_images]
          arch: [my_net]
          loss: [cross_entropy, my_loss]
          detector: [maxlogit]
          ood_dataset: [noise, other_images]
          seed: [0, 1]
        include: [...]          # GitHub Actions include (extend matching combinations or add new ones)
        exclude: [...]          # drop combinations matching every key given
        train: {...}            # overrides of defaults.train for this experiment
        evaluation: {...}

Matrix keys: ``id_dataset id_dataset_params arch arch_params loss loss_params detector detector_params
ood_dataset ood_dataset_params seed weights ood_group``.  ``*_params`` are mappings of the component's
parameters; ``weights`` evaluates given weights (a checkpoint path) instead of training.  Dataset
params are kept (and hashed) as what differs from the factory's defaults, so an empty mapping, or one
that repeats a default, names the same run as before dataset params existed.

A suite is named by a path or by a registered name (``register_suites``; the bundled ones are the
plugin ``ood_bench_suites``, i.e. the repository's ``suites/``): :func:`load_suite` takes either.

**extends.**  ``extends: paper`` (a registered name) or ``extends: base.yaml`` (a path, relative to
the extending file) makes a suite start from another one:

- ``suite``, ``version`` and ``description`` are the child's own (``suite`` is still required);
- ``defaults`` are deep-merged: mappings merge key by key, the child's values win, lists are replaced;
- ``experiments`` are merged by name: the parent's come first, in order, then the child's new ones.
  A child experiment named like a parent's extends it: ``matrix`` keys and ``select`` are replaced,
  ``train`` and ``evaluation`` deep-merged, and ``include`` / ``exclude`` entries appended after the
  parent's (a later include entry overwrites what an earlier one added, so it can change a
  parameter the parent set).  ``NAME: null`` drops the parent's experiment ``NAME``;
- ``inherit: [defaults]`` takes the parent's recipe but none of its experiments (the default is
  ``[defaults, experiments]``).

A parent is a suite in its own right and is validated on its own first, so an error inside it names
its file.  Chains are at most ``MAX_EXTENDS_DEPTH`` deep and may not loop.  ``--set`` applies to the
result.

**Limits**, so that a small file cannot exhaust memory or time (each is a one-line error):
YAML expanded (every alias written out) beyond ``MAX_YAML_SIZE`` nodes plus scalar characters or
nested beyond ``MAX_YAML_DEPTH`` levels, and a suite whose experiments expand to more than
``MAX_COMBINATIONS`` combinations (counted before expanding).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from logitnorm_bench.errors import ConfigError

MATRIX_KEYS = ("id_dataset", "arch", "arch_params", "loss", "loss_params", "detector",
               "detector_params", "ood_dataset", "seed", "weights", "ood_group",
               "id_dataset_params", "ood_dataset_params")
PARAMS_KEYS = ("arch_params", "loss_params", "detector_params", "id_dataset_params", "ood_dataset_params")
REQUIRED_KEYS = ("id_dataset", "arch", "loss", "detector", "ood_dataset", "seed")
TOP_KEYS = ("suite", "version", "description", "defaults", "experiments", "trackers")
INHERITABLE = ("defaults", "experiments")  #: what ``inherit:`` may list

MAX_EXTENDS_DEPTH = 8  #: parents in one ``extends`` chain
MAX_COMBINATIONS = 100_000  #: matrix combinations (times selection values) in one suite
MAX_YAML_SIZE = 1_000_000  #: nodes plus scalar characters, with every alias expanded
MAX_YAML_DEPTH = 50  #: nesting levels, with every alias expanded
SEED_LIMIT = 2 ** 32  #: numpy's seeds are 0 <= seed < 2**32


@dataclass
class FastPath:
    """The GPU fast path (see docs/performance.md); all off = the plain path."""

    channels_last: bool = False
    bf16: bool = False
    gpu_data: bool = False  #: hold the training set on the device and augment there
    compile: bool = False


@dataclass
class Outliers:
    """Auxiliary outliers seen in training (Outlier Exposure): ``train.outliers`` in a suite.

    Every training batch of ``batch_size`` ID images is followed by ``round(ratio * batch_size)``
    outliers (target -1), read in a seeded random order from a random offset each epoch, augmented as
    the ID images are (the official Outlier Exposure code: 256 outliers per 128 ID images).
    Only losses that declare ``uses_outliers`` take them.  Part of the run's identity when set.
    """

    dataset: str | None = None  #: a registered dataset; None = no outliers
    split: str = "train"  #: its split to draw from (never an evaluation set's test images)
    samples: int | None = None  #: a seeded sample of this many images; None = all
    ratio: float = 2.0  #: outliers per ID image in each batch


@dataclass
class TrainRecipe:
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "multistep"  #: multistep | cosine | constant
    milestones: list = field(default_factory=lambda: [80, 140])
    gamma: float = 0.1
    crop_padding: int = 4  #: random crop with this padding; 0 = no crop
    hflip: bool = True
    drop_last: bool = True
    max_batches_per_epoch: int | None = None  #: cap (smoke mode); None = the whole epoch
    #: ID training images kept out of training as ID validation data (for detectors that tune and for
    #: selections) when the ID dataset has no val split: a fixed sample, the same for every seed; 0 = none
    holdout: int = 0
    fast: FastPath = field(default_factory=FastPath)
    outliers: Outliers = field(default_factory=Outliers)  #: auxiliary training outliers (hashed when set)
    # Not part of the weights' identity:
    checkpoint_every: int = 1  #: epochs between resumable checkpoints
    monitor_samples: int = 256  #: images per set for the per-epoch logit-norm curve (Figure 1)
    monitor_ood: str | None = None  #: OOD set for that curve; None = ID only

    NOT_HASHED = ("checkpoint_every", "monitor_samples", "monitor_ood")


@dataclass
class EvalProtocol:
    ood_samples: int | None = 2000  #: images drawn per OOD set (seeded); None = all
    sample_seed: int = 0
    batch_size: int = 256
    id_val_samples: int = 1000  #: ID images for detectors that tune (from the val split, else train)
    calibration_bins: int = 15
    score_hist_bins: int = 30
    #: ID training images whose outputs fitted detectors get (seeded subsample; null = all); recorded
    fit_train_samples: int | None = 50000
    #: independent draws of each OOD sample (seeds sample_seed, sample_seed + 1, ...); metrics are
    #: their mean and records keep every draw (some official codes average 10 draws of 2,000)
    ood_draws: int = 1


@dataclass
class Loading:
    """How image sets are read (``defaults.loading``; ``--stream-above-mb``, ``--loader-workers``).

    Not part of any run's or cell's identity: streamed and in-memory sets give bitwise the same
    results (see docs/performance.md, "Streaming").
    """

    #: a set whose float32 tensor would exceed this many MiB is streamed through a DataLoader;
    #: smaller sets are loaded into memory once (the fast path); 0 streams every set
    stream_above_mb: float = 1024.0
    loader_workers: int = 2  #: DataLoader worker processes of a streamed set; 0 = read in the run's process


def check_loading(loading: "Loading", fname: str, key: str) -> None:
    if not loading.stream_above_mb >= 0:
        raise ConfigError(f"got {_show(loading.stream_above_mb)}; expected a non-negative number of MiB",
                          file=fname, key=f"{key}.stream_above_mb")
    if loading.loader_workers < 0:
        raise ConfigError(f"got {_show(loading.loader_workers)}; expected a non-negative integer",
                          file=fname, key=f"{key}.loader_workers")


@dataclass
class Combo:
    """One matrix combination, normalised."""

    id_dataset: str
    arch: str
    loss: str
    detector: str
    ood_dataset: str
    seed: int
    arch_params: dict = field(default_factory=dict)
    loss_params: dict = field(default_factory=dict)
    detector_params: dict = field(default_factory=dict)
    weights: str | None = None
    ood_group: str | None = None  #: a label (e.g. near, far): the leaderboard adds an ``average:<group>`` row
    id_dataset_params: dict = field(default_factory=dict)  #: resolved: only what differs from the defaults
    ood_dataset_params: dict = field(default_factory=dict)



@dataclass
class Selection:
    """Choose one parameter value per grid group on validation data only, as the paper chooses tau.

    Every value is trained; each candidate is scored with the cell's detector on the ID
    validation images against ``ood_dataset``'s ``val`` split (the paper: Gaussian noise); the value
    with the best mean ``metric`` over seeds is then evaluated on the test OOD sets.
    """

    param: str  #: "<arch|loss|detector>_params.<name>", e.g. loss_params.tau
    values: list
    ood_dataset: str  #: an OOD set with a ``val`` split (the paper selects tau on Gaussian noise)
    metric: str = "fpr95"


@dataclass
class Experiment:
    name: str
    combos: list[Combo]
    train: TrainRecipe
    evaluation: EvalProtocol
    select: Selection | None = None
    #: with ``select``: per combination, one combination per candidate value (set by check_names)
    candidates: list[list[Combo]] | None = None


@dataclass
class Suite:
    name: str
    version: Any
    path: str
    experiments: list[Experiment]
    #: True once check_names has checked every name and put every combination's params in resolved form
    resolved: bool = False
    #: ``[(name, options)]``: the experiment trackers told about every training run (``trackers:``)
    trackers: list = field(default_factory=list)
    loading: Loading = field(default_factory=Loading)  #: ``defaults.loading``


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that gives one key twice (plain PyYAML silently keeps the last)."""


class YamlLimitError(yaml.composer.ComposerError):
    """A document too large or too deep once its aliases are expanded (or whose aliases loop)."""


class SuiteLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects duplicate mapping keys, reads YAML 1.2 floats, and refuses
    documents beyond ``MAX_YAML_SIZE`` / ``MAX_YAML_DEPTH`` before building any Python object.

    PyYAML follows YAML 1.1, where ``5e-4`` (no dot) is a string; YAML 1.2, JSON and every
    user read it as a number, so it resolves as a float here too (a ``loss_params`` value such
    as ``tau: 4e-2`` must reach the loss as a number).

    An alias is one shared node, cheap to load, but everything downstream (copies, error messages,
    JSON) writes it out: a 1 KB "billion laughs" would expand to gigabytes.  The composed node
    graph is measured as if expanded (each node once, memoised) before it is constructed.
    """

    _depth = 0

    def compose_node(self, parent, index):
        # The composer recurses once per level: stop long before Python's recursion limit.
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlLimitError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep",
                                     self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<' merges may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # unhashable key: the base class reports it
                    continue
                if first is not key_node.start_mark:
                    err = DuplicateKeyError("while constructing a mapping", node.start_mark,
                                            f"duplicate key {key!r} (first given at line {first.line + 1})",
                                            key_node.start_mark)
                    err.key, err.first_line = key, first.line + 1
                    raise err
        return super().construct_mapping(node, deep=deep)


def _check_expanded_size(root: yaml.Node) -> None:
    """Size (nodes + scalar characters) and depth of ``root`` with every alias written out.

    Iterative, each node visited once: aliases make the graph a DAG whose expansion may be
    exponential, and a recursive alias (a node inside itself) makes it a cycle.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_YAML_SIZE:
                raise YamlLimitError(None, None, f"the YAML expands to more than {MAX_YAML_SIZE:,} nodes and "
                                     "characters once its aliases are written out; expected a suite "
                                     "without aliases that multiply", node.start_mark)
            if depth[key] > MAX_YAML_DEPTH:
                raise YamlLimitError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep once its "
                                     "aliases are written out", node.start_mark)
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise YamlLimitError(None, None, "a recursive alias (a node that contains itself)", node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            size[key], depth[key] = 1 + len(node.value), 1
            continue
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


SuiteLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_yaml(text: str) -> Any:
    """Parse suite YAML (duplicate keys rejected, YAML 1.2 floats)."""
    return yaml.load(text, Loader=SuiteLoader)  # noqa: S506 - a SafeLoader subclass


def load_suite(suite: str | Path, overrides: list[str] = (), plugins=None) -> Suite:
    """Read, override (``--set``), validate and expand a suite given by path or registered name.

    ``plugins`` (a :class:`~logitnorm_bench.plugins.Plugins`) also checks every component name;
    names of suites (the argument, ``extends``) are looked up in it, or in ``get_plugins()``.
    """
    path = find_suite(suite, plugins)
    return parse_suite(read_suite_file(path), str(path), overrides, plugins)


def find_suite(suite: str | Path, plugins=None, *, base: Path | None = None, file: str | None = None,
               key: str | None = None) -> Path:
    """The file of a suite given as a path or as a registered name (``ood-bench list suites``).

    A path is an existing file, or a string with a path separator or a ``.yaml`` / ``.yml``
    suffix; anything else is a name.  ``base`` is the folder relative paths start from (the
    extending file's, for ``extends``); ``file`` and ``key`` say where the reference was written.
    """
    text = str(suite)
    path = Path(text).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    looks_like_path = isinstance(suite, Path) or "/" in text or "\\" in text or path.suffix in (".yaml", ".yml")
    if path.is_file() or looks_like_path:
        if path.is_dir():
            raise ConfigError(f"{path} is a folder; expected a suite YAML file", file=file, key=key)
        if not path.is_file():
            raise ConfigError(f"suite file not found: {path}", file=file, key=key)
        return path
    if plugins is None:
        from logitnorm_bench.plugins import get_plugins

        plugins = get_plugins()
    registry = plugins.registry("suites")
    if text not in registry:
        raise ConfigError(f"no file {text!r}, and {registry.unknown_message(text)}", file=file, key=key)
    entry = registry.get(text)
    found = Path(entry.factory())
    if not found.is_file():
        raise ConfigError(f"suite {text!r} of plugin '{entry.plugin}' ({entry.distribution}) points to "
                          f"{found}, which is not a file", file=file, key=key)
    return found


def read_suite_file(path: Path) -> Any:
    """The parsed YAML of a suite file; every problem is a one-line :class:`ConfigError` naming it."""
    fname = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          "expected a YAML suite file", file=fname) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the suite file ({exc.strerror})", file=fname) from None
    try:
        return read_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if isinstance(exc, DuplicateKeyError):
            raise ConfigError(f"duplicate key {exc.key!r}{where} (first given at line {exc.first_line}); "
                              "expected each key once per mapping", file=fname) from None
        if isinstance(exc, YamlLimitError):
            raise ConfigError(f"{problem} ({where.strip()})", file=fname) from None
        raise ConfigError(f"malformed YAML{where}: {problem}", file=fname) from None


def parse_suite(doc: Any, fname: str, overrides: list[str] = (), plugins=None) -> Suite:
    """Validate and expand a suite document read from ``fname`` (``extends`` is resolved from there)."""
    doc = copy.deepcopy(_resolve_extends(doc, fname, plugins, chain=()))
    recipe_overrides = []
    for item in overrides:
        key, value = parse_override(item)
        if key.split(".")[0] in ("extends", "inherit"):
            raise ConfigError(f"--set {key}: expected {key} in the suite file (it is resolved before --set)",
                              file=fname, key=key)
        if key.split(".")[0] in ("train", "evaluation"):
            recipe_overrides.append((key, value))  # applies to every experiment, after merging
        else:
            _set_path(doc, key, value, fname)
    _check_keys(doc, set(TOP_KEYS), fname, "")
    name = doc.get("suite")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"got {_show(name)}; expected the suite's name (a string)", file=fname, key="suite")
    defaults = doc.get("defaults") or {}
    _expect(defaults, dict, fname, "defaults", "a mapping with train / evaluation / loading")
    _check_keys(defaults, {"train", "evaluation", "loading"}, fname, "defaults")
    loading = build_dataclass(Loading, defaults.get("loading") or {}, fname, "defaults.loading")
    check_loading(loading, fname, "defaults.loading")
    for section, cls in (("train", TrainRecipe), ("evaluation", EvalProtocol)):
        # On their own first: an error in the defaults names defaults.SECTION.FIELD.
        _recipe(cls, {}, defaults, section, recipe_overrides, fname, "defaults")
    experiments = doc.get("experiments")
    if not isinstance(experiments, dict) or not experiments:
        raise ConfigError(f"got {_show(experiments)}; expected a mapping of experiment name to "
                          "experiment (at least one)", file=fname, key="experiments")
    out = []
    budget = MAX_COMBINATIONS  # what the remaining experiments may still expand to
    for exp_name, exp in experiments.items():
        key = f"experiments.{exp_name}"
        _expect(exp, dict, fname, key, "a mapping with matrix (and include, exclude, train, evaluation)")
        _check_keys(exp, {"matrix", "include", "exclude", "train", "evaluation", "description", "select"},
                    fname, key)
        train = _recipe(TrainRecipe, defaults, exp, "train", recipe_overrides, fname, key)
        evaluation = _recipe(EvalProtocol, defaults, exp, "evaluation", recipe_overrides, fname, key)
        select = _selection(exp.get("select"), fname, f"{key}.select")
        per_combo = len(select.values) if select else 1  # every candidate value is a combination too
        combos = expand_matrix(exp, fname, key, limit=budget // per_combo)
        budget -= len(combos) * per_combo
        out.append(Experiment(str(exp_name), combos, train, evaluation, select))
    from logitnorm_bench.trackers import parse_specs

    suite = Suite(name=name, version=doc.get("version"), path=fname, experiments=out,
                  trackers=parse_specs(doc.get("trackers"), file=fname), loading=loading)
    if plugins is not None:
        check_names(suite, plugins)
    return suite


# ------------------------------------------------------------------------------------------
# extends (see the module docstring)
# ------------------------------------------------------------------------------------------


def _resolve_extends(doc: Any, fname: str, plugins, chain: tuple[Path, ...]) -> Any:
    """``doc`` with its ``extends`` chain merged in (and ``extends`` / ``inherit`` removed)."""
    if not isinstance(doc, dict):
        raise ConfigError(f"got {_show(doc)}; expected a mapping with keys suite, experiments", file=fname)
    if "extends" not in doc:
        if "inherit" in doc:
            raise ConfigError("inherit given without extends; expected extends: PARENT beside it",
                              file=fname, key="inherit")
        return doc
    child = dict(doc)
    ref = child.pop("extends")
    inherit = child.pop("inherit", list(INHERITABLE))
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"got {_show(ref)}; expected a suite name or a path to a suite file",
                          file=fname, key="extends")
    if not isinstance(inherit, list) or not all(isinstance(i, str) and i in INHERITABLE for i in inherit):
        raise ConfigError(f"got {_show(inherit)}; expected a list of {', '.join(INHERITABLE)}",
                          file=fname, key="inherit")
    here = Path(fname).resolve()  # for loops; messages name files as they were given
    parent = find_suite(ref, plugins, base=Path(fname).parent, file=fname, key="extends")
    chain = (*chain, here)
    if parent.resolve() in chain:
        loop = " -> ".join(p.name for p in (*chain, parent.resolve()))
        raise ConfigError(f"extends {ref!r} loops ({loop}); expected a chain of different suites",
                          file=fname, key="extends")
    if len(chain) > MAX_EXTENDS_DEPTH:
        raise ConfigError(f"extends {ref!r} goes more than {MAX_EXTENDS_DEPTH} suites deep; expected a "
                          "shorter chain", file=fname, key="extends")
    parent_fname = str(parent)
    parent_doc = _resolve_extends(read_suite_file(parent), parent_fname, plugins, chain)
    parse_suite(parent_doc, parent_fname, (), plugins)  # a parent is a suite itself: its errors name its file
    out = {k: v for k, v in child.items()}
    if "defaults" in inherit:
        out["defaults"] = _merge(parent_doc.get("defaults") or {}, child.get("defaults") or {}, fname, "defaults")
    if "experiments" in inherit:
        out["experiments"] = _inherit_experiments(parent_doc["experiments"], child.get("experiments"), fname)
    return out


def _inherit_experiments(parent: dict, child: Any, fname: str) -> dict:
    if child is None:
        return copy.deepcopy(parent)
    _expect(child, dict, fname, "experiments", "a mapping of experiment name to experiment")
    out = copy.deepcopy(parent)
    for name, exp in child.items():
        key = f"experiments.{name}"
        if exp is None:
            if name not in out:
                raise ConfigError(f"null drops an inherited experiment, but the parent has no '{name}'; "
                                  f"expected one of {', '.join(map(str, out))}", file=fname, key=key)
            del out[name]
        elif name in out:
            _expect(exp, dict, fname, key, "a mapping that extends the parent's experiment (or null)")
            out[name] = _extend_experiment(out[name], exp, fname, key)
        else:
            out[name] = copy.deepcopy(exp)
    return out


def _extend_experiment(parent: dict, child: dict, fname: str, key: str) -> dict:
    out = copy.deepcopy(parent)
    for k, v in child.items():
        if k in ("include", "exclude"):  # appended: GitHub's later include entries win over earlier ones
            out[k] = _list_of_maps(out.get(k), fname, f"{key}.{k}") + copy.deepcopy(
                _list_of_maps(v, fname, f"{key}.{k}"))
        elif k in ("matrix", "train", "evaluation") and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, fname, f"{key}.{k}")  # matrix values are lists: replaced key by key
        else:
            out[k] = copy.deepcopy(v)
    return out


def _recipe(cls, base: dict, doc: dict, section: str, overrides: list, fname: str, key: str):
    """``base[section]`` overridden by ``doc[section]``, then by ``--set section.*``; validated."""
    where = f"{key}.{section}"
    merged = _merge(base.get(section) or {}, doc.get(section) or {}, fname, where)
    for okey, value in overrides:
        osection, _, rest = okey.partition(".")
        if osection != section:
            continue
        if rest:
            _set_path(merged, rest, value, fname)
        elif isinstance(value, dict):  # --set train={epochs: 1, lr: 0.01}
            merged = _merge(merged, value, fname, where)
        else:
            raise ConfigError(f"--set {okey}={value!r}: expected {section}.FIELD=VALUE or "
                              f"{section}={{FIELD: VALUE, ...}}", file=fname, key=okey)
    try:
        obj = build_dataclass(cls, merged, fname, where)
        (check_train if cls is TrainRecipe else check_evaluation)(obj, fname, where)
    except ConfigError as exc:
        # A bad value given by --set is named as the user typed it, not by where it landed.
        field_path = (exc.key or "").removeprefix(where + ".")
        for okey, value in reversed(overrides):
            if okey == f"{section}.{field_path}" or okey == section:
                message = str(exc).removeprefix(f"{exc.file}:{exc.key}: ")
                raise ConfigError(f"{message} (from --set {okey}={_show(value)})", file=fname,
                                  key=f"{section}.{field_path}") from None
        raise
    return obj


def _selection(doc: Any, fname: str, key: str) -> Selection | None:
    if doc is None:
        return None
    _expect(doc, dict, fname, key, "a mapping with param, values, ood_dataset, metric")
    _check_keys(doc, {"param", "values", "ood_dataset", "metric"}, fname, key)
    param = doc.get("param")
    prefix, _, name = str(param).partition(".")
    if prefix not in ("arch_params", "loss_params", "detector_params") or not name or "." in name:
        raise ConfigError(f"got {_show(param)}; expected arch_params.NAME, loss_params.NAME or "
                          "detector_params.NAME", file=fname, key=f"{key}.param")
    values = doc.get("values")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"got {_show(values)}; expected a non-empty list of candidate values",
                          file=fname, key=f"{key}.values")
    _check_finite(values, fname, f"{key}.values")
    from logitnorm_bench.metrics import metrics_of

    selectable = [m.name for m in metrics_of("cell")]
    metric = doc.get("metric", "fpr95")
    if metric not in selectable:
        raise ConfigError(f"got {_show(metric)}; expected one of {', '.join(selectable)}",
                          file=fname, key=f"{key}.metric")
    ood = doc.get("ood_dataset")
    if not isinstance(ood, str) or not ood:
        raise ConfigError(f"got {_show(ood)}; expected the name of the OOD dataset whose val split the values "
                          "are compared on", file=fname, key=f"{key}.ood_dataset")
    return Selection(param=param, values=values, ood_dataset=ood, metric=metric)


# ------------------------------------------------------------------------------------------
# Matrix expansion (GitHub Actions semantics)
# ------------------------------------------------------------------------------------------


def expand_matrix(exp: dict, fname: str, key: str, limit: int = MAX_COMBINATIONS) -> list[Combo]:
    matrix = exp.get("matrix")
    if not isinstance(matrix, dict) or not matrix:
        raise ConfigError(f"got {_show(matrix)}; expected a non-empty mapping of matrix key to list",
                          file=fname, key=f"{key}.matrix")
    _check_keys(matrix, set(MATRIX_KEYS), fname, f"{key}.matrix")
    for mkey, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"got {_show(values)}; expected a non-empty list", file=fname,
                              key=f"{key}.matrix.{mkey}")
    excludes = _list_of_maps(exp.get("exclude"), fname, f"{key}.exclude")
    for i, ex in enumerate(excludes):
        _check_keys(ex, set(MATRIX_KEYS), fname, f"{key}.exclude[{i}]")
        for k in ex:
            if k not in matrix:  # as GitHub: it could never match, so it is a mistake
                raise ConfigError(f"exclude key '{k}' is not a key of the matrix; expected one of "
                                  f"{', '.join(matrix)}", file=fname, key=f"{key}.exclude[{i}].{k}")
    includes = _list_of_maps(exp.get("include"), fname, f"{key}.include")
    for i, inc in enumerate(includes):
        _check_keys(inc, set(MATRIX_KEYS), fname, f"{key}.include[{i}]")
    count = math.prod(len(values) for values in matrix.values()) + len(includes)  # an upper bound
    if count > limit:
        rest = "" if limit == MAX_COMBINATIONS else " with the other experiments"
        raise ConfigError(f"the matrix expands to {count:,} combinations{rest}; expected at most "
                          f"{MAX_COMBINATIONS:,} in a suite (split it into several suites)",
                          file=fname, key=f"{key}.matrix")
    combos = expand_grid(matrix, includes, excludes)

    if not combos:
        raise ConfigError("the matrix expands to no combination (everything excluded?)",
                          file=fname, key=f"{key}.matrix")
    return [_combo(c, fname, f"{key}.matrix") for c in combos]


def expand_grid(matrix: dict[str, list], include: list[dict] = (), exclude: list[dict] = ()) -> list[dict]:
    """GitHub Actions' matrix expansion, on plain dicts (no validation).

    1. The product of the matrix lists, in key order (the last key varies fastest).
    2. ``exclude``: drop every combination that matches all the key/values an entry gives.
    3. ``include``, entry by entry: add its key/values to every combination (of steps 1-2) where
       doing so overwrites none of the *original matrix* values; values added by an earlier include
       may be overwritten.  An entry that fits no combination becomes a new combination of its
       own; those are appended after all entries are processed, and later entries never extend them
       (as GitHub's documented fruit/animal example shows, and as nektos/act implements it).
    """
    names = list(matrix)
    combos = [dict(zip(names, vals)) for vals in itertools.product(*(matrix[n] for n in names))]
    for ex in exclude:
        combos = [c for c in combos if not all(k in c and c[k] == v for k, v in ex.items())]
    original = set(names)
    extra = []
    for inc in include:
        matched = False
        for c in combos:
            if all(c[k] == v for k, v in inc.items() if k in original):
                c.update(copy.deepcopy(inc))
                matched = True
        if not matched:
            extra.append(copy.deepcopy(inc))
    return combos + extra


def _combo(c: dict, fname: str, key: str) -> Combo:
    for req in REQUIRED_KEYS:
        if req not in c:
            raise ConfigError(f"a combination has no '{req}' ({_show(c)}); expected every combination "
                              f"to set {', '.join(REQUIRED_KEYS)}", file=fname, key=key)
    for name_key in ("id_dataset", "arch", "loss", "detector", "ood_dataset"):
        if not isinstance(c[name_key], str) or not c[name_key]:
            raise ConfigError(f"got {_show(c[name_key])}; expected a component name (string)",
                              file=fname, key=f"{key}.{name_key}")
    for pkey in PARAMS_KEYS:
        if c.get(pkey) is None:
            c[pkey] = {}
        if not isinstance(c[pkey], dict):
            raise ConfigError(f"got {_show(c[pkey])}; expected a mapping of parameter to value",
                              file=fname, key=f"{key}.{pkey}")
        _check_finite(c[pkey], fname, f"{key}.{pkey}")
    seed = c["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"got {_show(seed)}; expected a non-negative integer seed below 2**32", file=fname,
                          key=f"{key}.seed")
    # One dataset with other params (two image_folder roots) is another dataset.
    if c["ood_dataset"] == c["id_dataset"] and c["ood_dataset_params"] == c["id_dataset_params"]:
        raise ConfigError(f"got ood_dataset {c['ood_dataset']!r} equal to id_dataset; expected an OOD "
                          "dataset different from the ID dataset (another name, or other "
                          "ood_dataset_params)", file=fname, key=f"{key}.ood_dataset")
    weights = c.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise ConfigError(f"got {_show(weights)}; expected a checkpoint path (string)", file=fname,
                          key=f"{key}.weights")
    group = c.get("ood_group")
    if group is not None and (not isinstance(group, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", group)):
        raise ConfigError(f"got {_show(group)}; expected a group label of ASCII letters, numerals, _ . -",
                          file=fname, key=f"{key}.ood_group")
    return Combo(**{k: c.get(k) for k in MATRIX_KEYS if k in c})


def _list_of_maps(value: Any, fname: str, key: str) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"got {_show(value)}; expected a list of mappings", file=fname, key=key)
    return value


# ------------------------------------------------------------------------------------------
# Recipe validation
# ------------------------------------------------------------------------------------------


def build_dataclass(cls, doc: dict, fname: str, key: str):
    """Build a dataclass from a mapping, checking unknown keys and types."""
    _expect(doc, dict, fname, key, f"a mapping of {cls.__name__} fields")
    known = {f.name: f for f in fields(cls)}
    _check_keys(doc, set(known), fname, key)
    defaults = cls()
    kwargs = {}
    for name, value in doc.items():
        default = getattr(defaults, name)
        if hasattr(default, "__dataclass_fields__"):
            kwargs[name] = build_dataclass(type(default), value or {}, fname, f"{key}.{name}")
            continue
        ftype = str(known[name].type)
        if value is None and "None" in ftype:
            kwargs[name] = None
            continue
        if default is None and ftype.startswith("str") and isinstance(value, str):
            kwargs[name] = value
            continue
        kwargs[name] = _coerce(value, default, fname, f"{key}.{name}")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, fname: str, key: str) -> Any:
    if default is None:
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise ConfigError(f"got {_show(value)}; expected an integer or null", file=fname, key=key)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"got {_show(value)}; expected true or false", file=fname, key=key)
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"got {_show(value)}; expected an integer", file=fname, key=key)
    if isinstance(default, float):
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 5e-4 as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"got {_show(value)}; expected a number", file=fname, key=key)
        if not math.isfinite(number):  # nan passes every "> 0" check and poisons the training
            raise ConfigError(f"got {_show(value)}; expected a finite number", file=fname, key=key)
        return number
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise ConfigError(f"got {_show(value)}; expected a string", file=fname, key=key)
    if isinstance(default, list):
        if isinstance(value, list):
            return value
        raise ConfigError(f"got {_show(value)}; expected a list", file=fname, key=key)
    return value


def check_train(t: TrainRecipe, fname: str, key: str) -> None:
    def bad(field_name, expected):
        raise ConfigError(f"got {_show(getattr(t, field_name))}; expected {expected}", file=fname,
                          key=f"{key}.{field_name}")

    if t.epochs <= 0:
        bad("epochs", "a positive integer")
    if t.batch_size <= 0:
        bad("batch_size", "a positive integer")
    if t.lr <= 0:
        bad("lr", "a positive number")
    if not 0 <= t.momentum < 1:
        bad("momentum", "a number in [0, 1)")
    if t.weight_decay < 0:
        bad("weight_decay", "a non-negative number")
    if t.schedule not in ("multistep", "cosine", "constant"):
        bad("schedule", "one of multistep, cosine, constant")
    if not all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in t.milestones):
        bad("milestones", "a list of positive integer epochs")
    if not 0 < t.gamma <= 1:
        bad("gamma", "a number in (0, 1]")
    if t.crop_padding < 0:
        bad("crop_padding", "a non-negative integer")
    if t.max_batches_per_epoch is not None and t.max_batches_per_epoch <= 0:
        bad("max_batches_per_epoch", "a positive integer or null")
    if t.checkpoint_every <= 0:
        bad("checkpoint_every", "a positive integer")
    if t.monitor_samples <= 0:
        bad("monitor_samples", "a positive integer")
    o = t.outliers
    if o.dataset is not None:
        if o.samples is not None and o.samples <= 0:
            raise ConfigError(f"got {o.samples}; expected a positive integer or null (all)", file=fname,
                              key=f"{key}.outliers.samples")
        if not (o.ratio > 0 and o.ratio * t.batch_size >= 1):
            raise ConfigError(f"got {o.ratio}; expected a ratio > 0 giving at least one outlier per batch",
                              file=fname, key=f"{key}.outliers.ratio")
    if isinstance(t.holdout, bool) or not isinstance(t.holdout, int) or t.holdout < 0:
        bad("holdout", "a non-negative integer (training images kept out of training)")


def check_evaluation(e: EvalProtocol, fname: str, key: str) -> None:
    for name in ("batch_size", "id_val_samples", "calibration_bins", "score_hist_bins", "ood_draws"):
        if getattr(e, name) <= 0:
            raise ConfigError(f"got {getattr(e, name)}; expected a positive integer", file=fname,
                              key=f"{key}.{name}")
    for name in ("ood_samples", "fit_train_samples"):
        if getattr(e, name) is not None and getattr(e, name) <= 0:
            raise ConfigError(f"got {getattr(e, name)}; expected a positive integer or null (all)",
                              file=fname, key=f"{key}.{name}")
    if e.ood_draws > 1 and e.ood_samples is None:
        raise ConfigError("ood_draws > 1 needs ood_samples: every draw of the whole set would be the same",
                          file=fname, key=f"{key}.ood_draws")
    if not 0 <= e.sample_seed < SEED_LIMIT:
        raise ConfigError(f"got {e.sample_seed}; expected a non-negative integer seed below 2**32",
                          file=fname, key=f"{key}.sample_seed")


def check_names(suite: Suite, plugins) -> None:
    """Check every component name against the registries and resolve every parameter mapping.

    The one place parameters are resolved (:func:`logitnorm_bench.params.resolve_params`: factory
    defaults filled in, ints made floats where the default is a float): each combination's
    ``*_params`` are replaced by their resolved form, and a selection's candidates are built, so
    the plan hashes exactly what was checked.  Losses and detectors are built once per distinct
    parameter set (cheap), which catches values their factories reject (``tau <= 0`` and the like).
    """
    from logitnorm_bench.params import resolve_dataset_params, resolve_params

    resolved: dict[tuple, dict] = {}
    built: set[tuple] = set()

    def resolve(c: Combo, key: str) -> Combo:
        from logitnorm_bench.weights import TORCHVISION_PREFIX, ZOO_PREFIX, check_torchvision_weights, check_zoo_weights

        if c.weights and c.weights.startswith(TORCHVISION_PREFIX):
            pass  # checked below, once the names and parameters are resolved
        elif c.weights and c.weights.startswith(ZOO_PREFIX):
            try:
                check_zoo_weights(c.weights, id_dataset=c.id_dataset, arch=c.arch, loss=c.loss)
            except ConfigError as exc:
                raise ConfigError(str(exc), file=suite.path, key=f"{key}.weights") from None
        elif c.weights and not Path(c.weights).expanduser().is_file():
            raise ConfigError(f"weights file not found: {c.weights!r}", file=suite.path, key=f"{key}.weights")
        out = {}
        for kind, name_key, params_key in (("datasets", "id_dataset", "id_dataset_params"),
                                           ("datasets", "ood_dataset", "ood_dataset_params"),
                                           ("architectures", "arch", "arch_params"),
                                           ("losses", "loss", "loss_params"),
                                           ("detectors", "detector", "detector_params")):
            reg = plugins.registry(kind)
            name = getattr(c, name_key)
            if name not in reg:
                raise ConfigError(reg.unknown_message(name), file=suite.path, key=f"{key}.{name_key}")
            # `dist:name` and `name` are one component: the plan names (and hashes) it one way.
            name = out[name_key] = reg.canonical(name)
            if not params_key:
                continue
            given = getattr(c, params_key)
            cache_key = (kind, name, repr(sorted(given.items())))
            if cache_key not in resolved:
                resolver = resolve_dataset_params if kind == "datasets" else resolve_params
                resolved[cache_key] = resolver(reg.get(name), given, file=suite.path, key=f"{key}.{params_key}")
            params = out[params_key] = resolved[cache_key]
            built_key = (kind, name, repr(sorted(params.items())))
            if kind in ("losses", "detectors") and built_key not in built:
                built.add(built_key)
                try:
                    reg.build(name, **params)
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"{name} rejects {_show(params)}: {exc}", file=suite.path,
                                      key=f"{key}.{params_key}") from None
        # The weights' own contradiction first: it names the cause more precisely than a failed build.
        if c.weights and c.weights.startswith(TORCHVISION_PREFIX):
            try:
                check_torchvision_weights(c.weights, id_dataset=out["id_dataset"], arch=out["arch"],
                                          arch_params=out["arch_params"], loss=out["loss"], plugins=plugins,
                                          id_dataset_params=out["id_dataset_params"])
            except ConfigError as exc:
                raise ConfigError(str(exc), file=suite.path, key=f"{key}.weights") from None
        arch_key = (out["arch"], repr(sorted(out["arch_params"].items())), out["id_dataset"],
                    repr(sorted(out["id_dataset_params"].items())))
        if arch_key not in built:
            built.add(arch_key)
            check_architecture(plugins, out["arch"], out["arch_params"], out["id_dataset"],
                               out["id_dataset_params"], file=suite.path,
                               key=f"{key}.arch_params" if c.arch_params else f"{key}.arch", given=c.arch_params)
        return dataclasses.replace(c, **out)

    if suite.resolved:
        return
    for exp in suite.experiments:
        monitor = exp.train.monitor_ood
        if monitor is not None and monitor not in plugins.registry("datasets"):
            # Checked here: at run time a bad name only disables the logit-norm curve, with a warning.
            raise ConfigError(plugins.registry("datasets").unknown_message(monitor), file=suite.path,
                              key=f"experiments.{exp.name}.train.monitor_ood")
        if monitor is not None:
            _needs_no_params(plugins, monitor, suite.path, f"experiments.{exp.name}.train.monitor_ood")
        if exp.select is not None and exp.select.ood_dataset not in plugins.registry("datasets"):
            raise ConfigError(plugins.registry("datasets").unknown_message(exp.select.ood_dataset),
                              file=suite.path, key=f"experiments.{exp.name}.select.ood_dataset")
        if exp.select is not None:
            exp.select.ood_dataset = plugins.registry("datasets").canonical(exp.select.ood_dataset)
            _needs_no_params(plugins, exp.select.ood_dataset, suite.path, f"experiments.{exp.name}.select.ood_dataset")
        key = f"experiments.{exp.name}.matrix"
        if exp.select is not None:  # every candidate value must be valid too
            exp.candidates = [[resolve(with_param(c, exp.select.param, v), key) for v in exp.select.values]
                              for c in exp.combos]
        exp.combos = [resolve(c, key) for c in exp.combos]
        _check_outliers(exp, suite.path, plugins)
    for name, _ in suite.trackers:
        if name not in plugins.trackers:
            raise ConfigError(plugins.trackers.unknown_message(name), file=suite.path, key="trackers")
    suite.resolved = True


def check_architecture(plugins, arch: str, arch_params: dict, id_dataset: str, id_dataset_params: dict, *,
                       file: str | None, key: str, given: dict | None = None) -> None:
    """Build the architecture for its ID dataset and run one dry forward pass, before anything runs.

    On the meta device, so it costs no memory or compute even for ImageNet-sized networks, and so
    ``arch_params: {width: 0}`` or an architecture that cannot take the dataset's image size fails
    at plan time (exit 2) rather than after the data is loaded.  An error on meta is confirmed by
    the same build on the CPU (a few operations have no meta kernel): only an architecture that
    fails there too is refused.  A dataset whose source cannot be built yet (its data missing) is
    left to the missing-data check.
    """
    import torch

    try:
        source = plugins.registry("datasets").build(id_dataset, **id_dataset_params)
        num_classes, input_shape = source.num_classes, tuple(int(v) for v in source.input_shape)
    except Exception:  # noqa: BLE001 -- the data check names this dataset's problem, with its own line
        return
    if not num_classes:
        return  # an OOD-only set as ID data is refused elsewhere

    def build_and_run(device: str) -> None:
        with torch.device(device):
            net = plugins.architectures.build(arch, num_classes=num_classes, input_shape=input_shape, **arch_params)
            net.eval()
            with torch.no_grad():
                out = net(torch.zeros((2, *input_shape)))
        logits = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, num_classes):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"its output for 2 images is {got}; expected logits of shape (2, {num_classes})")

    try:
        build_and_run("meta")
    except Exception:  # noqa: BLE001 -- confirmed on the CPU below before anything is refused
        try:
            build_and_run("cpu")
        except Exception as exc:  # noqa: BLE001 -- any error of a plugin's constructor or forward is a config error
            shown = f" with {_show(given)}" if given else ""  # the params the suite set, not the defaults
            raise ConfigError(f"{arch}{shown} cannot be built for {id_dataset} ({num_classes} classes, input "
                              f"{'x'.join(map(str, input_shape))}): {type(exc).__name__}: {exc}",
                              file=file, key=key) from None


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def parse_override(item: str) -> tuple[str, Any]:
    """``train.epochs=1`` -> (``train.epochs``, 1); the value is read as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=1")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected a dotted key such as train.epochs")
    try:
        value = read_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
    return key, value


def _set_path(doc: dict, dotted: str, value: Any, fname: str) -> None:
    parts = dotted.split(".")
    node = doc
    for p in parts[:-1]:
        nxt = node.get(p) if isinstance(node, dict) else None
        if nxt is None:
            nxt = {}
            node[p] = nxt
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: '{p}' is not a mapping", file=fname, key=dotted)
        node = nxt
    node[parts[-1]] = value


def _merge(base: dict, over: dict, fname: str, key: str) -> dict:
    _expect(base, dict, fname, key, "a mapping")
    _expect(over, dict, fname, key, "a mapping")
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, fname, f"{key}.{k}")
        else:
            out[k] = copy.deepcopy(v)
    return out


def _check_keys(doc: dict, allowed: set[str], fname: str, key: str) -> None:
    for k in doc:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), sorted(allowed), n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown key '{k}'{hint}; expected one of {', '.join(sorted(allowed))}",
                              file=fname, key=f"{key}.{k}" if key else str(k))


def _check_finite(value: Any, fname: str, key: str) -> None:
    """Every float in ``value`` (a parameter mapping or list, nested) is finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"got {_show(value)}; expected a finite number", file=fname, key=key)
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, fname, f"{key}.{k}")
    elif isinstance(value, list):
        for v in value:
            _check_finite(v, fname, key)


def _expect(value: Any, typ: type, fname: str, key: str, expected: str) -> None:
    if not isinstance(value, typ):
        raise ConfigError(f"got {_show(value)}; expected {expected}", file=fname, key=key)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def with_param(combo: Combo, dotted: str, value: Any) -> Combo:
    """A copy of ``combo`` with ``<kind>_params.<name>`` set to ``value``."""
    key, _, name = dotted.partition(".")
    return dataclasses.replace(combo, **{key: {**getattr(combo, key), name: value}})


def _check_outliers(exp: Experiment, fname: str, plugins) -> None:
    """``train.outliers``: a registered dataset with that split, and only losses that take outliers."""
    spec, key = exp.train.outliers, f"experiments.{exp.name}.train.outliers"
    if spec.dataset is None:
        return
    datasets = plugins.registry("datasets")
    if spec.dataset not in datasets:
        raise ConfigError(datasets.unknown_message(spec.dataset), file=fname, key=f"{key}.dataset")
    _needs_no_params(plugins, spec.dataset, fname, f"{key}.dataset")
    splits = tuple(datasets.build(spec.dataset).splits)
    if spec.split not in splits:
        raise ConfigError(f"got {spec.split!r}; expected a split of {spec.dataset} ({', '.join(splits)})",
                          file=fname, key=f"{key}.split")
    for loss, params in {(c.loss, repr(sorted(c.loss_params.items()))): (c.loss, c.loss_params)
                         for c in exp.combos}.values():
        if not getattr(plugins.registry("losses").build(loss, **params), "uses_outliers", False):
            raise ConfigError(f"loss {loss!r} does not take outliers (its class does not set uses_outliers); "
                              "expected train.outliers only in experiments whose losses all learn from them",
                              file=fname, key=f"{key}.dataset")


def _needs_no_params(plugins, name: str, fname: str, key: str) -> None:
    """A dataset named where no params can be given (``monitor_ood``, ``select.ood_dataset``,
    ``train.outliers``) must be one that needs none (not ``image_folder``, whose ``root`` is required)."""
    from logitnorm_bench.params import resolve_dataset_params

    try:
        resolve_dataset_params(plugins.registry("datasets").get(name), {}, file=fname, key=key)
    except ConfigError as exc:
        message = str(exc).removeprefix(f"{exc.file}:{exc.key}: ")
        raise ConfigError(f"{message}; expected a dataset that needs no parameters here (dataset params are "
                          "set only in the matrix)", file=fname, key=key) from None


def recipe_dict(recipe: TrainRecipe) -> dict:
    """The recipe as plain data; ``outliers`` only when set, so the runs without keep the ids they had."""
    out = asdict(recipe)
    if recipe.outliers.dataset is None:
        del out["outliers"]
    return out
