"""The engine's model statuses and readiness as plain JSON, pushed to front ends on every change."""

from __future__ import annotations

from typing import Any

from convbridge.card import ModelCard
from service.inference import Engine, ModelStatus, Readiness, State, VersionStatus


def encode_snapshot(engine: Engine) -> dict[str, Any]:
    readiness = engine.readiness()
    models = []
    if readiness.error is None:
        for name in engine.names():
            status = engine.status(name)
            models.append(
                {
                    "name": status.name,
                    "served": status.served_version,
                    "device": status.device,
                    "versions": [
                        [v.version, v.state.value, v.error, v.load_seconds, _card(v.card)]
                        for v in status.versions
                    ],
                }
            )
    return {
        "ready": readiness.ready,
        "states": readiness.models,
        "error": readiness.error,
        "models": models,
    }


def _card(card: ModelCard | None) -> dict[str, Any] | None:
    return card.to_dict() if card is not None else None


class Snapshot:
    """A front end's copy of the executor's state; cards are parsed once per version."""

    def __init__(self) -> None:
        self.readiness = Readiness(False, {}, "starting")
        self.models: dict[str, ModelStatus] = {}
        self._cards: dict[tuple[str, int], ModelCard] = {}

    def update(self, data: dict[str, Any]) -> None:
        self.readiness = Readiness(data["ready"], data["states"], data["error"])
        self.models = {item["name"]: self._model(item) for item in data["models"]}

    def card(self, name: str, version: int, data: dict[str, Any] | None) -> ModelCard | None:
        if data is None:
            return self._cards.get((name, version))
        card = self._cards.get((name, version))
        if card is None or card.created != data.get("created"):
            card = self._cards[(name, version)] = ModelCard.from_dict(data)
        return card

    def remember(self, name: str, version: int, card: ModelCard) -> None:
        """A card the front end read itself (a version not loaded): shown from now on."""
        self._cards[(name, version)] = card

    def _model(self, item: dict[str, Any]) -> ModelStatus:
        name = item["name"]
        versions = tuple(
            VersionStatus(number, State(state), error, seconds, self.card(name, number, card))
            for number, state, error, seconds, card in item["versions"]
        )
        return ModelStatus(name, versions, item["served"], item["device"])
