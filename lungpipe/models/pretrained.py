"""Shared helpers for loading pretrained weights into zoo models — loudly, never silently.

Every architecture takes a ``pretrained`` setting that is one of

* ``None`` / ``"none"`` / ``""``: random initialisation;
* a local path: a state-dict file (``.pt``, ``.pth``, ``.bin``, ``.ckpt``, ``.safetensors``), or
  a folder written by ``save_pretrained`` (AST only);
* a remote name: a Hugging Face hub id (AST), an ``http(s)://`` URL, or an alias the
  architecture defines (``imagenet`` for ResNet50, ``audioset`` for CNN6).

The rules the helpers enforce:

* a path that does not exist is a :class:`PretrainedNotFoundError`;
* after an architecture's documented adaptations (classifier heads dropped, a first conv averaged
  to one channel, a position embedding resized, ...) every remaining checkpoint key must have a
  counterpart of the same shape in the model and every model key must be covered, otherwise a
  :class:`PretrainedError` lists the missing, unexpected and mis-shaped keys;
* each adaptation is logged (logger ``lungpipe.models.pretrained``) so a run's log says what was
  not loaded as-is.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from lungpipe.util.errors import LungpipeError

log = logging.getLogger("lungpipe.models.pretrained")

#: File suffixes read as state-dict files.
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
#: Keys under which training scripts commonly nest the state dict inside a checkpoint.
NESTED_STATE_KEYS = ("model", "state_dict", "model_state_dict", "module")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MAX_LISTED = 20


class PretrainedError(LungpipeError, ValueError):
    """Pretrained weights could not be loaded as asked (the message says which keys/file)."""


class PretrainedNotFoundError(PretrainedError, FileNotFoundError):
    """The ``pretrained`` setting names a local path that does not exist."""


def wants_pretrained(spec: str | None) -> bool:
    """True when ``spec`` asks for weights (not ``None``, ``""`` or ``"none"``)."""
    return spec is not None and str(spec).strip().lower() not in ("", "none", "null", "false")


@dataclass(frozen=True)
class WeightSource:
    """Where weights come from: a local ``file`` or ``dir``, or a ``remote`` hub id / URL."""

    kind: Literal["file", "dir", "remote"]
    location: str

    @property
    def path(self) -> Path:
        return Path(self.location)


def resolve_source(
    spec: str, *, aliases: Mapping[str, str] | None = None, allow_hub_ids: bool = False
) -> WeightSource:
    """Classify a ``pretrained`` setting as a local file/folder or a remote id.

    ``aliases`` maps friendly names to remote locations (checked first, case-insensitively).
    A value that exists on disk is local. A value that looks like a path (absolute, starting with
    ``.`` or ``~``, or ending in a weight suffix) but does not exist raises
    :class:`PretrainedNotFoundError`. ``org/name`` is a hub id only when ``allow_hub_ids``.
    """
    text = str(spec).strip()
    lowered = {k.lower(): v for k, v in (aliases or {}).items()}
    if text.lower() in lowered:
        return WeightSource("remote", lowered[text.lower()])
    if text.startswith(("http://", "https://")):
        return WeightSource("remote", text)
    path = Path(text).expanduser()
    if path.is_file():
        return WeightSource("file", str(path))
    if path.is_dir():
        return WeightSource("dir", str(path))
    looks_like_path = (
        path.suffix.lower() in WEIGHT_SUFFIXES
        or text.startswith(("/", ".", "~"))
        or (os.sep != "/" and os.sep in text)
    )
    if allow_hub_ids and not looks_like_path and _HUB_ID.match(text):
        return WeightSource("remote", text)
    accepted = "a state-dict file (" + ", ".join(WEIGHT_SUFFIXES) + ")"
    if allow_hub_ids:
        accepted += ", a save_pretrained folder, a hub id 'org/name'"
    if aliases:
        accepted += ", or one of " + ", ".join(repr(a) for a in sorted(aliases))
    raise PretrainedNotFoundError(
        f"pretrained weights not found: {path.resolve()} does not exist "
        f"(pretrained={text!r}; expected {accepted}; use pretrained: none for random init)"
    )


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint (top level, or under ``model``/``state_dict``...).

    Non-tensor entries beside a nested state dict (an ``iteration`` counter, ...) are ignored; a
    top-level state dict must hold tensors only.
    """
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in NESTED_STATE_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                return dict(obj[key])
        raise PretrainedError(
            f"{where}: no state dict found; top-level keys are {sorted(map(str, obj))[:_MAX_LISTED]} "
            f"(expected tensors, or a mapping of tensors under one of {list(NESTED_STATE_KEYS)})"
        )
    raise PretrainedError(f"{where}: expected a state dict (mapping of tensors), got {type(obj).__name__}")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state-dict file (``.safetensors`` or a ``torch.save`` pickle) onto the CPU.

    Pickles are read with ``weights_only=True``: a file that needs arbitrary Python objects is
    refused with an error that says how to extract its tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedNotFoundError(f"pretrained weights not found: {path.resolve()} is not a file")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file  # lazy: optional, only .safetensors files need it

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises its own error types
            raise PretrainedError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise PretrainedError(
            f"{path}: could not read it with torch.load(weights_only=True): {str(exc).splitlines()[0]}. "
            "If it is a training checkpoint holding Python objects and you trust its author, load it "
            "once yourself with full unpickling, save only its state dict (torch.save(state_dict, "
            "'weights.pt')) and point pretrained at that file"
        ) from exc
    return unwrap_state_dict(obj, str(path))


