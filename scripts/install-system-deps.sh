#!/usr/bin/env bash
# System packages the project uses: cmake + ninja + g++ (native build), OpenBLAS (benchmark peer),
# Open MPI (the mpi communicator), ffmpeg (+ ffprobe: .mp4 video output and its test). Installed only
# when missing; needs root (apt-get).
set -u
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v ninja >/dev/null 2>&1 || need+=(ninja-build)
command -v g++ >/dev/null 2>&1 || need+=(g++)
[ -f /usr/include/x86_64-linux-gnu/cblas.h ] || [ -f /usr/include/cblas.h ] || need+=(libopenblas-dev)
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin libopenmpi-dev)
{ command -v ffmpeg && command -v ffprobe; } >/dev/null 2>&1 || need+=(ffmpeg)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${need[*]}" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
      || echo "warning: apt-get install ${need[*]} failed; optional features (OpenBLAS peer, MPI, .mp4 output) stay off" >&2
  else
    echo "warning: missing ${need[*]} and cannot apt-get install (not root); optional features stay off" >&2
  fi
fi
exit 0
