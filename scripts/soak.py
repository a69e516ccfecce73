#!/usr/bin/env python3
"""Soak with faults: Redis + 2 encoders + 2 decoders on loopback (deploy/local/cluster.sh),
concurrent clients that encode and generate for --minutes, and meanwhile: Redis restarted (it
comes back empty), a decoder SIGKILLed and restarted, an encoder SIGTERMed (it drains) and
restarted. Run through scripts/soak.sh.

Clients behave as a careful backend does (docs/CLIENTS.md, clients/python): UNAVAILABLE is
retried with back-off, on the other replica when there is one; NOT_FOUND for a slot (Redis lost
it) encodes the context again; a stream cut by a killed decoder is retried from the start on
the other decoder (nothing was shown to a user here, so replaying it is safe).

The last line is
  soak: requests=N ok=N recovered=N failed=N cut_streams=N rss_growth_pct=X
  requests     every ask the clients made
  ok           asks that ended in an answer (recovered ones included)
  recovered    ok asks that needed a retry or a re-encode on the way
  failed       asks that ended in anything but an answer after their retries (must be 0)
  cut_streams  streams that ended with an OK status but no final message (must be 0)
  rss_growth_pct  the largest resident-memory growth among the processes never restarted,
               from the end of the warm-up (first 20% of the run) to the end
Exit status 1 when failed or cut_streams is not 0 (or the cluster could not start).
"""
import argparse
import os
import random
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
import grpc  # noqa: E402
from icae_client import IcaeClient, IcaeError  # noqa: E402

CLUSTER = os.path.join(ROOT, "deploy", "local", "cluster.sh")


def cluster(*args, check=True):
    r = subprocess.run([CLUSTER, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"cluster.sh {' '.join(args)} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = self.ok = self.recovered = self.failed = self.cut = 0
        self.errors = {}

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def error(self, what):
        with self.lock:
            self.errors[what] = self.errors.get(what, 0) + 1


def passages(n):
    with open(os.path.join(ROOT, "deploy", "example-context.txt")) as f:
        words = f.read().split()
    out = []
    for i in range(n):
        start = (i * 37) % max(1, len(words) - 60)
        out.append(" ".join(words[start:start + 60]))
    return out


def client_loop(idx, encoders, decoders, stop_at, stats, attempts, texts):
    rng = random.Random(idx)
    clients = {}

    def client(e, d):
        key = (e, d)
        if key not in clients:
            # The client's own retries cover short outages; the loop below moves to the other
            # replica when they are used up.
            clients[key] = IcaeClient(encoders[e], decoders[d], timeout=60, retries=3, backoff=0.1,
                                      max_backoff=1.0)
        return clients[key]

    n = 0
    while time.monotonic() < stop_at:
        n += 1
        # Half the contexts repeat (slot-cache and prefix-cache hits), half are new.
        base = rng.choice(texts)
        text = base if rng.random() < 0.5 else f"{base} (client {idx}, request {n})"
        prompt = rng.choice(["What is this about?", "Who is named here?", "Summarise it."])
        stats.add(requests=1)
        e, d = rng.randrange(len(encoders)), rng.randrange(len(decoders))
        done = False
        for attempt in range(attempts):
            try:
                final = client(e, d).ask(text, prompt, max_new_tokens=rng.choice([4, 8, 16]))
                stats.add(ok=1, recovered=int(attempt > 0 or final.reencoded))
                done = True
                break
            except IcaeError as err:
                stats.error(err.code.name)
                if err.code == grpc.StatusCode.INTERNAL and "without a final message" in err.details:
                    stats.add(cut=1)
                if err.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND,
                                    grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
                                    grpc.StatusCode.CANCELLED):
                    break
                # The other replicas, after a pause.
                e, d = (e + 1) % len(encoders), (d + 1) % len(decoders)
                time.sleep(min(2.0, 0.2 * 2 ** attempt) * (0.5 + rng.random() / 2))
        if not done:
            stats.add(failed=1)
    for c in clients.values():
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--attempts", type=int, default=8, help="per ask, across replicas")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--state-dir", default="/tmp/icae-soak")
    a = ap.parse_args()
    if not (0 < a.minutes <= 24 * 60) or not (1 <= a.clients <= 64) or not (1 <= a.attempts <= 100):
        ap.error("--minutes must be in (0, 1440], --clients 1..64, --attempts 1..100")
    cluster("down", "--state-dir", a.state_dir, check=False)
    env = {}
    # Caches bounded small enough to fill during the warm-up, so that RSS growth after it means
    # a leak, not a cache filling up (the decoder's prefix cache and its local copy of slot
    # records are 256 MB each by default).
    for line in cluster("up", "--state-dir", a.state_dir, "--build-dir", a.build_dir, "--threads", "1",
                        "--grace-period", "3s", "--decoder-flag", "--prefix_cache_bytes=8M",
                        "--decoder-flag", "--local_cache_bytes=8M").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    try:
        return run(a, env)
    finally:
        cluster("down", "--state-dir", a.state_dir, check=False)


