#!/usr/bin/env python3
"""Offline checks of the deployment artefacts (no cluster or Docker engine needed).

- every Kustomize overlay builds (kubectl kustomize, no --load-restrictor) and every object
  validates against the Kubernetes schemas (kubernetes-validate --strict);
- compose, the Kustomize output and the binary agree: the same service names, port 8080,
  `serve`/`migrate` commands, and env keys (every key `oba keys <service>` marks required is
  set, no key the service does not read is set);
- every probe and health-check path in the manifests answers 200 on a running `oba up`;
- the Dockerfile builds with the same script CI runs.

usage: deploy/check.py   (env OBA_BIN: the oba binary, default target/debug/oba)
"""

import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBA = os.environ.get("OBA_BIN", os.path.join(ROOT, "target/debug/oba"))
SERVICES = ["user-service", "post-service", "comment-service", "like-service", "rank-service",
            "notification-service", "blog-aggregator"]
WITH_DATABASE = SERVICES[:6]
ALWAYS_ALLOWED = {"RUST_LOG"}
# The standard OpenTelemetry variables, read by the exporter (see kit::telemetry).
STANDARD_PREFIXES = ("OTEL_",)

passed, failed = 0, []


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failed.append(what)
        print(f"FAIL {what}")


def settings(service):
    out = subprocess.run([OBA, "keys", service], check=True, capture_output=True, text=True).stdout
    return dict(line.split() for line in out.splitlines())


def check_env(where, service, keys, known):
    required = {k for k, r in known.items() if r == "required"}
    check(required <= keys, f"{where}: {service} lacks required {sorted(required - keys)}")
    unknown = {k for k in keys - set(known) - ALWAYS_ALLOWED if not k.startswith(STANDARD_PREFIXES)}
    check(not unknown, f"{where}: {service} sets keys it does not read {sorted(unknown)}")


def env_file_keys(path):
    keys = set()
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                keys.add(line.split("=", 1)[0])
    return keys


