"""Every router of the service, gathered in one place."""

from fastapi import APIRouter

from service.api import classify, feature_maps, health, models

api_router = APIRouter()
for module in (health, models, classify, feature_maps):
    api_router.include_router(module.router)
