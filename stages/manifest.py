"""DVC stage `manifest`: one row per item (respiratory cycle, or recording/clip) of data/raw →
data/manifest.csv, plus the class-count table data/class_counts.csv (split or fold × class) and
its Markdown twin data/class_counts.md (patients per class; diagnoses left out of the diagnosis
task; items skipped as bad input)."""

from __future__ import annotations

import logging

from _common import load_data_config, path, report_errors


@report_errors
def main() -> None:
    params, run = load_data_config()
    data = params["data"]

    from lungpipe.data.class_counts import write_class_counts
    from lungpipe.data.sources import source_from_params
    from lungpipe.data.split import SplitScheme, apply_split_scheme, shared_patients_warning
    from lungpipe.util import atomic

    source, cfg = source_from_params(data)
    folds = list(run.dataset.folds)
    split = params.get("split") or {}
    split_scheme = SplitScheme(scheme=split.get("scheme", "official"), seed=split.get("seed", 1))
    built = source.build(run.raw_dir, cfg)
    manifest = apply_split_scheme(built.manifest, split_scheme, where=f"data.source {source.name}")
    if (warning := shared_patients_warning(manifest)) is not None:
        logging.getLogger("manifest").warning(warning)
    class_names = source.class_names_for(cfg, manifest)
    atomic.write_csv(path("data/manifest.csv"), manifest)
    table = write_class_counts(
        manifest, path("data/class_counts.csv"), path("data/class_counts.md"), class_names=class_names,
        title=f"{source.name}: {source.description}", item_name="cycles" if source.task == "cycle" else "recordings",
        excluded=built.excluded, rejects=built.rejects,
    )
    scheme = f"cross-validation over folds {folds}" if folds else f"split.scheme {split_scheme.scheme}"
    print(f"{source.name}: {len(manifest)} items from {manifest['recording'].nunique()} recordings, "
          f"{len(class_names)} classes; training uses {scheme}\n{table}")
    if not built.excluded.empty:
        print(f"excluded (not in any class):\n{built.excluded.to_string(index=False)}")


if __name__ == "__main__":
    main()
