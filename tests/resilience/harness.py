"""Drives the real `tandem` binary for the resilience tests and the resilience benchmark:
datasets, configs, supervised runs, kills at chosen moments, events and final-state hashes."""
import hashlib
import json
import os
import random
import signal
import subprocess
import time

import toml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tandem_bin():
    b = os.environ.get("TANDEM_BIN", os.path.join(ROOT, "build", "src", "tandem", "tandem"))
    if not os.path.exists(b):
        raise SystemExit(f"tandem binary not found at {b} (set TANDEM_BIN)")
    return b


def kernels():
    """The CPU model, ISA and GEMM core the CPU backend uses here, as `tandem info` says."""
    out = subprocess.run([tandem_bin(), "info", os.path.join(ROOT, "configs", "tiny.toml")],
                         capture_output=True, text=True).stdout
    return next((l[len("backend: "):] for l in out.splitlines() if l.startswith("backend: ")),
                "unknown")


def make_corpus(path, n_words=120_000, vocab=3000, seed=7):
    """Zipf-distributed pseudo-words from syllables: enough distinct text for a 4096-piece
    tokenizer, and learnable structure (frequent words, fixed bigrams)."""
    rng = random.Random(seed)
    syl = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "ish", "orn",
           "el", "an", "th", "gr", "st", "ber", "dun"]
    words = sorted({"".join(rng.choice(syl) for _ in range(rng.randint(1, 4)))
                    for _ in range(vocab * 2)})[:vocab]
    rng.shuffle(words)
    weights = [1.0 / (i + 1) for i in range(len(words))]
    out, line = [], []
    for w in rng.choices(words, weights, k=n_words):
        line.append(w)
        if rng.random() < 0.3:
            line.append(words[(words.index(w) * 7 + 1) % 50])  # a frequent follower
        if len(line) >= rng.randint(8, 20):
            out.append(" ".join(line).capitalize() + ".")
            line = []
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def prepare_dataset(workdir, vocab_size=4096):
    ds = os.path.join(workdir, "ds")
    if os.path.exists(os.path.join(ds, "dataset.json")):
        return ds
    corpus = os.path.join(workdir, "corpus.txt")
    make_corpus(corpus)
    subprocess.run([tandem_bin(), "data", "prepare", "-i", corpus, "-o", ds,
                    "--vocab-size", str(vocab_size)], check=True, capture_output=True)
    return ds


def write_config(path, data_dir, base="configs/tiny.toml", **sections):
    """configs/tiny.toml (or `base`) with data.dir set and keys replaced, e.g.
    train={"max_steps": 200}, checkpoint={"every_steps": 10}. TANDEM_TRAIN_BACKEND, where set,
    is the runs' backend unless `sections` name one."""
    cfg = toml.load(os.path.join(ROOT, base))
    cfg["data"] = {"dir": data_dir}
    if base == "configs/tiny.toml":
        # The generated corpus trains on the edge of stability at tiny's 3e-3: a loss spike
        # after the warm-up that the guard rightly stops the run for. Tests are not about it.
        cfg["train"]["lr"] = 2.5e-3
    if os.environ.get("TANDEM_TRAIN_BACKEND"):  # the whole suite on another backend
        cfg.setdefault("train", {})["backend"] = os.environ["TANDEM_TRAIN_BACKEND"]
    for table, keys in sections.items():
        cfg.setdefault(table, {}).update(keys)
    with open(path, "w") as f:
        toml.dump(cfg, f)
    return path


