# aduan classify service. Build from the repository root:
#   docker build -t aduan .
#   docker run -p 8000:8000 -v "$PWD/models/default:/models/default:ro" \
#     -v "$PWD/../shared/data/surabaya/wilayah_surabaya.csv:/data/wilayah_surabaya.csv:ro" aduan
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

WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir model service training \
    && touch model/__init__.py service/__init__.py training/__init__.py \
    && pip install --extra-index-url "$TORCH_INDEX_URL" "torch==2.13.0" \
    && pip install --extra-index-url "$TORCH_INDEX_URL" . \
    && rm -rf model service training

COPY model ./model
COPY service ./service
COPY training ./training
COPY data ./data
RUN pip install --no-deps --force-reinstall . \
    && useradd --system --uid 10001 --home /app aduan \
    && mkdir -p /var/lib/aduan /models \
    && chown aduan /var/lib/aduan

USER aduan
EXPOSE 8000
VOLUME ["/var/lib/aduan"]

HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status == 200 else 1)"

CMD ["aduan", "serve", "--host", "0.0.0.0", "--port", "8000"]
