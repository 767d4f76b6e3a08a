"""Still cameras over libgphoto2 (Canon EOS M50 on the bench), one worker process per camera.

References: libgphoto2 2.5.34 and python-gphoto2 2.6.4 (``Camera.autodetect``,
``trigger_capture``, ``wait_for_event``, ``file_get``); libgphoto2's ``vusb`` virtual camera
(``libgphoto2_port/vusb/vcamera.c``) for tests, see :mod:`hardware.sim.vcamera`.

Design
------
* A camera lives in its own worker process (``multiprocessing`` "spawn" context): libgphoto2
  and libusb are not safe to drive from several threads, and a ``Camera`` must never be shared
  between processes. The worker imports :mod:`gphoto2` only after applying ``env``, which is
  how a test gives each worker its own ``VCAMERADIR``. This module itself never imports
  :mod:`gphoto2`, so importing it in the parent changes nothing.
* The camera is opened by **serial number**: the worker autodetects, and for each candidate
  sets abilities and port, ``init()``\\ s it and reads the ``serialnumber`` config widget (or the
  summary's "Serial Number:" line). USB port names (``usb:BBB,DDD``) change on replug; serials
  do not. Serials compare case-insensitively, ignoring leading zeros (Canon reports 32 hex
  digits, zero padded). A candidate that cannot be opened (held by another worker) is skipped
  and the scan is retried until ``start_timeout_s``.
* Capture is trigger → ``GP_EVENT_FILE_ADDED``: :meth:`GPhotoCamera.trigger` has the worker
  read ``time.time()`` right before ``trigger_capture()``; :meth:`GPhotoCamera.wait_frame` has
  it wait for the file, download it, delete it from the camera (optional), decode the JPEG to
  (H, W, 3) uint8 RGB and stamp the arrival time (host seconds at the FILE_ADDED event).
* Every wait on the pipe has a timeout and also watches the worker's process sentinel, so a
  worker that dies (camera unplugged, process killed) gives :class:`DeviceError` ("camera
  <serial> went away") at once instead of a hang. A worker that stops answering is killed.

The vusb virtual camera (what the tests drive)
----------------------------------------------
* It reports serial ``"0.1"`` (manufacturer "GP", model "VC", autodetected as "Nikon DSC
  D750"). The serial is a constant in libgphoto2's ``vcamera.c``; it cannot be set per
  ``VCAMERADIR``. Two virtual cameras therefore share a serial and are told apart by their
  worker's ``VCAMERADIR`` (one camera per worker).
* ``trigger_capture()`` works: it answers at once and queues FOLDER_ADDED (first shot only),
  FILE_ADDED (``/store_00010001/DCIM/1xxGPHOT/GPH_nnnn.JPG``, a new handle onto the first
  ``*.jpg`` in the directory) and CAPTURE_COMPLETE. ``wait_for_event`` returns TIMEOUT at once
  instead of waiting, so the worker sleeps briefly between polls.
* It declares its store full at the 26th capture after ``init()`` (PTP event 0x400a, no file).
  The worker therefore re-opens a virtual camera every :data:`VUSB_CAPTURES_PER_SESSION`
  captures (about 20 ms); a real camera is never re-opened.
* It has ``shutterspeed``, ``f-number``, ``exposurecompensation`` and ``capturetarget``
  ("Internal RAM"); it lacks the Canon-only ``iso``, ``aperture`` and ``imageformat``
  (see ``missing_settings``).
"""

from __future__ import annotations

import collections
import io
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import time

import numpy as np
from PIL import Image

from hardware.devices import Camera, DeviceError, DeviceTimeout, Frame

__all__ = ["GPhotoCamera", "CANON_SETTINGS", "VUSB_SERIAL", "VUSB_CAPTURES_PER_SESSION",
           "normalize_serial"]

log = logging.getLogger(__name__)

#: Settings :meth:`GPhotoCamera.configure` is meant for (Canon EOS config widget names).
CANON_SETTINGS = ("iso", "shutterspeed", "aperture", "imageformat", "capturetarget")
#: Serial number libgphoto2's vusb virtual camera reports (fixed, cannot be configured).
VUSB_SERIAL = "0.1"
#: Captures after which the worker re-opens a vusb camera (it reports store full at the 26th).
VUSB_CAPTURES_PER_SESSION = 24

# gphoto2 error codes meaning the camera itself is gone (unplugged, powered off, port lost).
_GONE_ERRORS = ("GP_ERROR_IO", "GP_ERROR_IO_INIT", "GP_ERROR_IO_READ", "GP_ERROR_IO_WRITE",
                "GP_ERROR_IO_UPDATE", "GP_ERROR_IO_USB_FIND", "GP_ERROR_IO_USB_CLAIM",
                "GP_ERROR_IO_USB_CLEAR_HALT", "GP_ERROR_MODEL_NOT_FOUND")
_JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe")
_POLL_S = 0.005  # sleep between event polls when wait_for_event returns early, seconds


def normalize_serial(serial) -> str:
    """Serial-number key used for matching: stripped, lower case, leading zeros removed."""
    s = str(serial).strip().lower()
    return s.lstrip("0") or s


# --------------------------------------------------------------------------------------------
# Worker process side. Everything below runs in the child; gphoto2 is imported there only.
# --------------------------------------------------------------------------------------------

class _Timeout(Exception):
    """No file within the requested time."""


class _Worker:
    """Owns one libgphoto2 ``Camera`` in the worker process."""

    def __init__(self, gp, serial: str, start_timeout_s: float, delete_from_camera: bool):
        self.gp = gp
        self.wanted = serial
        self.delete_from_camera = delete_from_camera
        self.camera = None
        self.info: dict = {}
        self.pending = collections.deque()  # trigger times (host s) still awaiting a file
        self.captures_since_open = 0
        self._abilities = None
        self._port_info = None
        self._lists = ()
        self._open_by_serial(start_timeout_s)

    # --- opening -----------------------------------------------------------------------------
    def _read_serial(self, camera) -> str:
        gp = self.gp
        try:
            return str(camera.get_config().get_child_by_name("serialnumber").get_value())
        except gp.GPhoto2Error:
            pass
        for line in str(camera.get_summary()).splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "serial number":
                return value.strip()
        return ""

    def _init_camera(self):
        camera = self.gp.Camera()
        camera.set_abilities(self._abilities)
        camera.set_port_info(self._port_info)
        camera.init()
        return camera

    def _open_by_serial(self, timeout_s: float) -> None:
        gp = self.gp
        want = normalize_serial(self.wanted)
        deadline = time.monotonic() + timeout_s
        abilities_list = gp.CameraAbilitiesList()
        abilities_list.load()
        while True:
            port_info_list = gp.PortInfoList()
            port_info_list.load()
            # the PortInfo taken from the list points into it: keep the list alive for reopen
            self._lists = (abilities_list, port_info_list)
            found = gp.Camera.autodetect()
            seen, busy = [], []
            for i in range(found.count()):
                model, port = found.get_name(i), found.get_value(i)
                self._abilities = abilities_list[abilities_list.lookup_model(model)]
                self._port_info = port_info_list[port_info_list.lookup_path(port)]
                try:
                    camera = self._init_camera()
                except gp.GPhoto2Error as exc:
                    busy.append(f"{model} at {port}: {exc}")
                    continue
                serial = self._read_serial(camera)
                if normalize_serial(serial) == want:
                    self.camera = camera
                    self.info = self._describe(camera, model, port, serial)
                    return
                seen.append(f"{serial!r} ({model} at {port})")
                camera.exit()
            if not busy or time.monotonic() > deadline:
                msg = f"no camera with serial {self.wanted!r}; found {seen or 'none'}"
                if busy:
                    msg += f"; could not open {busy}"
                raise DeviceError(msg)
            time.sleep(0.2 + 0.3 * random.random())  # another worker holds one; retry

    def _describe(self, camera, model: str, port: str, serial: str) -> dict:
        summary = str(camera.get_summary())
        fields = {}
        for line in summary.splitlines()[:8]:
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
        virtual = fields.get("manufacturer") == "GP" and fields.get("model") == "VC"
        return {"serial": serial, "model": model, "port": port, "virtual": virtual,
                "manufacturer": fields.get("manufacturer", ""),
                "camera_model": fields.get("model", "")}

    def _reopen(self) -> None:
        # Drop the old Camera before init(): only then does libgphoto2 unload the vusb port
        # library, whose static state (capture counter, file tree) would otherwise persist.
        self.camera.exit()
        self.camera = None
        self.camera = self._init_camera()
        self.captures_since_open = 0

    # --- commands ----------------------------------------------------------------------------
    def configure(self, settings: dict, strict: bool) -> dict:
        """Apply ``settings``; names the camera lacks are reported as None (or refused first
        when ``strict``, before anything is applied)."""
        gp = self.gp
        config = self.camera.get_config()
        widgets, missing = {}, []
        for name in settings:
            try:
                widgets[name] = config.get_child_by_name(name)
            except gp.GPhoto2Error:
                missing.append(name)
        if missing and strict:
            raise DeviceError(f"camera {self.info['serial']} ({self.info['model']}) has no "
                              f"setting(s) {missing}")
        for name, widget in widgets.items():
            _set_widget(gp, widget, name, settings[name])
        if widgets:
            self.camera.set_config(config)
        config = self.camera.get_config()
        reported = {name: None for name in missing}
        for name in widgets:
            reported[name] = config.get_child_by_name(name).get_value()
        return {name: reported[name] for name in settings}

    def read_settings(self, names) -> dict:
        gp = self.gp
        config = self.camera.get_config()
        got = {}
        for name in names:
            try:
                got[name] = config.get_child_by_name(name).get_value()
            except gp.GPhoto2Error:
                got[name] = None
        return got

    def prepare_trigger(self) -> None:
        """Everything that may take time before a shot: drop stale files, renew a vusb
        session that is running out of captures."""
        if not self.pending:
            self._drain_stale_events()
        if self.info["virtual"] and self.captures_since_open >= VUSB_CAPTURES_PER_SESSION:
            self._reopen()

    def fire(self, trigger_time_s: float) -> None:
        """``trigger_capture()``; the caller read ``trigger_time_s`` right before."""
        self.pending.append(trigger_time_s)
        self.captures_since_open += 1
        try:
            self.camera.trigger_capture()
        except BaseException:
            self.pending.pop()
            raise

    def _drain_stale_events(self) -> None:
        """Files no trigger of ours is waiting for (late arrivals after a timeout, a shot
        fired on the body) are removed so they cannot pass for the next frame."""
        gp = self.gp
        for _ in range(100):
            event, data = self.camera.wait_for_event(0)
            if event == gp.GP_EVENT_TIMEOUT:
                return
            if event == gp.GP_EVENT_FILE_ADDED:
                log.warning("discarding untriggered file %s/%s", data.folder, data.name)
                self._delete(data.folder, data.name)

    def _delete(self, folder: str, name: str) -> None:
        if not self.delete_from_camera:
            return
        try:
            self.camera.file_delete(folder, name)
        except self.gp.GPhoto2Error as exc:  # e.g. Canon RAM captures cannot be deleted
            log.debug("could not delete %s/%s: %s", folder, name, exc)

    def wait_frame(self, timeout_s: float) -> dict:
        gp = self.gp
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                self.pending.clear()  # that trigger is lost; late files get drained
                raise _Timeout(f"no file from camera {self.info['serial']} within "
                               f"{timeout_s:g} s")
            ask_ms = max(1, min(200, int(remaining_s * 1000)))
            t0 = time.monotonic()
            event, data = self.camera.wait_for_event(ask_ms)
            if event == gp.GP_EVENT_FILE_ADDED:
                arrival = time.time()
                if not data.name.lower().endswith(_JPEG_SUFFIXES):
                    log.info("skipping non-JPEG file %s/%s", data.folder, data.name)
                    self._delete(data.folder, data.name)
                    continue
                got = self._download(data.folder, data.name, arrival)
                if (self.info["virtual"] and not self.pending
                        and self.captures_since_open >= VUSB_CAPTURES_PER_SESSION):
                    self._reopen()  # now rather than in the next trigger, which must be quick
                return got
            if event == gp.GP_EVENT_UNKNOWN and "event 400a" in str(data).lower():
                self.pending.clear()
                raise DeviceError(f"camera {self.info['serial']} reports its store is full")
            if event == gp.GP_EVENT_TIMEOUT and time.monotonic() - t0 < ask_ms / 2000:
                time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))

    def _download(self, folder: str, name: str, arrival_s: float) -> dict:
        camera_file = self.camera.file_get(folder, name, self.gp.GP_FILE_TYPE_NORMAL)
        data = bytes(memoryview(camera_file.get_data_and_size()))
        self._delete(folder, name)
        with Image.open(io.BytesIO(data)) as img:
            image = np.array(img.convert("RGB"), dtype=np.uint8)
        trigger_s = self.pending.popleft() if self.pending else math.nan
        return {"image": image, "trigger_time_s": trigger_s, "arrival_time_s": arrival_s,
                "filename": f"{folder.rstrip('/')}/{name}"}

    def close(self) -> None:
        if self.camera is not None:
            try:
                self.camera.exit()
            finally:
                self.camera = None


