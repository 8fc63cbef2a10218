"""Data-parallel training through the real binary, ranks on loopback: the same bits with 1, 2,
3 and 4 ranks, a checkpoint of 4 ranks resumed on 2 and on 1, killed ranks (rank 0 included)
restarted with nothing lost, and one clear error for each bad start.
Run: /usr/bin/python3 tests/resilience/test_data_parallel.py [-k NAME] (TANDEM_BIN: the binary).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import json
import random
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

WORK = DATA = CFG = None
STEPS = 60
REF = {}


def setUpModule():
    global WORK, DATA, CFG
    WORK = tempfile.mkdtemp(prefix="tandem-dp-")
    DATA = h.prepare_dataset(WORK)
    # A global batch of 12 micro-batches of 2 sequences: it splits over 1, 2, 3, 4 ranks.
    CFG = config("dp")


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


def config(name, **extra):
    sections = {
        "train": {"max_steps": STEPS, "batch_size": 2, "grad_accum": 12, "seq_len": 64,
                  "eval_every": 30, "eval_batches": 3, "log_every": 10},
        "checkpoint": {"every_steps": 10, "every_seconds": 0, "keep_last": 0},
        "supervisor": {"backoff_s": 0.05},
    }
    for table, keys in extra.items():
        sections.setdefault(table, {}).update(keys)
    return h.write_config(os.path.join(WORK, name + ".toml"), DATA, **sections)


def train(out, *extra, cfg=None, check=True, env=None):
    return h.run(["train", cfg or CFG, "--out-dir", out, "--threads", "1"] + list(extra),
                 check=check, env=env)


def reference():
    if "one" not in REF:
        d = os.path.join(WORK, "ref")
        train(d, "--no-supervise")
        REF["one"] = h.final_state(d, STEPS)
    return REF["one"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SameBits(unittest.TestCase):
    def test_one_to_four_ranks_end_with_the_same_bits(self):
        want = reference()
        for n in (1, 2, 3, 4):
            d = os.path.join(WORK, f"ranks{n}")
            train(d, "--nproc", str(n))
            self.assertEqual(h.final_state(d, STEPS), want, f"{n} ranks")
            ev = h.events(d)
            starts = [e for e in ev if e["event"] == "train_start"]
            self.assertEqual(starts[-1]["ranks"], n)
            self.assertEqual(len([e for e in ev if e["event"] == "worker_start"]), n)
            self.assertEqual(h.temporaries(d), [])

    def test_a_checkpoint_of_four_ranks_resumes_on_two_and_on_one(self):
        want = reference()
        d = os.path.join(WORK, "shrink")
        train(d, "--nproc", "4", "--stop-after", "20")
        train(d, "--nproc", "2", "--resume", "--stop-after", "40")
        train(d, "--resume")
        self.assertEqual(h.final_state(d, STEPS), want)
        # The checkpoint is an ordinary one: generate reads it.
        p = h.run(["generate", "--checkpoint", d, "--prompt", "In the", "--max-tokens", "4"])
        self.assertTrue(p.stdout.strip())


class KilledRanks(unittest.TestCase):
    def test_killed_ranks_are_restarted_and_the_run_ends_the_same(self):
        want = reference()
        d = os.path.join(WORK, "killed")
        cfg = config("killed", supervisor={"collective_timeout_s": 3.0, "backoff_s": 0.05})
        proc = h.start(["train", cfg, "--out-dir", d, "--threads", "1", "--nproc", "3"])
        killed = []
        # SIGKILL rank 1, then rank 0 (the writer), then SIGSTOP rank 2: a stopped process
        # holds its connections open, so only the others' collective deadline finds it.
        for rank, after_step, sig in ((1, 10, signal.SIGKILL), (0, 30, signal.SIGKILL),
                                      (2, 40, signal.SIGSTOP)):
            # Wait for a committed step past `after_step`, then kill that rank's process.
            deadline = time.time() + 600
            while True:
                steps = [e for e in h.events(d) if e["event"] == "checkpoint_saved"]
                if steps and steps[-1]["step"] >= after_step:
                    break
                self.assertIsNone(proc.poll(), proc.stderr.read()[-2000:] if proc.poll() is not None else "")
                self.assertLess(time.time(), deadline)
                time.sleep(0.01)
            started = {}
            for e in h.events(d):
                if e["event"] == "worker_start":
                    started[e["rank"]] = e["worker_pid"]
            os.kill(started[rank], sig)
            killed.append(started[rank])
        rc = proc.wait(timeout=900)
        err = proc.stderr.read()
        proc.stderr.close()
        self.assertEqual(rc, 0, err[-2000:])
        self.assertEqual(h.final_state(d, STEPS), want)
        ev = h.events(d)
        exits = {e["worker_pid"]: e for e in ev if e["event"] == "worker_exit"}
        for pid in killed:  # the stopped one is killed by the supervisor with its group
            self.assertEqual(exits[pid].get("signal"), signal.SIGKILL)
        self.assertGreaterEqual(len([e for e in ev if e["event"] == "restart"]), 3)
        timeouts = [e for e in ev if e["event"] == "collective_failed" and e["kind"] == "timeout"]
        self.assertTrue(timeouts, "the stopped rank was not found by the collective deadline")
        # The ranks stopped because another failed are not counted as crashes.
        st = h.status(d)
        self.assertGreaterEqual(st["crashes"], 3)
        self.assertEqual(st["world_sizes"][-1]["ranks"], 3)
        self.assertEqual(len(st["downtime"]), st["restarts"])
        self.assertTrue(all(x["seconds"] > 0 for x in st["downtime"]))
        text = h.run(["status", d]).stdout
        self.assertIn("ranks        3", text)
        self.assertIn("downtime", text)

def committed_step(run_dir):
    """The newest step in the metrics log (what the run has committed), or 0."""
    path = os.path.join(run_dir, "metrics.jsonl")
    last = 0
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "loss" in r:
                    last = r["step"]
    return last


def running_worker(run_dir, rank):
    """The pid of `rank` once its group trains (it started after the last exit and committed a
    step since), else None."""
    ev = h.events(run_dir)
    last_exit = max([e["t"] for e in ev if e["event"] == "worker_exit"], default=0)
    starts = [e["t"] for e in ev if e["event"] == "train_start" and e["t"] > last_exit]
    if not starts:
        return None
    timing = os.path.join(run_dir, "timing.jsonl")
    if not os.path.exists(timing):
        return None
    with open(timing) as f:
        stepped = any(json.loads(l).get("t", 0) > starts[-1] for l in f if l.strip().endswith("}"))
    if not stepped:
        return None
    exited = {e["worker_pid"] for e in ev if e["event"] == "worker_exit"}
    pids = [e["worker_pid"] for e in ev if e["event"] == "worker_start" and e["rank"] == rank]
    return pids[-1] if pids and pids[-1] not in exited else None


class Chaos(unittest.TestCase):
    """Four ranks; random ranks SIGKILLed and SIGSTOPped at random moments (rank 0 among them,
    and rank 0 killed inside a checkpoint write), each replaced by the supervisor: the run ends
    with the bits of the uninterrupted one, and every fault is found in bounded time."""

    def test_random_kills_and_stops_of_four_ranks_end_with_the_same_bits(self):
        want = reference()
        seed = int(os.environ.get("CHAOS_SEED", random.randrange(1 << 30)))
        rng = random.Random(seed)
        print(f"\nchaos seed {seed} (CHAOS_SEED reruns it)", file=sys.stderr)
        timeout = 3.0
        cfg = config("chaos", supervisor={"collective_timeout_s": timeout, "backoff_s": 0.05},
                     checkpoint={"every_steps": 5})
        d = os.path.join(WORK, "chaos")
        # Rank 0 dies inside the checkpoint write of step 25: half-written files are never
        # loaded and are cleaned up.
        proc = h.start(["train", cfg, "--out-dir", d, "--threads", "1", "--nproc", "4",
                        "--inject", "rank0:ckpt_crash@25"])
        self.addCleanup(lambda: proc.poll() is None and os.killpg(proc.pid, signal.SIGKILL))
        plan = [(0, signal.SIGKILL), (rng.randrange(4), signal.SIGSTOP)]
        plan += [(rng.randrange(4), rng.choice([signal.SIGKILL, signal.SIGSTOP])) for _ in range(2)]
        rng.shuffle(plan)
        at = sorted(rng.sample(range(6, 52), len(plan)))
        sent = []  # (rank, signal, pid, time sent)
        deadline = time.time() + 900
        for (rank, sig), step in zip(plan, at):
            while True:
                self.assertIsNone(proc.poll(), "the run ended early")
                self.assertLess(time.time(), deadline)
                pid = running_worker(d, rank)
                if pid and committed_step(d) >= step:
                    break
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.3))  # a random moment inside a step
            t = time.time()
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
            sent.append((rank, sig, pid, t))
        rc = proc.wait(timeout=900)
        err = proc.stderr.read()
        proc.stderr.close()
        self.assertEqual(rc, 0, err[-2000:])
        self.assertEqual(h.final_state(d, STEPS), want, f"seed {seed}")
        self.assertEqual(h.temporaries(d), [])
        ev = h.events(d)
        self.assertTrue(any(e["event"] == "fault_injected" and e["fault"] == "rank0:ckpt_crash@25"
                            for e in ev))
        exits = {e["worker_pid"]: e for e in ev if e["event"] == "worker_exit"}
        report = []
        for i, (rank, sig, pid, t) in enumerate(sent):
            until = sent[i + 1][3] if i + 1 < len(sent) else float("inf")
            ex = exits.get(pid)
            self.assertIsNotNone(ex, f"rank {rank} (pid {pid}) never exited")
            self.assertEqual(ex.get("signal"), signal.SIGKILL)
            self.assertGreaterEqual(ex["t"], t - 0.05)
            if sig == signal.SIGKILL:
                found = ex["t"] - t  # the supervisor reaps it
            else:
                # A stopped rank holds its connections open: the others' deadline finds it. (A
                # rank that timed out closes its connections, so its neighbours may log a lost
                # peer a few ms before its own event is written.)
                failed = [e for e in ev if e["event"] == "collective_failed" and t <= e["t"] < until]
                self.assertTrue(failed, f"stopped rank {rank} was not detected")
                timeouts = [e for e in failed if e["kind"] == "timeout"]
                self.assertTrue(timeouts, [(e["rank"], e["kind"], e["message"]) for e in failed])
                self.assertGreaterEqual(max(e["waited_s"] for e in timeouts), timeout - 0.5)
                found = min(e["t"] for e in failed) - t
            report.append(f"rank {rank} {signal.Signals(sig).name}: detected after {found:.2f} s")
            self.assertLess(found, timeout + 60, report[-1])  # the deadline, plus a slow machine
        print("\n".join(report), file=sys.stderr)
        st = h.status(d)
        self.assertGreaterEqual(st["restarts"], len(sent) + 1)
        self.assertEqual(st["world_sizes"][-1]["ranks"], 4)


class Shrink(unittest.TestCase):
    def test_a_lost_machine_leaves_a_smaller_group_that_ends_the_same(self):
        want = reference()
        cfg = config("shrink2", supervisor={"min_ranks": 2, "regroup_settle_s": 1.0})
        port = free_port()
        d0, d1 = os.path.join(WORK, "shrink-n0"), os.path.join(WORK, "shrink-n1")
        node = lambda rank, out: h.start(["train", cfg, "--out-dir", out, "--threads", "1",
                                          "--nnodes", "2", "--node-rank", str(rank), "--nproc",
                                          "2", "--rdzv", f"127.0.0.1:{port}"])
        n0, n1 = node(0, d0), node(1, d1)
        deadline = time.time() + 600
        while not any(e["event"] == "checkpoint_saved" and e["step"] >= 20 for e in h.events(d0)):
            self.assertIsNone(n0.poll())
            self.assertLess(time.time(), deadline)
            time.sleep(0.01)
        os.killpg(n1.pid, signal.SIGKILL)  # machine 1 is gone, supervisor and ranks
        n1.wait()
        n1.stderr.close()
        rc = n0.wait(timeout=900)
        err = n0.stderr.read()
        n0.stderr.close()
        self.assertEqual(rc, 0, err[-2000:])
        self.assertEqual(h.final_state(d0, STEPS), want)
        st = h.status(d0)
        self.assertEqual([w["ranks"] for w in st["world_sizes"]], [4, 2])

    def test_a_machine_that_comes_back_joins_at_a_step_boundary_and_the_run_ends_the_same(self):
        want = reference()
        cfg = config("grow", supervisor={"min_ranks": 2, "regroup_settle_s": 1.0})
        port = free_port()
        d0, d1 = os.path.join(WORK, "grow-n0"), os.path.join(WORK, "grow-n1")
        node = lambda rank, out, *extra: h.start(
            ["train", cfg, "--out-dir", out, "--threads", "1", "--nnodes", "2", "--node-rank",
             str(rank), "--nproc", "2", "--rdzv", f"127.0.0.1:{port}"] + list(extra))
        # Machine 0's ranks hold before step 40 until released: by then the group has shrunk
        # to them and machine 1 is back, waiting at the rendezvous.
        n0, n1 = node(0, d0, "--inject", "pause@40"), node(1, d1)
        deadline = time.time() + 600

        def wait_for(pred, what):
            while not pred():
                self.assertIsNone(n0.poll(), what)
                self.assertLess(time.time(), deadline, what)
                time.sleep(0.01)

        wait_for(lambda: any(e["event"] == "checkpoint_saved" and e["step"] >= 10
                             for e in h.events(d0)), "step 10")
        os.killpg(n1.pid, signal.SIGKILL)
        n1.wait()
        n1.stderr.close()
        wait_for(lambda: any(e["event"] == "fault_injected" and e["fault"] == "pause@40"
                             for e in h.events(d0)), "the pause at step 40")
        starts = [e for e in h.events(d0) if e["event"] == "train_start"]
        self.assertEqual(starts[-1]["ranks"], 2)
        n1 = node(1, d1)  # the machine is back
        url = f"http://127.0.0.1:{port}/waiting?world=2"
        wait_for(lambda: json.load(urllib.request.urlopen(url, timeout=60))["grow"],
                 "machine 1 waiting at the rendezvous")
        open(os.path.join(d0, "faults.release"), "w").close()
        rc = n0.wait(timeout=900)
        err = n0.stderr.read()
        n0.stderr.close()
        self.assertEqual(rc, 0, err[-2000:])
        self.assertEqual(n1.wait(timeout=300), 0, n1.stderr.read()[-2000:])
        n1.stderr.close()
        self.assertEqual(h.final_state(d0, STEPS), want)
        ev = h.events(d0)
        regroups = [e for e in ev if e["event"] == "regroup"]
        self.assertEqual([(e["step"], e["ranks"]) for e in regroups], [(40, 2)])
        st = h.status(d0)
        self.assertEqual([w["ranks"] for w in st["world_sizes"]], [4, 2, 4])
        # The planned restart is neither a crash nor a restart from the budget.
        self.assertEqual(len([e for e in ev if e["event"] == "regroup_restart"]), 1)
        resumed = [e for e in ev if e["event"] == "resumed"]
        self.assertEqual(resumed[-1]["step"], 40)


class RankFaults(unittest.TestCase):
    """Faults injected into one rank (rankR:KIND@WHEN)."""

    def test_a_crash_or_a_hang_of_one_rank_is_detected_and_the_run_ends_the_same(self):
        want = reference()
        cfg = config("rankfaults", supervisor={"collective_timeout_s": 3.0, "hang_min_s": 600.0})
        d = os.path.join(WORK, "rankfaults")
        # Rank 2 dies at step 15; rank 1 hangs at step 35: the others' collective deadline (3 s)
        # finds it, long before the supervisor's own hang limit (10 min).
        train(d, "--nproc", "3", "--inject", "rank2:crash@15,rank1:hang@35", cfg=cfg)
        self.assertEqual(h.final_state(d, STEPS), want)
        ev = h.events(d)
        injected = [e for e in ev if e["event"] == "fault_injected"]
        self.assertEqual(sorted(e["fault"] for e in injected), ["rank1:hang@35", "rank2:crash@15"])
        # The crash: the supervisor sees rank 2 die and restarts the group.
        crashed = [e for e in ev if e["event"] == "worker_exit" and e.get("rank") == 2 and
                   e.get("signal") == signal.SIGKILL]
        self.assertGreaterEqual(len(crashed), 1)
        # The hang: the other ranks' collective of step 35 times out.
        failed = [e for e in ev if e["event"] == "collective_failed" and e["step"] == 35]
        self.assertTrue(failed, [e for e in ev if e["event"] == "collective_failed"])
        self.assertTrue(all(e["kind"] == "timeout" and e["rank"] in (0, 2) for e in failed), failed)
        # Detection time: from the hang to the first failed collective: the 3 s deadline.
        t_hang = next(e["t"] for e in injected if e["fault"] == "rank1:hang@35")
        first = min(e["t"] for e in failed)
        self.assertGreaterEqual(first - t_hang, 2.5)
        self.assertLess(first - t_hang, 3.0 + 60)  # the deadline, plus a slow machine

    def test_a_rank_whose_parameters_diverge_is_named_and_stops_the_run(self):
        cfg = config("diverge", guard={"fingerprint_every": 10})
        d = os.path.join(WORK, "diverge")
        # A low bit: a change too small for the guard (a high one makes every rank's summed
        # loss spike, and all roll back together), so only the fingerprints can tell.
        p = train(d, "--nproc", "3", "--inject", "rank1:bitflip_param@25:20", cfg=cfg, check=False)
        self.assertEqual(p.returncode, 3, p.stderr[-2000:])
        ev = [e for e in h.events(d) if e["event"] == "rank_diverged"]
        self.assertEqual(len(ev), 1)
        self.assertEqual((ev[0]["step"], ev[0]["ranks"]), (30, [1]))
        self.assertIn("rank 1 diverged", p.stderr)
        self.assertIn("step 20", p.stderr)

    def test_a_step_one_rank_rejects_is_rolled_back_on_every_rank(self):
        want = reference()
        d = os.path.join(WORK, "onerank")
        # After the sum, one gradient of rank 1 alone gets a high exponent bit: only rank 1's
        # guard sees it, and the group rolls back and replays the step together.
        train(d, "--nproc", "2", "--inject", "rank1:bitflip_grad@30")
        self.assertEqual(h.final_state(d, STEPS), want)
        ev = h.events(d)
        anomalies = [e for e in ev if e["event"] == "anomaly"]
        self.assertEqual([(e["step"], e["ranks"]) for e in anomalies], [(30, [1])])
        self.assertEqual(len([e for e in ev if e["event"] == "rollback"]), 1)
        self.assertEqual([e["step"] for e in ev if e["event"] == "transient_fault"], [30])

    def test_a_flipped_bit_in_a_gradient_bucket_is_caught_by_the_replay_check(self):
        want = reference()
        cfg = config("bucket", guard={"replay_check_every": 10})
        d = os.path.join(WORK, "bucket")
        # Before the sum: every rank receives the corrupted total, so the replicas stay equal
        # and only recomputing the step shows it.
        train(d, "--nproc", "2", "--inject", "rank1:bitflip_bucket@30", cfg=cfg)
        self.assertEqual(h.final_state(d, STEPS), want)
        ev = h.events(d)
        anomalies = [e for e in ev if e["event"] == "anomaly"]
        self.assertEqual([(e["step"], e["kind"], e["ranks"]) for e in anomalies],
                         [(30, "replay_mismatch", [0, 1])])
        self.assertEqual([e["step"] for e in ev if e["event"] == "transient_fault"], [30])
        fired = [e for e in ev if e["event"] == "fault_injected"]
        self.assertEqual([e["fault"] for e in fired], ["rank1:bitflip_bucket@30"])

    def test_a_slow_rank_is_reported_as_a_straggler(self):
        cfg = config("straggler", train={"max_steps": 16, "eval_every": 0},
                     supervisor={"straggler_window": 5})
        d = os.path.join(WORK, "straggler")
        train(d, "--nproc", "2", "--inject", "rank1:slow_rank@4x", cfg=cfg)
        ev = [e for e in h.events(d) if e["event"] == "straggler"]
        self.assertEqual([e["straggler_rank"] for e in ev], [1])
        self.assertGreater(ev[0]["ratio"], 1.5)
        self.assertGreater(ev[0]["rank_s"], ev[0]["others_s"])
        st = h.status(d)
        self.assertEqual([x["rank"] for x in st["stragglers"]], [1])
        self.assertIn("straggler", h.run(["status", d]).stdout)


class BadStarts(unittest.TestCase):
    def two_nodes(self, cfg0, cfg1, data1=None, bin1=None):
        """Node 0 and node 1 of a 2-machine job on this machine; returns both results."""
        port = free_port()
        args = lambda cfg, rank, out: ["train", cfg, "--out-dir", out, "--threads", "1",
                                       "--nnodes", "2", "--node-rank", str(rank),
                                       "--rdzv", f"127.0.0.1:{port}"]
        d0, d1 = os.path.join(WORK, f"bad0-{port}"), os.path.join(WORK, f"bad1-{port}")
        p0 = h.start(args(cfg0, 0, d0))
        e1 = dict(os.environ)
        cmd1 = args(cfg1, 1, d1) + (["--data-dir", data1] if data1 else [])
        p1 = subprocess.run([bin1 or h.tandem_bin()] + cmd1, capture_output=True, text=True,
                            env=e1, timeout=600)
        try:
            rc0 = p0.wait(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(p0.pid, signal.SIGKILL)
            p0.wait()
            raise AssertionError("node 0 kept waiting: " + p1.stderr[-2000:])
        err0 = p0.stderr.read()
        p0.stderr.close()
        self.assertFalse(os.path.exists(d0), os.listdir(d0) if os.path.exists(d0) else "")
        return (rc0, err0), (p1.returncode, p1.stderr)

    def check_refused(self, results, words):
        for rc, err in results:
            self.assertNotEqual(rc, 0)
            self.assertIn("refused at rendezvous", err)
            for w in words:
                self.assertIn(w, err)

    def test_a_different_config_is_refused(self):
        other = config("other", train={"lr": 2e-3})
        self.check_refused(self.two_nodes(CFG, other), ["different config"])

    def test_different_data_is_refused(self):
        data2 = os.path.join(WORK, "data2")
        if not os.path.exists(data2):  # another corpus: another tokenizer and other shards
            corpus = os.path.join(WORK, "corpus2.txt")
            h.make_corpus(corpus, seed=8)
            h.run(["data", "prepare", "-i", corpus, "-o", data2, "--vocab-size", "4096"])
        self.check_refused(self.two_nodes(CFG, CFG, data1=data2), ["different tokenizer"])

    def test_a_different_binary_is_refused(self):
        other = os.path.join(WORK, "tandem-other")
        shutil.copy(h.tandem_bin(), other)
        with open(other, "ab") as f:
            f.write(b"another build")
        self.check_refused(self.two_nodes(CFG, CFG, bin1=other), ["different tandem binary"])

    def test_a_port_in_use_is_named(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            d = os.path.join(WORK, "portinuse")
            p = train(d, "--nnodes", "2", "--node-rank", "0", "--rdzv", f"127.0.0.1:{port}",
                      check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f":{port}: the port is in use", p.stderr)
        self.assertEqual(p.stderr.count("error:"), 1, p.stderr)
        self.assertFalse(os.path.exists(d))

    def test_an_unreachable_rendezvous_is_named(self):
        cfg = config("unreach", supervisor={"startup_timeout_s": 5.0})
        port = free_port()  # nothing listens there
        d = os.path.join(WORK, "unreach")
        p = train(d, "--nnodes", "2", "--node-rank", "1", "--rdzv", f"127.0.0.1:{port}",
                  cfg=cfg, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f"cannot reach the rendezvous server at 127.0.0.1:{port}", p.stderr)
        p = train(d, "--nnodes", "2", "--node-rank", "1", "--rdzv", "no-such-host.invalid:29500",
                  cfg=cfg, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("no-such-host.invalid", p.stderr)
        self.assertFalse(os.path.exists(d))

    def test_a_world_that_cannot_split_the_batch_is_refused(self):
        d = os.path.join(WORK, "split")
        p = train(d, "--nproc", "5", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("grad_accum = 12", p.stderr)
        self.assertIn("5 ranks", p.stderr)
        self.assertEqual(p.stderr.count("error:"), 1, p.stderr)
        self.assertFalse(os.path.exists(d))
        p = train(d, "--nproc", "2", "--no-supervise", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("need the supervisor", p.stderr)
        p = train(d, check=False, env={"RANK": "3", "WORLD_SIZE": "2"})
        self.assertEqual(p.returncode, 1)
        self.assertIn("outside 0..1", p.stderr)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[1:], verbosity=2)
