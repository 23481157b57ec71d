"""Serve an encoder (or a translator, a captioner) over HTTP, with limits and stealing defences.

:class:`ModelService` holds what every family's service shares (parsing, limits, budget,
errors); :class:`EncoderService`, :class:`TranslatorService` and :class:`CaptionerService`
add their family's ``/v1/info`` fields and answer at their own route.

Protocol (docs/ARCHITECTURE.md, "HTTP"), spoken by the clients of :mod:`leakprobe.serving.client`:

- ``GET /v1/info`` -> ``{"kind": "encoder", "input_size", "embed_dim", "tokens",
  "tokens_in_embedding_space", "max_batch", "max_queries", "queries_used", "defence"}``
  (``tokens_in_embedding_space``: the model's declaration, true/false, or null)
- ``POST /v1/translate`` (image-to-image services) takes the same requests and answers
  ``{"outputs_npy": base64 float32 .npy (B, C, H, W), "queries_used": n}``
- ``POST /v1/caption`` (captioning services) takes the same requests and answers
  ``{"captions": ["a red circle ...", ...], "queries_used": n}``
- ``POST /v1/embed`` with ``{"images": [base64 PNG, ...]}`` or ``{"array": base64 float32
  .npy of shape (B, 3, H, W)}`` and optionally ``"tokens": true`` ->
  ``{"embeddings": [[...]], "tokens": [[[...]]] | null, "queries_used": n}``; with
  ``"response_encoding": "npy"`` the answer carries ``embeddings_npy`` / ``tokens_npy``
  (base64 float32 .npy) instead, which is faster for large answers.

Errors are JSON ``{"error": message}`` with a status: 400 malformed request, 403 query budget
exhausted, 413 payload too large, 429 rate limited (with ``Retry-After``), 500 model failure.
The server keeps serving after every error. Embeddings go out as JSON numbers: a float32
value printed as a double survives the round trip exactly.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from leakprobe.errors import LeakprobeError
from leakprobe.serving.wire import decode_npy, decode_png, encode_npy


@dataclass
class ServeConfig:
    """Limits and output perturbation of the service.

    Attributes:
        max_batch: images per request.
        max_body_bytes: request body size limit.
        max_image_side: largest accepted image side.
        max_queries: total images the service will embed (None: unlimited).
        rate: requests per second per client (token bucket with a burst of 2x; None: off).
        noise: std of Gaussian noise added to every embedding coordinate (stealing defence).
        top_k: keep only the k largest-magnitude coordinates (stealing defence).
        round_decimals: round embeddings to this many decimals (stealing defence).
        seed: seeds the noise.
    """

    max_batch: int = 256
    max_body_bytes: int = 64 * 2**20
    max_image_side: int = 512
    max_queries: int | None = None
    rate: float | None = None
    noise: float = 0.0
    top_k: int | None = None
    round_decimals: int | None = None
    seed: int = 0


class ServiceError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class RateLimiter:
    """Token bucket per client: ``rate`` requests per second, bursts of ``2 * rate``."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def check(self, client: str) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        burst = max(2 * self.rate, 1.0)
        with self.lock:
            tokens, last = self.buckets.get(client, (burst, now))
            tokens = min(burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                wait = (1 - tokens) / self.rate
                self.buckets[client] = (tokens, now)
                raise ServiceError(429, "rate limit exceeded",
                                   {"Retry-After": f"{max(wait, 0.01):.2f}"})
            self.buckets[client] = (tokens - 1, now)


class ModelService:
    """The part of every service that does not depend on the model family.

    It parses and limits requests (:meth:`parse_images`), charges the service's budget and
    runs the model (:meth:`run_model`), and describes itself at ``/v1/info`` (:meth:`info`).
    A family's service sets ``kind`` and ``route``, adds its model's fields to ``/v1/info``
    in :meth:`model_info` and answers a request at ``route`` in :meth:`answer`.

    Args:
        target: the local target served (``input_size`` and the family's query method).
        config: limits (and, for encoders, output perturbation).
    """

    kind: ClassVar[str] = ""
    route: ClassVar[str] = ""

    def __init__(self, target, config: ServeConfig | None = None) -> None:
        self.target = target
        self.config = config or ServeConfig()
        self.queries_used = 0
        self.lock = threading.Lock()
        self.limiter = RateLimiter(self.config.rate)

    def info(self) -> dict:
        """The ``/v1/info`` answer: family, input size, the model's fields, limits, usage."""
        c = self.config
        return {"kind": self.kind, "input_size": int(self.target.input_size),
                **self.model_info(), "max_batch": c.max_batch, "max_queries": c.max_queries,
                "queries_used": self.queries_used}

    def model_info(self) -> dict:
        """The family's own fields of ``/v1/info`` (none by default)."""
        return {}

    def answer(self, payload: object) -> dict:
        """The JSON answer to one request at ``route``."""
        raise NotImplementedError(f"{type(self).__name__} must define answer")

    def parse_images(self, payload: object) -> torch.Tensor:
        c = self.config
        if not isinstance(payload, dict):
            raise ServiceError(400, "request body must be a JSON object")
        try:
            if "array" in payload:
                arr = decode_npy(payload["array"], c.max_body_bytes)
                images = torch.from_numpy(arr)
            elif isinstance(payload.get("images"), list):
                items = payload["images"]
                if len(items) > c.max_batch:
                    raise ServiceError(413, f"{len(items)} images exceed max_batch {c.max_batch}")
                decoded = [decode_png(t, c.max_image_side**2) for t in items]
                if len({tuple(x.shape) for x in decoded}) > 1:
                    raise ServiceError(400, "all images of a request must have the same size")
                images = torch.stack(decoded) if decoded else torch.empty(0, 3, 1, 1)
            else:
                raise ServiceError(400, "request needs 'images' (base64 PNGs) or 'array'")
        except LeakprobeError as e:
            raise ServiceError(400, str(e)) from e
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
            raise ServiceError(400, f"images must be (B,3,H,W) with B >= 1, got "
                                    f"{tuple(images.shape)}")
        if images.shape[0] > c.max_batch:
            raise ServiceError(413, f"{images.shape[0]} images exceed max_batch {c.max_batch}")
        if max(images.shape[-2:]) > c.max_image_side:
            raise ServiceError(413, f"image side {max(images.shape[-2:])} exceeds "
                                    f"{c.max_image_side}")
        if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise ServiceError(400, "image values must be finite and in [0, 1]")
        return images

    def _charge(self, n: int) -> None:
        limit = self.config.max_queries
        if limit is not None and self.queries_used + n > limit:
            raise ServiceError(403, f"query budget exhausted: {self.queries_used} of {limit} "
                                    f"used, {n} more requested")
        self.queries_used += n

    def run_model(self, fn, images: torch.Tensor):
        """Charge the budget for ``images`` and run ``fn(images)``; returns (output, used).

        A bad input becomes a 400 and any other model failure a 500: the service stays up.
        """
        with self.lock:
            self._charge(images.shape[0])
            try:
                out = fn(images)
            except LeakprobeError as e:
                raise ServiceError(400, str(e)) from e
            except Exception as e:  # a model failure must not take the service down
                raise ServiceError(500, f"model failed: {type(e).__name__}") from e
            return out, self.queries_used


class EncoderService(ModelService):
    """Serves an :class:`~leakprobe.targets.encoder.Encoder` at ``/v1/embed``.

    Its answers can be perturbed against stealing (``noise``, ``top_k``, ``round_decimals``
    of :class:`ServeConfig`).
    """

    kind = "encoder"
    route = "/v1/embed"

    def __init__(self, encoder, config: ServeConfig | None = None) -> None:
        super().__init__(encoder, config)
        self.generator = torch.Generator().manual_seed(self.config.seed)

    @property
    def encoder(self):
        """The served encoder (the target)."""
        return self.target

    def model_info(self) -> dict:
        same_space = getattr(self.target, "tokens_in_embedding_space", None)
        return {"embed_dim": int(getattr(self.target, "embed_dim", 0)),
                "tokens": bool(getattr(self.target, "has_tokens", False)),
                "tokens_in_embedding_space": same_space if isinstance(same_space, bool) else None}

    def info(self) -> dict:
        c = self.config
        defence = {k: v for k, v in {"noise": c.noise, "top_k": c.top_k,
                                     "round_decimals": c.round_decimals}.items() if v}
        return {**super().info(), "defence": defence}

    def _perturb(self, emb: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.noise:
            emb = emb + c.noise * torch.randn(emb.shape, generator=self.generator)
        if c.top_k:
            keep = emb.abs().topk(min(c.top_k, emb.shape[1]), dim=1).indices
            emb = torch.zeros_like(emb).scatter(1, keep, emb.gather(1, keep))
        if c.round_decimals is not None:
            emb = torch.round(emb, decimals=c.round_decimals)
        return emb

    def answer(self, payload: object) -> dict:
        return self.embed(payload)

    def embed(self, payload: object) -> dict:
        """Embeddings (and tokens when asked) of the request's images, perturbed if set."""
        images = self.parse_images(payload)
        options = payload if isinstance(payload, dict) else {}  # parse_images refused the rest
        want_tokens = bool(options.get("tokens", False))

        def query(x: torch.Tensor):
            return self._perturb(self.target.embed(x)), (
                self.target.tokens(x) if want_tokens else None)

        (emb, tok), used = self.run_model(query, images)
        if options.get("response_encoding") == "npy":
            return {"embeddings_npy": encode_npy(emb),
                    "tokens_npy": None if tok is None else encode_npy(tok), "queries_used": used}
        return {"embeddings": emb.tolist(), "tokens": None if tok is None else tok.tolist(),
                "queries_used": used}


class TranslatorService(ModelService):
    """Serves an image-to-image target at ``/v1/translate`` (same limits and errors).

    Answers ``{"outputs_npy": base64 float32 .npy (B, C, H, W), "queries_used": n}``.
    """

    kind = "image2image"
    route = "/v1/translate"

    def model_info(self) -> dict:
        return {"out_channels": int(getattr(self.target, "out_channels", 0))}

    def answer(self, payload: object) -> dict:
        out, used = self.run_model(self.target.translate, self.parse_images(payload))
        return {"outputs_npy": encode_npy(out), "queries_used": used}


class CaptionerService(ModelService):
    """Serves a captioner at ``/v1/caption`` (same requests, limits and errors as ``/v1/embed``).

    Answers ``{"captions": [str, ...], "queries_used": n}``: one caption per image.
    """

    kind = "captioner"
    route = "/v1/caption"

    def answer(self, payload: object) -> dict:
        captions, used = self.run_model(self.target.caption, self.parse_images(payload))
        return {"captions": [str(c) for c in captions], "queries_used": used}


def create_app(service: ModelService) -> Starlette:
    """The Starlette application serving ``service`` (``/v1/info`` and its ``route``)."""
    max_body = service.config.max_body_bytes

    def error(e: ServiceError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=e.status, headers=e.headers)

    async def info(request: Request) -> JSONResponse:
        return JSONResponse(service.info())

    async def answer(request: Request) -> JSONResponse:
        try:
            service.limiter.check(request.client.host if request.client else "?")
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > max_body:
                raise ServiceError(413, f"body of {length} bytes exceeds {max_body}")
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body:
                    raise ServiceError(413, f"body exceeds {max_body} bytes")
            try:
                payload = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ServiceError(400, f"malformed JSON: {e}") from e
            from starlette.concurrency import run_in_threadpool

            return JSONResponse(await run_in_threadpool(service.answer, payload))
        except ServiceError as e:
            return error(e)

    return Starlette(routes=[Route("/v1/info", info, methods=["GET"]),
                             Route(service.route, answer, methods=["POST"])])


def run_server(service: ModelService, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve until interrupted (uvicorn, one process, concurrent requests)."""
    import uvicorn

    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")


def config_dict(config: ServeConfig) -> dict:
    return {k: (None if isinstance(v, float) and math.isinf(v) else v)
            for k, v in asdict(config).items()}
