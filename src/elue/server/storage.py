"""Uploaded submissions on disk: a zip is checked and extracted into a staging folder, and moved into
`uploads/<key>/` only when complete, so a rejected or interrupted upload leaves nothing behind.

Accepted layout: `elue.layout` (the toolkit's submission layout with task names as the spec spells them),
optionally wrapped in one top folder.
"""

from __future__ import annotations

import ast
import errno
import io
import shutil
import stat
import struct
import threading
import time
import uuid
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from elue import layout
from elue.tasks import TASK_NAMES

from .config import Settings


class StorageError(RuntimeError):
    """The server cannot store an upload (disk full, folder not writable): its own fault, not the archive's."""


# errors of writing the staging folder: a full disk or a folder the server may not write
_SERVER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


class UploadError(ValueError):
    """A rejected upload; the message is shown to the user as is."""


@dataclass
class StagedUpload:
    path: Path  # staging folder holding the submission's files
    tasks: list[str]
    files: list[str]


_CHUNK = 1 << 16

# The largest central directory (the archive's list of entries) an upload may have. zipfile reads all of it into
# one object per entry when it opens an archive, before anything can count them: 61 MB of empty hidden files
# (700,000 entries, skipped and so not counted against `max_files`) took 18 s and 500 MB of the web process.
# 2 MB holds some 10,000 entries of long names (a zipped .git folder included), at ~0.3 s and ~30 MB at most.
MAX_DIRECTORY_BYTES = 2 * 1024 * 1024


def _directory_size(raw: bytes) -> int | None:
    """The size of the central directory that zipfile would read (its end record's), None when there is none."""
    try:
        end = zipfile._EndRecData(io.BytesIO(raw))
    except (OSError, AttributeError, struct.error):  # AttributeError: a Python without this helper
        return None
    return end[zipfile._ECD_SIZE] if end else None


def _member_path(name: str) -> PurePosixPath:
    if (
        "\\" in name
    ):  # some Windows tools write these (older PowerShell Compress-Archive): "bad file name" alone
        raise UploadError(  # left the user guessing
            f"bad file name in archive: {name!r} separates folders with '\\', a zip with '/' (some Windows tools, "
            "such as older PowerShell Compress-Archive, write '\\'): zip with another tool, or let "
            "`elue submit FOLDER` zip the folder"
        )
    if "\x00" in name:
        raise UploadError(f"bad file name in archive: {name!r}")
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("/"):
        raise UploadError(f"absolute path in archive: {name!r}")
    if any(part == ".." for part in p.parts):
        raise UploadError(f"path escapes the submission folder ('..'): {name!r}")
    if p.parts and ":" in p.parts[0]:
        raise UploadError(f"bad file name in archive: {name!r}")
    return p


def _strip_common_root(paths: list[PurePosixPath]) -> list[PurePosixPath]:
    """`mysub/model.py, mysub/sst-2/a.tsv` -> `model.py, sst-2/a.tsv` (a zipped folder)."""
    if not paths:
        return paths
    firsts = {p.parts[0] for p in paths}
    if len(firsts) == 1 and all(len(p.parts) > 1 for p in paths):
        root = next(iter(firsts))
        if root not in TASK_NAMES:
            return [PurePosixPath(*p.parts[1:]) for p in paths]
    return paths


def classify(path: PurePosixPath) -> tuple[str, str | None]:
    """(kind, task) with kind in model|task_model|testfile|ignored (`elue.layout.classify`); UploadError
    for anything else."""
    try:
        return layout.classify(path)
    except layout.LayoutError as err:
        raise UploadError(str(err)) from None


# ast.parse is not thread-safe on CPython 3.11: its tree-to-objects step keeps its recursion depth in one
# counter per interpreter, and two uploads checked at once in the web process's thread pool (one of them
# switched out mid-conversion, e.g. by a garbage collection running a callback) ended with "SystemError: AST
# constructor recursion depth mismatch" (CPython gh-106905), a 500 for a valid upload; seen in
# test_parallel_uploads_respect_the_limit_on_each_backend.
# One parse at a time (model.py files are small: milliseconds)
_PARSE_LOCK = threading.Lock()

