# Minimal image for now: the deployment issue makes it multi-stage with a GPU variant.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY convbridge ./convbridge
COPY training ./training
COPY service ./service
RUN pip install --no-cache-dir ".[serve]"
EXPOSE 8000
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
