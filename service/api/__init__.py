"""Every router of the service, gathered in one place."""

from fastapi import APIRouter

from service.api import (
    classify,
    docs,
    explain,
    explorer,
    feature_maps,
    health,
    kserve,
    models,
    tfserving,
)

# Included one by one on the app: a router of routers costs a second match on every request.
ROUTERS: tuple[APIRouter, ...] = (
    classify.router,
    feature_maps.router,
    explain.router,
    models.router,
    health.router,
    tfserving.router,
    kserve.router,
    explorer.router,
    docs.router,
)
