"""`tandem grpo` through the real binary: a run logs the per-step RL figures, a run killed at 5
random moments (rollouts included) ends with the SHA-256 of the uninterrupted one, a run with
two passes per batch of rollouts resumes between the passes to the bit, and each bad input
gets one clear error with nothing written.
Run: /usr/bin/python3 tests/rl/test_grpo.py [GROUP] (TANDEM_BIN: the binary).
"""
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "resilience"))
import harness as h  # noqa: E402

WORK = DATA = BASE = TASK = None
STEPS = 24


def setUpModule():
    global WORK, DATA, BASE, TASK
    WORK = tempfile.mkdtemp(prefix="tandem-grpo-")
    DATA = h.prepare_dataset(WORK)
    BASE = os.path.join(WORK, "base")
    cfg = h.write_config(os.path.join(WORK, "base.toml"), DATA,
                         train={"max_steps": 20, "eval_every": 0, "seq_len": 64, "batch_size": 8},
                         checkpoint={"every_steps": 0, "every_seconds": 0})
    h.run(["train", cfg, "--out-dir", BASE, "--no-supervise"])
    TASK = os.path.join(WORK, "task")
    h.run(["data", "synth", "--task", "addition", "--out", TASK, "--sft-train", "8",
           "--sft-val", "0", "--rl-train", "64", "--rl-val", "8"])


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


def grpo_config(name, train=None, **grpo):
    # A barely trained model rarely gets a sum right: the format reward (any digit) gives the
    # groups reward variance, so the updates are not zero; beta > 0 runs the reference model.
    keys = {"init": BASE, "prompts": os.path.join(TASK, "rl_train.jsonl"),
            "val": os.path.join(TASK, "rl_val.jsonl"), "group_size": 4, "prompts_per_step": 4,
            "max_new_tokens": 8, "beta": 0.04, "format_pattern": "[0-9]", "format_weight": 0.5}
    keys.update(grpo)
    t = {"max_steps": STEPS, "eval_every": 12, "seq_len": 64, "batch_size": 8, "lr": 1e-3,
         "warmup_steps": 2, "log_every": 4}
    t.update(train or {})
    sections = {"train": t, "checkpoint": {"every_steps": 6, "every_seconds": 0, "keep_last": 0},
                "supervisor": {"backoff_s": 0.05}, "grpo": keys}
    return h.write_config(os.path.join(WORK, name + ".toml"), DATA, **sections)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]


REF = {}


def reference(name="ref", **grpo):
    if name not in REF:
        d = os.path.join(WORK, name)
        h.run(["grpo", grpo_config(name, **grpo), "--out-dir", d, "--threads", "1",
               "--no-supervise"])
        REF[name] = d
    return REF[name]


class Logs(unittest.TestCase):
    def test_every_step_logs_rewards_kl_entropy_clipping_lengths_and_times(self):
        d = reference()
        steps = [m for m in metrics(d) if "reward_mean" in m]
        self.assertEqual([m["step"] for m in steps], list(range(1, STEPS + 1)))
        for m in steps:
            for k in ("loss", "grad_norm", "reward_std", "zero_variance_groups", "kl", "entropy",
                      "clip_low", "clip_high", "completion_len", "truncated"):
                self.assertIn(k, m)
            self.assertEqual(set(m["rewards"]), {"exact_match", "format"})
            self.assertTrue(0 <= m["zero_variance_groups"] <= 1)
            self.assertGreater(m["entropy"], 0)
            self.assertGreaterEqual(m["kl"], 0)
        self.assertEqual(steps[0]["kl"], 0, "the first step's policy is the reference")
        self.assertGreater(steps[-1]["kl"], 0, "the policy moved away from the reference")
        self.assertTrue(any(m["grad_norm"] > 0 for m in steps))
        evals = [m for m in metrics(d) if "val_reward" in m]
        self.assertEqual([m["step"] for m in evals], [12, 24])
        with open(os.path.join(d, "timing.jsonl")) as f:
            t = [json.loads(l) for l in f if l.strip()]
        self.assertTrue(all(x["rollout_s"] > 0 and x["rollout_tokens"] > 0 for x in t))


