"""Before the QApplication exists: find the X11 libraries Qt's xcb plugin needs, so a bare Linux gets one clear line."""

from __future__ import annotations

import ctypes
import os
import sys

# The shared libraries that Qt 6's libqxcb.so and libQt6XcbQpa.so link against (`ldd` of PySide6 6.x),
# with the package that ships each on Debian/Ubuntu and on Fedora/RHEL.
XCB_LIBRARIES = (
    ("libxcb-cursor.so.0", "libxcb-cursor0", "xcb-util-cursor"),
    ("libxcb-icccm.so.4", "libxcb-icccm4", "xcb-util-wm"),
    ("libxcb-keysyms.so.1", "libxcb-keysyms1", "xcb-util-keysyms"),
    ("libxcb-image.so.0", "libxcb-image0", "xcb-util-image"),
    ("libxcb-render-util.so.0", "libxcb-render-util0", "xcb-util-renderutil"),
    ("libxcb-util.so.1", "libxcb-util1", "xcb-util"),
    ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0", "libxkbcommon-x11"),
    ("libxkbcommon.so.0", "libxkbcommon0", "libxkbcommon"),
    ("libxcb-randr.so.0", "libxcb-randr0", "libxcb"),
    ("libxcb-shape.so.0", "libxcb-shape0", "libxcb"),
    ("libxcb-xkb.so.1", "libxcb-xkb1", "libxcb"),
    ("libxcb-sync.so.1", "libxcb-sync1", "libxcb"),
    ("libxcb-xfixes.so.0", "libxcb-xfixes0", "libxcb"),
    ("libxcb-shm.so.0", "libxcb-shm0", "libxcb"),
    ("libxcb-render.so.0", "libxcb-render0", "libxcb"),
    ("libxcb.so.1", "libxcb1", "libxcb"),
    ("libX11-xcb.so.1", "libx11-xcb1", "libX11-xcb"),
)


def uses_xcb(environ=None, platform: str | None = None) -> bool:
    """Whether Qt will pick its xcb (X11) plugin: Linux, and neither QT_QPA_PLATFORM nor a Wayland session says otherwise."""
    environ = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux"):
        return False
    chosen = environ.get("QT_QPA_PLATFORM", "").strip()
    if chosen:
        return chosen.split(";")[0].split(":")[0] == "xcb"  # "offscreen", "wayland", "xcb;wayland", ...
    return not environ.get("WAYLAND_DISPLAY")


def loadable(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def missing_xcb_libraries(load=None) -> list[tuple[str, str, str]]:
    """The (soname, Debian package, Fedora package) rows whose library cannot be loaded (``load``: a test's stand-in)."""
    load = load or loadable
    return [row for row in XCB_LIBRARIES if not load(row[0])]


def missing_message(missing) -> str:
    """One line naming every missing library's package and the commands that install them."""
    apt = " ".join(dict.fromkeys(deb for _, deb, _ in missing))
    dnf = " ".join(dict.fromkeys(rpm for _, _, rpm in missing))
    names = ", ".join(soname for soname, _, _ in missing)
    return (f"rnnstudio: the desktop app needs X11 libraries that are not installed ({names}); install them with "
            f"`sudo apt-get install {apt}` (Debian/Ubuntu) or `sudo dnf install {dnf}` (Fedora), "
            f"or run the app on Wayland, or use the CLI (`rnnstudio train --help`)")


def platform_problem(environ=None, platform: str | None = None, load=None) -> str | None:
    """The one line to print instead of letting Qt abort, or None when the app can start."""
    if not uses_xcb(environ, platform):
        return None
    missing = missing_xcb_libraries(load)
    return missing_message(missing) if missing else None
