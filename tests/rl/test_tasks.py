"""`tandem data synth` and `tandem eval` through the binary: synthetic task sets are
reproducible and their splits disjoint; eval answers held-out prompts with the served fixture
model and scores them with a built-in or an external verifier; bad input gets one error.
Run: TANDEM_BIN=... TANDEM_SERVE_MODEL=RUN_DIR /usr/bin/python3 tests/rl/test_tasks.py
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

BIN = os.environ["TANDEM_BIN"]
MODEL = os.environ["TANDEM_SERVE_MODEL"]


def tandem(*args, check=True):
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"tandem {' '.join(args)} exited {p.returncode}: {p.stderr[-2000:]}")
    return p


def lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


class Synth(unittest.TestCase):
    def test_sets_are_reproducible_disjoint_and_refuse_to_overwrite(self):
        with tempfile.TemporaryDirectory() as d:
            a, b, c = (os.path.join(d, x) for x in "abc")
            for out, seed in ((a, "3"), (b, "3"), (c, "4")):
                tandem("data", "synth", "--task", "countdown", "--out", out, "--seed", seed,
                       "--sft-train", "50", "--sft-val", "20", "--rl-train", "60", "--rl-val", "20")
            names = ["sft_train.jsonl", "sft_val.jsonl", "rl_train.jsonl", "rl_val.jsonl"]
            for n in names:
                with open(os.path.join(a, n)) as f, open(os.path.join(b, n)) as g:
                    self.assertEqual(f.read(), g.read(), n)
            self.assertNotEqual(lines(os.path.join(a, names[0])), lines(os.path.join(c, names[0])))
            questions = [q["messages"][0]["content"] for n in names for q in lines(os.path.join(a, n))]
            self.assertEqual(len(questions), 150)
            self.assertEqual(len(set(questions)), 150)  # no problem in two splits
            sft = lines(os.path.join(a, "sft_train.jsonl"))[0]
            self.assertEqual([m["role"] for m in sft["messages"]], ["user", "assistant"])
            rl = lines(os.path.join(a, "rl_val.jsonl"))[0]
            self.assertEqual([m["role"] for m in rl["messages"]], ["user"])
            self.assertIn("target", json.loads(rl["reference"]))
            with open(os.path.join(a, "task.json")) as f:
                self.assertEqual(json.load(f)["verifier"], "countdown")
            p = tandem("data", "synth", "--task", "addition", "--out", a, check=False)
            self.assertEqual(p.returncode, 1)
            self.assertIn("exists", p.stderr)
            p = tandem("data", "synth", "--task", "chess", "--out", os.path.join(d, "x"), check=False)
            self.assertEqual(p.returncode, 1)
            self.assertIn("unknown task 'chess'", p.stderr)
            self.assertEqual(sorted(os.listdir(d)), ["a", "b", "c"])  # nothing half-written


class Eval(unittest.TestCase):
    def test_answers_are_scored_by_the_verifier(self):
        with tempfile.TemporaryDirectory() as d:
            task = os.path.join(d, "t")
            tandem("data", "synth", "--task", "addition", "--out", task, "--sft-train", "10",
                   "--sft-val", "10", "--rl-train", "10", "--rl-val", "12")
            data = os.path.join(task, "rl_val.jsonl")
            out = os.path.join(d, "e.json")
            p = tandem("eval", "-c", MODEL, "--data", data, "--threads", "2", "--max-tokens", "8",
                       "--parallel", "5", "--json", out)
            self.assertRegex(p.stdout, r"^exact_match: \d+\.\d / 12 = ")
            with open(out) as f:
                j = json.load(f)
            self.assertEqual(j["n"], 12)
            refs = [l["reference"] for l in lines(data)]
            self.assertEqual([it["reference"] for it in j["items"]], refs)
            self.assertTrue(all(it["reward"] in (0.0, 1.0) for it in j["items"]))
            self.assertTrue(all(it["prompt"].endswith("<|im_start|>assistant\n") for it in j["items"]))
            # The same answers, alone and 5 at a time (greedy decoding is per sequence).
            tandem("eval", "-c", MODEL, "--data", data, "--threads", "2", "--max-tokens", "8",
                   "--parallel", "1", "--json", out + "1")
            with open(out + "1") as f:
                self.assertEqual([it["completion"] for it in json.load(f)["items"]],
                                 [it["completion"] for it in j["items"]])
            # An external checker that accepts everything; one that crashes is named.
            p = tandem("eval", "-c", MODEL, "--data", data, "--max-tokens", "4", "--verifier",
                       "command", "--command", "while read -r l; do echo 1; done")
            self.assertIn("= 100.0%", p.stdout)
            p = tandem("eval", "-c", MODEL, "--data", data, "--max-tokens", "4", "--verifier",
                       "command", "--command", "exit 7", check=False)
            self.assertEqual(p.returncode, 1)
            self.assertIn("exited with status 7", p.stderr)
            bad = os.path.join(d, "bad.jsonl")
            with open(bad, "w") as f:
                f.write(json.dumps(lines(data)[0]) + "\n{\"messages\": 3}\n")
            p = tandem("eval", "-c", MODEL, "--data", bad, check=False)
            self.assertEqual(p.returncode, 1)
            self.assertIn("bad.jsonl:2", p.stderr)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[1:], verbosity=2)
