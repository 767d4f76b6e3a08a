"""A frame source for libgphoto2's ``vusb`` virtual camera (python-gphoto2 wheel, 2.5.34).

With ``VCAMERADIR`` set before :mod:`gphoto2` is imported, the wheel loads the vusb port
library instead of libusb, and autodetect finds one virtual PTP camera serving that directory
(``libgphoto2_port/vusb/vcamera.c``). A capture hands back the first ``*.jpg`` of the
directory. The camera reads the directory **once**, at ``init()``, keeping each file's size;
later downloads re-read the file's bytes up to that size. So a new frame must be written into
the same file, **in place, at exactly the same byte size**: a file of another size gives
gphoto2 error -1 and can corrupt the heap. :class:`VirtualCameraDir` keeps one JPEG of fixed
capacity, re-encodes each frame at the highest quality that fits and pads it with zeros (JPEG
decoders stop at the end-of-image marker).

Not atomic: a download that overlaps :meth:`VirtualCameraDir.write_frame` can return a torn
frame, so write, then trigger.

The virtual camera's serial number is always :data:`~hardware.gphoto.VUSB_SERIAL` ("0.1");
libgphoto2 has it as a constant, so it cannot be set per directory.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from hardware.gphoto import VUSB_SERIAL

__all__ = ["VirtualCameraDir", "encode_jpeg_to_capacity", "VUSB_SERIAL"]

JPEG_QUALITIES = (95, 90, 85, 80, 75, 70, 60, 50, 40, 30, 20, 10, 5)


def encode_jpeg_to_capacity(image: np.ndarray, capacity_bytes: int,
                            qualities=JPEG_QUALITIES) -> tuple[bytes, int]:
    """JPEG bytes of ``image`` ((H, W, 3) or (H, W) uint8) at the highest quality in
    ``qualities`` whose size is at most ``capacity_bytes``; returns (data, quality).
    Raises ValueError if even the lowest quality does not fit."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image))
    size = None
    for quality in qualities:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        size = buf.tell()
        if size <= capacity_bytes:
            return buf.getvalue(), quality
    raise ValueError(f"JPEG of a {image.shape} frame needs {size} bytes at quality "
                     f"{qualities[-1]}; capacity is {capacity_bytes} bytes")


class VirtualCameraDir:
    """A ``VCAMERADIR`` holding one fixed-size JPEG that frames are written into in place.

    Parameters
    ----------
    path : directory to use (created if missing).
    width, height : frame size, pixels; :meth:`write_frame` expects exactly this shape.
    capacity_bytes : byte size of the JPEG file, fixed for the directory's life. Default
        ``max(32 KiB, width * height)`` bytes (8 bits per pixel, enough for photographs at
        quality 90 and more; busier frames are written at a lower quality).
    filename : name of the JPEG (must end in .jpg, which vusb looks for).
    """

    def __init__(self, path, width: int, height: int, capacity_bytes: int | None = None,
                 filename: str = "frame.jpg"):
        if not filename.lower().endswith(".jpg"):
            raise ValueError("the vusb camera only serves files named *.jpg")
        self.path = Path(path)
        self.width = int(width)
        self.height = int(height)
        self.capacity_bytes = int(capacity_bytes or max(32768, self.width * self.height))
        self.file = self.path / filename
        self.last_quality: int | None = None
        self.frames_written = 0
        self.path.mkdir(parents=True, exist_ok=True)
        others = [p.name for p in self.path.iterdir()
                  if p.name.lower().endswith(".jpg") and p.name != filename]
        if others:
            raise ValueError(f"{self.path} already holds other JPEGs {others}; the virtual "
                             f"camera would serve the first one it lists")
        if self.file.exists() and self.file.stat().st_size != self.capacity_bytes:
            self.file.unlink()  # safe only before a camera has opened the directory
        if not self.file.exists():
            self.file.write_bytes(b"\0" * self.capacity_bytes)
        # a mid-grey start frame, so a capture before the first write_frame decodes
        self.write_frame(np.full((self.height, self.width, 3), 128, dtype=np.uint8))
        self.frames_written = 0

    @property
    def env(self) -> dict:
        """Environment for a camera worker: ``{"VCAMERADIR": <path>}``."""
        return {"VCAMERADIR": str(self.path)}

    @property
    def serial(self) -> str:
        """Serial the virtual camera reports (fixed by libgphoto2, the same for every dir)."""
        return VUSB_SERIAL

    def write_frame(self, image) -> int:
        """Encode ``image`` ((H, W, 3) RGB or (H, W) grey, uint8, H x W = height x width) as
        JPEG, pad it with zeros to ``capacity_bytes`` and overwrite the file in place (same
        inode, same size). Returns the JPEG quality used."""
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, not {image.dtype}")
        if image.shape[:2] != (self.height, self.width) or image.ndim not in (2, 3) or (
                image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"expected a ({self.height}, {self.width}[, 3]) frame, "
                             f"got {image.shape}")
        data, quality = encode_jpeg_to_capacity(image, self.capacity_bytes)
        padded = data + b"\0" * (self.capacity_bytes - len(data))
        fd = os.open(self.file, os.O_WRONLY)  # no O_TRUNC: the size never changes
        try:
            view = memoryview(padded)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        self.last_quality = quality
        self.frames_written += 1
        return quality

    def __repr__(self) -> str:
        return (f"VirtualCameraDir({str(self.path)!r}, {self.width}x{self.height}, "
                f"{self.capacity_bytes} bytes)")
