# The clicker (or any bot built on tgsnap) in a container, installed as README's set-up does it.
#   docker build -t tgsnap-bot .
#   docker run --env-file .env tgsnap-bot
# SIGTERM (docker stop, a rolling update) stops it within its 30 s grace period: stop taking
# updates, finish handlers, final flush, hand the storage over; what could not be made durable in time
# stays unconfirmed in Telegram and is handled by the next process. No volume is needed: the state
# lives in Telegram.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 tgsnap
WORKDIR /app
COPY --chown=tgsnap:tgsnap . /app
USER tgsnap
RUN python3 -m venv .venv && .venv/bin/pip install -q -e .
# Webhook mode listens here when TGSNAP_WEBHOOK_URL is set (TGSNAP_WEBHOOK_PORT, $PORT); unused otherwise.
EXPOSE 8080
STOPSIGNAL SIGTERM
CMD [".venv/bin/python", "-m", "bot"]
