"""DVC stage preprocess@<frontend>: data/manifest.csv + data/raw → data/features/<frontend>/
(16 kHz, cycles cut and padded to a fixed length, filterbank features, train-split normalisation,
memory-mappable arrays)."""

from __future__ import annotations

import argparse

from _common import _section, load_data_config, path, report_errors


def frontend_configs(params) -> dict:
    """Every ``frontends.<name>`` section as a checked PreprocessConfig."""
    from lungpipe.features import PreprocessConfig
    from lungpipe.util.typed_config import ConfigError, from_dict

    sections = _section(params, "frontends")
    if not sections:
        raise ConfigError("frontends: no frontend is defined; add one (see params/frontends/small.yaml)")
    return {name: from_dict(PreprocessConfig, section, where=f"frontends.{name}") for name, section in sections.items()}


@report_errors
def main() -> None:
    from lungpipe.features.numerics import pin_portable_numerics

    pin_portable_numerics()  # before torch loads: machine-independent feature bytes
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("frontend")
    args = ap.parse_args()
    params, run = load_data_config()

    from lungpipe.features import preprocess
    from lungpipe.util.typed_config import ConfigError

    frontends = frontend_configs(params)  # every frontend checked at start-up
    if args.frontend not in frontends:
        raise ConfigError(f"frontends.{args.frontend}: no such frontend in params.yaml; defined: "
                          f"{', '.join(sorted(frontends))}")
    cfg = frontends[args.frontend]
    raw = run.raw_dir
    out = path(f"data/features/{args.frontend}")
    folds = list(run.dataset.folds)
    if not folds:
        print(preprocess(path("data/manifest.csv"), raw, out, cfg))
        return
    # cross-validation (ESC-50): one feature folder per held-out fold, statistics from its training folds
    import pandas as pd

    from lungpipe.data.esc50 import split_for_fold
    from lungpipe.util.atomic import atomic_path

    manifest = pd.read_csv(path("data/manifest.csv"))
    with atomic_path(out, suffix="") as tmp:
        tmp.unlink()
        tmp.mkdir()
        for fold in folds:
            print(preprocess(split_for_fold(manifest, int(fold)), raw, tmp / f"fold{fold}", cfg))


if __name__ == "__main__":
    main()
