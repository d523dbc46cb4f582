"""Object storage: the driver's local mirror of a study <-> `<storage>/<study>` (any URI pyarrow reads).

With `--storage s3://...` the driver works in a local mirror (`studies.store.study_dir`) and pushes the
store beside Tune's own files; `status`, `report` and `denoise` on any machine pull it first.
"""
from __future__ import annotations

from pathlib import Path

from studies.store import is_uri, resolve_storage, study_dir

SYNCED = ("study.json", "records", "optuna.journal", "optuna.db", "trials.parquet", "baselines", "best", "report.html")


def study_uri(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}"


def _fs(uri: str):
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(uri)


def upload(sdir: Path, uri: str, names: tuple[str, ...] = SYNCED) -> None:
    """The local mirror's store files -> the object store."""
    import pyarrow.fs as pafs

    for name in names:
        if (Path(sdir) / name).exists():
            pafs.copy_files(str(Path(sdir) / name), f"{uri}/{name}")


def upload_file(path: Path, uri: str, relative: str) -> None:
    """One small file (a trial's record, rewritten at every result) -> the object store."""
    fs, base = _fs(uri)
    with fs.open_output_stream(f"{base}/{relative}") as out:
        out.write(Path(path).read_bytes())


def delete_file(uri: str, relative: str) -> None:
    fs, base = _fs(uri)
    try:
        fs.delete_file(f"{base}/{relative}")
    except FileNotFoundError:
        pass


def delete_dir(uri: str) -> None:
    fs, base = _fs(uri)
    try:
        fs.delete_dir(base)
    except FileNotFoundError:
        pass


def fetch(storage: str | None, name: str) -> Path:
    """The local directory of study `name`: for object storage, its store files pulled into the mirror
    first (so it works on any machine, while the study runs or after). Returns the mirror."""
    storage = resolve_storage(storage)
    sdir = study_dir(storage, name)
    if not is_uri(storage):
        return sdir
    for item in SYNCED:
        download(f"{study_uri(storage, name)}/{item}", sdir / item)
    return sdir


def download(uri: str, dest: Path, skip: tuple[str, ...] = ()) -> bool:
    """A file or a directory tree of the object store -> `dest`; False when there is nothing at `uri`."""
    import pyarrow.fs as pafs

    from studies.store import write_atomic

    fs, path = _fs(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        files = [f for f in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if f.type == pafs.FileType.File]
    elif info.type == pafs.FileType.File:
        files = [info]
    else:
        return False
    for f in files:
        if f.base_name in skip:
            continue
        target = Path(dest) / f.path[len(path) + 1:] if info.type == pafs.FileType.Directory else Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(f.path) as src:
            write_atomic(target, src.read())
    return True


def local_or_uri(storage: str | None, sdir: Path, name: str) -> str:
    """Where the study's files live for Tune and for uploads: the URI on object storage, else the directory."""
    storage = resolve_storage(storage)
    return study_uri(storage, name) if is_uri(storage) else str(sdir)