def run(args, check=True, env=None, timeout=600):
    e = dict(os.environ)
    e.pop("TANDEM_FAULTS", None)
    e.update(env or {})
    p = subprocess.run([tandem_bin()] + args, capture_output=True, text=True, env=e,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"tandem {' '.join(args)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    return p


def start(args, env=None):
    """A supervised `tandem` in its own process group (so the whole tree can be killed)."""
    e = dict(os.environ)
    e.pop("TANDEM_FAULTS", None)
    e.update(env or {})
    return subprocess.Popen([tandem_bin()] + args, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=e, start_new_session=True)


def start_held(args, run_dir, step, timeout=600):
    """Starts a supervised run with hang@STEP and returns it once it is held there (its
    `fault_injected` event is logged): the run stays at that step until it is stopped."""
    proc = start(args + ["--inject", f"hang@{step}"])
    deadline = time.time() + timeout
    while not any(e["event"] == "fault_injected" and e["fault"] == f"hang@{step}"
                  for e in events(run_dir)):
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before step {step}: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            raise AssertionError(f"the run did not reach step {step} in {timeout} s")
        time.sleep(0.01)
    return proc


def events(run_dir):
    out = []
    path = os.path.join(run_dir, "events.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


def kinds(run_dir):
    return [e["event"] for e in events(run_dir)]


def live_worker(run_dir):
    """The pid of the newest training process the supervisor started and has not reaped."""
    started, exited = [], set()
    for e in events(run_dir):
        if e["event"] == "worker_start":
            started.append(e["worker_pid"])
        elif e["event"] == "worker_exit":
            exited.add(e["worker_pid"])
    live = [p for p in started if p not in exited]
    return live[-1] if live else None


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def final_state(run_dir, step):
    """SHA-256 of the weights, optimizer state and loss log the run ended with."""
    ck = os.path.join(run_dir, "step-%08d" % step)
    return {"model": sha(os.path.join(ck, "model.safetensors")),
            "optimizer": sha(os.path.join(ck, "optimizer.safetensors")),
            "metrics": sha(os.path.join(run_dir, "metrics.jsonl"))}


def temporaries(run_dir):
    return [n for n in os.listdir(run_dir) if ".tmp-" in n]


def status(run_dir):
    return json.loads(run(["status", run_dir, "--json"]).stdout)


class Chaos:
    """Kills a supervised run at random moments until it finishes. Kinds of kill:
    'worker' (the training process, at a random time), 'ckpt' (the training process while a
    checkpoint directory is being written), 'resume' (a process that has just started), and
    'tree' (supervisor and training process together; the run is then started again with
    --resume, so the restart comes from disk, not memory)."""

    def __init__(self, config, run_dir, seed, mix, delay=(0.2, 1.2), env=None, command="train"):
        self.config, self.run_dir, self.env, self.command = config, run_dir, env, command
        self.rng = random.Random(seed)
        self.mix, self.delay = mix, delay
        self.kills = {"worker": 0, "ckpt": 0, "resume": 0, "tree": 0}
        self.kill_times = []  # when each kill landed (for kill -> next step latency)
        self.proc = None

    def _start(self, resume):
        args = [self.command, self.config, "--out-dir", self.run_dir] + (["--resume"] if resume else [])
        self.proc = start(args, self.env)

    def _wait_new_worker(self, old, timeout=30):
        end = time.time() + timeout
        while time.time() < end and self.proc.poll() is None:
            pid = live_worker(self.run_dir) if os.path.exists(self.run_dir) else None
            if pid and pid != old:
                return pid
            time.sleep(0.002)
        return None

    def _wait_progress(self, since_size, timeout=60):
        """Waits until timing.jsonl grows past since_size: the process committed a step."""
        path = os.path.join(self.run_dir, "timing.jsonl")
        end = time.time() + timeout
        while time.time() < end and self.proc.poll() is None:
            if os.path.exists(path) and os.path.getsize(path) > since_size:
                return True
            time.sleep(0.002)
        return False

    def _timing_size(self):
        path = os.path.join(self.run_dir, "timing.jsonl")
        return os.path.getsize(path) if os.path.exists(path) else 0

    def _kill(self, pid, what):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.kills[what] += 1
        self.kill_times.append(time.time())
        return True

    def run(self, target_kills, timeout=900):
        self._start(resume=False)
        end = time.time() + timeout
        worker, last = None, None
        while time.time() < end:
            if self.proc.poll() is not None:
                break
            if sum(self.kills.values()) >= target_kills:
                time.sleep(0.05)
                continue
            size = self._timing_size()
            worker = self._wait_new_worker(worker)
            if worker is None:
                continue
            what = self.rng.choice(self.mix)
            # A kill during resume makes no progress; the supervisor backs off and gives up
            # after too many of those in a row, as it should. So after one, the next kill
            # waits for the process to commit a step.
            if what == "resume" and last == "resume":
                what = "worker"
            last = what
            if what != "resume" and not self._wait_progress(size):
                continue
            if what == "resume":
                time.sleep(self.rng.uniform(0.0, 0.05))
                self._kill(worker, "resume")
            elif what == "ckpt":
                deadline = time.time() + 10
                while time.time() < deadline and self.proc.poll() is None:
                    if temporaries(self.run_dir):
                        self._kill(worker, "ckpt")
                        break
                    time.sleep(0.001)
            elif what == "tree":
                time.sleep(self.rng.uniform(*self.delay))
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                self.proc.wait()
                self.proc.stderr.close()
                self.kills["tree"] += 1
                self.kill_times.append(time.time())
                self._start(resume=True)  # the killed tree's last worker stays in `worker`
            else:
                time.sleep(self.rng.uniform(*self.delay))
                self._kill(worker, "worker")
        rc = self.proc.wait(timeout=max(1, end - time.time()))
        return rc, self.proc.stderr.read()
