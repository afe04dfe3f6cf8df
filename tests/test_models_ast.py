"""AST: parameter count derived by hand, paper-size forward, position-embedding adaptation, and
pretrained loading from every supported form (save_pretrained folder, hub id, state-dict files in
the current, older-transformers and original-repository layouts), with loud failures."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file

from lungpipe.models import count_parameters, create_model
from lungpipe.models.ast import ASTClassifier, adapt_position_embedding, build_ast_backbone
from lungpipe.models.pretrained import PretrainedError, PretrainedNotFoundError
from lungpipe.models.registry import resolve_config
from lungpipe.util.typed_config import ConfigError

POS = "embeddings.position_embeddings"


def _grid(n_mels: int, n_frames: int, patch: int, stride: int) -> tuple[int, int]:
    return (n_mels - patch) // stride + 1, (n_frames - patch) // stride + 1


def _ast_reference_count(
    hidden: int, layers: int, mlp: int, patch: int, grid: tuple[int, int], classes: int
) -> int:
    """AST-base arithmetic: patch conv, CLS + distillation tokens, positions, ViT layers, final LN, head."""
    patch_embed = patch * patch * hidden + hidden
    tokens = 2 * hidden
    positions = (2 + grid[0] * grid[1]) * hidden
    attention = 4 * (hidden * hidden + hidden)  # q, k, v, out projections
    feed_forward = hidden * mlp + mlp + mlp * hidden + hidden
    layer_norms = 2 * 2 * hidden
    encoder = layers * (attention + feed_forward + layer_norms)
    head = 2 * hidden + hidden * classes + classes  # LayerNorm + Linear
    return patch_embed + tokens + positions + encoder + 2 * hidden + head


@pytest.fixture(scope="module")
def paper_ast() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("ast", {"preset": "paper", "num_classes": 4}).eval()


def test_paper_preset_parameter_count_matches_ast_base_arithmetic(paper_ast):
    grid = _grid(128, 798, 16, 10)
    assert grid == (12, 79)
    reference = _ast_reference_count(768, 12, 3072, 16, grid, 4)
    assert reference == 85_989_124  # ≈ 86.0 M: AST-base for 8 s (798-frame) inputs, 4 classes
    assert count_parameters(paper_ast) == reference
    assert abs(count_parameters(paper_ast) - 86e6) / 86e6 < 0.05


def test_paper_preset_forward_shape(paper_ast):
    with torch.no_grad():
        out = paper_ast(torch.randn(1, 1, 798, 128))
    assert out.shape == (1, 4)
    assert torch.isfinite(out).all()


def test_small_preset_accepts_small_inputs_and_rejects_other_shapes():
    model = create_model("ast", {"preset": "small", "n_frames": 64, "n_mels": 32, "num_classes": 3}).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 32)).shape == (2, 3)
        assert model.forward_features(torch.randn(2, 1, 64, 32)).shape == (2, 64)
        with pytest.raises(ValueError, match=r"\(B, 1, 64, 32\)"):
            model(torch.randn(2, 1, 80, 32))
    with pytest.raises(ConfigError, match="smaller than one"):
        create_model("ast", {"preset": "small", "n_frames": 8, "n_mels": 32})


def test_backbone_builder_returns_feature_module():
    cfg = resolve_config("ast", {"preset": "small", "n_frames": 64, "n_mels": 32})
    backbone, dim = build_ast_backbone(cfg)
    assert dim == cfg.hidden_size
    assert backbone(torch.randn(3, 1, 64, 32)).shape == (3, dim)


# --- position-embedding adaptation (pure function) --------------------------------------------


def _coded_pos(rows: int, cols: int, dim: int = 3) -> torch.Tensor:
    """Position embedding whose patch entry (f, t) holds the value 100·f + t in every channel."""
    f = torch.arange(rows).view(rows, 1).float()
    t = torch.arange(cols).view(1, cols).float()
    grid = (100 * f + t).reshape(1, rows * cols, 1).expand(1, rows * cols, dim)
    special = torch.tensor([[[-1.0] * dim, [-2.0] * dim]])
    return torch.cat([special, grid], dim=1)


def test_shorter_time_grid_keeps_the_centre_columns_unchanged():
    # AudioSet 12 × 101 → 8 s input 12 × 79: columns 101//2 − 79//2 = 11 … 89 are kept.
    pos = _coded_pos(12, 101)
    out = adapt_position_embedding(pos, (12, 101), (12, 79))
    assert out.shape == (1, 2 + 12 * 79, 3)
    assert torch.equal(out[:, :2], pos[:, :2])
    grid = out[0, 2:, 0].reshape(12, 79)
    expected = 100 * torch.arange(12).view(12, 1) + torch.arange(11, 90).view(1, 79)
    assert torch.equal(grid, expected.float())


def test_longer_time_grid_and_other_frequency_rows_are_interpolated():
    # A grid constant along time stays constant when the time axis is stretched; rows resized
    # bilinearly take the values computed by hand below.
    pos = _coded_pos(4, 5)
    pos[0, 2:, :] = (100 * torch.arange(4).repeat_interleave(5)).float().view(20, 1)
    out = adapt_position_embedding(pos, (4, 5), (4, 9))
    grid = out[0, 2:, 0].reshape(4, 9)
    assert torch.allclose(grid, (100 * torch.arange(4)).float().view(4, 1).expand(4, 9))
    out = adapt_position_embedding(pos, (4, 5), (8, 5))
    grid = out[0, 2:, 0].reshape(8, 5)
    assert torch.allclose(grid[:, 0], grid[:, 4])  # still constant along time
    # half-pixel bilinear 4 → 8 rows samples rows 0.5·i − 0.25 (clamped to 0 … 3)
    assert torch.allclose(grid[:, 0], torch.tensor([0.0, 25, 75, 125, 175, 225, 275, 300]))


def test_grid_that_does_not_fit_the_position_count_is_an_error():
    with pytest.raises(PretrainedError, match="not 3×5"):
        adapt_position_embedding(_coded_pos(4, 5), (3, 5), (4, 5))


# --- pretrained loading ------------------------------------------------------------------------


def _small(n_frames: int = 128, n_mels: int = 64, **extra) -> ASTClassifier:
    torch.manual_seed(0)
    return create_model("ast", {"preset": "small", "n_frames": n_frames, "n_mels": n_mels, **extra})


def _assert_loaded(model: ASTClassifier, saved: dict[str, torch.Tensor], source_grid, target_grid):
    """Every weight equals the saved one; the position embedding keeps CLS/dist and the centre columns."""
    loaded = model.backbone.ast.state_dict()
    assert set(loaded) == set(saved)
    for key, value in saved.items():
        if key != POS:
            assert torch.equal(loaded[key], value), key
    pos, src = loaded[POS], saved[POS]
    assert pos.shape == (1, 2 + target_grid[0] * target_grid[1], src.shape[-1])
    assert torch.equal(pos[:, :2], src[:, :2])
    start = source_grid[1] // 2 - target_grid[1] // 2
    src_grid = src[0, 2:].reshape(*source_grid, -1)[:, start : start + target_grid[1]]
    assert torch.equal(pos[0, 2:].reshape(*target_grid, -1), src_grid)


def test_save_pretrained_folder_with_longer_input_loads_with_adapted_positions(tmp_path):
    source = _small(n_frames=160)  # 4 × 10 patches
    folder = tmp_path / "ast_160"
    source.backbone.ast.save_pretrained(folder)
    saved = {k: v.clone() for k, v in source.backbone.ast.state_dict().items()}

    torch.manual_seed(99)
    model = create_model("ast", {"preset": "small", "n_frames": 128, "n_mels": 64, "pretrained": str(folder)})
    _assert_loaded(model, saved, (4, 10), (4, 8))
    with torch.no_grad():
        assert model(torch.randn(2, 1, 128, 64)).shape == (2, 4)


def test_audio_classification_folder_drops_its_head(tmp_path):
    from transformers import ASTForAudioClassification

    cfg = _small().backbone.ast.config
    cfg.num_labels = 7
    torch.manual_seed(1)
    source = ASTForAudioClassification(cfg)
    source.save_pretrained(tmp_path / "cls")
    saved = source.audio_spectrogram_transformer.state_dict()
    model = _small(pretrained=str(tmp_path / "cls"))
    _assert_loaded(model, saved, (4, 8), (4, 8))
    assert model.head[-1].out_features == 4


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_dict_file_with_other_time_length_loads_through_create_model(tmp_path, suffix):
    source = _small(n_frames=200)  # 4 × 12 patches: the grid's rows are inferred from the target
    saved = {k: v.clone() for k, v in source.backbone.ast.state_dict().items()}
    path = tmp_path / f"ast{suffix}"
    if suffix == ".safetensors":
        save_file(saved, str(path))
    else:
        torch.save(saved, path)
    model = _small(pretrained=str(path))
    _assert_loaded(model, saved, (4, 12), (4, 8))


def test_full_zoo_checkpoint_loads_backbone_and_keeps_a_fresh_head(tmp_path):
    source = _small(n_frames=160)
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    model = _small(pretrained=str(tmp_path / "ckpt.pth"))
    _assert_loaded(model, source.backbone.ast.state_dict(), (4, 10), (4, 8))
    assert not torch.equal(model.head[-1].weight, source.head[-1].weight)


def _legacy_transformers_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The key names transformers 4.x used (BERT-style), as in the hub's pytorch_model.bin."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^layers\.", "encoder.layer.", key)
        for new, old in (
            ("attention.q_proj", "attention.attention.query"),
            ("attention.k_proj", "attention.attention.key"),
            ("attention.v_proj", "attention.attention.value"),
            ("attention.o_proj", "attention.output.dense"),
            ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
        ):
            key = key.replace(new, old)
        out["audio_spectrogram_transformer." + key] = value
    out["classifier.dense.weight"] = torch.zeros(527, 64)
    return out


def _timm_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original AST repository's names (timm ViT under `module.v.`, fused qkv, `mlp_head`)."""
    out = {
        "module.v.cls_token": state["embeddings.cls_token"],
        "module.v.dist_token": state["embeddings.distillation_token"],
        "module.v.pos_embed": state[POS],
        "module.v.patch_embed.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
        "module.v.patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
        "module.v.norm.weight": state["layernorm.weight"],
        "module.v.norm.bias": state["layernorm.bias"],
        "module.mlp_head.1.weight": torch.zeros(527, 64),
    }
    for i in range(2):
        p, q = f"layers.{i}.", f"module.v.blocks.{i}."
        for kind in ("weight", "bias"):
            out[q + f"attn.qkv.{kind}"] = torch.cat(
                [state[p + f"attention.{n}_proj.{kind}"] for n in ("q", "k", "v")], dim=0
            )
            out[q + f"attn.proj.{kind}"] = state[p + f"attention.o_proj.{kind}"]
            out[q + f"norm1.{kind}"] = state[p + f"layernorm_before.{kind}"]
            out[q + f"norm2.{kind}"] = state[p + f"layernorm_after.{kind}"]
            out[q + f"mlp.fc1.{kind}"] = state[p + f"mlp.fc1.{kind}"]
            out[q + f"mlp.fc2.{kind}"] = state[p + f"mlp.fc2.{kind}"]
    return out


