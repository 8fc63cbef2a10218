"""Exports checked by real peers.

GGUF: unmodified llama.cpp (node-llama-cpp's prebuilt build) loads Tandem's f32, q8_0 and
q4_0 exports; its tokenization of each prompt equals Tandem's, and along llama.cpp's greedy
continuation Tandem's most likely next token is llama.cpp's choice at every position (so both
generate the same greedy tokens). f32 must agree everywhere; quantized files are compared with
Tandem's own int8/q4 weights and must agree on nearly every position.

verify: the same weights pass with zero divergence, int8 passes its thresholds, a candidate
outside a threshold exits 2 with the report, bad arguments exit 1.

Hugging Face: the PyTorch reference model (tests/reference/llama_ref.py, float64) built from
the exported config.json and model.safetensors matches Tandem's logits.

  TANDEM_BIN=... TANDEM_SERVE_MODEL=RUN_DIR /usr/bin/python3 tests/export/test_export.py
"""
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
from llama_ref import LlamaRef, load_safetensors  # noqa: E402

BIN = os.environ["TANDEM_BIN"]
MODEL = os.environ["TANDEM_SERVE_MODEL"]
PROMPTS = ["And the LORD said", "In the beginning", "Blessed are they that", "the king of",
           "And it came to pass", "unto the people", "1 2 3", "Hello, world!"]


def tandem(*args):
    return subprocess.run([BIN, *args], check=True, capture_output=True, text=True)


def tandem_logits(tokens, quant="none"):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "l.safetensors")
        tandem("logits", "-c", MODEL, "--tokens", ",".join(map(str, tokens)), "--quant", quant,
               "-o", out, "--threads", "2")
        t = load_safetensors(out)
    assert t["tokens"].tolist() == list(tokens)
    return t["logits"]


_TOKENS = {}


def tandem_tokens(prompt):
    if prompt in _TOKENS:
        return _TOKENS[prompt]
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "l.safetensors")
        tandem("logits", "-c", MODEL, "-p", prompt, "-o", out, "--threads", "2")
        _TOKENS[prompt] = load_safetensors(out)["tokens"].tolist()
        return _TOKENS[prompt]


def llama_cpp(gguf, n, prompts, logits=False):
    extra = ["--logits"] if logits else []
    r = subprocess.run(["node", os.path.join(HERE, "llama_cpp.mjs"), gguf, str(n), *extra,
                        *prompts],
                       capture_output=True, text=True, timeout=600, cwd=HERE)
    if r.returncode != 0:
        raise AssertionError("llama.cpp run failed: " + r.stderr[-3000:])
    return json.loads(r.stdout)


