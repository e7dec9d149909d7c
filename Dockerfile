# The demo project (or yours: replace config/ and modules-backend/) in a container.
#   docker build -t orchestrator . && docker run --rm --name orch orchestrator
# The supervisor runs as PID 1: it is a child subreaper and reaps every process that ends up
# with it, handles SIGTERM (docker stop) by stopping the modules gracefully, and exits.
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 orchestrator
WORKDIR /app

# The package first: a change to the modules or the config does not reinstall it.
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY module_sdk ./module_sdk
COPY broker ./broker
RUN pip install --no-compile .

COPY config ./config
COPY modules-backend ./modules-backend
RUN mkdir -p logs && chown orchestrator logs

USER orchestrator
# docker stop sends it; the supervisor's own stop then takes up to the longest stop_timeout:
# give `docker stop -t` at least that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s CMD ["orchestrator", "status"]
CMD ["orchestrator", "up"]