def main():
    work = tempfile.mkdtemp()
    try:
        deploy = os.path.join(work, "deploy")
        shutil.copytree(os.path.join(ROOT, "deploy"), deploy)
        # The real secrets are git-ignored; their committed .example twins stand in.
        secrets = os.path.join(deploy, "config-repo", "secrets")
        for name in os.listdir(secrets):
            if name.endswith(".example") and not os.path.exists(os.path.join(secrets, name[:-8])):
                shutil.copy(os.path.join(secrets, name), os.path.join(secrets, name[:-8]))

        known = {s: settings(s) for s in SERVICES}
        probe_paths = set()

        for overlay in ["base", "overlays/dev", "overlays/prod"]:
            built = subprocess.run(
                ["kubectl", "kustomize", os.path.join(deploy, "kubernetes", overlay)],
                capture_output=True, text=True)
            check(built.returncode == 0, f"kustomize {overlay}: {built.stderr.strip()}")
            if built.returncode != 0:
                continue
            rendered = os.path.join(work, overlay.replace("/", "-") + ".yaml")
            with open(rendered, "w") as f:
                f.write(built.stdout)
            valid = subprocess.run(["kubernetes-validate", "--strict", "--quiet", rendered],
                                   capture_output=True, text=True)
            check(valid.returncode == 0, f"schema {overlay}: {valid.stdout}{valid.stderr}")
            docs = [d for d in yaml.safe_load_all(built.stdout) if d]
            by_kind = {}
            for d in docs:
                by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
            deployments = {n: d for n, d in by_kind.get("Deployment", {}).items()
                           if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "oba"}
            check(sorted(deployments) == sorted(SERVICES), f"{overlay}: deployments {sorted(deployments)}")
            for name, d in deployments.items():
                pod = d["spec"]["template"]["spec"]
                c = pod["containers"][0]
                check(c.get("args") == ["serve", name], f"{overlay}: {name} args {c.get('args')}")
                check([p["containerPort"] for p in c["ports"]] == [8080], f"{overlay}: {name} port")
                svc = by_kind.get("Service", {}).get(name)
                check(svc is not None and svc["spec"]["ports"][0]["port"] == 8080,
                      f"{overlay}: Service {name} on 8080")
                # gRPC peers are headless: their names resolve to every pod, for client-side
                # balancing; only the edge (behind the ingress) keeps a virtual IP.
                if svc is not None and name != "blog-aggregator":
                    check(svc["spec"].get("clusterIP") == "None", f"{overlay}: Service {name} is headless")
                sc = c.get("securityContext", {})
                check(sc.get("readOnlyRootFilesystem") is True and pod["securityContext"].get("runAsNonRoot") is True,
                      f"{overlay}: {name} non-root, read-only root filesystem")
                check(all(k in c.get("resources", {}) for k in ("requests", "limits")), f"{overlay}: {name} resources")
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    check(probe in c, f"{overlay}: {name} has {probe}")
                    if probe in c:
                        probe_paths.add(c[probe]["httpGet"]["path"])
                keys = {e["name"] for e in c.get("env", [])}
                for source in c.get("envFrom", []):
                    kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
                    obj = by_kind.get(kind, {}).get(ref["name"])
                    check(obj is not None, f"{overlay}: {name} refers to missing {kind} {ref['name']}")
                    if obj:
                        keys |= set(obj.get("data", {}))
                check_env(overlay, name, keys, known[name])
                if name in WITH_DATABASE:
                    init = pod.get("initContainers", [{}])[0]
                    check(init.get("args") == ["migrate", name], f"{overlay}: {name} migrates first")
            if overlay == "overlays/prod":
                edge = deployments["blog-aggregator"]["spec"]["template"]["spec"]["containers"][0]
                check(all(e["name"] != "OBA_WEB_SECURE_COOKIES" for e in edge.get("env", [])),
                      "prod: the session cookie stays Secure (the default)")
                replicas = {n: d["spec"]["replicas"] for n, d in deployments.items()}
                check(all(r >= 2 for r in replicas.values()), f"prod replicas {replicas}")
                check("blog-aggregator" in by_kind.get("HorizontalPodAutoscaler", {}), "prod: edge autoscaled")
                check(sorted(by_kind.get("PodDisruptionBudget", {})) == sorted(SERVICES), "prod: a PDB per service")
                policies = by_kind.get("NetworkPolicy", {})
                check(len(policies) >= 3, "prod: network policies")
                # Ingress to a service is granted per caller (by name), never to every oba pod.
                for pname, policy in policies.items():
                    for rule in policy["spec"].get("ingress", []):
                        for peer in rule.get("from", []):
                            labels = peer.get("podSelector", {}).get("matchLabels", {})
                            check("app.kubernetes.io/part-of" not in labels,
                                  f"prod: {pname} admits every oba pod")
                    if policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "blog-aggregator":
                        for rule in policy["spec"].get("egress", []):
                            ports = {p.get("port") for p in rule.get("ports", [])}
                            # The bus, for the read model's events, but never a database.
                            check(5432 not in ports, f"prod: {pname} lets the edge reach a database")
            if overlay == "overlays/dev":
                check({"postgres", "nats"} <= set(by_kind.get("StatefulSet", {})), "dev: PostgreSQL and NATS")
                for name, d in deployments.items():
                    c = d["spec"]["template"]["spec"]["containers"][0]
                    check(c.get("imagePullPolicy") == "Never", f"dev: {name} imagePullPolicy Never")
                    env = {e["name"]: e.get("value") for e in c.get("env", [])}
                    check(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://jaeger:4317", f"dev: {name} exports spans to Jaeger")
                    # minikube's ingress is plain http: the session cookie cannot be Secure there.
                    if name == "blog-aggregator":
                        check(env.get("OBA_WEB_SECURE_COOKIES") == "false", "dev: the edge's session cookie works over http")
                jaeger = by_kind.get("Service", {}).get("jaeger")
                check(jaeger is not None and {p["port"] for p in jaeger["spec"]["ports"]} >= {4317, 16686},
                      "dev: Jaeger receives OTLP/gRPC and shows its UI")
            ingress = by_kind.get("Ingress", {}).get("oba")
            check(ingress is not None, f"{overlay}: ingress")
            if ingress:
                rule = ingress["spec"]["rules"][0]
                paths = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
                public = ("/", "/graphql", "/graphiql", "/api", "/article", "/profile", "/editor",
                          "/settings", "/notifications", "/login", "/register", "/logout", "/web")
                check(rule["host"] == "oba.minikube.me" and paths == {p: "blog-aggregator" for p in public},
                      f"{overlay}: ingress routes {paths}")
                # The root alone, not everything under it: probes, /metrics, /status stay inside.
                root = [p for p in rule["http"]["paths"] if p["path"] == "/"]
                check(len(root) == 1 and root[0]["pathType"] == "Exact", f"{overlay}: / is routed exactly")

        with open(os.path.join(deploy, "compose.yaml")) as f:
            compose = yaml.safe_load(f)["services"]
        oba_services = sorted(n for n, s in compose.items() if s.get("image") == "oba:dev" and not n.endswith("-migrate"))
        check(oba_services == sorted(SERVICES), f"compose: services {oba_services}")
        for name in SERVICES:
            s = compose.get(name, {})
            check(s.get("command") == ["serve", name], f"compose: {name} command")
            keys = set(s.get("environment", {}))
            for env_file in s.get("env_file", []):
                path = os.path.join(deploy, env_file)
                check(os.path.exists(path), f"compose: {name} env_file {env_file}")
                if os.path.exists(path):
                    keys |= env_file_keys(path)
            check_env("compose", name, keys, known[name])
            check(s.get("environment", {}).get("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://jaeger:4317",
                  f"compose: {name} exports spans to Jaeger")
            test = s.get("healthcheck", {}).get("test", [])
            url = next((t for t in test if t.startswith("http://")), None)
            check(url is not None, f"compose: {name} health check")
            if url:
                check(url.startswith("http://127.0.0.1:8080/"), f"compose: {name} checks port 8080")
                probe_paths.add("/" + url.split("/", 3)[3])
            deps = s.get("depends_on", {})
            check(all(v.get("condition") in ("service_healthy", "service_completed_successfully") for v in deps.values()),
                  f"compose: {name} waits for healthy dependencies")
            check("mem_limit" in s, f"compose: {name} memory limit")
            if name in WITH_DATABASE:
                migrate = compose.get(f"{name}-migrate", {})
                check(migrate.get("command") == ["migrate", name], f"compose: {name} migrates first")
        check(compose.get("blog-aggregator", {}).get("ports") == ["8080:8080"], "compose: edge published on 8080")
        jaeger = compose.get("jaeger", {})
        check(jaeger.get("environment", {}).get("COLLECTOR_OTLP_ENABLED") == "true" and "16686:16686" in jaeger.get("ports", []),
              "compose: Jaeger with OTLP, UI published on 16686")
        common = env_file_keys(os.path.join(deploy, "config-repo", "common.env"))
        with open(os.path.join(deploy, "config-repo", "common.env")) as f:
            listen = re.search(r"^OBA_LISTEN_ADDR=.*:(\d+)$", f.read(), re.M)
        check("OBA_LISTEN_ADDR" in common and listen and listen.group(1) == "8080", "config-repo: services listen on 8080")

        # Probe paths must really exist: ask a running system.
        data = os.path.join(work, "data")
        proc = subprocess.Popen([OBA, "up"], env={**os.environ, "OBA_BASE_PORT": "0", "OBA_DATA_DIR": data, "RUST_LOG": "warn"},
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            base = None
            for line in proc.stdout:
                m = re.search(r"GraphQL:\s+(http://[^/]+)/graphql", line)
                if m:
                    base = m.group(1)
                    break
            check(base is not None, "oba up printed its URL")
            for path in sorted(probe_paths):
                try:
                    status = urllib.request.urlopen(base + path, timeout=5).status
                except Exception as e:  # noqa: BLE001 - any failure is the finding
                    status = str(e)
                check(status == 200, f"probe path {path} answers 200 (got {status})")
        finally:
            proc.terminate()
            proc.wait(timeout=30)

        with open(os.path.join(ROOT, "deploy/docker/Dockerfile")) as f:
            dockerfile = f.read()
        with open(os.path.join(ROOT, ".ci/run")) as f:
            ci = f.read()
        check("RUN scripts/build-release" in dockerfile and "scripts/build-release" in ci,
              "Dockerfile and CI build with the same scripts/build-release")
        check("USER nonroot" in dockerfile, "image runs as non-root")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"deploy-check: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
