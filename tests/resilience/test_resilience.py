"""Resilience tests through the real binary: random SIGKILLs end bit-identical to an
uninterrupted run, and every injected fault kind is detected, logged and recovered from.
Run: /usr/bin/python3 tests/resilience/test_resilience.py [-k NAME] (TANDEM_BIN picks the binary;
TANDEM_TRAIN_BACKEND=cuda runs every training on that backend, exit 77 where it has no device).
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

WORK = None
DATA = None
REF = {}  # (config name) -> (run_dir, final_state)


def setUpModule():
    global WORK, DATA
    WORK = tempfile.mkdtemp(prefix="tandem-resilience-")
    DATA = h.prepare_dataset(WORK)


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


def fault_config(name, **extra):
    """tiny's model with a smaller batch: 60 steps, a checkpoint every 10, quick hang detection."""
    sections = {
        "train": {"max_steps": 60, "batch_size": 4, "eval_every": 0, "log_every": 10},
        "checkpoint": {"every_steps": 10, "every_seconds": 0, "keep_last": 0},
        "supervisor": {"hang_min_s": 3.0, "backoff_s": 0.1},
        "guard": {"fingerprint_every": 20},
    }
    for table, keys in extra.items():
        sections.setdefault(table, {}).update(keys)
    return h.write_config(os.path.join(WORK, name + ".toml"), DATA, **sections)


def reference(cfg, name, steps):
    if name not in REF:
        d = os.path.join(WORK, "ref-" + name)
        h.run(["train", cfg, "--out-dir", d, "--no-supervise"])
        REF[name] = (d, h.final_state(d, steps))
    return REF[name][1]


def seconds_to_step(run_dir, step):
    """Seconds from the start of training to the end of `step`, read from timing.jsonl."""
    with open(os.path.join(run_dir, "timing.jsonl")) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    at = next(r for r in recs if r["step"] == step)
    return at["t"] - recs[0]["t"] + recs[0]["step_s"]


class RandomKills(unittest.TestCase):
    def test_random_sigkills_end_bit_identical(self):
        # CHAOS_STEPS: a longer run where steps are fast (a GPU), so the kills land before
        # it ends.
        steps = int(os.environ.get("CHAOS_STEPS", "200"))
        cfg = h.write_config(os.path.join(WORK, "tiny200.toml"), DATA,
                             train={"max_steps": steps, "eval_every": 50},
                             checkpoint={"every_steps": 10, "every_seconds": 0, "keep_last": 3},
                             supervisor={"backoff_s": 0.05, "max_failures": 8})
        want = reference(cfg, "tiny200", steps)
        run_dir = os.path.join(WORK, "chaos")
        chaos = h.Chaos(cfg, run_dir, seed=int(os.environ.get("CHAOS_SEED", "20261122")),
                        mix=["worker", "worker", "ckpt", "ckpt", "resume", "tree"],
                        delay=(0.1, 1.0))
        rc, err = chaos.run(target_kills=14)
        print("kills:", chaos.kills, file=sys.stderr)
        self.assertEqual(rc, 0, err[-2000:])
        self.assertGreaterEqual(sum(chaos.kills.values()), 10)
        self.assertGreaterEqual(chaos.kills["ckpt"], 2, "too few kills landed during a write")
        self.assertEqual(h.final_state(run_dir, steps), want)
        self.assertEqual(h.temporaries(run_dir), [])
        st = h.status(run_dir)
        self.assertEqual(st["state"], "finished")
        self.assertEqual(st["steps_done"], steps)
        self.assertGreaterEqual(st["restarts"], chaos.kills["worker"] + chaos.kills["ckpt"])
        self.assertTrue(0 < st["goodput"] <= 1)


class Fingerprints(unittest.TestCase):
    def test_fingerprints_are_the_checkpoint_files_sha256(self):
        """The SDC fingerprint of the live state (every 20 steps) and the one a checkpoint
        records both equal hashlib's SHA-256 of the checkpoint's files at that step."""
        cfg = fault_config("faults")
        reference(cfg, "faults", 60)
        d = REF["faults"][0]
        ev = h.events(d)
        live = {e["step"]: e for e in ev if e["event"] == "fingerprint"}
        saved = {e["step"]: e["fingerprint"] for e in ev if e["event"] == "checkpoint_saved"}
        self.assertEqual(sorted(live), [20, 40, 60])
        for step in (20, 40, 60):
            ck = os.path.join(d, "step-%08d" % step)
            with open(os.path.join(ck, "model.safetensors"), "rb") as f:
                params = hashlib.sha256(f.read()).hexdigest()
            with open(os.path.join(ck, "optimizer.safetensors"), "rb") as f:
                optimizer = hashlib.sha256(f.read()).hexdigest()
            self.assertEqual((live[step]["params"], live[step]["optimizer"]), (params, optimizer))
            self.assertEqual(saved[step], {"params": params, "optimizer": optimizer})
        self.assertNotEqual(live[20]["params"], live[40]["params"])


