"""Loading weights into MRINet: a whole-model state dict, or a Swin checkpoint for the time branch.

``pretrained`` (a state dict saved from an MRINet of the same config) loads strictly.
``time_pretrained`` loads non-strictly, as the release does, from either

* an HTS-AT checkpoint (Lightning: keys under ``sed_model.``): its Swin encoder weights go into
  the time branch and its ``bn0`` into MRINet's ``bn0``; its head (``tscam_conv``, ``head``) and
  the STFT/mel extractors are not used; or
* an ImageNet Swin checkpoint (``{"model": ...}``, Microsoft's layout): its RGB patch embedding
  ``(C, 3, p, p)`` is averaged over the colour channels to ``(C, 1, p, p)``, a relative-position
  bias table of another window size is resized (bicubic, as Swin's own fine-tuning does), and the
  1000-class head is dropped.

Every skipped or kept-fresh tensor is logged; a file from which no Swin weight loads, or whose
tensors have other shapes (a different dim, depth or heads), is a :class:`PretrainedError`; a
missing file is a :class:`PretrainedNotFoundError`. Nothing falls back silently to random weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lungpipe.models.pretrained import (
    LoadReport,
    PretrainedError,
    load_checked,
    load_matching,
    read_state_dict,
    resolve_source,
)

_SWIN_ANCHOR = "patch_embed.proj.weight"
_SWIN_PARTS = ("patch_embed.", "layers.", "norm.")
_REBUILT = ("relative_position_index", "attn_mask")  # buffers rebuilt from the geometry


def _local_file(spec: str, setting: str) -> str:
    source = resolve_source(spec)
    if source.kind != "file":
        raise PretrainedError(
            f"model mrinet: {setting}={spec!r} is a {source.kind} location; MRINet loads only local "
            f"state-dict files (there are no published MRINet weights to fetch)"
        )
    return source.location


def load_model_weights(model: nn.Module, spec: str) -> LoadReport:
    """Strictly load a state dict saved from an MRINet built with the same config."""
    path = _local_file(spec, "pretrained")
    return load_checked(model, read_state_dict(path), source=path)


def _resize_bias_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """``((2w-1)², heads)`` → ``(size, heads)`` by bicubic resizing of the ``(2w-1)×(2w-1)`` grid."""
    side, new_side = round(table.shape[0] ** 0.5), round(size**0.5)
    grid = table.T.reshape(1, table.shape[1], side, side)
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    return grid.reshape(table.shape[1], size).T.contiguous()


def swin_state_from_checkpoint(
    state: dict[str, torch.Tensor], model: nn.Module, path: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The MRINet-keyed tensors (``time_branch.swin.*``, ``bn0.*``) of an HTS-AT or Swin checkpoint."""
    anchors = [k for k in state if k == _SWIN_ANCHOR or k.endswith("." + _SWIN_ANCHOR)]
    if not anchors:
        raise PretrainedError(
            f"model mrinet: time_pretrained {path!r} holds no Swin weights (no key ending in {_SWIN_ANCHOR!r})"
        )
    prefix = anchors[0][: -len(_SWIN_ANCHOR)]
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    adapted: list[str] = []
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name.endswith(_REBUILT):
            continue
        if name.startswith("bn0.") and getattr(model, "bn0", None) is not None:
            out[name] = value
        elif name.startswith(_SWIN_PARTS):
            out["time_branch.swin." + name] = value
    embed = out.get("time_branch.swin." + _SWIN_ANCHOR)
    if embed is not None and embed.dim() == 4 and embed.shape[1] == 3:
        out["time_branch.swin." + _SWIN_ANCHOR] = embed.mean(dim=1, keepdim=True)
        adapted.append(f"{_SWIN_ANCHOR} (RGB averaged to one channel)")
    for name, value in list(out.items()):
        want = target.get(name)
        if name.endswith("relative_position_bias_table") and want is not None and value.shape != want.shape:
            if value.dim() == 2 and value.shape[1] == want.shape[1]:
                out[name] = _resize_bias_table(value.float(), want.shape[0])
                adapted.append(f"{name} ({tuple(value.shape)} → {tuple(want.shape)}, window resized)")
    return out, adapted


def load_swin_weights(model: nn.Module, spec: str) -> LoadReport:
    """Initialise MRINet's time branch (and ``bn0``) from an HTS-AT or ImageNet Swin checkpoint."""
    path = _local_file(spec, "time_pretrained")
    state, adapted = swin_state_from_checkpoint(read_state_dict(path), model, path)
    return load_matching(
        model, state, source=path, what="Swin encoder and bn0 weights", adapted=adapted,
        expected=("time_branch.swin.", "bn0."),
    )
