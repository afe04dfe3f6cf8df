"""Training data: memory-mapped feature arrays behind a torch Dataset, and the patient-wise split.

The preprocess stage stores each split as ``<split>.npy`` (N, frames, mels) plus ``<split>.csv``
(row i describes array row i). Only the rows a subset needs are read from the memory map, so a
DataLoader with workers streams them without loading the whole array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lungpipe.training.seeding import seed_worker


class SpectrogramDataset(Dataset):
    """Rows ``indices`` of a (N, frames, mels) array, as ((1, frames, mels) float tensor, label)."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, indices: np.ndarray | None = None):
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
        self.features = features
        self.labels = np.asarray(labels, dtype=np.int64)
        self.indices = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        row = self.indices[i]
        x = torch.from_numpy(np.array(self.features[row], dtype=np.float32))[None]
        return x, int(self.labels[row])

    @property
    def subset_labels(self) -> np.ndarray:
        return self.labels[self.indices]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.features.shape[1:3])


@dataclass
class PatientSplit:
    train_idx: np.ndarray
    val_idx: np.ndarray
    train_patients: list
    val_patients: list


def split_by_patient(index: pd.DataFrame, val_fraction: float, seed: int, label_col: str = "label") -> PatientSplit:
    """Divide rows into train/validation so that no patient is on both sides.

    Patients are shuffled (seeded) and assigned greedily to validation while that keeps every class
    closest to ``val_fraction`` of its rows, so rare classes still appear in validation.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if "patient" not in index.columns:
        raise ValueError("the feature index has no 'patient' column; cannot split by patient")
    labels = index[label_col].to_numpy()
    classes = np.unique(labels)
    patients = index["patient"].to_numpy()
    uniq = np.unique(patients)
    if len(uniq) < 2:
        raise ValueError(f"need at least 2 patients to carve a validation split, found {len(uniq)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(uniq)
    counts = {p: np.array([(labels[patients == p] == c).sum() for c in classes], float) for p in order}
    totals = sum(counts.values())
    target = totals * val_fraction
    val_counts = np.zeros(len(classes))
    val_set: list = []
    for p in order:
        candidate = val_counts + counts[p]
        # add the patient if it brings the validation class counts closer to the target
        if np.abs(candidate - target).sum() < np.abs(val_counts - target).sum():
            val_set.append(p)
            val_counts = candidate
    if not val_set:
        val_set = [order[0]]
    if len(val_set) == len(uniq):
        val_set = val_set[:-1]
    is_val = np.isin(patients, val_set)
    return PatientSplit(
        train_idx=np.flatnonzero(~is_val),
        val_idx=np.flatnonzero(is_val),
        train_patients=sorted(set(uniq) - set(val_set)),
        val_patients=sorted(val_set),
    )


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1; absent classes get weight 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_classes, 0.0)
    present = weights > 0
    if present.any():
        weights[present] /= weights[present].mean()
    return torch.tensor(weights, dtype=torch.float32)


def make_loader(
    dataset: SpectrogramDataset,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int = 0,
    generator: torch.Generator | None = None,
    pin_memory: bool = False,
    drop_last: bool = False,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A loader over ``dataset``; training loaders (``shuffle`` or a ``sampler``) may drop the last
    incomplete batch. Workers are persistent and seeded from ``generator``
    (:func:`lungpipe.training.seeding.seed_worker`)."""
    training = shuffle or sampler is not None
    n = len(dataset)
    # a last batch of one breaks BatchNorm layers (MRINet's branch attention) in training
    lone_last = n > batch_size and n % batch_size == 1
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        generator=generator,
        pin_memory=pin_memory,
        drop_last=training and ((drop_last and n >= batch_size) or lone_last),
        persistent_workers=num_workers > 0,
        worker_init_fn=seed_worker if num_workers > 0 else None,
    )
