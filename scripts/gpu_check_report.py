#!/usr/bin/env python3
"""Reads what scripts/gpu-check.sh wrote into OUT_DIR and writes OUT_DIR/summary.txt (also to
stdout): conformance results, decode and compress figures beside their bounds, the ratio to HF
transformers + peft, training throughput, and the issue's goals met or not. Standard library
only, so it runs on any python3."""
import json
import os
import re
import sys

GOAL_DECODE_HBM = 60.0     # 7B decode batch 1, % of the HBM bandwidth bound
GOAL_COMPRESS_PEAK = 50.0  # compress of 512-token segments, % of the bf16 tensor-core peak
GOAL_HF_RATIO = 1.5        # ICAE compress / HF transformers + peft


def read(out, name):
    p = os.path.join(out, name)
    return open(p, encoding="utf-8", errors="replace").read() if os.path.exists(p) else None


def read_json(out, name):
    """The last line of OUT_DIR/NAME that parses as JSON (the benchmarks print one), or None."""
    t = read(out, name)
    for line in reversed((t or "").strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def decode_figures(j):
    """{'prefill': (tok/s, bound, pct), 'decode': (tok/s, bound, pct)} from `bench decode --json`."""
    r = {}
    if not j:
        return r
    for key, bound in (("prefill", "prefill_bound_tok_s"), ("decode", "decode_bound_tok_s")):
        v, b = j.get(key + "_tok_s"), j.get(bound)
        if v and b:
            r[key] = (v, b, 100.0 * v / b)
    return r


def compress_rows(j):
    """[(context, segments, batched tok/s, one-at-a-time tok/s, roofline, batched %)] from
    `bench compress --json`."""
    return [(r["context_tokens"], r["segments"], r["tok_s"], r["one_at_a_time_tok_s"],
             r["roofline_tok_s"], 100.0 * r["roofline_fraction"]) for r in (j or [])]


def main():
    if len(sys.argv) != 2:
        print("usage: gpu_check_report.py OUT_DIR", file=sys.stderr)
        return 2
    out = sys.argv[1]
    lines, goals = [], []

    lines.append("== conformance")
    for name in sorted(os.listdir(out)):
        if name.startswith("test-") and name.endswith(".txt"):
            t = read(out, name)
            passed = re.search(r"\[  PASSED  \] (\d+) test", t)
            failed = re.search(r"\[  FAILED  \] (\d+) test", t)
            skipped = re.search(r"\[  SKIPPED \] (\d+) test", t)
            state = "did not finish (see file)"
            if passed or failed:
                state = f"passed {passed.group(1) if passed else 0}, failed {failed.group(1) if failed else 0}"
                if skipped:
                    state += f", skipped {skipped.group(1)}"
            lines.append(f"  {name[5:-4]:32s} {state}")

    for shape in ("246m", "7b"):
        if read(out, f"bench-decode-{shape}.txt") is None:
            continue
        d = decode_figures(read_json(out, f"bench-decode-{shape}.json"))
        lines.append(f"== decode, {shape} shape (bf16)")
        if "prefill" in d:
            lines.append("  prefill  %10.1f tokens/s   bound %10.1f   %5.1f%% of bound" % d["prefill"])
        if "decode" in d:
            lines.append("  decode   %10.1f tokens/s   bound %10.1f   %5.1f%% of bound (batch 1)" % d["decode"])
            if shape == "7b":
                goals.append(("7B decode batch 1 >= %.0f%% of the HBM bound" % GOAL_DECODE_HBM,
                              d["decode"][2], d["decode"][2] >= GOAL_DECODE_HBM))
        if not d:
            lines.append("  no figures (see bench-decode-%s.txt)" % shape)

    ours = {}
    for shape in ("246m", "7b"):
        if read(out, f"bench-compress-{shape}.txt") is None:
            continue
        rows = compress_rows(read_json(out, f"bench-compress-{shape}.json"))
        ours[shape] = rows
        lines.append(f"== compress, {shape} shape (bf16)")
        lines.append("  %8s %9s %14s %14s %12s %9s" % ("context", "segments", "batched tok/s",
                                                      "1-at-a-time", "roofline", "of bound"))
        for r in rows:
            lines.append("  %8d %9d %14.1f %14.1f %12.1f %8.1f%%" % r)
        if shape == "7b" and rows:
            best = max(rows, key=lambda r: r[5])
            goals.append(("compress of 512-token segments >= %.0f%% of bf16 peak (best: context %d)"
                          % (GOAL_COMPRESS_PEAK, best[0]), best[5], best[5] >= GOAL_COMPRESS_PEAK))

    for shape in ("246m", "7b"):
        skip = read(out, f"hf-{shape}.skipped")
        if skip is not None:
            lines.append(f"== HF transformers + peft, {shape}: skipped: {skip.strip()}")
            continue
        if read(out, f"hf-{shape}.json") is None:
            continue
        hf = read_json(out, f"hf-{shape}.json")
        if not isinstance(hf, dict):
            lines.append(f"== HF transformers + peft, {shape}: unreadable output (see hf-{shape}.json)")
            continue
        lines.append(f"== HF transformers {hf.get('transformers')} + peft {hf.get('peft')}, {shape} "
                     f"({hf.get('attn_implementation')} attention), side by side "
                     "(ICAE batched segments; HF one segment per forward, as getao/icae runs it)")
        by_len = {r[0]: r for r in ours.get(shape, [])}
        ratios = []
        for c in hf.get("compress", []):
            mine = by_len.get(c["context"])
            if mine:
                ratio = mine[2] / c["tokens_per_second"]
                ratios.append(ratio)
                lines.append("  compress %5d tokens: ICAE %10.1f tok/s   HF %10.1f tok/s   ratio %.2fx"
                             % (c["context"], mine[2], c["tokens_per_second"], ratio))
        d = decode_figures(read_json(out, f"bench-decode-{shape}.json"))
        if hf.get("decode") and "decode" in d:
            h = hf["decode"]["decode_tokens_per_second"]
            lines.append("  decode batch 1:      ICAE %10.1f tok/s   HF %10.1f tok/s   ratio %.2fx"
                         % (d["decode"][0], h, d["decode"][0] / h))
        if shape == "7b" and ratios:
            goals.append(("ICAE compress >= %.1fx HF transformers + peft (worst length)" % GOAL_HF_RATIO,
                          min(ratios), min(ratios) >= GOAL_HF_RATIO))

    t = read(out, "train-lm.txt")
    if t is not None:
        m = re.search(r"tokens_per_second=([\d.e+]+)", t)
        lines.append("== training (icae train lm, bf16 autocast, fp32 master weights)")
        lines.append("  %s tokens/s" % (m.group(1) if m else "no figure (see train-lm.txt)"))

    env = read(out, "env.txt") or ""
    on_cpu = re.search(r"device: cpu\b", env) is not None
    if goals and on_cpu:
        lines.append("== goals: not evaluated (a CPU run: the bounds are this machine's, not the GPU's)")
    elif goals:
        lines.append("== goals (7B shape)")
        for what, value, ok in goals:
            lines.append("  %-4s %-70s %.2f" % ("met" if ok else "NOT", what, value))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
