#!/usr/bin/env bash
# Creates .venv with EdgeFusion and everything its tests need.
# torch==2.13.0 is pinned: on the project's machines it is the CPU build that lies on disk
# (an unpinned torch would pull a multi-GB CUDA build). On a GPU machine, install the
# CUDA build of torch first; any torch >= 2.1 works.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
# test: pytest and Playwright (which drives the system's Chromium); slicer: MRML libraries; app: the web app;
# cluster: Dask's distributed, for batch --cohort --workers/--scheduler.
.venv/bin/python -m pip install -q -e ".[test,slicer,app,cluster]"
