#!/usr/bin/env bash
# A Debian bookworm base image with python3 and venv for deploy/Dockerfile's BASE, made from Debian's
# packages with debootstrap: for machines that cannot reach an image registry. Idempotent.
#   bash deploy/make_base.sh [IMAGE]        (default localhost/debian-py:local)
set -euo pipefail
image="${1:-localhost/debian-py:local}"
podman --runtime runc image exists "$image" && exit 0
as_root=()
if [ "$(id -u)" -ne 0 ]; then as_root=(sudo); fi
dir="$(mktemp -d)"
trap '"${as_root[@]}" rm -rf "$dir"' EXIT
"${as_root[@]}" debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$dir" >/dev/null
"${as_root[@]}" tar -C "$dir" -c . | podman --runtime runc import - "$image" >/dev/null
echo "$image"
