"""A real-window check: start the app on an Xvfb X server (Qt's xcb plugin, as on a desktop) and screenshot every tab.

    python benchmarks/xvfb_check.py [OUT_DIR]      # default: ./xvfb-shots

It skips cleanly (exit 0, one line) where Xvfb is not installed: `apt-get install -y xvfb imagemagick
libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1`. The app runs in a child process on a fresh X server of
1600x1000 (the screen of the hands-on review) with a scratch RNNSTUDIO_HOME; it trains a small model
through the Training tab, visits each tab, grabs the X screen (ImageMagick's `import -window root` when
present, else Qt's own grab of the screen), checks that the window fits the screen, then closes the
window the normal way and reports how long the close and the process exit took.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCREEN = (1600, 1000)


def child(out_dir: Path) -> int:
    """Runs inside the X session: drive the real window."""
    from rnnstudio.gui.platform_check import platform_problem

    problem = platform_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from PySide6.QtGui import QGuiApplication

    from rnnstudio.gui import fields as F
    from rnnstudio.gui.app import create_app, create_window
    from rnnstudio.gui.screenshots import settle, wait_until

    app = create_app()
    window = create_window(no_plugins=True, restore=False)
    window.resize(1280, 820)
    window.show()
    settle(1.0)
    t = window.training
    t.set_corpus("python-docs")
    for key, value in {"hidden_size": 64, "length_mode": "steps", "length": 60, "eval_every": 20, "sample_every": 20,
                       "batch_size": 32, "seq_len": 35, "name": "xvfb-demo", "device": "cpu", "threads": 1}.items():
        F.set_value(t.fields[key], value)
    if not t.start():
        raise RuntimeError("training did not start")
    wait_until(lambda: not t.is_training(), 600, "training to finish")
    window.models_changed.emit()
    settle(0.5)
    report = {"screen": SCREEN, "window_min_width": window.minimumSizeHint().width(), "shots": []}
    for i in range(window.tabs.count()):
        window.tabs.setCurrentIndex(i)
        settle(0.8)
        name = window.tabs.tabText(i).lower().replace(" ", "-")
        path = out_dir / f"xvfb-{i}-{name}.png"
        if shutil.which("import"):
            subprocess.run(["import", "-window", "root", str(path)], check=True)
        else:
            QGuiApplication.primaryScreen().grabWindow(0).save(str(path))
        frame = window.frameGeometry()
        report["shots"].append({"tab": window.tabs.tabText(i), "png": str(path),
                                "window": [frame.width(), frame.height()]})
    window.showMaximized()
    settle(0.8)
    report["maximized"] = [window.width(), window.height()]
    report["fits_screen"] = report["window_min_width"] <= SCREEN[0] and window.width() <= SCREEN[0]
    started = time.monotonic()
    window.close()
    report["close_s"] = round(time.monotonic() - started, 3)
    report["closed_at"] = time.time()
    print("REPORT " + json.dumps(report), flush=True)
    from rnnstudio.gui.app import leave_now

    app.quit()
    return leave_now(0)  # what the app's main() does once its event loop ends


def main() -> int:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "xvfb-shots").resolve()
    if not shutil.which("Xvfb"):
        print("skipped: Xvfb is not installed (apt-get install -y xvfb imagemagick libxcb-cursor0 libxcb-icccm4 "
              "libxcb-keysyms1)")
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                             "-nolisten", "tcp"], pass_fds=(write_fd,), stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as fh:
            display = ":" + fh.readline().strip()
        env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb",
               "RNNSTUDIO_HOME": tempfile.mkdtemp(prefix="rnnstudio-xvfb-")}
        env.pop("WAYLAND_DISPLAY", None)
        run = subprocess.run([sys.executable, __file__, "--child", str(out_dir)], env=env, capture_output=True,
                             text=True, timeout=900)
        exited_at = time.time()
        sys.stderr.write(run.stderr[-3000:])
        if run.returncode != 0:
            print(f"the app failed under Xvfb (exit {run.returncode})")
            return 1
        line = next(x for x in run.stdout.splitlines() if x.startswith("REPORT "))
        report = json.loads(line[len("REPORT "):])
        report["exit_after_close_s"] = round(exited_at - report.pop("closed_at"), 3)
        print(json.dumps(report, indent=2))
        return 0 if report["fits_screen"] else 1
    finally:
        xvfb.terminate()
        xvfb.wait(10)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.exit(child(Path(sys.argv[2])))
    sys.exit(main())
