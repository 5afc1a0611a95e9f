#!/usr/bin/env bash
# Sourced by the GPU scripts on the CUDA machine (from the project root): unpacks the release that
# `bash ops/package.sh --no-libtorch --out .gpu` wrote here (the folder .gpu/ travels with the tree) into /tmp, once
# per tarball, and defines `mimflow` to run it. Its launcher points MIMFLOW_LIBTORCH at PyTorch's torch/lib when unset.
#   source ops/gpu/release.sh && mimflow doctor
# MIMFLOW_RELEASE names another tarball (e.g. the full one, to compare with the CPU route).
release=${MIMFLOW_RELEASE:-.gpu/mimflow-linux-x64-nolibtorch.tar.gz}
if [ ! -f "$release" ]; then
  echo "ops/gpu/release.sh: no $release; before the device run: bash ops/package.sh --no-libtorch --out .gpu (and carry .gpu)" >&2
  return 1 2>/dev/null || exit 1
fi
release_dir=/tmp/mimflow-release/$(sha256sum "$release" | cut -c1-16)
if [ ! -x "$release_dir/mimflow/mimflow" ]; then
  rm -rf "$release_dir.partial" && mkdir -p "$release_dir.partial" && tar -xzf "$release" -C "$release_dir.partial" && mv "$release_dir.partial" "$release_dir"
fi
mimflow() { "$release_dir/mimflow/mimflow" "$@"; }