def strip_prefix_before(state: Mapping[str, torch.Tensor], anchors: Iterable[str]) -> dict[str, torch.Tensor]:
    """Remove the prefix a wrapper put in front of the backbone's keys.

    The first anchor (a key the backbone is known to have, e.g. ``layer1.0.conv1.weight``) found
    as a suffix of some checkpoint key fixes the prefix (``module.``, ``backbone.``, ...); that
    prefix is removed from every key that carries it, other keys are left as they are.
    """
    for anchor in anchors:
        for key in state:
            if key == anchor or key.endswith("." + anchor):
                prefix = key[: len(key) - len(anchor)]
                if not prefix:
                    return dict(state)
                return {(k.removeprefix(prefix)): v for k, v in state.items()}
    return dict(state)


def rename_keys(
    state: Mapping[str, torch.Tensor], rules: Iterable[tuple[str, str | Callable[[re.Match], str]]]
) -> dict[str, torch.Tensor]:
    """Apply regex substitutions ``(pattern, replacement)`` in order to every key (``re.sub`` rules)."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for pattern, repl in compiled:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(re.search(p, key) for p in patterns)


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


@dataclass
class LoadReport:
    """What :func:`load_checked` did: keys loaded, checkpoint keys dropped, model keys left fresh."""

    source: str
    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    kept_fresh: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)


def load_checked(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    drop_source: Iterable[str] = (),
    keep_target: Iterable[str] = (),
    adapted: Iterable[str] = (),
) -> LoadReport:
    """Copy ``state`` into ``module`` after checking that the two match exactly.

    ``drop_source``: regexes of checkpoint keys that are deliberately not used (e.g. a 527-class
    head). ``keep_target``: regexes of model keys that may stay at their initial values (e.g. the
    new head). ``adapted``: names of keys the caller already reshaped (only logged). Any other
    missing key, unexpected key or shape difference raises :class:`PretrainedError` naming them.
    BatchNorm ``num_batches_tracked`` counters absent from older checkpoints are allowed.
    """
    drop_source, keep_target = list(drop_source), list(keep_target)
    target = module.state_dict()
    dropped = sorted(k for k in state if k not in target and _matches(k, drop_source))
    unexpected = sorted(k for k in state if k not in target and k not in dropped)
    kept_fresh = sorted(
        k
        for k in target
        if k not in state and (_matches(k, keep_target) or k.endswith("num_batches_tracked"))
    )
    missing = sorted(k for k in target if k not in state and k not in kept_fresh)
    mismatched = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(target[k].shape)})"
        for k in state
        if k in target and tuple(state[k].shape) != tuple(target[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = [f"{source}: checkpoint does not match {type(module).__name__}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {_listing(mismatched)}")
        parts.append("check that the checkpoint belongs to this architecture and preset (widths, depths)")
        raise PretrainedError("; ".join(parts))
    usable = {k: v for k, v in state.items() if k in target}
    module.load_state_dict(usable, strict=False)
    report = LoadReport(source, sorted(usable), dropped, kept_fresh, sorted(adapted))
    log.info("loaded %d tensors from %s into %s", len(report.loaded), source, type(module).__name__)
    if report.dropped:
        log.info("%s: not used (documented adaptation): %s", source, _listing(report.dropped))
    if report.kept_fresh:
        log.info("%s: left at initial values: %s", source, _listing(report.kept_fresh))
    if report.adapted:
        log.info("%s: adapted to this model's shape: %s", source, _listing(report.adapted))
    return report


def load_matching(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    what: str,
    adapted: Iterable[str] = (),
    expected: Iterable[str] = (),
) -> LoadReport:
    """Non-strict loading (``load_state_dict(strict=False)`` semantics, made loud).

    Every checkpoint key that names a model tensor is copied; shapes must agree (a mismatch is a
    :class:`PretrainedError` listing them, as in PyTorch). Checkpoint keys the model lacks are
    dropped and model tensors the checkpoint lacks keep their initial values; both lists are
    logged (``expected``: prefixes of the model keys this checkpoint is meant to fill; only those
    are reported as left fresh). A checkpoint of which nothing loads is a :class:`PretrainedError` (``what`` says what
    was looked for): never a silent fall-back to random weights.
    """
    target = module.state_dict()
    usable = {k: v for k, v in state.items() if k in target}
    mismatched = sorted(
        f"{k} (checkpoint {tuple(v.shape)}, model {tuple(target[k].shape)})"
        for k, v in usable.items()
        if tuple(v.shape) != tuple(target[k].shape)
    )
    if mismatched:
        raise PretrainedError(
            f"{source}: shape mismatches ({len(mismatched)}) with {type(module).__name__}: {_listing(mismatched)}; "
            "check that the checkpoint belongs to this architecture and preset"
        )
    if not usable:
        raise PretrainedError(
            f"{source}: none of its {len(state)} tensors fits {type(module).__name__} ({what}); "
            f"its keys start {_listing(list(state)[:5])}"
        )
    module.load_state_dict(usable, strict=False)
    dropped = sorted(k for k in state if k not in target)
    scope = tuple(expected)
    kept_fresh = sorted(
        k
        for k in target
        if k not in usable and not k.endswith("num_batches_tracked") and (not scope or k.startswith(scope))
    )
    report = LoadReport(source, sorted(usable), dropped, kept_fresh, sorted(adapted))
    log.info("loaded %d tensors from %s into %s (non-strict)", len(report.loaded), source, type(module).__name__)
    if report.dropped:
        log.info("%s: not used: %s", source, _listing(report.dropped))
    if report.kept_fresh:
        log.warning("%s: left at initial values: %s", source, _listing(report.kept_fresh))
    if report.adapted:
        log.info("%s: adapted to this model's shape: %s", source, _listing(report.adapted))
    return report


def download_state_dict(url: str) -> dict[str, torch.Tensor]:
    """Fetch a state dict from ``url`` into torch's hub cache (safe unpickling), with a clear error."""
    try:
        obj = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True, progress=True)
    except Exception as exc:  # network errors come in many types
        raise PretrainedError(
            f"could not fetch pretrained weights from {url}: {exc}. Without network access, download "
            "the file elsewhere and set pretrained to its local path"
        ) from exc
    return unwrap_state_dict(obj, url)
