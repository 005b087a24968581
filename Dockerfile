# CUDA image for the server: ONNX Runtime with the TensorRT/CUDA providers, torch CUDA build.
#   docker build -t occlusion-serve .
#   docker run --gpus all -p 8000:8000 -v $PWD/model_store:/app/model_store occlusion-serve
# The server picks TensorRT, then CUDA, then CPU, from what the runtime offers (GET /models shows it).
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY models models
COPY robustness robustness
COPY training training
COPY export export
COPY server server
COPY loadtests loadtests
COPY model_store/__init__.py model_store/manifest.py model_store/

# Pins live in pyproject.toml only. onnxruntime-gpu and onnxruntime install the same module, so the
# CPU wheel is removed and the GPU wheel (version from the "gpu" extra) reinstalled over it.
RUN python3.11 -m venv /opt/venv \
    && /opt/venv/bin/pip install ".[gpu]" \
    && /opt/venv/bin/pip install --no-deps $(/opt/venv/bin/python -c 'import tomllib; \
       print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["occlusion-serve"]["no-deps"]))') \
    && /opt/venv/bin/pip uninstall -y onnxruntime \
    && /opt/venv/bin/pip install --force-reinstall --no-deps \
       "$(/opt/venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"][0])')"

# Run unprivileged: the code, the venv and a baked store stay root-owned and world-readable; the server
# writes nothing. A mounted /app/model_store must be readable by uid 10001 (or by everyone).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && mkdir -p /app/model_store \
    && chmod -R a+rX /app /opt/venv
USER app

ENV PATH=/opt/venv/bin:$PATH
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
# Mount or bake a store built with `make model-store` or `python -m export` at /app/model_store.
CMD ["python", "-m", "server", "--store", "/app/model_store", "--host", "0.0.0.0", "--port", "8000"]
