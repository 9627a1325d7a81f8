# FreeRet RAG: chat with your own PDFs, images and videos (Gradio app on port 7860).
#
# CPU image (default):
#   docker build -t freeret-rag .
#   docker run --rm -p 7860:7860 -v freeret-data:/data -e FREERET_AUTH=me:change-this freeret-rag
# GPU image (NVIDIA; needs the NVIDIA Container Toolkit on the host):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 -t freeret-rag:gpu .
#   docker run --rm --gpus all -p 7860:7860 -v freeret-data:/data -e FREERET_AUTH=me:change-this freeret-rag:gpu
#
# The app listens on all interfaces here, so it refuses to start without a login: give FREERET_AUTH
# (user:password), or FREERET_ALLOW_NO_LOGIN=1 to serve the whole library open on purpose.
#
# Everything that must survive a restart lives under /data (mount a volume there):
#   /data/huggingface  model downloads (HF_HOME)   /data/index  index, page renders, uploaded files

ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

# Which PyTorch build to install: the CPU wheels by default; a CUDA index for the GPU image.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1 \
    ANONYMIZED_TELEMETRY=False \
    DO_NOT_TRACK=1 \
    HF_HOME=/data/huggingface \
    FREERET_DATA_DIR=/data/index \
    FREERET_HOST=0.0.0.0 \
    FREERET_PORT=7860

# An unprivileged user (uid 1000, as Hugging Face Docker Spaces expect) owns the data volume.
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin freeret \
    && mkdir -p /data/huggingface /data/index \
    && chown -R freeret:freeret /data

WORKDIR /app

# Dependencies first, so that code changes do not reinstall them.
COPY requirements.txt ./
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && pip install --no-cache-dir -r requirements.txt

COPY --chown=freeret:freeret freeret_rag ./freeret_rag
COPY --chown=freeret:freeret app.py ./
# The sample library of the public demo ("Try the sample library", --demo).
COPY --chown=freeret:freeret assets/samples ./assets/samples

USER 1000:1000
VOLUME ["/data"]
EXPOSE 7860

# The first start downloads the model (minutes): give it time before reporting unhealthy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=15m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FREERET_PORT', '7860') + '/', timeout=5)"]

CMD ["python", "app.py"]