def pid_of(state_dir, name):
    with open(os.path.join(state_dir, f"{name}.pid")) as f:
        return int(f.read().strip())


def run(a, env):
    encoders, decoders = env["ENCODERS"].split(","), env["DECODERS"].split(",")
    duration = a.minutes * 60
    start = time.monotonic()
    stop_at = start + duration
    stats = Stats()
    texts = passages(12)
    threads = [threading.Thread(target=client_loop, args=(i, encoders, decoders, stop_at, stats, a.attempts, texts))
               for i in range(a.clients)]
    for t in threads:
        t.start()
    # Faults, spread over the run (repeated in runs long enough for more than one round):
    # Redis restarted, decoder-1 killed, encoder-0 drained; survivors: encoder-1, decoder-0.
    faults = [("redis", "TERM"), ("decoder-1", "KILL"), ("encoder-0", "TERM")]
    rounds = max(1, int(a.minutes // 2))
    plan = [(start + duration * (r * len(faults) + i + 1) / (rounds * len(faults) + 1), f)
            for r in range(rounds) for i, f in enumerate(faults)]
    survivors = {n: pid_of(a.state_dir, n) for n in ("encoder-1", "decoder-0")}
    warm_rss = None
    warm_at = start + 0.2 * duration
    for when, (name, sig) in plan + [(stop_at, (None, None))]:
        while time.monotonic() < when:
            if warm_rss is None and time.monotonic() >= warm_at:
                warm_rss = {n: rss_kib(p) for n, p in survivors.items()}
            time.sleep(0.2)
        if name is None:
            break
        t0 = time.monotonic()
        cluster("restart", name, "--signal", sig, "--state-dir", a.state_dir)
        print(f"soak: {name} restarted ({sig}) in {time.monotonic() - t0:.1f} s at "
              f"{t0 - start:.0f} s; so far requests={stats.requests} ok={stats.ok} failed={stats.failed}",
              flush=True)
    for t in threads:
        t.join()
    end_rss = {n: rss_kib(p) for n, p in survivors.items()}
    if warm_rss is None:
        warm_rss = end_rss
    print("soak: survivors' RSS (KiB) after warm-up -> end: " +
          " ".join(f"{n} {warm_rss.get(n)} -> {end_rss.get(n)}" for n in survivors), flush=True)
    growth = 0.0
    for n in survivors:
        if warm_rss.get(n) and end_rss.get(n):
            growth = max(growth, 100.0 * (end_rss[n] - warm_rss[n]) / warm_rss[n])
        else:
            print(f"soak: {n} is gone (it should have survived)", flush=True)
            stats.add(failed=1)
    if stats.errors:
        print("soak: errors seen (then retried): " +
              " ".join(f"{k}={v}" for k, v in sorted(stats.errors.items())), flush=True)
    print(f"soak: requests={stats.requests} ok={stats.ok} recovered={stats.recovered} failed={stats.failed} "
          f"cut_streams={stats.cut} rss_growth_pct={growth:.1f}", flush=True)
    return 0 if stats.failed == 0 and stats.cut == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
