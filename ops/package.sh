#!/usr/bin/env bash
# MimFlow's self-contained release for linux-x64 machines without the .NET SDK (the CUDA machines, cluster images).
# Usage, from anywhere in the checkout:
#   bash ops/package.sh [--no-libtorch] [--out DIR]
# writes DIR/mimflow-linux-x64.tar.gz (default DIR: artifacts/release, ignored by git), holding one folder:
#   mimflow/mimflow   the launcher: run it, or link it onto the PATH (ln -s /opt/mimflow/mimflow /usr/local/bin/)
#   mimflow/app/      `dotnet publish -r linux-x64 --self-contained`: the program, the .NET runtime, libvips,
#                     TorchSharp's bridge and (unless --no-libtorch) TorchSharp-cpu's libtorch
#   mimflow/RELEASE   version, commit, variant
# --no-libtorch writes mimflow-linux-x64-nolibtorch.tar.gz instead: no CPU libtorch (about 480 MB less), for machines
# whose CUDA PyTorch brings libtorch. There the launcher sets MIMFLOW_LIBTORCH to that PyTorch's torch/lib when it is
# unset (python3 -c 'import torch'), so `mimflow doctor` and `--device cuda` work as with the SDK build.
# Needs the .NET SDK and the NuGet packages (Microsoft.NETCore.App.Runtime.linux-x64 for the self-contained runtime).
# Builds under artifacts/package/ (its own bin and obj), never in the projects' bin/obj: the tool package (dotnet pack)
# builds the same program framework-dependent for the same RID there, and the two must not share intermediates.
set -euo pipefail
variant=full
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --no-libtorch) variant=nolibtorch; shift ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "package.sh: unknown argument '$1' (usage: bash ops/package.sh [--no-libtorch] [--out DIR])" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${out:-$root/artifacts/release}
mkdir -p "$out"
out=$(cd "$out" && pwd)
name=mimflow-linux-x64$([ "$variant" = nolibtorch ] && echo -nolibtorch || true)
project=src/MimFlow.Cli/MimFlow.Cli.csproj
export DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1

version=$(dotnet msbuild "$project" -getProperty:Version)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit (with uncommitted changes)"; fi
# A fixed timestamp for every file (the commit's), so the same checkout packs to the same bytes.
stamp=$(git log -1 --format=%ct 2>/dev/null || echo 0)

work=$(mktemp -d "${TMPDIR:-/tmp}/mimflow-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
app=$work/mimflow/app
started=$SECONDS
dotnet publish "$project" -c Release -r linux-x64 --self-contained true -p:MimFlowCpuLibTorch=$([ "$variant" = full ] && echo true || echo false) \
  --artifacts-path "$root/artifacts/package" -o "$app" -nologo -v q
# What the variant promises, checked on what was published.
[ -x "$app/MimFlow.Cli" ] || { echo "package.sh: $app/MimFlow.Cli is missing after publish" >&2; exit 1; }
[ -f "$app/libLibTorchSharp.so" ] || { echo "package.sh: TorchSharp's bridge libLibTorchSharp.so is missing from $app" >&2; exit 1; }
[ -f "$app/libvips.so.42" ] || { echo "package.sh: libvips.so.42 is missing from $app" >&2; exit 1; }
if [ "$variant" = full ]; then
  [ -f "$app/libtorch_cpu.so" ] || { echo "package.sh: libtorch_cpu.so is missing from $app (TorchSharp-cpu's libtorch)" >&2; exit 1; }
elif compgen -G "$app/libtorch*.so" > /dev/null; then
  echo "package.sh: --no-libtorch, yet $(cd "$app" && ls libtorch*.so | tr '\n' ' ')are in $app" >&2; exit 1
fi

cat > "$work/mimflow/mimflow" <<'LAUNCHER'
#!/bin/sh
# mimflow launcher (from ops/package.sh): runs the self-contained program in app/ beside this file; link it onto the
# PATH as it is (symbolic links are followed back to here). No .NET install is used or needed.
set -eu
here=$(dirname "$(readlink -f "$0")")
if [ -z "${MIMFLOW_LIBTORCH:-}" ] && [ ! -f "$here/app/libtorch_cpu.so" ]; then
  # This release leaves the CPU libtorch out: use the libtorch of this machine's PyTorch, as a CUDA machine has.
  # Setting MIMFLOW_LIBTORCH (or --libtorch) skips this probe, which costs an `import torch`.
  if found=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null) && [ -d "$found" ]; then
    MIMFLOW_LIBTORCH=$found
    export MIMFLOW_LIBTORCH
  else
    echo "mimflow: this release carries no libtorch and no python3 with torch was found: set MIMFLOW_LIBTORCH to a CUDA PyTorch's torch/lib (commands that compute need it)" >&2
  fi
fi
if [ -n "${MIMFLOW_LIBTORCH:-}" ]; then
  # As on the GPU route so far: libraries loaded by name after libtorch (NCCL, CUDA's) are found beside it.
  LD_LIBRARY_PATH=$MIMFLOW_LIBTORCH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export LD_LIBRARY_PATH
fi
exec "$here/app/MimFlow.Cli" "$@"
LAUNCHER
chmod 755 "$work/mimflow/mimflow"
runtime=$(tr -d ' \n' < "$app/MimFlow.Cli.runtimeconfig.json" | sed -n 's/.*"name":"Microsoft.NETCore.App","version":"\([^"]*\)".*/\1/p')
{
  echo "MimFlow $version, commit $commit"
  echo "platform: linux-x64, self-contained .NET runtime${runtime:+ $runtime}"
  if [ "$variant" = full ]; then echo "libtorch: TorchSharp-cpu's CPU libtorch, in app/"
  else echo "libtorch: none; set MIMFLOW_LIBTORCH to a CUDA PyTorch's torch/lib (the launcher finds python3's torch when unset)"; fi
  echo "run: mimflow/mimflow --version; mimflow/mimflow doctor"
} > "$work/mimflow/RELEASE"

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$stamp" -C "$work" -cf - mimflow | gzip -n -6 > "$out/$name.tar.gz.partial"
mv -f "$out/$name.tar.gz.partial" "$out/$name.tar.gz"
echo "wrote $out/$name.tar.gz ($(du -m "$out/$name.tar.gz" | cut -f1) MiB packed, $(du -sm "$work/mimflow" | cut -f1) MiB unpacked, $((SECONDS - started)) s)"
echo "use: tar -xzf $out/$name.tar.gz -C /opt && /opt/mimflow/mimflow doctor"
