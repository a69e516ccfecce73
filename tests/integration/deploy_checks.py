#!/usr/bin/env python3
"""Checks of deploy/ that need parsing (called by scripts/check-deploy.sh; needs python3-yaml).

  deploy_checks.py flags --encoder BIN --decoder BIN RENDERED.yaml...
      Every flag the rendered manifests pass to encoder_service / decoder_service (container
      args and the absl flagfiles they name, resolved through the mounted ConfigMaps) is one the
      binary lists in --helpfull. Also: gRPC probes and Services use the --listen port, the
      scrape annotations and container ports match --metrics_host/--metrics_port, and
      terminationGracePeriodSeconds covers preStop + --grace_period + server shutdown.
  deploy_checks.py metrics --dashboard JSON [--rules YAML] [--hpa RENDERED.yaml]
                           --scrape HOST:PORT...
      The dashboard parses as JSON, every icae_ metric it (and the prometheus-adapter rules and
      HPAs) names is a family that the running services export on /metrics, and it covers the
      families an operator needs.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import urllib.request

import yaml

SERVICE_BINARIES = ("encoder_service", "decoder_service")
errors = []


def fail(msg):
    errors.append(msg)
    print("FAIL: " + msg, file=sys.stderr)


def load_docs(paths):
    docs = []
    for p in paths:
        with open(p) as f:
            for d in yaml.safe_load_all(f):
                if d:
                    d["_file"] = p
                    docs.append(d)
    return docs


def helpfull_flags(binary):
    # absl prints usage and exits non-zero for --helpfull; only the text matters.
    out = subprocess.run([binary, "--helpfull"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=60).stdout
    names = set(re.findall(r"^\s+--([A-Za-z0-9_]+) \(", out, re.M))
    if len(names) < 10:
        raise SystemExit(f"{binary} --helpfull listed only {len(names)} flags:\n{out[:2000]}")
    return names


def parse_flag(arg):
    m = re.match(r"^--?([A-Za-z0-9_]+)(=(.*))?$", arg, re.S)
    if not m:
        return None
    return m.group(1), m.group(3), None


def duration_seconds(text):
    total, pos = 0.0, 0
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and pos > 0 else None


def pod_templates(docs):
    for d in docs:
        if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d, d["spec"]["template"]["spec"]


def check_flags(args):
    known = {"encoder_service": helpfull_flags(args.encoder),
             "decoder_service": helpfull_flags(args.decoder)}
    checked = 0
    for path in args.rendered:
        docs = load_docs([path])
        configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs
                      if d.get("kind") == "ConfigMap"}
        services = [d for d in docs if d.get("kind") == "Service"]
        for obj, spec in pod_templates(docs):
            where = f"{os.path.basename(path)}: {obj['kind']}/{obj['metadata']['name']}"
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            containers = spec.get("containers", [])
            for c in containers + spec.get("initContainers", []):
                cmd = (c.get("command") or [""])[0]
                binary = os.path.basename(cmd)
                if binary not in SERVICE_BINARIES:
                    if any(b in " ".join(c.get("command", []) + c.get("args", []))
                           for b in SERVICE_BINARIES):
                        fail(f"{where} container {c['name']}: runs a service binary without "
                             "naming it in command[0]")
                    continue
                # Expand --flagfile through the mounted ConfigMaps.
                mounts = {m["mountPath"].rstrip("/"): m["name"] for m in c.get("volumeMounts", [])}
                flags = []  # (name, value, origin)
                for a in c.get("args", []):
                    p = parse_flag(a)
                    if p is None:
                        fail(f"{where} container {c['name']}: argument '{a}' is not a flag")
                        continue
                    name, value, _ = p
                    if name == "flagfile":
                        for ff in (value or "").split(","):
                            d, key = os.path.dirname(ff), os.path.basename(ff)
                            vol = volumes.get(mounts.get(d, ""), {})
                            cm = vol.get("configMap", {}).get("name")
                            if cm is None or key not in configmaps.get(cm, {}):
                                fail(f"{where}: --flagfile {ff} is not a key of a ConfigMap "
                                     "mounted at that path")
                                continue
                            for line in configmaps[cm][key].splitlines():
                                line = line.strip()
                                if not line or line.startswith("#"):
                                    continue
                                q = parse_flag(line)
                                if q is None:
                                    fail(f"{where}: {cm}/{key}: '{line}' is not a flag")
                                    continue
                                flags.append((q[0], q[1], f"{cm}/{key}"))
                    else:
                        flags.append((name, value, "args"))
                final = {}
                for name, value, origin in flags:
                    checked += 1
                    if name.startswith("no") and name not in known[binary] and \
                            name[2:] in known[binary]:
                        name = name[2:]  # absl's --noBOOL form
                    if name not in known[binary]:
                        fail(f"{where}: {binary} has no flag --{name} (from {origin})")
                    final[name] = value  # later occurrences win, as in absl
                check_consistency(where, spec, c, containers, final, services, obj)
    print(f"flags: {checked} flag uses checked against --helpfull")


def check_consistency(where, spec, c, containers, flags, services, obj):
    listen = flags.get("listen", "127.0.0.1:0")
    port = int(listen.rsplit(":", 1)[1])
    if listen.rsplit(":", 1)[0] in ("127.0.0.1", "localhost", "[::1]"):
        fail(f"{where}: --listen={listen} is loopback-only; probes and Services cannot reach it")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        pr = c.get(probe, {})
        p = (pr.get("grpc") or pr.get("tcpSocket") or {}).get("port")
        if p is not None and p != port and p != "grpc":
            fail(f"{where}: {probe} port {p} != --listen port {port}")
    if "grpc" not in (c.get("readinessProbe") or {}):
        fail(f"{where}: readinessProbe must be a gRPC health probe (NOT_SERVING while draining)")
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if ports.get("grpc") != port:
        fail(f"{where}: containerPort 'grpc' {ports.get('grpc')} != --listen port {port}")
    labels = obj["spec"]["template"]["metadata"].get("labels", {})
    for s in services:
        sel = s["spec"].get("selector", {})
        if sel and all(labels.get(k) == v for k, v in sel.items()):
            for sp in s["spec"].get("ports", []):
                if sp.get("name") == "grpc" and sp.get("targetPort") not in ("grpc", port):
                    fail(f"Service/{s['metadata']['name']}: grpc targetPort != {port}")
    # Metrics: Prometheus scrapes the pod IP at prometheus.io/port, so the service must bind
    # a non-loopback --metrics_host on that fixed --metrics_port, declared as a container port.
    mport = int(flags.get("metrics_port", "0") or 0)
    mhost = flags.get("metrics_host", "127.0.0.1")
    ann = obj["spec"]["template"]["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") == "true":
        scrape = int(ann.get("prometheus.io/port", "0"))
        if mport <= 0:
            fail(f"{where}: scraped, but --metrics_port is {mport} (needs a fixed port)")
        elif mport != scrape:
            fail(f"{where}: prometheus.io/port {scrape} != --metrics_port {mport}")
        if mhost in ("127.0.0.1", "localhost", "::1"):
            fail(f"{where}: scraped, but --metrics_host={mhost} is loopback-only")
        if ports.get("metrics") != mport:
            fail(f"{where}: containerPort 'metrics' {ports.get('metrics')} != --metrics_port {mport}")
    # Shutdown budget: preStop sleep + drain (--grace_period) + 2 s server shutdown + margin.
    grace = duration_seconds(flags.get("grace_period", "30s"))
    if grace is None:
        fail(f"{where}: cannot read --grace_period={flags.get('grace_period')}")
        return
    pre = 0
    cmd = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command", [])
    if cmd and os.path.basename(cmd[0]) == "sleep":
        pre = float(cmd[1])
    sleep = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds")
    if sleep:
        pre = float(sleep)
    tgp = spec.get("terminationGracePeriodSeconds", 30)
    need = pre + grace + 2 + 3
    if tgp < need:
        fail(f"{where}: terminationGracePeriodSeconds {tgp} < preStop {pre:g}s + "
             f"--grace_period {grace:g}s + 5s")


def scrape(address):
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        return r.read().decode()


def families(text):
    out = {}
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        out[m.group(1)] = m.group(2)
    return out


def metric_names(text):
    return set(re.findall(r"\b(icae_[A-Za-z0-9_]+)", text))


def resolve(name, fams):
    if name in fams:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and fams.get(base) == "histogram":
            return base
    return None


def check_metrics(args):
    fams = {}
    for a in args.scrape:
        f = families(scrape(a))
        if not f:
            fail(f"{a}/metrics exported no families")
        fams.update(f)
    print(f"metrics: {len(fams)} families exported by {len(args.scrape)} services")
    with open(args.dashboard) as f:
        dash = json.load(f)  # raises on invalid JSON
    exprs = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k in ("expr", "query", "definition") and isinstance(v, str):
                    exprs.append(v)
                elif k == "query" and isinstance(v, dict) and isinstance(v.get("query"), str):
                    exprs.append(v["query"])
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(dash)
    if not exprs:
        fail(f"{args.dashboard}: no queries found")
    used = set()
    for e in exprs:
        for n in metric_names(e):
            base = resolve(n, fams)
            if base is None:
                fail(f"{args.dashboard}: '{n}' is not exported by the services")
            else:
                used.add(base)
    panels = [p for p in dash.get("panels", []) if p.get("type") != "row"]
    ids = [p.get("id") for p in dash.get("panels", [])]
    if len(ids) != len(set(ids)):
        fail(f"{args.dashboard}: panel ids repeat")
    for p in panels:
        if not p.get("targets"):
            fail(f"{args.dashboard}: panel '{p.get('title')}' has no queries")
    # What the issue asks the dashboard to show.
    wanted = ["icae_time_to_first_token_seconds", "icae_inter_token_latency_seconds",
              "icae_generation_tokens_total", "icae_requests_waiting", "icae_batch_size",
              "icae_slot_cache_hits_total", "icae_slot_cache_misses_total",
              "icae_slot_cache_bytes", "icae_encoded_tokens_total"]
    for w in wanted:
        if w not in used:
            fail(f"{args.dashboard}: no panel uses {w}")
    unused = sorted(set(f for f in fams if f.startswith("icae_")) - used)
    if unused:
        print("metrics: exported but not on the dashboard: " + ", ".join(unused))
    for path in args.rules or []:
        with open(path) as f:
            text = f.read()
        for n in metric_names(text):
            if resolve(n, fams) is None:
                fail(f"{path}: '{n}' is not exported by the services")
    for path in args.hpa or []:
        for d in load_docs([path]):
            if d.get("kind") != "HorizontalPodAutoscaler":
                continue
            for m in d["spec"].get("metrics", []):
                for kind in ("pods", "object", "external"):
                    if kind in m:
                        n = m[kind]["metric"]["name"]
                        if n.startswith("icae_") and resolve(n, fams) is None:
                            fail(f"{path}: HPA {d['metadata']['name']} scales on '{n}', "
                                 "which the services do not export")
    print(f"metrics: dashboard uses {len(used)} families, {len(panels)} panels")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flags")
    f.add_argument("--encoder", required=True)
    f.add_argument("--decoder", required=True)
    f.add_argument("rendered", nargs="+")
    m = sub.add_parser("metrics")
    m.add_argument("--dashboard", required=True)
    m.add_argument("--rules", action="append")
    m.add_argument("--hpa", action="append")
    m.add_argument("--scrape", nargs="+", required=True)
    args = ap.parse_args()
    if args.cmd == "flags":
        check_flags(args)
    else:
        check_metrics(args)
    if errors:
        print(f"{len(errors)} problem(s)", file=sys.stderr)
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
