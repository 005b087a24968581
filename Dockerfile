# occlusion-serve: the inference server (FastAPI + ONNX Runtime) in a multi-stage image.
#
# Build (BuildKit, the default builder, builds only the stages the chosen variant needs):
#   docker build -t occlusion-serve .                                  # GPU: CUDA 13 + cuDNN 9, onnxruntime-gpu
#   docker build --build-arg VARIANT=cpu -t occlusion-serve:cpu .      # CPU only: plain Ubuntu, onnxruntime
# Run (mount a store built with `make model-store` or `python -m export`; the server only reads it):
#   docker run --gpus all -e SERVER_API_KEY=... -v $PWD/model_store:/app/model_store:ro -p 8000:8000 occlusion-serve
#   docker run -e SERVER_API_KEY=... -v $PWD/model_store:/app/model_store:ro -p 8000:8000 occlusion-serve:cpu
# The server binds 0.0.0.0 here, so it refuses to start without SERVER_API_KEY (or SERVER_ALLOW_UNAUTHENTICATED=true
# behind a gateway that authenticates).
# Other settings come as SERVER_* env vars (server/settings.py), e.g. -e SERVER_MAX_BATCH=16 -e SERVER_API_KEY=...;
# host and store are fixed by the command below. The GPU image picks TensorRT, then CUDA, then CPU from what the
# runtime offers and can load: this image carries no TensorRT, so it runs on CUDA (GET /models shows it; docs/gpu.md
# covers buckets, nvJPEG decoding and SERVER_HTTP_WORKERS). The health check probes /ready: unhealthy until every
# model is warm.
#
# Every Python dependency and its pin comes from pyproject.toml; the only versions here are the base images'.
# Both variants run Ubuntu 24.04's Python 3.12 (pyproject: requires-python >= 3.11), installed once in the shared
# `python` stage, so the venv built in `builder` finds the very same interpreter in `runtime`.

ARG VARIANT=gpu

FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 AS base-gpu
FROM ubuntu:24.04 AS base-cpu

# base-gpu or base-cpu above: a stage of this file, tagged there (hadolint cannot resolve the variable).
# hadolint ignore=DL3006
FROM base-${VARIANT} AS python
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1
# Not pinned: Ubuntu keeps only the newest build of a package in noble-updates/-security, so an exact apt pin breaks
# the build at the next security update; the base image tag pins the distro release instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM python AS builder
ARG VARIANT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
# Same reason as above: python3.12-venv must match the python3.12 build the stage above installed.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12-venv \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# What `pip install .` needs for the server: the metadata, the readme it names, and the packages the server imports
# (server/static rides along as package data); training, export, the load tests and the benchmarks stay out.
# model_store is the store's contract only (its models are mounted at run time, see .dockerignore).
COPY pyproject.toml README.md ./
COPY common common
COPY robustness robustness
COPY model_store/__init__.py model_store/manifest.py model_store/machine.py model_store/
COPY server server

# The project (non-editable, into /opt/venv), then pyproject's no-deps list with --no-deps, as the Makefile does.
# GPU: onnxruntime-gpu (the "gpu" extra) and onnxruntime install the same module, so the CPU wheel is removed and
# the GPU wheel, at the version the extra pins, reinstalled over it. Both lists are read from pyproject.toml into
# requirement files (pip's --requirement), so no name or version is spelt here.
RUN python3.12 -m venv /opt/venv \
    && if [ "$VARIANT" = gpu ]; then pip install "./.[gpu]"; else pip install "."; fi \
    && python -c 'import tomllib; \
       print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["occlusion-serve"]["no-deps"]))' \
       > /tmp/no-deps.txt \
    && pip install --no-deps --requirement /tmp/no-deps.txt \
    && if [ "$VARIANT" = gpu ]; then \
         python -c 'import tomllib; \
           gpu = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"]; \
           print(next(req for req in gpu if req.startswith("onnxruntime-gpu")))' > /tmp/onnxruntime-gpu.txt \
         && pip uninstall -y onnxruntime \
         && pip install --force-reinstall --no-deps --requirement /tmp/onnxruntime-gpu.txt; \
       fi \
    && python -P -c 'import onnxruntime, torch, server.main; print("onnxruntime", onnxruntime.__version__, \
       onnxruntime.get_available_providers(), "torch", torch.__version__)'

FROM python AS runtime
# Unprivileged (uid/gid 10001); the venv stays root-owned and world-readable and the server writes nothing, so a
# mounted /app/model_store only has to be readable by uid 10001 (or by everyone). POST /evaluations reads datasets
# from /app/data (SERVER_DATA_DIR): mount one there to use it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && mkdir -p /app/model_store /app/data
COPY --from=builder /opt/venv /opt/venv
# PYTHONSAFEPATH: `python -m server` must import the installed packages, never a same-named folder of the working
# directory (the mounted store is /app/model_store, a folder named like the model_store package). The venv's
# bytecode was compiled at install; the unprivileged user could not write more.
ENV PATH=/opt/venv/bin:$PATH PYTHONSAFEPATH=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 10001:10001
VOLUME /app/model_store
# HTTP, and KServe v2 over gRPC (Triton's ports)
EXPOSE 8000 8001
# Ready (200) only once every model is loaded and warm; 503 while loading or when a model failed. The start period
# covers loading and warm-up (TensorRT engine builds can take minutes on a cold cache).
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SERVER_PORT', '8000') + '/ready', timeout=4)"]
CMD ["python", "-m", "server", "--host", "0.0.0.0", "--store", "/app/model_store", "--grpc-port", "8001"]
