"""DVC stage preprocess@<frontend>: data/manifest.csv + data/raw → data/features/<frontend>/
(16 kHz, cycles cut and padded to a fixed length, filterbank features, train-split normalisation,
memory-mappable arrays)."""

from __future__ import annotations

import argparse

from _common import load_params, path, setup_logging


def main() -> None:
    from lungpipe.features.numerics import pin_portable_numerics

    pin_portable_numerics()  # before torch loads: machine-independent feature bytes
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("frontend")
    args = ap.parse_args()
    setup_logging()
    params = load_params()

    from lungpipe.config import from_dict
    from lungpipe.features import PreprocessConfig, preprocess

    frontends = params.get("frontends") or {}
    if args.frontend not in frontends:
        raise SystemExit(f"params.yaml has no frontends.{args.frontend}; defined: {sorted(frontends)}")
    cfg = from_dict(PreprocessConfig, frontends[args.frontend], where=f"frontends.{args.frontend}")
    raw = path(params["data"].get("raw_dir", "data/raw"))
    out = path(f"data/features/{args.frontend}")
    folds = [f for f in params["data"].get("folds", ["official"]) if str(f) != "official"]
    if not folds:
        print(preprocess(path("data/manifest.csv"), raw, out, cfg))
        return
    # cross-validation (ESC-50): one feature folder per held-out fold, statistics from its training folds
    import pandas as pd

    from lungpipe.atomic import atomic_path
    from lungpipe.data.esc50 import split_for_fold

    manifest = pd.read_csv(path("data/manifest.csv"))
    with atomic_path(out, suffix="") as tmp:
        tmp.unlink()
        tmp.mkdir()
        for fold in folds:
            print(preprocess(split_for_fold(manifest, int(fold)), raw, tmp / f"fold{fold}", cfg))


if __name__ == "__main__":
    main()