@pytest.mark.parametrize("layout", [_legacy_transformers_keys, _timm_keys])
def test_older_checkpoint_layouts_load_identically(tmp_path, layout):
    source = _small(n_frames=160)
    saved = {k: v.clone() for k, v in source.backbone.ast.state_dict().items()}
    torch.save(layout(saved), tmp_path / "old.bin")
    model = _small(pretrained=str(tmp_path / "old.bin"))
    _assert_loaded(model, saved, (4, 10), (4, 8))


def test_hub_id_goes_through_from_pretrained(monkeypatch):
    from transformers import ASTModel

    source = _small(n_frames=160).backbone.ast
    calls = []

    def fake_from_pretrained(name, **kwargs):
        calls.append((name, kwargs))
        return source, {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set()}

    monkeypatch.setattr(ASTModel, "from_pretrained", fake_from_pretrained)
    model = _small(pretrained="some-org/some-ast")
    assert calls and calls[0][0] == "some-org/some-ast"
    _assert_loaded(model, source.state_dict(), (4, 10), (4, 8))


def test_missing_path_is_an_error_not_random_weights(tmp_path):
    missing = tmp_path / "nowhere" / "ast.pt"
    with pytest.raises(PretrainedNotFoundError, match=re.escape(str(missing))):
        _small(pretrained=str(missing))
    with pytest.raises(FileNotFoundError):
        _small(pretrained=str(tmp_path / "no_folder"))


