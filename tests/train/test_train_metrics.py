"""`tandem train --metrics-port`: the run's Prometheus endpoint. A supervised run that crashed
once and is held at a known step answers with that step, one restart, its loss and goodput;
a port already taken is one clear error with nothing written.
Run: /usr/bin/python3 tests/train/test_train_metrics.py (TANDEM_BIN: the binary).
"""
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "resilience"))
import harness as h  # noqa: E402

WORK = DATA = None


def setUpModule():
    global WORK, DATA
    WORK = tempfile.mkdtemp(prefix="tandem-metrics-")
    DATA = h.prepare_dataset(WORK)


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


def parse(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class Endpoint(unittest.TestCase):
    def test_a_held_run_reports_its_step_restarts_loss_and_goodput(self):
        cfg = h.write_config(os.path.join(WORK, "m.toml"), DATA,
                             train={"max_steps": 20, "eval_every": 0, "log_every": 5},
                             checkpoint={"every_steps": 4, "every_seconds": 0},
                             supervisor={"backoff_s": 0.05})
        d = os.path.join(WORK, "run")
        proc = h.start(["train", cfg, "--out-dir", d, "--metrics-port", "0", "--threads", "1",
                        "--inject", "crash@5,pause@12"])
        try:
            url = None
            while url is None:  # the first thing the supervisor says is where it serves
                line = proc.stderr.readline()
                self.assertTrue(line, "the run ended without naming its metrics address")
                m = re.search(r"metrics: (http://\S+/metrics)", line)
                url = m.group(1) if m else None
            deadline = time.time() + 600
            while not any(e["event"] == "fault_injected" and e.get("fault") == "pause@12"
                          for e in h.events(d)):
                self.assertIsNone(proc.poll(), "the run ended before step 12")
                self.assertLess(time.time(), deadline)
                time.sleep(0.01)
            with urllib.request.urlopen(url, timeout=30) as r:
                self.assertIn("text/plain", r.headers["Content-Type"])
                text = r.read().decode()
            got = parse(text)
            self.assertEqual(got["tandem_train_step"], 11, text)
            self.assertEqual(got["tandem_train_max_steps"], 20)
            self.assertEqual(got["tandem_train_restarts_total"], 1)
            self.assertEqual(got["tandem_train_crashes_total"], 1)
            self.assertGreater(got["tandem_train_loss"], 0)
            self.assertGreater(got["tandem_train_tokens_per_second"], 0)
            self.assertTrue(0 < got["tandem_train_goodput"] <= 1)
            self.assertEqual(got['tandem_train_state{state="running"}'], 1)
            self.assertIn("# TYPE tandem_train_restarts_total counter", text)
        finally:
            open(os.path.join(d, "faults.release"), "w").close()
            rc = proc.wait(timeout=600)
        self.assertEqual(rc, 0, proc.stderr.read()[-2000:])

    def test_a_taken_port_is_one_clear_error(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        cfg = h.write_config(os.path.join(WORK, "p.toml"), DATA, train={"max_steps": 2})
        d = os.path.join(WORK, "taken")
        p = h.run(["train", cfg, "--out-dir", d, "--metrics-port", str(port)], check=False)
        s.close()
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(f"[metrics] cannot listen on 127.0.0.1:{port}", p.stderr)
        self.assertEqual(p.stderr.count("error:"), 1, p.stderr)
        self.assertFalse(os.path.exists(d))


if __name__ == "__main__":
    unittest.main(verbosity=2)
