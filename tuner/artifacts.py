"""Sample images as Optuna artifacts: optuna-dashboard shows them next to each trial, and
`tuner report` puts the baseline's images beside the chosen configuration's.

Every evaluated trial gets its first few images (downscaled to at most 256 px, JPEG) as trial
artifacts named ``trial<N>_image<i>.jpg``; each study gets the plain pipeline's images for the
same prompts and seeds once, as study artifacts named ``baseline_image<i>.jpg``. The files live
in a `FileSystemArtifactStore`, by default ``<studies>/artifacts``.

Uploading runs between trials, so it is kept small (a few small JPEGs, one storage write each)
and it never stops a search: a failure is reported once on stderr and uploading stops.
"""

from __future__ import annotations

import io
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact

from .messages import described

ARTIFACTS_DIR = "artifacts"  # under the studies folder
MAX_SIDE = 256  # pixels, longest side
COUNT = 4  # images per trial
JPEG_QUALITY = 90
BASELINE = "baseline"
_INDEX = re.compile(r"image(\d+)\.\w+$")


def artifact_dir(*, studies: str | Path | None, storage: str | None,
                 explicit: str | Path | None = None, enabled: bool = True) -> Path | None:
    """Where the artifacts go: `explicit`, else ``<studies>/artifacts`` when the studies are in
    a folder (no storage URL), else nowhere (None)."""
    if not enabled:
        return None
    if explicit is not None:
        return Path(explicit)
    if storage is None and studies is not None:
        return Path(studies) / ARTIFACTS_DIR
    return None


def open_store(path: str | Path, *, create: bool = True) -> FileSystemArtifactStore:
    path = Path(path)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def encode(image, *, max_side: int = MAX_SIDE, quality: int = JPEG_QUALITY) -> bytes:
    """One uint8 (3, H, W) tensor or array as JPEG bytes, its longest side at most `max_side`."""
    import numpy as np
    from PIL import Image

    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    picture = Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)).astype(np.uint8))
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _upload(store, target, images, names: list[str], storage=None) -> int:
    with tempfile.TemporaryDirectory(prefix="tuner-artifacts-") as folder:
        for image, name in zip(images, names):
            path = Path(folder) / name
            path.write_bytes(encode(image))
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=target,
                            storage=storage, mimetype="image/jpeg")
    return len(names)


def upload_baseline(store, study: optuna.Study, images, *, count: int = COUNT) -> int:
    """The plain pipeline's first images as study artifacts, unless the study has them."""
    if any(m.filename.startswith(BASELINE) for m in get_all_artifact_meta(study)):
        return 0
    images = list(images[:count])
    return _upload(store, study, images, [f"{BASELINE}_image{i}.jpg" for i in range(len(images))])


def upload_samples(store, trial, images, *, count: int = COUNT, storage=None) -> int:
    """A trial's first images as its artifacts."""
    images = list(images[:count])
    return _upload(store, trial, images,
                   [f"trial{trial.number}_image{i}.jpg" for i in range(len(images))], storage)


class SampleUploader:
    """The `on_evaluation(trial, evaluation)` callback of a search: uploads the trial's sample
    images, and the baseline's once per study."""

    def __init__(self, store, baseline_images, *, count: int = COUNT):
        self.store, self.baseline_images, self.count = store, baseline_images, count
        self.uploaded = 0
        self._studies_done: set[int] = set()
        self._broken = False

    def __call__(self, trial, evaluation) -> None:
        if self._broken:
            return
        try:
            study = trial.study
            if study._study_id not in self._studies_done:  # noqa: SLF001 - a stable key
                if self.baseline_images is not None:
                    self.uploaded += upload_baseline(self.store, study, self.baseline_images,
                                                     count=self.count)
                self._studies_done.add(study._study_id)  # noqa: SLF001
            self.uploaded += upload_samples(self.store, trial, evaluation.sample_images,
                                            count=self.count)
        except Exception as err:  # a full disk or an unwritable folder must not stop a search
            self._broken = True
            print(f"tuner: warning: cannot store sample images as artifacts "
                  f"({described(err)}); the search goes on without them",
                  file=sys.stderr)


def uploader(folder: Path | None, baseline_images) -> SampleUploader | None:
    """The search's `on_evaluation` callback storing sample images in `folder`, or None."""
    if folder is None:
        return None
    try:
        store = open_store(folder)
    except OSError as err:
        print(f"tuner: warning: no sample images: cannot create {str(folder)!r}: "
              f"{err.strerror or err}", file=sys.stderr)
        return None
    return SampleUploader(store, baseline_images)


# -- reading them back -------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredImage:
    filename: str
    mimetype: str
    data: bytes


def _index(filename: str) -> int:
    found = _INDEX.search(filename)
    return int(found.group(1)) if found else 0


def images_of(store, study_or_trial, *, storage=None, baseline: bool | None = None
              ) -> list[StoredImage]:
    """The image artifacts of a study or trial, in order; missing files are skipped."""
    metas = get_all_artifact_meta(study_or_trial, storage=storage)
    found, seen = [], set()
    for meta in sorted(metas, key=lambda m: (_index(m.filename), m.filename)):
        if not (meta.mimetype or "").startswith("image/") or meta.filename in seen:
            continue  # two workers may both have uploaded a study's baseline
        if baseline is not None and meta.filename.startswith(BASELINE) != baseline:
            continue
        try:
            with store.open_reader(meta.artifact_id) as reader:
                data = reader.read()
        except Exception:  # the store was moved or pruned
            continue
        seen.add(meta.filename)
        found.append(StoredImage(meta.filename, meta.mimetype, data))
    return found


__all__ = ["ARTIFACTS_DIR", "SampleUploader", "StoredImage", "artifact_dir", "encode",
           "images_of", "open_store", "upload_baseline", "upload_samples", "uploader"]