# The largest model.py parsed. Python's parser takes up to ~600 bytes of memory per byte of source (short
# statements): a 2 KB zip of a 2 MB model.py of `a=1` lines took 1.2 GB and 12 s of the web process, holding the
# lock above. Real ones are a few KB (ElasticBERT's export writes < 2 KB; all of BERT's modelling code is ~90 KB).
MAX_MODEL_PY_BYTES = 256 * 1024


def check_layout(
    rel_paths: Iterable[PurePosixPath], read: callable, max_points: int | None = None
) -> tuple[list[str], list[str]]:
    """Validate a whole submission; returns (tasks, kept files). `read(path)` gives a file's bytes;
    `max_points`: the most test files one task may have."""
    tasks: dict[str, int] = {}
    task_models: set[str] = set()
    has_default_model = False
    kept: list[str] = []
    for p in rel_paths:
        kind, task = classify(p)
        if kind == "ignored":
            continue
        kept.append(str(p))
        if kind == "model":
            has_default_model = True
        elif kind == "task_model":
            task_models.add(task)
        else:
            tasks[task] = tasks.get(task, 0) + 1
    for p in kept:
        if p.endswith("model.py"):
            source = read(p)
            if len(source) > MAX_MODEL_PY_BYTES:
                raise UploadError(
                    f"{p} is {len(source)} bytes: the limit is {MAX_MODEL_PY_BYTES} (model.py describes the "
                    "model's modules; weights and data do not belong in it)"
                )
            try:
                with _PARSE_LOCK:
                    ast.parse(source, filename=p)
            except SyntaxError as e:
                raise UploadError(f"{p} is not valid Python: {e.msg} (line {e.lineno})") from None
            except ValueError as e:
                raise UploadError(f"{p} is not valid Python: {e}") from None
            except (RecursionError, MemoryError):  # e.g. `a.b.b.b...` or `----1` thousands deep: a 500 before
                raise UploadError(f"{p} is nested too deeply for Python's parser") from None
    if not tasks:
        raise UploadError("no test files: add <task>/<point>.tsv (or <task>.tsv) for at least one task")
    missing = [t for t in tasks if t not in task_models and not has_default_model]
    if missing:
        raise UploadError(f"no model.py for {', '.join(sorted(missing))}: add model.py or <task>/model.py")
    crowded = [f"{t} ({n})" for t, n in sorted(tasks.items()) if max_points is not None and n > max_points]
    if crowded:
        raise UploadError(
            f"too many test files (operating points) for {', '.join(crowded)}: at most {max_points} a task"
        )
    flat = [t for t in tasks if f"{t}.tsv" in kept]
    for t in flat:
        if tasks[t] > 1:
            raise UploadError(f"{t}: give either {t}.tsv or files under {t}/, not both")
    return sorted(tasks), sorted(kept)