def _set_widget(gp, widget, name: str, value) -> None:
    kind = widget.get_type()
    if kind in (gp.GP_WIDGET_RADIO, gp.GP_WIDGET_MENU):
        choices = [str(c) for c in widget.get_choices()]
        if str(value) not in choices:
            raise DeviceError(f"{name}={value!r} not offered by the camera; choices {choices}")
        widget.set_value(str(value))
    elif kind == gp.GP_WIDGET_TOGGLE:
        widget.set_value(int(bool(value)))
    elif kind == gp.GP_WIDGET_RANGE:
        widget.set_value(float(value))
    elif kind == gp.GP_WIDGET_TEXT:
        widget.set_value(str(value))
    elif kind == gp.GP_WIDGET_DATE:
        widget.set_value(int(value))
    else:
        raise DeviceError(f"setting {name} (widget type {kind}) cannot be set")


def _worker_main(conn, serial: str, env: dict, start_timeout_s: float,
                 delete_from_camera: bool) -> None:
    """Entry point of the worker process: apply ``env``, import gphoto2, open, serve."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = str(value)
    try:
        import gphoto2 as gp

        gone_codes = {getattr(gp, n) for n in _GONE_ERRORS if hasattr(gp, n)}
        worker = _Worker(gp, serial, start_timeout_s, delete_from_camera)
    except BaseException as exc:  # noqa: BLE001 - report every start failure to the parent
        conn.send((0, "error", f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    conn.send((0, "ok", worker.info))

    def run(cmd, fn, **kwargs):
        """(status, payload) of ``fn(**kwargs)``; status "gone" ends the worker."""
        try:
            return "ok", fn(**kwargs)
        except _Timeout as exc:
            return "timeout", str(exc)
        except gp.GPhoto2Error as exc:
            if exc.code in gone_codes:
                return "gone", f"{cmd}: {exc}"
            return "error", f"{cmd}: gphoto2 error {exc}"
        except Exception as exc:  # noqa: BLE001 - the parent raises it as DeviceError
            return "error", f"{cmd}: {exc}"

    deferred = None  # a failure of trigger_capture(), reported by the next wait_frame
    try:
        while True:
            try:
                req_id, cmd, kwargs = conn.recv()
            except (EOFError, OSError):
                return  # parent gone
            if cmd == "close":
                conn.send((req_id, "ok", None))
                return
            if cmd == "trigger":
                # Answer with the time first, then fire: the parent (and the other camera of
                # a pair) never waits for trigger_capture(), which takes long on a real body.
                status, payload = run(cmd, worker.prepare_trigger)
                if status == "ok":
                    payload = time.time()
                    conn.send((req_id, status, payload))
                    status, payload = run(cmd, worker.fire, trigger_time_s=payload)
                    if status == "gone":  # unsolicited; the parent raises it on its next call
                        conn.send((-1, status, payload))
                        return
                    if status != "ok":
                        deferred = (status, payload)
                    continue
            elif cmd == "wait_frame" and deferred is not None:
                (status, payload), deferred = deferred, None
            else:
                status, payload = run(cmd, getattr(worker, cmd), **kwargs)
            conn.send((req_id, status, payload))
            if status == "gone":
                return
    finally:
        try:
            worker.close()
        except Exception:  # noqa: BLE001 - the camera may already be gone
            pass
        conn.close()


# --------------------------------------------------------------------------------------------
# Parent side.
# --------------------------------------------------------------------------------------------

class GPhotoCamera(Camera):
    """A gphoto2 camera, opened by serial number in its own worker process.

    Parameters
    ----------
    serial : serial number to open (see :func:`normalize_serial` for the matching rule).
    settings : applied with :meth:`configure` right after opening, if given.
    env : extra environment for the worker, set before it imports gphoto2 (e.g.
        ``{"VCAMERADIR": ...}``); a value of None removes the variable there.
    missing_settings : "error" – a setting the camera lacks raises :class:`DeviceError`
        (nothing is applied); "warn" – it is logged and reported as None.
    start_timeout_s : seconds allowed for the worker to start and find the camera.
    command_timeout_s : seconds allowed for any other answer from the worker (added to the
        caller's timeout in :meth:`wait_frame`); a worker that misses it is killed.
    delete_from_camera : delete each file from the camera after download.
    """

    def __init__(self, serial: str, settings: dict | None = None, env: dict | None = None,
                 missing_settings: str = "error", start_timeout_s: float = 30.0,
                 command_timeout_s: float = 10.0, delete_from_camera: bool = True):
        if missing_settings not in ("error", "warn"):
            raise ValueError(f"missing_settings must be 'error' or 'warn', "
                             f"not {missing_settings!r}")
        self.serial = str(serial)
        self.missing_settings = missing_settings
        self.command_timeout_s = float(command_timeout_s)
        self.settings: dict = {}
        self.info: dict = {}
        self._req_id = 0
        self._closed = False
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(
            target=_worker_main, name=f"gphoto-{self.serial}", daemon=True,
            args=(child_conn, self.serial, dict(env or {}), float(start_timeout_s),
                  bool(delete_from_camera)))
        self._proc.start()
        child_conn.close()  # so the parent sees EOF the moment the worker dies
        try:
            self.info = self._receive(0, start_timeout_s + self.command_timeout_s, "open")
        except BaseException:
            self._kill()
            raise
        log.info("camera %s open: %s at %s (worker pid %s)", self.serial,
                 self.info.get("model"), self.info.get("port"), self._proc.pid)
        if settings:
            try:
                self.configure(settings)
            except BaseException:
                self.close()
                raise

    # --- plumbing ----------------------------------------------------------------------------
    @property
    def worker_pid(self) -> int | None:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return not self._closed and self._proc.is_alive()

    def _gone(self, why: str) -> DeviceError:
        self._proc.join(0.5)
        code = self._proc.exitcode
        self._kill()
        return DeviceError(f"camera {self.serial} went away ({why}; worker pid "
                           f"{self._proc.pid}, exit code {code})")

    def _receive(self, req_id: int, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise DeviceTimeout(f"camera {self.serial}: worker did not answer {what} within "
                                    f"{timeout_s:g} s; worker stopped")
            ready = multiprocessing.connection.wait([self._conn, self._proc.sentinel],
                                                    timeout=remaining)
            if self._conn in ready:
                try:
                    got_id, status, payload = self._conn.recv()
                except (EOFError, OSError):
                    raise self._gone(f"worker exited during {what}") from None
                if status == "gone":
                    raise self._gone(payload)
                if got_id != req_id:
                    log.debug("camera %s: dropping stale reply %s", self.serial, got_id)
                    continue
                if status == "ok":
                    return payload
                if status == "timeout":
                    raise DeviceTimeout(payload)
                raise DeviceError(f"camera {self.serial}: {payload}")
            if self._proc.sentinel in ready:
                raise self._gone(f"worker exited during {what}")

    def _call(self, cmd: str, extra_wait_s: float = 0.0, **kwargs):
        if self._closed:
            raise DeviceError(f"camera {self.serial} is closed")
        if not self._proc.is_alive():
            raise self._gone("worker not running")
        self._req_id += 1
        try:
            self._conn.send((self._req_id, cmd, kwargs))
        except (BrokenPipeError, OSError):
            raise self._gone(f"worker exited before {cmd}") from None
        wait_s = self.command_timeout_s + extra_wait_s
        return self._receive(self._req_id, wait_s, cmd)

    def _kill(self) -> None:
        self._closed = True
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(2.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(2.0)
        self._conn.close()

    # --- Camera API --------------------------------------------------------------------------
    def configure(self, settings: dict) -> dict:
        """Apply ``settings`` (iso, shutterspeed, aperture, imageformat, capturetarget or any
        other config widget name); returns what the camera reports afterwards, None for a
        setting it lacks (``missing_settings="warn"``)."""
        reported = self._call("configure", settings=dict(settings),
                              strict=self.missing_settings == "error")
        for name, value in reported.items():
            if value is None:
                log.warning("camera %s (%s) has no setting %r; reported as None", self.serial,
                            self.info.get("model"), name)
        self.settings.update(reported)
        return reported

    def read_settings(self, names) -> dict:
        """Current values of the named settings as the camera reports them (None for a
        setting it lacks); changes nothing."""
        return self._call("read_settings", names=list(names))

    def trigger(self) -> float:
        """Fire the shutter; returns the host time read in the worker right before
        ``trigger_capture()``, seconds."""
        return self._call("trigger")

    def wait_frame(self, timeout_s: float = 10.0) -> Frame:
        """Wait for the next file (FILE_ADDED), download and decode it."""
        got = self._call("wait_frame", extra_wait_s=float(timeout_s), timeout_s=float(timeout_s))
        return Frame(image=got["image"], camera=self.serial, trigger_time_s=got["trigger_time_s"],
                     arrival_time_s=got["arrival_time_s"], filename=got["filename"],
                     settings=dict(self.settings))

    def close(self) -> None:
        """Close the camera and end the worker (idempotent)."""
        if self._closed:
            return
        if self._proc.is_alive():
            try:
                self._req_id += 1
                self._conn.send((self._req_id, "close", {}))
                self._proc.join(3.0)
            except (BrokenPipeError, OSError):
                pass
        self._kill()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"pid {self._proc.pid}"
        return f"GPhotoCamera(serial={self.serial!r}, {state})"