class Writers(unittest.TestCase):
    def test_one_writer_per_run_directory(self):
        cfg = fault_config("lock", supervisor={"hang_min_s": 3600.0})
        want = reference(cfg, "lock", 60)
        d = os.path.join(WORK, "lock")
        # The first writer stops at step 30 and stays there (its supervisor would wait an hour
        # to call it hung), so it holds the run for as long as the test needs.
        first = h.start_held(["train", cfg, "--out-dir", d], d, 30)

        def contents():
            out = {}
            for root, _, files in os.walk(d):
                for n in files:
                    out[os.path.relpath(os.path.join(root, n), d)] = h.sha(os.path.join(root, n))
            return out

        before = contents()
        for extra in ([], ["--no-supervise"]):
            p = h.run(["train", cfg, "--out-dir", d, "--resume"] + extra, check=False)
            self.assertEqual(p.returncode, 1, p.stderr[-2000:])
            self.assertIn(f"run directory '{d}' is in use by process {first.pid} on host "
                          f"{socket.gethostname()}", p.stderr)
            self.assertEqual(p.stderr.count("error:"), 1, p.stderr)
        self.assertEqual(contents(), before, "a refused writer changed the run")
        self.assertGreaterEqual(h.status(d)["steps_done"], 20)  # a reader needs no lock
        # The holder dies without a chance to clean up; its lock file stays, but the lock
        # died with it and must not block the resume.
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        first.stderr.close()
        self.assertTrue(os.path.exists(os.path.join(d, ".lock")))
        h.run(["train", cfg, "--out-dir", d, "--resume"])
        self.assertEqual(h.final_state(d, 60), want)

    def test_a_refused_config_leaves_no_run_directory(self):
        d = os.path.join(WORK, "never")
        p = h.run(["train", fault_config("faults"), "--out-dir", d, "--data-dir",
                   os.path.join(WORK, "no-such-data")], check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no-such-data", p.stderr)
        self.assertFalse(os.path.exists(d))


class FaultRuns(unittest.TestCase):
    """Each fault kind: the expected events appear and the run ends where it should. The
    kinds are split over three classes so that ctest runs them side by side."""

    def check_run(self, name, faults, expect, supervised=False, equal=True, cfg=None, steps=60):
        cfg = cfg or fault_config("faults")
        want = reference(cfg, "faults", 60) if equal else None
        d = os.path.join(WORK, name)
        args = ["train", cfg, "--out-dir", d, "--inject", faults]
        p = h.run(args + ([] if supervised else ["--no-supervise"]), check=False)
        self.assertEqual(p.returncode, 0, p.stderr[-3000:])
        ev = h.kinds(d)
        for k in expect:
            self.assertIn(k, ev, f"{name}: no '{k}' event; got {sorted(set(ev))}")
        if equal:
            self.assertEqual(h.final_state(d, steps), want, name)
        self.assertEqual(h.temporaries(d), [])
        return d, p



class Faults(FaultRuns):
    """Process faults: crashes and hangs."""

    def test_crash_at_step_restarts_from_memory(self):
        d, _ = self.check_run("crash", "crash@25", ["fault_injected", "restart", "resumed"], True)
        resumed = [e for e in h.events(d) if e["event"] == "resumed"]
        self.assertEqual(resumed[0]["from"], "memory")
        self.assertEqual(resumed[0]["step"], 24)

    def test_crash_after_seconds_and_during_resume(self):
        # The crash comes a fixed tenth of a second into training (sooner where the reference
        # reached step 12 sooner, a fast backend), so it lands early in the run whatever the
        # machine's load: under ctest -j2 a step can take several times longer or shorter than
        # it did in the reference run, and a delay taken from the reference's own timing could
        # fall after this run's end. Wherever it lands, the worker resumes (from the in-memory
        # snapshot) and must end with the reference's bits.
        reference(fault_config("faults"), "faults", 60)
        secs = min(0.1, max(0.02, seconds_to_step(REF["faults"][0], 12)))
        self.check_run("crash_time", "crash@%.3fs,crash@resume" % secs,
                       ["fault_injected", "restart", "resumed"], True)
        self.assertGreaterEqual(h.kinds(os.path.join(WORK, "crash_time")).count("restart"), 2)

    def test_crash_while_writing_a_checkpoint(self):
        d, _ = self.check_run("ckpt_crash", "ckpt_crash@20", ["fault_injected", "restart"], True)
        exits = [e for e in h.events(d) if e["event"] == "worker_exit"]
        self.assertEqual(exits[0].get("signal"), signal.SIGKILL)

    def test_hang_is_detected_and_killed(self):
        d, _ = self.check_run("hang", "hang@30", ["hang", "restart", "resumed"], True)
        hang = [e for e in h.events(d) if e["event"] == "hang"][0]
        self.assertGreaterEqual(hang["silent_s"], 3.0)



class NumericFaults(FaultRuns):
    """Numerical faults caught by the guard, rollbacks and replays."""

    def transient(self, name, fault, kind=None):
        d, _ = self.check_run(name, fault, ["fault_injected", "anomaly", "rollback",
                                             "transient_fault"])
        if kind:
            an = [e for e in h.events(d) if e["event"] == "anomaly"]
            self.assertEqual(an[0]["kind"], kind)

    def test_nan_gradient(self):
        self.transient("nan", "nan_grad@40", "non_finite")

    def test_inf_gradient(self):
        self.transient("inf", "inf_grad@40", "non_finite")

    def test_bitflip_parameter(self):
        self.transient("flip_param", "bitflip_param@40")

    def test_bitflip_gradient(self):
        self.transient("flip_grad", "bitflip_grad@40", "grad_spike")

    def test_bitflip_activation(self):
        self.transient("flip_act", "bitflip_act@40")

    def test_loss_spike(self):
        self.transient("spike", "spike@40", "loss_spike")

    def test_silent_gradient_corruption_found_by_replay_check(self):
        cfg = fault_config("replay", guard={"replay_check_every": 1})
        d, _ = self.check_run("replay", "bitflip_grad@40:3",
                              ["replay_check", "rollback", "transient_fault"], cfg=cfg)
        bad = [e for e in h.events(d) if e["event"] == "replay_check" and not e["match"]]
        self.assertEqual([e["step"] for e in bad], [40])
        self.assertEqual(h.final_state(d, 60), reference(fault_config("faults"), "faults", 60))

    def test_bad_batch_is_skipped_and_checkpointed(self):
        d, _ = self.check_run("bad_batch", "bad_batch@40", ["anomaly", "rollback",
                                                           "batch_skipped"], equal=False)
        with open(os.path.join(d, "step-00000060", "manifest.json")) as f:
            man = json.load(f)
        skipped = man["extra"]["skipped_batches"]
        self.assertEqual(len(skipped), 1)
        self.assertEqual(skipped[0]["step"], 40)
        # Resuming from a checkpoint taken before the bad batch makes the same decision again.
        d2 = os.path.join(WORK, "bad_batch_resume")
        shutil.copytree(d, d2)
        for n in os.listdir(d2):
            if n.startswith("step-") and int(n[5:13]) > 30:
                shutil.rmtree(os.path.join(d2, n))
        h.run(["train", fault_config("faults"), "--out-dir", d2, "--resume", "--no-supervise",
               "--inject", "bad_batch@40"])
        self.assertEqual(h.final_state(d2, 60), h.final_state(d, 60))

    def test_repeated_faults_stop_with_a_diagnosis(self):
        cfg = fault_config("faults")
        d = os.path.join(WORK, "diagnosis")
        p = h.run(["train", cfg, "--out-dir", d, "--inject",
                   "bad_batch@40,bad_batch@41,bad_batch@42,bad_batch@43"], check=False)
        self.assertEqual(p.returncode, 3, p.stderr[-2000:])
        self.assertIn("consecutive rollbacks", p.stderr)
        ev = h.kinds(d)
        self.assertIn("diagnosis", ev)
        self.assertNotIn("restart", ev)
        self.assertEqual(h.status(d)["state"], "diagnosis")

    def test_slow_replays_are_progress_not_a_hang(self):
        # Every recomputation after a rollback takes 1.5 s more (an injected delay), and four
        # bad batches in a row keep the worker rolling back and replaying without finishing a
        # step for longer than the hang timeout (hang_min_s = 3 s). Its heartbeats say it is
        # working, so the supervisor must not call it hung: no hang, no restart, and the run
        # ends with the diagnosis as it would without the delay.
        cfg = fault_config("faults")
        d = os.path.join(WORK, "slow_replays")
        p = h.run(["train", cfg, "--out-dir", d, "--inject",
                   "bad_batch@40,bad_batch@41,bad_batch@42,bad_batch@43,slow_replay@1.5s"],
                  check=False)
        self.assertEqual(p.returncode, 3, p.stderr[-2000:])
        ev = h.events(d)
        kinds = [e["event"] for e in ev]
        self.assertIn("diagnosis", kinds)
        self.assertNotIn("hang", kinds)
        self.assertNotIn("restart", kinds)
        # The replays really did outlast the timeout without a step being finished.
        first = next(e["t"] for e in ev if e["event"] == "anomaly")
        last = next(e["t"] for e in ev if e["event"] == "diagnosis")
        self.assertGreater(last - first, 3.0)



class CheckpointFaults(FaultRuns):
    """Checkpoint and storage faults, Ctrl-C, and fault-spec errors."""

    def test_corrupt_checkpoint_is_never_loaded(self):
        for fault in ("ckpt_corrupt", "ckpt_truncate"):
            d = os.path.join(WORK, fault)
            cfg = fault_config("faults")
            # The run stops at step 25; its final checkpoint rots on disk after it was verified.
            h.run(["train", cfg, "--out-dir", d, "--no-supervise", "--stop-after", "25",
                   "--inject", f"{fault}@25"])
            p = h.run(["train", cfg, "--out-dir", d, "--no-supervise", "--resume"])
            self.assertIn("skipping checkpoint", p.stderr)
            self.assertIn("resumed from " + os.path.join(d, "step-00000020"), p.stderr)
            rej = [e for e in h.events(d) if e["event"] == "checkpoint_rejected"]
            self.assertEqual(len(rej), 1, fault)
            self.assertIn("step-00000025", rej[0]["dir"])
            self.assertTrue(any(n.startswith("step-00000025.rejected-") for n in os.listdir(d)))
            self.assertEqual(h.final_state(d, 60), reference(cfg, "faults", 60), fault)

    def test_disk_full_and_read_only_during_a_write(self):
        for fault, msg in (("enospc", "No space left on device"),
                           ("erofs", "Read-only file system")):
            d, _ = self.check_run(fault, f"{fault}@20", ["checkpoint_failed", "checkpoint_saved"])
            failed = [e for e in h.events(d) if e["event"] == "checkpoint_failed"]
            self.assertIn(msg, failed[0]["error"])
            self.assertEqual(failed[0]["step"], 20)
            saved = [e["step"] for e in h.events(d) if e["event"] == "checkpoint_saved"]
            self.assertTrue(any(20 < s < 30 for s in saved), saved)  # retried before step 30

    def test_ctrl_c_stops_cleanly_and_resumes_exactly(self):
        # The run is held at step 30 (hang@30, with a supervisor that would wait an hour to
        # call it hung), so Ctrl-C lands mid-run however fast the machine is.
        cfg = fault_config("ctrl_c", supervisor={"hang_min_s": 3600.0})
        d = os.path.join(WORK, "ctrl_c")
        proc = h.start_held(["train", cfg, "--out-dir", d], d, 30)
        os.killpg(proc.pid, signal.SIGINT)
        self.assertEqual(proc.wait(timeout=60), 0, proc.stderr.read()[-2000:])
        ev = h.kinds(d)
        self.assertIn("stop_requested", ev)
        self.assertNotIn("restart", ev)
        st = h.status(d)
        self.assertEqual(st["state"], "stopped")
        self.assertEqual(st["last_checkpoint_step"], st["steps_done"])
        self.assertEqual(st["steps_done"], 30)
        proc.stderr.close()
        h.run(["train", cfg, "--out-dir", d, "--resume"])
        self.assertEqual(h.final_state(d, 60), reference(fault_config("faults"), "faults", 60))

    def test_bad_fault_spec_is_one_clear_error(self):
        p = h.run(["train", fault_config("faults"), "--out-dir", os.path.join(WORK, "nope"),
                   "--inject", "meltdown@5"], check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("unknown fault kind 'meltdown'", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(WORK, "nope")))


def device_missing():
    """With TANDEM_TRAIN_BACKEND=cuda (say), the reason its device is unusable, or None."""
    be = os.environ.get("TANDEM_TRAIN_BACKEND", "cpu")
    if be == "cpu":
        return None
    work = tempfile.mkdtemp(prefix="tandem-probe-")
    try:
        cfg = h.write_config(os.path.join(work, "probe.toml"), h.prepare_dataset(work),
                             train={"max_steps": 1, "eval_every": 0})
        p = h.run(["train", cfg, "--out-dir", os.path.join(work, "run"), "--no-supervise"],
                  check=False)
        return p.stderr.strip().splitlines()[-1] if "no device" in p.stderr else None
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    why = device_missing()
    if why:
        print("SKIPPED: resilience on " + os.environ["TANDEM_TRAIN_BACKEND"] + ": " + why,
              file=sys.stderr)
        sys.exit(77)
    unittest.main(verbosity=2)
