#!/usr/bin/env bash
# Checks the deployment files without Docker, a helm binary or a cluster:
#   - helm/coinalarm: rendered for both sites (ci/*-values.yaml) and variants (mode split, ServiceMonitor,
#     Ingress, shared NATS admin user) with helm-python-sdk (Helm's own Go engine, through libhelm_c),
#     `helm lint --strict`, every manifest validated with kubernetes-validate (strict: unknown fields are
#     errors) against the chart's oldest and a recent Kubernetes; the rendered coinalarm.toml parsed;
#     bad values (no site, a secret in config, a bad key id) must be refused.
#   - compose.yaml: parses; every ${VAR} it uses is in deploy/compose.env.example (the required ones
#     with a line to fill in) and every variable there is used; every file it mounts or builds exists;
#     depends_on names real services; deploy/compose/<site>.toml parse and name their site.
#   - Dockerfile: every COPY source exists and .dockerignore lets it into the build context.
# Installs what it needs into .run/deploy-venv on first use. Exits non-zero on any problem.
#
#   scripts/validate-deploy.sh
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV_DIR=$REPO_ROOT/.run/deploy-venv
# Pinned: the checks read these packages' Python APIs (helm_python.Chart.render, helm_python.lint,
# kubernetes_validate.validate).
REQUIREMENTS=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.3)

say() { printf '==> %s\n' "$*" >&2; }

