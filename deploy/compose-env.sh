#!/usr/bin/env bash
# Prints deploy/compose.env.example with every empty value filled with a fresh random secret: hex for
# passwords, base64 of 32 bytes for keys. Usage: deploy/compose-env.sh > deploy/compose.env
# (it refuses to print to a terminal, so secrets do not end up in a scrollback by accident).
set -euo pipefail

example="$(dirname "${BASH_SOURCE[0]}")/compose.env.example"
[[ -f $example ]] || { echo "error: $example is missing" >&2; exit 1; }
if [[ -t 1 ]]; then
  echo "error: redirect the output to a file: $0 > deploy/compose.env" >&2
  exit 1
fi

python3 - "$example" <<'PY'
import base64
import re
import secrets
import sys

def password() -> str:
    # Hex, never all digits (the app's environment parser would read a number).
    while True:
        value = secrets.token_hex(24)
        if not value.isdigit():
            return value

def key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()

for line in open(sys.argv[1], encoding="utf-8"):
    match = re.fullmatch(r"([A-Z0-9_]+)=\n?", line)
    if match is None:
        sys.stdout.write(line)
        continue
    name = match.group(1)
    value = key() if name.endswith("_KEY") or "_KEY_" in name else password()
    sys.stdout.write(f"{name}={value}\n")
PY