def extract_zip(data: bytes | Path, settings: Settings) -> StagedUpload:
    """Check and extract an uploaded zip into a fresh staging folder (removed again on any error)."""
    settings.ensure_dirs()
    raw = data.read_bytes() if isinstance(data, Path) else data
    if len(raw) > settings.max_upload_bytes:
        raise UploadError(f"upload too large: {len(raw)} bytes, the limit is {settings.max_upload_bytes}")
    directory = _directory_size(raw)
    if directory is not None and directory > MAX_DIRECTORY_BYTES:
        raise UploadError(
            f"too many entries in the archive: its list of files takes {directory} bytes (limit "
            f"{MAX_DIRECTORY_BYTES}); at most {settings.max_files} files are kept"
        )
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile:
        raise UploadError("the upload is not a zip archive") from None
    staging = settings.staging_dir / uuid.uuid4().hex
    try:
        with zf:
            infos = [
                i
                for i in zf.infolist()
                # hidden files, __pycache__ and __MACOSX, as the toolkit skips them (not counted)
                if not layout.is_skipped(PurePosixPath(i.filename))
            ]
            if len(infos) > settings.max_files:
                raise UploadError(f"too many files in the archive: {len(infos)} (limit {settings.max_files})")
            files = []
            for info in infos:
                p = _member_path(info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise UploadError(f"symbolic links are not allowed: {info.filename!r}")
                if info.is_dir():
                    continue
                if info.flag_bits & 0x1:
                    raise UploadError(f"encrypted files are not allowed: {info.filename!r}")
                files.append((info, p))
            declared = sum(i.file_size for i, _ in files)
            compressed = max(1, sum(i.compress_size for i, _ in files))
            if declared > settings.max_extracted_bytes:
                raise UploadError(
                    f"the archive unpacks to {declared} bytes, the limit is {settings.max_extracted_bytes}"
                )
            if declared > settings.ratio_min_bytes and declared / compressed > settings.max_ratio:
                raise UploadError(
                    f"suspicious compression ratio {declared / compressed:.0f}:1 (limit "
                    f"{settings.max_ratio:.0f}:1): is this a zip bomb?"
                )
            rels = _strip_common_root([p for _, p in files])
            by_rel = {str(r): info for (info, _), r in zip(files, rels, strict=True)}
            if len(by_rel) != len(files):
                raise UploadError("the archive holds the same file twice")

            def read_member(rel: str) -> bytes:
                return (staging / rel).read_bytes()

            # classify before writing anything
            for r in rels:
                classify(r)
            staging.mkdir(parents=True)
            total = 0
            for rel, info in by_rel.items():
                kind, _ = classify(PurePosixPath(rel))
                if kind == "ignored":
                    continue
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                written = 0
                with zf.open(info) as src, open(dest, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        total += len(chunk)
                        if written > info.file_size or total > settings.max_extracted_bytes:
                            raise UploadError("the archive unpacks to more than it declares (a zip bomb?)")
                        out.write(chunk)
            tasks, kept = check_layout(rels, read_member, max_points=settings.max_points)
            _check_scorable(tasks, settings)
    except UploadError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as e:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in _SERVER_ERRNOS:  # the server's disk, not the archive
            raise StorageError(
                f"the server cannot store uploads right now ({e.strerror}): try again later"
            ) from e
        raise UploadError(f"the archive could not be read: {e}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return StagedUpload(path=staging, tasks=tasks, files=kept)


def scorable_tasks(settings: Settings) -> list[str]:
    """The tasks whose answer key (`<data_dir>/<task>/test_labels.tsv`) this site holds: the only ones it scores."""
    return [
        t for t in TASK_NAMES if settings.data_dir and (settings.data_dir / t / "test_labels.tsv").is_file()
    ]


def _check_scorable(tasks: list[str], settings: Settings) -> None:
    """Refuse tasks this site holds no answer key for before the upload is queued (and counted)."""
    have = scorable_tasks(settings)
    missing = [t for t in tasks if t not in have]
    if missing:
        scores = (
            f"it scores {', '.join(have)}"
            if have
            else "no answer keys are set up (the admin sets ELUE_DATA_DIR)"
        )
        raise UploadError(f"this site cannot score {', '.join(missing)}: {scores}")


def commit_staged(staged: StagedUpload, settings: Settings) -> str:
    """Move a complete staging folder into place; returns its storage key."""
    key = staged.path.name
    final = settings.upload_dir / key
    staged.path.rename(final)
    return key


def discard(settings: Settings, key: str | None) -> None:
    if key:
        shutil.rmtree(settings.upload_dir / key, ignore_errors=True)


def submission_path(settings: Settings, key: str) -> Path:
    return settings.upload_dir / key


def clean_staging(settings: Settings, min_age_s: float = 0.0) -> None:
    """Leftovers of uploads interrupted by a crash: all of them, or those older than `min_age_s` (another web
    process of the deployment may be unpacking the younger ones)."""
    try:
        entries = list(settings.staging_dir.iterdir())
    except OSError:  # none yet
        return
    now = time.time()
    for p in entries:
        try:
            if min_age_s > 0 and now - p.stat().st_mtime <= min_age_s:
                continue
        except OSError:  # removed meanwhile
            continue
        shutil.rmtree(p, ignore_errors=True)


def zip_folder(folder: Path) -> bytes:
    """A submission folder as zip bytes (for `elue submit DIR`); hidden files skipped, symlinks refused."""
    folder = Path(folder)
    if not (folder / "model.py").exists() and not any(folder.glob("*/model.py")):
        raise UploadError(f"{folder} holds no model.py: is it a submission folder?")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder)
            if layout.is_skipped(PurePosixPath(rel.as_posix())):
                continue
            if p.is_symlink():  # refused, not skipped: a skipped test file would go missing unnoticed
                raise UploadError(f"{p} is a symbolic link: copy the file it points to into the folder")
            if not p.is_file():
                continue
            zf.write(p, rel.as_posix())
    return buf.getvalue()
