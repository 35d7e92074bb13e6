# syntax=docker/dockerfile:1
# convbridge images. Targets:
#   runtime (default)  the service; models come from a volume mounted at /models
#   trainer            one-shot: trains the demo models into /models (compose, Kubernetes Job)
# Build arguments:
#   VARIANT=cpu|gpu              gpu installs TensorFlow's CUDA packages (host: NVIDIA driver
#                                and container toolkit)
#   MODELS_STAGE=demo-models     bakes the demo models into a self-contained image
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG MODELS_STAGE=no-models

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY convbridge ./convbridge
COPY service ./service
COPY training ./training
RUN case "$VARIANT" in \
        cpu) extras=serve ;; \
        gpu) extras=serve,gpu ;; \
        *) echo "VARIANT must be cpu or gpu, not $VARIANT" >&2; exit 1 ;; \
    esac \
    && pip install ".[$extras]" \
    # The gRPC messages, generated into the installed package for its protobuf runtime.
    && cd / && python -m service.rpc.build

FROM build AS trainer-build
RUN pip install ".[train]"

FROM ${PYTHON_IMAGE} AS trainer
ENV PATH=/opt/venv/bin:$PATH TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
COPY --from=trainer-build /opt/venv /opt/venv
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin convbridge \
    && mkdir /models && chown convbridge:convbridge /models
USER 10001
ENTRYPOINT ["python", "-m", "training"]
CMD ["--variant", "all", "--dataset", "digits", "--out", "/models", "--skip-if-present", "--quiet"]

FROM trainer AS demo-models
RUN python -m training --variant all --dataset digits --out /models --quiet

FROM ${PYTHON_IMAGE} AS no-models
RUN mkdir /models

FROM ${MODELS_STAGE} AS models

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1 \
    CONVBRIDGE_REPOSITORY=/models
# Only the serving dependencies: the build stage installed the `serve` extra, not `train`.
COPY --from=build /opt/venv /opt/venv
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin convbridge
COPY --from=models --chown=10001:10001 /models /models
USER 10001
EXPOSE 8000 8500
HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-m", "service.healthcheck"]
# The same entrypoint as `make serve`.
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
