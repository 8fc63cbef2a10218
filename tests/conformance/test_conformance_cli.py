"""`tandem conformance` end to end, for every backend the binary was built with: the report
covers every kernel declared in backend.h (read here independently of the C++ code), with
NaN/Inf variants, a training check of 50 steps, and a PASS verdict. A backend whose device is
absent (cuda on a machine without a GPU) is skipped with a message. Also: the build-time
coverage check rejects a header that declares a kernel with no case.

  TANDEM_BIN=build/src/tandem/tandem /usr/bin/python3 tests/conformance/test_conformance_cli.py
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "resilience"))
import harness as h  # noqa: E402

ROOT = h.ROOT
HEADER = os.path.join(ROOT, "src", "tandem", "backend", "backend.h")
CASES = os.path.join(ROOT, "src", "tandem", "conformance", "cases.cpp")
CHECK = os.path.join(ROOT, "cmake", "check_conformance.cmake")
WORK = tempfile.mkdtemp(prefix="tandem-conformance-")
INFRA = {"name", "matmul_precision", "describe", "alloc", "release", "to_device", "to_host", "synchronize"}


def declared_kernels():
    with open(HEADER) as f:
        text = f.read()
    names = re.findall(r"virtual[^;(]*?[ *&]([a-z_0-9]+)\(", text)
    return [n for n in names if n not in INFRA]


def built_backends():
    out = subprocess.run([h.tandem_bin(), "conformance", "--help"], capture_output=True,
                         text=True).stdout
    m = re.search(r"backend to certify \(([^)]*)\)", out)
    return [b.strip() for b in m.group(1).split(",")]


class Cli(unittest.TestCase):
    def test_every_built_backend_passes_with_full_coverage(self):
        ds = h.prepare_dataset(WORK)
        cfg = h.write_config(os.path.join(WORK, "tiny.toml"), ds)
        kernels = declared_kernels()
        self.assertGreaterEqual(len(kernels), 20)
        backends = built_backends()
        self.assertIn("cpu", backends)
        for be in backends:
            out = os.path.join(WORK, be + ".json")
            p = subprocess.run([h.tandem_bin(), "conformance", "--backend", be, "--config", cfg,
                                "--threads", "2", "--json", out], capture_output=True, text=True,
                               timeout=900)
            if be != "cpu" and "no device" in p.stderr:
                print(f"SKIPPED: backend {be}: {p.stderr.strip()}", file=sys.stderr)
                continue
            self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr[-2000:])
            self.assertIn("verdict: PASS", p.stdout)
            with open(out) as f:
                rep = json.load(f)
            self.assertEqual(rep["verdict"], "pass")
            covered = {c["kernel"] for c in rep["cases"]}
            self.assertEqual(covered, set(kernels))
            for k in kernels:
                shapes = [c["shape"] for c in rep["cases"] if c["kernel"] == k]
                self.assertGreaterEqual(len([s for s in shapes if "nan/inf" not in s]), 2, k)
                self.assertTrue(any("nan/inf" in s for s in shapes), k)
            self.assertTrue(rep["training"]["ran"])
            self.assertEqual(rep["training"]["steps"], 50)
            self.assertLessEqual(rep["training"]["max_rel_loss_diff"], rep["training"]["tolerance"])

    def test_bad_arguments_are_one_clear_error(self):
        p = subprocess.run([h.tandem_bin(), "conformance", "--backend", "tpu9000"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("tpu9000", p.stderr)
        p = subprocess.run([h.tandem_bin(), "conformance", "--backend", "cpu", "--config",
                            os.path.join(WORK, "missing.toml")], capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("missing.toml", p.stderr)

    def test_build_check_rejects_a_kernel_without_a_case(self):
        with open(HEADER) as f:
            text = f.read()
        extra = text.replace("  virtual void wmatmul_forward(",
                             "  virtual void fused_softmax_forward(float* out, int n) = 0;\n"
                             "  virtual void wmatmul_forward(")
        self.assertNotEqual(extra, text)
        hdr = os.path.join(WORK, "backend_extra.h")
        with open(hdr, "w") as f:
            f.write(extra)
        stamp = os.path.join(WORK, "stamp")
        ok = subprocess.run(["cmake", f"-DHEADER={HEADER}", f"-DCASES={CASES}",
                             f"-DSTAMP={stamp}", "-P", CHECK], capture_output=True, text=True)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        bad = subprocess.run(["cmake", f"-DHEADER={hdr}", f"-DCASES={CASES}",
                              f"-DSTAMP={stamp}", "-P", CHECK], capture_output=True, text=True)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("fused_softmax_forward", bad.stderr)


if __name__ == "__main__":
    unittest.main()
