"""`tandem sft` through the real binary: fine-tuning a pre-trained checkpoint on labelled chats
learns (held-out loss falls, token accuracy is logged), a run killed twice ends with the bits of
the uninterrupted one, 2 ranks end with the bits of 1, and each bad input gets one error.
Run: /usr/bin/python3 tests/train/test_sft.py [-k NAME] (TANDEM_BIN: the binary).
"""
import json
import os
import random
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "resilience"))
import harness as h  # noqa: E402

WORK = DATA = BASE = None
STEPS = 30
WORDS = ["the", "king", "said", "unto", "moses", "and", "it", "came", "to", "pass", "light",
         "water", "earth", "people", "city", "river"]


def chats(path, n, seed):
    """A copy task: the user gives words, the assistant repeats them in reverse order."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(2, 4))]
            f.write(json.dumps({"messages": [
                {"role": "system", "content": "Reverse the words."},
                {"role": "user", "content": " ".join(words)},
                {"role": "assistant", "content": " ".join(reversed(words))}]}) + "\n")
    return path


def setUpModule():
    global WORK, DATA, BASE
    WORK = tempfile.mkdtemp(prefix="tandem-sft-")
    DATA = h.prepare_dataset(WORK)
    BASE = os.path.join(WORK, "base")
    cfg = h.write_config(os.path.join(WORK, "base.toml"), DATA,
                         train={"max_steps": 20, "eval_every": 0, "seq_len": 64, "batch_size": 8},
                         checkpoint={"every_steps": 0, "every_seconds": 0})
    h.run(["train", cfg, "--out-dir", BASE, "--no-supervise"])
    chats(os.path.join(WORK, "train.jsonl"), 96, 1)
    chats(os.path.join(WORK, "val.jsonl"), 16, 2)


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


def sft_config(name, model=None, guard=None, train_keys=None, **sft):
    keys = {"init": BASE, "train": os.path.join(WORK, "train.jsonl"),
            "val": os.path.join(WORK, "val.jsonl")}
    keys.update(sft)
    sections = {"train": {"max_steps": STEPS, "eval_every": 10, "seq_len": 96, "batch_size": 4,
                          "grad_accum": 2, "lr": 2e-3, "warmup_steps": 5, "log_every": 10,
                          **(train_keys or {})},
                "checkpoint": {"every_steps": 10, "every_seconds": 0, "keep_last": 0},
                "supervisor": {"backoff_s": 0.05}, "sft": keys}
    if model:
        sections["model"] = model
    if guard:
        sections["guard"] = guard
    return h.write_config(os.path.join(WORK, name + ".toml"), DATA, **sections)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]


REF = {}


def reference():
    if "d" not in REF:
        d = os.path.join(WORK, "ref")
        h.run(["sft", sft_config("ref"), "--out-dir", d, "--threads", "1", "--no-supervise"])
        REF["d"] = d
    return REF["d"]


class Learns(unittest.TestCase):
    def test_fine_tuning_lowers_the_held_out_loss_and_logs_token_accuracy(self):
        d = reference()
        evals = [m for m in metrics(d) if "val_loss" in m]
        self.assertEqual([m["step"] for m in evals], [10, 20, 30])
        self.assertTrue(all(0 <= m["val_token_accuracy"] <= 1 for m in evals))
        self.assertLess(evals[-1]["val_loss"], evals[0]["val_loss"])
        self.assertGreater(evals[-1]["val_token_accuracy"], evals[0]["val_token_accuracy"])
        init = [e for e in h.events(d) if e["event"] == "initialized"]
        self.assertEqual(len(init), 1)
        self.assertEqual(init[0]["step"], 20)
        with open(os.path.join(d, "step-%08d" % STEPS, "manifest.json")) as f:
            self.assertIn("<|im_start|>", json.load(f)["chat_template"])


class ExactMatch(unittest.TestCase):
    def test_held_out_prompts_are_scored_by_a_verifier_at_each_evaluation(self):
        prompts = os.path.join(WORK, "prompts.jsonl")
        with open(prompts, "w") as f:
            for w in ["king", "water", "light"]:
                f.write(json.dumps({"messages": [{"role": "user", "content": "the " + w}],
                                    "reference": w}) + "\n")
        d = os.path.join(WORK, "em")
        # regex "[a-z]": an answer with a letter in it; the reversed words always have some.
        h.run(["sft", sft_config("em", eval_prompts=prompts, eval_verifier="regex",
                                 eval_pattern="[a-z]", eval_max_new_tokens=6),
               "--out-dir", d, "--threads", "1", "--no-supervise"])
        em = [m for m in metrics(d) if "val_exact_match" in m]
        self.assertEqual([m["step"] for m in em], [10, 20, 30])
        self.assertTrue(all(0 <= m["val_exact_match"] <= 1 for m in em))
        self.assertGreater(em[-1]["val_exact_match"], 0)
        # The same run's weights as without the check: evaluation does not touch training.
        self.assertEqual(h.final_state(d, STEPS)["model"], h.final_state(reference(), STEPS)["model"])


class Packs(unittest.TestCase):
    def test_packed_rows_learn_and_resume_to_the_bit(self):
        # sft.pack: several chats per row of 128 positions, attention kept within each: fewer,
        # fuller rows than one chat per row.
        long_rows = {"seq_len": 128, "batch_size": 2}
        ref = os.path.join(WORK, "packed")
        h.run(["sft", sft_config("packed", train_keys=long_rows, pack=True), "--out-dir", ref,
               "--threads", "1", "--no-supervise"])
        evals = [m for m in metrics(ref) if "val_loss" in m]
        self.assertLess(evals[-1]["val_loss"], evals[0]["val_loss"])
        one = os.path.join(WORK, "unpacked")
        h.run(["sft", sft_config("unpacked", train_keys=long_rows), "--out-dir", one, "--threads", "1",
               "--no-supervise"])
        self.assertNotEqual(metrics(ref)[0]["loss"], metrics(one)[0]["loss"],
                            "a packed row holds other examples than an unpacked one")
        d = os.path.join(WORK, "packed_killed")
        h.run(["sft", sft_config("packed_killed", train_keys=long_rows, pack=True), "--out-dir", d,
               "--threads", "1", "--inject", "crash@13"])
        self.assertEqual(h.final_state(d, STEPS), h.final_state(ref, STEPS))


class Resumes(unittest.TestCase):
    def test_a_killed_run_ends_with_the_bits_of_the_uninterrupted_one(self):
        want = h.final_state(reference(), STEPS)
        d = os.path.join(WORK, "killed")
        h.run(["sft", sft_config("killed"), "--out-dir", d, "--threads", "1",
               "--inject", "crash@7,crash@23"])
        self.assertEqual(h.final_state(d, STEPS), want)
        self.assertGreaterEqual(len([e for e in h.events(d) if e["event"] == "restart"]), 2)

    def test_two_ranks_end_with_the_bits_of_one(self):
        want = h.final_state(reference(), STEPS)
        d = os.path.join(WORK, "two")
        h.run(["sft", sft_config("two"), "--out-dir", d, "--threads", "1", "--nproc", "2"])
        self.assertEqual(h.final_state(d, STEPS), want)


class Guard(unittest.TestCase):
    def test_a_batch_that_spikes_again_on_replay_is_learned_from_not_skipped(self):
        # bad_batch@25: the batch of step 25 is garbage every time it is drawn. Pre-training
        # skips such a batch as bad data; fine-tuning keeps every labelled example.
        d = os.path.join(WORK, "hard")
        h.run(["sft", sft_config("hard"), "--out-dir", d, "--threads", "1", "--no-supervise",
               "--inject", "bad_batch@25"])
        ev = h.events(d)
        self.assertEqual([e["step"] for e in ev if e["event"] == "hard_batch"], [25])
        self.assertEqual([e for e in ev if e["event"] == "batch_skipped"], [])
        self.assertEqual([e["from_step"] for e in ev if e["event"] == "rollback"], [25])
        d = os.path.join(WORK, "skip")
        h.run(["sft", sft_config("skip", guard={"skip_bad_batches": True}), "--out-dir", d,
               "--threads", "1", "--no-supervise", "--inject", "bad_batch@25"])
        self.assertEqual([e["step"] for e in h.events(d) if e["event"] == "batch_skipped"], [25])


class BadInput(unittest.TestCase):
    def check(self, args, words, run_dir):
        p = h.run(args, check=False)
        self.assertEqual(p.returncode, 1, p.stderr[-2000:])
        for w in words:
            self.assertIn(w, p.stderr)
        self.assertEqual(p.stderr.count("error:"), 1, p.stderr)
        self.assertFalse(os.path.exists(run_dir), os.listdir(run_dir) if os.path.exists(run_dir) else "")

    def test_a_malformed_line_is_named_by_file_and_line(self):
        bad = os.path.join(WORK, "bad.jsonl")
        with open(os.path.join(WORK, "train.jsonl")) as f, open(bad, "w") as g:
            g.write(f.readline())
            g.write('{"messages": [{"role": "user", "content": "x"}\n')
        d = os.path.join(WORK, "bad-run")
        self.check(["sft", sft_config("bad", train=bad), "--out-dir", d], ["bad.jsonl:2"], d)

    def test_an_unknown_role_is_named(self):
        bad = os.path.join(WORK, "role.jsonl")
        with open(bad, "w") as g:
            g.write(json.dumps({"messages": [{"role": "narrator", "content": "x"},
                                             {"role": "assistant", "content": "y"}]}) + "\n")
        d = os.path.join(WORK, "role-run")
        self.check(["sft", sft_config("role", train=bad), "--out-dir", d],
                   ["role.jsonl:1", "unknown role 'narrator'"], d)

    def test_an_init_checkpoint_of_another_architecture_is_refused(self):
        d = os.path.join(WORK, "arch-run")
        self.check(["sft", sft_config("arch", model={"n_layers": 2}), "--out-dir", d],
                   ["another architecture"], d)

    def test_the_commands_ask_for_their_configs(self):
        d = os.path.join(WORK, "cmd-run")
        self.check(["train", sft_config("cmd"), "--out-dir", d], ["run it with `tandem sft`"], d)
        plain = h.write_config(os.path.join(WORK, "plain.toml"), DATA)
        self.check(["sft", plain, "--out-dir", d], ["has no [sft] table"], d)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[1:], verbosity=2)
