#!/usr/bin/env bash
# Validate every manifest offline: yamllint (hygiene), kubernetes-validate
# (schemas of Kubernetes 1.37, strict: unknown fields are errors), and the
# device plugin's config.json as JSON. Installs the two tools into a private
# virtualenv from PyPI.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${NICPOLL_VENV:-/tmp/nicpoll-pod-venv}
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/yamllint" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q kubernetes-validate==1.37.0 yamllint==1.38.0
fi
manifests=("$here"/*.yaml)
"$venv/bin/yamllint" -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable}}' "${manifests[@]}"
"$venv/bin/kubernetes-validate" -k 1.37.0 --strict "${manifests[@]}"
for f in "${manifests[@]}"; do
    if grep -q 'config.json' "$f"; then
        "$venv/bin/python" - "$f" <<'PY'
import json, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
cfg = json.loads(doc["data"]["config.json"])
names = [r["resourceName"] for r in cfg["resourceList"]]
assert names, "no resources"
for r in cfg["resourceList"]:
    assert r["selectors"]["drivers"], r
print(f"{sys.argv[1]}: config.json is valid JSON with resources {names}")
PY
    fi
done
echo "manifests valid: ${#manifests[@]}"