class Gguf(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def agreement(self, quant, gguf_quant):
        path = os.path.join(self.tmp.name, f"m-{quant}.gguf")
        tandem("export", "-c", MODEL, "-f", "gguf", "--quant", quant, "-o", path)
        out = llama_cpp(path, 32, PROMPTS, logits=quant == "none")
        same = total = 0
        num = den = 0.0
        for r in out["results"]:
            # Tokenization: llama.cpp's SentencePiece implementation against Tandem's.
            self.assertEqual(r["tokens"], tandem_tokens(r["prompt"]), r["prompt"])
            seq = r["tokens"] + r["generated"]
            logits = tandem_logits(seq, quant)
            p = len(r["tokens"])
            for i in range(p - 1, len(seq) - 1):
                total += 1
                same += int(torch.argmax(logits[i]).item() == seq[i + 1])
                if "logits" in r:
                    theirs = torch.tensor(r["logits"][i - p + 1], dtype=torch.float64)
                    num += torch.sum((logits[i].double() - theirs) ** 2).item()
                    den += torch.sum(theirs ** 2).item()
        print(f"\n  {gguf_quant}: Tandem's greedy choice equals llama.cpp's at {same}/{total} "
              f"positions over {len(PROMPTS)} prompts", file=sys.stderr)
        if den:
            self.logit_err = (num / den) ** 0.5
            print(f"  {gguf_quant}: relative logit difference Tandem vs llama.cpp "
                  f"{self.logit_err:.2e}", file=sys.stderr)
        return same, total

    def test_f32_same_greedy_tokens(self):
        same, total = self.agreement("none", "f32")
        self.assertGreater(total, 200)
        self.assertEqual(same, total)
        # llama.cpp keeps its KV cache in f16 by default: differences of about 1e-5 to 1e-4.
        self.assertLess(self.logit_err, 2e-4)

    def test_q8_0(self):
        same, total = self.agreement("int8", "q8_0")
        self.assertGreaterEqual(same / total, 0.97)

    def test_q4_0(self):
        same, total = self.agreement("q4", "q4_0")
        self.assertGreaterEqual(same / total, 0.90)


class HuggingFace(unittest.TestCase):
    def test_reference_model_matches_tandem_logits(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "hf")
            tandem("export", "-c", MODEL, "-f", "hf", "-o", out)
            for f in ["config.json", "generation_config.json", "model.safetensors",
                      "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"]:
                self.assertTrue(os.path.exists(os.path.join(out, f)), f)
            with open(os.path.join(out, "config.json")) as f:
                hf = json.load(f)
            self.assertEqual(hf["architectures"], ["LlamaForCausalLM"])
            with open(os.path.join(out, "model.safetensors"), "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n))
            self.assertEqual(header["__metadata__"]["format"], "pt")
            cfg = {"dim": hf["hidden_size"], "n_layers": hf["num_hidden_layers"],
                   "n_heads": hf["num_attention_heads"], "n_kv_heads": hf["num_key_value_heads"],
                   "hidden_dim": hf["intermediate_size"], "vocab_size": hf["vocab_size"],
                   "context": hf["max_position_embeddings"],
                   "tie_embeddings": hf["tie_word_embeddings"], "rope_theta": hf["rope_theta"],
                   "norm_eps": hf["rms_norm_eps"]}
            torch.set_default_dtype(torch.float64)
            ref = LlamaRef(cfg).double()
            ref.load_weights(load_safetensors(os.path.join(out, "model.safetensors")))
            tokens = tandem_tokens("And the LORD spake unto Moses, saying,")
            tokens += [5, 77, 1000, 4000, 3, 2]  # arbitrary ids too
            want = ref(torch.tensor([tokens]))[0]
            got = tandem_logits(tokens).double()
            err = (torch.linalg.norm(got - want) / torch.linalg.norm(want)).item()
            print(f"\n  HF export: relative logit error vs the float64 reference {err:.2e}",
                  file=sys.stderr)
            self.assertLess(err, 1e-5)
            # A used directory is refused, and nothing in it is touched.
            r = subprocess.run([BIN, "export", "-c", MODEL, "-f", "hf", "-o", out],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 1)
            self.assertIn("already exists", r.stderr)


class ChatTemplate(unittest.TestCase):
    """The chat format travels with the model: llama.cpp renders the GGUF's template with its
    own Jinja engine and tokenizes it, and gets the tokens `tandem serve` feeds the model for
    the same messages; the Hugging Face export carries the same template."""

    MESSAGES = [{"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "Who said: let there be light?"},
                {"role": "assistant", "content": "God."},
                {"role": "user", "content": "And then, 12 + 30?"}]

    def serve_prompt_tokens(self):
        proc = subprocess.Popen([BIN, "serve", "-c", MODEL, "--port", "0", "--threads", "2",
                                 "--model-name", "m"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stderr.readline()
            m = re.search(r"listening on http://([\d.]+):(\d+)", line)
            self.assertIsNotNone(m, line)
            c = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=120)
            c.request("POST", "/v1/chat/completions", body=json.dumps(
                {"model": "m", "messages": self.MESSAGES, "max_tokens": 1,
                 "return_token_ids": True}))
            r = c.getresponse()
            body = json.loads(r.read())
            c.close()
            self.assertEqual(r.status, 200, body)
            return body["prompt_token_ids"][0]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            proc.stderr.close()

    def test_serve_and_llama_cpp_give_the_same_prompt_tokens(self):
        with tempfile.TemporaryDirectory() as d:
            gguf = os.path.join(d, "m.gguf")
            tandem("export", "-c", MODEL, "-f", "gguf", "-o", gguf)
            r = subprocess.run(["node", os.path.join(HERE, "llama_cpp.mjs"), gguf, "--chat",
                                json.dumps(self.MESSAGES)],
                               capture_output=True, text=True, timeout=600, cwd=HERE)
            self.assertEqual(r.returncode, 0, r.stderr[-3000:])
            peer = json.loads(r.stdout)
            hf = os.path.join(d, "hf")
            tandem("export", "-c", MODEL, "-f", "hf", "-o", hf)
            with open(os.path.join(hf, "tokenizer_config.json")) as f:
                hf_template = json.load(f)["chat_template"]
        # What the template says, written out here independently.
        want = ("<|im_start|>system\nAnswer in one word.<|im_end|>\n"
                "<|im_start|>user\nWho said: let there be light?<|im_end|>\n"
                "<|im_start|>assistant\nGod.<|im_end|>\n"
                "<|im_start|>user\nAnd then, 12 + 30?<|im_end|>\n<|im_start|>assistant\n")
        self.assertEqual(peer["text"], want)
        self.assertEqual(hf_template, peer["template"])
        ours = self.serve_prompt_tokens()
        self.assertEqual(ours, peer["tokens"])
        self.assertEqual(ours.count(3), 5)  # <|im_start|>, one per turn and the prompt's
        self.assertEqual(ours.count(4), 4)  # <|im_end|>
        self.assertEqual(peer["eot"], 4)  # llama.cpp ends the assistant's turn there


class Verify(unittest.TestCase):
    def verify(self, *args):
        return subprocess.run([BIN, "verify", "-c", MODEL, "--threads", "2",
                               "--val-tokens", "2048", "--greedy-tokens", "32", *args],
                              capture_output=True, text=True)

    def test_same_dtype_passes_and_quantized_is_judged(self):
        r = self.verify("--candidate", "cpu", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        rep = json.loads(r.stdout)
        self.assertEqual(rep["verdict"], "PASS")
        self.assertEqual(rep["mean_kld"], 0.0)
        self.assertEqual(rep["top1_agreement"], 1.0)
        self.assertGreater(rep["val_positions"], 1500)
        r = self.verify("--candidate", "cpu:int8", "--json")
        rep = json.loads(r.stdout)
        self.assertGreater(rep["mean_kld"], 0.0)  # quantization does change the logits
        self.assertLess(rep["ppl_ratio"], 1.01)
        self.assertEqual(r.returncode, 0, r.stdout)
        # Outside a threshold: the report, the failed limits, exit 2.
        r = self.verify("--candidate", "cpu:q4", "--max-kld", "1e-9")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("FAIL:", r.stdout)
        self.assertIn("mean KL divergence", r.stdout)

    def test_bad_arguments(self):
        for args, msg in [(["--candidate", "cpu:q3"], "unknown quantization"),
                          (["--candidate", "tpu"], "tpu"),
                          (["--candidate", "cpu", "--data", "/nonexistent"], "--data")]:
            r = self.verify(*args)
            self.assertEqual(r.returncode, 1, (args, r.stdout, r.stderr))
            self.assertIn(msg, r.stderr)
            self.assertEqual(r.stdout, "")


if __name__ == "__main__":
    unittest.main(verbosity=2)
