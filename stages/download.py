"""DVC stage `download`: obtain the raw dataset folder data/raw.

`data.source` picks the dataset (see `lungpipe data sources`); its options live in `data.<section>`
(`data.synth` for the default synthetic ICBHI-shaped set, else `data.<source>`).
- synthetic sources (synth, icbhi_synth, esc50_synth, diagnosis_synth): the folder is generated.
- icbhi / esc50 / diagnosis: the public files are downloaded (SHA-256 verified, resumable; partial
  and finished downloads are kept in data/downloads/, outside DVC's cache) and extracted.
The folder is assembled under a temporary name and renamed at the end, so an interrupted run
never leaves a half raw folder.
"""

from __future__ import annotations

import shutil

from _common import load_data_config, path, report_errors


@report_errors
def main() -> None:
    params, run = load_data_config()
    data = params["data"]

    from lungpipe.data.archive import archive_kind, extract_archive
    from lungpipe.data.download import download_file
    from lungpipe.data.sources import source_from_params
    from lungpipe.util.atomic import atomic_path
    from lungpipe.util.errors import DataError

    source, cfg = source_from_params(data)
    downloads = path("data/downloads")
    downloads.mkdir(parents=True, exist_ok=True)
    (downloads / "README.txt").write_text("Downloaded archives (kept between runs so a download can resume).\n")
    raw = run.raw_dir
    if raw.exists():
        shutil.rmtree(raw)
    with atomic_path(raw, suffix="") as tmp:
        tmp.unlink()
        if source.synthetic:
            source.synthesize(tmp, cfg)
            print(f"{source.name}: wrote the synthetic raw folder {raw}")
            return
        tmp.mkdir(parents=True)
        for remote in source.remote_files(cfg):
            local = download_file(remote, downloads, allow_unverified=bool(data.get("allow_unverified", False)))
            try:
                archive_kind(local)
            except DataError:  # a plain file (e.g. the ICBHI split file): copy it in
                shutil.copy2(local, tmp / local.name)
                continue
            extract_archive(local, tmp / local.name.split(".")[0], archive_sha256=remote.sha256)
        print(f"{source.name}: downloaded and extracted {len(source.remote_files(cfg))} file(s) into {raw}")


if __name__ == "__main__":
    main()
