#!/usr/bin/env python3
"""Checks the deployment files against each other and against the server.

  - every YAML file in deploy/kubernetes parses (PyYAML) and each document has apiVersion, kind
    and metadata.name; kustomization.yaml lists files that exist
  - the Service, the autoscaler and the InferencePool point at the Deployment (labels, ports,
    names); the HTTPRoute at the InferencePool
  - the probes use /health (liveness) and /ready (readiness); the termination grace period
    covers the preStop sleep and --shutdown-grace
  - the metrics the autoscaler and the inference gateway read are ones the server exports
  - with --bin: every option in the Deployment's args and the Dockerfile's entry point is one
    `swiftlet serve` knows
  - deploy/nginx/swiftlet.conf: both upstreams list the same servers

Prints the problems and exits 1 if there are any.

usage: deploy/check.py [--bin .build/release/swiftlet]
"""
import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

try:
    import yaml
except ImportError:  # a missing dependency is a failure, not a skip
    print("FAIL: cannot import yaml: pip install pyyaml")
    sys.exit(1)

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy/kubernetes"
PROBLEMS = []


def problem(message):
    PROBLEMS.append(message)


def load_documents():
    docs = {}
    for path in sorted(KUBE.glob("*.yaml")):
        try:
            items = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            problem(f"{path.name}: not valid YAML: {e}")
            continue
        for d in items:
            if not isinstance(d, dict) or "apiVersion" not in d or "kind" not in d:
                problem(f"{path.name}: a document without apiVersion and kind")
                continue
            if d["kind"] == "Kustomization":
                for resource in d.get("resources", []):
                    if not (KUBE / resource).is_file():
                        problem(f"{path.name}: lists {resource}, which does not exist")
                continue
            name = d.get("metadata", {}).get("name")
            if not name:
                problem(f"{path.name}: {d['kind']} without metadata.name")
                continue
            docs[(d["kind"], name)] = (path.name, d)
    return docs


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def option_names(args):
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def check_kubernetes(docs, serve_help):
    deployments = [(f, d) for (kind, _), (f, d) in docs.items() if kind == "Deployment"]
    if len(deployments) != 1:
        problem(f"expected one Deployment, found {len(deployments)}")
        return
    dep_file, dep = deployments[0]
    name = dep["metadata"]["name"]
    template = dep["spec"]["template"]
    labels = template["metadata"]["labels"]
    if not matches(dep["spec"]["selector"]["matchLabels"], labels):
        problem(f"{dep_file}: the selector does not match the pod labels")
    container = template["spec"]["containers"][0]
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}

    if container.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health":
        problem(f"{dep_file}: the liveness probe must GET /health")
    if container.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/ready":
        problem(f"{dep_file}: the readiness probe must GET /ready")
    args = container.get("args", [])
    grace = next((float(a.split("=", 1)[1]) for a in args if a.startswith("--shutdown-grace=")), 10.0)
    sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    period = template["spec"].get("terminationGracePeriodSeconds", 30)
    if period < sleep + grace:
        problem(f"{dep_file}: terminationGracePeriodSeconds {period} < preStop {sleep} s + --shutdown-grace {grace} s")
    if serve_help is not None:
        for option in option_names(args):
            if option not in serve_help:
                problem(f"{dep_file}: `swiftlet serve` has no option {option}")

    for (kind, _), (f, d) in docs.items():
        spec = d.get("spec", {})
        if kind == "Service":
            if not matches(spec.get("selector"), labels):
                problem(f"{f}: the selector does not match the Deployment's pods")
            for p in spec.get("ports", []):
                if p.get("targetPort") not in ports and p.get("targetPort") not in ports.values():
                    problem(f"{f}: targetPort {p.get('targetPort')} is not a container port")
        elif kind == "HorizontalPodAutoscaler":
            ref = spec.get("scaleTargetRef", {})
            if (ref.get("kind"), ref.get("name")) != ("Deployment", name):
                problem(f"{f}: scales {ref.get('kind')}/{ref.get('name')}, not Deployment/{name}")
            for m in spec.get("metrics", []):
                metric = m.get("pods", {}).get("metric", {}).get("name")
                if metric and metric not in exported_metrics():
                    problem(f"{f}: the server exports no metric {metric}")
        elif kind == "InferencePool":
            if not matches(spec.get("selector", {}).get("matchLabels"), labels):
                problem(f"{f}: the selector does not match the Deployment's pods")
            for p in spec.get("targetPorts", []):
                if p.get("number") not in ports.values():
                    problem(f"{f}: target port {p.get('number')} is not a container port")
            if not d["apiVersion"].startswith("inference.networking.k8s.io/"):
                problem(f"{f}: InferencePool apiVersion {d['apiVersion']}")
        elif kind == "HTTPRoute":
            for rule in spec.get("rules", []):
                for ref in rule.get("backendRefs", []):
                    if ref.get("kind") == "InferencePool" and ("InferencePool", ref.get("name")) not in docs:
                        problem(f"{f}: routes to InferencePool {ref.get('name')}, which is not defined")


def exported_metrics():
    source = (ROOT / "Sources/Server/ServerMetrics.swift").read_text()
    return set(re.findall(r'name: "([a-z_:]+)"', source))


def check_dockerfile(serve_help):
    text = (ROOT / "Dockerfile").read_text()
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, flags=re.M)
    if not entry:
        problem("Dockerfile: no ENTRYPOINT in exec form")
        return
    command = json.loads(entry.group(1))
    if command[:2] != ["swiftlet", "serve"]:
        problem(f"Dockerfile: the entry point is {command}, not swiftlet serve")
    if serve_help is not None:
        for option in option_names(command):
            if option not in serve_help:
                problem(f"Dockerfile: `swiftlet serve` has no option {option}")
    if not re.search(r"^USER 10001", text, flags=re.M):
        problem("Dockerfile: the image must run as the non-root user 10001")
    if "HEALTHCHECK" not in text:
        problem("Dockerfile: no HEALTHCHECK")


def check_nginx():
    text = (ROOT / "deploy/nginx/swiftlet.conf").read_text()
    blocks = re.findall(r"upstream\s+(\S+)\s*\{(.*?)\}", text, flags=re.S)
    servers = {name: re.findall(r"^\s*server\s+(\S+)", body, flags=re.M) for name, body in blocks}
    if len(servers) != 2 or len({tuple(s) for s in servers.values()}) != 1:
        problem(f"deploy/nginx/swiftlet.conf: the two upstreams must list the same servers: {servers}")
    for name in servers:
        if not re.search(rf"\s{re.escape(name)};", text):
            problem(f"deploy/nginx/swiftlet.conf: the map never chooses upstream {name}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", help="a swiftlet binary: check option names against `swiftlet serve --help`")
    args = p.parse_args()
    serve_help = None
    if args.bin:
        run = subprocess.run([args.bin, "serve", "--help"], capture_output=True, text=True)
        if run.returncode != 0:
            problem(f"`{args.bin} serve --help` failed: {run.stderr}")
        else:
            serve_help = set(re.findall(r"--[a-z][a-z-]*", run.stdout))
    docs = load_documents()
    check_kubernetes(docs, serve_help)
    check_dockerfile(serve_help)
    check_nginx()
    for message in PROBLEMS:
        print("FAIL:", message)
    kinds = sorted({kind for kind, _ in docs})
    print(f"{len(docs)} Kubernetes objects ({', '.join(kinds)}), Dockerfile, nginx: {len(PROBLEMS)} problems")
    sys.exit(1 if PROBLEMS else 0)


if __name__ == "__main__":
    main()
