# The fleet service image used by compose.yaml (fleet_service, `fleet` CLI). Units install the agent instead.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir . && useradd --uid 1883 --no-create-home --shell /usr/sbin/nologin fleet
USER 1883:1883
EXPOSE 8080
CMD ["fleet", "service"]
