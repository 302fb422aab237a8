# aduan classify service, installed from its wheel. Build from the repository root:
#   docker build -t aduan .
#   docker run -p 8000:8000 -v "$PWD/models/default:/models/default:ro" \
#     -v "$PWD/../shared/data/surabaya/wilayah_surabaya.csv:/data/wilayah_surabaya.csv:ro" aduan

# --- build: the wheel, and the dependency list read from pyproject.toml ---
FROM python:3.11-slim AS build
# Optional extras to install too, comma-separated: --build-arg EXTRAS=ray for Ray Serve / Ray Data
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY aduan ./aduan
COPY model ./model
COPY service ./service
COPY training ./training
COPY data ./data
RUN pip install --no-cache-dir "setuptools>=68" \
    && pip wheel --no-deps --no-build-isolation -w /dist . \
    && python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; extras = [e for e in os.environ.get('EXTRAS', '').split(',') if e]; print('\n'.join(p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]))" > /dist/requirements.txt

# --- runtime ---
FROM python:3.11-slim
# CPU-only PyTorch: the default index would pull a multi-GB CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    ADUAN_MODEL_DIR=/models/default \
    ADUAN_GAZETTEER=/data/wilayah_surabaya.csv \
    ADUAN_DATA_DIR=/var/lib/aduan

# Dependencies first (their own layer: a code change does not reinstall them), then the wheel.
COPY --from=build /dist/requirements.txt /tmp/requirements.txt
RUN pip install --extra-index-url "$TORCH_INDEX_URL" -r /tmp/requirements.txt
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-deps /tmp/aduan-*.whl \
    && rm /tmp/*.whl /tmp/requirements.txt \
    && useradd --system --uid 10001 --home /var/lib/aduan aduan \
    && mkdir -p /var/lib/aduan /models \
    && chown aduan /var/lib/aduan

USER aduan
WORKDIR /var/lib/aduan
EXPOSE 8000
VOLUME ["/var/lib/aduan"]

HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status == 200 else 1)"

CMD ["aduan", "serve", "--host", "0.0.0.0", "--port", "8000"]