ensure_venv() {
  if [[ -x $VENV_DIR/bin/python ]] &&
    "$VENV_DIR/bin/python" -c 'import helm_python, kubernetes_validate, yaml' 2>/dev/null; then
    return 0
  fi
  say "installing ${REQUIREMENTS[*]} into .run/deploy-venv"
  mkdir -p "$REPO_ROOT/.run"
  [[ -x $VENV_DIR/bin/python ]] || python3 -m venv "$VENV_DIR" ||
    { echo "error: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
  "$VENV_DIR/bin/python" -m pip install --disable-pip-version-check --no-input --quiet "${REQUIREMENTS[@]}" ||
    { echo "error: pip install ${REQUIREMENTS[*]} failed" >&2; exit 1; }
}

start=$SECONDS
ensure_venv
cd "$REPO_ROOT"
status=0
"$VENV_DIR/bin/python" - <<'PY' || status=$?
"""The checks; each problem is printed and counted, and any makes the script fail."""

import copy
import fnmatch
import os
import re
import sys
import time
import tomllib

import helm_python as helm
import kubernetes_validate
import yaml

CHART = "helm/coinalarm"
# The chart's floor (Chart.yaml kubeVersion) and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ["1.27.0", kubernetes_validate.utils.latest_version()]
# Custom resources kubernetes-validate has no schema for, checked by hand below.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

problems: list[str] = []


def problem(message: str) -> None:
    problems.append(message)
    print(f"  FAIL {message}", file=sys.stderr)


def step(name: str):
    print(f"==> {name}", file=sys.stderr)
    return time.monotonic()


def merged(base: dict, override: dict) -> dict:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


# ------------------------------------------------------------------------------------------ helm chart

def render(values: dict, release: str, upgrade: bool = False) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        return chart.render(values=values, name=release, namespace="coinalarm",
                            is_install=not upgrade, is_upgrade=upgrade, revision=2 if upgrade else 1)


def manifests(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    documents = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                documents.append((template, document))
    return documents


def check_service_monitor(where: str, document: dict) -> None:
    spec = document.get("spec") or {}
    if not (spec.get("selector") or {}).get("matchLabels"):
        problem(f"{where}: ServiceMonitor without spec.selector.matchLabels")
    endpoints = spec.get("endpoints") or []
    if not endpoints or not all(isinstance(e, dict) and e.get("port") for e in endpoints):
        problem(f"{where}: ServiceMonitor endpoints must name a port")


def check_release(label: str, values: dict, release: str) -> list[tuple[str, dict]]:
    """Renders (install and upgrade), validates every manifest, returns the install's documents."""
    try:
        documents = manifests(render(values, release))
        manifests(render(values, release, upgrade=True))
    except helm.HelmError as error:
        problem(f"{label}: rendering failed: {error}")
        return []
    seen = set()
    for template, document in documents:
        kind, api_version = document.get("kind"), document.get("apiVersion")
        name = (document.get("metadata") or {}).get("name")
        where = f"{label}: {template} {kind}/{name}"
        if not (kind and api_version and name):
            problem(f"{where}: a manifest without apiVersion, kind or metadata.name")
            continue
        if (kind, name) in seen:
            problem(f"{where}: rendered twice")
        seen.add((kind, name))
        if (api_version, kind) in CUSTOM_KINDS:
            check_service_monitor(where, document)
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = "/".join(str(part) for part in error.path)
                problem(f"{where}: invalid for Kubernetes {version} at {path or '/'}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                problem(f"{where}: {error.message}")
    return documents


def check_config_map(label: str, documents: list[tuple[str, dict]], site: str) -> None:
    config_maps = [d for _, d in documents if d["kind"] == "ConfigMap" and "coinalarm.toml" in d.get("data", {})]
    if not config_maps:
        problem(f"{label}: no ConfigMap with coinalarm.toml")
    for config_map in config_maps:
        try:
            config = tomllib.loads(config_map["data"]["coinalarm.toml"])
        except tomllib.TOMLDecodeError as error:
            problem(f"{label}: {config_map['metadata']['name']}: coinalarm.toml does not parse: {error}")
            continue
        if config.get("site") != site:
            problem(f"{label}: coinalarm.toml says site {config.get('site')!r}, not {site!r}")
        pool_size = config.get("postgres", {}).get("pool_size")
        if pool_size is not None and not isinstance(pool_size, int):
            problem(f"{label}: postgres.pool_size is written as {pool_size!r}: integers must stay integers")


def check_deployments(label: str, documents: list[tuple[str, dict]], expected: set[str]) -> None:
    deployments = {d["metadata"]["name"]: d for _, d in documents if d["kind"] == "Deployment"}
    components = {d["metadata"]["labels"].get("app.kubernetes.io/component") for d in deployments.values()}
    if components != expected:
        problem(f"{label}: Deployments for {sorted(components)}, expected {sorted(expected)}")
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in container.get("env", [])}
        for probe in ("livenessProbe", "startupProbe"):
            if probe not in container:
                problem(f"{label}: {name} has no {probe}")
        serves_api = container["args"][1] in ("all", "api")
        if serves_api and container.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problem(f"{label}: {name} serves the API but is not ready on /readyz")
        if "COINALARM_NATS__PASSWORD" not in env:
            problem(f"{label}: {name} lacks the NATS admin password")
        for variable in env.values():
            if re.search(r"PASSWORD|_KEY$|KEYS__|TOKEN|SECRET|URL$", variable["name"]) and "value" in variable \
                    and not variable["name"].endswith("__USER"):
                problem(f"{label}: {name}: {variable['name']} has a literal value, not a secretKeyRef")


def check_chart() -> None:
    started = step("helm/coinalarm: render both sites and variants, validate every manifest")
    sites = {}
    for site in ("onprem", "cloud"):
        with open(f"{CHART}/ci/{site}-values.yaml", encoding="utf-8") as file:
            sites[site] = yaml.safe_load(file)
    every_service = {"ingest", "matcher", "notifier", "dispatcher", "projector", "api"}
    variants = {
        "mode all": ({}, {"all"}),
        "mode split": ({"mode": "split"}, every_service),
        "split without ingest, shared NATS user, ServiceMonitor, Ingress, plain URLs": ({
            "mode": "split",
            "serve": {"ingest": {"enabled": False}},
            "nats": {"perServiceUsers": False},
            "postgres": {"url": "postgres://coinalarm@pg:5432/coinalarm", "urlSecretKey": ""},
            "redis": {"urlSecretKey": "redis-url"},
            "metrics": {"serviceMonitor": {"enabled": True}},
            "ingress": {"enabled": True, "className": "nginx",
                        "hosts": [{"host": "api.coinalarm.example", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                        "tls": [{"hosts": ["api.coinalarm.example"], "secretName": "api-tls"}]},
            "sealingKeys": {"current": "k2", "ids": ["k1", "k2"]},
            "config": {"dispatcher": {"fallback": "twilio_eu", "providers": {"twilio_eu": {
                "base_url": "https://api.dublin.ie1.twilio.com", "account_sid": "AC1",
                "api_key_sid": "SK1", "messaging_service_sid": "MG1"}}}},
        }, every_service - {"ingest"}),
    }
    count = 0
    for site, site_values in sites.items():
        for variant, (override, expected) in variants.items():
            label = f"{site}, {variant}"
            values = merged(site_values, override)
            documents = check_release(label, values, f"coinalarm-{site}")
            count += len(documents)
            if documents:
                check_config_map(label, documents, site)
                check_deployments(label, documents, expected)
    print(f"  {count} manifests rendered and validated against Kubernetes {', '.join(KUBE_VERSIONS)} "
          f"in {time.monotonic() - started:.1f}s", file=sys.stderr)

    started = step("helm/coinalarm: values the chart must refuse")
    refused = {
        "no site": ({"site": ""}, "site"),
        "no Secret": ({"secrets": {"existingSecret": ""}}, "existingSecret"),
        "a password in config": ({"config": {"nats": {"password": "hunter2"}}}, "secret"),
        "a session key id with a dash": ({"sessionKeys": {"current": "s-1", "ids": ["s-1"]}}, "sessionKeys"),
        "current sealing key not among the ids": ({"sealingKeys": {"current": "k9", "ids": ["k1"]}}, "k9"),
        "an upper-case provider name": ({"config": {"dispatcher": {"providers": {"Twilio": {}}}}}, "Twilio"),
        "no public base URL": ({"config": {"api": {"public_base_url": ""}}}, "public_base_url"),
        "an unknown mode": ({"mode": "both"}, "mode"),
    }
    for label, (override, mention) in refused.items():
        try:
            render(merged(sites["onprem"], override), "coinalarm-onprem")
        except helm.HelmError as error:
            if mention not in str(error):
                problem(f"refused values ({label}), but the message does not mention {mention!r}: {error}")
            continue
        problem(f"the chart accepted values it must refuse: {label}")
    print(f"  {len(refused)} bad values refused in {time.monotonic() - started:.1f}s", file=sys.stderr)

    started = step("helm/coinalarm: helm lint --strict")
    for site, site_values in sites.items():
        report = helm.lint(CHART, site_values, strict=True, kube_version=f"v{KUBE_VERSIONS[-1]}")
        for message in report.get("messages", []):
            if message.get("severity", 0) >= 2:
                problem(f"lint ({site}): {message.get('path')}: {message.get('error')}")
        for error in report.get("errors", []):
            problem(f"lint ({site}): {error}")
    print(f"  linted in {time.monotonic() - started:.1f}s", file=sys.stderr)


# --------------------------------------------------------------------------------------------- compose

VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")


def check_compose() -> None:
    started = step("compose.yaml: parse, variables, files, dependencies")
    with open("compose.yaml", encoding="utf-8") as file:
        text = file.read()
    try:
        compose = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem(f"compose.yaml does not parse: {error}")
        return
    services = compose.get("services") or {}
    if not services:
        problem("compose.yaml has no services")

    # Variables: ${VAR}, ${VAR:-default}, ${VAR:?error}; `$$` is a literal dollar.
    used: dict[str, bool] = {}
    # Comment lines may mention ${VAR} in prose; only the YAML is interpolated.
    yaml_lines = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for match in VARIABLE.finditer(yaml_lines):
        name = match.group(1) or match.group(4)
        required = (match.group(2) or "").endswith("?")
        used[name] = used.get(name, False) or required
    example_path = "deploy/compose.env.example"
    to_fill, documented = set(), set()
    with open(example_path, encoding="utf-8") as file:
        for line in file:
            if found := re.match(r"^([A-Z0-9_]+)=", line):
                to_fill.add(found.group(1))
            elif found := re.match(r"^#\s*([A-Z0-9_]+)=", line):
                documented.add(found.group(1))
    for name, required in sorted(used.items()):
        if required and name not in to_fill:
            problem(f"compose.yaml requires ${{{name}}}, which {example_path} does not list to fill in")
        elif name not in to_fill | documented:
            problem(f"compose.yaml uses ${{{name}}}, which {example_path} does not mention")
    for name in sorted((to_fill | documented) - set(used)):
        problem(f"{example_path} lists {name}, which compose.yaml does not use")

    for name, service in services.items():
        if "env_file" in service:
            problem(f"service {name}: env_file; secrets come through ${{VAR}} from --env-file instead")
        build = service.get("build")
        if isinstance(build, dict):
            context = build.get("context", ".")
            if not os.path.isdir(context):
                problem(f"service {name}: build context {context} does not exist")
            dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
            if not os.path.isfile(dockerfile):
                problem(f"service {name}: {dockerfile} does not exist")
        if not service.get("image") and not build:
            problem(f"service {name}: neither image nor build")
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                if not os.path.exists(source):
                    problem(f"service {name}: mounts {source}, which does not exist")
            elif source not in (compose.get("volumes") or {}):
                problem(f"service {name}: volume {source} is not declared under volumes:")
        depends_on = service.get("depends_on") or {}
        for dependency, condition in (depends_on.items() if isinstance(depends_on, dict) else
                                      ((d, {}) for d in depends_on)):
            if dependency not in services:
                problem(f"service {name}: depends on {dependency}, which is not a service")
                continue
            wanted = (condition or {}).get("condition")
            if wanted == "service_healthy" and "healthcheck" not in services[dependency]:
                problem(f"service {name}: waits for {dependency} to be healthy, which has no healthcheck")
            if (dependency_profiles := services[dependency].get("profiles")) and \
                    not set(dependency_profiles) <= set(service.get("profiles") or []) and \
                    (condition or {}).get("required", True):
                problem(f"service {name}: depends on {dependency} of profile {dependency_profiles} without required: false")
        for port in service.get("ports") or []:
            if not str(port).startswith("127.0.0.1:"):
                problem(f"service {name}: publishes {port} beyond 127.0.0.1")

    for site in ("onprem", "cloud"):
        for wanted in (f"nats-{site}", f"postgres-{site}", f"redis-{site}", f"init-{site}", f"coinalarm-{site}"):
            if wanted not in services:
                problem(f"compose.yaml has no {wanted} service")
        path = f"deploy/compose/{site}.toml"
        try:
            with open(path, "rb") as file:
                config = tomllib.load(file)
            if config.get("site") != site:
                problem(f"{path} says site {config.get('site')!r}")
        except (OSError, tomllib.TOMLDecodeError) as error:
            problem(f"{path}: {error}")
    print(f"  {len(services)} services, {len(used)} variables checked in {time.monotonic() - started:.1f}s",
          file=sys.stderr)


# ------------------------------------------------------------------------------------------ Dockerfile

def docker_ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps PATH out of the build context (last matching pattern wins)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern[1:] if negate else pattern
        pattern = pattern.rstrip("/")
        candidates = [path] + [path[:index] for index in range(len(path)) if path[index] == "/"]
        if any(fnmatch.fnmatch(candidate, pattern) or fnmatch.fnmatch(candidate, pattern.replace("**/", ""))
               for candidate in candidates):
            ignored = not negate
    return ignored


def check_dockerfile() -> None:
    started = step("Dockerfile: COPY sources exist and are in the build context")
    with open(".dockerignore", encoding="utf-8") as file:
        patterns = [line.strip() for line in file if line.strip() and not line.startswith("#")]
    with open("Dockerfile", encoding="utf-8") as file:
        lines = file.read().replace("\\\n", " ").splitlines()
    copies = 0
    for line in lines:
        words = line.split()
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for source in [w for w in words[1:-1] if not w.startswith("--")]:
            copies += 1
            matches = [p for p in _glob(source)]
            if not matches:
                problem(f"Dockerfile: COPY {source}: no such file")
            for match in matches:
                if docker_ignored(match.rstrip("/"), patterns):
                    problem(f"Dockerfile: COPY {source}: {match} is excluded by .dockerignore")
    for secret_path in (".run/env", "deploy/compose.env", "target/debug"):
        if not docker_ignored(secret_path, patterns):
            problem(f".dockerignore lets {secret_path} into the build context")
    print(f"  {copies} COPY sources checked in {time.monotonic() - started:.1f}s", file=sys.stderr)


def _glob(source: str) -> list[str]:
    import glob
    return glob.glob(source)


check_chart()
check_compose()
check_dockerfile()
if problems:
    print(f"\n{len(problems)} problem(s) in the deployment files", file=sys.stderr)
    sys.exit(1)
print("deployment files: all checks passed", file=sys.stderr)
PY
say "validate-deploy: $( ((status == 0)) && echo ok || echo "FAILED (exit $status)") in $((SECONDS - start))s"
exit "$status"