def test_checkpoint_of_another_depth_is_an_error_naming_the_keys(tmp_path):
    deeper = _small(num_layers=3)
    torch.save(deeper.backbone.ast.state_dict(), tmp_path / "deep.pt")
    with pytest.raises(PretrainedError, match=r"unexpected keys \(16\): layers\.2\.attention\.k_proj\.bias"):
        _small(pretrained=str(tmp_path / "deep.pt"))
    state = _small().backbone.ast.state_dict()
    del state["layernorm.weight"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(PretrainedError, match=r"missing keys \(1\): layernorm\.weight"):
        _small(pretrained=str(tmp_path / "partial.pt"))


def test_checkpoint_of_another_width_is_an_error(tmp_path):
    torch.save(_small(hidden_size=96, mlp_dim=384).backbone.ast.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(PretrainedError, match="hidden size 96"):
        _small(pretrained=str(tmp_path / "wide.pt"))


def test_pretrained_settings_are_classified_as_paths_hub_ids_or_aliases(tmp_path):
    from lungpipe.models.ast import AUDIOSET_HUB_ID
    from lungpipe.models.pretrained import resolve_source, wants_pretrained

    assert not wants_pretrained(None) and not wants_pretrained("none") and wants_pretrained("x.pt")
    assert resolve_source(AUDIOSET_HUB_ID, allow_hub_ids=True).kind == "remote"
    assert resolve_source("ImageNet", aliases={"imagenet": "IMAGENET1K_V1"}).location == "IMAGENET1K_V1"
    (tmp_path / "w.pt").write_bytes(b"")
    assert resolve_source(str(tmp_path / "w.pt")).kind == "file"
    assert resolve_source(str(tmp_path), allow_hub_ids=True).kind == "dir"
    for not_there in ("runs/ast.pt", "./runs/ast"):  # paths, never mistaken for hub ids
        with pytest.raises(PretrainedNotFoundError):
            resolve_source(not_there, allow_hub_ids=True)
    with pytest.raises(PretrainedNotFoundError):
        resolve_source("org/name")  # hub ids only where the architecture can use them


def test_checkpoint_without_tensors_is_an_error(tmp_path):
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "notes.pt")
    with pytest.raises(
        PretrainedError, match=r"no state dict found; top-level keys are \['epoch', 'optimizer'\]"
    ):
        _small(pretrained=str(tmp_path / "notes.pt"))


@pytest.mark.parametrize("pooling", ["tokens", "mean", "max"])
def test_pooling_reads_the_documented_tokens(pooling):
    model = _small(n_frames=64, n_mels=32, pooling=pooling).eval()
    x = torch.randn(3, 1, 64, 32)
    with torch.no_grad():
        hidden = model.backbone.ast(input_values=x[:, 0]).last_hidden_state  # (B, 2 + patches, D)
        expected = {"tokens": (hidden[:, 0] + hidden[:, 1]) / 2, "mean": hidden[:, 2:].mean(1),
                    "max": hidden[:, 2:].amax(1)}[pooling]
        assert torch.allclose(model.forward_features(x), expected, atol=1e-6)


def test_pooling_defaults_and_bad_value():
    assert resolve_config("ast", {"preset": "paper"}).pooling == "tokens"  # AST's own readout
    assert resolve_config("ast", {"preset": "small"}).pooling == "max"
    with pytest.raises(ConfigError, match="pooling must be one of"):
        _small(pooling="cls")


# --- the authors' checkpoints: the AST repository's file and the hub layout, into AST and ADD4RSC


def _original_repo_checkpoint(tmp_path, source: ASTClassifier):
    """A tiny stand-in for ``audioset_10_10_0.4593.pth``: DataParallel(ASTModel) keys under
    ``module.v.`` and the 527-class ``module.mlp_head.`` (LayerNorm, Linear)."""
    saved = {k: v.clone() for k, v in source.backbone.ast.state_dict().items()}
    state = _timm_keys(saved)
    state["module.mlp_head.0.weight"] = torch.ones(64)
    state["module.mlp_head.0.bias"] = torch.zeros(64)
    state["module.mlp_head.1.bias"] = torch.zeros(527)
    path = tmp_path / "audioset_10_10_0.4593.pth"
    torch.save(state, path)
    return path, saved


def _add4rsc(pretrained: str, **extra) -> torch.nn.Module:
    torch.manual_seed(7)
    return create_model(
        "add4rsc_ast",
        {"preset": "small", "n_frames": 128, "n_mels": 64, "time_tokens": 128, "pretrained": pretrained, **extra},
    )


def _assert_named_tensors_arrived(ast_module, saved: dict[str, torch.Tensor]) -> None:
    loaded = ast_module.state_dict()
    for key in ("embeddings.cls_token", "embeddings.patch_embeddings.projection.weight",
                "layers.0.attention.q_proj.weight", "layers.1.attention.v_proj.bias", "layers.1.mlp.fc2.weight",
                "layernorm.weight"):
        assert torch.equal(loaded[key], saved[key]), key


def test_original_ast_repository_file_loads_into_ast_and_add4rsc(tmp_path):
    path, saved = _original_repo_checkpoint(tmp_path, _small(n_frames=160))
    ast = _small(pretrained=str(path))
    _assert_loaded(ast, saved, (4, 10), (4, 8))
    # ADD4RSC's backbone, through its top-level pretrained; the release leaves positions random
    model = _add4rsc(str(path))
    backbone = model.backbone.backbone.ast
    _assert_named_tensors_arrived(backbone, saved)
    fresh = _add4rsc("none").backbone.backbone.ast
    assert torch.equal(backbone.embeddings.position_embeddings, fresh.embeddings.position_embeddings)
    # pos_embed: interpolated takes the checkpoint's embedding, adapted to the 4 × 8 grid
    adapted = _add4rsc(str(path), pos_embed="interpolated").backbone.backbone.ast
    expected = adapt_position_embedding(saved[POS], (4, 10), (4, 8))
    assert torch.equal(adapted.embeddings.position_embeddings, expected)


def test_hub_layout_folder_loads_into_ast_and_add4rsc(tmp_path):
    from transformers import ASTForAudioClassification, ASTModel

    cfg = _small().backbone.ast.config
    cfg.num_labels = 527
    torch.manual_seed(3)
    classifier = ASTForAudioClassification(cfg)  # MIT/ast-finetuned-audioset-10-10-0.4593's layout
    classifier.save_pretrained(tmp_path / "ast-finetuned-audioset-10-10-0.4593")
    saved = classifier.audio_spectrogram_transformer.state_dict()
    bare = ASTModel(cfg)  # a save_pretrained folder of ASTModel itself
    bare.save_pretrained(tmp_path / "ast-model")
    for folder, weights in (("ast-finetuned-audioset-10-10-0.4593", saved), ("ast-model", bare.state_dict())):
        _assert_named_tensors_arrived(_small(pretrained=str(tmp_path / folder)).backbone.ast, weights)
        _assert_named_tensors_arrived(_add4rsc(str(tmp_path / folder)).backbone.backbone.ast, weights)


def test_missing_or_unreadable_pretrained_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(PretrainedNotFoundError, match="audioset_10_10_0.4593.pth"):
        _add4rsc(str(tmp_path / "audioset_10_10_0.4593.pth"))
    garbage = tmp_path / "broken.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(PretrainedError, match="broken.pth"):
        _add4rsc(str(garbage))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_attention_implementation_is_set_and_numerically_equal(attention):
    model = _small(attention=attention).eval()
    assert model.backbone.ast.config._attn_implementation == attention
    reference = _small(attention="eager").eval()
    x = torch.randn(2, 1, 128, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
    assert resolve_config("ast", {"preset": "paper"}).attention == "sdpa"
