"""`tandem dashboard` in a real headless browser (Debian's chromium through puppeteer-core):
a training run that crashes once is followed live (its loss curve grows while it trains
without a reload, the crash is a restart marker on the curves whose hover shows the record),
then the same for two runs overlaid; the API answers a bad run directory with an error for
that run alone. Screenshots go to the build directory.
Run: /usr/bin/python3 tests/dashboard/test_dashboard.py (TANDEM_BIN: the binary).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "resilience"))
import harness as h  # noqa: E402

WORK = DATA = None
OUT = os.environ.get("TANDEM_DASHBOARD_SHOTS", tempfile.gettempdir())
HELD, MAX = 12, 20


def setUpModule():
    global WORK, DATA
    WORK = tempfile.mkdtemp(prefix="tandem-dashboard-")
    DATA = h.prepare_dataset(WORK)


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


def start_run(name):
    cfg = h.write_config(os.path.join(WORK, name + ".toml"), DATA,
                         train={"max_steps": MAX, "eval_every": 5, "eval_batches": 2,
                                "log_every": 5},
                         checkpoint={"every_steps": 5, "every_seconds": 0},
                         supervisor={"backoff_s": 0.05})
    d = os.path.join(WORK, name)
    proc = h.start(["train", cfg, "--out-dir", d, "--threads", "1",
                    "--inject", f"crash@4,pause@{HELD}"])
    return d, proc


def start_dashboard(dirs):
    proc = subprocess.Popen([h.tandem_bin(), "dashboard", *dirs, "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    m = re.search(r"(http://[\d.]+:\d+/)", proc.stderr.readline())
    return proc, m.group(1)


def drive(url, shot, dirs):
    p = subprocess.run(["node", os.path.join(HERE, "drive.mjs"), url, shot, ",".join(dirs),
                        str(HELD), str(MAX)], capture_output=True, text=True, cwd=HERE,
                       timeout=1200)
    return p.returncode, p.stdout, p.stderr


class Browser(unittest.TestCase):
    def follow(self, names, shot):
        runs = [start_run(n) for n in names]
        dirs = [d for d, _ in runs]
        dash, url = start_dashboard(dirs)
        try:
            rc, out, err = drive(url, shot, dirs)
            self.assertEqual(rc, 0, out + err[-3000:])
            seen = json.loads(out.strip().splitlines()[-1])
            for n in names:
                self.assertTrue(any(n in label for label in seen["legend"]), seen["legend"])
                self.assertIn(n, seen["restarts"])
            self.assertEqual(seen["states"], ["finished"] * len(names))
            with open(shot, "rb") as f:
                png = f.read()
            self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
            self.assertEqual(int.from_bytes(png[16:20], "big"), 1400)  # the viewport's width
        finally:
            dash.terminate()
            dash.wait()
            for d, p in runs:
                if p.poll() is None:
                    open(os.path.join(d, "faults.release"), "w").close()
                p.wait(timeout=600)
        for _, p in runs:
            self.assertEqual(p.returncode, 0)

    def test_one_run_is_followed_live_with_its_crash_marked(self):
        self.follow(["one"], os.path.join(OUT, "dashboard-one.png"))

    def test_two_runs_are_overlaid(self):
        self.follow(["left", "right"], os.path.join(OUT, "dashboard-two.png"))


class Api(unittest.TestCase):
    def test_a_bad_directory_is_an_error_for_that_run_alone(self):
        good = os.path.join(WORK, "good")
        cfg = h.write_config(os.path.join(WORK, "good.toml"), DATA,
                             train={"max_steps": 3, "eval_every": 0},
                             checkpoint={"every_steps": 0, "every_seconds": 0})
        h.run(["train", cfg, "--out-dir", good, "--no-supervise"])
        with open(os.path.join(good, "metrics.jsonl"), "a") as f:
            f.write('{"step": 4, "loss"')  # a run still writing its last line
        empty = os.path.join(WORK, "empty")
        os.makedirs(empty, exist_ok=True)
        dash, url = start_dashboard([good, empty, os.path.join(WORK, "missing")])
        try:
            runs = json.loads(urllib.request.urlopen(url + "api/runs").read())
            self.assertEqual(runs[0]["status"]["steps_done"], 3)
            self.assertIn("not a run directory", runs[1]["error"])
            self.assertIn("not a directory", runs[2]["error"])
            data = json.loads(urllib.request.urlopen(url + "api/runs/0/data").read())
            self.assertEqual([m["step"] for m in data["metrics"]], [1, 2, 3])
            # The next poll from the offsets it got sees nothing new until the line completes.
            q = "&".join(f"{k}={v}" for k, v in data["offsets"].items())
            again = json.loads(urllib.request.urlopen(url + "api/runs/0/data?" + q).read())
            self.assertEqual(again["metrics"], [])
            with self.assertRaises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(url + "api/runs/9/data")
            self.assertEqual(e.exception.code, 404)
            page = urllib.request.urlopen(url).read().decode()
            self.assertIn("uPlot.js", page)
            lib = urllib.request.urlopen(url + "uPlot.js").read()
            self.assertGreater(len(lib), 20000, "the charting library is built in")
        finally:
            dash.terminate()
            dash.wait()


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[1:], verbosity=2)
