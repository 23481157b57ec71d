"""Serve an image-text (CLIP-style) model: ``/v1/embed_images`` and ``/v1/embed_texts``.

:class:`ImageTextService` is a :class:`~leakprobe.serving.server.ModelService`: the same keys,
budgets, rate limit, body limit, request log and errors as every other service
(:mod:`leakprobe.serving.server`), with two query routes:

- ``POST /v1/embed_images``: images as for ``/v1/embed`` (``{"array": base64 .npy}`` or
  ``{"images": [base64 PNG, ...]}``) -> ``{"embeddings": [[...]], "queries_used": n}``;
- ``POST /v1/embed_texts``: ``{"texts": ["a photo of ...", ...]}`` -> the same answer.
  At most ``max_texts`` texts and ``max_text_chars`` characters in all per request (413
  naming ``--max-texts`` / ``--max-text-chars`` otherwise).

Both take ``"response_encoding": "npy"`` for ``embeddings_npy`` (base64 float32 ``.npy``)
instead of JSON numbers. Embeddings are L2-normalised (the target's). Each image and each
text is one query, for the service's ``max_queries`` and for the key's budget alike; a
request refused for a limit or a budget never runs the model.

``GET /v1/info`` declares ``kind: "image-text"`` and adds ``embed_dim``, ``max_texts`` and
``max_text_chars`` to the common fields.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from leakprobe.errors import LeakprobeError
from leakprobe.serving.keys import Client, ClientRefused
from leakprobe.serving.server import ModelService, ServiceError, too_large
from leakprobe.serving.wire import PayloadTooLarge, count_texts, decode_texts, encode_npy


class ImageTextService(ModelService):
    """Serves an :class:`~leakprobe.targets.image_text.ImageTextModel` at
    ``/v1/embed_images`` (:attr:`route`) and ``/v1/embed_texts`` (:attr:`text_route`)."""

    kind = "image-text"
    route = "/v1/embed_images"
    text_route = "/v1/embed_texts"

    def model_info(self) -> dict:
        return {"embed_dim": int(getattr(self.target, "embed_dim", 0) or 0),
                "max_texts": self.config.max_texts,
                "max_text_chars": self.config.max_text_chars}

    def routes(self) -> dict[str, Callable[..., dict]]:
        return {self.route: self.handle, self.text_route: self.handle_texts}

    @staticmethod
    def _answer(embeddings: torch.Tensor, used: int, options: object) -> dict:
        npy = isinstance(options, dict) and options.get("response_encoding") == "npy"
        if npy:
            return {"embeddings_npy": encode_npy(embeddings), "queries_used": used}
        return {"embeddings": embeddings.tolist(), "queries_used": used}

    def respond(self, images: torch.Tensor, options: dict) -> dict:
        emb, used = self.run_model(self.target.embed_images, images)
        return self._answer(emb, used, options)

    def parse_texts(self, payload: object) -> list[str]:
        """The request's texts, within ``max_texts`` and ``max_text_chars`` (413 naming the
        option otherwise; 400 for anything malformed)."""
        c = self.config
        try:
            return decode_texts(payload, max_texts=c.max_texts, max_chars=c.max_text_chars)
        except PayloadTooLarge as e:
            raise too_large(str(e), e.limit) from e
        except LeakprobeError as e:
            raise ServiceError(400, str(e)) from e

    def handle_texts(self, payload: object, record: dict | None = None, *,
                     client: Client | None = None) -> dict:
        """The JSON answer to one request at ``/v1/embed_texts``: parse, limit, charge, run.

        The key's budget is checked on the texts announced before they are parsed, and the
        model runs only once every limit and budget has passed (:meth:`run_model`).
        """
        with self.acting_for(client) as who:
            try:
                announced = count_texts(payload)
                if announced is not None:
                    self.clients.check(who, announced)
                texts = self.parse_texts(payload)
                if record is not None:
                    record["texts"] = len(texts)
                emb, used = self.run_model(self.target.embed_texts, texts)
            except ClientRefused as e:
                raise ServiceError.refused(e) from e
            return self._answer(emb, used, payload)

    def embed_texts(self, payload: object) -> dict:
        """The answer to ``/v1/embed_texts`` for an in-process call (anonymous client)."""
        return self.handle_texts(payload)