class Resumes(unittest.TestCase):
    def test_killed_at_5_random_moments_it_ends_with_the_bits_of_the_uninterrupted_run(self):
        want = h.final_state(reference(), STEPS)
        d = os.path.join(WORK, "chaos")
        chaos = h.Chaos(grpo_config("chaos", train={"threads": 1}), d, seed=5,
                        mix=["worker", "worker", "tree", "ckpt"], delay=(0.05, 0.6),
                        command="grpo")
        rc, err = chaos.run(5)
        self.assertEqual(rc, 0, err[-3000:])
        self.assertGreaterEqual(sum(chaos.kills.values()), 5, chaos.kills)
        self.assertEqual(h.final_state(d, STEPS), want)

    def test_two_passes_per_batch_resume_between_the_passes(self):
        # passes = 2: steps 1-2 share rollouts, 3-4 ... A crash before step 9's update resumes
        # from step 8 (a fresh batch); one before step 12's from step 11, whose rollouts and
        # sampling log-probabilities come back from the saved state.
        want = h.final_state(reference("ref2", passes=2), STEPS)
        d = os.path.join(WORK, "passes")
        h.run(["grpo", grpo_config("passes", passes=2), "--out-dir", d, "--threads", "1",
               "--inject", "crash@9,crash@12"])
        self.assertEqual(h.final_state(d, STEPS), want)
        self.assertEqual(len([e for e in h.events(d) if e["event"] == "restart"]), 2)
        m = [x for x in metrics(d) if "pass" in x]
        self.assertEqual([x["pass"] for x in m[:4]], [1, 2, 1, 2])
        self.assertTrue(all("reward_mean" in x for x in m if x["pass"] == 1))
        self.assertTrue(all(x["ratio"] == 1.0 for x in m if x["pass"] == 1), "on-policy")


class BadInput(unittest.TestCase):
    def check(self, cfg, words, run_dir):
        p = h.run(["grpo", cfg, "--out-dir", run_dir, "--no-supervise"], check=False)
        self.assertEqual(p.returncode, 1, p.stderr[-2000:])
        for w in words:
            self.assertIn(w, p.stderr)
        self.assertEqual(p.stderr.count("error:"), 1, p.stderr)
        self.assertFalse(os.path.exists(run_dir))

    def write(self, name, lines):
        path = os.path.join(WORK, name)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def test_malformed_prompts_name_the_file_and_line(self):
        good = json.dumps({"messages": [{"role": "user", "content": "What is 1 + 2?"}],
                           "reference": "3"})
        cases = {
            "notjson": (["{oops", good], ["notjson.jsonl:1", "not a JSON object"]),
            "role": ([good, json.dumps({"messages": [{"role": "robot", "content": "x"}],
                                        "reference": "1"})], [":2", "unknown role 'robot'"]),
            "noref": ([json.dumps({"messages": [{"role": "user", "content": "x"}]})],
                      [":1", "missing \"reference\""]),
            "long": ([json.dumps({"prompt": "word " * 200, "reference": "1"})],
                     [":1", "passes the context"]),
            "empty": ([""], ["holds no prompts"]),
        }
        for name, (lines, words) in cases.items():
            with self.subTest(name):
                path = self.write(name + ".jsonl", lines)
                self.check(grpo_config("bad_" + name, prompts=path), words,
                           os.path.join(WORK, "run_" + name))

    def test_a_reference_with_another_architecture_is_refused(self):
        other = os.path.join(WORK, "other")
        cfg = h.write_config(os.path.join(WORK, "other.toml"), DATA,
                             model={"n_layers": 2},
                             train={"max_steps": 2, "eval_every": 0, "seq_len": 64},
                             checkpoint={"every_steps": 0, "every_seconds": 0})
        h.run(["train", cfg, "--out-dir", other, "--no-supervise"])
        self.check(grpo_config("badref", ref=other), ["grpo.ref", "another architecture"],
                   os.path.join(WORK, "run_badref"))

    def test_bad_keys_and_verifiers(self):
        self.check(grpo_config("badloss", loss="ppo"), ["grpo.loss", "ppo"],
                   os.path.join(WORK, "run_badloss"))
        self.check(grpo_config("badgroup", group_size=1), ["grpo.group_size"],
                   os.path.join(WORK, "run_badgroup"))
        self.check(grpo_config("badverifier", verifier="magic"), ["unknown kind 'magic'"],
                   os.path.join(WORK, "run_badverifier"))
        self.check(grpo_config("badregex", format_pattern="(["), ["format"],
                   os.path.join(WORK, "run_badregex"))

    def test_a_crashing_verifier_command_stops_the_run_naming_it(self):
        d = os.path.join(WORK, "crashing")
        p = h.run(["grpo", grpo_config("crashing", verifier="command", command="exit 3"),
                   "--out-dir", d, "--no-supervise"], check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("command", p.stderr)
        self.assertIn("exit 3", p.stderr)
        # With on_error = "zero" it scores 0 and says so in the event log.
        d = os.path.join(WORK, "zero")
        h.run(["grpo", grpo_config("zero", train={"max_steps": 2}, verifier="command",
                                   command="exit 3", on_error="zero"),
               "--out-dir", d, "--no-supervise"])
        failed = [e for e in h.events(d) if e["event"] == "verifier_failed"]
        self.assertEqual(len([e for e in failed if e["during"] == "rollouts"]), 2)
        self.assertIn("exit", failed[0]["reason"])


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[1:], verbosity=2)
